"""Issue 7 end to end on the real broker, with scaled-down times: escalation in order, a reminder after an ack,
maintenance and test alarms by the technicians' command topic, and a restart that resumes a chain. The notices go
to the gateway's real channel router; :class:`Seen` notes each on its way there (what the staff devices receive,
with each device's own account, is tests/test_alerting_e2e.py)."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory

from alerts.channels.router import ChannelRouter
from alerts.notices import Notice
from devtools.brokers import BrokerEndpoint
from gateway.app import Gateway
from gateway.domain.vocab import AlarmEventType, AlarmKind
from gateway.mqtt.command import send_command
from gateway.mqtt.connection import broker_address
from gateway.protocol import Topics
from gateway.protocol.payloads import CommandPayload
from gateway.settings import Settings
from gateway.store import Store
from tests.test_cli import cli_env
from tests.test_gateway_integration import WAIT_S, make_settings, sensor, staff_device

pytestmark = pytest.mark.integration

ALERTING: dict[str, Any] = {
    "reminder_after_s": 1.0,
    "groups": [
        {
            "id": "nursery-staff",
            "kind": "room",
            "rooms": ["nursery"],
            "members": [{"id": "pager-n1", "channels": [{"channel": "mqtt", "address": "pager-n1"}]}],
        },
        {
            "id": "floor",
            "kind": "site",
            "members": [{"id": "pager-floor", "channels": [{"channel": "mqtt", "address": "pager-floor"}]}],
        },
    ],
    # The site has no siren channel ([channels.siren] pin): the siren step adds no recipient (docs/alerting.md).
    "policies": [
        {
            "priority": "high",
            "steps": [{"notify": ["room"]}, {"after_s": 0.3, "notify": ["site"], "siren": True}],
            "repeat_every_s": 0.3,
            "repeat_from": 1,
        }
    ],
}


class Seen:
    """The gateway's notice sink for these tests: notes each notice, then hands it to the real channel router."""

    def __init__(self, router: ChannelRouter) -> None:
        self.router = router
        self.notices: list[Notice] = []

    def send(self, notice: Notice) -> None:
        self.notices.append(notice)
        self.router.send(notice)


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Gateway]:
    """The gateway running, its notices seen (:class:`Seen`, in ``gw.notices``) from its first one."""
    gateway = Gateway(settings, pin_factory=MockFactory())
    gateway.notices = Seen(gateway.channels)
    task = asyncio.create_task(gateway.run(), name="gateway-under-test")
    try:
        async with asyncio.timeout(WAIT_S):
            await gateway.mqtt.connected.wait()
        yield gateway
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def alerting_settings(endpoint: BrokerEndpoint, **alerting: Any) -> Settings:
    return make_settings(endpoint, alerting={**ALERTING, **alerting})


async def until(check: Any) -> Any:
    """Wait (bounded) until ``check()`` of the gateway's own state is truthy (polled: it has no event to wait on)."""
    async with asyncio.timeout(WAIT_S):
        while not (result := check()):  # noqa: ASYNC110 - polling the gateway's state, which signals nothing
            await asyncio.sleep(0.02)
        return result


def kinds(sink: Seen, alarm_id: str) -> list[tuple[str, int, tuple[str, ...]]]:
    return [
        (n.kind.value, n.step, tuple(dict.fromkeys(r.group for r in n.recipients)))
        for n in sink.notices
        if n.alarm.alarm_id == alarm_id
    ]


