"""The web app: the staff alarm board, the technician console and the login (docs/web.md).

``create_app`` takes its collaborators as arguments (the gateway behind :class:`GatewayPort`, the accounts, the
board's wake-up, the clock): nothing is built at import time. Every route declares the roles it admits in its
OpenAPI ``x-roles`` (``anonymous`` for the login page); :class:`Access` enforces them, and a test walks every route
with every other role.

Calls into the gateway (snapshot, acknowledge, commands) run in ``async`` handlers, on the event loop's thread
where the core lives; the accounts (SQLite, argon2) in FastAPI's worker threads, never on the loop.
"""

import asyncio
import json
import secrets
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field

from gateway.domain.events import AckRequest, Outcome
from gateway.settings import Settings, WebConfig
from gateway.store.accounts import AccountStore
from gateway.web import admin as admin_pages
from gateway.web import helping as helping_pages
from gateway.web import incidents as incident_pages
from gateway.web.auth import (
    ACKNOWLEDGERS,
    BOARD_VIEWERS,
    EVERYONE,
    TECHNICIANS,
    Role,
    Throttle,
    burn_time,
    new_token,
    token_hash,
    verify_password,
)
from gateway.web.i18n import LANGUAGES, Translator, catalogue, pick_language
from gateway.web.kit import Principal, WebKit, check_csrf
from gateway.web.live import BoardChanges, GatewayPort, board_state

HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "cw_session"
DEVICE_COOKIE = "cw_device"
"""A wall tablet's device token (set by visiting ``/device/<token>`` once)."""
TABLETS = "device"
"""The ``x-roles`` entry of the routes a wall tablet may use."""
LOGIN_COOKIE = "cw_login"
"""The login form's CSRF token (double submit: the cookie and the form field must match)."""
HEARTBEAT_S = 5.0
"""An open board hears from the server at least this often; its watchdog shows "connection lost" after 3 missed."""
RETRY_MS = 2000
"""How soon a board's EventSource reconnects after losing the stream."""
ANONYMOUS = "anonymous"
BOARD_DEVICE = "web-board"
"""The ``device`` of an acknowledgement from the board (the ``by`` is the logged-in staff id)."""
MAX_MAINTENANCE_H = 24 * 14

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


class AckIn(BaseModel):
    """An acknowledgement from a wall tablet names the person (a staff id picked on the tablet)."""

    by: str | None = Field(default=None, max_length=64)
    pin: str | None = Field(default=None, max_length=16)
    """The person's PIN, where the site asks for one (``[web] tablet_pin``)."""


class MaintenanceIn(BaseModel):
    on: bool
    reason: str = Field(default="", max_length=200)
    hours: float = Field(default=4.0, gt=0, le=MAX_MAINTENANCE_H)


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


class Access:
    """The dependency that lets a route's roles in: 401 without a login (an HTML page redirects to /login), 403
    for another role, 403 for a POST without the session's CSRF token (header ``X-CSRF-Token`` or form ``csrf``)."""

    def __init__(
        self, roles: frozenset[Role], accounts: AccountStore, now: Callable[[], float], *, tablets: bool = False
    ) -> None:
        self.roles = roles
        self.accounts = accounts
        self.now = now
        self.tablets = tablets
        """A wall tablet's device token is let in too (the board routes of its room)."""

    def __call__(self, request: Request) -> Principal:  # sync: FastAPI runs it in a worker thread (SQLite)
        token = request.cookies.get(SESSION_COOKIE)
        device_token = request.cookies.get(DEVICE_COOKIE)
        if token is None and device_token is not None:
            device = self.accounts.device(token_hash(device_token))
            if device is None:
                raise HTTPException(status_code=401, detail="this tablet's token is unknown or withdrawn")
            if not self.tablets:
                raise HTTPException(status_code=403, detail="a wall tablet shows its room's board only")
            return Principal(f"device:{device.name}", None, device.csrf, "", device=device.name, room=device.room_id)
        session = self.accounts.session(token_hash(token), self.now()) if token else None
        user = self.accounts.user(session.username) if session else None
        if session is None or user is None or user.disabled:
            raise HTTPException(status_code=401, detail="login required")
        if user.role not in self.roles:
            raise HTTPException(status_code=403, detail="your role may not use this")
        return Principal(user.username, Role(user.role), session.csrf, token_hash(token or ""))


def _home_of(role: Role) -> str:
    """Where a role lands after logging in: technicians on the console, coordinators on the helping-hands requests,
    board viewers on the board."""
    if role == Role.TECHNICIAN:
        return "/console"
    if role == Role.COORDINATOR:
        return "/helping/requests"
    if role in BOARD_VIEWERS:
        return "/board"
    return "/welcome"


