"""The MQTT connection's bulk reader (gateway.mqtt.connection.BufferedSocket): every packet whole and in order,
whatever the kernel hands over at once, against the real Mosquitto (plain and TLS) and paho's own parser.

* a stream fed to paho one byte per kernel read, and many packets in one read (no broker: a socket pair);
* through a TCP proxy that forwards the broker's bytes one at a time (a packet split at every byte);
* 256 KB payloads, plain and over TLS (an SSL socket keeps decrypted bytes of its own: ``pending()``);
* the connection cut in the middle of a packet: no half message, the session ends, a QoS 1 message comes again on
  the next connection.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import secrets
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiomqtt
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from devtools.brokers import BrokerEndpoint, MosquittoBroker, free_port
from gateway.mqtt.connection import BrokerAddress, BufferedSocket, _ahead_of_acks, new_client

BIG = 256 * 1024 - 200  # the broker's max_packet_size is 256 KiB: the topic and header need the rest


def address(endpoint: BrokerEndpoint, port: int | None = None) -> BrokerAddress:
    return BrokerAddress(endpoint.host, port or endpoint.port, endpoint.username, endpoint.password)


def payloads(n: int) -> list[bytes]:
    """Sizes that give 1-, 2- and 3-byte remaining lengths (the fixed header paho reads byte by byte)."""
    sizes = [0, 1, 100, 127, 128, 300, 16_383, 16_384, 70_000]
    return [secrets.token_bytes(sizes[i % len(sizes)]) for i in range(n)]


# -------------------------------------------------------------------------- paho's parser, fed by hand


def publish_packet(topic: str, payload: bytes) -> bytes:
    """An MQTT 3.1.1 PUBLISH, QoS 0, as a broker writes it."""
    body = len(topic).to_bytes(2, "big") + topic.encode() + payload
    length, remaining = bytearray(), len(body)
    while True:
        byte, remaining = remaining % 128, remaining // 128
        length.append(byte | (0x80 if remaining else 0))
        if not remaining:
            break
    return b"\x30" + bytes(length) + body


def fed_client() -> tuple[mqtt.Client, socket.socket, BufferedSocket, list[bytes]]:
    """A paho client reading a socket pair through a BufferedSocket; returns the other end to write to."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)  # noqa: FBT003 - the socket API
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    got: list[bytes] = []
    client.on_message = lambda _c, _u, m: got.append(m.payload)
    wrapped = BufferedSocket(ours)
    client._sock = wrapped  # noqa: SLF001 - as paho's own reconnect() sets it
    return client, theirs, wrapped, got


def drain(client: mqtt.Client, sock: BufferedSocket) -> None:
    """What aiomqtt's reader does on a readable event: loop_read while the socket says pending()."""
    while True:
        client.loop_read()
        if sock.pending() == 0:
            break


def test_a_stream_fed_one_byte_per_read_gives_every_packet_whole() -> None:
    client, theirs, wrapped, got = fed_client()
    sent = payloads(9)[:8]  # up to 16 KB: fed byte by byte
    stream = b"".join(publish_packet("t/x", p) for p in sent)
    for i in range(len(stream)):
        theirs.sendall(stream[i : i + 1])
        drain(client, wrapped)
        assert wrapped.buffered() == 0
    assert got == sent
    theirs.close()


def test_many_packets_in_one_read_are_all_parsed_in_one_wakeup() -> None:
    client, theirs, wrapped, got = fed_client()
    sent = [secrets.token_bytes(n % 50) for n in range(300)]
    theirs.sendall(b"".join(publish_packet("t/y", p) for p in sent))
    drain(client, wrapped)
    assert got == sent
    assert wrapped.kernel_reads <= 2  # one recv took them all (plus, at most, one more to see there is no more)
    theirs.close()


def test_a_packet_cut_at_the_end_of_a_read_is_finished_by_the_next() -> None:
    client, theirs, wrapped, got = fed_client()
    first, second = secrets.token_bytes(500), secrets.token_bytes(70_000)
    stream = publish_packet("t/z", first) + publish_packet("t/z", second)
    cut = len(stream) - 1000
    theirs.sendall(stream[:cut])
    drain(client, wrapped)
    assert got == [first]
    theirs.sendall(stream[cut:])
    drain(client, wrapped)
    assert got == [first, second]
    theirs.close()


def test_end_of_stream_in_the_middle_of_a_packet_is_a_lost_connection() -> None:
    client, theirs, _, got = fed_client()
    stream = publish_packet("t/w", b"whole") + publish_packet("t/w", b"never whole")
    theirs.sendall(stream[:-3])
    theirs.close()
    results = []
    for _ in range(3):
        results.append(client.loop_read())
        if client.socket() is None:
            break
    assert got == [b"whole"]
    assert mqtt.MQTT_ERR_CONN_LOST in results or client.socket() is None


