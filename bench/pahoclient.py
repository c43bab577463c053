"""The plain paho-mqtt 2.x clients of the benchmarks' child processes (:mod:`bench.relay`, :mod:`bench.staff`,
:mod:`bench.junk`): how they connect, and how a subscriber runs until it is told to stop.

Each is one MQTT 3.1.1 client with a clean session, credentials from CRIBWATCH_MQTT_USERNAME and
CRIBWATCH_MQTT_PASSWORD, and TCP_NODELAY on its socket unless it is asked to leave Nagle's algorithm on.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from gateway.settings import ENV_MQTT_PASSWORD, ENV_MQTT_USERNAME

QOS = 1


def new_client(client_id: str) -> mqtt.Client:
    """A paho client (MQTT 3.1.1, clean session) with the credentials from the environment, not connected."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True, protocol=mqtt.MQTTv311)
    username = os.environ.get(ENV_MQTT_USERNAME)
    if username:
        client.username_pw_set(username, os.environ.get(ENV_MQTT_PASSWORD))
    return client


def connect(client: mqtt.Client, host: str, port: int, *, nodelay: bool) -> None:
    """Connect ``client`` (keepalive 60 s) and set TCP_NODELAY on its socket if ``nodelay``."""
    client.connect(host, port, keepalive=60)
    sock = client.socket()
    if isinstance(sock, socket.socket) and nodelay:
        # Right after connect() (only CONNECT has gone out): no PUBLISH or PUBACK of ours waits for Nagle.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Subscriber:
    """A client that subscribes to ``filters`` (QoS 1) once connected and runs paho's ``loop_forever``.

    :meth:`on_ready` is called once, when the broker has granted every subscription; :meth:`on_message` for
    every message. A refused connection or subscription disconnects (and so ends :meth:`run`), as do
    SIGTERM, SIGINT and end of file on stdin (whoever started the process has gone).
    """

    def __init__(
        self, client_id: str, filters: Sequence[str], log: logging.Logger, *, host: str, port: int, nodelay: bool
    ) -> None:
        self.filters = list(filters)
        self.log = log
        self.host, self.port, self.nodelay = host, port, nodelay
        self.client = new_client(client_id)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self.on_message
        self._ready = False

    def on_ready(self) -> None:
        raise NotImplementedError

    def on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        raise NotImplementedError

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: ReasonCode, props: Any) -> None:
        if reason_code.is_failure:
            self.log.error("broker refused the connection: %s", reason_code)
            client.disconnect()
            return
        client.subscribe([(f, QOS) for f in self.filters])

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, codes: list[ReasonCode], props: Any) -> None:
        if any(rc.is_failure for rc in codes):
            self.log.error("subscription to %s refused: %s", " ".join(self.filters), codes)
            client.disconnect()
            return
        if not self._ready:
            self._ready = True
            self.on_ready()

    def run(self) -> int:
        client = self.client
        connect(client, self.host, self.port, nodelay=self.nodelay)

        def stop(signum: int, frame: FrameType | None) -> None:
            client.disconnect()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

        def watch_stdin() -> None:
            sys.stdin.buffer.read()  # returns at end of file: whoever started us has gone
            client.disconnect()

        threading.Thread(target=watch_stdin, name="stdin-watch", daemon=True).start()
        client.loop_forever()
        return 0
