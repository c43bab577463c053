"""The sensor simulator: its command language (unit), and on a real Mosquitto that it speaks gateway.protocol
exactly as the firmware does (integration: retained online + latch, per-channel seq, last will, reboot,
network blip, reconnecting by itself after a lost connection or a broker restart, a client id used twice,
clean stop, fleets, the CLI)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import tomllib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiomqtt
import pytest
from pydantic import BaseModel

from devtools.brokers import BrokerEndpoint, MosquittoBroker, free_port
from firmware_sim import cli
from firmware_sim.commands import (
    HELP,
    VERBS,
    CloseLatch,
    CommandError,
    Heartbeat,
    Help,
    NetworkBlip,
    OpenLatch,
    PowerOff,
    PowerOn,
    Quit,
    Reboot,
    SetBattery,
    Shutdown,
    Sleep,
    Status,
    parse_command,
    parse_script,
    split_script,
)
from firmware_sim.fleet import Fleet, wireless_sensor_ids
from firmware_sim.sensor import TAKEOVER_LOSSES, SensorOfflineError, Sent, SimulatedSensor, next_count
from gateway.domain.vocab import LatchState
from gateway.mqtt.connection import BrokerAddress, new_client
from gateway.protocol import (
    BOOT_MAX,
    SEQ_MAX,
    AvailabilityPayload,
    LatchPayload,
    ProtocolError,
    SensorChannel,
    TelemetryPayload,
    Topics,
    decode,
)
from gateway.settings import load_settings, settings_from_mapping

REPO = Path(__file__).resolve().parents[1]
KIDS_F = REPO / "examples" / "kids-f.toml"
WAIT_S = 5.0
"""Bound on every wait for a message; never a timing assertion."""
INTERVAL_S = 0.2
FAST_RECONNECT: dict[str, Any] = {"reconnect_min_s": 0.05, "reconnect_max_s": 0.5}
"""Small backoff for tests of reconnecting (the firmware's defaults are 0.5 s to 30 s)."""
NO_RECONNECT_S = 0.5
"""How long a test watches a sensor NOT reconnect: ten times its smallest reconnect delay."""

M = TypeVar("M", bound=BaseModel)


# -- the command language (unit) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("open s-0101", OpenLatch("s-0101")),
        ("OPEN s-0101", OpenLatch("s-0101")),
        ("close s-0101", CloseLatch("s-0101")),
        ("battery s-0102 15", SetBattery("s-0102", 15)),
        ("battery s-0102 15%", SetBattery("s-0102", 15)),
        ("heartbeat s-0102", Heartbeat("s-0102")),
        ("hb s-0102", Heartbeat("s-0102")),
        ("kill s-0103", PowerOff("s-0103")),
        ("poweron s-0103", PowerOn("s-0103")),
        ("on s-0103", PowerOn("s-0103")),
        ("reboot s-0104", Reboot("s-0104")),
        ("blip s-0104", NetworkBlip("s-0104", 0.0)),
        ("blip s-0104 6.5", NetworkBlip("s-0104", 6.5)),
        ("shutdown s-0104", Shutdown("s-0104")),
        ("sleep 2", Sleep(2.0)),
        ("sleep 0.25", Sleep(0.25)),
        ("status", Status()),
        ("help", Help()),
        ("quit", Quit()),
        ("exit", Quit()),
        ("  open   s-0101   # a comment", OpenLatch("s-0101")),
    ],
)
def test_parse_command(text: str, expected: object) -> None:
    assert parse_command(text) == expected


@pytest.mark.parametrize("text", ["", "   ", "# only a comment"])
def test_blank_lines_and_comments_are_no_command(text: str) -> None:
    assert parse_command(text) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("frobnicate s-0101", "unknown command 'frobnicate'"),
        ("open", "expected `open SENSOR`"),
        ("open s-0101 s-0102", "expected `open SENSOR`"),
        ("open S-0101", "not a sensor id"),
        ("battery s-0102", "expected `battery SENSOR PERCENT`"),
        ("battery s-0102 lots", "not a whole percentage"),
        ("battery s-0102 101", "within 0..100"),
        ("battery s-0102 -1", "within 0..100"),
        ("blip s-0104 soon", "not a number of seconds"),
        ("blip s-0104 -1", ">= 0"),
        ("sleep", "expected `sleep SECONDS`"),
        ("sleep nan", "finite"),
        ("status now", "takes no arguments"),
        ("quit please", "takes no arguments"),
    ],
)
def test_parse_errors_say_what_was_expected(text: str, message: str) -> None:
    with pytest.raises(CommandError, match=message):
        parse_command(text)


def test_split_script_on_semicolons_and_lines() -> None:
    script = "open s-0101; sleep 2;;close s-0101\n# comment; kill s-0103\n  status  \n"
    assert split_script(script) == ["open s-0101", "sleep 2", "close s-0101", "status"]


def test_parse_script_of_the_documented_example() -> None:
    script = "open s-0101; sleep 2; close s-0101; battery s-0102 15; kill s-0103; blip s-0104; reboot s-0104; quit"
    assert parse_script(script) == [
        OpenLatch("s-0101"),
        Sleep(2.0),
        CloseLatch("s-0101"),
        SetBattery("s-0102", 15),
        PowerOff("s-0103"),
        NetworkBlip("s-0104"),
        Reboot("s-0104"),
        Quit(),
    ]


