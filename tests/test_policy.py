"""The alert policy and the core behaviours of issue 7, on a FakeClock: escalation steps, repeats, reminders after
an ack, the ack race, maintenance, flapping, test alarms, shifts."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from alerts.notices import NoticeKind
from alerts.policy import AlertPolicy, Roster, StepReached, on_shift
from gateway.domain.events import AckRequest, AlarmEvent, OutboundEvent
from gateway.domain.vocab import AlarmEventType, AlarmKind, Priority, Resolution
from gateway.settings import ConfigError, ShiftConfig, settings_from_mapping
from tests.helpers import CLOSED, FAST_WIRELESS, OPEN, CoreHarness, alarm_events, site_mapping

GROUPS: list[dict[str, Any]] = [
    {
        "id": "fast-room",
        "kind": "room",
        "rooms": ["fast"],
        "members": [{"id": "pager-f1", "channels": [{"channel": "mqtt", "address": "pager-f1"}]}],
    },
    {
        "id": "floor",
        "kind": "site",
        "members": [{"id": "pager-floor", "channels": [{"channel": "mqtt", "address": "pager-floor"}]}],
    },
    {
        "id": "office",
        "kind": "managers",
        "members": [
            {
                "id": "mgr-1",
                "channels": [{"channel": "apprise", "address": "ntfy://example/mgr"}],
            }
        ],
    },
]


class Rig:
    """The core and the policy on one FakeClock, wired as the gateway wires them (policy after the channels)."""

    def __init__(self, **alerting: Any) -> None:
        data = site_mapping(alerting={"groups": GROUPS, **alerting})
        self.h = CoreHarness(settings_from_mapping(data, env={}))
        self.policy = AlertPolicy(self.h.settings.alerting, self.h.clock)
        self.steps: list[StepReached] = []

    def take(self, out: list[OutboundEvent]) -> list[OutboundEvent]:
        for reached in self.policy.take(out):
            self.steps.append(reached)
            if reached.notice.kind is not NoticeKind.RESOLVED:
                self.h.monitor.escalate(reached.notice.alarm.alarm_id, reached.notice.step)
        return out

    def run(self, seconds: float) -> list[OutboundEvent]:
        """Move time in small steps, firing the core's and the policy's timers as the gateway's timer loop does."""
        out: list[OutboundEvent] = []
        end = self.h.now() + seconds
        while True:
            due = [d for d in (self.h.monitor.next_deadline(), self.policy.next_deadline()) if d is not None]
            nxt = min(due) if due else None
            if nxt is None or nxt > end:
                out += self.take(self.h.advance(end - self.h.now()))
                return out
            out += self.take(self.h.advance(max(0.0, nxt - self.h.now())))
            fired = self.policy.advance()
            self.steps.extend(fired)
            for reached in fired:
                self.h.monitor.escalate(reached.notice.alarm.alarm_id, reached.notice.step)

    def kinds(self) -> list[tuple[str, int, tuple[str, ...]]]:
        """The notices of crib_open alarms (the default site's silent sensors raise sensor_offline meanwhile)."""
        return [
            (s.notice.kind.value, s.notice.step, s.groups)
            for s in self.steps
            if s.notice.alarm.kind is AlarmKind.CRIB_OPEN
        ]


def test_default_crib_open_chain_room_then_site_and_siren_then_managers_then_repeats() -> None:
    rig = Rig()
    rig.take(rig.h.latch(FAST_WIRELESS, OPEN))
    assert rig.kinds() == [("alarm", 0, ("fast-room",))]
    rig.run(29.9)
    assert len(rig.steps) == 1  # nothing before the 30 s
    rig.run(0.2)
    assert rig.kinds()[1] == ("escalation", 1, ("floor", "siren"))
    assert rig.steps[1].notice.recipients[-1].channel == "siren"
    rig.run(30)
    assert rig.kinds()[2] == ("escalation", 2, ("office",))
    rig.run(30)
    assert rig.kinds()[3] == ("repeat", 1, ("floor", "siren"))
    rig.run(30)
    assert rig.kinds()[4] == ("repeat", 2, ("office",))
    alarm_id = rig.steps[0].notice.alarm.alarm_id
    assert rig.h.monitor.alarm(alarm_id).escalation_level == 2  # type: ignore[union-attr]
    ours = [s.notice.notice_id for s in rig.steps if s.notice.alarm.alarm_id == alarm_id]
    assert ours == [f"{alarm_id}/{n}" for n in range(1, 6)]


