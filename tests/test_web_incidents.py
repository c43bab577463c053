"""The manager's incident log, response times, CSV exports and monthly report on the app factory (FastAPI's
TestClient), reading a real SQLite store written through the store's own methods (tests/incident_helpers.py)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gateway.web.auth import Role
from gateway.web.incidents import INCIDENT_READERS
from tests.incident_helpers import DAY, LogWriter, small_log
from tests.test_web_api import Site, _routes

ROUTES = {
    "/incidents",
    "/incidents/stats",
    "/incidents/report",
    "/incidents/{alarm_id}",
    "/api/incidents",
    "/api/incidents.csv",
    "/api/incidents/stats",
    "/api/incidents/stats.csv",
    "/api/incidents/{alarm_id}",
}


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Site, LogWriter]]:
    s = Site(tmp_path)
    log = small_log(s.settings.store_path, s.settings.site.id, s.clock.time())
    yield s, log
    s.accounts.close()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, LogWriter, TestClient]]:
    """One site for the tests that only read (argon2 makes every login cost): its log and a manager's client."""
    s = Site(tmp_path_factory.mktemp("incidents"))
    log = small_log(s.settings.store_path, s.settings.site.id, s.clock.time())
    yield s, log, s.client(Role.MANAGER)
    s.accounts.close()


def test_every_incident_route_admits_managers_and_admins_and_refuses_everyone_else(
    site: tuple[Site, LogWriter],
) -> None:
    s, log = site
    mine = [r for r in _routes(s.app) if r.path in ROUTES]
    assert {r.path for r in mine} == ROUTES
    clients = {role: s.client(role) for role in Role}
    anonymous = s.client()
    tablet = s.tablet()
    alarm_id = log.made[0].alarm_id
    for route in mine:
        assert (route.openapi_extra or {})["x-roles"] == ["admin", "manager"], route.path
        path = route.path.replace("{alarm_id}", alarm_id)
        for role in Role:
            answer = clients[role].get(path, follow_redirects=False)
            expected = 200 if role in INCIDENT_READERS else 403
            assert answer.status_code == expected, (path, role, answer.text[:200])
        refused = anonymous.get(path, follow_redirects=False)
        if path.startswith("/api/"):
            assert refused.status_code == 401, path
        else:
            assert (refused.status_code, refused.headers["location"]) == (303, "/login"), path
        assert tablet.get(path, follow_redirects=False).status_code == 403, path


def test_the_log_lists_every_incident_newest_first_with_its_response_times(
    shared: tuple[Site, LogWriter, TestClient],
) -> None:
    _, log, manager = shared
    body = manager.get("/api/incidents").json()
    assert body["total"] == len(log.made) == 10
    got = [i["alarm_id"] for i in body["incidents"]]
    assert got == [m.alarm_id for m in sorted(log.made, key=lambda m: m.raised_at, reverse=True)]
    assert (body["older"], body["newer"]) == (None, None)
    by_id = {i["alarm_id"]: i for i in body["incidents"]}
    reminded = by_id[log.made[2].alarm_id]
    assert reminded["time_to_acknowledge_s"] == 30.0  # the first answer stands, though the reminder cleared it
    assert reminded["acknowledged_by"] is None  # the reminder cleared the standing acknowledgement...
    assert (reminded["first_acknowledged_by"], reminded["first_acknowledged_device"]) == ("staf01", "web-board")
    assert reminded["time_to_resolve_s"] == 180.0
    still_open = by_id[log.made[-1].alarm_id]
    assert (still_open["open"], still_open["time_to_acknowledge_s"], still_open["resolved_at"]) == (True, None, None)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("room=fast", {1, 2, 3, 4, 9}),
        ("room=fast&tests=hide", {1, 2, 3, 4}),
        ("crib=s-2", {6, 8}),
        ("kind=sensor_offline", {8}),
        ("priority=medium", {8}),
        ("priority=high&room=slow", {5, 6, 7, 10}),
        ("tests=hide&kind=crib_open&room=fast", {1, 2, 3, 4}),
    ],
)
def test_each_filter_narrows_the_log(
    shared: tuple[Site, LogWriter, TestClient], query: str, expected: set[int]
) -> None:
    _, _, manager = shared
    body = manager.get(f"/api/incidents?{query}").json()
    assert {int(i["alarm_id"].split("-")[1]) for i in body["incidents"]} == expected
    assert body["total"] == len(expected)


