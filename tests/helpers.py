"""Builders shared by the unit tests: small demo sites and a harness around the pure alarm core.

The harness owns a :class:`FakeClock`: time moves only through :meth:`CoreHarness.advance` /
:meth:`CoreHarness.advance_to`, never by sleeping. Sensor messages get their ``seq`` numbered per
(sensor, channel) unless a test gives one, so a test only spells out what it is about. An event built
without ``observed_at`` happens when it is handled; give one to model a message that waited in a queue.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from gateway.domain.clock import FakeClock
from gateway.domain.events import (
    AckRequest,
    AlarmEvent,
    AvailabilityChange,
    CribState,
    InboundEvent,
    LatchReading,
    OutboundEvent,
    TelemetryReading,
)
from gateway.domain.monitor import CribMonitor
from gateway.domain.stats import IngestStats
from gateway.domain.vocab import AlarmEventType, AlarmKind, LatchState, Source
from gateway.settings import Settings, settings_from_mapping

OPEN = LatchState.OPEN
CLOSED = LatchState.CLOSED

SITE_ID = "test-site"

# The default site: a room with grace 0 and one with grace 10, each with wireless and wired cribs.
FAST_ROOM = "fast"  # grace 0
SLOW_ROOM = "slow"  # grace 10
FAST_WIRELESS = "f-1"  # sensor s-f1
FAST_WIRED = "f-2"  # gpio 5
SLOW_WIRELESS = "s-1"  # sensor s-s1
SLOW_WIRELESS_2 = "s-2"  # sensor s-s2
SLOW_WIRED = "w-1"  # gpio 6
SENSOR_OF = {
    FAST_WIRELESS: "s-f1",
    FAST_WIRED: "gpio5",
    SLOW_WIRELESS: "s-s1",
    SLOW_WIRELESS_2: "s-s2",
    SLOW_WIRED: "gpio6",
}
WIRELESS_CRIBS = (FAST_WIRELESS, SLOW_WIRELESS, SLOW_WIRELESS_2)
WIRED_CRIBS = (FAST_WIRED, SLOW_WIRED)

DEFAULT_SITE: dict[str, Any] = {
    "site": {"id": SITE_ID, "label": "Test site", "demo": True},
    "rooms": [
        {
            "id": FAST_ROOM,
            "label": "Fast room",
            "grace_s": 0,
            "cribs": [
                {"id": FAST_WIRELESS, "label": "Bedje F1", "sensor_id": "s-f1"},
                {"id": FAST_WIRED, "label": "Bedje F2", "gpio_pin": 5},
            ],
        },
        {
            "id": SLOW_ROOM,
            "label": "Slow room",
            "grace_s": 10,
            "cribs": [
                {"id": SLOW_WIRELESS, "label": "Bedje S1", "sensor_id": "s-s1"},
                {"id": SLOW_WIRELESS_2, "label": "Bedje S2", "sensor_id": "s-s2"},
                {"id": SLOW_WIRED, "label": "Bedje W1", "gpio_pin": 6},
            ],
        },
    ],
}


def site_mapping(**sections: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of the default site with whole top-level sections replaced or added (e.g. ``alarms={...}``)."""
    data = copy.deepcopy(DEFAULT_SITE)
    for name, value in sections.items():
        data[name] = copy.deepcopy(dict(value)) if isinstance(value, Mapping) else copy.deepcopy(value)
    return data


def make_settings(alarms: Mapping[str, Any] | None = None, data: Mapping[str, Any] | None = None) -> Settings:
    """Validated demo-mode settings (no broker credentials needed) of the default site or of ``data``."""
    mapping = copy.deepcopy(dict(data)) if data is not None else site_mapping()
    if alarms is not None:
        mapping["alarms"] = dict(alarms)
    return settings_from_mapping(mapping, env={})


# ------------------------------------------------------------------------------------------ filters


def alarm_events(
    events: Iterable[OutboundEvent], type_: AlarmEventType | None = None, kind: AlarmKind | None = None
) -> list[AlarmEvent]:
    return [
        e
        for e in events
        if isinstance(e, AlarmEvent) and (type_ is None or e.type is type_) and (kind is None or e.kind is kind)
    ]


def crib_states(events: Iterable[OutboundEvent], crib_id: str | None = None) -> list[CribState]:
    return [e for e in events if isinstance(e, CribState) and (crib_id is None or e.crib_id == crib_id)]


def raised(events: Iterable[OutboundEvent], kind: AlarmKind | None = None) -> list[AlarmEvent]:
    return alarm_events(events, AlarmEventType.RAISED, kind)


def resolved(events: Iterable[OutboundEvent], kind: AlarmKind | None = None) -> list[AlarmEvent]:
    return alarm_events(events, AlarmEventType.RESOLVED, kind)


def acknowledged(events: Iterable[OutboundEvent]) -> list[AlarmEvent]:
    return alarm_events(events, AlarmEventType.ACKNOWLEDGED)


# ------------------------------------------------------------------------------------------ harness


