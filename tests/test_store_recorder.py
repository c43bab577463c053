"""The store among the channels: every outbound event through the real writer into a real SQLite file."""

from __future__ import annotations

from pathlib import Path

from gateway.store import Store, StoreWriter
from gateway.store.recorder import StoreRecorder
from tests.helpers import CLOSED, FAST_WIRELESS, SENSOR_OF, SITE_ID, SLOW_WIRELESS, CoreHarness


def test_a_whole_alarm_life_and_the_sensor_history_land_in_the_store(tmp_path: Path) -> None:
    path = tmp_path / "site.sqlite3"
    h = CoreHarness(run=3)
    writer = StoreWriter(lambda: Store.open(path, site_id=SITE_ID))
    recorder = StoreRecorder(writer, SENSOR_OF)
    recorder.seed({SLOW_WIRELESS: True})
    writer.start()
    try:
        h.telemetry(SLOW_WIRELESS)
        alarm = h.open_alarm(FAST_WIRELESS)
        h.ack(alarm_id=alarm.alarm_id, by="staff-07", device="pager-2")
        h.latch(FAST_WIRELESS, CLOSED)
        h.availability(SLOW_WIRELESS, online=False)  # its last will
        h.availability(SLOW_WIRELESS, online=True)
        for event in h.log:
            recorder.deliver(event)
        assert writer.flush(timeout=10.0)
    finally:
        writer.stop()
    store = Store.open(path, site_id=SITE_ID, readonly=True)
    try:
        (incident,) = [i for i in store.incidents() if i.alarm_id == alarm.alarm_id]
        assert (incident.run, incident.acknowledged_by, incident.acknowledged_device) == (3, "staff-07", "pager-2")
        assert (incident.resolution, incident.latch_opened_at) == ("latch_closed", alarm.latch_opened_at)
        assert [t.type for t in store.timeline(alarm.alarm_id)] == ["raised", "acknowledged", "resolved"]
        latches = {record.crib_id: record.latch for record in store.crib_records()}
        assert latches[FAST_WIRELESS] is CLOSED
        history = [(row.sensor_id, row.kind) for row in store.sensor_history()]
        assert history == [("s-s1", "offline"), ("s-s1", "online")]  # the seeded "online" adds no row
    finally:
        store.close()