def test_the_date_range_takes_whole_local_days_both_included(shared: tuple[Site, LogWriter, TestClient]) -> None:
    s, log, manager = shared
    from datetime import datetime
    from zoneinfo import ZoneInfo

    tz = ZoneInfo(s.settings.alerting.time_zone)
    first = log.made[4]  # slow, day 1
    day = datetime.fromtimestamp(first.raised_at, tz).date().isoformat()
    body = manager.get(f"/api/incidents?since={day}&until={day}").json()
    assert [i["alarm_id"] for i in body["incidents"]] == [first.alarm_id]


def test_keyset_pages_walk_the_whole_log_both_ways_without_gaps_or_repeats(site: tuple[Site, LogWriter]) -> None:
    s, log = site
    client = s.client(Role.MANAGER)
    pages: list[dict[str, object]] = []
    body = client.get("/api/incidents?limit=3").json()
    pages.append(body)
    while body["older"]:
        body = client.get(f"/api/incidents?limit=3&older={body['older']}").json()
        pages.append(body)
    assert [len(p["incidents"]) for p in pages] == [3, 3, 3, 1]  # type: ignore[arg-type]
    walked = [i["alarm_id"] for p in pages for i in p["incidents"]]  # type: ignore[attr-defined]
    assert walked == [m.alarm_id for m in sorted(log.made, key=lambda m: m.raised_at, reverse=True)]
    assert pages[0]["newer"] is None
    back = client.get(f"/api/incidents?limit=3&newer={pages[2]['newer']}").json()
    assert back["incidents"] == pages[1]["incidents"]
    assert back["older"] == pages[1]["older"]
    # an incident raised meanwhile does not shift the pages already numbered
    store_path = s.settings.store_path
    from gateway.store.store import Store
    from tests.incident_helpers import F1, FAST

    store = Store.open(store_path, site_id=s.settings.site.id)
    with store.transaction():
        LogWriter(store, s.settings.site.id, run=2).incident(FAST, F1, s.clock.time())
    store.close()
    again = client.get(f"/api/incidents?limit=3&older={pages[0]['older']}").json()
    assert again["incidents"] == pages[1]["incidents"]
    first = client.get("/api/incidents?limit=3").json()
    assert first["incidents"][0]["alarm_id"] == "2-1"
    assert first["total"] == 11


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/api/incidents?kind=crib_shut", "kind"),
        ("/api/incidents?priority=urgent", "priority"),
        ("/api/incidents?room=../etc", "room"),
        ("/api/incidents?crib=a%20b", "crib"),
        ("/api/incidents?since=2026-13-01", "since"),
        ("/api/incidents?since=1%20March", "since"),
        ("/api/incidents?since=2026-03-02&until=2026-03-01", "until"),
        ("/api/incidents?tests=maybe", "tests"),
        ("/api/incidents?limit=0", "limit"),
        ("/api/incidents?limit=201", "limit"),
        ("/api/incidents?limit=ten", "limit"),
        ("/api/incidents?limit=%C2%B2", "limit"),
        ("/api/incidents?until=9999-12-31", "until"),
        ("/api/incidents?since=0001-01-01", "since"),
        ("/api/incidents?since=%D9%A2026-01-01", "since"),
        ("/api/incidents?older=not-a-cursor", "older"),
        ("/api/incidents?older=MXwx&newer=MXwx", "older"),
        ("/api/incidents?rooom=fast", "rooom"),
        ("/api/incidents.csv?kind=x", "kind"),
        ("/api/incidents/stats?by=day", "by"),
        ("/api/incidents/stats?since=2024-01-01&until=2026-01-01", "since"),
        ("/api/incidents/stats?until=yesterday", "until"),
        ("/api/incidents/stats.csv?room=a/b", "room"),
    ],
)
def test_a_bad_filter_is_a_422_naming_its_field(
    shared: tuple[Site, LogWriter, TestClient], path: str, field: str
) -> None:
    _, _, manager = shared
    answer = manager.get(path)
    assert answer.status_code == 422, answer.text
    (problem,) = answer.json()["detail"]
    assert problem["loc"] == ["query", field]
    assert problem["msg"]


def test_a_bad_filter_on_the_page_is_said_beside_the_form_with_the_input_kept(
    shared: tuple[Site, LogWriter, TestClient],
) -> None:
    _, _, manager = shared
    client = manager
    page = client.get("/incidents?since=2026-03-05&until=2026-03-01&room=fast", headers={"Accept-Language": "en"})
    assert page.status_code == 422
    assert "To (included): comes before the first day" in page.text
    assert 'value="2026-03-05"' in page.text
    assert '<option value="fast" selected>' in page.text
    nl = client.get("/incidents?kind=onzin", headers={"Accept-Language": "nl"})
    assert nl.status_code == 422
    assert "Soort: geen van de keuzes" in nl.text
    for month in ("2026-3", "2026-13", "9999-12", "٢٠٢٦-03"):
        assert client.get("/incidents/report", params={"month": month}).status_code == 422, month


