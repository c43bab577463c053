"""The Grafana dashboard shipped for the InfluxDB points (deploy/grafana/cribwatch-influxql.json): there is no
Grafana here, so it is parsed, and every query of it (panels and the site variable) runs against a real influxd
holding points the gateway's schema made, and must answer with data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from devtools.influx import InfluxdServer
from gateway.domain.events import TelemetryReading
from gateway.influx import schema
from tests.test_influx_v1 import BASE, Pipeline, influxd, v1  # noqa: F401 - the fixture

pytestmark = pytest.mark.integration

DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "cribwatch-influxql.json"
SITE = "kids-f"


def grafana(query: str) -> str:
    """What Grafana would send for the last ten years, hourly, site kids-f."""
    return query.replace("$timeFilter", "time > now() - 3650d").replace("$__interval", "1h").replace("$site", SITE)


def site_points() -> list[schema.Point]:
    at = BASE
    return [
        schema.latch_point(SITE, "baby", "c-1", "s-1", open_=True, at=at),
        schema.alarm_step_point(
            SITE, "baby", "c-1", "crib_open", "high", "raised", at + 10, alarm_id="9-1", raised_at=at + 10
        ),
        schema.alarm_step_point(
            SITE,
            "baby",
            "c-1",
            "crib_open",
            "high",
            "acknowledged",
            at + 42,
            alarm_id="9-1",
            raised_at=at + 10,
            by="staff-07",
        ),
        schema.latch_point(SITE, "baby", "c-1", "s-1", open_=False, at=at + 60),
        schema.telemetry_point(
            SITE, "baby", "c-1", TelemetryReading("s-1", 1, 5, at, 81, -60, "1.4.2", 60, 30.0), at=at + 1
        ),
        schema.sensor_online_point(SITE, "baby", "c-2", "s-2", online=False, at=at + 5),
        *(
            schema.delivery_point(
                SITE,
                "webhook",
                "alarm",
                outcome,
                at + 11 + n,
                notice_id="9-1/1",
                alarm_id="9-1",
                attempts=n,
                seconds=1.0,
            )
            for n, outcome in enumerate(("failed", "buffered", "skipped", "delivered", "gave_up", "dropped", "gave_up"))
        ),
        schema.gateway_point(SITE, at + 20, {"influx_waiting": 0, "loop_lag_ms": 0.3, "alert_latency_ms": 1.2}),
    ]


def test_every_query_of_the_dashboard_answers_from_the_gateways_points(tmp_path: Path, influxd: InfluxdServer) -> None:  # noqa: F811
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "cribwatch-site"
    database = "dashboard"
    influxd.query(f'CREATE DATABASE "{database}"')
    with Pipeline(tmp_path / "s.sqlite3", {"site": v1(influxd, database)}) as pipe:
        pipe.put(site_points())
        pipe.wait(lambda: pipe.shipped("site"), "written")

    [variable] = dashboard["templating"]["list"]
    [values] = influxd.query(grafana(variable["query"]), db=database)
    assert [v[1] for v in values["series"][0]["values"]] == [SITE]

    panels = dashboard["panels"]
    assert len(panels) >= 6
    for panel in panels:
        for target in panel["targets"]:
            assert target["rawQuery"] is True
            [result] = influxd.query(grafana(target["query"]), db=database)
            assert result.get("series"), f"panel {panel['title']!r} shows nothing: {target['query']}"
    assert "_label" not in DASHBOARD.read_text(), "cribs and rooms by id: their labels are not in InfluxDB"

    [undelivered] = [p for p in panels if p["title"] == "Notices not delivered, by channel"]
    [result] = influxd.query(grafana(undelivered["targets"][0]["query"]), db=database)
    counts = [v[1] for series in result["series"] for v in series["values"]]
    assert sum(counts) == 3, "only the final failures (gave_up, dropped): not a retried attempt, buffered, skipped"
