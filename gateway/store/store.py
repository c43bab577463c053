"""The gateway's own record: one SQLite file per site, and the only code that touches it.

:class:`Store` is synchronous and holds one connection, used from one thread at a time: the gateway opens it at
start-up (boot counter, open alarms, crib states, undelivered outbox), then hands it to the
:class:`~gateway.store.writer.StoreWriter` thread. Readers (``cribwatch incidents``, later the web app) open their
own read-only Store; WAL lets them read while the gateway writes.

Write methods do not commit: :meth:`Store.transaction` is the unit (one fsync per transaction), except
:meth:`Store.begin_run`, which commits the boot counter itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.domain.events import AlarmEvent, CribRecord, CribState, MaintenanceRecord, OpenAlarmRecord, Trigger
from gateway.domain.vocab import AlarmEventType, AlarmKind, LatchState
from gateway.store.schema import SCHEMA_VERSION, StoreError, check_version, migrate, user_version

BUSY_TIMEOUT_MS = 5000
"""How long a statement waits for another connection's lock before it fails with "database is locked"."""

DELIVERED_KEEP_S = 86_400.0
"""Delivered outbox rows are kept a day (to see what left, and when), then pruned."""


@dataclass(frozen=True, slots=True)
class OutboxRow:
    key: str
    topic: str
    payload: bytes
    qos: int
    retain: bool
    created_at: float


@dataclass(frozen=True, slots=True)
class Incident:
    """One row of the incident log (``cribwatch incidents``, later the web app)."""

    alarm_id: str
    run: int
    kind: AlarmKind
    priority: str
    site_id: str
    room_id: str
    crib_id: str
    room_label: str
    crib_label: str
    raised_at: float
    latch_opened_at: float | None
    acknowledged_at: float | None
    acknowledged_by: str | None
    acknowledged_device: str | None
    resolved_at: float | None
    resolution: str | None
    test: bool
    escalation_level: int
    maintenance: bool = False
    flaps: int = 0

    @property
    def response_s(self) -> float | None:
        """Seconds from raising to the acknowledgement; None if never acknowledged."""
        return None if self.acknowledged_at is None else self.acknowledged_at - self.raised_at

    @property
    def open(self) -> bool:
        return self.resolved_at is None


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    alarm_id: str
    run: int
    seq: int
    at: float
    type: str
    by: str | None
    device: str | None
    detail: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: float
    actor: str
    source: str
    action: str
    detail: str | None


@dataclass(frozen=True, slots=True)
class SensorEventRow:
    id: int
    at: float
    sensor_id: str
    crib_id: str
    kind: str
    detail: str | None


INCIDENT_COLUMNS = (
    "alarm_id, run, kind, priority, site_id, room_id, crib_id, room_label, crib_label, raised_at, latch_opened_at, "
    "acknowledged_at, acknowledged_by, acknowledged_device, resolved_at, resolution, test, escalation_level, "
    "maintenance, flaps"
)


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    """One attempt of an alert channel to deliver one notice to one recipient (``deliveries``)."""

    at: float
    channel: str
    group: str
    member: str
    address: str
    notice_id: str
    alarm_id: str
    kind: str
    attempt: int
    result: str
    latency_ms: float | None
    error: str | None
    test: bool


def incident_from_row(r: Sequence[Any]) -> Incident:
    """An :class:`Incident` from a row whose first columns are :data:`INCIDENT_COLUMNS`, in that order."""
    return Incident(
        alarm_id=r[0],
        run=r[1],
        kind=AlarmKind(r[2]),
        priority=r[3],
        site_id=r[4],
        room_id=r[5],
        crib_id=r[6],
        room_label=r[7],
        crib_label=r[8],
        raised_at=r[9],
        latch_opened_at=r[10],
        acknowledged_at=r[11],
        acknowledged_by=r[12],
        acknowledged_device=r[13],
        resolved_at=r[14],
        resolution=r[15],
        test=bool(r[16]),
        escalation_level=r[17],
        maintenance=bool(r[18]),
        flaps=r[19],
    )


