"""The broker helpers of devtools.brokers, against real brokers, and the ACL shipped in deploy/mosquitto."""

from __future__ import annotations

import asyncio
import logging
import socket
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from devtools import brokers
from devtools.brokers import AmqttBroker, BrokerEndpoint, MosquittoBroker, start_embedded_broker

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
SHIPPED_ACL = REPO / "deploy" / "mosquitto" / "cribwatch.acl"
# Without TCP_NODELAY on the client too, some hops still wait about 44 ms for a delayed ACK.
NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
TIMEOUT_S = 5.0


def client(endpoint: BrokerEndpoint, **kwargs: Any) -> aiomqtt.Client:
    return aiomqtt.Client(
        endpoint.host,
        endpoint.port,
        username=endpoint.username,
        password=endpoint.password,
        socket_options=NODELAY,
        **kwargs,
    )


def as_user(endpoint: BrokerEndpoint, username: str, password: str) -> BrokerEndpoint:
    return BrokerEndpoint(endpoint.host, endpoint.port, username, password)


def unique_topic() -> str:
    return f"test/{uuid.uuid4().hex}"


async def next_message(subscriber: aiomqtt.Client, within: float = TIMEOUT_S) -> aiomqtt.Message:
    async with asyncio.timeout(within):
        return await anext(subscriber.messages)


async def assert_round_trip(endpoint: BrokerEndpoint, qos: int = 1) -> None:
    topic = unique_topic()
    async with client(endpoint) as subscriber, client(endpoint) as publisher:
        await subscriber.subscribe(topic, qos=qos)
        await publisher.publish(topic, b"latch open", qos=qos)
        message = await next_message(subscriber)
    assert message.topic.value == topic
    assert message.payload == b"latch open"


# -- Mosquitto: the session fixture ------------------------------------------------------------------


async def test_mosquitto_accepts_authenticated_client(mqtt_endpoint: BrokerEndpoint) -> None:
    assert mqtt_endpoint.host == "127.0.0.1"
    assert mqtt_endpoint.username == "cribwatch"
    assert mqtt_endpoint.password
    async with client(mqtt_endpoint) as connected:
        await connected.publish(unique_topic(), b"hello", qos=1)


async def test_mosquitto_round_trip(mqtt_endpoint: BrokerEndpoint) -> None:
    await assert_round_trip(mqtt_endpoint)


async def test_mosquitto_refuses_wrong_password(mqtt_endpoint: BrokerEndpoint) -> None:
    wrong = as_user(mqtt_endpoint, "cribwatch", "not-the-password")
    with pytest.raises(aiomqtt.MqttCodeError) as refused:
        async with client(wrong):
            pass
    # CONNACK 5 "not authorized" (paho reports it as reason code 135); 4 would be "bad user name or password".
    assert "not authorized" in str(refused.value).lower() or "bad user name" in str(refused.value).lower()


async def test_mosquitto_refuses_anonymous(mqtt_endpoint: BrokerEndpoint) -> None:
    anonymous = BrokerEndpoint(mqtt_endpoint.host, mqtt_endpoint.port)
    with pytest.raises(aiomqtt.MqttCodeError):
        async with client(anonymous):
            pass


def test_mosquitto_config_and_log(mosquitto_broker: MosquittoBroker) -> None:
    config = mosquitto_broker.config_path.read_text()
    assert "set_tcp_nodelay true" in config
    assert f"listener {mosquitto_broker.endpoint.port} 127.0.0.1" in config
    assert "allow_anonymous false" in config
    assert "mosquitto version" in mosquitto_broker.log_text()


QUEUE_LIMITS = (
    "set_tcp_nodelay", "max_inflight_messages", "max_queued_messages", "max_queued_bytes", "max_packet_size",
)  # fmt: skip


def _settings(text: str) -> dict[str, str]:
    lines = (line.split(None, 1) for line in text.splitlines() if line.strip() and not line.startswith("#"))
    return {parts[0]: parts[1].strip() for parts in lines if len(parts) == 2}


