"""The store on real SQLite files: schema and migrations, the boot counter, the incident log, the outbox, pruning."""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.domain.vocab import AlarmKind, LatchState, Resolution
from gateway.store import SCHEMA_VERSION, Store, StoreError
from tests.store_helpers import SITE, T0, acked_event, crib_state, raised_event, resolved_event

TABLES = {"meta", "incidents", "timeline", "cribs", "outbox", "audit", "sensor_events", "deliveries"}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "site.sqlite3", site_id=SITE)
    yield s
    s.close()


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


# ------------------------------------------------------------------------------------------ opening


def test_a_new_file_gets_the_current_schema_and_every_table(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "site.sqlite3"
    s = Store.open(path, site_id=SITE)
    assert s.schema_version == SCHEMA_VERSION >= 2
    conn = s.connection
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] > 0
    s.close()
    assert tables(path) >= TABLES


def test_reopening_is_a_no_op(tmp_path: Path) -> None:
    path = tmp_path / "site.sqlite3"
    s = Store.open(path, site_id=SITE)
    with s.transaction():
        s.audit(T0, "staff-1", "test", "poke")
    s.close()
    s = Store.open(path, site_id=SITE)
    assert s.schema_version == SCHEMA_VERSION
    assert [e.action for e in s.audit_log()] == ["poke"]
    s.close()


def test_a_file_from_a_newer_version_is_refused_naming_both_versions(tmp_path: Path) -> None:
    path = tmp_path / "site.sqlite3"
    Store.open(path, site_id=SITE).close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 6}")
    for readonly in (False, True):
        with pytest.raises(StoreError) as info:
            Store.open(path, site_id=SITE, readonly=readonly)
        assert f"version {SCHEMA_VERSION + 6}" in str(info.value)
        assert f"version {SCHEMA_VERSION})" in str(info.value) or f"version {SCHEMA_VERSION};" in str(info.value)


def test_a_file_of_another_site_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "site.sqlite3"
    Store.open(path, site_id="site-a").close()
    with pytest.raises(StoreError, match="'site-a', not 'site-b'"):
        Store.open(path, site_id="site-b")
    with pytest.raises(StoreError, match="one file per site"):
        Store.open(path, site_id="site-b", readonly=True)


def test_readonly_open_of_a_missing_file_is_an_error_and_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "site.sqlite3"
    with pytest.raises(StoreError, match="no such store"):
        Store.open(path, site_id=SITE, readonly=True)
    assert not path.parent.exists()


def test_readonly_open_of_an_unmigrated_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "site.sqlite3"
    sqlite3.connect(path).close()
    with pytest.raises(StoreError, match="version 0"):
        Store.open(path, site_id=SITE, readonly=True)


def test_a_readonly_store_cannot_write(store: Store) -> None:
    reader = Store.open(store.path, site_id=SITE, readonly=True)
    with pytest.raises(sqlite3.OperationalError), reader.transaction():
        reader.audit(T0, "x", "y", "z")
    reader.close()


def test_a_file_that_is_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "site.sqlite3"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot"):
        Store.open(path, site_id=SITE)


# ------------------------------------------------------------------------------------------ runs


def test_begin_run_counts_durably_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "site.sqlite3"
    runs = []
    for i in range(3):
        s = Store.open(path, site_id=SITE)
        assert s.last_run() == i
        runs.append(s.begin_run(T0 + i, detail={"version": "0.1.0"}))
        s.close()
    assert runs == [1, 2, 3]
    s = Store.open(path, site_id=SITE, readonly=True)
    started = [e for e in s.audit_log() if e.action == "started"]
    assert [(e.actor, e.at) for e in started] == [("gateway", T0), ("gateway", T0 + 1), ("gateway", T0 + 2)]
    assert '"version": "0.1.0"' in str(started[0].detail)
    s.close()


# ------------------------------------------------------------------------------------------ alarms


