"""`make demo` stays true: the demo runs the whole alarm life cycle, on Mosquitto and on the embedded broker."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import devtools.brokers
from devtools.demo import cast_of, run_demo
from gateway.cli import EXAMPLE_CONFIG
from gateway.settings import load_settings, settings_from_mapping

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
    assert "3 incidents on record:" in out  # read back from the gateway's store
    assert "1-1 crib_open Vlinders (0-12 m) / Bedje 1: acknowledged by staff-07" in out
    assert out.count("resolved (latch_closed)") == 2
    assert "resolved (sensor_back)" in out
    assert "Mosquitto" in result.stderr  # it said which broker it chose
    web = r"the alarm board on http://127\.0\.0\.1:\d+/ \(log in as demo-staff or demo-tech, password \S+\)"
    assert re.search(web, out)  # the demo serves the web app too


async def test_demo_runs_on_the_embedded_broker_without_mosquitto(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(devtools.brokers, "find_mosquitto", lambda: None)
    assert await run_demo(EXAMPLE_CONFIG, pace=0) == 0
    out = capsys.readouterr().out
    for step in LIFE:
        assert step in out


class DemoProcess:
    """``cribwatch demo`` as a user runs it in a terminal: its own process group, so a signal can go to the group
    (Ctrl-C reaches the demo and the Mosquitto it started), and its output read line by line as it comes."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "demo", *args],
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        assert self.proc.stdout is not None
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.lines.put(line)

    def wait_for_line(self, fragment: str, timeout: float = 60.0) -> str:
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                self.proc.kill()
                pytest.fail(f"no line with {fragment!r} in {timeout} s; output so far:\n{''.join(self.seen)}")
            self.seen.append(line)
            if fragment in line:
                return line

    def finish(self, timeout: float = 30.0) -> tuple[int, str, str]:
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        assert self.proc.stderr is not None
        stderr = self.proc.stderr.read()
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return code, "".join(self.seen), stderr


def port_accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.mark.parametrize(
    ("sig", "to_group", "after", "pace", "code"),
    [
        (signal.SIGINT, True, "gateway    running for", "30", 130),
        (signal.SIGINT, True, "wireless sensors online", "30", 130),
        (signal.SIGINT, False, "wireless sensors online", "30", 130),
        (signal.SIGTERM, False, "wireless sensors online", "30", 143),
        # Right after a sensor's publish, while the demo waits for the alarm: Python 3.11's asyncio.wait_for (in
        # aiomqtt) can drop a cancellation that arrives as the publish completes; the demo must stop all the same.
        (signal.SIGINT, True, "OPENS", "1", 130),
    ],
    ids=["ctrl-c-at-start", "ctrl-c-in-a-pause", "sigint-to-the-demo-only", "sigterm", "ctrl-c-in-a-story"],
)
def test_demo_stops_cleanly_on_a_signal(sig: signal.Signals, to_group: bool, after: str, pace: str, code: int) -> None:
    demo = DemoProcess("--pace", pace)  # with long pauses between the steps the signal comes while the demo waits
    broker = re.search(r"broker on ([\d.]+):(\d+)", demo.wait_for_line("broker on"))
    assert broker is not None
    demo.wait_for_line(after)
    if to_group:
        os.killpg(demo.proc.pid, sig)
    else:
        demo.proc.send_signal(sig)
    signalled = time.monotonic()

    returncode, out, err = demo.finish()

    assert time.monotonic() - signalled < 5.0  # no reconnect attempts to a broker already gone
    assert returncode == code, out + err
    assert "Traceback" not in err, err
    assert "ExceptionGroup" not in err, err
    assert out.splitlines()[-1].endswith(f"demo stopped ({sig.name})"), out
    assert not port_accepts(broker[1], int(broker[2]))  # the demo's broker is gone with it


# ------------------------------------------------------------------------------------ other site files

TWO_WIRELESS = """
[site]
id = "mini"
label = "Mini"

[[rooms]]
id = "zolder"
label = "Zolder"
grace_s = 5

  [[rooms.cribs]]
  id = "z-1"
  label = "Bedje A"
  sensor_id = "zs-1"

  [[rooms.cribs]]
  id = "z-2"
  label = "Bedje B"
  sensor_id = "zs-2"
"""

