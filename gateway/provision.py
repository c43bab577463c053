"""``cribwatch provision``: the broker accounts of a site, from its site file (docs/broker.md).

Writes three files:

* the credentials file (gateway/credentials.py, mode 0600): every account's password in clear, for the gateway
  (``[mqtt] credentials_file``) and the simulator (``cribwatch sim --credentials``);
* Mosquitto's password file: the same accounts, passwords hashed the way ``mosquitto_passwd`` 2.0 does
  (``$7$``: PBKDF2-HMAC-SHA512), written here so that no password is ever on a command line;
* the ACL: deploy/mosquitto/cribwatch.acl, then one block per staff device (its reads of alarms and crib states)
  and per wall board (the reads of ``staff``). A helping-hands coordinator's device gets no block: the template's
  patterns give it its own notices.

Mosquitto allows one connection per account (``use_username_as_clientid``): whatever may run several at once gets
an account each (wall boards, staff devices, sensors; the simulator's ``watcher``; the technician's tools apart from
the technician's monitor).

The credentials file is the truth: a password it holds is never changed unless asked (``rotate``); an account the
password file lacks, or whose hash does not match, gets its hash (again). Users of the password file that this site
does not know (added by hand) are kept. Passwords come from :mod:`secrets` (192 random bits).
"""

from __future__ import annotations

import base64
import contextlib
import grp
import hashlib
import hmac
import os
import pwd
import secrets
import string
import tempfile
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from gateway.credentials import Account, SiteCredentials, read_credentials_file
from gateway.domain.vocab import is_identifier
from gateway.settings import MQTT_CHANNEL, RESERVED_DEVICE_IDS, RESERVED_SENSOR_IDS, Settings

REPO = Path(__file__).resolve().parent.parent
ACL_TEMPLATE = REPO / "deploy" / "mosquitto" / "cribwatch.acl"
BRIDGE_TEMPLATE = REPO / "deploy" / "mosquitto" / "bridge.conf"

DEFAULT_CREDENTIALS = "/etc/cribwatch/mqtt-credentials.toml"
DEFAULT_PASSWORD_FILE = "/etc/mosquitto/cribwatch.passwd"  # noqa: S105 - a path
DEFAULT_ACL = "/etc/mosquitto/cribwatch.acl"
DEFAULT_BRIDGE_CONF = "/etc/mosquitto/conf.d/bridge.conf"

SINGLE_USERNAMES = {
    "gateway": "gateway",
    "gateway_intake": "gateway-intake",
    "technician": "technician",
    "technician_tool": "technician-tool",
    "staff": "staff",
    "coordinator": "coordinator",
    "watcher": "watcher",
}
"""The site's fixed accounts: table of the credentials file -> broker username (deploy/mosquitto/cribwatch.acl)."""
KINDS = ("sensor", "device", "board", "coordinator-device")
GROUP_OF_KIND = {
    "sensor": "sensors",
    "device": "devices",
    "board": "boards",
    "coordinator-device": "coordinator_devices",
}
"""Each kind of account ``--add`` takes -> its table of the credentials file."""
STAFF_READS = ("topic read cribwatch/+/alarm/#", "topic read cribwatch/+/crib/#")
"""What each staff device reads beyond the template's patterns (its own answers and notices)."""
BOARD_READS = ("topic deny cribwatch/+/ack/#", *STAFF_READS, "topic read cribwatch/+/gateway/#")
"""What each wall board reads: the same as ``staff`` in the template (and no ack: ``deny`` overrides the patterns)."""

PBKDF2_ITERATIONS = 101
"""What mosquitto_passwd 2.0 uses. The passwords are random (192 bits), so more rounds would protect nothing and
cost the broker's CPU at every connect."""
PASSWORD_BYTES = 24

_DEVICE_BLOCK_HEAD = "# --- Staff devices of site {site} (written by `cribwatch provision`) ---"


class ProvisionError(Exception):
    """A request that cannot be carried out (a bad id, an unreadable file); nothing was written."""


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> str:
    """Mosquitto 2.0's ``$7$`` hash: ``$7$<iterations>$<base64 salt>$<base64 PBKDF2-HMAC-SHA512>``."""
    salt = secrets.token_bytes(12) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def password_matches(password: str, hashed: str) -> bool:
    """Whether ``hashed`` (a ``$7$`` line of the password file) is the hash of ``password``."""
    parts = hashed.split("$")
    if len(parts) != 5 or parts[1] != "7" or not parts[2].isdigit():
        return False
    try:
        salt = base64.b64decode(parts[3], validate=True)
        want = base64.b64decode(parts[4], validate=True)
    except ValueError:
        return False
    got = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, int(parts[2]), len(want))
    return hmac.compare_digest(got, want)


