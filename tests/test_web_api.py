"""The web app's API and pages on the app factory (FastAPI's TestClient), with a real gateway object (its core,
not started: no broker needed) and real accounts in the site's SQLite store."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from gpiozero.pins.mock import MockFactory

from gateway.app import Gateway
from gateway.domain.clock import FakeClock
from gateway.domain.events import LatchReading, TelemetryReading
from gateway.domain.vocab import LatchState, Source
from gateway.settings import ConfigError, settings_from_mapping
from gateway.store.accounts import AccountStore
from gateway.store.store import Store
from gateway.web.app import SESSION_COOKIE, create_app, wrap
from gateway.web.auth import Role, Throttle, hash_pin, new_token, token_hash
from gateway.web.i18n import LANGUAGES, catalogue, pick_language
from gateway.web.live import board_state
from gateway.web.server import GatewayAdapter
from tests.helpers import FAST_WIRELESS, SLOW_WIRELESS, make_settings, site_mapping
from tests.web_helpers import PASSWORD, USERS, add_users, csrf_of, login

WEB_DIR = Path(__file__).resolve().parent.parent / "gateway" / "web"


class Site:
    def __init__(self, tmp_path: Path, **more_web: Any) -> None:
        self.clock = FakeClock()
        web = {"port": 8099, "login_failures": 3, "lockout_s": 60, **more_web}
        store = {"path": str(tmp_path / "site.sqlite3")}  # never the system's state dir
        self.settings = make_settings(data=site_mapping(web=web, store=store))
        self.gateway = Gateway(self.settings, clock=self.clock, pin_factory=MockFactory())
        self.accounts = AccountStore.open(self.settings.store_path, site_id=self.settings.site.id)
        add_users(self.accounts)
        self.app = create_app(
            self.settings,
            GatewayAdapter(self.gateway),
            self.accounts,
            self.gateway.web_changes,
            now=self.clock.time,
        )
        self.client_app = wrap(self.app)

    def tablet(self, room: str = "fast", name: str = "fast-wall") -> TestClient:
        """A wall tablet of ``room``, after its one visit to /device/<token>."""
        token = new_token()
        self.accounts.add_device(token_hash(token), name, room, "tablet-csrf-" + name, self.clock.time())
        client = TestClient(self.client_app)
        answer = client.get(f"/device/{token}", follow_redirects=False)
        assert (answer.status_code, answer.headers["location"]) == (303, f"/board?room={room}")
        return client

    def client(self, role: Role | None = None) -> TestClient:
        client = TestClient(self.client_app)
        if role is not None:
            answer = login(client, USERS[role])
            assert answer.status_code == 303, answer.text
        return client


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = Site(tmp_path)
    yield s
    s.accounts.close()


def _routes(app: Any) -> list[APIRoute]:
    return [r for r in app.routes if isinstance(r, APIRoute) and not r.path.startswith("/api/docs")]


SAMPLE = {
    "alarm_id": "1-1",
    "crib": FAST_WIRELESS,
    "code": "en",
    "username": "mana01",
    "action": "disable",
    "name": "fast-wall",
    "request_id": "1",
}


def _path(route: APIRoute) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: SAMPLE[m.group(1)], route.path)


# ------------------------------------------------------------------------------------------ roles


def test_every_route_declares_its_roles(site: Site) -> None:
    routes = _routes(site.app)
    assert len(routes) >= 12
    for route in routes:
        roles = (route.openapi_extra or {}).get("x-roles")
        assert roles, f"{route.path} declares no roles"
        assert set(roles) <= {r.value for r in Role} | {"anonymous", "device"}, route.path
    documented = site.client().get("/api/openapi.json").json()
    ack_roles = documented["paths"]["/api/alarms/{alarm_id}/ack"]["post"]["x-roles"]
    assert ack_roles == ["admin", "manager", "staff", "device"]


def test_each_route_refuses_every_other_role_and_anonymous(site: Site) -> None:
    clients = {role: site.client(role) for role in Role}
    csrf = {role: csrf_of(client) for role, client in clients.items()}
    anonymous = site.client()
    tablet = site.tablet()
    checked = 0
    for route in _routes(site.app):
        allowed = set((route.openapi_extra or {})["x-roles"])
        if allowed == {"anonymous"}:
            continue
        method = next(iter(route.methods))
        path = _path(route)
        refused = anonymous.request(method, path, follow_redirects=False)
        if method == "GET" and not path.startswith("/api/"):
            assert (refused.status_code, refused.headers["location"]) == (303, "/login"), path
        else:
            assert refused.status_code == 401, path
        if "device" not in allowed:
            answer = tablet.request(method, path, headers={"X-CSRF-Token": "tablet-csrf-fast-wall"}, json={"on": False})
            assert answer.status_code == 403, (path, "tablet", answer.text)
        for role in Role:
            if role.value in allowed:
                continue
            answer = clients[role].request(
                method, path, headers={"X-CSRF-Token": csrf[role]}, json={"on": False}, follow_redirects=False
            )
            assert answer.status_code == 403, (path, role, answer.text)
            checked += 1
    assert checked >= 15
    # The positive side: the roles a page names get it.
    assert clients[Role.STAFF].get("/board").status_code == 200
    assert clients[Role.TECHNICIAN].get("/console").status_code == 200
    assert clients[Role.STAFF].get("/console").status_code == 403


# ------------------------------------------------------------------------------------------ login, CSRF, throttle


def test_login_sets_a_strict_httponly_session_cookie_and_logout_ends_it(site: Site) -> None:
    client = site.client()
    answer = login(client, USERS[Role.STAFF])
    assert (answer.status_code, answer.headers["location"]) == (303, "/board")
    cookie = answer.headers["set-cookie"]
    assert f"{SESSION_COOKIE}=" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "samesite=strict" in cookie.lower()
    assert "Secure" not in cookie  # not configured here: secure_cookies = false
    assert client.get("/board").status_code == 200
    assert client.post("/logout", follow_redirects=False).status_code == 403  # no CSRF token
    assert client.post("/logout", data={"csrf": csrf_of(client)}, follow_redirects=False).status_code == 303
    assert client.get("/api/board").status_code == 401


def test_the_store_keeps_neither_password_nor_session_token(site: Site, tmp_path: Path) -> None:
    client = site.client(Role.STAFF)
    token = client.cookies.get(SESSION_COOKIE)
    raw = (tmp_path / "site.sqlite3").read_bytes() + (tmp_path / "site.sqlite3-wal").read_bytes()
    assert PASSWORD.encode() not in raw
    assert token is not None
    assert token.encode() not in raw
    assert b"$argon2id$" in raw


def test_each_role_lands_where_it_works(site: Site) -> None:
    landing = {role: login(site.client(), USERS[role]).headers["location"] for role in Role}
    assert landing == {
        Role.STAFF: "/board",
        Role.MANAGER: "/board",
        Role.TECHNICIAN: "/console",
        Role.COORDINATOR: "/helping/requests",
        Role.ADMIN: "/board",
    }
    coordinator = site.client(Role.COORDINATOR)
    assert coordinator.get("/", follow_redirects=False).headers["location"] == "/helping/requests"
    assert coordinator.get("/helping/requests").status_code == 200
    assert coordinator.get("/welcome").status_code == 200


def test_a_wrong_password_and_an_unknown_account_read_the_same(site: Site) -> None:
    wrong = login(site.client(), USERS[Role.STAFF], "not the password")
    unknown = login(site.client(), "nobody", PASSWORD)
    assert wrong.status_code == unknown.status_code == 401
    assert "Onjuist medewerkernummer of wachtwoord" in wrong.text  # Dutch by default
    assert SESSION_COOKIE not in wrong.headers.get("set-cookie", "")


def test_login_without_its_csrf_token_is_refused(site: Site) -> None:
    client = site.client()
    client.get("/login")
    answer = client.post("/login", data={"username": USERS[Role.STAFF], "password": PASSWORD, "csrf": "forged"})
    assert answer.status_code == 403
    fresh = TestClient(site.client_app)  # no cookie from the login page at all (a cross-site form post)
    answer = fresh.post("/login", data={"username": USERS[Role.STAFF], "password": PASSWORD, "csrf": "x"})
    assert answer.status_code == 403


def test_posts_without_the_session_csrf_token_are_refused(site: Site) -> None:
    tech = site.client(Role.TECHNICIAN)
    assert tech.post(f"/api/cribs/{FAST_WIRELESS}/test-alarm").status_code == 403
    forged = tech.post(f"/api/cribs/{FAST_WIRELESS}/test-alarm", headers={"X-CSRF-Token": "forged"})
    assert forged.status_code == 403
    assert not site.gateway.snapshot().open_alarms  # nothing happened


def test_login_throttling_per_account_then_per_address(site: Site) -> None:
    staff = USERS[Role.STAFF]
    for _ in range(3):
        assert login(site.client(), staff, "wrong password!").status_code == 401
    locked = login(site.client(), staff)  # the right password, but the account is locked
    assert locked.status_code == 429
    assert "Te veel mislukte pogingen" in locked.text
    site.clock.advance(61)
    assert login(site.client(), staff).status_code == 303
    # The address guessing across accounts: locked too (its failures counted beside the account's).
    for name in ("x1", "x2", "x3"):
        login(site.client(), name, "guess guess guess")
    assert login(site.client(), USERS[Role.MANAGER]).status_code == 429
    assert site.app.state.throttle.refused == 2


def test_throttle_forgets_failures_outside_its_window() -> None:
    throttle = Throttle(3, window_s=10, lockout_s=100)
    keys = ["user:a"]
    throttle.failed(keys, 0)
    throttle.failed(keys, 1)
    throttle.failed(keys, 20)  # the first two are out of the window
    assert throttle.locked(keys, 21) is None
    throttle.failed(keys, 22)
    throttle.failed(keys, 23)
    assert throttle.locked(keys, 24) == pytest.approx(99)
    assert throttle.locked(keys, 124) is None


# ------------------------------------------------------------------------------------------ the board


def _tile(client: TestClient, crib: str) -> dict[str, Any]:
    tiles = client.get("/api/board").json()["tiles"]
    return next(t for t in tiles if t["crib_id"] == crib)


def test_a_test_alarm_from_the_console_shows_on_the_board_and_ends_with_its_ack(site: Site) -> None:
    tech, staff = site.client(Role.TECHNICIAN), site.client(Role.STAFF)
    started = tech.post(f"/api/cribs/{FAST_WIRELESS}/test-alarm", headers={"X-CSRF-Token": csrf_of(tech)})
    assert started.status_code == 200, started.text
    tile = _tile(staff, FAST_WIRELESS)
    assert (tile["status"], tile["test"], tile["priority"]) == ("alarm", True, "high")
    (alarm,) = tile["alarms"]
    mine = staff.post(f"/api/alarms/{alarm['alarm_id']}/ack", headers={"X-CSRF-Token": csrf_of(staff)})
    assert mine.json()["result"] == "yours"
    assert _tile(staff, FAST_WIRELESS)["alarms"] == []


def test_acknowledge_from_the_board_answers_yours_then_taken_by_whom(site: Site) -> None:
    staff, manager = site.client(Role.STAFF), site.client(Role.MANAGER)
    site.gateway.submit(
        LatchReading(
            sensor_id="s-f1", state=LatchState.OPEN, boot=1, seq=1, sensor_ts=site.clock.time(), source=Source.MQTT
        )
    )
    site.clock.advance(1)
    site.gateway.core.advance()  # the running gateway's timer loop does this
    tile = _tile(staff, FAST_WIRELESS)
    assert (tile["status"], tile["latch"], tile["test"]) == ("alarm", "open", False)
    (alarm,) = tile["alarms"]
    assert alarm["acknowledged_by"] is None

    mine = staff.post(f"/api/alarms/{alarm['alarm_id']}/ack", headers={"X-CSRF-Token": csrf_of(staff)})
    assert mine.status_code == 200
    assert mine.json()["result"] == "yours"
    taken = manager.post(f"/api/alarms/{alarm['alarm_id']}/ack", headers={"X-CSRF-Token": csrf_of(manager)})
    assert taken.status_code == 409
    assert (taken.json()["result"], taken.json()["acknowledged_by"]) == ("taken", USERS[Role.STAFF])
    tile = _tile(manager, FAST_WIRELESS)
    assert tile["status"] == "acknowledged"
    assert tile["alarms"][0]["acknowledged_by"] == USERS[Role.STAFF]
    unknown = staff.post("/api/alarms/no-such/ack", headers={"X-CSRF-Token": csrf_of(staff)})
    assert (unknown.status_code, unknown.json()["result"]) == (404, "refused")


def test_the_board_shows_low_battery_and_filters_a_room(site: Site) -> None:
    site.gateway.submit(
        TelemetryReading(
            sensor_id="s-s1",
            boot=1,
            seq=1,
            sensor_ts=site.clock.time(),
            battery_pct=9,
            rssi_dbm=-70,
            firmware="1.2.0",
            uptime_s=5,
            interval_s=30,
        )
    )
    staff = site.client(Role.STAFF)
    tile = _tile(staff, SLOW_WIRELESS)
    assert tile["low_battery"] is True
    assert tile["battery_pct"] == 9
    slow = staff.get("/api/board", params={"room": "slow"}).json()["tiles"]
    assert {t["room_id"] for t in slow} == {"slow"}
    assert staff.get("/board", params={"room": "nope"}).status_code == 404
    assert staff.get("/api/board").json()["broker"] is False  # this gateway object never connected
    state = board_state(site.gateway.snapshot(), battery_low_pct=20)
    assert json.loads(json.dumps(state))["tiles"][0]["crib_id"] == FAST_WIRELESS


def test_maintenance_on_and_off_from_the_console(site: Site) -> None:
    tech = site.client(Role.TECHNICIAN)
    headers = {"X-CSRF-Token": csrf_of(tech)}
    url = f"/api/cribs/{FAST_WIRELESS}/maintenance"
    assert tech.post(url, headers=headers, json={"on": True, "reason": " ", "hours": 2}).status_code == 422
    assert tech.post(url, headers=headers, json={"on": True, "reason": "battery", "hours": 9999}).status_code == 422
    assert tech.post(url, headers=headers, json={"on": "yes"}).status_code == 422
    assert tech.post("/api/cribs/nope/maintenance", headers=headers, json={"on": False}).status_code == 404
    on = tech.post(url, headers=headers, json={"on": True, "reason": "new battery", "hours": 2})
    assert on.status_code == 200, on.text
    tile = _tile(tech, FAST_WIRELESS)
    assert (tile["status"], tile["maintenance_reason"]) == ("maintenance", "new battery")
    assert tile["maintenance_until"] == pytest.approx(site.clock.time() + 7200)
    console = tech.get("/api/console").json()
    row = next(s for s in console["sensors"] if s["crib_id"] == FAST_WIRELESS)
    assert row["maintenance"]["by"] == USERS[Role.TECHNICIAN]
    assert "accepted" in console["stats"]
    assert tech.post(url, headers=headers, json={"on": False}).status_code == 200
    assert _tile(tech, FAST_WIRELESS)["status"] != "maintenance"
    again = tech.post(url, headers=headers, json={"on": False})
    assert (again.status_code, again.json()["reason"]) == (409, "not_in_maintenance")


# ------------------------------------------------------------------------------------------ pages, languages


def test_pages_carry_the_security_headers(site: Site) -> None:
    answer = site.client().get("/login")
    csp = answer.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert answer.headers["x-frame-options"] == "DENY"
    assert "<script>" not in answer.text  # no inline script: only src= and a JSON data block


def test_language_follows_the_browser_and_the_switch(site: Site) -> None:
    client = site.client()
    assert "Inloggen" in client.get("/login").text
    assert "Log in" in client.get("/login", headers={"Accept-Language": "en-GB,en;q=0.9,nl;q=0.5"}).text
    client.get("/lang/nl", follow_redirects=False)
    assert "Inloggen" in client.get("/login", headers={"Accept-Language": "en"}).text
    assert client.get("/lang/fr", follow_redirects=False).status_code == 404
    assert pick_language(None, "de-DE, en;q=0.3, nl;q=0.8") == "nl"
    assert pick_language(None, "fr") == "nl"


def test_catalogues_have_the_same_keys_and_every_key_the_pages_use() -> None:
    keys = {lang: set(catalogue(lang)) for lang in LANGUAGES}
    assert keys["nl"] == keys["en"]
    used: set[str] = set()
    for path in [*WEB_DIR.joinpath("templates").glob("*.html"), *WEB_DIR.joinpath("static").glob("*.js")]:
        used |= set(re.findall(r"""\bt\(\s*['"]([a-z_]+\.[a-z_.]+|[a-z_]+)['"]""", path.read_text(encoding="utf-8")))
    dynamic = {f"role.{r.value}" for r in Role}
    dynamic |= {f"status.{s}" for s in ("alarm", "acknowledged", "closed", "open", "offline", "maintenance", "unknown")}
    dynamic |= {f"priority.{p}" for p in ("high", "medium", "low")}
    dynamic |= {f"kind.{k}" for k in ("crib_open", "sensor_offline", "battery_low", "gateway_fault")}
    assert len(used) > 40
    assert (used | dynamic) - keys["en"] == set()


