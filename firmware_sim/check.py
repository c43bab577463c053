"""``cribwatch sim run SCENARIO --check``: play a scenario and check what the gateway did, over MQTT.

A :class:`Watcher` subscribes to the site's ``alarm/+`` and ``crib/+/state`` topics (what a staff device sees)
before the first step; :func:`run_scenario` starts the site's fleet, plays the steps
(:func:`firmware_sim.scenario.execute`), waits until every ``alarm`` expectation is met or past its time (and at
least the scenario's ``settle`` after the last step), then :func:`evaluate` judges each expectation of each crib:
one :class:`Result` with the measured time. :func:`print_report` prints them, :func:`write_junit` writes JUnit
XML for CI.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiomqtt

from firmware_sim.fleet import Credentials, Fleet, SensorOptions
from firmware_sim.scenario import (
    AlarmExpect,
    BrokerRestart,
    CheckItem,
    NoAlarmExpect,
    Progress,
    ResolvedScenario,
    StateExpect,
    StatsExpect,
    execute,
)
from gateway.domain.vocab import AlarmEventType
from gateway.mqtt.connection import BrokerAddress, new_client
from gateway.protocol import (
    AlarmEventPayload,
    CribStatePayload,
    GatewayStatsPayload,
    ProtocolError,
    Topics,
    decode,
)
from gateway.settings import Settings

__all__ = ["Result", "Watcher", "evaluate", "print_report", "run_scenario", "write_junit"]

log = logging.getLogger(__name__)

EARLY_S = 0.25
"""An event may carry an arrival this much before the step that caused it was reported as started."""
POLL_S = 0.1
RETRY_S = 0.5
"""How long the watcher waits before connecting again after losing the broker (a broker restart)."""


@dataclass(slots=True)
class Watcher:
    """What a staff device sees of the site: alarm events (with when they arrived) and each crib's last state."""

    topics: Topics
    events: list[tuple[float, AlarmEventPayload]] = field(default_factory=list)
    states: dict[str, CribStatePayload] = field(default_factory=dict)
    stats: list[tuple[float, GatewayStatsPayload]] = field(default_factory=list)
    unreadable: int = 0
    reconnects: int = 0

    def take(self, message: aiomqtt.Message) -> None:
        if not isinstance(message.payload, bytes):
            return
        topic = message.topic.value
        try:
            if topic.startswith(f"{self.topics.prefix}/alarm/"):
                self.events.append((time.monotonic(), decode(AlarmEventPayload, message.payload)))
            elif topic == self.topics.gateway_stats:
                self.stats.append((time.monotonic(), decode(GatewayStatsPayload, message.payload)))
            elif topic.endswith("/state"):
                state = decode(CribStatePayload, message.payload)
                self.states[state.crib] = state
        except ProtocolError:
            self.unreadable += 1

    @contextlib.asynccontextmanager
    async def listening(self, broker: BrokerAddress, *, persistent: bool = False) -> AsyncIterator[Watcher]:
        """Connected and subscribed (QoS 1) until the block ends; raises :class:`aiomqtt.MqttError` if the first
        connection fails. A connection lost later is made again every :data:`RETRY_S` (a broker restart);
        ``persistent``: with a session the broker keeps (and queues for) while the watcher is away."""
        identifier = f"cribwatch-check-{secrets.token_hex(3)}"
        ready = asyncio.Event()

        async def listen() -> None:
            while True:
                try:
                    async with new_client(broker, identifier=identifier, clean_session=not persistent) as client:
                        await client.subscribe(self.topics.alarm_filter, qos=1)
                        await client.subscribe(self.topics.crib_state_filter, qos=1)
                        await client.subscribe(self.topics.gateway_stats, qos=1)
                        if ready.is_set():
                            self.reconnects += 1
                        ready.set()
                        async for message in client.messages:
                            self.take(message)
                except aiomqtt.MqttError as exc:
                    if not ready.is_set():
                        raise
                    log.info("check: lost the broker (%s); connecting again", exc)
                await asyncio.sleep(RETRY_S)

        task = asyncio.create_task(listen(), name="check-watcher")
        waiter = asyncio.create_task(ready.wait())
        try:
            await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                task.result()  # the first connection failed: its error
            yield self
        finally:
            for t in (task, waiter):
                t.cancel()
            await asyncio.wait([task, waiter])

    def stats_growth(self, check: CheckItem, start: float) -> int | None:
        """How much a ``stats`` expectation's counter grew since ``start``: from the last stats before it (none:
        from 0; another gateway run: from 0) to the latest; None before any stats arrived after ``start``."""
        expect = check.expect
        assert isinstance(expect, StatsExpect)
        key = expect.reason if check.crib is None else check.crib.sensor
        assert key is not None
        before = [p for at, p in self.stats if at < start]
        after = [p for at, p in self.stats if at >= start]
        if not after:
            return None
        latest = after[-1]
        base = before[-1] if before and before[-1].gw_run == latest.gw_run else None
        count: dict[str, int] = getattr(latest, expect.counter)
        was: dict[str, int] = getattr(base, expect.counter) if base is not None else {}
        return count.get(key, 0) - was.get(key, 0)

    def first(self, check: CheckItem, start: float) -> float | None:
        """When the first event matching an ``alarm`` expectation arrived, in seconds from ``start``."""
        expect = check.expect
        assert isinstance(expect, AlarmExpect)
        for at, ev in self.events:
            if check.crib is not None and (ev.crib, ev.kind, ev.event) == (check.crib.crib, expect.alarm, expect.event):
                since = at - start - check.after_s
                if since >= -EARLY_S:
                    return max(since, 0.0)
        return None


