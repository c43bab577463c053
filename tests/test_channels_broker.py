"""Staff devices' own broker accounts, on a real Mosquitto with a password file and the shipped ACL, against the
real gateway: a device cannot acknowledge as another device (the broker drops it, and the gateway is shown never to
see it), a payload that claims another device is refused, and a device receives its own notices but not another's.
The notices go through the gateway's channel router, and each delivery is recorded in its store.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from gpiozero.pins.mock import MockFactory

from alerts.notices import Notice, NoticeKind, Recipient
from devtools.brokers import BrokerEndpoint, MosquittoBroker
from firmware_sim.sensor import SimulatedSensor
from gateway.app import Gateway
from gateway.domain.events import AlarmEvent, OutboundEvent
from gateway.domain.vocab import AlarmEventType
from gateway.mqtt.connection import new_client
from gateway.protocol import AckAnswerPayload, AckPayload, AlarmEventPayload, NotifyPayload, Topics, decode, encode
from gateway.settings import Settings, settings_from_mapping
from gateway.store import Store
from tests.channel_helpers import WAIT_S, HttpEndpoint

pytestmark = pytest.mark.integration

SHIPPED_ACL = Path(__file__).resolve().parents[1] / "deploy" / "mosquitto" / "cribwatch.acl"
USERS = {"gateway": "gw-secret", "s-1": "s1-secret", "pager-a": "a-secret", "pager-b": "b-secret"}


def as_user(endpoint: BrokerEndpoint, username: str) -> BrokerEndpoint:
    return BrokerEndpoint(endpoint.host, endpoint.port, username, USERS[username])


def site(endpoint: BrokerEndpoint, *, env: dict[str, str] | None = None, **sections: Any) -> Settings:
    data: dict[str, Any] = {
        "site": {"id": f"acl-{secrets.token_hex(3)}", "label": "ACL site"},
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
        **sections,
    }
    full_env = {
        "CRIBWATCH_MQTT_USERNAME": "gateway",
        "CRIBWATCH_MQTT_PASSWORD": USERS["gateway"],
        "CRIBWATCH_STATE_DIR": os.environ["CRIBWATCH_STATE_DIR"],
        "CRIBWATCH_MQTT_CLIENT_ID_IS_USERNAME": "false",  # a test broker without the client-id lock
        **(env or {}),
    }
    return settings_from_mapping(data, env=full_env)


class Events:
    """An extra event sink inside the gateway: the alarm events as the channels see them."""

    name = "test-events"

    def __init__(self) -> None:
        self.alarms: list[AlarmEvent] = []

    def deliver(self, event: OutboundEvent) -> None:
        if isinstance(event, AlarmEvent):
            self.alarms.append(event)

    def close(self) -> None:
        return None


class Device:
    """A staff device logged in with its own account; it keeps everything it receives."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.got: list[aiomqtt.Message] = []
        self.changed = asyncio.Event()

    async def listen(self) -> None:
        async for message in self.client.messages:
            self.got.append(message)
            self.changed.set()

    def on(self, topic: str) -> list[bytes]:
        return [m.payload for m in self.got if m.topic.value == topic and isinstance(m.payload, bytes)]

    async def until(self, check: Any) -> Any:
        async with asyncio.timeout(WAIT_S):
            while not (found := check()):
                self.changed.clear()
                await self.changed.wait()
            return found


@asynccontextmanager
async def device(endpoint: BrokerEndpoint, name: str | None, *filters: str) -> AsyncIterator[Device]:
    """A device logged in as ``name`` (its own account on the ACL broker), or with ``endpoint``'s account."""
    login = endpoint if name is None else as_user(endpoint, name)
    async with new_client(login, identifier=f"{name or 'dev'}-{secrets.token_hex(3)}") as client:
        dev = Device(client)
        for topic_filter in filters:
            await client.subscribe(topic_filter, qos=1)
        task = asyncio.create_task(dev.listen())
        try:
            yield dev
        finally:
            task.cancel()


