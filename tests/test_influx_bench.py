"""``python -m bench.influx``, small and for real (influxd, Mosquitto, the gateway, the load): it works, every point
of the load and every alarm of the gateway reaches influxd, and it says so. Never how fast: the machines are shared.
"""

from __future__ import annotations

import json

import pytest

from tests.test_bench import _run_bench

pytestmark = pytest.mark.integration


def test_the_influx_benchmark_runs_end_to_end_and_loses_nothing() -> None:
    result = _run_bench(
        "--cribs", "3", "--samples", "8", "--fill", "3000", "--live-s", "2", "--json", module="bench.influx"
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    [line] = result.stdout.strip().splitlines()
    out = json.loads(line)
    assert out["every_point_arrived"] is True
    assert out["points_made"] == out["points_in_influxd"] >= 3000
    assert out["gateway_raised_alarm_points"] == out["alarms_raised"] > 0
    for key in ("fill_points_per_s", "backfill_points_per_s", "live_sent_per_s", "outbox_mb_per_million_points"):
        assert out[key] > 0, key
    for phase in ("quiet", "loaded"):
        assert out[f"{phase}_alert_lost"] == out[f"{phase}_floor_lost"] == 0
        assert out[f"{phase}_alert_p50_ms"] > 0
    assert out["gateway_influx"]["connected"] is True
