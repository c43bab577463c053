"""Helping hands on the app factory (FastAPI's TestClient): every route and its roles, every validation rule of the
form (the message beside its field, the input kept), the coordinators' statuses and history, the requester's view,
the MQTT message in the store's durable outbox and the low-priority notice to the coordinators. A real gateway
object (not started: no broker) and the site's real SQLite store."""

from __future__ import annotations

import datetime as dt
import html
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from gpiozero.pins.mock import MockFactory

from gateway.app import Gateway
from gateway.domain.clock import FakeClock
from gateway.domain.helping import ContactKind, Reason, Status, Urgency
from gateway.domain.vocab import LABEL_MAX
from gateway.protocol.helping import HelpingHandsPayload
from gateway.settings import ConfigError, settings_from_mapping
from gateway.store import SCHEMA_VERSION, Store
from gateway.store.accounts import AccountStore
from gateway.web.app import create_app, wrap
from gateway.web.auth import Role, hash_password, new_token, token_hash
from gateway.web.i18n import LANGUAGES, Translator, catalogue
from gateway.web.server import GatewayAdapter
from tests.helpers import make_settings, site_mapping
from tests.web_helpers import PASSWORD, USERS, csrf_of, login

ZONE = ZoneInfo("Europe/Amsterdam")
NOW = dt.datetime(2026, 3, 2, 8, 0, tzinfo=ZONE)
"""Monday 2 March 2026, 08:00 in the site's time zone: "today" for every test here."""
TODAY = NOW.date().isoformat()
PARTNER = {"id": "bso-vlinder", "label": "BSO De Vlinder", "kind": "bso"}
HELPING = {
    "partner_sites": [PARTNER],
    "max_people": 6,
    "note_max": 40,
    "days_ahead": 30,
    "coordinators": [{"id": "coord-1", "channels": [{"channel": "mqtt", "address": "coord-tab-1"}]}],
}
REQUESTERS = {Role.STAFF, Role.MANAGER}
COORDINATORS = {Role.COORDINATOR}
EN = Translator("en")
HASHED = hash_password(PASSWORD)


class HelpSite:
    def __init__(self, tmp_path: Path, *, influx: dict[str, Any] | None = None, **helping: Any) -> None:
        self.clock = FakeClock(start_wall=NOW.timestamp())
        store = {"path": str(tmp_path / "site.sqlite3")}
        data = site_mapping(web={"port": 8099}, store=store, helping_hands={**HELPING, **helping})
        if influx is not None:
            data["influx"] = influx
        self.settings = make_settings(data=data)
        self.gateway = Gateway(self.settings, clock=self.clock, pin_factory=MockFactory())
        self.accounts = AccountStore.open(self.settings.store_path, site_id=self.settings.site.id)
        for role, name in USERS.items():
            self.accounts.add_user(name, role.value, HASHED, 0.0)
        self.accounts.add_user("staf02", "staff", HASHED, 0.0)
        self.accounts.add_user("coor02", "coordinator", HASHED, 0.0)
        self.app = create_app(
            self.settings, GatewayAdapter(self.gateway), self.accounts, self.gateway.web_changes, now=self.clock.time
        )
        self.client_app = wrap(self.app)

    def client(self, who: Role | str | None = None, lang: str = "en") -> TestClient:
        client = TestClient(self.client_app, headers={"Accept-Language": lang})
        if who is not None:
            answer = login(client, USERS[who] if isinstance(who, Role) else who)
            assert answer.status_code == 303, answer.text
        return client

    def outbox(self) -> list[tuple[str, str, bytes, int, int, float | None]]:
        store = Store.open(self.settings.store_path, site_id=self.settings.site.id, readonly=True)
        try:
            rows = store.connection.execute(
                "SELECT key, topic, payload, qos, retain, delivered_at FROM outbox ORDER BY id"
            ).fetchall()
        finally:
            store.close()
        return [tuple(r) for r in rows]

    def influx_lines(self) -> list[str]:
        store = Store.open(self.settings.store_path, site_id=self.settings.site.id, readonly=True)
        try:
            rows = store.connection.execute("SELECT line, alarm FROM influx_outbox ORDER BY id").fetchall()
        finally:
            store.close()
        assert all(alarm == 0 for _, alarm in rows), "helping-hands points are not alarm points"
        return [str(line) for line, _ in rows]

    def messages(self) -> list[HelpingHandsPayload]:
        return [HelpingHandsPayload.model_validate_json(r[2], context={"wire": True}) for r in self.outbox()]


@pytest.fixture
def hs(tmp_path: Path) -> Iterator[HelpSite]:
    site = HelpSite(tmp_path)
    yield site
    site.accounts.close()


