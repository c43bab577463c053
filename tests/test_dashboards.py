"""The Grafana dashboards of dashboards/ and their provisioning.

No Grafana runs here, so each dashboard is parsed, every query of it (panels and variables) is checked against
the InfluxDB schema (gateway/influx/schema.py ``KEYS``: only its measurements, tags and fields, tags where a tag
must be) and run, as Grafana would send it, against a real influxd holding points the gateway's own serialisation
and client wrote: each must answer with data. The schema's declared keys are checked against its point functions
and the gateway's health fields, so the check rests on what the gateway really writes.
"""

from __future__ import annotations

import ast
import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools import dashboards as generator
from devtools.influx import InfluxdServer
from gateway.domain.events import TelemetryReading
from gateway.domain.helping import ContactKind, Outcome, Reason, RequestFields, Status, Urgency
from gateway.influx import schema
from gateway.influx.client import V1Client
from gateway.store.helping import HelpChange, HelpingStore, HelpRequest
from gateway.store.store import OutboxRow
from gateway.web.helping import influx_points
from tests.test_influx_v1 import BASE, influxd  # noqa: F401 - the fixture

REPO = Path(__file__).resolve().parent.parent
DASHBOARDS = REPO / "dashboards"
PROVISIONING = DASHBOARDS / "provisioning"
SITE = "kids-f"
ROOM = "baby"


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, InfluxQL) of every query of a dashboard: its variables, annotations and panels' targets."""
    out = [(f"variable {v['name']}", v["query"]) for v in board["templating"]["list"] if v["type"] == "query"]
    out += [(f"annotation {a['name']}", a["query"]) for a in board["annotations"]["list"] if "query" in a]
    for panel in board["panels"]:
        out += [(f"panel {panel['title']!r} {t['refId']}", t["query"]) for t in panel.get("targets", ())]
    return out


def grafana(query: str, **chosen: str) -> str:
    """The query as Grafana sends it: the last ten years, hourly, site kids-f, room baby (or as ``chosen``)."""
    for macro, value in (
        ("$timeFilter", "time > now() - 3650d"),
        ("$__interval", "1h"),
        ("$site", SITE),
        ("$room", ROOM),
    ):
        query = query.replace(macro, chosen.get(macro, value))
    return query


# ------------------------------------------------------------------------------------------ the schema check

KEYWORDS = frozenset(
    [
        "select",
        "from",
        "where",
        "and",
        "or",
        "group",
        "by",
        "time",
        "fill",
        "none",
        "previous",
        "null",
        "order",
        "desc",
        "asc",
        "limit",
        "as",
        "show",
        "tag",
        "values",
        "with",
        "key",
        "now",
        "in",
    ]
)
FUNCTIONS = frozenset(
    ["count", "mean", "median", "max", "min", "sum", "last", "first", "percentile", "non_negative_difference"]
)
TOKEN = re.compile(
    r"""(?P<ident>"[^"]*")|(?P<string>'[^']*')|(?P<regex>(?<=~)\s*/(?:\\/|[^/])*/)|(?P<macro>\$\w+)"""
    r"""|(?P<number>\d+(?:\.\d+)?[a-z]*)|(?P<word>[A-Za-z_]\w*)|(?P<punct>[(),=<>!~*+-])|(?P<space>\s+)|(?P<bad>.)"""
)


