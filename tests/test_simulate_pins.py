"""Simulation mode (``cribwatch gateway --simulate-pins``, demo sites only) on a real Mosquitto: a wired crib opened
from the simulator's console raises crib_open after the room's grace with the buzzer sounding on the gateway's mock
pin, and closes to resolved; a pin command for a pin that is no wired crib's is counted and changes nothing; a site
that is not in demo mode refuses simulation mode. No timing assertions: every wait is bounded by WAIT_S."""

from __future__ import annotations

import asyncio
import io
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from devtools.brokers import BrokerEndpoint
from firmware_sim.console import Console, cribs_from_settings, stream_lines
from firmware_sim.fleet import Fleet
from firmware_sim.pins import PinDriver
from gateway import cli
from gateway.app import Gateway
from gateway.domain.vocab import AlarmEventType, AlarmKind, LatchState
from gateway.gpio.simulated import NEEDS_DEMO, SimulationRefusedError
from gateway.mqtt.connection import BrokerAddress, new_client
from gateway.protocol import SIM_PIN_REASON, PinLevel, Topics
from gateway.settings import Settings, settings_from_mapping
from tests.test_gateway_integration import WAIT_S, Staff, staff_device

pytestmark = pytest.mark.integration

BUZZER_PIN, LED_PIN, WIRED_PIN, OTHER_WIRED_PIN = 18, 23, 17, 27


def site_data(endpoint: BrokerEndpoint, *, demo: bool) -> dict[str, Any]:
    """A demo site: one wireless crib (the console needs a sensor) and a room of two wired cribs, grace 1 s."""
    return {
        "site": {"id": f"simpins-{secrets.token_hex(4)}", "label": "Test bench", "demo": demo},
        "mqtt": {"host": endpoint.host, "port": endpoint.port, "stats_interval_s": 0.2, "reconnect_max_s": 0.5},
        "alarms": {"offline_grace_s": 0, "heartbeat_interval_s": 30, "debounce_gpio_ms": 20},
        "buzzer": {"pin": BUZZER_PIN, "led_pin": LED_PIN},
        "rooms": [
            {"id": "nursery", "label": "Nursery", "cribs": [{"id": "n-1", "label": "N1", "sensor_id": "s-1"}]},
            {
                "id": "wired",
                "label": "Sleeping room",
                "grace_s": 1,
                "cribs": [
                    {"id": "w-1", "label": "Crib W1", "gpio_pin": WIRED_PIN},
                    {"id": "w-2", "label": "Crib W2", "gpio_pin": OTHER_WIRED_PIN},
                ],
            },
        ],
    }  # fmt: skip


def make_settings(endpoint: BrokerEndpoint, *, demo: bool = True) -> Settings:
    env = {
        "CRIBWATCH_MQTT_USERNAME": endpoint.username or "",
        "CRIBWATCH_MQTT_PASSWORD": endpoint.password or "",
        "CRIBWATCH_STATE_DIR": os.environ["CRIBWATCH_STATE_DIR"],  # the test's own (conftest.state_dir)
        "CRIBWATCH_MQTT_CLIENT_ID_IS_USERNAME": "false",  # a test broker without the client-id lock
    }
    return settings_from_mapping(site_data(endpoint, demo=demo), env=env)


def address(endpoint: BrokerEndpoint) -> BrokerAddress:
    return BrokerAddress(endpoint.host, endpoint.port, endpoint.username, endpoint.password)


@asynccontextmanager
async def simulating(settings: Settings) -> AsyncIterator[Gateway]:
    gateway = Gateway(settings, simulate_pins=True)
    task = asyncio.create_task(gateway.run(), name="gateway-in-simulation-mode")
    try:
        async with asyncio.timeout(WAIT_S):
            await gateway.mqtt.connected.wait()
        yield gateway
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def until(check: Any) -> None:
    """Wait (at most WAIT_S) until ``check()`` holds: it looks at the gateway's counters and pins, which no event
    announces."""
    async with asyncio.timeout(WAIT_S):
        while True:
            if check():
                return
            await asyncio.sleep(0.02)


