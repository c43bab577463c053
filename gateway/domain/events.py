"""The event model: what adapters hand to the alarm core, and what the core hands to notifiers.

Adapters (MQTT, GPIO) convert raw input into these frozen events exactly once; nothing past an
adapter sees bytes or pins. Every outbound event carries who, when, which crib and room, the
priority and a gateway-wide sequence number, so the later steps (escalation, logging, the web board)
hang off it without new plumbing.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.domain.vocab import AlarmEventType, AlarmKind, LatchState, Priority, Resolution, Source

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
    every: bool = False
    """Every open alarm of the site (the gateway's own acknowledge button, beside its buzzer)."""


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
    run: int
    """The gateway run (the store's boot counter) this event happened in; alarm ids are unique across runs."""
    by: str | None = None
    """The staff account that acknowledged (ACKNOWLEDGED only)."""
    device: str | None = None
    """The device the acknowledgement came from (ACKNOWLEDGED only)."""
    trigger: Trigger | None = None
    latch_opened_at: float | None = None
    """Wall-clock time the crib's latch opened (``crib_open`` alarms; None for the other kinds)."""
    acknowledged_at: float | None = None
    """Wall-clock time of the acknowledgement, on the ACKNOWLEDGED event and every later one."""
    acknowledged_by: str | None = None
    """Who acknowledged, on the ACKNOWLEDGED event and every later one."""
    resolution: Resolution | None = None
    """Why the alarm ended (RESOLVED only)."""
    test: bool = False
    """A test alarm (a technician's simulator run or a test button): on record, shown as a test."""
    escalation_level: int = 0
    """How far escalation has gone: the index of the last step of its chain reached (0: the first notices)."""
    maintenance: bool = False
    """Raised while its crib was in maintenance: recorded, not sent (the channels and the alert policy skip it)."""
    flaps: int = 0
    """Latch changes while the crib was flapping, folded into this one alarm instead of a storm of alarms."""

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
    acknowledged_at: float | None = None
    latch_opened_at: float | None = None
    test: bool = False
    escalation_level: int = 0
    maintenance: bool = False
    flaps: int = 0


@dataclass(frozen=True, slots=True)
class MaintenanceView:
    """A crib (or its sensor) in maintenance: alarms are recorded, not sent, until ``until`` (wall clock)."""

    reason: str
    since: float
    until: float
    by: str


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
    latch_opened_at: float | None = None
    """Wall-clock time the latch opened, while it is open (None when closed or unknown)."""
    maintenance: MaintenanceView | None = None
    """Set while the crib is in maintenance."""


OutboundEvent = AlarmEvent | CribState


# ----------------------------------------------------------------------------------- from the record


@dataclass(frozen=True, slots=True)
class OpenAlarmRecord:
    """An alarm that a previous run left open (raised or acknowledged, not resolved), as the store keeps it:
    what the core takes back at start-up, before any adapter runs."""

    alarm_id: str
    run: int
    crib_id: str
    kind: AlarmKind
    raised_at: float
    """Wall-clock time, Unix seconds."""
    trigger: Trigger | None = None
    latch_opened_at: float | None = None
    acknowledged_by: str | None = None
    acknowledged_device: str | None = None
    acknowledged_at: float | None = None
    test: bool = False
    escalation_level: int = 0
    maintenance: bool = False
    flaps: int = 0
    room_id: str = ""
    room_label: str = ""
    crib_label: str = ""
    """Where it was raised, as the site file said then (to end it on the wire if the crib has left the file)."""


@dataclass(frozen=True, slots=True)
class CribRecord:
    """A crib's last known state, as the store keeps it (from its latest :class:`CribState`)."""

    crib_id: str
    latch: LatchState | None
    sensor_online: bool | None
    battery_pct: int | None
    at: float
    """Wall-clock time of that state."""
    latch_opened_at: float | None = None
    """Wall-clock time the latch opened, if it was open: the grace period goes on from there after a restart."""


@dataclass(frozen=True, slots=True)
class MaintenanceRecord:
    """A crib in maintenance, as the store keeps it (so a restart keeps it, and ends it on time)."""

    crib_id: str
    reason: str
    since: float
    until: float
    by: str


@dataclass(frozen=True, slots=True)
class MaintenanceChange:
    """A maintenance started (``record`` set) or ended (``record`` None; ``why``: ``ended`` by a technician,
    ``expired`` on time), for the composition root to record in the store and the audit log."""

    crib_id: str
    record: MaintenanceRecord | None
    by: str
    why: str
    at: float


# ------------------------------------------------------------------------------------------ answers


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """What became of one inbound event: taken, or refused with the reason the stats count it under."""

    accepted: bool
    reason: str | None = None
    """For a refusal: ``duplicate``, ``out_of_order``, ``refused_sequence``, ``unknown_sensor``, ``wired_sensor``,
    ``ack_unknown_alarm``, ``ack_unknown_crib``, ``ack_nothing_open``, ``ack_again``, ``bad_ack``, ``fault``;
    for a command: ``unknown_crib``, ``maintenance_past``, ``maintenance_too_long``, ``not_in_maintenance``,
    ``test_running``."""
    detail: str | None = None
    """For a command: what a person reads (why it was refused, or what was done)."""
    alarm_ids: tuple[str, ...] = ()
    """For an ack: the alarms it acknowledged (accepted), or that were acknowledged already (``ack_again``)."""
    acknowledged_by: str | None = None
    """For ``ack_again``: who had acknowledged first."""


ACCEPTED = Outcome(accepted=True)


@dataclass(frozen=True, slots=True)
class Decision:
    """The core's answer to one inbound event: its outcome and the outbound events that follow, in order."""

    outcome: Outcome
    events: list[OutboundEvent]


# ----------------------------------------------------------------------------------------- snapshot


@dataclass(frozen=True, slots=True)
class SensorHealthView:
    """A sensor's health as a technician reads it; times are wall-clock (Unix seconds)."""

    online: bool | None
    last_seen: float | None
    battery_pct: int | None
    rssi_dbm: int | None
    firmware: str | None
    uptime_s: int | None
    boot: int | None
    interval_s: float | None
    refused: int
    resynced: int
    internal_errors: int
    flaps: int = 0
    """Times the latch started flapping (many changes within ``alerting.flapping.window_s``)."""
    offline_periods: int = 0
    """Times the sensor went offline."""
    flapping: bool = False
    """The latch is flapping now: its crib_open alarm holds, with a count, until it is quiet a whole window."""
    quick_resolves: int = 0
    """Alarms that ended within ``alerting.flapping.quick_resolve_s`` of being raised (nuisance alarms)."""


@dataclass(frozen=True, slots=True)
class CribView:
    """One crib in a snapshot: its state (open alarms included) and its sensor's health."""

    state: CribState
    sensor_key: str
    """The wireless sensor id, or ``gpio<pin>`` for a wired crib."""
    wired: bool
    latch_opened_at: float | None
    """Wall-clock time the latch opened, while it is open."""
    health: SensorHealthView


@dataclass(frozen=True, slots=True)
class SiteSnapshot:
    """Everything the core knows, at one instant, for the web board and the technician console: a copy taken
    without side effects (no sequence number is used, nothing is published)."""

    site_id: str
    run: int
    at: float
    """Wall-clock time the snapshot was taken."""
    cribs: tuple[CribView, ...]

    @property
    def open_alarms(self) -> tuple[AlarmSummary, ...]:
        return tuple(alarm for crib in self.cribs for alarm in crib.state.alarms)
