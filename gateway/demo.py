"""``cribwatch demo``: a whole site on one machine, and one alarm's life shown in the terminal.

Starts a broker (Debian's Mosquitto when installed, else the in-process amqtt broker), the gateway on
the example site in demo mode with mock GPIO pins, the simulated wireless sensors, and a staff pager
that prints what it receives. Then: a crib opens, the alarm arrives, staff acknowledge it, the crib
closes and the alarm is resolved; the same for a wired crib and for a sensor that loses power.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt

from gateway.brokers import start_embedded_broker
from gateway.config import Settings, settings_from_mapping
from gateway.mqtt_client import BrokerAddress, new_client
from gateway.protocol import (
    ACK,
    AckPayload,
    AlarmEventPayload,
    AlarmEventType,
    AlarmKind,
    Topics,
    decode,
    encode,
)
from gateway.service import Gateway

DEMO_GRACE_S = 2.0
STEP_TIMEOUT_S = 20.0


class _Console:
    def __init__(self) -> None:
        self._t0 = time.monotonic()

    def say(self, who: str, text: str) -> None:
        print(f"[{time.monotonic() - self._t0:7.3f} s] {who:<10} {text}", flush=True)


class _Pager:
    """A staff pager subscribed to every alarm of the site: prints and remembers what it receives."""

    def __init__(self, client: aiomqtt.Client, console: _Console) -> None:
        self._client = client
        self._console = console
        self.events: list[AlarmEventPayload] = []
        self._changed = asyncio.Event()

    async def listen(self) -> None:
        async for message in self._client.messages:
            if not isinstance(message.payload, bytes):
                continue
            ev = decode(AlarmEventPayload, message.payload)
            self.events.append(ev)
            self._changed.set()
            extra = f" by {ev.by} ({ev.device})" if ev.by else ""
            self._console.say(
                "pager",
                f"{ev.priority.upper()} {ev.kind.value.replace('_', ' ')} {ev.event.value}: "
                f"{ev.room_label} / {ev.crib_label}{extra} [alarm {ev.alarm_id}]",
            )

    async def wait_for(self, crib: str, kind: AlarmKind, event: AlarmEventType) -> AlarmEventPayload:
        async with asyncio.timeout(STEP_TIMEOUT_S):
            while True:
                for ev in self.events:
                    if ev.crib == crib and ev.kind is kind and ev.event is event:
                        self.events.remove(ev)
                        return ev
                self._changed.clear()
                await self._changed.wait()


def demo_settings(config: Path, broker: BrokerAddress) -> Settings:
    """The example site in demo mode, on the embedded broker, with short timers to watch."""
    data: dict[str, Any] = tomllib.loads(config.read_text(encoding="utf-8"))
    data["site"] = {**data["site"], "demo": True}
    data["mqtt"] = {**data.get("mqtt", {}), "host": broker.host, "port": broker.port}
    data["alarms"] = {**data.get("alarms", {}), "offline_grace_s": 1.0, "heartbeat_interval_s": 5.0}
    data["rooms"] = [{**room, "grace_s": min(room.get("grace_s", DEMO_GRACE_S), DEMO_GRACE_S)} for room in data["rooms"]]
    return settings_from_mapping(data, env={}, source=f"{config} (demo)")


async def run_demo(config: Path, *, pace: float = 1.0) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("cribwatch.alarm").setLevel(logging.ERROR)  # the pager below shows every alarm
    console = _Console()
    with tempfile.TemporaryDirectory(prefix="cribwatch-demo-") as tmp:
        async with start_embedded_broker(Path(tmp)) as endpoint:
            broker = BrokerAddress(endpoint.host, endpoint.port, endpoint.username, endpoint.password)
            console.say("demo", f"broker on {broker.host}:{broker.port}")
            try:
                await _run(config, broker, console, pace)
            except TimeoutError:
                console.say("demo", "FAILED: an expected alarm event did not arrive in time")
                return 1
    console.say("demo", "done: every alarm was raised, acknowledged and resolved")
    return 0


async def _run(config: Path, broker: BrokerAddress, console: _Console, pace: float) -> None:
    from firmware_sim.fleet import Fleet  # noqa: PLC0415 - the simulator is the demo's, not the gateway's
    from gpiozero.pins.mock import MockFactory  # noqa: PLC0415

    settings = demo_settings(config, broker)
    topics = Topics(settings.site.id, settings.mqtt.base_topic)
    pins = MockFactory()
    gateway = Gateway(settings, pin_factory=pins)

    async def pause(seconds: float) -> None:
        await asyncio.sleep(seconds * pace)

    async with asyncio.TaskGroup() as tg:
        gw_task = tg.create_task(gateway.run(), name="gateway")
        async with asyncio.timeout(STEP_TIMEOUT_S):
            await gateway.mqtt.connected.wait()
        for _, crib_cfg in settings.cribs():  # every wired crib starts closed: its reed switch pulls the pin low
            if crib_cfg.gpio_pin is not None:
                pins.pin(crib_cfg.gpio_pin).drive_low()
        console.say("gateway", f"running for {settings.site.label}: {len(settings.cribs())} cribs")

        async with new_client(broker, identifier="demo-pager") as pager_client, \
                Fleet.from_settings(settings, broker=broker, interval_s=5.0) as fleet:
            await pager_client.subscribe(topics.alarm_filter, qos=1)
            pager = _Pager(pager_client, console)
            pager_task = tg.create_task(pager.listen(), name="pager")
            console.say("sensors", f"{len(fleet)} wireless sensors online")

            async def ack(alarm_id: str, by: str, device: str) -> None:
                console.say(by, f"presses acknowledge on {device}")
                payload = encode(AckPayload(alarm_id=alarm_id, by=by, device=device))
                await pager_client.publish(topics.ack, payload, qos=int(ACK.qos))

            # 1. a wireless crib in Vlinders is left open
            crib, sensor = "vl-1", "s-0101"
            await pause(1)
            console.say("sensors", f"{sensor}: latch of crib {crib} OPENS (grace {DEMO_GRACE_S:.0f} s)")
            await fleet[sensor].open()
            raised = await pager.wait_for(crib, AlarmKind.CRIB_OPEN, AlarmEventType.RAISED)
            await pause(1)
            await ack(raised.alarm_id, "staff-07", "pager-2")
            await pager.wait_for(crib, AlarmKind.CRIB_OPEN, AlarmEventType.ACKNOWLEDGED)
            await pause(1)
            console.say("sensors", f"{sensor}: latch of crib {crib} CLOSES")
            await fleet[sensor].close_latch()
            await pager.wait_for(crib, AlarmKind.CRIB_OPEN, AlarmEventType.RESOLVED)

            # 2. a wired crib in the sleeping room (the gateway's GPIO header; mock pins here)
            await pause(1)
            pin = pins.pin(17)
            console.say("gpio", "pin 17: wired crib sk-1 OPENS (the reed switch bounces first)")
            await _bounce(pin.drive_high, pin.drive_low, times=3)
            pin.drive_high()
            raised = await pager.wait_for("sk-1", AlarmKind.CRIB_OPEN, AlarmEventType.RAISED)
            buzzing = gateway.buzzer is not None and gateway.buzzer.sounding
            console.say("gateway", f"buzzer {'SOUNDING' if buzzing else 'silent'}")
            await pause(1)
            await ack(raised.alarm_id, "staff-03", "tablet-slaapkamer")
            await pager.wait_for("sk-1", AlarmKind.CRIB_OPEN, AlarmEventType.ACKNOWLEDGED)
            buzzing = gateway.buzzer is not None and gateway.buzzer.sounding
            console.say("gateway", f"buzzer {'SOUNDING' if buzzing else 'silent'} after the acknowledgement")
            console.say("gpio", "pin 17: crib sk-1 CLOSES")
            pin.drive_low()
            await pager.wait_for("sk-1", AlarmKind.CRIB_OPEN, AlarmEventType.RESOLVED)

            # 3. a sensor loses power: a silent crib is not a safe crib
            await pause(1)
            sensor, crib = "s-0203", "eg-3"
            console.say("sensors", f"{sensor}: POWER LOST (the broker sends its last will)")
            await fleet[sensor].power_off()
            raised = await pager.wait_for(crib, AlarmKind.SENSOR_OFFLINE, AlarmEventType.RAISED)
            await ack(raised.alarm_id, "staff-11", "pager-5")
            await pager.wait_for(crib, AlarmKind.SENSOR_OFFLINE, AlarmEventType.ACKNOWLEDGED)
            await pause(1)
            console.say("sensors", f"{sensor}: powered on again (boot +1)")
            await fleet[sensor].power_on()
            await pager.wait_for(crib, AlarmKind.SENSOR_OFFLINE, AlarmEventType.RESOLVED)

            stats = gateway.stats_payload()
            console.say("gateway", f"accepted {stats.accepted} messages, rejected {sum(stats.rejected.values())}, "
                        f"open alarms {stats.active_alarms}")
            pager_task.cancel()
        gw_task.cancel()


async def _bounce(up: Callable[[], None], down: Callable[[], None], *, times: int) -> None:
    for _ in range(times):
        up()
        await asyncio.sleep(0.002)
        down()
        await asyncio.sleep(0.002)