def new_password() -> str:
    return secrets.token_urlsafe(PASSWORD_BYTES)


def site_sensors(settings: Settings) -> list[str]:
    return [crib.sensor_id for _, crib in settings.cribs() if crib.sensor_id is not None]


def site_devices(settings: Settings) -> list[str]:
    """Every staff device of the site: the ``mqtt`` addresses of the alerting members, in file order."""
    found: dict[str, None] = {}
    for group in settings.alerting.groups:
        for member in group.members:
            for address in member.channels:
                if address.channel == MQTT_CHANNEL:
                    found.setdefault(address.address, None)
    return list(found)


def site_coordinator_devices(settings: Settings) -> list[str]:
    """The helping-hands coordinators' devices (``mqtt`` addresses of ``[helping_hands] coordinators``) that are no
    staff device: they read their own notices only (``notify/<device>``, a pattern of the template)."""
    staff = set(site_devices(settings))
    found: dict[str, None] = {}
    for member in settings.helping_hands.coordinators:
        for address in member.channels:
            device = address.address or member.id
            if address.channel == MQTT_CHANNEL and device not in staff:
                found.setdefault(device, None)
    return list(found)


def check_id(kind: str, ident: str) -> None:
    if kind not in KINDS:
        raise ProvisionError(f"{kind!r}: the kinds of account to add are {' and '.join(KINDS)}")
    if not is_identifier(ident):
        raise ProvisionError(f"{kind} {ident!r}: expected an id (lower case letters, digits, '-' and '_')")
    reserved = RESERVED_SENSOR_IDS if kind == "sensor" else RESERVED_DEVICE_IDS
    reserved = tuple(dict.fromkeys([*reserved, *SINGLE_USERNAMES.values()]))
    if ident in reserved:
        raise ProvisionError(f"{kind} {ident!r}: reserved ({', '.join(reserved)}) for the site's other accounts")


@dataclass
class Outcome:
    """What a run did, account by account (usernames)."""

    created: list[str] = field(default_factory=list)
    rotated: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    rehashed: list[str] = field(default_factory=list)
    """Accounts whose hash the password file lacked or had wrong (written again; the password did not change)."""
    foreign: list[str] = field(default_factory=list)
    """Users of the password file that no provisioned account has (kept as they are)."""
    unlisted: list[str] = field(default_factory=list)
    """Sensors and devices of the credentials file that the site file does not name (kept; ``--remove`` them)."""

    def summary(self) -> str:
        head = f"{len(self.created)} created, {len(self.rotated)} rotated, {len(self.kept)} unchanged"
        lines = [head + (f", {len(self.removed)} removed" if self.removed else "")]
        for what, names in (
            ("created", self.created),
            ("rotated", self.rotated),
            ("removed", self.removed),
            ("hash written again", self.rehashed),
            ("in the password file but not provisioned (kept)", self.foreign),
            ("provisioned but not in the site file (kept; --remove KIND ID)", self.unlisted),
        ):
            if names:
                lines.append(f"  {what}: {', '.join(names)}")
        return "\n".join(lines)


@dataclass(frozen=True)
class Paths:
    credentials: Path
    password_file: Path
    acl: Path
    acl_template: Path = ACL_TEMPLATE


