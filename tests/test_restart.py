"""A restart that loses nothing: the gateway's store is the truth, the broker's retained states only a projection.

Each test runs real Mosquitto, real SQLite files (the test's own ``CRIBWATCH_STATE_DIR``) and real gateways, one
after the other on the same store, as a Raspberry Pi that restarts would. What was measured to fail before the
store (issue "The gateway's own record") is each test's subject.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory

from devtools.brokers import BrokerEndpoint, MosquittoBroker
from gateway.app import Gateway
from gateway.domain.events import AlarmEvent
from gateway.domain.vocab import AlarmEventType, AlarmKind
from gateway.mqtt.connection import new_client
from gateway.protocol import (
    AckAnswerPayload,
    AckPayload,
    CribAlarmSummary,
    CribStatePayload,
    Topics,
    decode,
    encode,
)
from gateway.settings import Settings
from gateway.store import Store
from tests.test_cli import cli_env, site_file
from tests.test_gateway_integration import (
    WAIT_S,
    Recorder,
    make_settings,
    pager_comes_back,
    persistent_pager,
    running,
    sensor,
    staff_device,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent


async def until_on_record(settings: Settings | tuple[Path, str], check: Any) -> Any:
    """Wait (bounded) until ``check(store)`` is truthy in the gateway's store file, and return it. The store is
    opened read-only, as a manager's tool reads it beside the running gateway."""
    path, site_id = (settings.store_path, settings.site.id) if isinstance(settings, Settings) else settings
    async with asyncio.timeout(WAIT_S):
        while True:
            store = Store.open(path, site_id=site_id, readonly=True)
            try:
                found = check(store)
            finally:
                store.close()
            if found:
                return found
            await asyncio.sleep(0.05)


@asynccontextmanager
async def answers(endpoint: BrokerEndpoint, topics: Topics, device: str) -> AsyncIterator[list[AckAnswerPayload]]:
    """What the gateway answers a staff device's acks (``ack/answer/<device>``), as the device sees it."""
    got: list[AckAnswerPayload] = []
    async with new_client(endpoint, identifier=f"dev-{secrets.token_hex(3)}") as client:
        await client.subscribe(topics.ack_answer(device), qos=1)

        async def listen() -> None:
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                got.append(decode(AckAnswerPayload, message.payload))

        task = asyncio.create_task(listen())
        try:
            yield got
        finally:
            task.cancel()


async def until(check: Any) -> Any:
    async with asyncio.timeout(WAIT_S):
        while not (found := check()):  # noqa: ASYNC110 - a condition in the gateway that no event signals
            await asyncio.sleep(0.02)
        return found


async def test_an_ack_and_a_last_will_queued_while_the_gateway_is_down_meet_the_restored_alarms(
    mqtt_endpoint: BrokerEndpoint,
) -> None:
    """Measured before the store: the queued ack came before the retained states and was rejected
    (``ack_unknown_alarm``), and the alarm sounded again."""
    settings = make_settings(mqtt_endpoint)
    topics = Topics(settings.site.id)
    async with (
        staff_device(mqtt_endpoint, topics) as staff,
        sensor(mqtt_endpoint, topics, "s-1") as s1,
        sensor(mqtt_endpoint, topics, "s-2") as s2,
        answers(mqtt_endpoint, topics, "pager-2") as answered,
    ):
        async with running(settings):
            await s1.open()
            raised = await staff.event("n-1", AlarmKind.CRIB_OPEN, AlarmEventType.RAISED)
        # The gateway is down: a nurse presses the pager, and s-2 loses power (the broker sends its last will).
        await staff.ack(alarm_id=raised.alarm_id, by="staff-07", device="pager-2")
        await s2.power_off()
        async with running(settings) as second:
            acked = await staff.event("n-1", AlarmKind.CRIB_OPEN, AlarmEventType.ACKNOWLEDGED)
            # pager-2 is in no staff group: it acknowledges as itself (the payload's by is only a claim).
            assert (acked.alarm_id, acked.by, acked.device) == (raised.alarm_id, "pager-2", "pager-2")
            assert acked.gw_run == raised.gw_run + 1  # acknowledged in the second run, under the first run's id
            offline = await staff.event("n-2", AlarmKind.SENSOR_OFFLINE, AlarmEventType.RAISED)
            assert offline.alarm_id.startswith(f"{second.core.gw_run}-")
            assert "ack_unknown_alarm" not in second.stats.rejected
            assert staff.count("n-1", AlarmKind.CRIB_OPEN, AlarmEventType.RAISED) == 1
            (answer,) = await until(lambda: answered)
            assert (answer.result, answer.alarm_ids, answer.acknowledged_by) == (
                "accepted",
                (raised.alarm_id,),
                "pager-2",
            )
            assert second.buzzer is not None
            assert not second.buzzer.sounding or any(  # only the new offline alarm (medium) may sound it
                a.acknowledged_by is None and a.kind is AlarmKind.SENSOR_OFFLINE for a in second.core.active_alarms()
            )
        incidents = await until_on_record(
            settings, lambda store: [i for i in store.incidents() if i.alarm_id == raised.alarm_id and i.response_s]
        )
        assert (incidents[0].acknowledged_by, incidents[0].acknowledged_device) == ("pager-2", "pager-2")