def problems(query: str) -> list[str]:
    """What in ``query`` the schema does not define: a measurement, a key of none of the query's measurements,
    a field where a tag must be (GROUP BY, WITH KEY), a bare word that is not InfluxQL, a value of ``event`` that
    is no alarm step."""
    found: list[str] = []
    tokens = [(m.lastgroup, m.group()) for m in TOKEN.finditer(query) if m.lastgroup != "space"]
    idents = [text.strip('"') for kind, text in tokens if kind == "ident"]
    measurements = [
        tokens[n + 1][1].strip('"')
        for n, (kind, text) in enumerate(tokens[:-1])
        if kind == "word" and text.lower() == "from" and tokens[n + 1][0] == "ident"
    ]
    if not measurements:
        found.append("no measurement")
    unknown = [m for m in measurements if m not in schema.KEYS]
    found += [f"measurement {m!r} is not in the schema" for m in unknown]
    known = [schema.KEYS[m] for m in measurements if m in schema.KEYS]
    tags = set().union(*(k.tags for k in known))
    fields = set().union(*(k.fields for k in known))
    aliases = {tokens[n + 1][1].strip('"') for n, (_, text) in enumerate(tokens[:-1]) if text.lower() == "as"}
    for ident in idents:
        if ident not in tags | fields | aliases and ident not in measurements:
            found.append(f"{ident!r} is no tag or field of {measurements}")
    for kind, text in tokens:
        if kind == "bad":
            found.append(f"unexpected {text!r}")
        elif kind == "word" and text.lower() not in KEYWORDS | FUNCTIONS:
            found.append(f"bare word {text!r} (quote identifiers; only InfluxQL keywords and functions go bare)")
    # GROUP BY and WITH KEY name tags: a field there answers nothing (or an error).
    words = [text.lower() if kind == "word" else text for kind, text in tokens]
    for n, word in enumerate(words):
        if (word == "by" and words[n - 1] == "group") or (word == "=" and words[n - 1] == "key"):
            for kind, text in tokens[n + 1 :]:
                if kind == "ident":
                    if text.strip('"') not in tags:
                        found.append(f"{text} after {word.upper()} is not a tag of {measurements}")
                elif kind not in {"punct", "number"} and text.lower() not in {"time", "$__interval"}:
                    break
    for match in re.finditer(r""""event" = '([^']*)'""", query):
        if match.group(1) not in schema.ALARM_STEPS:
            found.append(f"event {match.group(1)!r} is no alarm step {schema.ALARM_STEPS}")
    return found


def test_the_check_finds_what_the_schema_does_not_define() -> None:
    assert problems('SELECT mean("seconds") FROM "alarm" WHERE "event" = \'raised\' GROUP BY "room"') == []
    assert problems('SELECT mean("latency") FROM "alarm"') != []  # no such field
    assert problems('SELECT mean("seconds") FROM "alarms"') != []  # no such measurement
    assert problems('SELECT mean("seconds") FROM "alarm" GROUP BY "alarm_id"') != []  # a field, not a tag
    assert problems('SELECT count("refused") FROM "sensor_refused" WHERE "room" = \'baby\'') != []  # not its tag
    assert problems('SELECT mean(seconds) FROM "alarm"') != []  # unquoted: not checked, so refused
    assert problems('SELECT count("alarm_id") FROM "alarm" WHERE "event" = \'raise\'') != []
    assert problems('SHOW TAG VALUES FROM "gateway" WITH KEY = "site"') == []
    assert problems('SHOW TAG VALUES FROM "gateway" WITH KEY = "run"') != []


