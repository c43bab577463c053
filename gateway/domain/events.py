"""The event model: what adapters hand to the alarm core, and what the core hands to notifiers.

Adapters (MQTT, GPIO) convert raw input into these frozen events exactly once; nothing past an
adapter sees bytes or pins. Every outbound event carries who, when, which crib and room, the
priority and a gateway-wide sequence number, so the later steps (escalation, logging, the web board)
hang off it without new plumbing.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.domain.vocab import AlarmEventType, AlarmKind, LatchState, Priority, Source

# ------------------------------------------------------------------------------------------- inbound


@dataclass(frozen=True, slots=True)
class LatchReading:
    sensor_id: str
    state: LatchState
    boot: int
    seq: int
    sensor_ts: float | None
    source: Source
    live: bool = True
    """False for a retained copy replayed by the broker: it tells the state, not that the sensor lives."""
    observed_at: float | None = None
    """Monotonic time the gateway saw it (set by the adapter); None: when the core handles it."""


@dataclass(frozen=True, slots=True)
class TelemetryReading:
    sensor_id: str
    boot: int
    seq: int
    sensor_ts: float
    battery_pct: int
    rssi_dbm: int
    firmware: str
    uptime_s: int
    interval_s: float
    observed_at: float | None = None
    """Monotonic time the gateway saw it (set by the adapter); None: when the core handles it."""


@dataclass(frozen=True, slots=True)
class AvailabilityChange:
    sensor_id: str
    online: bool
    boot: int
    sensor_ts: float
    live: bool = True
    """False for a retained copy replayed by the broker: "online" then proves nothing about now."""
    observed_at: float | None = None
    """Monotonic time the gateway saw it (set by the adapter); None: when the core handles it."""


@dataclass(frozen=True, slots=True)
class AckRequest:
    """Staff acknowledge one alarm (``alarm_id``) or every open alarm of a crib (``crib_id``)."""

    by: str
    device: str
    alarm_id: str | None = None
    crib_id: str | None = None
    sent_ts: float | None = None
    observed_at: float | None = None
    """Monotonic time the gateway saw it (set by the adapter); None: when the core handles it."""


InboundEvent = LatchReading | TelemetryReading | AvailabilityChange | AckRequest


# ------------------------------------------------------------------------------------------ outbound


@dataclass(frozen=True, slots=True)
class Trigger:
    """The sensor message behind an event."""

    sensor_id: str
    boot: int
    seq: int


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    """One step of one alarm's life: raised, acknowledged or resolved."""

    seq: int
    type: AlarmEventType
    alarm_id: str
    kind: AlarmKind
    priority: Priority
    site_id: str
    room_id: str
    crib_id: str
    room_label: str
    crib_label: str
    at: float
    """Wall-clock time of this event."""
    raised_at: float
    by: str | None = None
    """The staff account that acknowledged (ACKNOWLEDGED only)."""
    device: str | None = None
    trigger: Trigger | None = None

    @property
    def response_s(self) -> float:
        """Seconds from raising to this event: the response time of an acknowledgement."""
        return self.at - self.raised_at


@dataclass(frozen=True, slots=True)
class AlarmSummary:
    alarm_id: str
    kind: AlarmKind
    priority: Priority
    acknowledged_by: str | None
    raised_at: float


@dataclass(frozen=True, slots=True)
class CribState:
    """The current truth of one crib, sent whenever any part of it changes."""

    seq: int
    site_id: str
    room_id: str
    crib_id: str
    room_label: str
    crib_label: str
    latch: LatchState | None
    sensor_online: bool | None
    battery_pct: int | None
    alarms: tuple[AlarmSummary, ...]
    at: float


OutboundEvent = AlarmEvent | CribState