async def test_an_open_wired_crib_with_grace_0_keeps_one_alarm_and_the_buzzer_stops_on_its_ack(
    mqtt_endpoint: BrokerEndpoint,
) -> None:
    """Measured before the store: a second ``raised`` under a new id after a restart, the first alarm open inside
    the gateway, invisible, and a buzzer that never stopped."""
    settings = make_settings(mqtt_endpoint, alarms={"debounce_gpio_ms": 0})
    topics = Topics(settings.site.id)
    pins = MockFactory()
    async with staff_device(mqtt_endpoint, topics) as staff:
        recorder = Recorder()
        async with running(settings, pins, recorder):
            pins.pin(27).drive_low()
            pins.pin(17).drive_high()  # w-1 open: grace 0, raised at once
            raised = await recorder.raised("w-1")
        recorder = Recorder()
        async with running(settings, pins, recorder) as second:
            pins.pin(27).drive_low()  # a new Button pulls its pin up: w-2's reed switch holds it low again
            # The pin was read at start (open): the restored alarm is the crib's only one.
            assert [(a.alarm_id, a.kind) for a in second.core.crib_state("w-1").alarms] == [
                (raised.alarm_id, AlarmKind.CRIB_OPEN)
            ]
            state = await staff.until(
                lambda: (s := staff.states.get("w-1")) and s.gw_run == second.core.gw_run and s.alarms and s
            )
            assert [a.alarm_id for a in state.alarms] == [raised.alarm_id]
            assert second.buzzer is not None
            assert second.buzzer.sounding
            await staff.ack(crib="w-1", by="staff-03", device="board")
            acked = await staff.event("w-1", AlarmKind.CRIB_OPEN, AlarmEventType.ACKNOWLEDGED)
            assert acked.alarm_id == raised.alarm_id
            await until(lambda: not second.buzzer.sounding if second.buzzer else False)
            pins.pin(17).drive_low()
            resolved = await staff.event("w-1", AlarmKind.CRIB_OPEN, AlarmEventType.RESOLVED)
            assert (resolved.alarm_id, resolved.resolution) == (raised.alarm_id, "latch_closed")
            again = [e for e in recorder.events if isinstance(e, AlarmEvent) and e.type is AlarmEventType.RAISED]
            assert [e for e in again if e.crib_id == "w-1"] == []
        assert staff.count("w-1", AlarmKind.CRIB_OPEN, AlarmEventType.RAISED) == 1