# -------------------------------------------------------------------------- against Mosquitto


class SplittingProxy:
    """A TCP proxy between one client and the broker. Broker -> client bytes are forwarded one at a time (with
    TCP_NODELAY and a pause, so each reaches the client in a segment of its own) while ``split`` is set; ``cut_after``
    closes the client's side once that many broker bytes have passed."""

    def __init__(self, broker_port: int) -> None:
        self.broker_port = broker_port
        self.split = True
        self.cut_after: Callable[[bytes], int | None] = lambda seen: None
        self.forwarded = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _serve(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        b_reader, b_writer = await asyncio.open_connection("127.0.0.1", self.broker_port)
        for writer in (c_writer, b_writer):
            writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._writers.append(writer)

        async def up() -> None:
            while data := await c_reader.read(65536):
                b_writer.write(data)
                await b_writer.drain()
            b_writer.close()

        async def down() -> None:
            seen = b""
            while data := await b_reader.read(65536):
                seen += data
                cut = self.cut_after(seen)
                if cut is not None:
                    c_writer.write(data[: max(0, cut - (len(seen) - len(data)))])
                    await c_writer.drain()
                    c_writer.transport.abort()
                    b_writer.transport.abort()
                    return
                if self.split:
                    for i in range(len(data)):
                        c_writer.write(data[i : i + 1])
                        await c_writer.drain()
                        await asyncio.sleep(0.0002)
                else:
                    c_writer.write(data)
                    await c_writer.drain()
                self.forwarded += len(data)
            c_writer.close()

        with contextlib.suppress(ConnectionError):
            await asyncio.gather(up(), down())

    async def close(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@contextlib.asynccontextmanager
async def proxy_to(endpoint: BrokerEndpoint) -> AsyncIterator[tuple[SplittingProxy, int]]:
    proxy = SplittingProxy(endpoint.port)
    port = await proxy.start()
    try:
        yield proxy, port
    finally:
        await proxy.close()


async def receive(client: aiomqtt.Client, n: int, timeout_s: float = 30.0) -> list[bytes]:
    got: list[bytes] = []
    async with asyncio.timeout(timeout_s):
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            got.append(message.payload)
            if len(got) == n:
                break
    return got


async def publish_all(endpoint: BrokerEndpoint, topic: str, sent: list[bytes], *, qos: int = 1) -> None:
    async with new_client(address(endpoint), identifier=f"pub-{secrets.token_hex(4)}") as publisher:
        for payload in sent:
            await publisher.publish(topic, payload, qos=qos)


def buffered_socket(client: aiomqtt.Client) -> BufferedSocket:
    sock = client._client.socket()  # noqa: SLF001
    assert isinstance(sock, BufferedSocket)
    return sock


async def test_every_byte_split_by_a_proxy_still_gives_every_message(mqtt_endpoint: BrokerEndpoint) -> None:
    topic = f"bulk/split/{secrets.token_hex(4)}"
    sent = [secrets.token_bytes(n) for n in (0, 1, 100, 127, 128, 300, 1000)]  # each byte a segment of its own
    async with (
        proxy_to(mqtt_endpoint) as (proxy, port),
        new_client(address(mqtt_endpoint, port), identifier=f"sub-{secrets.token_hex(4)}") as sub,
    ):
        await sub.subscribe(topic, qos=1)
        await publish_all(mqtt_endpoint, topic, sent)
        assert await receive(sub, len(sent)) == sent
        assert proxy.split
        assert buffered_socket(sub).kernel_reads > len(sent)  # the parts did come one by one


async def test_a_burst_of_large_and_small_messages_arrives_whole_and_in_order(mqtt_endpoint: BrokerEndpoint) -> None:
    topic = f"bulk/burst/{secrets.token_hex(4)}"
    sent = [*payloads(27), secrets.token_bytes(BIG), b"after the big one", secrets.token_bytes(BIG)]
    async with new_client(address(mqtt_endpoint), identifier=f"sub-{secrets.token_hex(4)}") as sub:
        await sub.subscribe(topic, qos=1)
        await publish_all(mqtt_endpoint, topic, sent)
        assert await receive(sub, len(sent)) == sent
        sock = buffered_socket(sub)
        assert sock.raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)  # the option still reaches the socket


async def test_a_cut_in_the_middle_of_a_packet_ends_the_session_and_qos1_comes_again(
    mqtt_endpoint: BrokerEndpoint,
) -> None:
    topic = f"bulk/cut/{secrets.token_hex(4)}"
    identifier = f"sub-{secrets.token_hex(4)}"
    payload = secrets.token_bytes(BIG)
    async with new_client(address(mqtt_endpoint), identifier=identifier, clean_session=False) as sub:
        await sub.subscribe(topic, qos=1)  # the persistent session keeps the filter
    async with proxy_to(mqtt_endpoint) as (proxy, port):
        proxy.split = False
        # Let the CONNACK through, then cut in the middle of the next packet big enough to be the PUBLISH.
        proxy.cut_after = lambda seen: len(seen) - 5000 if len(seen) > 100_000 else None
        client = new_client(address(mqtt_endpoint, port), identifier=identifier, clean_session=False)
        got: list[bytes] = []

        async def session() -> None:
            async with client:
                await publish_all(mqtt_endpoint, topic, [payload])
                async with asyncio.timeout(30):
                    async for message in client.messages:
                        assert isinstance(message.payload, bytes)
                        got.append(message.payload)

        with pytest.raises(aiomqtt.MqttError):
            await session()
        assert got == []  # no half message was handed on
    async with new_client(address(mqtt_endpoint), identifier=identifier, clean_session=False) as sub:
        assert await receive(sub, 1) == [payload]  # delivered again, whole, on the next connection


# -------------------------------------------------------------------------- TLS


def make_certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    argv = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)]  # fmt: skip
    subprocess.run(argv, check=True, capture_output=True)
    return cert, key


