"""The staff alarm board in real headless Chromium (Debian's ``chromium``, driven by Playwright) against a running
gateway and a real Mosquitto: a simulated sensor opens a crib and every open board shows the alarm; Acknowledge on
one board and every board shows who has it; the gateway stopped, the boards say "connection lost", and after a
restart they show the true state again.

``CRIBWATCH_SCREENSHOTS=1`` (``make screenshots``) also saves every page's screenshot, in Dutch, into docs/img/
(docs/staff.md, docs/technicians.md and docs/web.md show them).
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from devtools.brokers import BrokerEndpoint, MosquittoBroker, free_port
from gateway.protocol import Topics
from gateway.settings import Settings
from gateway.store.accounts import AccountStore
from gateway.web.auth import Role, new_token, token_hash
from tests.test_gateway_integration import make_settings, running, sensor, staff_device
from tests.web_helpers import PASSWORD, USERS, add_users

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parent.parent / "docs" / "img"
LIVE_MS = 10_000
"""How long a board may take to show a change (generous: the machine is shared; the bench measures the speed)."""


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail("Debian's chromium is missing: scripts/ensure-system-deps installs it (make test runs it)")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield browser
        finally:
            await browser.close()


async def shot(page: Page, name: str, *, full_page: bool = False) -> None:
    """The page's screenshot for the docs (docs/img/web-<name>.png), when asked for."""
    if os.environ.get("CRIBWATCH_SCREENSHOTS"):
        await page.screenshot(path=str(SHOTS / f"web-{name}.png"), full_page=full_page)


async def log_in(browser: Browser, base: str, username: str, password: str = PASSWORD, lang: str = "nl") -> Page:
    context = await browser.new_context(locale=lang, extra_http_headers={"Accept-Language": lang})
    page = await context.new_page()
    await page.goto(f"{base}/login")
    await page.fill("input[name=username]", username)
    await page.fill("input[name=password]", password)
    await page.click("button[type=submit]")
    return page


async def web_up(base: str) -> None:
    async with httpx.AsyncClient() as client, asyncio.timeout(10):
        while True:
            try:
                if (await client.get(f"{base}/login")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)


async def board_of(browser: Browser, base: str, role: Role, lang: str = "nl") -> Page:
    page = await log_in(browser, base, USERS[role], lang=lang)
    await expect(page).to_have_url(f"{base}/board")
    await expect(page.locator("#connection")).to_have_class("connection ok", timeout=LIVE_MS)
    return page


def site(endpoint: BrokerEndpoint) -> tuple[Settings, str]:
    port = free_port()
    settings = make_settings(endpoint, web={"host": "127.0.0.1", "port": port})
    accounts = AccountStore.open(settings.store_path, site_id=settings.site.id)
    add_users(accounts)
    accounts.close()
    return settings, f"http://127.0.0.1:{port}"


