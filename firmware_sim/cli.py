"""``cribwatch sim``: run simulated sensors against a broker, driven by a script or a technician at stdin.

Sensors are a site's wireless sensors (``--config FILE``), a list of ids (``--site ID --sensor ID ...``) or
``--count N`` sensors ``sim-0001``... Commands: see :mod:`firmware_sim.commands` (``help`` lists them).

Mounted by ``gateway.cli`` through :func:`add_arguments` and :func:`main_from_args`; on its own through
:func:`run` (``python -m firmware_sim``). Exit status: 0 after ``quit`` or the end of the input, 1 if the
sensors cannot connect, 2 on bad arguments or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from firmware_sim.console import Console, CribRef, cribs_from_settings, prompt_lines, script_lines, stream_lines
from firmware_sim.fleet import (
    Credentials,
    CredentialsError,
    Fleet,
    broker_from_settings,
    load_credentials,
    wireless_sensor_ids,
)
from firmware_sim.pins import PinDriver
from firmware_sim.sensor import SensorConnectError
from gateway.domain.vocab import is_identifier
from gateway.mqtt.connection import BrokerAddress, TlsOptions
from gateway.protocol import DEFAULT_BASE_TOPIC, Topics
from gateway.settings import (
    ENV_MQTT_HOST,
    ENV_MQTT_PASSWORD,
    ENV_MQTT_PORT,
    ENV_MQTT_USERNAME,
    ConfigError,
    load_settings,
)

__all__ = ["add_arguments", "build_parser", "main_from_args", "run"]

PROG = "cribwatch sim"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 1883
DEFAULT_INTERVAL_S = 30.0
"""The firmware's heartbeat interval."""
DEFAULT_COUNT_SITE = "sim"
MAX_COUNT = 9999
EXIT_OK = 0
EXIT_CANNOT_CONNECT = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

DESCRIPTION = "Simulated wireless crib-latch sensors, each with its own MQTT connection, as the firmware behaves."
EPILOG = (
    "Commands (from --script, separated by ';', or typed at stdin; `help` lists them): open/close SENSOR, "
    "bounce SENSOR [TIMES], battery SENSOR PCT, heartbeat SENSOR, kill SENSOR, poweron SENSOR, reboot SENSOR, "
    "blip SENSOR [SECONDS], shutdown SENSOR, sleep SECONDS, status, help, quit. "
    f"Broker credentials come from {ENV_MQTT_USERNAME} and {ENV_MQTT_PASSWORD}."
)


class UsageError(Exception):
    """Arguments that do not make a simulation; exit status 2."""