@dataclass(frozen=True, slots=True)
class Result:
    name: str
    passed: bool
    detail: str
    measured_s: float | None
    line: int


def _ok(name: str, detail: str, measured_s: float | None, line: int) -> Result:
    return Result(name, passed=True, detail=detail, measured_s=measured_s, line=line)


def _bad(name: str, detail: str, measured_s: float | None, line: int) -> Result:
    return Result(name, passed=False, detail=detail, measured_s=measured_s, line=line)


def name_of(check: CheckItem) -> str:
    e = check.expect
    if isinstance(e, StatsExpect):
        bound = f"at least {e.at_least}" + (f", at most {e.at_most}" if e.at_most is not None else "")
        if check.crib is None:
            return f"gateway stats {e.counter} {e.reason}: {bound}"
        return f"gateway stats {e.counter} for sensor {check.crib.sensor} (crib {check.crib.crib}): {bound}"
    assert check.crib is not None
    crib = f"crib {check.crib.crib} (sensor {check.crib.sensor}, room {check.crib.room})"
    if isinstance(e, AlarmExpect):
        return f"{e.alarm.value} {e.event.value} for {crib}"
    if isinstance(e, NoAlarmExpect):
        return f"no {e.alarm.value if e.alarm else 'alarm'} raised for {crib}"
    wanted = []
    if e.latch is not None:
        wanted.append(f"latch {e.latch}")
    if e.alarms is not None:
        wanted.append("alarms [" + ", ".join(a.value for a in e.alarms) + "]")
    if e.sensor_online is not None:
        wanted.append("sensor " + ("online" if e.sensor_online else "offline"))
    return f"state of {crib}: {', '.join(wanted) or 'any'}"


def _decided(check: CheckItem, watcher: Watcher, start: float, now_s: float) -> bool:
    if isinstance(check.expect, StatsExpect):
        grown = watcher.stats_growth(check, start)
        return check.expect.at_most is None and grown is not None and grown >= check.expect.at_least
    if not isinstance(check.expect, AlarmExpect):
        return True
    deadline = check.deadline_s or 0.0
    return watcher.first(check, start) is not None or now_s > deadline


def provisional(check: CheckItem, watcher: Watcher, start: float, now_s: float) -> bool | None:
    """What can be said of an expectation before the run ends: passed, failed, or None (not yet decided)."""
    e = check.expect
    if isinstance(e, AlarmExpect):
        seen = watcher.first(check, start)
        if seen is not None:
            return seen <= (check.within_s or 0.0)
        return False if now_s > (check.deadline_s or 0.0) else None
    if isinstance(e, NoAlarmExpect):
        return False if _raised(check, e, watcher, start) else None
    if isinstance(e, StatsExpect):
        grown = watcher.stats_growth(check, start)
        if grown is not None and e.at_most is not None and grown > e.at_most:
            return False
        return True if _decided(check, watcher, start, now_s) else None
    return None


