"""The point schema (gateway/influx/schema.py) and the feed that makes points of the gateway's events: pure, no
server. The line protocol is checked against influxdb-client's own serialiser, the reference of the field."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from influxdb_client.client.write.point import Point as ReferencePoint

from gateway.domain.clock import FakeClock
from gateway.domain.events import ACCEPTED, AlarmEvent, Outcome, TelemetryReading
from gateway.domain.vocab import AlarmEventType, AlarmKind, LatchState, Priority, Resolution
from gateway.influx import schema
from gateway.influx.feed import InfluxFeed
from gateway.influx.schema import Point
from tests.helpers import FAST_WIRELESS, SENSOR_OF, CoreHarness

text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), min_size=1, max_size=12)
field_value = st.one_of(st.integers(-(2**63), 2**63 - 1), st.booleans(), text)


@given(
    measurement=text.filter(lambda s: not s.startswith("#")),
    tags=st.dictionaries(text, text, max_size=4),
    fields=st.dictionaries(text, field_value, min_size=1, max_size=4),
    at=st.integers(0, 4_000_000_000_000_000_000),
)
def test_the_line_is_what_influxdb_client_writes(
    measurement: str, tags: dict[str, str], fields: dict[str, int | float | bool | str], at: int
) -> None:
    ours = Point(measurement, tuple(tags.items()), tuple(fields.items()), at).line()
    ref = ReferencePoint(measurement)
    for key, value in tags.items():
        ref.tag(key, value)
    for key, value in fields.items():
        ref.field(key, value)
    ref.time(at)
    assert ours == ref.to_line_protocol()


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_a_float_field_reads_back_as_the_same_float(value: float) -> None:
    """Floats are written as Python's repr (influxdb-client drops a trailing .0: both are floats to InfluxDB)."""
    token = Point("m", (), (("f", value),), 0).line().split(" ")[1].removeprefix("f=")
    assert not token.endswith("i")
    assert float(token) == value


def test_empty_tags_and_non_finite_floats_are_left_out_and_a_point_needs_a_field() -> None:
    p = schema.point("m", 1.5, {"a": "", "b": None, "c": "x"}, {"f": math.inf, "g": 1, "h": None})
    assert p.line() == "m,c=x g=1i 1500000000"
    with pytest.raises(ValueError, match="without a field"):
        schema.point("m", 1.0, {}, {"f": math.nan}).line()


def test_the_same_event_time_always_gives_the_same_timestamp() -> None:
    """A point rebuilt (or sent again) must land on the same series and time, so that it overwrites itself."""
    at = 1_764_000_123.456789
    assert schema.time_ns(at) == schema.time_ns(float(repr(at))) == 1_764_000_123_456_789_000


def alarm_event(type_: AlarmEventType, at: float, **kw: object) -> AlarmEvent:
    fields: dict[str, object] = {
        "seq": 7,
        "type": type_,
        "alarm_id": "3-12",
        "kind": AlarmKind.CRIB_OPEN,
        "priority": Priority.HIGH,
        "site_id": "kids-f",
        "room_id": "baby",
        "crib_id": "c-3",
        "room_label": "Babygroep Zon",
        "crib_label": "Bedje van Emma",
        "at": at,
        "raised_at": 100.0,
        "run": 3,
    }
    return AlarmEvent(**(fields | kw))  # type: ignore[arg-type]


def test_an_alarm_step_carries_its_time_its_response_seconds_and_no_label() -> None:
    ack = alarm_event(AlarmEventType.ACKNOWLEDGED, 142.5, by="staff-07", device="pager-2")
    line = schema.alarm_point(ack).line()
    assert line == (
        "alarm,crib=c-3,event=acknowledged,kind=crib_open,priority=high,room=baby,site=kids-f,test=false "
        'alarm_id="3-12",by="staff-07",device="pager-2",level=0i,run=3i,seconds=42.5 142500000000'
    )
    assert schema.alarm_point(ack).alarm  # never dropped from the outbox
    resolved = schema.alarm_point(alarm_event(AlarmEventType.RESOLVED, 200.0, resolution=Resolution.LATCH_CLOSED))
    assert 'resolution="latch_closed"' in resolved.line()
    assert "event=resolved" in resolved.line()
    for p in (ack, resolved):  # labels may name a child ("Bedje van Emma"): they are never written
        line = schema.alarm_point(p).line() if isinstance(p, AlarmEvent) else p.line()
        assert "Emma" not in line
        assert "Zon" not in line


def test_escalations_and_deliveries_take_plain_values() -> None:
    raised = alarm_event(AlarmEventType.RAISED, 100.0)
    esc = schema.escalation_point(raised, level=2, at=160.0)
    assert "event=escalated" in esc.line()
    assert "seconds=60.0" in esc.line()
    assert "level=2i" in esc.line()
    rep = schema.escalation_point(raised, level=0, at=700.0, repeat=True)
    assert "event=repeated" in rep.line()
    d = schema.delivery_point(
        "kids-f", "webhook", "alarm", "failed", 101.0, notice_id="3-12/1", alarm_id="3-12", attempts=3, seconds=1.0,
        error="HTTP 503",
    )  # fmt: skip
    assert d.alarm
    assert d.line() == (
        "delivery,channel=webhook,notice=alarm,outcome=failed,site=kids-f "
        'alarm_id="3-12",attempts=3i,error="HTTP 503",notice_id="3-12/1",seconds=1.0 101000000000'
    )
    helping = schema.delivery_point(
        "kids-f", "apprise", "helping_hands", "gave_up", 102.0, notice_id="hh-4/9", alarm_id="hh-4", attempts=3,
        seconds=40.0,
    )  # fmt: skip
    assert not helping.alarm  # a request to the coordinators is telemetry: dropped before any alarm point
    assert helping.line().startswith("delivery,channel=apprise,notice=helping_hands,outcome=gave_up,site=kids-f ")


