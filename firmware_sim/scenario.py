"""Scenarios: a timeline of what a site's sensors do, in a TOML file, run against a real gateway.

The format is documented in ``docs/scenarios.md``. In short::

    [scenario]
    name = "nap-time"
    description = "..."

    [[steps]]
    at = 0                      # seconds from the start, or an expression such as "grace + 2s"
    action = "open"
    crib = "vl-1"               # or sensor = "s-0101", or room = "vlinders"; crib = "*" is every wireless crib
    for = 1                     # closed again after 1 s

    [[expect]]
    kind = "alarm"              # alarm | no_alarm | state
    crib = "eg-1"
    alarm = "crib_open"
    within = "grace + 5s"

Durations are numbers (seconds) or expressions over the site's own settings, so one scenario checks any
installation with its real settings: ``grace`` (the room's ``grace_s`` of the crib concerned; the longest one
where a step has several), ``longest_grace`` (the longest ``grace_s`` of the site's wireless cribs),
``heartbeat`` (``heartbeat_interval_s``), ``offline`` (``heartbeat_interval_s`` x ``missed_heartbeats``: how
long a silent sensor takes to be reported) and ``offline_grace`` (``offline_grace_s``),
added and subtracted with numbers in seconds (``2``, ``2s``, ``500ms``): ``"offline + offline_grace + 5s"``.

:func:`load_scenario` parses strictly (unknown keys, wrong types and unknown actions are errors) and every
error names the file and the line (:class:`ScenarioError`); :func:`resolve` checks the scenario against the
site (its crib, sensor and room ids) and turns every expression into seconds; :func:`execute` plays the steps
on a :class:`~firmware_sim.fleet.Fleet`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import tomllib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TextIO

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from firmware_sim.fleet import Fleet
from firmware_sim.sensor import SensorError, SimulatedSensor
from gateway.domain.vocab import AlarmEventType, AlarmKind, LatchState
from gateway.protocol import SensorChannel
from gateway.settings import Settings

__all__ = [
    "Expectation",
    "Progress",
    "ResolvedScenario",
    "Scenario",
    "ScenarioError",
    "StatsExpect",
    "Step",
    "execute",
    "load_scenario",
    "parse_scenario",
    "resolve",
]

log = logging.getLogger(__name__)

ALL_CRIBS = "*"
DEFAULT_SETTLE_S = 2.0

# -- durations ---------------------------------------------------------------------------------------

_TERM = re.compile(r"\s*([+-])?\s*(?:(\d+(?:\.\d*)?|\.\d+)\s*(ms|s)?|([a-z_]+))\s*")
NAMES = ("grace", "longest_grace", "heartbeat", "offline", "offline_grace")


def _terms(text: str) -> list[tuple[float, str | None]]:
    """``"grace + 2s"`` -> ``[(1, "grace"), (2.0, None)]``; ValueError naming what is wrong."""
    out: list[tuple[float, str | None]] = []
    pos = 0
    if not text.strip():
        raise ValueError("an empty duration")
    while pos < len(text):
        m = _TERM.match(text, pos)
        if m is None or m.end() == pos:
            raise ValueError(f"cannot read the duration {text!r} at {text[pos:]!r}")
        sign_text, number, unit, name = m.groups()
        if out and sign_text is None:
            raise ValueError(f"duration {text!r}: join terms with + or -")
        sign = -1.0 if sign_text == "-" else 1.0
        if name is not None:
            if name not in NAMES:
                raise ValueError(f"duration {text!r}: unknown name {name!r} (known: {', '.join(NAMES)})")
            out.append((sign, name))
        else:
            out.append((sign * float(number) / (1000.0 if unit == "ms" else 1.0), None))
        pos = m.end()
    return out


Duration = float | str


def _check_duration(value: Duration) -> Duration:
    if isinstance(value, str):
        _terms(value)
    elif not 0 <= value < float("inf"):
        raise ValueError(f"a duration must be a finite number >= 0, got {value}")
    return value


@dataclass(frozen=True, slots=True)
class SiteTimes:
    """The site's settings a duration may name."""

    heartbeat: float
    offline: float
    offline_grace: float
    longest_grace: float

    @classmethod
    def of(cls, settings: Settings) -> SiteTimes:
        a = settings.alarms
        graces = [room.grace_s for room, crib in settings.cribs() if crib.sensor_id is not None]
        offline = a.heartbeat_interval_s * a.missed_heartbeats
        return cls(a.heartbeat_interval_s, offline, a.offline_grace_s, max(graces, default=0))


