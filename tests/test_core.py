"""The pure alarm core (gateway.domain.monitor.CribMonitor) on a FakeClock: every transition, timers, invariants.

The default site (tests/helpers.py) has a room with grace 0 (a wireless and a wired crib) and a room with
grace 10 (two wireless cribs and a wired one), in demo mode so no broker credentials are needed.
"""

from __future__ import annotations

import logging
import random
from dataclasses import replace

import pytest

from gateway.domain.clock import FakeClock
from gateway.domain.events import (
    AckRequest,
    AlarmEvent,
    CribRecord,
    CribState,
    LatchReading,
    OpenAlarmRecord,
    Outcome,
    Trigger,
)
from gateway.domain.monitor import CribMonitor
from gateway.domain.vocab import AlarmEventType, AlarmKind, LatchState, Priority, Source
from tests.helpers import (
    CLOSED,
    FAST_ROOM,
    FAST_WIRED,
    FAST_WIRELESS,
    OPEN,
    SENSOR_OF,
    SITE_ID,
    SLOW_ROOM,
    SLOW_WIRED,
    SLOW_WIRELESS,
    SLOW_WIRELESS_2,
    WIRED_CRIBS,
    WIRELESS_CRIBS,
    CoreHarness,
    acknowledged,
    alarm_events,
    crib_states,
    make_settings,
    raised,
    resolved,
    site_mapping,
)

DEBOUNCE_S = 0.030  # alarms.debounce_gpio_ms defaults to 30
SILENCE_S = 90.0  # heartbeat_interval_s 30 x missed_heartbeats 3 (the defaults)


def trigger_of(h: CoreHarness) -> Trigger:
    ev = h.last_event
    assert ev is not None
    sensor_id, boot, seq = ev.sensor_id, ev.boot, ev.seq  # type: ignore[union-attr]
    return Trigger(sensor_id, boot, seq)


def assert_increasing_seq(events: list[AlarmEvent | CribState], after: int = 0) -> None:
    seqs = [e.seq for e in events]
    assert seqs == sorted(set(seqs)), f"seq not strictly increasing: {seqs}"
    assert not seqs or seqs[0] > after


def last_seq(h: CoreHarness) -> int:
    return max((e.seq for e in h.log), default=0)


# ---------------------------------------------------------------------------------------- crib open


class TestCribOpenGrace:
    def test_open_raises_nothing_until_the_grace_is_over(self) -> None:
        h = CoreHarness()
        h.latch(SLOW_WIRELESS, CLOSED)
        h.advance(1.0)
        t0 = h.now()

        out = h.latch(SLOW_WIRELESS, OPEN)

        assert alarm_events(out) == []
        (state,) = crib_states(out, SLOW_WIRELESS)
        assert state.latch is OPEN
        assert state.alarms == ()
        assert h.monitor.next_deadline() == t0 + 10
        assert h.advance_to(t0 + 9.999) == []
        assert h.monitor.active_alarms() == []

    def test_crib_open_is_raised_by_advance_when_the_grace_is_over(self) -> None:
        h = CoreHarness()
        h.latch(SLOW_WIRELESS, CLOSED)
        h.advance(1.0)
        t0 = h.now()
        h.latch(SLOW_WIRELESS, OPEN)
        opening = trigger_of(h)
        h.advance_to(t0 + 9.999)
        before = last_seq(h)

        out = h.advance_to(t0 + 10)

        assert [type(e) for e in out] == [AlarmEvent, CribState]
        assert_increasing_seq(out, after=before)
        alarm, state = out
        assert isinstance(alarm, AlarmEvent)
        assert isinstance(state, CribState)
        assert alarm.type is AlarmEventType.RAISED
        assert alarm.kind is AlarmKind.CRIB_OPEN
        assert alarm.priority is Priority.HIGH
        assert alarm.trigger == opening
        assert opening == Trigger(SENSOR_OF[SLOW_WIRELESS], 1, 2)
        assert (alarm.site_id, alarm.room_id, alarm.crib_id) == (SITE_ID, SLOW_ROOM, SLOW_WIRELESS)
        assert (alarm.room_label, alarm.crib_label) == ("Slow room", "Bedje S1")
        assert alarm.at == alarm.raised_at == h.clock.time()
        assert alarm.response_s == 0
        assert alarm.by is None
        assert alarm.device is None
        assert state.crib_id == SLOW_WIRELESS
        assert state.latch is OPEN
        assert [(a.alarm_id, a.kind, a.priority, a.acknowledged_by) for a in state.alarms] == [
            (alarm.alarm_id, AlarmKind.CRIB_OPEN, Priority.HIGH, None)
        ]
        # Raised once: the grace deadline is gone and a later advance raises nothing new.
        assert h.monitor.next_deadline() != t0 + 10
        assert h.advance(5.0) == []

    def test_grace_zero_raises_inside_the_same_handle_call(self) -> None:
        h = CoreHarness()
        h.latch(FAST_WIRELESS, CLOSED)
        before = last_seq(h)

        out = h.latch(FAST_WIRELESS, OPEN)

        assert [type(e) for e in out] == [AlarmEvent, CribState]
        assert_increasing_seq(out, after=before)
        alarm = out[0]
        assert isinstance(alarm, AlarmEvent)
        assert (alarm.type, alarm.kind, alarm.priority) == (AlarmEventType.RAISED, AlarmKind.CRIB_OPEN, Priority.HIGH)
        assert alarm.trigger == trigger_of(h)
        assert alarm.room_id == FAST_ROOM
        assert h.monitor.crib_state(FAST_WIRELESS).latch is OPEN

    def test_first_reading_open_counts_as_an_opening(self) -> None:
        h = CoreHarness()
        h.latch(SLOW_WIRELESS, OPEN)  # the gateway never saw it closed
        t0 = h.now()
        assert h.monitor.next_deadline() == t0 + 10
        assert len(raised(h.advance_to(t0 + 10), AlarmKind.CRIB_OPEN)) == 1

    def test_closed_again_before_the_grace_raises_nothing_and_clears_the_deadline(self) -> None:
        h = CoreHarness()
        h.latch(SLOW_WIRELESS, CLOSED)
        t0 = h.now()
        h.latch(SLOW_WIRELESS, OPEN)
        h.advance(6.0)

        out = h.latch(SLOW_WIRELESS, CLOSED)

        assert alarm_events(out) == []
        (state,) = crib_states(out, SLOW_WIRELESS)
        assert state.latch is CLOSED
        assert state.alarms == ()
        # What is left is the sensor's silence deadline (from its last message), not the grace.
        deadline = h.monitor.next_deadline()
        assert deadline is not None
        assert deadline != t0 + 10
        assert deadline == h.start + SILENCE_S  # the never-heard cribs of the site, due first
        assert alarm_events(h.advance_to(t0 + 30)) == []
        assert h.monitor.active_alarms() == []

    def test_closed_again_before_the_grace_on_a_wired_crib_leaves_no_deadline(self) -> None:
        data = site_mapping()
        data["rooms"] = [data["rooms"][1] | {"cribs": [data["rooms"][1]["cribs"][2]]}]  # only w-1
        h = CoreHarness(make_settings(data=data))
        assert h.monitor.next_deadline() is None
        h.close_wired(SLOW_WIRED)
        t0 = h.now()
        h.latch(SLOW_WIRED, OPEN)
        h.advance_to(t0 + DEBOUNCE_S)
        assert h.monitor.next_deadline() == t0 + 10
        h.advance(3.0)
        h.latch(SLOW_WIRED, CLOSED)
        h.advance(DEBOUNCE_S)
        assert h.monitor.crib_state(SLOW_WIRED).latch is CLOSED
        assert h.monitor.next_deadline() is None
        assert h.advance(60.0) == []

    def test_reopen_after_resolve_raises_a_new_alarm_with_a_new_id(self) -> None:
        h = CoreHarness()
        first = h.open_alarm(FAST_WIRELESS)
        assert len(resolved(h.latch(FAST_WIRELESS, CLOSED))) == 1

        second = h.open_alarm(FAST_WIRELESS)

        assert second.alarm_id != first.alarm_id
        assert second.seq > first.seq
        assert second.trigger == trigger_of(h)
        assert [a.alarm_id for a in h.monitor.active_alarms()] == [second.alarm_id]

    def test_reopen_after_resolve_waits_a_full_new_grace(self) -> None:
        h = CoreHarness()
        h.latch(SLOW_WIRELESS, OPEN)
        h.advance(10.0)
        h.latch(SLOW_WIRELESS, CLOSED)
        h.advance(1.0)
        t1 = h.now()
        h.latch(SLOW_WIRELESS, OPEN)
        assert raised(h.advance_to(t1 + 9.999)) == []
        assert len(raised(h.advance_to(t1 + 10))) == 1

    def test_alarm_ids_are_unique_across_cribs_and_kinds(self) -> None:
        h = CoreHarness()
        ids = [h.open_alarm(FAST_WIRELESS).alarm_id]
        ids += [e.alarm_id for e in raised(h.telemetry(FAST_WIRELESS, battery_pct=5))]
        h.latch(SLOW_WIRELESS, OPEN)
        ids += [e.alarm_id for e in raised(h.advance(10.0))]
        assert len(ids) == 3
        assert len(set(ids)) == 3


# ----------------------------------------------------------------------------------------------- acks


