"""The protocol module (gateway.protocol): topics, the QoS/retain table, payload models, and the two documents
that describe it (the module docstring and docs/protocol.md), which must stay true."""

from __future__ import annotations

import json
import re
import typing
from pathlib import Path

import annotated_types
import pytest
from pydantic import BaseModel

from gateway import protocol
from gateway.domain.vocab import ID_PATTERN, PRIORITY_OF, AlarmEventType, AlarmKind, LatchState, Priority, is_identifier
from gateway.protocol import (
    BOOT_MAX,
    MAX_PAYLOAD_BYTES,
    SCHEMA_VERSION,
    SEQ_MAX,
    AckAnswerPayload,
    AckPayload,
    AlarmEventPayload,
    AvailabilityPayload,
    ChannelHealthPayload,
    CribAlarmSummary,
    CribStatePayload,
    GatewayAvailabilityPayload,
    GatewayStatsPayload,
    InfluxTargetHealthPayload,
    LatchPayload,
    NotifyPayload,
    ProtocolError,
    Qos,
    SensorChannel,
    StoreHealthPayload,
    TelemetryPayload,
    Topics,
    TopicSpec,
    TriggerPayload,
    decode,
    encode,
)
from gateway.protocol import topics as topics_module
from gateway.protocol.payloads import CommandAnswerPayload, CommandPayload, MaintenancePayload

REPO = Path(__file__).resolve().parents[1]
PROTOCOL_DOC = REPO / "docs" / "protocol.md"

# Every topic of the docstring's table: how to build it with Topics, and the TopicSpec that says how it is sent.
PLACEHOLDERS = Topics(site="<site>", base="<base>")
TOPIC_TABLE: dict[str, tuple[str, typing.Callable[[Topics], str]]] = {
    "<base>/<site>/sensor/<sensor>/latch": ("LATCH", lambda t: t.sensor("<sensor>", SensorChannel.LATCH)),
    "<base>/<site>/sensor/<sensor>/telemetry": (
        "TELEMETRY",
        lambda t: t.sensor("<sensor>", SensorChannel.TELEMETRY),
    ),
    "<base>/<site>/sensor/<sensor>/availability": (
        "AVAILABILITY",
        lambda t: t.sensor("<sensor>", SensorChannel.AVAILABILITY),
    ),
    "<base>/<site>/alarm/<room>": ("ALARM_EVENT", lambda t: t.alarm("<room>")),
    "<base>/<site>/ack/answer/<device>": ("ACK_ANSWER", lambda t: t.ack_answer("<device>")),
    "<base>/<site>/crib/<crib>/state": ("CRIB_STATE", lambda t: t.crib_state("<crib>")),
    "<base>/<site>/gateway/availability": ("GATEWAY_AVAILABILITY", lambda t: t.gateway_availability),
    "<base>/<site>/gateway/stats": ("GATEWAY_STATS", lambda t: t.gateway_stats),
    "<base>/<site>/ack/<device>": ("ACK", lambda t: t.ack("<device>")),
    "<base>/<site>/notify/<device>": ("NOTIFY", lambda t: t.notify("<device>")),
    "<base>/<site>/sim/pin/<pin>": ("SIM_PIN", lambda t: t.sim_pin("<pin>")),
    "<base>/<site>/cmd/<device>": ("COMMAND", lambda t: t.command("<device>")),
    "<base>/<site>/cmd/<device>/answer": ("COMMAND", lambda t: t.command_answer("<device>")),
}

PAYLOAD_MODELS: list[type[BaseModel]] = [
    LatchPayload,
    TelemetryPayload,
    AvailabilityPayload,
    AckPayload,
    AckAnswerPayload,
    AlarmEventPayload,
    CribStatePayload,
    GatewayAvailabilityPayload,
    GatewayStatsPayload,
    TriggerPayload,
    CribAlarmSummary,
    InfluxTargetHealthPayload,
    MaintenancePayload,
    CommandPayload,
    CommandAnswerPayload,
    StoreHealthPayload,
    NotifyPayload,
    ChannelHealthPayload,
]


def topic_specs() -> dict[str, TopicSpec]:
    return {name: value for name, value in vars(protocol).items() if isinstance(value, TopicSpec)}


