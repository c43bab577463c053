"""The gateway's alarm latency beside the floor relay and a tuned Node-RED flow, in one run, rounds interleaved.

``python -m bench.peers [--scales 100,1000] [--samples 500] [--rounds 5] [--plot FILE.png] [--json]``

For each scale (the number of simulated sensors, each its own MQTT connection with a heartbeat every second, as
in :mod:`bench.latency`), one rig: a real Mosquitto, the gateway, the floor relay (:mod:`bench.relay`), the peer
(Node-RED with the flow of :mod:`bench.nodered`, installed from npm on first use), the staff subscriber and the
sensors, each in a process of its own. All three targets get every latch message all the time, so the load is
the same whichever is timed. Samples are taken in rounds: in each round ``samples / rounds`` samples of the floor,
then of the gateway, then of Node-RED, so that all three see the same moments of a busy machine. A sample is that
of bench.latency: open a random closed latch, time from just before the sensor's socket write to the staff
subscriber's receipt of the measured target's message (the relay's copy; the gateway's ``raised`` event; Node-RED's
alarm event), then close it and wait until every target's answer to both messages has arrived.

Printed per scale: each target's p50/p90/p99/max, its p50 and p99 by round (the range shows the run's noise), and
the issue's goals beside the figures: the gateway adds at most 0.2 ms to the floor at p50, stays within 1.2 x the
floor at p99, and is ahead of Node-RED at p50 and p99. Without node/npm the peer is left out, with a message.

Exit status: 0 when every sample arrived, 1 if any was lost or the run was cut short, 2 if the setup failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import nodered
from bench.harness import (
    ChildExitedError,
    machine_json,
    machine_text,
    round_ms,
    run_benchmark,
    run_while_alive,
    setup_logging,
)
from bench.latency import PAUSE_MAX_S, Arrival, Rig, RigConfig, start_rig
from bench.stats import Summary, ratio, summarize
from firmware_sim.sensor import SensorError
from gateway.domain.vocab import LatchState

log = logging.getLogger("bench.peers")

FLOOR, GATEWAY, NODE_RED = "floor", "gateway", "node-red"
MEASURED = {FLOOR: Arrival.RELAYED, GATEWAY: Arrival.RAISED, NODE_RED: Arrival.PEER}
LABELS = {
    FLOOR: "floor (relay, paho)",
    GATEWAY: "cribwatch gateway",
    NODE_RED: f"Node-RED {nodered.NODE_RED_VERSION}",
}
GOAL_P50_OVER_FLOOR_MS = 0.2
GOAL_P99_RATIO = 1.2


@dataclasses.dataclass(frozen=True, slots=True)
class Options:
    scales: tuple[int, ...] = (100, 1000)
    samples: int = 500
    rounds: int = 5
    warmup: int = 20
    seed: int = 1
    timeout_s: float = 5.0
    time_limit_s: float = 600.0
    node_red: bool = True
    plot: Path | None = None
    json: bool = False
    keep_dir: bool = False


@dataclasses.dataclass
class Scale:
    """The figures of one rig (one number of sensors)."""

    sensors: int
    targets: list[str]
    latencies: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    by_round: dict[str, list[list[float]]] = dataclasses.field(default_factory=dict)
    lost: Counter[str] = dataclasses.field(default_factory=Counter)
    settle_missing: Counter[str] = dataclasses.field(default_factory=Counter)
    complete: bool = True
    seconds: float = 0.0
    load_before: float = 0.0
    load_after: float = 0.0

    def summary(self, target: str) -> Summary | None:
        values = self.latencies.get(target) or []
        return summarize(values) if values else None

    def round_range(self, target: str, stat: str) -> tuple[float, float] | None:
        figures = [getattr(summarize(r), stat) for r in self.by_round.get(target, []) if r]
        return (min(figures), max(figures)) if figures else None


@dataclasses.dataclass
class Results:
    options: Options
    scales: list[Scale] = dataclasses.field(default_factory=list)
    node_red_skipped: str | None = None
    seconds: float = 0.0
    load_before: float = 0.0
    load_after: float = 0.0

    @property
    def ok(self) -> bool:
        return all(s.complete and not s.lost and not s.settle_missing for s in self.scales)


class TimeLimitError(Exception):
    pass


class PeersBench:
    def __init__(self, options: Options, rig: Rig, scale: Scale, deadline: float) -> None:
        self.options = options
        self.rig = rig
        self.scale = scale
        self.rng = random.Random(options.seed)
        self.deadline = deadline

    async def sample(self, target: str) -> float | None:
        """One latch opened and closed; the measured target's latency in ms (None if it did not come)."""
        if time.monotonic() > self.deadline:
            raise TimeLimitError
        sensors, arrivals, timeout = self.rig.sensors, self.rig.staff_feed.arrivals, self.options.timeout_s
        arrivals.clear()
        closed = [sid for sid in sensors.sensor_ids if sensors.latch[sid] is LatchState.CLOSED]
        sid = self.rng.choice(closed)
        try:
            opened = await sensors.set_latch(sid, LatchState.OPEN, timeout)
        except SensorError as exc:
            log.warning("%s: could not open the latch: %s", sid, exc)
            return None
        measured = MEASURED[target]
        arrived = await arrivals.wait((measured, sid, opened.boot, opened.seq), timeout)
        latency = None if arrived is None else (arrived - opened.t) / 1e6
        for other in {MEASURED[t] for t in self.scale.targets} - {measured}:
            if await arrivals.wait((other, sid, opened.boot, opened.seq), timeout) is None:
                self.scale.settle_missing[f"open_{other.value}"] += 1
        try:
            closed_msg = await sensors.set_latch(sid, LatchState.CLOSED, timeout)
        except SensorError as exc:
            log.warning("%s: could not close the latch: %s", sid, exc)
            self.scale.settle_missing["close_failed"] += 1
            return latency
        answers = [(Arrival.RELAYED, closed_msg.boot, closed_msg.seq), (Arrival.RESOLVED, opened.boot, opened.seq)]
        if NODE_RED in self.scale.targets:
            answers.append((Arrival.PEER, closed_msg.boot, closed_msg.seq))
        for what, boot, seq in answers:
            if await arrivals.wait((what, sid, boot, seq), timeout) is None:
                self.scale.settle_missing[f"close_{what.value}"] += 1
        await asyncio.sleep(self.rng.uniform(0.0, PAUSE_MAX_S))
        return latency

    async def run(self) -> None:
        opts, scale = self.options, self.scale
        for _ in range(opts.warmup):
            for target in scale.targets:
                await self.sample(target)
        rounds = max(1, opts.rounds)
        for target in scale.targets:
            scale.latencies[target] = []
            scale.by_round[target] = [[] for _ in range(rounds)]
        for i in range(rounds):
            size = opts.samples // rounds + (1 if i < opts.samples % rounds else 0)
            for target in scale.targets:
                for _ in range(size):
                    latency = await self.sample(target)
                    if latency is None:
                        scale.lost[target] += 1
                        log.warning("%s sample lost (nothing within %.1f s)", target, opts.timeout_s)
                        continue
                    scale.latencies[target].append(latency)
                    scale.by_round[target][i].append(latency)