class TestAcknowledge:
    def test_ack_by_alarm_id_records_who_which_device_and_the_response_time(self) -> None:
        h = CoreHarness()
        alarm = h.open_alarm(FAST_WIRELESS)
        h.advance(7.0)
        accepted = h.stats.accepted

        out = h.ack(alarm_id=alarm.alarm_id, by="anna", device="pager-3")

        assert [type(e) for e in out] == [AlarmEvent, CribState]
        ack = out[0]
        assert isinstance(ack, AlarmEvent)
        assert ack.type is AlarmEventType.ACKNOWLEDGED
        assert (ack.alarm_id, ack.kind, ack.priority) == (alarm.alarm_id, AlarmKind.CRIB_OPEN, Priority.HIGH)
        assert (ack.by, ack.device) == ("anna", "pager-3")
        assert ack.raised_at == alarm.raised_at
        assert ack.at == h.clock.time()
        assert ack.response_s == pytest.approx(7.0)
        assert ack.trigger == alarm.trigger
        assert ack.seq > alarm.seq
        state = out[1]
        assert isinstance(state, CribState)
        assert [(a.alarm_id, a.acknowledged_by) for a in state.alarms] == [(alarm.alarm_id, "anna")]
        assert state.latch is OPEN  # acknowledged is not resolved
        assert [(a.alarm_id, a.acknowledged_by) for a in h.monitor.active_alarms()] == [(alarm.alarm_id, "anna")]
        assert h.stats.accepted == accepted + 1

    def test_ack_by_crib_acknowledges_every_open_alarm_of_that_crib_only(self) -> None:
        h = CoreHarness()
        crib_open = h.open_alarm(FAST_WIRELESS)
        (battery,) = raised(h.telemetry(FAST_WIRELESS, battery_pct=10), AlarmKind.BATTERY_LOW)
        h.latch(SLOW_WIRELESS, OPEN)
        (elsewhere,) = raised(h.advance(10.0))

        out = h.ack(crib_id=FAST_WIRELESS, by="bert", device="tablet-1")

        acks = acknowledged(out)
        assert {a.alarm_id for a in acks} == {crib_open.alarm_id, battery.alarm_id}
        assert all((a.by, a.device, a.crib_id) == ("bert", "tablet-1", FAST_WIRELESS) for a in acks)
        assert [type(e) for e in out] == [AlarmEvent, AlarmEvent, CribState]
        assert_increasing_seq(out)
        summaries = {a.alarm_id: a.acknowledged_by for a in h.monitor.active_alarms()}
        assert summaries == {crib_open.alarm_id: "bert", battery.alarm_id: "bert", elsewhere.alarm_id: None}

    def test_ack_by_crib_skips_alarms_already_acknowledged(self) -> None:
        h = CoreHarness()
        crib_open = h.open_alarm(FAST_WIRELESS)
        h.ack(alarm_id=crib_open.alarm_id, by="anna")
        (battery,) = raised(h.telemetry(FAST_WIRELESS, battery_pct=10))

        acks = acknowledged(h.ack(crib_id=FAST_WIRELESS, by="bert"))

        assert [(a.alarm_id, a.by) for a in acks] == [(battery.alarm_id, "bert")]
        summaries = {a.alarm_id: a.acknowledged_by for a in h.monitor.active_alarms()}
        assert summaries == {crib_open.alarm_id: "anna", battery.alarm_id: "bert"}

    @pytest.mark.parametrize("second", ["alarm_id", "crib_id"])
    def test_second_ack_is_ignored_and_counted(self, second: str) -> None:
        h = CoreHarness()
        alarm = h.open_alarm(FAST_WIRELESS)
        h.ack(alarm_id=alarm.alarm_id, by="anna")
        accepted = h.stats.accepted

        target = {"alarm_id": alarm.alarm_id} if second == "alarm_id" else {"crib_id": FAST_WIRELESS}
        out = h.ack(**target, by="bert")

        assert out == []
        assert h.stats.ignored["ack_again"] == 1
        assert h.stats.accepted == accepted
        assert h.stats.rejected_total == 0
        assert [a.acknowledged_by for a in h.monitor.active_alarms()] == ["anna"]

    @pytest.mark.parametrize(
        ("target", "reason"),
        [
            ({"alarm_id": "no-such-alarm"}, "ack_unknown_alarm"),
            ({"crib_id": "zz-9"}, "ack_unknown_crib"),
            ({}, "bad_ack"),
        ],
    )
    def test_ack_of_nothing_is_rejected_and_changes_nothing(self, target: dict[str, str], reason: str) -> None:
        h = CoreHarness()
        alarm = h.open_alarm(FAST_WIRELESS)
        accepted = h.stats.accepted

        out = h.ack(**target)

        assert out == []
        assert h.stats.rejected[reason] == 1
        assert h.stats.accepted == accepted
        assert [(a.alarm_id, a.acknowledged_by) for a in h.monitor.active_alarms()] == [(alarm.alarm_id, None)]

    def test_ack_by_crib_without_open_alarms_is_rejected_not_ack_again(self) -> None:
        h = CoreHarness()
        assert h.ack(crib_id=FAST_WIRELESS) == []
        assert h.stats.ignored["ack_again"] == 0
        assert h.stats.rejected_total == 1

    def test_ack_of_a_resolved_alarm_is_rejected(self) -> None:
        h = CoreHarness()
        alarm = h.open_alarm(FAST_WIRELESS)
        h.latch(FAST_WIRELESS, CLOSED)
        assert h.ack(alarm_id=alarm.alarm_id) == []
        assert h.stats.rejected["ack_unknown_alarm"] == 1

    def test_close_after_ack_resolves(self) -> None:
        h = CoreHarness()
        alarm = h.open_alarm(FAST_WIRELESS)
        h.ack(alarm_id=alarm.alarm_id, by="anna")
        h.advance(4.0)
        before = last_seq(h)

        out = h.latch(FAST_WIRELESS, CLOSED)

        assert [type(e) for e in out] == [AlarmEvent, CribState]
        assert_increasing_seq(out, after=before)
        res = out[0]
        assert isinstance(res, AlarmEvent)
        assert (res.type, res.alarm_id, res.kind) == (AlarmEventType.RESOLVED, alarm.alarm_id, AlarmKind.CRIB_OPEN)
        assert res.raised_at == alarm.raised_at
        assert res.at == h.clock.time()
        assert res.response_s == pytest.approx(4.0)
        state = out[1]
        assert isinstance(state, CribState)
        assert (state.latch, state.alarms) == (CLOSED, ())
        assert h.monitor.active_alarms() == []

    def test_close_without_ack_resolves(self) -> None:
        h = CoreHarness()
        alarm = h.open_alarm(FAST_WIRELESS)
        out = h.latch(FAST_WIRELESS, CLOSED)
        assert [(e.type, e.alarm_id) for e in alarm_events(out)] == [(AlarmEventType.RESOLVED, alarm.alarm_id)]
        assert acknowledged(h.log) == []
        assert h.monitor.crib_state(FAST_WIRELESS).alarms == ()
        assert h.monitor.active_alarms() == []

    def test_ack_in_the_same_call_as_a_due_grace_acknowledges_the_fresh_alarm(self) -> None:
        h = CoreHarness()
        h.latch(SLOW_WIRELESS, OPEN)
        h.clock.advance(10.0)  # the core has not been told yet

        out = h.ack(crib_id=SLOW_WIRELESS)

        assert [e.type for e in alarm_events(out)] == [AlarmEventType.RAISED, AlarmEventType.ACKNOWLEDGED]
        assert_increasing_seq(out)


# ------------------------------------------------------------------------------------------- debounce