# ------------------------------------------------------------------------------------------ settings


def test_plain_http_on_the_site_network_is_refused_outside_demo_mode() -> None:
    def settings(*, demo: bool, **web: Any) -> Any:
        data = site_mapping(web=web)
        data["site"] = {**data["site"], "demo": demo}
        env = {"CRIBWATCH_MQTT_USERNAME": "gw", "CRIBWATCH_MQTT_PASSWORD": "pw"}
        return settings_from_mapping(data, env=env)

    with pytest.raises(ConfigError, match=r"web\.plain_http"):
        settings(demo=False, host="0.0.0.0")
    assert settings(demo=False, host="0.0.0.0", secure_cookies=True).web.secure_cookies
    assert settings(demo=False, host="0.0.0.0", plain_http=True).web.plain_http
    assert settings(demo=False).web.host == "127.0.0.1"
    assert settings(demo=True, host="0.0.0.0").web is not None
    with pytest.raises(ConfigError, match=r"web\.port"):
        settings(demo=True, port=0)


# ------------------------------------------------------------------------------------------ wall tablets


def _open_crib(site: Site, sensor: str, seq: int = 1) -> None:
    site.gateway.submit(
        LatchReading(
            sensor_id=sensor, state=LatchState.OPEN, boot=1, seq=seq, sensor_ts=site.clock.time(), source=Source.MQTT
        )
    )
    site.clock.advance(11)  # past the slow room's grace too
    site.gateway.core.advance()


