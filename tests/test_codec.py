"""MQTT messages <-> events (gateway.protocol.codec): every inbound channel, every way a message can be wrong, and
outbound events round-tripped through the payload models of gateway.protocol."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.domain.events import (
    AckRequest,
    AlarmEvent,
    AvailabilityChange,
    CribState,
    LatchReading,
    Outcome,
    TelemetryReading,
)
from gateway.domain.vocab import AlarmEventType, AlarmKind, LatchState, Source
from gateway.protocol import (
    ALARM_EVENT,
    BOOT_MAX,
    CRIB_STATE,
    MAX_PAYLOAD_BYTES,
    SEQ_MAX,
    AckAnswerPayload,
    AlarmEventPayload,
    CribStatePayload,
    LatchPayload,
    ProtocolError,
    SensorChannel,
    Topics,
    decode,
    encode,
)
from gateway.protocol.codec import (
    Outgoing,
    ack_answer,
    decode_inbound,
    decode_sensor,
    encode_outbound,
    screen_inbound,
    screen_payload,
)
from tests.helpers import (
    CLOSED,
    FAST_WIRED,
    FAST_WIRELESS,
    OPEN,
    SITE_ID,
    SLOW_ROOM,
    SLOW_WIRELESS,
    CoreHarness,
    acknowledged,
    crib_states,
    raised,
    resolved,
)

TOPICS = Topics(SITE_ID)
SENSOR = "s-0101"

LATCH = {"v": 1, "boot": 3, "seq": 17, "ts": 1764160000.25, "state": "open"}
TELEMETRY = {
    "v": 1,
    "boot": 3,
    "seq": 120,
    "ts": 1764160030.0,
    "battery_pct": 87,
    "rssi_dbm": -61,
    "fw": "1.4.2",
    "uptime_s": 3600,
    "interval_s": 30.0,
}
AVAILABILITY = {"v": 1, "state": "offline", "boot": 3, "ts": 1764159000.0}
ACK = {"v": 1, "alarm_id": "41-12", "by": "staff-07", "device": "pager-2", "ts": 1764160005.0}
ACK_TOPIC = TOPICS.ack("pager-2")
"""Where device pager-2 acknowledges (its own account may write only this topic)."""


def raw(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


def sensor_topic(channel: SensorChannel, sensor_id: str = SENSOR) -> str:
    return TOPICS.sensor(sensor_id, channel)


def without(payload: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k != key}


# ----------------------------------------------------------------------------------------- inbound


class TestDecodeValid:
    def test_latch(self) -> None:
        ev = decode_inbound(TOPICS, sensor_topic(SensorChannel.LATCH), raw(LATCH))
        assert ev == LatchReading(
            sensor_id=SENSOR,
            state=LatchState.OPEN,
            boot=3,
            seq=17,
            sensor_ts=1764160000.25,
            source=Source.MQTT,
            live=True,
        )

    def test_retained_latch_is_not_live(self) -> None:
        ev = decode_inbound(TOPICS, sensor_topic(SensorChannel.LATCH), raw(LATCH | {"state": "closed"}), retained=True)
        assert isinstance(ev, LatchReading)
        assert (ev.state, ev.live) == (LatchState.CLOSED, False)

    def test_telemetry(self) -> None:
        ev = decode_inbound(TOPICS, sensor_topic(SensorChannel.TELEMETRY), raw(TELEMETRY))
        assert ev == TelemetryReading(
            sensor_id=SENSOR,
            boot=3,
            seq=120,
            sensor_ts=1764160030.0,
            battery_pct=87,
            rssi_dbm=-61,
            firmware="1.4.2",
            uptime_s=3600,
            interval_s=30.0,
        )

    @pytest.mark.parametrize(("state", "online"), [("online", True), ("offline", False)])
    @pytest.mark.parametrize("retained", [False, True])
    def test_availability(self, state: str, online: bool, retained: bool) -> None:
        ev = decode_inbound(
            TOPICS, sensor_topic(SensorChannel.AVAILABILITY), raw(AVAILABILITY | {"state": state}), retained=retained
        )
        assert ev == AvailabilityChange(
            sensor_id=SENSOR, online=online, boot=3, sensor_ts=1764159000.0, live=not retained
        )

    def test_retained_ack_is_refused(self) -> None:
        """A retained ack would be replayed on every reconnect and acknowledge whatever is open then."""
        with pytest.raises(ProtocolError) as err:
            decode_inbound(TOPICS, ACK_TOPIC, raw(ACK), retained=True)
        assert err.value.reason == "retained_ack"

    @pytest.mark.parametrize("interval", ["Infinity", "NaN", "1e400", "3601"])
    def test_telemetry_interval_must_be_finite_and_sane(self, interval: str) -> None:
        others = json.dumps({k: v for k, v in TELEMETRY.items() if k != "interval_s"})[:-1]
        payload = others + f', "interval_s": {interval}}}'
        with pytest.raises(ProtocolError) as err:
            decode_inbound(TOPICS, sensor_topic(SensorChannel.TELEMETRY), payload.encode())
        assert err.value.reason in {"bad_payload", "bad_json"}

    def test_ack_by_alarm_id(self) -> None:
        ev = decode_inbound(TOPICS, ACK_TOPIC, raw(ACK))
        assert ev == AckRequest(by="staff-07", device="pager-2", alarm_id="41-12", crib_id=None, sent_ts=1764160005.0)

    def test_the_device_of_an_ack_is_its_topics(self) -> None:
        """The broker lets only pager-2's account write ack/pager-2: the topic is the fact, the payload may omit it."""
        ev = decode_inbound(TOPICS, ACK_TOPIC, raw(without(ACK, "device")))
        assert isinstance(ev, AckRequest)
        assert ev.device == "pager-2"

    def test_an_ack_claiming_another_device_is_refused(self) -> None:
        with pytest.raises(ProtocolError) as err:
            decode_inbound(TOPICS, TOPICS.ack("pager-9"), raw(ACK))
        assert err.value.reason == "ack_device"

    @pytest.mark.parametrize("device", [SENSOR, "gateway", "staff", "technician", "answer", "coordinator"])
    def test_an_ack_from_an_account_that_is_no_staff_device_is_refused(self, device: str) -> None:
        """The ACL's ack/%u pattern lets every account write its own ack topic, sensors too."""
        with pytest.raises(ProtocolError) as err:
            screen_inbound(TOPICS, TOPICS.ack(device), raw(without(ACK, "device")), wireless={SENSOR})
        assert err.value.reason == "ack_device"

    def test_the_shared_ack_topic_of_earlier_versions_is_refused(self) -> None:
        with pytest.raises(ProtocolError) as err:
            screen_inbound(TOPICS, TOPICS.legacy_ack, raw(ACK), wireless={SENSOR})
        assert err.value.reason == "legacy_ack"

    def test_an_ack_without_by_is_the_device_s_own(self) -> None:
        """``by`` is optional (the gateway takes who acknowledged from its roster): absent, the device's id."""
        ev = decode_inbound(TOPICS, ACK_TOPIC, raw(without(ACK, "by")))
        assert isinstance(ev, AckRequest)
        assert (ev.by, ev.device) == ("pager-2", "pager-2")

    def test_ack_by_crib_without_ts(self) -> None:
        payload = without(without(ACK, "alarm_id"), "ts") | {"crib": "vl-1"}
        ev = decode_inbound(TOPICS, ACK_TOPIC, raw(payload))
        assert ev == AckRequest(by="staff-07", device="pager-2", alarm_id=None, crib_id="vl-1", sent_ts=None)

    @pytest.mark.parametrize(
        ("channel", "payload"),
        [
            (SensorChannel.LATCH, LATCH),
            (SensorChannel.TELEMETRY, TELEMETRY),
            (SensorChannel.AVAILABILITY, AVAILABILITY),
            (None, ACK),
        ],
        ids=["latch", "telemetry", "availability", "ack"],
    )
    def test_observed_at_is_carried_into_every_event(
        self, channel: SensorChannel | None, payload: dict[str, Any]
    ) -> None:
        topic = ACK_TOPIC if channel is None else sensor_topic(channel)
        assert decode_inbound(TOPICS, topic, raw(payload), observed_at=1234.5).observed_at == 1234.5
        assert decode_inbound(TOPICS, topic, raw(payload)).observed_at is None

    def test_integer_times_are_accepted(self) -> None:
        ev = decode_inbound(TOPICS, sensor_topic(SensorChannel.LATCH), raw(LATCH | {"ts": 1764160000}))
        assert isinstance(ev, LatchReading)
        assert ev.sensor_ts == 1764160000

    def test_other_base_topic(self) -> None:
        topics = Topics(SITE_ID, base="kdv")
        ev = decode_inbound(topics, f"kdv/{SITE_ID}/sensor/{SENSOR}/latch", raw(LATCH))
        assert isinstance(ev, LatchReading)
        with pytest.raises(ProtocolError) as info:
            decode_inbound(topics, sensor_topic(SensorChannel.LATCH), raw(LATCH))
        assert info.value.reason == "topic"

    def test_payload_of_exactly_the_maximum_size_is_accepted(self) -> None:
        body = raw(LATCH)
        padded = body[:-1] + b" " * (MAX_PAYLOAD_BYTES - len(body)) + b"}"
        assert len(padded) == MAX_PAYLOAD_BYTES
        assert isinstance(decode_inbound(TOPICS, sensor_topic(SensorChannel.LATCH), padded), LatchReading)