async def test_a_forged_retained_crib_state_changes_nothing(mqtt_endpoint: BrokerEndpoint) -> None:
    """Measured before the store: a retained state "acknowledged by intruder-1" was trusted at start."""
    settings = make_settings(mqtt_endpoint)
    topics = Topics(settings.site.id)
    forged = CribStatePayload(
        seq=1,
        gw_run=77,
        site=settings.site.id,
        room="nursery",
        crib="n-1",
        room_label="Nursery",
        crib_label="Crib 1",
        latch="open",
        sensor_online=True,
        alarms=(
            CribAlarmSummary(
                alarm_id="77-1",
                kind=AlarmKind.CRIB_OPEN,
                priority="high",
                state="acknowledged",
                raised_at=1.0,
                acknowledged_by="intruder-1",
            ),
        ),
        ts=1.0,
    )
    async with new_client(mqtt_endpoint, identifier=f"intruder-{secrets.token_hex(3)}") as intruder:
        await intruder.publish(topics.crib_state("n-1"), encode(forged), qos=1, retain=True)
    async with (
        staff_device(mqtt_endpoint, topics) as staff,
        sensor(mqtt_endpoint, topics, "s-1") as s1,
        running(settings) as gw,
    ):
        # (The wired cribs' pins, not held low, raise their own alarms a debounce time after the start: n-1 only.)
        assert gw.core.crib_state("n-1").alarms == ()
        assert all(a.alarm_id != "77-1" for a in gw.core.active_alarms())
        # The gateway's own state replaces the forgery on the broker.
        await staff.until(lambda: (s := staff.states.get("n-1")) and s.gw_run == gw.core.gw_run and not s.alarms)
        await s1.open()
        raised = await staff.event("n-1", AlarmKind.CRIB_OPEN, AlarmEventType.RAISED)
        assert raised.alarm_id != "77-1"
        (alarm,) = gw.core.crib_state("n-1").alarms
        assert alarm.acknowledged_by is None
        await staff.ack(alarm_id="77-1", by="intruder-1", device="pager-9")  # the forged id acknowledges nothing
        await until(lambda: gw.stats.rejected["ack_unknown_alarm"] == 1)
        assert gw.core.crib_state("n-1").alarms[0].acknowledged_by is None


async def test_alarm_events_of_a_broker_outage_survive_a_gateway_restart_and_reach_a_pager_oldest_first(
    tmp_path: Path,
) -> None:
    """Measured before the store: the outbox was in memory, so a restart before the broker came back lost them."""
    with MosquittoBroker(tmp_path / "broker", users={"gw": secrets.token_urlsafe(8)}) as broker:
        endpoint = broker.endpoint
        settings = make_settings(endpoint, alarms={"debounce_gpio_ms": 0})
        topics = Topics(settings.site.id)
        pins = MockFactory()
        pager_id = await persistent_pager(endpoint, topics)
        recorder = Recorder()
        async with running(settings, pins, recorder) as gw:
            pins.pin(17).drive_low()
            pins.pin(27).drive_low()
            await recorder.until(lambda: all(gw.core.crib_state(c).latch is not None for c in ("w-1", "w-2")))
            broker.stop()  # a clean stop: Mosquitto saves the pager's session
            await until(lambda: not gw.mqtt.connected.is_set())
            pins.pin(17).drive_high()
            first = await recorder.raised("w-1")
            pins.pin(27).drive_high()
            second = await recorder.raised("w-2")
        # The gateway restarted before the broker came back: its outbox was in the store.
        pending = await until_on_record(settings, lambda store: store.pending_outbox())
        assert len(pending) >= 2
        broker.start()
        async with running(settings, pins) as restarted:
            assert restarted.resent >= 2
            got = await pager_comes_back(endpoint, pager_id, {first.alarm_id, second.alarm_id})
            assert [e.alarm_id for e in got] == [first.alarm_id, second.alarm_id]  # oldest first
        # Delivered: nothing is pending in the outbox any more.
        await until_on_record(settings, lambda store: not store.pending_outbox())


