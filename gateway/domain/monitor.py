"""The alarm core: pure, clock-injected, no I/O.

Per crib::

    closed --open--> open (grace running) --grace over--> alarm RAISED --ack--> ACKNOWLEDGED
       ^                                                     |                     |
       +----------------------- closed again: RESOLVED <-----+---------------------+

Besides the latch, a wireless sensor that goes silent (its last will, or no message for
``missed_heartbeats`` heartbeat intervals) raises ``sensor_offline``: a silent crib is not a safe crib.
A battery under ``battery_low_pct`` raises ``battery_low`` until it is back at ``battery_ok_pct``.

Contact bounce is filtered here (a reading must hold for the debounce time). Sequence numbers are judged by
:mod:`gateway.domain.sequence` so that no message can make the gateway deaf: duplicates are dropped, a reading
whose number cannot be trusted is still taken when it opens a crib (fail toward the alarm) and refused, as a
WARNING counted per sensor, when it would close one. Every live message proves its sensor alive, whatever its
number. Bad input is counted, never raised.

The core fails loud: if its own code raises while handling a crib, that crib gets a ``gateway_fault`` alarm
(high priority: the buzzer sounds), its timers are armed again and the error is logged CRITICAL and counted.

The core is driven by two calls: :meth:`CribMonitor.handle` for an inbound event and
:meth:`CribMonitor.advance` when :meth:`CribMonitor.next_deadline` has passed. Both read the time from
the injected clock and return the outbound events, in order.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from gateway.domain.clock import Clock
from gateway.domain.events import (
    ACCEPTED,
    AckRequest,
    AlarmEvent,
    AlarmSummary,
    AvailabilityChange,
    CribRecord,
    CribState,
    CribView,
    Decision,
    InboundEvent,
    LatchReading,
    MaintenanceChange,
    MaintenanceRecord,
    MaintenanceView,
    OpenAlarmRecord,
    OutboundEvent,
    Outcome,
    SensorHealthView,
    SiteSnapshot,
    TelemetryReading,
    Trigger,
)
from gateway.domain.sequence import SequenceTracker, Verdict
from gateway.domain.stats import IngestStats
from gateway.domain.timers import DeadlineHeap
from gateway.domain.vocab import PRIORITY_OF, AlarmEventType, AlarmKind, LatchState, Resolution, Source
from gateway.settings import CribConfig, RoomConfig, Settings

MIN_ANNOUNCED_INTERVAL_S = 1.0
"""The shortest heartbeat interval a sensor's own announcement can hold it to."""
FAULT_RETRY_S = 1.0
"""After a failing step, a crib's timers are tried again this much later at the earliest (no busy loop)."""


@dataclass(slots=True)
class _Step:
    """What one call into the core produces: events in order, and the cribs whose state changed."""

    now: float
    """Monotonic time this step happens at: the event's own time, or the clock's for timers."""
    out: list[OutboundEvent] = field(default_factory=list)
    dirty: dict[str, _Crib] = field(default_factory=dict)
    outcome: Outcome = ACCEPTED


@dataclass(slots=True)
class _Alarm:
    id: str
    kind: AlarmKind
    raised_at: float
    trigger: Trigger | None
    latch_opened_at: float | None = None
    acknowledged_by: str | None = None
    acknowledged_device: str | None = None
    acknowledged_at: float | None = None
    test: bool = False
    escalation_level: int = 0
    acknowledged_mono: float | None = None
    """Monotonic time of the acknowledgement (the reminder counts from it)."""
    raised_mono: float | None = None
    """Monotonic time it was raised (a test alarm ends test_alarm_s after it)."""
    maintenance: bool = False
    flaps: int = 0


@dataclass(slots=True)
class _Maintenance:
    reason: str
    since: float
    """Wall clock."""
    until: float
    """Wall clock (what people set and read)."""
    until_mono: float
    by: str


@dataclass(frozen=True, slots=True)
class _Where:
    room_id: str
    crib_id: str
    room_label: str
    crib_label: str


@dataclass(slots=True)
class _PendingLatch:
    state: LatchState
    since: float
    trigger: Trigger


@dataclass(frozen=True, slots=True)
class Restored:
    """What :meth:`CribMonitor.restore` gives back: events to deliver, and open alarms it could not take."""

    events: list[OutboundEvent]
    left: list[OpenAlarmRecord]


@dataclass(slots=True)
class SensorHealth:
    """What a technician wants to know about one sensor."""

    online: bool | None = None
    """None: not heard from yet (wireless) or wired (a wired switch cannot go offline)."""
    last_seen: float | None = None
    """Monotonic time of the last live message."""
    battery_pct: int | None = None
    rssi_dbm: int | None = None
    firmware: str | None = None
    uptime_s: int | None = None
    boot: int | None = None
    """The boot the sensor last announced or spoke in."""
    interval_s: float | None = None
    refused: int = 0
    """Readings that would have changed the crib but were refused for their sequence number."""
    resynced: int = 0
    """Readings taken although their sequence number was out of line."""
    internal_errors: int = 0
    """Times the gateway's own code failed on this crib."""
    flaps: int = 0
    """Times the latch started flapping."""
    offline_periods: int = 0
    """Times the sensor went offline."""
    quick_resolves: int = 0
    """Alarms that ended within quick_resolve_s of being raised."""


@dataclass(slots=True)
class _Crib:
    room: RoomConfig
    config: CribConfig
    debounce_s: float
    silent_since: float
    """Monotonic time the silence timer counts from: the last live message, or the gateway's start."""
    latch: LatchState | None = None
    pending: _PendingLatch | None = None
    open_since: float | None = None
    latch_opened_at: float | None = None
    """Wall-clock time the latch opened, while it is open."""
    open_trigger: Trigger | None = None
    offline_since: float | None = None
    latch_seq: SequenceTracker = field(default_factory=SequenceTracker)
    telemetry_seq: SequenceTracker = field(default_factory=SequenceTracker)
    healthy_since_fault: bool = True
    """False from a failing step until a step on this crib succeeds again."""
    health: SensorHealth = field(default_factory=SensorHealth)
    alarms: dict[AlarmKind, _Alarm] = field(default_factory=dict)
    test_alarm: _Alarm | None = None
    """A test alarm (a technician's), beside the real ones: it never stands in for one."""
    maintenance: _Maintenance | None = None
    transitions: deque[float] = field(default_factory=deque)
    """Monotonic times of the latest latch changes (within the flapping window)."""
    flapping: bool = False

    def open_alarms(self) -> list[_Alarm]:
        alarms = list(self.alarms.values())
        if self.test_alarm is not None:
            alarms.append(self.test_alarm)
        return alarms

    @property
    def wired(self) -> bool:
        return self.config.wired