def test_an_alarms_life_fills_the_incident_and_its_timeline(store: Store) -> None:
    raised = raised_event("r1-1", at=T0)
    with store.transaction():
        store.record_alarm_event(raised)
    [open_] = store.open_alarms()
    assert (open_.alarm_id, open_.kind, open_.crib_id) == ("r1-1", AlarmKind.CRIB_OPEN, "c-1")
    assert open_.acknowledged_by is None
    assert open_.trigger == raised.trigger
    assert open_.latch_opened_at == T0 - 10

    ack = acked_event(raised, at=T0 + 12.5)
    with store.transaction():
        store.record_alarm_event(ack)
    [open_] = store.open_alarms()
    assert (open_.acknowledged_by, open_.acknowledged_device) == ("staff-7", "pager-2")
    assert open_.acknowledged_at == T0 + 12.5

    done = resolved_event(ack, at=T0 + 30)
    with store.transaction():
        store.record_alarm_event(done)
    assert store.open_alarms() == []

    [inc] = store.incidents()
    assert inc.priority == "high"
    assert (inc.raised_at, inc.acknowledged_at, inc.resolved_at) == (T0, T0 + 12.5, T0 + 30)
    assert (inc.acknowledged_by, inc.acknowledged_device) == ("staff-7", "pager-2")
    assert inc.resolution == Resolution.LATCH_CLOSED
    assert inc.response_s == 12.5
    assert not inc.open
    assert not inc.test

    steps = store.timeline("r1-1")
    assert [t.type for t in steps] == ["raised", "acknowledged", "resolved"]
    assert steps[0].detail == {"trigger": {"sensor_id": "s-c-1", "boot": 3, "seq": 41}}
    assert (steps[1].by, steps[1].device) == ("staff-7", "pager-2")
    assert steps[2].detail == {"resolution": "latch_closed"}

    # A replayed batch (the writer retrying after a failed commit, say) adds nothing.
    with store.transaction():
        for ev in (raised, ack, done):
            store.record_alarm_event(ev)
    assert len(store.timeline("r1-1")) == 3
    assert store.incidents() == [inc]


def test_an_acknowledgement_without_its_raise_still_makes_an_incident(store: Store) -> None:
    """The events carry everything: whichever step arrives first creates the row."""
    raised = raised_event("r1-9", at=T0)
    with store.transaction():
        store.record_alarm_event(acked_event(raised, at=T0 + 3))
    [open_] = store.open_alarms()
    assert open_.acknowledged_by == "staff-7"


def test_escalation_and_test_flag_follow_the_events(store: Store) -> None:
    raised = raised_event("r1-2", test=True)
    with store.transaction():
        store.record_alarm_event(raised)
        store.record_alarm_event(dataclasses.replace(acked_event(raised, at=T0 + 1), escalation_level=2))
    [inc] = store.incidents()
    assert (inc.test, inc.escalation_level) == (True, 2)
    assert store.open_alarms()[0].escalation_level == 2


def test_open_alarms_oldest_first(store: Store) -> None:
    with store.transaction():
        store.record_alarm_event(raised_event("b", at=T0 + 5, crib_id="c-2"))
        store.record_alarm_event(raised_event("a", at=T0, crib_id="c-1", kind=AlarmKind.BATTERY_LOW))
    assert [a.alarm_id for a in store.open_alarms()] == ["a", "b"]
    assert store.open_alarms()[0].kind is AlarmKind.BATTERY_LOW


def test_resolve_removed_ends_an_open_alarm_once(store: Store) -> None:
    store.begin_run(T0)
    with store.transaction():
        store.record_alarm_event(raised_event("gone", crib_id="c-old"))
    with store.transaction():
        store.resolve_removed("gone", T0 + 100, Resolution.CRIB_REMOVED)
        store.resolve_removed("gone", T0 + 200, Resolution.CRIB_REMOVED)
    assert store.open_alarms() == []
    [inc] = store.incidents()
    assert (inc.resolved_at, inc.resolution) == (T0 + 100, "crib_removed")
    assert [t.type for t in store.timeline("gone")] == ["raised", "resolved"]


