"""Runs simulator commands (:mod:`firmware_sim.commands`) against a :class:`Fleet`, one line of output each.

Used by ``cribwatch sim`` for ``--script`` and for a technician typing at stdin. A command that cannot be
parsed, names an unknown sensor or cannot be done right now prints an error and the console goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import datetime
from typing import TextIO

from firmware_sim.commands import (
    HELP,
    CloseLatch,
    Command,
    CommandError,
    Heartbeat,
    Help,
    NetworkBlip,
    OpenLatch,
    PowerOff,
    PowerOn,
    Quit,
    Reboot,
    SensorCommand,
    SetBattery,
    Shutdown,
    Sleep,
    Status,
    parse_command,
    split_script,
)
from firmware_sim.fleet import Fleet
from firmware_sim.sensor import SensorError, SimulatedSensor

__all__ = ["Console", "script_lines", "stream_lines"]

_KNOWN_SHOWN = 6


class Console:
    """Executes commands on ``fleet``; actions go to ``out``, errors to ``err``, each with a timestamp."""

    def __init__(
        self,
        fleet: Fleet,
        out: TextIO,
        err: TextIO | None = None,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._fleet = fleet
        self._out = out
        self._err = err if err is not None else out
        self._wall_clock = wall_clock
        self.errors = 0
        """How many commands failed so far."""

    def say(self, text: str) -> None:
        self._write(self._out, text)

    def error(self, text: str) -> None:
        self.errors += 1
        self._write(self._err, f"error: {text}")

    def _write(self, stream: TextIO, text: str) -> None:
        stamp = datetime.fromtimestamp(self._wall_clock()).astimezone().isoformat(timespec="milliseconds")
        stream.write(f"{stamp} {text}\n")
        stream.flush()

    async def run(self, lines: AsyncIterator[str]) -> bool:
        """Execute each line until ``quit`` (True) or the end of the input (False)."""
        async for line in lines:
            try:
                command = parse_command(line)
            except CommandError as exc:
                self.error(str(exc))
                continue
            if command is not None and not await self.execute(command):
                return True
        return False

    async def execute(self, command: Command) -> bool:
        """Do one command; False once it was ``quit``."""
        match command:
            case Quit():
                self.say(f"quit: stopping {len(self._fleet)} sensors")
                return False
            case Help():
                self._out.write(HELP + "\n")
                self._out.flush()
            case Status():
                for sensor in self._fleet:
                    self.say(_status_line(sensor))
            case Sleep(seconds):
                self.say(f"sleep {seconds:g} s")
                await asyncio.sleep(seconds)
            case _:
                await self._sensor_command(command)
        return True

    async def _sensor_command(self, command: SensorCommand) -> None:
        sensor_id = command.sensor
        if sensor_id not in self._fleet:
            self.error(f"unknown sensor {sensor_id!r}; known: {self._known()}")
            return
        sensor = self._fleet[sensor_id]
        try:
            match command:
                case OpenLatch() | CloseLatch():
                    sent = await (sensor.open() if isinstance(command, OpenLatch) else sensor.close_latch())
                    self.say(f"{sensor_id} latch {sensor.latch.value} (boot {sent.boot}, seq {sent.seq})")
                case SetBattery(_, pct):
                    await sensor.set_battery(pct)
                    self.say(f"{sensor_id} battery {pct} % (heartbeat sent)")
                case Heartbeat():
                    await sensor.heartbeat_now()
                    self.say(f"{sensor_id} heartbeat sent")
                case PowerOff():
                    if not sensor.powered:
                        self.say(f"{sensor_id} is already powered off")
                        return
                    await sensor.power_off()
                    self.say(f"{sensor_id} powered off: the broker publishes its last will (offline)")
                case PowerOn():
                    await sensor.power_on()
                    self.say(f"{sensor_id} powered on: boot {sensor.boot}, online")
                case Reboot():
                    await sensor.reboot()
                    self.say(f"{sensor_id} rebooted: boot {sensor.boot}, online")
                case NetworkBlip(_, down_s):
                    self.say(f"{sensor_id} network blip: connection cut, back in {down_s:g} s")
                    await sensor.network_blip(down_s=down_s)
                    self.say(f"{sensor_id} reconnected: boot {sensor.boot} (unchanged)")
                case Shutdown():
                    await sensor.stop()
                    self.say(f"{sensor_id} shut down cleanly (offline sent)")
        except SensorError as exc:
            kept = ""
            if isinstance(command, OpenLatch | CloseLatch | SetBattery):
                kept = " (the new value is kept and sent when the sensor connects again)"
            self.error(f"{exc}{kept}")
        except ValueError as exc:
            self.error(f"{sensor_id}: {exc}")

    def _known(self) -> str:
        ids = self._fleet.sensor_ids
        shown = ", ".join(ids[:_KNOWN_SHOWN])
        return shown + (f" ... ({len(ids)} sensors)" if len(ids) > _KNOWN_SHOWN else "")


def _status_line(sensor: SimulatedSensor) -> str:
    state = "connected" if sensor.connected else ("reconnecting" if sensor.powered else "powered off")
    return f"{sensor.sensor_id} boot {sensor.boot} latch {sensor.latch.value} battery {sensor.battery_pct} % {state}"


async def script_lines(script: str) -> AsyncIterator[str]:
    """The commands of a ``--script`` (separated by ``;`` or line ends)."""
    for piece in split_script(script):
        yield piece


async def stream_lines(stream: TextIO) -> AsyncIterator[str]:
    """Lines of ``stream`` (stdin) as they are typed, without blocking the event loop.

    A daemon thread reads, so a pending read never keeps the process from exiting.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def put(item: str | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is reading any more
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def pump(lines: Iterable[str]) -> None:
        try:
            for line in lines:
                put(line)
        except (OSError, ValueError):  # stdin closed under us
            pass
        put(None)

    reader = threading.Thread(target=pump, args=(iter(stream.readline, ""),), name="sim-stdin", daemon=True)
    reader.start()
    while (line := await queue.get()) is not None:
        yield line
