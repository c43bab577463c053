"""``cribwatch demo``: a whole site on one machine, and one alarm's life shown in the terminal.

Starts a broker (Debian's Mosquitto when installed, else the in-process amqtt broker), the gateway on
a site (the example, or any valid site file) in demo mode with mock GPIO pins, the simulated wireless sensors,
and a staff pager that prints what it receives. Then: a crib opens, the alarm arrives, staff acknowledge it,
the crib closes and the alarm is resolved; the same for a wired crib and for a sensor that loses power. The
cribs are picked from the site (:func:`cast_of`); a story the site has no crib for is skipped, saying so.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
from gpiozero.pins.mock import MockFactory

from devtools.brokers import free_port, start_embedded_broker
from firmware_sim.fleet import Credentials, Fleet, load_credentials
from gateway.app import Gateway
from gateway.domain.vocab import AlarmEventType, AlarmKind
from gateway.mqtt.connection import BrokerAddress, new_client, stop_if_cancelled
from gateway.protocol import ACK, ALARM_EVENT, AckPayload, AlarmEventPayload, Topics, decode, encode
from gateway.provision import Paths, provision, site_coordinator_devices, site_devices, site_sensors
from gateway.settings import (
    ConfigError,
    CribConfig,
    Settings,
    load_settings,
    read_site_file,
    settings_from_mapping,
)
from gateway.store import Store
from gateway.store.accounts import AccountStore
from gateway.web.auth import hash_password

DEMO_GRACE_S = 2.0
STEP_TIMEOUT_S = 20.0


class _Console:
    def __init__(self) -> None:
        self._t0 = time.monotonic()

    def say(self, who: str, text: str) -> None:
        print(f"[{time.monotonic() - self._t0:7.3f} s] {who:<10} {text}", flush=True)


class _Pager:
    """A staff pager subscribed to every alarm of the site: prints and remembers what it receives."""

    def __init__(
        self,
        client: aiomqtt.Client,
        topics: Topics,
        console: _Console,
        *,
        broker: BrokerAddress | None = None,
        devices: Credentials | None = None,
    ) -> None:
        self._client = client
        self._broker = broker
        self._devices = devices
        self._topics = topics
        self._console = console
        self.events: list[AlarmEventPayload] = []
        self._changed = asyncio.Event()

    async def listen(self) -> None:
        async for message in self._client.messages:
            # amqtt (the fallback broker) has been seen to hand a new subscriber retained messages of other
            # topics: a pager checks what it got.
            if not isinstance(message.payload, bytes) or not message.topic.matches(self._topics.alarm_filter):
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

    async def ack(self, alarm_id: str, by: str, device: str) -> None:
        self._console.say(by, f"presses acknowledge on {device}")
        payload = encode(AckPayload(alarm_id=alarm_id, by=by, device=device))
        account = None if self._devices is None else self._devices.devices.get(device)
        if account is None or self._broker is None:  # the embedded amqtt broker: no accounts
            await self._client.publish(self._topics.ack(device), payload, qos=int(ACK.qos))
            return
        # The device's own account: the shipped ACL lets it acknowledge on its own ack topic only.
        login = dataclasses.replace(self._broker, username=account.username, password=account.password)
        async with new_client(login, identifier=device) as client:
            await client.publish(self._topics.ack(device), payload, qos=int(ACK.qos))

    async def wait_for(self, crib: str, kind: AlarmKind, event: AlarmEventType) -> AlarmEventPayload:
        stop_if_cancelled()
        async with asyncio.timeout(STEP_TIMEOUT_S):
            while True:
                for ev in self.events:
                    if ev.crib == crib and ev.kind is kind and ev.event is event:
                        self.events.remove(ev)
                        return ev
                self._changed.clear()
                await self._changed.wait()


@dataclass(frozen=True)
class Cast:
    """The site's cribs that play in the demo's stories; None where the site has no crib for a story."""

    left_open: CribConfig | None
    """The first wireless crib: left open, acknowledged, closed."""
    wired: CribConfig | None
    """The first wired crib: the same, with its reed switch bouncing and the buzzer."""
    power_loss: CribConfig | None
    """A wireless crib whose sensor loses power: the first one of another room, else another one, else the same."""


DEMO_WEB_PORT = 8080
DEMO_DEVICES = ("pager-2", "tablet-slaapkamer", "pager-5")
"""The staff devices the demo's stories acknowledge with (_Scenario), beside the site's own."""


@dataclass(frozen=True)
class DemoAccounts:
    credentials: Path
    password_file: Path
    acl: Path


def demo_accounts(settings: Settings, workdir: Path) -> DemoAccounts:
    """The site's broker accounts as ``cribwatch provision`` makes them, with throw-away passwords in ``workdir``:
    the demo's Mosquitto runs the shipped configuration with them (no anonymous client)."""
    paths = Paths(workdir / "mqtt-credentials.toml", workdir / "cribwatch.passwd", workdir / "cribwatch.acl")
    devices = site_devices(settings)
    devices += [d for d in DEMO_DEVICES if d not in devices and d not in site_sensors(settings)]
    provision(
        paths,
        site_id=settings.site.id,
        sensors=site_sensors(settings),
        devices=devices,
        coordinator_devices=site_coordinator_devices(settings),
    )
    return DemoAccounts(paths.credentials, paths.password_file, paths.acl)


