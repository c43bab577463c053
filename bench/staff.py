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
import signal
import socket
import sys
import threading
from types import FrameType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from bench.clock import now_ns
from gateway.settings import ENV_MQTT_PASSWORD, ENV_MQTT_USERNAME

log = logging.getLogger("bench.staff")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.staff", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--subscribe", action="append", required=True, help="a topic filter (repeatable)")
    parser.add_argument("--client-id", default=f"bench-staff-{os.getpid()}")
    parser.add_argument("--no-nodelay", action="store_true", help="leave Nagle's algorithm on")
    return parser


class Staff:
    def __init__(self, args: argparse.Namespace) -> None:
        self.filters: list[str] = args.subscribe
        self.nodelay = not args.no_nodelay
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=args.client_id, clean_session=True, protocol=mqtt.MQTTv311
        )
        username = os.environ.get(ENV_MQTT_USERNAME)
        if username:
            self.client.username_pw_set(username, os.environ.get(ENV_MQTT_PASSWORD))
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.args = args
        self._out = sys.stdout
        self._ready = False

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: ReasonCode, props: Any) -> None:
        if reason_code.is_failure:
            log.error("broker refused the connection: %s", reason_code)
            client.disconnect()
            return
        client.subscribe([(f, 1) for f in self.filters])

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, codes: list[ReasonCode], props: Any) -> None:
        if any(rc.is_failure for rc in codes):
            log.error("subscription refused: %s", codes)
            client.disconnect()
            return
        if not self._ready:
            self._ready = True
            self._line({"ready": True, "t": now_ns()})

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        at = now_ns()  # first: the arrival time of the message
        self._line({"t": at, "topic": message.topic, "payload": message.payload.decode(errors="replace")})

    def _line(self, obj: dict[str, Any]) -> None:
        self._out.write(json.dumps(obj, separators=(",", ":")) + "\n")
        self._out.flush()

    def run(self) -> int:
        client = self.client
        client.connect(self.args.host, self.args.port, keepalive=60)
        sock = client.socket()
        if isinstance(sock, socket.socket) and self.nodelay:
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
        return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="staff: %(levelname)s %(message)s", stream=sys.stderr)
    return Staff(build_parser().parse_args(argv)).run()


if __name__ == "__main__":
    raise SystemExit(main())