def test_a_wall_tablet_shows_its_room_only_and_acknowledges_for_the_person_picked(site: Site) -> None:
    tablet = site.tablet("fast")
    headers = {"X-CSRF-Token": "tablet-csrf-fast-wall"}
    assert tablet.get("/board").status_code == 200
    assert {t["room_id"] for t in tablet.get("/api/board").json()["tiles"]} == {"fast"}
    assert tablet.get("/api/board", params={"room": "slow"}).status_code == 403
    assert tablet.get("/console").status_code == 403
    people = tablet.get("/api/board/people").json()["people"]
    assert sorted(people) == sorted(USERS[r] for r in (Role.STAFF, Role.MANAGER, Role.ADMIN))

    _open_crib(site, "s-f1")
    _open_crib(site, "s-s1")
    alarms = {
        t["crib_id"]: t["alarms"][0]["alarm_id"]
        for t in site.client(Role.STAFF).get("/api/board").json()["tiles"]
        if t["alarms"] and t["crib_id"] in (FAST_WIRELESS, SLOW_WIRELESS)
    }
    fast, slow = alarms[FAST_WIRELESS], alarms[SLOW_WIRELESS]
    assert tablet.post(f"/api/alarms/{fast}/ack", headers=headers).status_code == 422  # nobody picked
    assert tablet.post(f"/api/alarms/{fast}/ack", headers=headers, json={"by": "nobody"}).status_code == 422
    tech = USERS[Role.TECHNICIAN]
    assert tablet.post(f"/api/alarms/{fast}/ack", headers=headers, json={"by": tech}).status_code == 422
    assert tablet.post(f"/api/alarms/{slow}/ack", headers=headers, json={"by": USERS[Role.STAFF]}).status_code == 403
    assert tablet.post(f"/api/alarms/{fast}/ack", json={"by": USERS[Role.STAFF]}).status_code == 403  # no CSRF
    mine = tablet.post(f"/api/alarms/{fast}/ack", headers=headers, json={"by": USERS[Role.STAFF]})
    assert (mine.status_code, mine.json()["result"]) == (200, "yours")
    (alarm,) = site.gateway.core.crib_state(FAST_WIRELESS).alarms
    assert alarm.acknowledged_by == USERS[Role.STAFF]