def test_the_schemas_keys_are_what_the_gateway_writes() -> None:
    """KEYS (what the dashboards are checked against) holds every key the point functions write, and no other."""
    at = BASE
    reading = TelemetryReading("s-1", 1, 5, at, 81, -60, "1.4.2", 60, 30.0)
    points = [
        schema.latch_point(SITE, ROOM, "c-1", "s-1", open_=True, at=at),
        schema.sensor_online_point(SITE, ROOM, "c-1", "s-1", online=True, at=at),
        schema.telemetry_point(SITE, ROOM, "c-1", reading, at=at),
        schema.alarm_step_point(
            SITE,
            ROOM,
            "c-1",
            "crib_open",
            "high",
            "resolved",
            at,
            alarm_id="1-1",
            raised_at=at,
            test=True,
            level=1,
            by="staff-1",
            device="pager-1",
            resolution="closed",
            run=1,
        ),
        schema.delivery_point(
            SITE,
            "webhook",
            "alarm",
            "failed",
            at,
            notice_id="1",
            alarm_id="1-1",
            attempts=1,
            seconds=1.0,
            room=ROOM,
            error="timeout",
        ),
        schema.maintenance_point(SITE, ROOM, "c-1", at, on=True, by="tech", reason="magnet"),
        *schema.sensor_refused_points(SITE, at, {"s-1": 1}, {"s-1": 1}, {"s-1": "c-1"}),
        *schema.nuisance_points(SITE, at, {"s-1": {"flaps": 1}}, {"s-1": "c-1"}),
        *schema.input_points(SITE, at, {"bad_json": 1}, {"duplicate": 1}),
        schema.gateway_point(SITE, at, dict.fromkeys(schema.GATEWAY_FIELDS, 1)),
        schema.helping_point(
            SITE,
            "bso-1",
            "illness",
            "urgent",
            "new",
            at,
            request_id=1,
            change_id=1,
            people=2,
            filled=0,
            filled_change=0,
            open_requests=1,
        ),
    ]
    written: dict[str, tuple[set[str], set[str]]] = {}
    for p in points:
        tags, fields = written.setdefault(p.measurement, (set(), set()))
        tags.update(k for k, _ in p.tags)
        fields.update(k for k, _ in p.fields)
    assert set(written) == set(schema.KEYS) == set(schema.MEASUREMENTS)
    for measurement, (tags, fields) in written.items():
        assert (tags, fields) == (set(schema.KEYS[measurement].tags), set(schema.KEYS[measurement].fields))

    # The gateway measurement's fields are filled by Gateway._influx_points: the same names.
    tree = ast.parse((REPO / "gateway" / "app.py").read_text(encoding="utf-8"))
    [method] = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "_influx_points"]
    [fields_dict] = [
        n.value for n in ast.walk(method) if isinstance(n, ast.AnnAssign) and isinstance(n.value, ast.Dict)
    ]
    assert [k.value for k in fields_dict.keys if isinstance(k, ast.Constant)] == list(schema.GATEWAY_FIELDS)
    docs = (REPO / "docs" / "influx-schema.md").read_text(encoding="utf-8")
    assert set(re.findall(r"`(\w+)`", docs.split("`gateway` fields:")[1].split("\n\n")[0])) >= set(
        schema.GATEWAY_FIELDS
    )


# ------------------------------------------------------------------------------------------ the dashboards


def test_the_dashboards_are_the_generators_and_name_only_the_schema() -> None:
    files = dashboard_files()
    assert {p.name for p in files} == set(generator.DASHBOARDS), "python -m devtools.dashboards writes them"
    uids = set()
    for path in files:
        assert path.read_text(encoding="utf-8") == generator.render(generator.DASHBOARDS[path.name]), (
            f"{path.name} differs from devtools/dashboards.py: run `python -m devtools.dashboards`"
        )
        board = load(path)
        uids.add(board["uid"])
        assert "_label" not in path.read_text(), "cribs and rooms by id: their labels are not in InfluxDB"
        for where, query in queries(board):
            assert problems(query) == [], f"{path.name} {where}: {query}"
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == generator.DATASOURCE_UID
            for target in panel["targets"]:
                assert target["rawQuery"] is True, "InfluxQL as written, not Grafana's query builder"
                assert target["datasource"]["uid"] == generator.DATASOURCE_UID
        # panels do not overlap
        cells = [
            (x, y)
            for p in board["panels"]
            for x in range(p["gridPos"]["x"], p["gridPos"]["x"] + p["gridPos"]["w"])
            for y in range(p["gridPos"]["y"], p["gridPos"]["y"] + p["gridPos"]["h"])
        ]
        assert len(cells) == len(set(cells)), f"{path.name}: panels overlap"
        assert all(x < 24 for x, _ in cells)
    assert len(uids) == len(files)


