"""Response times and nuisance statistics of the incident log: pure functions over plain data (no I/O, no clock).

The web app (gateway/web/incidents.py) reads the facts from the store (gateway/store/incident_log.py) in a worker
thread and hands them here; a test checks these against a hand-computed fixture (tests/test_reports.py).

Definitions (docs/managers.md):

* **time to acknowledge**: the first acknowledgement on the incident's timeline minus the time it was raised (a
  reminded alarm acknowledged again keeps its first answer: that is the response);
* **time to resolve**: the time it ended minus the time it was raised;
* **median**: the middle value of the sorted times; for an even count the mean of the two middle values;
* **p90**: nearest rank: the value of rank ``ceil(0.9 * n)`` (1-based) of the sorted times, always one of them
  (with 10 times the 9th smallest, with 1 to 9 times the largest... of ranks ``ceil(0.9 n)``);
* test alarms and alarms raised during maintenance (recorded, never sent) are not counted in the response times;
  an incident raised in a period belongs to that period (weeks are ISO weeks, Monday to Sunday; months calendar
  months), both in the site's time zone (``[alerting] time_zone``).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from enum import StrEnum
from typing import NamedTuple


class Bucket(StrEnum):
    WEEK = "week"
    MONTH = "month"


class IncidentFacts(NamedTuple):
    """What the statistics need of one incident (no staff id: figures are per room and period, not per person).

    A named tuple: a year of incidents is 100,000 of them, made in a fraction of a frozen dataclass's time."""

    alarm_id: str
    kind: str
    room_id: str
    room_label: str
    crib_id: str
    crib_label: str
    sensor_id: str | None
    raised_at: float
    first_ack_at: float | None
    resolved_at: float | None
    test: bool = False
    maintenance: bool = False
    flaps: int = 0

    @property
    def ack_s(self) -> float | None:
        return None if self.first_ack_at is None else max(0.0, self.first_ack_at - self.raised_at)

    @property
    def resolve_s(self) -> float | None:
        return None if self.resolved_at is None else max(0.0, self.resolved_at - self.raised_at)


@dataclass(frozen=True, slots=True)
class OfflinePeriod:
    """A sensor went offline (a ``sensor_events`` row of kind ``offline``)."""

    sensor_id: str
    crib_id: str
    at: float


def median(values: Sequence[float]) -> float:
    """The median of ``values`` (unsorted is fine): the middle one, or the mean of the two middle ones."""
    if not values:
        raise ValueError("median of no values")
    return _median_sorted(sorted(values))


def _median_sorted(ordered: Sequence[float]) -> float:
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]
    return (ordered[mid - 1] + ordered[mid]) / 2


def p90(values: Sequence[float]) -> float:
    """The 90th percentile by nearest rank: the value of rank ``ceil(0.9 * n)`` of the sorted values."""
    if not values:
        raise ValueError("p90 of no values")
    return _p90_sorted(sorted(values))


def _p90_sorted(ordered: Sequence[float]) -> float:
    rank = (9 * len(ordered) + 9) // 10  # ceil(0.9 n) in integers (0.9 * 70 is 63.00000000000001 in floats)
    return ordered[rank - 1]


@dataclass(frozen=True, slots=True)
class Times:
    """A set of durations: how many, the median, the p90 and the longest (seconds; None without any)."""

    n: int
    median_s: float | None
    p90_s: float | None
    max_s: float | None

    @classmethod
    def of(cls, values: Sequence[float]) -> Times:
        if not values:
            return cls(0, None, None, None)
        ordered = sorted(values)
        return cls(len(ordered), _median_sorted(ordered), _p90_sorted(ordered), ordered[-1])


@dataclass(frozen=True, slots=True)
class ResponseRow:
    """The response times of one group (a room in a period, a room, a period, or everything)."""

    period: str | None
    """``2026-03`` or ``2026-W09`` (None: the whole range)."""
    room_id: str | None
    """None: every room."""
    room_label: str | None
    incidents: int
    """Incidents counted (tests and maintenance left out)."""
    acknowledged: int
    unacknowledged: int
    """Ended without anyone acknowledging (closed before an answer)."""
    open: int
    """Not ended yet."""
    ack: Times
    resolve: Times