def test_a_removed_tablet_token_opens_nothing(site: Site) -> None:
    tablet = site.tablet("slow", name="slow-wall")
    assert tablet.get("/api/board").status_code == 200
    assert site.accounts.remove_device("slow-wall")
    assert tablet.get("/api/board").status_code == 401
    assert TestClient(site.client_app).get("/device/forged", follow_redirects=False).status_code == 404


# ------------------------------------------------------------------------------------------ the admin page


def test_an_admin_adds_disables_and_enables_accounts_on_the_admin_page(site: Site) -> None:
    admin = site.client(Role.ADMIN)
    csrf = csrf_of(admin)
    page = admin.get("/admin")
    assert page.status_code == 200
    assert 'data-user="staf01"' in page.text
    bad = admin.post(
        "/admin/users", data={"csrf": csrf, "username": "Anna de Vries", "role": "staff", "password": "x" * 12}
    )
    assert bad.status_code == 422
    assert 'value="Anna de Vries"' in bad.text  # the input is kept beside the message
    short = admin.post("/admin/users", data={"csrf": csrf, "username": "m777", "role": "staff", "password": "short"})
    assert short.status_code == 422
    forged = admin.post(
        "/admin/users", data={"csrf": "forged", "username": "m777", "role": "staff", "password": PASSWORD}
    )
    assert forged.status_code == 403
    added = admin.post("/admin/users", data={"csrf": csrf, "username": "m777", "role": "staff", "password": PASSWORD})
    assert added.status_code == 200, added.text
    again = admin.post("/admin/users", data={"csrf": csrf, "username": "m777", "role": "staff", "password": PASSWORD})
    assert again.status_code == 422
    newcomer = site.client()
    assert login(newcomer, "m777").status_code == 303

    assert admin.post("/admin/users/m777/disable", data={"csrf": csrf}).status_code == 200
    assert newcomer.get("/api/board").status_code == 401  # a disabled account's sessions end
    assert login(site.client(), "m777").status_code == 401
    assert admin.post("/admin/users/m777/enable", data={"csrf": csrf}).status_code == 200
    assert login(site.client(), "m777").status_code == 303
    assert admin.post(f"/admin/users/{USERS[Role.ADMIN]}/disable", data={"csrf": csrf}).status_code == 422
    assert admin.post("/admin/users/nobody/disable", data={"csrf": csrf}).status_code == 404