def docstring_table() -> dict[str, tuple[str, str, int, bool]]:
    """pattern -> (from, to, qos, retained), parsed from gateway.protocol.topics' module docstring."""
    doc = topics_module.__doc__ or ""
    rows = re.findall(
        r"^\s+(<base>/\S+)\s+(\S+) -> (\S+)\s+QoS (\d), (retained|not retained)\b", doc, flags=re.MULTILINE
    )
    table = {pattern: (src, dst, int(qos), retain == "retained") for pattern, src, dst, qos, retain in rows}
    assert len(table) == len(rows), "a topic is listed twice in the docstring"
    return table


def mqtt_matches(topic_filter: str, topic: str) -> bool:
    f_parts, t_parts = topic_filter.split("/"), topic.split("/")
    for i, part in enumerate(f_parts):
        if part == "#":
            return True
        if i >= len(t_parts) or (part != "+" and part != t_parts[i]):
            return False
    return len(f_parts) == len(t_parts)


# ------------------------------------------------------------------------------------------- topics


class TestTopics:
    def test_builders(self) -> None:
        t = Topics("kids-f")
        assert t.prefix == "cribwatch/kids-f"
        assert t.sensor("s-0101", SensorChannel.LATCH) == "cribwatch/kids-f/sensor/s-0101/latch"
        assert t.sensor("s-0101", SensorChannel.TELEMETRY) == "cribwatch/kids-f/sensor/s-0101/telemetry"
        assert t.sensor("s-0101", SensorChannel.AVAILABILITY) == "cribwatch/kids-f/sensor/s-0101/availability"
        assert t.alarm("vlinders") == "cribwatch/kids-f/alarm/vlinders"
        assert t.crib_state("vl-1") == "cribwatch/kids-f/crib/vl-1/state"
        assert t.gateway_availability == "cribwatch/kids-f/gateway/availability"
        assert t.gateway_stats == "cribwatch/kids-f/gateway/stats"
        assert t.ack("pager-2") == "cribwatch/kids-f/ack/pager-2"
        assert t.ack_device("cribwatch/kids-f/ack/pager-2") == "pager-2"
        assert t.ack_device("cribwatch/kids-f/ack/answer/pager-2") is None
        assert t.ack_device("cribwatch/kids-f/ack") is None
        assert t.notify("pager-2") == "cribwatch/kids-f/notify/pager-2"
        assert t.sensor_filter == "cribwatch/kids-f/sensor/+/+"
        assert t.alarm_filter == "cribwatch/kids-f/alarm/+"
        assert t.crib_state_filter == "cribwatch/kids-f/crib/+/state"

    def test_base_topic(self) -> None:
        t = Topics("kids-f", base="kdv")
        assert t.prefix == "kdv/kids-f"
        assert t.alarm("r") == "kdv/kids-f/alarm/r"
        assert Topics("kids-f").base == protocol.DEFAULT_BASE_TOPIC == "cribwatch"

    @pytest.mark.parametrize("sensor_id", ["s-0101", "a", "0", "s_1", "x" * 64, "gpio17"])
    @pytest.mark.parametrize("channel", list(SensorChannel))
    def test_parse_sensor_topic_round_trips(self, sensor_id: str, channel: SensorChannel) -> None:
        t = Topics("kids-f")
        assert t.parse_sensor_topic(t.sensor(sensor_id, channel)) == (sensor_id, channel)
        other_base = Topics("kids-f", base="kdv")
        assert other_base.parse_sensor_topic(other_base.sensor(sensor_id, channel)) == (sensor_id, channel)

    @pytest.mark.parametrize(
        "topic",
        [
            "cribwatch/kids-f2/sensor/s-1/latch",
            "cribwatch/kids/sensor/s-1/latch",
            "cribwatch/kids-f/sensors/s-1/latch",
            "kdv/kids-f/sensor/s-1/latch",
            "/cribwatch/kids-f/sensor/s-1/latch",
            "cribwatch/kids-f/sensor/s-1",
            "cribwatch/kids-f/sensor/s-1/latch/",
            "cribwatch/kids-f/sensor/s-1/latch/x",
            "cribwatch/kids-f/sensor//latch",
            "cribwatch/kids-f/sensor/+/latch",
            "cribwatch/kids-f/sensor/#",
            "cribwatch/kids-f/sensor/S-1/latch",
            "cribwatch/kids-f/sensor/-s1/latch",
            "cribwatch/kids-f/sensor/s 1/latch",
            "cribwatch/kids-f/sensor/" + "x" * 65 + "/latch",
            "cribwatch/kids-f/sensor/s-1/state",
            "cribwatch/kids-f/sensor/s-1/Latch",
            "cribwatch/kids-f/ack",
            "cribwatch/kids-f/crib/vl-1/state",
        ],
    )
    def test_parse_sensor_topic_refuses(self, topic: str) -> None:
        with pytest.raises(ProtocolError) as info:
            Topics("kids-f").parse_sensor_topic(topic)
        assert info.value.reason == "topic"
        assert topic in str(info.value) or any(part in str(info.value) for part in topic.split("/")[3:])

    def test_filters_match_exactly_their_topics(self) -> None:
        t = Topics("kids-f")
        sensor_topics = [t.sensor(s, c) for s in ("s-1", "s-2") for c in SensorChannel]
        others = [t.alarm("r"), t.crib_state("c"), t.gateway_availability, t.gateway_stats, t.ack("p-1")]
        assert all(mqtt_matches(t.sensor_filter, x) for x in sensor_topics)
        assert not any(mqtt_matches(t.sensor_filter, x) for x in others)
        assert mqtt_matches(t.alarm_filter, t.alarm("vlinders"))
        assert not any(mqtt_matches(t.alarm_filter, x) for x in [*sensor_topics, t.crib_state("c"), t.ack("p-1")])
        assert mqtt_matches(t.ack_filter, t.ack("p-1"))
        assert not mqtt_matches(t.ack_filter, t.ack_answer("p-1"))  # the gateway never takes its own answers
        assert mqtt_matches(t.notify_filter, t.notify("p-1"))
        assert mqtt_matches(t.crib_state_filter, t.crib_state("vl-1"))
        assert not any(mqtt_matches(t.crib_state_filter, x) for x in [*sensor_topics, t.alarm("r")])
        assert not mqtt_matches(t.sensor_filter, Topics("kids-g").sensor("s-1", SensorChannel.LATCH))