@dataclass(frozen=True, slots=True)
class Plan:
    """What the arguments resolve to: which sensors, on which site, at which broker."""

    topics: Topics
    broker: BrokerAddress
    sensor_ids: tuple[str, ...]
    interval_s: float
    script: str | None
    credentials: Credentials | None = None
    cribs: tuple[CribRef, ...] = ()
    """Every crib of the site file (``--config``): commands may name a crib instead of its sensor."""
    live: bool = False
    demo: bool = False
    """The site file says ``[site] demo = true``: wired cribs are driven by pin commands (``--simulate-pins``)."""


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= MAX_COUNT:
        raise argparse.ArgumentTypeError(f"must be within 1..{MAX_COUNT}, got {value}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be within 1..65535, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the simulator's options to ``parser`` (the ``sim`` subcommand of the main CLI)."""
    which = parser.add_argument_group("which sensors (exactly one of)")
    source = which.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", metavar="FILE", help="every wireless sensor of this site configuration")
    source.add_argument(
        "--sensor",
        metavar="ID",
        action="append",
        dest="sensors",
        help="a sensor id (repeat for more); needs --site",
    )
    source.add_argument("--count", metavar="N", type=_count, help="N sensors sim-0001, sim-0002, ...")
    parser.add_argument(
        "--site", metavar="ID", help=f"site id with --sensor (required) or --count (default {DEFAULT_COUNT_SITE})"
    )
    parser.add_argument("--base-topic", metavar="TOPIC", help=f"first topic level (default {DEFAULT_BASE_TOPIC})")
    broker = parser.add_argument_group("broker")
    broker.add_argument(
        "--host", help=f"broker host (default: from --config, else {ENV_MQTT_HOST}, else {DEFAULT_HOST})"
    )
    broker.add_argument(
        "--port",
        type=_port,
        help=f"broker port (default: from --config, else {ENV_MQTT_PORT}, else {DEFAULT_PORT})",
    )
    broker.add_argument(
        "--tls", action="store_true", help="connect over TLS (the broker's TLS port, 8883; default: from --config)"
    )
    broker.add_argument("--cafile", metavar="FILE", help="with --tls: the CA of the broker's certificate")
    broker.add_argument("--cert", metavar="FILE", help="with --tls: a client certificate (PEM), if the broker asks")
    broker.add_argument("--key", metavar="FILE", help="with --cert: its key (PEM)")
    parser.add_argument(
        "--interval",
        metavar="SECONDS",
        type=_positive_float,
        default=None,
        help="heartbeat interval of every sensor (default: the site's heartbeat_interval_s with --config, "
        f"else {DEFAULT_INTERVAL_S:g})",
    )
    parser.add_argument(
        "--script",
        metavar="COMMANDS",
        help="run these commands (separated by ';') instead of reading stdin, e.g. \"open s-0101; sleep 2; quit\"",
    )
    _add_run_arguments(parser)
    _add_console_arguments(parser)


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """``run SCENARIO`` (a scenario file, with --config), ``--check``, ``--junit``; ``--credentials`` for both uses."""
    parser.add_argument(
        "verb", nargs="?", choices=["run"], help="`run SCENARIO`: play a scenario file (see docs/scenarios.md)"
    )
    parser.add_argument("scenario", nargs="?", metavar="SCENARIO", help="the scenario file, after `run`")
    parser.add_argument(
        "--credentials",
        metavar="FILE",
        help="MQTT accounts: [sensors.<id>] username/password per sensor, or [shared] (TOML); "
        f"default {ENV_MQTT_USERNAME}/{ENV_MQTT_PASSWORD}",
    )
    parser.add_argument("--check", action="store_true", help="with run: check the scenario's expectations")
    parser.add_argument("--junit", metavar="FILE", help="with run --check: also write the results as JUnit XML")


def _add_console_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--live",
        action="store_true",
        help="show every sensor's state and the site's alarms, redrawn in place (plain lines when not a terminal)",
    )


def build_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser] | None = None,
) -> argparse.ArgumentParser:
    """The simulator's parser: on its own, or as the ``sim`` subcommand of ``subparsers``."""
    if subparsers is None:
        parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION, epilog=EPILOG)
    else:
        parser = subparsers.add_parser("sim", help="run simulated sensors", description=DESCRIPTION, epilog=EPILOG)
    add_arguments(parser)
    return parser


