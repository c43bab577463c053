"""One client that floods a topic with junk at a set rate: the misbehaving pager or sensor of bench.flood.

``python -m bench.junk --port P --topic cribwatch/bench/ack --kind ack [--rate 4000] [--qos 1]``

A plain paho-mqtt 2.x client in its own process (TCP_NODELAY on its socket), so that the flood costs the
benchmark's other processes nothing but what it costs the broker and the gateway. Credentials come from
CRIBWATCH_MQTT_USERNAME and CRIBWATCH_MQTT_PASSWORD.

It prints ``{"ready": true, "t": ...}`` on stdout once connected, then takes commands on stdin, one per line:

* ``flood SECONDS`` floods for at most SECONDS (and at most ``--max-count`` messages) or until ``stop``, then
  prints one JSON line: ``{"sent": N, "acked": M, "seconds": S, "rate": R}`` (R = N / S, the achieved rate;
  ``acked`` counts the broker's PUBACKs for QoS 1);
* ``stop`` ends a flood early;
* ``rate R`` sets the rate of the next floods (messages per second);
* end of file (or SIGTERM / SIGINT) stops it, after a clean DISCONNECT.

Pacing: every millisecond or so it publishes as many messages as the rate allows since the flood began, so a
late tick is made up at once (the rate is held on average; bursts are at most a few milliseconds long). QoS 1
messages are not limited by paho's inflight window (it is set to unlimited): the flooder does not wait for
PUBACKs, as a buggy client in a tight loop would not.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any

import paho.mqtt.client as mqtt

from bench.clock import now_ns
from bench.pahoclient import connect, new_client

log = logging.getLogger("bench.junk")

KINDS = ("ack", "bad_json", "unknown_sensor", "too_large")
"""What the junk looks like (each should be rejected by the gateway under its own reason):

* ``ack``: a well-formed JSON ack for an alarm that does not exist (``ack_unknown_alarm``) - the most
  expensive junk for the gateway, since it passes every syntactic check;
* ``bad_json``: not JSON (``bad_json``);
* ``unknown_sensor``: a valid heartbeat (telemetry) payload, for a sensor id no crib uses (``unknown_sensor``);
* ``too_large``: 5,000 bytes (``too_large``).

