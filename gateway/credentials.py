"""The broker credentials file of a site, written by ``cribwatch provision`` (docs/broker.md).

One TOML file, mode 0600, readable by the gateway's user only::

    site = "kids-f"
    [gateway]                 # the gateway's main connection
    username = "gateway"
    password = "..."
    [gateway_intake]          # its second connection (client id = username on the shipped broker)
    [technician]              # a technician's monitor; reads health only
    [technician_tool]         # cribwatch test-alarm / maintenance (never collides with a technician's monitor)
    [staff]                   # a read-only wall board (one connection at a time: more boards, [boards.<id>])
    [watcher]                 # what `cribwatch sim run --check` listens with (staff's reads, its own account)
    [bridge]                  # the site's account on the city's central broker (username = the site id)
    [sensors.<sensor id>]     # one per wireless sensor: username = the sensor id
    [devices.<device id>]     # one per staff device: username = the device id
    [boards.<board id>]       # one per wall screen (`cribwatch provision --add board ID`): staff's reads
    [coordinator_devices.<id>] # one per helping-hands coordinator's MQTT device: its own notices only

The gateway reads ``[gateway]`` and ``[gateway_intake]`` (``[mqtt] credentials_file`` or env
``CRIBWATCH_MQTT_CREDENTIALS``); the simulator reads ``[sensors.*]`` and ``[watcher]`` (``--credentials``).
Nothing here does I/O but :func:`read_credentials_file`.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SINGLE_ACCOUNTS = (
    "gateway",
    "gateway_intake",
    "technician",
    "technician_tool",
    "staff",
    "coordinator",
    "watcher",
    "bridge",
)
"""The tables of one account each, in the order the file lists them."""
ACCOUNT_GROUPS = ("sensors", "devices", "boards", "coordinator_devices")
"""The tables of one account per sensor id, staff device id, wall board id and coordinator's device id."""


@dataclass(frozen=True, slots=True)
class Account:
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class SiteCredentials:
    """The accounts of a credentials file: ``single`` by table name, ``sensors`` and ``devices`` by id."""

    single: dict[str, Account] = field(default_factory=dict)
    site: str | None = None
    """The site these accounts are for (the file's top-level ``site``)."""
    sensors: dict[str, Account] = field(default_factory=dict)
    devices: dict[str, Account] = field(default_factory=dict)
    boards: dict[str, Account] = field(default_factory=dict)
    coordinator_devices: dict[str, Account] = field(default_factory=dict)

    def group(self, table: str) -> dict[str, Account]:
        """The accounts of one of :data:`ACCOUNT_GROUPS` by id."""
        groups = {
            "sensors": self.sensors,
            "devices": self.devices,
            "boards": self.boards,
            "coordinator_devices": self.coordinator_devices,
        }
        return groups[table]

    def all_accounts(self) -> list[Account]:
        """Every account once (an older file's ``watcher`` was a copy of ``staff``), in file order."""
        seen: dict[str, Account] = {}
        for account in [*self.single.values(), *(a for t in ACCOUNT_GROUPS for a in self.group(t).values())]:
            seen.setdefault(account.username, account)
        return list(seen.values())


class CredentialsFileError(Exception):
    """A credentials file that cannot be read or does not follow the format; the message names the file."""


def _account(path: Path, where: str, value: Any) -> Account:
    if not isinstance(value, dict) or set(value) != {"username", "password"}:
        raise CredentialsFileError(f"{path}: [{where}] must have exactly username and password")
    username, password = value["username"], value["password"]
    if not isinstance(username, str) or not isinstance(password, str) or not username or not password:
        raise CredentialsFileError(f"{path}: [{where}] username and password must be non-empty strings")
    return Account(username, password)


def parse_credentials(path: Path, data: dict[str, Any]) -> SiteCredentials:
    """Validate a parsed credentials file (see the module's documentation)."""
    site = data.get("site")
    if site is not None and not isinstance(site, str):
        raise CredentialsFileError(f"{path}: site must be a string (the site id)")
    creds = SiteCredentials(site=site)
    for key, value in data.items():
        if key == "site":
            continue
        if key in SINGLE_ACCOUNTS:
            creds.single[key] = _account(path, key, value)
        elif key in ACCOUNT_GROUPS:
            if not isinstance(value, dict):
                raise CredentialsFileError(f"{path}: [{key}] must be tables [{key}.<id>]")
            group = creds.group(key)
            for ident, account in value.items():
                group[ident] = _account(path, f"{key}.{ident}", account)
        else:
            known = ", ".join([*SINGLE_ACCOUNTS, *ACCOUNT_GROUPS])
            raise CredentialsFileError(f"{path}: unknown table [{key}] (known: {known})")
    return creds


def read_credentials_file(path: str | Path) -> SiteCredentials:
    """Read and validate a credentials file; :class:`CredentialsFileError` naming the file and the problem."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise CredentialsFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise CredentialsFileError(f"{path}: not valid TOML: {exc}") from None
    return parse_credentials(path, data)