@asynccontextmanager
async def acl_broker(tmp_path: Path) -> AsyncIterator[MosquittoBroker]:
    with MosquittoBroker(tmp_path / "broker", users=USERS, extra_config=f"acl_file {SHIPPED_ACL}") as broker:
        yield broker


@asynccontextmanager
async def gateway(settings: Settings, events: Events, pins: MockFactory | None = None) -> AsyncIterator[Gateway]:
    gw = Gateway(settings, pin_factory=pins or MockFactory(), extra_channels=[events])
    task = asyncio.create_task(gw.run(), name="gateway-under-test")
    try:
        async with asyncio.timeout(WAIT_S):
            await gw.mqtt.connected.wait()
        yield gw
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def until(check: Any) -> Any:
    async with asyncio.timeout(WAIT_S):
        while not (found := check()):  # noqa: ASYNC110 - a condition in the gateway that no event signals
            await asyncio.sleep(0.02)
        return found


async def test_a_device_cannot_acknowledge_as_another_device(tmp_path: Path) -> None:
    async with acl_broker(tmp_path) as broker:
        ep = broker.endpoint
        settings = site(ep)
        topics = Topics(settings.site.id)
        events = Events()
        async with (
            gateway(settings, events) as gw,
            SimulatedSensor("s-1", topics, as_user(ep, "s-1")) as s1,
            device(ep, "pager-a", "cribwatch/+/ack/answer/#") as pager_a,
            device(ep, "pager-b", topics.ack_answer("pager-b")) as pager_b,
        ):
            await s1.open()
            raised = await until(lambda: next((e for e in events.alarms if e.crib_id == "n-1"), None))

            # pager-a writes on pager-b's ack topic: the broker drops it (the client sees success) ...
            forged = encode(AckPayload(alarm_id=raised.alarm_id, by="staff-a"))
            await pager_a.client.publish(topics.ack("pager-b"), forged, qos=1)
            # ... then on its own topic, after it on the same connection: an ack for a crib with nothing open.
            marker = encode(AckPayload(crib="n-2", by="staff-a", ts=1.0))
            await pager_a.client.publish(topics.ack("pager-a"), marker, qos=1)
            (answer,) = await pager_a.until(lambda: pager_a.on(topics.ack_answer("pager-a")))
            assert decode(AckAnswerPayload, answer).result == "nothing_open"
            # The marker was answered, so the forged ack, sent before it, would have been handled before it.
            (alarm,) = gw.core.crib_state("n-1").alarms
            assert alarm.acknowledged_by is None
            assert not [e for e in events.alarms if e.type is AlarmEventType.ACKNOWLEDGED]
            assert not pager_b.got
            assert dict(gw.stats.rejected) == {"ack_nothing_open": 1}
            assert "Denied PUBLISH" in broker.log_text()

            # On its own topic, a payload that claims pager-b's identity is refused, counted, and not answered.
            claim = encode(AckPayload(alarm_id=raised.alarm_id, by="staff-a", device="pager-b"))
            await pager_a.client.publish(topics.ack("pager-a"), claim, qos=1)
            await until(lambda: gw.stats.rejected["ack_device"] == 1)
            assert gw.core.crib_state("n-1").alarms[0].acknowledged_by is None

            # pager-b acknowledges as itself: taken, and answered on its own answer topic only.
            await pager_b.client.publish(
                topics.ack("pager-b"), encode(AckPayload(alarm_id=raised.alarm_id, by="staff-b")), qos=1
            )
            (taken,) = await pager_b.until(lambda: pager_b.on(topics.ack_answer("pager-b")))
            assert decode(AckAnswerPayload, taken).result == "accepted"
            acked = await until(lambda: [e for e in events.alarms if e.type is AlarmEventType.ACKNOWLEDGED])
            # The site's roster names no staff: pager-b acknowledged as itself; "staff-b" was only a claim.
            assert (acked[0].by, acked[0].device) == ("pager-b", "pager-b")
            assert pager_a.on(topics.ack_answer("pager-b")) == []  # subscribed to every answer: gets its own only