def test_an_admin_removes_a_wall_tablet(site: Site) -> None:
    tablet = site.tablet("fast", name="fast-wall")
    admin = site.client(Role.ADMIN)
    assert "fast-wall" in admin.get("/admin").text
    assert admin.post("/admin/devices/fast-wall/remove", data={"csrf": csrf_of(admin)}).status_code == 200
    assert tablet.get("/api/board").status_code == 401


def test_a_site_that_asks_for_a_pin_on_tablets_checks_it_and_throttles_wrong_ones(tmp_path: Path) -> None:
    site = Site(tmp_path, tablet_pin=True)
    try:
        site.accounts.set_pin_hash(USERS[Role.STAFF], hash_pin("4711"))
        tablet = site.tablet("fast")
        headers = {"X-CSRF-Token": "tablet-csrf-fast-wall"}
        assert 'data-pin="yes"' in tablet.get("/board").text
        _open_crib(site, "s-f1")
        (alarm,) = site.gateway.core.crib_state(FAST_WIRELESS).alarms
        url = f"/api/alarms/{alarm.alarm_id}/ack"
        staff, manager = USERS[Role.STAFF], USERS[Role.MANAGER]
        assert tablet.post(url, headers=headers, json={"by": manager, "pin": "1234"}).status_code == 422  # no PIN
        assert tablet.post(url, headers=headers, json={"by": staff}).status_code == 403
        for _ in range(2):
            assert tablet.post(url, headers=headers, json={"by": staff, "pin": "0000"}).status_code == 403
        assert tablet.post(url, headers=headers, json={"by": staff, "pin": "4711"}).status_code == 429  # locked
        site.clock.advance(61)
        mine = tablet.post(url, headers=headers, json={"by": staff, "pin": "4711"})
        assert (mine.status_code, mine.json()["result"]) == (200, "yours")
        assert site.gateway.core.crib_state(FAST_WIRELESS).alarms[0].acknowledged_by == staff
        with pytest.raises(ValueError, match="4 to 8 digits"):
            hash_pin("12ab")
    finally:
        site.accounts.close()


