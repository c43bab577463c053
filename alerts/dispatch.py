"""The dispatcher: every outbound event of the core to every channel, each behind :class:`EventSink`.

A sink receives alarm events and crib states alike. Its ``deliver`` must return at once (a channel with
slow I/O queues internally), and a channel that fails is logged and counted by the :class:`Dispatcher`
without holding up the others: the buzzer sounds even when the broker is down.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from gateway.domain.events import OutboundEvent

log = logging.getLogger("cribwatch.alerts")


class EventSink(Protocol):
    """Where outbound events go: an alert channel (MQTT, buzzer, log, later webhook and Apprise) or a recorder."""

    name: str

    def deliver(self, event: OutboundEvent) -> None:
        """Take one event; must not block."""
        ...

    def close(self) -> None: ...


class Dispatcher:
    """Fans every outbound event out to every channel, isolating their failures."""

    def __init__(self, channels: Sequence[EventSink]) -> None:
        self.channels = list(channels)
        self.failures: Counter[str] = Counter()
        self.delivered = 0

    def dispatch(self, events: Iterable[OutboundEvent], *, only: type | None = None) -> None:
        """Every event to every channel (or only to the channels of type ``only``), in order."""
        channels = self.channels if only is None else [c for c in self.channels if isinstance(c, only)]
        for event in events:
            self.delivered += 1
            for channel in channels:
                try:
                    channel.deliver(event)
                except Exception:  # a broken channel must not silence the others
                    self.failures[channel.name] += 1
                    log.exception("alert channel %s failed on %s", channel.name, type(event).__name__)

    def call(self, channel: EventSink, what: str, call: Callable[[], None]) -> None:
        """Call into a channel outside :meth:`dispatch` (the buzzer's ``fault`` or ``reset``), isolated and
        counted in ``failures`` as a failed delivery is: the caller goes on either way."""
        try:
            call()
        except Exception:  # a broken channel must not take its caller down
            self.failures[channel.name] += 1
            log.exception("alert channel %s failed on %s", channel.name, what)

    def close(self) -> None:
        for channel in self.channels:
            try:
                channel.close()
            except Exception:
                log.exception("alert channel %s failed to close", channel.name)
