"""The simulator's command language, for scripts (``--script "open s-0101; sleep 2"``) and technicians.

Pure parsing only: text in, frozen command objects out (or :class:`CommandError`). Whether a sensor id
exists is for whoever runs the commands to decide; running them is :mod:`firmware_sim.console`.

One command per line, or several separated by ``;`` (in a script and on any typed line). ``SENSOR`` is a
sensor id or, with a site file, a crib id (the console resolves it). Verbs are case-insensitive; ``#`` starts a comment.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.domain.vocab import is_identifier

__all__ = [
    "HELP",
    "Bounce",
    "CloseLatch",
    "Command",
    "CommandError",
    "Heartbeat",
    "Help",
    "NetworkBlip",
    "OpenLatch",
    "PowerOff",
    "PowerOn",
    "Quit",
    "Reboot",
    "SensorCommand",
    "SetBattery",
    "Shutdown",
    "Sleep",
    "Status",
    "parse_command",
    "parse_script",
    "split_script",
]


class CommandError(ValueError):
    """A command that cannot be parsed; the message says what was expected."""


@dataclass(frozen=True, slots=True)
class OpenLatch:
    sensor: str


@dataclass(frozen=True, slots=True)
class CloseLatch:
    sensor: str


@dataclass(frozen=True, slots=True)
class Bounce:
    """A bad contact: ``times`` quick open/close blips within ``within_ms``, ending closed."""

    sensor: str
    times: int = 5
    within_ms: float = 200.0


@dataclass(frozen=True, slots=True)
class SetBattery:
    sensor: str
    pct: int


@dataclass(frozen=True, slots=True)
class Heartbeat:
    sensor: str


@dataclass(frozen=True, slots=True)
class PowerOff:
    """Power lost: the broker publishes the sensor's last will."""

    sensor: str


@dataclass(frozen=True, slots=True)
class PowerOn:
    sensor: str


@dataclass(frozen=True, slots=True)
class Reboot:
    sensor: str


@dataclass(frozen=True, slots=True)
class NetworkBlip:
    sensor: str
    down_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Shutdown:
    """Clean shutdown: the sensor publishes ``offline`` itself."""

    sensor: str


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


@dataclass(frozen=True, slots=True)
class Status:
    pass


@dataclass(frozen=True, slots=True)
class Help:
    pass


@dataclass(frozen=True, slots=True)
class Quit:
    pass


SensorCommand = (
    OpenLatch | CloseLatch | Bounce | SetBattery | Heartbeat | PowerOff | PowerOn | Reboot | NetworkBlip | Shutdown
)
"""A command for one sensor (it has a ``sensor`` attribute)."""
Command = SensorCommand | Sleep | Status | Help | Quit


@dataclass(frozen=True, slots=True)
class _Verb:
    names: tuple[str, ...]
    usage: str
    summary: str
    build: Callable[[str, Sequence[str]], Command]


def _sensor(verb: str, args: Sequence[str], usage: str, *, optional: int = 0) -> str:
    if not 1 <= len(args) <= 1 + optional:
        raise CommandError(f"{verb}: expected `{usage}`, got {len(args)} argument(s)")
    sensor = args[0]
    if not is_identifier(sensor):
        raise CommandError(f"{verb}: {sensor!r} is not a sensor id (lower case letters, digits, - and _)")
    return sensor


def _no_args(verb: str, args: Sequence[str]) -> None:
    if args:
        raise CommandError(f"{verb}: takes no arguments, got {' '.join(args)!r}")