def good_form(**changes: str) -> dict[str, str]:
    form = {
        "site": "test-site",
        "room": "Dolfijnen",
        "day": TODAY,
        "start": "13:00",
        "end": "17:30",
        "people": "2",
        "reason": "illness",
        "urgency": "normal",
        "note": "Two colleagues ill",
        "contact_kind": "account",
        "contact": USERS[Role.STAFF],
    }
    form.update(changes)
    return form


def submit(client: TestClient, form: dict[str, str]) -> Any:
    return client.post("/helping/new", data={**form, "csrf": csrf_of(client)}, follow_redirects=False)


def field_error(page: str, field: str) -> str | None:
    found = re.search(rf'<span class="field-error" id="err-{field}" role="alert">([^<]*)</span>', page)
    return None if found is None else html.unescape(found.group(1))


def message(code: str, hs: HelpSite) -> str:
    hh = hs.settings.helping_hands
    return EN(f"helping.error.{code}", max_people=hh.max_people, note_max=hh.note_max, days_ahead=hh.days_ahead)


def make_request(hs: HelpSite, who: Role | str = Role.STAFF, **changes: str) -> int:
    answer = submit(hs.client(who), good_form(**changes))
    assert answer.status_code == 303, answer.text
    found = re.fullmatch(r"/helping/mine\?sent=(\d+)", answer.headers["location"])
    assert found, answer.headers["location"]
    return int(found.group(1))


def move(client: TestClient, request_id: int, **form: str) -> Any:
    return client.post(
        f"/helping/requests/{request_id}/status", data={**form, "csrf": csrf_of(client)}, follow_redirects=False
    )


# ------------------------------------------------------------------------------------------ roles


def _helping_routes(app: Any) -> list[APIRoute]:
    return [r for r in app.routes if isinstance(r, APIRoute) and r.path.startswith("/helping")]


def test_every_helping_route_declares_its_roles_and_refuses_every_other_role(hs: HelpSite) -> None:
    request_id = make_request(hs)
    routes = _helping_routes(hs.app)
    assert {(r.path, next(iter(r.methods))) for r in routes} == {
        ("/helping/new", "GET"), ("/helping/new", "POST"), ("/helping/mine", "GET"), ("/helping/requests", "GET"),
        ("/helping/requests/{request_id}", "GET"), ("/helping/requests/{request_id}/status", "POST"),
    }  # fmt: skip
    clients = {role: hs.client(role) for role in Role}
    csrf = {role: csrf_of(client) for role, client in clients.items()}
    anonymous = hs.client()
    token = new_token()
    hs.accounts.add_device(token_hash(token), "wall", "fast", "tablet-csrf", 0.0)
    tablet = TestClient(hs.client_app)
    assert tablet.get(f"/device/{token}", follow_redirects=False).status_code == 303
    refused = 0
    for route in routes:
        allowed = set((route.openapi_extra or {})["x-roles"])
        assert allowed <= {r.value for r in Role}, route.path  # no tablet, no anonymous
        method = next(iter(route.methods))
        path = route.path.replace("{request_id}", str(request_id))
        answer = anonymous.request(method, path, follow_redirects=False)
        assert answer.status_code == (303 if method == "GET" else 401), path
        assert tablet.request(method, path, headers={"X-CSRF-Token": "tablet-csrf"}).status_code == 403, path
        for role in Role:
            if role.value in allowed:
                continue
            answer = clients[role].request(method, path, headers={"X-CSRF-Token": csrf[role]}, follow_redirects=False)
            assert answer.status_code == 403, (path, role, answer.text)
            refused += 1
    assert refused == 3 * 3 + 4 + 2 * 2  # the form (GET, POST) and mine; the list; a request and its status
    # the roles each route names get in
    for role in REQUESTERS:
        assert clients[role].get("/helping/new").status_code == 200
        assert clients[role].get("/helping/mine").status_code == 200
    assert clients[Role.COORDINATOR].get("/helping/requests").status_code == 200
    assert clients[Role.COORDINATOR].get(f"/helping/requests/{request_id}").status_code == 200
    assert clients[Role.STAFF].get(f"/helping/requests/{request_id}").status_code == 200  # their own


def test_posts_without_the_session_csrf_token_are_refused(hs: HelpSite) -> None:
    request_id = make_request(hs)
    staff, coordinator = hs.client(Role.STAFF), hs.client(Role.COORDINATOR)
    assert staff.post("/helping/new", data=good_form(), follow_redirects=False).status_code == 403
    forged = {**good_form(), "csrf": "forged"}
    assert staff.post("/helping/new", data=forged, follow_redirects=False).status_code == 403
    answer = coordinator.post(f"/helping/requests/{request_id}/status", data={"to": "assigned"})
    assert answer.status_code == 403
    assert [m.status for m in hs.messages()] == ["new"]


