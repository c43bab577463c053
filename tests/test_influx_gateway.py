"""The gateway's own wiring of InfluxDB points, end to end: a gateway with an ``[influx]`` target (the real influxd
1.6.7), a real Mosquitto, a short escalation chain; an alarm escalates, repeats, is acknowledged, comes back as a
reminder and is resolved; a crib goes in and out of maintenance; a crib opened and closed at once is a quick
resolve. Read back with InfluxQL: one point per real step, deliveries with their room and the seconds from their
notice, maintenance, and the sensors' nuisance counts."""

from __future__ import annotations

import os
import time
from collections import Counter
from typing import Any

import pytest

from devtools.brokers import BrokerEndpoint
from devtools.influx import InfluxdServer
from gateway.domain.vocab import AlarmEventType, AlarmKind
from gateway.protocol import Topics
from gateway.settings import Settings, influx_env, settings_from_mapping
from tests.test_alerting_integration import ALERTING
from tests.test_gateway_integration import running, sensor, staff_device
from tests.test_influx_v1 import database, influxd, until  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration


def settings_for(endpoint: BrokerEndpoint, server: InfluxdServer, db: str) -> Settings:
    data: dict[str, Any] = {
        "site": {"id": db.replace("_", "-"), "label": "Test site"},
        "mqtt": {"host": endpoint.host, "port": endpoint.port, "stats_interval_s": 0.2, "reconnect_max_s": 0.5},
        "alarms": {"offline_grace_s": 0, "heartbeat_interval_s": 30},
        "rooms": [
            {
                "id": "nursery",
                "label": "Nursery",
                "grace_s": 0,
                "cribs": [{"id": f"n-{i}", "label": f"Crib {i}", "sensor_id": f"s-{i}"} for i in (1, 2, 3)],
            }
        ],
        "alerting": ALERTING,
        "influx": {
            "targets": [{"name": "site", "url": server.url, "database": db, "username": server.username}],
            "flush_interval_s": 0.05,
            "retry_min_s": 0.05,
            "retry_max_s": 0.2,
        },
    }
    env = {
        "CRIBWATCH_MQTT_USERNAME": endpoint.username or "",
        "CRIBWATCH_MQTT_PASSWORD": endpoint.password or "",
        "CRIBWATCH_STATE_DIR": os.environ["CRIBWATCH_STATE_DIR"],
        "CRIBWATCH_MQTT_CLIENT_ID_IS_USERNAME": "false",  # the tests' broker: one account for every role
        influx_env("site", "password"): server.password,
    }
    return settings_from_mapping(data, env=env)


async def test_a_gateway_writes_each_step_once_with_deliveries_maintenance_and_nuisance(
    mqtt_endpoint: BrokerEndpoint,
    influxd: InfluxdServer,  # noqa: F811 - the session's fixture
    database: str,  # noqa: F811
) -> None:
    settings = settings_for(mqtt_endpoint, influxd, database)
    topics = Topics(settings.site.id)

    def rows(q: str) -> list[dict[str, Any]]:
        return influxd.rows(q, db=database)

    async with (
        running(settings) as gw,
        staff_device(mqtt_endpoint, topics) as staff,
        sensor(mqtt_endpoint, topics, "s-1") as s1,
        sensor(mqtt_endpoint, topics, "s-3") as s3,
    ):
        await s1.open()
        raised = await staff.event("n-1", AlarmKind.CRIB_OPEN, AlarmEventType.RAISED)
        await until(lambda: gw.notice_stats["repeat"] >= 1, "escalated, then repeated")
        await staff.ack(alarm_id=raised.alarm_id, by="staff-07", device="pager-n1")
        await staff.event("n-1", AlarmKind.CRIB_OPEN, AlarmEventType.ACKNOWLEDGED)
        await staff.event("n-1", AlarmKind.CRIB_OPEN, AlarmEventType.REMINDED)
        await until(lambda: gw.notice_stats["reminder"] >= 1, "the reminder's notice")
        await s1.close_latch()
        await staff.event("n-1", AlarmKind.CRIB_OPEN, AlarmEventType.RESOLVED)
        await s3.open()
        await s3.close_latch()  # within quick_resolve_s: a nuisance alarm
        await staff.event("n-3", AlarmKind.CRIB_OPEN, AlarmEventType.RESOLVED)
        assert gw.maintenance_on("n-2", reason="new battery", until=time.time() + 60, by="tech-1").accepted
        assert gw.maintenance_off("n-2", by="tech-1").accepted
        await until(
            lambda: (
                rows('SELECT * FROM "maintenance" WHERE "on" = 0')
                and rows('SELECT * FROM "alarm" WHERE "event" = \'resolved\' AND "crib" = \'n-1\'')
                and rows('SELECT * FROM "sensor_nuisance" WHERE "sensor" = \'s-3\' AND "quick_resolves" > 0')
            ),
            "the last points in influxd",
        )
        notices = Counter(gw.notice_stats)
        await until(
            lambda: (
                len(rows('SELECT * FROM "delivery"'))
                >= sum(notices[k] for k in ("alarm", "escalation", "repeat", "reminder"))
            ),
            "every notice's delivery",
        )
        assert gw.dispatcher is not None
        assert gw.dispatcher.failures.get("influx", 0) == 0

    alarm = rows(f'SELECT * FROM "alarm" WHERE "alarm_id" = \'{raised.alarm_id}\'')
    events = Counter(a["event"] for a in alarm)
    assert events["raised"] == events["acknowledged"] == events["resolved"] == 1
    assert events["reminded"] == notices["reminder"] == 1, "a reminder is one point (the core's), not two"
    assert events["escalated"] == notices["escalation"] >= 1
    assert events["repeated"] == notices["repeat"] >= 1, "a repeat of the chain is its own step"
    assert len({(a["event"], a["time"]) for a in alarm}) == len(alarm)

    deliveries = rows('SELECT * FROM "delivery"')
    assert {d["room"] for d in deliveries} == {"nursery"}
    assert {d["alarm_id"] for d in deliveries} >= {raised.alarm_id}
    # seconds: from the notice (the time of its escalated/repeated point) to the attempt's outcome.
    steps = {(a["event"], a["level"]): a["time"] for a in alarm if a["event"] in {"escalated", "repeated"}}
    for d in deliveries:
        if d["alarm_id"] != raised.alarm_id or d["notice"] not in {"escalation", "repeat"}:
            continue
        notice_at = d["time"] - round(d["seconds"] * 1e9)
        assert any(abs(notice_at - at) < 5_000 for at in steps.values()), (d, steps)

    maintenance = rows('SELECT * FROM "maintenance" WHERE "crib" = \'n-2\'')
    assert [(m["on"], m["by"], m["room"]) for m in maintenance] == [(1, "tech-1", "nursery"), (0, "tech-1", "nursery")]
    assert maintenance[0]["reason"] == "new battery"

    nuisance = rows('SELECT * FROM "sensor_nuisance" WHERE "sensor" = \'s-3\'')
    assert nuisance[-1]["crib"] == "n-3"
    assert nuisance[-1]["quick_resolves"] >= 1
    assert len(nuisance) == len({tuple(sorted((k, v) for k, v in n.items() if k != "time")) for n in nuisance}), (
        "a point only when the counts changed"
    )