@dataclass(frozen=True, slots=True)
class ResponseReport:
    bucket: Bucket
    periods: list[str]
    """Every period of the range, in order (also the empty ones, so a chart has no gaps)."""
    by_period: list[ResponseRow]
    """One row per period, every room together."""
    by_room: list[ResponseRow]
    """One row per room, the whole range."""
    by_room_period: list[ResponseRow]
    """One row per room and period that had incidents."""
    total: ResponseRow
    tests: int
    """Test alarms in the range (not counted above)."""
    maintenance: int
    """Alarms raised during maintenance in the range (not counted above)."""


def period_of(at: float, tz: tzinfo, bucket: Bucket) -> str:
    """The period a time falls in, in ``tz``: ``2026-03`` or ISO week ``2026-W09``."""
    local = datetime.fromtimestamp(at, tz)
    if bucket is Bucket.MONTH:
        return f"{local.year:04d}-{local.month:02d}"
    year, week, _ = local.isocalendar()
    return f"{year:04d}-W{week:02d}"


def periods_between(since: float, until: float, tz: tzinfo, bucket: Bucket) -> list[str]:
    """Every period touching ``[since, until)``, in order."""
    return period_starts(since, until, tz, bucket)[1]


def period_starts(since: float, until: float, tz: tzinfo, bucket: Bucket) -> tuple[list[float], list[str]]:
    """The start (local midnight, Unix seconds) and the key of every period touching ``[since, until)``, in order:
    an incident's period is then one bisection instead of a time-zone conversion."""
    starts: list[float] = []
    keys: list[str] = []
    if until <= since:
        return starts, keys
    day = datetime.fromtimestamp(since, tz).date()
    last = datetime.fromtimestamp(until - 1e-6, tz).date()
    while day <= last:
        noon = datetime(day.year, day.month, day.day, 12, tzinfo=UTC).timestamp()  # a date's period, tz-free
        key = period_of(noon, UTC, bucket)
        if not keys or keys[-1] != key:
            keys.append(key)
            starts.append(datetime(day.year, day.month, day.day, tzinfo=tz).timestamp())
        day += timedelta(days=1)
    return starts, keys


class _Group:
    """The times of one group while they are gathered."""

    __slots__ = ("acks", "incidents", "open", "resolves", "unacknowledged")

    def __init__(self) -> None:
        self.incidents = 0
        self.acks: list[float] = []
        self.resolves: list[float] = []
        self.unacknowledged = 0
        self.open = 0

    def add(self, ack: float | None, resolve: float | None) -> None:
        self.incidents += 1
        if ack is not None:
            self.acks.append(ack)
        if resolve is None:
            self.open += 1
        else:
            self.resolves.append(resolve)
            if ack is None:
                self.unacknowledged += 1

    def row(self, period: str | None, room: tuple[str, str] | None) -> ResponseRow:
        return ResponseRow(
            period=period,
            room_id=None if room is None else room[0],
            room_label=None if room is None else room[1],
            incidents=self.incidents,
            acknowledged=len(self.acks),
            unacknowledged=self.unacknowledged,
            open=self.open,
            ack=Times.of(self.acks),
            resolve=Times.of(self.resolves),
        )


def response_times(
    incidents: Iterable[IncidentFacts],
    *,
    tz: tzinfo,
    bucket: Bucket,
    since: float,
    until: float,
) -> ResponseReport:
    """Time to acknowledge and to resolve, per period, per room, per room and period, and over everything, of the
    incidents raised in ``[since, until)`` (tests and maintenance counted apart)."""
    counted: list[IncidentFacts] = []
    tests = maintenance = 0
    for inc in incidents:
        if not since <= inc.raised_at < until:
            continue
        if inc.test:
            tests += 1
        elif inc.maintenance:
            maintenance += 1
        else:
            counted.append(inc)
    starts, periods = period_starts(since, until, tz, bucket)
    per_period: dict[str, _Group] = {p: _Group() for p in periods}
    per_room: dict[str, _Group] = {}
    labels: dict[str, str] = {}
    per_room_period: dict[tuple[str, str], _Group] = {}
    total = _Group()
    for inc in counted:
        key = periods[bisect_right(starts, inc.raised_at) - 1]
        ack, resolve = inc.ack_s, inc.resolve_s
        total.add(ack, resolve)
        per_period[key].add(ack, resolve)
        room = per_room.get(inc.room_id)
        if room is None:
            room = per_room[inc.room_id] = _Group()
            labels[inc.room_id] = inc.room_label
        room.add(ack, resolve)
        cell = per_room_period.get((inc.room_id, key))
        if cell is None:
            cell = per_room_period[(inc.room_id, key)] = _Group()
        cell.add(ack, resolve)
    order = {p: i for i, p in enumerate(periods)}
    rooms = sorted(per_room, key=lambda r: (labels[r], r))
    return ResponseReport(
        bucket=bucket,
        periods=periods,
        by_period=[per_period[p].row(p, None) for p in periods],
        by_room=[per_room[r].row(None, (r, labels[r])) for r in rooms],
        by_room_period=[
            per_room_period[(r, p)].row(p, (r, labels[r]))
            for r in rooms
            for p in sorted({p for (rr, p) in per_room_period if rr == r}, key=order.__getitem__)
        ],
        total=total.row(None, None),
        tests=tests,
        maintenance=maintenance,
    )