_DELIVERY_COLUMNS = (
    'at, channel, "group", member, address, notice_id, alarm_id, kind, attempt, result, latency_ms, error, test'
)


class Store:
    """One site's SQLite file. Build it with :meth:`open`."""

    def __init__(self, conn: sqlite3.Connection, path: Path, *, site_id: str, readonly: bool) -> None:
        self._conn = conn
        self.path = path
        self.site_id = site_id
        self.readonly = readonly
        self._influx_rows: int | None = None

    # ------------------------------------------------------------------------------------------ opening

    @classmethod
    def open(cls, path: Path | str, *, site_id: str, readonly: bool = False) -> Store:
        """Open (and unless ``readonly``, create and migrate) the store of site ``site_id`` at ``path``.

        StoreError: a file of another site, a schema newer than this code, a read-only open of a missing file
        or of a file not at :data:`SCHEMA_VERSION`, or a file SQLite cannot open.
        """
        path = Path(path)
        where = str(path)
        try:
            if readonly:
                if not path.is_file():
                    raise StoreError(f"{where}: no such store (the gateway creates it when it first starts)")
                uri = f"{path.resolve().as_uri()}?mode=ro"
                conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"{where}: cannot open the store: {exc}") from exc
        try:
            cls._configure(conn, readonly=readonly)
            if readonly:
                version = check_version(conn, where)
                if version != SCHEMA_VERSION:
                    raise StoreError(
                        f"{where}: the store's schema is version {version}, this code reads version "
                        f"{SCHEMA_VERSION}; let the gateway open it once to migrate it"
                    )
            else:
                migrate(conn, where)
            cls._claim(conn, where, site_id, readonly=readonly)
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(f"{where}: cannot use the store: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return cls(conn, path, site_id=site_id, readonly=readonly)

    @staticmethod
    def _configure(conn: sqlite3.Connection, *, readonly: bool) -> None:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys = ON")
        if not readonly:
            mode = Store._switch_to_wal(conn)
            if str(mode).lower() != "wal":
                raise StoreError(f"cannot switch the store to WAL (journal mode stays {mode!r})")
            conn.execute("PRAGMA synchronous = FULL")

    @staticmethod
    def _switch_to_wal(conn: sqlite3.Connection) -> object:
        """``PRAGMA journal_mode = WAL``, waiting for another opener as long as the busy timeout.

        SQLite answers this pragma "database is locked" at once, without its busy handler, while another
        connection is switching the same new file (two threads of one gateway opening it at start): retried here.
        """
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        pause = 0.002
        while True:
            try:
                return conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() >= deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    @staticmethod
    def _claim(conn: sqlite3.Connection, where: str, site_id: str, *, readonly: bool) -> None:
        """One file per site: record the site id in a new file, refuse a file of another site."""
        row = conn.execute("SELECT value FROM meta WHERE key = 'site_id'").fetchone()
        if row is None:
            if not readonly:
                conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('site_id', ?)", (site_id,))
                row = conn.execute("SELECT value FROM meta WHERE key = 'site_id'").fetchone()
            if row is None:
                return
        if row[0] != site_id:
            raise StoreError(
                f"{where}: this store belongs to site {row[0]!r}, not {site_id!r}: one file per site "
                "(check [store] path and [site] id)"
            )

    @property
    def schema_version(self) -> int:
        return user_version(self._conn)

    @property
    def connection(self) -> sqlite3.Connection:
        """The underlying connection (for tests and upkeep; everything else goes through the methods)."""
        return self._conn

    def close(self) -> None:
        self._conn.close()

    def size_bytes(self) -> int:
        """The file and its write-ahead log, in bytes."""
        total = 0
        for name in (str(self.path), f"{self.path}-wal"):
            with contextlib.suppress(OSError):
                total += os.path.getsize(name)
        return total

    # ------------------------------------------------------------------------------------------ start-up

    def begin_run(self, at: float, *, detail: dict[str, str] | None = None) -> int:
        """Count one more gateway run, durably (committed here), with an audit row; returns the run number."""
        with self.transaction():
            run = self.last_run() + 1
            self._conn.execute(
                "INSERT INTO meta (key, value) VALUES ('boot_counter', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(run),),
            )
            text = json.dumps({"run": str(run), **(detail or {})}, sort_keys=True)
            self.audit(at, "gateway", "gateway", "started", text)
        return run

    def claim_run(self, run: int, at: float) -> None:
        """Count a run the gateway had to start without :meth:`begin_run` (the disk would not take the write then):
        the counter moves up to ``run`` (never down), with an audit row. Inside :meth:`transaction`."""
        if run <= self.last_run():
            return
        self._conn.execute(
            "INSERT INTO meta (key, value) VALUES ('boot_counter', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (str(run),),
        )
        self.audit(at, "gateway", "gateway", "started", json.dumps({"run": str(run), "counted": "late"}))

    def last_run(self) -> int:
        """The latest run :meth:`begin_run` counted; 0 for a new file."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'boot_counter'").fetchone()
        return 0 if row is None else int(row[0])

    def open_alarms(self) -> list[OpenAlarmRecord]:
        """Alarms not resolved (raised or acknowledged), oldest first."""
        rows = self._conn.execute(
            "SELECT alarm_id, run, crib_id, kind, raised_at, trigger_sensor, trigger_boot, trigger_seq, "
            "latch_opened_at, acknowledged_by, acknowledged_device, acknowledged_at, test, escalation_level, "
            "room_id, room_label, crib_label, maintenance, flaps "
            "FROM incidents WHERE resolved_at IS NULL ORDER BY raised_at, alarm_id"
        ).fetchall()
        return [
            OpenAlarmRecord(
                alarm_id=r[0],
                run=r[1],
                crib_id=r[2],
                kind=AlarmKind(r[3]),
                raised_at=r[4],
                trigger=None if r[5] is None else Trigger(sensor_id=r[5], boot=r[6], seq=r[7]),
                latch_opened_at=r[8],
                acknowledged_by=r[9],
                acknowledged_device=r[10],
                acknowledged_at=r[11],
                test=bool(r[12]),
                escalation_level=r[13],
                room_id=r[14],
                room_label=r[15],
                crib_label=r[16],
                maintenance=bool(r[17]),
                flaps=r[18],
            )
            for r in rows
        ]

    def crib_records(self) -> list[CribRecord]:
        rows = self._conn.execute(
            "SELECT crib_id, latch, sensor_online, battery_pct, at, latch_opened_at FROM cribs ORDER BY crib_id"
        ).fetchall()
        return [
            CribRecord(
                crib_id=r[0],
                latch=None if r[1] is None else LatchState(r[1]),
                sensor_online=None if r[2] is None else bool(r[2]),
                battery_pct=r[3],
                at=r[4],
                latch_opened_at=r[5],
            )
            for r in rows
        ]

    def pending_outbox(self) -> list[OutboxRow]:
        """Messages not yet delivered, oldest first."""
        rows = self._conn.execute(
            "SELECT key, topic, payload, qos, retain, created_at FROM outbox WHERE delivered_at IS NULL ORDER BY id"
        ).fetchall()
        return [OutboxRow(r[0], r[1], bytes(r[2]), r[3], bool(r[4]), r[5]) for r in rows]

    # ------------------------------------------------------------------------------------------ writes

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; ``ROLLBACK`` if the block raises (or the commit fails)."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
            self._influx_rows = None  # counted again when next asked: the rolled-back puts are not there
            raise

    def record_alarm_event(self, ev: AlarmEvent) -> None:
        """One step of an alarm: the incident row (created by whichever step comes first) and a timeline row.

        Replaying a step (same alarm, type, run and seq) changes nothing: the first acknowledgement and the
        first resolution stand, and the timeline has one row per step.
        """
        trigger = ev.trigger
        self._conn.execute(
            "INSERT OR IGNORE INTO incidents (alarm_id, run, kind, priority, site_id, room_id, crib_id, room_label, "
            "crib_label, raised_at, latch_opened_at, test, escalation_level, trigger_sensor, trigger_boot, "
            "trigger_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                ev.alarm_id,
                ev.run,
                str(ev.kind),
                ev.priority.label,
                ev.site_id,
                ev.room_id,
                ev.crib_id,
                ev.room_label,
                ev.crib_label,
                ev.raised_at,
                ev.latch_opened_at,
                int(ev.test),
                ev.escalation_level,
                None if trigger is None else trigger.sensor_id,
                None if trigger is None else trigger.boot,
                None if trigger is None else trigger.seq,
            ),
        )
        self._conn.execute(
            "UPDATE incidents SET latch_opened_at = COALESCE(latch_opened_at, ?), test = ?, "
            "escalation_level = MAX(escalation_level, ?), maintenance = ?, flaps = MAX(flaps, ?) WHERE alarm_id = ?",
            (ev.latch_opened_at, int(ev.test), ev.escalation_level, int(ev.maintenance), ev.flaps, ev.alarm_id),
        )
        if ev.type is AlarmEventType.REMINDED:  # back, not acknowledged any more (the timeline keeps the ack)
            self._conn.execute(
                "UPDATE incidents SET acknowledged_at = NULL, acknowledged_by = NULL, acknowledged_device = NULL "
                "WHERE alarm_id = ?",
                (ev.alarm_id,),
            )
        ack_at, ack_by, ack_device = ev.acknowledged_at, ev.acknowledged_by, None
        if ev.type is AlarmEventType.ACKNOWLEDGED:
            ack_at = ev.at if ack_at is None else ack_at
            ack_by = ev.by if ack_by is None else ack_by
            ack_device = ev.device
        if ack_at is not None and ev.type is not AlarmEventType.REMINDED:
            self._conn.execute(
                "UPDATE incidents SET acknowledged_at = ?, acknowledged_by = ?, acknowledged_device = ? "
                "WHERE alarm_id = ? AND acknowledged_at IS NULL",
                (ack_at, ack_by, ack_device, ev.alarm_id),
            )
        if ev.type is AlarmEventType.RESOLVED:
            self._conn.execute(
                "UPDATE incidents SET resolved_at = ?, resolution = ? WHERE alarm_id = ? AND resolved_at IS NULL",
                (ev.at, None if ev.resolution is None else str(ev.resolution), ev.alarm_id),
            )
        detail: dict[str, Any] = {}
        if trigger is not None:
            detail["trigger"] = {"sensor_id": trigger.sensor_id, "boot": trigger.boot, "seq": trigger.seq}
        if ev.resolution is not None:
            detail["resolution"] = str(ev.resolution)
        if ev.escalation_level:
            detail["escalation_level"] = ev.escalation_level
        if ev.maintenance:
            detail["maintenance"] = True
        if ev.flaps:
            detail["flaps"] = ev.flaps
        if ev.test:
            detail["test"] = True
        self._timeline(
            ev.alarm_id, ev.run, ev.seq, ev.at, str(ev.type), by=ev.by, device=ev.device, detail=detail or None
        )

    def record_step(  # noqa: PLR0917 - one timeline row's fields
        self, alarm_id: str, run: int, n: int, at: float, step: int, detail: dict[str, Any]
    ) -> None:
        """One step of an alarm's chain of notices (the alert policy's), on its timeline as a ``notice`` row;
        the incident's ``escalation_level`` is the furthest step reached."""
        self._timeline(alarm_id, run, n, at, "notice", by=None, device=None, detail=detail)
        self._conn.execute(
            "UPDATE incidents SET escalation_level = MAX(escalation_level, ?) WHERE alarm_id = ?", (step, alarm_id)
        )

    def notices_sent(self) -> dict[str, int]:
        """How many notices each open alarm's chain has sent so far (its ``notice`` timeline rows), so a restarted
        chain numbers its notices on from there."""
        rows = self._conn.execute(
            "SELECT t.alarm_id, COUNT(*) FROM timeline t JOIN incidents i ON i.alarm_id = t.alarm_id "
            "WHERE t.type = 'notice' AND i.resolved_at IS NULL GROUP BY t.alarm_id"
        ).fetchall()
        return {r[0]: int(r[1]) for r in rows}

    def set_maintenance(self, record: MaintenanceRecord) -> None:
        self._conn.execute(
            'INSERT INTO maintenance (crib_id, reason, since, until, "by") VALUES (?, ?, ?, ?, ?) '
            "ON CONFLICT (crib_id) DO UPDATE SET reason = excluded.reason, since = excluded.since, "
            'until = excluded.until, "by" = excluded."by"',
            (record.crib_id, record.reason, record.since, record.until, record.by),
        )

    def end_maintenance(self, crib_id: str) -> None:
        self._conn.execute("DELETE FROM maintenance WHERE crib_id = ?", (crib_id,))

    def maintenance_records(self) -> list[MaintenanceRecord]:
        rows = self._conn.execute(
            'SELECT crib_id, reason, since, until, "by" FROM maintenance ORDER BY crib_id'
        ).fetchall()
        return [MaintenanceRecord(*r) for r in rows]

    def _timeline(
        self,
        alarm_id: str,
        run: int,
        seq: int,
        at: float,
        type_: str,
        *,
        by: str | None,
        device: str | None,
        detail: dict[str, Any] | None,
    ) -> None:
        self._conn.execute(
            'INSERT OR IGNORE INTO timeline (alarm_id, run, seq, at, type, "by", device, detail) '
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (alarm_id, run, seq, at, type_, by, device, None if detail is None else json.dumps(detail)),
        )

    def record_crib_state(self, st: CribState) -> None:
        """The crib's latest state (one row per crib)."""
        self._conn.execute(
            "INSERT INTO cribs (crib_id, room_id, latch, sensor_online, battery_pct, latch_opened_at, at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (crib_id) DO UPDATE SET room_id = excluded.room_id, latch = excluded.latch, "
            "sensor_online = excluded.sensor_online, battery_pct = excluded.battery_pct, "
            "latch_opened_at = excluded.latch_opened_at, at = excluded.at",
            (
                st.crib_id,
                st.room_id,
                None if st.latch is None else str(st.latch),
                None if st.sensor_online is None else int(st.sensor_online),
                st.battery_pct,
                st.latch_opened_at,
                st.at,
            ),
        )

    def outbox_put(  # noqa: PLR0917 - the interface the gateway codes against
        self, key: str, topic: str, payload: bytes, qos: int, retain: bool, at: float
    ) -> None:
        """A message that must reach the broker; a key already present is left as it is."""
        self._conn.execute(
            "INSERT OR IGNORE INTO outbox (key, topic, payload, qos, retain, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (key, topic, payload, qos, int(retain), at),
        )

    def outbox_done(self, keys: Sequence[str], at: float) -> None:
        """These messages reached the broker (the first delivery time stands)."""
        self._conn.executemany(
            "UPDATE outbox SET delivered_at = ? WHERE key = ? AND delivered_at IS NULL", [(at, key) for key in keys]
        )

    def resolve_removed(self, alarm_id: str, at: float, resolution: str) -> None:
        """End an open alarm whose crib left the site file (found at start-up), with a timeline row."""
        cur = self._conn.execute(
            "UPDATE incidents SET resolved_at = ?, resolution = ? WHERE alarm_id = ? AND resolved_at IS NULL",
            (at, resolution, alarm_id),
        )
        if cur.rowcount:
            detail = {"resolution": resolution, "removed": True}
            self._timeline(
                alarm_id, self.last_run(), 0, at, str(AlarmEventType.RESOLVED), by=None, device=None, detail=detail
            )

    def audit(self, at: float, actor: str, source: str, action: str, detail: str | None = None) -> None:
        """Who did what, from where (the gateway started, an acknowledgement, a prune)."""
        self._conn.execute(
            "INSERT INTO audit (at, actor, source, action, detail) VALUES (?, ?, ?, ?, ?)",
            (at, actor, source, action, detail),
        )

    def sensor_event(self, at: float, sensor_id: str, crib_id: str, kind: str, detail: str | None = None) -> None:
        """A sensor's health history: offline, back online, low battery, refused readings."""
        self._conn.execute(
            "INSERT INTO sensor_events (at, sensor_id, crib_id, kind, detail) VALUES (?, ?, ?, ?, ?)",
            (at, sensor_id, crib_id, kind, detail),
        )

    # ------------------------------------------------------------------------------------------ InfluxDB outbox

    def influx_put(self, rows: Sequence[tuple[str, bool | int, float]]) -> None:
        """Points for InfluxDB, ``(line, alarm, at)``, at the end of the outbox (inside :meth:`transaction`)."""
        self._conn.executemany("INSERT INTO influx_outbox (line, alarm, at) VALUES (?, ?, ?)", rows)
        if self._influx_rows is not None:
            self._influx_rows += len(rows)

    def influx_rows(self) -> int:
        """Points in the outbox, for all targets (counted once per connection, then kept up to date)."""
        if self._influx_rows is None:
            self._influx_rows = int(self._conn.execute("SELECT COUNT(*) FROM influx_outbox").fetchone()[0])
        return self._influx_rows

    def influx_trim(self, limit: int, targets: Sequence[str] = ()) -> tuple[int, int]:
        """Keep the outbox at ``limit`` points (a target away for long must not hold the others' points):

        1. telemetry a target (of ``targets``) already has: only the slower ones miss it;
        2. alarm points a target already has;
        3. the oldest telemetry;
        4. the oldest alarm points (each is also in the store's own record: alarm events, incident timeline,
           deliveries, maintenance).

        Oldest first within each. Returns ``(telemetry, alarm points)`` dropped, also added to the running counts in
        ``meta`` (:meth:`influx_dropped`). Inside :meth:`transaction`."""
        lead = 0
        if targets:
            marks = ",".join("?" * len(targets))
            found = self._conn.execute(
                f"SELECT MAX(position) FROM influx_targets WHERE name IN ({marks})",  # noqa: S608 - marks only
                tuple(targets),
            ).fetchone()[0]
            lead = 0 if found is None else int(found)
        dropped = {"influx_dropped": 0, "influx_alarm_dropped": 0}
        for key, alarm, upto in (
            ("influx_dropped", 0, lead),
            ("influx_alarm_dropped", 1, lead),
            ("influx_dropped", 0, None),
            ("influx_alarm_dropped", 1, None),
        ):
            excess = self.influx_rows() - limit
            if excess <= 0:
                break
            if upto is not None and upto <= 0:
                continue
            count = self._conn.execute(
                "DELETE FROM influx_outbox WHERE id IN "
                "(SELECT id FROM influx_outbox WHERE alarm = ? AND id <= ? ORDER BY id LIMIT ?)",
                (alarm, upto if upto is not None else 2**62, excess),
            ).rowcount
            if count:
                dropped[key] += count
                self._influx_rows = self.influx_rows() - count
                self._conn.execute(
                    "INSERT INTO meta (key, value) VALUES (?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + excluded.value",
                    (key, str(count)),
                )
        return dropped["influx_dropped"], dropped["influx_alarm_dropped"]

    def influx_dropped(self, *, alarm: bool = False) -> int:
        """Telemetry points (``alarm``: alarm points) dropped from the full outbox since the store began."""
        key = "influx_alarm_dropped" if alarm else "influx_dropped"
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return 0 if row is None else int(row[0])

    def influx_is_alarm(self, row_id: int) -> bool:
        """The outbox row ``row_id`` is an alarm point (False: telemetry, or gone)."""
        row = self._conn.execute("SELECT alarm FROM influx_outbox WHERE id = ?", (row_id,)).fetchone()
        return row is not None and bool(row[0])

    def influx_position(self, target: str, at: float) -> int:
        """The last outbox id ``target`` confirmed. A target new to this store starts before the oldest point
        waiting (it gets what is still there); committed here."""
        with self.transaction():
            row = self._conn.execute("SELECT position FROM influx_targets WHERE name = ?", (target,)).fetchone()
            if row is not None:
                return int(row[0])
            first = self._conn.execute("SELECT MIN(id) FROM influx_outbox").fetchone()[0]
            if first is None:
                first = self._conn.execute(
                    "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'influx_outbox'), 0) + 1"
                ).fetchone()[0]
            position = int(first) - 1
            self._conn.execute(
                "INSERT INTO influx_targets (name, position, updated_at) VALUES (?, ?, ?)", (target, position, at)
            )
        return position

    def influx_confirm(self, target: str, upto: int, targets: Sequence[str], at: float) -> int:
        """``target``'s server confirmed every point up to id ``upto``; the points every one of ``targets`` (the
        configured ones) has passed are deleted. Returns the rows deleted. Inside :meth:`transaction`."""
        self._conn.execute(
            "UPDATE influx_targets SET position = MAX(position, ?), updated_at = ? WHERE name = ?", (upto, at, target)
        )
        marks = ",".join("?" * len(targets))
        row = self._conn.execute(
            f"SELECT MIN(position), COUNT(*) FROM influx_targets WHERE name IN ({marks})",  # noqa: S608 - marks only
            tuple(targets),
        ).fetchone()
        if row[0] is None or row[1] < len(set(targets)):
            return 0  # a target not yet started has no position: it still needs everything
        deleted = self._conn.execute("DELETE FROM influx_outbox WHERE id <= ?", (row[0],)).rowcount
        if self._influx_rows is not None:
            self._influx_rows -= deleted
        return int(deleted)

    def influx_batch(self, after: int, limit: int) -> list[tuple[int, str]]:
        """Up to ``limit`` points after id ``after``, oldest first: ``(id, line)``."""
        rows: list[tuple[int, str]] = self._conn.execute(
            "SELECT id, line FROM influx_outbox WHERE id > ? ORDER BY id LIMIT ?", (after, limit)
        ).fetchall()
        return rows

    def influx_waiting(self, after: int) -> tuple[int, float | None]:
        """Points after id ``after`` and the time of the oldest of them (wall clock)."""
        count = self._conn.execute("SELECT COUNT(*) FROM influx_outbox WHERE id > ?", (after,)).fetchone()[0]
        oldest = self._conn.execute(
            "SELECT at FROM influx_outbox WHERE id > ? ORDER BY id LIMIT 1", (after,)
        ).fetchone()
        return int(count), None if oldest is None else float(oldest[0])

    def record_delivery(self, row: DeliveryRow) -> None:
        """One attempt of an alert channel (docs/channels.md)."""
        self._conn.execute(
            f"INSERT INTO deliveries ({_DELIVERY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608 - fixed columns
            (
                row.at,
                row.channel,
                row.group,
                row.member,
                row.address,
                row.notice_id,
                row.alarm_id,
                row.kind,
                row.attempt,
                row.result,
                row.latency_ms,
                row.error,
                int(row.test),
            ),
        )

    # ------------------------------------------------------------------------------------------ reads for people

    def deliveries(self, alarm_id: str | None = None, since: float | None = None) -> list[DeliveryRow]:
        """Delivery attempts, oldest first (of one alarm, or since a time)."""
        sql = f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE at >= ?"  # noqa: S608 - fixed columns
        args: list[Any] = [float("-inf") if since is None else since]
        if alarm_id is not None:
            sql += " AND alarm_id = ?"
            args.append(alarm_id)
        rows = self._conn.execute(sql + " ORDER BY at, id", args).fetchall()
        return [
            DeliveryRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], test=bool(r[12]))
            for r in rows
        ]

    def incidents(
        self,
        *,
        room: str | None = None,
        crib: str | None = None,
        since: float | None = None,
        until: float | None = None,
        include_tests: bool = True,
        limit: int | None = None,
    ) -> list[Incident]:
        """Incidents raised in ``[since, until)``, newest first."""
        where: list[str] = []
        args: list[Any] = []
        for clause, value in (
            ("room_id = ?", room),
            ("crib_id = ?", crib),
            ("raised_at >= ?", since),
            ("raised_at < ?", until),
        ):
            if value is not None:
                where.append(clause)
                args.append(value)
        if not include_tests:
            where.append("test = 0")
        sql = f"SELECT {INCIDENT_COLUMNS} FROM incidents"  # noqa: S608 - fixed column list and clauses
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY raised_at DESC, alarm_id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [incident_from_row(r) for r in self._conn.execute(sql, args).fetchall()]

    def timeline(self, alarm_id: str) -> list[TimelineEntry]:
        """An alarm's steps in the order they happened."""
        rows = self._conn.execute(
            'SELECT alarm_id, run, seq, at, type, "by", device, detail FROM timeline WHERE alarm_id = ? '
            "ORDER BY at, id",
            (alarm_id,),
        ).fetchall()
        return [
            TimelineEntry(r[0], r[1], r[2], r[3], r[4], r[5], r[6], None if r[7] is None else json.loads(r[7]))
            for r in rows
        ]

    def audit_log(self, since: float | None = None) -> list[AuditEntry]:
        """Audit rows, oldest first."""
        rows = self._conn.execute(
            "SELECT id, at, actor, source, action, detail FROM audit WHERE at >= ? ORDER BY at, id",
            (float("-inf") if since is None else since,),
        ).fetchall()
        return [AuditEntry(*r) for r in rows]

    def sensor_history(self, sensor_id: str | None = None, since: float | None = None) -> list[SensorEventRow]:
        """Sensor health events, oldest first."""
        sql = "SELECT id, at, sensor_id, crib_id, kind, detail FROM sensor_events WHERE at >= ?"
        args: list[Any] = [float("-inf") if since is None else since]
        if sensor_id is not None:
            sql += " AND sensor_id = ?"
            args.append(sensor_id)
        rows = self._conn.execute(sql + " ORDER BY at, id", args).fetchall()
        return [SensorEventRow(*r) for r in rows]

    # ------------------------------------------------------------------------------------------ upkeep

    def prune(self, now: float, keep_s: float) -> dict[str, int]:
        """Forget what is older than ``keep_s``: resolved incidents (with their timeline), audit and sensor rows;
        and delivered outbox rows older than a day. Never an open incident nor an undelivered message.

        Returns the rows deleted per table; an audit row records a prune that deleted anything. Like the other
        writes it does not commit (run it inside :meth:`transaction`).
        """
        cutoff = now - keep_s
        conn = self._conn
        counts = {
            "timeline": conn.execute(
                "SELECT COUNT(*) FROM timeline WHERE alarm_id IN "
                "(SELECT alarm_id FROM incidents WHERE resolved_at IS NOT NULL AND resolved_at < ?)",
                (cutoff,),
            ).fetchone()[0],
            "incidents": conn.execute(
                "DELETE FROM incidents WHERE resolved_at IS NOT NULL AND resolved_at < ?", (cutoff,)
            ).rowcount,
            "audit": conn.execute("DELETE FROM audit WHERE at < ?", (cutoff,)).rowcount,
            "sensor_events": conn.execute("DELETE FROM sensor_events WHERE at < ?", (cutoff,)).rowcount,
            "deliveries": conn.execute("DELETE FROM deliveries WHERE at < ?", (cutoff,)).rowcount,
            "outbox": conn.execute(
                "DELETE FROM outbox WHERE delivered_at IS NOT NULL AND delivered_at < ?", (now - DELIVERED_KEEP_S,)
            ).rowcount,
        }
        if any(counts.values()):
            detail = json.dumps({"keep_s": keep_s, **counts}, sort_keys=True)
            self.audit(now, "gateway", "store", "pruned", detail)
        return counts