def test_the_menu_shows_each_role_its_helping_hands_pages(hs: HelpSite) -> None:
    staff = hs.client(Role.STAFF).get("/board").text
    assert 'href="/helping/new"' in staff
    assert 'href="/helping/mine"' in staff
    assert 'href="/helping/requests"' not in staff
    coordinator = hs.client(Role.COORDINATOR).get("/welcome").text
    assert 'href="/helping/requests"' in coordinator
    assert 'href="/helping/new"' not in coordinator
    assert "/helping" not in hs.client(Role.TECHNICIAN).get("/console").text


# ------------------------------------------------------------------------------------------ the form


def test_the_form_says_no_child_data_belongs_in_it_and_works_without_javascript(hs: HelpSite) -> None:
    page = hs.client(Role.STAFF).get("/helping/new")
    assert page.status_code == 200
    assert EN("helping.privacy") in html.unescape(page.text)
    assert '<form method="post" action="/helping/new"' in page.text
    assert "<script" not in page.text.split("<main>")[1].split("</main>")[0]  # a plain form
    assert 'name="viewport"' in page.text  # usable on a phone
    assert f'value="{USERS[Role.STAFF]}"' in page.text  # the contact starts as the person's own account
    assert f'value="{TODAY}"' in page.text
    nl = hs.client(Role.STAFF, lang="nl").get("/helping/new").text
    assert "Geen gegevens van kinderen." in nl
    assert "BSO De Vlinder (bso)" in nl


RULES: list[tuple[str, dict[str, str], str, str]] = [
    ("unknown site", {"site": "elsewhere"}, "site", "site_unknown"),
    ("no room", {"room": "  "}, "room", "room_missing"),
    ("room too long", {"room": "x" * 65}, "room", "room_too_long"),
    ("no such date", {"day": "2026-02-30"}, "day", "day_invalid"),
    ("not a date", {"day": "tomorrow"}, "day", "day_invalid"),
    ("a day past", {"day": "2026-03-01"}, "day", "day_past"),
    ("too far ahead", {"day": "2026-04-02"}, "day", "day_too_far"),
    ("bad start", {"start": "25:00"}, "start", "time_invalid"),
    ("bad end", {"end": "9"}, "end", "time_invalid"),
    ("end before start", {"start": "14:00", "end": "13:00"}, "end", "end_before_start"),
    ("empty window", {"start": "14:00", "end": "14:00"}, "end", "end_before_start"),
    ("started already", {"start": "07:00", "end": "12:00"}, "start", "start_past"),
    ("over already", {"start": "06:00", "end": "07:30"}, "end", "end_past"),
    ("people not a number", {"people": "two"}, "people", "people_invalid"),
    ("people negative", {"people": "-1"}, "people", "people_invalid"),
    ("people missing", {"people": ""}, "people", "people_invalid"),
    ("nobody", {"people": "0"}, "people", "people_range"),
    ("too many", {"people": "7"}, "people", "people_range"),
    ("unknown reason", {"reason": "party"}, "reason", "reason_invalid"),
    ("no reason", {"reason": ""}, "reason", "reason_invalid"),
    ("unknown urgency", {"urgency": "asap"}, "urgency", "urgency_invalid"),
    ("note too long", {"note": "n" * 41}, "note", "note_too_long"),
    ("other without a note", {"reason": "other", "note": ""}, "note", "note_needed"),
    ("no contact kind", {"contact_kind": "pigeon"}, "contact", "contact_kind_invalid"),
    ("no contact", {"contact": ""}, "contact", "contact_missing"),
    ("no phone", {"contact_kind": "phone", "contact": ""}, "contact", "contact_missing"),
    ("unknown account", {"contact": "nobody"}, "contact", "contact_no_account"),
    ("disabled account", {"contact": "staf02"}, "contact", "contact_no_account"),
    ("an administrator's account", {"contact": "admi01"}, "contact", "contact_no_account"),
    ("a technician's account", {"contact": "tech01"}, "contact", "contact_no_account"),
    ("a coordinator's account", {"contact": "coor01"}, "contact", "contact_no_account"),
    ("not a phone number", {"contact_kind": "phone", "contact": "12345"}, "contact", "contact_bad_phone"),
    ("letters for a phone", {"contact_kind": "phone", "contact": "call me"}, "contact", "contact_bad_phone"),
]


@pytest.fixture(scope="module")
def rules_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HelpSite, TestClient]]:
    """One site and one logged-in staff member for every rule (a refused form writes nothing)."""
    site = HelpSite(tmp_path_factory.mktemp("rules"))
    site.accounts.set_disabled("staf02", disabled=True)
    yield site, site.client(Role.STAFF)
    site.accounts.close()