async def test_an_alarm_appears_live_on_every_board_and_is_acknowledged_from_one(mqtt_endpoint: BrokerEndpoint) -> None:
    settings, base = site(mqtt_endpoint)
    topics = Topics(settings.site.id)
    async with (
        running(settings) as gw,
        staff_device(mqtt_endpoint, topics) as pager,
        sensor(mqtt_endpoint, topics, "s-1") as s1,
        sensor(mqtt_endpoint, topics, "s-2", battery_pct=12),
        chromium() as browser,
    ):
        await web_up(base)
        assert gw.maintenance_on("n-3", reason="nieuwe batterij", until=time.time() + 3600, by="tech01").accepted
        staff = await board_of(browser, base, Role.STAFF)
        manager = await board_of(browser, base, Role.MANAGER, lang="en")
        tiles = [page.locator('[data-crib="n-1"]') for page in (staff, manager)]
        await expect(staff.locator("#sound")).to_have_text("Geluid staat UIT: tik om het aan te zetten")
        await expect(staff.locator("#broker")).to_be_hidden()  # the gateway is on its broker
        await manager.locator("#sound").click()  # one tap: the browser lets the page play sound from now on
        await expect(manager.locator("#sound")).to_have_text("Sound on")

        await s1.open()
        for tile in tiles:
            await expect(tile).to_have_attribute("data-status", "alarm", timeout=LIVE_MS)
        await expect(tiles[0].locator(".status")).to_have_text("Alarm · hoog")
        await expect(tiles[1].locator(".status")).to_have_text("Alarm · high")
        await expect(staff.locator('[data-crib="n-2"] .battery')).to_have_text("Batterij bijna leeg 12%")
        await expect(staff.locator('[data-crib="n-3"]')).to_have_attribute("data-status", "maintenance")
        await expect(staff.locator('[data-crib="n-3"] .reason')).to_contain_text("nieuwe batterij · tot ")
        await expect(staff.locator("#board")).to_have_class(re.compile(r"\balarming\b"))  # sound off: it flashes
        await shot(staff, "board-alarm")

        await tiles[0].locator("button.ack").click()
        await expect(tiles[0].locator(".answer")).to_have_text("Jij hebt hem", timeout=LIVE_MS)
        for tile in tiles:
            await expect(tile).to_have_attribute("data-status", "acknowledged", timeout=LIVE_MS)
        await expect(tiles[1].locator(".by")).to_have_text(f"Taken by {USERS[Role.STAFF]}")
        await expect(tiles[0].locator(".by")).to_have_text(f"Opgepakt door {USERS[Role.STAFF]}")
        acked = await pager.until(
            lambda: next((e for e in pager.events if e.event == "acknowledged" and e.crib == "n-1"), None)
        )
        assert (acked.by, acked.device) == (USERS[Role.STAFF], "web-board")
        assert gw.core.crib_state("n-1").alarms[0].acknowledged_by == USERS[Role.STAFF]
        await shot(staff, "board-acknowledged")

        # The technician console: a staff account is refused; a technician sees the sensors and health.
        refused = await staff.goto(f"{base}/console")
        assert refused is not None
        assert refused.status == 403
        tech = await log_in(browser, base, USERS[Role.TECHNICIAN])
        await expect(tech).to_have_url(f"{base}/console")
        await expect(tech.locator('tr[data-crib="n-2"]')).to_contain_text("12%")
        await expect(tech.locator("#health")).to_contain_text("Berichten aangenomen")
        health = {key: tech.locator(f'#health dd[data-health="{key}"]') for key in ("version", "broker", "latency")}
        await expect(health["version"]).to_have_text(version("cribwatch"))
        await expect(health["broker"]).to_have_text("verbonden")
        await expect(health["latency"]).to_contain_text("laatste")  # the alarm above was measured
        await expect(tech.locator("#health")).to_contain_text("Draait al")
        await shot(tech, "console", full_page=True)


async def test_the_board_shows_connection_lost_then_the_true_state_after_a_restart(
    mqtt_endpoint: BrokerEndpoint,
) -> None:
    settings, base = site(mqtt_endpoint)
    topics = Topics(settings.site.id)
    async with chromium() as browser, sensor(mqtt_endpoint, topics, "s-2") as s2:
        async with running(settings):
            await web_up(base)
            board = await board_of(browser, base, Role.STAFF)
            tile = board.locator('[data-crib="n-2"]')
            await expect(tile).to_have_attribute("data-status", "closed")
        # The gateway (and its web app) is gone: the board says so, and the crib opens meanwhile.
        await expect(board.locator("#connection")).to_have_class("connection lost", timeout=LIVE_MS)
        await expect(board.locator("#connection")).to_have_text("VERBINDING VERBROKEN: dit bord is niet actueel")
        await shot(board, "board-connection-lost")
        await s2.open()
        async with running(settings):
            await expect(board.locator("#connection")).to_have_class("connection ok", timeout=LIVE_MS)
            await expect(tile).to_have_attribute("data-status", "alarm", timeout=LIVE_MS)


