"""Alert channels: the ways an alarm reaches people. Each sits behind :class:`AlertChannel`.

A channel's ``deliver`` must return at once (a channel with slow I/O queues internally), and a
channel that fails is logged and counted by the :class:`Dispatcher` without holding up the others:
the buzzer sounds even when the broker is down.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from gateway.codec import Outgoing, encode_outbound
from gateway.events import AlarmEvent, CribState, OutboundEvent
from gateway.protocol import AlarmEventType, Topics

log = logging.getLogger("cribwatch.alerts")


class AlertChannel(Protocol):
    name: str

    def deliver(self, event: OutboundEvent) -> None:
        """Take one event; must not block."""
        ...

    def close(self) -> None: ...


class Dispatcher:
    """Fans every outbound event out to every channel, isolating their failures."""

    def __init__(self, channels: Sequence[AlertChannel]) -> None:
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

    def close(self) -> None:
        for channel in self.channels:
            try:
                channel.close()
            except Exception:
                log.exception("alert channel %s failed to close", channel.name)


class MqttAlertChannel:
    """Alarm events to ``<site>/alarm/<room>``, crib states (retained) to ``<site>/crib/<crib>/state``."""

    name = "mqtt"

    def __init__(self, topics: Topics, gw_boot: int, send: Callable[[Outgoing], None]) -> None:
        self._topics = topics
        self._gw_boot = gw_boot
        self._send = send

    def deliver(self, event: OutboundEvent) -> None:
        self._send(encode_outbound(self._topics, event, self._gw_boot))

    def close(self) -> None:
        return None


def describe(event: AlarmEvent) -> str:
    """One line a person can read, e.g. for the terminal or a log file."""
    where = f"{event.room_label} / {event.crib_label} ({event.crib_id})"
    what = event.kind.value.replace("_", " ")
    head = f"{event.priority.label.upper():6} {what:14} {event.type.value.upper():12} {where}"
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
        level = logging.WARNING if event.type is AlarmEventType.RAISED else logging.INFO
        self._log.log(level, "%s", describe(event))

    def close(self) -> None:
        return None
