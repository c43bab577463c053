"""The web app's accounts and logins in the site's store (schema version 3, docs/web.md).

One connection of its own, shared by the web app's worker threads under a lock; the gateway's writer thread never
touches these tables. Passwords arrive here already hashed (argon2, in gateway.web.auth) and session tokens as their
SHA-256: the file holds neither a password nor a token that would let anyone log in.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from gateway.store.store import Store

ROLES = ("staff", "manager", "technician", "coordinator", "admin")


@dataclass(frozen=True, slots=True)
class UserRow:
    username: str
    role: str
    password_hash: str
    created_at: float
    disabled: bool
    pin_hash: str | None = None
    """The personal PIN's argon2 hash (for acknowledging on a shared wall tablet), if one is set."""


@dataclass(frozen=True, slots=True)
class SessionRow:
    username: str
    csrf: str
    created_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class DeviceRow:
    name: str
    room_id: str
    csrf: str
    created_at: float


class AccountExistsError(Exception):
    """An account of that name exists already."""


class AccountStore:
    """Users and web sessions. Build it with :meth:`open`; safe to call from several threads."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._conn = store.connection
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: Path | str, *, site_id: str) -> AccountStore:
        """Open (create, migrate) the site's store for its accounts (StoreError as :meth:`Store.open`)."""
        return cls(Store.open(path, site_id=site_id))

    @property
    def path(self) -> Path:
        """The site's SQLite file."""
        return self._store.path

    def close(self) -> None:
        with self._lock:
            self._store.close()

    # ------------------------------------------------------------------------------------------ users

    def add_user(self, username: str, role: str, password_hash: str, at: float) -> None:
        if role not in ROLES:
            raise ValueError(f"role {role!r}: expected one of {', '.join(ROLES)}")
        with self._lock:
            try:
                self._conn.execute(
                    "INSERT INTO users (username, role, password_hash, created_at) VALUES (?, ?, ?, ?)",
                    (username, role, password_hash, at),
                )
            except sqlite3.IntegrityError as exc:
                raise AccountExistsError(f"an account {username!r} exists already") from exc

    def user(self, username: str) -> UserRow | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT username, role, password_hash, created_at, disabled, pin_hash FROM users WHERE username = ?",
                (username,),
            ).fetchone()
        return None if row is None else UserRow(row[0], row[1], row[2], row[3], bool(row[4]), row[5])

    def users(self) -> list[UserRow]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT username, role, password_hash, created_at, disabled FROM users ORDER BY username"
            ).fetchall()
        return [UserRow(r[0], r[1], r[2], r[3], bool(r[4])) for r in rows]

    def set_pin_hash(self, username: str, pin_hash: str) -> bool:
        with self._lock:
            return (
                self._conn.execute("UPDATE users SET pin_hash = ? WHERE username = ?", (pin_hash, username)).rowcount
                > 0
            )

    def set_password_hash(self, username: str, password_hash: str) -> None:
        """A new hash (argon2's rehash on login, or a password change)."""
        with self._lock:
            self._conn.execute("UPDATE users SET password_hash = ? WHERE username = ?", (password_hash, username))

    def set_role(self, username: str, role: str) -> bool:
        """Give an account another role (its open sessions carry on with it at their next request); False when
        there is no such account."""
        if role not in ROLES:
            raise ValueError(f"role {role!r}: expected one of {', '.join(ROLES)}")
        with self._lock:
            return self._conn.execute("UPDATE users SET role = ? WHERE username = ?", (role, username)).rowcount > 0

    # ------------------------------------------------------------------------------------------ sessions

    def end_sessions_of(self, username: str, *, keep: str | None = None) -> int:
        """End an account's sessions (after its password changed), all but the one whose token hash is ``keep``."""
        with self._lock:
            return self._conn.execute(
                "DELETE FROM web_sessions WHERE username = ? AND token_hash IS NOT ?", (username, keep)
            ).rowcount

    def add_session(self, token_hash: str, username: str, csrf: str, at: float, expires_at: float) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT INTO web_sessions (token_hash, username, csrf, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
                (token_hash, username, csrf, at, expires_at),
            )

    def session(self, token_hash: str, now: float) -> SessionRow | None:
        """The live session of that token (None: unknown or expired)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT username, csrf, created_at, expires_at FROM web_sessions WHERE token_hash = ? "
                "AND expires_at > ?",
                (token_hash, now),
            ).fetchone()
        return None if row is None else SessionRow(row[0], row[1], row[2], row[3])

    def end_session(self, token_hash: str) -> None:
        with self._lock:
            self._conn.execute("DELETE FROM web_sessions WHERE token_hash = ?", (token_hash,))

    def prune_sessions(self, now: float) -> int:
        with self._lock:
            return self._conn.execute("DELETE FROM web_sessions WHERE expires_at <= ?", (now,)).rowcount

    # ------------------------------------------------------------------------------------------ wall tablets

    def add_device(self, token_hash: str, name: str, room_id: str, csrf: str, at: float) -> None:
        with self._lock:
            try:
                self._conn.execute(
                    "INSERT INTO web_devices (token_hash, name, room_id, csrf, created_at) VALUES (?, ?, ?, ?, ?)",
                    (token_hash, name, room_id, csrf, at),
                )
            except sqlite3.IntegrityError as exc:
                raise AccountExistsError(f"a device {name!r} exists already") from exc

    def device(self, token_hash: str) -> DeviceRow | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT name, room_id, csrf, created_at FROM web_devices WHERE token_hash = ?", (token_hash,)
            ).fetchone()
        return None if row is None else DeviceRow(row[0], row[1], row[2], row[3])

    def devices(self) -> list[DeviceRow]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT name, room_id, csrf, created_at FROM web_devices ORDER BY name"
            ).fetchall()
        return [DeviceRow(r[0], r[1], r[2], r[3]) for r in rows]

    def remove_device(self, name: str) -> bool:
        with self._lock:
            return self._conn.execute("DELETE FROM web_devices WHERE name = ?", (name,)).rowcount > 0

    def set_disabled(self, username: str, *, disabled: bool) -> bool:
        """Disable an account (its sessions end) or enable it again; False when there is no such account."""
        with self._lock:
            changed = self._conn.execute(
                "UPDATE users SET disabled = ? WHERE username = ?", (int(disabled), username)
            ).rowcount
            if disabled:
                self._conn.execute("DELETE FROM web_sessions WHERE username = ?", (username,))
        return changed > 0