def _room_for(who: Principal, asked: str | None) -> str | None:
    """The room a board shows: a tablet's own room (403 for another), else the one asked for (None: the site)."""
    if who.room is None:
        return asked
    if asked not in (None, who.room):
        raise HTTPException(status_code=403, detail="this tablet shows its own room only")
    return who.room


class SecurityHeaders:
    """CSP without inline script, no framing, no sniffing, no referrer (plain ASGI: it leaves streams alone)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", CSP.encode()),
                    (b"x-frame-options", b"DENY"),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                ]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _answer(outcome: Outcome) -> dict[str, object]:
    return {
        "accepted": outcome.accepted,
        "reason": outcome.reason,
        "detail": outcome.detail,
        "alarm_ids": list(outcome.alarm_ids),
        "acknowledged_by": outcome.acknowledged_by,
    }


def create_app(  # noqa: PLR0915 - the routes are closures over the collaborators
    settings: Settings,
    gateway: GatewayPort,
    accounts: AccountStore,
    changes: BoardChanges,
    *,
    now: Callable[[], float] = time.time,
    throttle: Throttle | None = None,
) -> FastAPI:
    """The web app of one site. ``settings.web`` must be set (its cookies, sessions and throttling)."""
    web = settings.web or WebConfig()
    throttle = throttle or Throttle(web.login_failures, window_s=web.lockout_s, lockout_s=web.lockout_s)
    battery_low = settings.alarms.battery_low_pct
    rooms = [(room.id, room.label) for room in settings.rooms]
    package_version = _package_version()
    app = FastAPI(title="cribwatch", version="1", docs_url="/api/docs", redoc_url=None, openapi_url="/api/openapi.json")
    app.state.throttle = throttle
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    templates = Jinja2Templates(directory=HERE / "templates")

    def access(roles: frozenset[Role], *, tablets: bool = False) -> Any:
        return Depends(Access(roles, accounts, now, tablets=tablets))

    def roles_of(roles: frozenset[Role] | None, *, tablets: bool = False) -> dict[str, Any]:
        if roles is None:
            return {"x-roles": [ANONYMOUS]}
        return {"x-roles": sorted(r.value for r in roles) + ([TABLETS] if tablets else [])}

    def lang_of(request: Request) -> str:
        return pick_language(request.cookies.get("lang"), request.headers.get("accept-language"))

    def page(request: Request, name: str, principal: Principal | None, **context: object) -> HTMLResponse:
        lang = lang_of(request)
        return templates.TemplateResponse(
            request,
            name,
            {
                "t": Translator(lang),
                "lang": lang,
                "languages": LANGUAGES,
                "user": principal,
                "site_name": settings.site.label,
                "messages_json": json.dumps(catalogue(lang)),
                **context,
            },
        )

    @app.exception_handler(HTTPException)
    async def _errors(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 401 and not _is_api(request) and request.method == "GET":
            return RedirectResponse("/login", status_code=303)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    # ------------------------------------------------------------------------------------------ login

    @app.get("/login", response_class=HTMLResponse, openapi_extra=roles_of(None))
    def login_page(request: Request) -> HTMLResponse:
        token = new_token()
        response = page(request, "login.html", None, csrf=token, error=None)
        response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="strict", secure=web.secure_cookies)
        return response

    @app.post("/login", response_class=HTMLResponse, openapi_extra=roles_of(None))
    def login(
        request: Request,
        username: Annotated[str, Form(max_length=64)],
        password: Annotated[str, Form(max_length=256)],
        csrf: Annotated[str, Form(max_length=128)],
    ) -> Response:
        expected = request.cookies.get(LOGIN_COOKIE)
        if not expected or not secrets.compare_digest(expected, csrf):
            raise HTTPException(status_code=403, detail="missing or wrong CSRF token: reload the login page")
        address = request.client.host if request.client else "unknown"
        keys = [f"user:{username}", f"addr:{address}"]
        at = now()
        t = Translator(lang_of(request))
        wait = throttle.locked(keys, at)
        if wait is not None:
            response = page(
                request, "login.html", None, csrf=csrf, error=t("login.locked", minutes=int(wait // 60) + 1)
            )
            response.status_code = 429
            return response
        user = accounts.user(username)
        if user is None or user.disabled:
            burn_time(password)
            ok, rehash = False, None
        else:
            ok, rehash = verify_password(user.password_hash, password)
        if not ok or user is None:
            throttle.failed(keys, at)
            response = page(request, "login.html", None, csrf=csrf, error=t("login.wrong"))
            response.status_code = 401
            return response
        throttle.succeeded(keys[0])
        if rehash is not None:
            accounts.set_password_hash(user.username, rehash)
        token = new_token()
        accounts.add_session(token_hash(token), user.username, new_token(), at, at + web.session_hours * 3600.0)
        accounts.prune_sessions(at)
        redirect = RedirectResponse(_home_of(Role(user.role)), status_code=303)
        redirect.set_cookie(
            SESSION_COOKIE,
            token,
            max_age=int(web.session_hours * 3600),
            httponly=True,
            samesite="strict",
            secure=web.secure_cookies,
        )
        redirect.delete_cookie(LOGIN_COOKIE)
        return redirect

    @app.post("/logout", openapi_extra=roles_of(EVERYONE))
    async def logout(request: Request, who: Annotated[Principal, access(EVERYONE)]) -> Response:
        await check_csrf(request, who)
        await asyncio.to_thread(accounts.end_session, who.token_hash)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    @app.get("/lang/{code}", openapi_extra=roles_of(None))
    def switch_language(code: str, request: Request) -> Response:
        if code not in LANGUAGES:
            raise HTTPException(status_code=404, detail=f"no language {code!r}")
        back = request.headers.get("referer") or "/"
        response = RedirectResponse(back if back.startswith("/") else "/", status_code=303)
        response.set_cookie("lang", code, max_age=365 * 86400, samesite="strict", secure=web.secure_cookies)
        return response

    @app.get("/", openapi_extra=roles_of(EVERYONE))
    def home(who: Annotated[Principal, access(EVERYONE)]) -> Response:
        return RedirectResponse(_home_of(who.role) if who.role else "/board", status_code=303)

    @app.get("/welcome", response_class=HTMLResponse, openapi_extra=roles_of(EVERYONE))
    def welcome(request: Request, who: Annotated[Principal, access(EVERYONE)]) -> HTMLResponse:
        return page(request, "welcome.html", who)

    # ------------------------------------------------------------------------------------------ the board

    @app.get("/device/{token}", openapi_extra=roles_of(None))
    def device_login(token: str) -> Response:
        """A wall tablet's one visit with its token (``cribwatch device add``): the token goes into a long-lived
        cookie, and the tablet shows its room's board from then on."""
        device = accounts.device(token_hash(token))
        if device is None:
            raise HTTPException(status_code=404, detail="unknown or withdrawn device token")
        response = RedirectResponse(f"/board?room={device.room_id}", status_code=303)
        response.set_cookie(
            DEVICE_COOKIE, token, max_age=10 * 365 * 86400, httponly=True, samesite="strict", secure=web.secure_cookies
        )
        response.delete_cookie(SESSION_COOKIE)
        return response

    @app.get("/board", response_class=HTMLResponse, openapi_extra=roles_of(BOARD_VIEWERS, tablets=True))
    def board_page(
        request: Request, who: Annotated[Principal, access(BOARD_VIEWERS, tablets=True)], room: str | None = None
    ) -> HTMLResponse:
        if room is not None and room not in {r for r, _ in rooms}:
            raise HTTPException(status_code=404, detail=f"no room {room!r}")
        room = _room_for(who, room)
        shown = rooms if who.room is None else [(r, label) for r, label in rooms if r == who.room]
        can_ack = who.device is not None or who.role in ACKNOWLEDGERS
        return page(request, "board.html", who, room=room, rooms=shown, can_ack=can_ack, ask_pin=web.tablet_pin)

    @app.get("/api/board", openapi_extra=roles_of(BOARD_VIEWERS, tablets=True))
    async def board_json(
        who: Annotated[Principal, access(BOARD_VIEWERS, tablets=True)], room: str | None = None
    ) -> dict[str, object]:
        room = _room_for(who, room)
        return board_state(
            gateway.snapshot(), battery_low_pct=battery_low, room=room, broker=gateway.broker_connected()
        )

    @app.get("/api/board/people", openapi_extra=roles_of(frozenset(), tablets=True))
    def board_people(who: Annotated[Principal, access(frozenset(), tablets=True)]) -> dict[str, object]:
        """The staff ids a wall tablet offers to pick from when someone acknowledges."""
        people = [u.username for u in accounts.users() if not u.disabled and u.role in ACKNOWLEDGERS]
        return {"people": people}

    rendered: dict[str | None, tuple[tuple[int, bool], str]] = {}
    """The last state event per room and the version it was made at: one snapshot per change, however many
    boards are open."""

    def state_event(version: int, room: str | None) -> str:
        key = (version, gateway.broker_connected())
        cached = rendered.get(room)
        if cached is not None and cached[0] == key:
            return cached[1]
        state = board_state(gateway.snapshot(), battery_low_pct=battery_low, room=room, broker=key[1])
        text = f"event: state\ndata: {json.dumps(state)}\n\n"
        rendered[room] = (key, text)
        return text

    @app.get("/api/board/events", openapi_extra=roles_of(BOARD_VIEWERS, tablets=True))
    async def board_events(
        request: Request, who: Annotated[Principal, access(BOARD_VIEWERS, tablets=True)], room: str | None = None
    ) -> StreamingResponse:
        room = _room_for(who, room)
        still_allowed = Access(BOARD_VIEWERS, accounts, now, tablets=True)

        async def stream() -> AsyncIterator[str]:
            loop = asyncio.get_running_loop()
            yield f"retry: {RETRY_MS}\n\n"
            seen: int | None = None
            broker = gateway.broker_connected()
            checked = loop.time()
            while not changes.closed:
                version = changes.version
                if version != seen or broker != gateway.broker_connected():
                    # the whole state: first, after every change, and so after every reconnect
                    seen, broker = version, gateway.broker_connected()
                    yield state_event(version, room)
                quiet = await changes.wait(seen, HEARTBEAT_S) == seen and broker == gateway.broker_connected()
                if loop.time() - checked >= HEARTBEAT_S:
                    checked = loop.time()
                    try:  # a logout, an expired session, a disabled account or a removed tablet ends the stream
                        await asyncio.to_thread(still_allowed, request)
                    except HTTPException:
                        return
                if quiet:
                    yield f"event: ping\ndata: {now()}\n\n"

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"cache-control": "no-store", "x-accel-buffering": "no"}
        )

    @app.post("/api/alarms/{alarm_id}/ack", openapi_extra=roles_of(ACKNOWLEDGERS, tablets=True))
    async def acknowledge(
        alarm_id: str,
        request: Request,
        who: Annotated[Principal, access(ACKNOWLEDGERS, tablets=True)],
        picked: AckIn | None = None,
    ) -> JSONResponse:
        await check_csrf(request, who)
        by, device = who.username, BOARD_DEVICE
        if who.device is not None:  # a wall tablet: the person picked their staff id; the record says both
            by, device = await _tablet_ack(alarm_id, who, picked)
        outcome = gateway.acknowledge(AckRequest(by=by, device=device, alarm_id=alarm_id))
        body = _answer(outcome)
        if outcome.accepted:
            body["result"] = "yours"
            return JSONResponse(body)
        if outcome.reason == "ack_again":
            body["result"] = "taken"
            return JSONResponse(body, status_code=409)
        body["result"] = "refused"
        return JSONResponse(body, status_code=404 if outcome.reason == "ack_unknown_alarm" else 409)

    async def _tablet_ack(alarm_id: str, who: Principal, body: AckIn | None) -> tuple[str, str]:
        if body is None or not body.by:
            raise HTTPException(status_code=422, detail="pick your staff id to acknowledge on a shared tablet")
        person = await asyncio.to_thread(accounts.user, body.by)
        if person is None or person.disabled or person.role not in ACKNOWLEDGERS:
            raise HTTPException(status_code=422, detail=f"{body.by!r} is not a staff id that may acknowledge")
        rooms_of = {a.alarm_id: view.state.room_id for view in gateway.snapshot().cribs for a in view.state.alarms}
        if rooms_of.get(alarm_id, who.room) != who.room:
            raise HTTPException(status_code=403, detail="this tablet acknowledges its own room's alarms only")
        if web.tablet_pin:
            await _check_pin(person.username, person.pin_hash, body.pin or "")
        return person.username, f"tablet-{who.device}"

    async def _check_pin(username: str, pin_hash: str | None, pin: str) -> None:
        """The site asks for a personal PIN on shared tablets: wrong PINs are throttled per account."""
        if pin_hash is None:
            raise HTTPException(status_code=422, detail=f"{username} has no PIN yet: ask the manager to set one")
        keys = [f"pin:{username}"]
        if throttle.locked(keys, now()) is not None:
            raise HTTPException(status_code=429, detail="too many wrong PINs: wait a few minutes, or use your pager")
        ok, _ = await asyncio.to_thread(verify_password, pin_hash, pin)
        if not ok:
            throttle.failed(keys, now())
            raise HTTPException(status_code=403, detail="wrong PIN")
        throttle.succeeded(keys[0])

    # ------------------------------------------------------------------------------------------ the console

    @app.get("/console", response_class=HTMLResponse, openapi_extra=roles_of(TECHNICIANS))
    def console_page(request: Request, who: Annotated[Principal, access(TECHNICIANS)]) -> HTMLResponse:
        return page(request, "console.html", who)

    @app.get("/api/console", openapi_extra=roles_of(TECHNICIANS))
    async def console_json(who: Annotated[Principal, access(TECHNICIANS)]) -> dict[str, object]:
        snap = gateway.snapshot()
        sensors = []
        for view in snap.cribs:
            st, h = view.state, view.health
            sensors.append(
                {
                    "crib_id": st.crib_id,
                    "crib_label": st.crib_label,
                    "room_label": st.room_label,
                    "sensor": view.sensor_key,
                    "wired": view.wired,
                    "online": h.online,
                    "last_seen": h.last_seen,
                    "battery_pct": h.battery_pct,
                    "rssi_dbm": h.rssi_dbm,
                    "firmware": h.firmware,
                    "refused": h.refused,
                    "flaps": h.flaps,
                    "offline_periods": h.offline_periods,
                    "quick_resolves": h.quick_resolves,
                    "maintenance": None
                    if st.maintenance is None
                    else {"reason": st.maintenance.reason, "until": st.maintenance.until, "by": st.maintenance.by},
                    "open_alarms": len(st.alarms),
                }
            )
        stats = gateway.stats_payload()
        vitals = gateway.vitals()
        return {
            "at": snap.at,
            "sensors": sensors,
            "gateway": {
                "version": package_version,
                "started_at": vitals.started_at,
                "uptime_s": round(max(0.0, now() - vitals.started_at), 1),
                "broker": gateway.broker_connected(),
                "mqtt_outbox": vitals.mqtt_outbox,
                "alert_latency_ms": _latency_ms(vitals.alert_latencies_s),
            },
            "stats": json.loads(stats.model_dump_json()),
            "logins_refused": throttle.refused,
        }

    @app.post("/api/cribs/{crib}/test-alarm", openapi_extra=roles_of(TECHNICIANS))
    async def test_alarm(crib: str, request: Request, who: Annotated[Principal, access(TECHNICIANS)]) -> JSONResponse:
        await check_csrf(request, who)
        outcome = gateway.test_alarm(crib, by=who.username)
        detail = json.dumps({"crib": crib, "result": "accepted" if outcome.accepted else outcome.reason})
        gateway.audit(now(), who.username, "web", "test_alarm", detail)
        return JSONResponse(_answer(outcome), status_code=_command_status(outcome))

    @app.post("/api/cribs/{crib}/maintenance", openapi_extra=roles_of(TECHNICIANS))
    async def maintenance(
        crib: str, body: MaintenanceIn, request: Request, who: Annotated[Principal, access(TECHNICIANS)]
    ) -> JSONResponse:
        await check_csrf(request, who)
        if body.on:
            reason = body.reason.strip()
            if not reason:
                raise HTTPException(status_code=422, detail="a reason is needed to put a crib in maintenance")
            until = now() + body.hours * 3600.0
            outcome = gateway.maintenance_on(crib, reason=reason, until=until, by=who.username)
            detail = {"crib": crib, "reason": reason, "until": until}
        else:
            outcome = gateway.maintenance_off(crib, by=who.username)
            detail = {"crib": crib}
        detail["result"] = "accepted" if outcome.accepted else outcome.reason
        action = "maintenance_on" if body.on else "maintenance_off"
        gateway.audit(now(), who.username, "web", action, json.dumps(detail, sort_keys=True))
        return JSONResponse(_answer(outcome), status_code=_command_status(outcome))

    kit = WebKit(settings, web, gateway, accounts, templates, now, access, roles_of, page, lang_of)
    admin_pages.register(app, kit)
    helping_pages.register(app, kit)
    incident_pages.register(app, kit)

    return app


def _package_version() -> str:
    try:
        return version("cribwatch")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _latency_ms(latencies_s: tuple[float, ...]) -> dict[str, object] | None:
    """The latest alarms' latencies: how many, the last, the median and the worst (ms); None before any alarm."""
    if not latencies_s:
        return None
    return {
        "n": len(latencies_s),
        "last": round(latencies_s[-1] * 1e3, 1),
        "p50": round(statistics.median(latencies_s) * 1e3, 1),
        "max": round(max(latencies_s) * 1e3, 1),
    }


def _command_status(outcome: Outcome) -> int:
    if outcome.accepted:
        return 200
    return 404 if outcome.reason == "unknown_crib" else 409


def wrap(app: FastAPI) -> SecurityHeaders:
    """The app as served: with its security headers."""
    return SecurityHeaders(app)
