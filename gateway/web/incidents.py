"""The incident log for site managers (issue 12, items 1 and 2): every incident with its whole timeline, filters and
keyset paging; response times (median and p90 per room and per week or month, a server-side SVG chart and the
counts behind it); nuisance per sensor; CSV exports; a printable monthly report. Roles: manager and admin (a
coordinator works for the city's helping hands, not on a site's incidents; staff and technicians are refused).

The store is opened read-only in a worker thread for each request (WAL: the gateway writes on meanwhile); the
statistics are pure functions (gateway/reports/). Bad filters answer 422 naming the field, on the pages too.
"""

import asyncio
import csv
import io
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from typing import Annotated, Any, TypeVar
from zoneinfo import ZoneInfo

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from markupsafe import Markup

from gateway.domain.vocab import AlarmKind
from gateway.reports.chart import Bar, bar_chart, duration
from gateway.reports.response import Bucket, ResponseReport, SensorNuisance, nuisance, response_times
from gateway.store import incident_log
from gateway.store.incident_log import CursorError, Filters, IncidentRecord, LogRow, Page
from gateway.store.schema import StoreError
from gateway.store.store import Store
from gateway.web.auth import STAFF_ID, Role
from gateway.web.i18n import Translator
from gateway.web.kit import Principal, WebKit

log = logging.getLogger("cribwatch.web")

INCIDENT_READERS = frozenset({Role.MANAGER, Role.ADMIN})
"""Who may read the incident log and its statistics."""
PAGE_SIZE = 50
MAX_RANGE_DAYS = 400
"""The longest range the statistics take (the store keeps 400 days by default)."""
PRIORITIES = ("high", "medium", "low")
DAY_TEXT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
MONTH_TEXT = re.compile(r"[0-9]{4}-[0-9]{2}")
LIMIT_TEXT = re.compile(r"[0-9]{1,4}")
FIRST_YEAR, LAST_YEAR = 1970, 9998
"""Days the log takes (a wall clock before NTP may say 1970; the far side keeps a day after it a valid date)."""
KINDS = tuple(k.value for k in AlarmKind)
LOG_PARAMS = frozenset({"room", "crib", "kind", "priority", "since", "until", "tests", "older", "newer", "limit"})
STATS_PARAMS = frozenset({"room", "since", "until", "by"})
CSV_COLUMNS = (
    "alarm_id",
    "kind",
    "priority",
    "room_id",
    "room",
    "crib_id",
    "crib",
    "test",
    "maintenance",
    "latch_opened_at",
    "raised_at",
    "first_acknowledged_at",
    "time_to_acknowledge_s",
    "first_acknowledged_by",
    "first_acknowledged_device",
    "resolved_at",
    "time_to_resolve_s",
    "resolution",
    "escalation_level",
    "flaps",
)
STATS_CACHED = 16
"""Statistics kept per app (the last ones asked for), each valid while the record has not moved."""
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Figures:
    """The statistics of one range: response times, nuisance per sensor, alarms per kind (tests left out)."""

    report: ResponseReport
    noisy: list[SensorNuisance]
    kinds: dict[str, int]


class FilterError(ValueError):
    """One wrong query parameter: the field, a catalogue key for the page, and the English text for the API."""

    def __init__(self, field: str, key: str, text: str, **values: object) -> None:
        super().__init__(f"{field}: {text}")
        self.field = field
        self.key = key
        self.text = text
        self.values = values


@dataclass(frozen=True, slots=True)
class LogQuery:
    filters: Filters
    limit: int
    older: str | None
    newer: str | None
    form: dict[str, str]
    """The query as typed (to refill the form and build the paging links)."""


@dataclass(frozen=True, slots=True)
class StatsQuery:
    since: float
    until: float
    first_day: date
    last_day: date
    bucket: Bucket
    room: str | None
    form: dict[str, str]