def test_an_incidents_timeline_has_every_step_in_order(shared: tuple[Site, LogWriter, TestClient]) -> None:
    _, log, manager = shared
    client = manager
    reminded = log.made[2].alarm_id
    body = client.get(f"/api/incidents/{reminded}").json()
    steps = [(step["what"], step["result"]) for step in body["timeline"]]
    assert steps == [
        ("latch_opened", None),
        ("raised", None),
        ("notice", None),
        ("delivery", "delivered"),
        ("delivery", "delivered"),
        ("acknowledged", None),
        ("reminded", None),
        ("notice", None),
        ("delivery", "delivered"),
        ("delivery", "delivered"),
        ("resolved", None),
        ("notice", None),
        ("delivery", "delivered"),
        ("delivery", "delivered"),
    ]
    acked = next(step for step in body["timeline"] if step["what"] == "acknowledged")
    assert (acked["by"], acked["device"]) == ("staf01", "web-board")
    assert [step["at"] for step in body["timeline"]] == sorted(step["at"] for step in body["timeline"])
    assert len(body["deliveries"]) == 6
    failed = client.get(f"/api/incidents/{log.made[5].alarm_id}").json()
    assert [d["result"] for d in failed["deliveries"]].count("failed") == 2
    assert any("broker away" in step["detail"] for step in failed["timeline"])
    page = client.get(f"/incidents/{reminded}", headers={"Accept-Language": "en"})
    assert page.status_code == 200
    for words in ("Latch opened", "Alarm raised", "Notice (escalation chain)", "Reminder (still open)", "web-board"):
        assert words in page.text
    assert client.get("/api/incidents/9-99").status_code == 404
    assert client.get("/incidents/9-99").status_code == 404


def test_the_csv_export_has_every_filtered_incident_with_its_times(shared: tuple[Site, LogWriter, TestClient]) -> None:
    _, log, manager = shared
    answer = manager.get("/api/incidents.csv?room=fast&tests=hide&limit=2&older=MXwx")
    assert answer.status_code == 200  # the paging of the page is not the export's: every row
    assert answer.headers["content-type"].startswith("text/csv")
    assert "attachment" in answer.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert [r["alarm_id"] for r in rows] == [
        m.alarm_id for m in sorted(log.made[:4], key=lambda m: m.raised_at, reverse=True)
    ]
    third = next(r for r in rows if r["alarm_id"] == log.made[2].alarm_id)
    assert (third["time_to_acknowledge_s"], third["time_to_resolve_s"], third["resolution"]) == (
        "30.000",
        "180.000",
        "latch_closed",
    )
    assert third["raised_at"].endswith(("+01:00", "+02:00"))  # ISO 8601 in the site's time zone, with its offset


def test_response_times_per_room_and_in_total_are_exact(shared: tuple[Site, LogWriter, TestClient]) -> None:
    _, _, manager = shared
    body = manager.get("/api/incidents/stats").json()
    total = body["total"]
    # acks [10 15 20 30 40 45 90]; resolves [3 30 60 90 95 120 180 240]; the test alarm and the open one apart
    assert (total["incidents"], total["acknowledged"], total["unacknowledged"], total["open"]) == (9, 7, 1, 1)
    assert total["time_to_acknowledge"] == {"n": 7, "median_s": 30.0, "p90_s": 90.0, "max_s": 90.0}
    assert total["time_to_resolve"] == {"n": 8, "median_s": 92.5, "p90_s": 240.0, "max_s": 240.0}
    rooms = {r["room_id"]: r for r in body["by_room"]}
    assert rooms["fast"]["time_to_acknowledge"] == {"n": 4, "median_s": 25.0, "p90_s": 40.0, "max_s": 40.0}
    assert rooms["slow"]["time_to_acknowledge"] == {"n": 3, "median_s": 45.0, "p90_s": 90.0, "max_s": 90.0}
    assert body["tests"] == 1
    assert body["bucket"] == "week"
    assert len(body["periods"]) in {13, 14}  # 13 weeks of days: 13 ISO weeks, or 14 when they start mid-week
    assert sum(r["incidents"] for r in body["by_period"]) == 9
    noisy = {n["crib_id"]: n for n in body["nuisance"]}
    assert (noisy["s-2"]["offline_periods"], noisy["s-2"]["quick_resolves"]) == (2, 1)
    assert noisy["f-1"]["flaps"] == 3
    slow = manager.get("/api/incidents/stats?room=slow&by=month").json()
    assert slow["total"]["time_to_acknowledge"]["median_s"] == 45.0
    assert {r["room_id"] for r in slow["by_room"]} == {"slow"}


