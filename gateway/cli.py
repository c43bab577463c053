"""``cribwatch``: one command, with subcommands ``demo``, ``gateway``, ``sim``, ``check-config``, ``incidents``,
``test-alarm`` and ``maintenance``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import dataclasses
import gc
import getpass
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway import provision as prov
from gateway.credentials import CredentialsFileError, read_credentials_file
from gateway.gpio.pins import MOCK_PINS_ADVICE, GpioUnavailableError
from gateway.settings import ENV_MQTT_PASSWORD, ENV_MQTT_USERNAME, ConfigError, Settings, load_settings
from gateway.store import Incident, Store, StoreError

if TYPE_CHECKING:
    from gateway.store.accounts import AccountStore

EXAMPLE_CONFIG = Path(__file__).resolve().parent.parent / "examples" / "kids-f.toml"


LOG_LEVELS = ("debug", "info", "warning", "error")


def _log_level(value: str) -> str:
    """argparse applies this to a default from the environment too, so a bad variable is caught as well."""
    if value.lower() not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{value!r} is not one of {', '.join(LOG_LEVELS)}")
    return value.lower()


class _IsoTimeFormatter(logging.Formatter):
    """Times in ISO 8601, local time with milliseconds and the UTC offset: ``2026-11-27T17:08:52.123+01:00``."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's name
        return datetime.fromtimestamp(record.created).astimezone().isoformat(timespec="milliseconds")


LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
"""The gateway's log lines: date and time (see :class:`_IsoTimeFormatter`), level, logger, message."""


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(_IsoTimeFormatter(LOG_FORMAT))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler])


def _load(path: str, *, require_credentials: bool = True) -> Settings | None:
    try:
        return load_settings(path, require_credentials=require_credentials)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None


def cmd_check_config(args: argparse.Namespace) -> int:
    """Check the file (the broker address from the environment included); missing credentials only warn."""
    settings = _load(args.config, require_credentials=False)
    if settings is None:
        return 2
    wired = sum(1 for _, crib in settings.cribs() if crib.wired)
    print(
        f"{args.config}: OK: site {settings.site.id!r}, {len(settings.rooms)} rooms, "
        f"{len(settings.cribs())} cribs ({wired} wired), broker {settings.mqtt.host}:{settings.mqtt.port}"
        + (" [DEMO MODE]" if settings.site.demo else "")
    )
    if settings.needs_credentials:
        print(
            f"WARNING: {ENV_MQTT_USERNAME} and {ENV_MQTT_PASSWORD} are not both set here: `cribwatch gateway` "
            "will refuse to start until both are set in its environment, or [mqtt] credentials_file names a "
            "readable file of `cribwatch provision` (unless [site] demo = true, never on a site with children)",
            file=sys.stderr,
        )
    for target in settings.influx.targets if settings.influx is not None and not settings.site.demo else ():
        if target.needs_credentials:
            print(
                f"WARNING: influx target {target.name!r} has no credentials here "
                + ("(username in the file, " if target.api == "v1" else "(")
                + f"{target.secret_env}): `cribwatch gateway` will refuse to start until they are set",
                file=sys.stderr,
            )
    return 0