def site_points() -> list[schema.Point]:
    """Two hours of a site: every measurement, every series twice (running counts need two points to differ)."""
    out: list[schema.Point] = []
    for hour in (0, 1):
        at = BASE + hour * 3600
        raised = at + 10
        out += [
            schema.latch_point(SITE, ROOM, "c-1", "s-1", open_=True, at=at),
            schema.latch_point(SITE, ROOM, "c-1", "s-1", open_=False, at=at + 60),
            schema.latch_point(SITE, ROOM, "c-2", "s-2", open_=True, at=at + 70),
            schema.telemetry_point(
                SITE,
                ROOM,
                "c-1",
                TelemetryReading("s-1", 1, 5 + hour, at, 81 - hour, -60, "1.4.2", 60, 30.0),
                at=at + 1,
            ),
            schema.sensor_online_point(SITE, ROOM, "c-2", "s-2", online=False, at=at + 5),
            schema.maintenance_point(SITE, ROOM, "c-3", at + 2, on=hour == 0, by="tech-1", reason="new magnet"),
            *schema.sensor_refused_points(SITE, at, {"s-1": 2 + hour}, {"s-1": hour}, {"s-1": "c-1"}),
            *schema.nuisance_points(
                SITE, at, {"s-1": {"flaps": 1 + hour, "offline_periods": 1, "quick_resolves": 0}}, {"s-1": "c-1"}
            ),
            *schema.input_points(SITE, at, {"bad_json": 3 + 4 * hour}, {"duplicate": 1 + hour}),
            schema.gateway_point(
                SITE,
                at + 20,
                {name: n + hour for n, name in enumerate(schema.GATEWAY_FIELDS)} | {"loop_lag_ms": 0.3},
            ),
        ]
        steps = [("raised", raised), ("escalated", raised + 30), ("repeated", raised + 60)]
        steps += [("acknowledged", raised + 62), ("reminded", raised + 200), ("resolved", raised + 300)]
        for step, when in steps:
            out.append(
                schema.alarm_step_point(
                    SITE,
                    ROOM,
                    "c-1",
                    "crib_open",
                    "high",
                    step,
                    when,
                    alarm_id=f"9-{hour}",
                    raised_at=raised,
                    by="staff-07" if step == "acknowledged" else None,
                    run=9,
                )
            )
        outcomes = ("failed", "buffered", "skipped", "delivered", "gave_up", "dropped", "gave_up")
        out += [
            schema.delivery_point(
                SITE,
                "webhook",
                "alarm",
                outcome,
                raised + 1 + n,
                notice_id=f"9-{hour}/1",
                alarm_id=f"9-{hour}",
                attempts=n,
                seconds=1.0,
                room=ROOM,
            )
            for n, outcome in enumerate(outcomes)
        ]
        out += [  # a helping-hands request to the coordinators: not an alarm notice, in no alarm panel
            schema.delivery_point(
                SITE,
                "apprise",
                schema.HELPING_HANDS_NOTICE,
                outcome,
                raised + 10 + n,
                notice_id=f"hh-{hour}/1",
                alarm_id=f"hh-{hour}",
                attempts=3,
                seconds=400.0,
            )
            for n, outcome in enumerate(("gave_up", "dropped", "delivered"))
        ]
    return out


