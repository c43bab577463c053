"""InfluxDB benchmark: points/s into a real influxd through the durable outbox, the outbox's size on disk, and the
alarm latency beside the broker's floor while it runs.

``python -m bench.influx [--fill 200000] [--samples 300] [--cribs 100] [--json]``

One run starts a real influxd (1.x, Debian's, authentication on) and the rig of :mod:`bench.latency` (Mosquitto,
the gateway as a site runs it, here with an ``[influx]`` section writing its own points to that influxd, the relay,
the staff subscriber and the simulated sensors). Then:

1. **quiet**: alarm latency and its two-hop floor (alternating blocks, as ``bench.latency``), no InfluxDB load;
2. **loaded**: the same while :mod:`bench.influxload` runs in a process of its own, the gateway's outbox path at
   full speed into the same influxd (another database): ``--fill`` points into the outbox with InfluxDB "away"
   (bytes on disk per point), then the backfill (points/s out of the outbox into influxd), then live points in and
   out at once until the latency samples are taken and ``--live-s`` seconds more (the sustained rate). Every point
   made must be in influxd at the end (counted with InfluxQL).

Exit status: 0 when every sample arrived and every point reached influxd, 1 otherwise (the figures are printed
all the same), 2 if the setup failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import secrets
import sys
import time
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
)
from bench.influxload import PASSWORD_ENV
from bench.latency import Bench, Options, Phase, Results, RigConfig, TimeLimitError, TooManyLostError, start_rig
from bench.stats import Summary, ratio
from devtools.influx import InfluxdServer
from gateway.settings import influx_env

log = logging.getLogger("bench.influx")

LOAD_DATABASE = "load"
TARGET_POINTS_PER_S = 50_000
"""The issue's aim: 50,000 points/s on this machine."""


@dataclasses.dataclass(frozen=True, slots=True)
class InfluxOptions:
    cribs: int
    samples: int
    fill: int
    batch: int
    live_s: float
    seed: int
    json: bool
    keep_dir: bool = False
    timeout_s: float = 5.0


@dataclasses.dataclass
class InfluxResults:
    options: InfluxOptions
    quiet: Results
    loaded: Results
    load: dict[str, Any] = dataclasses.field(default_factory=dict)
    in_influxd: int | None = None
    gateway_alarm_points: int | None = None
    gateway_influx: dict[str, Any] = dataclasses.field(default_factory=dict)
    complete: bool = True
    seconds: float = 0.0
    load_before: float = 0.0
    load_after: float = 0.0

    @property
    def every_point_arrived(self) -> bool:
        made = self.load.get("made")
        return made is not None and self.in_influxd == made and self.load.get("sent") == made

    @property
    def alarms_opened(self) -> int:
        """Latches the run opened (warm-up included): each raised one alarm at the gateway (grace 0)."""
        return sum(
            2 * res.options.warmup + sum(len(v) for v in res.latencies.values()) + sum(res.lost.values())
            for res in (self.quiet, self.loaded)
        )

    @property
    def every_alarm_in_influxd(self) -> bool:
        return self.gateway_alarm_points == self.alarms_opened

    @property
    def ok(self) -> bool:
        return (
            self.complete
            and self.quiet.ok
            and self.loaded.ok
            and self.every_point_arrived
            and self.every_alarm_in_influxd
        )


def latency_options(options: InfluxOptions, samples: int, seed: int) -> Options:
    return Options(
        cribs=options.cribs, samples=samples, seed=seed, json=options.json, warmup=10, blocks=6,
        timeout_s=options.timeout_s, time_limit_s=300.0,
    )  # fmt: skip


async def measure(bench: Bench, results: Results, children: list[Child]) -> None:
    try:
        await run_while_alive(bench.run(), children)
    except (TimeLimitError, TooManyLostError):
        results.complete = False
        log.error("latency sampling stopped early")
    except ChildExitedError as exc:
        results.complete = False
        log.error("%s exited during the run\n%s", exc.child.name, exc.child.tail())


