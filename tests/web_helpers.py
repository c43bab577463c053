"""Builders for the web app's tests: a site with ``[web]``, its accounts (one per role), and a logged-in client."""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient

from gateway.store.accounts import AccountStore
from gateway.web.app import LOGIN_COOKIE
from gateway.web.auth import Role, hash_password

PASSWORD = "correct horse battery"
USERS = {role: f"{role.value[:4]}01" for role in Role}
"""One account per role, named as staff ids (``staf01``, ``mana01``, ``tech01``, ``coor01``, ``admi01``)."""


def add_users(accounts: AccountStore, at: float = 0.0) -> None:
    hashed = hash_password(PASSWORD)  # one hash for all: argon2 is slow on purpose
    for role, name in USERS.items():
        accounts.add_user(name, role.value, hashed, at)


def login(client: TestClient, username: str, password: str = PASSWORD, **headers: str) -> Any:
    """Log in through the form, as a browser does (the login page's CSRF cookie and field)."""
    page = client.get("/login", headers=headers)
    token = page.cookies.get(LOGIN_COOKIE) or client.cookies.get(LOGIN_COOKIE)
    assert token, "the login page sets its CSRF cookie"
    assert f'value="{token}"' in page.text
    return client.post(
        "/login",
        data={"username": username, "password": password, "csrf": token},
        headers=headers,
        follow_redirects=False,
    )


def csrf_of(client: TestClient) -> str:
    """The session's CSRF token, read from a page as the board's script reads it."""
    page = client.get("/welcome")
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text[:500]
    return found.group(1)