async def run_scale(
    options: Options, workdir: Path, sensors: int, peer: tuple[str, Path] | None, deadline: float
) -> Scale:
    targets = [FLOOR, GATEWAY, *([NODE_RED] if peer else [])]
    scale = Scale(sensors, targets, load_before=os.getloadavg()[0])
    began = time.perf_counter()
    async with contextlib.AsyncExitStack() as stack:
        rig = await start_rig(stack, workdir, RigConfig(cribs=sensors, peer=peer))
        log.info("%d sensors: rig up in %.1f s", sensors, time.perf_counter() - began)
        try:
            await run_while_alive(PeersBench(options, rig, scale, deadline).run(), rig.children)
        except TimeLimitError:
            scale.complete = False
            log.error("time limit reached: %d sensors stopped with the samples taken so far", sensors)
        except ChildExitedError as exc:
            scale.complete = False
            log.error("%s exited during the run\n%s", exc.child.name, exc.child.tail())
    scale.seconds = time.perf_counter() - began
    scale.load_after = os.getloadavg()[0]
    return scale


async def run(options: Options, workdir: Path) -> Results:
    results = Results(options, load_before=os.getloadavg()[0])
    began = time.perf_counter()
    peer: tuple[str, Path] | None = None
    if options.node_red:
        found = nodered.find_node()
        if isinstance(found, str):
            results.node_red_skipped = found
            log.warning("Node-RED left out: %s", found)
        else:
            node, npm = found
            log.info("Node-RED %s: installing into %s if needed", nodered.NODE_RED_VERSION, nodered.cache_dir())
            peer = (node, await asyncio.to_thread(nodered.install, npm))
    else:
        results.node_red_skipped = "--no-node-red"
    deadline = time.monotonic() + options.time_limit_s
    for i, sensors in enumerate(options.scales):
        results.scales.append(await run_scale(options, workdir / f"scale-{i}", sensors, peer, deadline))
    results.seconds = time.perf_counter() - began
    results.load_after = os.getloadavg()[0]
    if options.plot is not None:
        plot(results, options.plot)
        log.info("latency distribution plotted in %s", options.plot)
    return results


