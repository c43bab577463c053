"""Every InfluxDB point cribwatch writes, made here and only here (see docs/influx-schema.md).

Pure: plain values and domain events in, :class:`Point` s out, no I/O, no clock. A point carries the time its
event happened at the edge (the wall time of the latch edge, the reading, the alarm step), never the time of the
write, so a point backfilled an hour late lands where it belongs, and a point written twice (a retry after a
timeout the server had in fact taken) overwrites itself: InfluxDB keeps one point per series and timestamp.

Tags are the few low-cardinality words a dashboard groups by (site, room, crib, sensor, kind, ...); ids that grow
without bound (alarm ids, notice ids) are fields. Nothing here identifies a child: rooms and cribs are ids, the
labels staff read are not written at all. Field types never change (an InfluxDB field keeps its first type):
counts and flags are integers, durations floats.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from gateway.domain.events import AlarmEvent, CribState, TelemetryReading
from gateway.domain.vocab import AlarmEventType

FieldValue = int | float | str | bool


# ------------------------------------------------------------------------------------------ measurements

LATCH = "latch"
"""A crib's latch changed: ``open`` 1 or 0."""
SENSOR = "sensor"
"""A wireless sensor's telemetry: battery, signal, uptime; firmware as a tag."""
SENSOR_ONLINE = "sensor_online"
"""A sensor went offline or came back: ``online`` 1 or 0."""
ALARM = "alarm"
"""One step of an alarm's life (tag ``event``: raised, escalated, repeated, reminded, acknowledged, resolved)."""
DELIVERY = "delivery"
"""One notice's delivery on one channel: delivered, failed or given up, after how many attempts and seconds."""
HELPING_HANDS_NOTICE = "helping_hands"
"""The ``notice`` tag of a delivery that is not about an alarm (a helping-hands request to the coordinators): a
telemetry point, not an alarm point, and left out of the alarm panels."""
SENSOR_REFUSED = "sensor_refused"
"""Per sensor, readings refused (or taken after a resync) for their sequence numbers: running counts."""
INPUT = "gateway_input"
"""Rejected and ignored input (the nuisance counts) by reason: running counts."""
GATEWAY = "gateway"
"""The gateway's own health at each stats interval."""
MAINTENANCE = "maintenance"
"""A crib (or a room) put in or out of maintenance: ``on`` 1 or 0, by whom."""
SENSOR_NUISANCE = "sensor_nuisance"
"""Per sensor, flaps, offline periods and alarms resolved within seconds: running counts (for technicians)."""
HELPING_HANDS = "helping_hands"
"""A helping-hands request made or moved (tag ``status``: what it became); no note, names or phone numbers."""

MEASUREMENTS = (
    LATCH,
    SENSOR,
    SENSOR_ONLINE,
    ALARM,
    DELIVERY,
    SENSOR_REFUSED,
    INPUT,
    GATEWAY,
    MAINTENANCE,
    SENSOR_NUISANCE,
    HELPING_HANDS,
)

ESCALATED = "escalated"
REPEATED = "repeated"
REMINDED = "reminded"
ALARM_STEPS = (
    str(AlarmEventType.RAISED),
    ESCALATED,
    REPEATED,
    REMINDED,
    str(AlarmEventType.ACKNOWLEDGED),
    "resolved",
)
"""The values of the ``alarm`` measurement's ``event`` tag."""


# ------------------------------------------------------------------------------------------ the point


class Point(NamedTuple):
    """One point: measurement, tags (empty values left out), fields, time in ns; ``alarm`` points are never dropped
    from the outbox, whatever its size. (A named tuple: made at every event, it must be cheap to build.)"""

    measurement: str
    tags: tuple[tuple[str, str], ...]
    fields: tuple[tuple[str, FieldValue], ...]
    time_ns: int
    alarm: bool = False

    def line(self) -> str:
        """The point in line protocol (one line, no newline), tags and fields sorted by key (as InfluxDB prefers
        the tags, and as influxdb-client writes both)."""
        series = _SERIES.get((self.measurement, self.tags))
        if series is None:
            series = _series(self.measurement, self.tags)
        parts = []
        keys = _KEYS
        for k, v in sorted(self.fields):
            key = keys.get(k) or _key(k)
            kind = type(v)
            if kind is int:  # the common case first, without a call
                parts.append(f"{key}={v}i")
            elif kind is not float or math.isfinite(v):  # type: ignore[arg-type]
                parts.append(f"{key}={_field(v)}")
        fields = ",".join(parts)
        if not fields:
            raise ValueError(f"a point of {self.measurement!r} without a field cannot be written")
        return f"{series} {fields} {self.time_ns}"


_SERIES: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}
_KEYS: dict[str, str] = {}
_MEMO_MAX = 4096
"""Escaping is most of a point's cost, and a site has few series and fewer keys: both are remembered (at most
this many; then forgotten and remembered again)."""


