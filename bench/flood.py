"""Alarm latency while one client floods the gateway with junk, beside the same measurement without the flood.

``python -m bench.flood [--cribs 100] [--rate 4000] [--kind ack] [--kind unknown_sensor] [--json]``

The same processes as :mod:`bench.latency` (Mosquitto, the gateway, the relay, the staff subscriber and N
simulated sensors, each in its own process), plus one junk client (:mod:`bench.junk`, its own process and
connection) that publishes junk at ``--rate`` messages per second (QoS 1 by default) while it is told to:

* ``ack``: well-formed acks for alarms that do not exist, on ``<prefix>/ack/flood`` (the default);
* ``unknown_sensor``: valid heartbeats of a sensor id that no crib uses (``<prefix>/sensor/zz-junk/telemetry``);
* ``bad_json``: not JSON, on a real sensor's heartbeat topic (the last sensor's);
* ``too_large``: 5,000 bytes on that topic.

Sensor junk goes to a ``telemetry`` topic, which the relay does not copy: the staff subscriber gets no junk.

Phases alternate in blocks: no flood, then a flood of each ``--kind`` in turn, and again. A flood block starts
the flood, waits ``--ramp`` seconds (long enough for any backlog to build up) and then takes its samples while
the flood goes on; the flood stops at the end of the block, and the next block waits until the gateway has
rejected every junk message of it (its ``gateway/stats``, published every 0.5 s here) or ``--drain-timeout``.
A sample is the same as in bench.latency: open a random closed crib, time the ``raised`` alarm at the staff
subscriber (and the relay's copy of the latch message: the broker's two hops under the same load), close it,
let everything settle. Timestamps are taken in the sensors and staff processes on the system-wide monotonic
clock (:mod:`bench.clock`).

It prints, per phase, the alarm's and the relay copy's p50/p90/p99/max, then per kind of junk the achieved
rate, how many the gateway rejected and under which reason, and how long after the flood stopped the
gateway had caught up. Exit status: 0 when every alarm arrived, 1 if any was lost or the run was cut short,
2 if the setup failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.harness import (
    Child,
    ChildExitedError,
    machine_json,
    machine_text,
    round_ms,
    run_benchmark,
    run_while_alive,
    setup_logging,
    start_child_with_clock,
)
from bench.junk import KINDS
from bench.latency import PAUSE_MAX_S, Arrival, Rig, RigConfig, start_rig
from bench.stats import Summary, summarize
from firmware_sim.sensor import SensorError
from gateway.domain.vocab import LatchState
from gateway.protocol import SensorChannel, Topics

log = logging.getLogger("bench.flood")

QUIET = "quiet"
STATS_INTERVAL_S = 0.5
JUNK_SENSOR = "zz-junk"


@dataclasses.dataclass(frozen=True, slots=True)
class Options:
    cribs: int = 100
    rate: float = 4000.0
    kinds: tuple[str, ...] = ("ack",)
    qos: int = 1
    samples: int = 200
    blocks: int = 4
    warmup: int = 10
    ramp_s: float = 0.5
    block_max_s: float = 30.0
    drain_timeout_s: float = 30.0
    timeout_s: float = 10.0
    time_limit_s: float = 300.0
    seed: int = 1
    json: bool = False
    keep_dir: bool = False

    @property
    def phases(self) -> list[str]:
        return [QUIET, *(f"flood_{kind}" for kind in self.kinds)]


def junk_topic(topics: Topics, kind: str, cribs: int) -> str:
    """Where junk of ``kind`` goes (see the module documentation)."""
    if kind == "ack":
        return topics.ack("flood")
    if kind == "unknown_sensor":
        return topics.sensor(JUNK_SENSOR, SensorChannel.TELEMETRY)
    return topics.sensor(f"b-{cribs:04d}", SensorChannel.TELEMETRY)


def plan(options: Options) -> list[tuple[str, int]]:
    """Blocks: every phase in turn (no flood first), ``blocks`` rounds, ``samples`` per phase in all."""
    rounds = max(1, options.blocks)
    out: list[tuple[str, int]] = []
    for i in range(rounds):
        size = options.samples // rounds + (1 if i < options.samples % rounds else 0)
        out += [(phase, size) for phase in options.phases if size > 0]
    return out


@dataclasses.dataclass
class FloodReport:
    """One kind of junk, over all its blocks."""

    kind: str
    topic: str
    sent: int = 0
    acked: int = 0
    seconds: float = 0.0
    rejected: Counter[str] = dataclasses.field(default_factory=Counter)
    caught_up_s: list[float | None] = dataclasses.field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    @property
    def unhandled(self) -> int:
        """Junk the gateway never reported: dropped by the broker, or still queued when the wait ended."""
        return max(0, self.sent - sum(self.rejected.values()))


@dataclasses.dataclass
class Results:
    options: Options
    alarm: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    relay: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    lost: Counter[str] = dataclasses.field(default_factory=Counter)
    gateway_cpu_s: dict[str, float] = dataclasses.field(default_factory=dict)
    wall_s: dict[str, float] = dataclasses.field(default_factory=dict)
    floods: dict[str, FloodReport] = dataclasses.field(default_factory=dict)
    complete: bool = True
    seconds: float = 0.0
    load_before: float = 0.0
    load_after: float = 0.0

    def __post_init__(self) -> None:
        for phase in self.options.phases:
            self.alarm.setdefault(phase, [])
            self.relay.setdefault(phase, [])

    @property
    def ok(self) -> bool:
        return self.complete and not any(self.lost.values())

    def cpu_pct(self, phase: str) -> float:
        """The gateway's CPU use while ``phase`` was measured, in % of one core."""
        wall = self.wall_s.get(phase, 0.0)
        return 100.0 * self.gateway_cpu_s.get(phase, 0.0) / wall if wall > 0 else 0.0


