"""Runs simulator commands (:mod:`firmware_sim.commands`) against a :class:`Fleet`, one line of output each.

Used by ``cribwatch sim`` for ``--script`` and for a technician typing at a prompt or at stdin. Any input
line may hold several commands separated by ``;``. A command names a sensor by its sensor id or, when the
fleet comes from a site file, by its crib id (:class:`CribRef`). A command that cannot be parsed, names an
unknown sensor or crib, or cannot be done right now prints an error and the console goes on.

A wired crib has no sensor: its reed switch is on the gateway's GPIO pin. With a :class:`PinDriver` (a site file
in demo mode), ``open``, ``close`` and ``bounce`` of a wired crib publish pin commands that a gateway in
simulation mode (``--simulate-pins``) carries out on its mock pin; without one, they print how to get there.

:meth:`Console.watch_connections` prints each sensor's connection as it is lost and comes back (the
broker went away, the network dropped it), so a technician sees it at once.

Input: :func:`prompt_lines` (a prompt with line editing and history, for a terminal), :func:`stream_lines`
(plain lines, for a pipe or a file) and :func:`script_lines` (``--script``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TextIO

import aiomqtt

from firmware_sim.commands import (
    HELP,
    Bounce,
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
from firmware_sim.pins import PinDriver
from firmware_sim.sensor import SensorError, SimulatedSensor
from gateway.protocol import PinLevel
from gateway.settings import Settings

__all__ = [
    "PROMPT",
    "Console",
    "CribRef",
    "cribs_from_settings",
    "prompt_lines",
    "script_lines",
    "stream_lines",
    "wired_crib_message",
]

_KNOWN_SHOWN = 6
PROMPT = "sim> "
CONNECTION_POLL_S = 0.2
"""How often :meth:`Console.watch_connections` looks at every sensor's connection."""
_CHANGES_LISTED = 6
"""A connection report names at most this many sensors (a broker restart changes them all at once)."""


@dataclass(frozen=True, slots=True)
class CribRef:
    """One crib of the site file: its wireless sensor, or the gateway pin of a wired one."""

    crib_id: str
    room_id: str
    sensor_id: str | None = None
    gpio_pin: int | None = None


def cribs_from_settings(settings: Settings) -> tuple[CribRef, ...]:
    """Every crib of the site, wireless and wired, in configuration order."""
    return tuple(CribRef(crib.id, room.id, crib.sensor_id, crib.gpio_pin) for room, crib in settings.cribs())


SIMULATION_HOWTO = (
    "on a test bench, set [site] demo = true in the site file (never on a site with children) and run the "
    "gateway with --simulate-pins: then open, close and bounce drive its pin from here"
)
"""How a technician gets wired cribs that the console can open and close."""
WIRED_VERBS = (OpenLatch, CloseLatch, Bounce)
"""What a wired crib's reed switch can do; the other commands are a wireless sensor's."""


def wired_crib_message(crib: CribRef) -> str:
    """What the console says when a command names a wired crib it cannot drive (no demo site: no pin commands)."""
    return (
        f"crib {crib.crib_id!r} (room {crib.room_id}) is wired to the gateway's GPIO pin {crib.gpio_pin}: "
        f"it has no wireless sensor to simulate; open and close its reed switch at the crib, or, {SIMULATION_HOWTO}"
    )


def _connection_state(sensor: SimulatedSensor) -> str:
    """As the status line and the connection reports say it: connected, connecting (its backoff running, broker
    away), refused (the broker refused its account: retried slowly), hung (connected, silent) or powered off."""
    if not sensor.powered:
        return "powered off"
    state = sensor.state
    return "connected" if state == "online" else state


Stream = TextIO | Callable[[], TextIO]
"""Where the console writes: a stream, or a function giving the stream at the time of writing (``lambda:
sys.stdout`` follows a prompt's or a live view's redirection of stdout)."""


