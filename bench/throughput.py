"""How many sensor messages per second the gateway absorbs while its alarms stay fast: rate steps.

``python -m bench.throughput [--rates 1000,2000,5000,10000,15000,20000] [--step 5] [--json]``

The rig of :mod:`bench.latency` (Mosquitto, the gateway, the floor relay, the staff subscriber and ``--cribs``
simulated sensors with a heartbeat every second, each in a process of its own), with ``--load-sensors`` more cribs
in the site file whose sensors nobody simulates: one load generator (:mod:`bench.junk` ``--kind heartbeat``, plain
paho in its own process, TCP_NODELAY) speaks for them, publishing valid heartbeats (QoS 0, as sensors do) of each in
turn at the step's rate. The gateway accepts every one of them (its ``accepted`` count), on its main connection,
the one that carries the latch messages. The site's heartbeat interval is 60 s, so the load sensors never go
silent between steps.

Each step: a quiet step first (no load), then every ``--rates`` in turn. The load runs for ``--step`` seconds;
after ``--ramp`` seconds, samples are taken until it stops (open a random crib's latch, time the gateway's
``raised`` event and the relay's copy at the staff subscriber, close it; as in bench.flood). Then the benchmark
waits until the gateway has accepted the step's messages (its stats, every 0.5 s; the simulated sensors' own
messages are counted out) or ``--drain-timeout``.

Printed per step: the rate asked and achieved, the messages sent and accepted, how long after the load stopped the
gateway had caught up, the gateway's CPU (% of one core, during the load), the alarm's and the relay copy's p50 and
p99 and their ratio at p99; then the highest rate whose alarm p99 stayed within 2x the floor's p99 (the relay copy
in the same step) with every message accepted, beside the goal (10,000 messages/s).
Exit status: 0 when every alarm arrived, 1 if one was lost or the run was cut short, 2 if the setup failed.
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
from pathlib import Path
from typing import Any

from bench.flood import cpu_seconds
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
from bench.junk import LOAD_KIND
from bench.latency import HEARTBEAT_S, PAUSE_MAX_S, Arrival, Rig, RigConfig, start_rig
from bench.stats import Summary, ratio, summarize
from firmware_sim.sensor import SensorError
from gateway.domain.vocab import LatchState
from gateway.protocol import SensorChannel

log = logging.getLogger("bench.throughput")

STATS_INTERVAL_S = 0.5
SITE_HEARTBEAT_S = 60.0
GOAL_RATE = 10_000
DEFAULT_RATES = (1000, 2000, 5000, 10000, 15000, 20000)
GOAL_RATIO_P99 = 2.0


@dataclasses.dataclass(frozen=True, slots=True)
class Options:
    rates: tuple[int, ...] = (1000, 2000, 5000, 10000, 15000, 20000)
    step_s: float = 5.0
    ramp_s: float = 1.0
    cribs: int = 100
    load_sensors: int = 200
    drain_timeout_s: float = 30.0
    timeout_s: float = 10.0
    seed: int = 1
    json: bool = False
    keep_dir: bool = False
    gateway_profile: Path | None = None


@dataclasses.dataclass
class Step:
    rate: int  # asked; 0 for the quiet step
    sent: int = 0
    achieved: float = 0.0
    accepted: int = 0
    caught_up_s: float | None = None
    cpu_pct: float = 0.0
    alarm: list[float] = dataclasses.field(default_factory=list)
    floor: list[float] = dataclasses.field(default_factory=list)
    lost: int = 0

    def summary(self, which: str) -> Summary | None:
        values = self.alarm if which == "alarm" else self.floor
        return summarize(values) if values else None

    @property
    def ratio_p99(self) -> float | None:
        alarm, floor = self.summary("alarm"), self.summary("floor")
        return ratio(alarm.p99, floor.p99) if alarm and floor else None

    @property
    def within_goal(self) -> bool:
        r = self.ratio_p99
        return r is not None and r <= GOAL_RATIO_P99 and self.caught_up_s is not None and not self.lost


@dataclasses.dataclass
class Results:
    options: Options
    steps: list[Step] = dataclasses.field(default_factory=list)
    complete: bool = True
    seconds: float = 0.0
    load_before: float = 0.0
    load_after: float = 0.0

    @property
    def ok(self) -> bool:
        return self.complete and not any(step.lost for step in self.steps)

    @property
    def best(self) -> Step | None:
        """The highest step (by the rate achieved) within the goal."""
        good = [step for step in self.steps if step.rate and step.within_goal]
        return max(good, key=lambda step: step.achieved, default=None)


class ThroughputBench:
    def __init__(self, options: Options, rig: Rig, load: Child, results: Results) -> None:
        self.options = options
        self.rig = rig
        self.load = load
        self.results = results
        self.rng = random.Random(options.seed)

    async def sample(self) -> tuple[float | None, float | None]:
        """(alarm ms, relay copy ms) of one latch opening; None for what did not come within the timeout."""
        sensors, arrivals, timeout = self.rig.sensors, self.rig.staff_feed.arrivals, self.options.timeout_s
        arrivals.clear()
        closed = [sid for sid in sensors.sensor_ids if sensors.latch[sid] is LatchState.CLOSED]
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

    async def _accepted(self) -> int:
        async with asyncio.timeout(10 * STATS_INTERVAL_S + 5):
            stats = await self.rig.staff_feed.next_stats()
        return int(stats.get("accepted", 0))

    async def _command(self, text: str) -> None:
        proc = self.load.proc
        assert proc is not None
        assert proc.stdin is not None
        proc.stdin.write(f"{text}\n".encode())
        await proc.stdin.drain()

    async def step(self, rate: int) -> Step:
        opts = self.options
        step = Step(rate)
        accepted_before = await self._accepted()
        pid = self.rig.gateway.proc.pid if self.rig.gateway.proc else 0
        if rate:
            await self._command(f"rate {rate}")
            await self._command(f"flood {opts.step_s:.2f}")
        cpu_before, began = cpu_seconds(pid), time.monotonic()
        await asyncio.sleep(opts.ramp_s)
        samples = 0
        while time.monotonic() - began < opts.step_s - 0.1:
            alarm, floor = await self.sample()
            samples += 1
            if alarm is None:
                step.lost += 1
                log.warning("rate %d: an alarm did not come within %.0f s", rate, opts.timeout_s)
            else:
                step.alarm.append(alarm)
            if floor is not None:
                step.floor.append(floor)
        wall = time.monotonic() - began
        step.cpu_pct = 100.0 * (cpu_seconds(pid) - cpu_before) / wall if wall > 0 else 0.0
        stopped = time.monotonic()
        if rate:
            done = await self.load.read_json(opts.timeout_s + opts.step_s)
            step.sent, step.achieved = int(done["sent"]), float(done["rate"])
        # The gateway's accepted count also takes the simulated sensors' heartbeats and latch messages.
        background = opts.cribs * (time.monotonic() - began) / HEARTBEAT_S + 2 * samples
        while True:
            accepted = await self._accepted() - accepted_before
            step.accepted = max(0, round(accepted - background))
            if accepted >= step.sent + background * 0.9:
                step.caught_up_s = max(0.0, time.monotonic() - stopped - STATS_INTERVAL_S)
                break
            if time.monotonic() - stopped > opts.drain_timeout_s:
                log.warning("rate %d: %d of %d accepted %.0f s after the load stopped", rate, step.accepted,
                            step.sent, opts.drain_timeout_s)  # fmt: skip
                break
            background = opts.cribs * (time.monotonic() - began) / HEARTBEAT_S + 2 * samples
        return step

    async def run(self) -> None:
        for _ in range(10):  # warm-up
            await self.sample()
        for rate in (0, *self.options.rates):
            step = await self.step(rate)
            self.results.steps.append(step)
            alarm = step.summary("alarm")
            log.info(
                "rate %d: achieved %.0f/s, gateway CPU %.0f%%, alarm p99 %s ms, ratio %s",
                rate,
                step.achieved,
                step.cpu_pct,
                f"{alarm.p99:.2f}" if alarm else "-",
                f"{step.ratio_p99:.2f}" if step.ratio_p99 is not None else "-",
            )


async def run(options: Options, workdir: Path) -> Results:
    results = Results(options, load_before=os.getloadavg()[0])
    began = time.perf_counter()
    config = RigConfig(
        cribs=options.cribs,
        stats_interval_s=STATS_INTERVAL_S,
        load_sensors=options.load_sensors,
        heartbeat_s=SITE_HEARTBEAT_S,
        gateway_profile=options.gateway_profile,
    )
    async with contextlib.AsyncExitStack() as stack:
        rig = await start_rig(stack, workdir, config)
        load = Child("load", workdir / "load.log")
        stack.push_async_callback(load.stop)
        topic = rig.topics.sensor("{sensor}", SensorChannel.TELEMETRY)
        argv = [
            sys.executable, "-m", "bench.junk", "--host", rig.endpoint.host, "--port", str(rig.endpoint.port),
            "--topic", topic, "--kind", LOAD_KIND, "--sensors", str(options.load_sensors),
            "--interval", str(SITE_HEARTBEAT_S), "--qos", "0", "--client-id", "bench-load",
        ]  # fmt: skip
        await start_child_with_clock(load, argv, rig.env)
        log.info("rig and load generator up in %.1f s", time.perf_counter() - began)
        try:
            await run_while_alive(ThroughputBench(options, rig, load, results).run(), [*rig.children, load])
        except ChildExitedError as exc:
            results.complete = False
            log.error("%s exited during the run\n%s", exc.child.name, exc.child.tail())
        except TimeoutError:
            results.complete = False
            log.error("the gateway's stats stopped coming")
    results.seconds = time.perf_counter() - began
    results.load_after = os.getloadavg()[0]
    return results


# ------------------------------------------------------------------------------------------ output


def to_json(results: Results) -> dict[str, Any]:
    steps = []
    for step in results.steps:
        alarm, floor = step.summary("alarm"), step.summary("floor")
        steps.append({
            "rate": step.rate,
            "achieved_per_s": round(step.achieved, 1),
            "sent": step.sent,
            "accepted": step.accepted,
            "caught_up_s": None if step.caught_up_s is None else round(step.caught_up_s, 2),
            "gateway_cpu_pct": round(step.cpu_pct, 1),
            "alarm_p50_ms": round_ms(alarm.p50) if alarm else None,
            "alarm_p99_ms": round_ms(alarm.p99) if alarm else None,
            "floor_p50_ms": round_ms(floor.p50) if floor else None,
            "floor_p99_ms": round_ms(floor.p99) if floor else None,
            "ratio_p99": None if step.ratio_p99 is None else round(step.ratio_p99, 2),
            "samples": len(step.alarm),
            "lost": step.lost,
            "within_goal": step.within_goal,
        })  # fmt: skip
    best = results.best
    opts = results.options
    return {
        "steps": steps,
        "best_rate_per_s": round(best.achieved, 1) if best else None,
        "goal_rate_per_s": GOAL_RATE,
        "goal_met": best is not None and best.achieved >= GOAL_RATE * 0.97,
        "cribs": opts.cribs,
        "load_sensors": opts.load_sensors,
        "step_s": opts.step_s,
        "complete": results.complete,
        "seconds": round(results.seconds, 1),
    } | machine_json(results.load_before, results.load_after)


def to_table(results: Results) -> str:
    opts = results.options
    rows = [
        f"cribwatch throughput: {opts.cribs} simulated sensors (1 heartbeat/s each) + load on {opts.load_sensors} "
        f"more, {opts.step_s:.0f} s per step",
        "",
        f"{'rate asked':>10} {'achieved':>9} {'sent':>7} {'accepted':>8} {'caught up':>9} {'gw CPU':>6}  "
        f"{'alarm p50':>9} {'alarm p99':>9} {'floor p99':>9} {'p99 ratio':>9} {'n':>4}  within 2x",
    ]
    for step in results.steps:
        alarm, floor = step.summary("alarm"), step.summary("floor")
        caught = "-" if step.caught_up_s is None else f"{step.caught_up_s:.1f} s"
        nan = float("nan")
        r = step.ratio_p99
        figures = (alarm.p50 if alarm else nan, alarm.p99 if alarm else nan, floor.p99 if floor else nan)
        rows.append(
            f"{step.rate or 'quiet':>10} {step.achieved:9.0f} {step.sent:7d} {step.accepted:8d} {caught:>9} "
            f"{step.cpu_pct:5.0f}%  "
            + " ".join(f"{v:9.2f}" for v in figures)
            + f" {r if r is not None else nan:9.2f} {len(step.alarm):>4}  "
            + ("yes" if step.within_goal else "NO")
            + (f" ({step.lost} lost)" if step.lost else "")
        )
    best = results.best
    rows.append("")
    if best is None:
        rows.append(f"no rate kept alarm p99 within {GOAL_RATIO_P99:.0f}x the floor: goal {GOAL_RATE}/s NOT MET")
    else:
        met = best.achieved >= GOAL_RATE * 0.97
        verdict = "MET" if met else f"NOT MET (missed by {GOAL_RATE - best.achieved:.0f}/s)"
        rows.append(
            f"highest rate with alarm p99 within {GOAL_RATIO_P99:.0f}x the floor and every message taken: "
            f"{best.achieved:.0f}/s; goal {GOAL_RATE}/s: {verdict}"
        )
    if not results.complete:
        rows.append("INCOMPLETE: the run stopped early (see the log above)")
    rows.append(f"run took {results.seconds:.0f} s; " + machine_text(results.load_before, results.load_after))
    return "\n".join(rows)


# ------------------------------------------------------------------------------------------ main


def _rates(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected rates separated by commas, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"every rate must be at least 1 message/s, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", type=_rates, default=DEFAULT_RATES, help="messages/s per step (1000,...,20000)")
    parser.add_argument("--step", type=float, default=5.0, help="seconds of load per step (5)")
    parser.add_argument("--ramp", type=float, default=1.0, help="seconds of load before the samples (1)")
    parser.add_argument("--cribs", type=int, default=100, help="simulated sensors with their own connection (100)")
    parser.add_argument("--load-sensors", type=int, default=200, help="sensors the load speaks for (200)")
    parser.add_argument("--drain-timeout", type=float, default=30.0, help="seconds to wait for a backlog (30)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout, nothing else")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, site file)")
    parser.add_argument(
        "--gateway-profile", type=Path, metavar="FILE", help="run the gateway under cProfile (diagnosis only)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, quiet=("gateway", "firmware_sim"))
    options = Options(
        rates=args.rates,
        step_s=max(args.step, args.ramp + 0.5),
        ramp_s=args.ramp,
        cribs=max(1, args.cribs),
        load_sensors=max(1, args.load_sensors),
        drain_timeout_s=args.drain_timeout,
        seed=args.seed,
        json=args.json,
        keep_dir=args.keep,
        gateway_profile=args.gateway_profile,
    )
    return run_benchmark(
        run,
        options,
        to_json,
        to_table,
        logger=log,
        workdir_prefix="cribwatch-throughput-",
        not_ok="an alarm was lost or the run was cut short",
    )


if __name__ == "__main__":
    raise SystemExit(main())
