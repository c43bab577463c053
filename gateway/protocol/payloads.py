"""Every payload that crosses the broker, as a pydantic model, and the one way to encode and decode them.

``docs/protocol.md`` describes the same payloads for people; ``tests/test_protocol.py`` keeps the two honest.
Payloads are UTF-8 JSON objects with a schema version ``v``, validated strictly (no type is converted).
Latch and telemetry carry the sensor's boot counter ``boot`` and a per-boot, per-channel sequence number ``seq``
(both unsigned 32-bit, wrapping to 0; the pair orders a sensor's messages across reboots) and the sensor's own
clock ``ts`` (Unix seconds); availability carries ``boot`` and ``ts`` but no ``seq``. Nothing in any payload
identifies a child.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from gateway.domain.vocab import AlarmEventType, AlarmKind, Identifier, LatchState, Resolution
from gateway.protocol.errors import ProtocolError
from gateway.protocol.topics import SensorChannel

SCHEMA_VERSION = 1

UINT32_MAX = 0xFFFF_FFFF
SEQ_MAX = UINT32_MAX
"""A sensor's ``seq`` is an unsigned 32-bit counter: 0 on every boot, one more per message of its channel,
from SEQ_MAX back to 0."""
BOOT_MAX = UINT32_MAX
"""A sensor's ``boot`` is an unsigned 32-bit counter: one more on every power-up, from BOOT_MAX back to 0."""

Uint32 = Annotated[int, Field(ge=0, le=UINT32_MAX)]
"""An unsigned 32-bit integer (``boot``, ``seq``): a bigger value is refused, naming the field and the bound."""

_WIRE_CONFIG = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)
"""Every payload and every part of one: no unknown field, finite numbers only, and strict types. Strict means an
``int`` field takes a JSON integer only (not ``"17"``, ``true`` or ``17.0``), a ``str`` field a JSON string only,
a ``bool`` field ``true`` or ``false`` only; a ``float`` field takes any JSON number, ``1764160000`` as well as
``1764160000.25``; an enum field takes its value's JSON string. Built in code, an enum field takes a member only."""


class _Payload(BaseModel):
    model_config = _WIRE_CONFIG

    @model_validator(mode="after")
    def _version_on_the_wire(self, info: ValidationInfo) -> Self:
        """A payload from the wire must say its version; one built in code gets the current one.

        An "after" validator on purpose: a "before" one would get the JSON as Python objects, and strict
        validation of those differs from strict JSON validation (a JSON array would no longer fill a tuple).
        """
        if info.context and info.context.get("wire") and "v" not in self.model_fields_set:
            raise ValueError("missing schema version 'v'")
        return self

    @field_validator("v", mode="before")
    @classmethod
    def _version_is_an_integer(cls, value: Any) -> Any:
        # A Literal matches by equality, even in strict mode: without this, true and 1.0 would pass as 1.
        if type(value) is not int:
            raise PydanticCustomError("int_type", "Input should be the integer {version}", {"version": SCHEMA_VERSION})
        return value

    v: Literal[1] = 1
    """The schema version (SCHEMA_VERSION)."""


class _SensorPayload(_Payload):
    """What latch and telemetry carry (availability has no ``seq``)."""

    boot: Uint32 = Field(description="Boot counter of the sensor; one more on every power-up, wraps to 0.")
    seq: Uint32 = Field(description="Sequence number within this boot, one counter per channel, wraps to 0.")
    ts: float = Field(ge=0, description="The sensor's clock, Unix seconds.")


class LatchPayload(_SensorPayload):
    """``.../sensor/<id>/latch``: the latch's debounced state, sent on every change and on connect."""

    state: LatchState


class TelemetryPayload(_SensorPayload):
    """``.../sensor/<id>/telemetry``: the heartbeat."""

    battery_pct: int = Field(ge=0, le=100)
    rssi_dbm: int = Field(ge=-130, le=0)
    fw: str = Field(min_length=1, max_length=32)
    uptime_s: int = Field(ge=0)
    interval_s: float = Field(gt=0, le=3600, description="The sensor's heartbeat interval.")


class AvailabilityPayload(_Payload):
    """``.../sensor/<id>/availability``: ``online`` on connect, ``offline`` as the last will.

    It has no ``seq``: its ``offline`` is the MQTT last will, composed when the sensor connects, so it cannot
    carry a running counter; ``boot`` says which power-up it belongs to.
    """

    @model_validator(mode="before")
    @classmethod
    def _no_seq(cls, data: Any) -> Any:
        # Sees the JSON as Python objects, which strict mode then validates as such: fine for these fields (no
        # tuple, no nested model); see _Payload._version_on_the_wire.
        if isinstance(data, dict) and "seq" in data:
            raise PydanticCustomError(
                "availability_seq",
                "availability has no seq (only latch and telemetry carry one: an offline is the MQTT last will, "
                "composed at connect time)",
            )
        return data

    state: Literal["online", "offline"]
    boot: Uint32 = Field(description="Boot counter of the sensor: which power-up this is about.")
    ts: float = Field(ge=0)