# ------------------------------------------------------------------------------------------ goals


@dataclasses.dataclass(frozen=True, slots=True)
class Goal:
    text: str
    met: bool | None
    figure: str


def goals(scale: Scale) -> list[Goal]:
    gw, floor, peer = scale.summary(GATEWAY), scale.summary(FLOOR), scale.summary(NODE_RED)
    out: list[Goal] = []
    if gw and floor:
        over = gw.p50 - floor.p50
        out.append(
            Goal(
                f"gateway p50 <= floor p50 + {GOAL_P50_OVER_FLOOR_MS} ms",
                over <= GOAL_P50_OVER_FLOOR_MS,
                f"+{over:.3f} ms"
                + ("" if over <= GOAL_P50_OVER_FLOOR_MS else f", missed by {over - GOAL_P50_OVER_FLOOR_MS:.3f} ms"),
            )
        )
        r99 = ratio(gw.p99, floor.p99)
        out.append(
            Goal(
                f"gateway p99 <= {GOAL_P99_RATIO} x floor p99",
                r99 <= GOAL_P99_RATIO,
                f"{r99:.2f} x"
                + ("" if r99 <= GOAL_P99_RATIO else f", missed by {gw.p99 - GOAL_P99_RATIO * floor.p99:.3f} ms"),
            )
        )
    if gw and peer:
        out.append(
            Goal(
                "gateway ahead of Node-RED at p50 and p99",
                gw.p50 < peer.p50 and gw.p99 < peer.p99,
                f"p50 {gw.p50:.3f} vs {peer.p50:.3f} ms, p99 {gw.p99:.3f} vs {peer.p99:.3f} ms",
            )
        )
    return out


# ------------------------------------------------------------------------------------------ output


def to_json(results: Results) -> dict[str, Any]:
    scales = []
    for scale in results.scales:
        entry: dict[str, Any] = {"sensors": scale.sensors}
        for target in scale.targets:
            s = scale.summary(target)
            for stat in ("p50", "p90", "p99", "max", "mean"):
                entry[f"{target}_{stat}_ms"] = round_ms(getattr(s, stat)) if s else None
            entry[f"{target}_n"] = len(scale.latencies.get(target, []))
            entry[f"{target}_lost"] = scale.lost[target]
            for stat in ("p50", "p99"):
                span = scale.round_range(target, stat)
                entry[f"{target}_{stat}_by_round_ms"] = [round_ms(v) for v in span] if span else None
        entry["goals"] = [{"goal": g.text, "met": g.met, "figure": g.figure} for g in goals(scale)]
        entry |= {
            "settle_missing": sum(scale.settle_missing.values()),
            "complete": scale.complete,
            "seconds": round(scale.seconds, 1),
        }
        entry |= machine_json(scale.load_before, scale.load_after)
        scales.append(entry)
    opts = results.options
    return {
        "scales": scales,
        "samples": opts.samples,
        "rounds": opts.rounds,
        "seed": opts.seed,
        "node_red": None if results.node_red_skipped else nodered.NODE_RED_VERSION,
        "node_red_skipped": results.node_red_skipped,
        "seconds": round(results.seconds, 1),
    } | machine_json(results.load_before, results.load_after)