class Console:
    """Executes commands on ``fleet``; actions go to ``out``, errors to ``err``, each with a timestamp."""

    def __init__(
        self,
        fleet: Fleet,
        out: Stream,
        err: Stream | None = None,
        *,
        wall_clock: Callable[[], float] = time.time,
        cribs: Sequence[CribRef] = (),
        pins: PinDriver | None = None,
    ) -> None:
        self._fleet = fleet
        self._pins = pins
        """Pin commands for the wired cribs (a demo site's gateway in simulation mode); None: not offered."""
        self._out = out
        self._err = err if err is not None else out
        self._wall_clock = wall_clock
        self._cribs: Mapping[str, CribRef] = {crib.crib_id: crib for crib in cribs}
        self._busy: set[str] = set()  # sensors a command is changing: their connection changes are its own
        self.errors = 0
        """How many commands failed so far."""

    def say(self, text: str) -> None:
        self._write(self._out, text)

    def error(self, text: str) -> None:
        self.errors += 1
        self._write(self._err, f"error: {text}")

    def _write(self, where: Stream, text: str) -> None:
        stream = _stream(where)
        stamp = datetime.fromtimestamp(self._wall_clock()).astimezone().isoformat(timespec="milliseconds")
        stream.write(f"{stamp} {text}\n")
        stream.flush()

    async def run(self, lines: AsyncIterator[str]) -> bool:
        """Execute each line until ``quit`` (True) or the end of the input (False)."""
        async for line in lines:
            for piece in split_script(line):
                try:
                    command = parse_command(piece)
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
                out = _stream(self._out)
                out.write(HELP + "\n")
                out.flush()
            case Status():
                for sensor in self._fleet:
                    self.say(_status_line(sensor))
            case Sleep(seconds):
                self.say(f"sleep {seconds:g} s")
                await asyncio.sleep(seconds)
            case _:
                await self._sensor_command(command)
        return True

    def resolve(self, name: str) -> SimulatedSensor | None:
        """The sensor that ``name`` (a sensor id or a crib id) means; None after printing why there is none."""
        if name in self._fleet:
            return self._fleet[name]
        crib = self._cribs.get(name)
        if crib is None:
            what = "sensor or crib" if self._cribs else "sensor"
            self.error(f"unknown {what} {name!r}; known: {self._known()}")
            return None
        if crib.sensor_id is None:
            self.error(wired_crib_message(crib))
            return None
        if crib.sensor_id not in self._fleet:
            self.error(f"crib {name!r} has sensor {crib.sensor_id!r}, which this simulator does not run")
            return None
        return self._fleet[crib.sensor_id]

    async def _sensor_command(self, command: SensorCommand) -> None:
        crib = self._cribs.get(command.sensor)
        if command.sensor not in self._fleet and crib is not None and crib.gpio_pin is not None:
            await self._wired_command(command, crib, crib.gpio_pin)
            return
        sensor = self.resolve(command.sensor)
        if sensor is None:
            return
        self._busy.add(sensor.sensor_id)
        try:
            await self._do_sensor_command(command, sensor)
        finally:
            self._busy.discard(sensor.sensor_id)

    async def _do_sensor_command(self, command: SensorCommand, sensor: SimulatedSensor) -> None:
        sensor_id = sensor.sensor_id
        if command.sensor != sensor_id:  # named by its crib
            sensor_id = f"{sensor_id} (crib {command.sensor})"
        try:
            match command:
                case OpenLatch() | CloseLatch():
                    sent = await (sensor.open() if isinstance(command, OpenLatch) else sensor.close_latch())
                    self.say(f"{sensor_id} latch {sensor.latch.value} (boot {sent.boot}, seq {sent.seq})")
                case Bounce(_, times, within_ms):
                    pause = within_ms / 1000.0 / (2 * times)
                    for _ in range(times):
                        await sensor.open()
                        await asyncio.sleep(pause)
                        await sensor.close_latch()
                        await asyncio.sleep(pause)
                    self.say(f"{sensor_id} bounced {times} times within {within_ms:g} ms, latch {sensor.latch.value}")
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
            if isinstance(command, OpenLatch | CloseLatch | Bounce | SetBattery):
                kept = " (the new value is kept and sent when the sensor connects again)"
            self.error(f"{exc}{kept}")
        except ValueError as exc:
            self.error(f"{sensor_id}: {exc}")

    async def _wired_command(self, command: SensorCommand, crib: CribRef, pin: int) -> None:
        """open, close or bounce of a wired crib: pin commands to the gateway's mock pin (simulation mode)."""
        if self._pins is None:
            self.error(wired_crib_message(crib))
            return
        if not isinstance(command, WIRED_VERBS):
            self.error(
                f"crib {crib.crib_id!r} is wired to the gateway's GPIO pin {pin}: only open, close and bounce "
                "apply to it (it has no sensor, battery or radio)"
            )
            return
        name = f"crib {crib.crib_id} (GPIO pin {pin})"
        try:
            match command:
                case OpenLatch():
                    await self._pins.drive(pin, PinLevel.HIGH)
                    self.say(f"{name} latch open: pin command `high` sent (a gateway with --simulate-pins moves it)")
                case CloseLatch():
                    await self._pins.drive(pin, PinLevel.LOW)
                    self.say(f"{name} latch closed: pin command `low` sent (a gateway with --simulate-pins moves it)")
                case Bounce(_, times, within_ms):
                    pause = within_ms / 1000.0 / (2 * times)
                    for _ in range(times):
                        await self._pins.drive(pin, PinLevel.HIGH)
                        await asyncio.sleep(pause)
                        await self._pins.drive(pin, PinLevel.LOW)
                        await asyncio.sleep(pause)
                    self.say(f"{name} bounced {times} times within {within_ms:g} ms, ending closed (pin commands sent)")
        except aiomqtt.MqttError as exc:
            self.error(f"{name}: the pin command could not be published ({exc}); is the broker up?")

    def _known(self) -> str:
        known = _listed(self._fleet.sensor_ids, "sensors")
        if self._cribs:
            known += f"; cribs {_listed(list(self._cribs), 'cribs')}"
        return known

    async def watch_connections(self, poll_s: float = CONNECTION_POLL_S) -> None:
        """Print every sensor connection that is lost or comes back by itself, until cancelled.

        Changes made by a command (kill, blip, reboot, ...) are that command's to report. The changes seen
        within one more poll of the first are reported together, so a broker restart is one line going and
        one line coming back.
        """
        seen = {sensor.sensor_id: _connection_state(sensor) for sensor in self._fleet}
        while True:
            await asyncio.sleep(poll_s)
            lost, back = self._connection_changes(seen)
            if not (lost or back):
                continue
            await asyncio.sleep(poll_s)
            more_lost, more_back = self._connection_changes(seen)
            lost, back, total = lost + more_lost, back + more_back, len(self._fleet)
            if lost:
                self.say(
                    f"connection lost for {len(lost)} of {total} sensors: {_listed(lost)}; "
                    "is the broker down? they reconnect by themselves"
                )
            if back:
                self.say(f"connected again, {len(back)} of {total} sensors: {_listed(back)}")

    def _connection_changes(self, seen: dict[str, str]) -> tuple[list[str], list[str]]:
        """The sensors whose connection was lost and those connected again since ``seen`` (which is updated)."""
        lost: list[str] = []
        back: list[str] = []
        for sensor in self._fleet:
            sensor_id, state = sensor.sensor_id, _connection_state(sensor)
            before, seen[sensor_id] = seen[sensor_id], state
            if sensor_id in self._busy or state == before:
                continue
            if before == "connected" and state in _AWAY:
                lost.append(sensor_id)
            elif before in _AWAY and state == "connected":
                back.append(sensor_id)
        return lost, back


