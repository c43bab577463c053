"""Issue 7 end to end on the merged code: the real gateway with its real channel router, a real Mosquitto with a
password file and the shipped ACL (each staff device its own account), Apprise's json:// target against a small HTTP
server, a real SQLite store, and scaled-down times. Order and content are asserted, never timings.

The site: the nursery's room group has one member, staff-07, whose pager is ``pager-room``; the site group
``floor`` has the pager ``pager-site`` (a member that is its own device) and an Apprise target tagged ``floor``.
A crib open goes to the room at once, to the floor 0.4 s later, then again every 0.4 s.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from devtools.brokers import BrokerEndpoint, MosquittoBroker
from firmware_sim.sensor import SimulatedSensor
from gateway.app import Gateway
from gateway.mqtt.command import send_command
from gateway.protocol import AckAnswerPayload, AckPayload, NotifyPayload, Topics, decode, encode
from gateway.protocol.payloads import CommandPayload
from gateway.settings import Settings, settings_from_mapping
from gateway.store import Store
from tests.channel_helpers import HttpEndpoint
from tests.test_channels_broker import SHIPPED_ACL, Device, Events, device, gateway, until

pytestmark = pytest.mark.integration

USERS = {
    "gateway": "gw-secret",
    "s-1": "s1-secret",
    "pager-room": "room-secret",
    "pager-site": "site-secret",
    "technician": "tech-secret",
}
STEP_S = 0.4
SETTLE_S = 3 * STEP_S
"""Long enough for a wrongly sent repeat to come (a wait for something that must not happen; asserts no timing)."""


def login(endpoint: BrokerEndpoint, username: str) -> BrokerEndpoint:
    return BrokerEndpoint(endpoint.host, endpoint.port, username, USERS[username])


def site(endpoint: BrokerEndpoint, apprise_config: Path) -> Settings:
    data: dict[str, Any] = {
        "site": {"id": f"e2e-{secrets.token_hex(3)}", "label": "E2E site"},
        "mqtt": {"host": endpoint.host, "port": endpoint.port, "stats_interval_s": 0.2, "reconnect_max_s": 0.5},
        "alarms": {"offline_grace_s": 0, "heartbeat_interval_s": 30},
        "rooms": [
            {
                "id": "nursery",
                "label": "Nursery",
                "grace_s": 0,
                "cribs": [
                    {"id": "n-1", "label": "Crib 1", "sensor_id": "s-1"},
                    {"id": "n-2", "label": "Crib 2", "sensor_id": "s-2"},
                ],
            }
        ],
        "channels": {"apprise": {"config": str(apprise_config), "attempts": 1}},
        "alerting": {
            "reminder_after_s": 600,
            "groups": [
                {
                    "id": "nursery-staff",
                    "kind": "room",
                    "rooms": ["nursery"],
                    "members": [{"id": "staff-07", "channels": [{"channel": "mqtt", "address": "pager-room"}]}],
                },
                {
                    "id": "floor",
                    "kind": "site",
                    "members": [
                        {"id": "pager-site", "channels": [{"channel": "mqtt", "address": "pager-site"}]},
                        {"id": "office", "channels": [{"channel": "apprise", "address": "floor"}]},
                    ],
                },
            ],
            "policies": [
                {
                    "priority": "high",
                    "steps": [{"notify": ["room"]}, {"after_s": STEP_S, "notify": ["site"]}],
                    "repeat_every_s": STEP_S,
                    "repeat_from": 1,
                }
            ],
        },
    }
    env = {
        "CRIBWATCH_MQTT_USERNAME": "gateway",
        "CRIBWATCH_MQTT_PASSWORD": USERS["gateway"],
        "CRIBWATCH_STATE_DIR": os.environ["CRIBWATCH_STATE_DIR"],
        "CRIBWATCH_MQTT_CLIENT_ID_IS_USERNAME": "false",  # a test broker without the client-id lock
    }
    return settings_from_mapping(data, env=env)


class Site:
    """The running site of one test: the broker, the gateway, the sensor, both pagers and the Apprise endpoint."""

    def __init__(
        self, endpoint: BrokerEndpoint, settings: Settings, gw: Gateway, http: HttpEndpoint, **parts: Any
    ) -> None:
        self.endpoint = endpoint
        self.settings = settings
        self.topics = Topics(settings.site.id)
        self.gw = gw
        self.http = http
        self.sensor: SimulatedSensor = parts["sensor"]
        self.room: Device = parts["room"]
        self.floor: Device = parts["floor"]
        self.events: Events = parts["events"]

    def notices(self, pager: Device, name: str, alarm_id: str) -> list[NotifyPayload]:
        got = [decode(NotifyPayload, p) for p in pager.on(self.topics.notify(name))]
        return [n for n in got if n.alarm.alarm_id == alarm_id]

    def answers(self, pager: Device, name: str) -> list[AckAnswerPayload]:
        return [decode(AckAnswerPayload, p) for p in pager.on(self.topics.ack_answer(name))]

    def apprise(self) -> list[dict[str, Any]]:
        return self.http.json_bodies("/floor")

    async def ack(self, pager: Device, name: str, alarm_id: str, by: str | None = None) -> None:
        await pager.client.publish(self.topics.ack(name), encode(AckPayload(alarm_id=alarm_id, by=by)), qos=1)

    async def raised(self) -> str:
        event = await until(lambda: next((e for e in self.events.alarms if e.crib_id == "n-1"), None))
        return str(event.alarm_id)

    def record(self, alarm_id: str) -> tuple[list[Any], list[Any], list[Any]]:
        """The alarm's deliveries and timeline, and the audit log, from the store (after the writer flushed)."""
        assert self.gw.writer.flush()
        store = Store.open(self.settings.store_path, site_id=self.settings.site.id, readonly=True)
        try:
            return store.deliveries(alarm_id=alarm_id), store.timeline(alarm_id), store.audit_log()
        finally:
            store.close()