def to_table(results: Results) -> str:
    opts = results.options
    rows = [
        f"cribwatch beside its peers: {opts.samples} samples per target and scale in {opts.rounds} interleaved "
        f"rounds (after {opts.warmup} warm-up each), seed {opts.seed}",
    ]
    if results.node_red_skipped:
        rows.append(f"Node-RED left out: {results.node_red_skipped}")
    for scale in results.scales:
        floor = scale.summary(FLOOR)
        rows += [
            "",
            f"{scale.sensors} sensors (heartbeat 1/s each), {scale.seconds:.0f} s, "
            + machine_text(scale.load_before, scale.load_after),
            f"{'ms':24} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8} {'n':>5} {'lost':>4}  "
            f"{'p50-floor':>9} {'p99/floor':>9}  {'p50 by round':>13} {'p99 by round':>13}",
        ]
        for target in scale.targets:
            s = scale.summary(target)
            if s is None:
                rows.append(f"{LABELS[target]:24} {'-':>8} {'-':>8} {'-':>8} {'-':>8} {0:>5} {scale.lost[target]:>4}")
                continue
            vs = f"{s.p50 - floor.p50:+9.3f} {ratio(s.p99, floor.p99):9.2f}" if floor else f"{'':9} {'':9}"
            spans = []
            for stat in ("p50", "p99"):
                span = scale.round_range(target, stat)
                spans.append(f"{span[0]:6.2f}-{span[1]:<6.2f}" if span else f"{'':13}")
            rows.append(
                f"{LABELS[target]:24} {s.p50:8.3f} {s.p90:8.3f} {s.p99:8.3f} {s.max:8.3f} {s.n:>5} "
                f"{scale.lost[target]:>4}  {vs}  {spans[0]} {spans[1]}"
            )
        for goal in goals(scale):
            verdict = "MET" if goal.met else "NOT MET"
            rows.append(f"goal: {goal.text}: {verdict} ({goal.figure})")
        if scale.settle_missing:
            rows.append(f"missing while settling: {dict(scale.settle_missing)}")
        if not scale.complete:
            rows.append("INCOMPLETE: stopped early (see the log above)")
    rows.append(f"\nrun took {results.seconds:.0f} s; " + machine_text(results.load_before, results.load_after))
    return "\n".join(rows)


def plot(results: Results, path: Path) -> None:
    """The latency distribution (empirical CDF, log time axis) of every target at every scale, one panel per
    scale. Needs matplotlib (the ``bench`` extra)."""
    try:
        import matplotlib as mpl  # noqa: PLC0415 - optional: only for --plot

        mpl.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        log.error("--plot needs matplotlib: pip install -e '.[bench]'")
        return
    colors = {FLOOR: "#777777", GATEWAY: "#1f77b4", NODE_RED: "#d62728"}
    fig, axes = plt.subplots(1, len(results.scales), figsize=(max(7.5, 6 * len(results.scales)), 4.4), squeeze=False)
    for ax, scale in zip(axes[0], results.scales, strict=True):
        for target in scale.targets:
            values = sorted(scale.latencies.get(target) or [])
            if not values:
                continue
            share = [(i + 1) / len(values) for i in range(len(values))]
            s = summarize(values)
            ax.step(values, share, where="post", color=colors[target],
                    label=f"{LABELS[target]}: p50 {s.p50:.2f}, p99 {s.p99:.2f} ms")  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel("latch message written -> alarm at the staff subscriber (ms, log scale)")
        ax.set_ylabel("share of samples")
        counts = ", ".join(str(len(scale.latencies.get(t) or [])) for t in scale.targets)
        ax.set_title(f"{scale.sensors} sensors, samples per target: {counts}")
        ax.axhline(0.5, color="#bbbbbb", linewidth=0.6)
        ax.axhline(0.99, color="#bbbbbb", linewidth=0.6)
        ax.grid(visible=True, which="both", alpha=0.25)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle("alarm latency: floor relay, cribwatch, Node-RED (python -m bench.peers)", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------ main


def _scales(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"every scale must be at least 1 sensor, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", type=_scales, default=(100, 1000), help="sensors per rig (100,1000)")
    parser.add_argument("--samples", type=int, default=500, help="samples per target and scale (500)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (5)")
    parser.add_argument("--warmup", type=int, default=20, help="discarded samples of each target first (20)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for one message (5)")
    parser.add_argument("--time-limit", type=float, default=600.0, help="stop measuring after this many s (600)")
    parser.add_argument("--no-node-red", action="store_true", help="leave the Node-RED peer out")
    parser.add_argument("--plot", type=Path, metavar="FILE.png", help="plot the latency distributions (matplotlib)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout, nothing else")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, site files)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, quiet=("gateway", "firmware_sim"))
    options = Options(
        scales=args.scales,
        samples=max(1, args.samples),
        rounds=max(1, args.rounds),
        warmup=max(0, args.warmup),
        seed=args.seed,
        timeout_s=args.timeout,
        time_limit_s=args.time_limit,
        node_red=not args.no_node_red,
        plot=args.plot,
        json=args.json,
        keep_dir=args.keep,
    )
    return run_benchmark(
        run,
        options,
        to_json,
        to_table,
        logger=log,
        workdir_prefix="cribwatch-peers-",
        not_ok="some samples were lost or the run was cut short",
    )


if __name__ == "__main__":
    raise SystemExit(main())
