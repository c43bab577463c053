"""The composition root: builds the gateway from one validated :class:`Settings` and runs it.

Everything long-lived is opened here and nowhere else, inside one TaskGroup with named tasks:
the MQTT link, the wired inputs, the core's timers and the stats publisher. Inbound events are handled
as they arrive, on the event loop's thread, with no queue in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from alerts.channels.buzzer import BuzzerChannel
from alerts.channels.log import LogChannel
from alerts.channels.mqtt import MqttChannel
from alerts.dispatch import Dispatcher, EventSink
from gateway.domain.clock import Clock, SystemClock
from gateway.domain.events import CribState, InboundEvent, OutboundEvent
from gateway.domain.monitor import FAULT_RETRY_S, CribMonitor
from gateway.domain.stats import IngestStats
from gateway.gpio.latches import GpioLatchInputs
from gateway.mqtt.connection import broker_address
from gateway.mqtt.link import MqttLink
from gateway.protocol import GATEWAY_STATS, GatewayStatsPayload, Topics, encode
from gateway.protocol.codec import Outgoing
from gateway.settings import Settings

log = logging.getLogger("cribwatch.gateway")


class Gateway:
    """One site's gateway. ``await gateway.run()`` until cancelled; ``ready`` is set once it is listening."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        pin_factory: Any = None,
        extra_channels: Sequence[EventSink] = (),
    ) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.stats = IngestStats()
        self.core = CribMonitor(settings, self.clock, self.stats)
        self.topics = Topics(settings.site.id, settings.mqtt.base_topic)
        self.ready = asyncio.Event()
        self._timers_changed = asyncio.Event()
        self._armed_deadline: float | None = None
        self._unpinned_seen = 0
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
            on_restore=self._restore,
            monotonic=self.clock.monotonic,
        )
        self.restored = 0
        self.dispatcher: Dispatcher | None = None
        self.buzzer: BuzzerChannel | None = None
        self.gpio: GpioLatchInputs | None = None

    def submit(self, event: InboundEvent) -> None:
        """Hand an inbound event to the core and its consequences to the channels, at once.

        Called on the event loop's thread by the adapters (MQTT directly, GPIO through
        ``call_soon_threadsafe``), and later by the web board.
        """
        try:
            out = self.core.handle(event)
        except Exception as exc:  # noqa: BLE001 - the core guards each crib; this is the last line: fail loud
            self._fault(f"the alarm core failed on {type(event).__name__} from outside its per-crib guard", exc)
            return
        self._deliver(out)

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
        due, armed = self.core.next_deadline(), self._armed_deadline
        if due is not None and (armed is None or due < armed):
            self._timers_changed.set()  # a timer earlier than the one the timer loop sleeps on

    def _restore(self, state: CribState) -> None:
        out = self.core.restore(state)
        if out is not None:
            self.restored += 1
            self._deliver(out)

    def _connected(self, first: bool) -> None:
        """On every (re)connect, publish every crib's state, so the retained copies are current (the broker may
        have lost them; messages queued while it was away may be older). After the first connection this
        comes after the restore, so the restored alarms are in it, and they sound the buzzer again."""
        if self.dispatcher is None:
            return
        if first and self.restored:
            log.warning(
                "restored %d cribs and %d open alarms from the previous run",
                self.restored,
                len(self.core.active_alarms()),
            )
            if self.buzzer is not None:
                buzzer, alarms = self.buzzer, self.core.active_alarms()
                self.dispatcher.call(buzzer, "reset", lambda: buzzer.reset(alarms))
        self.dispatcher.dispatch(self.core.crib_states(), only=MqttChannel)

    def _open_channels(self) -> Dispatcher:
        channels: list[EventSink] = [MqttChannel(self.topics, self.core.gw_run, self.mqtt.send), LogChannel()]
        buzzer_cfg = self.settings.buzzer
        if buzzer_cfg.pin is not None or buzzer_cfg.led_pin is not None:
            self.buzzer = BuzzerChannel(buzzer_cfg, pin_factory=self._pin_factory)
            channels.append(self.buzzer)
        channels.extend(self._extra_channels)
        return Dispatcher(channels)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.dispatcher = self._open_channels()
        try:
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
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.mqtt.run(), name="mqtt-link")
                tg.create_task(self._timer_loop(), name="alarm-timers")
                tg.create_task(self._stats_loop(), name="stats")
                self.ready.set()
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
            self.dispatcher.close()

    async def _timer_loop(self) -> None:
        """Sleep until the core's next deadline (or until an event moves it), then let the core fire it."""
        core, clock = self.core, self.clock
        while True:
            self._timers_changed.clear()
            deadline = self._armed_deadline = core.next_deadline()
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

    def stats_payload(self) -> GatewayStatsPayload:
        rejected = dict(self.stats.rejected)
        if self.mqtt.offline_buffer.dropped:
            rejected["offline_buffer_dropped"] = self.mqtt.offline_buffer.dropped
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
        )

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.mqtt.stats_interval_s)
            if self.buzzer is not None and self.dispatcher is not None:  # retry a buzzer or LED call that failed
                self.dispatcher.call(self.buzzer, "refresh", self.buzzer.refresh)
            payload = encode(self.stats_payload())
            self.mqtt.send(Outgoing.of(self.topics.gateway_stats, payload, GATEWAY_STATS))