def test_the_session_broker_runs_the_shipped_configuration(mosquitto_broker: MosquittoBroker) -> None:
    """Every directive of deploy/mosquitto/mosquitto.conf, but the ones naming this machine's paths, users and port,
    and the ACL with its client-id lock (the session broker's one account plays every role)."""
    placed = {"pid_file", "user", "listener", "persistence_location", "log_dest", "password_file", "acl_file"}
    placed |= {"use_username_as_clientid", "include_dir"}
    shipped = _settings((REPO / "deploy" / "mosquitto" / "mosquitto.conf").read_text())
    ours = _settings(mosquitto_broker.config_path.read_text())
    assert {k: v for k, v in ours.items() if k not in placed} == {k: v for k, v in shipped.items() if k not in placed}


def test_test_broker_has_the_shipped_brokers_queue_limits(mosquitto_broker: MosquittoBroker) -> None:
    """Tests and benchmarks see the queues a site's broker has (Mosquitto's defaults drop messages sooner)."""
    shipped = _settings((REPO / "deploy" / "mosquitto" / "mosquitto.conf").read_text())
    ours = _settings(mosquitto_broker.config_path.read_text())
    assert {k: ours.get(k) for k in QUEUE_LIMITS} == {k: shipped[k] for k in QUEUE_LIMITS}


async def test_mosquitto_loopback_hop_is_fast(mqtt_endpoint: BrokerEndpoint) -> None:
    """A publisher-to-subscriber hop on loopback takes well under a millisecond here.

    A sanity bound, not a proof of ``set_tcp_nodelay``: this strict ping-pong did not show the 44 ms
    Nagle delay on this machine even without it (test_mosquitto_config_and_log checks the option).
    """
    topic = unique_topic()
    hops: list[float] = []
    async with client(mqtt_endpoint) as subscriber, client(mqtt_endpoint) as publisher:
        await subscriber.subscribe(topic, qos=0)
        for i in range(30):
            started = time.perf_counter()
            await publisher.publish(topic, str(i).encode(), qos=0)
            message = await next_message(subscriber)
            hops.append(time.perf_counter() - started)
            assert message.payload == str(i).encode()
    assert statistics.median(hops[5:]) < 0.015, f"median hop {statistics.median(hops[5:]) * 1000:.1f} ms"


# -- Mosquitto: brokers of their own (restart, kill, persistence) ------------------------------------


async def test_restart_keeps_port_and_accepts_clients_again(tmp_path: Path) -> None:
    with MosquittoBroker(tmp_path, users={"alice": "wonderland"}) as broker:
        before = broker.endpoint
        await assert_round_trip(before)
        pid = broker.pid

        after = broker.restart()
        assert after == before
        assert broker.pid != pid
        await assert_round_trip(after)

        broker.kill()
        assert not broker.running
        with pytest.raises(aiomqtt.MqttError):
            async with client(before):
                pass
        assert broker.start() == before
        await assert_round_trip(before)
    assert not broker.running


async def test_persistent_session_survives_restart(tmp_path: Path) -> None:
    topic = unique_topic()
    identifier = f"persistent-{uuid.uuid4().hex[:8]}"
    with MosquittoBroker(tmp_path, users={"gateway": "gw-secret"}) as broker:
        endpoint = broker.endpoint
        async with client(endpoint, identifier=identifier, clean_session=False) as persistent:
            await persistent.subscribe(topic, qos=1)
        async with client(endpoint) as publisher:
            await publisher.publish(topic, b"queued while offline", qos=1)

        broker.restart()

        async with client(endpoint, identifier=identifier, clean_session=False) as persistent:
            message = await next_message(persistent)
        assert message.payload == b"queued while offline"
        assert (tmp_path / "mosquitto.db").exists()


def test_start_failure_reports_mosquittos_error(tmp_path: Path) -> None:
    broker = MosquittoBroker(tmp_path, extra_config="no_such_option 1")
    with pytest.raises(RuntimeError, match='Unknown configuration variable "no_such_option"'):
        broker.start()
    assert not broker.running


