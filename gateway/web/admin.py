"""The admin page: accounts (add, enable, disable) and wall tablets (remove), for the ``admin`` role."""

import asyncio
import json
from typing import Annotated

from fastapi import FastAPI, Form, HTTPException, Request
from fastapi.responses import HTMLResponse

from gateway.store.accounts import AccountExistsError
from gateway.web.auth import ADMINS, STAFF_ID, Role, hash_password
from gateway.web.i18n import Translator
from gateway.web.kit import Principal, WebKit, check_csrf


def register(app: FastAPI, kit: WebKit) -> None:
    async def admin_page(
        request: Request, who: Principal, message: str | None = None, *, error: bool = False, **form: str
    ) -> HTMLResponse:
        users, devices = await asyncio.to_thread(lambda: (kit.accounts.users(), kit.accounts.devices()))
        response = kit.page(
            request,
            "admin.html",
            who,
            accounts=users,
            devices=devices,
            roles=[r.value for r in Role],
            message=message,
            error=error,
            form=form,
        )
        if error:
            response.status_code = 422
        return response

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
        kit.gateway.audit(
            kit.now(), who.username, "web", "account_added", json.dumps({"account": username, "role": role})
        )
        return await admin_page(request, who, t("admin.added", name=username))

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
        kit.gateway.audit(kit.now(), who.username, "web", f"account_{action}d", json.dumps({"account": username}))
        return await admin_page(request, who, t("admin.changed", name=username))

    @app.post("/admin/devices/{name}/remove", response_class=HTMLResponse, openapi_extra=kit.roles_of(ADMINS))
    async def admin_remove_device(
        name: str, request: Request, who: Annotated[Principal, kit.access(ADMINS)]
    ) -> HTMLResponse:
        await check_csrf(request, who)
        if not await asyncio.to_thread(kit.accounts.remove_device, name):
            raise HTTPException(status_code=404, detail=f"no tablet {name!r}")
        kit.gateway.audit(kit.now(), who.username, "web", "tablet_removed", json.dumps({"tablet": name}))
        return await admin_page(request, who, Translator(kit.lang_of(request))("admin.removed", name=name))
