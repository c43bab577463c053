"""The smallest possible MQTT "gateway": republish every message at once, unchanged. The benchmark's floor.

``python -m bench.relay --host H --port P --topic-filter 'cribwatch/site/sensor/+/latch' --out-prefix bench/relay``

It subscribes to ``--topic-filter`` (QoS 1) and republishes each message's payload unchanged, QoS 1, not
retained, to ``<out-prefix>/<sensor id>``, where the sensor id is the next-to-last topic level
(``<prefix>/sensor/<id>/latch``). It is a plain paho-mqtt 2.x client in its own process with TCP_NODELAY on
its socket, as the gateway is one process with TCP_NODELAY on its socket: the path
publisher -> broker -> relay -> broker -> subscriber is the two-hop floor that the gateway's alarm path
(publisher -> broker -> gateway -> broker -> subscriber) is compared with.

Credentials come from CRIBWATCH_MQTT_USERNAME and CRIBWATCH_MQTT_PASSWORD. It prints ``ready`` on stdout once
its subscription is acknowledged, then nothing else there. It stops on SIGTERM or SIGINT (clean DISCONNECT)
and when its stdin reaches end of file (the benchmark that started it is gone).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from types import FrameType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from gateway.settings import ENV_MQTT_PASSWORD, ENV_MQTT_USERNAME

log = logging.getLogger("bench.relay")

READY_LINE = "ready"
QOS = 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.relay", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--topic-filter", required=True, help="what to relay, e.g. cribwatch/site/sensor/+/latch")
    parser.add_argument("--out-prefix", default="bench/relay", help="republish to <out-prefix>/<sensor id>")
    parser.add_argument("--client-id", default=f"bench-relay-{os.getpid()}")
    parser.add_argument(
        "--no-nodelay",
        action="store_true",
        help="leave Nagle's algorithm on (only to show what TCP_NODELAY saves)",
    )
    return parser


def sensor_id_of(topic: str) -> str:
    """The next-to-last level of ``<prefix>/sensor/<id>/latch``; the whole topic if it has one level."""
    levels = topic.split("/")
    return levels[-2] if len(levels) >= 2 else topic


class Relay:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.relayed = 0
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=args.client_id,
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        username = os.environ.get(ENV_MQTT_USERNAME)
        if username:
            self.client.username_pw_set(username, os.environ.get(ENV_MQTT_PASSWORD))
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self._out_prefix = args.out_prefix.rstrip("/")
        self._ready = False

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: ReasonCode, properties: Any
    ) -> None:
        if reason_code.is_failure:
            log.error("broker refused the connection: %s", reason_code)
            client.disconnect()
            return
        client.subscribe(self.args.topic_filter, qos=QOS)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: list[ReasonCode], properties: Any
    ) -> None:
        if any(rc.is_failure for rc in reason_codes):
            log.error("subscription to %s refused: %s", self.args.topic_filter, reason_codes)
            client.disconnect()
            return
        if not self._ready:
            self._ready = True
            print(READY_LINE, flush=True)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        client.publish(f"{self._out_prefix}/{sensor_id_of(message.topic)}", message.payload, qos=QOS)
        self.relayed += 1

    def run(self) -> int:
        client = self.client
        client.connect(self.args.host, self.args.port, keepalive=60)
        sock = client.socket()
        if isinstance(sock, socket.socket) and not self.args.no_nodelay:
            # Right after connect() (only CONNECT has gone out): no PUBLISH or PUBACK of ours waits for Nagle.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def stop(signum: int, frame: FrameType | None) -> None:
            client.disconnect()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

        def watch_stdin() -> None:
            sys.stdin.buffer.read()  # returns at end of file: whoever started us has gone
            client.disconnect()

        threading.Thread(target=watch_stdin, name="stdin-watch", daemon=True).start()
        client.loop_forever()
        log.debug("relayed %d messages", self.relayed)
        return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="relay: %(levelname)s %(message)s", stream=sys.stderr)
    args = build_parser().parse_args(argv)
    return Relay(args).run()


if __name__ == "__main__":
    raise SystemExit(main())