LATCH_TOPIC = sensor_topic(SensorChannel.LATCH)
TELEMETRY_TOPIC = sensor_topic(SensorChannel.TELEMETRY)
AVAILABILITY_TOPIC = sensor_topic(SensorChannel.AVAILABILITY)
OVERSIZED = raw(LATCH)[:-1] + b" " * MAX_PAYLOAD_BYTES + b"}"

# id -> (topic, payload, reason)
BAD_INBOUND: dict[str, tuple[str, bytes, str]] = {
    # malformed JSON
    "latch: truncated JSON": (LATCH_TOPIC, b'{"v": 1, "boot": 3,', "bad_json"),
    "latch: empty": (LATCH_TOPIC, b"", "bad_json"),
    "latch: not UTF-8": (LATCH_TOPIC, b"\xff\xfe{}", "bad_json"),
    "telemetry: not JSON": (TELEMETRY_TOPIC, b"battery=87", "bad_json"),
    "availability: plain word": (AVAILABILITY_TOPIC, b"offline", "bad_json"),
    "ack: truncated JSON": (ACK_TOPIC, b'{"v": 1, "by": ', "bad_json"),
    # JSON, but not this payload
    "latch: JSON array": (LATCH_TOPIC, b"[]", "bad_payload"),
    "latch: JSON null": (LATCH_TOPIC, b"null", "bad_payload"),
    "latch: schema v2": (LATCH_TOPIC, raw(LATCH | {"v": 2}), "bad_payload"),
    "telemetry: schema v0": (TELEMETRY_TOPIC, raw(TELEMETRY | {"v": 0}), "bad_payload"),
    "availability: schema v2": (AVAILABILITY_TOPIC, raw(AVAILABILITY | {"v": 2}), "bad_payload"),
    "ack: schema v2": (ACK_TOPIC, raw(ACK | {"v": 2}), "bad_payload"),
    "latch: missing seq": (LATCH_TOPIC, raw(without(LATCH, "seq")), "bad_payload"),
    "latch: missing state": (LATCH_TOPIC, raw(without(LATCH, "state")), "bad_payload"),
    "telemetry: missing battery": (TELEMETRY_TOPIC, raw(without(TELEMETRY, "battery_pct")), "bad_payload"),
    "availability: missing boot": (AVAILABILITY_TOPIC, raw(without(AVAILABILITY, "boot")), "bad_payload"),
    "latch: extra field": (LATCH_TOPIC, raw(LATCH | {"child": "x"}), "bad_payload"),
    "telemetry: extra field": (TELEMETRY_TOPIC, raw(TELEMETRY | {"temp_c": 21}), "bad_payload"),
    "availability: extra field": (AVAILABILITY_TOPIC, raw(AVAILABILITY | {"reason": "x"}), "bad_payload"),
    "ack: extra field": (ACK_TOPIC, raw(ACK | {"note": "x"}), "bad_payload"),
    "latch: unknown state": (LATCH_TOPIC, raw(LATCH | {"state": "ajar"}), "bad_payload"),
    "latch: negative seq": (LATCH_TOPIC, raw(LATCH | {"seq": -1}), "bad_payload"),
    "latch: seq as text": (LATCH_TOPIC, raw(LATCH | {"seq": "x"}), "bad_payload"),
    "telemetry: battery over 100": (TELEMETRY_TOPIC, raw(TELEMETRY | {"battery_pct": 101}), "bad_payload"),
    "telemetry: zero interval": (TELEMETRY_TOPIC, raw(TELEMETRY | {"interval_s": 0}), "bad_payload"),
    "telemetry on the latch topic": (LATCH_TOPIC, raw(TELEMETRY), "bad_payload"),
    "availability: unknown state": (AVAILABILITY_TOPIC, raw(AVAILABILITY | {"state": "sleeping"}), "bad_payload"),
    "ack: neither alarm_id nor crib": (ACK_TOPIC, raw(without(ACK, "alarm_id")), "bad_payload"),
    "ack: empty alarm_id": (ACK_TOPIC, raw(ACK | {"alarm_id": ""}), "bad_payload"),
    "ack: staff name, not id": (ACK_TOPIC, raw(ACK | {"by": "Anna de Vries"}), "bad_payload"),
    "ack: bad crib id": (ACK_TOPIC, raw(without(ACK, "alarm_id") | {"crib": "Bed 1"}), "bad_payload"),
    # topics
    "other site": (f"cribwatch/other-site/sensor/{SENSOR}/latch", raw(LATCH), "topic"),
    "other base": (f"kdv/{SITE_ID}/sensor/{SENSOR}/latch", raw(LATCH), "topic"),
    "alarm topic": (TOPICS.alarm("vlinders"), raw(LATCH), "topic"),
    "crib state topic": (TOPICS.crib_state("vl-1"), raw(LATCH), "topic"),
    "gateway topic": (TOPICS.gateway_availability, raw(LATCH), "topic"),
    "too deep": (LATCH_TOPIC + "/extra", raw(LATCH), "topic"),
    "no channel": (f"cribwatch/{SITE_ID}/sensor/{SENSOR}", raw(LATCH), "topic"),
    "unknown channel": (f"cribwatch/{SITE_ID}/sensor/{SENSOR}/battery", raw(LATCH), "topic"),
    "channel in capitals": (f"cribwatch/{SITE_ID}/sensor/{SENSOR}/LATCH", raw(LATCH), "topic"),
    "sensor id in capitals": (f"cribwatch/{SITE_ID}/sensor/S-0101/latch", raw(LATCH), "topic"),
    "empty sensor id": (f"cribwatch/{SITE_ID}/sensor//latch", raw(LATCH), "topic"),
    "wildcard as sensor id": (f"cribwatch/{SITE_ID}/sensor/+/latch", raw(LATCH), "topic"),
    "sensor id too long": (f"cribwatch/{SITE_ID}/sensor/{'s' * 65}/latch", raw(LATCH), "topic"),
    "ack with a suffix": (ACK_TOPIC + "/x", raw(ACK), "topic"),
    # size
    "latch: oversized": (LATCH_TOPIC, OVERSIZED, "too_large"),
    "ack: oversized": (ACK_TOPIC, raw(ACK | {"alarm_id": "a" * 10}) + b" " * MAX_PAYLOAD_BYTES, "too_large"),
    "oversized garbage": (TELEMETRY_TOPIC, b"\x00" * (MAX_PAYLOAD_BYTES + 1), "too_large"),
}


