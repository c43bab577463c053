"""The cribwatch MQTT protocol, written once.

Every topic and every payload that crosses the broker is defined here and only here. The gateway and
the sensor simulator both import this module, and ``docs/protocol.md`` describes the same thing for
people; ``tests/test_protocol.py`` keeps the two honest.

Topic scheme (``<base>`` defaults to ``cribwatch``)::

    <base>/<site>/sensor/<sensor>/latch         sensor -> gateway   QoS 1, retained
    <base>/<site>/sensor/<sensor>/telemetry     sensor -> gateway   QoS 0, not retained
    <base>/<site>/sensor/<sensor>/availability  sensor -> gateway   QoS 1, retained (MQTT last will)
    <base>/<site>/alarm/<room>                  gateway -> staff    QoS 1, not retained
    <base>/<site>/crib/<crib>/state             gateway -> staff    QoS 1, retained
    <base>/<site>/gateway/availability          gateway -> all      QoS 1, retained (MQTT last will)
    <base>/<site>/gateway/stats                 gateway -> techs    QoS 0, retained
    <base>/<site>/ack                           staff -> gateway    QoS 1, not retained

Payloads are UTF-8 JSON objects with a schema version ``v``. Sensor payloads carry the sensor's boot
counter ``boot`` and a per-boot sequence number ``seq`` (the pair orders a sensor's messages across
reboots) and the sensor's own clock ``ts`` (Unix seconds). Nothing in any payload identifies a child.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, model_validator

SCHEMA_VERSION = 1
DEFAULT_BASE_TOPIC = "cribwatch"

ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
"""Site, room, crib, sensor and staff ids: lower case, digits, ``-`` and ``_``; safe inside a topic."""

_ID_RE = re.compile(ID_PATTERN)

Identifier = Annotated[str, Field(pattern=ID_PATTERN, description="Lower case letters, digits, - and _.")]


class LatchState(enum.StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class Qos(enum.IntEnum):
    AT_MOST_ONCE = 0
    AT_LEAST_ONCE = 1


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """How one kind of message is published: its QoS and retain flag."""

    qos: Qos
    retain: bool


LATCH = TopicSpec(Qos.AT_LEAST_ONCE, retain=True)
"""Latch changes must arrive; retained so a restarted gateway learns every latch at once."""
TELEMETRY = TopicSpec(Qos.AT_MOST_ONCE, retain=False)
"""Periodic; the next heartbeat replaces a lost one. Not retained: a retained heartbeat would make a
dead sensor look alive to a gateway that has just started."""
AVAILABILITY = TopicSpec(Qos.AT_LEAST_ONCE, retain=True)
"""Online on connect, offline by the broker's last will; retained so late subscribers know."""
ALARM_EVENT = TopicSpec(Qos.AT_LEAST_ONCE, retain=False)
"""Each alarm event must reach staff once at least; events are history, never replayed by retain."""
CRIB_STATE = TopicSpec(Qos.AT_LEAST_ONCE, retain=True)
"""The current truth of a crib; retained so a tablet that connects sees every open alarm."""
GATEWAY_AVAILABILITY = TopicSpec(Qos.AT_LEAST_ONCE, retain=True)
GATEWAY_STATS = TopicSpec(Qos.AT_MOST_ONCE, retain=True)
ACK = TopicSpec(Qos.AT_LEAST_ONCE, retain=False)
"""A pager button press must arrive; never retained (a retained ack would acknowledge again)."""


# --------------------------------------------------------------------------------------------- topics


