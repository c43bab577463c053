"""The composition root: builds the gateway from one validated :class:`Settings` and runs it.

Start-up order (docs/store.md): the store first, read synchronously (a new run from its boot counter, the open
alarms and crib states of earlier runs into the core, the undelivered outbox into the link's buffer); then the
channels, the wired inputs (their pins read against the restored alarms), the store's writer thread, and the MQTT
link, inside one TaskGroup with named tasks beside the core's timers, the stats publisher and the pruning.
Inbound events are handled as they arrive, on the event loop's thread, with no queue in between; what the store
must write is handed to its writer thread after the MQTT channel and the buzzer have the event.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import secrets
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from alerts.channels.base import DeliveryRecord
from alerts.channels.buzzer import BuzzerChannel
from alerts.channels.log import LogChannel
from alerts.channels.mqtt import MqttChannel
from alerts.channels.router import ChannelRouter, build_channels
from alerts.dispatch import Dispatcher, EventSink
from alerts.notices import Notice, NoticeKind, NoticeSink
from alerts.policy import AlertPolicy, Roster, StepReached
from gateway.domain.clock import Clock, SystemClock
from gateway.domain.events import (
    AckRequest,
    AlarmEvent,
    CribRecord,
    Decision,
    InboundEvent,
    MaintenanceChange,
    MaintenanceRecord,
    OpenAlarmRecord,
    OutboundEvent,
    Outcome,
    SiteSnapshot,
)
from gateway.domain.monitor import FAULT_RETRY_S, CribMonitor
from gateway.domain.stats import IngestStats
from gateway.domain.vocab import AlarmEventType
from gateway.gpio.button import BUTTON_DEVICE, AckButton
from gateway.gpio.latches import GpioLatchInputs
from gateway.gpio.simulated import NEEDS_DEMO, SimulatedPins, SimulationRefusedError
from gateway.influx.service import InfluxService
from gateway.mqtt.connection import broker_address, intake_address
from gateway.mqtt.link import MqttLink
from gateway.protocol import (
    CRIB_STATE,
    GATEWAY_STATS,
    ChannelHealthPayload,
    GatewayStatsPayload,
    InfluxTargetHealthPayload,
    StoreHealthPayload,
    Topics,
    encode,
)
from gateway.protocol.codec import Outgoing, ack_answer
from gateway.protocol.commands import CommandAnswerPayload, CommandPayload, CommandResult
from gateway.protocol.topics import COMMAND
from gateway.sdnotify import Notifier, beat, heartbeat_from_env, notify_systemd, start_loop_watchdog
from gateway.settings import ConfigError, Settings
from gateway.store import DeliveryRow, OutboxRow, Store, StoreWriter
from gateway.store.recorder import StoreRecorder
from gateway.web.live import BoardChanges

log = logging.getLogger("cribwatch.gateway")
_NOT_A_STEP = frozenset({NoticeKind.RESOLVED, NoticeKind.ACKNOWLEDGED})
"""Notices that tell, without moving the alarm's escalation step."""

PRUNE_INTERVAL_S = 6 * 3600.0
"""How often resolved incidents past the retention time are pruned (and once at start)."""
FAULT_OUTCOME = Outcome(accepted=False, reason="fault")
DEFER_AFTER_ALARM_S = 0.001
"""After an alarm event has gone to the socket and the buzzer, the rest of the delivery (crib state, record, log
line) waits this long, or until the next dispatch: the broker and staff devices get the CPU first (performance.md)."""
RECENT_ALERT_LATENCIES = 200
"""How many of the latest alarms' latencies the technician console summarises."""
_COMMAND_RESULTS: dict[str, CommandResult] = {
    "unknown_crib": "unknown_crib",
    "maintenance_past": "maintenance_past",
    "maintenance_too_long": "maintenance_too_long",
    "not_in_maintenance": "not_in_maintenance",
    "test_running": "test_running",
    "fault": "fault",
}


class _Record:
    """What the store gave back at start-up."""

    def __init__(self) -> None:
        self.last_run: int | None = None
        """The store's boot counter before this start (None: the store could not be read)."""
        self.run: int | None = None
        """This run, counted in the store (None: the store would not take the write)."""
        self.alarms: list[OpenAlarmRecord] = []
        self.cribs: list[CribRecord] = []
        self.outbox: list[OutboxRow] = []
        self.maintenance: list[MaintenanceRecord] = []
        self.notices_sent: dict[str, int] = {}
        self.error: str | None = None


def _refuse_to_start(settings: Settings, *, simulate_pins: bool, pin_factory: Any) -> None:
    """The refusals of :class:`Gateway`, before anything is opened: simulated pins outside demo mode (or with a pin
    factory of the caller's), and one broker account for both connections where the broker ties client ids to
    usernames (sensor input would stall while the two connections knock each other off)."""
    if simulate_pins and not settings.site.demo:
        raise SimulationRefusedError(NEEDS_DEMO)
    if simulate_pins and pin_factory is not None:
        raise ValueError("simulate_pins brings its own mock pin factory: give no pin_factory")
    problem = settings.shared_account_problem
    if problem is not None:
        raise ConfigError("[mqtt]", [problem])


