"""The incident log's statistics (gateway/reports/) against a fixture computed by hand: exact medians and p90s
(nearest rank), per room, per ISO week, per room and week, and over everything; the nuisance per sensor; the chart."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from gateway.reports.chart import Bar, bar_chart, duration, tick
from gateway.reports.response import (
    Bucket,
    IncidentFacts,
    OfflinePeriod,
    Times,
    median,
    nuisance,
    p90,
    period_of,
    periods_between,
    response_times,
)

MON_W10 = datetime(2026, 3, 2, tzinfo=UTC).timestamp()  # Monday of ISO week 10
MON_W11 = datetime(2026, 3, 9, tzinfo=UTC).timestamp()
SINCE = datetime(2026, 3, 1, tzinfo=UTC).timestamp()
UNTIL = datetime(2026, 4, 1, tzinfo=UTC).timestamp()
_n = iter(range(1, 1000))


def inc(
    room: str,
    crib: str,
    at: float,
    ack: float | None,
    resolve: float | None,
    *,
    test: bool = False,
    maintenance: bool = False,
    flaps: int = 0,
) -> IncidentFacts:
    return IncidentFacts(
        alarm_id=f"1-{next(_n)}",
        kind="crib_open",
        room_id=room,
        room_label={"a": "Vlinders", "b": "Rupsen"}[room],
        crib_id=crib,
        crib_label=crib.upper(),
        sensor_id=f"s-{crib}",
        raised_at=at,
        first_ack_at=None if ack is None else at + ack,
        resolved_at=None if resolve is None else at + resolve,
        test=test,
        maintenance=maintenance,
        flaps=flaps,
    )


H = 3600.0
FIXTURE = [
    # room a, week 10: acks 10 20 30 40, resolves 60 120 180 240
    inc("a", "a-1", MON_W10 + 1 * H, 10, 60),
    inc("a", "a-1", MON_W10 + 2 * H, 20, 120),
    inc("a", "a-2", MON_W10 + 3 * H, 30, 180),
    inc("a", "a-2", MON_W10 + 4 * H, 40, 240),
    # room a, week 11: acks 5 7 100 (resolves 50 70 400), one ended unacknowledged after 3 s, one still open
    inc("a", "a-1", MON_W11 + 1 * H, 5, 50, flaps=4),
    inc("a", "a-1", MON_W11 + 2 * H, 7, 70),
    inc("a", "a-2", MON_W11 + 3 * H, 100, 400),
    inc("a", "a-1", MON_W11 + 4 * H, None, 3),
    inc("a", "a-2", MON_W11 + 5 * H, None, None),
    # room b, week 10: acks 15 45, resolves 30 90
    inc("b", "b-1", MON_W10 + 5 * H, 15, 30),
    inc("b", "b-1", MON_W10 + 6 * H, 45, 90),
    # not counted: a test alarm, an alarm raised in maintenance (which also ends quickly), one outside the range
    inc("b", "b-1", MON_W10 + 7 * H, 1000, 1001, test=True),
    inc("a", "a-1", MON_W10 + 8 * H, None, 2, maintenance=True),
    inc("a", "a-1", SINCE - H, 1, 1),
]


def test_median_and_p90_by_their_definitions() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5
    assert p90([5.0]) == 5.0
    assert p90([1.0, 2.0]) == 2.0  # rank ceil(1.8) = 2
    assert p90([float(i) for i in range(1, 11)]) == 9.0  # rank 9 of 10
    assert p90([float(i) for i in range(1, 21)]) == 18.0  # rank 18 of 20
    assert p90([float(i) for i in range(1, 71)]) == 63.0  # rank 63 of 70 (0.9 * 70 is 63.00000000000001 in floats)
    assert p90([float(i) for i in range(1, 12)]) == 10.0  # rank ceil(9.9) = 10 of 11
    with pytest.raises(ValueError, match="no values"):
        median([])
    with pytest.raises(ValueError, match="no values"):
        p90([])
    assert Times.of([]) == Times(0, None, None, None)


def test_response_times_per_room_per_week_and_in_total_match_the_hand_computed_figures() -> None:
    report = response_times(FIXTURE, tz=UTC, bucket=Bucket.WEEK, since=SINCE, until=UNTIL)
    assert report.periods == ["2026-W09", "2026-W10", "2026-W11", "2026-W12", "2026-W13", "2026-W14"]
    assert (report.tests, report.maintenance) == (1, 1)

    total = report.total
    assert (total.incidents, total.acknowledged, total.unacknowledged, total.open) == (11, 9, 1, 1)
    assert total.ack == Times(9, 20.0, 100.0, 100.0)  # [5 7 10 15 20 30 40 45 100]
    assert total.resolve == Times(10, 80.0, 240.0, 400.0)  # [3 30 50 60 70 90 120 180 240 400]: (70+90)/2, rank 9

    rooms = {r.room_id: r for r in report.by_room}
    assert [r.room_label for r in report.by_room] == ["Rupsen", "Vlinders"]  # by label
    assert rooms["a"].ack == Times(7, 20.0, 100.0, 100.0)  # [5 7 10 20 30 40 100]
    assert rooms["a"].resolve == Times(8, 95.0, 400.0, 400.0)  # [3 50 60 70 120 180 240 400]: (70+120)/2
    assert (rooms["a"].incidents, rooms["a"].unacknowledged, rooms["a"].open) == (9, 1, 1)
    assert rooms["b"].ack == Times(2, 30.0, 45.0, 45.0)
    assert rooms["b"].resolve == Times(2, 60.0, 90.0, 90.0)

    weeks = {r.period: r for r in report.by_period}
    assert [r.period for r in report.by_period] == report.periods  # empty weeks too: no gaps in the chart
    assert weeks["2026-W09"].incidents == 0
    assert weeks["2026-W09"].ack == Times(0, None, None, None)
    assert weeks["2026-W10"].ack == Times(6, 25.0, 45.0, 45.0)  # [10 15 20 30 40 45]
    assert weeks["2026-W10"].resolve == Times(6, 105.0, 240.0, 240.0)  # [30 60 90 120 180 240]
    assert weeks["2026-W11"].ack == Times(3, 7.0, 100.0, 100.0)
    assert weeks["2026-W11"].resolve == Times(4, 60.0, 400.0, 400.0)  # [3 50 70 400]: (50+70)/2

    cells = {(r.room_id, r.period): r for r in report.by_room_period}
    assert set(cells) == {("a", "2026-W10"), ("a", "2026-W11"), ("b", "2026-W10")}
    assert cells[("a", "2026-W10")].ack == Times(4, 25.0, 40.0, 40.0)
    assert cells[("a", "2026-W10")].resolve == Times(4, 150.0, 240.0, 240.0)
    assert cells[("b", "2026-W10")].ack == Times(2, 30.0, 45.0, 45.0)


def test_months_and_weeks_follow_the_sites_time_zone() -> None:
    amsterdam = ZoneInfo("Europe/Amsterdam")
    late = datetime(2026, 3, 31, 22, 30, tzinfo=UTC).timestamp()  # 00:30 on 1 April in Amsterdam (summer time)
    assert period_of(late, UTC, Bucket.MONTH) == "2026-03"
    assert period_of(late, amsterdam, Bucket.MONTH) == "2026-04"
    sunday_night = datetime(2026, 3, 8, 23, 30, tzinfo=UTC).timestamp()  # Monday 00:30 in Amsterdam
    assert period_of(sunday_night, UTC, Bucket.WEEK) == "2026-W10"
    assert period_of(sunday_night, amsterdam, Bucket.WEEK) == "2026-W11"
    assert periods_between(SINCE, UNTIL, UTC, Bucket.MONTH) == ["2026-03"]
    year_end = datetime(2026, 12, 28, tzinfo=UTC).timestamp()
    assert periods_between(year_end, year_end + 8 * 86400, UTC, Bucket.WEEK) == ["2026-W53", "2027-W01"]
    report = response_times(FIXTURE, tz=UTC, bucket=Bucket.MONTH, since=SINCE, until=UNTIL)
    assert [r.period for r in report.by_period] == ["2026-03"]
    assert report.by_period[0].ack == report.total.ack


def test_nuisance_counts_flaps_offline_periods_and_quick_ends_per_crib_noisiest_first() -> None:
    offline = [
        OfflinePeriod("s-b-1", "b-1", MON_W10 + 1),
        OfflinePeriod("s-b-1", "b-1", MON_W10 + 2),
        OfflinePeriod("s-b-1", "b-1", MON_W11 + 3),
        OfflinePeriod("s-b-1", "b-1", SINCE - 10),  # before the range
        OfflinePeriod("s-z-9", "z-9", MON_W10),  # a crib without alarms
    ]
    rows = nuisance(
        FIXTURE, offline, quick_s=5.0, since=SINCE, until=UNTIL, crib_labels={"z-9": ("Bedje Z", "Kamer Z")}
    )
    by_crib = {r.crib_id: r for r in rows}
    assert [r.crib_id for r in rows] == ["a-1", "b-1", "z-9"]
    a1 = by_crib["a-1"]
    # a-1: 6 alarms in range (the maintenance one counts as an alarm, not as a quick end), 4 flaps, one quick end
    assert (a1.alarms, a1.flaps, a1.offline_periods, a1.quick_resolves) == (6, 4, 0, 1)
    assert a1.quick_share == pytest.approx(1 / 6)
    b1 = by_crib["b-1"]
    assert (b1.alarms, b1.flaps, b1.offline_periods, b1.quick_resolves) == (2, 0, 3, 0)  # the test alarm left out
    assert b1.sensors == ("s-b-1",)  # from its alarms and its offline periods
    z9 = by_crib["z-9"]
    assert (z9.crib_label, z9.room_label, z9.alarms, z9.offline_periods, z9.quick_share) == (
        "Bedje Z",
        "Kamer Z",
        0,
        1,
        None,
    )
    assert "a-2" not in by_crib  # alarms, but no nuisance


def test_the_chart_is_escaped_svg_with_a_bar_per_group_and_its_count() -> None:
    svg = bar_chart(
        [Bar("2026-W10", 25.0, 45.0, 6), Bar("<b>", None, None, 0)],
        title="Ack & resolve",
        median_label="median",
        p90_label="p90",
        count_label="n",
    )
    assert svg.startswith("<svg")
    assert svg.endswith("</svg>")
    assert "<b>" not in svg
    assert "&lt;b&gt;" in svg
    assert "Ack &amp; resolve" in svg
    assert svg.count('<rect class="median"') == 2  # one bar, one legend swatch
    assert svg.count('<rect class="p90"') == 2
    assert "n=6" in svg
    assert "n=0" in svg
    assert "script" not in svg
    assert [duration(v) for v in (None, 4.25, 42.0, 150.0, 7200.0)] == ["-", "4.2 s", "42 s", "2.5 min", "2.0 h"]
    # the y axis runs to a top whose quarters are round: 45 s of p90 -> 0, 15, 30, 45, 60 s
    for label in ("0 s", "15 s", "30 s", "45 s", "1 min"):
        assert f">{label}</text>" in svg
    assert [tick(v) for v in (2.0, 90.0, 300.0, 5400.0)] == ["2 s", "1.5 min", "5 min", "1.5 h"]
