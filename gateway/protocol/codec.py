"""Conversion between MQTT messages and events, in both directions. Pure: no broker, no clock.

Inbound, a (topic, payload, retain flag) becomes one frozen event or a :class:`ProtocolError`;
outbound, an event becomes (topic, payload bytes, QoS, retain).
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass
from typing import Any

from pydantic_core import SchemaSerializer, core_schema

from gateway.domain.events import (
    AckRequest,
    AlarmEvent,
    AvailabilityChange,
    CribState,
    InboundEvent,
    LatchReading,
    OutboundEvent,
    Outcome,
    TelemetryReading,
)
from gateway.domain.vocab import ID_PATTERN, Priority, Source, is_identifier
from gateway.protocol import (
    ACK_ANSWER,
    ALARM_EVENT,
    CRIB_STATE,
    MAX_PAYLOAD_BYTES,
    SCHEMA_VERSION,
    AckAnswerPayload,
    AckPayload,
    AckResult,
    AlarmEventPayload,
    AvailabilityPayload,
    CribAlarmSummary,
    CribStatePayload,
    LatchPayload,
    MaintenancePayload,
    ProtocolError,
    SensorChannel,
    TelemetryPayload,
    Topics,
    TopicSpec,
    TriggerPayload,
    decode,
    encode,
)


@dataclass(frozen=True, slots=True)
class Outgoing:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    key: str | None = None
    """Set for a message kept in the store's durable outbox (an alarm event): the link reports its delivery
    under this key once the broker has acknowledged it."""

    @classmethod
    def of(cls, topic: str, payload: bytes, spec: TopicSpec) -> Outgoing:
        return cls(topic, payload, int(spec.qos), spec.retain)


_JSON_VALUE_STARTS = frozenset(b'{["-0123456789tfn')
"""The first byte of any JSON text after leading white space (an object, array, string, number or literal)."""
_JSON_WHITESPACE = b" \t\n\r"


RESERVED_DEVICE_IDS = (
    "gateway",
    "gateway-intake",
    "staff",
    "watcher",
    "technician",
    "technician-tool",
    "answer",
    "coordinator",
)
"""Device ids no ack may come from: the broker accounts of the gateway, the technicians' tools and the read-only
staff board (the ACL's ``ack/%u`` pattern applies to every account), and ``answer`` (``ack/answer/...`` are the
gateway's answers). The site file refuses them as staff device ids (gateway/settings.py, the same list)."""
LEGACY_ACK = (
    "the shared ack topic <base>/<site>/ack is no longer taken: each device acknowledges on ack/<device> with its "
    "own broker account (docs/protocol.md)"
)


def _check_device(device: str, wireless: Container[str], wired: Container[str]) -> None:
    """The device of an ack topic: an id, and not an account that is not a staff device's. The broker lets every
    account write ``ack/<its own name>``, sensors too; a sensor's account acknowledges nothing (``ack_device``)."""
    if not is_identifier(device):
        raise ProtocolError("topic", f"device id {device!r} does not match {ID_PATTERN}")
    if device in wireless or device in wired or device in RESERVED_DEVICE_IDS:
        raise ProtocolError("ack_device", f"{device!r} is a sensor's or the gateway's account, not a staff device's")


def screen_inbound(
    topics: Topics, topic: str, payload: bytes, *, wireless: Container[str], wired: Container[str] = ()
) -> None:
    """Cheap checks of one inbound message, before any parsing; ProtocolError for what fails them.

    What a message from a stranger usually is gets rejected here without a JSON parser or a pydantic model, in
    a few microseconds, under the same reasons as :func:`decode_inbound` and the core would give it: a sensor
    topic that is malformed (``topic``), a sensor id that no crib uses (``unknown_sensor``) or that is a wired
    crib's key (``wired_sensor``), more than MAX_PAYLOAD_BYTES (``too_large``), and bytes that cannot be
    JSON at all (``bad_json``: a first byte that starts no JSON value, or an object that is never closed).
    A message that passes still goes through :func:`decode_inbound`, which checks everything.
    """
    if topic == topics.legacy_ack:
        raise ProtocolError("legacy_ack", LEGACY_ACK)
    device = topics.ack_device(topic)
    if device is not None:
        _check_device(device, wireless, wired)
    else:
        sensor_id, _ = topics.parse_sensor_topic(topic)
        if sensor_id not in wireless:
            if sensor_id in wired:
                raise ProtocolError("wired_sensor", f"{sensor_id!r} is a wired crib's key: MQTT cannot speak for it")
            raise ProtocolError("unknown_sensor", f"sensor id {sensor_id!r} is not used by any crib of the site")
    screen_payload(payload)


def screen_payload(payload: bytes) -> None:
    """The payload checks of :func:`screen_inbound` alone (``too_large``, ``bad_json``), for a message whose topic
    is already known to be one of the site's own sensors' (the gateway's main connection)."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ProtocolError("too_large", f"{len(payload)} bytes (at most {MAX_PAYLOAD_BYTES})")
    text = payload.strip(_JSON_WHITESPACE)
    if not text or text[0] not in _JSON_VALUE_STARTS or (text[0] == 0x7B and text[-1] != 0x7D):  # { and }
        raise ProtocolError("bad_json", "not JSON")


def decode_inbound(
    topics: Topics, topic: str, payload: bytes, *, retained: bool = False, observed_at: float | None = None
) -> InboundEvent:
    """One message from the gateway's subscriptions as an event; ProtocolError if it is not one.

    ``observed_at`` is the monotonic time the message arrived; the core judges the event by it.
    """
    device = topics.ack_device(topic)
    if device is not None:
        if not is_identifier(device):
            raise ProtocolError("topic", f"device id {device!r} does not match {ID_PATTERN}")
        if retained:
            raise ProtocolError("retained_ack", "a retained ack replayed by the broker acknowledges nothing")
        ack = decode(AckPayload, payload)
        if ack.alarm_id is None and ack.crib is None:
            raise ProtocolError("bad_payload", "AckPayload: give alarm_id or crib")
        if ack.device is not None and ack.device != device:
            raise ProtocolError(
                "ack_device", f"the ack says device {ack.device!r} on {device!r}'s topic: a device acks as itself"
            )
        return AckRequest(
            by=ack.by if ack.by is not None else device,
            device=device,
            alarm_id=ack.alarm_id,
            crib_id=ack.crib,
            sent_ts=ack.ts,
            observed_at=observed_at,
        )
    sensor_id, channel = topics.parse_sensor_topic(topic)
    return decode_sensor(sensor_id, channel, payload, retained=retained, observed_at=observed_at)


def decode_sensor(
    sensor_id: str,
    channel: SensorChannel,
    payload: bytes,
    *,
    retained: bool = False,
    observed_at: float | None = None,
) -> InboundEvent:
    """One message of a sensor, its topic already parsed (:meth:`Topics.parse_sensor_topic`: the gateway does that
    once per topic it subscribes to, not once per message); ProtocolError if the payload is not one.

    One pass: pydantic's compiled validator parses and checks the bytes in one go (``model_validate_json``), and the
    event is built from the validated model."""
    if channel is SensorChannel.LATCH:
        latch = decode(LatchPayload, payload)
        return LatchReading(
            sensor_id=sensor_id,
            state=latch.state,
            boot=latch.boot,
            seq=latch.seq,
            sensor_ts=latch.ts,
            source=Source.MQTT,
            live=not retained,
            observed_at=observed_at,
        )
    if channel is SensorChannel.TELEMETRY:
        tel = decode(TelemetryPayload, payload)
        return TelemetryReading(
            sensor_id=sensor_id,
            boot=tel.boot,
            seq=tel.seq,
            sensor_ts=tel.ts,
            battery_pct=tel.battery_pct,
            rssi_dbm=tel.rssi_dbm,
            firmware=tel.fw,
            uptime_s=tel.uptime_s,
            interval_s=tel.interval_s,
            observed_at=observed_at,
        )
    avail = decode(AvailabilityPayload, payload)
    return AvailabilityChange(
        sensor_id=sensor_id,
        online=avail.state == "online",
        boot=avail.boot,
        sensor_ts=avail.ts,
        live=not retained,
        observed_at=observed_at,
    )


def alarm_event_payload(ev: AlarmEvent) -> AlarmEventPayload:
    """An alarm event on the wire; its ``gw_run`` is the run the event happened in (an alarm restored from an
    earlier run keeps its id, and is acknowledged or resolved in this one)."""
    trigger = None
    if ev.trigger is not None:
        trigger = TriggerPayload(sensor=ev.trigger.sensor_id, boot=ev.trigger.boot, seq=ev.trigger.seq)
    return AlarmEventPayload(
        seq=ev.seq,
        gw_run=ev.run,
        event=ev.type,
        alarm_id=ev.alarm_id,
        kind=ev.kind,
        priority=ev.priority.label,
        site=ev.site_id,
        room=ev.room_id,
        crib=ev.crib_id,
        room_label=ev.room_label,
        crib_label=ev.crib_label,
        ts=ev.at,
        raised_at=ev.raised_at,
        by=ev.by,
        device=ev.device,
        trigger=trigger,
        latch_opened_at=ev.latch_opened_at,
        acknowledged_at=ev.acknowledged_at,
        acknowledged_by=ev.acknowledged_by,
        resolution=ev.resolution,
        test=ev.test,
        escalation_level=ev.escalation_level,
        maintenance=ev.maintenance,
        flaps=ev.flaps,
    )


def crib_state_payload(st: CribState, gw_run: int) -> CribStatePayload:
    return CribStatePayload(
        seq=st.seq,
        gw_run=gw_run,
        site=st.site_id,
        room=st.room_id,
        crib=st.crib_id,
        room_label=st.room_label,
        crib_label=st.crib_label,
        latch="unknown" if st.latch is None else st.latch.value,
        sensor_online=st.sensor_online,
        battery_pct=st.battery_pct,
        alarms=tuple(
            CribAlarmSummary(
                alarm_id=a.alarm_id,
                kind=a.kind,
                priority=a.priority.label,
                state="raised" if a.acknowledged_by is None else "acknowledged",
                raised_at=a.raised_at,
                acknowledged_by=a.acknowledged_by,
                acknowledged_at=a.acknowledged_at,
                latch_opened_at=a.latch_opened_at,
                test=a.test,
                escalation_level=a.escalation_level,
                maintenance=a.maintenance,
                flaps=a.flaps,
            )
            for a in st.alarms
        ),
        latch_opened_at=st.latch_opened_at,
        maintenance=None
        if st.maintenance is None
        else MaintenancePayload(
            reason=st.maintenance.reason, since=st.maintenance.since, until=st.maintenance.until, by=st.maintenance.by
        ),
        ts=st.at,
    )


_ACK_RESULTS: dict[str | None, AckResult] = {
    None: "accepted",
    "ack_again": "already_acknowledged",
    "ack_unknown_alarm": "unknown_alarm",
    "ack_unknown_crib": "unknown_crib",
    "ack_nothing_open": "nothing_open",
    "bad_ack": "invalid",
}


def ack_answer(topics: Topics, ack: AckRequest, outcome: Outcome, gw_run: int, at: float) -> Outgoing | None:
    """The gateway's answer to one ack, to ``<prefix>/ack/answer/<device>``; None for an outcome that is no answer
    to give (the core failed on the ack: its fault alarm says so to everyone)."""
    result = _ACK_RESULTS.get(None if outcome.accepted else outcome.reason)
    if result is None:
        return None
    payload = AckAnswerPayload(
        result=result,
        alarm_ids=outcome.alarm_ids,
        acknowledged_by=ack.by if outcome.accepted else outcome.acknowledged_by,
        by=ack.by,
        device=ack.device,
        alarm_id=ack.alarm_id,
        crib=ack.crib_id,
        sent_ts=ack.sent_ts,
        gw_run=gw_run,
        ts=at,
    )
    return Outgoing.of(topics.ack_answer(ack.device), encode(payload), ACK_ANSWER)


def encode_outbound(topics: Topics, ev: OutboundEvent, gw_run: int) -> Outgoing:
    """An outbound event on the wire, encoded the fast way (see :func:`alarm_event_json`)."""
    if isinstance(ev, AlarmEvent):
        return Outgoing(topics.alarm(ev.room_id), alarm_event_json(ev), _ALARM_QOS, ALARM_EVENT.retain)
    return Outgoing(topics.crib_state(ev.crib_id), crib_state_json(ev, gw_run), _STATE_QOS, CRIB_STATE.retain)


def encode_outbound_validated(topics: Topics, ev: OutboundEvent, gw_run: int) -> Outgoing:
    """The same as :func:`encode_outbound`, through the validated payload models (the reference it must equal)."""
    if isinstance(ev, AlarmEvent):
        return Outgoing.of(topics.alarm(ev.room_id), encode(alarm_event_payload(ev)), ALARM_EVENT)
    return Outgoing.of(topics.crib_state(ev.crib_id), encode(crib_state_payload(ev, gw_run)), CRIB_STATE)


# ------------------------------------------------------------------------- the alarm path's fast encoding
#
# An alarm event and a crib state are built by the core, whose types already guarantee what the payload models
# check (no unknown field, the right types, non-negative counters): validating them again cost the alarm 15 to
# 25 us per event (bench.stages). On the alarm path they are encoded from plain dicts, in the models' field order,
# ``None`` left out, by pydantic-core's own JSON serializer (the same number and string formatting as
# ``model_dump_json``; enums given as their values, which that serializer would look up more slowly). The models
# stay the one definition of the payloads: ``tests/test_fast_encoding.py`` checks, for every event type, alarm
# kind and optional part, that these bytes equal ``encode(alarm_event_payload(ev))`` and
# ``encode(crib_state_payload(st))``, and that the dicts have exactly the models' fields.

_JSON = SchemaSerializer(core_schema.any_schema())
_ALARM_QOS, _STATE_QOS = int(ALARM_EVENT.qos), int(CRIB_STATE.qos)
_PRIORITY_LABEL = {p: p.label for p in Priority}


def alarm_event_fields(ev: AlarmEvent) -> dict[str, Any]:
    """An alarm event as :class:`AlarmEventPayload`'s fields, in its order, unset ones as ``None``."""
    trigger = ev.trigger
    return {
        "v": SCHEMA_VERSION,
        "seq": ev.seq,
        "gw_run": ev.run,
        "event": ev.type.value,
        "alarm_id": ev.alarm_id,
        "kind": ev.kind.value,
        "priority": _PRIORITY_LABEL[ev.priority],
        "site": ev.site_id,
        "room": ev.room_id,
        "crib": ev.crib_id,
        "room_label": ev.room_label,
        "crib_label": ev.crib_label,
        "ts": ev.at,
        "raised_at": ev.raised_at,
        "by": ev.by,
        "device": ev.device,
        "trigger": None if trigger is None else {"sensor": trigger.sensor_id, "boot": trigger.boot, "seq": trigger.seq},
        "latch_opened_at": ev.latch_opened_at,
        "acknowledged_at": ev.acknowledged_at,
        "acknowledged_by": ev.acknowledged_by,
        "resolution": None if ev.resolution is None else ev.resolution.value,
        "test": ev.test,
        "escalation_level": ev.escalation_level,
        "maintenance": ev.maintenance,
        "flaps": ev.flaps,
    }


def crib_state_fields(st: CribState, gw_run: int) -> dict[str, Any]:
    """A crib state as :class:`CribStatePayload`'s fields, in its order, unset ones as ``None``."""
    m = st.maintenance
    return {
        "v": SCHEMA_VERSION,
        "seq": st.seq,
        "gw_run": gw_run,
        "site": st.site_id,
        "room": st.room_id,
        "crib": st.crib_id,
        "room_label": st.room_label,
        "crib_label": st.crib_label,
        "latch": "unknown" if st.latch is None else st.latch.value,
        "sensor_online": st.sensor_online,
        "battery_pct": st.battery_pct,
        "alarms": [
            {
                "alarm_id": a.alarm_id,
                "kind": a.kind.value,
                "priority": _PRIORITY_LABEL[a.priority],
                "state": "raised" if a.acknowledged_by is None else "acknowledged",
                "raised_at": a.raised_at,
                "acknowledged_by": a.acknowledged_by,
                "acknowledged_at": a.acknowledged_at,
                "latch_opened_at": a.latch_opened_at,
                "test": a.test,
                "escalation_level": a.escalation_level,
                "maintenance": a.maintenance,
                "flaps": a.flaps,
            }
            for a in st.alarms
        ],
        "latch_opened_at": st.latch_opened_at,
        "maintenance": None if m is None else {"reason": m.reason, "since": m.since, "until": m.until, "by": m.by},
        "ts": st.at,
    }


def _present(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def alarm_event_json(ev: AlarmEvent) -> bytes:
    """``encode(alarm_event_payload(ev))``, without building and validating the model again."""
    return _JSON.to_json(_present(alarm_event_fields(ev)))


def crib_state_json(st: CribState, gw_run: int) -> bytes:
    """``encode(crib_state_payload(st, gw_run))``, without building and validating the models again."""
    fields = _present(crib_state_fields(st, gw_run))
    fields["alarms"] = [_present(a) for a in fields["alarms"]]
    return _JSON.to_json(fields)