@pytest.mark.parametrize("case", list(BAD_INBOUND))
def test_bad_inbound_gives_a_protocol_error_with_a_stable_reason(case: str) -> None:
    topic, payload, reason = BAD_INBOUND[case]
    with pytest.raises(ProtocolError) as info:
        decode_inbound(TOPICS, topic, payload)
    assert info.value.reason == reason
    assert isinstance(info.value, ValueError)
    assert str(info.value).startswith(f"{reason}: ")
    assert info.value.detail


@pytest.mark.parametrize("case", list(BAD_INBOUND))
def test_the_cheap_screen_never_gives_another_reason_than_the_full_decode(case: str) -> None:
    """screen_inbound rejects what it can without parsing; whatever it rejects, decode_inbound rejects the same way."""
    topic, payload, reason = BAD_INBOUND[case]
    screened: ProtocolError | None = None
    try:
        screen_inbound(TOPICS, topic, payload, wireless={SENSOR})
    except ProtocolError as exc:
        screened = exc
    if screened is not None:
        assert screened.reason == reason
        assert str(screened).startswith(f"{reason}: ")


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        (LATCH_TOPIC, b"battery=87", "bad_json"),
        (LATCH_TOPIC, b"", "bad_json"),
        (LATCH_TOPIC, b"  \n", "bad_json"),
        (LATCH_TOPIC, b"\xff\xfe{}", "bad_json"),
        (LATCH_TOPIC, b'{"v": 1, "boot": 3,', "bad_json"),
        (ACK_TOPIC, b'{"v": 1, "by": ', "bad_json"),
        (LATCH_TOPIC, OVERSIZED, "too_large"),
        (TOPICS.sensor("ghost", SensorChannel.LATCH), raw(LATCH), "unknown_sensor"),
        (TOPICS.sensor("ghost", SensorChannel.TELEMETRY), b"not even JSON", "unknown_sensor"),
        (TOPICS.sensor("gpio17", SensorChannel.LATCH), raw(LATCH), "wired_sensor"),
        (f"cribwatch/{SITE_ID}/sensor/BAD/latch", raw(LATCH), "topic"),
    ],
)
def test_the_cheap_screen_rejects_junk_before_any_parsing(topic: str, payload: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError) as info:
        screen_inbound(TOPICS, topic, payload, wireless={SENSOR}, wired={"gpio17"})
    assert info.value.reason == reason
    assert info.value.detail


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        (LATCH_TOPIC, raw(LATCH)),
        (TELEMETRY_TOPIC, raw(TELEMETRY)),
        (AVAILABILITY_TOPIC, raw(AVAILABILITY)),
        (ACK_TOPIC, raw(ACK)),
        (ACK_TOPIC, b"  " + raw(ACK) + b"\r\n"),
        (LATCH_TOPIC, b"[1]"),  # JSON, only not an object: the full decode says bad_payload
        (LATCH_TOPIC, b"null"),
    ],
)
def test_the_cheap_screen_lets_through_what_only_the_full_decode_can_judge(topic: str, payload: bytes) -> None:
    screen_inbound(TOPICS, topic, payload, wireless={SENSOR})


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        (LATCH_TOPIC, without(LATCH, "v")),
        (TELEMETRY_TOPIC, without(TELEMETRY, "v")),
        (AVAILABILITY_TOPIC, without(AVAILABILITY, "v")),
        (ACK_TOPIC, without(ACK, "v")),
    ],
    ids=["latch", "telemetry", "availability", "ack"],
)
def test_payload_without_schema_version_is_refused(topic: str, payload: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_inbound(TOPICS, topic, raw(payload))
    assert info.value.reason == "bad_payload"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (without(LATCH, "seq"), "seq"),
        (LATCH | {"state": "ajar"}, "state"),
        (LATCH | {"v": 2}, "v"),
        (LATCH | {"colour": "red"}, "colour"),
    ],
)
def test_bad_payload_detail_names_the_model_and_field(payload: dict[str, Any], field: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_inbound(TOPICS, LATCH_TOPIC, raw(payload))
    assert "LatchPayload" in info.value.detail
    assert field in info.value.detail


def test_topic_error_detail_names_the_topic_part() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_inbound(TOPICS, f"cribwatch/{SITE_ID}/sensor/{SENSOR}/battery", raw(LATCH))
    assert "'battery'" in info.value.detail
    assert "latch" in info.value.detail


def test_oversized_is_refused_before_parsing() -> None:
    """A huge payload is refused by size, even if it is not JSON at all."""
    with pytest.raises(ProtocolError) as info:
        decode_inbound(TOPICS, ACK_TOPIC, b"{" * (MAX_PAYLOAD_BYTES + 1))
    assert info.value.reason == "too_large"
    assert str(MAX_PAYLOAD_BYTES) in info.value.detail


def test_sensor_payloads_encoded_by_protocol_decode_back() -> None:
    """What the simulator sends with protocol.encode is what the gateway reads."""
    payload = LatchPayload(boot=9, seq=0, ts=1.5, state=LatchState.CLOSED)
    ev = decode_inbound(TOPICS, LATCH_TOPIC, encode(payload))
    assert isinstance(ev, LatchReading)
    assert (ev.boot, ev.seq, ev.sensor_ts, ev.state) == (9, 0, 1.5, LatchState.CLOSED)


# ---------------------------------------------------------------------------------------- outbound


def _alarm_life() -> tuple[CoreHarness, list[AlarmEvent]]:
    """Raise, acknowledge and resolve a crib_open alarm in the grace-10 room, and a trigger-less offline."""
    h = CoreHarness()
    h.latch(SLOW_WIRELESS, OPEN, boot=4, seq=7)
    (raised_ev,) = raised(h.advance(10.0))
    h.advance(3.5)
    (acked,) = acknowledged(h.ack(alarm_id=raised_ev.alarm_id, by="staff-07", device="pager-2"))
    (resolved_ev,) = resolved(h.latch(SLOW_WIRELESS, CLOSED, boot=4, seq=8))
    h.telemetry(FAST_WIRELESS)
    h.availability(FAST_WIRELESS, online=False)
    (offline,) = raised(h.advance(5.0), AlarmKind.SENSOR_OFFLINE)
    return h, [raised_ev, acked, resolved_ev, offline]


def test_alarm_events_round_trip_with_topic_qos_and_retain() -> None:
    h, events = _alarm_life()
    for ev in events:
        out = encode_outbound(TOPICS, ev, h.monitor.gw_run)

        assert isinstance(out, Outgoing)
        assert out.topic == TOPICS.alarm(ev.room_id)
        assert (out.qos, out.retain) == (int(ALARM_EVENT.qos), ALARM_EVENT.retain)
        assert (out.qos, out.retain) == (1, False)
        back = decode(AlarmEventPayload, out.payload)
        assert back.v == 1
        assert (back.seq, back.gw_run, back.event, back.alarm_id) == (
            ev.seq,
            h.monitor.gw_run,
            ev.type,
            ev.alarm_id,
        )
        assert (back.kind, back.priority) == (ev.kind, ev.priority.name.lower())
        assert (back.site, back.room, back.crib) == (ev.site_id, ev.room_id, ev.crib_id)
        assert (back.room_label, back.crib_label) == (ev.room_label, ev.crib_label)
        assert (back.ts, back.raised_at, back.by, back.device) == (ev.at, ev.raised_at, ev.by, ev.device)
        if ev.trigger is None:
            assert back.trigger is None
        else:
            assert back.trigger is not None
            assert (back.trigger.sensor, back.trigger.boot, back.trigger.seq) == (
                ev.trigger.sensor_id,
                ev.trigger.boot,
                ev.trigger.seq,
            )
    raised_ev, acked, resolved_ev, offline = events
    assert decode(AlarmEventPayload, encode_outbound(TOPICS, raised_ev, 1).payload).priority == "high"
    assert decode(AlarmEventPayload, encode_outbound(TOPICS, offline, 1).payload).priority == "medium"
    assert raised_ev.trigger is not None
    assert (raised_ev.trigger.boot, raised_ev.trigger.seq) == (4, 7)
    assert acked.by == "staff-07"
    assert resolved_ev.type is AlarmEventType.RESOLVED
    assert encode_outbound(TOPICS, raised_ev, 1).topic == f"cribwatch/{SITE_ID}/alarm/{SLOW_ROOM}"


def test_alarm_event_payload_leaves_out_unset_fields() -> None:
    h, events = _alarm_life()
    raised_json = json.loads(encode_outbound(TOPICS, events[0], h.monitor.gw_run).payload)
    offline_json = json.loads(encode_outbound(TOPICS, events[3], h.monitor.gw_run).payload)
    acked_json = json.loads(encode_outbound(TOPICS, events[1], h.monitor.gw_run).payload)
    assert "by" not in raised_json
    assert "device" not in raised_json
    assert "trigger" not in offline_json
    assert (acked_json["by"], acked_json["device"]) == ("staff-07", "pager-2")
    assert acked_json["ts"] - acked_json["raised_at"] == pytest.approx(3.5)
    for payload in (raised_json, offline_json, acked_json):
        assert None not in payload.values()


def test_crib_states_round_trip_with_topic_qos_and_retain() -> None:
    h = CoreHarness()
    h.telemetry(FAST_WIRELESS, battery_pct=12)
    alarm = h.open_alarm(FAST_WIRELESS)
    h.ack(alarm_id=alarm.alarm_id, by="staff-07")
    h.latch(FAST_WIRED, CLOSED)
    h.advance(0.03)
    states = crib_states(h.log) + h.monitor.crib_states()
    assert {s.crib_id for s in states} >= {FAST_WIRELESS, FAST_WIRED, SLOW_WIRELESS}

    for st in states:
        out = encode_outbound(TOPICS, st, h.monitor.gw_run)

        assert out.topic == TOPICS.crib_state(st.crib_id)
        assert (out.qos, out.retain) == (int(CRIB_STATE.qos), CRIB_STATE.retain)
        assert (out.qos, out.retain) == (1, True)
        back = decode(CribStatePayload, out.payload)
        assert (back.seq, back.gw_run, back.site, back.room, back.crib) == (
            st.seq,
            h.monitor.gw_run,
            st.site_id,
            st.room_id,
            st.crib_id,
        )
        assert (back.room_label, back.crib_label, back.ts) == (st.room_label, st.crib_label, st.at)
        assert back.latch == ("unknown" if st.latch is None else st.latch.value)
        assert (back.sensor_online, back.battery_pct) == (st.sensor_online, st.battery_pct)
        assert [(a.alarm_id, a.kind, a.priority, a.raised_at, a.acknowledged_by) for a in back.alarms] == [
            (a.alarm_id, a.kind, a.priority.name.lower(), a.raised_at, a.acknowledged_by) for a in st.alarms
        ]
        assert [a.state for a in back.alarms] == [
            "raised" if a.acknowledged_by is None else "acknowledged" for a in st.alarms
        ]


def test_crib_state_payload_of_each_kind_of_crib() -> None:
    h = CoreHarness()
    h.telemetry(FAST_WIRELESS, battery_pct=12)
    alarm = h.open_alarm(FAST_WIRELESS)
    h.ack(alarm_id=alarm.alarm_id, by="staff-07")
    h.latch(FAST_WIRED, CLOSED)
    h.advance(0.03)

    def sent(crib_id: str) -> dict[str, Any]:
        st: CribState = h.monitor.crib_state(crib_id)
        return dict(json.loads(encode_outbound(TOPICS, st, h.monitor.gw_run).payload))

    wireless = sent(FAST_WIRELESS)
    assert (wireless["latch"], wireless["sensor_online"], wireless["battery_pct"]) == ("open", True, 12)
    assert [(a["kind"], a["state"]) for a in wireless["alarms"]] == [
        ("battery_low", "raised"),
        ("crib_open", "acknowledged"),
    ]
    assert wireless["alarms"][1]["acknowledged_by"] == "staff-07"
    assert "acknowledged_by" not in wireless["alarms"][0]
    wired = sent(FAST_WIRED)
    assert wired["latch"] == "closed"
    assert "sensor_online" not in wired  # a wired switch cannot go offline
    assert "battery_pct" not in wired
    assert wired["alarms"] == []
    never_heard = sent(SLOW_WIRELESS)
    assert never_heard["latch"] == "unknown"
    assert "sensor_online" not in never_heard
    wired_back = decode(CribStatePayload, encode_outbound(TOPICS, h.monitor.crib_state(FAST_WIRED), 1).payload)
    assert wired_back.sensor_online is None


def test_outbound_payloads_are_compact_utf8_json_within_the_size_limit() -> None:
    h, events = _alarm_life()
    everything = list(h.log) + events
    for ev in everything:
        payload = encode_outbound(TOPICS, ev, h.monitor.gw_run).payload
        assert len(payload) <= MAX_PAYLOAD_BYTES
        assert b": " not in payload
        assert b", " not in payload
        assert json.loads(payload.decode("utf-8"))["v"] == 1


def test_outbound_topics_follow_the_base_topic() -> None:
    h, events = _alarm_life()
    topics = Topics(SITE_ID, base="kdv")
    assert encode_outbound(topics, events[0], 1).topic == f"kdv/{SITE_ID}/alarm/{SLOW_ROOM}"
    assert encode_outbound(topics, h.monitor.crib_state(SLOW_WIRELESS), 1).topic == (
        f"kdv/{SITE_ID}/crib/{SLOW_WIRELESS}/state"
    )


# ------------------------------------------------------------------- which sensor payloads carry seq


def test_availability_with_seq_is_refused_saying_availability_has_no_seq() -> None:
    """Only latch and telemetry carry seq: availability's offline is the last will, composed at connect time."""
    with pytest.raises(ProtocolError) as info:
        decode_inbound(TOPICS, AVAILABILITY_TOPIC, raw(AVAILABILITY | {"seq": 4}))
    assert info.value.reason == "bad_payload"
    assert "AvailabilityPayload" in info.value.detail
    assert "availability has no seq" in info.value.detail


@pytest.mark.parametrize(("topic", "payload"), [(LATCH_TOPIC, LATCH), (TELEMETRY_TOPIC, TELEMETRY)])
def test_latch_and_telemetry_need_their_seq(topic: str, payload: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_inbound(TOPICS, topic, raw(without(payload, "seq")))
    assert info.value.reason == "bad_payload"
    assert "seq" in info.value.detail


# ----------------------------------------------------------------------- strict types on the wire

# id -> (topic, payload): a value of the wrong JSON type, which lax parsing would have coerced
COERCIBLE: dict[str, tuple[str, dict[str, Any]]] = {
    "latch: seq as a string": (LATCH_TOPIC, LATCH | {"seq": "1001"}),
    "latch: seq true": (LATCH_TOPIC, LATCH | {"seq": True}),
    "latch: seq false": (LATCH_TOPIC, LATCH | {"seq": False}),
    "latch: seq as a float": (LATCH_TOPIC, LATCH | {"seq": 17.0}),
    "latch: boot as a string": (LATCH_TOPIC, LATCH | {"boot": "3"}),
    "latch: boot true": (LATCH_TOPIC, LATCH | {"boot": True}),
    "latch: boot as a float": (LATCH_TOPIC, LATCH | {"boot": 3.0}),
    "latch: ts as a string": (LATCH_TOPIC, LATCH | {"ts": "1764160000.25"}),
    "latch: ts true": (LATCH_TOPIC, LATCH | {"ts": True}),
    "latch: v true": (LATCH_TOPIC, LATCH | {"v": True}),
    "latch: v as a float": (LATCH_TOPIC, LATCH | {"v": 1.0}),
    "latch: v as a string": (LATCH_TOPIC, LATCH | {"v": "1"}),
    "latch: state true": (LATCH_TOPIC, LATCH | {"state": True}),
    "telemetry: battery_pct as a string": (TELEMETRY_TOPIC, TELEMETRY | {"battery_pct": "10"}),
    "telemetry: battery_pct as a float": (TELEMETRY_TOPIC, TELEMETRY | {"battery_pct": 10.0}),
    "telemetry: battery_pct true": (TELEMETRY_TOPIC, TELEMETRY | {"battery_pct": True}),
    "telemetry: rssi_dbm as a string": (TELEMETRY_TOPIC, TELEMETRY | {"rssi_dbm": "-61"}),
    "telemetry: uptime_s as a float": (TELEMETRY_TOPIC, TELEMETRY | {"uptime_s": 3600.0}),
    "telemetry: interval_s as a string": (TELEMETRY_TOPIC, TELEMETRY | {"interval_s": "30"}),
    "telemetry: interval_s true": (TELEMETRY_TOPIC, TELEMETRY | {"interval_s": True}),
    "telemetry: fw as a number": (TELEMETRY_TOPIC, TELEMETRY | {"fw": 142}),
    "telemetry: seq as a string": (TELEMETRY_TOPIC, TELEMETRY | {"seq": "120"}),
    "telemetry: v true": (TELEMETRY_TOPIC, TELEMETRY | {"v": True}),
    "availability: boot as a string": (AVAILABILITY_TOPIC, AVAILABILITY | {"boot": "3"}),
    "availability: boot true": (AVAILABILITY_TOPIC, AVAILABILITY | {"boot": True}),
    "availability: boot as a float": (AVAILABILITY_TOPIC, AVAILABILITY | {"boot": 3.0}),
    "availability: ts as a string": (AVAILABILITY_TOPIC, AVAILABILITY | {"ts": "1764159000"}),
    "availability: v as a float": (AVAILABILITY_TOPIC, AVAILABILITY | {"v": 1.0}),
    "ack: ts as a string": (ACK_TOPIC, ACK | {"ts": "1764160005"}),
    "ack: ts true": (ACK_TOPIC, ACK | {"ts": True}),
    "ack: by as a number": (ACK_TOPIC, ACK | {"by": 7}),
    "ack: alarm_id as a number": (ACK_TOPIC, ACK | {"alarm_id": 12}),
    "ack: v true": (ACK_TOPIC, ACK | {"v": True}),
}


@pytest.mark.parametrize("case", list(COERCIBLE))
def test_wire_types_are_strict(case: str) -> None:
    """No string -> number, no bool -> number, no float -> int: a firmware bug is refused, not guessed at."""
    topic, payload = COERCIBLE[case]
    with pytest.raises(ProtocolError) as info:
        decode_inbound(TOPICS, topic, raw(payload))
    assert info.value.reason == "bad_payload"
    field = case.split(": ")[1].split(" ", maxsplit=1)[0]
    assert field in info.value.detail


def hot_path(topic: str, payload: bytes) -> object:
    """What the gateway's main connection does with a message on a topic it subscribed to: the topic parsed once
    beforehand, then only the payload screened and decoded (gateway.mqtt.link.MqttLink._take_sensor)."""
    sensor_id, channel = TOPICS.parse_sensor_topic(topic)
    screen_payload(payload)
    return decode_sensor(sensor_id, channel, payload, observed_at=5.0)


def full_path(topic: str, payload: bytes) -> object:
    screen_inbound(TOPICS, topic, payload, wireless={SENSOR})
    return decode_inbound(TOPICS, topic, payload, observed_at=5.0)


HOT_PATH_BAD = [case for case, (topic, _, _) in BAD_INBOUND.items() if topic.startswith(f"{TOPICS.prefix}/sensor/")]
HOT_PATH_BAD = [case for case in HOT_PATH_BAD if BAD_INBOUND[case][2] != "topic"]


@pytest.mark.parametrize("case", HOT_PATH_BAD + [f"strict: {case}" for case in COERCIBLE if "ack" not in case])
def test_the_hot_path_refuses_what_the_full_decode_refuses_for_the_same_reason(case: str) -> None:
    """The one protocol module, two entries: screen_payload + decode_sensor (the main connection) and
    screen_inbound + decode_inbound (everything else) give the same reason for every bad message."""
    if case.startswith("strict: "):
        topic, fields = COERCIBLE[case.removeprefix("strict: ")]
        payload = raw(fields)
    else:
        topic, payload, _ = BAD_INBOUND[case]
    with pytest.raises(ProtocolError) as full:
        full_path(topic, payload)
    with pytest.raises(ProtocolError) as hot:
        hot_path(topic, payload)
    assert hot.value.reason == full.value.reason
    assert hot.value.detail == full.value.detail


@pytest.mark.parametrize(
    ("topic", "payload"),
    [(LATCH_TOPIC, LATCH), (TELEMETRY_TOPIC, TELEMETRY), (AVAILABILITY_TOPIC, AVAILABILITY)],
)
def test_the_hot_path_gives_the_same_event_as_the_full_decode(topic: str, payload: dict[str, Any]) -> None:
    assert hot_path(topic, raw(payload)) == decode_inbound(TOPICS, topic, raw(payload), observed_at=5.0)


@pytest.mark.parametrize("ts", ["1764160005", "0", "1764160005.5", "1e9"])
def test_ack_ts_takes_any_finite_json_number(ts: str) -> None:
    payload = json.dumps(without(ACK, "ts"))[:-1] + f', "ts": {ts}}}'
    ev = decode_inbound(TOPICS, ACK_TOPIC, payload.encode())
    assert isinstance(ev, AckRequest)
    assert ev.sent_ts == float(ts)


@pytest.mark.parametrize("ts", ["Infinity", "-Infinity", "NaN", "1e400", "-1", "true", '"5"'])
def test_ack_ts_must_be_a_finite_non_negative_number(ts: str) -> None:
    payload = json.dumps(without(ACK, "ts"))[:-1] + f', "ts": {ts}}}'
    with pytest.raises(ProtocolError) as info:
        decode_inbound(TOPICS, ACK_TOPIC, payload.encode())
    assert info.value.reason in {"bad_payload", "bad_json"}


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        (LATCH_TOPIC, LATCH | {"ts": 1764160000}),
        (TELEMETRY_TOPIC, TELEMETRY | {"ts": 1764160030, "interval_s": 30}),
        (AVAILABILITY_TOPIC, AVAILABILITY | {"ts": 1764159000}),
        (ACK_TOPIC, ACK | {"ts": 1764160005}),
    ],
    ids=["latch", "telemetry", "availability", "ack"],
)
def test_json_integers_are_accepted_for_float_fields(topic: str, payload: dict[str, Any]) -> None:
    """A firmware that writes "ts": 1764160000 keeps working: strict mode still takes an integer for a float."""
    ev = decode_inbound(TOPICS, topic, raw(payload))
    sent_ts = ev.sent_ts if isinstance(ev, AckRequest) else ev.sensor_ts
    assert sent_ts == payload["ts"]
    if isinstance(ev, TelemetryReading):
        assert ev.interval_s == 30.0
        assert isinstance(ev.interval_s, float)


