"""The writer thread on real SQLite files: batches, order, coalescing, a full or read-only disk, readers alongside.

No timing assertions: every wait is a flush() or a poll with a generous timeout.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.domain.vocab import LatchState
from gateway.influx import schema
from gateway.store import Store, StoreError, StoreWriter
from tests.store_helpers import SITE, T0, acked_event, crib_state, raised_event, resolved_event

WAIT_S = 30.0


def wait_until(predicate: Callable[[], bool], timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.01)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "site.sqlite3"


@pytest.fixture
def writers() -> Iterator[list[StoreWriter]]:
    """Every writer a test starts is stopped, whatever happens."""
    started: list[StoreWriter] = []
    yield started
    for w in started:
        w.stop(timeout=10)


def start(writers: list[StoreWriter], store: Store | Callable[[], Store], **kw: float) -> StoreWriter:
    w = StoreWriter(store, retry_min_s=0.01, retry_max_s=0.05, **kw)  # type: ignore[arg-type]
    writers.append(w)
    w.start()
    return w


def read(path: Path) -> Store:
    return Store.open(path, site_id=SITE, readonly=True)


class Gate:
    """A store factory that blocks until released: the writer stalls as on a hung disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.release = threading.Event()
        self.calls = 0

    def __call__(self) -> Store:
        self.calls += 1
        if not self.release.wait(WAIT_S):
            raise StoreError("gate never released")
        return Store.open(self.path, site_id=SITE)


def test_everything_queued_lands_in_order(path: Path, writers: list[StoreWriter]) -> None:
    w = start(writers, Store.open(path, site_id=SITE))
    assert any(t.name == "store-writer" and t.daemon for t in threading.enumerate())
    raised = raised_event("1-1")
    w.record_alarm_event(raised)
    w.record_crib_state(crib_state("c-1", latch=LatchState.OPEN))
    w.record_alarm_event(acked_event(raised, at=T0 + 5))
    w.outbox_put("k1", "cribwatch/x", b"{}", 1, retain=True, at=T0)
    w.outbox_put("k2", "cribwatch/y", b"{}", 1, retain=False, at=T0)
    w.outbox_done("k1", T0 + 1)
    w.audit(T0 + 5, "staff-7", "mqtt", "ack", "1-1")
    w.sensor_event(T0, "s-1", "c-1", "battery_low", "19%")
    assert w.flush()
    s = read(path)
    [open_] = s.open_alarms()
    assert open_.acknowledged_by == "staff-7"
    assert [t.type for t in s.timeline("1-1")] == ["raised", "acknowledged"]
    assert s.crib_records()[0].latch is LatchState.OPEN
    assert [r.key for r in s.pending_outbox()] == ["k2"]
    assert [e.action for e in s.audit_log()] == ["ack"]
    assert [e.kind for e in s.sensor_history()] == ["battery_low"]
    s.close()
    h = w.health
    assert (h.written, h.pending, h.failures, h.failing, h.dropped) == (8, 0, 0, False, 0)
    assert h.size_bytes > 0


def test_a_stalled_writer_never_blocks_the_caller_and_then_writes_everything(
    path: Path, writers: list[StoreWriter]
) -> None:
    gate = Gate(path)
    w = start(writers, gate)
    for i in range(10_000):
        w.record_alarm_event(raised_event(f"9-{i}", at=T0 + i))
    wait_until(lambda: gate.calls == 1)
    assert w.health.pending == 10_000
    assert not w.flush(timeout=0.01)
    gate.release.set()
    assert w.flush(timeout=WAIT_S)
    s = read(path)
    assert len(s.incidents()) == 10_000
    s.close()
    assert w.health.written == 10_000