def cmd_gateway(args: argparse.Namespace) -> int:
    _setup_logging(args.log_level)
    settings = _load(args.config)
    try:
        from gateway.sdnotify import loop_watchdog_from_env  # noqa: PLC0415 - keep the command line light

        loop_watchdog_from_env()  # a bad CRIBWATCH_LOOP_WATCHDOG_S stops start-up here, saying so
    except ValueError as exc:
        print(f"cannot start: {exc}", file=sys.stderr)
        return 2
    if settings is None:
        return 2
    if settings.shared_account_problem is not None:
        print(f"cannot start: {settings.shared_account_problem}.", file=sys.stderr)
        return 2
    if args.simulate_pins and not settings.site.demo:
        from gateway.gpio.simulated import NEEDS_DEMO  # noqa: PLC0415 - keep the command line light

        print(f"cannot start: {NEEDS_DEMO}.", file=sys.stderr)
        return 2
    if settings.site.demo:
        logging.getLogger("cribwatch").warning("DEMO MODE: anonymous broker allowed; not for a site with children")
    from gateway.app import Gateway  # noqa: PLC0415 - keep `check-config` light

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        gateway = Gateway(settings, simulate_pins=args.simulate_pins)
        gc.freeze()  # what start-up built lives for the whole run: keep it out of the collector's scans
        with contextlib.suppress(asyncio.CancelledError):
            await gateway.run()
        logging.getLogger("cribwatch.gateway").info("stopped")

    try:
        asyncio.run(main())
    except GpioUnavailableError as exc:
        print(
            f"cannot start: {exc.problem}.\n"
            f"  This site needs GPIO for: {_gpio_users(settings)}.\n"
            f"  {MOCK_PINS_ADVICE}\n"
            f"  ({exc.reason})",
            file=sys.stderr,
        )
        return 2
    return 0


def _gpio_users(settings: Settings) -> str:
    """Every pin of the site file, e.g. ``wired cribs sk-1 (pin 17), sk-2 (pin 27); buzzer (pin 18)``."""
    wired = [f"{crib.id} (pin {crib.gpio_pin})" for _, crib in settings.cribs() if crib.wired]
    users = [f"wired crib{'s' if len(wired) > 1 else ''} {', '.join(wired)}"] if wired else []
    if settings.buzzer.pin is not None:
        users.append(f"buzzer (pin {settings.buzzer.pin})")
    if settings.buzzer.led_pin is not None:
        users.append(f"LED (pin {settings.buzzer.led_pin})")
    if settings.alerting.ack_button_pin is not None:
        users.append(f"acknowledge button (pin {settings.alerting.ack_button_pin})")
    return "; ".join(users)


def cmd_demo(args: argparse.Namespace) -> int:
    from devtools.demo import main as demo_main  # noqa: PLC0415

    return demo_main(Path(args.config), pace=args.pace, keep=args.keep)


def cmd_sim_load(args: argparse.Namespace) -> int:
    from firmware_sim.load import main_from_args  # noqa: PLC0415

    return main_from_args(args)


def cmd_sim(args: argparse.Namespace) -> int:
    from firmware_sim.cli import main_from_args  # noqa: PLC0415

    return main_from_args(args)


_RELATIVE = re.compile(r"(\d+)([dhm])")
_UNIT_S = {"d": 86_400, "h": 3_600, "m": 60}


def _when(value: str) -> float:
    """``7d``, ``12h``, ``30m`` (that long ago), or an ISO date or date and time (local time unless it says)."""
    text = value.strip()
    relative = _RELATIVE.fullmatch(text)
    if relative:
        return time.time() - int(relative.group(1)) * _UNIT_S[relative.group(2)]
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day).astimezone().timestamp()
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r}: expected an ISO date (2026-03-01), date and time (2026-03-01T08:00) or 7d, 12h, 30m"
        ) from None
    return (moment if moment.tzinfo else moment.astimezone()).timestamp()


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: expected a whole number of 1 or more")
    return number


def _iso(ts: float | None) -> str:
    """Local time, ISO 8601 with the UTC offset: ``2026-11-27T17:08:52+01:00``; empty for None."""
    return "" if ts is None else datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


INCIDENT_CSV_COLUMNS = (
    "alarm_id", "kind", "priority", "room_id", "room_label", "crib_id", "crib_label", "raised_at", "response_s",
    "acknowledged_by", "acknowledged_device", "acknowledged_at", "resolved_at", "resolution", "test",
)  # fmt: skip


def _incident_csv_row(inc: Incident) -> list[str]:
    return [
        inc.alarm_id, str(inc.kind), inc.priority, inc.room_id, inc.room_label, inc.crib_id, inc.crib_label,
        _iso(inc.raised_at), _seconds(inc.response_s), inc.acknowledged_by or "", inc.acknowledged_device or "",
        _iso(inc.acknowledged_at), _iso(inc.resolved_at), inc.resolution or "", "yes" if inc.test else "no",
    ]  # fmt: skip


