"""What the web app's page modules share: the logged-in :class:`Principal`, the :class:`WebKit` of collaborators
handed to each module's ``register(app, kit)``, and the CSRF check of every POST."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from gateway.settings import Settings, WebConfig
from gateway.store.accounts import AccountStore
from gateway.web.auth import Role
from gateway.web.live import GatewayPort


@dataclass(frozen=True, slots=True)
class Principal:
    """The logged-in person (a staff id, never a name, and a role), or a wall tablet (``device``: its name, and the
    one ``room`` whose board it may show; ``role`` None)."""

    username: str
    role: Role | None
    csrf: str
    token_hash: str
    device: str | None = None
    room: str | None = None


@dataclass(frozen=True, slots=True)
class WebKit:
    """What the pages of one app share: handed to each ``register(app, kit)`` of the page modules (``admin``,
    and the manager and coordinator pages), so each module adds its routes without touching :func:`create_app`."""

    settings: Settings
    web: WebConfig
    gateway: GatewayPort
    accounts: AccountStore
    templates: Jinja2Templates
    now: Callable[[], float]
    access: Callable[..., Any]
    """``access(roles, tablets=False)``: the dependency that lets those roles in (``Annotated[Principal, ...]``)."""
    roles_of: Callable[..., dict[str, Any]]
    """``roles_of(roles, tablets=False)``: the route's ``openapi_extra`` declaring them (``None``: anonymous)."""
    page: Callable[..., HTMLResponse]
    """``page(request, template, principal, **context)``: a page in the request's language."""
    lang_of: Callable[[Request], str]

    @property
    def store_path(self) -> Path:
        """The site's SQLite file (the accounts live in it; other pages open it themselves, read-only or not)."""
        return self.accounts.path


async def check_csrf(request: Request, principal: Principal) -> None:
    sent = request.headers.get("x-csrf-token")
    if sent is None and request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        sent = str((await request.form()).get("csrf", ""))
    if not sent or not secrets.compare_digest(sent, principal.csrf):
        raise HTTPException(status_code=403, detail="missing or wrong CSRF token: reload the page")