def _audit(site: Site) -> list[tuple[str, str, dict[str, str]]]:
    """The audit rows the web app wrote (the gateway's writer thread, started by the test, commits them)."""
    assert site.gateway.writer.flush()
    store = Store.open(site.settings.store_path, site_id=site.settings.site.id)
    try:
        return [(e.actor, e.action, json.loads(e.detail or "{}")) for e in store.audit_log() if e.source == "web"]
    finally:
        store.close()


def test_an_admin_changes_a_role_and_resets_a_password_never_their_own(site: Site) -> None:
    site.gateway.writer.start()
    admin, staff = site.client(Role.ADMIN), site.client(Role.STAFF)
    csrf, me, staff_id = csrf_of(admin), USERS[Role.ADMIN], USERS[Role.STAFF]
    assert staff.get("/console").status_code == 403
    promoted = admin.post(f"/admin/users/{staff_id}/role", data={"csrf": csrf, "role": "technician"})
    assert promoted.status_code == 200, promoted.text
    assert staff.get("/console").status_code == 200  # the open session has the new role at its next request
    assert admin.post(f"/admin/users/{staff_id}/role", data={"csrf": csrf, "role": "boss"}).status_code == 422
    assert admin.post("/admin/users/nobody/role", data={"csrf": csrf, "role": "staff"}).status_code == 404
    assert admin.post(f"/admin/users/{me}/role", data={"csrf": csrf, "role": "staff"}).status_code == 422
    assert admin.post(f"/admin/users/{staff_id}/role", data={"csrf": "forged", "role": "admin"}).status_code == 403
    assert site.accounts.user(me).role == "admin"  # type: ignore[union-attr]

    new = "a brand new password"
    assert admin.post(f"/admin/users/{staff_id}/password", data={"csrf": csrf, "password": "short"}).status_code == 422
    reset = admin.post(f"/admin/users/{staff_id}/password", data={"csrf": csrf, "password": new})
    assert reset.status_code == 200, reset.text
    assert staff.get("/api/board").status_code == 401  # sessions under the old password end
    assert login(site.client(), staff_id).status_code == 401
    assert login(site.client(), staff_id, new).status_code == 303
    assert admin.post(f"/admin/users/{me}/password", data={"csrf": csrf, "password": new}).status_code == 422
    assert login(site.client(), me).status_code == 303  # an admin's own password is not reset here
    site.gateway.writer.stop()
    assert _audit(site) == [
        (me, "account_role_changed", {"account": staff_id, "role": "technician"}),
        (me, "account_password_reset", {"account": staff_id}),
    ]
    assert new not in json.dumps(_audit(site))