INCIDENT_TABLE_COLUMNS = (
    "alarm", "kind", "priority", "room", "crib", "raised at", "response s", "acknowledged by/device", "resolved at",
    "resolution", "test",
)  # fmt: skip


def _incident_table_row(inc: Incident) -> list[str]:
    acked = ""
    if inc.acknowledged_by or inc.acknowledged_device:
        acked = f"{inc.acknowledged_by or '?'}/{inc.acknowledged_device or '?'}"
    return [
        inc.alarm_id, str(inc.kind), inc.priority, inc.room_id, inc.crib_label, _iso(inc.raised_at),
        _seconds(inc.response_s), acked, _iso(inc.resolved_at) or "open", inc.resolution or "",
        "TEST" if inc.test else "",
    ]  # fmt: skip


def _print_table(header: Sequence[str], rows: list[list[str]]) -> None:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=False)]
    for row in (list(header), *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def cmd_incidents(args: argparse.Namespace) -> int:
    """The incident log, newest first, read from the site's store (read-only: safe while the gateway runs)."""
    settings = _load(args.config, require_credentials=False)
    if settings is None:
        return 2
    path = settings.store_path
    try:
        store = Store.open(path, site_id=settings.site.id, readonly=True)
    except StoreError as exc:
        print(f"cannot read the incident log: {exc}", file=sys.stderr)
        return 1
    try:
        found = store.incidents(
            room=args.room,
            crib=args.crib,
            since=args.since,
            until=args.until,
            include_tests=not args.no_tests,
            limit=args.limit,
        )
    finally:
        store.close()
    if args.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(INCIDENT_CSV_COLUMNS)
        writer.writerows(_incident_csv_row(inc) for inc in found)
        return 0
    _print_table(INCIDENT_TABLE_COLUMNS, [_incident_table_row(inc) for inc in found])
    if not found:
        print(f"(no incidents in {path})")
    return 0


def _until(value: str) -> float:
    """``2h``, ``30m``, ``90s`` from now, or an ISO date and time (local time unless it says)."""
    text = value.strip()
    relative = re.fullmatch(r"(\d+)([smh])", text)
    if relative:
        return time.time() + int(relative.group(1)) * {"s": 1, "m": 60, "h": 3600}[relative.group(2)]
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: expected 2h, 30m, 90s or 2026-03-01T17:00") from None
    return (moment if moment.tzinfo else moment.astimezone()).timestamp()


def _run_command(args: argparse.Namespace, command: str, **fields: object) -> int:
    """Send one command to the site's running gateway and print its answer: 0 accepted, 1 refused or no answer."""
    settings = _load(args.config)
    if settings is None:
        return 2
    from gateway.mqtt.command import send_command  # noqa: PLC0415 - keep the command line light
    from gateway.mqtt.connection import broker_address  # noqa: PLC0415
    from gateway.protocol import Topics  # noqa: PLC0415
    from gateway.protocol.payloads import CommandPayload  # noqa: PLC0415

    address = broker_address(settings.mqtt)
    if not os.environ.get(ENV_MQTT_USERNAME) and settings.mqtt.credentials_file is not None:
        # The site's credentials file: the tool is [technician_tool], never the gateway (whose account would take the
        # running gateway's session on the shipped broker, where the client id is the username) nor [technician]
        # (whose monitor, connected for hours, this short session would knock off).
        try:
            technician = read_credentials_file(settings.mqtt.credentials_file).single.get("technician_tool")
        except CredentialsFileError as exc:
            print(exc, file=sys.stderr)
            return 2
        if technician is None:
            print(
                f"{settings.mqtt.credentials_file}: no [technician_tool] account (run `cribwatch provision`)",
                file=sys.stderr,
            )
            return 2
        address = dataclasses.replace(address, username=technician.username, password=technician.password)
    by = args.by or address.username or "technician"
    device = args.device or address.username or "technician"
    payload = CommandPayload(command=command, crib=args.crib, by=by, ts=time.time(), **fields)
    topics = Topics(settings.site.id, settings.mqtt.base_topic)
    try:
        answer = asyncio.run(send_command(address, topics, device, payload, timeout=args.timeout))
    except Exception as exc:  # noqa: BLE001 - a broker that refuses or is away: one clear line
        print(f"cannot reach the broker {settings.mqtt.host}:{settings.mqtt.port}: {exc}", file=sys.stderr)
        return 1
    if answer is None:
        print(f"no answer from the gateway of {settings.site.id!r} within {args.timeout:g} s", file=sys.stderr)
        return 1
    line = f"{answer.result}: {answer.detail or command} (crib {answer.crib})"
    print(line + (f" [{', '.join(answer.alarm_ids)}]" if answer.alarm_ids else ""))
    return 0 if answer.result == "accepted" else 1


def cmd_test_alarm(args: argparse.Namespace) -> int:
    return _run_command(args, "test_alarm")


def cmd_maintenance(args: argparse.Namespace) -> int:
    if args.state == "off":
        return _run_command(args, "maintenance_off")
    if args.reason is None or args.until is None:
        print("maintenance on needs --reason and --until (never open-ended)", file=sys.stderr)
        return 2
    return _run_command(args, "maintenance_on", reason=args.reason, until=args.until)


def _command_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        required=True,
        help="the site's TOML file (broker address); the account: env CRIBWATCH_MQTT_USERNAME/_PASSWORD, else "
        "[technician_tool] of its mqtt.credentials_file",
    )
    p.add_argument("--by", help="your technician id (default: the broker username)")
    p.add_argument("--device", help="this tool's device id in the topic (default: the broker username)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the gateway's answer")