def test_an_ack_stops_escalation_and_repeats_and_the_resolved_notice_goes_to_everyone_told() -> None:
    rig = Rig()
    rig.take(rig.h.latch(FAST_WIRELESS, OPEN))
    rig.run(31)  # room, then site + siren
    rig.take(rig.h.ack(crib_id=FAST_WIRELESS, by="staff-7", device="pager-f1"))
    rig.run(200)
    # The ack stops the chain; everyone told (not the siren: the ack silences it) hears who has it.
    assert rig.kinds() == [
        ("alarm", 0, ("fast-room",)),
        ("escalation", 1, ("floor", "siren")),
        ("acknowledged", 1, ("fast-room", "floor")),
    ]
    told = next(s.notice for s in rig.steps if s.notice.kind is NoticeKind.ACKNOWLEDGED)
    assert (told.alarm.acknowledged_by, told.alarm.device) == ("staff-7", "pager-f1")
    assert {r.member for r in told.recipients} == {"pager-f1", "pager-floor"}
    rig.take(rig.h.latch(FAST_WIRELESS, CLOSED))
    resolved = next(s.notice for s in reversed(rig.steps) if s.notice.alarm.kind is AlarmKind.CRIB_OPEN)
    assert resolved.kind is NoticeKind.RESOLVED
    assert {r.member for r in resolved.recipients} == {"pager-f1", "pager-floor", "gateway"}


def test_a_crib_still_open_after_the_ack_comes_back_as_a_reminder_then_escalates_again() -> None:
    rig = Rig(reminder_after_s=60)
    rig.take(rig.h.latch(FAST_WIRELESS, OPEN))
    rig.take(rig.h.ack(crib_id=FAST_WIRELESS, by="staff-7", device="pager-f1"))
    out = rig.run(59)
    assert alarm_events(out, AlarmEventType.REMINDED) == []
    out = rig.run(1.5)
    (reminded,) = alarm_events(out, AlarmEventType.REMINDED)
    assert (reminded.by, reminded.acknowledged_by) == ("staff-7", None)
    assert rig.h.monitor.alarm(reminded.alarm_id).acknowledged_by is None  # type: ignore[union-attr]
    assert rig.kinds()[-1] == ("reminder", 0, ("fast-room",))
    rig.run(30)
    assert rig.kinds()[-1] == ("escalation", 1, ("floor", "siren"))
    # acknowledged again: stops again, and a second reminder comes reminder_after_s later
    rig.take(rig.h.ack(crib_id=FAST_WIRELESS, by="staff-8", device="pager-floor"))
    out = rig.run(61)
    assert len(alarm_events(out, AlarmEventType.REMINDED)) == 1


def test_the_ack_race_one_wins_and_the_other_is_told_who_has_it() -> None:
    h = CoreHarness()
    alarm = h.open_alarm(FAST_WIRELESS)
    first = h.monitor.decide(_ack(alarm.alarm_id, "staff-1", "pager-1"))
    second = h.monitor.decide(_ack(alarm.alarm_id, "staff-2", "pager-2"))
    assert first.outcome.accepted
    assert (second.outcome.accepted, second.outcome.reason) == (False, "ack_again")
    assert second.outcome.acknowledged_by == "staff-1"


def _ack(alarm_id: str, by: str, device: str) -> AckRequest:
    return AckRequest(by=by, device=device, alarm_id=alarm_id)


def test_the_gateway_button_acknowledges_every_open_alarm() -> None:
    h = CoreHarness()
    h.open_alarm(FAST_WIRELESS)
    decision = h.monitor.decide(AckRequest(by="gateway", device="gateway-button", every=True))
    assert decision.outcome.accepted
    assert h.monitor.active_alarms()[0].acknowledged_by == "gateway"