class TestDebounceOfWiredCribs:
    def test_default_debounce_is_30_ms(self) -> None:
        assert make_settings().alarms.debounce_gpio_ms == 30
        assert make_settings().alarms.debounce_mqtt_ms == 0

    @pytest.mark.parametrize("crib_id", [FAST_WIRED, SLOW_WIRED])
    def test_a_bounce_within_a_few_ms_changes_nothing(self, crib_id: str) -> None:
        h = CoreHarness()
        h.close_wired(crib_id)
        t0 = h.now()
        out = []
        for offset, state in [(0.0, OPEN), (0.002, CLOSED), (0.004, OPEN), (0.006, CLOSED)]:
            out += h.advance_to(t0 + offset)
            out += h.latch(crib_id, state)
        out += h.advance_to(t0 + 5 * DEBOUNCE_S)
        out += h.advance(20.0)

        assert crib_states(out, crib_id) == []
        assert alarm_events(out) == []
        assert h.monitor.crib_state(crib_id).latch is CLOSED
        assert h.monitor.active_alarms() == []

    def test_an_open_shorter_than_the_debounce_is_dropped(self) -> None:
        h = CoreHarness()
        h.close_wired(FAST_WIRED)
        t0 = h.now()
        h.latch(FAST_WIRED, OPEN)
        h.advance_to(t0 + 0.029)
        assert h.latch(FAST_WIRED, CLOSED) == []
        assert h.advance(1.0) == []
        assert h.monitor.crib_state(FAST_WIRED).latch is CLOSED

    def test_a_bounce_while_open_does_not_resolve(self) -> None:
        h = CoreHarness()
        h.close_wired(FAST_WIRED)
        h.latch(FAST_WIRED, OPEN)
        (alarm,) = raised(h.advance(DEBOUNCE_S))
        t1 = h.now()
        out = h.latch(FAST_WIRED, CLOSED)
        out += h.advance_to(t1 + 0.003)
        out += h.latch(FAST_WIRED, OPEN)
        out += h.advance(1.0)
        assert out == []
        assert [a.alarm_id for a in h.monitor.active_alarms()] == [alarm.alarm_id]

    def test_a_stable_open_with_grace_zero_raises_at_the_debounce_expiry(self) -> None:
        h = CoreHarness()
        h.close_wired(FAST_WIRED)
        t0 = h.now()

        assert h.latch(FAST_WIRED, OPEN) == []
        opening = trigger_of(h)
        assert h.monitor.next_deadline() == t0 + DEBOUNCE_S
        assert h.advance_to(t0 + 0.029) == []
        assert h.monitor.crib_state(FAST_WIRED).latch is CLOSED
        out = h.advance_to(t0 + DEBOUNCE_S)

        assert [type(e) for e in out] == [AlarmEvent, CribState]
        alarm, state = out
        assert isinstance(alarm, AlarmEvent)
        assert isinstance(state, CribState)
        assert (alarm.type, alarm.kind, alarm.crib_id) == (AlarmEventType.RAISED, AlarmKind.CRIB_OPEN, FAST_WIRED)
        assert alarm.trigger == opening
        assert opening.sensor_id == "gpio5"
        assert state.latch is OPEN

    def test_the_grace_counts_from_the_start_of_the_stable_reading(self) -> None:
        h = CoreHarness()
        h.close_wired(SLOW_WIRED)
        t0 = h.now()
        h.latch(SLOW_WIRED, OPEN)
        opening = trigger_of(h)

        out = h.advance_to(t0 + DEBOUNCE_S)
        assert alarm_events(out) == []
        assert [s.latch for s in crib_states(out, SLOW_WIRED)] == [OPEN]
        assert h.monitor.next_deadline() == t0 + 10  # not t0 + 10.030
        assert h.advance_to(t0 + 9.999) == []
        (alarm,) = raised(h.advance_to(t0 + 10))
        assert alarm.trigger == opening

    def test_after_a_bounce_the_grace_counts_from_the_last_edge(self) -> None:
        h = CoreHarness()
        h.close_wired(SLOW_WIRED)
        t0 = h.now()
        h.latch(SLOW_WIRED, OPEN)
        h.advance_to(t0 + 0.002)
        h.latch(SLOW_WIRED, CLOSED)
        h.advance_to(t0 + 0.004)
        h.latch(SLOW_WIRED, OPEN)
        stable_since = h.now()
        stable = trigger_of(h)

        h.advance_to(stable_since + DEBOUNCE_S)
        assert h.monitor.crib_state(SLOW_WIRED).latch is OPEN
        assert h.advance_to(t0 + 10) == []
        (alarm,) = raised(h.advance_to(stable_since + 10))
        assert alarm.trigger == stable

    def test_a_repeated_reading_keeps_the_first_start(self) -> None:
        h = CoreHarness()
        h.close_wired(FAST_WIRED)
        t0 = h.now()
        h.latch(FAST_WIRED, OPEN)
        first = trigger_of(h)
        h.advance_to(t0 + 0.020)
        h.latch(FAST_WIRED, OPEN)
        assert h.monitor.next_deadline() == t0 + DEBOUNCE_S
        (alarm,) = raised(h.advance_to(t0 + DEBOUNCE_S))
        assert alarm.trigger == first

    def test_a_due_reading_is_applied_before_the_next_one(self) -> None:
        h = CoreHarness()
        h.close_wired(FAST_WIRED)
        t0 = h.now()
        h.latch(FAST_WIRED, OPEN)
        h.clock.advance(0.050)  # nobody called advance() in between

        out = h.latch(FAST_WIRED, CLOSED)

        assert [type(e) for e in out] == [AlarmEvent, CribState]
        assert raised(out)[0].kind is AlarmKind.CRIB_OPEN
        assert h.monitor.crib_state(FAST_WIRED).latch is OPEN  # the closing is still being debounced
        t1 = h.now()
        assert h.monitor.next_deadline() == t1 + DEBOUNCE_S
        assert len(resolved(h.advance_to(t1 + DEBOUNCE_S))) == 1
        assert t1 - t0 > DEBOUNCE_S

    def test_the_configured_gpio_debounce_is_used(self) -> None:
        h = CoreHarness(make_settings(alarms={"debounce_gpio_ms": 100}))
        h.latch(FAST_WIRED, CLOSED)
        h.advance(0.1)
        t0 = h.now()
        h.latch(FAST_WIRED, OPEN)
        assert h.advance_to(t0 + 0.05) == []
        assert h.monitor.next_deadline() == t0 + 0.1
        assert len(raised(h.advance_to(t0 + 0.1))) == 1

    def test_wireless_cribs_use_the_mqtt_debounce(self) -> None:
        h = CoreHarness(make_settings(alarms={"debounce_mqtt_ms": 50}))
        h.latch(FAST_WIRELESS, CLOSED)
        h.advance(0.05)
        t0 = h.now()
        assert h.latch(FAST_WIRELESS, OPEN) == []
        h.advance_to(t0 + 0.02)
        h.latch(FAST_WIRELESS, CLOSED)
        assert h.advance(1.0) == []
        h.latch(FAST_WIRELESS, OPEN)
        t1 = h.now()
        assert len(raised(h.advance_to(t1 + 0.05))) == 1

    def test_wired_readings_are_not_debounced_with_a_zero_debounce(self) -> None:
        h = CoreHarness(make_settings(alarms={"debounce_gpio_ms": 0}))
        h.latch(FAST_WIRED, CLOSED)
        assert len(raised(h.latch(FAST_WIRED, OPEN))) == 1


# ------------------------------------------------------------------------------------ ordering, input


class TestOrderingAndBadInput:
    def test_duplicate_latch_message_changes_nothing(self) -> None:
        h = CoreHarness()
        (alarm,) = raised(h.latch(FAST_WIRELESS, OPEN, boot=1, seq=5))
        accepted = h.stats.accepted

        assert h.latch(FAST_WIRELESS, OPEN, boot=1, seq=5) == []

        assert h.stats.ignored["duplicate"] == 1
        assert h.stats.accepted == accepted
        assert h.monitor.crib_state(FAST_WIRELESS).latch is OPEN
        assert [a.alarm_id for a in h.monitor.active_alarms()] == [alarm.alarm_id]

    def test_a_different_reading_under_a_key_already_seen_cannot_close_a_crib(self) -> None:
        """Two messages, one key: a second sender or a counter bug. The closing one is refused, loudly."""
        h = CoreHarness()
        (alarm,) = raised(h.latch(FAST_WIRELESS, OPEN, boot=1, seq=5))

        assert h.latch(FAST_WIRELESS, CLOSED, boot=1, seq=5) == []

        assert h.stats.refused["s-f1"] == 1
        assert h.monitor.sensor_health(FAST_WIRELESS).refused == 1
        assert h.monitor.crib_state(FAST_WIRELESS).latch is OPEN
        assert [a.alarm_id for a in h.monitor.active_alarms()] == [alarm.alarm_id]

    def test_a_replay_of_older_messages_changes_nothing(self) -> None:
        h = CoreHarness()
        h.latch(FAST_WIRELESS, CLOSED, boot=1, seq=4)
        h.latch(FAST_WIRELESS, OPEN, boot=1, seq=5)
        assert h.latch(FAST_WIRELESS, CLOSED, boot=1, seq=4) == []  # replayed: a duplicate wherever it comes
        assert h.latch(FAST_WIRELESS, CLOSED, boot=1, seq=100_005) == []  # a wild jump that would close: refused
        assert h.stats.ignored["duplicate"] == 1
        assert h.stats.refused["s-f1"] == 1
        assert h.monitor.crib_state(FAST_WIRELESS).latch is OPEN

    def test_a_new_boot_restarts_the_sequence(self) -> None:
        h = CoreHarness()
        h.latch(FAST_WIRELESS, OPEN, boot=1, seq=5000)

        out = h.latch(FAST_WIRELESS, CLOSED, boot=2, seq=0)

        assert len(resolved(out)) == 1
        assert h.monitor.crib_state(FAST_WIRELESS).latch is CLOSED
        assert h.monitor.sensor_health(FAST_WIRELESS).boot == 2
        # ... and a replay from the old boot is a duplicate; an unseen old message that would open is taken.
        assert h.latch(FAST_WIRELESS, OPEN, boot=1, seq=5000) == []
        assert h.stats.ignored["duplicate"] == 1

    def test_latch_and_telemetry_have_separate_counters(self) -> None:
        h = CoreHarness()
        h.latch(SLOW_WIRELESS, CLOSED, boot=1, seq=10)

        h.telemetry(SLOW_WIRELESS, battery_pct=77, boot=1, seq=1)
        assert h.monitor.sensor_health(SLOW_WIRELESS).battery_pct == 77
        h.telemetry(SLOW_WIRELESS, battery_pct=70, boot=1, seq=50)
        h.latch(SLOW_WIRELESS, OPEN, boot=1, seq=11)
        assert h.monitor.crib_state(SLOW_WIRELESS).latch is OPEN

        assert h.telemetry(SLOW_WIRELESS, battery_pct=5, boot=1, seq=50) == []
        assert h.stats.ignored["duplicate"] == 1
        assert h.monitor.sensor_health(SLOW_WIRELESS).battery_pct == 70
        assert raised(h.log, AlarmKind.BATTERY_LOW) == []

    def test_wired_readings_are_ordered_too(self) -> None:
        h = CoreHarness()
        h.latch(FAST_WIRED, CLOSED, seq=3)
        h.advance(DEBOUNCE_S)
        assert h.latch(FAST_WIRED, CLOSED, seq=3) == []
        assert h.latch(FAST_WIRED, CLOSED, seq=2) == []  # behind, never seen, changes nothing
        assert h.advance(1.0) == []
        assert (h.stats.ignored["duplicate"], h.stats.ignored["out_of_order"]) == (1, 1)

    def test_unknown_sensor_is_rejected_and_counted(self) -> None:
        h = CoreHarness()
        accepted = h.stats.accepted

        assert h.latch("ghost", OPEN) == []
        assert h.telemetry("ghost", battery_pct=1) == []
        assert h.availability("ghost", online=False) == []
        assert h.latch("gpio9", OPEN) == []  # no crib on pin 9

        assert h.stats.rejected["unknown_sensor"] == 4
        assert h.stats.accepted == accepted
        assert h.advance(5.0) == []
        assert h.monitor.active_alarms() == []


# ------------------------------------------------------------------------------------ sensor offline