def seconds(value: Duration, site: SiteTimes, grace: float | None) -> float:
    """A duration in seconds on this site; ``grace`` is the room's grace period of the crib concerned."""
    if not isinstance(value, str):
        return float(value)
    total = 0.0
    for coef, name in _terms(value):
        if name is None:
            total += coef
        elif name == "grace":
            if grace is None:
                raise ValueError(f"duration {value!r}: `grace` needs a crib, sensor or room")
            total += coef * grace
        else:
            total += coef * float(getattr(site, name))
    return max(total, 0.0)


# -- the file's model --------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)


DurationField = Annotated[Duration, Field(union_mode="left_to_right"), AfterValidator(_check_duration)]
Kind = Annotated[AlarmKind, Field(strict=False)]  # from its TOML string
EventType = Annotated[AlarmEventType, Field(strict=False)]


class _Targeted(_Model):
    at: DurationField
    crib: str | None = None
    sensor: str | None = None
    room: str | None = None

    @model_validator(mode="after")
    def _one_target(self) -> _Targeted:
        given = [k for k in ("crib", "sensor", "room") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of crib, sensor, room" + (f" (got {', '.join(given)})" if given else ""))
        return self


class OpenStep(_Targeted):
    action: Literal["open"]
    for_: DurationField | None = Field(default=None, alias="for")


class CloseStep(_Targeted):
    action: Literal["close"]


class BounceStep(_Targeted):
    """A bad contact: ``times`` open/close blips within ``within_ms``, ending closed."""

    action: Literal["bounce"]
    times: int = Field(default=5, ge=1, le=1000)
    within_ms: float = Field(default=200.0, gt=0, le=60000)


class PowerOffStep(_Targeted):
    action: Literal["power_off"]


class HangStep(_Targeted):
    action: Literal["hang"]


class RecoverStep(_Targeted):
    action: Literal["recover"]


class PowerOnStep(_Targeted):
    action: Literal["power_on"]


class BatteryStep(_Targeted):
    action: Literal["battery"]
    pct: int = Field(ge=0, le=100)


class ClockSkewStep(_Targeted):
    action: Literal["clock_skew"]
    seconds: float


class DuplicateStep(_Targeted):
    action: Literal["duplicate"]


class JumpSeqStep(_Targeted):
    action: Literal["jump_seq"]
    by: int = Field(default=1000, ge=1, le=4294967295)
    channel: Literal["latch", "telemetry"] = "latch"


class OutOfOrderStep(_Targeted):
    action: Literal["out_of_order"]
    state: Literal["open", "closed"] = "closed"
    back: int = Field(default=10, ge=1, le=4294967295)


class MalformedStep(_Targeted):
    action: Literal["malformed"]
    payload: str = '{"v": 1, "state": "open", "boot": '
    channel: Literal["latch", "telemetry", "availability"] = "latch"


class FloodStep(_Targeted):
    action: Literal["flood"]
    count: int = Field(ge=1, le=1_000_000)
    channel: Literal["latch", "telemetry", "availability"] = "telemetry"


class BrokerRestartStep(_Model):
    action: Literal["broker_restart"]
    at: DurationField


Step = Annotated[
    OpenStep
    | CloseStep
    | BounceStep
    | PowerOffStep
    | HangStep
    | RecoverStep
    | PowerOnStep
    | BatteryStep
    | ClockSkewStep
    | DuplicateStep
    | JumpSeqStep
    | OutOfOrderStep
    | MalformedStep
    | FloodStep
    | BrokerRestartStep,
    Field(discriminator="action"),
]


class _Expect(_Model):
    crib: str | None = None
    sensor: str | None = None
    room: str | None = None

    @model_validator(mode="after")
    def _one_target(self) -> _Expect:
        given = [k for k in ("crib", "sensor", "room") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of crib, sensor, room" + (f" (got {', '.join(given)})" if given else ""))
        return self


class AlarmExpect(_Expect):
    """An alarm event for the crib within ``within`` of ``after``."""

    kind: Literal["alarm"]
    alarm: Kind = AlarmKind.CRIB_OPEN
    event: EventType = AlarmEventType.RAISED
    after: DurationField = 0.0
    within: DurationField


class NoAlarmExpect(_Expect):
    """No alarm raised for the crib from ``after`` to the end of the scenario (of kind ``alarm`` if given)."""

    kind: Literal["no_alarm"]
    alarm: Kind | None = None
    after: DurationField = 0.0


class StateExpect(_Expect):
    """The crib's state (``crib/<crib>/state``) at the end of the scenario."""

    kind: Literal["state"]
    latch: Literal["open", "closed", "unknown"] | None = None
    alarms: list[Kind] | None = None
    sensor_online: bool | None = None


STATS_COUNTERS = ("rejected", "ignored", "refused", "resynced")


class StatsExpect(_Model):
    """A counter of the gateway's ``gateway/stats`` that grew during the run by at least ``at_least`` (and at
    most ``at_most``, if given): ``rejected`` / ``ignored`` by ``reason`` (site-wide), ``refused`` / ``resynced``
    for the sensor of one target (``crib``, ``sensor`` or ``room``, as for steps)."""

    kind: Literal["stats"]
    counter: Literal["rejected", "ignored", "refused", "resynced"]
    reason: str | None = Field(default=None, min_length=1)
    crib: str | None = None
    sensor: str | None = None
    room: str | None = None
    at_least: int = Field(default=1, ge=0)
    at_most: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _key(self) -> StatsExpect:
        given = [k for k in ("crib", "sensor", "room") if getattr(self, k) is not None]
        if self.counter in ("rejected", "ignored"):
            if self.reason is None or given:
                raise ValueError(f"counter {self.counter!r} needs a reason (e.g. bad_json, duplicate) and no target")
        elif self.reason is not None or len(given) != 1:
            raise ValueError(f"counter {self.counter!r} is per sensor: give exactly one of crib, sensor, room")
        if self.at_most is not None and self.at_most < self.at_least:
            raise ValueError(f"at_most ({self.at_most}) is below at_least ({self.at_least})")
        return self


Expectation = Annotated[AlarmExpect | NoAlarmExpect | StateExpect | StatsExpect, Field(discriminator="kind")]


class ScenarioHeader(_Model):
    name: str = Field(min_length=1, max_length=100)
    description: str = ""
    settle: DurationField = DEFAULT_SETTLE_S


class Scenario(_Model):
    scenario: ScenarioHeader
    steps: list[Step] = Field(default_factory=list)
    expect: list[Expectation] = Field(default_factory=list)


# -- errors with a line -------------------------------------------------------------------------------


class ScenarioError(Exception):
    """A scenario that cannot run: ``FILE:LINE: problem`` (the line is 0 when unknown)."""

    def __init__(self, source: str, line: int, problem: str) -> None:
        self.source, self.line, self.problem = source, line, problem
        super().__init__(f"{source}:{line}: {problem}" if line else f"{source}: {problem}")


_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.-]+)\s*\]\]?")