def _series(measurement: str, tags: tuple[tuple[str, str], ...]) -> str:
    out = [_escape_measurement(measurement)]
    for key, value in sorted(tags):
        if value != "":
            out.append(f",{_escape_key(key)}={_escape_tag_value(value)}")
    series = "".join(out)
    if len(_SERIES) >= _MEMO_MAX:
        _SERIES.clear()
    _SERIES[(measurement, tags)] = series
    return series


def _key(key: str) -> str:
    escaped = _KEYS.get(key)
    if escaped is None:
        escaped = _escape_key(key)
        if len(_KEYS) >= _MEMO_MAX:
            _KEYS.clear()
        _KEYS[key] = escaped
    return escaped


def point(
    measurement: str,
    at: float,
    tags: Mapping[str, str | None],
    fields: Mapping[str, FieldValue | None],
    *,
    alarm: bool = False,
) -> Point:
    """A point at wall time ``at`` (Unix seconds); ``None`` tags and fields are left out."""
    return Point(
        measurement,
        tuple((k, v) for k, v in tags.items() if v is not None),
        tuple((k, v) for k, v in fields.items() if v is not None),
        time_ns(at),
        alarm,
    )


def time_ns(at: float) -> int:
    """Unix seconds to InfluxDB's nanoseconds, at microsecond precision: the same float always gives the same
    timestamp (so a point rebuilt from the same event overwrites itself)."""
    return round(at * 1_000_000) * 1000


def lines(points: Iterable[Point]) -> str:
    """A write body: one point a line."""
    return "\n".join(p.line() for p in points)


_MEASUREMENT_ESCAPES = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"})
_KEY_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"})
_STRING_ESCAPES = str.maketrans({'"': r"\"", "\\": r"\\", "\n": " ", "\r": " "})
"""The escapes of line protocol, as influxdb-client writes them (tests/test_influx_schema.py compares); a string
field keeps to one line."""


def _escape_measurement(text: str) -> str:
    return text.translate(_MEASUREMENT_ESCAPES)


def _escape_key(text: str) -> str:
    """Tag keys and field keys: comma, equals sign, space and control whitespace escaped."""
    return text.translate(_KEY_ESCAPES)


def _escape_tag_value(text: str) -> str:
    out = text.translate(_KEY_ESCAPES)
    return out + " " if out.endswith("\\") else out  # a final backslash would escape the separator


def _writable(value: FieldValue) -> bool:
    return type(value) is not float or math.isfinite(value)


def _field(value: FieldValue) -> str:
    kind = type(value)
    if kind is int:
        return f"{value}i"
    if kind is float:
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):  # an int subclass (an IntEnum)
        return f"{int(value)}i"
    if isinstance(value, float):
        return repr(float(value))
    return '"' + value.translate(_STRING_ESCAPES) + '"'


# ------------------------------------------------------------------------------------------ the points


def latch_point(site: str, room: str, crib: str, sensor: str, *, open_: bool, at: float) -> Point:
    return point(LATCH, at, {"site": site, "room": room, "crib": crib, "sensor": sensor}, {"open": int(open_)})


def sensor_online_point(site: str, room: str, crib: str, sensor: str, *, online: bool, at: float) -> Point:
    tags = {"site": site, "room": room, "crib": crib, "sensor": sensor}
    return point(SENSOR_ONLINE, at, tags, {"online": int(online)})


def telemetry_point(site: str, room: str, crib: str, reading: TelemetryReading, *, at: float) -> Point:
    """A sensor's telemetry, at ``at``: the wall time the gateway saw it (a sensor's own clock may be anywhere)."""
    tags = {"site": site, "room": room, "crib": crib, "sensor": reading.sensor_id, "firmware": reading.firmware}
    fields: dict[str, FieldValue | None] = {
        "battery_pct": reading.battery_pct,
        "rssi_dbm": reading.rssi_dbm,
        "uptime_s": reading.uptime_s,
        "interval_s": float(reading.interval_s),
        "boot": reading.boot,
        "seq": reading.seq,
    }
    return point(SENSOR, at, tags, fields)


def alarm_step_point(  # noqa: PLR0917 - the plain values of one step, named at every call
    site: str,
    room: str,
    crib: str,
    kind: str,
    priority: str,
    step: str,
    at: float,
    *,
    alarm_id: str,
    raised_at: float,
    test: bool = False,
    level: int = 0,
    by: str | None = None,
    device: str | None = None,
    resolution: str | None = None,
    run: int | None = None,
) -> Point:
    """One step of an alarm (``step`` one of :data:`ALARM_STEPS`), with ``seconds`` since it was raised: the
    response time of an acknowledgement, the duration of a resolved alarm, the wait before an escalation.

    ``by`` and ``device`` are a staff account and a device id (never a child); they are fields, not tags."""
    tags = {
        "site": site,
        "room": room,
        "crib": crib,
        "kind": kind,
        "priority": priority,
        "event": step,
        "test": "true" if test else "false",
    }
    fields: dict[str, FieldValue | None] = {
        "alarm_id": alarm_id,
        "seconds": float(max(0.0, at - raised_at)),
        "level": level,
        "by": by,
        "device": device,
        "resolution": resolution,
        "run": run,
    }
    return point(ALARM, at, tags, fields, alarm=True)