_AWAY = frozenset({"connecting", "refused"})
"""Powered, and without a connection to the broker."""


def _stream(where: Stream) -> TextIO:
    return where() if callable(where) else where


def _listed(names: Sequence[str], what: str | None = None) -> str:
    shown = ", ".join(names[:_CHANGES_LISTED])
    if len(names) <= _CHANGES_LISTED:
        return shown
    return shown + (f" ... ({len(names)} {what})" if what else " ...")


def _status_line(sensor: SimulatedSensor) -> str:
    state = _connection_state(sensor)
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


async def prompt_lines(prompt: str = PROMPT) -> AsyncIterator[str]:
    """Lines typed at a prompt with line editing and history (prompt_toolkit), for a terminal.

    Ctrl-C clears the line being typed; Ctrl-D (end of input) ends. Output printed meanwhile appears above
    the prompt when the caller runs this inside :func:`prompt_toolkit.patch_stdout.patch_stdout`.
    """
    from prompt_toolkit import PromptSession  # noqa: PLC0415 - only a terminal needs it
    from prompt_toolkit.history import InMemoryHistory  # noqa: PLC0415

    session: PromptSession[str] = PromptSession(history=InMemoryHistory())
    while True:
        try:
            line = await session.prompt_async(prompt)
        except KeyboardInterrupt:
            continue
        except EOFError:
            return
        yield line
