"""How every cribwatch process opens an MQTT connection: one place for the socket and session rules.

Every asyncio MQTT client of the project (gateway, simulator, demo, benchmark) is made by :func:`new_client`
(the benchmark's relay is plain paho on purpose: it is the baseline).
paho-mqtt is reached through aiomqtt except here, for what aiomqtt does not offer: writing a publish to the
socket at once, dropping a connection the way a dying sensor does, letting one connection's socket be read
before another's, and reading the socket in bulk (:class:`BufferedSocket`).

**Reads in bulk.** paho parses a packet with one ``recv`` per byte of its fixed header (1 + 1 to 4 bytes) and one
for the rest, and aiomqtt runs paho's ``loop_read`` (one packet, or a few) per readable event of the event loop,
then loops while the socket object says ``pending() > 0`` (meant for the bytes an SSL socket has decrypted but
not handed out). :func:`new_client` hands paho a :class:`BufferedSocket` instead of the socket: one ``recv`` of up
to :data:`READ_SIZE` bytes takes everything the kernel holds, paho's small reads are served from that buffer, and
its ``pending()`` counts the buffered bytes, so aiomqtt's loop parses every complete packet of the buffer in the
same wake-up. A packet cut at the end of the buffer is kept by paho (its own partial-packet state) until the next
readable event; an SSL socket's own pending bytes are counted too.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import select
import socket
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

from gateway.settings import MqttConfig

log = logging.getLogger("cribwatch.mqtt.client")


class _LateReplyFilter(logging.Filter):
    """aiomqtt logs an ERROR with a traceback when a SUBACK or UNSUBACK arrives for a call that was given up
    on (cancelled, say by a shutdown while subscribing). Nothing is wrong then: the line becomes a DEBUG one
    without the traceback, so a clean shutdown does not look like a failure."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith("Unexpected message ID"):
            if not log.isEnabledFor(logging.DEBUG):
                return False
            record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
            record.msg = "late reply from the broker to a call given up on (message id %d)"
            record.exc_info = record.exc_text = None
        return True


log.addFilter(_LateReplyFilter())

TCP_NODELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
"""Measured here: without it, Nagle plus delayed ACK cost about 44 ms on every MQTT hop."""

READ_SIZE = 65536
"""Bytes asked of the kernel per ``recv``: more than a loopback socket usually holds at once."""