# ------------------------------------------------------------------------------- QoS and retain table


class TestTopicSpecs:
    def test_the_docstring_table_lists_every_topic_once(self) -> None:
        assert set(docstring_table()) == set(TOPIC_TABLE)

    def test_every_topic_spec_constant_is_in_the_docstring_table(self) -> None:
        assert {name for name, _ in TOPIC_TABLE.values()} == set(topic_specs())

    @pytest.mark.parametrize("pattern", list(TOPIC_TABLE))
    def test_topic_spec_is_as_the_docstring_says(self, pattern: str) -> None:
        _, _, qos, retained = docstring_table()[pattern]
        name, _ = TOPIC_TABLE[pattern]
        spec = topic_specs()[name]
        assert (int(spec.qos), spec.retain) == (qos, retained), f"{name} vs docstring row {pattern}"
        assert isinstance(spec.qos, Qos)

    @pytest.mark.parametrize("pattern", list(TOPIC_TABLE))
    def test_docstring_pattern_is_what_topics_builds(self, pattern: str) -> None:
        _, build = TOPIC_TABLE[pattern]
        assert build(PLACEHOLDERS) == pattern

    def test_directions(self) -> None:
        table = docstring_table()
        for pattern, (src, dst, _, _) in table.items():
            if "/sensor/" in pattern:
                assert (src, dst) == ("sensor", "gateway"), pattern
            elif "/ack/<device>" in pattern:
                assert (src, dst) == ("staff", "gateway")
            elif "/sim/pin/" in pattern or pattern.endswith("/cmd/<device>"):
                assert (src, dst) == ("techs", "gateway")
            else:
                assert src == "gateway", pattern

    def test_the_safety_relevant_choices(self) -> None:
        """The reasons written beside the constants: these must not drift."""
        specs = {name: (spec.qos, spec.retain) for name, spec in topic_specs().items()}
        assert specs["LATCH"] == (Qos.AT_LEAST_ONCE, True)
        assert specs["TELEMETRY"][1] is False  # a retained heartbeat makes a dead sensor look alive
        assert specs["AVAILABILITY"] == (Qos.AT_LEAST_ONCE, True)
        assert specs["ALARM_EVENT"] == (Qos.AT_LEAST_ONCE, False)  # events are history, never replayed
        assert specs["CRIB_STATE"] == (Qos.AT_LEAST_ONCE, True)
        assert specs["ACK"] == (Qos.AT_LEAST_ONCE, False)  # a retained ack would acknowledge again