def cast_of(settings: Settings) -> Cast:
    wireless = [(room, crib) for room, crib in settings.cribs() if not crib.wired]
    wired = next((crib for _, crib in settings.cribs() if crib.wired), None)
    if not wireless:
        return Cast(left_open=None, wired=wired, power_loss=None)
    first_room, first = wireless[0]
    elsewhere = [crib for room, crib in wireless if room.id != first_room.id]
    others = [crib for _, crib in wireless[1:]]
    return Cast(left_open=first, wired=wired, power_loss=(elsewhere or others or [first])[0])


def demo_settings(
    config: Path,
    broker: BrokerAddress,
    store_path: Path,
    *,
    web_port: int | None = None,
    credentials_file: Path | None = None,
) -> Settings:
    """A valid site file in demo mode, on the embedded broker, with short timers to watch, and its store at
    ``store_path`` (a temporary file: a demo leaves no record behind); the web app on ``web_port`` of this machine."""
    data = read_site_file(config)
    if web_port is not None:
        data["web"] = {**data.get("web", {}), "host": "127.0.0.1", "port": web_port}
    data["site"] = {**data["site"], "demo": True}
    data["mqtt"] = {**data.get("mqtt", {}), "host": broker.host, "port": broker.port}
    if credentials_file is not None:
        data["mqtt"]["credentials_file"] = str(credentials_file)
    data["alarms"] = {**data.get("alarms", {}), "offline_grace_s": 1.0, "heartbeat_interval_s": 5.0}
    data["rooms"] = [
        {**room, "grace_s": min(room.get("grace_s", DEMO_GRACE_S), DEMO_GRACE_S)} for room in data["rooms"]
    ]
    data["store"] = {**data.get("store", {}), "path": str(store_path)}
    return settings_from_mapping(data, env={}, source=f"{config} (demo)")


def main(config: Path, *, pace: float = 1.0, keep: bool = False) -> int:
    """``cribwatch demo``: :func:`run_demo` in a process of its own.

    SIGINT (Ctrl-C) or SIGTERM stops it cleanly: the sensors, the gateway and then the broker go down in order,
    it prints "demo stopped (SIGINT)" and returns 128 + the signal's number (130 for Ctrl-C), without a traceback.
    """

    async def until_signalled() -> int:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        received: list[signal.Signals] = []

        def stop(sig: signal.Signals) -> None:
            if not received:  # a second Ctrl-C does not cut the clean-up (sensors, gateway, broker) short
                received.append(sig)
                task.cancel()

        def report(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            # A client cancelled while connecting reports its own cancellation later, from a paho callback
            # (aiomqtt reads its cancelled connect future): once stopping, that and broken connections are the
            # stop's doing, not errors to show.
            if received and isinstance(context.get("exception"), asyncio.CancelledError | aiomqtt.MqttError):
                return
            loop.default_exception_handler(context)

        loop.set_exception_handler(report)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop, sig)
        try:
            code = await run_demo(config, pace=pace, keep=keep)
        except asyncio.CancelledError:
            if not received:
                raise
        else:
            if not received:
                return code
        print(f"demo stopped ({received[0].name})", flush=True)
        return 128 + received[0].value

    return asyncio.run(until_signalled())


async def run_demo(config: Path, *, pace: float = 1.0, keep: bool = False) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("cribwatch.alarm").setLevel(logging.ERROR)  # the pager below shows every alarm
    logging.getLogger("devtools.brokers").setLevel(logging.INFO)  # which broker the demo runs on
    try:  # the file as written (its own key paths in the messages), before anything is started
        written = load_settings(config, env={}, require_credentials=False)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    console = _Console()
    with tempfile.TemporaryDirectory(prefix="cribwatch-demo-") as tmp:
        accounts = demo_accounts(written, Path(tmp))
        async with start_embedded_broker(
            Path(tmp), password_file=accounts.password_file, acl_file=accounts.acl
        ) as endpoint:
            console.say("demo", f"broker on {endpoint.host}:{endpoint.port}")
            store_path = Path(tmp) / "demo.sqlite3"
            try:
                site_id = await _run(
                    config, endpoint, console, pace, store_path, keep=keep, accounts=accounts.credentials
                )
            except TimeoutError:
                console.say("demo", "FAILED: an expected alarm event did not arrive in time")
                return 1
            _show_record(store_path, site_id, console)
    console.say("demo", "done: every alarm was raised, acknowledged and resolved")
    return 0