class CribMonitor:
    """Decides, for every crib of one site, when to raise, acknowledge and resolve alarms."""

    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        stats: IngestStats | None = None,
        *,
        run: int = 1,
        alarm_prefix: str | None = None,
    ) -> None:
        self._settings = settings
        self._alarm_cfg = settings.alarms
        self._alerting = settings.alerting
        self.maintenance_changes: list[MaintenanceChange] = []
        """Maintenance started or ended since the caller last took them (:meth:`take_maintenance_changes`)."""
        self._clock = clock
        self.stats = stats if stats is not None else IngestStats()
        self.unpinned_faults = 0
        """Failures of the core that no alarm could be raised for (the composition root sounds the buzzer)."""
        self.gw_run = run
        """This run of the gateway: the store's boot counter (one more on every start). Alarm ids are
        ``<gw_run>-<n>``, so they are unique for the life of the site's store."""
        self.alarm_prefix = str(run) if alarm_prefix is None else alarm_prefix
        """What alarm ids of this run start with: the run, or (a run the store could not count) one with a random
        part, so ids stay unique whatever the store could do."""
        self._seq = 0
        self._alarm_count = 0
        now = clock.monotonic()
        self._last_step = now
        self._cribs: dict[str, _Crib] = {}
        self._by_sensor: dict[str, _Crib] = {}
        for room, crib_cfg in settings.cribs():
            debounce_ms = self._alarm_cfg.debounce_gpio_ms if crib_cfg.wired else self._alarm_cfg.debounce_mqtt_ms
            crib = _Crib(room=room, config=crib_cfg, debounce_s=debounce_ms / 1000.0, silent_since=now)
            self._cribs[crib_cfg.id] = crib
            self._by_sensor[crib_cfg.sensor_key] = crib
        self._alarms_by_id: dict[str, tuple[_Crib, _Alarm]] = {}
        self._timers: DeadlineHeap[str] = DeadlineHeap()
        """Each crib's earliest deadline, so a step costs O(log n), not O(n); bounded (see DeadlineHeap)."""
        for crib in self._cribs.values():
            self._reschedule(crib)

    # ------------------------------------------------------------------------------------- queries

    @property
    def site_id(self) -> str:
        return self._settings.site.id

    def crib_states(self) -> list[CribState]:
        """The current state of every crib, each as a new event (to publish again after a reconnect)."""
        at = self._clock.time()
        return [self._state_of(crib, at, seq=self._next_seq()) for crib in self._cribs.values()]

    def crib_state(self, crib_id: str) -> CribState:
        return self._state_of(self._cribs[crib_id], self._clock.time())

    def active_alarms(self) -> list[AlarmSummary]:
        return [_summary(alarm) for _, alarm in self._alarms_by_id.values()]

    def sensor_health(self, crib_id: str) -> SensorHealth:
        return self._cribs[crib_id].health

    def snapshot(self) -> SiteSnapshot:
        """Every crib's state, open alarms and sensor health, in wall-clock times: a copy, with no side effects
        (no event sequence number is used), for the web board and the technician console."""
        at = self._clock.time()
        views = []
        for crib in self._cribs.values():
            health = crib.health
            views.append(
                CribView(
                    state=self._state_of(crib, at),
                    sensor_key=crib.config.sensor_key,
                    wired=crib.wired,
                    latch_opened_at=crib.latch_opened_at,
                    health=SensorHealthView(
                        online=None if crib.wired else health.online,
                        last_seen=None if health.last_seen is None else self._wall(health.last_seen),
                        battery_pct=health.battery_pct,
                        rssi_dbm=health.rssi_dbm,
                        firmware=health.firmware,
                        uptime_s=health.uptime_s,
                        boot=health.boot,
                        interval_s=health.interval_s,
                        refused=health.refused,
                        resynced=health.resynced,
                        internal_errors=health.internal_errors,
                        flaps=health.flaps,
                        offline_periods=health.offline_periods,
                        quick_resolves=health.quick_resolves,
                        flapping=crib.flapping,
                    ),
                )
            )
        return SiteSnapshot(site_id=self.site_id, run=self.gw_run, at=at, cribs=tuple(views))

    def next_deadline(self) -> float | None:
        """The earliest monotonic time at which :meth:`advance` has something to do."""
        return self._timers.peek()

    @property
    def timer_entries(self) -> int:
        """Entries on the timer heap, stale ones included: bounded by twice the cribs plus a constant."""
        return len(self._timers)

    # ------------------------------------------------------------------------------------ commands

    def restore(self, alarms: Iterable[OpenAlarmRecord], cribs: Iterable[CribRecord] = ()) -> Restored:
        """Take back what the store knows from earlier runs: each crib's last state and the alarms left open.

        Called once at start-up, before any adapter runs (so a queued ack or last will finds its alarm, and a
        wired crib's pin, read next, meets its restored alarm instead of raising a second one). Alarm ids, raise
        times and acknowledgements carry over; an open crib is not given a fresh grace period.

        An open alarm that cannot be taken back is ended at once with a ``resolved`` event, so pagers and the
        record see it end: its crib is no longer in the site file (``crib_removed``), it is a sensor alarm of a crib
        that is wired now (``sensor_changed``), or the crib already has an open alarm of that kind (``superseded``;
        the store should never hold two: the acknowledged one, else the oldest, stays). Those alarms are also
        returned in ``left``. The events (those endings, and a fault alarm if the core failed on a crib) are for the
        caller to deliver once its channels are open.
        """
        left: list[OpenAlarmRecord] = []
        records = {record.crib_id: record for record in cribs}
        step = _Step(now=self._step_time(None))
        for crib_id, record in records.items():
            crib = self._cribs.get(crib_id)
            if crib is not None:
                self._guarded_restore(crib, step, functools.partial(self._restore_crib, crib, record, step))
        for alarm in sorted(alarms, key=lambda a: (a.acknowledged_by is None, a.raised_at)):
            crib = self._cribs.get(alarm.crib_id)
            why: Resolution | None = None
            if crib is None:
                why = Resolution.CRIB_REMOVED
            elif crib.wired and alarm.kind in (AlarmKind.SENSOR_OFFLINE, AlarmKind.BATTERY_LOW):
                why = Resolution.SENSOR_CHANGED
            elif (
                (alarm.kind in crib.alarms and not alarm.test)
                or (alarm.test and crib.test_alarm is not None)
                or alarm.alarm_id in self._alarms_by_id
            ):
                why = Resolution.SUPERSEDED
            if crib is None or why is not None:
                left.append(alarm)
                step.out.append(self._ended_at_start(alarm, crib, why or Resolution.CRIB_REMOVED))
                continue
            self._guarded_restore(crib, step, functools.partial(self._restore_alarm, crib, alarm, step))
        left.sort(key=lambda a: a.raised_at)
        return Restored(events=self._finish(step), left=left)

    def _ended_at_start(self, record: OpenAlarmRecord, crib: _Crib | None, why: Resolution) -> AlarmEvent:
        """The ``resolved`` event of an open alarm of the store that this run cannot take back."""
        if crib is not None:
            where = _Where(crib.room.id, crib.config.id, crib.room.label, crib.config.label)
        else:
            room = record.room_id or "unknown"
            where = _Where(room, record.crib_id, record.room_label or room, record.crib_label or record.crib_id)
        return self._alarm_event(where, _alarm_of(record), AlarmEventType.RESOLVED, self._clock.time(), resolution=why)

    def _guarded_restore(self, crib: _Crib, step: _Step, restore: Callable[[], None]) -> None:
        try:
            restore()
        except Exception as exc:  # noqa: BLE001 - any bug here must raise the alarm, not silence the crib
            self._fault(crib, step, "restoring its state from the store", exc)
            self._rearm(crib, step, faulted=True)
        else:
            self._rearm(crib, step, faulted=False)

    def _restore_crib(self, crib: _Crib, record: CribRecord, step: _Step) -> None:
        if record.latch is LatchState.OPEN:
            crib.latch = LatchState.OPEN
            # The grace goes on from when the latch opened (a wall clock that stepped back gives a whole grace; one
            # that stepped forward raises at once, the safe side). A record without that time (an open crib whose
            # opening was never written) counts from the record's own time, the latest it can have opened.
            opened = record.latch_opened_at if record.latch_opened_at is not None else record.at
            elapsed = max(0.0, self._clock.time() - opened)
            crib.open_since = step.now - elapsed
            crib.latch_opened_at = opened
        elif record.latch is LatchState.CLOSED:
            crib.latch = LatchState.CLOSED
        if not crib.wired and record.sensor_online is not None:
            crib.health.online = record.sensor_online
            if record.sensor_online is False:
                crib.offline_since = step.now
        crib.health.battery_pct = record.battery_pct

    def _restore_alarm(self, crib: _Crib, record: OpenAlarmRecord, step: _Step) -> None:
        alarm = _alarm_of(record)
        elapsed = max(0.0, self._clock.time() - record.raised_at)
        alarm.raised_mono = step.now - elapsed
        if record.acknowledged_at is not None:  # the reminder goes on from the acknowledgement
            alarm.acknowledged_mono = step.now - max(0.0, self._clock.time() - record.acknowledged_at)
        self._alarms_by_id[alarm.id] = (crib, alarm)
        if alarm.test:
            crib.test_alarm = alarm
            step.dirty[crib.config.id] = crib
            return
        crib.alarms[alarm.kind] = alarm
        if alarm.kind is AlarmKind.CRIB_OPEN and crib.latch is not LatchState.OPEN:
            # The alarm is the stronger record: the crib was open when it was raised and nothing closed it since.
            crib.latch = LatchState.OPEN
            crib.open_since = step.now
            crib.latch_opened_at = record.latch_opened_at
        if alarm.kind is AlarmKind.SENSOR_OFFLINE and not crib.wired:
            crib.health.online = False
            crib.offline_since = step.now
        if alarm.kind is AlarmKind.GATEWAY_FAULT:
            crib.healthy_since_fault = False  # it ends once acknowledged and a step on the crib succeeds
        step.dirty[crib.config.id] = crib

    def handle(self, event: InboundEvent) -> list[OutboundEvent]:
        """Take one inbound event; return what follows from it (:meth:`decide` without the outcome)."""
        return self.decide(event).events

    def decide(self, event: InboundEvent) -> Decision:
        """Take one inbound event; return its outcome (taken, or refused and why) and what follows from it.

        The event happens at its ``observed_at`` (taken at the edge, so a reading that waited in a queue
        is judged by when it happened: contact bounce stays bounce however late it is processed); timers
        that fell due before that fire first.
        """
        step = _Step(now=self._step_time(event.observed_at))
        self._fire_due(step)
        if isinstance(event, AckRequest):
            self._guarded_ack(event, step)
            return Decision(step.outcome, self._finish(step))
        crib = self._by_sensor.get(event.sensor_id)
        if crib is None:
            what = f"{_what(event)} from sensor {event.sensor_id!r}, which no crib uses"
            self._reject(step, "unknown_sensor", what)
            return Decision(step.outcome, self._finish(step))
        if crib.wired != (isinstance(event, LatchReading) and event.source is Source.GPIO):
            # A wired crib hears only its pin; a GPIO reading for a wireless crib is a wiring bug.
            self._reject(step, "wired_sensor", f"{_what(event)} for {event.sensor_id!r} from the wrong source")
            return Decision(step.outcome, self._finish(step))
        try:
            if isinstance(event, LatchReading):
                self._on_latch(crib, event, step)
            elif isinstance(event, TelemetryReading):
                self._on_telemetry(crib, event, step)
            else:
                self._on_availability(crib, event, step)
        except Exception as exc:  # noqa: BLE001 - any bug here must raise the alarm, not silence the crib
            self._fault(crib, step, f"handling {_what(event)} from {event.sensor_id!r}", exc)
            self._rearm(crib, step, faulted=True)
        else:
            self._rearm(crib, step, faulted=False)
        return Decision(step.outcome, self._finish(step))

    def _reject(self, step: _Step, reason: str, detail: str) -> None:
        """Refuse the step's event: counted as rejected (bad input) under ``reason``."""
        self.stats.reject(reason, detail)
        step.outcome = Outcome(accepted=False, reason=reason)

    def _ignore(self, step: _Step, reason: str, detail: str, **answer: Any) -> None:
        """Refuse the step's event: counted as ignored (harmless: a duplicate, an ack already given)."""
        self.stats.ignore(reason, detail)
        step.outcome = Outcome(accepted=False, reason=reason, **answer)

    def advance(self) -> list[OutboundEvent]:
        """Fire every timer that is due now: debounce, grace, missed heartbeats, offline grace."""
        step = _Step(now=self._step_time(None))
        self._fire_due(step)
        return self._finish(step)

    def _step_time(self, observed_at: float | None) -> float:
        now = self._clock.monotonic()
        at = now if observed_at is None else min(observed_at, now)
        at = max(at, self._last_step)  # never step back in time: sources interleave
        self._last_step = at
        return at

    # -------------------------------------------------------------------------------- fail loud

    def _fault(self, crib: _Crib, step: _Step, what: str, exc: Exception) -> None:
        """The core's own code failed on ``crib``: say so loudly and make sure staff look at the crib."""
        crib.health.internal_errors += 1
        crib.healthy_since_fault = False
        step.outcome = Outcome(accepted=False, reason="fault")
        self.stats.internal_error(f"the alarm core failed on crib {crib.config.id!r} {what}", exc)
        try:
            if AlarmKind.GATEWAY_FAULT not in crib.alarms:
                self._raise(crib, AlarmKind.GATEWAY_FAULT, None, step)
            else:
                step.dirty[crib.config.id] = crib
        except Exception as second:  # noqa: BLE001 - even the fault alarm failed: the gateway must still be heard
            self._unpinned(f"could not raise the fault alarm of crib {crib.config.id!r}", second)

    def _unpinned(self, detail: str, exc: Exception) -> None:
        """A failure no alarm could be raised for: counted in :attr:`unpinned_faults`, which the composition root
        watches to sound the buzzer (its fault mode) whatever the alarm channels know."""
        self.unpinned_faults += 1
        self.stats.internal_error(detail, exc)

    def _rearm(self, crib: _Crib, step: _Step, *, faulted: bool) -> None:
        """After every step on a crib: its timers on the heap again, whatever happened in the step.

        After a failure the next try is at least :data:`FAULT_RETRY_S` away, so a crib whose timer fails every
        time is retried once a second, not in a busy loop; a failure to compute its deadlines arms that retry.
        """
        if not faulted and not crib.healthy_since_fault:
            crib.healthy_since_fault = True
            self._clear_fault_if_done(crib, step)
        try:
            due = self._deadline_of(crib)
        except Exception as exc:  # noqa: BLE001 - any bug here must raise the alarm, not silence the crib
            self._fault(crib, step, "computing its timers", exc)
            due, faulted = step.now, True
        if faulted:
            due = step.now + FAULT_RETRY_S if due is None else max(due, step.now + FAULT_RETRY_S)
        self._timers.set(crib.config.id, due)

    def _clear_fault_if_done(self, crib: _Crib, step: _Step) -> None:
        """A fault alarm ends once staff have acknowledged it and the crib's steps succeed again."""
        fault = crib.alarms.get(AlarmKind.GATEWAY_FAULT)
        if fault is not None and fault.acknowledged_by is not None and crib.healthy_since_fault:
            self._resolve(crib, AlarmKind.GATEWAY_FAULT, step, Resolution.FAULT_CLEARED)

    # ------------------------------------------------------------------------------------- timers

    def _reschedule(self, crib: _Crib) -> None:
        self._timers.set(crib.config.id, self._deadline_of(crib))

    def _deadline_of(self, crib: _Crib) -> float | None:
        due = self._deadlines(crib)
        return min(due) if due else None

    def _fire_due(self, step: _Step) -> None:
        timers = self._timers
        while (crib_id := timers.pop_due(step.now)) is not None:
            crib = self._cribs[crib_id]
            timers.set(crib_id, step.now + FAULT_RETRY_S)  # armed while it fires, whatever escapes below
            try:
                self._fire_crib(crib, step)
            except Exception as exc:  # noqa: BLE001 - any bug here must raise the alarm, not silence the crib
                self._fault(crib, step, "on its timers", exc)
                self._rearm(crib, step, faulted=True)
            else:
                self._rearm(crib, step, faulted=False)

    def _fire_crib(self, crib: _Crib, step: _Step) -> None:
        now = step.now
        if crib.maintenance is not None and now >= crib.maintenance.until_mono:
            self._end_maintenance(crib, step, by="gateway", why="expired")
        test = crib.test_alarm
        if test is not None and test.raised_mono is not None and now >= test.raised_mono + self._alerting.test_alarm_s:
            self._end_test(crib, step)
        if crib.flapping and (not crib.transitions or now >= crib.transitions[-1] + self._alerting.flapping.window_s):
            crib.flapping = False  # quiet for a whole window: one incident ends if the crib is closed
            crib.transitions.clear()
            if crib.latch is LatchState.CLOSED and AlarmKind.CRIB_OPEN in crib.alarms:
                self._resolve(crib, AlarmKind.CRIB_OPEN, step, Resolution.LATCH_CLOSED)
        reminder = self._reminder_due(crib)
        if reminder is not None and now >= reminder:
            self._remind(crib, crib.alarms[AlarmKind.CRIB_OPEN], step)
        pending = crib.pending
        if pending is not None and now >= pending.since + crib.debounce_s:
            crib.pending = None
            self._apply_latch(crib, pending.state, pending.since, pending.trigger, step)
        if (
            crib.open_since is not None
            and AlarmKind.CRIB_OPEN not in crib.alarms
            and now >= crib.open_since + crib.room.grace_s
        ):
            self._raise(crib, AlarmKind.CRIB_OPEN, crib.open_trigger, step)
        if crib.wired:
            return
        if crib.health.online is not False and now >= self._silence_deadline(crib):
            crib.health.online = False
            crib.health.offline_periods += 1
            crib.offline_since = now
            self._raise(crib, AlarmKind.SENSOR_OFFLINE, None, step)
        if (
            crib.offline_since is not None
            and AlarmKind.SENSOR_OFFLINE not in crib.alarms
            and now >= crib.offline_since + self._alarm_cfg.offline_grace_s
        ):
            self._raise(crib, AlarmKind.SENSOR_OFFLINE, None, step)

    # ------------------------------------------------------------------------------------ inbound

    def _on_latch(self, crib: _Crib, ev: LatchReading, step: _Step) -> None:
        now = step.now
        if ev.live:
            self._seen(crib, now, step)  # alive, whatever its sequence number says
        key = (ev.boot, ev.seq)
        tracker = crib.latch_seq
        verdict = tracker.judge(key, ev.state)
        trigger = Trigger(ev.sensor_id, ev.boot, ev.seq)
        if verdict is Verdict.DUPLICATE:
            self._ignore(step, "duplicate", f"latch {key} of {ev.sensor_id!r} again")
            return
        if verdict is not Verdict.DOUBT:
            if verdict is not Verdict.ACCEPT:
                self._resynced(crib, ev.sensor_id, f"latch {key} taken ({verdict.value}; the mark was {tracker.mark})")
            tracker.commit(key, ev.state)
            if ev.live:
                crib.health.boot = ev.boot
            self.stats.accept()
            self._take_latch(crib, ev.state, now, trigger, step)
            return
        current = crib.pending.state if crib.pending is not None else crib.latch
        where = f"latch {key} ({ev.state.value}) of {ev.sensor_id!r}, far from the mark {tracker.mark} or a conflict"
        if ev.state == current:
            self._ignore(step, "out_of_order", f"{where}: changes nothing")
            return
        if ev.state is LatchState.OPEN:
            # A doubtful opening is taken anyway (fail toward the alarm), but it moves no mark: the sensor's
            # next real message, numbered after its last good one, is still in order.
            tracker.remember(key, ev.state, doubtful=True)
            self._resynced(crib, ev.sensor_id, f"{where}: an opening is taken all the same")
            self.stats.accept()
            self._take_latch(crib, ev.state, now, trigger, step)
            return
        crib.health.refused += 1
        self.stats.refuse(ev.sensor_id, f"{where}: would close crib {crib.config.id!r}; refused")
        step.outcome = Outcome(accepted=False, reason="refused_sequence")

    def _take_latch(self, crib: _Crib, state: LatchState, now: float, trigger: Trigger, step: _Step) -> None:
        if crib.debounce_s == 0:
            crib.pending = None
            self._apply_latch(crib, state, now, trigger, step)
        elif state == crib.latch:
            crib.pending = None  # bounced back before it held: nothing happened
        elif crib.pending is None or crib.pending.state != state:
            crib.pending = _PendingLatch(state, now, trigger)

    def _resynced(self, crib: _Crib, sensor_id: str, detail: str) -> None:
        crib.health.resynced += 1
        self.stats.resync(sensor_id, detail)

    def _on_telemetry(self, crib: _Crib, ev: TelemetryReading, step: _Step) -> None:
        self._seen(crib, step.now, step)  # every heartbeat proves the sensor alive, whatever its number
        key = (ev.boot, ev.seq)
        tracker = crib.telemetry_seq
        verdict = tracker.judge(key, None)
        if verdict is Verdict.DUPLICATE:
            self._ignore(step, "duplicate", f"telemetry {key} of {ev.sensor_id!r} again")
            return
        # A heartbeat changes no crib: its values are taken whatever its number (the next real heartbeat
        # overwrites a stray one); the numbers only tell duplicates and keep the count.
        if verdict is Verdict.DOUBT:
            tracker.remember(key, None)
            self._resynced(crib, ev.sensor_id, f"telemetry {key} taken, far from the mark {tracker.mark}")
        else:
            if verdict is Verdict.RESYNC:
                self._resynced(crib, ev.sensor_id, f"telemetry {key} taken (resync; the mark was {tracker.mark})")
            tracker.commit(key, None)
            crib.health.boot = ev.boot
        self.stats.accept()
        health = crib.health
        if health.battery_pct != ev.battery_pct:
            step.dirty[crib.config.id] = crib
        health.battery_pct = ev.battery_pct
        health.rssi_dbm = ev.rssi_dbm
        health.firmware = ev.firmware
        health.uptime_s = ev.uptime_s
        health.interval_s = ev.interval_s
        cfg = self._alarm_cfg
        if ev.interval_s > cfg.heartbeat_interval_s:
            self.stats.slow_heartbeat(
                ev.sensor_id, ev.interval_s, cfg.heartbeat_interval_s, cfg.heartbeat_interval_s * cfg.missed_heartbeats
            )
        if ev.battery_pct < cfg.battery_low_pct and AlarmKind.BATTERY_LOW not in crib.alarms:
            trigger = Trigger(ev.sensor_id, ev.boot, ev.seq)
            self._raise(crib, AlarmKind.BATTERY_LOW, trigger, step)
        elif ev.battery_pct >= cfg.battery_ok_pct and AlarmKind.BATTERY_LOW in crib.alarms:
            self._resolve(crib, AlarmKind.BATTERY_LOW, step, Resolution.BATTERY_OK)

    def _on_availability(self, crib: _Crib, ev: AvailabilityChange, step: _Step) -> None:
        now = step.now
        if ev.online and ev.live:
            # The sensor has just connected and announces itself: a new boot's messages may start a new
            # sequence (a swapped unit, a reset counter, a second simulator).
            self.stats.accept()
            crib.latch_seq.announce(ev.boot)
            crib.telemetry_seq.announce(ev.boot)
            crib.health.boot = ev.boot
            self._seen(crib, now, step)
            return
        if ev.online:
            # A retained "online" replayed by the broker: the sensor was connected once, which says nothing
            # about now. It may name a sensor not heard from yet; it never resolves an alarm.
            self.stats.accept()
            if crib.health.online is None:
                crib.health.online = True
                step.dirty[crib.config.id] = crib
            return
        # A last will is never set aside for its boot number: one published late for a connection from before a
        # restart only marks the sensor offline until its next live message, within the offline grace as a rule.
        self.stats.accept()
        crib.health.boot = ev.boot
        if crib.health.online is not False:
            crib.health.online = False
            crib.health.offline_periods += 1
            crib.offline_since = now
            step.dirty[crib.config.id] = crib
        if self._alarm_cfg.offline_grace_s == 0 and AlarmKind.SENSOR_OFFLINE not in crib.alarms:
            self._raise(crib, AlarmKind.SENSOR_OFFLINE, None, step)

    def _guarded_ack(self, ev: AckRequest, step: _Step) -> None:
        try:
            self._on_ack(ev, step)
        except Exception as exc:  # noqa: BLE001 - any bug here must raise the alarm, not silence the crib
            crib = self._cribs.get(ev.crib_id or "")
            if crib is None and ev.alarm_id is not None and ev.alarm_id in self._alarms_by_id:
                crib = self._alarms_by_id[ev.alarm_id][0]
            if crib is None:
                self._unpinned(f"the alarm core failed on an ack by {ev.by} via {ev.device}", exc)
                return
            self._fault(crib, step, f"on an ack by {ev.by} via {ev.device}", exc)
            self._rearm(crib, step, faulted=True)

    def _on_ack(self, ev: AckRequest, step: _Step) -> None:
        targets: list[tuple[_Crib, _Alarm]] = []
        if ev.alarm_id is not None:
            found = self._alarms_by_id.get(ev.alarm_id)
            if found is None:
                self._reject(step, "ack_unknown_alarm", f"{ev.by} via {ev.device}: no open alarm {ev.alarm_id!r}")
                return
            targets.append(found)
        elif ev.crib_id is not None:
            crib = self._cribs.get(ev.crib_id)
            if crib is None:
                self._reject(step, "ack_unknown_crib", f"{ev.by} via {ev.device}: no crib {ev.crib_id!r}")
                return
            targets.extend((crib, alarm) for alarm in crib.open_alarms())
        elif ev.every:
            targets.extend(self._alarms_by_id.values())
            if not targets:
                self._reject(step, "ack_nothing_open", f"{ev.by} via {ev.device}: no open alarm")
                return
        else:
            self._reject(step, "bad_ack", f"{ev.by} via {ev.device}: neither alarm_id nor crib given")
            return
        if not targets:
            self._reject(step, "ack_nothing_open", f"{ev.by} via {ev.device}: crib {ev.crib_id!r} has no open alarm")
            return
        pending = [(crib, alarm) for crib, alarm in targets if alarm.acknowledged_by is None]
        if not pending:
            first = min((alarm for _, alarm in targets), key=lambda a: a.acknowledged_at or 0.0)
            self._ignore(
                step,
                "ack_again",
                f"{ev.by} via {ev.device}: already acknowledged by {first.acknowledged_by}",
                alarm_ids=tuple(alarm.id for _, alarm in targets),
                acknowledged_by=first.acknowledged_by,
            )
            return
        self.stats.accept()
        step.outcome = Outcome(accepted=True, alarm_ids=tuple(alarm.id for _, alarm in pending))
        at = self._clock.time()
        for crib, alarm in pending:
            alarm.acknowledged_by = ev.by
            alarm.acknowledged_device = ev.device
            alarm.acknowledged_at = at
            alarm.acknowledged_mono = step.now
            step.out.append(self._event(crib, alarm, AlarmEventType.ACKNOWLEDGED, at, by=ev.by, device=ev.device))
            step.dirty[crib.config.id] = crib
            if alarm is crib.test_alarm:  # a test is done once someone took it
                self._end_test(crib, step)
        for crib in {id(c): c for c, _ in pending}.values():
            self._clear_fault_if_done(crib, step)
            self._timers.set(crib.config.id, self._deadline_of(crib))  # the reminder, if the crib stays open

    # ------------------------------------------------------------- reminders, flapping, tests, maintenance

    def _reminder_due(self, crib: _Crib) -> float | None:
        """When an acknowledged crib_open alarm comes back if the crib is still open."""
        alarm = crib.alarms.get(AlarmKind.CRIB_OPEN)
        if alarm is None or alarm.acknowledged_mono is None or alarm.acknowledged_by is None:
            return None
        if crib.latch is not LatchState.OPEN or crib.open_since is None:
            return None
        # From the acknowledgement, or from the latch's last opening (a flapping crib acknowledged while closed).
        return max(alarm.acknowledged_mono, crib.open_since) + self._alerting.reminder_after_s

    def _remind(self, crib: _Crib, alarm: _Alarm, step: _Step) -> None:
        """The crib is still open long after the acknowledgement: the alarm comes back, unacknowledged."""
        by, device = alarm.acknowledged_by, alarm.acknowledged_device
        alarm.acknowledged_by = alarm.acknowledged_device = None
        alarm.acknowledged_at = alarm.acknowledged_mono = None
        step.dirty[crib.config.id] = crib
        step.out.append(self._event(crib, alarm, AlarmEventType.REMINDED, self._clock.time(), by=by, device=device))

    def _flapped(self, crib: _Crib, at: float) -> bool:
        """Count one latch change at ``at``; True while the crib is flapping (it may start now)."""
        cfg = self._alerting.flapping
        transitions = crib.transitions
        transitions.append(at)
        while transitions and transitions[0] < at - cfg.window_s:
            transitions.popleft()
        if not crib.flapping and len(transitions) >= cfg.transitions:
            crib.flapping = True
            crib.health.flaps += 1
            detail = f"crib {crib.config.id!r}: {len(transitions)} latch changes in {cfg.window_s} s"
            self.stats.ignore("flapping", detail)
        if len(transitions) > cfg.transitions:  # bounded: the window's start is all flapping needs
            transitions.popleft()
        return crib.flapping

    def _end_test(self, crib: _Crib, step: _Step) -> None:
        alarm = crib.test_alarm
        if alarm is None:
            return
        crib.test_alarm = None
        self._alarms_by_id.pop(alarm.id, None)
        step.dirty[crib.config.id] = crib
        at = self._clock.time()
        step.out.append(self._event(crib, alarm, AlarmEventType.RESOLVED, at, resolution=Resolution.TEST_ENDED))

    def _crib_of(self, crib_or_sensor: str) -> _Crib | None:
        return self._cribs.get(crib_or_sensor) or self._by_sensor.get(crib_or_sensor)

    def test_alarm(self, crib_id: str, *, by: str) -> Decision:
        """A test alarm on one crib (a crib or sensor id): the whole chain runs, marked test everywhere. It ends
        when acknowledged, or by itself after ``alerting.test_alarm_s``."""
        step = _Step(now=self._step_time(None))
        self._fire_due(step)
        crib = self._crib_of(crib_id)
        if crib is None:
            self._command_refused(step, "unknown_crib", f"no crib or sensor {crib_id!r}")
            return Decision(step.outcome, self._finish(step))
        if crib.test_alarm is not None:
            self._command_refused(step, "test_running", f"crib {crib.config.id!r} has a test alarm already")
            return Decision(step.outcome, self._finish(step))
        self._alarm_count += 1
        at = self._clock.time()
        alarm = _Alarm(
            id=f"{self.alarm_prefix}-{self._alarm_count}",
            kind=AlarmKind.CRIB_OPEN,
            raised_at=at,
            trigger=None,
            test=True,
            raised_mono=step.now,
        )
        crib.test_alarm = alarm
        self._alarms_by_id[alarm.id] = (crib, alarm)
        step.dirty[crib.config.id] = crib
        step.out.append(self._event(crib, alarm, AlarmEventType.RAISED, at))
        step.outcome = Outcome(accepted=True, alarm_ids=(alarm.id,), detail=f"test alarm {alarm.id} by {by}")
        self._rearm(crib, step, faulted=False)
        return Decision(step.outcome, self._finish(step))

    def set_maintenance(self, crib_id: str, *, reason: str, until: float, by: str) -> Decision:
        """Put a crib (a crib or sensor id) in maintenance until ``until`` (wall clock): never open-ended, at most
        ``alerting.maintenance.max_s``. Its open alarms end (``maintenance``); what still holds, and anything
        raised until the end, is recorded, not sent. Setting it again moves the end."""
        step = _Step(now=self._step_time(None))
        self._fire_due(step)
        crib = self._crib_of(crib_id)
        now_wall = self._clock.time()
        longest = self._alerting.maintenance.max_s
        if crib is None:
            self._command_refused(step, "unknown_crib", f"no crib or sensor {crib_id!r}")
        elif until <= now_wall:
            self._command_refused(step, "maintenance_past", "the end of a maintenance must be in the future")
        elif until - now_wall > longest:
            self._command_refused(
                step, "maintenance_too_long", f"at most {longest:.0f} s (alerting.maintenance.max_s) from now"
            )
        if crib is None or not step.outcome.accepted:
            return Decision(step.outcome, self._finish(step))
        starting = crib.maintenance is None
        since = now_wall if crib.maintenance is None else crib.maintenance.since
        crib.maintenance = _Maintenance(
            reason=reason, since=since, until=until, until_mono=step.now + (until - now_wall), by=by
        )
        step.dirty[crib.config.id] = crib
        if starting:
            for kind in [k for k, a in crib.alarms.items() if k is not AlarmKind.GATEWAY_FAULT and not a.maintenance]:
                self._resolve(crib, kind, step, Resolution.MAINTENANCE)
            self._raise_what_holds(crib, step)
        record = MaintenanceRecord(crib.config.id, reason, since, until, by)
        self.maintenance_changes.append(MaintenanceChange(crib.config.id, record, by, "started", now_wall))
        step.outcome = Outcome(accepted=True, detail=f"crib {crib.config.id} in maintenance until {until:.0f}")
        self._rearm(crib, step, faulted=False)
        return Decision(step.outcome, self._finish(step))

    def end_maintenance(self, crib_id: str, *, by: str) -> Decision:
        """End a crib's maintenance now; what still holds (a crib still open) alarms at once, for real."""
        step = _Step(now=self._step_time(None))
        self._fire_due(step)
        crib = self._crib_of(crib_id)
        if crib is None:
            self._command_refused(step, "unknown_crib", f"no crib or sensor {crib_id!r}")
        elif crib.maintenance is None:
            self._command_refused(step, "not_in_maintenance", f"crib {crib.config.id!r} is not in maintenance")
        else:
            self._end_maintenance(crib, step, by=by, why="ended")
            step.outcome = Outcome(accepted=True, detail=f"crib {crib.config.id} out of maintenance")
            self._rearm(crib, step, faulted=False)
        return Decision(step.outcome, self._finish(step))

    def _end_maintenance(self, crib: _Crib, step: _Step, *, by: str, why: str) -> None:
        crib.maintenance = None
        step.dirty[crib.config.id] = crib
        for kind in [k for k, a in crib.alarms.items() if a.maintenance]:
            self._resolve(crib, kind, step, Resolution.MAINTENANCE_ENDED)
        self.maintenance_changes.append(MaintenanceChange(crib.config.id, None, by, why, self._clock.time()))
        self._raise_what_holds(crib, step)

    def _raise_what_holds(self, crib: _Crib, step: _Step) -> None:
        """Raise at once every alarm whose condition holds now (after a maintenance began or ended): an open crib
        past its grace, a sensor offline, a low battery. Each is marked maintenance if the crib is in one."""
        now = step.now
        opened = crib.open_since
        if opened is not None and now >= opened + crib.room.grace_s and AlarmKind.CRIB_OPEN not in crib.alarms:
            self._raise(crib, AlarmKind.CRIB_OPEN, crib.open_trigger, step)
        if crib.wired:
            return
        if crib.health.online is False and AlarmKind.SENSOR_OFFLINE not in crib.alarms:
            self._raise(crib, AlarmKind.SENSOR_OFFLINE, None, step)
        battery = crib.health.battery_pct
        low = battery is not None and battery < self._alarm_cfg.battery_low_pct
        if low and AlarmKind.BATTERY_LOW not in crib.alarms:
            self._raise(crib, AlarmKind.BATTERY_LOW, None, step)

    def restore_maintenance(self, records: Iterable[MaintenanceRecord]) -> list[OutboundEvent]:
        """Take back the maintenance the store keeps (after :meth:`restore`); one already over ends at once."""
        step = _Step(now=self._step_time(None))
        now_wall = self._clock.time()
        for record in records:
            crib = self._cribs.get(record.crib_id)
            if crib is None:
                continue
            crib.maintenance = _Maintenance(
                reason=record.reason,
                since=record.since,
                until=record.until,
                until_mono=step.now + (record.until - now_wall),
                by=record.by,
            )
            step.dirty[crib.config.id] = crib
            self._rearm(crib, step, faulted=False)
        for crib in self._cribs.values():
            if crib.maintenance is None and any(a.maintenance for a in crib.alarms.values()):
                # Recorded in a maintenance the store no longer holds (it ended as the gateway stopped): what
                # still holds alarms now, for real; a recorded-only alarm never outlives its maintenance.
                for kind in [k for k, a in crib.alarms.items() if a.maintenance]:
                    self._resolve(crib, kind, step, Resolution.MAINTENANCE_ENDED)
                self._raise_what_holds(crib, step)
                self._rearm(crib, step, faulted=False)
        self._fire_due(step)
        return self._finish(step)

    def take_maintenance_changes(self) -> list[MaintenanceChange]:
        if not self.maintenance_changes:
            return []
        changes, self.maintenance_changes = self.maintenance_changes, []
        return changes

    def escalate(self, alarm_id: str, level: int) -> list[OutboundEvent]:
        """The alert policy reached step ``level`` of this alarm's chain: on its record and its crib's state."""
        found = self._alarms_by_id.get(alarm_id)
        if found is None:
            return []
        crib, alarm = found
        if level == alarm.escalation_level:
            return []
        alarm.escalation_level = level
        step = _Step(now=self._step_time(None))
        step.dirty[crib.config.id] = crib
        return self._finish(step)

    def alarm(self, alarm_id: str) -> AlarmSummary | None:
        found = self._alarms_by_id.get(alarm_id)
        return None if found is None else _summary(found[1])

    def _command_refused(self, step: _Step, reason: str, detail: str) -> None:
        step.outcome = Outcome(accepted=False, reason=reason, detail=detail)

    # ----------------------------------------------------------------------------------- helpers

    def _seen(self, crib: _Crib, now: float, step: _Step) -> None:
        crib.silent_since = now
        crib.health.last_seen = now
        if crib.wired:
            return
        if crib.health.online is not True:
            crib.health.online = True
            crib.offline_since = None
            step.dirty[crib.config.id] = crib
        if AlarmKind.SENSOR_OFFLINE in crib.alarms:
            self._resolve(crib, AlarmKind.SENSOR_OFFLINE, step, Resolution.SENSOR_BACK)

    def _silence_deadline(self, crib: _Crib) -> float:
        # A sensor may announce a shorter heartbeat than the site expects (and is then held to it), never a
        # longer one: a firmware bug must not switch off offline detection. Nor one under a second: a stray
        # heartbeat must not make the sensor look offline moments after each real one.
        interval = self._alarm_cfg.heartbeat_interval_s
        if crib.health.interval_s is not None:
            interval = min(interval, max(crib.health.interval_s, MIN_ANNOUNCED_INTERVAL_S))
        return crib.silent_since + interval * self._alarm_cfg.missed_heartbeats

    def _deadlines(self, crib: _Crib) -> list[float]:
        due: list[float] = []
        reminder = self._reminder_due(crib)
        if reminder is not None:
            due.append(reminder)
        if crib.maintenance is not None:
            due.append(crib.maintenance.until_mono)
        test = crib.test_alarm
        if test is not None and test.raised_mono is not None:
            due.append(test.raised_mono + self._alerting.test_alarm_s)
        if crib.flapping and crib.transitions:
            due.append(crib.transitions[-1] + self._alerting.flapping.window_s)
        if crib.pending is not None:
            due.append(crib.pending.since + crib.debounce_s)
        if crib.open_since is not None and AlarmKind.CRIB_OPEN not in crib.alarms:
            due.append(crib.open_since + crib.room.grace_s)
        if not crib.wired:
            if crib.health.online is not False:
                due.append(self._silence_deadline(crib))
            elif crib.offline_since is not None and AlarmKind.SENSOR_OFFLINE not in crib.alarms:
                due.append(crib.offline_since + self._alarm_cfg.offline_grace_s)
        return due

    def _apply_latch(
        self,
        crib: _Crib,
        state: LatchState,
        since: float,
        trigger: Trigger,
        step: _Step,
    ) -> None:
        if crib.latch == state:
            return
        previous = crib.latch
        crib.latch = state
        step.dirty[crib.config.id] = crib
        if previous is not None and self._flapped(crib, since):
            alarm = crib.alarms.get(AlarmKind.CRIB_OPEN)
            if alarm is not None:
                alarm.flaps += 1
        if state is LatchState.OPEN:
            crib.open_since = since
            crib.latch_opened_at = self._wall(since)
            crib.open_trigger = trigger
            if step.now >= since + crib.room.grace_s and AlarmKind.CRIB_OPEN not in crib.alarms:
                self._raise(crib, AlarmKind.CRIB_OPEN, trigger, step)  # (one restored from a previous run stays)
        else:
            crib.open_since = None
            crib.latch_opened_at = None
            crib.open_trigger = None
            if AlarmKind.CRIB_OPEN in crib.alarms and not crib.flapping:
                self._resolve(crib, AlarmKind.CRIB_OPEN, step, Resolution.LATCH_CLOSED)

    def _raise(
        self,
        crib: _Crib,
        kind: AlarmKind,
        trigger: Trigger | None,
        step: _Step,
    ) -> None:
        self._alarm_count += 1
        at = self._clock.time()
        alarm = _Alarm(
            id=f"{self.alarm_prefix}-{self._alarm_count}",
            kind=kind,
            raised_at=at,
            trigger=trigger,
            latch_opened_at=crib.latch_opened_at if kind is AlarmKind.CRIB_OPEN else None,
            raised_mono=step.now,
            maintenance=crib.maintenance is not None and kind is not AlarmKind.GATEWAY_FAULT,
        )
        crib.alarms[kind] = alarm
        self._alarms_by_id[alarm.id] = (crib, alarm)
        step.dirty[crib.config.id] = crib
        step.out.append(self._event(crib, alarm, AlarmEventType.RAISED, at))

    def _resolve(self, crib: _Crib, kind: AlarmKind, step: _Step, why: Resolution) -> None:
        alarm = crib.alarms.pop(kind)
        del self._alarms_by_id[alarm.id]
        step.dirty[crib.config.id] = crib
        at = self._clock.time()
        if not alarm.maintenance and at - alarm.raised_at <= self._alerting.flapping.quick_resolve_s:
            crib.health.quick_resolves += 1
        step.out.append(self._event(crib, alarm, AlarmEventType.RESOLVED, at, resolution=why))

    def _wall(self, monotonic: float) -> float:
        """The wall-clock time of a monotonic instant (for records people read: the store, the board)."""
        return self._clock.time() - (self._clock.monotonic() - monotonic)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _event(
        self,
        crib: _Crib,
        alarm: _Alarm,
        type_: AlarmEventType,
        at: float,
        *,
        by: str | None = None,
        device: str | None = None,
        resolution: Resolution | None = None,
    ) -> AlarmEvent:
        where = _Where(crib.room.id, crib.config.id, crib.room.label, crib.config.label)
        return self._alarm_event(where, alarm, type_, at, by=by, device=device, resolution=resolution)

    def _alarm_event(
        self,
        where: _Where,
        alarm: _Alarm,
        type_: AlarmEventType,
        at: float,
        *,
        by: str | None = None,
        device: str | None = None,
        resolution: Resolution | None = None,
    ) -> AlarmEvent:
        return AlarmEvent(
            seq=self._next_seq(),
            type=type_,
            alarm_id=alarm.id,
            kind=alarm.kind,
            priority=PRIORITY_OF[alarm.kind],
            site_id=self.site_id,
            room_id=where.room_id,
            crib_id=where.crib_id,
            room_label=where.room_label,
            crib_label=where.crib_label,
            at=at,
            raised_at=alarm.raised_at,
            run=self.gw_run,
            by=by,
            device=device,
            trigger=alarm.trigger,
            latch_opened_at=alarm.latch_opened_at,
            acknowledged_at=alarm.acknowledged_at,
            acknowledged_by=alarm.acknowledged_by,
            resolution=resolution,
            test=alarm.test,
            escalation_level=alarm.escalation_level,
            maintenance=alarm.maintenance,
            flaps=alarm.flaps,
        )

    def _finish(self, step: _Step) -> list[OutboundEvent]:
        """Close a call: one state event for each crib that changed, after its alarm events."""
        if step.dirty:
            at = self._clock.time()
            for crib in step.dirty.values():
                try:
                    step.out.append(self._state_of(crib, at, seq=self._next_seq()))
                except Exception as exc:  # noqa: BLE001 - the alarm events of the step still go out
                    self._unpinned(f"could not build the state of crib {crib.config.id!r}", exc)
        return step.out

    def _state_of(self, crib: _Crib, at: float, seq: int | None = None) -> CribState:
        return CribState(
            seq=self._seq if seq is None else seq,
            site_id=self.site_id,
            room_id=crib.room.id,
            crib_id=crib.config.id,
            room_label=crib.room.label,
            crib_label=crib.config.label,
            latch=crib.latch,
            sensor_online=None if crib.wired else crib.health.online,
            battery_pct=crib.health.battery_pct,
            alarms=tuple(_summary(a) for a in sorted(crib.open_alarms(), key=lambda a: a.raised_at)),
            at=at,
            latch_opened_at=crib.latch_opened_at,
            maintenance=_maintenance_view(crib.maintenance),
        )