class StopRunError(Exception):
    pass


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux /proc), in seconds; 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime, stime (fields 14 and 15 of stat)


def _rejected(stats: dict[str, Any] | None) -> Counter[str]:
    return Counter((stats or {}).get("rejected", {}))


class FloodBench:
    def __init__(self, options: Options, rig: Rig, junk: dict[str, Child], results: Results) -> None:
        self.options = options
        self.rig = rig
        self.junk = junk  # one junk client per kind
        self.results = results
        self.rng = random.Random(options.seed)
        self.deadline = time.monotonic() + options.time_limit_s

    async def sample(self) -> tuple[float | None, float | None]:
        """(alarm ms, relay copy ms) of one latch opening; None for what did not come within the timeout."""
        sensors, arrivals, timeout = self.rig.sensors, self.rig.staff_feed.arrivals, self.options.timeout_s
        arrivals.clear()
        closed = [sid for sid in sensors.sensor_ids if sensors.latch[sid] is LatchState.CLOSED]
        if not closed:
            raise StopRunError("no closed latch left to open")
        sid = self.rng.choice(closed)
        try:
            opened = await sensors.set_latch(sid, LatchState.OPEN, timeout)
        except SensorError as exc:
            log.warning("%s: could not open the latch: %s", sid, exc)
            return None, None
        raised = await arrivals.wait((Arrival.RAISED, sid, opened.boot, opened.seq), timeout)
        relayed = await arrivals.wait((Arrival.RELAYED, sid, opened.boot, opened.seq), timeout)
        try:
            closed_msg = await sensors.set_latch(sid, LatchState.CLOSED, timeout)
        except SensorError as exc:
            log.warning("%s: could not close the latch: %s", sid, exc)
        else:
            await arrivals.wait((Arrival.RELAYED, sid, closed_msg.boot, closed_msg.seq), timeout)
            await arrivals.wait((Arrival.RESOLVED, sid, opened.boot, opened.seq), timeout)
        await asyncio.sleep(self.rng.uniform(0.0, PAUSE_MAX_S))
        return (
            None if raised is None else (raised - opened.t) / 1e6,
            None if relayed is None else (relayed - opened.t) / 1e6,
        )

    async def _junk_command(self, kind: str, command: str) -> None:
        proc = self.junk[kind].proc
        assert proc is not None
        assert proc.stdin is not None
        proc.stdin.write(f"{command}\n".encode())
        await proc.stdin.drain()

    async def _fresh_stats(self) -> dict[str, Any]:
        """The next stats message the gateway publishes."""
        async with asyncio.timeout(10 * STATS_INTERVAL_S + 5):
            return await self.rig.staff_feed.next_stats()

    async def block(self, phase: str, size: int) -> None:
        opts, results = self.options, self.results
        kind = phase.removeprefix("flood_") if phase != QUIET else None
        if kind is not None:
            before = _rejected(await self._fresh_stats())
            await self._junk_command(kind, f"flood {opts.block_max_s + opts.ramp_s + 5:.1f}")
            await asyncio.sleep(opts.ramp_s)
        gateway_pid = self.rig.gateway.proc.pid if self.rig.gateway.proc else 0
        cpu_before, wall_before = cpu_seconds(gateway_pid), time.monotonic()
        block_end = wall_before + opts.block_max_s
        taken = 0
        for _ in range(size):
            if time.monotonic() > min(block_end, self.deadline):
                break
            alarm, relay = await self.sample()
            taken += 1
            if alarm is None:
                results.lost[phase] += 1
                log.warning("%s: an alarm did not come within %.0f s", phase, opts.timeout_s)
            else:
                results.alarm[phase].append(alarm)
            if relay is not None:
                results.relay[phase].append(relay)
        results.gateway_cpu_s[phase] = results.gateway_cpu_s.get(phase, 0.0) + cpu_seconds(gateway_pid) - cpu_before
        results.wall_s[phase] = results.wall_s.get(phase, 0.0) + time.monotonic() - wall_before
        if taken < size:
            if time.monotonic() > self.deadline:
                results.complete = False
                log.error("time limit reached: %s block cut short after %d of %d samples", phase, taken, size)
            else:
                log.warning("%s block cut short after %d of %d samples (--block-max)", phase, taken, size)
        if kind is None:
            return
        await self._junk_command(kind, "stop")
        report = results.floods[kind]
        done = await self.junk[kind].read_json(opts.timeout_s)
        stopped = time.monotonic()
        report.sent += int(done["sent"])
        report.acked += int(done["acked"])
        report.seconds += float(done["seconds"])
        # Wait until the gateway has rejected every junk message of this block, so the next block starts clean.
        caught_up: float | None = None
        rejected = Counter[str]()
        wait_end = stopped + opts.drain_timeout_s
        while time.monotonic() < wait_end:
            rejected = _rejected(await self._fresh_stats()) - before
            if sum(rejected.values()) >= int(done["sent"]):
                caught_up = time.monotonic() - stopped
                break
        report.rejected += rejected
        report.caught_up_s.append(caught_up)
        if caught_up is None:
            log.warning(
                "flood of %s: the gateway reported %d of %d junk messages within %.0f s after the flood",
                kind,
                sum(rejected.values()),
                done["sent"],
                opts.drain_timeout_s,
            )

    async def run(self) -> None:
        for _ in range(self.options.warmup):
            await self.sample()
        for phase, size in plan(self.options):
            if time.monotonic() > self.deadline:
                self.results.complete = False
                log.error("time limit reached: stopping with the samples taken so far")
                return
            await self.block(phase, size)


