"""The incident log's reads for people (the web app's manager pages, ``python -m bench.store``): one filtered page
of incidents at a time, newest first, by keyset; one incident with its whole timeline and deliveries; the facts the
response-time statistics need (gateway/reports/response.py).

Keyset paging: a page ends at an ``(raised_at, alarm_id)`` key and the next one starts strictly after it, so a page
deep in a year of incidents costs what the first one does (an index range, schema version 5), and an incident
raised meanwhile never shifts the pages already shown. Plain synchronous code on a read-only :class:`Store`, called
from the web app's worker threads.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from gateway.reports.response import IncidentFacts, OfflinePeriod
from gateway.store.store import INCIDENT_COLUMNS, DeliveryRow, Incident, Store, TimelineEntry, incident_from_row

_QUALIFIED = ", ".join(f"incidents.{name.strip()}" for name in INCIDENT_COLUMNS.split(","))
_FIRST_ACK = 'fa.at, fa."by", fa.device'
_FIRST_ACK_JOIN = (
    " LEFT JOIN timeline fa ON fa.id = (SELECT t.id FROM timeline t WHERE t.alarm_id = incidents.alarm_id "
    "AND t.type = 'acknowledged' ORDER BY t.at, t.id LIMIT 1)"
)
"""Each incident's first acknowledgement on its timeline (when, by whom, from which device): the response, which a
reminder does not undo (``incidents.acknowledged_*`` is cleared by a reminder until the next one)."""

MAX_PAGE = 200


class CursorError(ValueError):
    """A paging cursor this code did not make."""


@dataclass(frozen=True, slots=True)
class Filters:
    """What the manager asked for; None: any. ``since`` inclusive, ``until`` exclusive, on the time raised."""

    room: str | None = None
    crib: str | None = None
    kind: str | None = None
    priority: str | None = None
    since: float | None = None
    until: float | None = None
    tests: bool = True
    """Show test alarms."""


@dataclass(frozen=True, slots=True)
class LogRow:
    """One incident of a page, with its first acknowledgement (its response time)."""

    incident: Incident
    first_ack_at: float | None
    first_ack_by: str | None = None
    first_ack_device: str | None = None

    @property
    def ack_s(self) -> float | None:
        return None if self.first_ack_at is None else self.first_ack_at - self.incident.raised_at

    @property
    def resolve_s(self) -> float | None:
        inc = self.incident
        return None if inc.resolved_at is None else inc.resolved_at - inc.raised_at


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[LogRow]
    older: str | None
    """The cursor of the next page (older incidents); None: this is the last."""
    newer: str | None
    """The cursor of the page before (newer incidents); None: this is the first."""


@dataclass(frozen=True, slots=True)
class IncidentRecord:
    row: LogRow
    timeline: list[TimelineEntry]
    deliveries: list[DeliveryRow]


def encode_cursor(raised_at: float, alarm_id: str) -> str:
    return base64.urlsafe_b64encode(f"{raised_at!r}|{alarm_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """``(raised_at, alarm_id)`` of a cursor; CursorError for anything else."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, sep, alarm_id = text.partition("|")
        value = float(at)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise CursorError(f"not a page cursor: {cursor[:40]!r}") from None
    if not sep or not alarm_id or value != value or value in (float("inf"), float("-inf")):  # noqa: PLR0124 - NaN
        raise CursorError(f"not a page cursor: {cursor[:40]!r}")
    return value, alarm_id


def _where(f: Filters) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    args: list[Any] = []
    for clause, value in (
        ("incidents.room_id = ?", f.room),
        ("incidents.crib_id = ?", f.crib),
        ("incidents.kind = ?", f.kind),
        ("incidents.priority = ?", f.priority),
        ("incidents.raised_at >= ?", f.since),
        ("incidents.raised_at < ?", f.until),
    ):
        if value is not None:
            where.append(clause)
            args.append(value)
    if not f.tests:
        where.append("incidents.test = 0")
    return where, args