def test_crib_states_are_coalesced_while_they_wait(path: Path, writers: list[StoreWriter]) -> None:
    gate = Gate(path)
    w = start(writers, gate)
    for i in range(100):
        w.record_crib_state(crib_state("c-1", battery_pct=i, at=T0 + i))
        w.record_crib_state(crib_state("c-2", battery_pct=100 - i, at=T0 + i))
    assert w.health.pending == 2
    gate.release.set()
    assert w.flush()
    s = read(path)
    assert [(r.crib_id, r.battery_pct) for r in s.crib_records()] == [("c-1", 99), ("c-2", 1)]
    s.close()


def test_beyond_the_limit_crib_states_are_dropped_never_alarms(path: Path, writers: list[StoreWriter]) -> None:
    gate = Gate(path)
    w = start(writers, gate, limit=100)
    for i in range(50):
        w.record_crib_state(crib_state(f"c-{i}", at=T0))
    for i in range(120):
        w.record_alarm_event(raised_event(f"1-{i}", at=T0 + i))
    w.outbox_put("k", "t", b"x", 1, retain=False, at=T0)
    h = w.health
    assert h.dropped == 50
    assert h.pending == 121  # above the limit: what is left cannot be dropped
    gate.release.set()
    assert w.flush()
    s = read(path)
    assert len(s.incidents()) == 120
    assert s.crib_records() == []
    assert len(s.pending_outbox()) == 1
    s.close()