def _raised(check: CheckItem, e: NoAlarmExpect, watcher: Watcher, start: float) -> list[float]:
    assert check.crib is not None
    crib = check.crib.crib
    return [
        at - start
        for at, ev in watcher.events
        if ev.crib == crib
        and ev.event is AlarmEventType.RAISED
        and (e.alarm is None or ev.kind == e.alarm)
        and at - start >= check.after_s - EARLY_S
    ]


def evaluate(checks: list[CheckItem], watcher: Watcher, start: float, end: float) -> list[Result]:
    """Judge every expectation on what ``watcher`` saw between ``start`` and ``end`` (monotonic seconds)."""
    results = []
    for check in checks:
        e = check.expect
        name = name_of(check)
        if isinstance(e, AlarmExpect):
            limit = check.within_s or 0.0
            seen = watcher.first(check, start)
            if seen is None:
                results.append(_bad(name, f"not seen within {limit:.1f} s", None, check.line))
            elif seen > limit:
                results.append(_bad(name, f"after {seen:.1f} s: later than {limit:.1f} s", seen, check.line))
            else:
                results.append(_ok(name, f"after {seen:.1f} s (limit {limit:.1f} s)", seen, check.line))
        elif isinstance(e, NoAlarmExpect):
            raised = _raised(check, e, watcher, start)
            span = end - start - check.after_s
            if raised:
                results.append(_bad(name, f"raised at {raised[0]:.1f} s", raised[0], check.line))
            else:
                results.append(_ok(name, f"none in {span:.1f} s", span, check.line))
        elif isinstance(e, StatsExpect):
            results.append(_judge_stats(check, e, watcher.stats_growth(check, start), name))
        else:
            assert check.crib is not None
            results.append(_judge_state(check, e, watcher.states.get(check.crib.crib), name))
    return results


def _judge_stats(check: CheckItem, e: StatsExpect, grown: int | None, name: str) -> Result:
    if grown is None:
        return _bad(name, "no gateway stats seen after the start (is [mqtt] stats_interval_s long?)", None, check.line)
    if grown < e.at_least or (e.at_most is not None and grown > e.at_most):
        return _bad(name, f"grew by {grown}", None, check.line)
    return _ok(name, f"grew by {grown}", None, check.line)


def _judge_state(check: CheckItem, e: StateExpect, state: CribStatePayload | None, name: str) -> Result:
    if state is None:
        return _bad(name, "no crib state seen", None, check.line)
    got_alarms = sorted(a.kind.value for a in state.alarms)
    wrong = []
    if e.latch is not None and state.latch != e.latch:
        wrong.append(f"latch {state.latch}")
    if e.alarms is not None and got_alarms != sorted(a.value for a in e.alarms):
        wrong.append("alarms [" + ", ".join(got_alarms) + "]")
    if e.sensor_online is not None and state.sensor_online is not e.sensor_online:
        wrong.append(f"sensor_online {state.sensor_online}")
    shown = f"latch {state.latch}, alarms [{', '.join(got_alarms)}], sensor_online {state.sensor_online}"
    if wrong:
        return _bad(name, f"got {', '.join(wrong)}", None, check.line)
    return _ok(name, shown, None, check.line)


def print_report(scenario: ResolvedScenario, results: list[Result], out: TextIO) -> None:
    print(f"\nscenario {scenario.name}: expectations", file=out)
    for r in results:
        print(f"  {'PASS' if r.passed else 'FAIL'}  {r.name}: {r.detail}", file=out)
    passed = sum(r.passed for r in results)
    verdict = "all passed" if passed == len(results) else f"{len(results) - passed} FAILED"
    print(f"{passed} of {len(results)} expectations passed: {verdict}", file=out, flush=True)


def write_junit(path: str | Path, scenario: ResolvedScenario, results: list[Result], duration_s: float) -> None:
    """JUnit XML: one ``testsuite`` for the scenario, one ``testcase`` per expectation (a ``failure`` if failed)."""
    failures = sum(not r.passed for r in results)
    suites = ET.Element("testsuites", tests=str(len(results)), failures=str(failures))
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=scenario.name,
        tests=str(len(results)),
        failures=str(failures),
        errors="0",
        time=f"{duration_s:.3f}",
    )
    for r in results:
        case = ET.SubElement(
            suite, "testcase", classname=f"scenario.{scenario.name}", name=r.name, time=f"{r.measured_s or 0.0:.3f}"
        )
        if not r.passed:
            failure = ET.SubElement(case, "failure", message=r.detail, type="expectation")
            failure.text = f"{r.name}: {r.detail} (scenario line {r.line})"
        else:
            ET.SubElement(case, "system-out").text = r.detail
    ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)


