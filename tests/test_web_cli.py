"""``cribwatch user`` and ``cribwatch device``: the first admin and the wall tablets, from the command line, into
the site's store (a process of its own, as an installer runs it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from argon2 import PasswordHasher

from gateway.store.accounts import AccountStore
from gateway.web.auth import token_hash
from tests.test_cli import cli_env

SITE = """
[site]
id = "cli-web"
label = "CLI web site"
demo = true

[store]
path = "{store}"

[web]
port = 8181

[[rooms]]
id = "room-1"
label = "Room 1"

  [[rooms.cribs]]
  id = "c-1"
  label = "Crib 1"
  sensor_id = "s-1"
"""


def cribwatch(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        env=cli_env(None),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_user_add_makes_the_first_admin_with_an_argon2_hash(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    store = tmp_path / "site.sqlite3"
    site.write_text(SITE.format(store=store), encoding="utf-8")
    added = cribwatch(
        "user",
        "add",
        "a001",
        "--config",
        str(site),
        "--role",
        "admin",
        "--password-stdin",
        stdin="a long enough password\n",
    )
    assert added.returncode == 0, added.stderr
    again = cribwatch("user", "add", "a001", "--config", str(site), "--password-stdin", stdin="another password!\n")
    assert (again.returncode, "exists already" in again.stderr) == (2, True)
    short = cribwatch("user", "add", "m002", "--config", str(site), "--password-stdin", stdin="short\n")
    assert (short.returncode, "at least 10" in short.stderr) == (2, True)
    named = cribwatch("user", "add", "Anna de Vries", "--config", str(site), "--password-stdin", stdin="x" * 12)
    assert (named.returncode, "staff id" in named.stderr) == (2, True)
    pin = cribwatch("user", "pin", "a001", "--config", str(site), "--password-stdin", stdin="4711\n")
    assert pin.returncode == 0, pin.stderr
    assert cribwatch("user", "pin", "a001", "--config", str(site), "--password-stdin", stdin="47\n").returncode == 2
    assert cribwatch("user", "pin", "zz9", "--config", str(site), "--password-stdin", stdin="4711\n").returncode == 1
    listed = cribwatch("user", "list", "--config", str(site))
    assert listed.stdout.split() == ["a001", "admin"]
    accounts = AccountStore.open(store, site_id="cli-web")
    try:
        user = accounts.user("a001")
        assert user is not None
        assert user.role == "admin"
        assert PasswordHasher().verify(user.password_hash, "a long enough password")
        assert user.pin_hash is not None
        assert PasswordHasher().verify(user.pin_hash, "4711")
    finally:
        accounts.close()


def test_device_add_prints_the_tablets_address_once_and_remove_withdraws_it(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    store = tmp_path / "site.sqlite3"
    site.write_text(SITE.format(store=store), encoding="utf-8")
    wrong = cribwatch("device", "add", "wall-1", "--config", str(site), "--room", "nope")
    assert (wrong.returncode, "room-1" in wrong.stderr) == (2, True)
    added = cribwatch("device", "add", "wall-1", "--config", str(site), "--room", "room-1")
    assert added.returncode == 0, added.stderr
    url = added.stdout.split()[-1]
    assert url.startswith("http://127.0.0.1:8181/device/")
    token = url.rsplit("/", 1)[1]
    accounts = AccountStore.open(store, site_id="cli-web")
    try:
        device = accounts.device(token_hash(token))
        assert device is not None
        assert device.room_id == "room-1"
        assert token.encode() not in store.read_bytes() + Path(f"{store}-wal").read_bytes()
    finally:
        accounts.close()
    assert cribwatch("device", "list", "--config", str(site)).stdout.split() == ["wall-1", "room-1"]
    assert cribwatch("device", "remove", "wall-1", "--config", str(site)).returncode == 0
    assert cribwatch("device", "remove", "wall-1", "--config", str(site)).returncode == 1