def test_maintenance_records_without_sending_ends_on_time_and_a_crib_still_open_alarms_at_once() -> None:
    rig = Rig()
    h = rig.h
    now = h.clock.time()
    decision = h.monitor.set_maintenance(FAST_WIRELESS, reason="new sensor", until=now + 600, by="tech-1")
    assert decision.outcome.accepted
    assert h.monitor.crib_state(FAST_WIRELESS).maintenance is not None
    out = rig.take(h.latch(FAST_WIRELESS, OPEN))
    (raised,) = alarm_events(out, AlarmEventType.RAISED)
    assert raised.maintenance
    assert rig.steps == []  # the policy skipped it
    assert rig.policy.skipped["maintenance"] == 1
    out = rig.run(601)
    ended = alarm_events(out, AlarmEventType.RESOLVED, AlarmKind.CRIB_OPEN)
    assert [e.resolution for e in ended] == [Resolution.MAINTENANCE_ENDED]
    (again,) = alarm_events(out, AlarmEventType.RAISED, AlarmKind.CRIB_OPEN)
    assert (again.kind, again.maintenance) == (AlarmKind.CRIB_OPEN, False)
    assert h.monitor.crib_state(FAST_WIRELESS).maintenance is None
    assert rig.kinds()[0] == ("alarm", 0, ("fast-room",))
    changes = h.monitor.take_maintenance_changes()
    assert [(c.why, c.record is None) for c in changes] == [("started", False), ("expired", True)]


def test_maintenance_is_never_open_ended_nor_longer_than_the_maximum() -> None:
    h = CoreHarness()
    now = h.clock.time()
    too_long = h.monitor.set_maintenance("s-f1", reason="x", until=now + 9 * 3600, by="tech-1")
    past = h.monitor.set_maintenance("s-f1", reason="x", until=now - 1, by="tech-1")
    assert (too_long.outcome.reason, past.outcome.reason) == ("maintenance_too_long", "maintenance_past")
    assert h.monitor.end_maintenance(FAST_WIRELESS, by="t").outcome.reason == "not_in_maintenance"


def test_taking_a_crib_into_maintenance_ends_its_open_alarms() -> None:
    h = CoreHarness()
    h.open_alarm(FAST_WIRELESS)
    out = h.monitor.set_maintenance(FAST_WIRELESS, reason="x", until=h.clock.time() + 60, by="t").events
    ended = alarm_events(out, AlarmEventType.RESOLVED)
    assert [e.resolution for e in ended] == [Resolution.MAINTENANCE]
    (again,) = alarm_events(out, AlarmEventType.RAISED)
    assert again.maintenance  # still open: recorded, not sent
    out = h.monitor.end_maintenance(FAST_WIRELESS, by="t").events
    assert [e.maintenance for e in alarm_events(out, AlarmEventType.RAISED)] == [False]


def test_a_flapping_latch_becomes_one_incident_with_a_count() -> None:
    h = CoreHarness()
    out: list[OutboundEvent] = []
    for _ in range(20):
        out += h.latch(FAST_WIRELESS, OPEN)
        h.advance(0.5)
        out += h.latch(FAST_WIRELESS, CLOSED)
        h.advance(0.5)
    raised = alarm_events(out, AlarmEventType.RAISED)
    # The first changes (the first reading, from unknown, is no change), before the flapping is seen; then one holds.
    assert len(raised) == 4
    view = next(v for v in h.monitor.snapshot().cribs if v.state.crib_id == FAST_WIRELESS)
    assert view.health.flapping
    assert view.health.flaps == 1
    out = h.advance(61)  # quiet a whole window, closed: the one incident ends with its count
    (ended,) = alarm_events(out, AlarmEventType.RESOLVED)
    assert ended.flaps >= 30
    after = next(v for v in h.monitor.snapshot().cribs if v.state.crib_id == FAST_WIRELESS).health
    assert (after.flapping, after.quick_resolves) == (False, 3)  # the three alarms before it: nuisance


