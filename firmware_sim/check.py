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
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import aiomqtt

from firmware_sim.fleet import Credentials, Fleet, SensorOptions
from firmware_sim.scenario import (
    AlarmExpect,
    BrokerRestart,
    CheckItem,
    NoAlarmExpect,
    ResolvedScenario,
    StateExpect,
    execute,
)
from gateway.domain.vocab import AlarmEventType
from gateway.mqtt.connection import BrokerAddress, new_client
from gateway.protocol import AlarmEventPayload, CribStatePayload, ProtocolError, Topics, decode
from gateway.settings import Settings

__all__ = ["Result", "Watcher", "evaluate", "print_report", "run_scenario", "write_junit"]

log = logging.getLogger(__name__)

EARLY_S = 0.25
"""An event may carry an arrival this much before the step that caused it was reported as started."""
POLL_S = 0.1


@dataclass(slots=True)
class Watcher:
    """What a staff device sees of the site: alarm events (with when they arrived) and each crib's last state."""

    topics: Topics
    events: list[tuple[float, AlarmEventPayload]] = field(default_factory=list)
    states: dict[str, CribStatePayload] = field(default_factory=dict)
    unreadable: int = 0

    def take(self, message: aiomqtt.Message) -> None:
        if not isinstance(message.payload, bytes):
            return
        topic = message.topic.value
        try:
            if topic.startswith(f"{self.topics.prefix}/alarm/"):
                self.events.append((time.monotonic(), decode(AlarmEventPayload, message.payload)))
            elif topic.endswith("/state"):
                state = decode(CribStatePayload, message.payload)
                self.states[state.crib] = state
        except ProtocolError:
            self.unreadable += 1

    @contextlib.asynccontextmanager
    async def listening(self, broker: BrokerAddress) -> AsyncIterator[Watcher]:
        """Connected and subscribed (QoS 1) until the block ends."""
        identifier = f"cribwatch-check-{secrets.token_hex(3)}"
        async with new_client(broker, identifier=identifier) as client:
            await client.subscribe(self.topics.alarm_filter, qos=1)
            await client.subscribe(self.topics.crib_state_filter, qos=1)

            async def listen() -> None:
                async for message in client.messages:
                    self.take(message)

            task = asyncio.create_task(listen(), name="check-watcher")
            try:
                yield self
            finally:
                task.cancel()
                await asyncio.wait([task])

    def first(self, check: CheckItem, start: float) -> float | None:
        """When the first event matching an ``alarm`` expectation arrived, in seconds from ``start``."""
        expect = check.expect
        assert isinstance(expect, AlarmExpect)
        for at, ev in self.events:
            if (ev.crib, ev.kind, ev.event) == (check.crib.crib, expect.alarm, expect.event):
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
    if not isinstance(check.expect, AlarmExpect):
        return True
    deadline = check.deadline_s or 0.0
    return watcher.first(check, start) is not None or now_s > deadline


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
            raised = [
                at - start
                for at, ev in watcher.events
                if ev.crib == check.crib.crib
                and ev.event is AlarmEventType.RAISED
                and (e.alarm is None or ev.kind == e.alarm)
                and at - start >= check.after_s - EARLY_S
            ]
            span = end - start - check.after_s
            if raised:
                results.append(_bad(name, f"raised at {raised[0]:.1f} s", raised[0], check.line))
            else:
                results.append(_ok(name, f"none in {span:.1f} s", span, check.line))
        else:
            results.append(_judge_state(check, e, watcher.states.get(check.crib.crib), name))
    return results


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
) -> tuple[list[Result], float]:
    """Start the site's fleet, play ``scenario``, stop the fleet; with ``check`` judge the expectations.

    Returns the results (empty without ``check``) and how long the run took. Raises
    :class:`~firmware_sim.sensor.SensorConnectError` if the broker cannot be reached at all.
    """
    creds = credentials or Credentials()
    topics = Topics(settings.site.id, settings.mqtt.base_topic)
    watcher = Watcher(topics)
    options: SensorOptions = {} if interval_s is None else {"interval_s": interval_s}
    fleet = Fleet.from_settings(settings, broker, credentials=creds, **options)
    async with contextlib.AsyncExitStack() as stack:
        if check:
            await stack.enter_async_context(watcher.listening(creds.for_watcher(broker)))
        await fleet.start_each()
        stack.push_async_callback(fleet.stop)
        print(f"{fleet.summary()} at {broker.host}:{broker.port}, site {settings.site.id}", file=out)
        if scenario.wired_skipped:
            print(f"  not simulated (wired to the gateway): {', '.join(scenario.wired_skipped)}", file=out)
        print(f"scenario {scenario.name}: {len(scenario.steps)} steps", file=out, flush=True)
        start = time.monotonic()
        await execute(scenario, fleet, start=start, out=out, restart_broker=restart_broker)
        settle_until = scenario.steps_end_s + scenario.settle_s
        last = max([settle_until, *(c.deadline_s or 0.0 for c in scenario.checks)])
        while True:
            now_s = time.monotonic() - start
            if now_s >= last:
                break
            if now_s >= settle_until and all(_decided(c, watcher, start, now_s) for c in scenario.checks):
                break
            await asyncio.sleep(POLL_S)
        end = time.monotonic()
        results = evaluate(scenario.checks, watcher, start, end) if check else []
    return results, end - start