async def test_a_device_receives_its_own_notices_and_not_another_s_each_on_record(tmp_path: Path) -> None:
    async with acl_broker(tmp_path) as broker:
        ep = broker.endpoint
        settings = site(ep)
        topics = Topics(settings.site.id)
        events = Events()
        async with (
            gateway(settings, events) as gw,
            SimulatedSensor("s-1", topics, as_user(ep, "s-1")) as s1,
            device(ep, "pager-a", "cribwatch/+/notify/#") as pager_a,  # may subscribe to all; gets its own only
            device(ep, "pager-b", topics.notify("pager-b")) as pager_b,
        ):
            await s1.open()
            raised = await until(lambda: next((e for e in events.alarms if e.crib_id == "n-1"), None))
            b = Recipient(group="room", member="pager-b", channel="mqtt", address="pager-b")
            a = Recipient(group="site", member="pager-a", channel="mqtt", address="pager-a")
            first = Notice(f"{raised.alarm_id}/1", NoticeKind.ALARM, raised, 0, (b,), raised.at)
            second = Notice(f"{raised.alarm_id}/2", NoticeKind.ESCALATION, raised, 1, (a,), raised.at + 30)
            gw.channels.send(first)  # to pager-b first: the same connection carries both, in order
            (for_b,) = await pager_b.until(lambda: pager_b.on(topics.notify("pager-b")))
            gw.channels.send(second)
            (for_a,) = await pager_a.until(lambda: pager_a.on(topics.notify("pager-a")))
            got_b, got_a = decode(NotifyPayload, for_b), decode(NotifyPayload, for_a)
            assert (got_b.notice_id, got_b.kind, got_b.group, got_b.alarm.alarm_id) == (
                first.notice_id, "alarm", "room", raised.alarm_id,
            )  # fmt: skip
            assert (got_a.kind, got_a.step, got_a.alarm.crib_label) == ("escalation", 1, "Crib 1")
            assert [m.topic.value for m in pager_a.got] == [topics.notify("pager-a")]  # never pager-b's
            stats = await until(lambda: (h := gw.stats_payload().channels.get("mqtt")) and h.delivered == 2 and h)
            assert (stats.state, stats.failed, stats.dropped) == ("ok", 0, 0)

        store = Store.open(settings.store_path, site_id=settings.site.id, readonly=True)
        try:
            rows = store.deliveries(alarm_id=raised.alarm_id)
        finally:
            store.close()
        assert [(r.channel, r.member, r.notice_id, r.result, r.attempt) for r in rows] == [
            ("mqtt", "pager-b", first.notice_id, "delivered", 1),
            ("mqtt", "pager-a", second.notice_id, "delivered", 1),
        ]