def test_a_test_alarm_runs_the_chain_marked_test_and_ends_on_ack() -> None:
    rig = Rig()
    decision = rig.h.monitor.test_alarm(FAST_WIRELESS, by="tech-1")
    assert decision.outcome.accepted
    rig.take(decision.events)
    assert rig.steps[0].notice.test
    assert rig.h.monitor.test_alarm(FAST_WIRELESS, by="tech-1").outcome.reason == "test_running"
    rig.run(31)
    assert [k for k, _, _ in rig.kinds()] == ["alarm", "escalation"]
    out = rig.take(rig.h.ack(crib_id=FAST_WIRELESS, by="staff-1", device="pager-f1"))
    ended = alarm_events(out, AlarmEventType.RESOLVED)
    assert [(e.resolution, e.test) for e in ended] == [(Resolution.TEST_ENDED, True)]
    assert rig.steps[-1].notice.kind is NoticeKind.RESOLVED
    assert rig.steps[-1].notice.test


def test_a_test_alarm_nobody_takes_ends_by_itself() -> None:
    h = CoreHarness()
    h.monitor.test_alarm(FAST_WIRELESS, by="tech-1")
    out = h.advance(121)
    assert [e.resolution for e in alarm_events(out, AlarmEventType.RESOLVED)] == [Resolution.TEST_ENDED]


AMS = ZoneInfo("Europe/Amsterdam")


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        (datetime(2026, 11, 23, 8, 0, tzinfo=AMS), True),  # a Monday morning
        (datetime(2026, 11, 23, 13, 0, tzinfo=AMS), False),
        (datetime(2026, 11, 28, 8, 0, tzinfo=AMS), False),  # a Saturday
    ],
)
def test_day_shifts(when: datetime, expected: bool) -> None:
    shift = ShiftConfig(days=("mon", "tue", "wed", "thu", "fri"), start="07:00", end="13:00")
    assert on_shift([shift], when) is expected


def test_a_night_shift_runs_past_midnight() -> None:
    shift = ShiftConfig(days=("fri",), start="22:00", end="06:00")
    assert on_shift([shift], datetime(2026, 11, 27, 23, 0, tzinfo=AMS))
    assert on_shift([shift], datetime(2026, 11, 28, 5, 0, tzinfo=AMS))  # Saturday morning, Friday's shift
    assert not on_shift([shift], datetime(2026, 11, 28, 23, 0, tzinfo=AMS))


def test_a_group_off_duty_falls_back_to_the_site_group_never_to_silence() -> None:
    groups = [dict(GROUPS[0], shifts=[{"days": ["sun"], "start": "00:00", "end": "00:01"}]), *GROUPS[1:]]
    data = site_mapping(alerting={"groups": groups})
    h = CoreHarness(settings_from_mapping(data, env={}))
    policy = AlertPolicy(h.settings.alerting, h.clock)
    (first,) = policy.take(h.latch(FAST_WIRELESS, OPEN))
    assert (first.groups, first.how) == (("floor",), "fallback_site")


def test_the_chain_never_ends_in_silence_and_groups_must_exist() -> None:
    base = {"groups": GROUPS}
    with pytest.raises(ConfigError, match="repeat_every_s"):
        settings_from_mapping(
            site_mapping(alerting={**base, "policies": [{"priority": "high", "steps": [{"notify": ["room"]}]}]}), env={}
        )
    with pytest.raises(ConfigError, match="notifies nobody"):
        settings_from_mapping(
            site_mapping(alerting={**base, "policies": [{"priority": "high", "steps": [{}], "repeat_every_s": 30}]}),
            env={},
        )
    with pytest.raises(ConfigError, match="no group 'nurses'"):
        settings_from_mapping(
            site_mapping(
                alerting={
                    **base,
                    "policies": [{"priority": "low", "steps": [{"notify": ["nurses"]}], "repeat_every_s": 9}],
                }
            ),
            env={},
        )
    with pytest.raises(ConfigError, match="no room 'attic'"):
        settings_from_mapping(site_mapping(alerting={"groups": [dict(GROUPS[0], rooms=["attic"])]}), env={})


def test_the_policy_does_not_chain_a_maintenance_alarm_event() -> None:
    rig = Rig()
    ev = AlarmEvent(
        seq=1,
        type=AlarmEventType.RAISED,
        alarm_id="9-1",
        kind=AlarmKind.CRIB_OPEN,
        priority=Priority.HIGH,
        site_id="s",
        room_id="fast",
        crib_id=FAST_WIRELESS,
        room_label="F",
        crib_label="B",
        at=0.0,
        raised_at=0.0,
        run=9,
        maintenance=True,
    )
    assert rig.policy.take([ev]) == []
    assert rig.policy.chain_step("9-1") is None