def provision(
    paths: Paths,
    *,
    site_id: str,
    sensors: Iterable[str] = (),
    devices: Iterable[str] = (),
    boards: Iterable[str] = (),
    coordinator_devices: Iterable[str] = (),
    remove: Collection[tuple[str, str]] = (),
    rotate: Collection[str] | bool = False,
    bridge: bool = False,
    from_site_file: bool = True,
    owner: str | None = None,
) -> Outcome:
    """Bring the three files in step with the site's accounts: ``sensors``, ``devices``, ``boards`` and
    ``coordinator_devices`` (with those the credentials file already has; boards are never in the site file), the
    fixed ones of :data:`SINGLE_USERNAMES`; ``rotate``: True for every account,
    or usernames. Existing passwords are kept otherwise. ``bridge``: also the site's account on the city's central
    broker (``[bridge]``, username = the site id; kept once made). ``from_site_file``: ``sensors`` and ``devices``
    are all the site's (accounts beyond them are reported as unlisted). ``owner``: the user the credentials file
    belongs to (the gateway's); by default a rewritten file keeps its owner. Returns what changed."""
    listed = {"sensor": list(sensors), "device": list(devices), "board": list(boards)}
    listed["coordinator-device"] = [c for c in coordinator_devices if c not in listed["device"]]
    for kind, ident in [*((k, i) for k, ids in listed.items() for i in ids), *remove]:
        check_id(kind, ident)
    old = read_credentials_file(paths.credentials) if paths.credentials.exists() else SiteCredentials()
    kinds_of: dict[str, list[str]] = {}
    for kind, ids in listed.items():
        kept = [i for i in old.group(GROUP_OF_KIND[kind]) if (kind, i) not in set(remove)]
        for ident in dict.fromkeys([*ids, *kept]):
            kinds_of.setdefault(ident, []).append(kind)
    clash = sorted(f"{i} ({' and '.join(k)})" for i, k in kinds_of.items() if len(k) > 1)
    if clash:
        raise ProvisionError(f"ids of two kinds of account: {', '.join(clash)}")
    if not paths.acl_template.is_file():
        raise ProvisionError(
            f"{paths.acl_template}: the shipped ACL is not there: pass --acl-template with the "
            "deploy/mosquitto/cribwatch.acl of a cribwatch checkout"
        )
    template = paths.acl_template.read_text(encoding="utf-8")
    outcome = Outcome()
    wanted_rotation = set(rotate) if not isinstance(rotate, bool) else set()

    def account(existing: Account | None, username: str) -> Account:
        if existing is None or existing.username != username:  # an older file's [watcher] was a copy of [staff]
            outcome.created.append(username)
            return Account(username, new_password())
        if rotate is True or username in wanted_rotation:
            outcome.rotated.append(username)
            return Account(username, new_password())
        outcome.kept.append(username)
        return existing

    new = SiteCredentials()
    for table, username in SINGLE_USERNAMES.items():
        new.single[table] = account(old.single.get(table), username)
    if bridge or "bridge" in old.single:
        # Not in this broker's password file: the city's broker has it (print_central_line tells the city).
        new.single["bridge"] = account(old.single.get("bridge"), site_id)
    removed = {(kind, ident) for kind, ident in remove}
    for kind, table in GROUP_OF_KIND.items():
        wanted, old_group, new_group = listed[kind], old.group(table), new.group(table)
        for ident in [*wanted, *(i for i in old_group if i not in wanted)]:
            if (kind, ident) in removed:
                if ident in old_group:
                    outcome.removed.append(ident)
                continue
            if ident not in wanted and from_site_file and kind != "board":  # boards are not in the site file
                outcome.unlisted.append(ident)
            new_group[ident] = account(old_group.get(ident), ident)
    unknown = [f"{k} {i}" for k, i in removed if i not in old.group(GROUP_OF_KIND[k])]
    if unknown:
        raise ProvisionError(f"nothing to remove: no provisioned {', '.join(sorted(unknown))}")
    if wanted_rotation - {a.username for a in new.all_accounts()}:
        missing = sorted(wanted_rotation - {a.username for a in new.all_accounts()})
        raise ProvisionError(f"--rotate: no such account: {', '.join(missing)}")

    hashes = _updated_hashes(_read_password_file(paths.password_file), new, outcome)
    _write_private(paths.credentials, credentials_text(new, site_id), mode=0o600, owner=owner)
    _write_private(paths.password_file, "".join(f"{u}:{h}\n" for u, h in hashes.items()), mode=0o640, group="mosquitto")
    _write_private(paths.acl, acl_text(template, site_id, list(new.devices), list(new.boards)), mode=0o644)
    return outcome


def _updated_hashes(hashes: dict[str, str], creds: SiteCredentials, outcome: Outcome) -> dict[str, str]:
    """The password file's users: the removed ones gone, foreign ones kept (and listed), each of ours hashed anew
    only when its line is missing or does not match its password."""
    for gone in outcome.removed:
        hashes.pop(gone, None)
    local = [a for table, a in creds.single.items() if table != "bridge"]  # the bridge's is the city's broker's
    local += [a for table in GROUP_OF_KIND.values() for a in creds.group(table).values()]
    ours = {a.username for a in local}
    outcome.foreign = [user for user in hashes if user not in ours]
    for acc in local:
        current = hashes.get(acc.username)
        if current is None or not password_matches(acc.password, current):
            if acc.username in outcome.kept:
                outcome.rehashed.append(acc.username)
            hashes[acc.username] = hash_password(acc.password)
    return hashes