def test_parse_script_names_the_bad_command() -> None:
    with pytest.raises(CommandError, match=r"command 2 \('opne s-0101'\): unknown command"):
        parse_script("sleep 1; opne s-0101; quit")


def test_commands_are_frozen() -> None:
    command = OpenLatch("s-0101")
    with pytest.raises(dataclasses.FrozenInstanceError):
        command.sensor = "s-0102"  # type: ignore[misc]


def test_help_lists_every_command() -> None:
    for verb in VERBS:
        assert verb.usage in HELP


# -- the sensor and the CLI without a broker (unit) --------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"boot": -1},
        {"boot": BOOT_MAX + 1},
        {"interval_s": 0},
        {"battery_pct": 101},
        {"rssi_dbm": 5},
        {"firmware": ""},
        {"reconnect_min_s": 0},
        {"reconnect_min_s": 2.0, "reconnect_max_s": 1.0},
    ],
)
def test_sensor_rejects_impossible_settings(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must"):
        SimulatedSensor("s-1", Topics("site"), BrokerAddress("127.0.0.1", 1883), **kwargs)


def test_counters_are_32_bit_and_wrap_to_0() -> None:
    assert next_count(0) == 1
    assert next_count(41) == 42
    assert next_count(SEQ_MAX - 1) == SEQ_MAX
    assert next_count(SEQ_MAX) == 0
    assert next_count(BOOT_MAX) == 0


def test_sensor_rejects_a_bad_id() -> None:
    with pytest.raises(ValueError, match="sensor id"):
        SimulatedSensor("Bad Id", Topics("site"), BrokerAddress("127.0.0.1", 1883))


def test_fleet_rejects_duplicate_ids() -> None:
    with pytest.raises(ValueError, match="s-1"):
        Fleet(Topics("site"), BrokerAddress("127.0.0.1", 1883), ["s-1", "s-2", "s-1"])


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--count", "0"],
        ["--count", "3", "--sensor", "s-1"],
        ["--sensor", "s-1"],
        ["--site", "Bad Site", "--sensor", "s-1"],
        ["--site", "x", "--sensor", "Bad"],
        ["--count", "2", "--interval", "0"],
        ["--count", "2", "--port", "70000"],
        ["--config", str(KIDS_F), "--site", "other"],
        ["--config", "/nonexistent/site.toml"],
    ],
)
def test_cli_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run(argv) == 2
    err = capsys.readouterr().err
    assert "error" in err
    assert "Traceback" not in err