def crib_open_events(staff: Staff, crib: str, event: AlarmEventType) -> int:
    return staff.count(crib, AlarmKind.CRIB_OPEN, event)


async def test_a_wired_crib_opened_from_the_console_alarms_with_the_buzzer_and_closes_resolved(
    mqtt_endpoint: BrokerEndpoint,
) -> None:
    settings = make_settings(mqtt_endpoint)
    topics = Topics(settings.site.id)
    broker = address(mqtt_endpoint)
    async with (
        simulating(settings) as gw,
        staff_device(mqtt_endpoint, topics) as staff,
        Fleet(topics, broker, ["s-1"], interval_s=30) as fleet,
    ):
        assert gw.sim_pins is not None
        pins = gw.sim_pins.factory
        # Every wired crib starts closed, as a closed reed switch holds its pin low: no alarm at start.
        await staff.until(lambda: (s := staff.states.get("w-1")) and s.latch == "closed")
        assert not pins.pin(WIRED_PIN).state
        assert gw.core.crib_state("w-2").latch is LatchState.CLOSED

        driver = PinDriver(topics, broker)
        out, err = io.StringIO(), io.StringIO()
        console = Console(fleet, out, err, cribs=cribs_from_settings(settings), pins=driver)
        try:
            await console.run(stream_lines(io.StringIO("open w-1\n")))
            raised = await staff.event("w-1", AlarmKind.CRIB_OPEN, AlarmEventType.RAISED)
            assert raised.room == "wired"
            assert pins.pin(WIRED_PIN).state  # driven high: the reed switch is open
            assert gw.buzzer is not None
            assert gw.buzzer.sounding
            await until(lambda: any(state.state for state in pins.pin(BUZZER_PIN).states))  # it beeps on its pin
            assert pins.pin(LED_PIN).state  # the LED is lit

            await console.run(stream_lines(io.StringIO("close w-1\n")))
            await staff.event("w-1", AlarmKind.CRIB_OPEN, AlarmEventType.RESOLVED)
            assert not pins.pin(WIRED_PIN).state
            assert not gw.buzzer.sounding
            assert not pins.pin(LED_PIN).state
        finally:
            await driver.close()
        assert console.errors == 0, err.getvalue()
        assert "crib w-1 (GPIO pin 17) latch open: pin command `high` sent" in out.getvalue()
        assert "crib w-1 (GPIO pin 17) latch closed: pin command `low` sent" in out.getvalue()
        assert crib_open_events(staff, "w-2", AlarmEventType.RAISED) == 0
        assert gw.stats.rejected[SIM_PIN_REASON] == 0
        assert gw.sim_pins.driven == 2


async def test_a_pin_command_for_no_wired_crib_or_a_bad_one_is_counted_and_changes_nothing(
    mqtt_endpoint: BrokerEndpoint,
) -> None:
    settings = make_settings(mqtt_endpoint)
    topics = Topics(settings.site.id)
    async with simulating(settings) as gw, staff_device(mqtt_endpoint, topics) as staff:
        assert gw.sim_pins is not None
        pins = gw.sim_pins.factory
        await staff.until(lambda: (s := staff.states.get("w-1")) and s.latch == "closed")
        async with new_client(address(mqtt_endpoint), identifier=f"bench-{secrets.token_hex(3)}") as bench:
            await bench.publish(topics.sim_pin(BUZZER_PIN), b"high", qos=1)  # the buzzer's pin: no crib's
            await bench.publish(topics.sim_pin(5), b"high", qos=1)  # a pin nothing uses
            await bench.publish(topics.sim_pin(WIRED_PIN), b"open", qos=1)  # not high or low
            await bench.publish(topics.sim_pin("x"), b"high", qos=1)  # not a pin number
            await bench.publish(topics.sim_pin(WIRED_PIN), b"high", qos=1, retain=True)  # live: carried out
            await until(lambda: gw.stats.rejected[SIM_PIN_REASON] >= 4)
            await staff.event("w-1", AlarmKind.CRIB_OPEN, AlarmEventType.RAISED)
            await bench.publish(topics.sim_pin(WIRED_PIN), b"", qos=1, retain=True)  # delete the retained copy
        assert gw.stats.rejected[SIM_PIN_REASON] >= 4
        assert gw.sim_pins.driven == 1
        assert not pins.pin(5).state
        assert gw.core.crib_state("w-2").latch is LatchState.CLOSED
        assert crib_open_events(staff, "w-2", AlarmEventType.RAISED) == 0
        assert gw.stats.internal_errors == 0


