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
import json
import logging
import secrets
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from alerts.channels.buzzer import BuzzerChannel
from alerts.channels.log import LogChannel
from alerts.channels.mqtt import MqttChannel
from alerts.dispatch import Dispatcher, EventSink
from alerts.notices import NoticeKind, NoticeSink
from alerts.policy import AlertPolicy, LogNoticeSink, StepReached
from gateway.domain.clock import Clock, SystemClock
from gateway.domain.events import (
    AckRequest,
    CribRecord,
    Decision,
    InboundEvent,
    MaintenanceRecord,
    OpenAlarmRecord,
    OutboundEvent,
    Outcome,
    SiteSnapshot,
)
from gateway.domain.monitor import FAULT_RETRY_S, CribMonitor
from gateway.domain.stats import IngestStats
from gateway.gpio.button import BUTTON_DEVICE, AckButton
from gateway.gpio.latches import GpioLatchInputs
from gateway.gpio.simulated import NEEDS_DEMO, SimulatedPins, SimulationRefusedError
from gateway.mqtt.connection import broker_address
from gateway.mqtt.link import MqttLink
from gateway.protocol import CRIB_STATE, GATEWAY_STATS, GatewayStatsPayload, StoreHealthPayload, Topics, encode
from gateway.protocol.codec import Outgoing, ack_answer
from gateway.protocol.commands import CommandAnswerPayload, CommandPayload, CommandResult
from gateway.protocol.topics import COMMAND
from gateway.settings import Settings
from gateway.store import OutboxRow, Store, StoreWriter
from gateway.store.recorder import StoreRecorder

log = logging.getLogger("cribwatch.gateway")