async def test_the_board_bench_measures_both_paths_in_one_run() -> None:
    """``python -m bench.board`` in small: every alarm is timed at the MQTT subscriber and at every board."""
    from bench.board import run

    figures = await run(boards=2, samples=2, seed=3)
    assert figures["mqtt"].n == 2
    assert figures["board"].n == 4
    assert figures["last_board"].n == 2
    assert figures["board"].min > 0


async def test_the_board_warns_while_the_gateway_has_lost_its_broker(tmp_path: Path) -> None:
    with MosquittoBroker(tmp_path / "broker", users={"gw": secrets.token_urlsafe(8)}) as broker:
        settings, base = site(broker.endpoint)
        async with running(settings), chromium() as browser:
            await web_up(base)
            board = await board_of(browser, base, Role.STAFF, lang="en")
            await expect(board.locator("#broker")).to_be_hidden()
            broker.stop()
            await expect(board.locator("#broker")).to_be_visible(timeout=LIVE_MS)
            await expect(board.locator("#broker")).to_contain_text("THE GATEWAY HAS LOST ITS BROKER")
            await expect(board.locator("#connection")).to_have_class("connection ok")  # the board still hears
            broker.start()
            await expect(board.locator("#broker")).to_be_hidden(timeout=LIVE_MS * 2)


async def test_a_wall_tablet_asks_who_acknowledges_and_shows_its_room_only(mqtt_endpoint: BrokerEndpoint) -> None:
    settings, base = site(mqtt_endpoint)
    topics = Topics(settings.site.id)
    token = new_token()
    accounts = AccountStore.open(settings.store_path, site_id=settings.site.id)
    accounts.add_device(token_hash(token), "nursery-wall", "nursery", secrets.token_urlsafe(16), 0.0)
    accounts.close()
    async with (
        running(settings) as gw,
        sensor(mqtt_endpoint, topics, "s-3") as s3,
        chromium() as browser,
    ):
        await web_up(base)
        context = await browser.new_context(locale="nl", extra_http_headers={"Accept-Language": "nl"})
        tablet = await context.new_page()
        await tablet.goto(f"{base}/device/{token}")
        await expect(tablet).to_have_url(f"{base}/board?room=nursery")
        await expect(tablet.locator("#connection")).to_have_class("connection ok", timeout=LIVE_MS)
        await expect(tablet.locator('[data-crib="w-1"]')).to_have_count(0)  # another room's crib
        tile = tablet.locator('[data-crib="n-3"]')
        await s3.open()
        await expect(tile).to_have_attribute("data-status", "alarm", timeout=LIVE_MS)
        await tile.locator("button.ack").click()
        await expect(tablet.locator("#picker")).to_be_visible()
        await expect(tablet.locator("#picker h2")).to_have_text("Wie ben jij? Tik je medewerkernummer")
        await shot(tablet, "tablet-picker")
        await tablet.locator("#people button", has_text=USERS[Role.MANAGER]).click()
        await expect(tile).to_have_attribute("data-status", "acknowledged", timeout=LIVE_MS)
        await expect(tile.locator(".answer")).to_have_text("Jij hebt hem")
        (alarm,) = gw.core.crib_state("n-3").alarms
        assert alarm.acknowledged_by == USERS[Role.MANAGER]
        refused = await tablet.goto(f"{base}/console")
        assert refused is not None
        assert refused.status == 403


async def test_a_board_of_a_disabled_account_goes_back_to_the_login_page(mqtt_endpoint: BrokerEndpoint) -> None:
    settings, base = site(mqtt_endpoint)
    async with running(settings), chromium() as browser:
        await web_up(base)
        board = await board_of(browser, base, Role.STAFF)
        accounts = AccountStore.open(settings.store_path, site_id=settings.site.id)
        try:
            assert accounts.set_disabled(USERS[Role.STAFF], disabled=True)
        finally:
            accounts.close()
        await expect(board).to_have_url(f"{base}/login", timeout=LIVE_MS * 2)


