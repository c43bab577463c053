"""gateway/sdnotify.py against a real unix datagram socket (what systemd listens on), and a real gateway saying
READY=1, WATCHDOG=1 and STOPPING=1 to it; the loop watchdog (Docker's stand-in for WatchdogSec) in real processes
whose event loop hangs or runs."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.brokers import BrokerEndpoint
from gateway import cli
from gateway.sdnotify import (
    LOOP_WATCHDOG,
    WATCHDOG_EXIT,
    Notifier,
    beat,
    heartbeat_from_env,
    loop_watchdog_from_env,
    notify_systemd,
    socket_address,
    watchdog_period,
)

REPO = Path(__file__).resolve().parent.parent

WAIT_S = 10.0


class Listener:
    """systemd's side: a bound unix datagram socket."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(socket_address(address))
        self.sock.settimeout(WAIT_S)

    def receive(self) -> list[str]:
        return self.sock.recv(4096).decode().split("\n")

    async def until(self, line: str) -> list[list[str]]:
        """Every datagram up to and with the first that holds ``line``."""
        got: list[list[str]] = []
        while not got or line not in got[-1]:
            got.append(await asyncio.to_thread(self.receive))
        return got


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    ear = Listener(str(tmp_path / "notify.sock"))
    yield ear
    ear.sock.close()


def test_the_environment_decides_whether_and_how_often() -> None:
    assert Notifier.from_env({}) is None
    assert watchdog_period({"WATCHDOG_USEC": "30000000"}, 42) == 30.0
    assert watchdog_period({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, 42) == 30.0
    assert watchdog_period({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "43"}, 42) is None  # another's
    assert watchdog_period({"WATCHDOG_USEC": "0"}, 42) is None
    assert watchdog_period({"WATCHDOG_USEC": "soon"}, 42) is None
    notifier = Notifier.from_env({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "2000000"}, pid=1)
    assert notifier is not None
    assert notifier.watchdog_s == 2.0
    notifier.close()
    assert socket_address("@cribwatch/notify") == b"\0cribwatch/notify"


def test_a_datagram_reaches_the_socket_and_one_nobody_takes_is_counted(listener: Listener, tmp_path: Path) -> None:
    notifier = Notifier(listener.address)
    assert notifier.send("READY=1", "STATUS=ok")
    assert listener.receive() == ["READY=1", "STATUS=ok"]
    gone = Notifier(str(tmp_path / "nobody.sock"))
    assert gone.send("WATCHDOG=1") is False  # no raise into the gateway
    assert (gone.failures, gone.sent) == (1, 0)
    notifier.close()
    gone.close()


def test_the_abstract_namespace() -> None:
    ear = Listener(f"@cribwatch-test-{secrets.token_hex(4)}")
    try:
        notifier = Notifier(ear.address)
        assert notifier.send("READY=1")
        assert ear.receive() == ["READY=1"]
        notifier.close()
    finally:
        ear.sock.close()


def test_a_full_queue_never_blocks_the_sender(listener: Listener) -> None:
    """systemd not reading: the datagrams pile up until the kernel refuses one; send returns False at once."""
    notifier = Notifier(listener.address)
    for _ in range(100_000):
        if not notifier.send("WATCHDOG=1"):
            break
    assert notifier.failures == 1
    notifier.close()


async def test_ready_then_watchdog_pings_then_stopping(listener: Listener) -> None:
    notifier = Notifier(listener.address, watchdog_s=0.1)
    task = asyncio.create_task(notify_systemd(notifier, lambda: "2 open alarms"))
    got = await listener.until("WATCHDOG=1")
    assert got[0] == ["READY=1", "STATUS=2 open alarms"]
    assert got[-1] == ["WATCHDOG=1", "STATUS=2 open alarms"]
    await listener.until("WATCHDOG=1")  # and again
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await listener.until("STOPPING=1"))[-1] == ["STOPPING=1"]