# ------------------------------------------------------------------------------------------ payloads


SAMPLES: list[BaseModel] = [
    LatchPayload(boot=1, seq=0, ts=1.0, state=LatchState.OPEN),
    TelemetryPayload(boot=1, seq=2, ts=2.0, battery_pct=50, rssi_dbm=-70, fw="1.0", uptime_s=5, interval_s=30),
    AvailabilityPayload(state="offline", boot=2, ts=3.0),
    AckPayload(crib="vl-1", by="staff-1", device="pager-1"),
    AlarmEventPayload(
        seq=1,
        gw_run=10,
        event=AlarmEventType.RAISED,
        alarm_id="10-1",
        kind=AlarmKind.CRIB_OPEN,
        priority="high",
        site="s",
        room="r",
        crib="c",
        room_label="R",
        crib_label="C",
        ts=4.0,
        raised_at=4.0,
        trigger=TriggerPayload(sensor="s-1", boot=1, seq=3),
    ),
    CribStatePayload(
        seq=2,
        gw_run=10,
        site="s",
        room="r",
        crib="c",
        room_label="R",
        crib_label="C",
        latch="open",
        sensor_online=None,
        alarms=(
            CribAlarmSummary(alarm_id="10-1", kind=AlarmKind.CRIB_OPEN, priority="high", state="raised", raised_at=4.0),
        ),
        ts=4.0,
    ),
    GatewayAvailabilityPayload(state="online", gw_run=10),
    GatewayStatsPayload(
        gw_run=10,
        ts=5.0,
        accepted=3,
        rejected={"bad_json": 1},
        ignored={},
        active_alarms=0,
        channel_failures={},
        channels={
            "webhook": ChannelHealthPayload(
                state="failing", queued=2, delivered=5, failed=3, consecutive_failures=3, last_error="HTTP 503"
            )
        },
    ),
    NotifyPayload(
        notice_id="10-1/2",
        kind="escalation",
        step=1,
        group="site",
        ts=34.0,
        alarm=AlarmEventPayload(
            seq=1,
            gw_run=10,
            event=AlarmEventType.RAISED,
            alarm_id="10-1",
            kind=AlarmKind.CRIB_OPEN,
            priority="high",
            site="s",
            room="r",
            crib="c",
            room_label="R",
            crib_label="C",
            ts=4.0,
            raised_at=4.0,
        ),
    ),
]


def _sample_of(model: type[BaseModel]) -> BaseModel:
    (sample,) = (s for s in SAMPLES if type(s) is model)
    return sample