def page(store: Store, f: Filters, *, limit: int = 50, older: str | None = None, newer: str | None = None) -> Page:
    """One page of incidents, newest first: the first one, the one after ``older`` or the one before ``newer``.

    CursorError for a cursor this code did not make; ValueError for a limit out of 1..MAX_PAGE."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"a page holds 1 to {MAX_PAGE} incidents")
    where, args = _where(f)
    backwards = newer is not None
    if older is not None or newer is not None:
        at, alarm_id = decode_cursor(older if older is not None else newer or "")
        op = "<" if older is not None else ">"
        # An index range on raised_at first, the tie on the alarm id after (row values would not narrow the range).
        eq = "<=" if op == "<" else ">="
        where.append(f"incidents.raised_at {eq} ? AND (incidents.raised_at {op} ? OR incidents.alarm_id {op} ?)")
        args += [at, at, alarm_id]
    order = "ASC" if backwards else "DESC"
    sql = f"SELECT {_QUALIFIED}, {_FIRST_ACK} FROM incidents{_FIRST_ACK_JOIN}"  # noqa: S608 - fixed columns and clauses
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY incidents.raised_at {order}, incidents.alarm_id {order} LIMIT ?"
    args.append(limit + 1)
    found = store.connection.execute(sql, args).fetchall()
    more = len(found) > limit
    found = found[:limit]
    if backwards:
        found.reverse()
    rows = [LogRow(incident_from_row(r), r[20], r[21], r[22]) for r in found]
    if not rows:
        return Page([], None, None)
    first, last = rows[0].incident, rows[-1].incident
    has_older = more if not backwards else True
    has_newer = (older is not None) if not backwards else more
    return Page(
        rows,
        older=encode_cursor(last.raised_at, last.alarm_id) if has_older else None,
        newer=encode_cursor(first.raised_at, first.alarm_id) if has_newer else None,
    )


def count(store: Store, f: Filters) -> int:
    """How many incidents the filters match."""
    where, args = _where(f)
    sql = "SELECT COUNT(*) FROM incidents"
    if where:
        sql += " WHERE " + " AND ".join(where)
    return int(store.connection.execute(sql, args).fetchone()[0])


def iterate(store: Store, f: Filters, *, batch: int = 1000) -> Iterator[LogRow]:
    """Every incident the filters match, newest first (the CSV export), a page at a time."""
    cursor: str | None = None
    while True:
        found = page(store, f, limit=min(batch, MAX_PAGE), older=cursor)
        yield from found.rows
        if found.older is None:
            return
        cursor = found.older


def record(store: Store, alarm_id: str) -> IncidentRecord | None:
    """One incident with its whole timeline and every delivery attempt of its notices; None if unknown."""
    found = store.connection.execute(
        f"SELECT {_QUALIFIED}, {_FIRST_ACK} FROM incidents{_FIRST_ACK_JOIN} WHERE incidents.alarm_id = ?",  # noqa: S608
        (alarm_id,),
    ).fetchone()
    if found is None:
        return None
    return IncidentRecord(
        LogRow(incident_from_row(found), found[20], found[21], found[22]),
        store.timeline(alarm_id),
        store.deliveries(alarm_id=alarm_id),
    )


def facts(store: Store, since: float, until: float, *, room: str | None = None) -> list[IncidentFacts]:
    """What the statistics need of every incident raised in ``[since, until)`` (tests included, marked).

    The first acknowledgement is ``incidents.acknowledged_at`` (the first one stands) except for an alarm that was
    reminded (a reminder clears it until the next one): those few are looked up on the timeline."""
    conn = store.connection
    firsts = dict(
        conn.execute(
            "SELECT r.alarm_id, (SELECT MIN(a.at) FROM timeline a WHERE a.alarm_id = r.alarm_id "
            "AND a.type = 'acknowledged') FROM timeline r WHERE r.type = 'reminded' AND r.at >= ? GROUP BY r.alarm_id",
            (since,),
        ).fetchall()
    )
    sql = (
        "SELECT alarm_id, kind, room_id, room_label, crib_id, crib_label, trigger_sensor, raised_at, "
        "acknowledged_at, resolved_at, test, maintenance, flaps FROM incidents WHERE raised_at >= ? AND raised_at < ?"
    )
    args: list[Any] = [since, until]
    if room is not None:
        sql += " AND room_id = ?"
        args.append(room)
    out: list[IncidentFacts] = []
    make = IncidentFacts
    for r in conn.execute(sql + " ORDER BY raised_at", args):
        ack = firsts.get(r[0], r[8]) if firsts else r[8]
        out.append(make(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], ack, r[9], bool(r[10]), bool(r[11]), r[12]))
    return out


def offline_periods(store: Store, since: float, until: float) -> list[OfflinePeriod]:
    """Every time a sensor went offline in ``[since, until)`` (``sensor_events``)."""
    rows = store.connection.execute(
        "SELECT sensor_id, crib_id, at FROM sensor_events WHERE kind = 'offline' AND at >= ? AND at < ? ORDER BY at",
        (since, until),
    ).fetchall()
    return [OfflinePeriod(r[0], r[1], r[2]) for r in rows]


def _distinct(store: Store, column: str, label: str) -> list[tuple[str, str]]:
    """Every value of ``column`` (an indexed one) with its latest ``label``: a skip scan, one index probe per
    value, not a scan of the table."""
    conn = store.connection
    found = conn.execute(
        f"WITH RECURSIVE v(id) AS (SELECT MIN({column}) FROM incidents UNION ALL "  # noqa: S608 - fixed names
        f"SELECT (SELECT MIN({column}) FROM incidents WHERE {column} > v.id) FROM v WHERE v.id IS NOT NULL) "
        "SELECT id FROM v WHERE id IS NOT NULL"
    ).fetchall()
    out: list[tuple[str, str]] = []
    for (value,) in found:
        row = conn.execute(
            f"SELECT {label} FROM incidents WHERE {column} = ? ORDER BY raised_at DESC LIMIT 1",  # noqa: S608
            (value,),
        ).fetchone()
        out.append((value, row[0]))
    return sorted(out, key=lambda r: (r[1], r[0]))


def rooms_and_cribs(store: Store) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Every room and crib the log has seen, ``(id, latest label)``, for the filters' choices."""
    return _distinct(store, "room_id", "room_label"), _distinct(store, "crib_id", "crib_label")


def marks(store: Store) -> tuple[int, int, int, int]:
    """Where the record stands: the last row of the incidents, the timeline, the sensor events and the audit (a
    prune leaves an audit row). Any write the statistics could see moves one of them: a key for a cache of them.
    Four index probes."""
    row = store.connection.execute(
        "SELECT (SELECT COALESCE(MAX(rowid), 0) FROM incidents), (SELECT COALESCE(MAX(id), 0) FROM timeline), "
        "(SELECT COALESCE(MAX(id), 0) FROM sensor_events), (SELECT COALESCE(MAX(id), 0) FROM audit)"
    ).fetchone()
    return int(row[0]), int(row[1]), int(row[2]), int(row[3])
