"""MqttLink's rules that need no broker: which connection takes which message, the main one's precedence, and
what it tells the store's outbox."""

from __future__ import annotations

import aiomqtt
import pytest
from paho.mqtt.enums import MQTTErrorCode

import gateway.mqtt.link
from gateway.domain.events import InboundEvent
from gateway.domain.stats import IngestStats
from gateway.domain.vocab import LatchState
from gateway.mqtt.connection import BrokerAddress, new_client
from gateway.mqtt.link import INTAKE_MAX_WAIT_S, MqttLink, OfflineBuffer
from gateway.protocol import ACK, AckPayload, LatchPayload, SensorChannel, Topics, encode
from gateway.protocol.codec import Outgoing

TOPICS = Topics("site")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_link(clock: Clock | None = None) -> tuple[MqttLink, list[InboundEvent], IngestStats]:
    events: list[InboundEvent] = []
    stats = IngestStats()
    link = MqttLink(
        topics=TOPICS,
        broker=BrokerAddress("127.0.0.1", 1883),
        client_id="gw",
        on_event=events.append,
        stats=stats,
        gw_run=1,
        sensor_ids=["s-1"],
        wired_keys=["gpio17"],
        monotonic=clock or Clock(),
    )
    return link, events, stats


def message(topic: str, payload: bytes) -> aiomqtt.Message:
    return aiomqtt.Message(topic, payload, qos=int(ACK.qos), retain=False, mid=1, properties=None)


LATCH = encode(LatchPayload(boot=1, seq=1, ts=1.0, state=LatchState.OPEN))


def test_each_message_is_taken_by_one_connection_only() -> None:
    link, events, stats = make_link()
    own = message(TOPICS.sensor("s-1", SensorChannel.LATCH), LATCH)
    stranger = message(TOPICS.sensor("ghost", SensorChannel.LATCH), LATCH)
    wired = message(TOPICS.sensor("gpio17", SensorChannel.LATCH), LATCH)
    for msg in (own, stranger, wired):  # both connections get these (the intake through its catch-all filter)
        link._on_message(msg)  # noqa: SLF001
        link._on_intake_message(msg)  # noqa: SLF001
    assert len(events) == 1
    assert dict(stats.rejected) == {"unknown_sensor": 1, "wired_sensor": 1}


def test_the_intake_lets_its_turn_go_while_the_main_connection_has_input(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    link, _, _ = make_link()
    link._io_clock = clock  # noqa: SLF001
    assert link._intake_may_read()  # noqa: SLF001 - no main connection: nothing to give way to
    main_input = True
    monkeypatch.setattr(gateway.mqtt.link, "has_input", lambda client: main_input)
    link._client = object()  # type: ignore[assignment]  # noqa: SLF001 - a main connection is up
    clock.now += 0.001
    assert not link._intake_may_read()  # noqa: SLF001
    clock.now += INTAKE_MAX_WAIT_S  # ... but not for longer than this
    assert link._intake_may_read()  # noqa: SLF001
    clock.now += 0.001
    assert not link._intake_may_read()  # noqa: SLF001
    main_input = False
    assert link._intake_may_read()  # noqa: SLF001


async def test_a_client_with_read_when_reads_only_when_told() -> None:
    allowed = False
    client = new_client(BrokerAddress("127.0.0.1", 1883), identifier="t", read_when=lambda: allowed)
    paho = client._client  # noqa: SLF001 - what aiomqtt's socket reader calls
    assert paho.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS  # its turn let go: the socket is not touched
    allowed = True
    assert paho.loop_read() == MQTTErrorCode.MQTT_ERR_NO_CONN  # paho's own loop_read: no connection yet


def test_an_ack_is_taken_on_its_devices_topic_and_the_shared_topic_is_refused() -> None:
    """Acks come on the intake, each on ack/<device>; one queued on the shared topic of earlier versions (on either
    connection's persistent session) acknowledges nothing and is counted."""
    link, events, stats = make_link()
    ack = encode(AckPayload(alarm_id="a-1", by="staff-1", device="pager-1"))
    link._on_intake_message(message(TOPICS.ack("pager-1"), ack))  # noqa: SLF001
    assert [getattr(e, "device", None) for e in events] == ["pager-1"]
    assert not stats.rejected
    link._on_message(message(TOPICS.legacy_ack, ack))  # noqa: SLF001
    link._on_intake_message(message(TOPICS.legacy_ack, ack))  # noqa: SLF001
    assert len(events) == 1
    assert stats.rejected["legacy_ack"] == 2


# -- the durable outbox's side of the link ------------------------------------------------------------


def test_a_full_offline_buffer_drops_crib_states_before_alarm_events() -> None:
    """Alarm events (kept in the store's outbox: they carry a key) wait; a crib state is republished on every
    connect anyway, so it is the one to go when the buffer is full."""
    buffer = OfflineBuffer(limit=3)
    alarm_1, state, alarm_2, alarm_3 = (
        Outgoing("a", b"1", 1, retain=False, key="1:1"),
        Outgoing("s", b"s", 1, retain=True),
        Outgoing("a", b"2", 1, retain=False, key="1:2"),
        Outgoing("a", b"3", 1, retain=False, key="1:3"),
    )
    for item in (alarm_1, state, alarm_2, alarm_3):
        buffer.put(item)
    assert [buffer.pop() for _ in range(len(buffer))] == [alarm_1, alarm_2, alarm_3]
    assert buffer.dropped == 1


class _Info:
    def __init__(self, published: bool) -> None:
        self.published = published

    def is_published(self) -> bool:
        return self.published


def test_what_the_broker_acknowledged_is_reported_delivered_in_order_and_the_rest_sent_again() -> None:
    delivered: list[str] = []
    link = MqttLink(
        topics=TOPICS,
        broker=BrokerAddress("127.0.0.1", 1883),
        client_id="gw",
        on_event=lambda _: None,
        stats=IngestStats(),
        gw_run=1,
        sensor_ids=["s-1"],
        on_delivered=delivered.append,
    )
    first, second, third = _Info(published=True), _Info(published=False), _Info(published=True)
    items = [Outgoing("a", b"1", 1, retain=False, key="1:1"), Outgoing("s", b"s", 1, retain=True)]
    items.append(Outgoing("a", b"3", 1, retain=False, key="1:3"))
    link._unacked.extend(zip([first, second, third], items, strict=True))  # type: ignore[arg-type]  # noqa: SLF001
    link.settle()
    assert delivered == ["1:1"]  # in order: the second is not acknowledged yet, so the third waits its turn
    link._requeue_unacked()  # noqa: SLF001 - the connection died
    assert delivered == ["1:1", "1:3"]
    assert [link.offline_buffer.pop()] == [items[1]]