@pytest.mark.parametrize(("changes", "field", "code"), [r[1:] for r in RULES], ids=[r[0] for r in RULES])
def test_each_rule_shows_its_message_beside_its_field_and_keeps_the_input(
    rules_site: tuple[HelpSite, TestClient], changes: dict[str, str], field: str, code: str
) -> None:
    hs, staff = rules_site
    form = good_form(**changes)
    answer = submit(staff, form)
    assert answer.status_code == 422, answer.text[:300]
    page = answer.text
    assert field_error(page, field) == message(code, hs)
    others = ["site", "room", "day", "start", "end", "people", "reason", "urgency", "note", "contact"]
    assert [f for f in others if field_error(page, f) is not None] == [field]  # that field alone
    for name in ("room", "day", "start", "end", "people", "contact"):
        if form[name].strip():
            assert f'value="{html.escape(form[name])}"' in page, name  # what the person typed stays
    if form["note"]:
        assert f">{form['note']}</textarea>" in page
    assert f'value="{form["reason"]}" checked' in page or form["reason"] not in {r.value for r in Reason}
    assert hs.outbox() == []


def test_every_mistake_at_once_gets_its_own_message(hs: HelpSite) -> None:
    form = good_form(room="", day=TODAY, start="16:00", end="15:00", people="99", note="x" * 50, contact="nobody")
    page = submit(hs.client(Role.STAFF, lang="nl"), form).text
    nl = Translator("nl")
    assert field_error(page, "room") == nl("helping.error.room_missing")
    assert field_error(page, "end") == nl("helping.error.end_before_start")
    assert field_error(page, "people") == nl("helping.error.people_range", max_people=6)
    assert field_error(page, "note") == nl("helping.error.note_too_long", note_max=40)
    assert field_error(page, "contact") == nl("helping.error.contact_no_account")
    assert nl("helping.form_has_errors", count=5) in html.unescape(page)
    assert 'value="99"' in page
    assert 'value="nobody"' in page


def test_a_phone_number_is_kept_in_its_international_form(hs: HelpSite) -> None:
    request_id = make_request(hs, contact_kind="phone", contact="06 1234 5678")
    assert hs.messages()[0].contact == "+31612345678"
    page = hs.client(Role.COORDINATOR).get(f"/helping/requests/{request_id}").text
    assert "+31612345678" in page


def test_a_form_far_too_large_is_refused_before_it_is_read(hs: HelpSite) -> None:
    answer = submit(hs.client(Role.STAFF), good_form(note="n" * 20_000))
    assert answer.status_code == 413


# ------------------------------------------------------------------------------------------ a request's way


def test_a_request_is_stored_published_from_the_outbox_and_told_to_the_coordinators(hs: HelpSite) -> None:
    staff = hs.client(Role.STAFF)
    answer = submit(staff, good_form(site=PARTNER["id"], urgency="urgent", note="Do not publish this note"))
    assert (answer.status_code, answer.headers["location"]) == (303, "/helping/mine?sent=1")
    mine = staff.get(answer.headers["location"]).text
    assert EN("helping.sent", id=1) in mine
    assert re.search(r'data-request="1" data-status="new"', mine)
    # the MQTT message: in the durable outbox (not yet acknowledged by a broker: none runs here) and in the link
    [(key, topic, payload, qos, retain, delivered)] = hs.outbox()
    assert (key, topic, qos, retain, delivered) == ("hh:1:1", "cribwatch/test-site/helping-hands/1", 1, 0, None)
    assert b"Do not publish" not in payload
    sent = HelpingHandsPayload.model_validate_json(payload, context={"wire": True})
    assert (sent.request, sent.event, sent.status, sent.site, sent.site_label, sent.site_kind) == (
        1, "created", "new", "bso-vlinder", "BSO De Vlinder", "bso",
    )  # fmt: skip
    assert (sent.date, sent.start, sent.end, sent.people, sent.urgent, sent.reason) == (
        TODAY, "13:00", "17:30", 2, True, "illness",
    )  # fmt: skip
    assert sent.starts_at == dt.datetime(2026, 3, 2, 13, 0, tzinfo=ZONE).timestamp()
    assert (sent.contact, sent.requested_by, sent.by) == (USERS[Role.STAFF],) * 3
    buffered = list(hs.gateway.mqtt.offline_buffer._items)  # noqa: SLF001 - the link's buffer while offline
    assert [(i.key, i.topic, i.qos) for i in buffered] == [("hh:1:1", topic, 1)]
    # the coordinators' notice waits at low priority on their channel (the channels are not started here)
    assert hs.gateway.channels.health()["mqtt"].queued == 1
    # and the audit log says who asked (through the gateway's writer thread)
    hs.gateway.writer.start()
    try:
        assert hs.gateway.writer.flush(10.0)
    finally:
        hs.gateway.writer.stop()
    store = Store.open(hs.settings.store_path, site_id="test-site", readonly=True)
    try:
        assert store.schema_version == SCHEMA_VERSION
        actions = [(a.actor, a.action, a.source) for a in store.audit_log()]
    finally:
        store.close()
    assert (USERS[Role.STAFF], "helping_requested", "web") in actions