def _what(event: LatchReading | TelemetryReading | AvailabilityChange) -> str:
    if isinstance(event, LatchReading):
        return "latch"
    return "telemetry" if isinstance(event, TelemetryReading) else "availability"


def _alarm_of(record: OpenAlarmRecord) -> _Alarm:
    return _Alarm(
        id=record.alarm_id,
        kind=record.kind,
        raised_at=record.raised_at,
        trigger=record.trigger,
        latch_opened_at=record.latch_opened_at,
        acknowledged_by=record.acknowledged_by,
        acknowledged_device=record.acknowledged_device,
        acknowledged_at=record.acknowledged_at,
        test=record.test,
        escalation_level=record.escalation_level,
        maintenance=record.maintenance,
        flaps=record.flaps,
    )


def _maintenance_view(m: _Maintenance | None) -> MaintenanceView | None:
    return None if m is None else MaintenanceView(reason=m.reason, since=m.since, until=m.until, by=m.by)


def _summary(alarm: _Alarm) -> AlarmSummary:
    return AlarmSummary(
        alarm_id=alarm.id,
        kind=alarm.kind,
        priority=PRIORITY_OF[alarm.kind],
        acknowledged_by=alarm.acknowledged_by,
        raised_at=alarm.raised_at,
        acknowledged_at=alarm.acknowledged_at,
        latch_opened_at=alarm.latch_opened_at,
        test=alarm.test,
        escalation_level=alarm.escalation_level,
        maintenance=alarm.maintenance,
        flaps=alarm.flaps,
    )


__all__ = ["CribMonitor", "Restored", "SensorHealth"]