PRUNE_INTERVAL_S = 6 * 3600.0
"""How often resolved incidents past the retention time are pruned (and once at start)."""
FAULT_OUTCOME = Outcome(accepted=False, reason="fault")
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
        if simulate_pins and not settings.site.demo:
            raise SimulationRefusedError(NEEDS_DEMO)
        if simulate_pins and pin_factory is not None:
            raise ValueError("simulate_pins brings its own mock pin factory: give no pin_factory")
        self.settings = settings
        self.clock = clock or SystemClock()
        self.stats = IngestStats()
        self.store_path = settings.store_path
        record = self._read_record()
        self.store_error = record.error
        """Why the store could not be read or counted at start (None when it could): the gateway runs, and says so."""
        self.writer = StoreWriter(self._open_store)
        run, prefix = self._run_id(record)
        self.core = CribMonitor(settings, self.clock, self.stats, run=run, alarm_prefix=prefix)
        restored = self.core.restore(record.alarms, record.cribs)
        self.restored = len(record.alarms) - len(restored.left)
        """Open alarms taken back from the store at start-up."""
        self._restore_events = restored.events + self.core.restore_maintenance(record.maintenance)
        self.notices: NoticeSink = notices if notices is not None else LogNoticeSink()
        """Where the alert policy's notices go (the channels' router; until it is wired, a sink that logs them)."""
        self.policy = AlertPolicy(settings.alerting, self.clock)
        self.notice_stats: Counter[str] = Counter()
        """Notices sent by kind, and ``unaddressed`` (nobody to tell), ``failed`` (the sink raised)."""
        self.ack_button: AckButton | None = None
        self._notices_sent = record.notices_sent
        for alarm in restored.left:
            log.warning("alarm %s (%s) of crib %r ended at start-up", alarm.alarm_id, alarm.kind, alarm.crib_id)
        cribs = {crib.id for _, crib in settings.cribs()}
        self._removed_cribs = sorted({r.crib_id for r in record.cribs} - cribs)
        """Cribs the store knows that the site file no longer has: their retained states are cleared on connect."""
        self.topics = Topics(settings.site.id, settings.mqtt.base_topic)
        self.ready = asyncio.Event()
        self._timers_changed = asyncio.Event()
        self._armed_deadline: float | None = None
        self._unpinned_seen = 0
        self.sim_pins: SimulatedPins | None = None
        if simulate_pins:
            wired_pins = [crib.gpio_pin for _, crib in settings.cribs() if crib.gpio_pin is not None]
            self.sim_pins = SimulatedPins(wired_pins, self.stats)
            pin_factory = self.sim_pins.factory
        self._pin_factory = pin_factory
        self._extra_channels = list(extra_channels)
        self.mqtt = MqttLink(
            topics=self.topics,
            broker=broker_address(settings.mqtt),
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
        )
        for row in record.outbox:  # alarm events of earlier runs that never reached the broker: first out, in order
            self.mqtt.offline_buffer.put(Outgoing(row.topic, row.payload, row.qos, row.retain, key=row.key))
        self.resent = len(record.outbox)
        self._refused_recorded: Counter[str] = Counter()
        self._crib_of_sensor = {crib.sensor_key: crib.id for _, crib in settings.cribs()}
        self.dispatcher: Dispatcher | None = None
        self.buzzer: BuzzerChannel | None = None
        self.gpio: GpioLatchInputs | None = None

    # ------------------------------------------------------------------------------------- the record

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

    def _delivered(self, key: str) -> None:
        self.writer.outbox_done(key, self.clock.time())

    # ------------------------------------------------------------------------------------------ input

    def submit(self, event: InboundEvent) -> Outcome:
        """Hand an inbound event to the core and its consequences to the channels, at once; return its outcome.

        Called on the event loop's thread by the adapters (MQTT directly, GPIO through
        ``call_soon_threadsafe``), and later by the web board. An ack is answered on MQTT to its device, after
        the alarm events it caused, and recorded in the audit log.
        """
        try:
            decision = self.core.decide(event)
        except Exception as exc:  # noqa: BLE001 - the core guards each crib; this is the last line: fail loud
            self._fault(f"the alarm core failed on {type(event).__name__} from outside its per-crib guard", exc)
            return FAULT_OUTCOME
        self._deliver(decision.events)
        if isinstance(event, AckRequest):
            self._answer(event, decision.outcome)
        return decision.outcome

    def snapshot(self) -> SiteSnapshot:
        """Every crib, open alarm and sensor's health now (read-only; for the web board and the console)."""
        return self.core.snapshot()

    def _answer(self, ack: AckRequest, outcome: Outcome) -> None:
        at = self.clock.time()
        answer = ack_answer(self.topics, ack, outcome, self.core.gw_run, at)
        if answer is not None and not ack.every:  # the gateway's own button has no screen to answer to
            self.mqtt.send(answer)
        detail = {
            "result": "accepted" if outcome.accepted else (outcome.reason or "refused"),
            "alarm_id": ack.alarm_id,
            "crib": ack.crib_id,
            "alarms": list(outcome.alarm_ids),
        }
        source = "gpio:ack_button" if ack.device == BUTTON_DEVICE and ack.every else f"mqtt:{ack.device}"
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
        if self.core.unpinned_faults != self._unpinned_seen:  # the core failed where no alarm could say so
            self._unpinned_seen = self.core.unpinned_faults
            self._sound_fault()
        if out and self.dispatcher is not None:  # after the socket and the buzzer: the policy, then its notices
            try:
                self._send_steps(self.policy.take(out))
            except Exception as exc:  # noqa: BLE001 - the alarm is out already; the failure is loud and counted
                self.stats.internal_error("the alert policy failed on the core's events", exc)
        self._record_maintenance()
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
            number = int(notice.notice_id.rpartition("/")[2])
            self.writer.record_step(notice.alarm.alarm_id, self.core.gw_run, number, notice.at, notice.step, detail)
            if notice.kind is not NoticeKind.RESOLVED and self.dispatcher is not None:
                self.dispatcher.dispatch(self.core.escalate(notice.alarm.alarm_id, notice.step))

    def _record_maintenance(self) -> None:
        for change in self.core.take_maintenance_changes():
            if change.record is not None:
                self.writer.set_maintenance(change.record)
            else:
                self.writer.end_maintenance(change.crib_id)
            if change.why == "expired":
                detail = json.dumps({"crib": change.crib_id, "why": "expired"})
                self.writer.audit(change.at, "gateway", "gateway", "maintenance_off", detail)

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
        channels += [self.recorder, LogChannel(), *self._extra_channels]
        return Dispatcher(channels)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.dispatcher = self._open_channels()
        self.writer.start()
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
                self.ready.set()
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
            self.writer.stop(timeout=5.0)  # what is queued is written before the process ends

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
            nuisance=self._nuisance(),
            notices={**self.notice_stats, **{f"skipped_{k}": v for k, v in self.policy.skipped.items()}},
        )

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
        while True:
            await asyncio.sleep(self.settings.mqtt.stats_interval_s)
            if self.buzzer is not None and self.dispatcher is not None:  # retry a buzzer or LED call that failed
                self.dispatcher.call(self.buzzer, "refresh", self.buzzer.refresh)
            payload = encode(self.stats_payload())
            self.mqtt.send(Outgoing.of(self.topics.gateway_stats, payload, GATEWAY_STATS))
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