class _Lines:
    """Where the tables of a TOML text start, to name a line for a step or an expectation by its index."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.headers: list[tuple[int, str, bool]] = []  # (line number, table, array table)
        for n, line in enumerate(self.lines, start=1):
            m = _HEADER.match(line)
            if m:
                self.headers.append((n, m.group(2), m.group(1) == "[["))

    def block(self, table: str, index: int | None) -> tuple[int, int]:
        """First and last line of ``[table]`` (``index`` None) or the index-th ``[[table]]``; (0, 0) if none."""
        starts = [n for n, name, array in self.headers if name == table and array == (index is not None)]
        i = 0 if index is None else index
        if i >= len(starts):
            return 0, 0
        start = starts[i]
        later = [n for n, _, _ in self.headers if n > start]
        return start, (later[0] - 1 if later else len(self.lines))

    def line_of(self, loc: Sequence[Any]) -> int:
        if not loc or loc[0] not in ("scenario", "steps", "expect"):
            return 0
        table = str(loc[0])
        index = loc[1] if table != "scenario" and len(loc) > 1 and isinstance(loc[1], int) else None
        if table != "scenario" and index is None:
            return self.block(table, 0)[0]
        start, end = self.block(table, index)
        keys = [k for k in loc[1 if index is None else 2 :] if isinstance(k, str)]
        for key in keys:  # the key's own line, if it is written in the block
            pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
            for n in range(start, end + 1):
                if pattern.match(self.lines[n - 1]):
                    return n
        return start


def _problem(err: Any, loc: Sequence[Any]) -> str:
    where = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in loc).replace(".[", "[")
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return f"{where}: unknown key; see docs/scenarios.md"
    if err["type"] == "union_tag_invalid":
        tag = err.get("ctx", {}).get("tag")
        expected = err.get("ctx", {}).get("expected_tags")
        return f"{where}: unknown {'action' if 'steps' in str(loc[:1]) else 'kind'} {tag!r} (one of {expected})"
    if err["type"] == "union_tag_not_found":
        return f"{where}: missing {'action' if loc and loc[0] == 'steps' else 'kind'}"
    if err["type"] == "missing":
        return f"{where}: missing"
    value = err.get("input")
    shown = "" if isinstance(value, dict) else f" = {value!r}"
    return f"{where}{shown}: {msg}"


def parse_scenario(text: str, source: str = "<scenario>") -> Scenario:
    """Parse a scenario's TOML text; :class:`ScenarioError` with the line for any mistake."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+)", str(exc))
        return _raise(ScenarioError(source, int(m.group(1)) if m else 0, f"not valid TOML: {exc}"))
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        lines = _Lines(text)
        # A misspelt key explains the "missing" one next to it: name it first.
        err = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")[0]
        # Drop the discriminator's own level from the location (steps.3.open.crib -> steps.3.crib).
        loc = [p for i, p in enumerate(err["loc"]) if not (i == 2 and p in _TAGS)]
        tag_key = ["action" if loc[:1] == ["steps"] else "kind"] if str(err["type"]).startswith("union_tag") else []
        raise ScenarioError(source, lines.line_of([*loc, *tag_key]), _problem(err, loc)) from None