class CoreHarness:
    """A :class:`CribMonitor` on a :class:`FakeClock`, with builders for inbound events.

    Every outbound event of every call is also appended to :attr:`log`, in order.
    """

    def __init__(self, settings: Settings | None = None, clock: FakeClock | None = None, *, run: int = 1) -> None:
        self.settings = settings if settings is not None else make_settings()
        self.clock = clock if clock is not None else FakeClock()
        self.start = self.clock.monotonic()
        self.monitor = CribMonitor(self.settings, self.clock, run=run)
        self.log: list[OutboundEvent] = []
        self._seq: defaultdict[tuple[str, str, int], int] = defaultdict(int)
        self.last_event: InboundEvent | None = None
        """The inbound event the last builder call handled."""

    @property
    def stats(self) -> IngestStats:
        return self.monitor.stats

    def now(self) -> float:
        return self.clock.monotonic()

    def _next_seq(self, sensor_id: str, channel: str, boot: int) -> int:
        key = (sensor_id, channel, boot)
        self._seq[key] += 1
        return self._seq[key]

    # -- calls into the core

    def handle(self, event: InboundEvent) -> list[OutboundEvent]:
        out = self.monitor.handle(event)
        self.log.extend(out)
        return out

    def advance(self, seconds: float = 0.0) -> list[OutboundEvent]:
        """Move the clock by ``seconds`` and let the core fire what fell due."""
        self.clock.advance(seconds)
        out = self.monitor.advance()
        self.log.extend(out)
        return out

    def advance_to(self, monotonic: float) -> list[OutboundEvent]:
        """Move the clock to exactly ``monotonic`` (no float drift: t - now is exact near t) and fire."""
        self.clock.advance(monotonic - self.clock.monotonic())
        assert self.clock.monotonic() == monotonic
        out = self.monitor.advance()
        self.log.extend(out)
        return out

    # -- inbound builders: each builds one event, handles it and keeps it in ``last_event``

    def latch(
        self,
        crib_id: str,
        state: LatchState,
        *,
        boot: int = 1,
        seq: int | None = None,
        live: bool = True,
        observed_at: float | None = None,
    ) -> list[OutboundEvent]:
        sensor_id = SENSOR_OF.get(crib_id, crib_id)
        wired = sensor_id.startswith("gpio")
        self.last_event = LatchReading(
            sensor_id=sensor_id,
            state=state,
            boot=boot,
            seq=self._next_seq(sensor_id, "latch", boot) if seq is None else seq,
            sensor_ts=None if wired else self.clock.time(),
            source=Source.GPIO if wired else Source.MQTT,
            live=live,
            observed_at=observed_at,
        )
        return self.handle(self.last_event)

    def telemetry(
        self,
        crib_id: str,
        *,
        battery_pct: int = 90,
        interval_s: float = 30.0,
        boot: int = 1,
        seq: int | None = None,
        rssi_dbm: int = -60,
        firmware: str = "1.2.3",
        uptime_s: int = 100,
        observed_at: float | None = None,
    ) -> list[OutboundEvent]:
        sensor_id = SENSOR_OF.get(crib_id, crib_id)
        self.last_event = TelemetryReading(
            sensor_id=sensor_id,
            boot=boot,
            seq=self._next_seq(sensor_id, "telemetry", boot) if seq is None else seq,
            sensor_ts=self.clock.time(),
            battery_pct=battery_pct,
            rssi_dbm=rssi_dbm,
            firmware=firmware,
            uptime_s=uptime_s,
            interval_s=interval_s,
            observed_at=observed_at,
        )
        return self.handle(self.last_event)

    def availability(
        self, crib_id: str, *, online: bool, boot: int = 1, live: bool = True, observed_at: float | None = None
    ) -> list[OutboundEvent]:
        sensor_id = SENSOR_OF.get(crib_id, crib_id)
        self.last_event = AvailabilityChange(
            sensor_id=sensor_id,
            online=online,
            boot=boot,
            sensor_ts=self.clock.time(),
            live=live,
            observed_at=observed_at,
        )
        return self.handle(self.last_event)

    def ack(
        self,
        *,
        alarm_id: str | None = None,
        crib_id: str | None = None,
        by: str = "anna",
        device: str = "pager-1",
    ) -> list[OutboundEvent]:
        self.last_event = AckRequest(by=by, device=device, alarm_id=alarm_id, crib_id=crib_id)
        return self.handle(self.last_event)

    # -- composite steps

    def close_wired(self, crib_id: str) -> list[OutboundEvent]:
        """Give a wired crib a settled, closed latch (reading held for the debounce time)."""
        out = self.latch(crib_id, CLOSED)
        out += self.advance(self.settings.alarms.debounce_gpio_ms / 1000.0)
        assert self.monitor.crib_state(crib_id).latch is CLOSED
        return out

    def open_alarm(self, crib_id: str) -> AlarmEvent:
        """Open a crib of the grace-0 room (wireless) and return the CRIB_OPEN alarm it raises at once."""
        out = self.latch(crib_id, OPEN)
        (alarm,) = raised(out, AlarmKind.CRIB_OPEN)
        return alarm
