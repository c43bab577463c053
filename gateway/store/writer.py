"""The store's writer thread: the alarm path hands over writes and never waits on the disk.

Every ``StoreWriter`` method called from the event loop appends one operation to a queue and returns; it never
blocks on I/O and never raises. The thread named ``store-writer`` takes everything waiting (up to ``batch``
operations) and writes it in one transaction, in the order it was queued: one fsync per batch.

A disk that fails or fills stops nothing: a batch that cannot be committed is rolled back, kept in front and
retried with exponential backoff (``retry_min_s`` doubling up to ``retry_max_s``), logged on ``cribwatch.store``
(CRITICAL the first time, then at most once a minute with the count; INFO when writes succeed again). A store that
cannot be opened (the factory raises) is retried the same way. Memory is bounded by ``limit``: beyond it the
oldest InfluxDB telemetry points go first, then the oldest crib states (a projection, rebuilt by the next state),
audit, sensor and delivery rows; alarm events, outbox messages and InfluxDB alarm points are kept up to twice the
limit, and beyond that the oldest InfluxDB alarm points go first (a copy of what the alarm events say), then the
oldest writes of any kind (``lost``). See docs/store.md.

InfluxDB points (``influx_put``) are serialised here and go to the store's ``influx_outbox``, kept at
``influx_limit`` points (the oldest telemetry first; alarm points only when they alone fill it);
``influx_confirmed`` moves a target's position and deletes what every target has (docs/influx-schema.md).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from gateway.domain.events import AlarmEvent, CribState, MaintenanceRecord
from gateway.store.store import DeliveryRow, Store

log = logging.getLogger("cribwatch.store")

LOG_EVERY_S = 60.0
"""A failure that goes on is logged again at most this often (with the count)."""

_WAITING, _TAKEN, _DROPPED = 0, 1, 2


@dataclass(slots=True)
class WriterHealth:
    written: int = 0
    """Operations committed."""
    pending: int = 0
    """Operations waiting (queued or in a batch not yet committed)."""
    failures: int = 0
    """Batches (or store opens) that failed."""
    failing: bool = False
    """The last attempt failed: what is pending is not on disk."""
    last_error: str | None = None
    dropped: int = 0
    """Operations given up: crib states, audit and sensor rows beyond ``limit``, writes of any kind beyond twice
    the limit (also in ``lost``), and any operation the database refuses by itself."""
    lost: int = 0
    """Of ``dropped``, writes that were neither crib states nor audit or sensor rows (beyond twice the limit)."""
    size_bytes: int = 0
    """The store's file and write-ahead log, after the last batch."""
    pruned: int = 0
    """Rows deleted by :meth:`StoreWriter.prune` so far."""
    influx_rows: int = 0
    """Points in the InfluxDB outbox after the last batch (for every target)."""
    influx_dropped: int = 0
    """Telemetry points dropped for InfluxDB: from the full outbox since the store began, and from memory in this
    run while the writer was ``limit`` behind (store-wide: every target misses them, unless it had them)."""
    influx_alarm_dropped: int = 0
    """Alarm points dropped for InfluxDB (store-wide): from the outbox when alarm points alone filled it (since the
    store began), and from memory in this run beyond twice ``limit``. Each time logged CRITICAL."""


_SECOND_RANK = frozenset({"audit", "sensor_event", "delivery"})
"""Writes dropped, like crib states, when the writer is ``limit`` behind (after InfluxDB telemetry, which goes
first): the incident timeline keeps who acknowledged what; alarm events and the outbox are kept."""


class _Op:
    """One queued write. ``number`` orders them; a crib state's ``args`` may be replaced while it waits."""

    __slots__ = ("args", "crib_id", "kind", "number", "state")

    def __init__(self, number: int, kind: str, args: tuple[Any, ...], crib_id: str | None = None) -> None:
        self.number = number
        self.kind = kind
        self.args = args
        self.crib_id = crib_id
        self.state = _WAITING

    def __repr__(self) -> str:
        return f"<{self.kind} #{self.number} {self.args!r:.200}>"


_TRANSIENT_CODES = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_CORRUPT,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
        sqlite3.SQLITE_NOTADB,
    }
)
"""SQLite's result codes for the disk's or the file's fault: worth retrying as they are."""