def test_the_statistics_page_draws_its_charts_as_inline_svg_and_exports_its_figures(
    shared: tuple[Site, LogWriter, TestClient],
) -> None:
    _, _, manager = shared
    client = manager
    page = client.get("/incidents/stats", headers={"Accept-Language": "en"})
    assert page.status_code == 200
    assert page.text.count("<svg") == 3
    assert "<script" not in page.text.split("</main>")[0].split("<main>")[1]  # no script in the page's body
    assert "Time to acknowledge per room (median and p90)" in page.text
    assert "Nuisance per sensor" in page.text
    table = client.get("/api/incidents/stats.csv").text.splitlines()
    assert table[0].startswith("scope,period,room_id,room,incidents")
    total = next(line for line in table if line.startswith("total,"))
    assert total.split(",")[4:12] == ["9", "7", "1", "1", "30.000", "90.000", "92.500", "240.000"]
    assert any(line.startswith("s-2,Bedje S2,Slow room,s-s2,2,0,2,1") for line in table)


def test_the_monthly_report_is_printable_and_walks_month_by_month(shared: tuple[Site, LogWriter, TestClient]) -> None:
    s, log, manager = shared
    from datetime import datetime
    from zoneinfo import ZoneInfo

    month = datetime.fromtimestamp(log.made[0].raised_at, ZoneInfo(s.settings.alerting.time_zone)).strftime("%Y-%m")
    page = manager.get(f"/incidents/report?month={month}", headers={"Accept-Language": "nl"})
    assert page.status_code == 200
    assert f"Maandrapport {month}" in page.text
    assert "/static/incidents.css" in page.text
    assert "<svg" in page.text
    css = s.client().get("/static/incidents.css").text
    assert "@media print" in css
    empty = manager.get("/incidents/report?month=2020-01").text
    assert "Geen hinder in deze periode." in empty
    assert s.clock.time() - log.made[0].raised_at == pytest.approx(10 * DAY)


def test_the_board_links_managers_and_admins_to_the_incident_log(site: tuple[Site, LogWriter]) -> None:
    s, _ = site
    for role in Role:
        client = s.client(role)
        if role == Role.COORDINATOR:
            continue  # no board
        board = client.get("/board").text
        assert ('href="/incidents"' in board) == (role in INCIDENT_READERS), role


def test_the_statistics_follow_the_record_as_it_grows(site: tuple[Site, LogWriter]) -> None:
    """The figures of a range are kept while the record stands still, and computed again when it moves: a new
    acknowledgement, a new sensor offline period."""
    from gateway.store.store import Store
    from tests.incident_helpers import F1, FAST

    s, _ = site
    client = s.client(Role.MANAGER)
    before = client.get("/api/incidents/stats").json()
    assert client.get("/api/incidents/stats").json() == before
    store = Store.open(s.settings.store_path, site_id=s.settings.site.id)
    with store.transaction():
        LogWriter(store, s.settings.site.id, run=3).incident(FAST, F1, s.clock.time() - 3600, ack_s=5, resolve_s=6)
    store.close()
    after = client.get("/api/incidents/stats").json()
    assert after["total"]["incidents"] == before["total"]["incidents"] + 1
    assert after["total"]["time_to_acknowledge"]["n"] == 8
    store = Store.open(s.settings.store_path, site_id=s.settings.site.id)
    with store.transaction():
        store.sensor_event(s.clock.time() - 60, "s-f1", "f-1", "offline")
    store.close()
    noisy = {n["crib_id"]: n for n in client.get("/api/incidents/stats").json()["nuisance"]}
    assert noisy["f-1"]["offline_periods"] == 1


def test_a_label_a_spreadsheet_would_run_as_a_formula_is_written_as_text() -> None:
    from gateway.web.incidents import _csv

    text = _csv([['=HYPERLINK("x")', "@SUM(1)", "Vlinders", 3, "30.000"]])
    assert text == '"\'=HYPERLINK(""x"")",\'@SUM(1),Vlinders,3,30.000\r\n'


def test_a_store_the_log_cannot_read_answers_503_and_says_why(site: tuple[Site, LogWriter]) -> None:
    """A store file of a newer schema (a downgraded gateway): the log says so instead of failing with a 500."""
    import sqlite3

    from gateway.store.schema import SCHEMA_VERSION

    s, _ = site
    client = s.client(Role.MANAGER)
    conn = sqlite3.connect(s.settings.store_path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    answer = client.get("/api/incidents")
    assert answer.status_code == 503
    assert "newer than this gateway knows" in answer.json()["detail"]
    assert client.get("/incidents").status_code == 503