ONLY_WIRED = """
[site]
id = "wired-only"
label = "Wired only"

[buzzer]
pin = 5

[[rooms]]
id = "slaap"
label = "Slaapkamer"

  [[rooms.cribs]]
  id = "w-1"
  label = "Bedje 1"
  gpio_pin = 20

  [[rooms.cribs]]
  id = "w-2"
  label = "Bedje 2"
  gpio_pin = 21
"""


def run_demo_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "demo", "--pace", "0", *args],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_demo_on_a_site_with_two_wireless_cribs_and_no_wired_crib(tmp_path: Path) -> None:
    path = tmp_path / "mini.toml"
    path.write_text(TWO_WIRELESS, encoding="utf-8")
    result = run_demo_command("--config", str(path))
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "Traceback" not in result.stderr
    assert "running for Mini: 2 cribs" in out
    assert "latch of crib z-1 OPENS" in out
    for step in LIFE:
        assert out.count(step) == 1, step
    assert "no wired crib in this site: the wired crib's story is skipped" in out
    assert "zs-2: POWER LOST" in out
    for step in ("sensor offline raised", "sensor offline acknowledged", "sensor offline resolved"):
        assert step in out
    assert "done: every alarm was raised, acknowledged and resolved" in out


def test_demo_on_a_site_with_only_wired_cribs(tmp_path: Path) -> None:
    path = tmp_path / "wired.toml"
    path.write_text(ONLY_WIRED, encoding="utf-8")
    result = run_demo_command("--config", str(path))
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "Traceback" not in result.stderr
    assert "0 wireless sensors online" in out
    assert "no wireless crib in this site" in out
    assert "pin 20: wired crib w-1 OPENS" in out
    for step in LIFE:
        assert out.count(step) == 1, step
    assert "buzzer SOUNDING" in out
    assert "sensor offline" not in out
    assert "done: every alarm was raised, acknowledged and resolved" in out


def test_demo_on_a_bad_site_file_says_what_is_wrong(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(TWO_WIRELESS.replace("grace_s = 5", 'grace_s = "5"'), encoding="utf-8")
    result = run_demo_command("--config", str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert str(path) in result.stderr
    assert "rooms[0].grace_s = '5'" in result.stderr

    missing = run_demo_command("--config", str(tmp_path / "missing.toml"))
    assert missing.returncode == 2
    assert "Traceback" not in missing.stderr
    assert "cannot read the file" in missing.stderr


def _site(*rooms: list[dict[str, object]]) -> dict[str, object]:
    return {
        "site": {"id": "s", "label": "S", "demo": True},
        "rooms": [{"id": f"r{i}", "label": f"R{i}", "cribs": cribs} for i, cribs in enumerate(rooms)],
    }


def test_the_cast_comes_from_the_site() -> None:
    cast = cast_of(load_settings(EXAMPLE_CONFIG, require_credentials=False))
    assert cast.left_open is not None
    assert cast.wired is not None
    assert cast.power_loss is not None
    assert (cast.left_open.id, cast.wired.id, cast.power_loss.id) == ("vl-1", "sk-1", "eg-1")  # another room

    one_room = cast_of(settings_from_mapping(_site([
        {"id": "a", "label": "A", "gpio_pin": 4},
        {"id": "b", "label": "B", "sensor_id": "sb"},
        {"id": "c", "label": "C", "sensor_id": "sc"},
    ]), env={}))  # fmt: skip
    assert one_room.left_open is not None
    assert one_room.wired is not None
    assert one_room.power_loss is not None
    assert (one_room.left_open.id, one_room.wired.id, one_room.power_loss.id) == ("b", "a", "c")

    single = cast_of(settings_from_mapping(_site([{"id": "a", "label": "A", "sensor_id": "sa"}]), env={}))
    assert single.left_open is not None
    assert single.power_loss is not None
    assert (single.left_open.id, single.wired, single.power_loss.id) == ("a", None, "a")

    wired = cast_of(settings_from_mapping(_site([{"id": "a", "label": "A", "gpio_pin": 4}]), env={}))
    assert wired.wired is not None
    assert (wired.left_open, wired.wired.id, wired.power_loss) == (None, "a", None)
