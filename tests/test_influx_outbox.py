"""The InfluxDB outbox in the store (real SQLite files): points in through the StoreWriter thread, each target's
position, deletion only when every target confirmed, and the size limit that drops telemetry, never alarms."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gateway.influx import schema
from gateway.influx.schema import Point
from gateway.store import Store, StoreWriter

SITE = "kids-f"


def telemetry(i: int) -> Point:
    return schema.point("sensor", 1_764_000_000.0 + i, {"site": SITE, "sensor": "s-1"}, {"seq": i})


def alarm(i: int) -> Point:
    return schema.alarm_step_point(
        SITE, "baby", "c-1", "crib_open", "high", "raised", 1_764_000_000.0 + i, alarm_id=f"1-{i}", raised_at=0.0
    )


def writer_for(path: Path, **kw: object) -> StoreWriter:
    writer = StoreWriter(lambda: Store.open(path, site_id=SITE), gather_s=0, **kw)  # type: ignore[arg-type]
    writer.start()
    return writer


def test_points_wait_in_order_until_every_target_confirmed(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    writer = writer_for(path, influx_targets=("site", "city"))
    try:
        reader = Store.open(path, site_id=SITE)
        assert reader.influx_position("site", 0.0) == 0
        assert reader.influx_position("city", 0.0) == 0
        for i in range(10):
            writer.influx_put(telemetry(i))
        assert writer.flush()
        batch = reader.influx_batch(0, 4)
        assert [line for _, line in batch] == [telemetry(i).line() for i in range(4)]
        writer.influx_confirmed("site", batch[-1][0], 1.0)
        assert writer.flush()
        assert reader.influx_waiting(0)[0] == 10, "the city has not confirmed them: they stay"
        assert reader.influx_waiting(batch[-1][0]) == (6, 1_764_000_004.0)
        writer.influx_confirmed("city", batch[1][0], 2.0)
        assert writer.flush()
        assert reader.influx_rows() == 8, "only what both have is deleted"
        assert writer.health.influx_rows == 8
        reader.close()
        # A restart: each target takes up at its own position.
        reopened = Store.open(path, site_id=SITE)
        assert reopened.influx_position("site", 3.0) == batch[-1][0]
        assert reopened.influx_position("city", 3.0) == batch[1][0]
        reopened.close()
    finally:
        writer.stop()


def test_ids_never_come_back_once_the_outbox_is_empty(tmp_path: Path) -> None:
    """A target's position is an id: a new point after an empty outbox must still come after it."""
    path = tmp_path / "s.sqlite3"
    writer = writer_for(path, influx_targets=("site",))
    try:
        reader = Store.open(path, site_id=SITE)
        reader.influx_position("site", 0.0)
        writer.influx_put(telemetry(1))
        assert writer.flush()
        [(first, _)] = reader.influx_batch(0, 10)
        writer.influx_confirmed("site", first, 1.0)
        assert writer.flush()
        assert reader.influx_rows() == 0
        writer.influx_put(telemetry(2))
        assert writer.flush()
        assert reader.influx_batch(first, 10)[0][0] > first
        # A target added later starts before the oldest point still waiting.
        assert reader.influx_position("city", 2.0) == first
        reader.close()
    finally:
        writer.stop()


def test_a_full_outbox_drops_the_oldest_telemetry_first_and_counts_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "s.sqlite3"
    writer = writer_for(path, influx_limit=20, influx_targets=("site",))
    try:
        for i in range(30):
            writer.influx_put(alarm(i) if i % 3 == 0 else telemetry(i))  # 10 alarms, 20 telemetry
        writer.influx_put(telemetry(100))
        assert writer.flush()
        store = Store.open(path, site_id=SITE)
        lines = [line for _, line in store.influx_batch(0, 1000)]
        assert sum(line.startswith("alarm,") for line in lines) == 10, "telemetry goes before any alarm point"
        assert store.influx_dropped() == 11
        assert store.influx_dropped(alarm=True) == 0
        with caplog.at_level(logging.CRITICAL, logger="cribwatch.store"):
            for i in range(15):
                writer.influx_put(alarm(200 + i))  # alarm points alone beyond the limit: the limit still holds
            assert writer.flush()
        lines = [line for _, line in store.influx_batch(0, 1000)]
        assert len(lines) == 20
        assert [line for line in lines if line.startswith("sensor,")] == [], "telemetry went first"
        assert lines == [alarm(i).line() for i in (*range(15, 30, 3), *range(200, 215))], "the oldest alarm points"
        assert store.influx_dropped() == 21
        assert store.influx_dropped(alarm=True) == 5
        health = writer.health
        assert (health.influx_dropped, health.influx_alarm_dropped) == (21, 5)
        assert any("ALARM" in r.getMessage() or "alarm points" in r.getMessage() for r in caplog.records)
        store.close()
    finally:
        writer.stop()
    # The counts survive a restart of the writer (the store keeps them).
    again = writer_for(path)
    try:
        again.audit(0.0, "test", "test", "nothing")  # a write: the store is open once it is done
        assert again.flush()
        assert (again.health.influx_dropped, again.health.influx_alarm_dropped) == (21, 5)
    finally:
        again.stop()


def test_a_target_that_takes_nothing_never_holds_the_outbox_beyond_its_limit(tmp_path: Path) -> None:
    """Two targets: the city's server refuses everything for weeks; the site's takes every point. The outbox (shared)
    keeps its limit, alarm points included; the site's target still gets every point."""
    path = tmp_path / "s.sqlite3"
    writer = writer_for(path, influx_limit=10, influx_targets=("site", "city"))
    reader = Store.open(path, site_id=SITE)
    try:
        reader.influx_position("site", 0.0)
        reader.influx_position("city", 0.0)
        site_got: list[str] = []
        for i in range(40):
            writer.influx_put(alarm(i) if i % 2 else telemetry(i))
            assert writer.flush()
            batch = reader.influx_batch(reader.influx_position("site", 0.0), 100)
            site_got += [line for _, line in batch]
            writer.influx_confirmed("site", batch[-1][0], float(i))
            assert writer.flush()
            assert reader.influx_rows() <= 10
        assert site_got == [(alarm(i) if i % 2 else telemetry(i)).line() for i in range(40)]
        assert writer.health.influx_alarm_dropped == 10
    finally:
        reader.close()
        writer.stop()


def test_the_newest_telemetry_is_kept_while_the_oldest_goes(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    writer = writer_for(path, influx_limit=10, influx_targets=("site",))
    try:
        for i in range(25):
            writer.influx_put(telemetry(i))
            if i % 7 == 0:
                assert writer.flush()
        assert writer.flush()
        store = Store.open(path, site_id=SITE)
        assert [line for _, line in store.influx_batch(0, 100)] == [telemetry(i).line() for i in range(15, 25)]
        store.close()
    finally:
        writer.stop()


def test_a_point_that_cannot_be_written_is_dropped_alone_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    writer = writer_for(path, influx_targets=("site",))
    try:
        writer.influx_put(telemetry(1))
        writer.influx_put(schema.point("sensor", 1.0, {}, {"f": float("nan")}))  # no field InfluxDB can take
        writer.influx_put(alarm(2))
        assert writer.flush()
        assert writer.health.dropped == 1
        store = Store.open(path, site_id=SITE)
        assert [line for _, line in store.influx_batch(0, 10)] == [telemetry(1).line(), alarm(2).line()]
        store.close()
    finally:
        writer.stop()