def alarm_point(ev: AlarmEvent) -> Point:
    """A step of the core's alarm life cycle (raised, acknowledged, resolved)."""
    return alarm_step_point(
        ev.site_id,
        ev.room_id,
        ev.crib_id,
        str(ev.kind),
        ev.priority.label,
        str(ev.type),
        ev.at,
        alarm_id=ev.alarm_id,
        raised_at=ev.raised_at,
        test=ev.test,
        level=ev.escalation_level,
        by=ev.by,
        device=ev.device,
        resolution=None if ev.resolution is None else str(ev.resolution),
        run=ev.run,
    )


def escalation_point(ev: AlarmEvent, *, level: int, at: float, repeat: bool = False) -> Point:
    """An escalation of an alarm to step ``level`` (``repeat``: the chain repeated from that step, still nobody
    acknowledged), decided by the alert policy at ``at``. A reminder is the core's own ``reminded`` event."""
    return alarm_step_point(
        ev.site_id,
        ev.room_id,
        ev.crib_id,
        str(ev.kind),
        ev.priority.label,
        REPEATED if repeat else ESCALATED,
        at,
        alarm_id=ev.alarm_id,
        raised_at=ev.raised_at,
        test=ev.test,
        level=level,
        run=ev.run,
    )


def delivery_point(
    site: str,
    channel: str,
    notice_kind: str,
    outcome: str,
    at: float,
    *,
    notice_id: str,
    alarm_id: str,
    attempts: int,
    seconds: float,
    room: str | None = None,
    error: str | None = None,
) -> Point:
    """One notice on one channel (``outcome``: delivered, failed, gave_up), ``seconds`` from the notice to the
    outcome. The address delivered to is not written (a phone number or a URL is nobody's dashboard). An alarm point,
    except a helping-hands notice's delivery (``notice_kind`` :data:`HELPING_HANDS_NOTICE`): telemetry, as it is not
    about an alarm."""
    tags = {"site": site, "room": room, "channel": channel, "notice": notice_kind, "outcome": outcome}
    fields: dict[str, FieldValue | None] = {
        "notice_id": notice_id,
        "alarm_id": alarm_id,
        "attempts": attempts,
        "seconds": float(seconds),
        "error": None if error is None else error[:200],
    }
    return point(DELIVERY, at, tags, fields, alarm=notice_kind != HELPING_HANDS_NOTICE)


def maintenance_point(
    site: str, room: str, crib: str | None, at: float, *, on: bool, by: str | None = None, reason: str | None = None
) -> Point:
    """A crib (``crib`` None: the whole room) put in maintenance (``on``) or back in service, by a staff account
    or a technician's id. An alarm point: a period without alarms must always be on record."""
    tags = {"site": site, "room": room, "crib": crib}
    return point(MAINTENANCE, at, tags, {"on": int(on), "by": by, "reason": reason}, alarm=True)


def helping_point(  # noqa: PLR0917 - the plain values of one change, named at every call
    site: str,
    requesting_site: str,
    reason: str,
    urgency: str,
    status: str,
    at: float,
    *,
    request_id: int,
    change_id: int,
    people: int,
    filled: int,
    filled_change: int,
    open_requests: int,
) -> Point:
    """A helping-hands request made (``status`` new) or moved, at ``at``, on the gateway of ``site`` for
    ``requesting_site`` (the site that needs the hands): ``people`` asked, ``filled`` found so far,
    ``filled_change`` found by this change (a week's sum: the people found that week), ``open_requests`` of
    ``requesting_site`` after it. The request's note, contact, requester and assignee are never written."""
    tags = {"site": site, "requesting_site": requesting_site, "reason": reason, "urgency": urgency, "status": status}
    fields: dict[str, FieldValue | None] = {
        "request_id": request_id,
        "change_id": change_id,
        "people": people,
        "filled": filled,
        "filled_change": filled_change,
        "open_requests": open_requests,
    }
    return point(HELPING_HANDS, at, tags, fields)


