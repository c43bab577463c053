"""MqttLink's rules that need no broker: which connection takes which message, and the main one's precedence."""

from __future__ import annotations

import aiomqtt
import pytest
from paho.mqtt.enums import MQTTErrorCode

import gateway.mqtt.link
from gateway.domain.events import InboundEvent
from gateway.domain.stats import IngestStats
from gateway.domain.vocab import LatchState
from gateway.mqtt.connection import BrokerAddress, new_client
from gateway.mqtt.link import INTAKE_MAX_WAIT_S, MqttLink
from gateway.protocol import ACK, AckPayload, LatchPayload, SensorChannel, Topics, encode

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


def test_an_ack_on_the_main_connection_was_queued_for_the_one_connection_gateway_and_is_taken() -> None:
    link, events, stats = make_link()
    ack = encode(AckPayload(alarm_id="a-1", by="staff-1", device="pager-1"))
    link._on_message(message(TOPICS.ack, ack))  # noqa: SLF001
    link._on_intake_message(message(TOPICS.ack, ack))  # noqa: SLF001 - where acks come from now
    assert len(events) == 2
    assert not stats.rejected