@dataclass(frozen=True, slots=True)
class SensorNuisance:
    """How much one crib's sensor bothered the staff without a real reason (alarm fatigue)."""

    crib_id: str
    crib_label: str
    room_label: str
    sensors: tuple[str, ...]
    alarms: int
    """Alarms raised (tests left out)."""
    flaps: int
    """Latch changes folded into its alarms while the crib was flapping."""
    offline_periods: int
    quick_resolves: int
    """Alarms that ended within ``quick_s`` of being raised (maintenance left out)."""
    quick_share: float | None = field(default=None)
    """``quick_resolves / alarms`` (None without alarms)."""

    @property
    def score(self) -> int:
        return self.flaps + self.offline_periods + self.quick_resolves


def nuisance(
    incidents: Iterable[IncidentFacts],
    offline: Iterable[OfflinePeriod],
    *,
    quick_s: float,
    since: float,
    until: float,
    crib_labels: Mapping[str, tuple[str, str]] | None = None,
) -> list[SensorNuisance]:
    """Per crib: alarms, flaps, offline periods and alarms resolved within ``quick_s`` seconds, for ``[since,
    until)``; the noisiest first (flaps + offline periods + quick resolves), cribs without any left out.
    ``crib_labels``: ``crib_id -> (crib label, room label)`` for cribs known only by their offline periods."""
    names: dict[str, tuple[str, str]] = dict(crib_labels or {})
    sensors: dict[str, set[str]] = {}
    alarms: dict[str, int] = {}
    flaps: dict[str, int] = {}
    quick: dict[str, int] = {}
    offline_n: dict[str, int] = {}
    for inc in incidents:
        if inc.test or not since <= inc.raised_at < until:
            continue
        names.setdefault(inc.crib_id, (inc.crib_label, inc.room_label))
        if inc.sensor_id:
            sensors.setdefault(inc.crib_id, set()).add(inc.sensor_id)
        alarms[inc.crib_id] = alarms.get(inc.crib_id, 0) + 1
        flaps[inc.crib_id] = flaps.get(inc.crib_id, 0) + inc.flaps
        resolve = inc.resolve_s
        if not inc.maintenance and resolve is not None and resolve <= quick_s:
            quick[inc.crib_id] = quick.get(inc.crib_id, 0) + 1
    for period in offline:
        if not since <= period.at < until:
            continue
        offline_n[period.crib_id] = offline_n.get(period.crib_id, 0) + 1
        sensors.setdefault(period.crib_id, set()).add(period.sensor_id)
    out: list[SensorNuisance] = []
    for crib in set(alarms) | set(offline_n):
        n = alarms.get(crib, 0)
        q = quick.get(crib, 0)
        label, room = names.get(crib, (crib, ""))
        row = SensorNuisance(
            crib_id=crib,
            crib_label=label,
            room_label=room,
            sensors=tuple(sorted(sensors.get(crib, ()))),
            alarms=n,
            flaps=flaps.get(crib, 0),
            offline_periods=offline_n.get(crib, 0),
            quick_resolves=q,
            quick_share=None if n == 0 else q / n,
        )
        if row.score:
            out.append(row)
    out.sort(key=lambda r: (-r.score, -r.alarms, r.crib_label, r.crib_id))
    return out
