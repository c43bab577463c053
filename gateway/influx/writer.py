"""One thread per InfluxDB target: reads the store's outbox after the target's position, writes it in batches,
and moves the position only when the server confirmed (see docs/influx-schema.md#the-outbox).

The points got into the outbox through the :class:`~gateway.store.StoreWriter` thread; this thread only reads
them (its own connection: WAL lets it read beside the writer) and hands the confirmations back to the writer, which
moves the position and deletes what every target has. So nothing here touches the event loop, and an InfluxDB
that hangs holds up this thread alone (for at most ``timeout_s`` a write).

* Order: oldest first, batch after batch; a batch that failed is sent again, whole, before anything newer.
* Backoff: ``retry_min_s`` doubling up to ``retry_max_s`` while the server is away or failing; a ``Retry-After``
  of a 429 or 503 is honoured, up to ``retry_max_s``.
* Batches: a full batch leaves at once (a backfill runs at the server's pace); a partial one at most every
  ``flush_interval_s``.
* A body the server refuses for what it is (400 or 422 whose answer names points: see
  :func:`gateway.influx.client.names_points`) is halved until the refused point is alone; that point is given up
  (counted in ``rejected``, logged with its line; an alarm point also in ``rejected_alarm``, logged CRITICAL); the
  others are written. A 400 that names no point (a proxy, a firewall) is a failure: nothing is given up. A body too
  large (413) is halved.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from gateway.influx.client import InfluxClient, WriteFailedError, WriteRefusedError, WriteTooLargeError
from gateway.store import Store

log = logging.getLogger("cribwatch.influx")

LOG_EVERY_S = 60.0
WAITING_EVERY_S = 1.0
"""How often the depth of the outbox (a COUNT) is read again while points flow."""


@dataclass(slots=True)
class TargetHealth:
    name: str
    url: str
    api: str
    connected: bool | None = None
    """The last write succeeded (True), failed (False), or none was tried yet (None)."""
    waiting: int = 0
    """Points in the outbox this target has not confirmed."""
    oldest_waiting_at: float | None = None
    """Wall time of the oldest of them."""
    sent: int = 0
    """Points the server confirmed since the gateway started."""
    failures: int = 0
    """Writes that failed (each is retried)."""
    rejected: int = 0
    """Points the server refused for what they are (400/422 naming them): given up, logged."""
    rejected_alarm: int = 0
    """Of ``rejected``, alarm points (alarm steps, deliveries, maintenance): each logged CRITICAL."""
    last_error: str | None = None
    retry_in_s: float | None = None
    """After a failure, the wait before the next try (backoff, or the server's Retry-After up to ``retry_max_s``)."""
    last_write_at: float | None = None
    """Wall time of the last confirmed write."""
    position: int = 0


class InfluxShipper:
    """Ships one target's outbox. :meth:`start`, then :meth:`stop`; :attr:`health` from any thread."""

    def __init__(
        self,
        name: str,
        connect: Callable[[], InfluxClient],
        open_store: Callable[[], Store],
        confirm: Callable[[str, int, float], None],
        *,
        url: str = "",
        api: str = "",
        batch_size: int = 5000,
        flush_interval_s: float = 1.0,
        retry_min_s: float = 1.0,
        retry_max_s: float = 60.0,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._connect = connect
        self._open_store = open_store
        self._confirm = confirm
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._retry_min_s = retry_min_s
        self._retry_max_s = retry_max_s
        self._wall = wall
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._health = TargetHealth(name, url, api)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: InfluxClient | None = None
        self._store: Store | None = None
        self._position = 0
        self._last_fail_log = float("-inf")
        self._streak = 0
        self._waiting_read = float("-inf")

    # ------------------------------------------------------------------------------------------ life

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"influx-{self.name}", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the write in progress (if any; bounded by the client's timeout)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("InfluxDB target %s did not stop within %.1f s (a write in progress)", self.name, timeout)

    def poke(self) -> None:
        """Look at the outbox now (points arrived); optional: it looks every ``flush_interval_s`` anyway."""
        self._wake.set()

    @property
    def health(self) -> TargetHealth:
        with self._lock:
            return replace(self._health)

    # ------------------------------------------------------------------------------------------ the thread

    def _run(self) -> None:
        delay = self._retry_min_s
        last_send = float("-inf")
        while not self._stop.is_set():
            try:
                store = self._open()
                rows = store.influx_batch(self._position, self._batch_size)
                self._read_waiting(store, force=not rows)
                if not rows:
                    self._sleep(self._flush_interval_s)
                    continue
                if len(rows) < self._batch_size:
                    wait = last_send + self._flush_interval_s - self._monotonic()
                    if wait > 0:
                        self._sleep(wait)
                        continue
                last_send = self._monotonic()
                self._send(rows)
            except WriteFailedError as exc:
                self._failed(str(exc))
                wait = delay if exc.retry_after_s is None else max(delay, min(exc.retry_after_s, self._retry_max_s))
                with self._lock:
                    self._health.retry_in_s = wait
                self._sleep(wait)
                delay = min(delay * 2, self._retry_max_s)
                continue
            except Exception as exc:  # noqa: BLE001 - the store or a bug of ours: never end the thread
                self._close_store()
                self._failed(f"{type(exc).__name__}: {exc}", ours=True)
                with self._lock:
                    self._health.retry_in_s = delay
                self._sleep(delay)
                delay = min(delay * 2, self._retry_max_s)
                continue
            delay = self._retry_min_s
        self._close_client()
        self._close_store()

    def _sleep(self, seconds: float) -> None:
        self._wake.wait(seconds)
        self._wake.clear()

    def _open(self) -> Store:
        if self._store is None:
            store = self._open_store()
            try:
                self._position = store.influx_position(self.name, self._wall())
            except BaseException:
                store.close()
                raise
            self._store = store
            with self._lock:
                self._health.position = self._position
        return self._store

    def _client_now(self) -> InfluxClient:
        if self._client is None:
            try:
                self._client = self._connect()
            except Exception as exc:
                raise WriteFailedError(f"cannot set up the client: {type(exc).__name__}: {exc}") from exc
        return self._client

    def _send(self, rows: Sequence[tuple[int, str]]) -> None:
        """Write ``rows``; confirmed parts move the position. WriteFailedError: the rest waits for a retry."""
        body = "\n".join([row[1] for row in rows]).encode()
        try:
            self._client_now().write(body)
        except (WriteRefusedError, WriteTooLargeError) as exc:
            if len(rows) == 1:
                if isinstance(exc, WriteTooLargeError):
                    raise WriteFailedError(f"one point is over the server's size limit: {exc}") from exc
                self._refused(rows[0], str(exc))
                return
            half = len(rows) // 2
            self._send(rows[:half])
            self._send(rows[half:])
            return
        self._confirmed(rows[-1][0], len(rows))

    def _confirmed(self, upto: int, count: int, *, written: bool = True) -> None:
        self._position = upto
        now = self._wall()
        self._confirm(self.name, upto, now)
        with self._lock:
            h = self._health
            h.position = upto
            h.waiting = max(0, h.waiting - count)
            if not written:  # a refusal moves the position past the point, but is no confirmed write
                return
            h.sent += count
            h.last_write_at = now
            recovered = h.connected is False
            h.connected = True
            h.retry_in_s = None
            streak, self._streak = self._streak, 0
        if recovered:
            log.info("InfluxDB target %s writes again after %d failures; backfilling", self.name, streak)

    def _refused(self, row: tuple[int, str], error: str) -> None:
        alarm = self._store is not None and self._store.influx_is_alarm(row[0])
        log.log(
            logging.CRITICAL if alarm else logging.ERROR,
            "InfluxDB target %s refuses %s, given up: %s: %s",
            self.name,
            "an ALARM point" if alarm else "a point",
            error,
            row[1][:300],
        )
        with self._lock:
            self._health.rejected += 1
            self._health.rejected_alarm += int(alarm)
            self._health.last_error = error
        self._confirmed(row[0], 1, written=False)

    def _failed(self, error: str, *, ours: bool = False) -> None:
        with self._lock:
            h = self._health
            h.failures += 1
            h.last_error = error
            if not ours:
                h.connected = False
            self._streak += 1
            streak, waiting = self._streak, h.waiting
        now = self._monotonic()
        if streak == 1 or now - self._last_fail_log >= LOG_EVERY_S:
            self._last_fail_log = now
            log.log(
                logging.ERROR if streak == 1 else logging.WARNING,
                "InfluxDB target %s: write failed (%s), %d failures in a row; %d points wait in the outbox",
                self.name,
                error,
                streak,
                waiting,
            )
        if not ours:
            self._close_client()

    def _read_waiting(self, store: Store, *, force: bool) -> None:
        now = self._monotonic()
        if not force and now - self._waiting_read < WAITING_EVERY_S:
            return
        self._waiting_read = now
        count, oldest = store.influx_waiting(self._position)
        with self._lock:
            self._health.waiting = count
            self._health.oldest_waiting_at = oldest

    def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    def _close_store(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            with contextlib.suppress(Exception):
                store.close()