class AckPayload(_Payload):
    """``<prefix>/ack/<device>``: a staff device acknowledges one alarm, or every open alarm of one crib.

    The device is the topic's last level, which the broker lets only that device's account write; ``device`` in
    the payload is optional, and an ack whose ``device`` differs from its topic's is refused (``ack_device``).
    """

    alarm_id: str | None = Field(default=None, min_length=1, max_length=64)
    crib: Identifier | None = None
    by: Identifier | None = Field(
        default=None,
        description="Who the device says acknowledged: a claim. The gateway records the member the site's roster "
        "says the device belongs to (else the device id); a different by is kept as a claim only (ack_by_claim).",
    )
    device: Identifier | None = Field(
        default=None, description="The pager, tablet or board that sent it: if given, the topic's device."
    )
    ts: float | None = Field(default=None, ge=0)


class _Part(BaseModel):
    """A part nested inside a payload (no schema version of its own)."""

    model_config = _WIRE_CONFIG


class TriggerPayload(_Part):
    """The sensor message that raised an alarm (absent for timers such as a missed heartbeat)."""

    sensor: str
    boot: int
    seq: int
    # Not Uint32: for a wired crib these are the gateway's own (boot: its start, Unix seconds; seq: its count of
    # the pin's edges), and a bound here could only ever fail an alarm on its way out.


class AlarmEventPayload(_Payload):
    """``<prefix>/alarm/<room>``: one step in an alarm's life."""

    seq: int = Field(ge=0, description="Gateway-wide event sequence within one gateway run.")
    gw_run: int = Field(ge=0, description="The gateway run: its store's boot counter, one more on every start.")
    event: AlarmEventType
    alarm_id: str
    kind: AlarmKind
    priority: Literal["low", "medium", "high"]
    site: str
    room: str
    crib: str
    room_label: str
    crib_label: str
    ts: float = Field(description="When this event happened, gateway clock, Unix seconds.")
    raised_at: float
    by: str | None = None
    device: str | None = None
    trigger: TriggerPayload | None = None
    latch_opened_at: float | None = Field(default=None, description="crib_open: when the latch opened, Unix s.")
    acknowledged_at: float | None = Field(default=None, description="From the acknowledgement on: when, Unix s.")
    acknowledged_by: str | None = Field(default=None, description="From the acknowledgement on: who.")
    resolution: Resolution | None = Field(default=None, description="resolved: why the alarm ended.")
    test: bool = Field(default=False, description="A test alarm: on record, shown as a test.")
    escalation_level: int = Field(default=0, ge=0, description="How far escalation has gone (0: not escalated).")
    maintenance: bool = Field(default=False, description="Raised in maintenance: recorded, never sent to staff.")
    flaps: int = Field(default=0, ge=0, description="Latch changes folded into this alarm while the crib flapped.")


class CribAlarmSummary(_Part):
    alarm_id: str
    kind: AlarmKind
    priority: Literal["low", "medium", "high"]
    state: Literal["raised", "acknowledged"]
    raised_at: float
    acknowledged_by: str | None = None
    acknowledged_at: float | None = None
    latch_opened_at: float | None = None
    test: bool = False
    escalation_level: int = Field(default=0, ge=0)
    maintenance: bool = False
    flaps: int = Field(default=0, ge=0)


class MaintenancePayload(_Part):
    """A crib in maintenance: its alarms are recorded, not sent, until ``until``."""

    reason: str
    since: float
    until: float
    by: str


class CribStatePayload(_Payload):
    """``<prefix>/crib/<crib>/state`` (retained): what staff screens show for one crib."""

    seq: int
    gw_run: int
    site: str
    room: str
    crib: str
    room_label: str
    crib_label: str
    latch: Literal["open", "closed", "unknown"]
    sensor_online: bool | None = Field(default=None, description="Absent for wired sensors (never offline).")
    battery_pct: int | None = None
    alarms: tuple[CribAlarmSummary, ...] = ()
    latch_opened_at: float | None = Field(default=None, description="While the latch is open: since when, Unix s.")
    maintenance: MaintenancePayload | None = Field(default=None, description="While the crib is in maintenance.")
    ts: float


AckResult = Literal["accepted", "already_acknowledged", "unknown_alarm", "unknown_crib", "nothing_open", "invalid"]