And one kind that is no junk: ``heartbeat``, valid heartbeats of ``--sensors`` sensors of the site in turn (the
``{sensor}`` of ``--topic`` is ``l-0001``, ``l-0002``...; each sensor's ``seq`` one more per message), which the
gateway accepts: the load of :mod:`bench.throughput`.
"""
LOAD_KIND = "heartbeat"
TICK_S = 0.001
CONNECT_TIMEOUT_S = 10.0


def load_heartbeat(n: int, sensors: int, interval_s: float) -> tuple[str, bytes]:
    """The ``n``-th heartbeat of the load: (sensor id, payload); sensors in turn, each its own ``seq``."""
    sensor, seq = n % sensors, n // sensors
    payload = (
        b'{"v":1,"boot":1,"seq":%d,"ts":%.3f,"battery_pct":90,"rssi_dbm":-60,"fw":"1.0.0","uptime_s":%d,'
        b'"interval_s":%.1f}' % (seq, time.time(), seq, interval_s)
    )
    return f"l-{sensor + 1:04d}", payload


def junk_payload(kind: str, n: int) -> bytes:
    """The ``n``-th junk message of ``kind`` (they differ, as a real flood's would)."""
    if kind == "ack":
        return json.dumps({"v": 1, "alarm_id": f"junk-{n}", "by": "flood", "device": "flood"}).encode()
    if kind == "bad_json":
        return b'{"v": 1, "boot": ' + str(n).encode() + b", oops"
    if kind == "unknown_sensor":
        heartbeat = {"v": 1, "boot": 1, "seq": n, "ts": 1.0, "battery_pct": 90, "rssi_dbm": -60, "fw": "1.0.0",
                     "uptime_s": n, "interval_s": 30.0}  # fmt: skip
        return json.dumps(heartbeat).encode()
    if kind == "too_large":
        return b"x" * 5000
    raise ValueError(f"unknown kind {kind!r} (one of {', '.join(KINDS)})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.junk", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--topic", required=True, help="where to publish the junk")
    parser.add_argument("--kind", choices=(*KINDS, LOAD_KIND), default="ack", help="what the junk looks like (ack)")
    parser.add_argument("--rate", type=float, default=4000.0, help="messages per second (4000)")
    parser.add_argument("--qos", type=int, choices=(0, 1), default=1, help="QoS of the junk (1)")
    parser.add_argument("--max-count", type=int, default=1_000_000, help="never more messages per flood")
    parser.add_argument("--sensors", type=int, default=100, help="heartbeat: how many load sensors (100)")
    parser.add_argument("--interval", type=float, default=60.0, help="heartbeat: the interval_s they announce (60)")
    parser.add_argument("--client-id", default=f"bench-junk-{os.getpid()}")
    return parser


class Flooder:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.acked = 0
        self.connected = threading.Event()
        self.client = new_client(args.client_id)
        self.client.max_inflight_messages_set(0)  # unlimited: a flood does not wait for PUBACKs
        self.client.max_queued_messages_set(0)
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish
        self.stopping = False
        self.loaded = 0
        """Heartbeats of the load sent in earlier floods: each sensor's seq goes on from there, never back to 0."""

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, props: Any) -> None:
        if reason_code.is_failure:
            log.error("broker refused the connection: %s", reason_code)
            self.stopping = True
            return
        self.connected.set()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any, props: Any) -> None:
        self.acked += 1

    def connect(self) -> None:
        client = self.client
        connect(client, self.args.host, self.args.port, nodelay=True)
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while not self.connected.is_set() and not self.stopping:
            if time.monotonic() > deadline:
                raise RuntimeError("no CONNACK within 10 s")
            client.loop(timeout=0.05)

    def idle(self, seconds: float) -> None:
        """Keep the connection alive (PUBACKs, pings) for ``seconds``."""
        end = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < end:
            self.client.loop(timeout=min(0.05, max(0.0, end - time.monotonic())))

    def flood(self, seconds: float, commands: queue.Queue[str | None]) -> dict[str, float]:
        args = self.args
        client, topic, kind, qos, rate = self.client, args.topic, args.kind, args.qos, args.rate
        acked_before = self.acked
        sent = 0
        began = time.monotonic()
        end = began + seconds
        while not self.stopping and sent < args.max_count and commands.empty():  # any command ends the flood
            now = time.monotonic()
            if now >= end:
                break
            # At most 10 ms worth at a time, so a flood that cannot keep its rate still ends on time.
            due = min(args.max_count, int((now - began) * rate) + 1, sent + max(1, int(rate / 100)))
            while sent < due:
                # Without a loop thread, paho writes the PUBLISH to the socket inside publish().
                if kind == LOAD_KIND:
                    sensor, payload = load_heartbeat(self.loaded + sent, args.sensors, args.interval)
                    client.publish(topic.replace("{sensor}", sensor), payload, qos=qos)
                else:
                    client.publish(topic, junk_payload(kind, sent), qos=qos)
                sent += 1
            client.loop(timeout=0)  # read PUBACKs
            time.sleep(TICK_S)
        took = time.monotonic() - began
        if kind == LOAD_KIND:
            self.loaded += sent
        self.idle(0.2)  # the last PUBACKs
        return {"sent": sent, "acked": self.acked - acked_before, "seconds": round(took, 3),
                "rate": round(sent / took, 1) if took > 0 else 0.0}  # fmt: skip

    def run(self) -> int:
        self.connect()
        print(json.dumps({"ready": True, "t": now_ns()}), flush=True)
        commands: queue.Queue[str | None] = queue.Queue()

        def read_stdin() -> None:
            for line in sys.stdin:
                commands.put(line.strip())
            commands.put(None)  # end of file: whoever started us is done or gone

        threading.Thread(target=read_stdin, name="stdin", daemon=True).start()
        while not self.stopping:
            try:
                command = commands.get_nowait()
            except queue.Empty:
                self.idle(0.02)
                continue
            if command is None:
                break
            word, _, rest = command.partition(" ")
            if word == "flood":
                print(json.dumps(self.flood(float(rest), commands)), flush=True)
            elif word == "rate":
                self.args.rate = float(rest)
            elif command and command != "stop":
                log.error("unknown command %r", command)
        self.client.disconnect()
        return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="junk: %(levelname)s %(message)s", stream=sys.stderr)
    args = build_parser().parse_args(argv)
    flooder = Flooder(args)

    def stop(signum: int, frame: FrameType | None) -> None:
        flooder.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return flooder.run()


if __name__ == "__main__":
    raise SystemExit(main())
