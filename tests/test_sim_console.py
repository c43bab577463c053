"""The simulator's console and live view on a real Mosquitto: several commands on one typed line, cribs named by
crib id, a wired crib and an unknown name answered with the documented message, the broker going away and
coming back printed, and the live view's tables rendered to a non-terminal with the sensors and an alarm."""

from __future__ import annotations

import asyncio
import io
import secrets
import tomllib
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from rich.console import Console as RichConsole

from devtools.brokers import BrokerEndpoint, MosquittoBroker
from firmware_sim import cli
from firmware_sim.console import Console, CribRef, stream_lines, wired_crib_message
from firmware_sim.fleet import Fleet
from firmware_sim.live import LiveView
from gateway.domain.vocab import AlarmEventType, AlarmKind, LatchState
from gateway.mqtt.connection import BrokerAddress, new_client
from gateway.protocol import AlarmEventPayload, Topics, encode

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
KIDS_F = REPO / "examples" / "kids-f.toml"
WAIT_S = 10.0
"""Bound on every wait; never a timing assertion."""
CRIBS = (CribRef("vl-1", "vlinders", sensor_id="c-1"), CribRef("sk-1", "slaapkamer", gpio_pin=17))


@pytest.fixture
def broker(mqtt_endpoint: BrokerEndpoint) -> BrokerAddress:
    return BrokerAddress(mqtt_endpoint.host, mqtt_endpoint.port, mqtt_endpoint.username, mqtt_endpoint.password)


@pytest.fixture
def topics() -> Topics:
    return Topics(f"con-{uuid.uuid4().hex[:12]}")


@pytest.fixture
async def fleet(broker: BrokerAddress, topics: Topics) -> AsyncIterator[Fleet]:
    async with Fleet(topics, broker, ["c-1", "c-2"], interval_s=30) as running:
        yield running


async def run_lines(console: Console, text: str) -> bool:
    return await console.run(stream_lines(io.StringIO(text)))


async def test_semicolons_separate_commands_on_a_typed_line(fleet: Fleet) -> None:
    out = io.StringIO()
    console = Console(fleet, out)
    assert not await run_lines(console, "open c-1; battery c-2 40;open c-2\nstatus; close c-2\n")
    text = out.getvalue()
    assert "c-1 latch open" in text
    assert "c-2 battery 40 %" in text
    assert "c-2 latch open" in text
    assert "c-2 latch closed" in text
    assert "c-1 boot 1 latch open battery 100 % connected" in text
    assert fleet["c-1"].latch is LatchState.OPEN
    assert fleet["c-2"].latch is LatchState.CLOSED
    assert console.errors == 0


async def test_quit_in_the_middle_of_a_line_stops_there(fleet: Fleet) -> None:
    out = io.StringIO()
    assert await run_lines(Console(fleet, out), "open c-1; quit; open c-2\n")
    assert fleet["c-2"].latch is LatchState.CLOSED


async def test_a_crib_id_names_its_sensor(fleet: Fleet) -> None:
    out = io.StringIO()
    console = Console(fleet, out, cribs=CRIBS)
    await run_lines(console, "open vl-1\n")
    assert fleet["c-1"].latch is LatchState.OPEN
    assert "c-1 (crib vl-1) latch open (boot 1, seq 1)" in out.getvalue()
    assert console.errors == 0


async def test_a_wired_crib_gets_the_documented_message(fleet: Fleet) -> None:
    out, err = io.StringIO(), io.StringIO()
    console = Console(fleet, out, err, cribs=CRIBS)
    await run_lines(console, "open sk-1; status\n")
    assert "error: crib 'sk-1' (room slaapkamer) is wired to the gateway's GPIO pin 17" in err.getvalue()
    assert wired_crib_message(CRIBS[1]) in err.getvalue()
    assert "c-1 boot 1" in out.getvalue()  # and the console went on
    assert console.errors == 1


async def test_an_unknown_name_is_an_error_and_the_console_goes_on(fleet: Fleet) -> None:
    out, err = io.StringIO(), io.StringIO()
    console = Console(fleet, out, err, cribs=CRIBS)
    await run_lines(console, "open zz-9; frobnicate c-1\nopen c-2\n")
    assert "error: unknown sensor or crib 'zz-9'; known: c-1, c-2; cribs vl-1, sk-1" in err.getvalue()
    assert "error: unknown command 'frobnicate'" in err.getvalue()
    assert "c-2 latch open" in out.getvalue()
    assert console.errors == 2