def test_a_failed_transaction_leaves_nothing(store: Store) -> None:
    def fail_inside() -> None:
        with store.transaction():
            store.record_alarm_event(raised_event("x"))
            raise LookupError

    with pytest.raises(LookupError):
        fail_inside()
    assert store.incidents() == []
    assert not store.connection.in_transaction


# ------------------------------------------------------------------------------------------ cribs, outbox


def test_crib_records_keep_the_latest_state_per_crib(store: Store) -> None:
    with store.transaction():
        store.record_crib_state(crib_state("c-1", latch=LatchState.OPEN, at=T0))
        store.record_crib_state(crib_state("c-2", latch=None, battery_pct=None, online=None, at=T0))
        store.record_crib_state(crib_state("c-1", latch=LatchState.CLOSED, battery_pct=20, at=T0 + 1))
    recs = store.crib_records()
    assert [(r.crib_id, r.latch, r.sensor_online, r.battery_pct, r.at) for r in recs] == [
        ("c-1", LatchState.CLOSED, True, 20, T0 + 1),
        ("c-2", None, None, None, T0),
    ]


def test_outbox_put_done_pending(store: Store) -> None:
    with store.transaction():
        for i in range(4):
            store.outbox_put(f"k{i}", f"t/{i}", bytes([i, 0, 255]), 1, i % 2 == 0, T0 + i)
        store.outbox_put("k0", "other", b"ignored", 0, retain=False, at=T0 + 9)  # same key: left as it is
    pending = store.pending_outbox()
    assert [r.key for r in pending] == ["k0", "k1", "k2", "k3"]
    first = pending[0]
    assert (first.topic, first.payload, first.qos, first.retain) == ("t/0", b"\x00\x00\xff", 1, True)
    with store.transaction():
        store.outbox_done(["k0", "k2", "nope"], T0 + 10)
    assert [r.key for r in store.pending_outbox()] == ["k1", "k3"]


# ------------------------------------------------------------------------------------------ reads, prune


def fill_incidents(store: Store) -> None:
    with store.transaction():
        store.record_alarm_event(raised_event("1", room_id="r-a", crib_id="a-1", at=T0))
        store.record_alarm_event(raised_event("2", room_id="r-a", crib_id="a-2", at=T0 + 100, test=True))
        store.record_alarm_event(raised_event("3", room_id="r-b", crib_id="b-1", at=T0 + 200))
        store.record_alarm_event(raised_event("4", room_id="r-b", crib_id="b-1", at=T0 + 300))


def test_incidents_filters_newest_first(store: Store) -> None:
    fill_incidents(store)

    def ids(**kw: object) -> list[str]:
        return [i.alarm_id for i in store.incidents(**kw)]  # type: ignore[arg-type]

    assert ids() == ["4", "3", "2", "1"]
    assert ids(room="r-a") == ["2", "1"]
    assert ids(crib="b-1") == ["4", "3"]
    assert ids(since=T0 + 100) == ["4", "3", "2"]
    assert ids(until=T0 + 200) == ["2", "1"]
    assert ids(since=T0 + 100, until=T0 + 300) == ["3", "2"]
    assert ids(include_tests=False) == ["4", "3", "1"]
    assert ids(limit=2) == ["4", "3"]
    assert ids(room="r-a", include_tests=False) == ["1"]


