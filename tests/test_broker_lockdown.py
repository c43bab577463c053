"""The shipped broker, locked down: deploy/mosquitto/mosquitto.conf (and tls.conf) run by a real Mosquitto, with the
password file and the ACL that `cribwatch provision` wrote from a site file (docs/broker.md).

A denied PUBLISH looks like success to the client and is dropped by the broker: each test of a refusal sends the
forbidden message first and an allowed one after it on the same connection, and waits for the allowed one; the
broker keeps a client's order, so the forbidden one would have arrived before it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import aiomqtt
import pytest
from gpiozero.pins.mock import MockFactory

from bench import tls as tls_bench
from devtools.brokers import MosquittoBroker
from devtools.certs import make_test_ca
from firmware_sim import cli as sim_cli
from firmware_sim.fleet import Fleet, load_credentials
from gateway.app import Gateway
from gateway.cli import main as cribwatch
from gateway.credentials import SiteCredentials, read_credentials_file
from gateway.domain.vocab import AlarmEventType
from gateway.mqtt.connection import BrokerAddress, TlsOptions, new_client
from gateway.protocol import AckAnswerPayload, AckPayload, AlarmEventPayload, Topics, decode, encode
from gateway.provision import hash_password, password_matches
from gateway.settings import ConfigError, load_settings

pytestmark = pytest.mark.integration

WAIT_S = 15.0
SITE = "lock"
SITE_FILE = f"""
[site]
id = "{SITE}"
label = "Locked site"

[mqtt]
stats_interval_s = 0.2
reconnect_max_s = 0.5

[alarms]
offline_grace_s = 0

[alerting]
  [[alerting.groups]]
  id = "nursery-staff"
  kind = "room"
  rooms = ["nursery"]
  members = [
    {{ id = "pager-a", channels = [{{ channel = "mqtt", address = "pager-a" }}] }},
    {{ id = "pager-b", channels = [{{ channel = "mqtt", address = "pager-b" }}] }},
  ]

[helping_hands]
coordinators = [{{ id = "coord-city", channels = [{{ channel = "mqtt", address = "tablet-coord" }}] }}]

[[rooms]]
id = "nursery"
label = "Nursery"
grace_s = 0

  [[rooms.cribs]]
  id = "n-1"
  label = "Crib 1"
  sensor_id = "s-1"

  [[rooms.cribs]]
  id = "n-2"
  label = "Crib 2"
  sensor_id = "s-2"
"""
TOPICS = Topics(SITE)


# -- the site: provisioned, and its broker -----------------------------------------------------------------------


@dataclass(frozen=True)
class LockedSite:
    broker: MosquittoBroker
    site_file: Path
    credentials_file: Path
    creds: SiteCredentials
    client_tls: TlsOptions

    def login(self, username: str, *, tls: bool = False) -> BrokerAddress:
        accounts = {a.username: a for a in self.creds.all_accounts()}
        account = accounts[username]
        return replace(self.plain(tls=tls), username=account.username, password=account.password)

    def plain(self, *, tls: bool = False) -> BrokerAddress:
        """The broker's address, without an account."""
        if tls:
            assert self.broker.tls_port is not None
            return BrokerAddress("127.0.0.1", self.broker.tls_port, tls=TlsOptions(self.client_tls.ca_file))
        return BrokerAddress("127.0.0.1", self.broker.endpoint.port)


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LockedSite]:
    root = tmp_path_factory.mktemp("locked")
    site_file = root / "site.toml"
    site_file.write_text(SITE_FILE)
    creds_file, passwd, acl = root / "creds.toml", root / "cribwatch.passwd", root / "cribwatch.acl"
    files = ["--credentials", str(creds_file), "--password-file", str(passwd), "--acl", str(acl)]
    assert cribwatch(["provision", "--config", str(site_file), *files]) == 0
    assert cribwatch(["provision", "--add", "board", "hall-1", *files]) == 0  # a second wall screen
    broker_tls, client_tls = make_test_ca(root / "ca")
    with MosquittoBroker(root / "broker", shipped=True, password_file=passwd, acl_file=acl, tls=broker_tls) as broker:
        yield LockedSite(broker, site_file, creds_file, read_credentials_file(creds_file), client_tls)