@asynccontextmanager
async def gateway_process(config: Path, endpoint: BrokerEndpoint) -> AsyncIterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(  # noqa: ASYNC220 - starting a process takes milliseconds; the test waits on MQTT
        [sys.executable, "-m", "gateway.cli", "gateway", "--config", str(config)],
        env=cli_env(endpoint),  # the store in the test's own state directory
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


async def test_sigkill_during_an_open_alarm_then_restart_keeps_its_id_and_acknowledgement(
    tmp_path: Path, mqtt_endpoint: BrokerEndpoint
) -> None:
    """No clean shutdown: the process is killed once the store has the acknowledgement. What the store has
    committed survives anything; the restart takes it back."""
    site_id = f"t-{secrets.token_hex(4)}"
    config = site_file(tmp_path, mqtt_endpoint, site_id)
    store_path = Path(os.environ["CRIBWATCH_STATE_DIR"]) / f"{site_id}.sqlite3"
    topics = Topics(site_id)
    async with (
        staff_device(mqtt_endpoint, topics) as staff,
        sensor(mqtt_endpoint, topics, "s-1") as s1,
        answers(mqtt_endpoint, topics, "pager-2") as answered,
    ):
        async with gateway_process(config, mqtt_endpoint) as first:
            await staff.until(lambda: staff.states.get("c-1"))
            await s1.open()
            raised = await staff.event("c-1", AlarmKind.CRIB_OPEN, AlarmEventType.RAISED)
            # A pager presses again until it has an answer: a gateway started for the first time takes acks only
            # once its second connection is up, a moment after its first.
            while not answered:
                await staff.ack(alarm_id=raised.alarm_id, by="staff-07", device="pager-2")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(until(lambda: answered), 1.0)
            assert answered[0].result == "accepted"
            await staff.event("c-1", AlarmKind.CRIB_OPEN, AlarmEventType.ACKNOWLEDGED)
            await until_on_record(
                (store_path, site_id), lambda store: any(a.acknowledged_by for a in store.open_alarms())
            )  # committed: from here a power cut loses nothing
            first.send_signal(signal.SIGKILL)
            first.wait()
        run = raised.gw_run
        async with gateway_process(config, mqtt_endpoint):
            state = await staff.until(lambda: (s := staff.states.get("c-1")) and s.gw_run > run and s.alarms and s)
            (alarm,) = state.alarms
            assert (alarm.alarm_id, alarm.state, alarm.acknowledged_by) == (raised.alarm_id, "acknowledged", "pager-2")
            await s1.close_latch()
            resolved = await staff.event("c-1", AlarmKind.CRIB_OPEN, AlarmEventType.RESOLVED)
            assert (resolved.alarm_id, resolved.acknowledged_by) == (raised.alarm_id, "pager-2")
            assert staff.count("c-1", AlarmKind.CRIB_OPEN, AlarmEventType.RAISED) == 1


async def test_ack_answers_tell_a_pager_what_became_of_each_press(mqtt_endpoint: BrokerEndpoint) -> None:
    settings = make_settings(mqtt_endpoint)
    topics = Topics(settings.site.id)
    async with (
        running(settings),
        staff_device(mqtt_endpoint, topics) as staff,
        sensor(mqtt_endpoint, topics, "s-1") as s1,
        answers(mqtt_endpoint, topics, "pager-1") as first_pager,
        answers(mqtt_endpoint, topics, "pager-2") as second_pager,
    ):
        await s1.open()
        raised = await staff.event("n-1", AlarmKind.CRIB_OPEN, AlarmEventType.RAISED)
        await staff.client.publish(
            topics.ack("pager-1"),
            encode(AckPayload(alarm_id=raised.alarm_id, by="staff-01", ts=1764160005.0)),
            qos=1,
        )
        (taken,) = await until(lambda: first_pager)
        assert (taken.result, taken.alarm_ids, taken.sent_ts) == ("accepted", (raised.alarm_id,), 1764160005.0)
        await staff.ack(crib="n-1", by="staff-02", device="pager-2")
        await staff.ack(alarm_id="999-1", by="staff-02", device="pager-2")
        await staff.ack(crib="n-2", by="staff-02", device="pager-2")
        await until(lambda: len(second_pager) == 3)
        assert [(a.result, a.acknowledged_by) for a in second_pager] == [
            ("already_acknowledged", "pager-1"),  # no staff group names pager-1: its device id
            ("unknown_alarm", None),
            ("nothing_open", None),
        ]
        assert len(first_pager) == 1  # each device gets its own answers only


async def test_a_store_that_cannot_be_read_at_start_does_not_stop_the_alarm(
    mqtt_endpoint: BrokerEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store file that is not a database (a corrupted card): the gateway runs, alarms, and says so."""
    settings = make_settings(mqtt_endpoint, alarms={"debounce_gpio_ms": 0})
    settings.store_path.parent.mkdir(parents=True, exist_ok=True)
    settings.store_path.write_bytes(b"this is not an SQLite database" * 100)
    topics = Topics(settings.site.id)
    pins = MockFactory()
    async with staff_device(mqtt_endpoint, topics) as staff, running(settings, pins) as gw:
        assert gw.store_error is not None
        assert gw.core.gw_run == 0  # no run could be counted: run 0, below every counter of the store
        pins.pin(27).drive_low()
        pins.pin(17).drive_high()
        raised = await staff.event("w-1", AlarmKind.CRIB_OPEN, AlarmEventType.RAISED)
        assert raised.alarm_id.startswith("0x")  # with a random part: unique if it starts again like this
        assert gw.buzzer is not None
        assert gw.buzzer.sounding
        stats = await staff.until(lambda: staff.stats if staff.stats and staff.stats.store else None)
        assert stats.store is not None
        await staff.until(lambda: staff.stats and staff.stats.store and staff.stats.store.failing)


async def test_a_disk_that_fills_while_running_keeps_the_alarm_path_and_loses_no_record(
    mqtt_endpoint: BrokerEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store's writes fail with SQLite's own "database or disk is full" (its page limit held at the file's
    size): the alarm reaches the broker and the buzzer all the same, the failure shows in the stats, and once
    there is room again every write lands."""
    # The crib opens and closes 30 times in a row: not a flapping latch here (docs/alerting.md), every time an alarm.
    no_flapping = {"flapping": {"transitions": 1000, "window_s": 1}}
    settings = make_settings(mqtt_endpoint, alarms={"debounce_gpio_ms": 0}, alerting=no_flapping)
    topics = Topics(settings.site.id)
    full = {"on": False}
    opened = Gateway._open_store  # noqa: SLF001 - the disk is made to fill under the gateway's own store

    def open_store_on_a_full_disk(self: Gateway) -> Store:
        store = opened(self)
        if full["on"] and threading.current_thread().name == "store-writer":  # start-up reads the store first
            pages = store.connection.execute("PRAGMA page_count").fetchone()[0]
            store.connection.execute(f"PRAGMA max_page_count = {pages}")
        return store

    monkeypatch.setattr(Gateway, "_open_store", open_store_on_a_full_disk)
    pins = MockFactory()
    full["on"] = True
    async with staff_device(mqtt_endpoint, topics) as staff, running(settings, pins) as gw:
        assert gw.store_error is None
        pins.pin(27).drive_low()
        for i in range(30):  # enough writes to need a new page
            pins.pin(17).drive_high()
            await staff.until(lambda n=i: staff.count("w-1", AlarmKind.CRIB_OPEN, AlarmEventType.RAISED) == n + 1)
            pins.pin(17).drive_low()
            await staff.until(lambda n=i: staff.count("w-1", AlarmKind.CRIB_OPEN, AlarmEventType.RESOLVED) == n + 1)
            if gw.writer.health.failing:
                break
        assert gw.writer.health.failing
        assert gw.buzzer is not None
        pins.pin(17).drive_high()  # and the next alarm still reaches staff and the buzzer
        await staff.until(lambda: staff.count("w-1", AlarmKind.CRIB_OPEN, AlarmEventType.RAISED) == i + 2)
        assert gw.buzzer.sounding
        await staff.until(lambda: staff.stats and staff.stats.store and staff.stats.store.failures > 0)
        full["on"] = False  # room again: the writer's next try opens the store afresh and writes it all
        await until(lambda: not gw.writer.health.failing and gw.writer.health.pending == 0)
        raised_ids = {e.alarm_id for e in staff.events if e.event is AlarmEventType.RAISED}
    on_record = await until_on_record(
        settings, lambda store: (ids := {i.alarm_id for i in store.incidents()}) >= raised_ids and ids
    )
    assert on_record >= raised_ids


async def test_a_read_only_disk_at_start_keeps_the_open_alarms_and_counts_the_run_once_it_takes_writes(
    mqtt_endpoint: BrokerEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a review: a store that could be read but not written at start gave back nothing. Reading needs
    no room: the open alarms come back; this run's ids get a random part until the disk counts the run."""
    settings = make_settings(mqtt_endpoint, alarms={"debounce_gpio_ms": 0})
    topics = Topics(settings.site.id)
    pins = MockFactory()
    async with staff_device(mqtt_endpoint, topics) as staff, sensor(mqtt_endpoint, topics, "s-1") as s1:
        async with running(settings, pins) as first:
            await s1.open()
            raised = await staff.event("n-1", AlarmKind.CRIB_OPEN, AlarmEventType.RAISED)
            assert first.core.gw_run == 1

        read_only = {"on": True}
        opened = Gateway._open_store  # noqa: SLF001 - the disk is remounted read-only under the gateway's store

        def open_on_a_read_only_disk(self: Gateway) -> Store:
            store = opened(self)
            if read_only["on"]:
                store.connection.execute("PRAGMA query_only = ON")  # every write: "attempt to write a readonly ..."
            return store

        monkeypatch.setattr(Gateway, "_open_store", open_on_a_read_only_disk)
        async with running(settings, pins) as second:
            assert second.store_error is not None
            assert second.restored >= 1  # n-1, and the wired cribs whose fresh pins read open in the first run
            assert [a.alarm_id for a in second.core.crib_state("n-1").alarms] == [raised.alarm_id]
            pins.pin(27).drive_low()
            pins.pin(17).drive_low()  # w-1 closes (its alarm of the first run ends), then opens again
            await staff.until(lambda: second.core.crib_state("w-1").alarms == ())
            pins.pin(17).drive_high()
            wired = await staff.until(
                lambda: next(
                    (e for e in staff.events if e.crib == "w-1" and e.event is AlarmEventType.RAISED and e.gw_run == 2),
                    None,
                )
            )
            assert wired.alarm_id.startswith("2x")
            assert wired.gw_run == 2
            await until(lambda: second.writer.health.failing)
            read_only["on"] = False  # the disk is writable again: everything that waited is written
            await until(lambda: not second.writer.health.failing and second.writer.health.pending == 0)
        on_record = await until_on_record(settings, lambda store: store.last_run() == 2 and store.incidents())
        assert wired.alarm_id in {i.alarm_id for i in on_record}
        async with running(settings, pins) as third:
            assert third.core.gw_run == 3
            assert third.store_error is None


async def test_a_crib_taken_out_of_the_site_file_has_its_alarm_ended_and_its_retained_state_cleared(
    mqtt_endpoint: BrokerEndpoint,
) -> None:
    settings = make_settings(mqtt_endpoint)
    topics = Topics(settings.site.id)
    nursery, wired = settings.rooms
    smaller = settings.model_copy(
        update={"rooms": (nursery.model_copy(update={"cribs": nursery.cribs[:2]}), wired)}
    )  # n-3 taken out
    async with staff_device(mqtt_endpoint, topics) as staff, sensor(mqtt_endpoint, topics, "s-3") as s3:
        async with running(settings):
            await s3.open()
            raised = await staff.event("n-3", AlarmKind.CRIB_OPEN, AlarmEventType.RAISED)
            await staff.until(lambda: (s := staff.states.get("n-3")) and s.alarms)
        async with running(smaller) as second:
            ended = await staff.event("n-3", AlarmKind.CRIB_OPEN, AlarmEventType.RESOLVED)
            assert (ended.alarm_id, ended.resolution, ended.crib_label) == (raised.alarm_id, "crib_removed", "Crib 3")
            assert raised.alarm_id not in {a.alarm_id for a in second.core.active_alarms()}
            await staff.until(lambda: "n-3" not in staff.states)  # a screen that was watching drops the crib
            async with staff_device(mqtt_endpoint, topics) as late:  # a tablet that connects now
                await late.until(lambda: late.states.get("n-1"))
                await asyncio.sleep(0.2)
                assert "n-3" not in late.states
    incidents = await until_on_record(
        settings, lambda store: [i for i in store.incidents() if i.alarm_id == raised.alarm_id and not i.open]
    )
    assert incidents[0].resolution == "crib_removed"