async def test_a_hanging_webhook_never_delays_the_alarm_the_buzzer_or_the_staff_devices_notices(
    mqtt_endpoint: BrokerEndpoint,
) -> None:
    """The webhook's endpoint takes each request and never answers. While its first attempt hangs, a second crib's
    alarm reaches a staff subscriber and the buzzer, and a notice to a staff device is delivered and recorded."""
    http = HttpEndpoint()
    http.hanging = True
    try:
        settings = site(
            mqtt_endpoint,
            env={
                "CRIBWATCH_MQTT_USERNAME": mqtt_endpoint.username or "",
                "CRIBWATCH_MQTT_PASSWORD": mqtt_endpoint.password or "",
                "CRIBWATCH_WEBHOOK_URL": http.url(),
            },
            buzzer={"pin": 18},
            channels={"webhook": {"timeout_s": 100, "attempts": 1}},
        )
        topics = Topics(settings.site.id)
        events = Events()
        async with (
            gateway(settings, events) as gw,
            SimulatedSensor("s-1", topics, mqtt_endpoint) as s1,
            SimulatedSensor("s-2", topics, mqtt_endpoint) as s2,
            device(mqtt_endpoint, None, topics.alarm_filter, topics.notify("pager-1")) as staff,
        ):
            await s1.open()
            first = await until(lambda: next((e for e in events.alarms if e.crib_id == "n-1"), None))
            webhook = Recipient(group="site", member="manager-1", channel="webhook", address="")
            pager = Recipient(group="room", member="pager-1", channel="mqtt", address="pager-1")
            gw.channels.send(Notice(f"{first.alarm_id}/1", NoticeKind.ALARM, first, 0, (webhook,), first.at))
            assert await asyncio.to_thread(http.entered.wait, WAIT_S)  # the webhook's attempt now hangs

            await s2.open()
            raised = await staff.until(lambda: [p for p in staff.on(topics.alarm("nursery")) if b'"n-2"' in p])
            assert decode(AlarmEventPayload, raised[0]).event is AlarmEventType.RAISED
            second = await until(lambda: next((e for e in events.alarms if e.crib_id == "n-2"), None))
            assert gw.buzzer is not None
            assert gw.buzzer.sounding
            gw.channels.send(Notice(f"{second.alarm_id}/1", NoticeKind.ALARM, second, 0, (pager,), second.at))
            (notified,) = await staff.until(lambda: staff.on(topics.notify("pager-1")))
            assert decode(NotifyPayload, notified).alarm.crib == "n-2"
            await until(lambda: gw.channels.health()["mqtt"].delivered == 1)
            webhook_health = gw.channels.health()["webhook"]
            assert (webhook_health.queued, webhook_health.delivered) == (1, 0)  # still in its first attempt

            http.release()
            await until(lambda: gw.channels.health()["webhook"].delivered == 1)
        store = Store.open(settings.store_path, site_id=settings.site.id, readonly=True)
        try:
            rows = store.deliveries()
        finally:
            store.close()
        assert [(r.channel, r.alarm_id, r.result) for r in rows] == [
            ("mqtt", second.alarm_id, "delivered"),
            ("webhook", first.alarm_id, "delivered"),
        ]
    finally:
        http.close()


async def test_a_notice_while_the_broker_is_away_is_buffered_on_record_and_reaches_the_device_later(
    tmp_path: Path,
) -> None:
    async with acl_broker(tmp_path) as broker:
        ep = broker.endpoint
        settings = site(ep)
        topics = Topics(settings.site.id)
        events = Events()
        pager_id = f"pager-a-{secrets.token_hex(3)}"
        async with new_client(as_user(ep, "pager-a"), identifier=pager_id, clean_session=False) as pager:
            await pager.subscribe(topics.notify("pager-a"), qos=1)  # a persistent session: the broker keeps notices
        async with gateway(settings, events) as gw, SimulatedSensor("s-1", topics, as_user(ep, "s-1")) as s1:
            await s1.open()
            raised = await until(lambda: next((e for e in events.alarms if e.crib_id == "n-1"), None))
            await asyncio.to_thread(broker.stop)
            await until(lambda: not gw.mqtt.sends_now())
            to_a = Recipient(group="room", member="pager-a", channel="mqtt", address="pager-a")
            gw.channels.send(Notice(f"{raised.alarm_id}/1", NoticeKind.ALARM, raised, 0, (to_a,), raised.at))
            await until(lambda: gw.channels.health()["mqtt"].delivered == 1)
            await asyncio.to_thread(broker.start)
            async with asyncio.timeout(WAIT_S):
                await gw.mqtt.connected.wait()
            async with (
                new_client(as_user(ep, "pager-a"), identifier=pager_id, clean_session=False) as pager,
                asyncio.timeout(WAIT_S),
            ):
                message = await anext(aiter(pager.messages))
            assert isinstance(message.payload, bytes)
            assert decode(NotifyPayload, message.payload).alarm.alarm_id == raised.alarm_id
        store = Store.open(settings.store_path, site_id=settings.site.id, readonly=True)
        try:
            assert [(r.channel, r.result) for r in store.deliveries()] == [("mqtt", "buffered")]
        finally:
            store.close()