# -- provisioning ------------------------------------------------------------------------------------------------


def test_provision_writes_every_account_hashed_and_private(locked: LockedSite, tmp_path: Path) -> None:
    creds = locked.creds
    assert sorted(creds.sensors) == ["s-1", "s-2"]
    assert sorted(creds.devices) == ["pager-a", "pager-b"]
    assert {a.username for a in creds.single.values()} == {
        "gateway",
        "gateway-intake",
        "technician",
        "technician-tool",
        "staff",
        "watcher",
        "coordinator",
    }
    assert list(creds.boards) == ["hall-1"]
    assert list(creds.coordinator_devices) == ["tablet-coord"]
    assert os.stat(locked.credentials_file).st_mode & 0o777 == 0o600
    passwd = locked.credentials_file.parent / "cribwatch.passwd"
    lines = dict(line.split(":", 1) for line in passwd.read_text().split())
    assert set(lines) == {a.username for a in creds.all_accounts()}
    for account in creds.all_accounts():
        assert account.password not in lines[account.username]
        assert password_matches(account.password, lines[account.username])
    assert len({a.password for a in creds.all_accounts()}) == len(creds.all_accounts())  # random, each its own


def test_provision_again_keeps_passwords_adds_one_and_rotates_on_request(tmp_path: Path) -> None:
    site_file = tmp_path / "site.toml"
    site_file.write_text(SITE_FILE)
    files = ["--credentials", str(tmp_path / "c.toml"), "--password-file", str(tmp_path / "p")]
    files += ["--acl", str(tmp_path / "a")]
    assert cribwatch(["provision", "--config", str(site_file), *files]) == 0
    first = read_credentials_file(tmp_path / "c.toml")
    hashes = (tmp_path / "p").read_text()
    assert cribwatch(["provision", "--config", str(site_file), *files]) == 0
    assert read_credentials_file(tmp_path / "c.toml") == first
    assert (tmp_path / "p").read_text() == hashes  # not even a new salt

    assert cribwatch(["provision", "--add", "sensor", "s-17", *files]) == 0
    assert cribwatch(["provision", "--add", "device", "pager-9", *files]) == 0
    added = read_credentials_file(tmp_path / "c.toml")
    assert added.sensors["s-1"] == first.sensors["s-1"]
    assert "s-17" in added.sensors
    assert "user pager-9\n" in (tmp_path / "a").read_text()
    assert cribwatch(["provision", "--add", "sensor", "gateway", *files]) == 2  # a reserved account

    assert cribwatch(["provision", "--rotate", "s-1", *files]) == 0
    rotated = read_credentials_file(tmp_path / "c.toml")
    assert rotated.sensors["s-1"] != first.sensors["s-1"]
    assert rotated.sensors["s-2"] == first.sensors["s-2"]
    line = next(x for x in (tmp_path / "p").read_text().splitlines() if x.startswith("s-1:"))
    assert password_matches(rotated.sensors["s-1"].password, line.split(":", 1)[1])


def test_the_hash_is_the_one_mosquitto_passwd_writes(tmp_path: Path) -> None:
    """Mosquitto checks the hashes that provision writes itself: a login with the right password works (the other
    tests), and the format is mosquitto_passwd's own (same fields for the same salt and rounds)."""
    passwd = tmp_path / "p"
    passwd.touch()
    subprocess.run(["mosquitto_passwd", "-b", str(passwd), "u", "secret"], check=True)
    theirs = passwd.read_text().strip().split(":", 1)[1]
    _, seven, rounds, salt, _ = theirs.split("$")
    assert seven == "7"
    assert hash_password("secret", salt=base64.b64decode(salt), iterations=int(rounds)) == theirs


# -- refusals ---------------------------------------------------------------------------------------------------