def test_only_urgent_requests_are_told_when_the_site_asks_so(tmp_path: Path) -> None:
    hs = HelpSite(tmp_path, notify="urgent")
    try:
        make_request(hs, urgency="normal")
        assert hs.gateway.channels.health()["mqtt"].queued == 0
        make_request(hs, urgency="urgent")
        assert hs.gateway.channels.health()["mqtt"].queued == 1
        assert len(hs.outbox()) == 2  # every request is published all the same
    finally:
        hs.accounts.close()


def test_a_coordinator_assigns_fills_and_closes_a_request_and_the_requester_sees_each_status(hs: HelpSite) -> None:
    request_id = make_request(hs, people="3")
    coordinator, staff = hs.client(Role.COORDINATOR), hs.client(Role.STAFF)
    listing = coordinator.get("/helping/requests").text
    assert f'data-request="{request_id}" data-status="new"' in listing

    answer = move(coordinator, request_id, to="assigned", comment="I will call the pool")
    assert (answer.status_code, answer.headers["location"]) == (303, f"/helping/requests/{request_id}?changed=1")
    page = coordinator.get(answer.headers["location"]).text
    assert EN("helping.changed") in page
    assert EN("helping.by_whom", who=USERS[Role.COORDINATOR]) in page
    mine = staff.get("/helping/mine").text
    assert f'data-request="{request_id}" data-status="assigned"' in mine
    assert EN("helping.status.assigned") in mine

    hs.clock.advance(60)
    assert move(coordinator, request_id, to="assigned", assignee="coor02").status_code == 303  # handed over
    hs.clock.advance(60)
    assert move(coordinator, request_id, to="partly_filled", filled="2").status_code == 303
    assert "2/3" in staff.get("/helping/mine").text
    hs.clock.advance(60)
    assert move(coordinator, request_id, to="filled").status_code == 303
    hs.clock.advance(60)
    assert move(coordinator, request_id, to="done").status_code == 303

    steps = [(m.status, m.assignee, m.filled, m.by, m.event) for m in hs.messages()]
    c = USERS[Role.COORDINATOR]
    assert steps == [
        ("new", None, 0, USERS[Role.STAFF], "created"),
        ("assigned", c, 0, c, "changed"),
        ("assigned", "coor02", 0, c, "changed"),
        ("partly_filled", "coor02", 2, c, "changed"),
        ("filled", "coor02", 3, c, "changed"),
        ("done", "coor02", 3, c, "changed"),
    ]
    assert [m.change for m in hs.messages()] == sorted(m.change for m in hs.messages())
    detail = coordinator.get(f"/helping/requests/{request_id}").text
    history = re.findall(r'<li data-status="(\w+)">([^<]*)', detail)
    assert [s for s, _ in history] == ["new", "assigned", "assigned", "partly_filled", "filled", "done"]
    assert history[1][1].startswith("2026-03-02 08:00 · coor01")
    assert history[5][1].startswith("2026-03-02 08:04 · coor01")
    assert "I will call the pool" in detail
    assert 'name="to"' not in detail  # done: nothing more to change
    assert f'data-request="{request_id}"' not in coordinator.get("/helping/requests").text  # open ones by default
    assert f'data-request="{request_id}" data-status="done"' in coordinator.get("/helping/requests?status=all").text


UNREACHABLE_INFLUX = {"targets": [{"name": "site", "url": "http://127.0.0.1:9", "database": "cribwatch"}]}


def test_each_request_and_status_change_is_an_influx_point_in_the_outbox_without_names_or_notes(
    tmp_path: Path,
) -> None:
    hs = HelpSite(tmp_path, influx=UNREACHABLE_INFLUX)
    try:
        request_id = make_request(hs, people="3", site=PARTNER["id"], urgency="urgent", note="Do not publish this note")
        other = make_request(hs, people="1")
        coordinator = hs.client(Role.COORDINATOR)
        for form in ({"to": "assigned"}, {"to": "partly_filled", "filled": "2"}, {"to": "filled"}, {"to": "done"}):
            hs.clock.advance(60)
            assert move(coordinator, request_id, **form).status_code == 303
        assert move(coordinator, other, to="cancelled").status_code == 303
        lines = hs.influx_lines()
    finally:
        hs.accounts.close()
    assert len(lines) == len(hs.outbox()) == 7, "one point with each MQTT message, in the same transaction"
    for line in lines:
        assert line.startswith("helping_hands,"), line
        for secret in ("Do not publish", USERS[Role.STAFF], USERS[Role.COORDINATOR], "Dolfijnen"):
            assert secret not in line
    mine = [line for line in lines if f"request_id={request_id}i" in line]
    statuses = [re.search(r",status=(\w+)", line).group(1) for line in mine]  # type: ignore[union-attr]
    assert statuses == ["new", "assigned", "partly_filled", "filled", "done"]
    assert all("requesting_site=bso-vlinder" in line and "site=test-site" in line for line in mine)
    assert all("reason=illness" in line and "urgency=urgent" in line for line in mine)
    assert [int(re.search(r"filled_change=(-?\d+)i", line).group(1)) for line in mine] == [0, 0, 2, 1, 0]  # type: ignore[union-attr]
    assert [int(re.search(r"open_requests=(\d+)i", line).group(1)) for line in mine] == [1, 1, 1, 1, 0]  # type: ignore[union-attr]
    assert int(mine[-1].rsplit(" ", 1)[1]) == int((NOW.timestamp() + 240) * 1e9), "the change's time"