def test_an_admin_adds_a_wall_tablet_and_its_address_is_shown_once(site: Site) -> None:
    site.gateway.writer.start()
    admin = site.client(Role.ADMIN)
    csrf = csrf_of(admin)
    assert admin.post("/admin/devices", data={"csrf": "forged", "name": "w1", "room": "fast"}).status_code == 403
    assert admin.post("/admin/devices", data={"csrf": csrf, "name": "x y", "room": "fast"}).status_code == 422
    assert admin.post("/admin/devices", data={"csrf": csrf, "name": "w1", "room": "attic"}).status_code == 422
    added = admin.post("/admin/devices", data={"csrf": csrf, "name": "fast-wall", "room": "fast"})
    assert added.status_code == 200, added.text
    assert added.headers["cache-control"] == "no-store"
    found = re.search(r'id="tablet-link">http://testserver/device/([\w-]+)<', added.text)
    assert found, added.text
    token = found.group(1)
    assert token not in admin.get("/admin").text  # shown once only
    again = admin.post("/admin/devices", data={"csrf": csrf, "name": "fast-wall", "room": "slow"})
    assert again.status_code == 422
    tablet = TestClient(site.client_app)
    assert tablet.get(f"/device/{token}", follow_redirects=False).headers["location"] == "/board?room=fast"
    assert {t["room_id"] for t in tablet.get("/api/board").json()["tiles"]} == {"fast"}
    site.gateway.writer.stop()
    assert _audit(site) == [(USERS[Role.ADMIN], "tablet_added", {"room": "fast", "tablet": "fast-wall"})]


