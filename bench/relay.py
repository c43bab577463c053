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
import sys
from typing import Any

import paho.mqtt.client as mqtt

from bench.pahoclient import QOS, Subscriber

log = logging.getLogger("bench.relay")

READY_LINE = "ready"


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


class Relay(Subscriber):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(
            args.client_id, [args.topic_filter], log, host=args.host, port=args.port, nodelay=not args.no_nodelay
        )
        self.relayed = 0
        self._out_prefix = args.out_prefix.rstrip("/")

    def on_ready(self) -> None:
        print(READY_LINE, flush=True)

    def on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        client.publish(f"{self._out_prefix}/{sensor_id_of(message.topic)}", message.payload, qos=QOS)
        self.relayed += 1

    def run(self) -> int:
        status = super().run()
        log.debug("relayed %d messages", self.relayed)
        return status


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="relay: %(levelname)s %(message)s", stream=sys.stderr)
    args = build_parser().parse_args(argv)
    return Relay(args).run()


if __name__ == "__main__":
    raise SystemExit(main())