class AckAnswerPayload(_Payload):
    """``<prefix>/ack/answer/<device>``: the gateway's answer to one ack, so the pager can show it."""

    result: AckResult = Field(
        description="accepted; already_acknowledged (by someone else, or by you before); unknown_alarm (no open "
        "alarm with that id: resolved, or never raised); unknown_crib; nothing_open (the crib has no open alarm); "
        "invalid (neither alarm_id nor crib)."
    )
    alarm_ids: tuple[str, ...] = Field(
        default=(), description="accepted: the alarms acknowledged now; already_acknowledged: the alarms concerned."
    )
    acknowledged_by: str | None = Field(default=None, description="already_acknowledged: who acknowledged first.")
    by: str = Field(description="The staff account of the ack answered.")
    device: str = Field(description="The device of the ack answered (also the last level of the topic).")
    alarm_id: str | None = Field(default=None, description="The ack's alarm_id, as sent.")
    crib: str | None = Field(default=None, description="The ack's crib, as sent.")
    sent_ts: float | None = Field(default=None, description="The ack's ts, as sent: tells a device which press.")
    gw_run: int
    ts: float = Field(description="When the gateway decided, Unix seconds.")


NoticeKindName = Literal["alarm", "escalation", "repeat", "reminder", "acknowledged", "resolved"]


class NotifyPayload(_Payload):
    """``<prefix>/notify/<device>``: one notice of the alert policy for one staff device (alert channel ``mqtt``).

    ``alarm`` is the alarm's latest event, as ``alarm/<room>`` carried it; the rest says why the device is told now.
    """

    notice_id: str = Field(min_length=1, max_length=96, description="<alarm_id>/<n>: unique; a repeat has its own.")
    kind: NoticeKindName = Field(
        description="alarm (the first step), escalation (nobody acknowledged in time), repeat (the chain again), "
        "reminder (acknowledged, but the crib is still open), resolved (the alarm ended)."
    )
    step: int = Field(ge=0, description="The escalation step (0 = first); for resolved, the last step reached.")
    group: str = Field(min_length=1, max_length=64, description="The staff group the device is told as.")
    member: str | None = Field(
        default=None, max_length=64, description="The staff member or device told (a staff id or device id)."
    )
    test: bool = Field(default=False, description="A test alarm: show it as a test.")
    ts: float = Field(ge=0, description="When the policy decided the notice, Unix seconds.")
    alarm: AlarmEventPayload


class ChannelHealthPayload(_Part):
    """One alert channel (mqtt, siren, webhook, apprise), as the gateway's stats report it."""

    state: Literal["ok", "failing"] = Field(
        description="failing: the last attempt failed, or one is hanging past its timeout; ok otherwise."
    )
    queued: int = Field(ge=0, description="Deliveries waiting in the channel's queue (and the one in hand).")
    delivered: int = Field(ge=0, description="Deliveries that succeeded since the gateway started.")
    failed: int = Field(ge=0, description="Attempts that failed (each retry counts).")
    gave_up: int = Field(default=0, ge=0, description="Deliveries whose every attempt failed.")
    dropped: int = Field(default=0, ge=0, description="Deliveries dropped: the queue was full, or at shutdown.")
    consecutive_failures: int = Field(ge=0, description="Attempts failed in a row since the last success.")
    last_error: str | None = Field(default=None, description="The last failure, as the channel said it.")


CommandName = Literal["test_alarm", "maintenance_on", "maintenance_off"]


class CommandPayload(_Payload):
    """``<prefix>/cmd/<device>``: one command of a technician's tool."""

    command: CommandName
    crib: Identifier = Field(description="A crib id, or the id of its sensor.")
    by: Identifier = Field(description="The technician's account (a staff id, never a name).")
    reason: str | None = Field(default=None, min_length=1, max_length=200, description="maintenance_on: why.")
    until: float | None = Field(default=None, gt=0, description="maintenance_on: when it ends, Unix seconds.")
    request: str | None = Field(default=None, max_length=64, description="Echoed in the answer.")
    ts: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _maintenance_needs_reason_and_end(self) -> Self:
        if self.command == "maintenance_on" and (self.reason is None or self.until is None):
            raise ValueError("maintenance_on needs a reason and an end (until): never open-ended")
        return self


CommandResult = Literal[
    "accepted",
    "unknown_crib",
    "maintenance_past",
    "maintenance_too_long",
    "not_in_maintenance",
    "test_running",
    "invalid",
    "fault",
]


class CommandAnswerPayload(_Payload):
    """``<prefix>/cmd/<device>/answer``: what the gateway made of one command."""

    result: CommandResult
    command: str
    crib: str
    detail: str | None = None
    alarm_ids: tuple[str, ...] = Field(default=(), description="test_alarm: the test alarm raised.")
    request: str | None = None
    gw_run: int
    ts: float