class SensorChannel(enum.StrEnum):
    LATCH = "latch"
    TELEMETRY = "telemetry"
    AVAILABILITY = "availability"


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names of one site."""

    site: str
    base: str = DEFAULT_BASE_TOPIC

    @property
    def prefix(self) -> str:
        return f"{self.base}/{self.site}"

    def sensor(self, sensor_id: str, channel: SensorChannel) -> str:
        return f"{self.prefix}/sensor/{sensor_id}/{channel.value}"

    @property
    def sensor_filter(self) -> str:
        """What the gateway subscribes to for every sensor of the site."""
        return f"{self.prefix}/sensor/+/+"

    def alarm(self, room_id: str) -> str:
        return f"{self.prefix}/alarm/{room_id}"

    @property
    def alarm_filter(self) -> str:
        """Every alarm event of the site (a site-wide pager or the manager's tablet)."""
        return f"{self.prefix}/alarm/+"

    def crib_state(self, crib_id: str) -> str:
        return f"{self.prefix}/crib/{crib_id}/state"

    @property
    def crib_state_filter(self) -> str:
        return f"{self.prefix}/crib/+/state"

    @property
    def gateway_availability(self) -> str:
        return f"{self.prefix}/gateway/availability"

    @property
    def gateway_stats(self) -> str:
        return f"{self.prefix}/gateway/stats"

    @property
    def ack(self) -> str:
        return f"{self.prefix}/ack"

    def parse_sensor_topic(self, topic: str) -> tuple[str, SensorChannel]:
        """``<prefix>/sensor/<id>/<channel>`` -> (id, channel); ProtocolError on anything else."""
        head = f"{self.prefix}/sensor/"
        if not topic.startswith(head):
            raise ProtocolError("topic", f"not a sensor topic of site {self.site!r}: {topic!r}")
        parts = topic[len(head) :].split("/")
        if len(parts) != 2:
            raise ProtocolError("topic", f"expected {head}<sensor>/<channel>, got {topic!r}")
        sensor_id, channel = parts
        if not _ID_RE.fullmatch(sensor_id):
            raise ProtocolError("topic", f"sensor id {sensor_id!r} does not match {ID_PATTERN}")
        try:
            return sensor_id, SensorChannel(channel)
        except ValueError:
            known = ", ".join(c.value for c in SensorChannel)
            raise ProtocolError("topic", f"unknown channel {channel!r} (expected one of {known})") from None


# ------------------------------------------------------------------------------------------- payloads


class ProtocolError(ValueError):
    """A message that does not follow this protocol. ``reason`` is a short counter key."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _version_on_the_wire(cls, data: Any, info: ValidationInfo) -> Any:
        """A payload from the wire must say its version; one built in code gets the current one."""
        if info.context and info.context.get("wire") and isinstance(data, dict) and "v" not in data:
            raise ValueError("missing schema version 'v'")
        return data

    v: Literal[1] = 1
    """The schema version (SCHEMA_VERSION)."""


class _SensorPayload(_Payload):
    boot: int = Field(ge=0, description="Boot counter of the sensor; increases on every power-up.")
    seq: int = Field(ge=0, description="Sequence number within this boot, one counter per channel.")
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
    """``.../sensor/<id>/availability``: ``online`` on connect, ``offline`` as the last will."""

    state: Literal["online", "offline"]
    boot: int = Field(ge=0)
    ts: float = Field(ge=0)


class AckPayload(_Payload):
    """``<prefix>/ack``: a staff device acknowledges one alarm, or every open alarm of one crib."""

    alarm_id: str | None = Field(default=None, min_length=1, max_length=64)
    crib: Identifier | None = None
    by: Identifier = Field(description="The staff account that acknowledged.")
    device: Identifier = Field(description="The pager, tablet or board that sent it.")
    ts: float | None = Field(default=None, ge=0)


class AlarmKind(enum.StrEnum):
    CRIB_OPEN = "crib_open"
    SENSOR_OFFLINE = "sensor_offline"
    BATTERY_LOW = "battery_low"


class Priority(enum.IntEnum):
    """Higher is more urgent. Sent as its name."""

    LOW = 1
    MEDIUM = 2
    HIGH = 3

    @property
    def label(self) -> str:
        return self.name.lower()


PRIORITY_OF: dict[AlarmKind, Priority] = {
    AlarmKind.CRIB_OPEN: Priority.HIGH,
    AlarmKind.SENSOR_OFFLINE: Priority.MEDIUM,
    AlarmKind.BATTERY_LOW: Priority.LOW,
}


class AlarmEventType(enum.StrEnum):
    RAISED = "raised"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class _Part(BaseModel):
    """A part nested inside a payload (no schema version of its own)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class TriggerPayload(_Part):
    """The sensor message that raised an alarm (absent for timers such as a missed heartbeat)."""

    sensor: str
    boot: int
    seq: int


class AlarmEventPayload(_Payload):
    """``<prefix>/alarm/<room>``: one step in an alarm's life."""

    seq: int = Field(ge=0, description="Gateway-wide event sequence within one gateway run.")
    gw_boot: int = Field(ge=0, description="Start time of the gateway run, Unix milliseconds.")
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


class CribAlarmSummary(_Part):
    alarm_id: str
    kind: AlarmKind
    priority: Literal["low", "medium", "high"]
    state: Literal["raised", "acknowledged"]
    raised_at: float
    acknowledged_by: str | None = None


class CribStatePayload(_Payload):
    """``<prefix>/crib/<crib>/state`` (retained): what staff screens show for one crib."""

    seq: int
    gw_boot: int
    site: str
    room: str
    crib: str
    room_label: str
    crib_label: str
    latch: Literal["open", "closed", "unknown"]
    sensor_online: bool | None = Field(default=None, description="Absent for wired sensors (never offline).")
    battery_pct: int | None = None
    alarms: tuple[CribAlarmSummary, ...] = ()
    ts: float


class GatewayAvailabilityPayload(_Payload):
    state: Literal["online", "offline"]
    gw_boot: int


class GatewayStatsPayload(_Payload):
    gw_boot: int
    ts: float
    accepted: int
    rejected: dict[str, int]
    ignored: dict[str, int]
    active_alarms: int
    channel_failures: dict[str, int]


AnyPayload = (
    LatchPayload
    | TelemetryPayload
    | AvailabilityPayload
    | AckPayload
    | AlarmEventPayload
    | CribStatePayload
    | GatewayAvailabilityPayload
    | GatewayStatsPayload
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


def is_identifier(value: str) -> bool:
    return bool(_ID_RE.fullmatch(value))