async def run(options: Options, workdir: Path) -> Results:
    results = Results(options)
    results.load_before = os.getloadavg()[0]
    began = time.perf_counter()
    async with contextlib.AsyncExitStack() as stack:
        rig = await start_rig(stack, workdir, RigConfig(cribs=options.cribs, stats_interval_s=STATS_INTERVAL_S))
        for kind in options.kinds:
            results.floods[kind] = FloodReport(kind, junk_topic(rig.topics, kind, options.cribs))
        junk: dict[str, Child] = {}
        for kind in options.kinds:
            junk[kind] = Child(f"junk-{kind}", workdir / f"junk-{kind}.log")
            stack.push_async_callback(junk[kind].stop)
            argv = [
                sys.executable, "-m", "bench.junk", "--host", rig.endpoint.host, "--port", str(rig.endpoint.port),
                "--topic", results.floods[kind].topic, "--kind", kind, "--rate", str(options.rate),
                "--qos", str(options.qos), "--client-id", f"bench-junk-{kind}",
            ]  # fmt: skip
            await start_child_with_clock(junk[kind], argv, rig.env)
        log.info("rig and %d junk clients up in %.1f s", len(junk), time.perf_counter() - began)
        try:
            await run_while_alive(FloodBench(options, rig, junk, results).run(), [*rig.children, *junk.values()])
        except ChildExitedError as exc:
            results.complete = False
            log.error("%s exited during the run\n%s", exc.child.name, exc.child.tail())
        except (StopRunError, TimeoutError) as exc:
            results.complete = False
            log.error("run stopped: %s", exc or type(exc).__name__)
    results.seconds = time.perf_counter() - began
    results.load_after = os.getloadavg()[0]
    return results