async def run_scenario(
    scenario: ResolvedScenario,
    settings: Settings,
    *,
    broker: BrokerAddress,
    out: TextIO,
    credentials: Credentials | None = None,
    interval_s: float | None = None,
    check: bool = True,
    restart_broker: BrokerRestart | None = None,
    live: Callable[[Fleet, Progress], Coroutine[Any, Any, None]] | None = None,
) -> tuple[list[Result], float]:
    """Start the site's fleet, play ``scenario``, stop the fleet; with ``check`` judge the expectations.

    ``restart_broker`` restarts the broker for ``broker_restart`` steps (a broker the caller manages; the
    watcher then keeps a session on the broker, so nothing published while it reconnects is lost). ``live``
    shows the run (:class:`~firmware_sim.live.LiveView`): started once the fleet is, with the fleet and the
    run's :class:`~firmware_sim.scenario.Progress`, cancelled at the end.

    Returns the results (empty without ``check``) and how long the run took. Raises
    :class:`~firmware_sim.sensor.SensorConnectError` if the broker cannot be reached at all.
    """
    creds = credentials or Credentials()
    topics = Topics(settings.site.id, settings.mqtt.base_topic)
    watcher = Watcher(topics)
    options: SensorOptions = {} if interval_s is None else {"interval_s": interval_s}
    fleet = Fleet.from_settings(settings, broker, credentials=creds, **options)
    progress = Progress(len(scenario.steps), len(scenario.checks) if check else 0)
    async with contextlib.AsyncExitStack() as stack:
        if check:
            persistent = restart_broker is not None
            await stack.enter_async_context(watcher.listening(creds.for_watcher(broker), persistent=persistent))
        await fleet.start_each()
        stack.push_async_callback(fleet.stop)
        if live is not None:
            view = asyncio.create_task(live(fleet, progress), name="sim-run-live")
            stack.push_async_callback(_cancel, view)
        print(f"{fleet.summary()} at {broker.host}:{broker.port}, site {settings.site.id}", file=out)
        if scenario.wired_skipped:
            print(f"  not simulated (wired to the gateway): {', '.join(scenario.wired_skipped)}", file=out)
        print(f"scenario {scenario.name}: {len(scenario.steps)} steps", file=out, flush=True)
        start = time.monotonic()
        checks = scenario.checks if check else []
        playing = asyncio.create_task(
            execute(scenario, fleet, start=start, out=out, restart_broker=restart_broker, progress=progress)
        )
        try:
            while not playing.done():  # the verdicts so far, for the live view
                _note(progress, checks, watcher, start)
                await asyncio.wait([playing], timeout=POLL_S)
        finally:
            await _cancel(playing)
        playing.result()
        settle_until = scenario.steps_end_s + scenario.settle_s
        stats_until = settle_until + scenario.stats_wait_s if any(_is_stats(c) for c in checks) else 0.0
        last = max([settle_until, stats_until, *(c.deadline_s or 0.0 for c in checks)])
        while True:
            now_s = time.monotonic() - start
            _note(progress, checks, watcher, start)
            if now_s >= last:
                break
            if now_s >= settle_until and all(_decided(c, watcher, start, now_s) for c in checks):
                break
            await asyncio.sleep(POLL_S)
        end = time.monotonic()
        results = evaluate(checks, watcher, start, end)
        progress.passed = [r.name for r in results if r.passed]
        progress.failed = [r.name for r in results if not r.passed]
        progress.finished = True
        progress.step = "done"
    return results, end - start


def _is_stats(check: CheckItem) -> bool:
    return isinstance(check.expect, StatsExpect)


def _note(progress: Progress, checks: list[CheckItem], watcher: Watcher, start: float) -> None:
    now_s = time.monotonic() - start
    verdicts = [(name_of(c), provisional(c, watcher, start, now_s)) for c in checks]
    progress.passed = [name for name, v in verdicts if v is True]
    progress.failed = [name for name, v in verdicts if v is False]


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.wait([task])