@asynccontextmanager
async def running_site(tmp_path: Path) -> AsyncIterator[Site]:
    http = HttpEndpoint()
    config = tmp_path / "apprise.txt"
    config.write_text(f"floor=json://127.0.0.1:{http.port}/floor\n", encoding="utf-8")
    try:
        async with acl_broker_for(tmp_path) as endpoint:
            settings = site(endpoint, config)
            topics = Topics(settings.site.id)
            events = Events()
            own = (topics.notify, topics.ack_answer)
            async with (
                gateway(settings, events) as gw,
                SimulatedSensor("s-1", topics, login(endpoint, "s-1")) as sensor,
                device(login(endpoint, "pager-room"), None, *(f("pager-room") for f in own)) as room,
                device(login(endpoint, "pager-site"), None, *(f("pager-site") for f in own)) as floor,
            ):
                yield Site(endpoint, settings, gw, http, sensor=sensor, room=room, floor=floor, events=events)
    finally:
        http.close()


@asynccontextmanager
async def acl_broker_for(tmp_path: Path) -> AsyncIterator[BrokerEndpoint]:
    with MosquittoBroker(tmp_path / "broker", users=USERS, extra_config=f"acl_file {SHIPPED_ACL}") as broker:
        yield broker.endpoint


def kinds(notices: list[NotifyPayload]) -> list[tuple[str, int]]:
    return [(n.kind, n.step) for n in notices]


def squeeze(items: list[Any]) -> list[Any]:
    """Runs of the same item as one (the number of repeats before an ack depends on the machine's speed)."""
    return [x for i, x in enumerate(items) if i == 0 or items[i - 1] != x]


def number(notice_id: str) -> int:
    return int(notice_id.rpartition("/")[2])