def test_prune_keeps_open_incidents_and_undelivered_messages(store: Store) -> None:
    day = 86_400.0
    old = raised_event("old", at=T0)
    with store.transaction():
        store.record_alarm_event(old)
        store.record_alarm_event(resolved_event(old, at=T0 + 60))
        store.record_alarm_event(raised_event("old-open", at=T0))  # never resolved: kept whatever its age
        recent = raised_event("recent", at=T0 + 9 * day)
        store.record_alarm_event(recent)
        store.record_alarm_event(resolved_event(recent, at=T0 + 9 * day + 5))
        store.audit(T0, "staff-1", "mqtt", "ack")
        store.audit(T0 + 9 * day, "staff-1", "mqtt", "ack")
        store.sensor_event(T0, "s-1", "c-1", "offline")
        store.sensor_event(T0 + 9 * day, "s-1", "c-1", "online")
        store.outbox_put("sent-old", "t", b"x", 1, retain=False, at=T0)
        store.outbox_put("sent-new", "t", b"x", 1, retain=False, at=T0)
        store.outbox_put("unsent", "t", b"x", 1, retain=False, at=T0)
        store.outbox_done(["sent-old"], T0)
        store.outbox_done(["sent-new"], T0 + 9.5 * day)
    with store.transaction():
        counts = store.prune(T0 + 10 * day, keep_s=5 * day)
    assert counts == {"incidents": 1, "timeline": 2, "audit": 1, "sensor_events": 1, "deliveries": 0, "outbox": 1}
    assert {i.alarm_id for i in store.incidents()} == {"old-open", "recent"}
    assert store.timeline("old") == []
    assert store.connection.execute("SELECT COUNT(*) FROM timeline WHERE alarm_id = 'old'").fetchone()[0] == 0
    assert [r.key for r in store.pending_outbox()] == ["unsent"]
    assert [e.kind for e in store.sensor_history()] == ["online"]
    assert [e.action for e in store.audit_log()] == ["ack", "pruned"]

    with store.transaction():
        assert store.prune(T0 + 10 * day, keep_s=5 * day) == dict.fromkeys(counts, 0)
    assert [e.action for e in store.audit_log()] == ["ack", "pruned"]  # nothing pruned: no audit row


def test_sensor_history_and_audit_log_filters(store: Store) -> None:
    with store.transaction():
        store.sensor_event(T0, "s-1", "c-1", "offline", "no heartbeat for 90 s")
        store.sensor_event(T0 + 1, "s-2", "c-2", "battery_low", "18%")
        store.sensor_event(T0 + 2, "s-1", "c-1", "online")
        store.audit(T0, "staff-1", "mqtt", "ack", "alarm 1-1")
        store.audit(T0 + 5, "gateway", "store", "pruned")
    assert [(e.kind, e.detail) for e in store.sensor_history("s-1")] == [
        ("offline", "no heartbeat for 90 s"),
        ("online", None),
    ]
    assert [e.sensor_id for e in store.sensor_history(since=T0 + 1)] == ["s-2", "s-1"]
    assert [e.actor for e in store.audit_log(since=T0 + 1)] == ["gateway"]


def test_size_counts_the_file_and_its_log(store: Store) -> None:
    before = store.size_bytes()
    assert before > 0
    with store.transaction():
        for i in range(200):
            store.audit(T0 + i, "gateway", "test", "fill", "x" * 500)
    assert store.size_bytes() > before


def test_threads_opening_a_new_file_at_once_all_get_it(tmp_path: Path) -> None:
    """The gateway's writer and its InfluxDB shippers open the same new file at start; SQLite refuses a second
    switch to WAL at once ("database is locked", without its busy handler), so the open waits instead."""
    for attempt in range(40):
        path = tmp_path / f"s{attempt}.sqlite3"
        errors: list[BaseException] = []
        opened: list[Store] = []

        def open_it(path: Path = path, errors: list[BaseException] = errors, opened: list[Store] = opened) -> None:
            try:
                opened.append(Store.open(path, site_id=SITE))
            except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=open_it) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for store in opened:
            assert store.schema_version == SCHEMA_VERSION
            store.close()
        assert errors == [], f"attempt {attempt}: {errors!r}"