_TAGS = frozenset(
    {
        "open",
        "close",
        "bounce",
        "power_off",
        "hang",
        "recover",
        "power_on",
        "battery",
        "clock_skew",
        "duplicate",
        "jump_seq",
        "out_of_order",
        "malformed",
        "flood",
        "broker_restart",
        "alarm",
        "no_alarm",
        "state",
        "stats",
    }
)


def _raise(exc: Exception) -> Scenario:
    raise exc


def load_scenario(path: str | Path) -> tuple[Scenario, str]:
    """Read and parse a scenario file: the scenario and its text (for line numbers in later errors)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(str(path), 0, f"cannot read: {exc}") from None
    return parse_scenario(text, str(path)), text


# -- against a site -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CribRef:
    crib: str
    sensor: str
    room: str
    grace: float


@dataclass(frozen=True, slots=True)
class TimedStep:
    at_s: float
    step: Any
    targets: tuple[CribRef, ...]
    for_s: float | None = None
    line: int = 0


@dataclass(frozen=True, slots=True)
class CheckItem:
    """One expectation for one crib, its times in seconds from the start."""

    expect: Any
    crib: CribRef | None  # None: a site-wide ``stats`` expectation
    after_s: float
    within_s: float | None
    line: int

    @property
    def deadline_s(self) -> float | None:
        return None if self.within_s is None else self.after_s + self.within_s


@dataclass(slots=True)
class ResolvedScenario:
    name: str
    description: str
    steps: list[TimedStep]
    checks: list[CheckItem]
    settle_s: float
    wired_skipped: list[str] = field(default_factory=list)
    stats_wait_s: float = 0.0
    """How long past the settle time a ``stats`` expectation may wait for the gateway's next stats (two of its
    ``stats_interval_s`` and a second)."""

    @property
    def steps_end_s(self) -> float:
        ends = [s.at_s + (s.for_s or 0.0) for s in self.steps]
        return max(ends, default=0.0)


def _site_cribs(settings: Settings) -> tuple[dict[str, CribRef], list[str]]:
    wireless: dict[str, CribRef] = {}
    wired: list[str] = []
    for room, crib in settings.cribs():
        if crib.sensor_id is None:
            wired.append(crib.id)
        else:
            wireless[crib.id] = CribRef(crib.id, crib.sensor_id, room.id, room.grace_s)
    return wireless, wired


def _targets(item: Any, cribs: dict[str, CribRef], wired: list[str], skipped: list[str]) -> tuple[CribRef, ...]:
    if item.crib is not None:
        if item.crib == ALL_CRIBS:
            skipped.extend(c for c in wired if c not in skipped)
            return tuple(cribs.values())
        if item.crib in cribs:
            return (cribs[item.crib],)
        if item.crib in wired:
            raise ValueError(f"crib {item.crib!r} is wired to the gateway: the simulator drives wireless cribs only")
        raise ValueError(f"crib {item.crib!r} is not a wireless crib of this site (known: {', '.join(cribs)})")
    if item.sensor is not None:
        found = [c for c in cribs.values() if c.sensor == item.sensor]
        if not found:
            raise ValueError(f"sensor {item.sensor!r} is not a sensor of this site")
        return tuple(found)
    found = [c for c in cribs.values() if c.room == item.room]
    if not found:
        raise ValueError(f"room {item.room!r} has no wireless crib on this site")
    return tuple(found)


def resolve(scenario: Scenario, settings: Settings, text: str = "", source: str = "<scenario>") -> ResolvedScenario:
    """Check ``scenario`` against the site and turn every duration into seconds; :class:`ScenarioError` (with
    the line of the step or expectation) for an id the site does not have or a duration that does not apply."""
    lines = _Lines(text)
    site = SiteTimes.of(settings)
    cribs, wired = _site_cribs(settings)
    skipped: list[str] = []
    steps: list[TimedStep] = []
    for i, step in enumerate(scenario.steps):
        line = lines.block("steps", i)[0]
        try:
            targets = () if isinstance(step, BrokerRestartStep) else _targets(step, cribs, wired, skipped)
            grace = max((t.grace for t in targets), default=None)
            at_s = seconds(step.at, site, grace)
            for_s = seconds(step.for_, site, grace) if isinstance(step, OpenStep) and step.for_ is not None else None
        except ValueError as exc:
            raise ScenarioError(source, line, f"steps[{i}]: {exc}") from None
        steps.append(TimedStep(at_s, step, targets, for_s, line))
    steps.sort(key=lambda s: s.at_s)
    checks: list[CheckItem] = []
    for i, expect in enumerate(scenario.expect):
        line = lines.block("expect", i)[0]
        try:
            if isinstance(expect, StatsExpect):
                has_target = any(getattr(expect, k) is not None for k in ("crib", "sensor", "room"))
                for one in _targets(expect, cribs, wired, skipped) if has_target else (None,):
                    checks.append(CheckItem(expect, one, 0.0, None, line))
                continue
            for crib in _targets(expect, cribs, wired, skipped):
                after = 0.0 if isinstance(expect, StateExpect) else seconds(expect.after, site, crib.grace)
                within = seconds(expect.within, site, crib.grace) if isinstance(expect, AlarmExpect) else None
                checks.append(CheckItem(expect, crib, after, within, line))
        except ValueError as exc:
            raise ScenarioError(source, line, f"expect[{i}]: {exc}") from None
    try:
        settle = seconds(scenario.scenario.settle, site, None)
    except ValueError as exc:
        raise ScenarioError(source, lines.line_of(["scenario", "settle"]), f"scenario.settle: {exc}") from None
    stats_wait = 2 * settings.mqtt.stats_interval_s + 1.0
    return ResolvedScenario(
        scenario.scenario.name, scenario.scenario.description, steps, checks, settle, skipped, stats_wait
    )


# -- playing it -----------------------------------------------------------------------------------------


@dataclass(slots=True)
class Progress:
    """How far a run is, for the live view: the step being played and the expectations decided so far."""

    steps_total: int
    checks_total: int
    steps_done: int = 0
    step: str = "starting the sensors"
    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    finished: bool = False

    @property
    def pending(self) -> int:
        return self.checks_total - len(self.passed) - len(self.failed)


def describe(step: TimedStep) -> str:
    """``open vl-1 (s-0101) for 1 s``: one step as the progress lines show it."""
    s = step.step
    who = ", ".join(f"{t.crib} ({t.sensor})" for t in step.targets)
    text = f"{s.action} {who}".rstrip()
    extra = {
        "open": f" for {step.for_s:g} s" if step.for_s is not None else "",
        "bounce": f" {getattr(s, 'times', '')} times within {getattr(s, 'within_ms', 0):g} ms",
        "battery": f" {getattr(s, 'pct', '')} %",
        "clock_skew": f" {getattr(s, 'seconds', 0):+g} s",
        "jump_seq": f" {getattr(s, 'channel', '')} +{getattr(s, 'by', '')}",
        "out_of_order": f" {getattr(s, 'state', '')} (seq -{getattr(s, 'back', '')})",
        "flood": f" {getattr(s, 'count', '')} junk messages on {getattr(s, 'channel', '')}",
    }
    return text + extra.get(s.action, "")


async def _bounce(sensor: SimulatedSensor, times: int, within_ms: float) -> None:
    pause = within_ms / 1000.0 / (2 * times)
    for _ in range(times):
        await sensor.open()
        await asyncio.sleep(pause)
        await sensor.close_latch()
        await asyncio.sleep(pause)


async def _act(step: Any, sensor: SimulatedSensor) -> None:
    action = step.action
    if action == "open":
        await sensor.open()
    elif action == "close":
        await sensor.close_latch()
    elif action == "bounce":
        await _bounce(sensor, step.times, step.within_ms)
    elif action == "power_off":
        await sensor.power_off()
    elif action == "hang":
        sensor.hang()
    elif action == "recover":
        await sensor.recover()
    elif action == "power_on":
        await sensor.power_on()
    elif action == "battery":
        await sensor.set_battery(step.pct)
    elif action == "clock_skew":
        sensor.clock_skew_s = step.seconds
    elif action == "duplicate":
        await sensor.duplicate_latch()
    elif action == "jump_seq":
        sensor.jump_seq(SensorChannel(step.channel), step.by)
    elif action == "out_of_order":
        await sensor.send_old_latch(LatchState(step.state), back=step.back)
    elif action == "malformed":
        await sensor.send_raw(SensorChannel(step.channel), step.payload.encode())
    elif action == "flood":
        channel = SensorChannel(step.channel)
        for n in range(step.count):
            await sensor.send_raw(channel, f"junk {n}".encode(), qos=0)


BrokerRestart = Callable[[], Awaitable[None]]


async def execute(
    scenario: ResolvedScenario,
    fleet: Fleet,
    *,
    start: float,
    out: TextIO,
    restart_broker: BrokerRestart | None = None,
    progress: Progress | None = None,
) -> None:
    """Play the steps on ``fleet``, each at ``start`` (:func:`time.monotonic`) + its ``at``; a line per step on
    ``out`` (and in ``progress``). A step a sensor cannot do (it is off, hung, refused) is reported and the
    scenario goes on."""
    closes: list[asyncio.Task[None]] = []

    def say(at: float, text: str) -> None:
        print(f"  {at:6.1f} s  {text}", file=out, flush=True)

    def playing(index: int, text: str) -> None:
        if progress is not None:
            progress.steps_done, progress.step = index, text

    async def one(step: TimedStep, target: CribRef) -> None:
        try:
            await _act(step.step, fleet[target.sensor])
        except (SensorError, ValueError) as exc:
            say(time.monotonic() - start, f"{step.step.action} {target.crib}: not done: {exc}")

    async def close_later(step: TimedStep, target: CribRef, at: float) -> None:
        await asyncio.sleep(max(0.0, start + at - time.monotonic()))
        say(at, f"close {target.crib} ({target.sensor})")
        try:
            await fleet[target.sensor].close_latch()
        except SensorError as exc:
            say(time.monotonic() - start, f"close {target.crib}: not done: {exc}")

    try:
        for index, step in enumerate(scenario.steps, start=1):
            await asyncio.sleep(max(0.0, start + step.at_s - time.monotonic()))
            if isinstance(step.step, BrokerRestartStep):
                playing(index, f"{step.at_s:.1f} s broker_restart")
                if restart_broker is None:
                    say(step.at_s, "broker_restart skipped: this run does not manage the broker (it is the site's)")
                else:
                    say(step.at_s, "broker_restart")
                    await restart_broker()
                continue
            playing(index, f"{step.at_s:.1f} s {describe(step)}")
            say(step.at_s, describe(step))
            await asyncio.gather(*(one(step, t) for t in step.targets))
            if step.for_s is not None:
                closes.extend(asyncio.create_task(close_later(step, t, step.at_s + step.for_s)) for t in step.targets)
        if closes:
            await asyncio.gather(*closes)
        playing(len(scenario.steps), "every step played; watching what the gateway does")
    finally:
        for task in closes:
            task.cancel()