def test_without_influx_targets_no_point_is_kept(hs: HelpSite) -> None:
    make_request(hs)
    assert len(hs.outbox()) == 1
    assert hs.influx_lines() == []


MOVES: list[tuple[str, list[dict[str, str]], dict[str, str], str]] = [
    ("new straight to done", [], {"to": "done"}, "not_allowed"),
    ("unknown status", [], {"to": "lost"}, "not_allowed"),
    ("assigned to a staff account", [], {"to": "assigned", "assignee": "staf01"}, "assignee_unknown"),
    ("assigned to nobody known", [], {"to": "assigned", "assignee": "ghost"}, "assignee_unknown"),
    (
        "partly filled for a staff account",
        [],
        {"to": "partly_filled", "filled": "1", "assignee": "staf01"},
        "assignee_unknown",
    ),
    ("filled for nobody known", [{"to": "assigned"}], {"to": "filled", "assignee": "ghost"}, "assignee_unknown"),
    ("the same assignee again", [{"to": "assigned"}], {"to": "assigned", "assignee": "coor01"}, "not_allowed"),
    ("partly filled with all", [], {"to": "partly_filled", "filled": "3"}, "filled_range"),
    ("partly filled with none", [], {"to": "partly_filled", "filled": "0"}, "filled_range"),
    ("partly filled unsaid", [], {"to": "partly_filled"}, "filled_range"),
    ("comment too long", [], {"to": "assigned", "comment": "c" * 201}, "comment_too_long"),
    ("after cancelled", [{"to": "cancelled"}], {"to": "assigned"}, "not_allowed"),
    ("after done", [{"to": "filled"}, {"to": "done"}], {"to": "partly_filled", "filled": "1"}, "not_allowed"),
]


@pytest.mark.parametrize(("before", "form", "code"), [m[1:] for m in MOVES], ids=[m[0] for m in MOVES])
def test_a_status_change_that_is_not_allowed_is_refused_with_its_message(
    hs: HelpSite, before: list[dict[str, str]], form: dict[str, str], code: str
) -> None:
    request_id = make_request(hs, people="3")
    coordinator = hs.client(Role.COORDINATOR)
    for step in before:
        assert move(coordinator, request_id, **step).status_code == 303
    sent = len(hs.outbox())
    answer = move(coordinator, request_id, **form)
    assert answer.status_code == (422 if form["to"] == "lost" else 409)
    text = html.unescape(answer.text)
    assert EN(f"helping.error.move_{code}", people=3) in text
    assert len(hs.outbox()) == sent  # nothing written, nothing published


def test_the_requester_may_cancel_their_own_request_and_nothing_else(hs: HelpSite) -> None:
    request_id = make_request(hs)
    owner, other, manager = hs.client(Role.STAFF), hs.client("staf02"), hs.client(Role.MANAGER)
    page = owner.get(f"/helping/requests/{request_id}").text
    assert re.findall(r'<option value="(\w+)">', page.split('name="to"')[1].split("</select>")[0]) == ["cancelled"]
    assert move(owner, request_id, to="assigned").status_code == 409
    assert EN("helping.error.move_not_yours") in html.unescape(move(owner, request_id, to="filled").text)
    assert other.get(f"/helping/requests/{request_id}").status_code == 404  # another's request: not shown
    assert move(other, request_id, to="cancelled").status_code == 404
    assert manager.get(f"/helping/requests/{request_id}").status_code == 404
    assert move(owner, request_id, to="cancelled").status_code == 303
    assert [m.status for m in hs.messages()] == ["new", "cancelled"]
    assert 'data-status="cancelled"' in owner.get("/helping/mine").text
    assert f'data-request="{request_id}"' not in other.get("/helping/mine").text