async def run(options: InfluxOptions, workdir: Path) -> InfluxResults:
    quiet_opts = latency_options(options, options.samples, options.seed)
    loaded_opts = latency_options(options, options.samples, options.seed + 1)
    results = InfluxResults(options, Results(quiet_opts), Results(loaded_opts))
    results.load_before = os.getloadavg()[0]
    began = time.perf_counter()
    password = secrets.token_urlsafe(16)
    async with contextlib.AsyncExitStack() as stack:
        influxd = InfluxdServer(workdir / "influxd", password=password)
        await asyncio.to_thread(influxd.start)
        stack.callback(influxd.stop)
        await asyncio.to_thread(influxd.query, f'CREATE DATABASE "{LOAD_DATABASE}"')
        site = (
            "\n[influx]\nflush_interval_s = 1.0\n\n[[influx.targets]]\n"
            f'name = "site"\nurl = "{influxd.url}"\ndatabase = "{influxd.database}"\nusername = "{influxd.username}"\n'
        )
        rig_config = RigConfig(
            cribs=options.cribs, extra_site=site, extra_env=((influx_env("site", "password"), password),)
        )
        rig = await start_rig(stack, workdir, rig_config)
        log.info("influxd, broker, gateway (writing to influxd), staff and %d sensors up", options.cribs)

        log.info("quiet: %d latency samples per phase, no InfluxDB load", options.samples)
        await measure(Bench(quiet_opts, rig, results.quiet), results.quiet, rig.children)

        load = Child("influxload", workdir / "influxload.log")
        stack.push_async_callback(load.stop)
        env = rig.env | {PASSWORD_ENV: password}
        argv = [
            sys.executable, "-m", "bench.influxload", "--store", str(workdir / "load.sqlite3"), "--url", influxd.url,
            "--database", LOAD_DATABASE, "--user", influxd.username, "--fill", str(options.fill),
            "--batch", str(options.batch),
        ]  # fmt: skip
        await load.start(argv, env, stdout_pipe=True)
        lines: list[dict[str, Any]] = []

        async def read_load() -> None:
            while True:
                got = await load.read_json(600.0)
                lines.append(got)
                log.info("influxload: %s", got)
                if "backfilled" in got:
                    return

        reader = asyncio.create_task(read_load())
        log.info("loaded: %d latency samples per phase while %d points fill the outbox, backfill, then go live",
                 options.samples, options.fill)  # fmt: skip
        await measure(Bench(loaded_opts, rig, results.loaded), results.loaded, [*rig.children, load])
        try:
            await reader
        except RuntimeError as exc:
            results.complete = False
            log.error("the load stopped: %s", exc)
        else:
            await asyncio.sleep(options.live_s)  # the live load goes on at least this long after the samples
            assert load.proc is not None
            assert load.proc.stdin is not None
            load.proc.stdin.write(b"stop\n")
            await load.proc.stdin.drain()
            done = await load.read_json(300.0)
            for got in [*lines, done]:
                results.load |= got
            rows = await asyncio.to_thread(influxd.rows, 'SELECT count("seq") FROM "sensor"', db=LOAD_DATABASE)
            results.in_influxd = int(rows[0]["count"]) if rows else 0
        for _ in range(30):  # the gateway writes its points every second: give the last ones time to land
            alarm_rows = await asyncio.to_thread(
                influxd.rows, """SELECT count("alarm_id") FROM "alarm" WHERE "event" = 'raised'"""
            )
            results.gateway_alarm_points = int(alarm_rows[0]["count"]) if alarm_rows else 0
            if results.every_alarm_in_influxd:
                break
            await asyncio.sleep(0.5)
        stats = await rig.staff_feed.next_stats()
        results.gateway_influx = (stats.get("influx") or [{}])[0]
    results.seconds = time.perf_counter() - began
    results.load_after = os.getloadavg()[0]
    return results


# ------------------------------------------------------------------------------------------ output


def _lat(results: Results) -> dict[str, Any]:
    alert, floor = results.summary(Phase.ALERT), results.summary(Phase.FLOOR)
    out: dict[str, Any] = {}
    for name, s in (("alert", alert), ("floor", floor)):
        for stat in ("p50", "p99", "max"):
            out[f"{name}_{stat}_ms"] = round_ms(getattr(s, stat)) if s else None
        out[f"{name}_lost"] = results.lost[Phase.ALERT if name == "alert" else Phase.FLOOR]
    out["ratio_p99"] = round(ratio(alert.p99, floor.p99), 3) if alert and floor else None
    return out


def rates(r: InfluxResults) -> dict[str, float | None]:
    load = r.load

    def per_s(points: Any, seconds: Any) -> float | None:
        return round(points / seconds) if points and seconds else None

    per_point = load.get("bytes_per_point")
    return {
        "fill_points_per_s": per_s(load.get("filled"), load.get("fill_s")),
        "backfill_points_per_s": per_s(load.get("backfilled"), load.get("backfill_s")),
        "live_made_per_s": per_s(load.get("live_points"), load.get("run_s")),
        "live_sent_per_s": per_s(load.get("sent_in_run"), load.get("run_s")),
        "outbox_mb_per_million_points": None if per_point is None else round(per_point, 1),
    }


