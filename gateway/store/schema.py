"""The store's schema and its migrations: ``PRAGMA user_version`` names the version a file is at.

Version 1 is the first schema. A new version is one more entry at the end of :data:`MIGRATIONS` (SQL text, or a
function of the connection for a change SQL alone cannot make); an entry is never edited once released. Each
migration runs in its own transaction together with the new ``user_version``, so a file is at one version or the
next, never between.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable


class StoreError(Exception):
    """The store cannot be used as asked: a missing file, another site's file, a schema newer than this code."""


V1 = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE incidents (
    alarm_id            TEXT PRIMARY KEY,
    run                 INTEGER NOT NULL,
    kind                TEXT NOT NULL,
    priority            TEXT NOT NULL CHECK (priority IN ('low', 'medium', 'high')),
    site_id             TEXT NOT NULL,
    room_id             TEXT NOT NULL,
    crib_id             TEXT NOT NULL,
    room_label          TEXT NOT NULL,
    crib_label          TEXT NOT NULL,
    raised_at           REAL NOT NULL,
    latch_opened_at     REAL,
    acknowledged_at     REAL,
    acknowledged_by     TEXT,
    acknowledged_device TEXT,
    resolved_at         REAL,
    resolution          TEXT,
    test                INTEGER NOT NULL DEFAULT 0,
    escalation_level    INTEGER NOT NULL DEFAULT 0,
    trigger_sensor      TEXT,
    trigger_boot        INTEGER,
    trigger_seq         INTEGER
);
CREATE INDEX incidents_resolved_at ON incidents (resolved_at);
CREATE INDEX incidents_raised_at ON incidents (raised_at);
CREATE INDEX incidents_room ON incidents (room_id, raised_at);
CREATE INDEX incidents_crib ON incidents (crib_id, raised_at);
CREATE INDEX incidents_open ON incidents (raised_at) WHERE resolved_at IS NULL;

CREATE TABLE timeline (
    id       INTEGER PRIMARY KEY,
    alarm_id TEXT NOT NULL REFERENCES incidents (alarm_id) ON DELETE CASCADE,
    run      INTEGER NOT NULL,
    seq      INTEGER NOT NULL,
    at       REAL NOT NULL,
    type     TEXT NOT NULL,
    "by"     TEXT,
    device   TEXT,
    detail   TEXT
);
CREATE UNIQUE INDEX timeline_step ON timeline (alarm_id, type, run, seq);

CREATE TABLE cribs (
    crib_id       TEXT PRIMARY KEY,
    room_id       TEXT NOT NULL,
    latch         TEXT,
    sensor_online INTEGER,
    battery_pct   INTEGER,
    latch_opened_at REAL,
    at            REAL NOT NULL
);

CREATE TABLE outbox (
    id           INTEGER PRIMARY KEY,
    key          TEXT NOT NULL UNIQUE,
    topic        TEXT NOT NULL,
    payload      BLOB NOT NULL,
    qos          INTEGER NOT NULL,
    retain       INTEGER NOT NULL,
    created_at   REAL NOT NULL,
    delivered_at REAL
);
CREATE INDEX outbox_pending ON outbox (id) WHERE delivered_at IS NULL;
CREATE INDEX outbox_delivered_at ON outbox (delivered_at);