def test_a_manager_asks_too_and_sees_only_their_own_requests(hs: HelpSite) -> None:
    staff_id = make_request(hs, Role.STAFF)
    manager_id = make_request(hs, Role.MANAGER, contact_kind="phone", contact="+31 20 555 0100")
    mine = hs.client(Role.MANAGER).get("/helping/mine").text
    assert f'data-request="{manager_id}"' in mine
    assert f'data-request="{staff_id}"' not in mine


def test_an_unknown_request_is_404(hs: HelpSite) -> None:
    coordinator = hs.client(Role.COORDINATOR)
    assert coordinator.get("/helping/requests/99").status_code == 404
    assert move(coordinator, 99, to="assigned").status_code == 404
    assert coordinator.get("/helping/requests/abc").status_code == 422


def test_the_coordinators_filter_by_status_site_urgency_reason_and_dates(hs: HelpSite) -> None:
    a = make_request(hs, site=PARTNER["id"], urgency="urgent", reason="outing")
    b = make_request(hs, day="2026-03-05", reason="training")
    c = make_request(hs, day="2026-03-10")
    coordinator = hs.client(Role.COORDINATOR)
    assert move(coordinator, c, to="cancelled").status_code == 303

    def shown(query: str) -> list[int]:
        answer = coordinator.get(f"/helping/requests?{query}")
        assert answer.status_code == 200, answer.text
        return [int(n) for n in re.findall(r'data-request="(\d+)"', answer.text)]

    assert shown("") == [a, b]  # open ones, the soonest first
    assert shown("status=all") == [a, b, c]
    assert shown("status=cancelled") == [c]
    assert shown(f"site={PARTNER['id']}") == [a]
    assert shown("site=test-site&status=all") == [b, c]
    assert shown("urgency=urgent") == [a]
    assert shown("reason=training") == [b]
    assert shown("status=all&from_day=2026-03-03") == [b, c]
    assert shown("status=all&to_day=2026-03-05") == [a, b]
    assert shown("status=all&from_day=2026-03-03&to_day=2026-03-05") == [b]
    bad = coordinator.get("/helping/requests?from_day=someday&status=lost")
    assert bad.status_code == 422
    assert EN("helping.filter_bad", what="someday") in html.unescape(bad.text)
    assert EN("helping.filter_bad", what="lost") in html.unescape(bad.text)


# ------------------------------------------------------------------------------------------ settings, words


def test_the_helping_hands_section_is_checked() -> None:
    def load(helping: dict[str, Any]) -> Any:
        return settings_from_mapping(site_mapping(helping_hands=helping), env={})

    assert load({}).helping_hands.max_people == 8
    for bad, says in [
        ({"partner_sites": [PARTNER, PARTNER]}, "must be unique"),
        ({"partner_sites": [{"id": "test-site", "label": "Itself"}]}, "this site's own id"),
        ({"partner_sites": [{"id": "p", "label": "P", "kind": "zoo"}]}, "kind"),
        ({"coordinator_groups": ["nobody"]}, "no group 'nobody'"),
        ({"coordinators": [{"id": "c", "channels": [{"channel": "mqtt", "address": "s-f1"}]}]}, "sensor's id"),
        ({"coordinators": [{"id": "c", "channels": [{"channel": "mqtt", "address": "gateway"}]}]}, "reserved"),
        ({"max_people": 0}, "max_people"),
        ({"note_max": 5}, "note_max"),
        ({"notify": "sometimes"}, "notify"),
        ({"surprise": 1}, "surprise"),
    ]:
        with pytest.raises(ConfigError, match=says):
            load(bad)


def test_every_status_reason_urgency_kind_and_error_has_words_in_both_languages() -> None:
    keys = {lang: set(catalogue(lang)) for lang in LANGUAGES}
    assert keys["nl"] == keys["en"]
    wanted = {f"helping.status.{s.value}" for s in Status} | {f"helping.reason.{r.value}" for r in Reason}
    wanted |= {f"helping.urgency.{u.value}" for u in Urgency} | {f"helping.contact.{k.value}" for k in ContactKind}
    wanted |= {f"helping.kind.{k}" for k in ("kdv", "cmww", "bso", "psz", "other")}
    wanted |= {f"helping.error.{code}" for *_, code in RULES} | {f"helping.error.move_{m[-1]}" for m in MOVES}
    wanted.add("helping.error.move_not_yours")
    assert wanted - keys["en"] == set()
    templates = Path(__file__).resolve().parent.parent / "gateway" / "web" / "templates"
    used = set()
    for path in templates.glob("helping*.html"):
        used |= set(re.findall(r"""t\('(helping\.[a-z_.]+)'""", path.read_text(encoding="utf-8")))
    assert used - keys["en"] == set()


