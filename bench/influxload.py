"""The InfluxDB load of :mod:`bench.influx`, in a process of its own: the gateway's own outbox path at full speed.

``python -m bench.influxload --store FILE --url URL --database DB --user USER --fill N [--batch N]``
(the password in ``CRIBWATCH_INFLUX_BENCH_PASSWORD``)

What the gateway runs for InfluxDB, without the rest: points (:mod:`gateway.influx.schema`) handed to a
:class:`~gateway.store.StoreWriter` (its thread serialises them into the store's outbox, a real SQLite file with
``synchronous = FULL``), and an :class:`~gateway.influx.writer.InfluxShipper` thread that writes the outbox to the
real influxd and has the confirmed points deleted. A producer thread makes readings of 100 sensors as fast as the
writer takes them (it waits when 20,000 writes are queued: beyond the writer's limit it would drop telemetry).

1. **fill**: ``--fill`` points with no target running (InfluxDB "away"): the outbox's size on disk per point.
   Says ``{"filled": ...}`` on stdout.
2. **backfill**: the shipper starts (InfluxDB is back) and writes the outbox out, producer off: the backfill's
   points/s. Says ``{"backfilled": ...}``.
3. **live**: the producer goes on at full speed while the shipper writes, until a line ``stop`` on stdin; then the
   producer stops and the rest is drained. Says ``{"done": ...}``: points made and confirmed by the server in the
   run (the sustained rate, in and out at once), and whether every point made was confirmed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from gateway.influx import schema
from gateway.influx.client import V1Client
from gateway.influx.writer import InfluxShipper
from gateway.store import Store, StoreWriter

SITE = "bench"
TARGET = "bench"
PASSWORD_ENV = "CRIBWATCH_INFLUX_BENCH_PASSWORD"  # noqa: S105 - the name of a variable
SENSORS = 100
QUEUED_MAX = 20_000
DRAIN_LIMIT_S = 120.0


def say(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


class Producer:
    """Readings of ``SENSORS`` sensors, one after the other, each 1 ms of event time after the last."""

    def __init__(self, writer: StoreWriter, start_at: float) -> None:
        self.writer = writer
        self.made = 0
        self._at = start_at
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def make(self, count: int | None) -> None:
        """``count`` points (or until :meth:`stop`), waiting whenever the writer has QUEUED_MAX writes queued."""
        writer, put_many, point = self.writer, self.writer.influx_put_many, schema.point
        end = None if count is None else self.made + count
        while not self._stop.is_set() and (end is None or self.made < end):
            if writer.pending > QUEUED_MAX:
                time.sleep(0.002)
                continue
            batch = []
            for _ in range(500):
                n = self.made
                sensor = f"b-{n % SENSORS:04d}"
                tags = {"site": SITE, "room": "room", "crib": f"c-{n % SENSORS:04d}", "sensor": sensor,
                        "firmware": "1.4.2"}  # fmt: skip
                fields = {"battery_pct": 80 - n % 50, "rssi_dbm": -60 - n % 30, "uptime_s": n, "boot": 1, "seq": n}
                batch.append(point("sensor", self._at, tags, fields))
                self._at += 0.001
                self.made += 1
            put_many(batch)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.make, args=(None,), name="producer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.influxload")
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--fill", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=5000)
    args = parser.parse_args(argv)
    password = os.environ.get(PASSWORD_ENV, "")

    def open_store() -> Store:
        return Store.open(args.store, site_id=SITE)

    empty = open_store()
    empty.influx_position(TARGET, time.time())
    empty.connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    empty_bytes = empty.size_bytes()
    writer = StoreWriter(open_store, influx_limit=10**8, influx_targets=(TARGET,))
    writer.start()
    producer = Producer(writer, start_at=time.time() - 86_400.0)  # a day of backlog: within any retention

    began = time.perf_counter()
    producer.make(args.fill)
    writer.flush(600.0)
    fill_s = time.perf_counter() - began
    empty.connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    filled_bytes = empty.size_bytes()
    say({
        "filled": args.fill,
        "fill_s": round(fill_s, 3),
        "outbox_bytes": filled_bytes - empty_bytes,
        "bytes_per_point": round((filled_bytes - empty_bytes) / args.fill, 1),
    })  # fmt: skip

    shipper = InfluxShipper(
        TARGET,
        lambda: V1Client(args.url, args.database, username=args.user, password=password, timeout_s=30.0),
        open_store,
        writer.influx_confirmed,
        batch_size=args.batch,
        flush_interval_s=0.2,
        retry_min_s=0.2,
        retry_max_s=2.0,
    )
    began = time.perf_counter()
    shipper.start()
    deadline = time.monotonic() + DRAIN_LIMIT_S
    while shipper.health.sent < args.fill and time.monotonic() < deadline:
        time.sleep(0.01)
    backfill_s = time.perf_counter() - began
    say({"backfilled": shipper.health.sent, "backfill_s": round(backfill_s, 3)})

    made_before, sent_before = producer.made, shipper.health.sent
    began = time.perf_counter()
    producer.start()
    sys.stdin.readline()  # "stop" (or end of file)
    producer.stop()
    run_s = time.perf_counter() - began
    sent_in_run = shipper.health.sent - sent_before
    writer.flush(60.0)
    deadline = time.monotonic() + DRAIN_LIMIT_S
    while shipper.health.sent < producer.made and time.monotonic() < deadline:
        time.sleep(0.05)
    health = shipper.health
    shipper.stop()
    writer.stop()
    empty.close()
    say({
        "done": True,
        "run_s": round(run_s, 3),
        "live_points": producer.made - made_before,
        "sent_in_run": sent_in_run,
        "sent": health.sent,
        "made": producer.made,
        "failures": health.failures,
        "rejected": health.rejected,
        "last_error": health.last_error,
    })  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
