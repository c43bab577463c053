"""The incident log's reads on a real SQLite store (gateway/store/incident_log.py): keyset pages walk every
filtered incident exactly once, newest first, both ways, also when many share one raise time; cursors are checked."""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.domain.vocab import AlarmKind
from gateway.store import incident_log
from gateway.store.incident_log import CursorError, Filters
from gateway.store.store import Store
from tests.incident_helpers import F1, FAST, S1, SLOW, LogWriter

SITE = "log-site"
T0 = 1_770_000_000.0

incidents = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=6),  # raise time: few values, so many ties
        st.sampled_from([(FAST, F1), (SLOW, S1)]),
        st.sampled_from([AlarmKind.CRIB_OPEN, AlarmKind.SENSOR_OFFLINE]),
        st.booleans(),
    ),
    max_size=40,
)
filters = st.builds(
    Filters,
    room=st.sampled_from([None, "fast", "slow"]),
    kind=st.sampled_from([None, "crib_open", "sensor_offline"]),
    tests=st.booleans(),
    since=st.sampled_from([None, T0 + 2]),
    until=st.sampled_from([None, T0 + 5]),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=incidents, f=filters, limit=st.integers(min_value=1, max_value=7))
def test_keyset_pages_walk_every_filtered_incident_once_both_ways(
    rows: list[tuple[int, tuple[tuple[str, str], tuple[str, str, str]], AlarmKind, bool]], f: Filters, limit: int
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        store = Store.open(Path(folder) / "s.sqlite3", site_id=SITE)
        try:
            w = LogWriter(store, SITE)
            with store.transaction():
                for at, (room, crib), kind, test in rows:
                    w.incident(room, crib, T0 + at, kind=kind, test=test, ack_s=5, resolve_s=9)
            expected = [
                m.alarm_id
                for m in sorted(w.made, key=lambda m: (m.raised_at, m.alarm_id), reverse=True)
                if (f.room is None or m.room_id == f.room)
                and (f.kind is None or m.kind.value == f.kind)
                and (f.tests or not m.test)
                and (f.since is None or m.raised_at >= f.since)
                and (f.until is None or m.raised_at < f.until)
            ]
            pages = [incident_log.page(store, f, limit=limit)]
            while pages[-1].older is not None:
                pages.append(incident_log.page(store, f, limit=limit, older=pages[-1].older))
            walked = [r.incident.alarm_id for p in pages for r in p.rows]
            assert walked == expected
            assert incident_log.count(store, f) == len(expected)
            assert [r.incident.alarm_id for r in incident_log.iterate(store, f, batch=3)] == expected
            assert pages[0].newer is None
            for before, after in itertools.pairwise(pages):  # back from each page to the one before
                assert after.newer is not None
                back = incident_log.page(store, f, limit=limit, newer=after.newer)
                assert [r.incident.alarm_id for r in back.rows] == [r.incident.alarm_id for r in before.rows]
        finally:
            store.close()


def test_a_cursor_this_code_did_not_make_is_refused(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s.sqlite3", site_id=SITE)
    try:
        for bad in ("", "bm90IGEgY3Vyc29y", "!!!", incident_log.encode_cursor(1.0, "")[:-2] + "==", "bmFufDEtMQ"):
            with pytest.raises(CursorError):
                incident_log.page(store, Filters(), older=bad)
        with pytest.raises(ValueError, match="1 to 200"):
            incident_log.page(store, Filters(), limit=0)
        assert incident_log.decode_cursor(incident_log.encode_cursor(12.5, "3-4")) == (12.5, "3-4")
    finally:
        store.close()