async def test_a_retained_pin_command_replayed_on_connect_is_rejected(mqtt_endpoint: BrokerEndpoint) -> None:
    settings = make_settings(mqtt_endpoint)
    topics = Topics(settings.site.id)
    async with new_client(address(mqtt_endpoint), identifier=f"bench-{secrets.token_hex(3)}") as bench:
        await bench.publish(topics.sim_pin(WIRED_PIN), PinLevel.HIGH.value.encode(), qos=1, retain=True)
    try:
        async with simulating(settings) as gw:
            assert gw.sim_pins is not None
            await until(lambda: gw.stats.rejected[SIM_PIN_REASON] >= 1)
            assert gw.sim_pins.driven == 0
            assert not gw.sim_pins.factory.pin(WIRED_PIN).state
    finally:
        async with new_client(address(mqtt_endpoint), identifier=f"bench-{secrets.token_hex(3)}") as bench:
            await bench.publish(topics.sim_pin(WIRED_PIN), b"", qos=1, retain=True)


def test_a_site_not_in_demo_mode_refuses_simulation_mode(
    mqtt_endpoint: BrokerEndpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(mqtt_endpoint, demo=False)
    with pytest.raises(SimulationRefusedError):
        Gateway(settings, simulate_pins=True)

    site = tmp_path / "site.toml"
    site.write_text(
        f"""
[site]
id = "{settings.site.id}"
label = "Real site"

[mqtt]
host = "{mqtt_endpoint.host}"
port = {mqtt_endpoint.port}

[[rooms]]
id = "wired"
label = "Sleeping room"
cribs = [{{ id = "w-1", label = "Crib W1", gpio_pin = {WIRED_PIN} }}]
"""
    )
    monkeypatch.setenv("CRIBWATCH_MQTT_USERNAME", mqtt_endpoint.username or "u")
    monkeypatch.setenv("CRIBWATCH_MQTT_PASSWORD", mqtt_endpoint.password or "p")
    assert cli.main(["gateway", "--config", str(site), "--simulate-pins"]) == 2
    err = capsys.readouterr().err
    assert f"cannot start: {NEEDS_DEMO}." in err
    assert "[site] demo = true" in err


async def test_without_a_demo_site_the_console_says_how_to_enable_simulation_mode(
    mqtt_endpoint: BrokerEndpoint,
) -> None:
    settings = make_settings(mqtt_endpoint, demo=False)
    topics = Topics(settings.site.id)
    async with Fleet(topics, address(mqtt_endpoint), ["s-1"], interval_s=30) as fleet:
        out, err = io.StringIO(), io.StringIO()
        console = Console(fleet, out, err, cribs=cribs_from_settings(settings))
        await console.run(stream_lines(io.StringIO("open w-1; bounce n-1 2\n")))
    assert "crib 'w-1' (room wired) is wired to the gateway's GPIO pin 17" in err.getvalue()
    assert "set [site] demo = true" in err.getvalue()
    assert "--simulate-pins" in err.getvalue()
    assert "s-1 (crib n-1) bounced 2 times within 200 ms, latch closed" in out.getvalue()
    assert console.errors == 1