async def _connects(address: BrokerAddress, identifier: str = "probe") -> bool:
    try:
        async with new_client(address, identifier=identifier, timeout=5):
            return True
    except aiomqtt.MqttError:
        return False


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
async def test_anonymous_and_wrong_passwords_are_refused(locked: LockedSite, tls: bool) -> None:
    assert await _connects(locked.login("s-1", tls=tls))  # the probe itself works
    assert not await _connects(locked.plain(tls=tls))
    assert not await _connects(replace(locked.login("gateway", tls=tls), password="not-" + secrets.token_hex(8)))
    assert not await _connects(replace(locked.login("s-1", tls=tls), username="s-3"))  # no such account


async def test_tls_checks_the_broker_certificate(locked: LockedSite) -> None:
    """A client that trusts only the system's CAs refuses the test CA's broker: TLS proves the broker."""
    address = replace(locked.login("s-1", tls=True), tls=TlsOptions())
    assert not await _connects(address)


class Listener:
    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.got: list[tuple[str, bytes]] = []
        self.changed = asyncio.Event()

    async def listen(self) -> None:
        async for message in self.client.messages:
            assert isinstance(message.payload, bytes)
            self.got.append((message.topic.value, message.payload))
            self.changed.set()

    def topics(self) -> list[str]:
        return [topic for topic, _ in self.got]

    async def until(self, topic: str) -> bytes:
        async with asyncio.timeout(WAIT_S):
            while not (found := [p for t, p in self.got if t == topic]):
                self.changed.clear()
                await self.changed.wait()
            return found[0]


@asynccontextmanager
async def listening(address: BrokerAddress, *filters: str, identifier: str = "listener") -> AsyncIterator[Listener]:
    async with new_client(address, identifier=identifier) as client:
        listener = Listener(client)
        for topic_filter in filters:
            await client.subscribe(topic_filter, qos=1)
        task = asyncio.create_task(listener.listen())
        try:
            yield listener
        finally:
            task.cancel()


@asynccontextmanager
async def connected(address: BrokerAddress, identifier: str = "client") -> AsyncIterator[aiomqtt.Client]:
    async with new_client(address, identifier=identifier) as client:
        yield client


async def test_a_sensor_writes_its_own_topics_only(locked: LockedSite) -> None:
    async with (
        listening(locked.login("gateway"), f"{TOPICS.prefix}/#") as gateway,
        connected(locked.login("s-1")) as s1,
    ):
        await s1.publish(f"{TOPICS.prefix}/sensor/s-2/latch", b"forged", qos=1)
        await s1.publish(TOPICS.alarm("nursery"), b"forged", qos=1)
        await s1.publish(TOPICS.ack("pager-a"), b"forged", qos=1)
        await s1.publish(f"{TOPICS.prefix}/sensor/s-1/telemetry", b"mine", qos=1)
        await gateway.until(f"{TOPICS.prefix}/sensor/s-1/telemetry")
        assert gateway.topics() == [f"{TOPICS.prefix}/sensor/s-1/telemetry"]


async def test_a_staff_device_raises_no_alarm_and_acknowledges_as_itself_only(locked: LockedSite) -> None:
    async with (
        listening(locked.login("gateway"), f"{TOPICS.prefix}/#") as gateway,
        connected(locked.login("pager-a")) as pager_a,
    ):
        for topic in (TOPICS.alarm("nursery"), TOPICS.crib_state("n-1"), TOPICS.ack("pager-b")):
            await pager_a.publish(topic, b"forged", qos=1)
        await pager_a.publish(f"{TOPICS.prefix}/sensor/s-1/latch", b"forged", qos=1)
        await pager_a.publish(f"{TOPICS.prefix}/cmd/pager-a", b"forged", qos=1)
        await pager_a.publish(TOPICS.ack("pager-a"), b"mine", qos=1)
        await gateway.until(TOPICS.ack("pager-a"))
        assert gateway.topics() == [TOPICS.ack("pager-a")]