def _transient(exc: BaseException) -> bool:
    """The disk's or the file's fault (full, read-only, I/O error, locked, corrupt): worth retrying as it is.

    Judged by SQLite's own result code where the error has one: an ``OperationalError`` is also what a bad
    statement raises ("no such column"), which no retry mends; it is tried alone and given up (see ``_one_by_one``).
    """
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return (code & 0xFF) in _TRANSIENT_CODES
    return isinstance(exc, sqlite3.OperationalError) or type(exc) is sqlite3.DatabaseError


_POINT_KINDS = frozenset({"influx", "influx_alarm"})
_POINTS_PER_OP = 10
"""InfluxDB points are small rows, written together: a batch holds up to ten times ``batch`` of them."""

GATHER_S = 0.02
"""How long a write to an idle writer waits for the others of the same moment before the batch is committed."""


class StoreWriter:
    """Writes to a :class:`Store` from its own thread. Build, :meth:`start`, enqueue, :meth:`stop`."""

    def __init__(
        self,
        store: Store | Callable[[], Store],
        *,
        retry_min_s: float = 0.05,
        retry_max_s: float = 5.0,
        limit: int = 100_000,
        batch: int = 500,
        gather_s: float = GATHER_S,
        monotonic: Callable[[], float] = time.monotonic,
        influx_limit: int = 1_000_000,
        influx_targets: tuple[str, ...] = (),
    ) -> None:
        """``influx_limit``: the most points the InfluxDB outbox keeps (oldest telemetry dropped beyond it);
        ``influx_targets``: the configured targets (a point goes once every one of them has it)."""
        self.influx_limit = influx_limit
        self.influx_targets = influx_targets
        if isinstance(store, Store):
            self._store: Store | None = store
            self._factory: Callable[[], Store] | None = None
        else:
            self._store = None
            self._factory = store
        self._retry_min_s = retry_min_s
        self._retry_max_s = retry_max_s
        self._limit = limit
        self._batch = batch
        self._gather_s = gather_s
        self._monotonic = monotonic
        self._cond = threading.Condition()
        self._queue: collections.deque[_Op] = collections.deque()
        self._droppable: collections.deque[_Op] = collections.deque()  # crib states in queue order
        self._droppable_points: collections.deque[_Op] = collections.deque()  # InfluxDB telemetry: dropped first
        self._alarm_points: collections.deque[_Op] = collections.deque()  # InfluxDB alarm points: first beyond 2x
        self._crib_waiting: dict[str, _Op] = {}
        self._inflight: list[_Op] = []
        self._live = 0  # waiting in the queue (not dropped, not taken)
        self._dead = 0  # dropped, still in the queue
        self._numbered = 0  # the last number given
        self._done_upto = 0  # every op numbered up to this is committed (or given up)
        self._health = WriterHealth()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._last_failure_log = float("-inf")
        self._streak = 0  # failures since the last success
        self._last_drop_log = float("-inf")
        self._last_lost_log = float("-inf")
        self._idle = False
        """The thread waits for work (the only time a write notifies it)."""
        self._last_trim_log = float("-inf")
        self._influx_store_dropped = 0  # from the store's meta (since the store began), kept up to date
        self._influx_memory_dropped = 0  # dropped from memory in this run
        self._influx_alarm_store_dropped = 0
        self._influx_alarm_memory_dropped = 0
        self._last_alarm_point_log = float("-inf")
        if self._store is not None:
            with contextlib.suppress(Exception):
                self._influx_store_dropped = self._store.influx_dropped()
                self._influx_alarm_store_dropped = self._store.influx_dropped(alarm=True)

    # ------------------------------------------------------------------------------------------ life

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued before the call is committed; False if that took longer than timeout."""
        with self._cond:
            target = self._numbered
            return self._cond.wait_for(lambda: self._done_upto >= target, timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Write what can be written within ``timeout``, stop the thread and close the store.

        The thread is given at least a second to end after the flush (it may be waiting out a backoff).
        """
        deadline = self._monotonic() + timeout
        if self._thread is not None:
            self.flush(timeout)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(max(1.0, deadline - self._monotonic()))  # a second at least, to end a backoff
            if self._thread.is_alive():
                log.error("store writer did not stop within %.1f s; %d writes not on disk", timeout, self.pending)
                return
        else:
            self._close_store()
        with self._cond:
            lost = self._live + len(self._inflight)
        if lost:
            log.critical("store writer stopped with %d writes not on disk (%s)", lost, self._health.last_error)

    @property
    def health(self) -> WriterHealth:
        """A consistent copy (safe to read from any thread)."""
        with self._cond:
            return replace(
                self._health,
                pending=self._live + len(self._inflight),
                influx_dropped=self._influx_store_dropped + self._influx_memory_dropped,
                influx_alarm_dropped=self._influx_alarm_store_dropped + self._influx_alarm_memory_dropped,
            )

    @property
    def pending(self) -> int:
        with self._cond:
            return self._live + len(self._inflight)

    # ------------------------------------------------------------------------------------------ enqueue

    def record_alarm_event(self, ev: AlarmEvent) -> None:
        self._put("alarm", (ev,))

    def record_crib_state(self, st: CribState) -> None:
        """Coalesced: while a state of this crib waits, the newer one takes its place."""
        try:
            with self._cond:
                waiting = self._crib_waiting.get(st.crib_id)
                if waiting is not None and waiting.state == _WAITING:
                    waiting.args = (st,)
                    return
                op = self._append("crib", (st,), crib_id=st.crib_id)
                self._crib_waiting[st.crib_id] = op
                self._droppable.append(op)
                self._bound()
                self._wake()
        except Exception:  # never raise into the event loop
            log.critical("store writer: could not queue a crib state", exc_info=True)

    def outbox_put(  # noqa: PLR0917 - mirrors Store.outbox_put
        self, key: str, topic: str, payload: bytes, qos: int, retain: bool, at: float
    ) -> None:
        self._put("outbox_put", (key, topic, payload, qos, retain, at))

    def outbox_done(self, key: str, at: float) -> None:
        self._put("outbox_done", (key, at))

    def audit(self, at: float, actor: str, source: str, action: str, detail: str | None = None) -> None:
        self._put("audit", (at, actor, source, action, detail))

    def sensor_event(self, at: float, sensor_id: str, crib_id: str, kind: str, detail: str | None = None) -> None:
        self._put("sensor_event", (at, sensor_id, crib_id, kind, detail))

    def delivery(self, row: DeliveryRow) -> None:
        """An alert channel's attempt (from any thread: the channels' own). Dropped like audit rows when far behind."""
        self._put("delivery", (row,))

    def record_step(  # noqa: PLR0917 - one timeline row's fields
        self, alarm_id: str, run: int, n: int, at: float, step: int, detail: dict[str, Any]
    ) -> None:
        """A step of an alarm's chain of notices, on its timeline (kept like an alarm event)."""
        self._put("step", (alarm_id, run, n, at, step, detail))

    def set_maintenance(self, record: MaintenanceRecord) -> None:
        self._put("maintenance_on", (record,))

    def end_maintenance(self, crib_id: str) -> None:
        self._put("maintenance_off", (crib_id,))

    def claim_run(self, run: int, at: float) -> None:
        """Count a run started while the store would not take :meth:`Store.begin_run` (see :meth:`Store.claim_run`)."""
        self._put("claim_run", (run, at))

    def influx_put(self, point: Any) -> None:
        """A point for InfluxDB (a :class:`gateway.influx.schema.Point`: ``line()``, ``alarm``, ``time_ns``), into
        the durable outbox; serialised here, in the writer thread. Telemetry is the lowest rank (the first dropped
        when the writer is ``limit`` behind); alarm points are kept up to twice the limit."""
        if point.alarm:
            self._put("influx_alarm", (point,))
        else:
            self._put("influx", (point,))

    def influx_put_many(self, points: list[Any]) -> None:
        """:meth:`influx_put` for several points under one lock (a backfill's or a benchmark's rate)."""
        try:
            with self._cond:
                for point in points:
                    op = self._append("influx_alarm" if point.alarm else "influx", (point,))
                    (self._alarm_points if point.alarm else self._droppable_points).append(op)
                self._bound()
                self._wake()
        except Exception:  # never raise into the event loop
            log.critical("store writer: could not queue %d InfluxDB points", len(points), exc_info=True)

    def influx_confirmed(self, target: str, upto: int, at: float) -> None:
        """``target``'s server confirmed the outbox up to id ``upto``: move its position, delete what every target
        has (see :meth:`Store.influx_confirm`)."""
        self._put("influx_done", (target, upto, self.influx_targets or (target,), at))

    def prune(self, now: float, keep_s: float) -> None:
        """Prune in the writer thread, in order with the writes (see :meth:`Store.prune`)."""
        self._put("prune", (now, keep_s))

    def _put(self, kind: str, args: tuple[Any, ...]) -> None:
        try:
            with self._cond:
                op = self._append(kind, args)
                if kind == "influx":
                    self._droppable_points.append(op)
                elif kind == "influx_alarm":
                    self._alarm_points.append(op)
                elif kind in _SECOND_RANK:
                    self._droppable.append(op)
                self._bound()
                self._wake()
        except Exception:  # never raise into the event loop
            log.critical("store writer: could not queue a %s write", kind, exc_info=True)

    def _append(self, kind: str, args: tuple[Any, ...], crib_id: str | None = None) -> _Op:
        self._numbered += 1
        op = _Op(self._numbered, kind, args, crib_id)
        self._queue.append(op)
        self._live += 1
        return op

    def _bound(self) -> None:
        """Above ``limit``, drop the oldest InfluxDB telemetry, then the oldest crib states, audit, sensor and
        delivery rows; above twice the limit (memory must not run out: the gateway would stop alarming), the
        oldest InfluxDB alarm points (a copy of alarm events), then the oldest writes of any kind (held: the
        lock)."""
        dropped = 0
        for queue in (self._droppable_points, self._droppable):
            while self._live + len(self._inflight) > self._limit and queue:
                op = queue.popleft()
                if op.state != _WAITING:
                    continue
                self._drop(op)
                dropped += 1
                if op.kind == "influx":
                    self._influx_memory_dropped += 1
        hard = 2 * self._limit
        alarm_points = 0
        while self._live + len(self._inflight) > hard and self._alarm_points:
            op = self._alarm_points.popleft()
            if op.state != _WAITING:
                continue
            self._drop(op)
            dropped += 1
            alarm_points += 1
        if alarm_points:
            self._influx_alarm_memory_dropped += alarm_points
            now = self._monotonic()
            if now - self._last_alarm_point_log >= LOG_EVERY_S:
                self._last_alarm_point_log = now
                log.critical(
                    "store writes are %d behind: dropping the oldest InfluxDB ALARM points (%d so far; the alarm "
                    "events themselves are kept) so that memory lasts; the disk must be fixed",
                    self._live + len(self._inflight),
                    self._influx_alarm_memory_dropped,
                )
        if self._live + len(self._inflight) > hard:
            for op in self._queue:
                if self._live + len(self._inflight) <= hard:
                    break
                if op.state == _WAITING:
                    self._drop(op)
                    dropped += 1
                    self._health.lost += 1
            now = self._monotonic()
            if now - self._last_lost_log >= LOG_EVERY_S:
                self._last_lost_log = now
                log.critical(
                    "store writes are %d behind: dropping the oldest writes of every kind (%d alarm events and "
                    "outbox rows lost so far) so that memory lasts; the disk must be fixed",
                    self._live + len(self._inflight),
                    self._health.lost,
                )
        if not dropped:
            return
        self._health.dropped += dropped
        if self._dead > 1024 and self._dead * 2 > self._live:
            self._queue = collections.deque(op for op in self._queue if op.state == _WAITING)
            self._dead = 0
        self._update_done()
        now = self._monotonic()
        if now - self._last_drop_log >= LOG_EVERY_S:
            self._last_drop_log = now
            log.error(
                "store writes are %d behind (limit %d): dropping the oldest crib states, audit and sensor rows "
                "(%d dropped so far); alarm events and outbox rows are kept",
                self._live + len(self._inflight),
                self._limit,
                self._health.dropped,
            )

    def _wake(self) -> None:
        """Wake the thread if it waits for work (held: the lock). Only then: a thread woken by every write would
        take the GIL from the event loop at each one, just to wait again (measured: 0.2 ms more on an alarm)."""
        if self._idle:
            self._cond.notify_all()

    def _drop(self, op: _Op) -> None:
        """Give up one waiting write (held: the lock)."""
        op.state = _DROPPED
        if op.crib_id is not None and self._crib_waiting.get(op.crib_id) is op:
            del self._crib_waiting[op.crib_id]
        self._live -= 1
        self._dead += 1

    def _update_done(self) -> None:
        """Held: the lock."""
        while self._queue and self._queue[0].state == _DROPPED:
            self._queue.popleft()
            self._dead -= 1
        if self._inflight:
            self._done_upto = self._inflight[0].number - 1
        elif self._queue:
            self._done_upto = self._queue[0].number - 1
        else:
            self._done_upto = self._numbered
        self._cond.notify_all()

    # ------------------------------------------------------------------------------------------ the thread

    def _run(self) -> None:
        delay = self._retry_min_s
        try:
            self._open()  # at once: a store that cannot be opened is reported before the first write
        except Exception as exc:  # noqa: BLE001 - any reason: retried with the first write
            self._failed(exc)
        while True:
            try:
                with self._cond:
                    if not self._take():
                        break
                    batch = list(self._inflight)
                error = self._write(batch)
            except Exception as exc:  # a bug of ours: never let it end the thread
                error = f"internal error: {exc!r}"
                log.critical("store writer: internal error", exc_info=True)
            if error is None:
                delay = self._retry_min_s
                continue
            with self._cond:
                # Back off whatever is queued meanwhile (every enqueue notifies); only stop() cuts it short.
                if self._cond.wait_for(lambda: self._stopping, delay):
                    break
            delay = min(delay * 2, self._retry_max_s)
        self._close_store()

    def _take(self) -> bool:
        """Wait for work and fill ``_inflight`` (held: the lock); False when stopping with nothing to do.

        Work that arrives to an idle writer waits ``gather_s`` first (group commit): the other writes of the same
        moment (an alarm brings its event, its crib state and its outbox row) join the batch, one fsync for all,
        and the writer does not take a core while the alarm itself is still on its way to the staff."""
        if not self._inflight and not self._queue and not self._stopping:
            self._idle = True
            try:
                self._cond.wait_for(lambda: bool(self._queue) or self._stopping)
            finally:
                self._idle = False
            if self._gather_s > 0:
                self._cond.wait_for(lambda: self._stopping, self._gather_s)
        while not self._inflight:
            while self._queue and len(self._inflight) < (
                self._batch * _POINTS_PER_OP if self._queue[0].kind in _POINT_KINDS else self._batch
            ):
                op = self._queue.popleft()
                if op.state == _DROPPED:
                    self._dead -= 1
                    continue
                op.state = _TAKEN
                self._live -= 1
                if op.crib_id is not None and self._crib_waiting.get(op.crib_id) is op:
                    del self._crib_waiting[op.crib_id]
                self._inflight.append(op)
            for queue in (self._droppable, self._droppable_points, self._alarm_points):
                while queue and queue[0].state != _WAITING:
                    queue.popleft()
            if self._inflight:
                break
            if self._stopping:
                return False
            self._cond.wait()
        return True

    def _write(self, batch: list[_Op]) -> str | None:
        """Commit the batch; None on success, else the error (what is not written stays in front)."""
        store: Store | None = None
        try:
            store = self._open()
            pruned = self._commit(store, batch)
        except Exception as exc:  # noqa: BLE001 - the disk, the file or a bad write: sorted below
            if store is None or _transient(exc):
                return self._failed(exc)
            if len(batch) == 1:
                self._give_up(batch[0], exc)
                return None
            return self._one_by_one(store, batch)
        self._succeeded(store, batch, pruned)
        return None

    def _one_by_one(self, store: Store, batch: list[_Op]) -> str | None:
        """The database refused the batch, not the disk: find the write it refuses, one transaction each."""
        for op in batch:
            try:
                pruned = self._commit(store, [op])
            except Exception as exc:  # noqa: BLE001 - sorted below
                if _transient(exc):
                    return self._failed(exc)
                self._give_up(op, exc)
                continue
            self._succeeded(store, [op], pruned)
        return None

    def _commit(self, store: Store, ops: list[_Op]) -> int:
        pruned = 0
        points: list[tuple[str, bool, float]] = []
        with store.transaction():
            for op in ops:
                if op.kind in _POINT_KINDS:
                    p = op.args[0]
                    try:
                        points.append((p.line(), p.alarm, p.time_ns / 1e9))
                    except ValueError as exc:  # a point the schema cannot write (no field): a bug, not the disk's
                        self._unwritable(p, exc)
                    continue
                if points:
                    store.influx_put(points)
                    points = []
                pruned += self._apply(store, op)
            if points:
                store.influx_put(points)
            trimmed = (
                store.influx_trim(self.influx_limit, self.influx_targets)
                if store.influx_rows() > self.influx_limit
                else (0, 0)
            )
        if any(trimmed):
            self._trimmed(*trimmed)
        return pruned

    def _unwritable(self, point: Any, exc: ValueError) -> None:
        alarm = bool(getattr(point, "alarm", False))
        log.log(
            logging.CRITICAL if alarm else logging.ERROR,
            "store writer: an InfluxDB %spoint cannot be written, dropped: %s (%r)",
            "ALARM " if alarm else "",
            exc,
            point,
        )
        with self._cond:
            self._health.dropped += 1
            if alarm:
                self._influx_alarm_memory_dropped += 1

    def _trimmed(self, dropped: int, alarm_points: int = 0) -> None:
        with self._cond:
            self._influx_store_dropped += dropped
            self._influx_alarm_store_dropped += alarm_points
        if alarm_points:  # every time: an alarm point is never given up silently
            log.critical(
                "the InfluxDB outbox is full (%d points): %d ALARM points dropped (%d in all), those a target already "
                "had first; the store keeps the alarms themselves. A target has not taken points for long (gateway "
                "stats: influx)",
                self.influx_limit,
                alarm_points,
                self._influx_alarm_store_dropped,
            )
        if not dropped:
            return
        now = self._monotonic()
        if now - self._last_trim_log >= LOG_EVERY_S:
            self._last_trim_log = now
            log.error(
                "the InfluxDB outbox is full (%d points): the oldest telemetry is dropped (%d points this time, %d "
                "in all); alarm points only when they alone fill it. Is InfluxDB reachable? (gateway stats: influx)",
                self.influx_limit,
                dropped,
                self._influx_store_dropped + self._influx_memory_dropped,
            )

    def _succeeded(self, store: Store, ops: list[_Op], pruned: int) -> None:
        size = store.size_bytes()
        influx_rows = store.influx_rows()
        with self._cond:
            self._health.influx_rows = influx_rows
            if len(ops) == len(self._inflight):
                self._inflight.clear()
            else:
                done = {id(op) for op in ops}
                self._inflight = [op for op in self._inflight if id(op) not in done]
            h = self._health
            h.written += len(ops)
            h.pruned += pruned
            h.size_bytes = size
            recovered, h.failing = h.failing, False
            streak, self._streak = self._streak, 0
            self._update_done()
        if recovered:
            log.info("store writes again after %d failures", streak)

    @staticmethod
    def _apply(store: Store, op: _Op) -> int:
        args = op.args
        match op.kind:
            case "alarm":
                store.record_alarm_event(*args)
            case "crib":
                store.record_crib_state(*args)
            case "outbox_put":
                store.outbox_put(*args)
            case "outbox_done":
                store.outbox_done([args[0]], args[1])
            case "audit":
                store.audit(*args)
            case "sensor_event":
                store.sensor_event(*args)
            case "influx_done":
                store.influx_confirm(*args)
            case "delivery":
                store.record_delivery(*args)
            case "claim_run":
                store.claim_run(*args)
            case "step":
                store.record_step(*args)
            case "maintenance_on":
                store.set_maintenance(*args)
            case "maintenance_off":
                store.end_maintenance(*args)
            case "prune":
                return sum(store.prune(*args).values())
            case _:
                raise ValueError(f"unknown store operation {op.kind!r}")
        return 0

    def _open(self) -> Store:
        if self._store is None:
            assert self._factory is not None
            self._store = self._factory()
            dropped = self._store.influx_dropped()
            alarm_dropped = self._store.influx_dropped(alarm=True)
            with self._cond:
                self._influx_store_dropped = dropped
                self._influx_alarm_store_dropped = alarm_dropped
        return self._store

    def _close_store(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            with contextlib.suppress(Exception):
                store.close()

    def _failed(self, exc: Exception) -> str:
        if self._factory is not None:
            self._close_store()  # open a fresh one next time (the file may have moved, the disk remounted)
        text = f"{type(exc).__name__}: {exc}"
        with self._cond:
            h = self._health
            h.failures += 1
            h.failing = True
            h.last_error = text
            self._streak += 1
            streak, pending = self._streak, self._live + len(self._inflight)
        now = self._monotonic()
        if streak == 1 or now - self._last_failure_log >= LOG_EVERY_S:
            self._last_failure_log = now
            log.log(
                logging.CRITICAL if streak == 1 else logging.ERROR,
                "store writes FAIL (%s): %d failures in a row, %d writes waiting in memory, not on disk; retrying",
                text,
                streak,
                pending,
            )
        return text

    def _give_up(self, op: _Op, exc: Exception) -> None:
        """An operation the database refuses by itself (not the disk's fault): retrying would block the rest."""
        log.critical("store writer: the database refuses %r (%r): dropped", op, exc)
        with self._cond:
            self._health.dropped += 1
            self._health.failures += 1
            self._health.last_error = f"{type(exc).__name__}: {exc}"
            self._inflight = [o for o in self._inflight if o is not op]
            self._update_done()
