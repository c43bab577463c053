"""`make demo` stays true: the demo runs the whole alarm life cycle, on Mosquitto and on the embedded broker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import devtools.brokers
from devtools.demo import run_demo
from gateway.cli import EXAMPLE_CONFIG

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.integration

LIFE = ["crib open raised", "crib open acknowledged", "crib open resolved"]


def test_demo_command_shows_the_alarm_life_cycle() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "demo", "--pace", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for step in LIFE:
        assert out.count(step) == 2, step  # a wireless and a wired crib
    for step in ("sensor offline raised", "sensor offline acknowledged", "sensor offline resolved"):
        assert step in out
    assert "by staff-07 (pager-2)" in out
    assert "buzzer SOUNDING" in out
    assert "buzzer silent after the acknowledgement" in out
    assert "done: every alarm was raised, acknowledged and resolved" in out
    assert "Mosquitto" in result.stderr  # it said which broker it chose


async def test_demo_runs_on_the_embedded_broker_without_mosquitto(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(devtools.brokers, "find_mosquitto", lambda: None)
    assert await run_demo(EXAMPLE_CONFIG, pace=0) == 0
    out = capsys.readouterr().out
    for step in LIFE:
        assert step in out