def helping_lines(path: Path) -> list[str]:
    """Helping-hands requests over two weeks, made and moved through the site's store as the web app does: the
    points its InfluxDB outbox then holds (gateway/web/helping.py ``influx_points``)."""
    store = HelpingStore.open(path, site_id=SITE, points=influx_points(SITE))

    def message(request: HelpRequest, change: HelpChange) -> OutboxRow:
        return OutboxRow(f"hh:{request.id}:{change.id}", "t", b"{}", 1, False, change.at)  # noqa: FBT003

    def to(status: Status, filled: int) -> Any:
        return lambda current: Outcome(status, "coor01", filled)

    try:
        for week in (0, 1):
            at = BASE + week * 7 * 86400
            for n, (reason, urgency, people) in enumerate(
                [(Reason.ILLNESS, Urgency.URGENT, 3), (Reason.OUTING, Urgency.NORMAL, 2)]
            ):
                day = dt.date.fromtimestamp(at)
                fields = RequestFields(
                    SITE, "r-1", day, "13:00", "17:00", at, at + 3600, people, reason, urgency, "a note",
                    ContactKind.ACCOUNT, "staf01",
                )  # fmt: skip
                start = at + 1000 * n  # in time order, as they happen
                request, _ = store.create(fields, "staf01", start, message)
                store.change(request.id, to(Status.ASSIGNED, 0), "coor01", start + 60, "", message)
                store.change(request.id, to(Status.PARTLY_FILLED, 1), "coor01", start + 120, "", message)
                if n == 0:
                    store.change(request.id, to(Status.FILLED, people), "coor01", start + 180, "", message)
        conn = store._store.connection  # noqa: SLF001 - what the outbox holds
        return [str(r[0]) for r in conn.execute("SELECT line FROM influx_outbox ORDER BY id")]
    finally:
        store.close()