def plan_from_args(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Plan:
    """Resolve the arguments (and the environment) into a :class:`Plan`; :class:`UsageError` if they cannot."""
    env = os.environ if env is None else env
    base_topic: str | None = args.base_topic
    if base_topic is not None and not is_identifier(base_topic):
        raise UsageError(f"--base-topic {base_topic!r}: use lower case letters, digits, - and _")
    if args.config is not None:
        if args.site is not None:
            raise UsageError("--site cannot be combined with --config (the site comes from the file)")
        try:
            settings = load_settings(args.config, env=env)
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
        ids = wireless_sensor_ids(settings)
        if not ids:
            raise UsageError(f"{args.config}: the site has no wireless sensors (wired cribs are not simulated)")
        from_file = broker_from_settings(settings)
        broker = BrokerAddress(
            args.host or from_file.host,
            args.port or from_file.port,
            from_file.username,
            from_file.password,
        )
        topics = Topics(settings.site.id, base_topic or settings.mqtt.base_topic)
        site_interval: float | None = settings.alarms.heartbeat_interval_s
        demo = settings.site.demo
    else:
        demo = False
        site_interval = None
        if args.sensors is not None:
            if args.site is None:
                raise UsageError("--sensor needs --site ID")
            ids = list(args.sensors)
            bad = [i for i in ids if not is_identifier(i)]
            if bad:
                raise UsageError(f"not a sensor id: {', '.join(map(repr, bad))} (lower case letters, digits, - and _)")
            doubles = sorted({i for i in ids if ids.count(i) > 1})
            if doubles:
                raise UsageError(f"--sensor given more than once for: {', '.join(doubles)}")
        else:
            ids = [f"sim-{n:04d}" for n in range(1, args.count + 1)]
        site = args.site if args.site is not None else DEFAULT_COUNT_SITE
        if not is_identifier(site):
            raise UsageError(f"--site {site!r}: use lower case letters, digits, - and _")
        broker = BrokerAddress(
            args.host or env.get(ENV_MQTT_HOST) or DEFAULT_HOST,
            args.port or _env_port(env),
            env.get(ENV_MQTT_USERNAME) or None,
            env.get(ENV_MQTT_PASSWORD) or None,
        )
        topics = Topics(site, base_topic or DEFAULT_BASE_TOPIC)
    broker = _with_tls(broker, args)
    credentials = _credentials(getattr(args, "credentials", None))
    if args.config is not None and settings.mqtt.credentials_file is not None and not env.get(ENV_MQTT_USERNAME):
        # The account the site file leads to is the gateway's: a sensor logging in with it would take the running
        # gateway's session on the shipped broker (the client id is the username). The sensors take theirs from the
        # same credentials file instead (unless --credentials names another), and none falls back to the gateway's.
        broker = dataclasses.replace(broker, username=None, password=None)
        if credentials is None:
            credentials = _credentials(settings.mqtt.credentials_file)
    interval = choose_interval(getattr(args, "interval", None), site_interval)
    cribs = cribs_from_settings(settings) if args.config is not None else ()
    return Plan(
        topics,
        broker,
        tuple(ids),
        interval,
        args.script,
        credentials,
        cribs=cribs,
        live=getattr(args, "live", False),
        demo=demo,
    )


def _with_tls(broker: BrokerAddress, args: argparse.Namespace) -> BrokerAddress:
    """``broker`` with the TLS of ``--tls``/``--cafile``/``--cert``/``--key`` (else as it is: the site file's)."""
    cafile, cert, key = getattr(args, "cafile", None), getattr(args, "cert", None), getattr(args, "key", None)
    if not getattr(args, "tls", False):
        if cafile or cert or key:
            raise UsageError("--cafile, --cert and --key need --tls")
        return broker
    if (cert is None) != (key is None):
        raise UsageError("--cert and --key go together (a client certificate and its key)")
    for option, path in (("--cafile", cafile), ("--cert", cert), ("--key", key)):
        if path is not None and not Path(path).is_file():
            raise UsageError(f"{option} {path}: no such file")
    return dataclasses.replace(broker, tls=TlsOptions(cafile, cert, key))


def choose_interval(given: float | None, site_s: float | None, err: TextIO | None = None) -> float:
    """The sensors' heartbeat interval: ``--interval``, else the site's, else the firmware's default. A warning
    when it is longer than the site's (the gateway will report the sensors offline between heartbeats)."""
    interval = given if given is not None else site_s if site_s is not None else DEFAULT_INTERVAL_S
    if site_s is not None and interval > site_s:
        print(
            f"{PROG}: warning: heartbeat every {interval:g} s is longer than the site's heartbeat_interval_s "
            f"({site_s:g} s): the gateway will report the sensors offline",
            file=err or sys.stderr,
        )
    return interval


def _credentials(path: str | None) -> Credentials | None:
    if path is None:
        return None
    try:
        return load_credentials(path)
    except CredentialsError as exc:
        raise UsageError(str(exc)) from None


def _env_port(env: Mapping[str, str]) -> int:
    text = env.get(ENV_MQTT_PORT)
    if not text:
        return DEFAULT_PORT
    try:
        return _port(text)
    except argparse.ArgumentTypeError as exc:
        raise UsageError(f"{ENV_MQTT_PORT}: {exc}") from None


async def simulate(plan: Plan) -> int:
    """Start the fleet, run the commands, stop the fleet cleanly. The exit status."""
    fleet = Fleet(plan.topics, plan.broker, plan.sensor_ids, credentials=plan.credentials, interval_s=plan.interval_s)
    wired = any(crib.gpio_pin is not None for crib in plan.cribs)
    pins = PinDriver(plan.topics, plan.broker) if plan.demo and wired else None
    # Looked up at each write: a prompt or a live view redirects stdout to print above itself.
    console = Console(fleet, lambda: sys.stdout, lambda: sys.stderr, cribs=plan.cribs, pins=pins)
    where = f"{plan.broker.host}:{plan.broker.port}"
    try:
        await fleet.start_each()
    except SensorConnectError as exc:
        print(f"{PROG}: cannot connect to the broker at {where}: {exc.reason}", file=sys.stderr)
        return EXIT_CANNOT_CONNECT
    try:
        async with _console_around(plan, fleet, console):
            console.say(
                f"{fleet.summary()} at {where}, site {plan.topics.site} "
                f"(heartbeat every {plan.interval_s:g} s)"
                + ("" if plan.script is not None else "; type `help` for the commands")
            )
            if pins is not None:
                wired_cribs = ", ".join(f"{c.crib_id} (pin {c.gpio_pin})" for c in plan.cribs if c.gpio_pin is not None)
                console.say(
                    f"demo site: wired cribs {wired_cribs} move by pin commands to a gateway run with --simulate-pins"
                )
            with _input_lines(plan) as lines:
                quit_ = await console.run(lines)
            if not quit_:
                console.say(f"end of input: stopping {len(fleet)} sensors")
    finally:
        await fleet.stop()
        if pins is not None:
            await pins.close()
    console.say("stopped")
    return EXIT_OK


@contextlib.contextmanager
def _input_lines(plan: Plan) -> Iterator[AsyncIterator[str]]:
    """Where the commands come from: ``--script``; a prompt with line editing and history when stdin is a
    terminal (and no live view redraws the screen); else plain lines of stdin."""
    if plan.script is not None:
        yield script_lines(plan.script)
    elif sys.stdin.isatty() and sys.stdout.isatty() and not plan.live:
        from prompt_toolkit.patch_stdout import patch_stdout  # noqa: PLC0415 - a terminal only

        with patch_stdout(raw=True):
            yield prompt_lines()
    else:
        yield stream_lines(sys.stdin)


@contextlib.asynccontextmanager
async def _console_around(plan: Plan, fleet: Fleet, console: Console) -> AsyncIterator[None]:
    """While the commands run: report lost and restored connections, and show the live view (``--live``)."""
    tasks = [asyncio.create_task(console.watch_connections(), name="sim-connections")]
    if plan.live:
        from rich.console import Console as RichConsole  # noqa: PLC0415

        from firmware_sim.live import LiveView  # noqa: PLC0415

        view = LiveView(fleet, plan.cribs, say=console.say)
        tasks.append(asyncio.create_task(view.run(plan.broker, RichConsole()), name="sim-live"))
        await asyncio.sleep(0)  # the live view takes over stdout before the first line is printed
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)


def main_from_args(args: argparse.Namespace) -> int:
    """Run the simulator from parsed arguments (those of :func:`add_arguments`); the exit status."""
    if getattr(args, "verb", None) is not None or getattr(args, "scenario", None) is not None:
        from firmware_sim.run import run_from_args  # noqa: PLC0415 - run imports this module

        return run_from_args(args)
    try:
        plan = plan_from_args(args)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return asyncio.run(simulate(plan))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; the sensors were stopped", file=sys.stderr)
        return EXIT_INTERRUPTED


def run(argv: list[str] | None = None) -> int:
    """``cribwatch-sim`` on its own: parse ``argv`` (default ``sys.argv[1:]``) and run; the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or bad arguments (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return main_from_args(args)