class Gateway:
    """One site's gateway. ``await gateway.run()`` until cancelled; ``ready`` is set once it is listening."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        pin_factory: Any = None,
        extra_channels: Sequence[EventSink] = (),
        simulate_pins: bool = False,
        notices: NoticeSink | None = None,
    ) -> None:
        """``simulate_pins``: simulation mode (demo sites only, else :class:`SimulationRefusedError`): every pin is a
        mock pin (:class:`SimulatedPins`, ``self.sim_pins``) and the wired cribs move by pin commands over MQTT."""
        _refuse_to_start(settings, simulate_pins=simulate_pins, pin_factory=pin_factory)
        self.settings = settings
        self.clock = clock or SystemClock()
        self.stats = IngestStats()
        self.store_path = settings.store_path
        record = self._read_record()
        self.store_error = record.error
        """Why the store could not be read or counted at start (None when it could): the gateway runs, and says so."""
        self.writer = StoreWriter(self._open_store)
        self.influx: InfluxService | None = None
        """InfluxDB (``[influx]``): points into the store's outbox, one shipper thread per target."""
        if settings.influx is not None:
            self.influx = InfluxService(settings, settings.influx, self.writer, self._open_store, self.clock)
        self._alert_latency_max_s: float | None = None
        self.started_at = self.clock.time()
        """When this gateway was made (the technician console's uptime)."""
        self.recent_alert_latency_s: deque[float] = deque(maxlen=RECENT_ALERT_LATENCIES)
        """The latest raised alarms' latencies, oldest first (the technician console): from an adapter seeing the
        event (or a timer's due time) to the alarm having left every channel."""
        self._loop_lag_s = 0.0
        run, prefix = self._run_id(record)
        self.core = CribMonitor(settings, self.clock, self.stats, run=run, alarm_prefix=prefix)
        self._take_back(record)
        self._open_policy(record)
        self.topics = Topics(settings.site.id, settings.mqtt.base_topic)
        self.ready = asyncio.Event()
        self._timers_changed = asyncio.Event()
        self._armed_deadline: float | None = None
        self._unpinned_seen = 0
        self.sim_pins: SimulatedPins | None = None
        self._pin_factory = pin_factory = self._pins(simulate_pins, pin_factory)
        self._extra_channels = list(extra_channels)
        self.mqtt = self._make_link(settings)
        self.channels: ChannelRouter = build_channels(
            settings,
            send=self.mqtt.send,
            is_up=self.mqtt.sends_now,
            record=self._record_delivery,
            pin_factory=pin_factory,
        )
        """The channels of notices (docs/channels.md): the alert policy's NoticeSink. Started in :meth:`run`."""
        self.notices: NoticeSink = notices if notices is not None else self.channels
        """Where the alert policy's notices go: the channels' router (a test may give its own sink)."""
        for row in record.outbox:  # alarm events of earlier runs that never reached the broker: first out, in order
            self.mqtt.offline_buffer.put(Outgoing(row.topic, row.payload, row.qos, row.retain, key=row.key))
        self.resent = len(record.outbox)
        self._refused_recorded: Counter[str] = Counter()
        self._policy_due: list[OutboundEvent] = []
        """The core's events that the alert policy has yet to take (after the dispatcher's deferred part)."""
        self._crib_of_sensor = {crib.sensor_key: crib.id for _, crib in settings.cribs()}
        self._room_of_crib = {crib.id: room.id for room, crib in settings.cribs()}
        self.dispatcher: Dispatcher | None = None
        self.buzzer: BuzzerChannel | None = None
        self.gpio: GpioLatchInputs | None = None

    def _make_link(self, settings: Settings) -> MqttLink:
        """The MQTT link: the main connection and the intake's, each with its own account when it has one."""
        main_account, intake_account = broker_address(settings.mqtt), intake_address(settings.mqtt)
        return MqttLink(
            topics=self.topics,
            broker=main_account,
            client_id=settings.gateway_client_id,
            on_event=self.submit,
            stats=self.stats,
            gw_run=self.core.gw_run,
            sensor_ids=[crib.sensor_id for _, crib in settings.cribs() if crib.sensor_id is not None],
            wired_keys=[crib.sensor_key for _, crib in settings.cribs() if crib.wired],
            keepalive=settings.mqtt.keepalive_s,
            reconnect_min_s=settings.mqtt.reconnect_min_s,
            reconnect_max_s=settings.mqtt.reconnect_max_s,
            on_connected=self._connected,
            on_delivered=self._delivered,
            monotonic=self.clock.monotonic,
            on_sim_pin=self.sim_pins.drive if self.sim_pins is not None else None,
            on_command=self._on_command,
            intake_broker=intake_account,
        )

    @functools.cached_property
    def web_changes(self) -> BoardChanges:
        """Wakes the web app's open boards on every outbound event (the last channel: docs/web.md)."""
        return BoardChanges()

    def _pins(self, simulate: bool, pin_factory: Any) -> Any:
        """The pin factory: the one given (None: gpiozero's own), or in simulation mode the mock pins of
        :class:`SimulatedPins` (``self.sim_pins``)."""
        if not simulate:
            return pin_factory
        wired_pins = [crib.gpio_pin for _, crib in self.settings.cribs() if crib.gpio_pin is not None]
        self.sim_pins = SimulatedPins(wired_pins, self.stats)
        return self.sim_pins.factory

    # ------------------------------------------------------------------------------------- the record

    def _open_policy(self, record: _Record) -> None:
        """The alert policy and the staff roster (after the core has taken back the store's open alarms)."""
        alerting = self.settings.alerting
        self.policy = AlertPolicy(alerting, self.clock, siren=self.settings.channels.siren.pin is not None)
        self.roster = Roster(alerting)
        """The staff groups, asked whose an acknowledging device is (:meth:`identify`)."""
        self.notice_stats: Counter[str] = Counter()
        """Notices sent by kind, and ``unaddressed`` (nobody to tell), ``failed`` (the sink raised)."""
        self.ack_button: AckButton | None = None
        self._notices_sent = record.notices_sent

    def _take_back(self, record: _Record) -> None:
        """The core takes back what the store held open (before any adapter starts)."""
        restored = self.core.restore(record.alarms, record.cribs)
        self.restored = len(record.alarms) - len(restored.left)
        """Open alarms taken back from the store at start-up."""
        self._restore_events = restored.events + self.core.restore_maintenance(record.maintenance)
        for alarm in restored.left:
            log.warning("alarm %s (%s) of crib %r ended at start-up", alarm.alarm_id, alarm.kind, alarm.crib_id)
        cribs = {crib.id for _, crib in self.settings.cribs()}
        self._removed_cribs = sorted({r.crib_id for r in record.cribs} - cribs)
        """Cribs the store knows that the site file no longer has: their retained states are cleared on connect."""

    def _open_store(self) -> Store:
        return Store.open(self.store_path, site_id=self.settings.site.id)

    def _read_record(self) -> _Record:
        """The store, read before anything else starts: what earlier runs left open, then a new run counted.

        Reading comes first and needs no room on the disk: a full or read-only disk still gives back the open alarms
        and the outbox; only the count of this run then waits for the writer (:meth:`_run_id`). A store that cannot
        be opened or read at all does not stop the gateway either (it must alarm whatever the disk does): it runs
        from a blank state, logs CRITICAL, and its writer keeps trying.
        """
        record = _Record()
        try:
            store = self._open_store()
        except Exception as exc:  # noqa: BLE001 - whatever the disk or the file does, the gateway must run
            return self._unreadable(record, exc)
        try:
            record.last_run = store.last_run()
            record.alarms = store.open_alarms()
            record.cribs = store.crib_records()
            record.outbox = store.pending_outbox()
            record.maintenance = store.maintenance_records()
            record.notices_sent = store.notices_sent()
        except Exception as exc:  # noqa: BLE001 - as above
            store.close()
            return self._unreadable(_Record(), exc)
        try:
            detail = {"site": self.settings.site.id, "cribs": str(len(self.settings.cribs()))}
            record.run = store.begin_run(self.clock.time(), detail=detail)
        except Exception as exc:  # noqa: BLE001 - a full or read-only disk: the run is counted once it takes writes
            record.error = f"{type(exc).__name__}: {exc}"
            log.critical(
                "the store %s cannot count this run (%s): running with the alarms of earlier runs, but nothing is "
                "recorded until the disk takes writes again; fix the disk (docs/store.md)",
                self.store_path,
                record.error,
            )
        finally:
            store.close()
        return record

    def _unreadable(self, record: _Record, exc: Exception) -> _Record:
        record.error = f"{type(exc).__name__}: {exc}"
        log.critical(
            "the store %s cannot be read (%s): running WITHOUT the alarms of earlier runs; fix the disk or the "
            "file (docs/store.md)",
            self.store_path,
            record.error,
        )
        return record

    def _run_id(self, record: _Record) -> tuple[int, str | None]:
        """This run's number and the prefix of its alarm ids.

        Normally the store counted the run: ``<run>-<n>``. When it could not, the run is the next number (or 0 when
        even the counter could not be read) and the ids get a random part (``<run>x<hex>-<n>``), so they stay
        unique if the gateway starts again before the disk is fixed; the writer counts the run once it can.
        """
        if record.run is not None:
            return record.run, None
        nonce = secrets.token_hex(3)
        if record.last_run is None:
            return 0, f"0x{nonce}"
        run = record.last_run + 1
        self.writer.claim_run(run, self.clock.time())
        return run, f"{run}x{nonce}"

    def _keep(self, item: Outgoing) -> None:
        if item.key is not None:
            self.writer.outbox_put(item.key, item.topic, item.payload, item.qos, item.retain, self.clock.time())

    def _record_delivery(self, rec: DeliveryRecord) -> None:
        """A channel's attempt into the store (called from the channels' threads; the writer only enqueues)."""
        self.writer.delivery(
            DeliveryRow(
                at=rec.at,
                channel=rec.channel,
                group=rec.group,
                member=rec.member,
                address=rec.address,
                notice_id=rec.notice_id,
                alarm_id=rec.alarm_id,
                kind=rec.kind,
                attempt=rec.attempt,
                result=rec.result,
                latency_ms=rec.latency_ms,
                error=rec.error,
                test=rec.test,
            )
        )
        if self.influx is not None and self.dispatcher is not None:  # a failure is logged and counted (influx)
            feed = self.influx.feed
            self.dispatcher.call(
                feed,
                "delivered",
                lambda: feed.delivered(
                    rec.channel,
                    rec.kind,
                    rec.result,
                    rec.at,
                    notice_id=rec.notice_id,
                    alarm_id=rec.alarm_id,
                    attempts=rec.attempt,
                    seconds=_delivery_seconds(rec),
                    room=rec.room,
                    error=rec.error,
                ),
            )

    def _delivered(self, key: str) -> None:
        self.writer.outbox_done(key, self.clock.time())

    # ------------------------------------------------------------------------------------------ input

    def submit(self, event: InboundEvent, *, login: str | None = None) -> Outcome:
        """Hand an inbound event to the core and its consequences to the channels, at once; return its outcome.

        Called on the event loop's thread by the adapters (MQTT directly, GPIO through
        ``call_soon_threadsafe``), and later by the web board. An ack is answered on MQTT to its device, after
        the alarm events it caused, and recorded in the audit log. Who acknowledged is decided here
        (:meth:`identify`): ``login`` is the staff id of the web board's authenticated login, for an ack it
        submits (the hook for issue 11's shared tablets); the MQTT adapter gives none.
        """
        claim = None
        if isinstance(event, AckRequest) and not event.every:
            event, claim = self.identify(event, login=login)
        try:
            decision = self.core.decide(event)
        except Exception as exc:  # noqa: BLE001 - the core guards each crib; this is the last line: fail loud
            self._fault(f"the alarm core failed on {type(event).__name__} from outside its per-crib guard", exc)
            return FAULT_OUTCOME
        self._deliver(decision.events)
        if isinstance(event, AckRequest):
            self._answer(event, decision.outcome, claim, web=login is not None)
        self._measure_alert(event, decision.events)  # after the channels: it costs the alarm nothing
        # after the channels: the points wait for the alarm, never the other way; a failure is logged and counted
        if self.influx is not None and self.dispatcher is not None:  # (channel_failures: influx)
            feed, outcome = self.influx.feed, decision.outcome
            self.dispatcher.call(feed, type(event).__name__, lambda: feed.reading(event, outcome))
        return decision.outcome

    def _measure_alert(self, event: InboundEvent, out: list[OutboundEvent]) -> None:
        """The longest time from an adapter seeing an event to its raised alarm leaving the channels (for the
        ``gateway`` points; measured after the channels, so it costs the alarm nothing)."""
        if event.observed_at is None or not any(
            isinstance(ev, AlarmEvent) and ev.type is AlarmEventType.RAISED for ev in out
        ):
            return
        took = self.clock.monotonic() - event.observed_at
        self.recent_alert_latency_s.append(took)
        if self._alert_latency_max_s is None or took > self._alert_latency_max_s:
            self._alert_latency_max_s = took

    def snapshot(self) -> SiteSnapshot:
        """Every crib, open alarm and sensor's health now (read-only; for the web board and the console)."""
        return self.core.snapshot()

    def identify(self, ack: AckRequest, *, login: str | None = None) -> tuple[AckRequest, str | None]:
        """Who acknowledged, from facts: the ack's ``device`` is its topic's (the broker lets only that device's
        account write it) and ``by`` is the member the roster says the device belongs to (else the device id); what
        the payload said ``by`` was, when it names someone else, is returned as a claim (recorded in the audit log,
        counted ``ack_by_claim``), never taken. ``login``: the hook for the staff alarm board, whose web login
        authenticates the staff member on a shared tablet (that staff id is then the fact)."""
        by, claim = self.roster.identify(ack.device, ack.by, login=login)
        if claim is not None:
            self.stats.ignore("ack_by_claim", f"{ack.device!r} said by={claim!r}; recorded by={by!r} (the roster's)")
        return (ack if by == ack.by else replace(ack, by=by)), claim

    def _answer(self, ack: AckRequest, outcome: Outcome, claim: str | None = None, *, web: bool = False) -> None:
        """``web``: from the staff alarm board, which shows the outcome itself (no MQTT answer)."""
        at = self.clock.time()
        answer = ack_answer(self.topics, ack, outcome, self.core.gw_run, at)
        if answer is not None and not ack.every and not web:  # the gateway's own button has no screen to answer to
            self.mqtt.send(answer)
        detail: dict[str, object] = {
            "result": "accepted" if outcome.accepted else (outcome.reason or "refused"),
            "alarm_id": ack.alarm_id,
            "crib": ack.crib_id,
            "alarms": list(outcome.alarm_ids),
        }
        if claim is not None:
            detail["claimed_by"] = claim
        if web:
            source = f"web:{ack.device}"
        elif ack.device == BUTTON_DEVICE and ack.every:
            source = "gpio:ack_button"
        else:
            source = f"mqtt:{ack.device}"
        self.writer.audit(at, ack.by, source, "acknowledge", json.dumps(detail, sort_keys=True))

    def _fault(self, detail: str, exc: Exception) -> None:
        """A failure the core could not pin on one crib: CRITICAL, counted, and the buzzer sounds until staff
        acknowledge any alarm (nobody can be sure what the failure hid)."""
        self.stats.internal_error(detail, exc)
        self._sound_fault()

    def _sound_fault(self) -> None:
        if self.buzzer is not None and self.dispatcher is not None:
            self.dispatcher.call(self.buzzer, "fault", self.buzzer.fault)

    def _deliver(self, out: list[OutboundEvent]) -> None:
        if out and self.dispatcher is not None:
            self.dispatcher.dispatch(out)
            # The alert policy takes the events after every channel has them (the record too, so a step never goes
            # on the timeline of an incident not yet written): now, or when the dispatcher's deferred part runs.
            self._policy_due.extend(out)
            if not self.dispatcher.waiting:
                self._take_policy()
        if self.core.unpinned_faults != self._unpinned_seen:  # the core failed where no alarm could say so
            self._unpinned_seen = self.core.unpinned_faults
            self._sound_fault()
        self._record_maintenance()
        self._rearm()

    def _take_policy(self) -> None:
        """The core's events to the alert policy, then its notices (the dispatcher's ``on_flushed``)."""
        due, self._policy_due = self._policy_due, []
        if not due:
            return
        try:
            self._send_steps(self.policy.take(due))
        except Exception as exc:  # noqa: BLE001 - the alarm is out already; the failure is loud and counted
            self.stats.internal_error("the alert policy failed on the core's events", exc)
        self._rearm()

    def _rearm(self) -> None:
        due, armed = self._next_deadline(), self._armed_deadline
        if due is not None and (armed is None or due < armed):
            self._timers_changed.set()  # a timer earlier than the one the timer loop sleeps on

    def _next_deadline(self) -> float | None:
        due = [d for d in (self.core.next_deadline(), self.policy.next_deadline()) if d is not None]
        return min(due) if due else None

    def _send_steps(self, steps: list[StepReached]) -> None:
        """Each notice the policy decided: to the notice sink (which must not wait), on the incident's timeline,
        and the step reached on the alarm (its ``escalation_level``, shown in its crib's state)."""
        for reached in steps:
            notice = reached.notice
            kind = notice.kind.value
            if not notice.recipients:
                self.notice_stats["unaddressed"] += 1
            else:
                try:
                    self.notices.send(notice)
                    self.notice_stats[kind] += 1
                except Exception:  # a broken router must not stop the chain nor the record
                    self.notice_stats["failed"] += 1
                    log.exception("the notice sink failed on %s", notice.notice_id)
            detail: dict[str, object] = {
                "kind": kind,
                "step": notice.step,
                "groups": list(reached.groups),
                "recipients": len(notice.recipients),
                "channels": sorted({r.channel for r in notice.recipients}),
                "how": reached.how,
            }
            if notice.test:
                detail["test"] = True
            if self.dispatcher is None:
                self._record_step(notice, detail)
            else:
                # After the alarm event that called for it (the recorder is a deferred channel): its incident row
                # must exist before the notice's timeline row (a foreign key), and the timeline reads raised,
                # notice; acknowledged, notice; resolved, notice. The notice itself is queued already.
                self.dispatcher.then(functools.partial(self._record_step, notice, detail))

    def _record_step(self, notice: Notice, detail: dict[str, object]) -> None:
        """A notice on its incident's timeline, and the step reached on the alarm (shown in its crib's state)."""
        number = int(notice.notice_id.rpartition("/")[2])
        self.writer.record_step(notice.alarm.alarm_id, self.core.gw_run, number, notice.at, notice.step, detail)
        if notice.kind not in _NOT_A_STEP and self.dispatcher is not None:
            if events := self.core.escalate(notice.alarm.alarm_id, notice.step):
                self.dispatcher.dispatch(events)
            if self.influx is not None and notice.kind in _CHAIN_POINTS:  # raised, reminded: the core's points
                self._escalation_point(notice)

    def _record_maintenance(self) -> None:
        for change in self.core.take_maintenance_changes():
            if change.record is not None:
                self.writer.set_maintenance(change.record)
            else:
                self.writer.end_maintenance(change.crib_id)
            if self.influx is not None and self.dispatcher is not None:
                self._maintenance_point(change)
            if change.why == "expired":
                detail = json.dumps({"crib": change.crib_id, "why": "expired"})
                self.writer.audit(change.at, "gateway", "gateway", "maintenance_off", detail)

    def _escalation_point(self, notice: Notice) -> None:
        """An escalation or a repeat of the chain as an InfluxDB point (a failure is logged and counted: influx)."""
        if self.influx is None or self.dispatcher is None:
            return
        feed, repeat = self.influx.feed, notice.kind is NoticeKind.REPEAT
        self.dispatcher.call(
            feed, "escalated", lambda: feed.escalated(notice.alarm, level=notice.step, at=notice.at, repeat=repeat)
        )

    def _maintenance_point(self, change: MaintenanceChange) -> None:
        if self.influx is None or self.dispatcher is None:
            return
        feed, record = self.influx.feed, change.record
        room = self._room_of_crib.get(change.crib_id, "")
        reason = None if record is None else record.reason
        self.dispatcher.call(
            feed,
            "maintenance",
            lambda: feed.maintenance(
                room, change.crib_id, change.at, on=record is not None, by=change.by, reason=reason
            ),
        )

    # ------------------------------------------------------------------------------------------ commands

    def test_alarm(self, crib: str, *, by: str) -> Outcome:
        """A test alarm on one crib: the whole chain, marked test (the CLI's command, later the web board's)."""
        return self._command(lambda: self.core.test_alarm(crib, by=by))

    def maintenance_on(self, crib: str, *, reason: str, until: float, by: str) -> Outcome:
        return self._command(lambda: self.core.set_maintenance(crib, reason=reason, until=until, by=by))

    def maintenance_off(self, crib: str, *, by: str) -> Outcome:
        return self._command(lambda: self.core.end_maintenance(crib, by=by))

    def _command(self, call: Callable[[], Decision]) -> Outcome:
        try:
            decision = call()
        except Exception as exc:  # noqa: BLE001 - a technician's command must never take the gateway down
            self._fault("the alarm core failed on a command", exc)
            return FAULT_OUTCOME
        self._deliver(decision.events)
        return decision.outcome

    def _on_command(self, device: str, command: CommandPayload) -> None:
        """A technician's command from MQTT: carried out, answered to its device, and audited."""
        if command.command == "test_alarm":
            outcome = self.test_alarm(command.crib, by=command.by)
        elif command.command == "maintenance_on":
            # The payload model refuses a maintenance_on without both; the defaults only satisfy the types.
            reason, until = command.reason or "maintenance", command.until or 0.0
            outcome = self.maintenance_on(command.crib, reason=reason, until=until, by=command.by)
        else:
            outcome = self.maintenance_off(command.crib, by=command.by)
        at = self.clock.time()
        result: CommandResult = "accepted"
        if not outcome.accepted:
            result = _COMMAND_RESULTS.get(outcome.reason or "", "invalid")
        answer = CommandAnswerPayload(
            result=result,
            command=command.command,
            crib=command.crib,
            detail=outcome.detail,
            alarm_ids=outcome.alarm_ids,
            request=command.request,
            gw_run=self.core.gw_run,
            ts=at,
        )
        self.mqtt.send(Outgoing.of(self.topics.command_answer(device), encode(answer), COMMAND))
        detail = {"crib": command.crib, "result": result, "reason": command.reason, "until": command.until}
        self.writer.audit(at, command.by, f"mqtt:{device}", command.command, json.dumps(detail, sort_keys=True))

    def _connected(self, first: bool) -> None:
        """On every (re)connect, publish every crib's state from the core (which the store restored): the retained
        copies are a projection, made current again whatever the broker lost or was told meanwhile."""
        if self.dispatcher is None:
            return
        self.dispatcher.dispatch(self.core.crib_states(), only=MqttChannel)
        if first:
            for crib_id in self._removed_cribs:  # a zero-length retained message deletes the retained state
                self.mqtt.send(Outgoing(self.topics.crib_state(crib_id), b"", int(CRIB_STATE.qos), retain=True))

    def _open_channels(self) -> Dispatcher:
        # The order is the order of delivery: the socket, the buzzer, then the record and the log.
        channels: list[EventSink] = [MqttChannel(self.topics, self.core.gw_run, self.mqtt.send, self._keep)]
        buzzer_cfg = self.settings.buzzer
        if buzzer_cfg.pin is not None or buzzer_cfg.led_pin is not None:
            self.buzzer = BuzzerChannel(buzzer_cfg, pin_factory=self._pin_factory)
            channels.append(self.buzzer)
        self.recorder = StoreRecorder(self.writer, {crib.id: crib.sensor_key for _, crib in self.settings.cribs()})
        self.recorder.seed({view.state.crib_id: view.state.sensor_online for view in self.core.snapshot().cribs})
        channels.append(self.recorder)
        if self.influx is not None:
            self.influx.feed.seed([view.state for view in self.core.snapshot().cribs])
            channels.append(self.influx.feed)
        # The channels of notices follow alarm events too (the siren stops on an acknowledgement), after the record.
        channels += [self.channels, LogChannel(), *self._extra_channels, self.web_changes]
        # Alarm events go to the socket and the buzzer at once; the rest a moment later (alerts.dispatch).
        loop = asyncio.get_running_loop()
        dispatcher = Dispatcher(
            channels,
            urgent=2 if self.buzzer is not None else 1,
            defer=lambda flush: loop.call_later(DEFER_AFTER_ALARM_S, flush),
        )
        dispatcher.on_flushed = self._take_policy
        return dispatcher

    async def run(self) -> None:  # noqa: PLR0915 - the composition root: every task starts here
        loop = asyncio.get_running_loop()
        self.dispatcher = self._open_channels()
        self.writer.start()
        if self.influx is not None:
            self.influx.start()
        self.channels.start(loop)
        try:
            if self.restored:
                log.warning(
                    "restored %d open alarms from the store (run %d); %d alarm events of earlier runs to send",
                    self.restored,
                    self.core.gw_run,
                    self.resent,
                )
            self._deliver(self._restore_events)  # a fault alarm, if the core failed on a crib's record
            # Open alarms of earlier runs take up their chains (an unacknowledged one repeats its last step now).
            states = [view.state for view in self.core.snapshot().cribs]
            self._send_steps(self.policy.resume(states, self._notices_sent, run=self.core.gw_run))
            if self.buzzer is not None and self.core.active_alarms():  # restored alarms sound again until taken
                buzzer, alarms = self.buzzer, self.core.active_alarms()
                self.dispatcher.call(buzzer, "reset", lambda: buzzer.reset(alarms))
            wired = [crib for _, crib in self.settings.cribs() if crib.wired]
            if wired:
                self.gpio = GpioLatchInputs(
                    wired,
                    self.submit,
                    loop,
                    pin_factory=self._pin_factory,
                    wall_clock=self.clock.time,
                    monotonic=self.clock.monotonic,
                )
                self.gpio.read_all()
            if self.settings.alerting.ack_button_pin is not None:
                self.ack_button = AckButton(
                    self.settings.alerting.ack_button_pin,
                    self.submit,
                    loop,
                    pin_factory=self._pin_factory,
                    monotonic=self.clock.monotonic,
                    wall_clock=self.clock.time,
                )
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.mqtt.run(), name="mqtt-link")
                tg.create_task(self._timer_loop(), name="alarm-timers")
                tg.create_task(self._stats_loop(), name="stats")
                tg.create_task(self._prune_loop(), name="store-pruning")
                if self.settings.web is not None:
                    from gateway.web.server import serve_web  # noqa: PLC0415 - only a site with [web] loads FastAPI

                    tg.create_task(serve_web(self), name="web")
                self.ready.set()
                notifier = Notifier.from_env()  # systemd's READY=1 and watchdog (deploy/systemd/cribwatch.service)
                if notifier is not None:
                    tg.create_task(notify_systemd(notifier, self._service_status), name="systemd-notify")
                heartbeat = heartbeat_from_env()  # Docker's health check (Dockerfile) reads its age
                if heartbeat is not None:
                    tg.create_task(beat(heartbeat), name="heartbeat-file")
                start_loop_watchdog(tg)  # CRIBWATCH_LOOP_WATCHDOG_S (Docker): a hung loop ends the process
                if self.sim_pins is not None:
                    log.warning(
                        "SIMULATION MODE: every GPIO pin is a mock pin; wired cribs (pins %s) move by pin commands "
                        "on %s (payload high = open, low = closed)",
                        ", ".join(str(pin) for pin in sorted(self.sim_pins.wired)) or "none",
                        self.topics.sim_pin_filter,
                    )
                log.info(
                    "gateway for %s running: %d cribs (%d wired), broker %s:%s",
                    self.settings.site.id,
                    len(self.settings.cribs()),
                    len(wired),
                    self.settings.mqtt.host,
                    self.settings.mqtt.port,
                )
        finally:
            if self.gpio is not None:
                self.gpio.close()
            if self.ack_button is not None:
                self.ack_button.close()
            self.dispatcher.close()
            self.mqtt.settle()  # what the broker has acknowledged is not sent again by the next run
            if self.influx is not None:
                self.influx.stop(timeout=2.0)  # their last confirmations go to the writer, stopped next
            self.writer.stop(timeout=5.0)  # what is queued is written before the process ends

    def _service_status(self) -> str:
        """One line for the service manager (``systemctl status cribwatch``)."""
        broker = "connected" if self.mqtt.connected.is_set() else "AWAY"
        return f"{len(self.core.active_alarms())} open alarms; broker {broker}"

    async def _timer_loop(self) -> None:
        """Sleep until the core's next deadline (or until an event moves it), then let the core fire it."""
        core, clock = self.core, self.clock
        while True:
            self._timers_changed.clear()
            deadline = self._armed_deadline = self._next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - clock.monotonic())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._timers_changed.wait()
            self._armed_deadline = None
            # GPIO edges already handed over with call_soon_threadsafe are in the loop's ready queue: let them
            # in first, so a bounce stamped before the debounce deadline is judged before the timer fires.
            await asyncio.sleep(0)
            try:
                out = core.advance()
            except Exception as exc:  # noqa: BLE001 - the core guards each crib; this is the last line: fail loud
                self._fault("the alarm core failed on its timers from outside its per-crib guard", exc)
                await asyncio.sleep(FAULT_RETRY_S)  # no busy loop on a failure that repeats
                continue
            self._deliver(out)
            if deadline is not None and any(
                isinstance(ev, AlarmEvent) and ev.type is AlarmEventType.RAISED for ev in out
            ):
                late = clock.monotonic() - deadline  # a timer's alarm (crib open too long): after its due time
                if late >= 0:
                    self.recent_alert_latency_s.append(late)
            if self.dispatcher is not None:
                self.dispatcher.flush()  # the policy has every event (an ack above all) before its timers fire
            try:
                self._send_steps(self.policy.advance())
            except Exception as exc:  # noqa: BLE001 - escalation failed: loud, counted, the buzzer sounds
                self._fault("the alert policy failed on its timers", exc)
                await asyncio.sleep(FAULT_RETRY_S)

    def stats_payload(self) -> GatewayStatsPayload:
        rejected = dict(self.stats.rejected)
        if self.mqtt.offline_buffer.dropped:
            rejected["offline_buffer_dropped"] = self.mqtt.offline_buffer.dropped
        health = self.writer.health
        store = StoreHealthPayload(
            size_bytes=health.size_bytes,
            pending=health.pending,
            written=health.written,
            failures=health.failures,
            failing=health.failing,
            dropped=health.dropped,
            lost=health.lost,
        )
        return GatewayStatsPayload(
            gw_run=self.core.gw_run,
            ts=self.clock.time(),
            accepted=self.stats.accepted,
            rejected=rejected,
            ignored=dict(self.stats.ignored),
            active_alarms=len(self.core.active_alarms()),
            channel_failures=dict(self.dispatcher.failures) if self.dispatcher else {},
            refused=dict(self.stats.refused),
            resynced=dict(self.stats.resynced),
            internal_errors=self.stats.internal_errors,
            store=store,
            influx=self._influx_health(health.influx_dropped, health.influx_alarm_dropped),
            channels={
                name: ChannelHealthPayload(
                    state="failing" if ch.state == "failing" else "ok",
                    queued=ch.queued,
                    delivered=ch.delivered,
                    failed=ch.failed,
                    gave_up=ch.gave_up,
                    dropped=ch.dropped,
                    consecutive_failures=ch.consecutive_failures,
                    last_error=ch.last_error,
                )
                for name, ch in self.channels.health().items()
            },
            nuisance=self._nuisance(),
            notices={**self.notice_stats, **{f"skipped_{k}": v for k, v in self.policy.skipped.items()}},
        )

    def _influx_health(self, dropped: int, alarm_dropped: int = 0) -> tuple[InfluxTargetHealthPayload, ...] | None:
        if self.influx is None:
            return None
        now = self.clock.time()
        return tuple(
            InfluxTargetHealthPayload(
                name=h.name,
                connected=h.connected,
                waiting=h.waiting,
                oldest_waiting_s=None if h.oldest_waiting_at is None else round(max(0.0, now - h.oldest_waiting_at), 3),
                sent=h.sent,
                failures=h.failures,
                rejected=h.rejected,
                dropped=dropped,
                rejected_alarm=h.rejected_alarm,
                alarm_dropped=alarm_dropped,
                retry_in_s=h.retry_in_s,
                last_error=h.last_error,
            )
            for h in self.influx.health()
        )

    def _influx_points(self, stats: GatewayStatsPayload) -> None:
        """The gateway's health as points (InfluxDB), with the nuisance counts and the sensors' refusals."""
        if self.influx is None:
            return
        store = stats.store
        waiting = max((t.waiting for t in stats.influx or ()), default=0)
        fields: dict[str, int | float | str | bool | None] = {
            "run": stats.gw_run,
            "accepted": stats.accepted,
            "rejected": sum(stats.rejected.values()),
            "ignored": sum(stats.ignored.values()),
            "internal_errors": stats.internal_errors,
            "active_alarms": stats.active_alarms,
            "channel_failures": sum(stats.channel_failures.values()),
            "offline_buffer": len(self.mqtt.offline_buffer),
            "store_pending": None if store is None else store.pending,
            "store_size_bytes": None if store is None else store.size_bytes,
            "store_failures": None if store is None else store.failures,
            "influx_waiting": waiting,
            "influx_dropped": max((t.dropped for t in stats.influx or ()), default=0),  # store-wide
            "influx_alarm_dropped": max((t.alarm_dropped for t in stats.influx or ()), default=0),
            "loop_lag_ms": round(self._loop_lag_s * 1000.0, 3),
            "alert_latency_ms": None
            if self._alert_latency_max_s is None
            else round(self._alert_latency_max_s * 1e3, 3),
        }
        self._alert_latency_max_s = None
        if self.dispatcher is not None:  # a failure is logged and counted (channel_failures: influx)
            feed = self.influx.feed
            health = (stats.ts, fields, stats.rejected, stats.ignored, stats.refused, stats.resynced)
            self.dispatcher.call(feed, "health", lambda: feed.health(*health))
            self.dispatcher.call(feed, "nuisance", lambda: feed.nuisance(stats.ts, stats.nuisance))

    def _nuisance(self) -> dict[str, dict[str, int]]:
        """Per sensor with any: flaps, offline periods and alarms resolved within seconds (for technicians)."""
        out: dict[str, dict[str, int]] = {}
        for view in self.core.snapshot().cribs:
            h = view.health
            counts = {"flaps": h.flaps, "offline_periods": h.offline_periods, "quick_resolves": h.quick_resolves}
            if any(counts.values()):
                out[view.sensor_key] = counts
        return out

    async def _stats_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            interval = self.settings.mqtt.stats_interval_s
            woke_due = loop.time() + interval
            await asyncio.sleep(interval)
            self._loop_lag_s = max(0.0, loop.time() - woke_due)  # how late the event loop woke this task
            if self.buzzer is not None and self.dispatcher is not None:  # retry a buzzer or LED call that failed
                self.dispatcher.call(self.buzzer, "refresh", self.buzzer.refresh)
            stats = self.stats_payload()
            self.mqtt.send(Outgoing.of(self.topics.gateway_stats, encode(stats), GATEWAY_STATS))
            self._influx_points(stats)
            self._record_refusals()

    def _record_refusals(self) -> None:
        """Readings refused for their sequence numbers since the last look, into each sensor's health history."""
        at = self.clock.time()
        for sensor, count in self.stats.refused.items():
            new = count - self._refused_recorded[sensor]
            if new > 0:
                self._refused_recorded[sensor] = count
                crib = self._crib_of_sensor.get(sensor, "")
                self.writer.sensor_event(at, sensor, crib, "refused", f"{new} readings refused for their sequence")

    async def _prune_loop(self) -> None:
        """Resolved incidents (with audit and sensor history) older than ``store.retention_days`` go, in the writer
        thread: once at start, then every PRUNE_INTERVAL_S."""
        keep_s = self.settings.store.retention_days * 86400.0
        while True:
            self.writer.prune(self.clock.time(), keep_s)
            await asyncio.sleep(PRUNE_INTERVAL_S)


_CHAIN_POINTS = frozenset({NoticeKind.ESCALATION, NoticeKind.REPEAT})
"""The notices written as InfluxDB ``alarm`` points by the gateway (``escalated``, ``repeated``): the first notice
(``raised``) and a reminder (``reminded``) are the core's own alarm events, written once by the feed."""


def _delivery_seconds(rec: DeliveryRecord) -> float:
    """From the notice to this attempt's outcome; the attempt's own duration when the record has no notice time."""
    if rec.notice_at is not None:
        return max(0.0, rec.at - rec.notice_at)
    return 0.0 if rec.latency_ms is None else rec.latency_ms / 1000.0