@pytest.mark.parametrize("state", ["open", "closed"])
def test_latch_state_parses_from_its_json_string(state: str) -> None:
    ev = decode_inbound(TOPICS, LATCH_TOPIC, raw(LATCH | {"state": state}))
    assert isinstance(ev, LatchReading)
    assert ev.state is LatchState(state)


# ---------------------------------------------------------------------- 32-bit boot and seq counters


@pytest.mark.parametrize("value", [2**32, 2**63, 10**30, 10**300])
@pytest.mark.parametrize(
    ("topic", "payload", "field"),
    [
        (LATCH_TOPIC, LATCH, "seq"),
        (LATCH_TOPIC, LATCH, "boot"),
        (TELEMETRY_TOPIC, TELEMETRY, "seq"),
        (TELEMETRY_TOPIC, TELEMETRY, "boot"),
        (AVAILABILITY_TOPIC, AVAILABILITY, "boot"),
    ],
    ids=["latch seq", "latch boot", "telemetry seq", "telemetry boot", "availability boot"],
)
def test_boot_and_seq_wider_than_32_bits_are_refused(
    topic: str, payload: dict[str, Any], field: str, value: int
) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_inbound(TOPICS, topic, raw(payload | {field: value}))
    assert info.value.reason == "bad_payload"
    assert f" {field}: " in info.value.detail
    assert str(SEQ_MAX) in info.value.detail
    assert len(info.value.detail) < 200  # the huge value itself is not echoed