async def test_a_failing_status_never_stops_the_pings(listener: Listener) -> None:
    def broken() -> str:
        raise RuntimeError("a bug in the status line")

    task = asyncio.create_task(notify_systemd(Notifier(listener.address, watchdog_s=0.1), broken))
    got = await listener.until("WATCHDOG=1")
    assert got[0] == ["READY=1", "STATUS=running (status unavailable: see the log)"]
    await listener.until("WATCHDOG=1")
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.integration
async def test_the_gateway_notifies_systemd(
    listener: Listener, mqtt_endpoint: BrokerEndpoint, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from tests.test_gateway_integration import make_settings, running

    monkeypatch.setenv("NOTIFY_SOCKET", listener.address)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    heartbeat = tmp_path / "heartbeat"
    monkeypatch.setenv("CRIBWATCH_HEARTBEAT_FILE", str(heartbeat))
    monkeypatch.setenv(LOOP_WATCHDOG, "30")
    async with running(make_settings(mqtt_endpoint)):
        got = await listener.until("WATCHDOG=1")
        assert got[0][0] == "READY=1"
        assert got[0][1].startswith("STATUS=0 open alarms; broker ")
        assert heartbeat.exists()
        [watchdog] = [t for t in threading.enumerate() if t.name == "cribwatch-loop-watchdog"]
        assert watchdog.is_alive()
        assert watchdog.daemon
    assert (await listener.until("STOPPING=1"))[-1] == ["STOPPING=1"]
    await asyncio.to_thread(watchdog.join, WAIT_S)
    assert not watchdog.is_alive(), "a gateway that stops on purpose stops its watchdog"


async def test_the_heartbeat_file_is_touched_and_a_failure_is_only_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert heartbeat_from_env({}) is None
    path = tmp_path / "heartbeat"
    assert heartbeat_from_env({"CRIBWATCH_HEARTBEAT_FILE": str(path)}) == path
    task = asyncio.create_task(beat(path, period_s=0.01))
    async with asyncio.timeout(WAIT_S):
        while not path.exists():  # noqa: ASYNC110 - a file, which signals nothing
            await asyncio.sleep(0.01)
        first = path.stat().st_mtime_ns
        while path.stat().st_mtime_ns == first:  # noqa: ASYNC110 - touched again
            await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    nowhere = tmp_path / "missing-dir" / "heartbeat"
    task = asyncio.create_task(beat(nowhere, period_s=0.01))
    async with asyncio.timeout(WAIT_S):
        while "cannot be touched" not in caplog.text:  # noqa: ASYNC110 - the log signals nothing
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # a few more failed beats: logged once
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert caplog.text.count("cannot be touched") == 1


# ------------------------------------------------------------------------------------------ the loop watchdog

LOOP_SCRIPT = """
import asyncio, logging, sys, time
from gateway.sdnotify import start_loop_watchdog

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")

async def main(hang: bool) -> None:
    async with asyncio.TaskGroup() as tg:
        watchdog = start_loop_watchdog(tg)
        assert watchdog is not None
        await asyncio.sleep(0.2)
        print("running", flush=True)
        if hang:
            time.sleep(600)  # the event loop hangs: no task of it runs again
        await asyncio.sleep(3 * watchdog.limit_s)  # a healthy loop, three limits long
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()
    print("stopped cleanly", flush=True)

asyncio.run(main(sys.argv[1] == "hang"))
"""


def test_the_loop_watchdog_ends_a_process_whose_loop_hangs_and_leaves_a_healthy_one() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRIBWATCH_")}
    env |= {"CRIBWATCH_STATE_DIR": os.environ["CRIBWATCH_STATE_DIR"], "PYTHONPATH": str(REPO), LOOP_WATCHDOG: "1"}
    runs = {
        how: subprocess.Popen(
            [sys.executable, "-c", LOOP_SCRIPT, how], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for how in ("hang", "healthy")
    }
    results = {}
    try:
        for how, process in runs.items():
            out, err = process.communicate(timeout=120)
            results[how] = (process.returncode, out, err)
    finally:
        for process in runs.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    code, out, err = results["hang"]
    assert "running" in out
    assert code == WATCHDOG_EXIT != 0, err
    assert "CRITICAL cribwatch.systemd the event loop has not run for" in err
    assert "stopped cleanly" not in out
    code, out, err = results["healthy"]
    assert (code, out.split()) == (0, ["running", "stopped", "cleanly"]), err
    assert "CRITICAL" not in err
    assert "loop watchdog on" in err


def test_the_watchdogs_limit_comes_from_the_environment_and_a_bad_one_stops_the_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert loop_watchdog_from_env({}) is None
    assert loop_watchdog_from_env({LOOP_WATCHDOG: ""}) is None
    assert loop_watchdog_from_env({LOOP_WATCHDOG: "60"}) == 60.0
    assert loop_watchdog_from_env({LOOP_WATCHDOG: "2.5"}) == 2.5
    for bad in ("0", "-5", "soon", "nan", "inf"):
        with pytest.raises(ValueError, match=LOOP_WATCHDOG):
            loop_watchdog_from_env({LOOP_WATCHDOG: bad})
    monkeypatch.setenv(LOOP_WATCHDOG, "a minute")
    assert cli.main(["gateway", "--config", "/nonexistent/site.toml"]) == 2
    assert f"cannot start: {LOOP_WATCHDOG}='a minute'" in capsys.readouterr().err