class TestOfflineByLastWill:
    def test_offline_is_raised_when_the_offline_grace_is_over(self) -> None:
        h = CoreHarness()
        h.telemetry(SLOW_WIRELESS)
        h.advance(1.0)
        t = h.now()

        out = h.availability(SLOW_WIRELESS, online=False)

        assert alarm_events(out) == []
        assert [s.sensor_online for s in crib_states(out, SLOW_WIRELESS)] == [False]
        assert h.monitor.sensor_health(SLOW_WIRELESS).online is False
        assert h.monitor.next_deadline() == t + 5
        assert h.advance_to(t + 4.999) == []
        out = h.advance_to(t + 5)
        assert [type(e) for e in out] == [AlarmEvent, CribState]
        alarm = out[0]
        assert isinstance(alarm, AlarmEvent)
        assert (alarm.type, alarm.kind, alarm.priority) == (
            AlarmEventType.RAISED,
            AlarmKind.SENSOR_OFFLINE,
            Priority.MEDIUM,
        )
        assert (alarm.crib_id, alarm.room_id) == (SLOW_WIRELESS, SLOW_ROOM)
        assert alarm.trigger is None
        state = h.monitor.crib_state(SLOW_WIRELESS)
        assert state.sensor_online is False
        assert [a.kind for a in state.alarms] == [AlarmKind.SENSOR_OFFLINE]

    @pytest.mark.parametrize("comes_back_by", ["availability", "telemetry", "latch"])
    def test_back_online_within_the_grace_raises_nothing(self, comes_back_by: str) -> None:
        h = CoreHarness()
        h.telemetry(SLOW_WIRELESS)
        t = h.now()
        h.availability(SLOW_WIRELESS, online=False)
        h.advance_to(t + 3)

        if comes_back_by == "availability":
            out = h.availability(SLOW_WIRELESS, online=True)
        elif comes_back_by == "telemetry":
            out = h.telemetry(SLOW_WIRELESS)
        else:
            out = h.latch(SLOW_WIRELESS, CLOSED)

        assert alarm_events(out) == []
        assert [s.sensor_online for s in crib_states(out, SLOW_WIRELESS)] == [True]
        out = h.advance_to(t + 60)
        assert [e for e in alarm_events(out) if e.crib_id == SLOW_WIRELESS] == []
        assert h.monitor.sensor_health(SLOW_WIRELESS).online is True

    def test_back_online_after_the_grace_resolves(self) -> None:
        h = CoreHarness()
        h.telemetry(SLOW_WIRELESS)
        t = h.now()
        h.availability(SLOW_WIRELESS, online=False)
        (alarm,) = raised(h.advance_to(t + 5))
        h.advance(20.0)

        out = h.availability(SLOW_WIRELESS, online=True)

        assert [(e.type, e.alarm_id) for e in alarm_events(out)] == [(AlarmEventType.RESOLVED, alarm.alarm_id)]
        state = crib_states(out, SLOW_WIRELESS)[-1]
        assert (state.sensor_online, state.alarms) == (True, ())
        assert h.monitor.active_alarms() == []

    def test_retained_latch_does_not_bring_a_sensor_back(self) -> None:
        h = CoreHarness()
        h.telemetry(SLOW_WIRELESS)
        t = h.now()
        h.availability(SLOW_WIRELESS, online=False)
        h.advance_to(t + 1)
        h.latch(SLOW_WIRELESS, CLOSED, live=False)
        assert h.monitor.sensor_health(SLOW_WIRELESS).online is False
        assert len(raised(h.advance_to(t + 5), AlarmKind.SENSOR_OFFLINE)) == 1

    def test_offline_grace_zero_raises_at_once(self) -> None:
        h = CoreHarness(make_settings(alarms={"offline_grace_s": 0}))
        h.telemetry(SLOW_WIRELESS)

        out = h.availability(SLOW_WIRELESS, online=False)

        (alarm,) = raised(out)
        assert (alarm.kind, alarm.priority, alarm.crib_id) == (AlarmKind.SENSOR_OFFLINE, Priority.MEDIUM, SLOW_WIRELESS)
        assert isinstance(out[-1], CribState)
        assert out[-1].sensor_online is False

    def test_a_repeated_last_will_raises_no_second_alarm(self) -> None:
        h = CoreHarness()
        h.telemetry(SLOW_WIRELESS)
        t = h.now()
        h.availability(SLOW_WIRELESS, online=False)
        h.advance_to(t + 5)
        assert alarm_events(h.availability(SLOW_WIRELESS, online=False)) == []
        assert len(h.monitor.active_alarms()) == 1

    def test_a_late_last_will_of_an_earlier_boot_only_marks_the_sensor_offline_until_it_speaks(self) -> None:
        """A last will is never set aside for its boot (anyone could send a high boot to hide the real one)."""
        h = CoreHarness()
        h.latch(SLOW_WIRELESS, CLOSED, boot=3, seq=0)

        h.availability(SLOW_WIRELESS, online=False, boot=2)
        assert h.monitor.sensor_health(SLOW_WIRELESS).online is False
        h.telemetry(SLOW_WIRELESS, boot=3, seq=0)  # the sensor speaks within the offline grace

        assert h.monitor.sensor_health(SLOW_WIRELESS).online is True
        assert [e for e in alarm_events(h.advance(30.0)) if e.crib_id == SLOW_WIRELESS] == []

    def test_last_will_of_the_current_boot_is_accepted(self) -> None:
        h = CoreHarness()
        h.latch(SLOW_WIRELESS, CLOSED, boot=3, seq=0)
        h.availability(SLOW_WIRELESS, online=False, boot=3)
        assert h.monitor.sensor_health(SLOW_WIRELESS).online is False

    def test_availability_of_a_wired_sensor_is_rejected(self) -> None:
        h = CoreHarness()
        assert h.availability(FAST_WIRED, online=False) == []
        assert h.stats.rejected["wired_sensor"] == 1
        assert h.advance(10.0) == []
        assert h.monitor.crib_state(FAST_WIRED).sensor_online is None


class TestMissedHeartbeats:
    def test_a_sensor_never_heard_goes_offline_after_the_missed_heartbeats(self) -> None:
        h = CoreHarness()
        assert h.monitor.next_deadline() == h.start + SILENCE_S
        assert h.advance_to(h.start + 89.999) == []

        out = h.advance_to(h.start + SILENCE_S)

        alarms = raised(out)
        assert sorted(a.crib_id for a in alarms) == sorted(WIRELESS_CRIBS)
        assert all((a.kind, a.priority, a.trigger) == (AlarmKind.SENSOR_OFFLINE, Priority.MEDIUM, None) for a in alarms)
        assert sorted(s.crib_id for s in crib_states(out)) == sorted(WIRELESS_CRIBS)
        assert all(s.sensor_online is False for s in crib_states(out))
        assert_increasing_seq(out)
        assert all(h.monitor.sensor_health(c).online is False for c in WIRELESS_CRIBS)
        assert h.advance(1000.0) == []  # raised once

    def test_telemetry_resets_the_timer(self) -> None:
        h = CoreHarness()
        h.advance_to(h.start + 60)
        h.telemetry(SLOW_WIRELESS)

        out = h.advance_to(h.start + SILENCE_S)
        assert SLOW_WIRELESS not in {a.crib_id for a in raised(out)}
        assert h.advance_to(h.start + 60 + 89.999) == []
        (alarm,) = raised(h.advance_to(h.start + 60 + SILENCE_S))
        assert (alarm.crib_id, alarm.kind) == (SLOW_WIRELESS, AlarmKind.SENSOR_OFFLINE)

    def test_the_interval_a_sensor_announces_replaces_the_configured_one(self) -> None:
        h = CoreHarness()
        h.advance(1.0)
        t = h.now()
        h.telemetry(SLOW_WIRELESS, interval_s=5)

        assert h.monitor.next_deadline() == t + 15
        assert h.advance_to(t + 14.999) == []
        (alarm,) = raised(h.advance_to(t + 15))
        assert alarm.crib_id == SLOW_WIRELESS
        assert h.monitor.sensor_health(SLOW_WIRELESS).interval_s == 5

    def test_a_longer_announced_interval_does_not_postpone_offline(self) -> None:
        h = CoreHarness()
        h.telemetry(SLOW_WIRELESS, interval_s=3600)  # a firmware bug must not switch off offline detection
        out = h.advance_to(h.start + SILENCE_S - 0.001)
        assert SLOW_WIRELESS not in {a.crib_id for a in raised(out)}
        assert SLOW_WIRELESS in {a.crib_id for a in raised(h.advance_to(h.start + SILENCE_S))}

    def test_a_longer_announced_interval_is_named_once_per_sensor(self, caplog: pytest.LogCaptureFixture) -> None:
        h = CoreHarness()
        with caplog.at_level(logging.WARNING, logger="cribwatch.ingest"):
            h.telemetry(SLOW_WIRELESS, interval_s=60, seq=0)
            h.telemetry(SLOW_WIRELESS, interval_s=60, seq=1)
            h.telemetry(FAST_WIRELESS, interval_s=30)  # the site's own: nothing to say
        warnings = [r.getMessage() for r in caplog.records if "longer than the site" in r.getMessage()]
        assert len(warnings) == 1
        ((sensor_id, announced),) = h.monitor.stats.slow_heartbeats.items()
        assert announced == 60
        assert repr(sensor_id) in warnings[0]

    def test_live_latch_counts_as_seen_a_retained_one_does_not(self) -> None:
        h = CoreHarness()
        h.advance_to(h.start + 60)
        h.latch(SLOW_WIRELESS, CLOSED, live=False)
        h.latch(SLOW_WIRELESS_2, CLOSED, live=True)
        assert h.monitor.crib_state(SLOW_WIRELESS).latch is CLOSED  # the state counts, the liveness not
        assert h.monitor.sensor_health(SLOW_WIRELESS).last_seen is None
        assert h.monitor.sensor_health(SLOW_WIRELESS_2).last_seen == h.start + 60

        out = h.advance_to(h.start + SILENCE_S)

        assert sorted(a.crib_id for a in raised(out)) == sorted([FAST_WIRELESS, SLOW_WIRELESS])

    def test_configured_heartbeat_interval_and_count(self) -> None:
        h = CoreHarness(make_settings(alarms={"heartbeat_interval_s": 10, "missed_heartbeats": 2}))
        assert h.advance_to(h.start + 19.999) == []
        assert len(raised(h.advance_to(h.start + 20))) == len(WIRELESS_CRIBS)

    def test_a_silent_sensor_that_speaks_again_is_resolved(self) -> None:
        h = CoreHarness()
        alarms = {a.crib_id: a for a in raised(h.advance(SILENCE_S))}

        out = h.telemetry(SLOW_WIRELESS)

        assert [(e.type, e.alarm_id) for e in alarm_events(out)] == [
            (AlarmEventType.RESOLVED, alarms[SLOW_WIRELESS].alarm_id)
        ]
        assert h.monitor.crib_state(SLOW_WIRELESS).sensor_online is True
        # The timer runs again from here.
        t = h.now()
        assert [a.crib_id for a in raised(h.advance_to(t + SILENCE_S))] == [SLOW_WIRELESS]

    def test_silence_raises_without_waiting_for_the_offline_grace(self) -> None:
        h = CoreHarness(make_settings(alarms={"offline_grace_s": 60}))
        assert len(raised(h.advance_to(h.start + SILENCE_S))) == len(WIRELESS_CRIBS)


