"""The alarm path's fast encoding (``encode_outbound``) equals the validated one, byte for byte.

``gateway/protocol/payloads.py`` stays the one definition of the payloads: whatever the core can put in an alarm
event or a crib state, the fast encoding must give the same bytes as building and validating the payload models
(``encode(alarm_event_payload(ev))``), and its dicts must have exactly the models' fields, so a field added to a
model and forgotten in the fast path fails here.
"""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.domain.events import AlarmEvent, AlarmSummary, CribState, MaintenanceView, Trigger
from gateway.domain.vocab import PRIORITY_OF, AlarmEventType, AlarmKind, LatchState, Resolution
from gateway.protocol import AlarmEventPayload, CribAlarmSummary, CribStatePayload, MaintenancePayload, Topics
from gateway.protocol.codec import (
    alarm_event_fields,
    alarm_event_payload,
    crib_state_fields,
    crib_state_payload,
    encode_outbound,
    encode_outbound_validated,
)
from gateway.protocol.payloads import TriggerPayload, encode
from tests.helpers import CLOSED, FAST_WIRELESS, OPEN, SLOW_WIRELESS, CoreHarness, raised

TOPICS = Topics("site-1")

ids = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,15}", fullmatch=True)
labels = st.text(min_size=1, max_size=30)  # any text: accents, quotes, emoji, control characters
times = st.floats(min_value=0, max_value=4e9, allow_nan=False) | st.sampled_from([0.0, 1e-7, 1764160000.0, 1e16])
counts = st.integers(min_value=0, max_value=2**40)
maybe = st.none().__or__


@st.composite
def alarm_events(draw: st.DrawFn) -> AlarmEvent:
    kind = draw(st.sampled_from(AlarmKind))
    return AlarmEvent(
        seq=draw(counts),
        type=draw(st.sampled_from(AlarmEventType)),
        alarm_id=draw(ids),
        kind=kind,
        priority=PRIORITY_OF[kind],
        site_id=draw(ids),
        room_id=draw(ids),
        crib_id=draw(ids),
        room_label=draw(labels),
        crib_label=draw(labels),
        at=draw(times),
        raised_at=draw(times),
        run=draw(counts),
        by=draw(maybe(ids)),
        device=draw(maybe(ids)),
        trigger=draw(maybe(st.builds(Trigger, ids, counts, counts))),
        latch_opened_at=draw(maybe(times)),
        acknowledged_at=draw(maybe(times)),
        acknowledged_by=draw(maybe(ids)),
        resolution=draw(maybe(st.sampled_from(Resolution))),
        test=draw(st.booleans()),
        escalation_level=draw(counts),
        maintenance=draw(st.booleans()),
        flaps=draw(counts),
    )


@st.composite
def summaries(draw: st.DrawFn) -> AlarmSummary:
    kind = draw(st.sampled_from(AlarmKind))
    return AlarmSummary(
        alarm_id=draw(ids),
        kind=kind,
        priority=PRIORITY_OF[kind],
        acknowledged_by=draw(maybe(ids)),
        raised_at=draw(times),
        acknowledged_at=draw(maybe(times)),
        latch_opened_at=draw(maybe(times)),
        test=draw(st.booleans()),
        escalation_level=draw(counts),
        maintenance=draw(st.booleans()),
        flaps=draw(counts),
    )


@st.composite
def crib_states(draw: st.DrawFn) -> CribState:
    return CribState(
        seq=draw(counts),
        site_id=draw(ids),
        room_id=draw(ids),
        crib_id=draw(ids),
        room_label=draw(labels),
        crib_label=draw(labels),
        latch=draw(maybe(st.sampled_from(LatchState))),
        sensor_online=draw(maybe(st.booleans())),
        battery_pct=draw(maybe(st.integers(min_value=0, max_value=100))),
        alarms=tuple(draw(st.lists(summaries(), max_size=4))),
        at=draw(times),
        latch_opened_at=draw(maybe(times)),
        maintenance=draw(maybe(st.builds(MaintenanceView, labels, times, times, ids))),
    )


@settings(max_examples=300, deadline=None)
@given(alarm_events())
def test_fast_alarm_event_equals_the_validated_encoding(ev: AlarmEvent) -> None:
    fast, validated = encode_outbound(TOPICS, ev, 7), encode_outbound_validated(TOPICS, ev, 7)
    assert fast == validated
    assert fast.payload == encode(alarm_event_payload(ev))


@settings(max_examples=300, deadline=None)
@given(crib_states(), counts)
def test_fast_crib_state_equals_the_validated_encoding(state: CribState, gw_run: int) -> None:
    fast, validated = encode_outbound(TOPICS, state, gw_run), encode_outbound_validated(TOPICS, state, gw_run)
    assert fast == validated
    assert fast.payload == encode(crib_state_payload(state, gw_run))


def test_fast_dicts_have_exactly_the_models_fields_in_their_order() -> None:
    ev = AlarmEvent(1, AlarmEventType.RAISED, "1-1", AlarmKind.CRIB_OPEN, PRIORITY_OF[AlarmKind.CRIB_OPEN], "s",
                    "r", "c", "R", "C", 1.0, 1.0, 1, trigger=Trigger("b-1", 1, 2))  # fmt: skip
    fields = alarm_event_fields(ev)
    assert list(fields) == list(AlarmEventPayload.model_fields)
    assert list(fields["trigger"]) == list(TriggerPayload.model_fields)
    summary = AlarmSummary("1-1", AlarmKind.CRIB_OPEN, PRIORITY_OF[AlarmKind.CRIB_OPEN], None, 1.0)
    state = CribState(1, "s", "r", "c", "R", "C", LatchState.OPEN, sensor_online=True, battery_pct=50,
                      alarms=(summary,), at=2.0, maintenance=MaintenanceView("repair", 1.0, 2.0, "tech"))  # fmt: skip
    state_fields = crib_state_fields(state, 1)
    assert list(state_fields) == list(CribStatePayload.model_fields)
    assert list(state_fields["alarms"][0]) == list(CribAlarmSummary.model_fields)
    assert list(state_fields["maintenance"]) == list(MaintenancePayload.model_fields)


def test_every_event_of_a_real_core_run_encodes_the_same_both_ways() -> None:
    """The events the core really makes (raise, acknowledge, resolve, offline, the crib states) both ways."""
    h = CoreHarness()
    events = [*h.latch(SLOW_WIRELESS, OPEN, boot=4, seq=7), *h.advance(10.0), *h.advance(3.5)]
    (raised_ev,) = raised(events)
    events += h.ack(alarm_id=raised_ev.alarm_id, by="staff-07", device="pager-2")
    events += h.latch(SLOW_WIRELESS, CLOSED, boot=4, seq=8)
    events += [*h.telemetry(FAST_WIRELESS), *h.availability(FAST_WIRELESS, online=False), *h.advance(5.0)]
    assert {type(ev) for ev in events} == {AlarmEvent, CribState}
    assert len({ev.type for ev in events if isinstance(ev, AlarmEvent)}) == 3
    for ev in events:
        fast = encode_outbound(TOPICS, ev, h.monitor.gw_run)
        assert fast == encode_outbound_validated(TOPICS, ev, h.monitor.gw_run)
        assert json.loads(fast.payload)["seq"] == ev.seq
