"""systemd's notify protocol, without a dependency: READY=1 once the gateway runs, WATCHDOG=1 from its event loop.

systemd (a unit with ``Type=notify`` and ``WatchdogSec=``, deploy/systemd/cribwatch.service) passes the address
of a unix datagram socket in ``NOTIFY_SOCKET`` (a path, or ``@name`` in the abstract namespace) and the watchdog
period in ``WATCHDOG_USEC`` (for the process ``WATCHDOG_PID``, when set). :func:`notify_systemd` runs as a task of
the gateway's TaskGroup: it says READY=1, then WATCHDOG=1 every half period, so a gateway whose event loop hangs
(the timers, the MQTT link and this task all live on it) misses its pings and systemd kills and restarts it.

Docker has no notify socket: there ``CRIBWATCH_HEARTBEAT_FILE`` names a file that :func:`beat` touches every
``HEARTBEAT_S`` from the same event loop, and the container's health check (Dockerfile) reads its age. Docker only
shows such a container "unhealthy"; its restart policy acts when the process exits. So ``CRIBWATCH_LOOP_WATCHDOG_S``
(docker-compose.yml sets it) starts :class:`LoopWatchdog`: a thread of its own, off the event loop, that the loop
pulses (:func:`pulse_watchdog`); a pulse older than that many seconds is a hung loop, and the watchdog logs CRITICAL
and ends the process with :data:`WATCHDOG_EXIT`, as systemd's ``WatchdogSec=`` would kill it.

Nothing here waits: the socket is non-blocking, and a datagram systemd cannot take (it is gone, or its queue is
full) is counted in :attr:`Notifier.failures` and logged, never raised into the gateway. Without
``NOTIFY_SOCKET`` (no systemd, Docker, a test) :meth:`Notifier.from_env` is None and nothing runs.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

log = logging.getLogger("cribwatch.systemd")

NOTIFY_SOCKET = "NOTIFY_SOCKET"
HEARTBEAT_FILE = "CRIBWATCH_HEARTBEAT_FILE"
HEARTBEAT_S = 10.0
"""How often :func:`beat` touches the heartbeat file (the Dockerfile's health check allows 45 s)."""
LOOP_WATCHDOG = "CRIBWATCH_LOOP_WATCHDOG_S"
"""Seconds without a pulse from the event loop after which :class:`LoopWatchdog` ends the process (unset: none)."""
WATCHDOG_EXIT = 70
"""The exit status of a gateway the loop watchdog ended (EX_SOFTWARE): any non-zero status restarts it."""
LOG_FLUSH_S = 5.0
"""How long the watchdog gives its CRITICAL line to reach the log before it exits all the same (a hung loop may
hold the log's lock)."""
WATCHDOG_USEC = "WATCHDOG_USEC"
WATCHDOG_PID = "WATCHDOG_PID"


def socket_address(value: str) -> str | bytes:
    """``NOTIFY_SOCKET`` as an address for ``sendto``: ``@name`` is ``name`` in the abstract namespace."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


def watchdog_period(env: Mapping[str, str], pid: int) -> float | None:
    """The watchdog period in seconds that systemd asks of this process, or None (no watchdog, or another
    process's: ``WATCHDOG_PID`` names one)."""
    usec = env.get(WATCHDOG_USEC, "")
    owner = env.get(WATCHDOG_PID, "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if owner and (not owner.isdigit() or int(owner) != pid):
        return None
    return int(usec) / 1e6


class Notifier:
    """One non-blocking datagram socket to systemd's notify socket."""

    def __init__(self, address: str, *, watchdog_s: float | None = None) -> None:
        self.address = address
        self.watchdog_s = watchdog_s
        self.sent = 0
        self.failures = 0
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)  # noqa: FBT003 - the socket API

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, pid: int | None = None) -> Notifier | None:
        """The notifier systemd asks for through the environment, or None when it asks for none."""
        env = os.environ if env is None else env
        address = env.get(NOTIFY_SOCKET, "")
        if not address:
            return None
        return cls(address, watchdog_s=watchdog_period(env, os.getpid() if pid is None else pid))

    def send(self, *assignments: str) -> bool:
        """Send ``KEY=value`` lines in one datagram; False (counted and logged) if systemd could not take it."""
        message = "\n".join(assignments).encode()
        try:
            self._sock.sendto(message, socket_address(self.address))
        except OSError as exc:  # gone, queue full (BlockingIOError), refused: never the gateway's problem
            self.failures += 1
            log.warning("systemd notify %s failed (%d so far): %s", assignments[0], self.failures, exc)
            return False
        self.sent += 1
        return True

    def close(self) -> None:
        self._sock.close()


async def notify_systemd(notifier: Notifier, status: Callable[[], str] | None = None) -> None:
    """READY=1 now, then WATCHDOG=1 every half watchdog period (with ``status()`` as STATUS=) until cancelled;
    STOPPING=1 when cancelled (the gateway is stopping). Nothing here raises into the gateway's TaskGroup: a
    ``status`` that fails is logged and shown as such."""

    def status_line() -> str:
        if status is None:
            return "STATUS=running"
        try:
            return f"STATUS={status()}"
        except Exception:  # a status line must never stop the gateway (logged with its traceback)
            log.exception("the service status could not be made")
            return "STATUS=running (status unavailable: see the log)"

    try:
        notifier.send("READY=1", status_line())
        if notifier.watchdog_s is None:
            await asyncio.Event().wait()  # no watchdog asked: only STOPPING=1 to say, at the end
            return
        period = notifier.watchdog_s / 2
        while True:
            await asyncio.sleep(period)
            notifier.send("WATCHDOG=1", status_line())
    finally:
        notifier.send("STOPPING=1")
        notifier.close()


def heartbeat_from_env(env: Mapping[str, str] | None = None) -> Path | None:
    """The heartbeat file ``CRIBWATCH_HEARTBEAT_FILE`` names, or None."""
    env = os.environ if env is None else env
    value = env.get(HEARTBEAT_FILE, "")
    return Path(value) if value else None


async def beat(path: Path, period_s: float = HEARTBEAT_S) -> None:
    """Touch ``path`` now and every ``period_s`` until cancelled; a failure (a full or read-only disk) is logged
    when it starts and when it ends, never raised: the health check sees the file grow old."""
    failing = False
    while True:
        try:
            await asyncio.to_thread(path.touch)  # a slow disk never holds the event loop
        except OSError as exc:
            if not failing:
                log.warning("heartbeat file %s cannot be touched: %s (the container will show unhealthy)", path, exc)
            failing = True
        else:
            if failing:
                log.warning("heartbeat file %s touched again", path)
            failing = False
        await asyncio.sleep(period_s)


# ------------------------------------------------------------------------------------------ the loop watchdog


def loop_watchdog_from_env(env: Mapping[str, str] | None = None) -> float | None:
    """The seconds ``CRIBWATCH_LOOP_WATCHDOG_S`` gives, or None when unset or empty; ValueError (naming the
    variable) for anything but a positive number of seconds."""
    env = os.environ if env is None else env
    value = env.get(LOOP_WATCHDOG, "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{LOOP_WATCHDOG}={value!r}: expected a positive number of seconds (or unset: no watchdog)")
    return seconds


class LoopWatchdog:
    """A daemon thread that ends the process when the event loop has not pulsed for ``limit_s`` seconds.

    :meth:`pulse` is called from the event loop (:func:`pulse_watchdog`); the thread looks at the last pulse's age
    on the monotonic clock a few times per ``limit_s``. ``exit`` is ``os._exit``: no cleanup runs, because a hung
    loop would hang it too; the log handlers are flushed first (in a helper thread, given at most
    :data:`LOG_FLUSH_S`)."""

    def __init__(
        self,
        limit_s: float,
        *,
        exit_: Callable[[int], object] = os._exit,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit_s = limit_s
        self._exit = exit_
        self._clock = clock
        self._last = clock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="cribwatch-loop-watchdog", daemon=True)

    def pulse(self) -> None:
        """The event loop ran: called from it."""
        self._last = self._clock()

    def start(self) -> None:
        self._last = self._clock()
        self._thread.start()

    def stop(self) -> None:
        """The gateway stops on purpose: the watchdog stops watching."""
        self._stop.set()

    def _watch(self) -> None:
        check_s = min(1.0, self.limit_s / 4)
        while not self._stop.wait(check_s):
            age = self._clock() - self._last
            if age > self.limit_s and not self._stop.is_set():
                self._bite(age)
                return

    def _bite(self, age: float) -> None:
        def say() -> None:
            log.critical(
                "the event loop has not run for %.1f s (%s=%g): the gateway is hung; exiting with status %d so that "
                "the restart policy starts it again",
                age,
                LOOP_WATCHDOG,
                self.limit_s,
                WATCHDOG_EXIT,
            )
            for handler in [*logging.getLogger().handlers, *log.handlers]:
                handler.flush()
            for stream in (sys.stdout, sys.stderr):
                stream.flush()

        saying = threading.Thread(target=say, name="cribwatch-loop-watchdog-log", daemon=True)
        saying.start()
        saying.join(LOG_FLUSH_S)
        self._exit(WATCHDOG_EXIT)


async def pulse_watchdog(watchdog: LoopWatchdog) -> None:
    """Start ``watchdog`` and pulse it from the event loop (four times per limit, at least once a second) until
    cancelled; then stop it."""
    period_s = min(1.0, watchdog.limit_s / 4)
    watchdog.start()
    log.info("loop watchdog on: a loop hung for %g s ends the process (%s)", watchdog.limit_s, LOOP_WATCHDOG)
    try:
        while True:
            watchdog.pulse()
            await asyncio.sleep(period_s)
    finally:
        watchdog.stop()


def start_loop_watchdog(tg: asyncio.TaskGroup, env: Mapping[str, str] | None = None) -> LoopWatchdog | None:
    """The watchdog ``CRIBWATCH_LOOP_WATCHDOG_S`` asks for, pulsed by a task of ``tg``; None when it asks for none
    (ValueError for a bad value: ``cribwatch gateway`` checks it before it starts)."""
    limit_s = loop_watchdog_from_env(env)
    if limit_s is None:
        return None
    watchdog = LoopWatchdog(limit_s)
    tg.create_task(pulse_watchdog(watchdog), name="loop-watchdog")
    return watchdog