def _open_accounts(config: str) -> tuple[Settings, AccountStore] | int:
    """The site's settings and its web accounts (the store), or the exit code after saying why not."""
    from gateway.store.accounts import AccountStore  # noqa: PLC0415 - only the account commands

    settings = _load(config, require_credentials=False)
    if settings is None:
        return 2
    try:
        return settings, AccountStore.open(settings.store_path, site_id=settings.site.id)
    except StoreError as exc:
        print(exc, file=sys.stderr)
        return 1


def cmd_user(args: argparse.Namespace) -> int:
    """Web accounts in the site's store: ``add`` (the first admin, then anyone) and ``list``."""
    from gateway.store.accounts import AccountExistsError  # noqa: PLC0415 - only this command
    from gateway.web.auth import STAFF_ID, hash_password, hash_pin  # noqa: PLC0415 - argon2 only for this command

    opened = _open_accounts(args.config)
    if isinstance(opened, int):
        return opened
    _, accounts = opened
    try:
        if args.action == "list":
            for user in accounts.users():
                print("\t".join([user.username, user.role, *(["disabled"] if user.disabled else [])]))
            return 0
        if not STAFF_ID.fullmatch(args.username):
            print(f"user name {args.username!r}: expected a staff id (letters, digits, '.', '_', '-')", file=sys.stderr)
            return 2
        what = "PIN" if args.action == "pin" else "password"
        if args.password_stdin:
            password = sys.stdin.readline().rstrip("\n")
        else:
            password = getpass.getpass(f"{what}: ")
            if getpass.getpass("again: ") != password:
                print(f"the two {what}s differ", file=sys.stderr)
                return 2
        if args.action == "pin":  # the personal PIN for shared wall tablets ([web] tablet_pin)
            try:
                found = accounts.set_pin_hash(args.username, hash_pin(password))
            except ValueError as exc:
                print(exc, file=sys.stderr)
                return 2
            if not found:
                print(f"no account {args.username!r}", file=sys.stderr)
                return 1
            print(f"PIN of {args.username} set")
            return 0
        try:
            accounts.add_user(args.username, args.role, hash_password(password), time.time())
        except (ValueError, AccountExistsError) as exc:
            print(exc, file=sys.stderr)
            return 2
        print(f"account {args.username} ({args.role}) added")
        return 0
    finally:
        accounts.close()


