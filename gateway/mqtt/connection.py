"""How every cribwatch process opens an MQTT connection: one place for the socket and session rules.

Every asyncio MQTT client of the project (gateway, simulator, demo, benchmark) is made by :func:`new_client`
(the benchmark's relay is plain paho on purpose: it is the baseline).
paho-mqtt is reached through aiomqtt except here, for what aiomqtt does not offer: writing a publish to the
socket at once, dropping a connection the way a dying sensor does, and letting one connection's socket be read
before another's.
"""

from __future__ import annotations

import asyncio
import logging
import select
import socket
from collections.abc import Callable
from dataclasses import dataclass

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


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None = None
    password: str | None = None


def broker_address(mqtt: MqttConfig) -> BrokerAddress:
    """Where the site file (and its environment) says the broker is, with the credentials to give it."""
    password = None if mqtt.password is None else mqtt.password.get_secret_value()
    return BrokerAddress(mqtt.host, mqtt.port, mqtt.username, password)


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
) -> aiomqtt.Client:
    """An aiomqtt client with TCP_NODELAY on its socket; connect with ``async with``.

    With ``on_message``, every received message goes to that function (on the event loop's thread,
    soon after paho has parsed it) instead of ``client.messages``; iterating ``client.messages`` then
    only waits for the connection to end. This saves a task and an ``asyncio.wait`` per message.

    With ``read_when``, the client reads from its socket only when ``read_when()`` is true: when the socket
    is readable and ``read_when()`` is false, it lets its turn go (the event loop asks again on its next
    iteration, since the socket stays readable). This gives another connection of the process precedence.
    """
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
        timeout=timeout,
        queue_type=None if on_message is None else _handing_queue(on_message),
        logger=log,
    )
    # aiomqtt warns above 10 concurrent publishes; a gateway resyncing every crib's state has more.
    client.pending_calls_threshold = max_inflight
    if read_when is not None:
        _read_only_when(client, read_when)
    return client


def _read_only_when(client: aiomqtt.Client, may_read: Callable[[], bool]) -> None:
    """aiomqtt's socket reader calls ``loop_read()`` on its paho client once per readable event: shadow that
    method on this one paho client with one that first asks ``may_read()``."""
    paho = client._client  # noqa: SLF001 - see the module documentation
    read = paho.loop_read

    def loop_read(max_packets: int = 1) -> MQTTErrorCode:
        if not may_read():
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        return read(max_packets)

    paho.loop_read = loop_read  # type: ignore[method-assign]


def has_input(client: aiomqtt.Client) -> bool:
    """Whether the client's socket has received bytes that it has not read yet (False without a connection)."""
    sock = client._client.socket()  # noqa: SLF001 - see the module documentation
    if sock is None:
        return False
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


def _handing_queue(handler: Callable[[aiomqtt.Message], None]) -> type[asyncio.Queue[aiomqtt.Message]]:
    """A queue class for aiomqtt that hands each message on instead of keeping it.

    aiomqtt puts messages on its queue from inside paho's ``on_message``, which holds paho's callback
    lock: the handler is therefore scheduled with ``call_soon``, outside that lock, so it may publish.
    """

    class HandingQueue(asyncio.Queue[aiomqtt.Message]):
        def put_nowait(self, item: aiomqtt.Message) -> None:
            asyncio.get_running_loop().call_soon(handler, item)

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
        # Write what is queued now. aiomqtt's writer, when it runs, finds nothing left and unregisters
        # itself as usual: paho's register/unregister bookkeeping is left alone.
        paho._packet_write()  # noqa: SLF001
    return info


def drop_connection(client: aiomqtt.Client) -> None:
    """Cut the TCP connection without an MQTT DISCONNECT, as a sensor that loses power does.

    The broker then publishes the client's last will. aiomqtt has no public call for this, so the
    socket is reached through its paho client here, in one place.
    """
    sock = client._client.socket()  # noqa: SLF001 - see the docstring
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
