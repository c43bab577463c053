"""The log channel: every alarm event as one line a person can read."""

from __future__ import annotations

import logging

from gateway.domain.events import AlarmEvent, CribState, OutboundEvent
from gateway.domain.vocab import AlarmEventType


def describe(event: AlarmEvent) -> str:
    """One line a person can read, e.g. for the terminal or a log file."""
    where = f"{event.room_label} / {event.crib_label} ({event.crib_id})"
    what = event.kind.value.replace("_", " ")
    head = f"{event.priority.label.upper():6} {what:14} {event.type.value.upper():12} {where}"
    if event.test:
        head = f"TEST {head}"
    if event.maintenance:
        head = f"{head} (in maintenance: not sent)"
    if event.type is AlarmEventType.ACKNOWLEDGED:
        return f"{head} by {event.by} via {event.device} after {event.response_s:.1f} s [{event.alarm_id}]"
    if event.type is AlarmEventType.RESOLVED:
        return f"{head} after {event.response_s:.1f} s [{event.alarm_id}]"
    return f"{head} [{event.alarm_id}]"


class LogChannel:
    """Every alarm event as one log line (crib states at debug level)."""

    name = "log"

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or logging.getLogger("cribwatch.alarm")

    def deliver(self, event: OutboundEvent) -> None:
        if isinstance(event, CribState):
            self._log.debug(
                "crib %s: latch=%s online=%s alarms=%d",
                event.crib_id,
                event.latch,
                event.sensor_online,
                len(event.alarms),
            )
            return
        level = logging.WARNING if event.type in (AlarmEventType.RAISED, AlarmEventType.REMINDED) else logging.INFO
        self._log.log(level, "%s", describe(event))

    def close(self) -> None:
        return None