def cmd_device(args: argparse.Namespace) -> int:
    """Wall tablets: ``add`` (prints the address the tablet opens once), ``list``, ``remove``."""
    import secrets  # noqa: PLC0415 - only this command

    from gateway.store.accounts import AccountExistsError  # noqa: PLC0415 - only this command
    from gateway.web.auth import STAFF_ID, new_token, token_hash  # noqa: PLC0415 - only this command

    opened = _open_accounts(args.config)
    if isinstance(opened, int):
        return opened
    settings, accounts = opened
    try:
        if args.action == "list":
            for device in accounts.devices():
                print(f"{device.name}\t{device.room_id}")
            return 0
        if not STAFF_ID.fullmatch(args.name):
            print(f"device name {args.name!r}: expected letters, digits, '.', '_', '-'", file=sys.stderr)
            return 2
        if args.action == "remove":
            if not accounts.remove_device(args.name):
                print(f"no device {args.name!r}", file=sys.stderr)
                return 1
            print(f"device {args.name} removed: its token opens nothing any more")
            return 0
        rooms = {room.id for room in settings.rooms}
        if args.room not in rooms:
            print(f"--room {args.room!r}: expected one of {', '.join(sorted(rooms))}", file=sys.stderr)
            return 2
        token = new_token()
        try:
            accounts.add_device(token_hash(token), args.name, args.room, secrets.token_urlsafe(32), time.time())
        except AccountExistsError as exc:
            print(exc, file=sys.stderr)
            return 2
        web = settings.web
        where = f"http://{web.host}:{web.port}" if web is not None else "http://GATEWAY:8080"
        print(f"device {args.name} shows room {args.room}; open this once on the tablet (keep it secret):")
        print(f"{where}/device/{token}")
        return 0
    finally:
        accounts.close()


def cmd_provision(args: argparse.Namespace) -> int:
    """The site's broker accounts (gateway/provision.py, docs/broker.md)."""
    paths = prov.Paths(Path(args.credentials), Path(args.password_file), Path(args.acl), Path(args.acl_template))
    listed: dict[str, list[str]] = {kind: [] for kind in prov.KINDS}
    site_id: str | None = None
    if args.config is not None:
        settings = _load(args.config, require_credentials=False)
        if settings is None:
            return 2
        site_id = settings.site.id
        listed["sensor"], listed["device"] = prov.site_sensors(settings), prov.site_devices(settings)
        listed["coordinator-device"] = prov.site_coordinator_devices(settings)
    elif not paths.credentials.exists():
        print(f"{paths.credentials} does not exist: provision the site first (--config SITE_FILE)", file=sys.stderr)
        return 2
    for kind, _ident in [*(args.add or []), *(args.remove or [])]:
        if kind not in prov.KINDS:
            print(f"{kind!r}: the kinds of account are {', '.join(prov.KINDS)}", file=sys.stderr)
            return 2
    for kind, ident in args.add or []:
        listed[kind].append(ident)
    try:
        if site_id is None:
            site_id = read_credentials_file(paths.credentials).site or "site"
        bridge = None
        if args.bridge_to is not None:
            host, _, port_text = args.bridge_to.partition(":")
            if not host or (port_text and not port_text.isdigit()):
                print(f"--bridge-to {args.bridge_to!r}: expected HOST or HOST:PORT", file=sys.stderr)
                return 2
            bridge = (host, int(port_text or 8883))
        rotate: list[str] | bool = False if args.rotate is None else (args.rotate or True)
        outcome = prov.provision(
            paths,
            site_id=site_id,
            sensors=listed["sensor"],
            devices=listed["device"],
            boards=listed["board"],
            coordinator_devices=listed["coordinator-device"],
            remove=[(k, i) for k, i in args.remove or []],
            rotate=rotate,
            bridge=bridge is not None,
            from_site_file=args.config is not None,
            owner=args.owner,
        )
        if bridge is not None:
            account = read_credentials_file(paths.credentials).single["bridge"]
            prov.write_bridge(
                Path(args.bridge_conf),
                prov.BRIDGE_TEMPLATE.read_text(encoding="utf-8"),
                prov.Bridge(site_id, bridge[0], bridge[1], account.password, args.bridge_ca),
            )
    except (prov.ProvisionError, CredentialsFileError, OSError, ValueError) as exc:
        print(f"provision: {exc}", file=sys.stderr)
        return 2
    print(outcome.summary())
    print(f"credentials: {paths.credentials} (mode 0600); password file: {paths.password_file}; ACL: {paths.acl}")
    if bridge is None and site_id in outcome.rotated:
        print(
            "WARNING: the bridge's password changed: run again with --bridge-to HOST:PORT to write bridge.conf, and "
            "give the city the new line for its password file; until then the bridge cannot log in",
            file=sys.stderr,
        )
    if bridge is not None:
        print(f"bridge: {args.bridge_conf}; give the city this line for its broker's password file:")
        print(f"{site_id}:{prov.hash_password(account.password)}")
    print("Reload Mosquitto to apply: systemctl reload mosquitto")
    return 0