async def test_nobody_acknowledges_the_room_then_the_site_then_an_ack_stops_it_and_a_reminder_comes(
    mqtt_endpoint: BrokerEndpoint,
) -> None:
    settings = alerting_settings(mqtt_endpoint)
    topics = Topics(settings.site.id)
    async with (
        running(settings) as gw,
        staff_device(mqtt_endpoint, topics) as staff,
        sensor(mqtt_endpoint, topics, "s-1") as s1,
    ):
        sink = gw.notices
        assert isinstance(sink, Seen)
        await s1.open()
        raised = await staff.event("n-1", AlarmKind.CRIB_OPEN, AlarmEventType.RAISED)
        await until(lambda: len(kinds(sink, raised.alarm_id)) >= 3)
        assert kinds(sink, raised.alarm_id)[:3] == [
            ("alarm", 0, ("nursery-staff",)),
            ("escalation", 1, ("floor",)),
            ("repeat", 1, ("floor",)),
        ]
        state = await staff.until(
            lambda: (s := staff.states.get("n-1")) and s.alarms and s.alarms[0].escalation_level and s
        )
        assert state.alarms[0].escalation_level == 1

        await staff.ack(alarm_id=raised.alarm_id, by="staff-07", device="pager-n1")
        acked = await staff.event("n-1", AlarmKind.CRIB_OPEN, AlarmEventType.ACKNOWLEDGED)
        reminded = await staff.event("n-1", AlarmKind.CRIB_OPEN, AlarmEventType.REMINDED)
        # pager-n1 is a member of its own (the roster's): it acknowledged, whatever its payload said (a claim).
        assert (reminded.alarm_id, reminded.by) == (raised.alarm_id, "pager-n1")
        assert (acked.by, acked.device) == ("pager-n1", "pager-n1")
        assert gw.stats.ignored["ack_by_claim"] == 1
        assert reminded.acknowledged_by is None
        ours = [n for n in sink.notices if n.alarm.alarm_id == raised.alarm_id]
        after_ack = [n for n in ours if n.at >= acked.ts]
        # Everyone told hears who has it (not the siren), then no repeat until the reminder.
        assert [(n.kind.value, n.step) for n in after_ack[:2]] == [("acknowledged", 1), ("reminder", 0)]
        assert {r.member for r in after_ack[0].recipients} == {"pager-n1", "pager-floor"}
        assert after_ack[1].recipients[0].group == "nursery-staff"
        assert gw.buzzer is not None
        await until(lambda: gw.buzzer is not None and gw.buzzer.sounding)  # sounds again

        await s1.close_latch()
        await staff.event("n-1", AlarmKind.CRIB_OPEN, AlarmEventType.RESOLVED)
        await until(lambda: kinds(sink, raised.alarm_id)[-1][0] == "resolved")
        assert set(kinds(sink, raised.alarm_id)[-1][2]) == {"nursery-staff", "floor"}
        assert gw.writer.flush()
    store = Store.open(settings.store_path, site_id=settings.site.id, readonly=True)
    try:
        timeline = store.timeline(raised.alarm_id)
    finally:
        store.close()
    types = [entry.type for entry in timeline]
    assert types[:2] == ["raised", "notice"]
    assert {"acknowledged", "reminded", "resolved"} <= set(types)
    notices = [entry.detail for entry in timeline if entry.type == "notice"]
    assert notices[0] is not None
    assert (notices[0]["kind"], notices[0]["groups"]) == ("alarm", ["nursery-staff"])


async def test_maintenance_and_test_alarms_by_command(mqtt_endpoint: BrokerEndpoint) -> None:
    settings = alerting_settings(mqtt_endpoint)
    topics = Topics(settings.site.id)
    broker = broker_address(settings.mqtt)
    async with (
        running(settings) as gw,
        staff_device(mqtt_endpoint, topics) as staff,
        sensor(mqtt_endpoint, topics, "s-2") as s2,
    ):
        on = CommandPayload(
            command="maintenance_on", crib="s-2", by="tech-1", reason="new battery", until=time.time() + 60
        )
        answer = await send_command(broker, topics, "tool-1", on)
        assert answer is not None
        assert answer.result == "accepted"
        state = await staff.until(lambda: (s := staff.states.get("n-2")) and s.maintenance and s)
        assert state.maintenance.reason == "new battery"  # type: ignore[union-attr]

        await s2.open()  # recorded, not sent
        await until(lambda: gw.core.crib_state("n-2").alarms)
        assert gw.core.crib_state("n-2").alarms[0].maintenance
        await asyncio.sleep(0.3)  # give a wrongly sent alarm event the time to arrive
        assert staff.count("n-2", AlarmKind.CRIB_OPEN, AlarmEventType.RAISED) == 0

        off = CommandPayload(command="maintenance_off", crib="n-2", by="tech-1")
        answer = await send_command(broker, topics, "tool-1", off)
        assert answer is not None
        assert answer.result == "accepted"
        raised = await staff.event("n-2", AlarmKind.CRIB_OPEN, AlarmEventType.RAISED)  # still open: at once
        assert raised.maintenance is False

        too_long = on.model_copy(update={"until": time.time() + 30 * 86400})
        answer = await send_command(broker, topics, "tool-1", too_long)
        assert answer is not None
        assert answer.result == "maintenance_too_long"

        test = CommandPayload(command="test_alarm", crib="n-3", by="tech-1")
        answer = await send_command(broker, topics, "tool-1", test)
        assert answer is not None
        assert answer.result == "accepted"
        (test_id,) = answer.alarm_ids
        tested = await staff.until(lambda: next((e for e in staff.events if e.alarm_id == test_id), None))
        assert tested.test
        await staff.ack(alarm_id=test_id, by="staff-1", device="pager-n1")
        ended = await staff.until(
            lambda: next(
                (e for e in staff.events if e.alarm_id == test_id and e.event is AlarmEventType.RESOLVED), None
            )
        )
        assert (ended.test, ended.resolution) == (True, "test_ended")
        assert gw.writer.flush()
    store = Store.open(settings.store_path, site_id=settings.site.id, readonly=True)
    try:
        incidents = {i.alarm_id: i for i in store.incidents()}
        audit = [a.action for a in store.audit_log()]
    finally:
        store.close()
    assert any(i.maintenance for i in incidents.values())
    assert incidents[test_id].test
    assert {"maintenance_on", "maintenance_off", "test_alarm"} <= set(audit)