class TestPayloads:
    @pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: type(s).__name__)
    def test_encode_decode_round_trip(self, sample: BaseModel) -> None:
        raw = encode(sample)  # type: ignore[arg-type]
        assert decode(type(sample), raw) == sample
        data = json.loads(raw)
        assert data["v"] == SCHEMA_VERSION == 1
        assert None not in data.values()

    def test_every_payload_model_is_strict_and_frozen(self) -> None:
        for model in PAYLOAD_MODELS:
            assert model.model_config.get("extra") == "forbid", model.__name__
            assert model.model_config.get("frozen") is True, model.__name__
            assert model.model_config.get("strict") is True, model.__name__
            assert model.model_config.get("allow_inf_nan") is False, model.__name__

    def test_every_payload_model_is_listed_here(self) -> None:
        """A new payload model must join PAYLOAD_MODELS, so the checks above (and the doc checks) see it."""
        defined = {
            value
            for value in vars(protocol.payloads).values()
            if isinstance(value, type)
            and issubclass(value, BaseModel)
            and not value.__name__.startswith("_")
            and value.__module__ == protocol.payloads.__name__
        }
        assert defined == set(PAYLOAD_MODELS)

    @pytest.mark.parametrize(
        ("model", "field", "bad"),
        [
            (AlarmEventPayload, "seq", '"41"'),
            (AlarmEventPayload, "gw_run", "1764159000000.0"),
            (AlarmEventPayload, "ts", '"1764160000.26"'),
            (AlarmEventPayload, "trigger", '{"sensor": "s-0101", "boot": 3, "seq": "17"}'),
            (AlarmEventPayload, "trigger", '{"sensor": "s-0101", "boot": true, "seq": 17}'),
            (CribStatePayload, "battery_pct", "87.0"),
            (CribStatePayload, "sensor_online", "1"),
            (CribStatePayload, "sensor_online", '"true"'),
            (
                CribStatePayload,
                "alarms",
                '[{"alarm_id": "1-1", "kind": "crib_open", "priority": "high", "state": "raised", "raised_at": "4"}]',
            ),
            (GatewayAvailabilityPayload, "gw_run", '"1764159000000"'),
            (GatewayStatsPayload, "accepted", "true"),
            (GatewayStatsPayload, "rejected", '{"bad_json": 2.0}'),
            (GatewayStatsPayload, "ignored", '{"duplicate": "4"}'),
        ],
    )
    def test_gateway_payloads_are_strict_on_the_wire_too(self, model: type[BaseModel], field: str, bad: str) -> None:
        """Pagers, tablets and the gateway's own restart read these: the same strict types as sensor payloads."""
        good = json.loads(encode(_sample_of(model)))  # type: ignore[arg-type]
        assert decode(model, json.dumps(good).encode()) == _sample_of(model)
        text = json.dumps({k: v for k, v in good.items() if k != field})[:-1] + f', "{field}": {bad}}}'
        with pytest.raises(ProtocolError) as info:
            decode(model, text.encode())
        assert info.value.reason == "bad_payload"
        assert field in info.value.detail

    def test_enums_parse_from_their_json_strings(self) -> None:
        for state in LatchState:
            latch = decode(LatchPayload, f'{{"v": 1, "boot": 0, "seq": 0, "ts": 0, "state": "{state.value}"}}'.encode())
            assert latch.state is state
        for event in AlarmEventType:
            for kind in AlarmKind:
                sample = json.loads(encode(_sample_of(AlarmEventPayload))) | {"event": event.value, "kind": kind.value}
                back = decode(AlarmEventPayload, json.dumps(sample).encode())
                assert (back.event, back.kind) == (event, kind)
                assert type(back.event) is AlarmEventType
                assert type(back.kind) is AlarmKind
        summary = {
            "alarm_id": "1-1",
            "kind": "battery_low",
            "priority": "low",
            "state": "acknowledged",
            "raised_at": 4,
            "acknowledged_by": "staff-1",
        }
        state = json.loads(encode(_sample_of(CribStatePayload))) | {"latch": "unknown", "alarms": [summary]}
        back_state = decode(CribStatePayload, json.dumps(state).encode())
        assert back_state.alarms[0].kind is AlarmKind.BATTERY_LOW
        assert back_state.alarms[0].raised_at == 4.0
        assert isinstance(back_state.alarms, tuple)
        with pytest.raises(ProtocolError):
            decode(LatchPayload, b'{"v": 1, "boot": 0, "seq": 0, "ts": 0, "state": "OPEN"}')

    def test_any_payload_lists_every_versioned_model(self) -> None:
        versioned = {m for m in PAYLOAD_MODELS if "v" in m.model_fields}
        assert set(typing.get_args(protocol.AnyPayload)) == versioned

    def test_size_limit_boundary(self) -> None:
        body = encode(SAMPLES[0])  # type: ignore[arg-type]
        exact = body[:-1] + b" " * (MAX_PAYLOAD_BYTES - len(body)) + b"}"
        assert len(exact) == MAX_PAYLOAD_BYTES
        assert decode(LatchPayload, exact) == SAMPLES[0]
        with pytest.raises(ProtocolError) as info:
            decode(LatchPayload, exact[:-1] + b" }")
        assert info.value.reason == "too_large"

    def test_every_alarm_kind_has_a_priority(self) -> None:
        assert set(PRIORITY_OF) == set(AlarmKind)
        assert PRIORITY_OF[AlarmKind.CRIB_OPEN] is Priority.HIGH
        assert PRIORITY_OF[AlarmKind.SENSOR_OFFLINE] is Priority.MEDIUM
        assert PRIORITY_OF[AlarmKind.BATTERY_LOW] is Priority.LOW
        assert Priority.HIGH > Priority.MEDIUM > Priority.LOW
        assert [p.label for p in Priority] == ["low", "medium", "high"]
        priority_literal = typing.get_args(AlarmEventPayload.model_fields["priority"].annotation)
        assert set(priority_literal) == {p.label for p in Priority}

    def test_sensor_payloads_cover_every_channel(self) -> None:
        assert set(protocol.SENSOR_PAYLOADS) == set(SensorChannel)