def _add_provision_command(sub: Any) -> None:
    p = sub.add_parser(
        "provision", help="the site's broker accounts: random passwords, Mosquitto's password file and ACL"
    )
    p.add_argument("--config", help="the site's TOML file: every sensor and staff device of it gets an account")
    p.add_argument(
        "--add",
        nargs=2,
        action="append",
        metavar=("KIND", "ID"),
        help="one more account: sensor ID, device ID, board ID (a wall screen) or coordinator-device ID",
    )
    p.add_argument(
        "--remove",
        nargs=2,
        action="append",
        metavar=("KIND", "ID"),
        help="delete one: sensor, device, board or coordinator-device",
    )
    p.add_argument(
        "--rotate", nargs="*", metavar="USERNAME", help="new passwords: for these accounts, or every one if none named"
    )
    p.add_argument("--credentials", default=prov.DEFAULT_CREDENTIALS, help="the credentials file (mode 0600)")
    p.add_argument("--owner", metavar="USER", help="who owns the credentials file: the gateway's user (kept once set)")
    p.add_argument("--password-file", default=prov.DEFAULT_PASSWORD_FILE, help="Mosquitto's password file")
    p.add_argument("--acl", default=prov.DEFAULT_ACL, help="the ACL to write")
    p.add_argument("--acl-template", default=str(prov.ACL_TEMPLATE), help="the shipped ACL it starts from")
    p.add_argument("--bridge-to", metavar="HOST[:PORT]", help="also render bridge.conf for the city's central broker")
    p.add_argument("--bridge-conf", default=prov.DEFAULT_BRIDGE_CONF, help="where the bridge's config goes")
    p.add_argument(
        "--bridge-ca", default="/etc/mosquitto/certs/city-ca.crt", help="the CA of the central broker's certificate"
    )
    p.set_defaults(func=cmd_provision)


