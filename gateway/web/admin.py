"""The admin page (accounts: add, change the role, reset the password, enable, disable; wall tablets: add, remove),
for the ``admin`` role; and the page where every account changes its own password.

Every change is audited with the admin's staff id (source ``web``). An admin cannot demote, disable or reset their
own account here (another admin can; their own password they change on the password page, with the old one).
"""

import asyncio
import json
import secrets
from typing import Annotated

from fastapi import FastAPI, Form, HTTPException, Request
from fastapi.responses import HTMLResponse

from gateway.store.accounts import AccountExistsError
from gateway.web.auth import (
    ADMINS,
    EVERYONE,
    MIN_PASSWORD,
    STAFF_ID,
    Role,
    Throttle,
    hash_password,
    new_token,
    token_hash,
    verify_password,
)
from gateway.web.i18n import Translator
from gateway.web.kit import Principal, WebKit, check_csrf


def register(app: FastAPI, kit: WebKit) -> None:  # noqa: PLR0915 - the routes are closures over the kit
    rooms = {room.id: room.label for room in kit.settings.rooms}

    async def admin_page(
        request: Request,
        who: Principal,
        message: str | None = None,
        *,
        error: bool = False,
        tablet_link: str | None = None,
        **form: str,
    ) -> HTMLResponse:
        users, devices = await asyncio.to_thread(lambda: (kit.accounts.users(), kit.accounts.devices()))
        response = kit.page(
            request,
            "admin.html",
            who,
            accounts=users,
            devices=devices,
            roles=[r.value for r in Role],
            rooms=rooms,
            message=message,
            error=error,
            form=form,
            tablet_link=tablet_link,
        )
        if error:
            response.status_code = 422
        if tablet_link is not None:  # the token is shown once: no cache may keep it
            response.headers["cache-control"] = "no-store"
        return response

    def audit(who: Principal, action: str, **detail: str) -> None:
        kit.gateway.audit(kit.now(), who.username, "web", action, json.dumps(detail, sort_keys=True))

    @app.get("/admin", response_class=HTMLResponse, openapi_extra=kit.roles_of(ADMINS))
    async def admin(request: Request, who: Annotated[Principal, kit.access(ADMINS)]) -> HTMLResponse:
        return await admin_page(request, who)

    @app.post("/admin/users", response_class=HTMLResponse, openapi_extra=kit.roles_of(ADMINS))
    async def admin_add_user(
        request: Request,
        who: Annotated[Principal, kit.access(ADMINS)],
        username: Annotated[str, Form(max_length=64)],
        role: Annotated[Role, Form()],
        password: Annotated[str, Form(max_length=256)],
    ) -> HTMLResponse:
        await check_csrf(request, who)
        t = Translator(kit.lang_of(request))
        if not STAFF_ID.fullmatch(username):
            return await admin_page(request, who, t("admin.bad_name"), error=True, username=username, role=role)
        try:
            hashed = await asyncio.to_thread(hash_password, password)
            await asyncio.to_thread(kit.accounts.add_user, username, role.value, hashed, kit.now())
        except ValueError:
            return await admin_page(request, who, t("admin.short"), error=True, username=username, role=role)
        except AccountExistsError:
            return await admin_page(request, who, t("admin.exists"), error=True, username=username, role=role)
        audit(who, "account_added", account=username, role=role.value)
        return await admin_page(request, who, t("admin.added", name=username))

    # These two come before /admin/users/{username}/{action}: that one would take "role" and "password" as actions.
    @app.post("/admin/users/{username}/role", response_class=HTMLResponse, openapi_extra=kit.roles_of(ADMINS))
    async def admin_set_role(
        username: str,
        request: Request,
        who: Annotated[Principal, kit.access(ADMINS)],
        role: Annotated[Role, Form()],
    ) -> HTMLResponse:
        await check_csrf(request, who)
        t = Translator(kit.lang_of(request))
        if username == who.username:
            return await admin_page(request, who, t("admin.not_yourself"), error=True)
        if not await asyncio.to_thread(kit.accounts.set_role, username, role.value):
            raise HTTPException(status_code=404, detail=f"no account {username!r}")
        audit(who, "account_role_changed", account=username, role=role.value)
        return await admin_page(request, who, t("admin.role_changed", name=username, role=t(f"role.{role.value}")))

    @app.post("/admin/users/{username}/password", response_class=HTMLResponse, openapi_extra=kit.roles_of(ADMINS))
    async def admin_reset_password(
        username: str,
        request: Request,
        who: Annotated[Principal, kit.access(ADMINS)],
        password: Annotated[str, Form(max_length=256)],
    ) -> HTMLResponse:
        await check_csrf(request, who)
        t = Translator(kit.lang_of(request))
        if username == who.username:  # your own: on the password page, with the old one
            return await admin_page(request, who, t("admin.own_password"), error=True)
        if await asyncio.to_thread(kit.accounts.user, username) is None:
            raise HTTPException(status_code=404, detail=f"no account {username!r}")
        if len(password) < MIN_PASSWORD:
            return await admin_page(request, who, t("admin.short"), error=True)
        hashed = await asyncio.to_thread(hash_password, password)
        await asyncio.to_thread(kit.accounts.set_password_hash, username, hashed)
        await asyncio.to_thread(kit.accounts.end_sessions_of, username)  # whoever knew the old one is logged out
        audit(who, "account_password_reset", account=username)
        return await admin_page(request, who, t("admin.password_reset", name=username))

    @app.post("/admin/users/{username}/{action}", response_class=HTMLResponse, openapi_extra=kit.roles_of(ADMINS))
    async def admin_user_state(
        username: str, action: str, request: Request, who: Annotated[Principal, kit.access(ADMINS)]
    ) -> HTMLResponse:
        await check_csrf(request, who)
        t = Translator(kit.lang_of(request))
        if action not in {"enable", "disable"}:
            raise HTTPException(status_code=404, detail=f"no action {action!r}")
        if username == who.username:
            return await admin_page(request, who, t("admin.not_yourself"), error=True)
        if not await asyncio.to_thread(kit.accounts.set_disabled, username, disabled=action == "disable"):
            raise HTTPException(status_code=404, detail=f"no account {username!r}")
        audit(who, f"account_{action}d", account=username)
        return await admin_page(request, who, t("admin.changed", name=username))

    @app.post("/admin/devices", response_class=HTMLResponse, openapi_extra=kit.roles_of(ADMINS))
    async def admin_add_device(
        request: Request,
        who: Annotated[Principal, kit.access(ADMINS)],
        name: Annotated[str, Form(max_length=64)],
        room: Annotated[str, Form(max_length=64)],
    ) -> HTMLResponse:
        """A wall tablet for one room's board (as ``cribwatch device add``): its address with the token is shown on
        this answer only; the store keeps the token's SHA-256."""
        await check_csrf(request, who)
        t = Translator(kit.lang_of(request))
        form = {"tablet_name": name, "tablet_room": room}
        if not STAFF_ID.fullmatch(name):
            return await admin_page(request, who, t("admin.bad_tablet_name"), error=True, **form)
        if room not in rooms:
            return await admin_page(request, who, t("admin.bad_room"), error=True, **form)
        token = new_token()
        try:
            await asyncio.to_thread(
                kit.accounts.add_device, token_hash(token), name, room, secrets.token_urlsafe(32), kit.now()
            )
        except AccountExistsError:
            return await admin_page(request, who, t("admin.tablet_exists"), error=True, **form)
        audit(who, "tablet_added", tablet=name, room=room)
        link = f"{str(request.base_url).rstrip('/')}/device/{token}"
        return await admin_page(request, who, t("admin.tablet_added", name=name), tablet_link=link)

    @app.post("/admin/devices/{name}/remove", response_class=HTMLResponse, openapi_extra=kit.roles_of(ADMINS))
    async def admin_remove_device(
        name: str, request: Request, who: Annotated[Principal, kit.access(ADMINS)]
    ) -> HTMLResponse:
        await check_csrf(request, who)
        if not await asyncio.to_thread(kit.accounts.remove_device, name):
            raise HTTPException(status_code=404, detail=f"no tablet {name!r}")
        audit(who, "tablet_removed", tablet=name)
        return await admin_page(request, who, Translator(kit.lang_of(request))("admin.removed", name=name))

    # ------------------------------------------------------------------------------------------ your own password

    def password_page(
        request: Request, who: Principal, message: str | None = None, *, status: int = 200
    ) -> HTMLResponse:
        response = kit.page(request, "password.html", who, message=message, error=status != 200)
        response.status_code = status
        return response

    @app.get("/account/password", response_class=HTMLResponse, openapi_extra=kit.roles_of(EVERYONE))
    def own_password_page(request: Request, who: Annotated[Principal, kit.access(EVERYONE)]) -> HTMLResponse:
        return password_page(request, who)

    @app.post("/account/password", response_class=HTMLResponse, openapi_extra=kit.roles_of(EVERYONE))
    async def change_own_password(
        request: Request,
        who: Annotated[Principal, kit.access(EVERYONE)],
        old: Annotated[str, Form(max_length=256)],
        new: Annotated[str, Form(max_length=256)],
        again: Annotated[str, Form(max_length=256)],
    ) -> HTMLResponse:
        """Your own password, with the old one: wrong old passwords are throttled as logins are, but on a key of
        their own (``pw:<username>``), so a borrowed session can neither guess the password nor, by guessing, lock
        the real user out of logging in. Your other sessions end, this one stays."""
        await check_csrf(request, who)
        t = Translator(kit.lang_of(request))
        throttle: Throttle = request.app.state.throttle
        keys = [f"pw:{who.username}"]
        wait = throttle.locked(keys, kit.now())
        if wait is not None:
            return password_page(request, who, t("login.locked", minutes=int(wait // 60) + 1), status=429)
        user = await asyncio.to_thread(kit.accounts.user, who.username)
        ok = user is not None and (await asyncio.to_thread(verify_password, user.password_hash, old))[0]
        if not ok:
            throttle.failed(keys, kit.now())
            return password_page(request, who, t("password.wrong_old"), status=403)
        throttle.succeeded(keys[0])
        if new != again:
            return password_page(request, who, t("password.mismatch"), status=422)
        if len(new) < MIN_PASSWORD:
            return password_page(request, who, t("admin.short"), status=422)
        hashed = await asyncio.to_thread(hash_password, new)
        await asyncio.to_thread(kit.accounts.set_password_hash, who.username, hashed)
        await asyncio.to_thread(kit.accounts.end_sessions_of, who.username, keep=who.token_hash)
        audit(who, "password_changed", account=who.username)
        return kit.page(request, "password.html", who, message=t("password.changed"), error=False)
