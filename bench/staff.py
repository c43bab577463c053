"""The benchmarks' staff subscriber, in a process of its own: it timestamps every message it receives.

``python -m bench.staff --port P --subscribe 'cribwatch/bench/alarm/+' --subscribe 'bench/relay/#' ...``

A plain paho-mqtt 2.x client (TCP_NODELAY on its socket, its network loop in paho's ``loop_forever``) that
subscribes to every ``--subscribe`` filter (QoS 1) and, for every message, takes the time first
(:func:`bench.clock.now_ns`, the system-wide monotonic clock, comparable with the other processes' stamps)
and then writes one JSON line on stdout::

    {"t": 123456789012345, "topic": "cribwatch/bench/alarm/room", "payload": "{...}"}

Nothing else is done here (no decoding: the benchmark that reads the lines does that), so that the
subscriber costs the measured path as little as a subscriber can. It prints ``{"ready": true, "t": ...}``
once every subscription is acknowledged, and stops on end of file on stdin, SIGTERM or SIGINT.
Credentials come from CRIBWATCH_MQTT_USERNAME and CRIBWATCH_MQTT_PASSWORD.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

import paho.mqtt.client as mqtt

from bench.clock import now_ns
from bench.pahoclient import Subscriber

log = logging.getLogger("bench.staff")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.staff", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--subscribe", action="append", required=True, help="a topic filter (repeatable)")
    parser.add_argument("--client-id", default=f"bench-staff-{os.getpid()}")
    parser.add_argument("--no-nodelay", action="store_true", help="leave Nagle's algorithm on")
    return parser


class Staff(Subscriber):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(
            args.client_id, args.subscribe, log, host=args.host, port=args.port, nodelay=not args.no_nodelay
        )
        self._out = sys.stdout

    def on_ready(self) -> None:
        self._line({"ready": True, "t": now_ns()})

    def on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        at = now_ns()  # first: the arrival time of the message
        self._line({"t": at, "topic": message.topic, "payload": message.payload.decode(errors="replace")})

    def _line(self, obj: dict[str, Any]) -> None:
        self._out.write(json.dumps(obj, separators=(",", ":")) + "\n")
        self._out.flush()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="staff: %(levelname)s %(message)s", stream=sys.stderr)
    return Staff(build_parser().parse_args(argv)).run()


if __name__ == "__main__":
    raise SystemExit(main())