def test_maintenance_is_on_record_and_never_dropped() -> None:
    p = schema.maintenance_point("kids-f", "baby", "c-3", 50.0, on=True, by="tech-2", reason="new sensor")
    assert p.alarm
    assert p.line() == 'maintenance,crib=c-3,room=baby,site=kids-f by="tech-2",on=1i,reason="new sensor" 50000000000'
    room = schema.maintenance_point("kids-f", "baby", None, 60.0, on=False)
    assert room.line() == "maintenance,room=baby,site=kids-f on=0i 60000000000"


def collect() -> tuple[list[Point], InfluxFeed, CoreHarness]:
    h = CoreHarness()
    points: list[Point] = []
    settings = h.settings
    feed = InfluxFeed(
        settings.site.id,
        points.append,
        h.clock,
        sensor_of={crib.id: crib.sensor_key for _, crib in settings.cribs()},
        room_of={crib.id: room.id for room, crib in settings.cribs()},
    )
    feed.seed([view.state for view in h.monitor.snapshot().cribs])
    return points, feed, h


def test_the_feed_makes_points_of_latch_edges_online_changes_and_alarm_steps() -> None:
    points, feed, h = collect()
    opened_at = h.clock.time()
    for ev in h.latch(FAST_WIRELESS, LatchState.OPEN):  # grace 0: raised at once
        feed.deliver(ev)
    h.advance(5.0)
    for ev in h.latch(FAST_WIRELESS, LatchState.CLOSED):
        feed.deliver(ev)
    by_kind = [(p.measurement, dict(p.tags).get("event")) for p in points]
    assert by_kind == [
        ("alarm", "raised"),
        ("latch", None),
        ("sensor_online", None),  # its first message: the sensor was not heard since the start
        ("alarm", "resolved"),
        ("latch", None),
    ]
    latch_open = points[1]
    assert dict(latch_open.fields) == {"open": 1}
    assert dict(latch_open.tags) == {"site": h.settings.site.id, "room": "fast", "crib": FAST_WIRELESS,
                                     "sensor": SENSOR_OF[FAST_WIRELESS]}  # fmt: skip
    assert latch_open.time_ns == schema.time_ns(opened_at)  # the edge's time, not the write's
    assert dict(points[2].fields) == {"online": 1}
    assert points[4].time_ns == schema.time_ns(opened_at + 5.0)
    assert dict(points[3].fields)["seconds"] == pytest.approx(5.0)


def test_the_first_state_after_a_start_is_no_change() -> None:
    points, feed, h = collect()
    for view in h.monitor.snapshot().cribs:
        feed.deliver(view.state)
    assert points == []


def test_telemetry_is_a_point_at_the_time_the_gateway_saw_it_with_firmware_as_a_tag() -> None:
    points, feed, _ = collect()
    clock = FakeClock()
    feed._clock = clock  # noqa: SLF001 - a clock of the test's own
    seen = clock.monotonic()
    clock.advance(0.25)  # it waited a quarter of a second before the core took it
    reading = TelemetryReading("s-f1", 1, 5, 12.0, 80, -61, "1.4.2", 3600, 30.0, observed_at=seen)
    feed.reading(reading, ACCEPTED)
    feed.reading(reading, Outcome(accepted=False, reason="duplicate"))
    assert len(points) == 1
    p = points[0]
    assert p.measurement == "sensor"
    assert dict(p.tags)["firmware"] == "1.4.2"
    assert dict(p.fields) == {"battery_pct": 80, "rssi_dbm": -61, "uptime_s": 3600, "interval_s": 30.0, "boot": 1,
                              "seq": 5}  # fmt: skip
    assert p.time_ns == schema.time_ns(clock.time() - 0.25)
    assert not p.alarm


def test_health_points_are_running_counts() -> None:
    points, feed, _ = collect()
    feed.health(10.0, {"accepted": 5, "loop_lag_ms": 0.4, "store_pending": None}, {"bad_json": 2}, {"duplicate": 1},
                {"s-f1": 3}, {})  # fmt: skip
    lines = [p.line() for p in points]
    assert lines[0].startswith("gateway,site=")
    assert " accepted=5i,loop_lag_ms=0.4 " in lines[0]
    assert any("gateway_input," in line and "reason=bad_json" in line and "count=2i" in line for line in lines)
    assert any("sensor_refused," in line and "crib=f-1" in line and "refused=3i,resynced=0i" in line for line in lines)
    points.clear()
    feed.health(20.0, {"accepted": 9}, {"bad_json": 2}, {"duplicate": 1}, {"s-f1": 3}, {})
    assert [p.measurement for p in points] == ["gateway"], "unchanged counts make no new point"
    points.clear()
    feed.health(30.0, {"accepted": 9}, {"bad_json": 2}, {"duplicate": 1}, {"s-f1": 3}, {"s-f1": 1})
    assert [(p.measurement, dict(p.fields)) for p in points][1:] == [("sensor_refused", {"refused": 3, "resynced": 1})]
