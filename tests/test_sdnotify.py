"""gateway/sdnotify.py against a real unix datagram socket (what systemd listens on), and a real gateway saying
READY=1, WATCHDOG=1 and STOPPING=1 to it."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.brokers import BrokerEndpoint
from gateway.sdnotify import Notifier, beat, heartbeat_from_env, notify_systemd, socket_address, watchdog_period

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
    async with running(make_settings(mqtt_endpoint)):
        got = await listener.until("WATCHDOG=1")
        assert got[0][0] == "READY=1"
        assert got[0][1].startswith("STATUS=0 open alarms; broker ")
        assert heartbeat.exists()
    assert (await listener.until("STOPPING=1"))[-1] == ["STOPPING=1"]


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