async def test_a_web_app_that_cannot_bind_its_port_leaves_the_gateway_alarming(
    mqtt_endpoint: BrokerEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = make_settings(mqtt_endpoint, web={"host": "127.0.0.1", "port": port})
        topics = Topics(settings.site.id)
        async with (
            running(settings) as gw,
            staff_device(mqtt_endpoint, topics) as pager,
            sensor(mqtt_endpoint, topics, "s-1") as s1,
        ):
            await s1.open()
            raised = await pager.until(
                lambda: next((e for e in pager.events if e.event == "raised" and e.crib == "n-1"), None)
            )
            assert raised.alarm_id in {a.alarm_id for a in gw.core.active_alarms()}
        assert any("the web app failed" in r.getMessage() for r in caplog.records)


async def test_the_admin_page_adds_a_tablet_and_resets_a_password_and_everyone_changes_their_own(
    mqtt_endpoint: BrokerEndpoint,
) -> None:
    """The pages of accounts in Chromium, in Dutch: login, admin (a tablet added: its address opens its room's
    board), a reset password, the welcome page and the password page."""
    settings, base = site(mqtt_endpoint)
    async with running(settings), chromium() as browser:
        await web_up(base)
        login = await log_in(browser, base, "nobody", "wrong password")
        await expect(login.locator(".error")).to_have_text("Onjuist medewerkernummer of wachtwoord.")
        await shot(login, "login")

        admin = await log_in(browser, base, USERS[Role.ADMIN])
        await expect(admin).to_have_url(f"{base}/board")
        await admin.goto(f"{base}/admin")
        await admin.fill(".tablet-add input[name=name]", "nursery-wall")
        await admin.select_option(".tablet-add select[name=room]", "nursery")
        await admin.click(".tablet-add button[type=submit]")
        link = await admin.locator("#tablet-link").text_content()
        assert link is not None
        assert link.startswith(f"{base}/device/")
        await expect(admin.locator('tr[data-tablet="nursery-wall"]')).to_contain_text("Nursery")
        staff_row = admin.locator(f'tr[data-user="{USERS[Role.STAFF]}"]')
        await staff_row.locator("input[name=password]").fill("nieuw wachtwoord 1")
        await staff_row.locator("form[action$='/password'] button").click()
        await expect(admin.locator("p.done")).to_contain_text("opnieuw ingesteld")
        await admin.goto(f"{base}/admin")
        await admin.fill(".tablet-add input[name=name]", "vlinders-wall")  # the page as an admin finds it
        await shot(admin, "admin", full_page=True)

        tablet = await (await browser.new_context(locale="nl")).new_page()
        await tablet.goto(link)
        await expect(tablet).to_have_url(f"{base}/board?room=nursery")
        await expect(tablet.locator("#connection")).to_have_class("connection ok", timeout=LIVE_MS)
        staff = await log_in(browser, base, USERS[Role.STAFF], "nieuw wachtwoord 1")
        await expect(staff).to_have_url(f"{base}/board")

        coordinator = await log_in(browser, base, USERS[Role.COORDINATOR])
        await expect(coordinator).to_have_url(f"{base}/helping/requests")  # where a coordinator works
        await coordinator.goto(f"{base}/welcome")
        await expect(coordinator.locator("h1")).to_have_text("Welkom")
        await shot(coordinator, "welcome")
        await coordinator.click("a.password-link")
        await coordinator.fill("input[name=old]", PASSWORD)
        await coordinator.fill("input[name=new]", "mijn eigen wachtwoord")
        await coordinator.fill("input[name=again]", "mijn eigen wachtwoord")
        await coordinator.click("form.login button[type=submit]")
        await expect(coordinator.locator("p.done")).to_have_text("Je wachtwoord is gewijzigd.")
        await shot(coordinator, "password")
