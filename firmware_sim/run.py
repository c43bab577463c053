"""``cribwatch sim run SCENARIO --config SITE.toml [--check] [--junit FILE] [--credentials FILE] [--live]``.

Plays a scenario file (:mod:`firmware_sim.scenario`) with every wireless sensor of the site, each with its own MQTT
account if ``--credentials`` gives one; with ``--check`` it watches the gateway's alarms and crib states and prints
a pass/fail line per expectation (:mod:`firmware_sim.check`), and ``--junit FILE`` writes them as JUnit XML;
``--live`` shows the sensors, the alarms and the scenario's progress (the step being played, the expectations passed
and failed so far) as :class:`firmware_sim.live.LiveView` does. Exit status: 0 when every expectation passed (or
without ``--check``), 1 when one failed or the broker cannot be reached, 2 for a bad scenario, site file,
credentials file or arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import sys
from typing import TextIO

import aiomqtt

from firmware_sim.check import print_report, run_scenario, write_junit
from firmware_sim.cli import EXIT_CANNOT_CONNECT, EXIT_INTERRUPTED, EXIT_USAGE, PROG, UsageError, choose_interval
from firmware_sim.console import cribs_from_settings
from firmware_sim.fleet import Credentials, CredentialsError, Fleet, broker_from_settings, load_credentials
from firmware_sim.scenario import Progress, ScenarioError, load_scenario, resolve
from firmware_sim.sensor import SensorConnectError
from gateway.settings import ConfigError, load_settings

__all__ = ["EXIT_FAILED", "run_from_args"]

EXIT_PASSED = 0
EXIT_FAILED = 1


def run_from_args(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run ``sim run`` from parsed arguments; the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        if args.verb != "run" or args.scenario is None:
            raise UsageError("expected `run SCENARIO` (a scenario file)")
        if args.config is None:
            raise UsageError("run needs --config SITE.toml (the scenario plays the site's own sensors)")
        if args.script is not None:
            raise UsageError("--script cannot be combined with run")
        if args.junit is not None and not args.check:
            raise UsageError("--junit needs --check")
        settings = load_settings(args.config)
        scenario, text = load_scenario(args.scenario)
        resolved = resolve(scenario, settings, text, args.scenario)
        credentials = load_credentials(args.credentials) if args.credentials else Credentials()
    except (UsageError, ScenarioError, CredentialsError) as exc:
        print(f"{PROG}: error: {exc}", file=err)
        return EXIT_USAGE
    except ConfigError as exc:
        print(f"{PROG}: error: {exc}", file=err)
        return EXIT_USAGE
    broker = broker_from_settings(settings)
    broker = dataclasses.replace(broker, host=args.host or broker.host, port=args.port or broker.port)
    interval = choose_interval(args.interval, settings.alarms.heartbeat_interval_s, err)
    live = None
    if getattr(args, "live", False):
        cribs = cribs_from_settings(settings)
        view_broker = credentials.for_watcher(broker)

        async def live(fleet: Fleet, progress: Progress) -> None:
            from rich.console import Console as RichConsole  # noqa: PLC0415 - with --live only

            from firmware_sim.live import LiveView  # noqa: PLC0415

            say = functools.partial(print, file=out, flush=True)
            view = LiveView(fleet, cribs, say=say, progress=progress, scenario=resolved.name)
            await view.run(view_broker, RichConsole(file=out))

    try:
        results, took = asyncio.run(
            run_scenario(
                resolved,
                settings,
                broker=broker,
                out=out,
                credentials=credentials,
                interval_s=interval,
                check=args.check,
                live=live,
            )
        )
    except SensorConnectError as exc:
        print(f"{PROG}: cannot connect to the broker at {broker.host}:{broker.port}: {exc.reason}", file=err)
        return EXIT_CANNOT_CONNECT
    except aiomqtt.MqttError as exc:  # the checking client's own connection (it watches the gateway's topics)
        print(f"{PROG}: cannot watch the gateway's topics at {broker.host}:{broker.port}: {exc}", file=err)
        return EXIT_CANNOT_CONNECT
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; the sensors were stopped", file=err)
        return EXIT_INTERRUPTED
    if not args.check:
        print(f"scenario {resolved.name}: done in {took:.1f} s (no --check: nothing judged)", file=out)
        return EXIT_PASSED
    print_report(resolved, results, out)
    if args.junit is not None:
        write_junit(args.junit, resolved, results, took)
    return EXIT_PASSED if all(r.passed for r in results) else EXIT_FAILED