# ------------------------------------------------------------------------------------------ the gateway's button


async def test_the_gateway_button_press_acknowledges_through_the_event_loop() -> None:
    import asyncio

    from gpiozero.pins.mock import MockFactory

    from gateway.gpio.button import BUTTON_DEVICE, AckButton

    h = CoreHarness()
    h.open_alarm(FAST_WIRELESS)
    pins = MockFactory()
    got: list[AckRequest] = []

    def submit(event: object) -> None:
        assert isinstance(event, AckRequest)
        got.append(event)
        h.handle(event)

    button = AckButton(24, submit, asyncio.get_running_loop(), pin_factory=pins, monotonic=h.clock.monotonic)
    try:
        pins.pin(24).drive_low()  # pressed (to ground)
        await asyncio.sleep(0)  # call_soon_threadsafe: the loop's next turn
        await asyncio.sleep(0)
    finally:
        button.close()
    assert [(a.device, a.every) for a in got] == [(BUTTON_DEVICE, True)]
    assert all(a.acknowledged_by == "gateway" for a in h.monitor.active_alarms())


# ------------------------------------------------------------------------------------------ restart


def test_after_a_restart_an_unacknowledged_chain_repeats_its_step_and_an_acknowledged_one_waits() -> None:
    rig = Rig()
    rig.take(rig.h.latch(FAST_WIRELESS, OPEN))
    rig.run(31)  # step 1 reached
    open_id = rig.steps[0].notice.alarm.alarm_id
    states = [v.state for v in rig.h.monitor.snapshot().cribs]
    fresh = AlertPolicy(rig.h.settings.alerting, rig.h.clock)  # a new run, the core's state restored
    resumed = fresh.resume(states, {open_id: 2})
    ours = [r for r in resumed if r.notice.alarm.alarm_id == open_id]
    assert [(r.notice.kind, r.notice.step, r.notice.notice_id) for r in ours] == [
        (NoticeKind.REPEAT, 1, f"{open_id}/3")
    ]
    assert fresh.chain_step(open_id) == 1
    # acknowledged before the restart: no notice, but whoever was told still gets the resolved notice
    rig.take(rig.h.ack(crib_id=FAST_WIRELESS, by="staff-1", device="pager-f1"))
    states = [v.state for v in rig.h.monitor.snapshot().cribs]
    again = AlertPolicy(rig.h.settings.alerting, rig.h.clock)
    assert [r for r in again.resume(states) if r.notice.alarm.alarm_id == open_id] == []
    (resolved,) = [r for r in again.take(rig.h.latch(FAST_WIRELESS, CLOSED)) if r.notice.alarm.alarm_id == open_id]
    assert resolved.notice.kind is NoticeKind.RESOLVED
    assert {r.group for r in resolved.notice.recipients} == {"fast-room", "floor", "siren"}


def test_a_restart_keeps_a_maintenance_and_never_a_recorded_only_alarm_without_one() -> None:
    from gateway.domain.events import CribRecord, MaintenanceRecord, OpenAlarmRecord

    h = CoreHarness()
    now = h.clock.time()
    opened = CribRecord(FAST_WIRELESS, OPEN, sensor_online=True, battery_pct=90, at=now - 30, latch_opened_at=now - 30)
    recorded = OpenAlarmRecord("1-7", 1, FAST_WIRELESS, AlarmKind.CRIB_OPEN, now - 30, maintenance=True)
    h.monitor.restore([recorded], [opened])
    out = h.monitor.restore_maintenance([])  # its maintenance is gone from the store
    assert [e.resolution for e in alarm_events(out, AlarmEventType.RESOLVED)] == [Resolution.MAINTENANCE_ENDED]
    assert [e.maintenance for e in alarm_events(out, AlarmEventType.RAISED)] == [False]

    h2 = CoreHarness()
    h2.monitor.restore([recorded], [opened])
    kept = MaintenanceRecord(FAST_WIRELESS, "new sensor", now - 60, now + 60, "tech-1")
    assert alarm_events(h2.monitor.restore_maintenance([kept])) == []
    assert h2.monitor.crib_state(FAST_WIRELESS).maintenance is not None
    out = h2.advance(61)  # ends on time, after the restart too: the crib still open alarms at once
    assert [e.maintenance for e in alarm_events(out, AlarmEventType.RAISED, AlarmKind.CRIB_OPEN)] == [False]