class TestIdentifiers:
    @pytest.mark.parametrize("value", ["a", "0", "vl-1", "s_01", "kids-f", "x" * 64, "9-_"])
    def test_valid(self, value: str) -> None:
        assert is_identifier(value)
        assert re.fullmatch(ID_PATTERN, value)

    @pytest.mark.parametrize("value", ["", "-a", "_a", "A", "Vl-1", "a b", "a/b", "a+", "#", "é", "x" * 65, "a.b"])
    def test_invalid(self, value: str) -> None:
        assert not is_identifier(value)

    def test_trailing_newline_is_not_an_identifier(self) -> None:
        assert not is_identifier("s-1\n")
        with pytest.raises(ProtocolError):
            Topics("kids-f").parse_sensor_topic("cribwatch/kids-f/sensor/s-1\n/latch")


# ------------------------------------------------------------------------------------ docs/protocol.md


def field_bounds(model: type[BaseModel], field: str) -> tuple[int | None, int | None]:
    """(ge, le) of an int field, from its pydantic metadata."""
    low = high = None
    for item in model.model_fields[field].metadata:
        if isinstance(item, annotated_types.Ge):
            low = item.ge
        elif isinstance(item, annotated_types.Le):
            high = item.le
    return low, high  # type: ignore[return-value]


def protocol_doc() -> str:
    if not PROTOCOL_DOC.exists():
        pytest.skip(f"{PROTOCOL_DOC.relative_to(REPO)} does not exist yet: nothing to compare with gateway/protocol/")
    return PROTOCOL_DOC.read_text(encoding="utf-8")


def table_rows(doc: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in doc.splitlines()
        if line.lstrip().startswith("|")
    ]


