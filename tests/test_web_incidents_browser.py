"""The manager's incident log in real headless Chromium (Debian's ``chromium``, driven by Playwright) against the web
app served by uvicorn over a real store: a manager filters the log, opens an incident's timeline and downloads the
CSV; the response times and the monthly report render; a staff account cannot open the log.

``CRIBWATCH_SCREENSHOTS=1`` also saves the pages' screenshots into docs/img/ (docs/managers.md shows them).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvicorn
from gpiozero.pins.mock import MockFactory
from playwright.async_api import Browser, Page, expect

from devtools.brokers import free_port
from gateway.app import Gateway
from gateway.store.accounts import AccountStore
from gateway.web.app import create_app, wrap
from gateway.web.auth import Role
from gateway.web.server import GatewayAdapter
from tests.helpers import make_settings, site_mapping
from tests.incident_helpers import LogWriter, busy_log
from tests.test_web_browser import SHOTS, chromium, web_up
from tests.web_helpers import PASSWORD, USERS, add_users

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def serving(tmp_path: Path) -> AsyncIterator[tuple[str, LogWriter]]:
    """The web app of a site whose store holds a quarter's incidents, on a free port of this machine."""
    port = free_port()
    settings = make_settings(
        data=site_mapping(web={"host": "127.0.0.1", "port": port}, store={"path": str(tmp_path / "site.sqlite3")})
    )
    accounts = AccountStore.open(settings.store_path, site_id=settings.site.id)
    add_users(accounts)
    gateway = Gateway(settings, pin_factory=MockFactory())  # not started: these pages read the store
    written = await asyncio.to_thread(busy_log, settings.store_path, settings.site.id, gateway.clock.time())
    app = create_app(settings, GatewayAdapter(gateway), accounts, gateway.web_changes)
    config = uvicorn.Config(wrap(app), host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    base = f"http://127.0.0.1:{port}"
    try:
        await web_up(base)
        yield base, written
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=5)
        accounts.close()


async def logged_in(browser: Browser, base: str, role: Role, lang: str) -> Page:
    context = await browser.new_context(
        locale=lang,
        extra_http_headers={"Accept-Language": lang},
        accept_downloads=True,
        viewport={"width": 1280, "height": 900},
    )
    page = await context.new_page()
    await page.goto(f"{base}/login")
    await page.fill("input[name=username]", USERS[role])
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await expect(page).to_have_url(f"{base}/board")
    return page


async def test_a_manager_filters_the_log_opens_a_timeline_and_downloads_the_csv(tmp_path: Path) -> None:
    shots = bool(os.environ.get("CRIBWATCH_SCREENSHOTS"))
    async with serving(tmp_path) as (base, written), chromium() as browser:
        manager = await logged_in(browser, base, Role.MANAGER, "nl")
        await manager.click("nav.rooms a[href='/incidents']")
        await expect(manager).to_have_url(f"{base}/incidents")
        await expect(manager.locator("#total")).to_have_text(f"{len(written.made)} incidenten")
        await expect(manager.locator("#log tbody tr")).to_have_count(50)  # the first page
        await manager.click("#older")
        await expect(manager.locator("#newer")).to_be_visible()
        if shots:
            await manager.goto(f"{base}/incidents")
            await manager.screenshot(path=str(SHOTS / "web-incidents.png"), full_page=False)

        await manager.select_option("select[name=room]", "slow")
        await manager.select_option("select[name=tests]", "hide")
        await manager.click("#filters button[type=submit]")
        slow = [m for m in written.made if m.room_id == "slow" and not m.test]
        await expect(manager.locator("#total")).to_have_text(f"{len(slow)} incidenten")
        await expect(manager.locator("#log tbody tr")).to_have_count(min(50, len(slow)))
        assert "room=slow" in manager.url
        assert "tests=hide" in manager.url

        tablet_ack = written.made[6]  # acknowledged by mana01 on the slow room's wall tablet
        await manager.locator(f'tr[data-alarm="{tablet_ack.alarm_id}"] a.timeline-link').click()
        await expect(manager).to_have_url(f"{base}/incidents/{tablet_ack.alarm_id}")
        acked = manager.locator('#timeline tr[data-step="acknowledged"]')
        await expect(acked).to_contain_text("mana01")
        await expect(acked).to_contain_text("tablet-slow-wall")
        await expect(manager.locator('#timeline tr[data-step="raised"]')).to_have_count(1)
        await expect(manager.locator('#timeline tr[data-step="delivery"]').first).to_contain_text("mqtt")
        if shots:
            await manager.screenshot(path=str(SHOTS / "web-incident-timeline.png"), full_page=True)

        await manager.go_back()
        async with manager.expect_download() as waiting:
            await manager.click("#csv")
        download = await waiting.value
        assert download.suggested_filename.startswith("incidents-")
        text = await asyncio.to_thread(Path(await download.path()).read_text, encoding="utf-8")
        rows = list(csv.DictReader(io.StringIO(text)))
        assert sorted(r["alarm_id"] for r in rows) == sorted(m.alarm_id for m in slow)
        assert {r["room_id"] for r in rows} == {"slow"}

        await manager.goto(f"{base}/incidents/stats")
        await expect(manager.locator("#chart-ack svg")).to_be_visible()
        await expect(manager.locator("#by-room tbody tr")).to_have_count(3)  # two rooms and the total
        if shots:
            await manager.screenshot(path=str(SHOTS / "web-incident-stats.png"), full_page=True)
        await manager.goto(f"{base}/incidents/report")
        await expect(manager.locator("h1")).to_contain_text("Maandrapport")
        await manager.emulate_media(media="print")
        await expect(manager.locator("header.bar")).to_be_hidden()  # the print CSS leaves the menus out
        if shots:
            await manager.screenshot(path=str(SHOTS / "web-incident-report.png"), full_page=True)


async def test_a_staff_account_cannot_open_the_incident_log(tmp_path: Path) -> None:
    async with serving(tmp_path) as (base, _), chromium() as browser:
        staff = await logged_in(browser, base, Role.STAFF, "en")
        await expect(staff.locator("nav.rooms a[href='/incidents']")).to_have_count(0)
        for path in ("/incidents", "/incidents/stats", "/incidents/report", "/api/incidents.csv"):
            refused = await staff.goto(f"{base}{path}")
            assert refused is not None
            assert refused.status == 403, path