def _seconds(verb: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise CommandError(f"{verb}: {text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise CommandError(f"{verb}: seconds must be a finite number >= 0, got {text!r}")
    return value


def _battery(verb: str, args: Sequence[str]) -> SetBattery:
    usage = "battery SENSOR PERCENT"
    if len(args) != 2:
        raise CommandError(f"{verb}: expected `{usage}`, got {len(args)} argument(s)")
    sensor = _sensor(verb, args[:1], usage)
    try:
        pct = int(args[1].removesuffix("%"))
    except ValueError:
        raise CommandError(f"{verb}: {args[1]!r} is not a whole percentage") from None
    if not 0 <= pct <= 100:
        raise CommandError(f"{verb}: the battery must be within 0..100 %, got {pct}")
    return SetBattery(sensor, pct)


MAX_BOUNCES = 100


def _bounce(verb: str, args: Sequence[str]) -> Bounce:
    sensor = _sensor(verb, args, "bounce SENSOR [TIMES]", optional=1)
    if len(args) == 1:
        return Bounce(sensor)
    try:
        times = int(args[1])
    except ValueError:
        raise CommandError(f"{verb}: {args[1]!r} is not a whole number of blips") from None
    if not 1 <= times <= MAX_BOUNCES:
        raise CommandError(f"{verb}: the number of blips must be within 1..{MAX_BOUNCES}, got {times}")
    return Bounce(sensor, times)


def _blip(verb: str, args: Sequence[str]) -> NetworkBlip:
    sensor = _sensor(verb, args, "blip SENSOR [SECONDS]", optional=1)
    return NetworkBlip(sensor, _seconds(verb, args[1]) if len(args) > 1 else 0.0)


def _sleep(verb: str, args: Sequence[str]) -> Sleep:
    if len(args) != 1:
        raise CommandError(f"{verb}: expected `sleep SECONDS`, got {len(args)} argument(s)")
    return Sleep(_seconds(verb, args[0]))


def _simple(kind: Callable[[], Command]) -> Callable[[str, Sequence[str]], Command]:
    def build(verb: str, args: Sequence[str]) -> Command:
        _no_args(verb, args)
        return kind()

    return build


def _per_sensor(kind: Callable[[str], Command], usage: str) -> Callable[[str, Sequence[str]], Command]:
    def build(verb: str, args: Sequence[str]) -> Command:
        return kind(_sensor(verb, args, usage))

    return build


VERBS: tuple[_Verb, ...] = (
    _Verb(("open",), "open SENSOR", "the latch opens", _per_sensor(OpenLatch, "open SENSOR")),
    _Verb(("close",), "close SENSOR", "the latch closes", _per_sensor(CloseLatch, "close SENSOR")),
    _Verb(
        ("bounce",),
        "bounce SENSOR [TIMES]",
        "a bad contact: TIMES (5) open/close blips within 200 ms, ending closed",
        _bounce,
    ),
    _Verb(("battery",), "battery SENSOR PERCENT", "battery level; a heartbeat goes out at once", _battery),
    _Verb(("heartbeat", "hb"), "heartbeat SENSOR", "a heartbeat now", _per_sensor(Heartbeat, "heartbeat SENSOR")),
    _Verb(
        ("kill", "poweroff", "off"),
        "kill SENSOR",
        "power lost: the broker publishes its last will (offline)",
        _per_sensor(PowerOff, "kill SENSOR"),
    ),
    _Verb(
        ("poweron", "on"),
        "poweron SENSOR",
        "power back: a new boot, sequence numbers from 0",
        _per_sensor(PowerOn, "poweron SENSOR"),
    ),
    _Verb(
        ("reboot",),
        "reboot SENSOR",
        "power cycle: kill, then poweron",
        _per_sensor(Reboot, "reboot SENSOR"),
    ),
    _Verb(
        ("blip",),
        "blip SENSOR [SECONDS]",
        "Wi-Fi hiccup: connection cut, back after SECONDS (default 0) with the same boot",
        _blip,
    ),
    _Verb(
        ("shutdown",),
        "shutdown SENSOR",
        "clean shutdown: the sensor publishes offline itself",
        _per_sensor(Shutdown, "shutdown SENSOR"),
    ),
    _Verb(("sleep", "wait"), "sleep SECONDS", "wait (sensors keep sending heartbeats)", _sleep),
    _Verb(("status",), "status", "boot, latch, battery and connection of every sensor", _simple(Status)),
    _Verb(("help", "?"), "help", "this list", _simple(Help)),
    _Verb(("quit", "exit"), "quit", "stop every sensor cleanly and exit", _simple(Quit)),
)

_BY_NAME = {name: verb for verb in VERBS for name in verb.names}

HELP = "commands (several on one line separated by `;`; SENSOR is a sensor id, or a crib id with --config):\n" + (
    "\n".join(f"  {verb.usage:<24} {verb.summary}" for verb in VERBS)
)


def split_script(text: str) -> list[str]:
    """The commands of a script: split on ``;`` and line ends, comments and blanks left out."""
    pieces: list[str] = []
    for line in text.splitlines():
        code = line.split("#", 1)[0]
        pieces += [piece.strip() for piece in code.split(";") if piece.strip()]
    return pieces


def parse_command(text: str) -> Command | None:
    """One command; None for a blank line or a comment; :class:`CommandError` if it cannot be parsed."""
    words = text.split("#", 1)[0].split()
    if not words:
        return None
    verb_text, args = words[0].lower(), words[1:]
    verb = _BY_NAME.get(verb_text)
    if verb is None:
        raise CommandError(f"unknown command {words[0]!r}; `help` lists the commands")
    return verb.build(verb.names[0], args)


def parse_script(text: str) -> list[Command]:
    """Every command of a script; :class:`CommandError` naming the first one that cannot be parsed."""
    commands: list[Command] = []
    for number, piece in enumerate(split_script(text), start=1):
        try:
            command = parse_command(piece)
        except CommandError as exc:
            raise CommandError(f"command {number} ({piece!r}): {exc}") from None
        if command is not None:
            commands.append(command)
    return commands