class TestProtocolDoc:
    @pytest.mark.parametrize("pattern", list(TOPIC_TABLE))
    def test_every_topic_is_in_the_doc_with_its_qos_and_retain(self, pattern: str) -> None:
        doc = protocol_doc()
        assert f"`{pattern}`" in doc, f"{pattern} is not in {PROTOCOL_DOC.name}"
        rows = [r for r in table_rows(doc) if r and r[0] == f"`{pattern}`"]
        assert len(rows) == 1, f"expected one row for {pattern} in the topic table of {PROTOCOL_DOC.name}"
        row = rows[0]
        spec = topic_specs()[TOPIC_TABLE[pattern][0]]
        qos_cell, retained_cell = row[2], row[3]
        assert qos_cell == str(int(spec.qos)), f"{pattern}: doc says QoS {qos_cell}, protocol.py {int(spec.qos)}"
        assert retained_cell == ("yes" if spec.retain else "no"), f"{pattern}: doc says retained {retained_cell}"

    @pytest.mark.parametrize("model", PAYLOAD_MODELS, ids=lambda m: m.__name__)
    def test_every_payload_field_is_in_the_doc(self, model: type[BaseModel]) -> None:
        doc = protocol_doc()
        missing = [name for name in model.model_fields if f"`{name}`" not in doc and f'"{name}"' not in doc]
        assert not missing, f"{model.__name__} fields not described in {PROTOCOL_DOC.name}: {missing}"

    def test_every_enum_value_and_limit_is_in_the_doc(self) -> None:
        doc = protocol_doc()
        values = [
            *(k.value for k in AlarmKind),
            *(e.value for e in AlarmEventType),
            *(s.value for s in LatchState),
            *(c.value for c in SensorChannel),
            *(p.label for p in Priority),
            "bad_json",
            "bad_payload",
            "too_large",
            "topic",
        ]
        missing = [v for v in values if f"`{v}`" not in doc and f'"{v}"' not in doc]
        assert not missing, f"not in {PROTOCOL_DOC.name}: {missing}"
        assert str(MAX_PAYLOAD_BYTES) in doc
        assert f'"v": {SCHEMA_VERSION}' in doc

    def test_json_examples_in_the_doc_are_valid_payloads(self) -> None:
        doc = protocol_doc()
        blocks = re.findall(r"```json\n(.*?)```", doc, flags=re.DOTALL)
        assert blocks, f"no JSON examples in {PROTOCOL_DOC.name}"
        versioned = typing.get_args(protocol.AnyPayload)
        for block in blocks:
            fits = []
            for model in versioned:
                try:
                    decode(model, block.encode())
                except ProtocolError:
                    continue
                fits.append(model.__name__)
            assert fits, f"this example in {PROTOCOL_DOC.name} is no valid payload:\n{block}"

    def test_the_sensor_field_table_is_what_latch_and_telemetry_carry(self) -> None:
        doc = protocol_doc()
        section = doc.split("### Sensor payloads", 1)[1].split("\n### ", 1)[0]
        table = section.split("`latch` and `telemetry` carry:", 1)[1].split("\n\n", 2)[1]
        fields = {row[0].strip("`") for row in table_rows(table)[2:]}
        shared = set(LatchPayload.model_fields) & set(TelemetryPayload.model_fields) - {"v"}
        assert fields == shared == {"boot", "seq", "ts"}

    def test_the_doc_says_what_availability_carries(self) -> None:
        """Availability has no seq; the doc says so and lists exactly the model's fields."""
        doc = protocol_doc()
        match = re.search(r"`availability` carries ((?:`\w+`(?:, | and )?)+), and no `seq`", doc)
        assert match, f"{PROTOCOL_DOC.name} must say what availability carries, and that it has no seq"
        assert set(re.findall(r"`(\w+)`", match.group(1))) == set(AvailabilityPayload.model_fields) - {"v"}
        assert "seq" not in AvailabilityPayload.model_fields
        for example in re.findall(r"```json\n(.*?)```", doc, flags=re.DOTALL):
            if '"state": "offline", "boot"' in example or '"state": "online", "boot"' in example:
                assert '"seq"' not in example

    @pytest.mark.parametrize(
        ("model", "field"),
        [
            (LatchPayload, "boot"),
            (LatchPayload, "seq"),
            (TelemetryPayload, "boot"),
            (TelemetryPayload, "seq"),
            (AvailabilityPayload, "boot"),
        ],
    )
    def test_documented_bounds_of_boot_and_seq_are_the_models(self, model: type[BaseModel], field: str) -> None:
        doc = protocol_doc()
        (row,) = [r for r in table_rows(doc) if r and r[0] == f"`{field}`" and "0 to" in r[1]]
        low, high = (int(n) for n in re.fullmatch(r"int, (\d+) to (\d+)", row[1]).groups())  # type: ignore[union-attr]
        assert (low, high) == field_bounds(model, field) == (0, 2**32 - 1)
        assert high == (SEQ_MAX if field == "seq" else BOOT_MAX)
        assert f"wraps from {high} to 0" in " ".join(doc.split())
        assert "unsigned 32-bit" in doc

    def test_the_ordering_rules_have_their_own_section_after_the_sensor_payloads(self) -> None:
        doc = protocol_doc()
        headings = re.findall(r"^#+ (.*)$", doc, flags=re.MULTILINE)
        at = headings.index("Sensor payloads")
        assert headings[at + 1] == "How the gateway orders a sensor's messages"
        assert "The gateway orders a sensor's messages by `(boot, seq)` per channel." not in doc

    def test_every_rejected_and_ignored_reason_of_the_protocol_is_in_the_doc(self) -> None:
        doc = protocol_doc()
        bad_input = doc.split("## Bad input", 1)[1]
        rejected = {row[0].strip("`") for row in table_rows(bad_input)[2:]}
        assert {"bad_json", "bad_payload", "too_large", "topic", "retained_ack"} <= rejected
        ignored_line = next(line for line in bad_input.splitlines() if line.startswith("Ignored"))
        assert "`retained_cleared`" in ignored_line