class TestBattery:
    def test_low_battery_raises_once_and_resolves_with_hysteresis(self) -> None:
        h = CoreHarness()
        h.telemetry(SLOW_WIRELESS, battery_pct=50)

        out = h.telemetry(SLOW_WIRELESS, battery_pct=19)
        (alarm,) = raised(out)
        assert (alarm.kind, alarm.priority) == (AlarmKind.BATTERY_LOW, Priority.LOW)
        assert alarm.trigger == trigger_of(h)
        assert [s.battery_pct for s in crib_states(out, SLOW_WIRELESS)] == [19]

        for pct in (15, 3, 20, 22, 24):  # still low, or between low and ok: no change of the alarm
            out = h.telemetry(SLOW_WIRELESS, battery_pct=pct)
            assert alarm_events(out) == [], pct
            assert h.monitor.crib_state(SLOW_WIRELESS).battery_pct == pct
        assert [a.alarm_id for a in h.monitor.active_alarms()] == [alarm.alarm_id]

        out = h.telemetry(SLOW_WIRELESS, battery_pct=25)
        assert [(e.type, e.alarm_id) for e in alarm_events(out)] == [(AlarmEventType.RESOLVED, alarm.alarm_id)]
        assert h.monitor.active_alarms() == []

        (again,) = raised(h.telemetry(SLOW_WIRELESS, battery_pct=10))
        assert again.alarm_id != alarm.alarm_id

    def test_battery_at_the_low_threshold_is_not_low(self) -> None:
        h = CoreHarness()
        assert alarm_events(h.telemetry(SLOW_WIRELESS, battery_pct=20)) == []

    def test_first_telemetry_already_low_raises(self) -> None:
        h = CoreHarness()
        assert len(raised(h.telemetry(SLOW_WIRELESS, battery_pct=0), AlarmKind.BATTERY_LOW)) == 1

    def test_configured_thresholds(self) -> None:
        h = CoreHarness(make_settings(alarms={"battery_low_pct": 40, "battery_ok_pct": 60}))
        assert len(raised(h.telemetry(SLOW_WIRELESS, battery_pct=39))) == 1
        assert alarm_events(h.telemetry(SLOW_WIRELESS, battery_pct=59)) == []
        assert len(resolved(h.telemetry(SLOW_WIRELESS, battery_pct=60))) == 1

    def test_unchanged_battery_emits_no_state(self) -> None:
        h = CoreHarness()
        h.telemetry(SLOW_WIRELESS, battery_pct=80)
        assert h.telemetry(SLOW_WIRELESS, battery_pct=80) == []
        assert [s.battery_pct for s in crib_states(h.telemetry(SLOW_WIRELESS, battery_pct=79))] == [79]


class TestWiredCribs:
    def test_wired_cribs_never_go_offline(self) -> None:
        h = CoreHarness()
        h.close_wired(FAST_WIRED)
        out = h.advance(10_000.0)
        out += h.advance(10_000.0)
        assert {a.crib_id for a in raised(out)} <= set(WIRELESS_CRIBS)
        for crib_id in WIRED_CRIBS:
            assert h.monitor.crib_state(crib_id).sensor_online is None
            assert h.monitor.sensor_health(crib_id).online is None

    def test_wired_state_reports_no_sensor_online(self) -> None:
        h = CoreHarness()
        out = h.close_wired(SLOW_WIRED)
        (state,) = crib_states(out, SLOW_WIRED)
        assert (state.latch, state.sensor_online, state.battery_pct) == (CLOSED, None, None)


# ------------------------------------------------------------------------------- judged at the edge


class TestObservedAt:
    """An event is judged by the monotonic time its adapter saw it (``observed_at``), not when it is handled."""

    def test_a_bounce_handled_late_is_still_a_bounce(self) -> None:
        h = CoreHarness()
        h.close_wired(FAST_WIRED)
        t0 = h.now()
        h.clock.advance(1.0)  # the readings waited in the queue for a second

        out = h.latch(FAST_WIRED, OPEN, observed_at=t0)
        out += h.latch(FAST_WIRED, CLOSED, observed_at=t0 + 0.002)
        out += h.latch(FAST_WIRED, OPEN, observed_at=t0 + 0.004)
        out += h.latch(FAST_WIRED, CLOSED, observed_at=t0 + 0.006)
        out += h.advance()

        assert out == []
        assert h.monitor.crib_state(FAST_WIRED).latch is CLOSED

    def test_an_open_handled_late_is_debounced_from_its_edge(self) -> None:
        h = CoreHarness()
        h.close_wired(FAST_WIRED)
        t0 = h.now()
        h.clock.advance(1.0)
        opening = h.latch(FAST_WIRED, OPEN, observed_at=t0)
        assert opening == []
        assert h.monitor.next_deadline() == t0 + DEBOUNCE_S  # already due
        (alarm,) = raised(h.advance())
        assert alarm.crib_id == FAST_WIRED

    def test_closed_before_the_grace_but_handled_after_it_raises_nothing(self) -> None:
        h = CoreHarness()
        h.latch(SLOW_WIRELESS, OPEN)
        t0 = h.now()
        h.clock.advance(12.0)  # the grace is over on the clock, but nobody called advance()

        out = h.latch(SLOW_WIRELESS, CLOSED, observed_at=t0 + 9.0)

        assert alarm_events(out) == []
        assert h.monitor.crib_state(SLOW_WIRELESS).latch is CLOSED
        assert alarm_events(h.advance()) == []

    def test_closed_after_the_grace_handled_late_raises_then_resolves(self) -> None:
        h = CoreHarness()
        h.latch(SLOW_WIRELESS, OPEN)
        t0 = h.now()
        h.clock.advance(12.0)

        out = h.latch(SLOW_WIRELESS, CLOSED, observed_at=t0 + 11.0)

        assert [(e.type, e.kind) for e in alarm_events(out)] == [
            (AlarmEventType.RAISED, AlarmKind.CRIB_OPEN),
            (AlarmEventType.RESOLVED, AlarmKind.CRIB_OPEN),
        ]
        assert_increasing_seq(out)
        assert h.monitor.active_alarms() == []

    def test_liveness_counts_from_the_edge(self) -> None:
        h = CoreHarness()
        h.clock.advance(10.0)
        h.telemetry(SLOW_WIRELESS, observed_at=h.start + 4.0)
        assert h.monitor.sensor_health(SLOW_WIRELESS).last_seen == h.start + 4.0
        out = h.advance_to(h.start + 4.0 + SILENCE_S)
        assert SLOW_WIRELESS in {a.crib_id for a in raised(out)}

    def test_an_edge_time_in_the_future_counts_as_now(self) -> None:
        h = CoreHarness()
        h.telemetry(SLOW_WIRELESS, observed_at=h.now() + 50.0)
        assert h.monitor.sensor_health(SLOW_WIRELESS).last_seen == h.now()

    def test_time_never_steps_back(self) -> None:
        h = CoreHarness()
        h.latch(SLOW_WIRELESS, OPEN)
        t0 = h.now()
        (alarm,) = raised(h.advance(12.0))  # raised at t0 + 12
        # A reading seen before the grace was over but handled after advance(): the alarm cannot be unraised.
        out = h.latch(SLOW_WIRELESS, CLOSED, observed_at=t0 + 9.0)
        assert [(e.type, e.alarm_id) for e in alarm_events(out)] == [(AlarmEventType.RESOLVED, alarm.alarm_id)]
        h.telemetry(SLOW_WIRELESS, observed_at=t0 + 1.0)
        assert h.monitor.sensor_health(SLOW_WIRELESS).last_seen == h.now()


# ------------------------------------------------------------------------------------------- queries