def test_everyone_changes_their_own_password_with_the_old_one(site: Site) -> None:
    site.gateway.writer.start()
    coordinator = site.client(Role.COORDINATOR)
    other = site.client(Role.COORDINATOR)  # the same account on another device
    name, csrf = USERS[Role.COORDINATOR], csrf_of(coordinator)
    assert 'href="/account/password"' in coordinator.get("/welcome").text
    assert coordinator.get("/account/password").status_code == 200
    new = "my own new password"
    form = {"csrf": csrf, "old": PASSWORD, "new": new, "again": new}
    assert coordinator.post("/account/password", data={**form, "csrf": "forged"}).status_code == 403
    assert coordinator.post("/account/password", data={**form, "again": new + "!"}).status_code == 422
    assert coordinator.post("/account/password", data={**form, "new": "short", "again": "short"}).status_code == 422
    wrong = coordinator.post("/account/password", data={**form, "old": "not my password"})
    assert wrong.status_code == 403
    assert "Je huidige wachtwoord klopt niet" in wrong.text
    changed = coordinator.post("/account/password", data=form)
    assert changed.status_code == 200, changed.text
    assert coordinator.get("/welcome").status_code == 200  # this session stays
    assert other.get("/welcome", follow_redirects=False).status_code == 303  # the other one ended
    assert login(site.client(), name).status_code == 401
    assert login(site.client(), name, new).status_code == 303
    # Wrong old passwords are throttled: a borrowed session cannot guess it ...
    for _ in range(3):  # the change above cleared the form's count
        assert coordinator.post("/account/password", data={**form, "old": "guess guess"}).status_code == 403
    assert coordinator.post("/account/password", data={**form, "old": new}).status_code == 429
    # ... on a count of their own: the guesses lock the form, not the real user's logins.
    assert login(site.client(), name, new).status_code == 303
    site.gateway.writer.stop()
    assert _audit(site) == [(name, "password_changed", {"account": name})]


def test_the_console_shows_the_gateways_version_uptime_broker_and_outbox(site: Site) -> None:
    tech = site.client(Role.TECHNICIAN)
    site.clock.advance(3 * 3600)
    gateway = tech.get("/api/console").json()["gateway"]
    assert gateway["version"] == version("cribwatch")
    assert gateway["uptime_s"] == pytest.approx(3 * 3600, abs=1)
    assert (gateway["broker"], gateway["mqtt_outbox"]) == (False, len(site.gateway.mqtt.offline_buffer))
    assert gateway["alert_latency_ms"] is None  # no alarm yet
    site.gateway.recent_alert_latency_s.extend([0.004, 0.002, 0.010])
    assert tech.get("/api/console").json()["gateway"]["alert_latency_ms"] == {
        "n": 3,
        "last": 10.0,
        "p50": 4.0,
        "max": 10.0,
    }