async def test_who_reads_what(locked: LockedSite) -> None:
    """The technician reads health only; a staff device alarms, crib states and its own answers; a sensor nothing."""
    published = [
        TOPICS.alarm("nursery"),
        TOPICS.crib_state("n-1"),
        f"{TOPICS.prefix}/sensor/s-1/latch",
        TOPICS.ack("pager-b"),
        TOPICS.ack_answer("pager-b"),
        TOPICS.ack_answer("pager-a"),
        f"{TOPICS.prefix}/sensor/s-1/availability",
        f"{TOPICS.prefix}/sensor/s-1/telemetry",
        f"{TOPICS.prefix}/gateway/stats",
    ]
    everything = f"{TOPICS.prefix}/#"
    async with (
        listening(locked.login("technician"), everything, identifier="t") as technician,
        listening(locked.login("pager-a"), everything, identifier="a") as pager_a,
        listening(locked.login("s-2"), everything, identifier="s") as sensor,
        connected(locked.login("gateway")) as gateway,
    ):
        for topic in published:
            await gateway.publish(topic, b"x", qos=1)
        await technician.until(f"{TOPICS.prefix}/gateway/stats")
        assert technician.topics() == published[-3:]
        await pager_a.until(TOPICS.ack_answer("pager-a"))
        assert pager_a.topics() == [TOPICS.alarm("nursery"), TOPICS.crib_state("n-1"), TOPICS.ack_answer("pager-a")]
        # The sensor's subscription is refused: a last message it may not read either shows nothing came.
        assert sensor.got == []


async def test_nobody_takes_the_gateways_client_id(locked: LockedSite) -> None:
    """Each connection's client id is its username: another account using the gateway's id takes its own session."""
    gateway_id = f"cribwatch-gateway-{SITE}"
    async with listening(locked.login("gateway"), TOPICS.ack("pager-a"), identifier=gateway_id) as gateway:
        for intruder in ("pager-a", "s-1", "technician", "staff"):
            async with connected(locked.login(intruder), identifier=gateway_id):
                pass
        async with connected(locked.login("pager-a"), identifier=f"{gateway_id}-intake") as pager_a:
            await pager_a.publish(TOPICS.ack("pager-a"), b"still there?", qos=1)
            assert await gateway.until(TOPICS.ack("pager-a")) == b"still there?"
    assert "Client gateway already connected" not in locked.broker.log_text()


async def test_accounts_that_run_side_by_side_never_knock_each_other_off(locked: LockedSite) -> None:
    """Each account allows one connection (the client id is the username): two wall screens, the simulator's
    watcher beside a live board, a technician's monitor beside `cribwatch test-alarm`'s account. All connected at
    once, each still gets what it reads, and the broker closed no connection for another of the same name."""
    alarm, stats = TOPICS.alarm("nursery"), f"{TOPICS.prefix}/gateway/stats"
    async with (
        listening(locked.login("staff"), TOPICS.alarm_filter, identifier="board-1") as board_1,
        listening(locked.login("hall-1"), TOPICS.alarm_filter, identifier="board-2") as board_2,
        listening(locked.login("watcher"), TOPICS.alarm_filter, identifier="check") as watcher,
        listening(locked.login("technician"), f"{TOPICS.prefix}/gateway/#", identifier="monitor") as monitor,
        listening(locked.login("technician-tool"), f"{TOPICS.prefix}/cmd/+/answer", identifier="tool") as tool,
        connected(locked.login("gateway")) as gateway,
    ):
        await gateway.publish(alarm, b"raised", qos=1)
        await gateway.publish(stats, b"{}", qos=1)
        await gateway.publish(f"{TOPICS.prefix}/cmd/technician-tool/answer", b"ok", qos=1)
        for listener in (board_1, board_2, watcher):
            assert await listener.until(alarm) == b"raised"
        assert await monitor.until(stats) == b"{}"
        assert await tool.until(f"{TOPICS.prefix}/cmd/technician-tool/answer") == b"ok"
    assert "already connected, closing old connection" not in locked.broker.log_text()


