"""The helping-hands requests in the site's store (``helping_requests``, ``helping_history``; docs/helping-hands.md).

One connection of its own, shared by the web app's worker threads under a lock (like the accounts); never used on
the event loop. A request, each status change and its MQTT message are written in ONE transaction: the message's
row in the ``outbox`` (the same durable outbox as alarm events) exists exactly when the change does, and stays
there until the broker has acknowledged it (the gateway's link reports it; a restart sends it again). The change's
InfluxDB points (``points``, built by the caller) go into the store's InfluxDB outbox in the same transaction.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.domain.helping import OPEN_STATUSES, ContactKind, Outcome, Reason, RequestFields, Status, Urgency
from gateway.store.schema import StoreError
from gateway.store.store import OutboxRow, Store


@dataclass(frozen=True, slots=True)
class HelpRequest:
    """One request for helping hands, as it is now."""

    id: int
    site_id: str
    room: str
    day: dt.date
    start: str
    end: str
    starts_at: float
    ends_at: float
    people: int
    reason: Reason
    urgency: Urgency
    note: str
    contact_kind: ContactKind
    contact: str
    requested_by: str
    created_at: float
    status: Status
    assignee: str | None
    filled: int
    updated_at: float


@dataclass(frozen=True, slots=True)
class HelpChange:
    """One line of a request's history: who moved it to which status, when."""

    id: int
    request_id: int
    at: float
    by: str
    status: Status
    assignee: str | None
    filled: int
    comment: str


@dataclass(frozen=True, slots=True)
class RequestFilter:
    """What the coordinators' list shows; every part optional."""

    statuses: Collection[Status] = ()
    site_id: str | None = None
    urgency: Urgency | None = None
    reason: Reason | None = None
    from_day: dt.date | None = None
    to_day: dt.date | None = None
    requested_by: str | None = None


Message = Callable[[HelpRequest, HelpChange], OutboxRow]
"""The MQTT message of a request after a change (built by the caller: the store knows no protocol)."""

Points = Callable[["HelpRequest", "HelpChange", "HelpRequest | None", int], Sequence[tuple[str, bool, float]]]
"""The InfluxDB points of a change, as the InfluxDB outbox's rows ``(line, alarm, at)``, given the request after
the change, the change, the request before it (None: just made) and how many requests of its site are open after
it (built by the caller: the store knows no InfluxDB schema)."""

_COLUMNS = (
    'id, site_id, room, day, start, "end", starts_at, ends_at, people, reason, urgency, note, contact_kind, '
    "contact, requested_by, created_at, status, assignee, filled, updated_at"
)


def _request(r: tuple[Any, ...]) -> HelpRequest:
    return HelpRequest(
        id=int(r[0]),
        site_id=str(r[1]),
        room=str(r[2]),
        day=dt.date.fromisoformat(str(r[3])),
        start=str(r[4]),
        end=str(r[5]),
        starts_at=float(r[6]),
        ends_at=float(r[7]),
        people=int(r[8]),
        reason=Reason(r[9]),
        urgency=Urgency(r[10]),
        note=str(r[11]),
        contact_kind=ContactKind(r[12]),
        contact=str(r[13]),
        requested_by=str(r[14]),
        created_at=float(r[15]),
        status=Status(r[16]),
        assignee=None if r[17] is None else str(r[17]),
        filled=int(r[18]),
        updated_at=float(r[19]),
    )