def test_every_query_of_every_dashboard_answers_from_the_gateways_points(
    influxd: InfluxdServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    database = "dashboards"
    influxd.query(f'CREATE DATABASE "{database}"')
    helping = helping_lines(tmp_path / "site.sqlite3")
    assert len(helping) == 14
    client = V1Client(influxd.url, database, username=influxd.username, password=influxd.password, timeout_s=10.0)
    try:
        client.write(schema.lines(site_points()).encode())  # the gateway's serialisation and client
        client.write("\n".join(helping).encode())  # as the InfluxDB shipper sends the outbox's lines
    finally:
        client.close()

    ran = 0
    for path in dashboard_files():
        board = load(path)
        for where, query in queries(board):
            [result] = influxd.query(grafana(query), db=database)
            assert "error" not in result, f"{path.name} {where}: {result['error']}: {query}"
            assert result.get("series"), f"{path.name} {where} shows nothing: {query}"
            ran += 1
    assert ran >= 40

    [site] = influxd.query(grafana('SHOW TAG VALUES FROM "gateway" WITH KEY = "site"'), db=database)
    assert [v[1] for v in site["series"][0]["values"]] == [SITE]
    # Two of the answers, for their numbers: only the final failures count as "not delivered", and the
    # current state of the cribs comes from each crib's last change.
    [incidents] = [load(p) for p in dashboard_files() if p.name == "cribwatch-incidents.json"]
    [undelivered] = [p for p in incidents["panels"] if p["title"] == "Notices not delivered, by channel"]
    every_room = {"$room": ".*"}  # the room variable's "All" (a helping-hands request has no room)
    [result] = influxd.query(grafana(undelivered["targets"][0]["query"], **every_room), db=database)
    counts = [v[1] for series in result["series"] for v in series["values"]]
    assert sum(counts) == 6, "only the final failures (gave_up, dropped) of alarm notices: not a retried attempt, "
    "buffered, skipped, nor a helping-hands request"
    [took] = [p for p in incidents["panels"] if p["title"] == "Notice delivery time, by channel"]
    [result] = influxd.query(grafana(took["targets"][0]["query"], **every_room), db=database)
    means = {v[1] for series in result["series"] for v in series["values"] if v[1] is not None}
    assert means == {1.0}, "alarm notices only (a helping-hands request took 400 s)"
    [overview] = [load(p) for p in dashboard_files() if p.name == "cribwatch-overview.json"]
    [open_now] = [p for p in overview["panels"] if p["title"] == "Cribs open now"]
    [result] = influxd.query(grafana(open_now["targets"][0]["query"]), db=database)
    assert result["series"][0]["values"][0][1] == 1, "c-1 closed again, c-2 open"
    [helping_board] = [load(p) for p in dashboard_files() if p.name == "cribwatch-helping.json"]
    [asked_found] = [p for p in helping_board["panels"] if p["title"] == "People asked and found per week"]
    totals = []
    for query in asked_found["targets"]:
        [result] = influxd.query(grafana(query["query"]), db=database)
        totals.append(sum(v[1] or 0 for v in result["series"][0]["values"]))
    assert totals == [10, 2 * (3 + 1)], "asked: 3 + 2 a week; found: the filled one 3, the partly filled one 1"
    [open_now] = [p for p in helping_board["panels"] if p["title"] == "Open requests now, by requesting site"]
    [result] = influxd.query(grafana(open_now["targets"][0]["query"]), db=database)
    assert result["series"][0]["values"][0][1] == 4, "filled is open until done: all four"


# ------------------------------------------------------------------------------------------ provisioning


def test_the_provisioning_names_the_data_source_and_the_dashboards_that_exist() -> None:
    [datasources] = [yaml.safe_load(p.read_text()) for p in sorted((PROVISIONING / "datasources").glob("*.yaml"))]
    assert datasources["apiVersion"] == 1
    [source] = datasources["datasources"]
    assert source["uid"] == generator.DATASOURCE_UID
    assert source["type"] == "influxdb"
    assert "password" not in source, "the password only in secureJsonData, from the environment"
    assert re.fullmatch(r"\$\{\w+\}", source["secureJsonData"]["password"]), "no secret in the file"

    [providers] = [yaml.safe_load(p.read_text()) for p in sorted((PROVISIONING / "dashboards").glob("*.yaml"))]
    [provider] = providers["providers"]
    assert provider["type"] == "file"
    # The compose files mount the repository's dashboards/ at the provider's path, and the provisioning.
    for compose_file in (REPO / "docker-compose.yml", REPO / "deploy" / "central" / "docker-compose.yml"):
        grafana = yaml.safe_load(compose_file.read_text())["services"]["grafana"]
        mounts = {
            target: (compose_file.parent / source).resolve()
            for volume in grafana["volumes"]
            for source, target, *_ in [volume.split(":")]
        }
        assert mounts[provider["options"]["path"]] == DASHBOARDS, compose_file
        assert mounts["/etc/grafana/provisioning/dashboards"] == PROVISIONING / "dashboards", compose_file
        sources = mounts["/etc/grafana/provisioning/datasources"]
        [provisioned] = [yaml.safe_load(p.read_text()) for p in sorted(sources.glob("*.yaml"))]
        assert provisioned["datasources"][0]["uid"] == generator.DATASOURCE_UID, compose_file
        # Every ${VAR} of the provisioning (its values: Grafana expands them) is in Grafana's environment there.
        for path in [*sources.glob("*.yaml"), *(PROVISIONING / "dashboards").glob("*.yaml")]:
            values = json.dumps(yaml.safe_load(path.read_text()))
            for var in re.findall(r"\$\{(\w+)\}", values):
                assert var in grafana["environment"], f"{path.name}: ${{{var}}} is not in grafana's environment"
            for named in re.findall(r"\$__file\{([^}]+)\}", values):
                assert named in mounts, f"{path.name}: {named} is not mounted in grafana"
    assert dashboard_files(), "the provider's directory holds the dashboards"


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda p: p.name)
def test_each_dashboard_links_the_others_and_filters_by_site(path: Path) -> None:
    board = load(path)
    assert board["links"][0]["tags"] == [generator.TAG]
    assert generator.TAG in board["tags"]
    assert next(v["name"] for v in board["templating"]["list"]) == "site"
    for where, query in queries(board):
        if not query.startswith("SHOW"):
            assert '"site" =~ /^$site$/' in query, f"{path.name} {where}: every panel filters by the site"