def test_a_full_disk_keeps_everything_and_recovers(
    path: Path, writers: list[StoreWriter], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cribwatch.store")
    store = Store.open(path, site_id=SITE)
    conn = store.connection
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")  # the file may not grow: SQLITE_FULL
    w = start(writers, store)
    for i in range(300):
        w.record_alarm_event(raised_event(f"2-{i}", at=T0 + i, crib_id=f"crib-with-a-longer-id-{i}"))
    wait_until(lambda: w.health.failures >= 3)
    h = w.health
    assert h.failing
    assert h.pending == 300
    assert h.last_error is not None
    assert "full" in h.last_error
    assert not w.flush(timeout=0.01)
    failed = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(failed) == 1  # loud once, not once per retry
    assert "store writes FAIL" in failed[0].getMessage()

    conn.execute("PRAGMA max_page_count = 1073741823")  # room again
    assert w.flush(timeout=WAIT_S)
    h = w.health
    assert (h.failing, h.pending, h.written) == (False, 0, 300)
    assert any("store writes again after" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)
    s = read(path)
    assert len(s.incidents()) == 300
    s.close()


def test_a_read_only_store_and_a_failing_open_then_recovery(path: Path, writers: list[StoreWriter]) -> None:
    Store.open(path, site_id=SITE).close()
    writable = threading.Event()
    calls: list[str] = []

    def factory() -> Store:
        if writable.is_set():
            calls.append("rw")
            return Store.open(path, site_id=SITE)
        calls.append(("fail", "mode=ro", "query_only")[len(calls) % 3])
        if calls[-1] == "fail":
            raise StoreError("cannot open the store: disk not mounted")
        store = Store.open(path, site_id=SITE, readonly=calls[-1] == "mode=ro")
        if calls[-1] == "query_only":
            store.connection.execute("PRAGMA query_only = ON")
        return store

    w = start(writers, factory)
    for i in range(20):
        w.record_alarm_event(raised_event(f"3-{i}", at=T0 + i))
        w.audit(T0 + i, "gateway", "test", f"step {i}")
    wait_until(lambda: len(calls) >= 6)
    h = w.health
    assert h.failing
    assert h.failures >= 5
    assert h.pending == 40
    writable.set()
    assert w.flush(timeout=WAIT_S)
    assert not w.health.failing
    s = read(path)
    assert len(s.incidents()) == 20
    assert [e.action for e in s.audit_log()] == [f"step {i}" for i in range(20)]  # once each, in order
    s.close()


def test_a_write_the_database_refuses_is_dropped_alone(path: Path, writers: list[StoreWriter]) -> None:
    w = start(writers, Gate(path))
    w.audit(T0, "staff-1", "mqtt", "before")
    w.audit(T0 + 1, None, "mqtt", "refused: no actor")  # type: ignore[arg-type]
    w.audit(T0 + 2, "staff-1", "mqtt", "after")
    w.record_alarm_event(raised_event("4-1"))
    gate = w._factory  # noqa: SLF001 - the test's own gate
    assert isinstance(gate, Gate)
    gate.release.set()
    assert w.flush()
    h = w.health
    assert (h.dropped, h.written, h.failing) == (1, 3, False)
    s = read(path)
    assert [e.action for e in s.audit_log()] == ["before", "after"]  # each once: nothing written twice
    assert len(s.incidents()) == 1
    s.close()


def test_prune_runs_in_order_with_the_writes(path: Path, writers: list[StoreWriter]) -> None:
    w = start(writers, Store.open(path, site_id=SITE))
    old = raised_event("5-1", at=T0)
    w.record_alarm_event(old)
    w.record_alarm_event(resolved_event(old, at=T0 + 1))
    w.prune(T0 + 1000, keep_s=100)
    w.record_alarm_event(raised_event("5-2", at=T0))  # after the prune: kept, though as old
    assert w.flush()
    s = read(path)
    assert [i.alarm_id for i in s.incidents()] == ["5-2"]
    s.close()
    assert w.health.pruned == 3  # the incident and its two timeline rows


def test_readers_read_while_the_writer_writes(path: Path, writers: list[StoreWriter]) -> None:
    w = start(writers, Store.open(path, site_id=SITE), batch=50)
    total = 3000
    done = threading.Event()
    errors: list[BaseException] = []
    seen: list[list[int]] = [[] for _ in range(3)]

    def reader(n: int) -> None:
        try:
            s = read(path)
            try:
                while not done.is_set():
                    count = len(s.incidents())
                    s.open_alarms()
                    seen[n].append(count)
            finally:
                s.close()
        except Exception as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for i in range(total):
        ev = raised_event(f"6-{i}", at=T0 + i)
        w.record_alarm_event(ev)
        if i % 2:
            w.record_alarm_event(resolved_event(ev, at=T0 + i + 1))
        w.record_crib_state(crib_state(f"c-{i % 10}", at=T0 + i))
    assert w.flush(timeout=WAIT_S)
    done.set()
    for t in threads:
        t.join(WAIT_S)
    assert errors == []
    for counts in seen:
        assert counts
        assert counts == sorted(counts)  # only ever grows
    s = read(path)
    assert len(s.incidents()) == total
    assert len(s.open_alarms()) == total // 2
    s.close()


def test_stop_writes_what_is_queued_and_closes(path: Path) -> None:
    store = Store.open(path, site_id=SITE)
    w = StoreWriter(store)
    w.start()
    for i in range(100):
        w.audit(T0 + i, "gateway", "test", "x")
    w.stop()
    with pytest.raises(Exception, match="closed"):
        store.connection.execute("SELECT 1")
    s = read(path)
    assert len(s.audit_log()) == 100
    s.close()


def test_new_writes_do_not_cut_the_backoff_short(path: Path) -> None:
    """Every enqueue wakes the thread's condition: a failing writer still waits out its backoff, not spins."""
    store = Store.open(path, site_id=SITE)
    store.connection.execute("PRAGMA query_only = ON")
    w = StoreWriter(store, retry_min_s=600, retry_max_s=600)
    w.start()
    w.audit(T0, "gateway", "test", "first")
    wait_until(lambda: w.health.failures >= 1)
    for i in range(100):
        w.audit(T0 + i, "gateway", "test", "more")
    assert not w.flush(timeout=0.2)
    assert w.health.failures == 1
    w.stop(timeout=0.2)  # cuts the backoff short: the thread ends and closes the store
    with pytest.raises(Exception, match="closed"):
        store.connection.execute("SELECT 1")


def test_audit_and_sensor_rows_go_before_alarms_and_beyond_twice_the_limit_memory_wins(
    path: Path, writers: list[StoreWriter]
) -> None:
    """Found by a review: while the disk failed, alarm, outbox and audit rows grew without bound (an audit row for
    every ack any device sends). Beyond the limit the audit and sensor rows go too; beyond twice the limit the
    oldest writes of every kind, counted as ``lost`` and logged CRITICAL: a Pi out of memory would alarm nobody."""
    gate = Gate(path)
    w = start(writers, gate, limit=100)
    for i in range(40):
        w.audit(T0 + i, "staff-1", "mqtt:pager-1", "acknowledge")
        w.sensor_event(T0 + i, "s-1", "c-1", "refused")
    for i in range(150):
        w.record_alarm_event(raised_event(f"1-{i}", at=T0 + i))
    h = w.health
    assert (h.dropped, h.lost, h.pending) == (80, 0, 150)
    for i in range(150, 260):
        w.record_alarm_event(raised_event(f"1-{i}", at=T0 + i))
    h = w.health
    assert (h.lost, h.pending) == (60, 200)
    gate.release.set()
    assert w.flush()
    s = read(path)
    assert {i.alarm_id for i in s.incidents()} == {f"1-{i}" for i in range(60, 260)}  # the newest 200
    assert s.audit_log() == []
    s.close()


def test_a_bad_statement_is_given_up_alone_not_retried_for_ever(path: Path, writers: list[StoreWriter]) -> None:
    """An OperationalError is also what SQLite raises for "no such table": no retry mends it. Judged by its result
    code, it is given up alone and the rest of the batch is written (found by a review)."""
    store = Store.open(path, site_id=SITE)
    store.connection.execute("DROP TABLE sensor_events")
    w = start(writers, store)
    w.record_alarm_event(raised_event("5-1"))
    w.sensor_event(T0, "s-1", "c-1", "offline")
    w.record_alarm_event(raised_event("5-2"))
    assert w.flush()
    h = w.health
    assert (h.dropped, h.written, h.failing) == (1, 2, False)
    s = read(path)
    assert {i.alarm_id for i in s.incidents()} == {"5-1", "5-2"}
    s.close()


def test_influx_telemetry_goes_first_and_alarm_points_before_alarm_events(
    path: Path, writers: list[StoreWriter]
) -> None:
    """Found by a review: beyond the limit the acknowledgements' audit rows went before InfluxDB telemetry (queue
    order). Telemetry is the lowest rank of all; InfluxDB alarm points (a copy of the alarm events) are kept to
    twice the limit, and there they go before any alarm event is lost."""
    gate = Gate(path)
    w = start(writers, gate, limit=100)
    for i in range(30):
        w.audit(T0 + i, "staff-1", "mqtt:pager-1", "acknowledge")
    for i in range(200):
        w.influx_put(schema.point("sensor", T0 + i, {"site": SITE}, {"seq": i}))
    h = w.health
    assert (h.dropped, h.influx_dropped, h.pending) == (130, 130, 100), "telemetry only: the audit rows are kept"
    for i in range(70):
        w.record_alarm_event(raised_event(f"1-{i}", at=T0 + i))
    h = w.health
    assert (h.dropped, h.influx_dropped, h.pending) == (200, 200, 100), "the rest of the telemetry, audit kept"
    alarm_points = [
        schema.alarm_step_point(
            SITE, "r", "c-1", "crib_open", "high", "raised", T0 + i, alarm_id=f"1-{i}", raised_at=T0
        )
        for i in range(100)
    ]
    for p in alarm_points:
        w.influx_put(p)
    for i in range(70, 140):
        w.record_alarm_event(raised_event(f"1-{i}", at=T0 + i))
    h = w.health
    assert (h.lost, h.influx_alarm_dropped, h.pending) == (0, 40, 200), "alarm points went, no alarm event"
    gate.release.set()
    assert w.flush()
    s = read(path)
    assert {i.alarm_id for i in s.incidents()} == {f"1-{i}" for i in range(140)}
    assert [line for _, line in s.influx_batch(0, 1000)] == [p.line() for p in alarm_points[40:]]
    s.close()