def test_requests_past_the_stores_retention_are_deleted_with_their_history(hs: HelpSite) -> None:
    old = make_request(hs)
    coordinator = hs.client(Role.COORDINATOR)
    assert move(coordinator, old, to="cancelled").status_code == 303
    hs.clock.advance(hs.settings.store.retention_days * 86400.0 + 86400.0)  # a day past its window's end
    new = make_request(
        hs, day=dt.datetime.fromtimestamp(hs.clock.time(), ZONE).date().isoformat(), start="23:00", end="23:30"
    )
    coordinator = hs.client(Role.COORDINATOR)  # a new login: the first one ended long ago
    shown = re.findall(r'data-request="(\d+)"', coordinator.get("/helping/requests?status=all").text)
    assert shown == [str(new)]
    assert coordinator.get(f"/helping/requests/{old}").status_code == 404


def test_a_store_that_cannot_take_the_request_says_so_and_keeps_the_input(hs: HelpSite) -> None:
    """Another connection holds the write lock past the busy timeout (as a stuck tool or a failing disk would):
    nothing is saved, the page says so, the form keeps what was typed, and it goes through once the lock is gone."""
    staff = hs.client(Role.STAFF)
    assert staff.get("/helping/mine").status_code == 200  # the pages' store is open (and pruned) before the lock
    blocker = Store.open(hs.settings.store_path, site_id="test-site")
    blocker.connection.execute("BEGIN IMMEDIATE")
    try:
        answer = submit(staff, good_form(room="Zeepaardjes"))
    finally:
        blocker.connection.execute("ROLLBACK")
        blocker.close()
    assert answer.status_code == 503
    assert EN("helping.error.store") in html.unescape(answer.text)
    assert 'value="Zeepaardjes"' in answer.text
    assert hs.outbox() == []
    assert submit(staff, good_form(room="Zeepaardjes")).status_code == 303


def test_a_manager_may_be_the_contact_and_a_start_typed_as_the_current_minute_is_taken(hs: HelpSite) -> None:
    hs.clock.advance(40.0)  # 08:00:40: the person typed 08:00
    request_id = make_request(hs, start="08:00", end="12:00", contact=USERS[Role.MANAGER])
    [sent] = hs.messages()
    assert (sent.request, sent.start, sent.contact) == (request_id, "08:00", USERS[Role.MANAGER])
    assert EN("helping.start_hint") in hs.client(Role.STAFF).get("/helping/new").text


def test_a_site_label_as_long_as_the_site_file_allows_goes_on_the_wire(tmp_path: Path) -> None:
    """The settings and the payload take one Label: the longest label a site file may give is carried."""
    label = "BSO " + "V" * (LABEL_MAX - 4)
    hs = HelpSite(tmp_path, partner_sites=[{**PARTNER, "label": label}])
    try:
        make_request(hs, site=PARTNER["id"])
        assert [m.site_label for m in hs.messages()] == [label]
        with pytest.raises(ConfigError, match="label"):
            make_settings(data=site_mapping(helping_hands={"partner_sites": [{**PARTNER, "label": label + "V"}]}))
    finally:
        hs.accounts.close()


def test_a_request_the_gateway_cannot_carry_is_a_clear_503_that_keeps_the_input(hs: HelpSite) -> None:
    """Something unexpected inside the store's transaction (here: a staff account made straight in the account
    store, its id longer than a payload takes) is rolled back and said on the form, never a 500."""
    long_id = "s" * 70
    hs.accounts.add_user(long_id, "staff", HASHED, 0.0)
    staff = hs.client(Role.STAFF)
    answer = submit(staff, good_form(room="Zeepaardjes", contact=long_id))
    assert answer.status_code == 503
    assert EN("helping.error.unexpected") in html.unescape(answer.text)
    assert 'value="Zeepaardjes"' in answer.text
    assert hs.outbox() == []
    assert "Zeepaardjes" not in staff.get("/helping/mine").text  # nothing half-saved
    assert submit(staff, good_form(room="Zeepaardjes")).status_code == 303


def test_a_change_the_gateway_cannot_carry_is_a_clear_503_and_nothing_changes(hs: HelpSite) -> None:
    """The same for a status change: a request row whose contact no payload takes (as another tool could leave it in
    the store) cannot be published; the move is rolled back and the page says so."""
    request_id = make_request(hs)
    db = sqlite3.connect(hs.settings.store_path)
    try:
        with db:
            db.execute("UPDATE helping_requests SET contact = ? WHERE id = ?", ("s" * 70, request_id))
    finally:
        db.close()
    answer = move(hs.client(Role.COORDINATOR), request_id, to="assigned")
    assert answer.status_code == 503
    assert EN("helping.error.unexpected") in html.unescape(answer.text)
    assert 'data-status="new"' in hs.client(Role.STAFF).get("/helping/mine").text
    assert [m.status for m in hs.messages()] == ["new"]