class HelpingStore:
    """Requests and their history. Build it with :meth:`open`; safe to call from several threads."""

    def __init__(self, store: Store, *, points: Points | None = None) -> None:
        self._store = store
        self._points = points
        self._conn = store.connection
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: Path | str, *, site_id: str, points: Points | None = None) -> HelpingStore:
        """Open (create, migrate) the site's store (StoreError as :meth:`Store.open`)."""
        return cls(Store.open(path, site_id=site_id), points=points)

    def close(self) -> None:
        with self._lock:
            self._store.close()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """One transaction under the lock; a failing disk (full, read-only, locked too long) is a StoreError."""
        with self._lock:
            try:
                with self._store.transaction():
                    yield
            except sqlite3.Error as exc:
                raise StoreError(f"the store cannot take the request: {exc}") from exc

    # ------------------------------------------------------------------------------------------ writes

    def create(self, fields: RequestFields, by: str, at: float, message: Message) -> tuple[HelpRequest, OutboxRow]:
        """A new request (status ``new``), its first history line and its MQTT message, in one transaction."""
        with self._writing():
            cursor = self._conn.execute(
                'INSERT INTO helping_requests (site_id, room, day, start, "end", starts_at, ends_at, people, reason, '
                "urgency, note, contact_kind, contact, requested_by, created_at, status, filled, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'new', 0, ?)",
                (
                    fields.site,
                    fields.room,
                    fields.day.isoformat(),
                    fields.start,
                    fields.end,
                    fields.starts_at,
                    fields.ends_at,
                    fields.people,
                    fields.reason.value,
                    fields.urgency.value,
                    fields.note,
                    fields.contact_kind.value,
                    fields.contact,
                    by,
                    at,
                    at,
                ),
            )
            request_id = int(cursor.lastrowid or 0)
            return self._after_change(None, request_id, by, at, "", message)

    def change(  # noqa: PLR0917 - a change's parts
        self,
        request_id: int,
        decide: Callable[[HelpRequest], Outcome],
        by: str,
        at: float,
        comment: str,
        message: Message,
    ) -> tuple[HelpRequest, OutboxRow] | None:
        """Move a request: ``decide`` is given the request as it is now (under the write lock, BEGIN IMMEDIATE, so
        two coordinators never both move it from the same status) and returns what it becomes, or raises (nothing is
        written). None: no such request."""
        with self._writing():
            current = self._get(request_id)
            if current is None:
                return None
            outcome = decide(current)
            self._conn.execute(
                "UPDATE helping_requests SET status = ?, assignee = ?, filled = ?, updated_at = ? WHERE id = ?",
                (outcome.status.value, outcome.assignee, outcome.filled, at, request_id),
            )
            return self._after_change(current, request_id, by, at, comment, message)

    def _after_change(  # noqa: PLR0917 - a change's parts
        self, before: HelpRequest | None, request_id: int, by: str, at: float, comment: str, message: Message
    ) -> tuple[HelpRequest, OutboxRow]:
        request = self._get(request_id)
        assert request is not None
        cursor = self._conn.execute(
            'INSERT INTO helping_history (request_id, at, "by", status, assignee, filled, comment) '
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (request_id, at, by, request.status.value, request.assignee, request.filled, comment),
        )
        change = HelpChange(
            int(cursor.lastrowid or 0), request_id, at, by, request.status, request.assignee, request.filled, comment
        )
        row = message(request, change)
        self._store.outbox_put(row.key, row.topic, row.payload, row.qos, row.retain, at)
        if self._points is not None:
            self._store.influx_put(self._points(request, change, before, self._open_count(request.site_id)))
        return request, row

    def _open_count(self, site_id: str) -> int:
        statuses = sorted(s.value for s in OPEN_STATUSES)
        marks = ", ".join("?" for _ in statuses)
        row = self._conn.execute(
            f"SELECT COUNT(*) FROM helping_requests WHERE site_id = ? AND status IN ({marks})",  # noqa: S608 - marks only
            (site_id, *statuses),
        ).fetchone()
        return int(row[0])

    def prune(self, now: float, keep_s: float) -> int:
        """Delete the requests whose window ended and that nobody changed for longer than ``keep_s``, with their
        history: they hold staff ids and phone numbers. Returns how many went."""
        with self._writing():
            cursor = self._conn.execute(
                "DELETE FROM helping_requests WHERE ends_at < ? AND updated_at < ?", (now - keep_s, now - keep_s)
            )
            return cursor.rowcount

    # ------------------------------------------------------------------------------------------ reads

    def _get(self, request_id: int) -> HelpRequest | None:
        row = self._conn.execute(f"SELECT {_COLUMNS} FROM helping_requests WHERE id = ?", (request_id,)).fetchone()  # noqa: S608 - fixed columns
        return None if row is None else _request(row)

    def get(self, request_id: int) -> HelpRequest | None:
        with self._lock:
            return self._get(request_id)

    def history(self, request_id: int) -> list[HelpChange]:
        with self._lock:
            rows = self._conn.execute(
                'SELECT id, request_id, at, "by", status, assignee, filled, comment FROM helping_history '
                "WHERE request_id = ? ORDER BY id",
                (request_id,),
            ).fetchall()
        return [HelpChange(r[0], r[1], r[2], r[3], Status(r[4]), r[5], r[6], r[7]) for r in rows]

    def requests(self, where: RequestFilter = RequestFilter(), *, limit: int = 200) -> list[HelpRequest]:
        """Requests matching ``where``: the soonest window first among open ones, then the rest newest first."""
        clauses: list[str] = []
        args: list[object] = []
        if where.statuses:
            clauses.append(f"status IN ({', '.join('?' for _ in where.statuses)})")
            args += [s.value for s in where.statuses]
        for column, value in (
            ("site_id", where.site_id),
            ("urgency", None if where.urgency is None else where.urgency.value),
            ("reason", None if where.reason is None else where.reason.value),
            ("requested_by", where.requested_by),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        if where.from_day is not None:
            clauses.append("day >= ?")
            args.append(where.from_day.isoformat())
        if where.to_day is not None:
            clauses.append("day <= ?")
            args.append(where.to_day.isoformat())
        sql = f"SELECT {_COLUMNS} FROM helping_requests"  # noqa: S608 - fixed columns, values bound
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += (
            " ORDER BY CASE WHEN status IN ('done', 'cancelled') THEN 1 ELSE 0 END, "
            "CASE WHEN status IN ('done', 'cancelled') THEN -starts_at ELSE starts_at END, id LIMIT ?"
        )
        args.append(limit)
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        return [_request(r) for r in rows]