# ------------------------------------------------------------------------------------------ output


def _summary(values: list[float]) -> Summary | None:
    return summarize(values) if values else None


def to_json(results: Results) -> dict[str, Any]:
    opts = results.options
    out: dict[str, Any] = {
        "cribs": opts.cribs,
        "rate_requested": opts.rate,
        "qos": opts.qos,
        "kinds": list(opts.kinds),
        "samples": opts.samples,
    }
    for phase in opts.phases:
        for what, series in (("alarm", results.alarm), ("relay", results.relay)):
            s = _summary(series[phase])
            for stat in ("p50", "p90", "p99", "max"):
                out[f"{phase}_{what}_{stat}_ms"] = round_ms(getattr(s, stat)) if s else None
            out[f"{phase}_{what}_n"] = len(series[phase])
        out[f"{phase}_alarm_lost"] = results.lost[phase]
        out[f"{phase}_gateway_cpu_pct"] = round(results.cpu_pct(phase), 1)
    for kind, report in results.floods.items():
        caught = [c for c in report.caught_up_s if c is not None]
        out[f"flood_{kind}_topic"] = report.topic
        out[f"flood_{kind}_sent"] = report.sent
        out[f"flood_{kind}_acked"] = report.acked
        out[f"flood_{kind}_rate"] = round(report.rate, 1)
        out[f"flood_{kind}_rejected"] = dict(report.rejected)
        out[f"flood_{kind}_unhandled"] = report.unhandled
        out[f"flood_{kind}_caught_up_max_s"] = round(max(caught), 2) if caught else None
        out[f"flood_{kind}_blocks_not_caught_up"] = sum(1 for c in report.caught_up_s if c is None)
    out |= {
        "complete": results.complete,
        "seconds": round(results.seconds, 2),
    }
    return out | machine_json(results.load_before, results.load_after)


