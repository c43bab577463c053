"""Helping hands in real headless Chromium (Debian's ``chromium``, driven by Playwright) against a running gateway
and a real Mosquitto: a staff member, on a phone-sized screen with JavaScript OFF, fills the form with mistakes,
sees each message beside its field with their input kept, corrects it and sends it; a coordinator assigns it; the
requester sees the new status.

``CRIBWATCH_SCREENSHOTS=1`` also saves the pages' screenshots into docs/img/ (docs/helping-hands.md shows them).
"""

from __future__ import annotations

import datetime as dt
import os
from zoneinfo import ZoneInfo

import pytest
from playwright.async_api import Browser, Page, expect

from devtools.brokers import BrokerEndpoint
from gateway.web.auth import Role
from gateway.web.i18n import Translator
from tests.test_gateway_integration import running
from tests.test_helping_mqtt import helping_site
from tests.test_web_browser import SHOTS, chromium, web_up
from tests.web_helpers import PASSWORD, USERS

pytestmark = pytest.mark.integration

NL, EN = Translator("nl"), Translator("en")
PHONE = {"width": 390, "height": 844}
"""A phone's screen (CSS pixels)."""


async def logged_in(browser: Browser, base: str, role: Role, lang: str, **context: object) -> Page:
    ctx = await browser.new_context(locale=lang, extra_http_headers={"Accept-Language": lang}, **context)  # type: ignore[arg-type]
    page = await ctx.new_page()
    await page.goto(f"{base}/login")
    await page.fill("input[name=username]", USERS[role])
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url(lambda url: "/login" not in url)
    return page


def shot(page: Page, name: str) -> str | None:
    return str(SHOTS / name) if os.environ.get("CRIBWATCH_SCREENSHOTS") else None


async def test_a_staff_member_corrects_the_form_and_a_coordinator_assigns_the_request(
    mqtt_endpoint: BrokerEndpoint,
) -> None:
    settings, base = helping_site(mqtt_endpoint)
    day = (dt.datetime.now(ZoneInfo(settings.alerting.time_zone)).date() + dt.timedelta(days=1)).isoformat()
    note_max = settings.helping_hands.note_max
    async with running(settings), chromium() as browser:
        await web_up(base)
        staff = await logged_in(browser, base, Role.STAFF, "nl", viewport=PHONE, java_script_enabled=False)
        await staff.click(f"text={NL('helping.nav_new')}")
        await expect(staff.locator("h1")).to_have_text(NL("helping.form_title"))
        await expect(staff.locator(".privacy")).to_contain_text(NL("helping.privacy"))

        # Mistakes: no room, the end before the start, too many people, a note too long, no phone number.
        await staff.fill("#f-day", day)
        await staff.fill("#f-start", "14:00")
        await staff.fill("#f-end", "13:00")
        await staff.fill("#f-people", "99")
        await staff.check("input[name=reason][value=illness]")
        await staff.fill("#f-note", "x" * (note_max + 5))
        await staff.check("input[name=contact_kind][value=phone]")
        await staff.fill("#f-contact", "12345")
        await staff.click(f"button:has-text('{NL('helping.send')}')")

        expected = {
            "room": NL("helping.error.room_missing"),
            "end": NL("helping.error.end_before_start"),
            "people": NL("helping.error.people_range", max_people=settings.helping_hands.max_people),
            "note": NL("helping.error.note_too_long", note_max=note_max),
            "contact": NL("helping.error.contact_bad_phone"),
        }
        for field, text in expected.items():
            message = staff.locator(f"#err-{field}")
            await expect(message).to_have_text(text)
            # beside its own field: inside the same field box as the input
            box = staff.locator(".field", has=staff.locator(f"#err-{field}"))
            await expect(box.locator(f"[name={field}]")).to_have_count(1)
        await expect(staff.locator(".field-error")).to_have_count(len(expected))
        await expect(staff.locator("#f-people")).to_have_value("99")  # the input is kept
        await expect(staff.locator("#f-start")).to_have_value("14:00")
        await expect(staff.locator("#f-contact")).to_have_value("12345")
        await expect(staff.locator("#f-day")).to_have_value(day)
        await expect(staff.locator("input[name=reason][value=illness]")).to_be_checked()
        await expect(staff.locator("input[name=contact_kind][value=phone]")).to_be_checked()
        if path := shot(staff, "helping-form-errors.png"):
            await staff.screenshot(path=path, full_page=True)

        # Corrected and sent.
        await staff.fill("#f-room", "Dolfijnen")
        await staff.fill("#f-end", "17:30")
        await staff.fill("#f-people", "2")
        await staff.fill("#f-note", "Twee collega's ziek")
        await staff.fill("#f-contact", "06 1234 5678")
        await staff.click(f"button:has-text('{NL('helping.send')}')")
        await expect(staff).to_have_url(f"{base}/helping/mine?sent=1")
        await expect(staff.locator("#sent")).to_have_text(NL("helping.sent", id=1))
        row = staff.locator('tr[data-request="1"]')
        await expect(row).to_have_attribute("data-status", "new")
        await expect(row.locator(".status")).to_contain_text(NL("helping.status.new"))

        # A coordinator assigns it to themselves.
        coordinator = await logged_in(browser, base, Role.COORDINATOR, "en")
        await coordinator.click(f"text={EN('helping.nav_all')}")
        await expect(coordinator.locator('tr[data-request="1"]')).to_have_attribute("data-status", "new")
        if path := shot(coordinator, "helping-coordinator-list.png"):
            await coordinator.screenshot(path=path, full_page=True)
        await coordinator.click('tr[data-request="1"] a')
        await coordinator.select_option("select[name=to]", "assigned")
        await coordinator.fill("input[name=comment]", "Calling the pool")
        await coordinator.click(f"button:has-text('{EN('helping.move_button')}')")
        await expect(coordinator.locator("#message")).to_have_text(EN("helping.changed"))
        await expect(coordinator.locator(".helping-detail")).to_have_attribute("data-status", "assigned")
        await expect(coordinator.locator(".helping-history li")).to_have_count(2)
        if path := shot(coordinator, "helping-coordinator-request.png"):
            await coordinator.screenshot(path=path, full_page=True)

        # The requester sees the new status.
        await staff.goto(f"{base}/helping/mine")
        await expect(row).to_have_attribute("data-status", "assigned")
        await expect(row.locator(".status")).to_contain_text(NL("helping.status.assigned"))
        await expect(row.locator(".status")).to_contain_text(USERS[Role.COORDINATOR])
        if path := shot(staff, "helping-mine.png"):
            await staff.screenshot(path=path, full_page=True)