async def test_nobody_acknowledges_then_the_room_s_pager_does_and_everyone_told_hears_who_then_resolved(
    tmp_path: Path,
) -> None:
    async with running_site(tmp_path) as s:
        await s.sensor.open()
        alarm_id = await s.raised()
        # (a) Nobody acknowledges: the room's pager gets the alarm, then the floor's pager (and Apprise) the
        # escalation at step 1, then repeats of step 1.
        await s.floor.until(lambda: len(s.notices(s.floor, "pager-site", alarm_id)) >= 2)
        (first,) = await s.room.until(lambda: s.notices(s.room, "pager-room", alarm_id))
        assert (first.kind, first.step, first.group, first.member, first.test) == (
            "alarm", 0, "nursery-staff", "staff-07", False,
        )  # fmt: skip
        assert (first.alarm.crib, first.alarm.event) == ("n-1", "raised")
        floor = s.notices(s.floor, "pager-site", alarm_id)
        assert kinds(floor)[:2] == [("escalation", 1), ("repeat", 1)]
        assert {(n.group, n.member) for n in floor} == {("floor", "pager-site")}
        assert number(first.notice_id) < number(floor[0].notice_id) < number(floor[1].notice_id)
        assert first.ts <= floor[0].ts <= floor[1].ts
        assert s.room.on(s.topics.notify("pager-site")) == []  # each pager reads only its own

        # (b) The room's pager acknowledges on its own topic, without saying who: the roster says it is staff-07's.
        await s.ack(s.room, "pager-room", alarm_id)
        (answer,) = await s.room.until(lambda: s.answers(s.room, "pager-room"))
        assert (answer.result, answer.acknowledged_by, answer.by, answer.device) == (
            "accepted", "staff-07", "staff-07", "pager-room",
        )  # fmt: skip
        told = await s.floor.until(
            lambda: [n for n in s.notices(s.floor, "pager-site", alarm_id) if n.kind == "acknowledged"]
        )
        assert (told[0].alarm.event, told[0].alarm.by, told[0].alarm.device) == (
            "acknowledged", "staff-07", "pager-room",
        )  # fmt: skip
        await s.room.until(lambda: kinds(s.notices(s.room, "pager-room", alarm_id))[-1][0] == "acknowledged")
        await asyncio.sleep(SETTLE_S)  # the repeats stop: give a wrong one the time to come
        floor = s.notices(s.floor, "pager-site", alarm_id)
        assert floor[-1].kind == "acknowledged"
        assert await until(lambda: [b for b in s.apprise() if "acknowledged by staff-07" in b["message"]])

        # The crib is closed: everyone who was told gets resolved.
        await s.sensor.close_latch()
        await s.floor.until(lambda: s.notices(s.floor, "pager-site", alarm_id)[-1].kind == "resolved")
        await s.room.until(lambda: s.notices(s.room, "pager-room", alarm_id)[-1].kind == "resolved")
        await until(lambda: s.apprise() and s.apprise()[-1]["type"] == "success")
        room = s.notices(s.room, "pager-room", alarm_id)
        floor = s.notices(s.floor, "pager-site", alarm_id)
        assert kinds(room) == [("alarm", 0), ("acknowledged", floor[-2].step), ("resolved", floor[-1].step)]
        assert squeeze([n.kind for n in floor]) == ["escalation", "repeat", "acknowledged", "resolved"]
        apprise = s.apprise()
        assert len(apprise) == len(floor)  # the floor's Apprise target got what its pager got
        assert squeeze([b["type"] for b in apprise]) == ["failure", "info", "success"]
        assert "escalated" in apprise[0]["title"]
        assert all("E2E" not in b["message"] and "Crib 1" in b["title"] for b in apprise)

        deliveries, timeline, audit = s.record(alarm_id)
    # Every delivery on record, in the order the notices were decided; each one delivered.
    assert {(r.channel, r.member, r.result, r.attempt, r.test) for r in deliveries} == {
        ("mqtt", "staff-07", "delivered", 1, False),
        ("mqtt", "pager-site", "delivered", 1, False),
        ("apprise", "office", "delivered", 1, False),
    }
    by_member = {
        m: squeeze([r.kind for r in deliveries if r.member == m]) for m in ("staff-07", "pager-site", "office")
    }
    assert by_member == {
        "staff-07": ["alarm", "acknowledged", "resolved"],
        "pager-site": ["escalation", "repeat", "acknowledged", "resolved"],
        "office": ["escalation", "repeat", "acknowledged", "resolved"],
    }
    assert sorted(number(r.notice_id) for r in deliveries if r.member == "pager-site") == [
        number(n.notice_id) for n in floor
    ]
    # Every step on the incident's timeline, in order.
    steps = [(e.type, (e.detail or {}).get("kind")) for e in timeline]
    assert squeeze(steps) == [
        ("raised", None),
        ("notice", "alarm"),
        ("notice", "escalation"),
        ("notice", "repeat"),
        ("acknowledged", None),
        ("notice", "acknowledged"),
        ("resolved", None),
        ("notice", "resolved"),
    ]
    acked = next(e for e in timeline if e.type == "acknowledged")
    assert (acked.by, acked.device) == ("staff-07", "pager-room")
    notice_rows = [e.detail for e in timeline if e.type == "notice" and e.detail]
    assert notice_rows[0]["groups"] == ["nursery-staff"]
    assert notice_rows[1]["groups"] == ["floor"]
    assert notice_rows[1]["channels"] == ["apprise", "mqtt"]
    ack_audit = [json.loads(a.detail) for a in audit if a.action == "acknowledge"]
    assert ack_audit == [{"result": "accepted", "alarm_id": alarm_id, "crib": None, "alarms": [alarm_id]}]


