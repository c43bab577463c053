"""Counters of what the gateway took in and what it rejected, with rate-limited logging."""

from __future__ import annotations

import logging
from collections import Counter

log = logging.getLogger("cribwatch.ingest")

_LOG_FIRST = 10
_LOG_EVERY = 1000


class IngestStats:
    """Shared by the adapters and the core; all calls come from the event loop's thread."""

    def __init__(self) -> None:
        self.accepted = 0
        self.rejected: Counter[str] = Counter()
        """Bad input: malformed payloads, unknown sensors, acks for nothing."""
        self.ignored: Counter[str] = Counter()
        """Harmless repeats: QoS 1 duplicates, out-of-order and stale messages, second acks."""

    def accept(self) -> None:
        self.accepted += 1

    def reject(self, reason: str, detail: str) -> None:
        """Count one rejected input; log the first few of each reason, then one in a thousand."""
        self.rejected[reason] += 1
        n = self.rejected[reason]
        if n <= _LOG_FIRST or n % _LOG_EVERY == 0:
            log.warning("rejected (%s, #%d): %s", reason, n, detail)

    def ignore(self, reason: str, detail: str) -> None:
        self.ignored[reason] += 1
        n = self.ignored[reason]
        if n <= _LOG_FIRST or n % _LOG_EVERY == 0:
            log.info("ignored (%s, #%d): %s", reason, n, detail)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())