async def test_tls_messages_small_and_large_arrive_whole(tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path)
    tls_port = free_port()
    extra = f"listener {tls_port} 127.0.0.1\ncertfile {cert}\nkeyfile {key}\n"
    password = secrets.token_urlsafe(12)
    with MosquittoBroker(tmp_path / "broker", users={"u": password}, extra_config=extra) as broker:
        plain = broker.endpoint
        context = ssl.create_default_context(cafile=str(cert))
        tls = BrokerAddress("127.0.0.1", tls_port, "u", password)
        topic = "bulk/tls"
        sent = [*payloads(18), secrets.token_bytes(BIG), *(secrets.token_bytes(20) for _ in range(200))]
        async with new_client(tls, identifier="tls-sub", tls_context=context) as sub:
            sock = buffered_socket(sub)
            assert isinstance(sock.raw, ssl.SSLSocket)
            await sub.subscribe(topic, qos=1)
            await publish_all(plain, topic, sent)
            assert await receive(sub, len(sent)) == sent
            # and the other way: a publish written over TLS reaches a plain subscriber
            async with new_client(address(plain), identifier="plain-sub") as plain_sub:
                await plain_sub.subscribe("bulk/tls-back", qos=1)
                await sub.publish("bulk/tls-back", b"back", qos=1)
                assert await receive(plain_sub, 1) == [b"back"]


async def test_a_connection_that_lets_its_turn_go_still_reads_what_it_had_buffered(
    mqtt_endpoint: BrokerEndpoint,
) -> None:
    """``read_when`` (the gateway's intake): a turn given up with whole packets in the buffer (which the kernel will
    not signal again) is taken up again by a timer; nothing waits for more traffic."""
    topic = f"bulk/turns/{secrets.token_hex(4)}"
    calls = 0
    refused = 0

    def every_other() -> bool:
        nonlocal calls, refused
        calls += 1
        if calls > 4 and calls % 2 == 0:  # the CONNACK and SUBACK first, then every other turn refused
            refused += 1
            return False
        return True

    sent = [secrets.token_bytes(40) for _ in range(200)]
    client = new_client(
        address(mqtt_endpoint), identifier=f"sub-{secrets.token_hex(4)}", read_when=every_other, read_retry_s=0.01
    )
    async with client:
        await client.subscribe(topic, qos=0)
        async with new_client(address(mqtt_endpoint), identifier=f"pub-{secrets.token_hex(4)}") as publisher:
            for payload in sent:  # QoS 0, written at once: they reach the subscriber in few segments
                publisher._client.publish(topic, payload, qos=0)  # noqa: SLF001
            assert await receive(client, len(sent), timeout_s=10) == sent
    assert refused > 0


def test_an_alarm_published_from_a_message_handler_leaves_before_that_message_s_puback() -> None:
    """publish_now puts the alarm ahead of the PUBACKs paho queued while parsing (not ahead of anything else)."""

    def packet(command: int, name: str, pos: int = 0) -> dict[str, object]:
        return {"command": command, "name": name, "pos": pos}

    queue = collections.deque([packet(0x30, "older publish"), packet(0x40, "ack 1"), packet(0x40, "ack 2")])
    queue.append(packet(0x32, "alarm"))
    _ahead_of_acks(queue)
    assert [p["name"] for p in queue] == ["older publish", "alarm", "ack 1", "ack 2"]
    begun = collections.deque([packet(0x40, "ack begun", pos=1), packet(0x32, "alarm")])
    _ahead_of_acks(begun)
    assert [p["name"] for p in begun] == ["ack begun", "alarm"]