def test_cli_reads_crib_ids_and_several_commands_per_line_from_stdin(
    mqtt_endpoint: BrokerEndpoint,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = KIDS_F.read_text().replace('id = "kids-f"', f'id = "cli-{uuid.uuid4().hex[:12]}"', 1)
    site = tmp_path / "site.toml"
    site.write_text(data)
    first_wired = next(crib for room in tomllib.loads(data)["rooms"] for crib in room["cribs"] if "gpio_pin" in crib)
    monkeypatch.setenv("CRIBWATCH_MQTT_USERNAME", mqtt_endpoint.username or "")
    monkeypatch.setenv("CRIBWATCH_MQTT_PASSWORD", mqtt_endpoint.password or "")
    monkeypatch.setattr("sys.stdin", io.StringIO(f"open vl-1; open s-0102\nopen {first_wired['id']}; status\n"))
    argv = ["--config", str(site), "--host", mqtt_endpoint.host, "--port", str(mqtt_endpoint.port)]
    assert cli.run(argv) == 0
    out, err = capsys.readouterr()
    assert "s-0101 (crib vl-1) latch open" in out
    assert "s-0102 latch open" in out
    assert f"is wired to the gateway's GPIO pin {first_wired['gpio_pin']}" in err
    assert "s-0101 boot 1 latch open" in out
    assert "end of input: stopping 9 sensors" in out
    assert "Traceback" not in out + err


async def until(condition: Callable[[], bool]) -> None:
    """Wait (at most WAIT_S) until ``condition()`` holds."""
    async with asyncio.timeout(WAIT_S):
        while True:
            if condition():
                return
            await asyncio.sleep(0.02)


async def wait_for_text(out: io.StringIO, text: str) -> None:
    await until(lambda: text in out.getvalue())


def again(sensor_id: str, text: str) -> bool:
    return any(sensor_id in line for line in text.splitlines() if "connected again, " in line)


async def test_the_broker_going_away_and_coming_back_is_printed(tmp_path: Path, topics: Topics) -> None:
    with MosquittoBroker(tmp_path / "broker", users={"sim": secrets.token_urlsafe(8)}) as mosquitto:
        endpoint = mosquitto.endpoint
        address = BrokerAddress(endpoint.host, endpoint.port, endpoint.username, endpoint.password)
        fleet = Fleet(topics, address, ["c-1", "c-2"], interval_s=30, reconnect_min_s=0.05, reconnect_max_s=0.3)
        out = io.StringIO()
        console = Console(fleet, out)
        async with fleet:
            watch = asyncio.create_task(console.watch_connections(poll_s=0.05))
            try:
                await asyncio.to_thread(mosquitto.kill)
                await wait_for_text(out, "connection lost for 2 of 2 sensors: c-1, c-2; is the broker down?")
                await asyncio.to_thread(mosquitto.start)
                # Each reconnects after its own backoff: one line, or one each.
                await until(lambda: all(again(sensor_id, out.getvalue()) for sensor_id in ("c-1", "c-2")))
            finally:
                watch.cancel()
                await asyncio.wait([watch])
    assert out.getvalue().count("connection lost") == 1  # one line for the whole fleet


async def test_the_live_view_renders_sensors_and_an_alarm_to_a_non_terminal(
    fleet: Fleet, broker: BrokerAddress, topics: Topics
) -> None:
    lines: list[str] = []
    view = LiveView(fleet, CRIBS, say=lines.append)
    screen = io.StringIO()
    rich_console = RichConsole(file=screen, force_terminal=False, width=140)
    assert not rich_console.is_terminal
    task = asyncio.create_task(view.run(broker, rich_console))
    try:
        await until(lambda: view.broker_state == "subscribed")
        await fleet["c-1"].open()
        event = AlarmEventPayload(
            seq=1, gw_run=1, event=AlarmEventType.RAISED, alarm_id="a-77", kind=AlarmKind.CRIB_OPEN, priority="high",
            site=topics.site, room="vlinders", crib="vl-1", room_label="Vlinders", crib_label="Bedje 1",
            ts=1_700_000_000.0, raised_at=1_700_000_000.0,
        )  # fmt: skip
        async with new_client(broker, identifier=f"test-gw-{uuid.uuid4().hex[:8]}") as gateway:
            await gateway.publish(topics.alarm("vlinders"), encode(event), qos=1)
        await until(lambda: bool(lines))
        await fleet["c-2"].heartbeat_now()
        await until(lambda: view.last_heartbeat("c-2") is not None)
    finally:
        task.cancel()
        await asyncio.wait([task])
    assert lines == ["alarm raised: crib_open room vlinders crib vl-1 priority high (alarm a-77)"]
    text = screen.getvalue()
    assert "\x1b[" not in text  # no terminal codes: plain text for a pipe or a log
    assert f"site {topics.site}: 2 sensors" in text
    row_c1 = next(line for line in text.splitlines() if "c-1" in line)
    assert "vl-1" in row_c1
    assert "connected" in row_c1
    assert "open" in row_c1
    assert "100 %" in row_c1
    row_c2 = next(line for line in text.splitlines() if "c-2" in line)
    assert "s ago" in row_c2
    assert "a-77" in text
    assert "crib_open" in text
