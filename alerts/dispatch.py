"""The dispatcher: every outbound event of the core to every channel, each behind :class:`EventSink`.

A sink receives alarm events and crib states alike. Its ``deliver`` must return at once (a channel with
slow I/O queues internally), and a channel that fails is logged and counted by the :class:`Dispatcher`
without holding up the others: the buzzer sounds even when the broker is down.

Nothing waits on the alarm path: with ``urgent`` and ``defer`` (the gateway gives both), an alarm event goes at
once to the first ``urgent`` channels only (the MQTT socket, the buzzer); everything else (crib states, the
record, the log line, any later channel) is delivered a moment later (``defer``: the gateway's event loop, about
a millisecond), in order, or before the next dispatch, whichever comes first. The process then gives the CPU back
while the broker and the staff devices take the alarm, instead of encoding, logging and recording in their way.
"""

from __future__ import annotations

import collections
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from gateway.domain.events import AlarmEvent, OutboundEvent

log = logging.getLogger("cribwatch.alerts")


class EventSink(Protocol):
    """Where outbound events go: an alert channel (MQTT, buzzer, log, later webhook and Apprise) or a recorder."""

    name: str

    def deliver(self, event: OutboundEvent) -> None:
        """Take one event; must not block."""
        ...

    def close(self) -> None: ...


class Dispatcher:
    """Fans every outbound event out to every channel, isolating their failures.

    ``urgent``: how many of the first channels get an alarm event at once; ``defer(flush)`` asks for ``flush`` to be
    called soon (without it, every event goes to every channel at once, in order).
    """

    def __init__(
        self,
        channels: Sequence[EventSink],
        *,
        urgent: int = 0,
        defer: Callable[[Callable[[], None]], object] | None = None,
    ) -> None:
        self.channels = list(channels)
        self.failures: Counter[str] = Counter()
        self.delivered = 0
        self.urgent = urgent
        self._defer = defer
        self._later: collections.deque[tuple[OutboundEvent, Sequence[EventSink]] | Callable[[], None]] = (
            collections.deque()
        )
        self._flush_asked = False
        self.on_flushed: Callable[[], None] | None = None
        """Called after a flush that delivered what waited (the gateway's alert policy: after the record)."""

    @property
    def waiting(self) -> bool:
        """Events wait for the channels after the urgent ones."""
        return bool(self._later)

    def dispatch(self, events: Iterable[OutboundEvent], *, only: type | None = None) -> None:
        """Every event to every channel (or only to the channels of type ``only``), in order; an alarm event to the
        urgent channels first (see the module documentation)."""
        self.flush()  # what waits goes first: each channel sees every event in order
        if only is not None or self._defer is None or self.urgent <= 0:
            channels = self.channels if only is None else [c for c in self.channels if isinstance(c, only)]
            for event in events:
                self.delivered += 1
                for channel in channels:
                    self._deliver(channel, event)
            return
        urgent, rest = self.channels[: self.urgent], self.channels[self.urgent :]
        later = self._later
        for event in events:
            self.delivered += 1
            if isinstance(event, AlarmEvent):
                for channel in urgent:
                    self._deliver(channel, event)
                later.append((event, rest))
            else:
                later.append((event, self.channels))
        if later and not self._flush_asked:
            self._flush_asked = True
            self._defer(self._flush_when_asked)

    def then(self, call: Callable[[], None]) -> None:
        """Call ``call`` once every event that waits now has been delivered (at once when none waits): what follows
        from an event (the alert policy's notice on the incident's timeline) is recorded after the event itself."""
        if self._later:
            self._later.append(call)
        else:
            self._call(call)

    def flush(self) -> None:
        """Deliver what waits, in order."""
        later = self._later
        if not later:
            return
        while later:
            item = later.popleft()
            if isinstance(item, tuple):
                event, channels = item
                for channel in channels:
                    self._deliver(channel, event)
            else:
                self._call(item)
        if self.on_flushed is not None:
            self.on_flushed()

    def _call(self, call: Callable[[], None]) -> None:
        try:
            call()
        except Exception:  # what follows an event must not stop the events after it
            self.failures["then"] += 1
            log.exception("a call after the alarm events failed")

    def _flush_when_asked(self) -> None:
        self._flush_asked = False
        self.flush()

    def _deliver(self, channel: EventSink, event: OutboundEvent) -> None:
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
        self.flush()
        for channel in self.channels:
            try:
                channel.close()
            except Exception:
                log.exception("alert channel %s failed to close", channel.name)