async def test_a_restart_keeps_maintenance_and_resumes_the_chain_of_an_open_alarm(
    mqtt_endpoint: BrokerEndpoint,
) -> None:
    settings = alerting_settings(mqtt_endpoint)
    topics = Topics(settings.site.id)
    async with running(settings) as gw, sensor(mqtt_endpoint, topics, "s-1") as s1:
        await s1.open()
        await until(gw.core.active_alarms)
        alarm_id = gw.core.active_alarms()[0].alarm_id
        await until(lambda: (a := gw.core.alarm(alarm_id)) and a.escalation_level == 1)
        gw.maintenance_on("n-3", reason="sensor swap", until=time.time() + 120, by="tech-1")
    async with running(settings) as again:
        sink = again.notices
        assert isinstance(sink, Seen)
        # The open alarm, unacknowledged, repeats the step it had reached at once, and goes on from there.
        first = await until(lambda: kinds(sink, alarm_id))
        assert first[0] == ("repeat", 1, ("floor",))
        resumed = next(n for n in sink.notices if n.alarm.alarm_id == alarm_id)
        assert int(resumed.notice_id.rpartition("/")[2]) > 2  # numbered on from the earlier run's notices
        assert again.core.crib_state("n-3").maintenance is not None


async def test_the_cli_commands_reach_the_running_gateway(mqtt_endpoint: BrokerEndpoint, tmp_path: Path) -> None:
    """`cribwatch maintenance` and `cribwatch test-alarm` as a technician types them, against a running gateway."""
    settings = alerting_settings(mqtt_endpoint)
    site = tmp_path / "site.toml"
    site.write_text(
        "\n".join(
            [
                "[site]",
                f'id = "{settings.site.id}"',
                'label = "Test site"',
                "[mqtt]",
                f'host = "{mqtt_endpoint.host}"',
                f"port = {mqtt_endpoint.port}",
                "[[rooms]]",
                'id = "nursery"',
                'label = "Nursery"',
                "  [[rooms.cribs]]",
                '  id = "n-1"',
                '  label = "Crib 1"',
                '  sensor_id = "s-1"',
            ]
        )
        + "\n"
    )

    async def cli(*args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway.cli",
            *args,
            env=cli_env(mqtt_endpoint),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), WAIT_S * 3)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    async with running(settings) as gw:
        code, out, err = await cli(
            "maintenance",
            "--config",
            str(site),
            "n-1",
            "on",
            "--reason",
            "new sensor",
            "--until",
            "30m",
            "--by",
            "tech-1",
        )
        assert (code, err) == (0, "")
        assert out.startswith("accepted")
        view = gw.core.crib_state("n-1").maintenance
        assert view is not None
        assert (view.reason, view.by) == ("new sensor", "tech-1")
        code, out, _ = await cli("maintenance", "--config", str(site), "n-1", "on", "--reason", "x", "--until", "30h")
        assert (code, out.split(":")[0]) == (1, "maintenance_too_long")
        code, _, err = await cli("maintenance", "--config", str(site), "n-1", "on")
        assert code == 2
        assert "never open-ended" in err
        code, out, _ = await cli("maintenance", "--config", str(site), "s-1", "off")
        assert code == 0
        assert gw.core.crib_state("n-1").maintenance is None
        code, out, _ = await cli("test-alarm", "--config", str(site), "n-1")
        assert code == 0
        (test_alarm,) = [a for a in gw.core.crib_state("n-1").alarms if a.test]
        assert test_alarm.alarm_id in out