def to_json(r: InfluxResults) -> dict[str, Any]:
    out: dict[str, Any] = {f"quiet_{k}": v for k, v in _lat(r.quiet).items()}
    out |= {f"loaded_{k}": v for k, v in _lat(r.loaded).items()}
    out |= rates(r)
    out |= {
        "target_points_per_s": TARGET_POINTS_PER_S,
        "points_made": r.load.get("made"),
        "points_in_influxd": r.in_influxd,
        "every_point_arrived": r.every_point_arrived,
        "gateway_raised_alarm_points": r.gateway_alarm_points,
        "alarms_raised": r.alarms_opened,
        "gateway_influx": r.gateway_influx,
        "fill": r.options.fill,
        "batch": r.options.batch,
        "samples": r.options.samples,
        "cribs": r.options.cribs,
        "complete": r.complete,
        "seconds": round(r.seconds, 1),
    }
    return out | machine_json(r.load_before, r.load_after)


def _row(label: str, s: Summary | None, lost: int) -> str:
    if s is None:
        return f"{label:30} {'-':>8} {'-':>8} {'-':>8} {0:>6} {lost:>5}"
    return f"{label:30} {s.p50:8.3f} {s.p99:8.3f} {s.max:8.3f} {s.n:>6} {lost:>5}"


def to_table(r: InfluxResults) -> str:
    o, rt = r.options, rates(r)
    rows = [
        f"cribwatch InfluxDB: influxd 1.x, outbox in SQLite (synchronous=FULL), batches of {o.batch}; "
        f"{o.fill:,} points filled while InfluxDB is away; alarm latency {o.samples} samples per phase, "
        f"{o.cribs} cribs",
        "",
        f"{'points/s':30} {'':>8}",
        f"{'into the outbox (fill)':30} {rt['fill_points_per_s'] or '-':>8}",
        f"{'backfill (outbox -> influxd)':30} {rt['backfill_points_per_s'] or '-':>8}",
        f"{'live, made and sent at once':30} {rt['live_made_per_s'] or '-':>8} made, "
        f"{rt['live_sent_per_s'] or '-'} confirmed by influxd",
        f"outbox on disk: {rt['outbox_mb_per_million_points'] or '-'} MB per million points "
        f"({r.load.get('bytes_per_point', '-')} bytes a point)",
        f"every point in influxd exactly once: {'yes' if r.every_point_arrived else 'NO'} "
        f"({r.in_influxd} counted, {r.load.get('made')} made)",
        "",
        f"{'alarm latency ms':30} {'p50':>8} {'p99':>8} {'max':>8} {'n':>6} {'lost':>5}",
    ]
    for name, res in (("quiet", r.quiet), ("loaded", r.loaded)):
        rows.append(_row(f"{name}: alert", res.summary(Phase.ALERT), res.lost[Phase.ALERT]))
        rows.append(_row(f"{name}: floor", res.summary(Phase.FLOOR), res.lost[Phase.FLOOR]))
        lat = _lat(res)
        rows.append(f"{name + ': ratio alert/floor p99':30} {lat['ratio_p99'] or '-':>8}")
    rows += [
        "",
        f"the gateway's own points: {r.gateway_alarm_points} raised alarm points in influxd for {r.alarms_opened} "
        f"alarms raised ({'all' if r.every_alarm_in_influxd else 'NOT ALL'}); its stats: {r.gateway_influx}",
        f"run took {r.seconds:.1f} s; " + machine_text(r.load_before, r.load_after),
    ]
    if not r.complete:
        rows.append("INCOMPLETE: the run stopped early (see the log above)")
    return "\n".join(rows)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.influx",
        description="Points/s into a real influxd through the outbox, its size on disk, and the alarm latency.",
    )
    parser.add_argument("--cribs", type=int, default=100, help="simulated wireless cribs (100)")
    parser.add_argument("--samples", type=int, default=300, help="latency samples per phase, quiet and loaded (300)")
    parser.add_argument("--fill", type=int, default=200_000, help="points into the outbox while away (200000)")
    parser.add_argument("--batch", type=int, default=5000, help="points per write (5000)")
    parser.add_argument("--live-s", type=float, default=10.0, help="live load at least this long (10)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout, nothing else")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, quiet=("gateway", "firmware_sim"))
    options = InfluxOptions(
        cribs=args.cribs, samples=args.samples, fill=args.fill, batch=args.batch, live_s=args.live_s, seed=args.seed,
        json=args.json, keep_dir=args.keep,
    )  # fmt: skip
    return run_benchmark(
        run,
        options,
        to_json,
        to_table,
        logger=log,
        workdir_prefix="cribwatch-bench-influx-",
        not_ok="samples were lost, a point did not reach influxd, or the run was cut short",
    )


if __name__ == "__main__":
    raise SystemExit(main())