async def test_two_devices_acknowledge_at_once_one_wins_both_hear_who_and_a_claimed_by_is_only_a_claim(
    tmp_path: Path,
) -> None:
    async with running_site(tmp_path) as s:
        await s.sensor.open()
        alarm_id = await s.raised()
        await s.floor.until(lambda: s.notices(s.floor, "pager-site", alarm_id))  # both pagers were told
        # Both at once; the floor's pager claims to be staff-99: the roster says it is its own member, pager-site.
        await asyncio.gather(
            s.ack(s.room, "pager-room", alarm_id, by="staff-07"), s.ack(s.floor, "pager-site", alarm_id, by="staff-99")
        )
        (room,) = await s.room.until(lambda: s.answers(s.room, "pager-room"))
        (floor,) = await s.floor.until(lambda: s.answers(s.floor, "pager-site"))
        assert sorted([room.result, floor.result]) == ["accepted", "already_acknowledged"]
        winner = room if room.result == "accepted" else floor
        assert winner.acknowledged_by in ("staff-07", "pager-site")
        assert room.acknowledged_by == floor.acknowledged_by == winner.acknowledged_by
        assert (room.by, floor.by) == ("staff-07", "pager-site")  # never staff-99
        assert room.alarm_ids == floor.alarm_ids == (alarm_id,)
        stats = await until(lambda: s.gw.stats.ignored["ack_by_claim"] == 1 and s.gw.stats)
        assert stats.rejected["ack_device"] == 0
        # Everyone told hears who has it, once.
        for pager, name in ((s.room, "pager-room"), (s.floor, "pager-site")):
            told = await pager.until(
                lambda p=pager, n=name: [x for x in s.notices(p, n, alarm_id) if x.kind == "acknowledged"]
            )  # type: ignore[misc]
            assert [(t.alarm.by, t.alarm.device) for t in told] == [(winner.acknowledged_by, winner.device)]
        _, timeline, audit = s.record(alarm_id)
    assert [e.by for e in timeline if e.type == "acknowledged"] == [winner.acknowledged_by]
    acks = {a.source: (a.actor, json.loads(a.detail)) for a in audit if a.action == "acknowledge"}
    assert acks["mqtt:pager-site"][0] == "pager-site"
    assert acks["mqtt:pager-site"][1]["claimed_by"] == "staff-99"
    assert "claimed_by" not in acks["mqtt:pager-room"][1]


async def test_a_test_alarm_by_command_runs_the_whole_chain_marked_test_everywhere(tmp_path: Path) -> None:
    async with running_site(tmp_path) as s:
        tool = login(s.endpoint, "technician")
        command = CommandPayload(command="test_alarm", crib="n-1", by="tech-1")
        answer = await send_command(tool, s.topics, "technician", command)
        assert answer is not None
        assert answer.result == "accepted"
        (alarm_id,) = answer.alarm_ids
        await s.floor.until(lambda: len(s.notices(s.floor, "pager-site", alarm_id)) >= 2)
        await s.ack(s.room, "pager-room", alarm_id)
        await s.floor.until(lambda: s.notices(s.floor, "pager-site", alarm_id)[-1].kind == "resolved")
        await until(lambda: s.apprise() and s.apprise()[-1]["type"] == "success")
        room = s.notices(s.room, "pager-room", alarm_id)
        floor = s.notices(s.floor, "pager-site", alarm_id)
        assert squeeze([n.kind for n in room]) == ["alarm", "acknowledged", "resolved"]
        assert squeeze([n.kind for n in floor]) == ["escalation", "repeat", "acknowledged", "resolved"]
        assert all(n.test and n.alarm.test for n in room + floor)
        assert floor[-1].alarm.resolution == "test_ended"
        assert all(b["title"].startswith("[TEST]") and "[TEST]" in b["message"] for b in s.apprise())
        deliveries, timeline, _ = s.record(alarm_id)
    assert deliveries
    assert all(r.test for r in deliveries)
    assert {r.member for r in deliveries} == {"staff-07", "pager-site", "office"}
    notices = [e.detail for e in timeline if e.type == "notice" and e.detail]
    assert squeeze([n["kind"] for n in notices]) == ["alarm", "escalation", "repeat", "acknowledged", "resolved"]
    assert all(n.get("test") is True for n in notices)