class BufferedSocket:
    """The socket paho reads from: one ``recv`` of the kernel per :data:`READ_SIZE` bytes, paho's small reads served
    from a buffer. Everything else (send, fileno, close, setsockopt, shutdown...) goes to the socket itself.

    ``pending()`` is what aiomqtt's reader loops on: the bytes buffered here (and, for TLS, those the SSL socket has
    decrypted), so it parses every complete packet before it returns to the event loop. While ``hold`` is set (a
    connection that lets another go first, :func:`new_client` ``read_when``) it says 0, so that loop ends.
    """

    __slots__ = ("_buf", "_pos", "_sock", "hold", "kernel_reads")

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = b""
        self._pos = 0
        self.hold = False
        self.kernel_reads = 0
        """``recv`` calls that reached the kernel (for tests and benchmarks)."""

    @property
    def raw(self) -> socket.socket:
        return self._sock

    def recv(self, bufsize: int) -> bytes:
        buf, pos = self._buf, self._pos
        if pos < len(buf):
            end = pos + bufsize
            if end >= len(buf):
                self._buf, self._pos = b"", 0
                return buf[pos:] if pos else buf
            self._pos = end
            return buf[pos:end]
        # Raises BlockingIOError (or ssl.SSLWantReadError) when there is nothing: paho handles both.
        data = self._sock.recv(max(bufsize, READ_SIZE))
        self.kernel_reads += 1
        if len(data) <= bufsize:
            return data
        self._buf, self._pos = data, bufsize
        return data[:bufsize]

    def buffered(self) -> int:
        """Bytes received from the kernel that paho has not taken yet."""
        return len(self._buf) - self._pos

    def pending(self) -> int:
        if self.hold:
            return 0
        waiting = len(self._buf) - self._pos
        if isinstance(self._sock, ssl.SSLSocket):
            waiting += self._sock.pending()
        return waiting

    def send(self, data: bytes | bytearray | memoryview) -> int:
        return self._sock.send(data)

    def fileno(self) -> int:
        return self._sock.fileno()

    def setblocking(self, flag: bool) -> None:
        self._sock.setblocking(flag)

    def close(self) -> None:
        self._buf, self._pos = b"", 0
        self._sock.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """TLS to the broker: the CA file that signed its certificate (None: the system's CAs) and, if the broker asks
    for one, a client certificate and its key (PEM files)."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None = field(default=None)
    password: str | None = field(default=None, repr=False)
    tls: TlsOptions | None = None
    """None: plain MQTT; else every client of :func:`new_client` for this address speaks TLS."""


def make_tls_context(options: TlsOptions) -> ssl.SSLContext:
    """A client context that checks the broker's certificate and host name against ``options.ca_file`` (or the
    system's CAs), with the client certificate if given. TLS 1.2 at least."""
    context = ssl.create_default_context(cafile=options.ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if options.cert_file is not None:
        context.load_cert_chain(options.cert_file, options.key_file)
    return context


def tls_options(mqtt: MqttConfig) -> TlsOptions | None:
    if not mqtt.tls:
        return None
    return TlsOptions(mqtt.tls_ca_file, mqtt.tls_cert_file, mqtt.tls_key_file)


def broker_address(mqtt: MqttConfig) -> BrokerAddress:
    """Where the site file (and its environment) says the broker is, with the credentials to give it."""
    password = None if mqtt.password is None else mqtt.password.get_secret_value()
    return BrokerAddress(mqtt.host, mqtt.port, mqtt.username, password, tls_options(mqtt))


def intake_address(mqtt: MqttConfig) -> BrokerAddress:
    """The gateway's second (intake) connection: its own account when the credentials file has one (the shipped
    broker makes the username the client id, so the two connections need two accounts), else the main one's."""
    if mqtt.intake_username is None or mqtt.intake_password is None:
        return broker_address(mqtt)
    password = mqtt.intake_password.get_secret_value()
    return BrokerAddress(mqtt.host, mqtt.port, mqtt.intake_username, password, tls_options(mqtt))


def new_client(
    broker: BrokerAddress,
    *,
    identifier: str,
    will: aiomqtt.Will | None = None,
    clean_session: bool = True,
    keepalive: int = 60,
    max_inflight: int = 100,
    timeout: float = 10.0,
    on_message: Callable[[aiomqtt.Message], None] | None = None,
    read_when: Callable[[], bool] | None = None,
    read_retry_s: float = 0.02,
    tls_context: ssl.SSLContext | None = None,
) -> aiomqtt.Client:
    """An aiomqtt client with TCP_NODELAY on its socket; connect with ``async with``.

    With ``on_message``, every received message goes to that function (on the event loop's thread, as soon as
    paho's ``loop_read`` that parsed it returns: :class:`_Inbox`) instead of ``client.messages``; iterating
    ``client.messages`` then only waits for the connection to end. This saves a task, an ``asyncio.wait`` and an
    event-loop iteration per message.

    With ``read_when``, the client reads from its socket only when ``read_when()`` is true: when the socket
    is readable and ``read_when()`` is false, it lets its turn go (the event loop asks again on its next
    iteration, since the socket stays readable). This gives another connection of the process precedence. Bytes
    already buffered when it lets its turn go are read ``read_retry_s`` later (the kernel no longer signals them).

    With ``tls_context``, or TLS options in ``broker``, the connection is TLS (aiomqtt's ``tls_context``); reads are
    buffered the same way.
    """
    if tls_context is None and broker.tls is not None:
        tls_context = make_tls_context(broker.tls)
    inbox = None if on_message is None else _Inbox(on_message)
    client = aiomqtt.Client(
        broker.host,
        broker.port,
        username=broker.username,
        password=broker.password,
        identifier=identifier,
        will=will,
        clean_session=clean_session,
        keepalive=keepalive,
        max_inflight_messages=max_inflight,
        socket_options=(TCP_NODELAY,),
        tls_context=tls_context,
        timeout=timeout,
        queue_type=None if inbox is None else _handing_queue(inbox),
        logger=log,
    )
    # aiomqtt warns above 10 concurrent publishes; a gateway resyncing every crib's state has more.
    client.pending_calls_threshold = max_inflight
    _buffer_reads(client, (TCP_NODELAY,))
    if inbox is not None:
        _hand_on_after_reads(client, inbox)
    if read_when is not None:
        _read_only_when(client, read_when, read_retry_s)
    return client


def _buffer_reads(client: aiomqtt.Client, options: Iterable[tuple[int, int, int]]) -> None:
    """Shadow ``_create_socket`` on this one paho client: the connected socket (TLS already wrapped), with
    ``options`` set, goes to paho inside a :class:`BufferedSocket`. (aiomqtt sets its ``socket_options`` only on a
    plain ``socket.socket``, so they are set here.)"""
    paho = client._client  # noqa: SLF001 - see the module documentation
    create = paho._create_socket  # noqa: SLF001

    def create_socket() -> Any:
        sock = create()
        if not isinstance(sock, socket.socket):  # a websocket wrapper: left as paho made it
            return sock
        for option in options:
            sock.setsockopt(*option)
        return BufferedSocket(sock)

    paho._create_socket = create_socket  # type: ignore[method-assign]  # noqa: SLF001


def _read_only_when(client: aiomqtt.Client, may_read: Callable[[], bool], retry_s: float) -> None:
    """aiomqtt's socket reader calls ``loop_read()`` on its paho client once per readable event (and again while the
    socket says ``pending()``): shadow that method on this one paho client with one that first asks ``may_read()``.

    When it may not read, the buffered socket is put on hold (``pending()`` says 0, so aiomqtt's loop ends); if bytes
    are already buffered, a retry is scheduled, since the kernel will not signal them again."""
    paho = client._client  # noqa: SLF001 - see the module documentation
    read = paho.loop_read
    retry: list[asyncio.TimerHandle] = []

    def retry_read() -> None:
        retry.clear()
        try:
            while loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS:
                sock = paho.socket()
                if not isinstance(sock, BufferedSocket) or sock.pending() == 0:
                    break
        except Exception as exc:  # noqa: BLE001 - as aiomqtt's own reader: a broken connection ends the session
            disconnected = client._disconnected  # noqa: SLF001
            if not disconnected.done():
                disconnected.set_exception(exc)

    def loop_read(max_packets: int = 1) -> MQTTErrorCode:
        sock = paho.socket()
        if not may_read():
            if isinstance(sock, BufferedSocket):
                sock.hold = True
                if sock.buffered() and not retry:
                    retry.append(asyncio.get_running_loop().call_later(retry_s, retry_read))
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        if isinstance(sock, BufferedSocket):
            sock.hold = False
        return read(max_packets)

    paho.loop_read = loop_read  # type: ignore[method-assign]


def has_input(client: aiomqtt.Client) -> bool:
    """Whether the client's socket has received bytes that it has not read yet (False without a connection)."""
    sock = client._client.socket()  # noqa: SLF001 - see the module documentation
    if sock is None:
        return False
    if isinstance(sock, BufferedSocket) and sock.buffered():
        return True
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


class _Inbox:
    """Messages that paho parsed during one ``loop_read``, handed to the handler as soon as it returns.

    aiomqtt puts each message on its queue from inside paho's ``on_message``, which holds paho's callback locks (one
    of them not reentrant: a QoS 0 publish from there would deadlock), so the handler cannot run there. It runs right
    after the ``loop_read`` that parsed the message, in the same wake-up of the event loop, before paho parses the
    next packet of the buffer: no ``call_soon``, no loop iteration between the socket and the alarm. A message put
    outside a ``loop_read`` (none is, in paho 2.2) is handed on with ``call_soon``, as before.
    """

    def __init__(self, handler: Callable[[aiomqtt.Message], None]) -> None:
        self.handler = handler
        self.items: collections.deque[aiomqtt.Message] = collections.deque()
        self.reading = False

    def put(self, item: aiomqtt.Message) -> None:
        if self.reading:
            self.items.append(item)
        else:
            asyncio.get_running_loop().call_soon(self.handler, item)

    def hand_on(self) -> None:
        items, handler = self.items, self.handler
        while items:
            item = items.popleft()
            try:
                handler(item)
            except Exception:  # as the event loop would: logged, and the connection goes on
                log.exception("the handler of an MQTT message failed")


def _hand_on_after_reads(client: aiomqtt.Client, inbox: _Inbox) -> None:
    """Shadow ``loop_read`` on this one paho client: read (paho parses, aiomqtt's ``on_message`` puts into the
    inbox), then hand every message parsed on to the handler."""
    paho = client._client  # noqa: SLF001 - see the module documentation
    read = paho.loop_read

    def loop_read(max_packets: int = 1) -> MQTTErrorCode:
        inbox.reading = True
        try:
            return read(max_packets)
        finally:
            inbox.reading = False
            inbox.hand_on()

    paho.loop_read = loop_read  # type: ignore[method-assign]


def _handing_queue(inbox: _Inbox) -> type[asyncio.Queue[aiomqtt.Message]]:
    """A queue class for aiomqtt that hands each message on (through ``inbox``) instead of keeping it."""

    class HandingQueue(asyncio.Queue[aiomqtt.Message]):
        def put_nowait(self, item: aiomqtt.Message) -> None:
            inbox.put(item)

    return HandingQueue


def publish_now(
    client: aiomqtt.Client, topic: str, payload: bytes, qos: int, retain: bool
) -> mqtt.MQTTMessageInfo | None:
    """Publish and write the bytes to the socket before returning; the PUBACK is not awaited.

    aiomqtt's ``publish`` leaves the write to its event-loop writer, two loop iterations later, and
    holds the caller until the PUBACK; an alarm should not wait for either. The returned info tells
    whether the broker has acknowledged it (``is_published()``); None means it was not sent (no
    connection). Never call this from inside a paho callback (paho's callback lock is not reentrant).
    """
    paho = client._client  # noqa: SLF001 - the one place where the gateway reaches paho itself
    info = paho.publish(topic, payload, qos, retain)  # queued; aiomqtt's writer is registered for later
    if info.rc != mqtt.MQTT_ERR_SUCCESS:
        return None
    if paho.socket() is not None:
        _ahead_of_acks(paho._out_packet)  # noqa: SLF001
        # Write what is queued now. aiomqtt's writer, when it runs, finds nothing left and unregisters
        # itself as usual: paho's register/unregister bookkeeping is left alone.
        paho._packet_write()  # noqa: SLF001
    return info


_PUBACK = 0x40


def _ahead_of_acks(queue: collections.deque[Any]) -> None:
    """Move the packet just queued (the last) ahead of the PUBACKs queued before it and not yet begun: the PUBACK of
    the latch message that raised an alarm is queued while paho parses it, before the alarm; the alarm then leaves
    one socket write earlier. (The broker needs no order between a PUBACK and a PUBLISH; PUBACKs keep theirs.)"""
    acks: list[Any] = []
    if len(queue) < 2:
        return
    mine = queue.pop()
    while queue and queue[-1]["command"] == _PUBACK and queue[-1]["pos"] == 0:
        acks.append(queue.pop())
    queue.append(mine)
    queue.extend(reversed(acks))


def drop_connection(client: aiomqtt.Client) -> None:
    """Cut the TCP connection without an MQTT DISCONNECT, as a sensor that loses power does.

    The broker then publishes the client's last will. aiomqtt has no public call for this, so the
    socket is reached through its paho client here, in one place.
    """
    sock = client._client.socket()  # noqa: SLF001 - see the docstring
    if isinstance(sock, BufferedSocket):
        sock = sock.raw
    if isinstance(sock, socket.socket):
        sock.shutdown(socket.SHUT_RDWR)


def stop_if_cancelled() -> None:
    """Raise CancelledError if this task was asked to stop and the request got lost on the way.

    aiomqtt awaits the broker (connect, subscribe) through ``asyncio.wait_for``, which on Python 3.11 can swallow a
    cancellation that arrives as the awaited step completes: a process would then ignore SIGTERM or Ctrl-C and
    wait on for ever. The task still counts the request (``cancelling()``), so callers check before every long
    wait or next step.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