class StoreHealthPayload(_Part):
    """The gateway's store, as its stats report it."""

    size_bytes: int = Field(ge=0, description="Size of the database file and its write-ahead log.")
    pending: int = Field(ge=0, description="Writes waiting for the disk.")
    written: int = Field(ge=0, description="Writes committed since the gateway started.")
    failures: int = Field(ge=0, description="Write batches that failed (disk full, read-only, I/O error).")
    failing: bool = Field(description="The last write failed: the record is behind until it succeeds.")
    dropped: int = Field(
        ge=0,
        description="Writes given up: crib states, audit and sensor rows while the disk was far behind, and any write "
        "the database refused by itself.",
    )
    lost: int = Field(
        default=0, ge=0, description="Of those, alarm events and outbox rows: given up only so that memory lasts."
    )


class InfluxTargetHealthPayload(_Part):
    """One InfluxDB target, as the gateway's stats report it (docs/influx-schema.md)."""

    name: str
    connected: bool | None = Field(description="The last write succeeded; null: none tried yet.")
    waiting: int = Field(ge=0, description="Points in the outbox this target has not confirmed.")
    oldest_waiting_s: float | None = Field(default=None, description="Age of the oldest of them, in seconds.")
    sent: int = Field(ge=0, description="Points the server confirmed since the gateway started.")
    failures: int = Field(ge=0, description="Writes that failed (each retried).")
    rejected: int = Field(
        ge=0, description="Points the server refused, naming them (400/422, partial write): given up, logged."
    )
    dropped: int = Field(
        ge=0,
        description="Store-wide, the same on every target: telemetry points dropped before at least one target had "
        "them (the shared outbox was full, or the store's writer far behind).",
    )
    rejected_alarm: int = Field(default=0, ge=0, description="Of rejected, alarm points (each logged CRITICAL).")
    alarm_dropped: int = Field(
        default=0,
        ge=0,
        description="Store-wide: alarm points dropped when they alone filled the outbox (each logged CRITICAL).",
    )
    retry_in_s: float | None = Field(
        default=None, description="After a failure, the wait before the next try (backoff or the server's Retry-After)."
    )
    last_error: str | None = None


class GatewayAvailabilityPayload(_Payload):
    state: Literal["online", "offline"]
    gw_run: int


class GatewayStatsPayload(_Payload):
    gw_run: int
    ts: float
    accepted: int
    rejected: dict[str, int]
    ignored: dict[str, int]
    active_alarms: int
    channel_failures: dict[str, int]
    refused: dict[str, int] = Field(
        default_factory=dict, description="Per sensor: readings refused for their sequence number (WARNING)."
    )
    resynced: dict[str, int] = Field(
        default_factory=dict, description="Per sensor: readings taken although their sequence was out of line."
    )
    internal_errors: int = Field(default=0, description="Failures of the gateway's own code (CRITICAL).")
    store: StoreHealthPayload | None = Field(default=None, description="The gateway's own record (SQLite).")
    influx: tuple[InfluxTargetHealthPayload, ...] | None = Field(
        default=None, description="Each InfluxDB target (absent: no [influx] in the site file)."
    )
    channels: dict[str, ChannelHealthPayload] = Field(
        default_factory=dict, description="The alert channels of notices (docs/channels.md), by name."
    )
    nuisance: dict[str, dict[str, int]] = Field(
        default_factory=dict,
        description="Per sensor with any: flaps, offline_periods, quick_resolves (alarms ended within seconds).",
    )
    notices: dict[str, int] = Field(
        default_factory=dict, description="Notices of the alert policy sent, by kind (and skipped, by why)."
    )


AnyPayload = (
    LatchPayload
    | TelemetryPayload
    | AvailabilityPayload
    | AckPayload
    | AckAnswerPayload
    | AlarmEventPayload
    | CribStatePayload
    | GatewayAvailabilityPayload
    | GatewayStatsPayload
    | NotifyPayload
    | CommandPayload
    | CommandAnswerPayload
)

SENSOR_PAYLOADS: dict[SensorChannel, type[_SensorPayload] | type[AvailabilityPayload]] = {
    SensorChannel.LATCH: LatchPayload,
    SensorChannel.TELEMETRY: TelemetryPayload,
    SensorChannel.AVAILABILITY: AvailabilityPayload,
}

MAX_PAYLOAD_BYTES = 4096

P = TypeVar("P", bound=BaseModel)


def encode(payload: AnyPayload) -> bytes:
    """Compact JSON, ``None`` fields left out."""
    return payload.model_dump_json(exclude_none=True).encode()


def decode(model: type[P], raw: bytes) -> P:
    """Parse and validate one payload; ProtocolError with a readable reason on anything wrong."""
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise ProtocolError("too_large", f"{len(raw)} bytes (at most {MAX_PAYLOAD_BYTES})")
    try:
        return model.model_validate_json(raw, context={"wire": True})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "payload"
        reason = "bad_json" if first["type"] == "json_invalid" else "bad_payload"
        raise ProtocolError(reason, f"{model.__name__} {where}: {first['msg']}") from None
