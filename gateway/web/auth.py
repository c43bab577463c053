"""Accounts, roles, passwords and login throttling for the web app (docs/web.md).

Passwords are hashed with argon2id (argon2-cffi's defaults, rehashed on login when they change). The throttle is
pure: it is given the time, and remembers failures per account and per address.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
from collections import deque
from enum import StrEnum

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError


class Role(StrEnum):
    STAFF = "staff"
    MANAGER = "manager"
    TECHNICIAN = "technician"
    COORDINATOR = "coordinator"
    ADMIN = "admin"


BOARD_VIEWERS = frozenset({Role.STAFF, Role.MANAGER, Role.TECHNICIAN, Role.ADMIN})
"""Who may look at the alarm board (a coordinator works for the city, not in a room)."""
ACKNOWLEDGERS = frozenset({Role.STAFF, Role.MANAGER, Role.ADMIN})
"""Who may acknowledge an alarm from the board (the people who go to the crib)."""
TECHNICIANS = frozenset({Role.TECHNICIAN, Role.ADMIN})
"""Who may open the technician console, run a test alarm, or put a crib in maintenance."""
EVERYONE = frozenset(Role)
ADMINS = frozenset({Role.ADMIN})
"""Who may manage accounts and tablets."""

STAFF_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""An account's name: a staff id such as ``m042`` (never a person's name); a tablet's name alike."""

MIN_PASSWORD = 10
"""The shortest password an account may have."""

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"a password needs at least {MIN_PASSWORD} characters")
    return _hasher.hash(password)


PIN = re.compile(r"[0-9]{4,8}")
"""A personal PIN for a shared wall tablet: 4 to 8 digits."""


def hash_pin(pin: str) -> str:
    if not PIN.fullmatch(pin):
        raise ValueError("a PIN has 4 to 8 digits")
    return _hasher.hash(pin)


def verify_password(password_hash: str, password: str) -> tuple[bool, str | None]:
    """(matches, a new hash to store when argon2's parameters changed since this one was made)."""
    try:
        _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False, None
    return True, _hasher.hash(password) if _hasher.check_needs_rehash(password_hash) else None


def burn_time(password: str) -> None:
    """As long as a check of a real account: an unknown name answers no faster than a wrong password."""
    verify_password(_DUMMY_HASH, password)


_DUMMY_HASH = _hasher.hash(secrets.token_hex(8))


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Throttle:
    """Failed logins per key (``user:<name>``, ``addr:<ip>``): ``limit`` failures within ``window_s`` lock the key
    for ``lockout_s``. Pure: every call is given the time."""

    def __init__(self, limit: int, window_s: float, lockout_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self.lockout_s = lockout_s
        self._failures: dict[str, deque[float]] = {}
        self._locked_until: dict[str, float] = {}
        self._lock = threading.Lock()  # logins are checked in the web app's worker threads
        self.refused = 0
        """Logins refused because their account or address was locked (shown in the console's health)."""

    def locked(self, keys: list[str], now: float) -> float | None:
        """Seconds until the last of ``keys`` unlocks, or None when none is locked."""
        with self._lock:
            return self._locked(keys, now)

    def _locked(self, keys: list[str], now: float) -> float | None:
        waits = [until - now for key in keys if (until := self._locked_until.get(key, 0.0)) > now]
        if waits:
            self.refused += 1
            return max(waits)
        return None

    def failed(self, keys: list[str], now: float) -> None:
        with self._lock:
            self._failed(keys, now)

    def _failed(self, keys: list[str], now: float) -> None:
        for key in keys:
            seen = self._failures.setdefault(key, deque())
            seen.append(now)
            while seen and seen[0] <= now - self.window_s:
                seen.popleft()
            if len(seen) >= self.limit:
                self._locked_until[key] = now + self.lockout_s
                seen.clear()
        if len(self._failures) > 10_000:  # many addresses: forget the quiet ones
            for key in [k for k, v in self._failures.items() if not v]:
                del self._failures[key]

    def succeeded(self, user_key: str) -> None:
        """A good password clears its account's failures (never an address's: one good login must not unlock
        an address that guesses other accounts)."""
        with self._lock:
            self._failures.pop(user_key, None)