async def test_boards_and_the_watcher_acknowledge_nothing_and_a_coordinators_device_reads_its_notices_only(
    locked: LockedSite,
) -> None:
    """A wall board and the watcher read the alarm ids but may not write an ack (``topic deny`` over the ack
    patterns); a helping-hands coordinator's device reads its own notices, no alarm or crib state."""
    async with (
        listening(locked.login("gateway"), f"{TOPICS.prefix}/ack/#") as gateway,
        listening(locked.login("tablet-coord"), f"{TOPICS.prefix}/#", identifier="coord") as tablet,
        connected(locked.login("hall-1")) as board,
        connected(locked.login("watcher")) as watcher,
        connected(locked.login("pager-a")) as pager,
        connected(locked.login("gateway-intake")) as gateway_out,  # the listener is `gateway`: one connection each
    ):
        await board.publish(TOPICS.ack("hall-1"), b"forged", qos=1)
        await watcher.publish(TOPICS.ack("watcher"), b"forged", qos=1)
        for topic in (TOPICS.alarm("nursery"), TOPICS.crib_state("n-1"), f"{TOPICS.prefix}/notify/tablet-coord"):
            await gateway_out.publish(topic, b"x", qos=1)
        await pager.publish(TOPICS.ack("pager-a"), b"mine", qos=1)
        await gateway.until(TOPICS.ack("pager-a"))
        await tablet.until(f"{TOPICS.prefix}/notify/tablet-coord")
        assert gateway.topics() == [TOPICS.ack("pager-a")]
        assert tablet.topics() == [f"{TOPICS.prefix}/notify/tablet-coord"]