@pytest.mark.parametrize("value", [0, 1, 2**31, SEQ_MAX])
def test_boot_and_seq_take_every_32_bit_value(value: int) -> None:
    latch = decode_inbound(TOPICS, LATCH_TOPIC, raw(LATCH | {"boot": value, "seq": value}))
    tel = decode_inbound(TOPICS, TELEMETRY_TOPIC, raw(TELEMETRY | {"boot": value, "seq": value}))
    avail = decode_inbound(TOPICS, AVAILABILITY_TOPIC, raw(AVAILABILITY | {"boot": value}))
    assert isinstance(latch, LatchReading)
    assert isinstance(tel, TelemetryReading)
    assert (latch.boot, latch.seq, tel.boot, tel.seq, avail.boot) == (value,) * 5


@pytest.mark.parametrize("field", ["boot", "seq"])
def test_boot_and_seq_are_never_negative(field: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_inbound(TOPICS, LATCH_TOPIC, raw(LATCH | {field: -1}))
    assert info.value.reason == "bad_payload"
    assert field in info.value.detail


def test_the_32_bit_bound() -> None:
    assert SEQ_MAX == BOOT_MAX == 0xFFFF_FFFF == 2**32 - 1


def test_the_record_fields_of_an_alarm_event_go_on_the_wire() -> None:
    """latch_opened_at, acknowledged_at/by on every event from the acknowledgement on, resolution, test, level."""
    h, events = _alarm_life()
    raised_ev, acked, resolved_ev, _ = events
    for ev in (raised_ev, acked, resolved_ev):
        back = decode(AlarmEventPayload, encode_outbound(TOPICS, ev, h.monitor.gw_run).payload)
        assert (back.gw_run, back.latch_opened_at, back.test, back.escalation_level) == (
            ev.run,
            ev.latch_opened_at,
            False,
            0,
        )
        assert (back.acknowledged_at, back.acknowledged_by, back.resolution) == (
            ev.acknowledged_at,
            ev.acknowledged_by,
            ev.resolution,
        )
    assert raised_ev.latch_opened_at is not None
    assert raised_ev.acknowledged_by is None
    assert (acked.acknowledged_by, resolved_ev.acknowledged_by) == ("staff-07", "staff-07")
    assert resolved_ev.resolution == "latch_closed"


@pytest.mark.parametrize(
    ("outcome", "result", "acknowledged_by"),
    [
        (Outcome(accepted=True, alarm_ids=("3-1",)), "accepted", "staff-07"),
        (
            Outcome(accepted=False, reason="ack_again", alarm_ids=("3-1",), acknowledged_by="staff-01"),
            "already_acknowledged",
            "staff-01",
        ),
        (Outcome(accepted=False, reason="ack_unknown_alarm"), "unknown_alarm", None),
        (Outcome(accepted=False, reason="ack_unknown_crib"), "unknown_crib", None),
        (Outcome(accepted=False, reason="ack_nothing_open"), "nothing_open", None),
        (Outcome(accepted=False, reason="bad_ack"), "invalid", None),
    ],
)
def test_an_ack_is_answered_to_its_device(outcome: Outcome, result: str, acknowledged_by: str | None) -> None:
    ack = AckRequest(by="staff-07", device="pager-2", alarm_id="3-1", sent_ts=1764160005.0)
    out = ack_answer(TOPICS, ack, outcome, gw_run=3, at=1764160005.5)
    assert out is not None
    assert out.topic == f"cribwatch/{SITE_ID}/ack/answer/pager-2"
    assert (out.qos, out.retain) == (1, False)
    answer = decode(AckAnswerPayload, out.payload)
    assert (answer.result, answer.acknowledged_by, answer.alarm_ids) == (result, acknowledged_by, outcome.alarm_ids)
    assert (answer.by, answer.device, answer.alarm_id, answer.sent_ts) == ("staff-07", "pager-2", "3-1", 1764160005.0)


def test_a_fault_on_an_ack_is_no_answer() -> None:
    """The core failed on the ack: its gateway_fault alarm tells everyone; there is nothing to tell one pager."""
    ack = AckRequest(by="staff-07", device="pager-2", crib_id="c-1")
    assert ack_answer(TOPICS, ack, Outcome(accepted=False, reason="fault"), gw_run=3, at=1.0) is None
