"""How every cribwatch process opens an MQTT connection: one place for the socket and session rules.

Only this module and :mod:`gateway.mqtt` touch aiomqtt; paho-mqtt is reached through aiomqtt except for
the one thing aiomqtt does not offer (dropping a connection the way a dying sensor does).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

import aiomqtt

TCP_NODELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
"""Measured here: without it, Nagle plus delayed ACK cost about 44 ms on every MQTT hop."""


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None = None
    password: str | None = None


def new_client(
    broker: BrokerAddress,
    *,
    identifier: str,
    will: aiomqtt.Will | None = None,
    clean_session: bool = True,
    keepalive: int = 60,
    max_inflight: int = 100,
    timeout: float = 10.0,
) -> aiomqtt.Client:
    """An aiomqtt client with TCP_NODELAY on its socket; connect with ``async with``."""
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
    )
    # aiomqtt warns above 10 concurrent publishes; a gateway resyncing every crib's state has more.
    client.pending_calls_threshold = max_inflight
    return client


def drop_connection(client: aiomqtt.Client) -> None:
    """Cut the TCP connection without an MQTT DISCONNECT, as a sensor that loses power does.

    The broker then publishes the client's last will. aiomqtt has no public call for this, so the
    socket is reached through its paho client here, in one place.
    """
    sock = client._client.socket()  # noqa: SLF001 - see the docstring
    if isinstance(sock, socket.socket):
        sock.shutdown(socket.SHUT_RDWR)