# -- end to end: gateway, simulator, staff device ------------------------------------------------------------------


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
async def test_gateway_simulator_and_staff_device_end_to_end(
    locked: LockedSite, tls: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway logs in from the credentials file (two accounts, one per connection), the simulator's sensors
    from the same file, a staff device with its own account: an alarm, its acknowledgement, its answer. Each run has
    its own sensor and crib (a sensor's latch is retained: the next gateway would raise the alarm at its start)."""
    for var in ("CRIBWATCH_MQTT_USERNAME", "CRIBWATCH_MQTT_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    sensor, crib = ("s-2", "n-2") if tls else ("s-1", "n-1")
    address = locked.plain(tls=tls)
    site_file = tmp_path / "site.toml"
    mqtt = f'host = "127.0.0.1"\nport = {address.port}\ncredentials_file = "{locked.credentials_file}"\n'
    if tls:
        mqtt += f'tls = true\ntls_ca_file = "{locked.client_tls.ca_file}"\n'
        mqtt += f'tls_cert_file = "{locked.client_tls.cert_file}"\ntls_key_file = "{locked.client_tls.key_file}"\n'
    site_file.write_text(SITE_FILE.replace("[mqtt]\n", "[mqtt]\n" + mqtt, 1))
    env = {"CRIBWATCH_STATE_DIR": str(tmp_path / "state")}
    settings = load_settings(site_file, env=env)
    assert (settings.mqtt.username, settings.mqtt.intake_username) == ("gateway", "gateway-intake")
    gw = Gateway(settings, pin_factory=MockFactory())
    task = asyncio.create_task(gw.run(), name="gateway-under-test")
    try:
        async with asyncio.timeout(WAIT_S):
            await gw.mqtt.connected.wait()
        sensors = load_credentials(locked.credentials_file)  # the simulator's reading of the same file
        async with (
            Fleet(TOPICS, address, [sensor], credentials=sensors) as fleet,
            listening(locked.login("pager-a", tls=tls), TOPICS.alarm_filter, TOPICS.ack_answer("pager-a")) as pager,
        ):
            await fleet[sensor].open()
            raised = decode(AlarmEventPayload, await pager.until(TOPICS.alarm("nursery")))
            assert (raised.crib, raised.event) == (crib, AlarmEventType.RAISED)
            ack = encode(AckPayload(alarm_id=raised.alarm_id, by="pager-a"))
            await pager.client.publish(TOPICS.ack("pager-a"), ack, qos=1)
            answer = decode(AckAnswerPayload, await pager.until(TOPICS.ack_answer("pager-a")))
            assert answer.result == "accepted"
            # The technician's tool reads its account from the same file: [technician], never the gateway's (which
            # would take the gateway's session: the connection counts below would show it).
            tool = ["test-alarm", "--config", str(site_file), crib, "--timeout", "10"]
            assert await asyncio.to_thread(cribwatch, tool) == 0
        assert (gw.mqtt.connections, gw.mqtt.intake_connections) == (1, 1)  # nobody knocked a connection off
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_the_environments_main_account_keeps_the_files_intake_on_the_shipped_broker(
    locked: LockedSite, tmp_path: Path
) -> None:
    """CRIBWATCH_MQTT_USERNAME/PASSWORD set (the old advice of README and the systemd unit) beside the credentials
    file: the intake still logs in as [gateway_intake], so the two connections stay up side by side on the broker
    that makes the username the client id; with the main account alone the gateway refuses to start."""
    site_file = tmp_path / "site.toml"
    mqtt = f'host = "127.0.0.1"\nport = {locked.broker.endpoint.port}\ncredentials_file = "{locked.credentials_file}"\n'
    site_file.write_text(SITE_FILE.replace("[mqtt]\n", "[mqtt]\n" + mqtt, 1))
    gateway = locked.creds.single["gateway"]
    env = {"CRIBWATCH_STATE_DIR": str(tmp_path / "state"), "CRIBWATCH_MQTT_USERNAME": gateway.username}
    env["CRIBWATCH_MQTT_PASSWORD"] = gateway.password
    settings = load_settings(site_file, env=env)
    assert (settings.mqtt.username, settings.mqtt.intake_username) == ("gateway", "gateway-intake")
    gw = Gateway(settings, pin_factory=MockFactory())
    task = asyncio.create_task(gw.run(), name="gateway-env-account")
    try:
        async with asyncio.timeout(WAIT_S):
            await gw.mqtt.connected.wait()
        # An ack through the intake, answered by the gateway (no such alarm): both connections are up and working.
        async with listening(locked.login("pager-a"), TOPICS.ack_answer("pager-a")) as pager:
            ack = encode(AckPayload(alarm_id="no-such-alarm", by="pager-a"))
            await pager.client.publish(TOPICS.ack("pager-a"), ack, qos=1)
            await pager.until(TOPICS.ack_answer("pager-a"))
        assert (gw.mqtt.connections, gw.mqtt.intake_connections) == (1, 1)  # nobody knocked a connection off
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    one = {"CRIBWATCH_MQTT_INTAKE_USERNAME": gateway.username, "CRIBWATCH_MQTT_INTAKE_PASSWORD": gateway.password}
    alone = load_settings(site_file, env={**env, **one})
    with pytest.raises(ConfigError, match="both MQTT connections would log in as 'gateway'"):
        Gateway(alone, pin_factory=MockFactory())


async def test_the_simulators_command_line_speaks_tls_with_the_provisioned_accounts(locked: LockedSite) -> None:
    """`cribwatch sim --tls --cafile CA --credentials FILE`: the sensor logs in over TLS with its own account."""
    assert locked.broker.tls_port is not None
    argv = ["--sensor", "s-1", "--site", SITE, "--port", str(locked.broker.tls_port), "--tls"]
    argv += ["--cafile", locked.client_tls.ca_file, "--credentials", str(locked.credentials_file)]
    args = sim_cli.build_parser().parse_args([*argv, "--script", "heartbeat s-1; quit"])
    plan = sim_cli.plan_from_args(args, env={})
    assert plan.broker.tls == TlsOptions(locked.client_tls.ca_file)
    telemetry = f"{TOPICS.prefix}/sensor/s-1/telemetry"
    async with listening(locked.login("gateway"), telemetry, identifier="gateway") as gateway:
        assert await sim_cli.simulate(plan) == 0
        await gateway.until(telemetry)
    with pytest.raises(sim_cli.UsageError, match="need --tls"):
        sim_cli.plan_from_args(sim_cli.build_parser().parse_args(["--count", "1", "--cafile", "x"]), env={})


def test_the_tls_benchmark_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """bench/tls.py end to end on a few samples (its figures are in docs/broker.md; no timing is asserted)."""
    assert tls_bench.main(["--samples", "100", "--connects", "2", "--json"]) == 0
    summaries = json.loads(capsys.readouterr().out)
    assert {name: s["n"] for name, s in summaries.items()} == {
        "hop_plain_ms": 100,
        "hop_tls_ms": 100,
        "connect_plain_ms": 2,
        "connect_tls_ms": 2,
    }


async def test_the_simulator_on_a_site_file_never_logs_in_as_the_gateway(
    locked: LockedSite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`cribwatch sim --config site.toml`, whose [mqtt] credentials_file gives the gateway's account: the sensors log
    in with theirs from the same file, and none with the gateway's (which would take the gateway's session)."""
    for var in ("CRIBWATCH_MQTT_USERNAME", "CRIBWATCH_MQTT_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    site_file = tmp_path / "site.toml"
    mqtt = f'host = "127.0.0.1"\nport = {locked.broker.endpoint.port}\ncredentials_file = "{locked.credentials_file}"\n'
    site_file.write_text(SITE_FILE.replace("[mqtt]\n", "[mqtt]\n" + mqtt, 1))
    args = sim_cli.build_parser().parse_args(["--config", str(site_file), "--script", "heartbeat s-1; quit"])
    plan = sim_cli.plan_from_args(args, env={})
    assert plan.broker.username is None
    assert plan.credentials is not None
    assert sorted(plan.credentials.sensors) == ["s-1", "s-2"]
    telemetry = f"{TOPICS.prefix}/sensor/s-1/telemetry"
    async with listening(locked.login("gateway"), telemetry, identifier="gateway") as gateway:
        assert await sim_cli.simulate(plan) == 0
        await gateway.until(telemetry)  # the listener, logged in as the gateway, was never knocked off


async def test_one_more_sensor_is_one_command_and_a_reload(locked: LockedSite) -> None:
    """`cribwatch provision --add sensor s-9`, then `systemctl reload mosquitto` (SIGHUP): s-9 logs in, with no
    restart; everyone else's password is unchanged."""
    root = locked.credentials_file.parent
    files = ["--credentials", str(locked.credentials_file), "--password-file", str(root / "cribwatch.passwd")]
    assert cribwatch(["provision", "--add", "sensor", "s-9", *files, "--acl", str(root / "cribwatch.acl")]) == 0
    creds = read_credentials_file(locked.credentials_file)
    assert creds.sensors["s-1"] == locked.creds.sensors["s-1"]
    s9 = replace(locked.plain(), username="s-9", password=creds.sensors["s-9"].password)
    assert not await _connects(s9)  # not before the broker reads its files again
    locked.broker.reload()
    async with asyncio.timeout(WAIT_S):
        while not await _connects(s9):  # noqa: ASYNC110 - the broker signals nothing when it has reloaded
            await asyncio.sleep(0.05)


async def test_a_broker_that_asks_for_client_certificates(tmp_path: Path) -> None:
    """tls.conf with require_certificate true: the gateway's tls_cert_file/tls_key_file get in, no certificate
    does not (the password is asked all the same)."""
    broker_tls, client_tls = make_test_ca(tmp_path / "ca")
    passwd = tmp_path / "passwd"
    passwd.write_text(f"gw:{hash_password('pw')}\n")
    with MosquittoBroker(
        tmp_path / "broker", shipped=True, password_file=passwd, tls=replace(broker_tls, require_certificate=True)
    ) as broker:
        assert broker.tls_port is not None
        address = BrokerAddress("127.0.0.1", broker.tls_port, "gw", "pw", tls=client_tls)
        assert await _connects(address)
        assert not await _connects(replace(address, tls=TlsOptions(client_tls.ca_file)))
        assert not await _connects(replace(address, password="wrong"))
