"""``python -m bench.store`` in small: a real store filled with incidents and their timelines, every route of the
manager pages answering through uvicorn, figures for each. No timing is checked (bench/ measures, tests do not)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.store import GOAL_ROUTES, fill, run, to_table
from gateway.store import incident_log
from gateway.store.store import Store

pytestmark = pytest.mark.integration


def test_the_fill_writes_whole_incidents_the_log_can_page_through(tmp_path: Path) -> None:
    path = tmp_path / "site.sqlite3"
    info = fill(path, 400, end=1_764_000_000.0, seed=3)
    assert info["rows"]["incidents"] == 400
    assert info["rows"]["timeline"] > 2 * 400  # raised, acknowledged, resolved and notices
    assert info["rows"]["deliveries"] > 400
    store = Store.open(path, site_id="bench-store", readonly=True)
    try:
        deep = incident_log.page(store, incident_log.Filters(), limit=10, older=info["deep_cursor"])
        assert 0 < len(deep.rows) <= 10
        assert incident_log.record(store, info["sample_id"]) is not None
    finally:
        store.close()


def test_the_bench_times_every_route_beside_the_floor(tmp_path: Path) -> None:
    result = run(incidents=300, samples=3, store_path=tmp_path / "site.sqlite3", seed=2)
    figures = result["figures"]
    assert set(figures) >= {"baseline", "stats", "stats_warm", "stats_year"} | GOAL_ROUTES
    assert all(s.n >= 1 for s in figures.values())
    assert figures["first"].n == 3
    table = to_table(result)
    assert "p50 - floor" in table
    assert "300 incidents" in table