def test_cli_config_needs_credentials(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("CRIBWATCH_MQTT_USERNAME", raising=False)
    monkeypatch.delenv("CRIBWATCH_MQTT_PASSWORD", raising=False)
    assert cli.run(["--config", str(KIDS_F)]) == 2
    assert "CRIBWATCH_MQTT_USERNAME" in capsys.readouterr().err


def test_cli_plan_from_config() -> None:
    args = cli.build_parser().parse_args(["--config", str(KIDS_F), "--port", "18830", "--interval", "0.5"])
    plan = cli.plan_from_args(args, env={"CRIBWATCH_MQTT_USERNAME": "u", "CRIBWATCH_MQTT_PASSWORD": "p"})
    settings = load_settings(KIDS_F, env={"CRIBWATCH_MQTT_USERNAME": "u", "CRIBWATCH_MQTT_PASSWORD": "p"})
    assert plan.sensor_ids == tuple(wireless_sensor_ids(settings))
    assert plan.sensor_ids[:2] == ("s-0101", "s-0102")
    assert len(plan.sensor_ids) == 9  # the wired cribs of the slaapkamer are not simulated
    assert plan.broker == BrokerAddress("127.0.0.1", 18830, "u", "p")
    assert plan.topics == Topics("kids-f")
    assert plan.interval_s == 0.5


def test_cli_plan_from_count_and_site() -> None:
    parser = cli.build_parser()
    env = {"CRIBWATCH_MQTT_USERNAME": "u", "CRIBWATCH_MQTT_PASSWORD": "p", "CRIBWATCH_MQTT_HOST": "broker"}
    plan = cli.plan_from_args(parser.parse_args(["--count", "3"]), env=env)
    assert plan.sensor_ids == ("sim-0001", "sim-0002", "sim-0003")
    assert plan.broker == BrokerAddress("broker", 1883, "u", "p")
    plan = cli.plan_from_args(parser.parse_args(["--site", "kids-f", "--sensor", "a", "--sensor", "b"]), env={})
    assert plan.sensor_ids == ("a", "b")
    assert plan.topics == Topics("kids-f")
    assert plan.broker == BrokerAddress("127.0.0.1", 1883)


def test_cli_mounts_as_a_subcommand() -> None:
    main = argparse.ArgumentParser(prog="cribwatch")
    sub = main.add_subparsers(dest="command", required=True)
    cli.build_parser(sub)
    args = main.parse_args(["sim", "--count", "2", "--script", "quit"])
    assert args.command == "sim"
    assert args.count == 2
    assert args.script == "quit"


def test_cli_cannot_connect_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()  # nothing listens there
    assert cli.run(["--count", "2", "--port", str(port), "--script", "quit"]) == 1
    err = capsys.readouterr().err
    assert f"cannot connect to the broker at 127.0.0.1:{port}" in err
    assert "Traceback" not in err


# -- on a real broker (integration) ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Received:
    sensor: str
    channel: SensorChannel
    retain: bool
    raw: bytes


class Recorder:
    """A separate MQTT client that records every sensor message of one site."""

    def __init__(self, client: aiomqtt.Client, topics: Topics) -> None:
        self._client = client
        self._topics = topics
        self.received: list[Received] = []
        self._taken: set[int] = set()
        self._arrived = asyncio.Condition()

    async def pump(self) -> None:
        async for message in self._client.messages:
            sensor, channel = self._topics.parse_sensor_topic(message.topic.value)
            assert isinstance(message.payload, bytes)
            async with self._arrived:
                self.received.append(Received(sensor, channel, message.retain, message.payload))
                self._arrived.notify_all()

    async def next(
        self,
        sensor: str,
        channel: SensorChannel,
        model: type[M],
        where: Callable[[M], bool] = lambda _: True,
    ) -> tuple[M, Received]:
        """The first message not taken yet that matches, waiting for it at most WAIT_S."""

        def find() -> tuple[M, Received] | None:
            for index, item in enumerate(self.received):
                if index in self._taken or item.sensor != sensor or item.channel != channel:
                    continue
                try:
                    payload = decode(model, item.raw)
                except ProtocolError:
                    continue
                if where(payload):
                    self._taken.add(index)
                    return payload, item
            return None

        async with asyncio.timeout(WAIT_S), self._arrived:
            while (found := find()) is None:
                await self._arrived.wait()
        return found

    async def next_raw(self, sensor: str, channel: SensorChannel, raw: bytes) -> Received:
        """The first message with exactly these bytes, waiting for it at most WAIT_S."""
        async with asyncio.timeout(WAIT_S), self._arrived:
            while True:
                for item in self.received:
                    if (item.sensor, item.channel, item.raw) == (sensor, channel, raw):
                        return item
                await self._arrived.wait()

    def channels(self, sensor: str) -> list[SensorChannel]:
        """The channels of ``sensor``'s messages, in the order they arrived."""
        return [item.channel for item in self.received if item.sensor == sensor]

    def count(self, sensor: str, channel: SensorChannel) -> int:
        return sum(1 for item in self.received if item.sensor == sensor and item.channel == channel)


@contextlib.asynccontextmanager
async def recording(broker: BrokerAddress, topics: Topics) -> AsyncIterator[Recorder]:
    """Subscribe to every sensor topic of the site (retained messages included) and record."""
    async with new_client(broker, identifier=f"test-recorder-{uuid.uuid4().hex[:12]}") as client:
        await client.subscribe(topics.sensor_filter, qos=1)
        recorder = Recorder(client, topics)
        pump = asyncio.create_task(recorder.pump())
        try:
            yield recorder
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump


class WallClock:
    """The sensors' wall clock, set by the test: a payload's ``ts`` tells who published it and when."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def broker(mqtt_endpoint: BrokerEndpoint) -> BrokerAddress:
    return BrokerAddress(mqtt_endpoint.host, mqtt_endpoint.port, mqtt_endpoint.username, mqtt_endpoint.password)


@pytest.fixture
def topics() -> Topics:
    """A site of its own for each test: retained messages of other tests cannot interfere."""
    return Topics(f"sim-{uuid.uuid4().hex[:12]}")


@pytest.fixture
async def recorder(broker: BrokerAddress, topics: Topics) -> AsyncIterator[Recorder]:
    async with recording(broker, topics) as rec:
        yield rec


LATCH_CH = SensorChannel.LATCH
TELEMETRY_CH = SensorChannel.TELEMETRY
AVAILABILITY_CH = SensorChannel.AVAILABILITY


def seq_is(seq: int) -> Callable[[LatchPayload], bool]:
    return lambda p: p.seq == seq


def is_online(p: AvailabilityPayload) -> bool:
    return p.state == "online"


def is_offline(p: AvailabilityPayload) -> bool:
    return p.state == "offline"


@pytest.mark.integration
async def test_start_announces_online_then_latch_then_telemetry(
    broker: BrokerAddress, topics: Topics, recorder: Recorder
) -> None:
    clock = WallClock()
    async with SimulatedSensor("s-1", topics, broker, interval_s=30, wall_clock=clock) as sensor:
        online, _ = await recorder.next("s-1", AVAILABILITY_CH, AvailabilityPayload)
        latch, _ = await recorder.next("s-1", LATCH_CH, LatchPayload)
        telemetry, _ = await recorder.next("s-1", TELEMETRY_CH, TelemetryPayload)
        assert online == AvailabilityPayload(state="online", boot=1, ts=clock.now)
        assert latch == LatchPayload(boot=1, seq=0, ts=clock.now, state=LatchState.CLOSED)
        assert (telemetry.boot, telemetry.seq) == (1, 0)
        assert recorder.channels("s-1") == [AVAILABILITY_CH, LATCH_CH, TELEMETRY_CH]
        assert sensor.connected
        assert (sensor.sensor_id, sensor.boot, sensor.latch, sensor.battery_pct) == ("s-1", 1, LatchState.CLOSED, 100)

        # A gateway that starts now learns both at once: they are retained.
        async with recording(broker, topics) as late:
            online_again, item = await late.next("s-1", AVAILABILITY_CH, AvailabilityPayload)
            assert item.retain
            assert online_again == online
            latch_again, item = await late.next("s-1", LATCH_CH, LatchPayload)
            assert item.retain
            assert latch_again == latch


@pytest.mark.integration
async def test_latch_changes_carry_boot_and_the_next_latch_seq(
    broker: BrokerAddress, topics: Topics, recorder: Recorder
) -> None:
    async with SimulatedSensor("s-1", topics, broker, boot=7, interval_s=30) as sensor:
        sent = await sensor.open()
        assert isinstance(sent, Sent)
        assert (sent.boot, sent.seq) == (7, 1)
        assert sensor.latch is LatchState.OPEN
        latch, item = await recorder.next("s-1", LATCH_CH, LatchPayload, lambda p: p.seq == 1)
        assert (latch.boot, latch.state) == (7, LatchState.OPEN)
        assert not item.retain  # live delivery to a subscriber that was there already

        assert (await sensor.close_latch()).seq == 2
        # Unchanged, but the firmware re-sends on request, with a new seq.
        again = await sensor.set_latch(LatchState.CLOSED)
        assert (again.boot, again.seq) == (7, 3)
        assert again.at_perf >= sent.at_perf
        for seq in (2, 3):
            latch, _ = await recorder.next("s-1", LATCH_CH, LatchPayload, seq_is(seq))
            assert latch.state is LatchState.CLOSED

        # One counter per channel: the latch changes did not move the telemetry counter.
        telemetry, _ = await recorder.next("s-1", TELEMETRY_CH, TelemetryPayload)
        assert telemetry.seq == 0
        assert sensor.next_seq(TELEMETRY_CH) == 1


@pytest.mark.integration
async def test_heartbeats_carry_the_sensor_state(broker: BrokerAddress, topics: Topics, recorder: Recorder) -> None:
    sensor = SimulatedSensor(
        "s-1", topics, broker, interval_s=INTERVAL_S, battery_pct=80, rssi_dbm=-71, firmware="2.3.4"
    )
    async with sensor:
        first, _ = await recorder.next("s-1", TELEMETRY_CH, TelemetryPayload, lambda p: p.seq == 0)
        assert first.boot == 1
        assert (first.battery_pct, first.rssi_dbm, first.fw, first.interval_s) == (80, -71, "2.3.4", INTERVAL_S)
        assert first.uptime_s >= 0
        # The periodic heartbeat, not retained.
        periodic, item = await recorder.next("s-1", TELEMETRY_CH, TelemetryPayload, lambda p: p.seq == 1)
        assert periodic.battery_pct == 80
        assert not item.retain

        await sensor.set_battery(15)
        low, _ = await recorder.next("s-1", TELEMETRY_CH, TelemetryPayload, lambda p: p.battery_pct == 15)
        assert sensor.battery_pct == 15
        await sensor.heartbeat_now()
        after, _ = await recorder.next("s-1", TELEMETRY_CH, TelemetryPayload, lambda p: p.seq > low.seq)
        assert after.battery_pct == 15
        assert after.uptime_s >= first.uptime_s

    telemetry = [decode(TelemetryPayload, i.raw) for i in recorder.received if i.channel is TELEMETRY_CH]
    seqs = [t.seq for t in telemetry]
    assert seqs == list(range(len(seqs)))  # one counter, no gaps, in order
    with pytest.raises(ValueError, match="battery"):
        await sensor.set_battery(120)


@pytest.mark.integration
async def test_power_off_makes_the_broker_publish_the_will(
    broker: BrokerAddress, topics: Topics, recorder: Recorder
) -> None:
    clock = WallClock(1000.0)
    sensor = SimulatedSensor("s-1", topics, broker, interval_s=INTERVAL_S, wall_clock=clock)
    await sensor.start()
    try:
        await recorder.next("s-1", AVAILABILITY_CH, AvailabilityPayload, is_online)
        clock.now = 2000.0
        await sensor.power_off()
        assert not sensor.connected
        assert not sensor.powered
        # Published by the broker: the will was made at connect time (ts 1000), the sensor sent nothing.
        will, _ = await recorder.next("s-1", AVAILABILITY_CH, AvailabilityPayload, is_offline)
        assert will == AvailabilityPayload(state="offline", boot=1, ts=1000.0)
        async with recording(broker, topics) as late:
            retained, item = await late.next("s-1", AVAILABILITY_CH, AvailabilityPayload)
            assert item.retain
            assert retained == will

        # Powered off, it is silent; what happens to the latch meanwhile goes out at the next power-up.
        with pytest.raises(SensorOfflineError):
            await sensor.open()
        assert sensor.latch is LatchState.OPEN
        with pytest.raises(SensorOfflineError):
            await sensor.heartbeat_now()
        assert recorder.count("s-1", LATCH_CH) == 1

        await sensor.power_on()
        latch, _ = await recorder.next("s-1", LATCH_CH, LatchPayload, lambda p: p.boot == 2)
        assert (latch.seq, latch.state) == (0, LatchState.OPEN)
        await sensor.power_off()  # and again: heartbeats of boot 2 stop, nothing crashes
        await recorder.next("s-1", AVAILABILITY_CH, AvailabilityPayload, lambda p: is_offline(p) and p.boot == 2)
    finally:
        await sensor.stop()


@pytest.mark.integration
async def test_reboot_increments_boot_and_restarts_every_seq(
    broker: BrokerAddress, topics: Topics, recorder: Recorder
) -> None:
    async with SimulatedSensor("s-1", topics, broker, interval_s=30) as sensor:
        await sensor.open()
        await sensor.heartbeat_now()
        await recorder.next("s-1", LATCH_CH, LatchPayload, lambda p: p.seq == 1)
        await recorder.next("s-1", TELEMETRY_CH, TelemetryPayload, lambda p: p.seq == 1)

        await sensor.reboot()
        assert sensor.boot == 2
        assert sensor.connected
        will, _ = await recorder.next("s-1", AVAILABILITY_CH, AvailabilityPayload, is_offline)
        assert will.boot == 1
        online, _ = await recorder.next("s-1", AVAILABILITY_CH, AvailabilityPayload, lambda p: p.boot == 2)
        assert online.state == "online"
        latch, _ = await recorder.next("s-1", LATCH_CH, LatchPayload, lambda p: p.boot == 2)
        assert (latch.seq, latch.state) == (0, LatchState.OPEN)
        telemetry, _ = await recorder.next("s-1", TELEMETRY_CH, TelemetryPayload, lambda p: p.boot == 2)
        assert telemetry.seq == 0
        assert (await sensor.close_latch()).seq == 1


@pytest.mark.integration
async def test_boot_and_seq_wrap_from_4294967295_to_0(
    broker: BrokerAddress, topics: Topics, recorder: Recorder
) -> None:
    """Both counters are unsigned 32-bit (docs/protocol.md): the last value goes on the wire, then 0."""
    clock = WallClock(1000.0)
    async with SimulatedSensor("s-1", topics, broker, boot=BOOT_MAX, interval_s=30, wall_clock=clock) as sensor:
        online, _ = await recorder.next("s-1", AVAILABILITY_CH, AvailabilityPayload, is_online)
        assert online.boot == BOOT_MAX
        sensor._seq[LATCH_CH] = SEQ_MAX  # noqa: SLF001 - 2**32 messages would take a while
        clock.now = 2000.0
        assert (await sensor.open()).seq == SEQ_MAX
        clock.now = 3000.0
        assert (await sensor.close_latch()).seq == 0
        top, _ = await recorder.next("s-1", LATCH_CH, LatchPayload, lambda p: p.ts == 2000.0)
        wrapped, _ = await recorder.next("s-1", LATCH_CH, LatchPayload, lambda p: p.ts == 3000.0)
        assert (top.state, wrapped.state) == (LatchState.OPEN, LatchState.CLOSED)
        assert (top.boot, top.seq, wrapped.boot, wrapped.seq) == (BOOT_MAX, SEQ_MAX, BOOT_MAX, 0)

        await sensor.reboot()
        assert sensor.boot == 0
        online, _ = await recorder.next("s-1", AVAILABILITY_CH, AvailabilityPayload, lambda p: p.boot == 0)
        assert online.state == "online"
        latch, _ = await recorder.next("s-1", LATCH_CH, LatchPayload, lambda p: p.boot == 0)
        assert latch.seq == 0


@pytest.mark.integration
async def test_network_blip_keeps_boot_and_continues_seq(
    broker: BrokerAddress, topics: Topics, recorder: Recorder
) -> None:
    async with SimulatedSensor("s-1", topics, broker, boot=5, interval_s=30) as sensor:
        await sensor.open()
        await sensor.heartbeat_now()
        await recorder.next("s-1", LATCH_CH, LatchPayload, lambda p: p.seq == 1)

        await sensor.network_blip()
        assert sensor.boot == 5
        assert sensor.connected
        # The broker saw a connection die (the will), then the same boot came back and announced itself.
        will, _ = await recorder.next("s-1", AVAILABILITY_CH, AvailabilityPayload, is_offline)
        assert will.boot == 5
        online, _ = await recorder.next("s-1", AVAILABILITY_CH, AvailabilityPayload, is_online)
        online_again, _ = await recorder.next("s-1", AVAILABILITY_CH, AvailabilityPayload, is_online)
        assert online.boot == online_again.boot == 5
        latch, _ = await recorder.next("s-1", LATCH_CH, LatchPayload, lambda p: p.seq == 2)
        assert (latch.boot, latch.state) == (5, LatchState.OPEN)
        telemetry, _ = await recorder.next("s-1", TELEMETRY_CH, TelemetryPayload, lambda p: p.seq == 2)
        assert telemetry.boot == 5
        assert (await sensor.close_latch()).seq == 3
        assert sensor.reconnects == 0  # the blip reconnected; the sensor did not have to


@pytest.mark.integration
async def test_taken_over_connection_comes_back_by_itself(
    broker: BrokerAddress, topics: Topics, recorder: Recorder
) -> None:
    clock = WallClock(1000.0)
    sensor = SimulatedSensor("s-1", topics, broker, interval_s=INTERVAL_S, wall_clock=clock, **FAST_RECONNECT)
    async with sensor:
        await recorder.next("s-1", AVAILABILITY_CH, AvailabilityPayload, is_online)
        await recorder.next("s-1", TELEMETRY_CH, TelemetryPayload, lambda p: p.seq == 1)
        clock.now = 2000.0
        # Another client with the sensor's client id: the broker closes the sensor's connection (the will),
        # the sensor reconnects by itself, and now the broker closes the other client's connection.
        with contextlib.suppress(aiomqtt.MqttError):
            async with new_client(broker, identifier=sensor.client_id):
                will, _ = await recorder.next("s-1", AVAILABILITY_CH, AvailabilityPayload, is_offline)
                assert will == AvailabilityPayload(state="offline", boot=1, ts=1000.0)
                online, _ = await recorder.next("s-1", AVAILABILITY_CH, AvailabilityPayload, is_online)
        assert online == AvailabilityPayload(state="online", boot=1, ts=2000.0)
        # Announced as on every connect: same boot, the latch again with the next seq, a heartbeat.
        latch, _ = await recorder.next("s-1", LATCH_CH, LatchPayload, seq_is(1))
        assert (latch.boot, latch.state, latch.ts) == (1, LatchState.CLOSED, 2000.0)
        await recorder.next("s-1", TELEMETRY_CH, TelemetryPayload, lambda p: p.boot == 1 and p.ts == 2000.0)
        async with asyncio.timeout(WAIT_S):
            await sensor.wait_connected()
        async with recording(broker, topics) as late:  # retained, as on the first connect
            assert (await late.next("s-1", AVAILABILITY_CH, AvailabilityPayload))[0] == online
            assert (await late.next("s-1", LATCH_CH, LatchPayload))[0] == latch
        assert sensor.connected
        assert sensor.powered
        assert sensor.reconnects == 1
        assert sensor.boot == 1
        # The will is composed per connection: the one of the new connection carries its connect time.
        clock.now = 3000.0
        await sensor.power_off()
        will, _ = await recorder.next("s-1", AVAILABILITY_CH, AvailabilityPayload, is_offline)
        assert will == AvailabilityPayload(state="offline", boot=1, ts=2000.0)


@pytest.mark.integration
async def test_sensor_comes_back_by_itself_after_a_broker_restart(tmp_path: Path) -> None:
    topics = Topics("restart")
    with MosquittoBroker(tmp_path / "b", users={"u": "p"}) as mosquitto:
        broker = mosquitto.endpoint
        sensor = SimulatedSensor("s-1", topics, broker, boot=3, interval_s=INTERVAL_S, **FAST_RECONNECT)
        async with sensor:
            async with asyncio.timeout(WAIT_S):
                await sensor.wait_connected()
            assert sensor.next_seq(LATCH_CH) == 1
            telemetry_before = sensor.next_seq(TELEMETRY_CH)

            await asyncio.to_thread(mosquitto.kill)  # a crash: no will, nothing saved
            async with asyncio.timeout(WAIT_S):
                await sensor.wait_disconnected()
            assert sensor.powered
            assert not sensor.connected
            # Silent while the broker is away; the latch still changes and goes out on reconnect.
            with pytest.raises(SensorOfflineError):
                await sensor.open()
            assert sensor.latch is LatchState.OPEN

            await asyncio.to_thread(mosquitto.start)  # the same port, users and persistence
            async with asyncio.timeout(WAIT_S):
                await sensor.wait_connected()
            assert sensor.reconnects == 1
            assert sensor.boot == 3
            async with recording(broker, topics) as recorder:
                online, item = await recorder.next("s-1", AVAILABILITY_CH, AvailabilityPayload)
                assert (online.state, online.boot) == ("online", 3)
                assert item.retain
                # A connection loss is not a reboot: same boot, the latch counter continues.
                latch, item = await recorder.next("s-1", LATCH_CH, LatchPayload)
                assert (latch.boot, latch.seq, latch.state) == (3, 1, LatchState.OPEN)
                assert item.retain
                # Heartbeats continue (periodic ones, live), their counter too.
                for _ in range(2):
                    telemetry, item = await recorder.next("s-1", TELEMETRY_CH, TelemetryPayload)
                    assert telemetry.boot == 3
                    assert telemetry.seq > telemetry_before
                    assert not item.retain
                assert (await sensor.close_latch()).seq == 2
                await recorder.next("s-1", LATCH_CH, LatchPayload, seq_is(2))
        # A clean stop after the restart still says offline itself.
        async with recording(broker, topics) as late:
            offline, _ = await late.next("s-1", AVAILABILITY_CH, AvailabilityPayload)
            assert (offline.state, offline.boot) == ("offline", 3)


@pytest.mark.integration
async def test_power_off_and_stop_do_not_reconnect(broker: BrokerAddress, topics: Topics, recorder: Recorder) -> None:
    sensor = SimulatedSensor("s-1", topics, broker, interval_s=INTERVAL_S, **FAST_RECONNECT)
    await sensor.start()
    try:
        await recorder.next("s-1", AVAILABILITY_CH, AvailabilityPayload, is_online)
        await sensor.power_off()
        await recorder.next("s-1", AVAILABILITY_CH, AvailabilityPayload, is_offline)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(NO_RECONNECT_S):
                await sensor.wait_connected()
        assert not sensor.connected
        assert sensor.reconnects == 0

        await sensor.power_on()
        async with asyncio.timeout(WAIT_S):
            await sensor.wait_connected()  # at once: power_on returns connected
        await recorder.next("s-1", AVAILABILITY_CH, AvailabilityPayload, lambda p: is_online(p) and p.boot == 2)
    finally:
        await sensor.stop()
    await recorder.next("s-1", AVAILABILITY_CH, AvailabilityPayload, lambda p: is_offline(p) and p.boot == 2)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(NO_RECONNECT_S):
            await sensor.wait_connected()
    assert sensor.reconnects == 0
    assert [decode(AvailabilityPayload, i.raw).state for i in recorder.received if i.channel is AVAILABILITY_CH] == [
        "online",
        "offline",
        "online",
        "offline",
    ]


class _WarningSeen(logging.Handler):
    """Sets an event when a warning containing ``text`` is logged."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.WARNING)
        self.text = text
        self.seen = asyncio.Event()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.count += 1
            self.seen.set()


async def either_connected(*sensors: SimulatedSensor) -> None:
    """Return once one of ``sensors`` is connected and has announced itself."""
    waits = [asyncio.create_task(sensor.wait_connected()) for sensor in sensors]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
        await asyncio.wait(waits)


@pytest.mark.integration
async def test_two_sensors_with_one_client_id_do_not_fight_for_ever(
    broker: BrokerAddress, topics: Topics, recorder: Recorder
) -> None:
    # Two simulators running the same sensor (a technician's mistake): each connect closes the other's
    # connection. After a few short-lived connections in a row one of them warns and backs off to
    # reconnect_max_s, so the other keeps its connection.
    options: dict[str, Any] = {"interval_s": 0.1, "reconnect_min_s": 0.05, "reconnect_max_s": 60.0}
    first = SimulatedSensor("s-1", topics, broker, boot=1, **options)
    second = SimulatedSensor("s-1", topics, broker, boot=2, **options)
    watcher = _WarningSeen(f"client id {first.client_id} is used by another client")
    logger = logging.getLogger("firmware_sim.sensor")
    logger.addHandler(watcher)
    try:
        async with first, second:
            async with asyncio.timeout(WAIT_S):
                await watcher.seen.wait()
            # The one that warned waits reconnect_max_s now; the other is connected (or just connecting).
            async with asyncio.timeout(WAIT_S):
                await either_connected(first, second)
            winner, loser = (first, second) if first.connected else (second, first)
            assert winner.connected
            assert not loser.connected
            assert loser.powered
            # It took a few rounds, not a spin.
            assert loser.reconnects <= TAKEOVER_LOSSES
            assert winner.reconnects <= TAKEOVER_LOSSES
            counts = (first.reconnects, second.reconnects)
            # The winner keeps its connection for several heartbeats, nobody reconnects meanwhile.
            start = winner.next_seq(TELEMETRY_CH)
            await recorder.next(
                "s-1", TELEMETRY_CH, TelemetryPayload, lambda p: p.boot == winner.boot and p.seq >= start + 3
            )
            assert winner.connected
            assert not loser.connected
            assert (first.reconnects, second.reconnects) == counts
            assert watcher.count == 1
    finally:
        logger.removeHandler(watcher)


@pytest.mark.integration
async def test_stop_publishes_offline_itself(broker: BrokerAddress, topics: Topics, recorder: Recorder) -> None:
    clock = WallClock(1000.0)
    sensor = SimulatedSensor("s-1", topics, broker, interval_s=INTERVAL_S, wall_clock=clock)
    await sensor.start()
    await recorder.next("s-1", AVAILABILITY_CH, AvailabilityPayload, is_online)
    clock.now = 2000.0
    await sensor.stop()
    assert not sensor.connected
    # ts 2000: the sensor's own message at shutdown, not the will (made at connect, ts 1000).
    offline, _ = await recorder.next("s-1", AVAILABILITY_CH, AvailabilityPayload, is_offline)
    assert offline == AvailabilityPayload(state="offline", boot=1, ts=2000.0)
    await sensor.stop()  # a second stop does nothing


@pytest.mark.integration
async def test_stop_does_not_hang_on_a_heartbeat_that_swallows_its_cancellation(
    broker: BrokerAddress, topics: Topics, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On Python 3.11 aiomqtt's publish (asyncio.wait_for inside) returns normally instead of raising
    # CancelledError when the publish completes in the same loop step as the cancel: the heartbeat task then
    # goes on. Stopping must not wait for it for ever.
    sensor = SimulatedSensor("s-1", topics, broker, interval_s=0.05)
    await sensor.start()
    entered = asyncio.Event()

    async def publish_swallowing_the_cancel() -> None:
        entered.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()

    monkeypatch.setattr(sensor, "_publish_telemetry", publish_swallowing_the_cancel)
    async with asyncio.timeout(WAIT_S):
        await entered.wait()
        await sensor.stop()
    assert not sensor.connected


@pytest.mark.integration
async def test_send_raw_publishes_bytes_as_they_are(broker: BrokerAddress, topics: Topics, recorder: Recorder) -> None:
    async with SimulatedSensor("s-1", topics, broker, interval_s=30) as sensor:
        await sensor.send_raw(SensorChannel.LATCH, b'{"v":1,"state":"ajar"', qos=1)
        item = await recorder.next_raw("s-1", LATCH_CH, b'{"v":1,"state":"ajar"')
        assert not item.retain
        with pytest.raises(ProtocolError) as info:
            decode(LatchPayload, item.raw)
        assert info.value.reason == "bad_json"


@pytest.mark.integration
async def test_fleet_of_20_starts_and_every_latch_arrives(
    broker: BrokerAddress, topics: Topics, recorder: Recorder
) -> None:
    ids = [f"f-{n:02d}" for n in range(20)]
    async with Fleet(topics, broker, ids, interval_s=30) as fleet:
        assert len(fleet) == 20
        assert [s.sensor_id for s in fleet] == ids
        assert "f-07" in fleet
        assert "f-99" not in fleet
        assert all(s.connected for s in fleet)
        for sensor_id in ids:
            latch, _ = await recorder.next(sensor_id, LATCH_CH, LatchPayload)
            assert (latch.boot, latch.seq, latch.state) == (1, 0, LatchState.CLOSED)
        sent = await fleet["f-03"].open()
        latch, _ = await recorder.next("f-03", LATCH_CH, LatchPayload, lambda p: p.seq == sent.seq)
        assert latch.state is LatchState.OPEN
    assert not any(s.connected for s in fleet)
    for sensor_id in ids:
        await recorder.next(sensor_id, AVAILABILITY_CH, AvailabilityPayload, is_offline)


@pytest.mark.integration
async def test_fleet_from_settings_simulates_the_wireless_sensors(
    mqtt_endpoint: BrokerEndpoint, broker: BrokerAddress, topics: Topics, recorder: Recorder
) -> None:
    data = tomllib.loads(KIDS_F.read_text())
    data["site"]["id"] = topics.site  # not the real site id: the shared broker keeps retained messages
    env = {
        "CRIBWATCH_MQTT_HOST": mqtt_endpoint.host,
        "CRIBWATCH_MQTT_PORT": str(mqtt_endpoint.port),
        "CRIBWATCH_MQTT_USERNAME": mqtt_endpoint.username or "",
        "CRIBWATCH_MQTT_PASSWORD": mqtt_endpoint.password or "",
    }
    settings = settings_from_mapping(data, env=env)
    fleet = Fleet.from_settings(settings, interval_s=30)
    assert fleet.broker == broker
    assert fleet.topics == topics
    assert fleet.sensor_ids == wireless_sensor_ids(settings)
    assert len(fleet) == 9
    assert not any(i.startswith("gpio") for i in fleet.sensor_ids)
    async with fleet:
        for sensor_id in fleet.sensor_ids:
            await recorder.next(sensor_id, LATCH_CH, LatchPayload)


@pytest.mark.integration
def test_cli_script_end_to_end(
    mqtt_endpoint: BrokerEndpoint,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("CRIBWATCH_MQTT_USERNAME", mqtt_endpoint.username or "")
    monkeypatch.setenv("CRIBWATCH_MQTT_PASSWORD", mqtt_endpoint.password or "")
    site = f"cli-{uuid.uuid4().hex[:12]}"
    script = "open c-1; battery c-2 15; kill c-2; open c-2; nosuch c-1; open c-9; blip c-1; status; quit"
    argv = ["--site", site, "--sensor", "c-1", "--sensor", "c-2", "--host", mqtt_endpoint.host]
    argv += ["--port", str(mqtt_endpoint.port), "--interval", "0.2", "--script", script]
    assert cli.run(argv) == 0
    out, err = capsys.readouterr()
    assert "c-1 latch open (boot 1, seq 1)" in out
    assert "c-2 battery 15 %" in out
    assert "c-2 powered off" in out
    assert "c-1 reconnected: boot 1" in out
    assert "c-2 boot 1 latch open battery 15 % powered off" in out
    assert "unknown command 'nosuch'" in err
    assert "unknown sensor 'c-9'" in err
    assert "sensor c-2 is powered off" in err
    assert "Traceback" not in out + err

    async def retained() -> None:
        topics = Topics(site)
        address = BrokerAddress(mqtt_endpoint.host, mqtt_endpoint.port, mqtt_endpoint.username, mqtt_endpoint.password)
        async with recording(address, topics) as late:
            latch, item = await late.next("c-1", LATCH_CH, LatchPayload)
            assert item.retain
            assert (latch.boot, latch.seq, latch.state) == (1, 2, LatchState.OPEN)  # re-sent after the blip
            for sensor_id in ("c-1", "c-2"):
                availability, _ = await late.next(sensor_id, AVAILABILITY_CH, AvailabilityPayload)
                assert availability.state == "offline"

    asyncio.run(retained())