def _show_record(store_path: Path, site_id: str, console: _Console) -> None:
    """The incident log as the gateway's store holds it (what ``cribwatch incidents`` prints on a site)."""
    store = Store.open(store_path, site_id=site_id, readonly=True)
    try:
        incidents = store.incidents()
    finally:
        store.close()
    console.say("store", f"{len(incidents)} incidents on record:")
    for incident in reversed(incidents):
        response = "-" if incident.response_s is None else f"{incident.response_s:.1f} s"
        console.say(
            "store",
            f"  {incident.alarm_id} {incident.kind} {incident.room_label} / {incident.crib_label}: acknowledged by "
            f"{incident.acknowledged_by or '-'} after {response}, resolved ({incident.resolution or 'open'})",
        )


class _Scenario:
    """The three stories the demo tells, each an alarm's whole life."""

    def __init__(
        self, gateway: Gateway, *, fleet: Fleet, pins: MockFactory, pager: _Pager, console: _Console, pace: float
    ) -> None:
        self.gateway = gateway
        self.fleet = fleet
        self.pins = pins
        self.pager = pager
        self.say = console.say
        self.pace = pace

    async def pause(self, seconds: float = 1.0) -> None:
        stop_if_cancelled()
        await asyncio.sleep(seconds * self.pace)

    def say_buzzer(self, when: str) -> None:
        """The buzzer's state, on a site that has one."""
        buzzer = self.gateway.buzzer
        if buzzer is not None and self.gateway.settings.buzzer.pin is not None:
            self.say("gateway", f"buzzer {'SOUNDING' if buzzer.sounding else 'silent'}{when}")

    async def wireless_crib_left_open(self, crib_cfg: CribConfig) -> None:
        crib, sensor = crib_cfg.id, crib_cfg.sensor_key
        grace = next(room.grace_s for room, c in self.gateway.settings.cribs() if c.id == crib)
        await self.pause()
        self.say("sensors", f"{sensor}: latch of crib {crib} OPENS (grace {grace:g} s)")
        await self.fleet[sensor].open()
        raised = await self.pager.wait_for(crib, AlarmKind.CRIB_OPEN, AlarmEventType.RAISED)
        await self.pause()
        await self.pager.ack(raised.alarm_id, "staff-07", "pager-2")
        await self.pager.wait_for(crib, AlarmKind.CRIB_OPEN, AlarmEventType.ACKNOWLEDGED)
        await self.pause()
        self.say("sensors", f"{sensor}: latch of crib {crib} CLOSES")
        await self.fleet[sensor].close_latch()
        await self.pager.wait_for(crib, AlarmKind.CRIB_OPEN, AlarmEventType.RESOLVED)

    async def wired_crib_left_open(self, crib_cfg: CribConfig) -> None:
        assert crib_cfg.gpio_pin is not None
        crib, pin_number = crib_cfg.id, crib_cfg.gpio_pin
        await self.pause()
        pin = self.pins.pin(pin_number)
        self.say("gpio", f"pin {pin_number}: wired crib {crib} OPENS (the reed switch bounces first)")
        await _bounce(pin.drive_high, pin.drive_low, times=3)
        pin.drive_high()
        raised = await self.pager.wait_for(crib, AlarmKind.CRIB_OPEN, AlarmEventType.RAISED)
        self.say_buzzer("")
        await self.pause()
        await self.pager.ack(raised.alarm_id, "staff-03", "tablet-slaapkamer")
        await self.pager.wait_for(crib, AlarmKind.CRIB_OPEN, AlarmEventType.ACKNOWLEDGED)
        self.say_buzzer(" after the acknowledgement")
        self.say("gpio", f"pin {pin_number}: crib {crib} CLOSES")
        pin.drive_low()
        await self.pager.wait_for(crib, AlarmKind.CRIB_OPEN, AlarmEventType.RESOLVED)

    async def sensor_loses_power(self, crib_cfg: CribConfig) -> None:
        crib, sensor = crib_cfg.id, crib_cfg.sensor_key
        await self.pause()
        self.say("sensors", f"{sensor}: POWER LOST (the broker sends its last will)")
        await self.fleet[sensor].power_off()
        raised = await self.pager.wait_for(crib, AlarmKind.SENSOR_OFFLINE, AlarmEventType.RAISED)
        await self.pager.ack(raised.alarm_id, "staff-11", "pager-5")
        await self.pager.wait_for(crib, AlarmKind.SENSOR_OFFLINE, AlarmEventType.ACKNOWLEDGED)
        await self.pause()
        self.say("sensors", f"{sensor}: powered on again (boot +1)")
        await self.fleet[sensor].power_on()
        await self.pager.wait_for(crib, AlarmKind.SENSOR_OFFLINE, AlarmEventType.RESOLVED)