def test_start_timeout_kills_the_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    never_listens = tmp_path / "fake-mosquitto"
    never_listens.write_text("#!/bin/sh\necho pretending\nexec sleep 30\n")
    never_listens.chmod(0o755)
    monkeypatch.setattr(brokers, "find_mosquitto", lambda: str(never_listens))
    monkeypatch.setattr(brokers, "_START_TIMEOUT_S", 0.3)
    broker = MosquittoBroker(tmp_path / "broker")
    with pytest.raises(RuntimeError, match=r"did not listen(.|\n)*pretending"):
        broker.start()
    assert not broker.running


def test_retries_when_the_free_port_was_taken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = iter([taken, brokers.free_port()])
        monkeypatch.setattr(brokers, "free_port", lambda: next(ports))
        with MosquittoBroker(tmp_path) as broker:
            assert broker.endpoint.port != taken
            assert broker.running


def test_anonymous_config_without_users(tmp_path: Path) -> None:
    with MosquittoBroker(tmp_path) as broker:
        assert broker.endpoint.username is None
        assert "allow_anonymous true" in broker.config_path.read_text()


async def test_password_file_without_passwd_tool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without mosquitto_passwd the hash is written by hand; Mosquitto must accept it."""
    monkeypatch.setattr(brokers, "_find_mosquitto_passwd", lambda _mosquitto: None)
    with MosquittoBroker(tmp_path, users={"sensor-1": "pa:ss word"}) as broker:
        assert broker.password_path.read_text().startswith("sensor-1:$7$101$")
        await assert_round_trip(broker.endpoint)


# -- amqtt and the demo's choice ---------------------------------------------------------------------


async def test_amqtt_round_trip() -> None:
    async with AmqttBroker() as broker:
        endpoint = broker.endpoint
        assert endpoint.host == "127.0.0.1"
        assert endpoint.username is None
        await assert_round_trip(endpoint)
    assert not broker.running


async def test_embedded_broker_prefers_mosquitto(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="devtools.brokers")
    async with start_embedded_broker(tmp_path) as endpoint:
        await assert_round_trip(endpoint)
    assert "demo broker: Mosquitto" in caplog.text
    assert (tmp_path / "mosquitto.log").exists()


async def test_embedded_broker_falls_back_to_amqtt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(brokers, "find_mosquitto", lambda: None)
    caplog.set_level(logging.INFO, logger="devtools.brokers")
    async with start_embedded_broker(tmp_path) as endpoint:
        await assert_round_trip(endpoint)
    assert "demo broker: amqtt" in caplog.text


# -- the ACL shipped for site gateways ---------------------------------------------------------------


async def test_shipped_acl(tmp_path: Path) -> None:
    """Sensors write only under their own id; a staff device acknowledges on its own ack topic and reads its own
    answers; the shared `staff` board account only reads; the gateway does everything.

    A denied PUBLISH still succeeds for the client: Mosquitto drops it silently. So each forbidden message
    is followed, on the same connection, by an allowed one, and the gateway must get the allowed one only.
    """
    users = {"gateway": "gw", "s1": "s1-secret", "s2": "s2-secret", "staff": "staff-secret", "pager-1": "p1-secret"}
    with MosquittoBroker(tmp_path, users=users, extra_config=f"acl_file {SHIPPED_ACL}") as broker:
        ep = broker.endpoint
        async with (
            client(as_user(ep, "gateway", "gw")) as gateway,
            client(as_user(ep, "s1", "s1-secret"), identifier="sensor-s1") as sensor,
            client(as_user(ep, "staff", "staff-secret")) as staff,
            client(as_user(ep, "pager-1", "p1-secret")) as pager,
        ):
            await gateway.subscribe("cribwatch/#", qos=1)
            await staff.subscribe("cribwatch/+/alarm/#", qos=1)
            await staff.subscribe("cribwatch/+/sensor/#", qos=1)  # allowed to subscribe, never delivered

            for forbidden in ("cribwatch/site1/sensor/s2/latch", "cribwatch/site1/alarm/room1"):
                await sensor.publish(forbidden, b"forged", qos=1)
            await sensor.publish("cribwatch/site1/sensor/s1/latch", b"open", qos=1)
            got = await next_message(gateway)
            assert (got.topic.value, got.payload) == ("cribwatch/site1/sensor/s1/latch", b"open")

            # The board account acknowledges nothing (the shared ack topic is gone); a device writes only its own.
            await staff.publish("cribwatch/site1/alarm/room1", b"forged", qos=1)
            await staff.publish("cribwatch/site1/ack", b"shared", qos=1)
            await pager.publish("cribwatch/site1/ack", b"shared", qos=1)
            await pager.publish("cribwatch/site1/ack/pager-2", b"as another", qos=1)
            await pager.publish("cribwatch/site1/ack/pager-1", b"ack", qos=1)
            got = await next_message(gateway)
            assert (got.topic.value, got.payload) == ("cribwatch/site1/ack/pager-1", b"ack")

            await gateway.publish("cribwatch/site1/alarm/room1", b"alarm", qos=1)
            got = await next_message(staff)
            assert (got.topic.value, got.payload) == ("cribwatch/site1/alarm/room1", b"alarm")
            got = await next_message(gateway)  # its own alarm, through cribwatch/#
            assert got.topic.value == "cribwatch/site1/alarm/room1"

            # The gateway answers each ack on ack/answer/<device>; a device reads its own answers only.
            await pager.subscribe("cribwatch/+/ack/answer/#", qos=1)
            await gateway.publish("cribwatch/site1/ack/answer/pager-2", b"not yours", qos=1)
            await gateway.publish("cribwatch/site1/ack/answer/pager-1", b"answer", qos=1)
            got = await next_message(pager)
            assert (got.topic.value, got.payload) == ("cribwatch/site1/ack/answer/pager-1", b"answer")
            for _ in range(2):
                got = await next_message(gateway)
                assert got.topic.value.startswith("cribwatch/site1/ack/answer/")

            # The gateway deletes a retained ack with a zero-length retained message: it may write any ack topic.
            await gateway.publish("cribwatch/site1/ack/pager-1", b"", qos=1, retain=True)
            got = await next_message(gateway)
            assert (got.topic.value, got.payload) == ("cribwatch/site1/ack/pager-1", b"")

            with pytest.raises(TimeoutError):
                await next_message(staff, within=0.3)
            with pytest.raises(TimeoutError):
                await next_message(pager, within=0.1)
            with pytest.raises(TimeoutError):
                await next_message(gateway, within=0.1)
        log = broker.log_text()  # Mosquitto logs client ids, not usernames
        assert "Denied PUBLISH from sensor-s1 (d0, q1, r0, m1, 'cribwatch/site1/sensor/s2/latch'" in log


# -- the project's client: a subscribe given up on ------------------------------------------------


async def test_a_subscribe_cancelled_before_its_suback_logs_no_error(
    mqtt_endpoint: BrokerEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    """A gateway stopped while it subscribes (SIGTERM right after connecting) gets the broker's SUBACK for a call
    that no longer waits; aiomqtt reports that as an ERROR with a traceback, which new_client's logger turns
    into a DEBUG line: a clean shutdown must not read as a failure in a technician's log."""
    from gateway.mqtt.connection import BrokerAddress, new_client

    address = BrokerAddress(mqtt_endpoint.host, mqtt_endpoint.port, mqtt_endpoint.username, mqtt_endpoint.password)
    caplog.set_level(logging.DEBUG)
    async with new_client(address, identifier=f"t-{uuid.uuid4().hex[:8]}") as connected:
        pending = asyncio.create_task(connected.subscribe(unique_topic(), qos=1))
        await asyncio.sleep(0)  # the SUBSCRIBE is written; the broker's reply has not been read yet
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        await connected.publish(unique_topic(), b"x", qos=1)  # a round trip: the late SUBACK is read by now
    late = [r for r in caplog.records if "given up on" in r.getMessage()]
    assert [(r.levelno, r.exc_info) for r in late] == [(logging.DEBUG, None)]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.records