def _add_web_commands(sub: Any) -> None:
    """``user`` and ``device``: the web app's accounts and wall tablets, in the site's store."""
    p = sub.add_parser("user", help="web accounts (docs/web.md): add one, or list them")
    p.add_argument("action", choices=("add", "list", "pin"))
    p.add_argument("username", nargs="?", default="", help="add, pin: a staff id (never a person's name)")
    p.add_argument("--config", required=True, help="the site's TOML file (its store holds the accounts)")
    p.add_argument("--role", default="staff", choices=("staff", "manager", "technician", "coordinator", "admin"))
    p.add_argument(
        "--password-stdin", action="store_true", help="read the password (pin: the PIN) from one line of stdin"
    )
    p.set_defaults(func=cmd_user)

    p = sub.add_parser("device", help="wall tablets (docs/web.md): add one for a room's board, list, remove")
    p.add_argument("action", choices=("add", "list", "remove"))
    p.add_argument("name", nargs="?", default="", help="the tablet's name, e.g. vlinders-wall")
    p.add_argument("--config", required=True, help="the site's TOML file (its store holds the devices)")
    p.add_argument("--room", help="add: the room whose board it shows")
    p.set_defaults(func=cmd_device)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cribwatch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="run broker, gateway and simulated sensors; show an alarm's whole life")
    p.add_argument("--config", default=str(EXAMPLE_CONFIG), help="site file (default: the Kids-F example)")
    p.add_argument("--pace", type=float, default=1.0, help="pause multiplier between steps (0 = no pauses)")
    p.add_argument(
        "--keep", action="store_true", help="after the stories, keep the gateway and its web app running (Ctrl-C)"
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("gateway", help="run the gateway for one site")
    p.add_argument("--config", required=True, help="the site's TOML file")
    p.add_argument(
        "--log-level",
        type=_log_level,
        default=os.environ.get("CRIBWATCH_LOG_LEVEL", "info"),
        help="debug, info, warning or error (default: env CRIBWATCH_LOG_LEVEL, else info)",
    )
    p.add_argument(
        "--simulate-pins",
        action="store_true",
        help="test bench, demo sites only ([site] demo = true): every GPIO pin is a mock pin, and the wired cribs "
        "open and close by pin commands over MQTT (`cribwatch sim --config SITE`: open/close CRIB)",
    )
    p.set_defaults(func=cmd_gateway)

    p = sub.add_parser("check-config", help="validate a site file and exit (0 = OK, 2 = problems)")
    p.add_argument("config", help="the site's TOML file")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("incidents", help="print the incident log from the site's store (newest first)")
    p.add_argument("--config", required=True, help="the site's TOML file (its [store] path, or the default)")
    p.add_argument("--room", metavar="R", help="only this room id")
    p.add_argument("--crib", metavar="C", help="only this crib id")
    p.add_argument("--since", metavar="WHEN", type=_when, help="since WHEN: 2026-03-01, 2026-03-01T08:00, 7d, 12h, 30m")
    p.add_argument("--until", metavar="WHEN", type=_when, help="raised before WHEN (same forms as --since)")
    p.add_argument("--no-tests", action="store_true", help="leave out test alarms")
    p.add_argument("--csv", action="store_true", help="CSV with a header row, times in ISO 8601 with the offset")
    p.add_argument("--limit", metavar="N", type=_positive, help="at most N incidents (the newest)")
    p.set_defaults(func=cmd_incidents)

    p = sub.add_parser("test-alarm", help="a test alarm on one crib of the running gateway (the whole chain)")
    _command_arguments(p)
    p.add_argument("crib", help="crib id (or its sensor id)")
    p.set_defaults(func=cmd_test_alarm)

    p = sub.add_parser("maintenance", help="put a crib in maintenance (alarms recorded, not sent) or end it")
    _command_arguments(p)
    p.add_argument("crib", help="crib id (or its sensor id)")
    p.add_argument("state", choices=("on", "off"))
    p.add_argument("--reason", help="on: why (required)")
    p.add_argument("--until", type=_until, help="on: when it ends (required): 2h, 30m, or 2026-03-01T17:00")
    p.set_defaults(func=cmd_maintenance)

    _add_web_commands(sub)
    _add_provision_command(sub)

    p = sub.add_parser("sim", help="simulated crib-latch sensors (a technician's test tool)")
    from firmware_sim.cli import add_arguments  # noqa: PLC0415

    add_arguments(p)
    p.set_defaults(func=cmd_sim)

    from firmware_sim.load import build_parser as build_load_parser  # noqa: PLC0415

    build_load_parser(sub).set_defaults(func=cmd_sim_load)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