def _unknown(params: Mapping[str, str], known: frozenset[str]) -> None:
    for name in params:
        if name not in known:
            raise FilterError(name, "incidents.bad_param", f"unknown parameter (expected {', '.join(sorted(known))})")


def _id(params: Mapping[str, str], name: str) -> str | None:
    value = params.get(name, "").strip()
    if not value:
        return None
    if not STAFF_ID.fullmatch(value):
        raise FilterError(name, "incidents.bad_id", f"{value[:40]!r} is not an id (letters, digits, . _ -)")
    return value


def _choice(params: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str | None:
    value = params.get(name, "").strip()
    if not value:
        return None
    if value not in choices:
        raise FilterError(name, "incidents.bad_choice", f"{value[:40]!r}: expected one of {', '.join(choices)}")
    return value


def _day(params: Mapping[str, str], name: str) -> date | None:
    value = params.get(name, "").strip()
    if not value:
        return None
    try:
        if not DAY_TEXT.fullmatch(value):
            raise ValueError(value)
        day = date.fromisoformat(value)
    except ValueError:
        raise FilterError(name, "incidents.bad_date", f"{value[:40]!r} is not a date (YYYY-MM-DD)") from None
    if not FIRST_YEAR <= day.year <= LAST_YEAR:
        raise FilterError(name, "incidents.bad_date", f"{value[:40]!r} is not a date (YYYY-MM-DD)")
    return day


def start_of(day: date, tz: tzinfo) -> float:
    """Local midnight at the start of ``day`` in the site's time zone, as Unix seconds."""
    return datetime(day.year, day.month, day.day, tzinfo=tz).timestamp()


def _range(params: Mapping[str, str], tz: tzinfo) -> tuple[date | None, date | None]:
    first, last = _day(params, "since"), _day(params, "until")
    if first is not None and last is not None and last < first:
        raise FilterError("until", "incidents.bad_order", "the last day comes before the first")
    return first, last


def parse_log_query(params: Mapping[str, str], tz: tzinfo) -> LogQuery:
    """The incident log's query: ``room``, ``crib``, ``kind``, ``priority``, ``since`` and ``until`` (days, both
    included, in the site's time zone), ``tests`` (``show`` or ``hide``), ``older``/``newer`` (cursors), ``limit``."""
    _unknown(params, LOG_PARAMS)
    first, last = _range(params, tz)
    tests = _choice(params, "tests", ("show", "hide")) or "show"
    limit_text = params.get("limit", "").strip() or str(PAGE_SIZE)
    if not LIMIT_TEXT.fullmatch(limit_text) or not 1 <= int(limit_text) <= incident_log.MAX_PAGE:
        raise FilterError("limit", "incidents.bad_limit", f"a page holds 1 to {incident_log.MAX_PAGE} incidents")
    older = params.get("older", "").strip() or None
    newer = params.get("newer", "").strip() or None
    if older is not None and newer is not None:
        raise FilterError("older", "incidents.bad_cursor", "ask for older or for newer incidents, not both")
    for name, cursor in (("older", older), ("newer", newer)):
        if cursor is not None:
            try:
                incident_log.decode_cursor(cursor)
            except CursorError:
                raise FilterError(name, "incidents.bad_cursor", "not a page of this log: start again") from None
    filters = Filters(
        room=_id(params, "room"),
        crib=_id(params, "crib"),
        kind=_choice(params, "kind", KINDS),
        priority=_choice(params, "priority", PRIORITIES),
        since=None if first is None else start_of(first, tz),
        until=None if last is None else start_of(last + timedelta(days=1), tz),
        tests=tests == "show",
    )
    form = {k: params.get(k, "").strip() for k in ("room", "crib", "kind", "priority", "since", "until")}
    form["tests"] = tests
    return LogQuery(filters, int(limit_text), older, newer, form)


def parse_stats_query(params: Mapping[str, str], tz: tzinfo, today: date) -> StatsQuery:
    """The statistics' query: ``since``/``until`` (days, both included; default the last 13 weeks to today), ``by``
    (``week`` or ``month``), ``room``."""
    _unknown(params, STATS_PARAMS)
    first, last = _range(params, tz)
    bucket = Bucket(_choice(params, "by", ("week", "month")) or "week")
    last = last or today
    if first is None and bucket is Bucket.WEEK:
        first = last - timedelta(days=13 * 7 - 1)  # 13 weeks of days, to today
    elif first is None:
        first = next_month(date(last.year - 1, last.month, 1))  # 12 calendar months, this one the last
    if (last - first).days + 1 > MAX_RANGE_DAYS:
        raise FilterError("since", "incidents.bad_span", f"at most {MAX_RANGE_DAYS} days at a time")
    room = _id(params, "room")
    form = {"since": first.isoformat(), "until": last.isoformat(), "by": bucket.value, "room": room or ""}
    return StatsQuery(start_of(first, tz), start_of(last + timedelta(days=1), tz), first, last, bucket, room, form)


def parse_month(value: str | None, today: date) -> date:
    """``YYYY-MM`` as the first day of that month (default: this month)."""
    if not value:
        return today.replace(day=1)
    try:
        if not MONTH_TEXT.fullmatch(value):
            raise ValueError(value)
        year, month = (int(part) for part in value.split("-"))
        if not FIRST_YEAR <= year <= LAST_YEAR:
            raise ValueError(value)
        return date(year, month, 1)
    except ValueError:
        raise FilterError("month", "incidents.bad_month", f"{value[:40]!r} is not a month (YYYY-MM)") from None


def next_month(first: date) -> date:
    return date(first.year + first.month // 12, first.month % 12 + 1, 1)


# ------------------------------------------------------------------------------------------ views of the data


def incident_json(row: LogRow) -> dict[str, Any]:
    inc = row.incident
    return {
        "alarm_id": inc.alarm_id,
        "kind": inc.kind.value,
        "priority": inc.priority,
        "room_id": inc.room_id,
        "room_label": inc.room_label,
        "crib_id": inc.crib_id,
        "crib_label": inc.crib_label,
        "test": inc.test,
        "maintenance": inc.maintenance,
        "latch_opened_at": inc.latch_opened_at,
        "raised_at": inc.raised_at,
        "first_acknowledged_at": row.first_ack_at,
        "first_acknowledged_by": row.first_ack_by,
        "first_acknowledged_device": row.first_ack_device,
        "time_to_acknowledge_s": row.ack_s,
        "acknowledged_at": inc.acknowledged_at,
        "acknowledged_by": inc.acknowledged_by,
        "acknowledged_device": inc.acknowledged_device,
        "resolved_at": inc.resolved_at,
        "time_to_resolve_s": row.resolve_s,
        "resolution": inc.resolution,
        "escalation_level": inc.escalation_level,
        "flaps": inc.flaps,
        "open": inc.open,
    }


@dataclass(frozen=True, slots=True)
class Step:
    """One line of an incident's timeline on the page and in the API."""

    at: float
    what: str
    """``latch_opened``, ``raised``, ``notice``, ``delivery``, ``acknowledged``, ``reminded``, ``resolved``, ..."""
    by: str | None = None
    device: str | None = None
    detail: str = ""
    result: str | None = None
    notice: str | None = None
    """A notice's kind (``alarm``, ``escalation``, ``repeat``, ``reminder``, ``resolved``), or a delivery's."""
    step: int | None = None
    """The escalation chain's step of a notice."""


def timeline_steps(rec: IncidentRecord) -> list[Step]:
    """The incident's whole life in time order: the latch opening, the record's steps (raised, each notice of the
    escalation chain, acknowledgements with their device, reminders, resolved) and every delivery attempt."""
    steps: list[tuple[float, int, Step]] = []
    inc = rec.row.incident
    if inc.latch_opened_at is not None:
        steps.append((inc.latch_opened_at, 0, Step(inc.latch_opened_at, "latch_opened")))
    for i, entry in enumerate(rec.timeline):
        d = entry.detail or {}
        if entry.type == "notice":
            text = (
                f"{', '.join(map(str, d.get('groups', [])))} · {d.get('recipients', 0)} → "
                f"{', '.join(map(str, d.get('channels', [])))}"
            )
            if d.get("how") and d.get("how") != "on_duty":
                text += f" ({d['how']})"
            step = Step(entry.at, entry.type, None, None, text, None, str(d.get("kind", "")), int(d.get("step", 0)))
            steps.append((entry.at, 1 + i, step))
            continue
        if entry.type == "raised" and isinstance(d.get("trigger"), dict):
            text = f"sensor {d['trigger'].get('sensor_id')}"
        elif entry.type == "resolved":
            text = str(d.get("resolution", ""))
        else:
            text = ", ".join(f"{k}={v}" for k, v in sorted(d.items()) if k not in {"trigger", "test"})
        steps.append((entry.at, 1 + i, Step(entry.at, entry.type, entry.by, entry.device, text)))
    base = len(steps) + 1
    for i, dl in enumerate(rec.deliveries):
        text = f"{dl.channel} → {dl.group}/{dl.member} · #{dl.attempt}"
        if dl.latency_ms is not None:
            text += f" · {dl.latency_ms:.0f} ms"
        if dl.error:
            text += f" · {dl.error}"
        steps.append((dl.at, base + i, Step(dl.at, "delivery", None, dl.address, text, dl.result, dl.kind)))
    return [s for _, _, s in sorted(steps, key=lambda x: (x[0], x[1]))]


def stats_json(report: ResponseReport, noisy: list[SensorNuisance]) -> dict[str, Any]:
    def times(t: Any) -> dict[str, Any]:
        return {"n": t.n, "median_s": t.median_s, "p90_s": t.p90_s, "max_s": t.max_s}

    def row(r: Any) -> dict[str, Any]:
        return {
            "period": r.period,
            "room_id": r.room_id,
            "room_label": r.room_label,
            "incidents": r.incidents,
            "acknowledged": r.acknowledged,
            "unacknowledged": r.unacknowledged,
            "open": r.open,
            "time_to_acknowledge": times(r.ack),
            "time_to_resolve": times(r.resolve),
        }

    return {
        "bucket": report.bucket.value,
        "periods": report.periods,
        "total": row(report.total),
        "by_period": [row(r) for r in report.by_period],
        "by_room": [row(r) for r in report.by_room],
        "by_room_period": [row(r) for r in report.by_room_period],
        "tests": report.tests,
        "maintenance": report.maintenance,
        "nuisance": [
            {
                "crib_id": n.crib_id,
                "crib_label": n.crib_label,
                "room_label": n.room_label,
                "sensors": list(n.sensors),
                "alarms": n.alarms,
                "flaps": n.flaps,
                "offline_periods": n.offline_periods,
                "quick_resolves": n.quick_resolves,
            }
            for n in noisy
        ],
    }


def short(period: str | None) -> str:
    """A chart's label of a period: ``W09`` for ISO week ``2026-W09`` (the tables keep the year), ``2026-03``."""
    if period is None:
        return ""
    return period.split("-", 1)[1] if "-W" in period else period


def _cell(value: object) -> object:
    """A text cell a spreadsheet would run as a formula (``=``, ``+``, ``-``, ``@`` first) gets a ``'`` in front:
    room and crib labels come from the site file, and a CSV is opened in Excel."""
    if isinstance(value, str) and value[:1] in {"=", "+", "-", "@", "\t", "\r"}:
        return "'" + value
    return value


def _csv(rows: list[list[object]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerows([_cell(v) for v in row] for row in rows)
    return out.getvalue()


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def stats_csv(report: ResponseReport, noisy: list[SensorNuisance]) -> str:
    """Two tables in one file: the response times (per room and period, per period, per room, total), then the
    nuisance per sensor, each with its header row."""
    rows: list[list[object]] = [
        [
            "scope",
            "period",
            "room_id",
            "room",
            "incidents",
            "acknowledged",
            "unacknowledged",
            "open",
            "ack_median_s",
            "ack_p90_s",
            "resolve_median_s",
            "resolve_p90_s",
        ]
    ]
    for scope, group in (
        ("room_period", report.by_room_period),
        ("period", report.by_period),
        ("room", report.by_room),
        ("total", [report.total]),
    ):
        for r in group:
            rows.append(
                [
                    scope,
                    r.period or "",
                    r.room_id or "",
                    r.room_label or "",
                    r.incidents,
                    r.acknowledged,
                    r.unacknowledged,
                    r.open,
                    _seconds(r.ack.median_s),
                    _seconds(r.ack.p90_s),
                    _seconds(r.resolve.median_s),
                    _seconds(r.resolve.p90_s),
                ]
            )
    rows.append([])
    rows.append(["crib_id", "crib", "room", "sensors", "alarms", "flaps", "offline_periods", "quick_resolves"])
    for n in noisy:
        rows.append(
            [
                n.crib_id,
                n.crib_label,
                n.room_label,
                " ".join(n.sensors),
                n.alarms,
                n.flaps,
                n.offline_periods,
                n.quick_resolves,
            ]
        )
    return _csv(rows)


def register(app: FastAPI, kit: WebKit) -> None:  # noqa: PLR0915 - the routes are closures over the kit
    settings = kit.settings
    tz = ZoneInfo(settings.alerting.time_zone)
    quick_s = settings.alerting.flapping.quick_resolve_s
    site_id = settings.site.id
    readers = kit.access(INCIDENT_READERS)
    roles = kit.roles_of(INCIDENT_READERS)

    def today() -> date:
        return datetime.fromtimestamp(kit.now(), tz).date()

    def when(ts: float | None) -> str:
        return "" if ts is None else datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M:%S")

    def iso(ts: float | None) -> str:
        return "" if ts is None else datetime.fromtimestamp(ts, tz).isoformat(timespec="seconds")

    async def read(work: Callable[[Store], T]) -> T:
        """``work`` on the store, opened read-only in a worker thread (never on the event loop)."""

        def run() -> T:
            try:
                store = Store.open(kit.store_path, site_id=site_id, readonly=True)
            except StoreError as exc:
                log.error("the incident log cannot read the store: %s", exc)
                raise HTTPException(status_code=503, detail=f"the incident log cannot be read now: {exc}") from None
            try:
                return work(store)
            finally:
                store.close()

        return await asyncio.to_thread(run)

    def problem_json(problem: FilterError) -> JSONResponse:
        return JSONResponse(
            {"detail": [{"loc": ["query", problem.field], "msg": problem.text, "type": "value_error"}]},
            status_code=422,
        )

    def problem_text(request: Request, problem: FilterError) -> str:
        t = Translator(kit.lang_of(request))
        field = t.messages.get("incidents.field." + problem.field, problem.field)
        return f"{field}: {t(problem.key, **problem.values)}"

    def choices(store: Store) -> dict[str, Any]:
        rooms, cribs = incident_log.rooms_and_cribs(store)
        known = dict(rooms)
        for room in settings.rooms:
            known.setdefault(room.id, room.label)
        return {"room_choices": sorted(known.items(), key=lambda r: (r[1], r[0])), "crib_choices": cribs}

    def log_links(query: LogQuery, found: Page) -> dict[str, str | None]:
        base = {k: v for k, v in query.form.items() if v and not (k == "tests" and v == "show")}
        if query.limit != PAGE_SIZE:
            base["limit"] = str(query.limit)

        def link(**more: str) -> str:
            from urllib.parse import urlencode  # noqa: PLC0415

            return "?" + urlencode({**base, **more})

        return {
            "older": None if found.older is None else link(older=found.older),
            "newer": None if found.newer is None else link(newer=found.newer),
            "first": link(),
            "csv": "/api/incidents.csv" + link(),
        }

    # ------------------------------------------------------------------------------------------ the log

    @app.get("/incidents", response_class=HTMLResponse, openapi_extra=roles)
    async def incidents_page(request: Request, who: Annotated[Principal, readers]) -> HTMLResponse:
        params = dict(request.query_params)
        try:
            query = parse_log_query(params, tz)
        except FilterError as problem:
            form = {k: params.get(k, "") for k in ("room", "crib", "kind", "priority", "since", "until", "tests")}
            extra = await read(choices)
            response = kit.page(
                request,
                "incidents.html",
                who,
                rows=[],
                total=None,
                links=None,
                form=form,
                problem=problem_text(request, problem),
                problem_field=problem.field,
                kinds=KINDS,
                priorities=PRIORITIES,
                when=when,
                duration=duration,
                **extra,
            )
            response.status_code = 422
            return response

        def work(store: Store) -> tuple[Page, int, dict[str, Any]]:
            found = incident_log.page(store, query.filters, limit=query.limit, older=query.older, newer=query.newer)
            return found, incident_log.count(store, query.filters), choices(store)

        found, total, extra = await read(work)
        return kit.page(
            request,
            "incidents.html",
            who,
            rows=found.rows,
            total=total,
            links=log_links(query, found),
            form=query.form,
            problem=None,
            problem_field=None,
            kinds=KINDS,
            priorities=PRIORITIES,
            when=when,
            duration=duration,
            **extra,
        )

    @app.get("/api/incidents", openapi_extra=roles)
    async def incidents_json(request: Request, who: Annotated[Principal, readers]) -> Response:
        try:
            query = parse_log_query(dict(request.query_params), tz)
        except FilterError as problem:
            return problem_json(problem)

        def work(store: Store) -> tuple[Page, int]:
            found = incident_log.page(store, query.filters, limit=query.limit, older=query.older, newer=query.newer)
            return found, incident_log.count(store, query.filters)

        found, total = await read(work)
        return JSONResponse(
            {
                "incidents": [incident_json(r) for r in found.rows],
                "total": total,
                "older": found.older,
                "newer": found.newer,
            }
        )

    @app.get("/api/incidents.csv", openapi_extra=roles)
    async def incidents_csv(request: Request, who: Annotated[Principal, readers]) -> Response:
        params = {k: v for k, v in request.query_params.items() if k not in {"older", "newer", "limit"}}
        try:
            query = parse_log_query(params, tz)
        except FilterError as problem:
            return problem_json(problem)

        def work(store: Store) -> str:
            rows: list[list[object]] = [list(CSV_COLUMNS)]
            for r in incident_log.iterate(store, query.filters):
                j = incident_json(r)
                rows.append(
                    [
                        j["alarm_id"],
                        j["kind"],
                        j["priority"],
                        j["room_id"],
                        j["room_label"],
                        j["crib_id"],
                        j["crib_label"],
                        int(j["test"]),
                        int(j["maintenance"]),
                        iso(j["latch_opened_at"]),
                        iso(j["raised_at"]),
                        iso(j["first_acknowledged_at"]),
                        _seconds(j["time_to_acknowledge_s"]),
                        j["first_acknowledged_by"] or "",
                        j["first_acknowledged_device"] or "",
                        iso(j["resolved_at"]),
                        _seconds(j["time_to_resolve_s"]),
                        j["resolution"] or "",
                        j["escalation_level"],
                        j["flaps"],
                    ]
                )
            return _csv(rows)

        text = await read(work)
        name = f"incidents-{site_id}-{today().isoformat()}.csv"
        return Response(
            text,
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="{name}"', "cache-control": "no-store"},
        )

    # ------------------------------------------------------------------------------------------ statistics

    computed: OrderedDict[tuple[object, ...], Figures] = OrderedDict()
    computed_lock = threading.Lock()

    async def statistics(since: float, until: float, bucket: Bucket, room: str | None) -> Figures:
        """The statistics of a range, computed again only when the record has moved since the last time they were
        asked for (a page, then its CSV, then the report: one computation)."""

        def work(store: Store) -> Figures:
            key = (since, until, bucket, room, incident_log.marks(store))
            with computed_lock:
                if key in computed:
                    computed.move_to_end(key)
                    return computed[key]
            found = incident_log.facts(store, since, until, room=room)
            offline = incident_log.offline_periods(store, since, until)
            if room is not None:
                in_room = {c.id for r in settings.rooms if r.id == room for c in r.cribs}
                in_room |= {f.crib_id for f in found}
                offline = [o for o in offline if o.crib_id in in_room]
            report = response_times(found, tz=tz, bucket=bucket, since=since, until=until)
            labels = {c.id: (c.label, r.label) for r in settings.rooms for c in r.cribs}
            noisy = nuisance(found, offline, quick_s=quick_s, since=since, until=until, crib_labels=labels)
            kinds = dict.fromkeys(KINDS, 0)
            for f in found:
                if not f.test:
                    kinds[f.kind] = kinds.get(f.kind, 0) + 1
            figures = Figures(report, noisy, kinds)
            with computed_lock:
                computed[key] = figures
                while len(computed) > STATS_CACHED:
                    computed.popitem(last=False)
            return figures

        return await read(work)

    def charts(report: ResponseReport, t: Translator) -> dict[str, Markup]:
        labels: dict[str, Any] = {
            "median_label": t("incidents.median"),
            "p90_label": t("incidents.p90"),
            "count_label": "n",
        }
        return {
            "ack_by_period": Markup(  # noqa: S704 - built by bar_chart, every label escaped there
                bar_chart(
                    [Bar(short(r.period), r.ack.median_s, r.ack.p90_s, r.ack.n) for r in report.by_period],
                    title=t("incidents.chart_ack_period"),
                    **labels,
                )
            ),
            "resolve_by_period": Markup(  # noqa: S704 - as above
                bar_chart(
                    [Bar(short(r.period), r.resolve.median_s, r.resolve.p90_s, r.resolve.n) for r in report.by_period],
                    title=t("incidents.chart_resolve_period"),
                    **labels,
                )
            ),
            "ack_by_room": Markup(  # noqa: S704 - as above
                bar_chart(
                    [Bar(r.room_label or "", r.ack.median_s, r.ack.p90_s, r.ack.n) for r in report.by_room],
                    title=t("incidents.chart_ack_room"),
                    **labels,
                )
            ),
        }

    @app.get("/incidents/stats", response_class=HTMLResponse, openapi_extra=roles)
    async def stats_page(request: Request, who: Annotated[Principal, readers]) -> HTMLResponse:
        t = Translator(kit.lang_of(request))
        try:
            query = parse_stats_query(dict(request.query_params), tz, today())
        except FilterError as problem:
            response = kit.page(
                request,
                "incidents_stats.html",
                who,
                report=None,
                form=dict(request.query_params),
                problem=problem_text(request, problem),
                problem_field=problem.field,
                room_choices=[(r.id, r.label) for r in settings.rooms],
            )
            response.status_code = 422
            return response
        figures = await statistics(query.since, query.until, query.bucket, query.room)
        report, noisy = figures.report, figures.noisy
        csv_link = "/api/incidents/stats.csv?" + "&".join(f"{k}={v}" for k, v in query.form.items() if v)
        return kit.page(
            request,
            "incidents_stats.html",
            who,
            report=report,
            noisy=noisy,
            charts=charts(report, t),
            form=query.form,
            problem=None,
            problem_field=None,
            duration=duration,
            quick_s=quick_s,
            csv_link=csv_link,
            room_choices=[(r.id, r.label) for r in settings.rooms],
        )

    @app.get("/api/incidents/stats", openapi_extra=roles)
    async def stats_json_route(request: Request, who: Annotated[Principal, readers]) -> Response:
        try:
            query = parse_stats_query(dict(request.query_params), tz, today())
        except FilterError as problem:
            return problem_json(problem)
        figures = await statistics(query.since, query.until, query.bucket, query.room)
        report, noisy = figures.report, figures.noisy
        body = stats_json(report, noisy)
        body["since"], body["until"] = query.first_day.isoformat(), query.last_day.isoformat()
        body["quick_resolve_s"] = quick_s
        return JSONResponse(body)

    @app.get("/api/incidents/stats.csv", openapi_extra=roles)
    async def stats_csv_route(request: Request, who: Annotated[Principal, readers]) -> Response:
        try:
            query = parse_stats_query(dict(request.query_params), tz, today())
        except FilterError as problem:
            return problem_json(problem)
        figures = await statistics(query.since, query.until, query.bucket, query.room)
        report, noisy = figures.report, figures.noisy
        name = f"response-times-{site_id}-{query.first_day.isoformat()}-{query.last_day.isoformat()}.csv"
        return Response(
            stats_csv(report, noisy),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="{name}"', "cache-control": "no-store"},
        )

    @app.get("/incidents/report", response_class=HTMLResponse, openapi_extra=roles)
    async def report_page(request: Request, who: Annotated[Principal, readers], month: str | None = None) -> Response:
        t = Translator(kit.lang_of(request))
        try:
            _unknown(request.query_params, frozenset({"month"}))
            first = parse_month(month, today())
        except FilterError as problem:
            raise HTTPException(status_code=422, detail=problem_text(request, problem)) from None
        after = next_month(first)
        since, until = start_of(first, tz), start_of(after, tz)
        figures = await statistics(since, until, Bucket.WEEK, None)
        report, noisy, counts = figures.report, figures.noisy, figures.kinds
        previous = (first - timedelta(days=1)).replace(day=1)
        return kit.page(
            request,
            "incidents_report.html",
            who,
            month=first.strftime("%Y-%m"),
            previous=previous.strftime("%Y-%m"),
            following=after.strftime("%Y-%m"),
            report=report,
            noisy=noisy[:10],
            kinds=counts,
            charts=charts(report, t),
            duration=duration,
            quick_s=quick_s,
            printed=when(kit.now()),
        )

    @app.get("/incidents/{alarm_id}", response_class=HTMLResponse, openapi_extra=roles)
    async def incident_page(alarm_id: str, request: Request, who: Annotated[Principal, readers]) -> HTMLResponse:
        rec = await read(lambda store: incident_log.record(store, alarm_id))
        if rec is None:
            raise HTTPException(status_code=404, detail=f"no incident {alarm_id!r}")
        return kit.page(
            request,
            "incidents_detail.html",
            who,
            rec=rec,
            inc=rec.row.incident,
            row=rec.row,
            steps=timeline_steps(rec),
            when=when,
            duration=duration,
        )

    @app.get("/api/incidents/{alarm_id}", openapi_extra=roles)
    async def incident_json_route(alarm_id: str, who: Annotated[Principal, readers]) -> dict[str, Any]:
        rec = await read(lambda store: incident_log.record(store, alarm_id))
        if rec is None:
            raise HTTPException(status_code=404, detail=f"no incident {alarm_id!r}")
        return {
            "incident": incident_json(rec.row),
            "timeline": [
                {
                    "at": s.at,
                    "what": s.what,
                    "by": s.by,
                    "device": s.device,
                    "detail": s.detail,
                    "result": s.result,
                    "notice": s.notice,
                    "step": s.step,
                }
                for s in timeline_steps(rec)
            ],
            "deliveries": [
                {
                    "at": d.at,
                    "channel": d.channel,
                    "group": d.group,
                    "member": d.member,
                    "address": d.address,
                    "notice_id": d.notice_id,
                    "kind": d.kind,
                    "attempt": d.attempt,
                    "result": d.result,
                    "latency_ms": d.latency_ms,
                    "error": d.error,
                }
                for d in rec.deliveries
            ],
        }