class TestQueries:
    def test_initial_crib_states(self) -> None:
        h = CoreHarness()
        states = h.monitor.crib_states()
        assert [s.crib_id for s in states] == [FAST_WIRELESS, FAST_WIRED, SLOW_WIRELESS, SLOW_WIRELESS_2, SLOW_WIRED]
        assert [s.room_id for s in states] == [FAST_ROOM, FAST_ROOM, SLOW_ROOM, SLOW_ROOM, SLOW_ROOM]
        assert all(s.site_id == SITE_ID for s in states)
        assert all((s.latch, s.sensor_online, s.battery_pct, s.alarms) == (None, None, None, ()) for s in states)
        assert all(s.at == h.clock.time() for s in states)
        assert h.monitor.active_alarms() == []
        assert h.monitor.site_id == SITE_ID

    def test_queries_reflect_what_happened(self) -> None:
        h = CoreHarness()
        h.telemetry(FAST_WIRELESS, battery_pct=10, rssi_dbm=-71, firmware="2.0.1", uptime_s=1234, interval_s=20)
        (battery,) = raised(h.log, AlarmKind.BATTERY_LOW)
        h.advance(1.0)
        crib_open = h.open_alarm(FAST_WIRELESS)
        h.ack(alarm_id=crib_open.alarm_id, by="anna")
        h.close_wired(SLOW_WIRED)

        state = h.monitor.crib_state(FAST_WIRELESS)
        assert (state.latch, state.sensor_online, state.battery_pct) == (OPEN, True, 10)
        assert [(a.alarm_id, a.kind, a.priority, a.acknowledged_by) for a in state.alarms] == [
            (battery.alarm_id, AlarmKind.BATTERY_LOW, Priority.LOW, None),
            (crib_open.alarm_id, AlarmKind.CRIB_OPEN, Priority.HIGH, "anna"),
        ]
        assert {a.alarm_id for a in h.monitor.active_alarms()} == {battery.alarm_id, crib_open.alarm_id}
        states = h.monitor.crib_states()
        by_id = {s.crib_id: s for s in states}
        assert replace(by_id[FAST_WIRELESS], seq=0) == replace(h.monitor.crib_state(FAST_WIRELESS), seq=0)
        assert_increasing_seq(states)  # each a new event: (gw_run, seq) orders everything published
        assert by_id[SLOW_WIRED].latch is CLOSED
        assert by_id[SLOW_WIRELESS].latch is None

        health = h.monitor.sensor_health(FAST_WIRELESS)
        assert (health.online, health.battery_pct, health.rssi_dbm, health.firmware) == (True, 10, -71, "2.0.1")
        assert (health.uptime_s, health.boot, health.interval_s) == (1234, 1, 20)
        assert health.last_seen == h.start + 1.0  # the live latch message
        assert h.monitor.sensor_health(SLOW_WIRELESS).online is None  # not heard yet

    def test_states_in_one_step_follow_the_alarm_events(self) -> None:
        h = CoreHarness()
        out = h.advance(SILENCE_S)
        kinds = [type(e) for e in out]
        assert kinds == sorted(kinds, key=lambda k: k is CribState)  # every AlarmEvent before every CribState
        assert_increasing_seq(out)

    def test_the_run_is_given_and_names_the_alarms_whatever_the_wall_clock(self) -> None:
        """The run is the store's boot counter: a Pi's clock that jumps back before NTP cannot repeat an id."""
        for start_wall in (1_764_000_123.456, 0.0):
            h = CoreHarness(clock=FakeClock(start_wall=start_wall), run=42)
            alarm = h.open_alarm(FAST_WIRELESS)
            assert (h.monitor.gw_run, alarm.run, alarm.alarm_id) == (42, 42, "42-1")


# ----------------------------------------------------------------------------------- random sequences


class _InvariantChecker:
    """Follows the outbound stream and checks it against itself and against the core's queries."""

    def __init__(self, h: CoreHarness) -> None:
        self.h = h
        self.last_seq = 0
        self.raised: set[str] = set()
        self.acked: set[str] = set()
        self.resolved: set[str] = set()
        self.active: dict[tuple[str, AlarmKind], str] = {}

    def check(self, out: list[AlarmEvent | CribState], *, caught_up: bool = True) -> None:
        """``caught_up``: the call was advance(), or handled an event observed now (not one that waited)."""
        for ev in out:
            assert ev.seq > self.last_seq, f"seq {ev.seq} after {self.last_seq}"
            self.last_seq = ev.seq
            if not isinstance(ev, AlarmEvent):
                continue
            key = (ev.crib_id, ev.kind)
            if ev.type is AlarmEventType.RAISED:
                assert ev.alarm_id not in self.raised, "alarm id reused"
                assert key not in self.active, f"second active {ev.kind} on {ev.crib_id}"
                self.raised.add(ev.alarm_id)
                self.active[key] = ev.alarm_id
            elif ev.type is AlarmEventType.ACKNOWLEDGED:
                assert ev.alarm_id in self.raised
                assert ev.alarm_id not in self.resolved
                assert ev.alarm_id not in self.acked, "acknowledged twice"
                assert self.active.get(key) == ev.alarm_id
                self.acked.add(ev.alarm_id)
            elif ev.type is AlarmEventType.REMINDED:  # acknowledged, crib still open: back, to acknowledge again
                assert ev.alarm_id in self.acked
                assert self.active.get(key) == ev.alarm_id
                self.acked.discard(ev.alarm_id)
            else:
                assert ev.alarm_id in self.raised
                assert ev.alarm_id not in self.resolved, "resolved twice"
                assert self.active.pop(key) == ev.alarm_id
                self.resolved.add(ev.alarm_id)
        monitor = self.h.monitor
        assert {a.alarm_id for a in monitor.active_alarms()} == set(self.active.values())
        for crib_id in SENSOR_OF:
            state = monitor.crib_state(crib_id)
            kinds = [a.kind for a in state.alarms]
            assert len(kinds) == len(set(kinds))
            assert {(crib_id, a.kind): a.alarm_id for a in state.alarms} == {
                k: v for k, v in self.active.items() if k[0] == crib_id
            }
            assert {a.alarm_id for a in state.alarms if a.acknowledged_by is not None} <= self.acked
            flapping = next(v.health.flapping for v in monitor.snapshot().cribs if v.state.crib_id == crib_id)
            if state.latch is not OPEN and not flapping:  # a flapping crib's alarm holds until it is quiet
                assert AlarmKind.CRIB_OPEN not in kinds, f"{crib_id} is {state.latch} with a crib_open alarm"
            if crib_id in WIRED_CRIBS:
                assert state.sensor_online is None
                assert AlarmKind.SENSOR_OFFLINE not in kinds
        if caught_up:  # nothing that has fallen due is left waiting
            deadline = monitor.next_deadline()
            assert deadline is None or deadline > self.h.now()


@pytest.mark.parametrize("seed", range(20))
def test_random_sequences_keep_the_invariants(seed: int) -> None:
    rng = random.Random(seed)
    h = CoreHarness(make_settings(alarms={"offline_grace_s": rng.choice([0, 5])}))
    checker = _InvariantChecker(h)
    boot = dict.fromkeys(SENSOR_OF, 1)
    seq = dict.fromkeys(SENSOR_OF, 0)
    tel_seq = dict.fromkeys(SENSOR_OF, 0)
    cribs = list(SENSOR_OF)
    wireless = list(WIRELESS_CRIBS)

    fresh: dict[str, bool] = {}  # a live "online" was the sensor's last word: a new sequence has begun
    sent: dict[tuple[str, int, int], LatchState] = {}  # what each latch key carried: replays repeat it exactly
    for _ in range(400):
        roll = rng.random()
        crib_id = rng.choice(cribs)
        ignored_before = sum(h.stats.ignored.values())
        deadline = h.monitor.next_deadline()
        quiet = deadline is None or deadline > h.now()  # no timer falls due in this call
        observed_at = None
        if roll < 0.58 and rng.random() < 0.2:  # a sensor message that waited in the queue: judged at its edge
            observed_at = h.now()
            h.clock.advance(rng.choice([0.001, 0.01, 0.5, 15.0]))
        if roll < 0.35:
            state = rng.choice([OPEN, CLOSED])
            mode = rng.choice(["next"] * 6 + ["duplicate", "older", "retained", "reboot"])
            if crib_id in WIRED_CRIBS and mode in ("retained", "reboot"):
                mode = "next"
            if mode in ("duplicate", "older") and fresh.get(crib_id):
                mode = "next"  # just after a live "online" the core starts a new sequence: nothing is older yet
            if mode in ("duplicate", "older") and seq[crib_id] >= 1:
                old = seq[crib_id] if mode == "duplicate" else rng.randrange(1, seq[crib_id] + 1)
                state = sent[crib_id, boot[crib_id], old]
                latch_before = h.monitor.crib_state(crib_id).latch
                out = h.latch(crib_id, state, boot=boot[crib_id], seq=old, observed_at=observed_at)
                if quiet and observed_at is None:  # a live replay proves the sensor alive, and nothing more
                    changed = [e for e in alarm_events(out) if e.kind is not AlarmKind.SENSOR_OFFLINE]
                    assert changed == [], "a replayed latch message changed something"
                    assert h.monitor.crib_state(crib_id).latch is latch_before
                assert sum(h.stats.ignored.values()) == ignored_before + 1
            else:
                if mode == "reboot":
                    boot[crib_id] += 1
                    seq[crib_id] = tel_seq[crib_id] = 0
                else:
                    seq[crib_id] += 1
                sent[crib_id, boot[crib_id], seq[crib_id]] = state
                out = h.latch(
                    crib_id,
                    state,
                    boot=boot[crib_id],
                    seq=seq[crib_id],
                    live=mode != "retained",
                    observed_at=observed_at,
                )
                fresh[crib_id] = False
        elif roll < 0.50:
            crib_id = rng.choice(wireless)
            tel_seq[crib_id] += 1
            out = h.telemetry(
                crib_id,
                battery_pct=rng.randrange(0, 101),
                interval_s=rng.choice([5, 30, 60]),
                boot=boot[crib_id],
                seq=tel_seq[crib_id],
                observed_at=observed_at,
            )
        elif roll < 0.58:
            crib_id = rng.choice(wireless)
            online = rng.random() < 0.5
            stale = not online and rng.random() < 0.2 and boot[crib_id] > 1  # a late last will of an older boot
            out = h.availability(crib_id, online=online, boot=boot[crib_id] - stale, observed_at=observed_at)
            if online:
                fresh[crib_id] = True
        elif roll < 0.68:
            pick = rng.random()
            if pick < 0.6 and checker.raised:
                out = h.ack(alarm_id=rng.choice(sorted(checker.raised)), by=rng.choice(["anna", "bert"]))
            elif pick < 0.9:
                out = h.ack(crib_id=crib_id)
            else:
                out = h.ack(alarm_id=f"bogus-{rng.randrange(9)}")
        else:
            size = rng.choice(["tiny", "debounce", "medium", "large", "deadline"])
            if size == "deadline" and deadline is not None and deadline > h.now():
                out = h.advance_to(deadline)
            else:
                seconds = {
                    "tiny": rng.uniform(0.0005, 0.01),
                    "debounce": rng.uniform(0.02, 0.05),
                    "medium": rng.uniform(1, 12),
                    "large": rng.uniform(20, 100),
                    "deadline": 1.0,
                }[size]
                out = h.advance(seconds)
        checker.check(out, caught_up=observed_at is None)

    assert checker.raised, "the sequence should have raised alarms at all"
    assert checker.resolved, "the sequence should have resolved alarms"