CREATE TABLE audit (
    id     INTEGER PRIMARY KEY,
    at     REAL NOT NULL,
    actor  TEXT NOT NULL,
    source TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX audit_at ON audit (at);

CREATE TABLE sensor_events (
    id        INTEGER PRIMARY KEY,
    at        REAL NOT NULL,
    sensor_id TEXT NOT NULL,
    crib_id   TEXT NOT NULL,
    kind      TEXT NOT NULL,
    detail    TEXT
);
CREATE INDEX sensor_events_at ON sensor_events (at);
CREATE INDEX sensor_events_sensor ON sensor_events (sensor_id, at);
"""

V2 = """
CREATE TABLE influx_outbox (
    id    INTEGER PRIMARY KEY AUTOINCREMENT,
    line  TEXT NOT NULL,
    alarm INTEGER NOT NULL,
    at    REAL NOT NULL
);

CREATE TABLE influx_targets (
    name       TEXT PRIMARY KEY,
    position   INTEGER NOT NULL,
    updated_at REAL NOT NULL
);

CREATE TABLE deliveries (
    id         INTEGER PRIMARY KEY,
    at         REAL NOT NULL,
    channel    TEXT NOT NULL,
    "group"    TEXT NOT NULL,
    member     TEXT NOT NULL,
    address    TEXT NOT NULL,
    notice_id  TEXT NOT NULL,
    alarm_id   TEXT NOT NULL,
    kind       TEXT NOT NULL,
    attempt    INTEGER NOT NULL,
    result     TEXT NOT NULL
               CHECK (result IN ('delivered', 'buffered', 'failed', 'gave_up', 'dropped', 'skipped')),
    latency_ms REAL,
    error      TEXT,
    test       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX deliveries_alarm ON deliveries (alarm_id, at);
CREATE INDEX deliveries_at ON deliveries (at);

ALTER TABLE incidents ADD COLUMN maintenance INTEGER NOT NULL DEFAULT 0;
ALTER TABLE incidents ADD COLUMN flaps INTEGER NOT NULL DEFAULT 0;

CREATE TABLE maintenance (
    crib_id TEXT PRIMARY KEY,
    reason  TEXT NOT NULL,
    since   REAL NOT NULL,
    until   REAL NOT NULL,
    "by"    TEXT NOT NULL
);
"""
"""Version 2: the InfluxDB outbox (gateway/influx, docs/influx-schema.md): points in line protocol, oldest first
(AUTOINCREMENT: ids never come back, so a target's position stays meaningful when the table empties), and each
target's position (the last id its server confirmed); a row goes once every configured target has passed it.
``deliveries``: one row per attempt of an alert channel to deliver a notice (docs/channels.md). The alert policy
(docs/alerting.md): alarms raised in maintenance are marked, a flapping crib's alarm keeps its count, and the cribs
in maintenance survive a restart (each step of an alarm's chain is a ``notice`` row of the timeline)."""

V3 = """
CREATE TABLE users (
    username      TEXT PRIMARY KEY,
    role          TEXT NOT NULL CHECK (role IN ('staff', 'manager', 'technician', 'coordinator', 'admin')),
    password_hash TEXT NOT NULL,
    created_at    REAL NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0,
    pin_hash      TEXT
);

CREATE TABLE web_sessions (
    token_hash TEXT PRIMARY KEY,
    username   TEXT NOT NULL REFERENCES users (username) ON DELETE CASCADE,
    csrf       TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX web_sessions_expires ON web_sessions (expires_at);

CREATE TABLE web_devices (
    token_hash TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    room_id    TEXT NOT NULL,
    csrf       TEXT NOT NULL,
    created_at REAL NOT NULL
);
"""
"""Version 3: the web app's accounts (docs/web.md): a staff id (never a person's name) with its role and argon2
hash, the logins (the SHA-256 of each session token, never the token itself, with its CSRF token), and the wall tablets
(a per-device token, as its SHA-256, that opens one room's board)."""

HELPING_HANDS = """
CREATE TABLE helping_requests (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    site_id      TEXT NOT NULL,
    room         TEXT NOT NULL,
    day          TEXT NOT NULL,
    start        TEXT NOT NULL,
    "end"        TEXT NOT NULL,
    starts_at    REAL NOT NULL,
    ends_at      REAL NOT NULL,
    people       INTEGER NOT NULL CHECK (people >= 1),
    reason       TEXT NOT NULL,
    urgency      TEXT NOT NULL CHECK (urgency IN ('normal', 'urgent')),
    note         TEXT NOT NULL DEFAULT '',
    contact_kind TEXT NOT NULL CHECK (contact_kind IN ('account', 'phone')),
    contact      TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    created_at   REAL NOT NULL,
    status       TEXT NOT NULL
                 CHECK (status IN ('new', 'assigned', 'partly_filled', 'filled', 'done', 'cancelled')),
    assignee     TEXT,
    filled       INTEGER NOT NULL DEFAULT 0,
    updated_at   REAL NOT NULL
);
CREATE INDEX helping_requests_starts ON helping_requests (starts_at);
CREATE INDEX helping_requests_status ON helping_requests (status, starts_at);
CREATE INDEX helping_requests_by ON helping_requests (requested_by, created_at);

CREATE TABLE helping_history (
    id         INTEGER PRIMARY KEY,
    request_id INTEGER NOT NULL REFERENCES helping_requests (id) ON DELETE CASCADE,
    at         REAL NOT NULL,
    "by"       TEXT NOT NULL,
    status     TEXT NOT NULL,
    assignee   TEXT,
    filled     INTEGER NOT NULL DEFAULT 0,
    comment    TEXT NOT NULL DEFAULT ''
);
CREATE INDEX helping_history_request ON helping_history (request_id, id);
"""
"""The helping-hands requests (docs/helping-hands.md): each request for extra staff (a room or group of this site
or a partner site, a window in the site's local time, how many people, a reason, a note, a staff contact), its
status, and the history of every change (who, when). Their MQTT messages go through the ``outbox`` like alarm
events. AUTOINCREMENT: a request's number is never given twice, also after pruning."""

INCIDENT_LOG = """
CREATE INDEX incidents_log ON incidents (raised_at, alarm_id);
CREATE INDEX incidents_log_kind ON incidents (kind, raised_at, alarm_id);
CREATE INDEX incidents_log_priority ON incidents (priority, raised_at, alarm_id);
CREATE INDEX timeline_acks ON timeline (alarm_id, at) WHERE type = 'acknowledged';
CREATE INDEX timeline_reminded ON timeline (at) WHERE type = 'reminded';
"""
"""Version 5: the incident log's pages (gateway/store/incident_log.py, docs/managers.md): newest first with a keyset
``(raised_at, alarm_id)``, so a page deep in a year of incidents is an index range, not an OFFSET; the kind and the
priority filters walk their own index; each incident's first acknowledgement (its response time) is one index
probe, and the statistics look it up only for the alarms that were reminded (the others keep their first one in
``incidents.acknowledged_at``)."""

Migration = str | Callable[[sqlite3.Connection], None]

MIGRATIONS: list[Migration] = [V1, V2, V3, HELPING_HANDS, INCIDENT_LOG]
"""Entry ``i`` brings a file from version ``i`` to ``i + 1``."""

SCHEMA_VERSION = len(MIGRATIONS)
"""The version this code writes and reads."""


def user_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def check_version(conn: sqlite3.Connection, where: str) -> int:
    """The file's version; StoreError if it is newer than this code knows."""
    version = user_version(conn)
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{where}: the store's schema is version {version}, newer than this gateway knows "
            f"(version {SCHEMA_VERSION}); run the gateway version that wrote it, or a newer one"
        )
    return version


def migrate(conn: sqlite3.Connection, where: str = "store") -> int:
    """Bring the file to :data:`SCHEMA_VERSION`, one migration per transaction; returns the version found.

    The connection must be in autocommit mode (``isolation_level=None``): the transactions are explicit.
    """
    found = check_version(conn, where)
    for version in range(found, SCHEMA_VERSION):
        step = MIGRATIONS[version]
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Read again under the write lock: another process may have migrated the file meanwhile.
            if user_version(conn) != version:
                conn.execute("ROLLBACK")
                return migrate(conn, where)
            if isinstance(step, str):
                for statement in _statements(step):
                    conn.execute(statement)
            else:
                step(conn)
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    return found


def _statements(script: str) -> list[str]:
    """A script split into complete statements (executescript would commit the open transaction first)."""
    out: list[str] = []
    current = ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            if current.strip():
                out.append(current.strip())
            current = ""
    if current.strip():
        raise ValueError(f"incomplete SQL statement in a migration: {current.strip()[:80]!r}")
    return out