def crib_change_points(before: CribState | None, now: CribState, sensor: str) -> list[Point]:
    """The latch and sensor-online changes between a crib's previous state and this one (none at the first state
    after a start: a restart is not a change)."""
    if before is None:
        return []
    out: list[Point] = []
    if now.latch is not None and now.latch != before.latch:
        opened = str(now.latch) == "open"
        at = now.latch_opened_at if opened and now.latch_opened_at is not None else now.at
        out.append(latch_point(now.site_id, now.room_id, now.crib_id, sensor, open_=opened, at=at))
    if now.sensor_online is not None and now.sensor_online != before.sensor_online:
        out.append(
            sensor_online_point(now.site_id, now.room_id, now.crib_id, sensor, online=now.sensor_online, at=now.at)
        )
    return out


def sensor_refused_points(
    site: str, at: float, refused: Mapping[str, int], resynced: Mapping[str, int], crib_of: Mapping[str, str]
) -> list[Point]:
    """Running counts per sensor of readings refused and resynced for their sequence numbers."""
    out = []
    for sensor in sorted(set(refused) | set(resynced)):
        tags = {"site": site, "sensor": sensor, "crib": crib_of.get(sensor)}
        fields = {"refused": refused.get(sensor, 0), "resynced": resynced.get(sensor, 0)}
        out.append(point(SENSOR_REFUSED, at, tags, fields))
    return out


def nuisance_points(
    site: str, at: float, counts: Mapping[str, Mapping[str, int]], crib_of: Mapping[str, str]
) -> list[Point]:
    """Running counts per sensor: ``flaps``, ``offline_periods``, ``quick_resolves`` (``Gateway.stats_payload``'s
    ``nuisance``)."""
    out = []
    for sensor in sorted(counts):
        tags = {"site": site, "sensor": sensor, "crib": crib_of.get(sensor)}
        fields: dict[str, FieldValue | None] = {k: counts[sensor].get(k, 0) for k in NUISANCE_FIELDS}
        out.append(point(SENSOR_NUISANCE, at, tags, fields))
    return out


NUISANCE_FIELDS = ("flaps", "offline_periods", "quick_resolves")


def input_points(site: str, at: float, rejected: Mapping[str, int], ignored: Mapping[str, int]) -> list[Point]:
    """Running counts of rejected and ignored input by reason (the nuisance: junk, unknown sensors, repeats)."""
    out = [
        point(INPUT, at, {"site": site, "outcome": "rejected", "reason": r}, {"count": n}) for r, n in rejected.items()
    ]
    out += [
        point(INPUT, at, {"site": site, "outcome": "ignored", "reason": r}, {"count": n}) for r, n in ignored.items()
    ]
    return out


def gateway_point(site: str, at: float, fields: Mapping[str, FieldValue | None]) -> Point:
    """The gateway's health (see docs/influx-schema.md for the fields)."""
    return point(GATEWAY, at, {"site": site}, fields)


# ------------------------------------------------------------------------------------------ the keys, declared

GATEWAY_FIELDS = (
    "run",
    "accepted",
    "rejected",
    "ignored",
    "internal_errors",
    "active_alarms",
    "channel_failures",
    "offline_buffer",
    "store_pending",
    "store_size_bytes",
    "store_failures",
    "influx_waiting",
    "influx_dropped",
    "influx_alarm_dropped",
    "loop_lag_ms",
    "alert_latency_ms",
)
"""The ``gateway`` measurement's fields (``Gateway._influx_points`` fills them; docs/influx-schema.md)."""


class Keys(NamedTuple):
    """The tag keys and field keys a measurement's points may carry."""

    tags: frozenset[str]
    fields: frozenset[str]


def _keys(tags: str, fields: Iterable[str] | str) -> Keys:
    return Keys(frozenset(tags.split()), frozenset(fields.split() if isinstance(fields, str) else fields))


KEYS: Mapping[str, Keys] = {
    LATCH: _keys("site room crib sensor", "open"),
    SENSOR: _keys("site room crib sensor firmware", "battery_pct rssi_dbm uptime_s interval_s boot seq"),
    SENSOR_ONLINE: _keys("site room crib sensor", "online"),
    ALARM: _keys("site room crib kind priority event test", "alarm_id seconds level by device resolution run"),
    DELIVERY: _keys("site room channel notice outcome", "notice_id alarm_id attempts seconds error"),
    SENSOR_REFUSED: _keys("site sensor crib", "refused resynced"),
    INPUT: _keys("site outcome reason", "count"),
    GATEWAY: _keys("site", GATEWAY_FIELDS),
    MAINTENANCE: _keys("site room crib", "on by reason"),
    SENSOR_NUISANCE: _keys("site sensor crib", NUISANCE_FIELDS),
    HELPING_HANDS: _keys(
        "site requesting_site reason urgency status", "request_id change_id people filled filled_change open_requests"
    ),
}
"""Every measurement's tags and fields, for what reads the points (the dashboards of ``dashboards/`` are checked
against it by tests/test_dashboards.py; tests/test_dashboards.py also checks it against the functions above)."""