def test_a_site_without_a_siren_channel_gets_the_siren_step_without_a_siren_recipient() -> None:
    for siren in (True, False):
        rig = Rig()
        rig.policy = AlertPolicy(rig.h.settings.alerting, rig.h.clock, siren=siren)
        rig.take(rig.h.latch(FAST_WIRELESS, OPEN))
        rig.run(30.1)
        assert rig.kinds()[1] == ("escalation", 1, ("floor", "siren") if siren else ("floor",))


# ----------------------------------------------------------------------------------- who acknowledged


def test_who_acknowledged_is_the_roster_s_member_of_the_device_and_a_payload_s_by_only_a_claim() -> None:
    groups = [
        {
            "id": "fast-room",
            "kind": "room",
            "rooms": ["fast"],
            "members": [
                {"id": "staff-07", "channels": [{"channel": "mqtt", "address": "pager-7"}]},  # staff-07's pager
                {"id": "staff-08", "channels": [{"channel": "mqtt", "address": "tablet-room"}]},
                {"id": "staff-09", "channels": [{"channel": "mqtt", "address": "tablet-room"}]},  # shared
            ],
        },
        {
            "id": "floor",
            "kind": "site",
            "members": [{"id": "pager-floor", "channels": [{"channel": "mqtt", "address": "pager-floor"}]}],
        },
    ]
    roster = Roster(settings_from_mapping(site_mapping(alerting={"groups": groups})).alerting)
    assert roster.identify("pager-7", None) == ("staff-07", None)
    assert roster.identify("pager-7", "pager-7") == ("staff-07", None)  # the device naming itself claims no one
    assert roster.identify("pager-7", "staff-07") == ("staff-07", None)
    assert roster.identify("pager-7", "staff-99") == ("staff-07", "staff-99")
    assert roster.identify("pager-floor", "staff-99") == ("pager-floor", "staff-99")  # a member that is a device
    assert roster.identify("tablet-room", "staff-08") == ("tablet-room", "staff-08")  # shared: no one's own
    assert roster.identify("pager-x", "staff-07") == ("pager-x", "staff-07")  # a device the roster does not know
    assert roster.identify("tablet-room", "staff-08", login="staff-08") == ("staff-08", None)  # the web login's
    assert roster.owner("tablet-room") is None
    assert roster.owner("pager-7") == "staff-07"


def test_a_sensor_whose_availability_flaps_raises_each_offline_and_counts_the_periods() -> None:
    """A sensor with a loose battery contact: offline, back, offline... Each offline is its own sensor_offline alarm
    (an unwatched crib; a real heartbeat always ends it: test_core_property), counted as offline periods for the
    technician; availability changes do not fold into one incident as a flapping latch does (docs/alerting.md)."""
    h = CoreHarness(settings_from_mapping(site_mapping(alarms={"offline_grace_s": 0})))
    h.latch(FAST_WIRELESS, CLOSED)
    out: list[OutboundEvent] = []
    for boot in range(2, 22):
        out += h.availability(FAST_WIRELESS, online=False, boot=boot - 1)
        h.advance(0.5)
        out += h.availability(FAST_WIRELESS, online=True, boot=boot)
        h.advance(0.5)
    raised = [e for e in alarm_events(out, AlarmEventType.RAISED) if e.kind is AlarmKind.SENSOR_OFFLINE]
    ended = [e for e in alarm_events(out, AlarmEventType.RESOLVED) if e.kind is AlarmKind.SENSOR_OFFLINE]
    assert (len(raised), len(ended)) == (20, 20)
    assert {e.resolution for e in ended} == {Resolution.SENSOR_BACK}
    view = next(v for v in h.monitor.snapshot().cribs if v.state.crib_id == FAST_WIRELESS)
    assert (view.health.online, view.health.offline_periods, view.health.flaps) == (True, 20, 0)