class TestWhatASecondReadingFound:
    """Cases a review found: each once let an alarm be missed or wrongly resolved."""

    def test_a_retained_online_never_resolves_an_offline_alarm(self) -> None:
        h = CoreHarness()
        h.availability(SLOW_WIRELESS, online=True)
        h.advance(SILENCE_S)
        assert AlarmKind.SENSOR_OFFLINE in {a.kind for a in h.monitor.crib_state(SLOW_WIRELESS).alarms}
        # The gateway reconnects; the broker replays the sensor's retained "online" of long ago.
        out = h.availability(SLOW_WIRELESS, online=True, live=False)
        assert [e for e in alarm_events(out) if e.crib_id == SLOW_WIRELESS] == []
        assert AlarmKind.SENSOR_OFFLINE in {a.kind for a in h.monitor.crib_state(SLOW_WIRELESS).alarms}

    def test_a_retained_online_names_a_sensor_not_heard_yet_without_calling_it_alive(self) -> None:
        h = CoreHarness()
        h.availability(SLOW_WIRELESS, online=True, live=False)
        assert h.monitor.crib_state(SLOW_WIRELESS).sensor_online is True
        assert SLOW_WIRELESS in {a.crib_id for a in raised(h.advance_to(h.start + SILENCE_S))}

    def test_a_sensor_that_starts_again_at_boot_1_is_heard(self) -> None:
        """A second simulator run, a swapped unit, a reset counter: after its "online", a new sequence."""
        h = CoreHarness()
        h.availability(FAST_WIRELESS, online=True, boot=7)
        h.latch(FAST_WIRELESS, CLOSED, boot=7, seq=40)
        h.availability(FAST_WIRELESS, online=True, boot=1)
        out = h.latch(FAST_WIRELESS, OPEN, boot=1, seq=0)
        assert [(a.crib_id, a.kind) for a in raised(out)] == [(FAST_WIRELESS, AlarmKind.CRIB_OPEN)]
        assert h.monitor.sensor_health(FAST_WIRELESS).boot == 1

    def test_mqtt_messages_for_a_wired_crib_are_rejected(self) -> None:
        h = CoreHarness()
        h.close_wired(FAST_WIRED)
        forged = LatchReading("gpio5", CLOSED, boot=10**9, seq=0, sensor_ts=1.0, source=Source.MQTT)
        assert h.handle(forged) == []
        assert h.stats.rejected["wired_sensor"] == 1
        # the real pin is still heard
        out = h.latch(FAST_WIRED, OPEN)
        out += h.advance(h.settings.alarms.debounce_gpio_ms / 1000.0)
        assert [(a.crib_id, a.kind) for a in raised(out)] == [(FAST_WIRED, AlarmKind.CRIB_OPEN)]

    def test_a_gpio_reading_for_a_wireless_crib_is_rejected(self) -> None:
        h = CoreHarness()
        stray = LatchReading("s-f1", OPEN, boot=1, seq=1, sensor_ts=None, source=Source.GPIO)
        assert h.handle(stray) == []
        assert h.stats.rejected["wired_sensor"] == 1


class TestRestore:
    """What earlier runs left open comes back from the store at start-up, before any adapter runs."""

    @staticmethod
    def open_alarm(
        crib_id: str,
        kind: AlarmKind = AlarmKind.CRIB_OPEN,
        *,
        alarm_id: str = "7-3",
        acked_by: str | None = None,
        raised_at: float = 1.0,
    ) -> OpenAlarmRecord:
        return OpenAlarmRecord(
            alarm_id=alarm_id,
            run=7,
            crib_id=crib_id,
            kind=kind,
            raised_at=raised_at,
            latch_opened_at=raised_at - 10 if kind is AlarmKind.CRIB_OPEN else None,
            acknowledged_by=acked_by,
            acknowledged_device=None if acked_by is None else "pager-1",
            acknowledged_at=None if acked_by is None else raised_at + 5,
        )

    def test_an_open_crib_keeps_its_alarm_id_and_acknowledgement(self) -> None:
        h = CoreHarness()
        assert h.monitor.restore([self.open_alarm(SLOW_WIRELESS, acked_by="anna")]).left == []
        (summary,) = h.monitor.crib_state(SLOW_WIRELESS).alarms
        assert (summary.alarm_id, summary.acknowledged_by, summary.acknowledged_at) == ("7-3", "anna", 6.0)
        assert h.monitor.crib_state(SLOW_WIRELESS).latch is OPEN
        # the retained latch (still open) raises nothing new, not even after the grace period
        out = h.latch(SLOW_WIRELESS, OPEN, live=False)
        out += h.advance(60.0)
        assert [e for e in raised(out) if e.crib_id == SLOW_WIRELESS and e.kind is AlarmKind.CRIB_OPEN] == []
        # an ack is "already acknowledged by anna"
        decision = h.monitor.decide(AckRequest(by="ben", device="pager-2", alarm_id="7-3"))
        assert (decision.outcome.reason, decision.outcome.acknowledged_by) == ("ack_again", "anna")
        # closing resolves it under the id the pagers know, in this run, with its whole history
        (ended,) = alarm_events(h.latch(SLOW_WIRELESS, CLOSED))
        assert (ended.type, ended.alarm_id, ended.resolution) == (AlarmEventType.RESOLVED, "7-3", "latch_closed")
        assert (ended.run, ended.raised_at, ended.latch_opened_at) == (h.monitor.gw_run, 1.0, -9.0)
        assert (ended.acknowledged_by, ended.acknowledged_at) == ("anna", 6.0)

    def test_a_queued_ack_finds_the_restored_alarm(self) -> None:
        h = CoreHarness()
        h.monitor.restore([self.open_alarm(FAST_WIRELESS)])
        decision = h.monitor.decide(AckRequest(by="anna", device="pager-1", alarm_id="7-3"))
        assert decision.outcome == Outcome(accepted=True, alarm_ids=("7-3",))
        (ack,) = acknowledged(decision.events)
        assert (ack.alarm_id, ack.by, ack.device, ack.acknowledged_by) == ("7-3", "anna", "pager-1", "anna")

    def test_an_open_wired_crib_with_grace_0_keeps_one_alarm(self) -> None:
        """Measured before the store: the pin read at start raised a second alarm under a new id."""
        h = CoreHarness()
        h.monitor.restore([self.open_alarm(FAST_WIRED)])
        out = h.latch(FAST_WIRED, OPEN)
        out += h.advance(h.settings.alarms.debounce_gpio_ms / 1000.0 + 30)
        assert raised(out) == []
        assert [a.alarm_id for a in h.monitor.crib_state(FAST_WIRED).alarms] == ["7-3"]
        (ack,) = acknowledged(h.ack(crib_id=FAST_WIRED))
        assert ack.alarm_id == "7-3"
        out = h.latch(FAST_WIRED, CLOSED) + h.advance(1.0)
        assert [(e.alarm_id, e.resolution) for e in resolved(out)] == [("7-3", "latch_closed")]

    def test_a_crib_that_was_closed_on_record_resolves_on_its_first_closed_reading(self) -> None:
        h = CoreHarness()
        h.monitor.restore([self.open_alarm(SLOW_WIRED)])
        out = h.close_wired(SLOW_WIRED)
        assert [(e.alarm_id, e.resolution) for e in resolved(out)] == [("7-3", "latch_closed")]

    def test_a_crib_open_within_its_grace_at_the_restart_alarms_when_the_grace_ends(self) -> None:
        h = CoreHarness()
        opened_at = h.clock.time() - 4.0  # the room's grace is 10 s: 6 s left
        h.monitor.restore([], [CribRecord(SLOW_WIRELESS, OPEN, sensor_online=True, battery_pct=80, at=opened_at)])
        assert raised(h.advance(5.9)) == []
        (alarm,) = raised(h.advance(0.2), AlarmKind.CRIB_OPEN)
        assert alarm.crib_id == SLOW_WIRELESS
        assert alarm.latch_opened_at == pytest.approx(opened_at)

    def test_a_wall_clock_that_stepped_back_gives_the_whole_grace_not_less(self) -> None:
        h = CoreHarness()
        later = h.clock.time() + 3600.0  # recorded "in the future": the Pi's clock was wrong before, or is now
        h.monitor.restore([], [CribRecord(SLOW_WIRELESS, OPEN, sensor_online=True, battery_pct=80, at=later)])
        assert raised(h.advance(9.9)) == []
        assert len(raised(h.advance(0.2), AlarmKind.CRIB_OPEN)) == 1

    def test_sensor_offline_and_battery_come_back(self) -> None:
        h = CoreHarness()
        offline = self.open_alarm(SLOW_WIRELESS_2, AlarmKind.SENSOR_OFFLINE, alarm_id="7-4")
        h.monitor.restore(
            [offline], [CribRecord(SLOW_WIRELESS_2, CLOSED, sensor_online=False, battery_pct=15, at=h.clock.time())]
        )
        state = h.monitor.crib_state(SLOW_WIRELESS_2)
        assert (state.sensor_online, state.battery_pct, [a.alarm_id for a in state.alarms]) == (False, 15, ["7-4"])
        out = h.availability(SLOW_WIRELESS_2, online=True)
        assert [(e.alarm_id, e.resolution) for e in resolved(out)] == [("7-4", "sensor_back")]

    def test_alarms_of_removed_cribs_and_second_alarms_of_a_kind_are_handed_back(self) -> None:
        h = CoreHarness()
        ghost = self.open_alarm("gone", alarm_id="7-1")
        first = self.open_alarm(SLOW_WIRELESS, alarm_id="7-2", raised_at=1.0)
        second = self.open_alarm(SLOW_WIRELESS, alarm_id="7-5", raised_at=2.0)
        assert h.monitor.restore([second, ghost, first]).left == [ghost, second]
        assert [a.alarm_id for a in h.monitor.active_alarms()] == ["7-2"]

    def test_new_alarms_are_numbered_in_this_run(self) -> None:
        h = CoreHarness(run=8)
        h.monitor.restore([self.open_alarm(SLOW_WIRELESS)])
        alarm = h.open_alarm(FAST_WIRELESS)
        assert (alarm.alarm_id, alarm.run) == ("8-1", 8)