def to_table(results: Results) -> str:
    opts = results.options
    rows = [
        f"cribwatch alarm latency under a junk flood: {opts.cribs} cribs, junk at {opts.rate:.0f} msg/s "
        f"(QoS {opts.qos}) from one client of its own, {opts.samples} samples per phase in {opts.blocks} rounds",
        "",
        f"{'ms':34} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8} {'n':>5} {'lost':>5}",
    ]
    for what, series in (("alarm", results.alarm), ("relay copy", results.relay)):
        for phase in opts.phases:
            label = f"{what}, {'no flood' if phase == QUIET else phase.replace('_', ' ', 1)}"
            s = _summary(series[phase])
            lost = results.lost[phase] if what == "alarm" else ""
            if s is None:
                rows.append(f"{label:34} {'-':>8} {'-':>8} {'-':>8} {'-':>8} {0:>5} {lost:>5}")
            else:
                rows.append(f"{label:34} {s.p50:8.3f} {s.p90:8.3f} {s.p99:8.3f} {s.max:8.3f} {s.n:>5} {lost!s:>5}")
    rows.append("")
    cpu = ", ".join(
        f"{'no flood' if phase == QUIET else phase.replace('_', ' ', 1)} {results.cpu_pct(phase):.0f}%"
        for phase in opts.phases
    )
    rows.append(f"gateway CPU while measuring (% of one core): {cpu}")
    for kind, report in results.floods.items():
        caught = [c for c in report.caught_up_s if c is not None]
        missing = sum(1 for c in report.caught_up_s if c is None)
        rows.append(
            f"junk {kind} on {report.topic}: {report.sent} sent in {report.seconds:.1f} s = {report.rate:.0f} msg/s "
            f"achieved ({report.acked} PUBACKs from the broker)"
        )
        rejected = ", ".join(f"{reason} {n}" for reason, n in sorted(report.rejected.items())) or "none"
        rows.append(f"  gateway rejected: {rejected}; not reported by the gateway: {report.unhandled}")
        if caught:
            not_caught = f"; NOT within {opts.drain_timeout_s:.0f} s after {missing}" if missing else ""
            rows.append(
                f"  gateway caught up within {max(caught):.1f} s after each flood stopped (stats every "
                f"{STATS_INTERVAL_S} s){not_caught}"
            )
        elif missing:
            rows.append(f"  gateway did NOT catch up within {opts.drain_timeout_s:.0f} s after any flood")
    if not results.complete:
        rows.append("INCOMPLETE: the run stopped early (see the log above)")
    rows.append(f"run took {results.seconds:.1f} s; " + machine_text(results.load_before, results.load_after))
    return "\n".join(rows)


# ------------------------------------------------------------------------------------------ main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.flood",
        description="Alarm latency while one client floods the gateway with junk, beside the same without.",
    )
    parser.add_argument("--cribs", type=int, default=100, help="simulated wireless cribs (100)")
    parser.add_argument("--rate", type=float, default=4000.0, help="junk messages per second (4000)")
    parser.add_argument(
        "--kind", action="append", choices=KINDS, help="junk to send (repeatable; default: ack)", dest="kinds"
    )
    parser.add_argument("--qos", type=int, choices=(0, 1), default=1, help="QoS of the junk (1)")
    parser.add_argument("--samples", type=int, default=200, help="alarm samples per phase (200)")
    parser.add_argument("--blocks", type=int, default=4, help="rounds of blocks, every phase in each (4)")
    parser.add_argument("--warmup", type=int, default=10, help="discarded samples first, no flood (10)")
    parser.add_argument("--ramp", type=float, default=0.5, help="seconds of flood before a block's samples (0.5)")
    parser.add_argument("--block-max", type=float, default=30.0, help="longest flood block, seconds (30)")
    parser.add_argument("--drain-timeout", type=float, default=30.0, help="wait for the gateway after a flood (30)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for one alarm (10)")
    parser.add_argument("--time-limit", type=float, default=300.0, help="stop after this many seconds (300)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout, nothing else")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, site file)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    return parser


def options_from_args(args: argparse.Namespace) -> Options:
    return Options(
        cribs=max(1, args.cribs),
        rate=args.rate,
        kinds=tuple(dict.fromkeys(args.kinds or ["ack"])),
        qos=args.qos,
        samples=max(1, args.samples),
        blocks=max(1, args.blocks),
        warmup=max(0, args.warmup),
        ramp_s=args.ramp,
        block_max_s=args.block_max,
        drain_timeout_s=args.drain_timeout,
        timeout_s=args.timeout,
        time_limit_s=args.time_limit,
        seed=args.seed,
        json=args.json,
        keep_dir=args.keep,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    options = options_from_args(args)
    return run_benchmark(
        run,
        options,
        to_json,
        to_table,
        logger=log,
        workdir_prefix="cribwatch-flood-",
        not_ok="some alarms were lost or the run was cut short",
    )


if __name__ == "__main__":
    raise SystemExit(main())