async def _run(
    config: Path,
    broker: BrokerAddress,
    console: _Console,
    pace: float,
    store_path: Path,
    *,
    keep: bool = False,
    accounts: Path | None = None,
) -> str:
    """The demo's stories on one gateway; returns the site id (its store's owner). ``keep``: the gateway, its web
    app and the sensors stay up after the stories until the demo is stopped (Ctrl-C). ``accounts``: the credentials
    file of :func:`demo_accounts` (the gateway, the sensors and the pager log in with its accounts)."""
    settings = demo_settings(config, broker, store_path, web_port=_web_port(), credentials_file=accounts)
    creds = None if accounts is None else load_credentials(accounts)
    login = _demo_accounts(settings)
    topics = Topics(settings.site.id, settings.mqtt.base_topic)
    pins = MockFactory()
    gateway = Gateway(settings, pin_factory=pins)
    async with asyncio.TaskGroup() as tg:
        gw_task = tg.create_task(gateway.run(), name="gateway")
        async with asyncio.timeout(STEP_TIMEOUT_S):
            await gateway.mqtt.connected.wait()
        for _, crib_cfg in settings.cribs():  # every wired crib starts closed: its reed switch pulls the pin low
            if crib_cfg.gpio_pin is not None:
                pins.pin(crib_cfg.gpio_pin).drive_low()
        console.say("gateway", f"running for {settings.site.label}: {len(settings.cribs())} cribs")
        if settings.web is not None:
            console.say("web", f"the alarm board on http://{settings.web.host}:{settings.web.port}/ ({login})")
        board = broker if creds is None else creds.for_watcher(broker)
        async with (
            new_client(board, identifier="demo-pager") as pager_client,
            Fleet.from_settings(settings, broker=broker, interval_s=5.0, credentials=creds) as fleet,
        ):
            await pager_client.subscribe(topics.alarm_filter, qos=int(ALARM_EVENT.qos))
            pager = _Pager(pager_client, topics, console, broker=broker, devices=creds)
            pager_task = tg.create_task(pager.listen(), name="pager")
            try:
                console.say("sensors", f"{len(fleet)} wireless sensors online")
                scenario = _Scenario(gateway, fleet=fleet, pins=pins, pager=pager, console=console, pace=pace)
                cast = cast_of(settings)
                if cast.left_open is None:
                    console.say(
                        "demo",
                        "no wireless crib in this site: the stories of a wireless crib left open "
                        "and of a sensor that loses power are skipped",
                    )
                else:
                    await scenario.wireless_crib_left_open(cast.left_open)
                if cast.wired is None:
                    console.say("demo", "no wired crib in this site: the wired crib's story is skipped")
                else:
                    await scenario.wired_crib_left_open(cast.wired)
                if cast.power_loss is not None:
                    await scenario.sensor_loses_power(cast.power_loss)
                if keep:
                    console.say("demo", "the stories are done; still running for you to try (Ctrl-C stops it)")
                    await asyncio.Event().wait()
                stats = gateway.stats_payload()
                console.say(
                    "gateway",
                    f"accepted {stats.accepted} messages, rejected {sum(stats.rejected.values())}, "
                    f"open alarms {stats.active_alarms}",
                )
            finally:
                # Stop listening before the pager's connection closes (also when the demo is stopped half-way):
                # a pager still listening on a closed connection fails, and fails the whole TaskGroup with it.
                pager_task.cancel()
                await asyncio.wait({pager_task})
        gw_task.cancel()
    return settings.site.id


def _web_port() -> int:
    """8080 when it is free (an address easy to type), else any free port."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", DEMO_WEB_PORT))
        except OSError:
            return free_port()
    return DEMO_WEB_PORT


def _demo_accounts(settings: Settings) -> str:
    """A staff and a technician account in the demo's (temporary) store, one random password: what to log in with."""
    password = secrets.token_urlsafe(9)
    hashed = hash_password(password)
    accounts = AccountStore.open(settings.store_path, site_id=settings.site.id)
    try:
        for name, role in (("demo-staff", "staff"), ("demo-tech", "technician")):
            accounts.add_user(name, role, hashed, time.time())
    finally:
        accounts.close()
    return f"log in as demo-staff or demo-tech, password {password}"


async def _bounce(up: Callable[[], None], down: Callable[[], None], *, times: int) -> None:
    for _ in range(times):
        up()
        await asyncio.sleep(0.002)
        down()
        await asyncio.sleep(0.002)