class TestOutcome:
    """``decide`` says what became of each inbound event; an ack's outcome is the answer its device gets."""

    def test_an_ack_is_accepted_with_the_alarms_it_took(self) -> None:
        h = CoreHarness()
        alarm = h.open_alarm(FAST_WIRELESS)
        decision = h.monitor.decide(AckRequest(by="anna", device="pager-1", crib_id=FAST_WIRELESS))
        assert decision.outcome == Outcome(accepted=True, alarm_ids=(alarm.alarm_id,))

    def test_refusals_carry_their_reason(self) -> None:
        h = CoreHarness()
        alarm = h.open_alarm(FAST_WIRELESS)
        h.ack(alarm_id=alarm.alarm_id, by="anna")
        again = h.monitor.decide(AckRequest(by="ben", device="pager-2", alarm_id=alarm.alarm_id)).outcome
        assert again == Outcome(accepted=False, reason="ack_again", alarm_ids=(alarm.alarm_id,), acknowledged_by="anna")
        unknown = h.monitor.decide(AckRequest(by="ben", device="pager-2", alarm_id="1-999")).outcome
        assert (unknown.accepted, unknown.reason) == (False, "ack_unknown_alarm")
        nothing = h.monitor.decide(AckRequest(by="ben", device="pager-2", crib_id=SLOW_WIRELESS)).outcome
        assert nothing.reason == "ack_nothing_open"
        no_crib = h.monitor.decide(AckRequest(by="ben", device="pager-2", crib_id="nope")).outcome
        assert no_crib.reason == "ack_unknown_crib"
        stranger = LatchReading("s-x", OPEN, boot=1, seq=1, sensor_ts=1.0, source=Source.MQTT)
        assert h.monitor.decide(stranger).outcome.reason == "unknown_sensor"

    def test_latch_readings(self) -> None:
        h = CoreHarness()
        assert h.monitor.decide(LatchReading("s-s1", OPEN, 1, 5, 1.0, Source.MQTT)).outcome.accepted
        assert h.monitor.decide(LatchReading("s-s1", OPEN, 1, 5, 1.0, Source.MQTT)).outcome.reason == "duplicate"
        far = LatchReading("s-s1", CLOSED, 1, 5 + 10**6, 1.0, Source.MQTT)
        assert h.monitor.decide(far).outcome.reason == "refused_sequence"


class TestSnapshot:
    def test_a_snapshot_has_no_side_effects_and_wall_clock_times(self) -> None:
        h = CoreHarness()
        h.telemetry(SLOW_WIRELESS, battery_pct=55)
        seen_wall = h.clock.time()
        alarm = h.open_alarm(FAST_WIRELESS)
        h.advance(5.0)
        before = h.monitor.crib_state(FAST_WIRELESS).seq
        first, second = h.monitor.snapshot(), h.monitor.snapshot()
        assert first == second
        assert h.monitor.crib_state(FAST_WIRELESS).seq == before
        views = {view.state.crib_id: view for view in first.cribs}
        assert set(views) == set(SENSOR_OF)
        assert [a.alarm_id for a in first.open_alarms] == [alarm.alarm_id]
        assert views[FAST_WIRELESS].latch_opened_at == pytest.approx(alarm.raised_at)
        slow = views[SLOW_WIRELESS].health
        assert (slow.battery_pct, slow.online) == (55, True)
        assert slow.last_seen == pytest.approx(seen_wall)
        assert views[FAST_WIRED].wired
        assert views[FAST_WIRED].health.online is None
        assert (first.run, first.at) == (h.monitor.gw_run, h.clock.time())


class TestRestoreKeepsTheOpeningTime:
    """Found by a review: the grace went on from the crib's last recorded state (a battery change, an ack), not from
    the opening; a gateway restarting every few seconds never raised."""

    def test_a_state_change_after_the_opening_does_not_move_the_grace(self) -> None:
        h = CoreHarness()
        h.latch(SLOW_WIRELESS, OPEN)
        opened = h.clock.time()
        h.advance(8.0)
        out = h.telemetry(SLOW_WIRELESS, battery_pct=89)  # a new crib state, 8 s after the opening
        (state,) = crib_states(out, SLOW_WIRELESS)
        assert state.latch_opened_at == pytest.approx(opened)
        h.advance(1.0)
        record = CribRecord(
            SLOW_WIRELESS, OPEN, sensor_online=True, battery_pct=89, at=state.at, latch_opened_at=state.latch_opened_at
        )
        again = CoreHarness(clock=h.clock, run=2)  # restarted 9 s after the opening
        again.monitor.restore([], [record])
        assert raised(again.advance(0.9)) == []
        (alarm,) = raised(again.advance(0.2), AlarmKind.CRIB_OPEN)
        assert alarm.latch_opened_at == pytest.approx(opened)

    def test_restarts_in_a_loop_cannot_keep_a_crib_from_alarming(self) -> None:
        clock = FakeClock()
        h = CoreHarness(clock=clock)
        h.latch(SLOW_WIRELESS, OPEN)
        record = h.monitor.snapshot()
        for run in range(2, 9):  # a restart every 2 s, each from what the last one recorded
            (view,) = [v for v in record.cribs if v.state.crib_id == SLOW_WIRELESS]
            state = view.state
            nxt = CoreHarness(clock=clock, run=run)
            record_of_last_run = CribRecord(
                SLOW_WIRELESS,
                OPEN,
                sensor_online=True,
                battery_pct=None,
                at=clock.time(),
                latch_opened_at=state.latch_opened_at,
            )
            nxt.monitor.restore([], [record_of_last_run])
            out = nxt.advance(2.0)
            if raised(out, AlarmKind.CRIB_OPEN):
                assert run == 6  # runs 2 to 6, 2 s each: the 10 s grace ends as in one run
                return
            record = nxt.monitor.snapshot()
        raise AssertionError("the crib never alarmed")


class TestRestoreEndsWhatItCannotTakeBack:
    """Open alarms of the store that this run cannot hold are ended with a ``resolved`` event, so pagers and the
    record see them end (found by a review: they were ended in the store only, or never)."""

    @staticmethod
    def record(crib_id: str, kind: AlarmKind, alarm_id: str, **kw: object) -> OpenAlarmRecord:
        return OpenAlarmRecord(
            alarm_id=alarm_id,
            run=4,
            crib_id=crib_id,
            kind=kind,
            raised_at=kw.pop("raised_at", 1.0),  # type: ignore[arg-type]
            room_id="old-room",
            room_label="Old room",
            crib_label="Old crib",
            **kw,  # type: ignore[arg-type]
        )

    def test_an_alarm_of_a_crib_that_left_the_site_file_is_resolved_under_its_old_labels(self) -> None:
        h = CoreHarness()
        restored = h.monitor.restore([self.record("gone", AlarmKind.CRIB_OPEN, "4-1", acknowledged_by="anna")])
        (ended,) = alarm_events(restored.events)
        assert (ended.type, ended.alarm_id, ended.resolution) == (AlarmEventType.RESOLVED, "4-1", "crib_removed")
        assert (ended.room_id, ended.room_label, ended.crib_label) == ("old-room", "Old room", "Old crib")
        assert (ended.acknowledged_by, ended.run) == ("anna", h.monitor.gw_run)
        assert [a.alarm_id for a in restored.left] == ["4-1"]

    def test_a_sensor_alarm_of_a_crib_that_is_wired_now_is_resolved(self) -> None:
        """A wired crib is never offline and has no battery: such an alarm could never end."""
        h = CoreHarness()
        restored = h.monitor.restore([self.record(SLOW_WIRED, AlarmKind.SENSOR_OFFLINE, "4-2")])
        (ended,) = alarm_events(restored.events)
        assert (ended.alarm_id, ended.resolution, ended.crib_label) == ("4-2", "sensor_changed", "Bedje W1")
        assert h.monitor.active_alarms() == []

    def test_of_two_open_alarms_of_one_kind_the_acknowledged_one_stays(self) -> None:
        h = CoreHarness()
        older = self.record(SLOW_WIRELESS, AlarmKind.CRIB_OPEN, "4-3", raised_at=1.0)
        acked = self.record(SLOW_WIRELESS, AlarmKind.CRIB_OPEN, "4-4", raised_at=2.0, acknowledged_by="ben")
        restored = h.monitor.restore([older, acked])
        assert [(e.alarm_id, e.resolution) for e in alarm_events(restored.events)] == [("4-3", "superseded")]
        assert [a.alarm_id for a in h.monitor.active_alarms()] == ["4-4"]

    def test_a_run_the_store_could_not_count_names_its_alarms_apart(self) -> None:
        h = CoreHarness()
        monitor = CribMonitor(h.settings, h.clock, run=8, alarm_prefix="8x1a2b3c")
        out = monitor.handle(LatchReading("s-f1", OPEN, boot=1, seq=1, sensor_ts=1.0, source=Source.MQTT))
        (alarm,) = raised(out)
        assert (alarm.alarm_id, alarm.run) == ("8x1a2b3c-1", 8)
