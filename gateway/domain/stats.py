"""Counters of what the gateway took in, what it rejected or refused, and its own failures, with rate-limited logs.

Four kinds, kept apart because they mean different things to a technician:

- ``rejected``: bad input (malformed payloads, unknown sensors, acks for nothing), by reason;
- ``ignored``: harmless repeats (QoS 1 duplicates, stale messages, second acks), by reason;
- ``refused`` and ``resynced``, by sensor: readings whose sequence numbers the gateway could not trust. A refused
  reading would have changed a crib's state; a resync means a sensor's counter jumped or ran behind. Both are
  WARNINGs: a sensor that shows them needs a look;
- ``internal_errors``: the gateway's own bugs (CRITICAL): never bad input.
"""

from __future__ import annotations

import logging
from collections import Counter

log = logging.getLogger("cribwatch.ingest")

_LOG_FIRST = 10
_LOG_EVERY = 1000


def _count(counter: Counter[str], key: str, level: int, message: str, detail: str) -> None:
    """Count one under ``key``; log the first few of each key, then one in a thousand."""
    counter[key] += 1
    n = counter[key]
    if n <= _LOG_FIRST or n % _LOG_EVERY == 0:
        log.log(level, message, key, n, detail)


class IngestStats:
    """Shared by the adapters and the core; all calls come from the event loop's thread."""

    def __init__(self) -> None:
        self.accepted = 0
        self.rejected: Counter[str] = Counter()
        """Bad input: malformed payloads, unknown sensors, acks for nothing."""
        self.ignored: Counter[str] = Counter()
        """Harmless repeats: QoS 1 duplicates, stale messages, second acks."""
        self.refused: Counter[str] = Counter()
        """Per sensor id: readings that would have changed a crib's state, refused by the ordering rules."""
        self.resynced: Counter[str] = Counter()
        """Per sensor id: readings taken although their sequence number was out of line (jump, rewind, doubt)."""
        self.slow_heartbeats: dict[str, float] = {}
        """Per sensor id: the interval it announced, longer than the site's heartbeat_interval_s (logged once)."""
        self.internal_errors = 0
        """Failures of the gateway's own code (each one also raised an alarm or sounded the buzzer)."""

    def accept(self) -> None:
        self.accepted += 1

    def reject(self, reason: str, detail: str) -> None:
        """Count one rejected input; log the first few of each reason, then one in a thousand."""
        _count(self.rejected, reason, logging.WARNING, "rejected (%s, #%d): %s", detail)

    def ignore(self, reason: str, detail: str) -> None:
        _count(self.ignored, reason, logging.INFO, "ignored (%s, #%d): %s", detail)

    def refuse(self, sensor_id: str, detail: str) -> None:
        """A reading that would have changed a crib was refused for its sequence number: a WARNING, per sensor."""
        _count(self.refused, sensor_id, logging.WARNING, "refused a reading of sensor %r (#%d): %s", detail)

    def resync(self, sensor_id: str, detail: str) -> None:
        """A reading taken although its sequence number was out of line: a WARNING, per sensor."""
        _count(self.resynced, sensor_id, logging.WARNING, "sequence of sensor %r out of line (#%d): %s", detail)

    def slow_heartbeat(self, sensor_id: str, announced_s: float, site_s: float, silence_s: float) -> None:
        """A sensor announces a heartbeat interval longer than the site's: a WARNING, once per sensor. The gateway
        holds it to the site's interval: silent for ``silence_s`` (missed_heartbeats intervals), it is offline."""
        if sensor_id in self.slow_heartbeats:
            return
        self.slow_heartbeats[sensor_id] = announced_s
        consequence = (
            f"it will be reported offline between its heartbeats (after {silence_s:g} s of silence)"
            if announced_s > silence_s
            else f"a heartbeat or two lost and it is reported offline (after {silence_s:g} s of silence)"
        )
        log.warning(
            "sensor %r announces a heartbeat every %g s, longer than the site's heartbeat_interval_s (%g s): %s; "
            "set the sensor (or the simulator's --interval) to the site's interval",
            sensor_id,
            announced_s,
            site_s,
            consequence,
        )

    def internal_error(self, detail: str, exc: BaseException | None = None) -> None:
        """The gateway's own code failed: always logged, CRITICAL, with the traceback."""
        self.internal_errors += 1
        exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
        log.critical("internal error #%d: %s", self.internal_errors, detail, exc_info=exc_info)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())
