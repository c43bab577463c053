# ruff: noqa: S608, E501 - InfluxQL built from this module's constants (never from input), one query a line as Grafana shows it
"""The Grafana dashboards of ``dashboards/``, written as code: ``python -m devtools.dashboards`` writes them.

Five dashboards (site overview, incidents, sensor health, gateway health, helping hands), every query raw InfluxQL (InfluxDB 1.x;
2.x through a DBRP mapping; 3.x), every name in it one of ``gateway/influx/schema.py``'s :data:`KEYS`
(tests/test_dashboards.py checks each query against the schema and runs it against a real influxd holding the
gateway's points). The data source is the one ``dashboards/provisioning/datasources/`` provisions, by its uid.

Nothing identifies a child: rooms, cribs and sensors are shown by their ids (the labels staff read are not in
InfluxDB at all).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.influx import schema

DATASOURCE_UID = "cribwatch-influxdb"
"""The uid of the provisioned InfluxDB data source (dashboards/provisioning/datasources/cribwatch-influxdb.yaml)."""
DS = {"type": "influxdb", "uid": DATASOURCE_UID}
TAG = "cribwatch"
OUT = Path(__file__).resolve().parent.parent / "dashboards"

SITE = '"site" =~ /^$site$/'
ROOM = '"room" =~ /^$room$/'
TIME = "$timeFilter"
NOT_TEST = "\"test\" = 'false'"
ALARM_NOTICES = f"\"notice\" != '{schema.HELPING_HANDS_NOTICE}'"
"""The deliveries of alarm notices only (a helping-hands request to the coordinators is not an alarm)."""

Json = dict[str, Any]


# ------------------------------------------------------------------------------------------ building blocks


def target(query: str, *, ref: str = "A", table: bool = False, alias: str | None = None) -> Json:
    out: Json = {
        "refId": ref,
        "datasource": DS,
        "rawQuery": True,
        "resultFormat": "table" if table else "time_series",
        "query": query,
    }
    if alias is not None:
        out["alias"] = alias
    return out


def panel(
    kind: str,
    title: str,
    queries: Sequence[Json],
    *,
    description: str = "",
    unit: str | None = None,
    width: int = 12,
    height: int = 8,
    mappings: Sequence[Json] = (),
    options: Json | None = None,
    decimals: int | None = None,
) -> Json:
    defaults: Json = {}
    if unit is not None:
        defaults["unit"] = unit
    if decimals is not None:
        defaults["decimals"] = decimals
    if mappings:
        defaults["mappings"] = list(mappings)
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"w": width, "h": height},
        "targets": [dict(q, refId=chr(ord("A") + n)) for n, q in enumerate(queries)],
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options or {},
    }


def value_map(**texts: str) -> Json:
    """A value mapping: ``value_map(**{"1": "open", "0": "closed"})``."""
    return {"type": "value", "options": {v: {"text": t, "index": n} for n, (v, t) in enumerate(texts.items())}}


OPEN_CLOSED = value_map(**{"1": "open", "0": "closed"})
ONLINE_OFFLINE = value_map(**{"1": "online", "0": "OFFLINE"})
ON_OFF = value_map(**{"1": "in maintenance", "0": "in service"})


def site_variable() -> Json:
    return {
        "name": "site",
        "label": "Site",
        "type": "query",
        "datasource": DS,
        "query": 'SHOW TAG VALUES FROM "gateway" WITH KEY = "site"',
        "refresh": 1,
        "multi": True,
        "includeAll": True,
        "allValue": ".*",
        "current": {},
        "options": [],
    }


def room_variable() -> Json:
    return {
        "name": "room",
        "label": "Room",
        "type": "query",
        "datasource": DS,
        "query": f'SHOW TAG VALUES FROM "latch" WITH KEY = "room" WHERE {SITE}',
        "refresh": 1,
        "multi": True,
        "includeAll": True,
        "allValue": ".*",
        "current": {},
        "options": [],
    }


def dashboard(uid: str, title: str, description: str, panels: Sequence[Json], *, rooms: bool) -> Json:
    """Panels laid out left to right, top to bottom, in the order given."""
    x = y = row_height = 0
    laid = []
    for n, p in enumerate(panels, start=1):
        w, h = p["gridPos"]["w"], p["gridPos"]["h"]
        if x + w > 24:
            x, y, row_height = 0, y + row_height, 0
        laid.append(dict(p, id=n, gridPos={"x": x, "y": y, "w": w, "h": h}))
        x += w
        row_height = max(row_height, h)
    variables = [site_variable(), room_variable()] if rooms else [site_variable()]
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": [TAG],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "refresh": "1m",
        "time": {"from": "now-7d", "to": "now"},
        "links": [
            {
                "type": "dashboards",
                "tags": [TAG],
                "asDropdown": False,
                "includeVars": True,
                "keepTime": True,
                "title": "cribwatch",
            }
        ],
        "annotations": {"list": []},
        "templating": {"list": variables},
        "panels": laid,
    }


# ------------------------------------------------------------------------------------------ the dashboards


def overview() -> Json:
    where = f"{SITE} AND {ROOM}"
    panels = [
        panel(
            "stat",
            "Open alarms now",
            [target(f'SELECT last("active_alarms") FROM "gateway" WHERE {SITE} AND {TIME} GROUP BY "site"')],
            description="Alarms raised and not yet resolved, at the gateway's last health report.",
            width=6,
            height=5,
        ),
        panel(
            "stat",
            "Cribs open now",
            [
                target(
                    f'SELECT sum("open") FROM (SELECT last("open") AS "open" FROM "latch" WHERE {where} GROUP BY "site", "crib")'
                )
            ],
            description="Cribs whose last latch change was to open (over all time: a latch point is written only when it changes).",
            width=6,
            height=5,
        ),
        panel(
            "stat",
            "Sensors offline now",
            [
                target(
                    'SELECT count("online") FROM (SELECT last("online") AS "online" FROM "sensor_online" '
                    f'WHERE {where} GROUP BY "site", "sensor") WHERE "online" = 0'
                )
            ],
            width=6,
            height=5,
        ),
        panel(
            "stat",
            "Alarms raised (time range)",
            [
                target(
                    f'SELECT count("alarm_id") FROM "alarm" WHERE "event" = \'raised\' AND {NOT_TEST} AND {where} AND {TIME}'
                )
            ],
            description="Test alarms left out.",
            width=6,
            height=5,
        ),
        panel(
            "table",
            "Crib latches now",
            [
                target(
                    f'SELECT last("open") AS "latch" FROM "latch" WHERE {where} GROUP BY "site", "room", "crib", "sensor"',
                    table=True,
                )
            ],
            description="Each crib's last latch change (time: when it happened).",
            mappings=[OPEN_CLOSED],
        ),
        panel(
            "state-timeline",
            "Latch by crib",
            [
                target(
                    f'SELECT last("open") FROM "latch" WHERE {where} AND {TIME} GROUP BY time($__interval), "crib" fill(previous)',
                    alias="$tag_crib",
                )
            ],
            mappings=[OPEN_CLOSED],
        ),
        panel(
            "timeseries",
            "Open alarms",
            [
                target(
                    f'SELECT max("active_alarms") FROM "gateway" WHERE {SITE} AND {TIME} GROUP BY time($__interval), "site" fill(previous)',
                    alias="$tag_site",
                )
            ],
            decimals=0,
        ),
        panel(
            "timeseries",
            "Cribs opened per day, by room",
            [
                target(
                    f'SELECT count("open") FROM "latch" WHERE "open" = 1 AND {where} AND {TIME} GROUP BY time(1d), "room" fill(0)',
                    alias="$tag_room",
                )
            ],
            decimals=0,
        ),
        panel(
            "table",
            "Latest alarm steps",
            [
                target(
                    'SELECT "room", "crib", "kind", "priority", "event", "alarm_id", "seconds", "level", "by", "device", '
                    f'"resolution" FROM "alarm" WHERE {NOT_TEST} AND {where} AND {TIME} ORDER BY time DESC LIMIT 100',
                    table=True,
                )
            ],
            description="seconds: since the alarm was raised. by/device: the staff account and device (never a child).",
            width=24,
        ),
        panel(
            "table",
            "Maintenance changes",
            [
                target(
                    f'SELECT "room", "crib", "on", "by", "reason" FROM "maintenance" WHERE {where} AND {TIME} '
                    "ORDER BY time DESC LIMIT 50",
                    table=True,
                )
            ],
            description="A crib (or a whole room: no crib) put in maintenance (alarms recorded, not sent) or back in service.",
            mappings=[ON_OFF],
            width=24,
            height=6,
        ),
    ]
    return dashboard(
        "cribwatch-overview",
        "cribwatch: site overview",
        "Crib states and open alarms of a site (or of every site, on the city's Grafana).",
        panels,
        rooms=True,
    )


def incidents() -> Json:
    where = f"{SITE} AND {ROOM}"
    ack = f"\"event\" = 'acknowledged' AND {NOT_TEST} AND {where} AND {TIME}"
    resolved = f"\"event\" = 'resolved' AND {NOT_TEST} AND {where} AND {TIME}"
    panels = [
        panel(
            "stat",
            "Alarms raised",
            [
                target(
                    f'SELECT count("alarm_id") FROM "alarm" WHERE "event" = \'raised\' AND {NOT_TEST} AND {where} AND {TIME}'
                )
            ],
            width=6,
            height=5,
        ),
        panel(
            "stat",
            "Median time to acknowledge",
            [target(f'SELECT median("seconds") FROM "alarm" WHERE {ack}')],
            unit="s",
            width=6,
            height=5,
        ),
        panel(
            "stat",
            "Median time to resolve",
            [target(f'SELECT median("seconds") FROM "alarm" WHERE {resolved}')],
            description="From raised to resolved (the crib closed again, or the sensor back).",
            unit="s",
            width=6,
            height=5,
        ),
        panel(
            "stat",
            "Escalated (nobody acknowledged in time)",
            [
                target(
                    f'SELECT count("alarm_id") FROM "alarm" WHERE "event" = \'escalated\' AND {NOT_TEST} AND {where} AND {TIME}'
                )
            ],
            width=6,
            height=5,
        ),
        panel(
            "timeseries",
            "Alarms raised per day, by kind",
            [
                target(
                    f'SELECT count("alarm_id") FROM "alarm" WHERE "event" = \'raised\' AND {NOT_TEST} AND {where} AND {TIME} '
                    'GROUP BY time(1d), "kind" fill(0)',
                    alias="$tag_kind",
                )
            ],
            decimals=0,
        ),
        panel(
            "timeseries",
            "Alarms raised per day, by room",
            [
                target(
                    f'SELECT count("alarm_id") FROM "alarm" WHERE "event" = \'raised\' AND {NOT_TEST} AND {where} AND {TIME} '
                    'GROUP BY time(1d), "room" fill(0)',
                    alias="$tag_room",
                )
            ],
            decimals=0,
        ),
        panel(
            "timeseries",
            "Response time (acknowledged, seconds after raised), by room",
            [
                target(
                    f'SELECT mean("seconds") FROM "alarm" WHERE {ack} GROUP BY time($__interval), "room" fill(none)',
                    alias="mean $tag_room",
                ),
                target(
                    f'SELECT percentile("seconds", 90) FROM "alarm" WHERE {ack} GROUP BY time($__interval), "room" fill(none)',
                    alias="p90 $tag_room",
                ),
            ],
            description="Mean and 90th percentile of the seconds from raised to acknowledged; test alarms left out.",
            unit="s",
        ),
        panel(
            "timeseries",
            "Time to resolve, by kind",
            [
                target(
                    f'SELECT mean("seconds") FROM "alarm" WHERE {resolved} GROUP BY time($__interval), "kind" fill(none)',
                    alias="$tag_kind",
                )
            ],
            description="How long alarms stayed open, from raised to resolved.",
            unit="s",
        ),
        panel(
            "timeseries",
            "Escalations, repeats and reminders per day",
            [
                target(
                    'SELECT count("alarm_id") FROM "alarm" WHERE "event" =~ /^(escalated|repeated|reminded)$/ '
                    f'AND {NOT_TEST} AND {where} AND {TIME} GROUP BY time(1d), "event" fill(0)',
                    alias="$tag_event",
                )
            ],
            description="escalated: a later step of the chain, nobody having acknowledged; repeated: the chain again "
            "from its repeat step; reminded: acknowledged, but the crib still open.",
            decimals=0,
        ),
        panel(
            "timeseries",
            "Notices not delivered, by channel",
            [
                target(
                    'SELECT count("notice_id") FROM "delivery" WHERE ("outcome" = \'gave_up\' OR "outcome" = \'dropped\') '
                    f'AND {ALARM_NOTICES} AND {where} AND {TIME} GROUP BY time(1d), "channel" fill(0)',
                    alias="$tag_channel",
                )
            ],
            description="Alarm notices given up (every attempt failed) or dropped (never attempted). Failed attempts "
            "that were retried, messages buffered for the broker, skipped deliveries and helping-hands requests are not "
            "counted.",
            decimals=0,
        ),
        panel(
            "timeseries",
            "Notice delivery time, by channel",
            [
                target(
                    f'SELECT mean("seconds") FROM "delivery" WHERE "outcome" = \'delivered\' AND {ALARM_NOTICES} '
                    f"AND {where} AND {TIME} "
                    'GROUP BY time($__interval), "channel" fill(none)',
                    alias="$tag_channel",
                )
            ],
            description="From the policy's decision to the channel's confirmation (queue and retries included); alarm "
            "notices only.",
            unit="s",
        ),
        panel(
            "table",
            "Acknowledged and resolved alarms",
            [
                target(
                    'SELECT "alarm_id", "room", "crib", "kind", "priority", "event", "seconds", "by", "device", "resolution" '
                    f'FROM "alarm" WHERE ("event" = \'acknowledged\' OR "event" = \'resolved\') AND {NOT_TEST} AND {where} '
                    f"AND {TIME} ORDER BY time DESC LIMIT 200",
                    table=True,
                )
            ],
            description="seconds: since raised. by: the staff account; device: the device it acknowledged from.",
        ),
    ]
    return dashboard(
        "cribwatch-incidents",
        "cribwatch: incidents",
        "How many alarms, how fast staff acknowledged them, how long they lasted, and whether every notice arrived.",
        panels,
        rooms=True,
    )


def sensors() -> Json:
    where = f"{SITE} AND {ROOM}"
    panels = [
        panel(
            "table",
            "Sensors: last reading (time = last seen)",
            [
                target(
                    'SELECT last("battery_pct") AS "battery_pct", "rssi_dbm", "uptime_s", "interval_s" FROM "sensor" '
                    f'WHERE {where} GROUP BY "site", "room", "crib", "sensor", "firmware"',
                    table=True,
                )
            ],
            description="Each sensor's last telemetry: when it was last heard, its battery (%), signal (dBm), "
            "uptime and heartbeat interval (s).",
            width=24,
        ),
        panel(
            "timeseries",
            "Battery, by sensor",
            [
                target(
                    f'SELECT mean("battery_pct") FROM "sensor" WHERE {where} AND {TIME} GROUP BY time($__interval), "sensor" fill(none)',
                    alias="$tag_sensor",
                )
            ],
            unit="percent",
        ),
        panel(
            "timeseries",
            "Signal (RSSI), by sensor",
            [
                target(
                    f'SELECT mean("rssi_dbm") FROM "sensor" WHERE {where} AND {TIME} GROUP BY time($__interval), "sensor" fill(none)',
                    alias="$tag_sensor",
                )
            ],
            unit="dBm",
        ),
        panel(
            "table",
            "Sensors online or offline now",
            [
                target(
                    f'SELECT last("online") AS "online" FROM "sensor_online" WHERE {where} GROUP BY "site", "room", "crib", "sensor"',
                    table=True,
                )
            ],
            description="Each sensor's last change (time: when it went offline or came back).",
            mappings=[ONLINE_OFFLINE],
        ),
        panel(
            "timeseries",
            "Sensors going offline per day",
            [
                target(
                    f'SELECT count("online") FROM "sensor_online" WHERE "online" = 0 AND {where} AND {TIME} '
                    'GROUP BY time(1d), "sensor" fill(0)',
                    alias="$tag_sensor",
                )
            ],
            decimals=0,
        ),
        panel(
            "table",
            "Readings refused for their order, per sensor",
            [
                target(
                    'SELECT last("refused") AS "refused", "resynced" FROM "sensor_refused" '
                    f'WHERE {SITE} AND {TIME} GROUP BY "site", "sensor", "crib"',
                    table=True,
                )
            ],
            description="Running counts since the gateway's last start: readings refused for their sequence numbers "
            "(replays, a sensor's counter gone wild) and resyncs. Growing counts: a sensor's firmware or clock needs a look.",
        ),
        panel(
            "timeseries",
            "Readings refused for their order, by sensor",
            [
                target(
                    f'SELECT max("refused") FROM "sensor_refused" WHERE {SITE} AND {TIME} '
                    'GROUP BY time($__interval), "sensor" fill(none)',
                    alias="$tag_sensor",
                )
            ],
            description="Running counts (back to 0 when the gateway restarts).",
            decimals=0,
        ),
        panel(
            "table",
            "Nuisance per sensor",
            [
                target(
                    'SELECT last("flaps") AS "flaps", "offline_periods", "quick_resolves" FROM "sensor_nuisance" '
                    f'WHERE {SITE} AND {TIME} GROUP BY "site", "sensor", "crib"',
                    table=True,
                )
            ],
            description="Running counts since the gateway's last start: latch flapping, offline periods, alarms "
            "resolved within seconds. A loose magnet or a weak radio shows here first.",
        ),
    ]
    return dashboard(
        "cribwatch-sensors",
        "cribwatch: sensor health",
        "Battery, signal, last seen and ordering refusals of every wireless sensor.",
        panels,
        rooms=True,
    )


def gateway() -> Json:
    where = f"{SITE} AND {TIME}"
    per_site = 'GROUP BY time($__interval), "site" fill(none)'
    panels = [
        panel(
            "timeseries",
            "Alert latency (worst per interval)",
            [target(f'SELECT max("alert_latency_ms") FROM "gateway" WHERE {where} {per_site}', alias="$tag_site")],
            description="From an adapter seeing the event to its raised alarm having left every channel (MQTT, "
            "buzzer); the worst of each stats interval with an alarm.",
            unit="ms",
        ),
        panel(
            "timeseries",
            "Event loop lag",
            [target(f'SELECT max("loop_lag_ms") FROM "gateway" WHERE {where} {per_site}', alias="$tag_site")],
            description="How late the event loop woke the stats task: a busy or starved gateway.",
            unit="ms",
        ),
        panel(
            "timeseries",
            "Queues",
            [
                target(
                    'SELECT max("offline_buffer") AS "mqtt_offline_buffer", max("store_pending") AS "store_pending", '
                    f'max("influx_waiting") AS "influx_waiting" FROM "gateway" WHERE {where} {per_site}',
                    alias="$tag_site $col",
                )
            ],
            description="mqtt_offline_buffer: messages waiting for the broker; store_pending: writes waiting for the "
            "store's thread; influx_waiting: points of the outbox the slowest InfluxDB target has not confirmed.",
            decimals=0,
        ),
        panel(
            "timeseries",
            "InfluxDB outbox: waiting and dropped",
            [
                target(
                    'SELECT max("influx_waiting") AS "waiting", max("influx_dropped") AS "dropped", '
                    f'max("influx_alarm_dropped") AS "alarm_dropped" FROM "gateway" WHERE {where} {per_site}',
                    alias="$tag_site $col",
                )
            ],
            description="dropped, alarm_dropped: store-wide counts since the store began (alarm points go only when "
            "they alone fill the outbox).",
            decimals=0,
        ),
        panel(
            "timeseries",
            "Rejected messages per interval, by reason",
            [
                target(
                    'SELECT non_negative_difference(max("count")) FROM "gateway_input" WHERE "outcome" = \'rejected\' '
                    f'AND {where} GROUP BY time($__interval), "reason" fill(none)',
                    alias="$tag_reason",
                )
            ],
            description="Input the gateway refused (junk, bad payloads, unknown sensors...), counted and dropped.",
            decimals=0,
        ),
        panel(
            "timeseries",
            "Ignored messages per interval, by reason",
            [
                target(
                    'SELECT non_negative_difference(max("count")) FROM "gateway_input" WHERE "outcome" = \'ignored\' '
                    f'AND {where} GROUP BY time($__interval), "reason" fill(none)',
                    alias="$tag_reason",
                )
            ],
            decimals=0,
        ),
        panel(
            "timeseries",
            "Messages accepted per interval",
            [
                target(
                    f'SELECT non_negative_difference(max("accepted")) FROM "gateway" WHERE {where} {per_site}',
                    alias="$tag_site",
                )
            ],
            decimals=0,
        ),
        panel(
            "timeseries",
            "Errors (running counts)",
            [
                target(
                    'SELECT max("internal_errors") AS "internal_errors", max("channel_failures") AS "channel_failures", '
                    f'max("store_failures") AS "store_failures" FROM "gateway" WHERE {where} {per_site}',
                    alias="$tag_site $col",
                )
            ],
            description="Since the gateway's last start. internal_errors: the core's own faults (each one also a "
            "gateway_fault alarm); anything above 0 needs a technician.",
            decimals=0,
        ),
        panel(
            "timeseries",
            "Store size",
            [target(f'SELECT max("store_size_bytes") FROM "gateway" WHERE {where} {per_site}', alias="$tag_site")],
            unit="bytes",
        ),
        panel(
            "timeseries",
            "Gateway run (a step: a restart)",
            [target(f'SELECT max("run") FROM "gateway" WHERE {where} {per_site}', alias="$tag_site")],
            decimals=0,
        ),
        panel(
            "timeseries",
            "Deliveries per hour, by channel and outcome",
            [
                target(
                    f'SELECT count("notice_id") FROM "delivery" WHERE {where} GROUP BY time(1h), "channel", "outcome" fill(none)',
                    alias="$tag_channel $tag_outcome",
                )
            ],
            decimals=0,
            width=24,
        ),
    ]
    return dashboard(
        "cribwatch-gateway",
        "cribwatch: gateway health",
        "The gateway's own health at each stats interval: alert latency, queues, rejected input, the InfluxDB outbox.",
        panels,
        rooms=False,
    )


def helping() -> Json:
    where = f"{SITE} AND {TIME}"
    made = f"\"status\" = 'new' AND {where}"
    panels = [
        panel(
            "stat",
            "Open requests now, by requesting site",
            [
                target(
                    f'SELECT last("open_requests") FROM "helping_hands" WHERE {where} GROUP BY "requesting_site"',
                    alias="$tag_requesting_site",
                )
            ],
            description="Requests new, assigned, partly filled or filled (not yet done or cancelled), as of the "
            "last change of any request of that site.",
            decimals=0,
            width=8,
        ),
        panel(
            "timeseries",
            "People asked and found per week",
            [
                target(
                    f'SELECT sum("people") AS "asked" FROM "helping_hands" WHERE {made} GROUP BY time(1w) fill(0)',
                    alias="asked",
                ),
                target(
                    f'SELECT sum("filled_change") AS "found" FROM "helping_hands" WHERE {where} GROUP BY time(1w) fill(0)',
                    alias="found",
                ),
            ],
            description="asked: the people the requests made that week asked for; found: the people the "
            "coordinators found that week (a request partly filled and then filled counts each step once).",
            decimals=0,
            width=16,
        ),
        panel(
            "timeseries",
            "Requests per week, by reason",
            [
                target(
                    f'SELECT count("request_id") FROM "helping_hands" WHERE {made} GROUP BY time(1w), "reason" fill(0)',
                    alias="$tag_reason",
                )
            ],
            decimals=0,
        ),
        panel(
            "timeseries",
            "Requests per week, by urgency",
            [
                target(
                    f'SELECT count("request_id") FROM "helping_hands" WHERE {made} GROUP BY time(1w), "urgency" fill(0)',
                    alias="$tag_urgency",
                )
            ],
            decimals=0,
        ),
        panel(
            "timeseries",
            "Status changes per week",
            [
                target(
                    f'SELECT count("request_id") FROM "helping_hands" WHERE {where} GROUP BY time(1w), "status" fill(none)',
                    alias="$tag_status",
                )
            ],
            description="new: requests made; filled, done, cancelled: how they ended.",
            decimals=0,
            width=24,
        ),
    ]
    return dashboard(
        "cribwatch-helping",
        "cribwatch: helping hands",
        "Requests for helping hands: how many, why, how urgent, and how many people were found (no names, no notes).",
        panels,
        rooms=False,
    )


DASHBOARDS = {
    "cribwatch-overview.json": overview,
    "cribwatch-incidents.json": incidents,
    "cribwatch-sensors.json": sensors,
    "cribwatch-gateway.json": gateway,
    "cribwatch-helping.json": helping,
}


def render(build: Any) -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.dashboards", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"directory (default {OUT})")
    args = parser.parse_args(argv)
    for name, build in DASHBOARDS.items():
        (args.out / name).write_text(render(build), encoding="utf-8")
        print(args.out / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