def _read_password_file(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    hashes: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep:
            raise ProvisionError(f"{path}:{number}: not a password file line (user:hash)")
        hashes[user] = hashed
    return hashes


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def credentials_text(creds: SiteCredentials, site_id: str) -> str:
    out = [
        f"# Broker accounts of site {site_id}, written by `cribwatch provision` (docs/broker.md). Mode 0600: the",
        "# gateway reads [gateway] and [gateway_intake], the simulator [sensors.*] and [watcher], `cribwatch",
        "# test-alarm` [technician_tool]. Each account allows one connection at a time. Never in a repo.",
        "",
        f"site = {_toml_string(site_id)}",
    ]
    tables = list(creds.single.items())
    tables += [(f"sensors.{i}", a) for i, a in creds.sensors.items()]
    tables += [(f"{t}.{i}", a) for t in GROUP_OF_KIND.values() if t != "sensors" for i, a in creds.group(t).items()]
    for table, acc in tables:
        out += ["", f"[{table}]", f"username = {_toml_string(acc.username)}"]
        out.append(f"password = {_toml_string(acc.password)}")
    return "\n".join(out) + "\n"


def acl_text(template: str, site_id: str, devices: Iterable[str], boards: Iterable[str] = ()) -> str:
    """The shipped ACL, then each staff device's reads of the site's alarms and crib states, and each wall board's
    (those of ``staff``). Coordinators' devices need no block: the template's patterns give them their notices."""
    lines = [template.rstrip("\n"), "", _DEVICE_BLOCK_HEAD.format(site=site_id)]
    for device in devices:
        lines += [f"user {device}", *STAFF_READS, ""]
    for board in boards:
        lines += [f"user {board}", *BOARD_READS, ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def _write_private(path: Path, text: str, *, mode: int, group: str | None = None, owner: str | None = None) -> None:
    """Write ``text`` to ``path`` atomically, created with ``mode`` (never readable by others first). As root, the
    file keeps the owner and group of the file it replaces; ``owner`` (a user name) sets its owner and group, and
    ``group`` its group when that group exists (Mosquitto's user reads the password file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    uid = gid = -1
    if os.geteuid() == 0:
        with contextlib.suppress(FileNotFoundError):
            old = path.stat()
            uid, gid = old.st_uid, old.st_gid
        if owner is not None:
            try:
                user = pwd.getpwnam(owner)
            except KeyError:
                raise ProvisionError(f"--owner {owner}: no such user") from None
            uid, gid = user.pw_uid, user.pw_gid
        if group is not None:
            with contextlib.suppress(KeyError):
                gid = grp.getgrnam(group).gr_gid
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        if (uid, gid) != (-1, -1):
            os.fchown(fd, uid, gid)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# -- the bridge to the city's central broker -------------------------------------------------------------


@dataclass(frozen=True)
class Bridge:
    """What a site's bridge.conf needs: the central broker and the site's account there (username = site id)."""

    site_id: str
    host: str
    port: int
    password: str = field(repr=False)
    ca_file: str | None = "/etc/mosquitto/certs/city-ca.crt"
    """The CA of the central broker's certificate; None: plain MQTT (tests on loopback only)."""


def render_bridge(template: str, bridge: Bridge) -> str:
    """deploy/mosquitto/bridge.conf with the site's values (``$site``, ``$central_host``, ...). Without a CA file the
    TLS line is left out (a bridge over plain MQTT: loopback tests only)."""
    text = string.Template(template).substitute(
        site=bridge.site_id,
        central_host=bridge.host,
        central_port=str(bridge.port),
        password=bridge.password,
        central_ca=bridge.ca_file or "",
    )
    if bridge.ca_file is None:
        text = "\n".join(line for line in text.splitlines() if not line.startswith("bridge_cafile")) + "\n"
    return text


def write_bridge(path: Path, template: str, bridge: Bridge) -> None:
    """The rendered bridge.conf, mode 0640 group mosquitto: it holds the site's password on the central broker."""
    _write_private(path, render_bridge(template, bridge), mode=0o640, group="mosquitto")
