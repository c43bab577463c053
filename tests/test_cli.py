"""``cribwatch gateway`` as a site runs it: a process, a site file, secrets in the environment, SIGTERM to stop."""

from __future__ import annotations

import asyncio
import datetime
import os
import re
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from devtools.brokers import BrokerEndpoint
from gateway.domain.vocab import LatchState
from gateway.mqtt.connection import new_client
from gateway.protocol import (
    AlarmEventPayload,
    GatewayAvailabilityPayload,
    LatchPayload,
    SensorChannel,
    Topics,
    decode,
    encode,
)

REPO = Path(__file__).resolve().parent.parent


def site_file(tmp_path: Path, endpoint: BrokerEndpoint, site_id: str) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(
        f"""
[site]
id = "{site_id}"
label = "CLI test site"

[mqtt]
host = "{endpoint.host}"
port = {endpoint.port}

[[rooms]]
id = "room-1"
label = "Room 1"
grace_s = 0

  [[rooms.cribs]]
  id = "c-1"
  label = "Crib 1"
  sensor_id = "s-1"
""",
        encoding="utf-8",
    )
    return path


def cli_env(endpoint: BrokerEndpoint | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRIBWATCH_")}
    env["CRIBWATCH_STATE_DIR"] = os.environ["CRIBWATCH_STATE_DIR"]  # the test's own (conftest.state_dir)
    env["CRIBWATCH_MQTT_CLIENT_ID_IS_USERNAME"] = "false"  # the shared broker has no client-id lock (conftest)
    env["PYTHONPATH"] = str(REPO)
    if endpoint is not None:
        env["CRIBWATCH_MQTT_USERNAME"] = endpoint.username or ""
        env["CRIBWATCH_MQTT_PASSWORD"] = endpoint.password or ""
    return env


def test_gateway_refuses_to_start_without_credentials(tmp_path: Path, mqtt_endpoint: BrokerEndpoint) -> None:
    path = site_file(tmp_path, mqtt_endpoint, "t-nocreds")
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "gateway", "--config", str(path)],
        env=cli_env(None),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "CRIBWATCH_MQTT_USERNAME" in result.stderr
    assert "Traceback" not in result.stderr


WIRED_NO_BUZZER = """
[site]
id = "wired"
label = "Wired"

[mqtt]
port = 9  # never reached: the pins are opened first

[[rooms]]
id = "slaap"
label = "Slaapkamer"

  [[rooms.cribs]]
  id = "w-1"
  label = "Bedje 1"
  gpio_pin = 20
"""


def run_gateway_without_gpio(path: Path) -> subprocess.CompletedProcess[str]:
    env = cli_env(None) | {"CRIBWATCH_MQTT_USERNAME": "gateway", "CRIBWATCH_MQTT_PASSWORD": "pw"}
    env.pop("GPIOZERO_PIN_FACTORY", None)  # gpiozero then looks for a real pin library: there is none here
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "gateway", "--config", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_a_wired_crib_on_a_machine_without_gpio_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "wired.toml"
    path.write_text(WIRED_NO_BUZZER, encoding="utf-8")
    result = run_gateway_without_gpio(path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "BadPinFactory" not in result.stderr
    assert "wired crib 'w-1' needs GPIO pin 20" in result.stderr
    assert "this machine has no GPIO pin library" in result.stderr
    assert "Raspberry Pi" in result.stderr
    assert "GPIOZERO_PIN_FACTORY=mock" in result.stderr
    assert "test bench" in result.stderr


def test_the_example_site_without_gpio_names_every_pin_it_needs() -> None:
    """The buzzer is opened first; the message still lists every crib and pin that needs GPIO."""
    result = run_gateway_without_gpio(REPO / "examples" / "kids-f.toml")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "needs GPIO pin 18" in result.stderr  # the buzzer
    for crib, pin in (("sk-1", 17), ("sk-2", 27), ("sk-3", 22)):
        assert f"{crib} (pin {pin})" in result.stderr
    assert "LED (pin 23)" in result.stderr
    assert "GPIOZERO_PIN_FACTORY=mock" in result.stderr


LOG_LINE = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})T\d{2}:\d{2}:\d{2}\.\d{3}[+-]\d{2}:\d{2} "  # 2026-11-27T17:08:52.123+01:00
    r"(DEBUG|INFO|WARNING|ERROR|CRITICAL) +[\w.]+: \S"  # level, logger, message
)


@pytest.mark.integration
def test_gateway_log_lines_carry_the_date_and_time(tmp_path: Path, mqtt_endpoint: BrokerEndpoint) -> None:
    """ISO 8601 with milliseconds and the UTC offset, then level, logger and message: a log read days later
    (or sent to support) still says when."""
    path = site_file(tmp_path, mqtt_endpoint, f"t-{secrets.token_hex(4)}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "gateway", "--config", str(path)],
        env=cli_env(mqtt_endpoint),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        lines = []
        for line in proc.stderr:
            lines.append(line.rstrip("\n"))
            if "connected to broker" in line:
                break
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines += rest.splitlines()
    assert any("running" in line for line in lines), lines
    assert any("connected to broker" in line for line in lines), lines
    assert any(line.endswith("stopped") for line in lines), lines
    today = {datetime.datetime.now().astimezone().date(), datetime.datetime.now(datetime.UTC).date()}
    for line in lines:
        match = LOG_LINE.match(line)
        assert match is not None, f"not a dated log line: {line!r}\n" + "\n".join(lines)
        assert datetime.date.fromisoformat(match["date"]) in today, line


@pytest.mark.integration
async def test_gateway_process_alarms_and_stops_cleanly_on_sigterm(
    tmp_path: Path, mqtt_endpoint: BrokerEndpoint
) -> None:
    site_id = f"t-{secrets.token_hex(4)}"
    topics = Topics(site_id)
    path = site_file(tmp_path, mqtt_endpoint, site_id)
    async with new_client(mqtt_endpoint, identifier=f"cli-test-{site_id}") as client:
        await client.subscribe(topics.gateway_availability, qos=1)
        await client.subscribe(topics.alarm_filter, qos=1)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway.cli",
            "gateway",
            "--config",
            str(path),
            env=cli_env(mqtt_endpoint),
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(20):
                states: list[str] = []
                raised = None
                async for message in client.messages:
                    assert isinstance(message.payload, bytes)
                    if message.topic.value == topics.gateway_availability:
                        states.append(decode(GatewayAvailabilityPayload, message.payload).state)
                        if states[-1] == "online" and raised is None:
                            latch = LatchPayload(boot=1, seq=0, ts=1.0, state=LatchState.OPEN)
                            await client.publish(topics.sensor("s-1", SensorChannel.LATCH), encode(latch), qos=1)
                        if states[-1] == "offline":
                            break
                    else:
                        raised = decode(AlarmEventPayload, message.payload)
                        assert (raised.crib, raised.event.value) == ("c-1", "raised")
                        proc.send_signal(signal.SIGTERM)
                code = await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert raised is not None
        assert states[-2:] == ["online", "offline"]
        assert code == 0
        assert proc.stderr is not None
        stderr = (await proc.stderr.read()).decode()
        assert "Traceback" not in stderr
        assert "stopped" in stderr
