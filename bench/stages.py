"""What each stage of the gateway's path costs per message and per alarm, measured in one process, no broker.

``python -m bench.stages [--cribs 100] [--repeat 7] [--json]``

Each stage is timed on its own with the gateway's real code, over many messages, in CPU time of the thread (what
other processes take is not counted), and the best of ``--repeat`` runs is kept (the least disturbed by the rest of
the machine; the end-to-end benchmarks show the disturbed figures):

* **read** - paho parses packets from a socket (a socket pair, fed the bytes Mosquitto would send): heartbeats
  (QoS 0) and latch messages (QoS 1, with the PUBACK queued), through the gateway's ``BufferedSocket`` and, for
  comparison, through the bare socket as paho reads it by itself (one ``recv`` per header byte); with the
  ``recv`` calls that reached the kernel per packet.
* **hand-on** - aiomqtt's ``Message`` and the connection's inbox (``_Inbox``) up to ``MqttLink._on_message``.
* **decode** - ``screen_payload`` + ``decode_sensor`` (the main connection's path, topic parsed once) beside
  ``screen_inbound`` + ``decode_inbound`` (the full path: the topic parsed from the string each time).
* **decide** - ``CribMonitor.decide`` on a heartbeat, on a latch opening (raises the alarm: grace 0) and on the
  closing (resolves it).
* **encode** - ``encode_outbound`` of the alarm event and of the crib state.
* **publish + write** - paho's ``publish`` (QoS 1) and ``_packet_write`` of the alarm to a socket.
* **encode** also through the validated payload models (``encode_outbound_validated``), the reference the fast
  encoding must equal.
* **after the alarm** - the log line (a ``StreamHandler`` on ``/dev/null``), and the alert policy's ``take`` of each
  alarm's raise and crib state (the gateway runs it after the socket, the buzzer and the deferred channels).

Then the sums: per heartbeat (read, hand-on, decode, decide) and per alarm (the same for the latch message, then
encode, publish and write of the alarm; the crib state and log line after it). Timings only: no assertion, no goal.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import aiomqtt
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from alerts.policy import AlertPolicy
from bench.latency import site_toml
from bench.sensors import sensor_ids
from gateway.domain.clock import FakeClock
from gateway.domain.events import AlarmEvent, CribState, LatchReading, TelemetryReading
from gateway.domain.monitor import CribMonitor
from gateway.domain.vocab import AlarmEventType, LatchState, Source
from gateway.mqtt.connection import BufferedSocket, _Inbox
from gateway.protocol import LatchPayload, SensorChannel, TelemetryPayload, Topics, encode
from gateway.protocol.codec import decode_inbound, decode_sensor, encode_outbound, screen_inbound, screen_payload

try:  # the validated encoding, beside the fast one (absent before the fast one came)
    from gateway.protocol.codec import encode_outbound_validated as validated
except ImportError:  # pragma: no cover - an older tree run with this bench
    validated = None  # type: ignore[assignment]
from gateway.settings import ENV_MQTT_PASSWORD, ENV_MQTT_USERNAME, settings_from_mapping

SITE = "bench"


def publish_packet(topic: str, payload: bytes, *, qos: int = 0, mid: int = 1) -> bytes:
    """An MQTT 3.1.1 PUBLISH as a broker writes it."""
    body = len(topic).to_bytes(2, "big") + topic.encode() + (mid.to_bytes(2, "big") if qos else b"") + payload
    length, remaining = bytearray(), len(body)
    while True:
        byte, remaining = remaining % 128, remaining // 128
        length.append(byte | (0x80 if remaining else 0))
        if not remaining:
            break
    return bytes([0x30 | (qos << 1)]) + bytes(length) + body


CPU_CLOCK = time.thread_time
"""The CPU time of this thread: on a shared machine, the time other processes held the core is not counted (the
wall clock would count it, and this machine's load was 2 to 7 while these figures were taken)."""


def best_us(run: Callable[[], int], repeat: int, setup: Callable[[], object] | None = None) -> float:
    """CPU microseconds per item: ``run()`` does its items and returns how many; the best of ``repeat`` runs
    (``setup()`` before each, not timed)."""
    best = float("inf")
    for _ in range(repeat):
        if setup is not None:
            setup()
        start = CPU_CLOCK()
        n = run()
        best = min(best, (CPU_CLOCK() - start) / n * 1e6)
    return best


class Reader:
    """A paho client reading PUBLISH packets from a socket pair, as the gateway's connection does."""

    def __init__(self, *, buffered: bool) -> None:
        self.ours, self.theirs = socket.socketpair()
        self.ours.setblocking(False)  # noqa: FBT003 - the socket API
        for sock in (self.ours, self.theirs):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.sock: Any = BufferedSocket(self.ours) if buffered else self.ours
        self.client._sock = self.sock  # noqa: SLF001 - as paho's own reconnect() sets it
        self.client.on_message = lambda _c, _u, _m: None
        self.client.on_socket_register_write = lambda *_: None  # as aiomqtt: a PUBACK is queued, written later
        self.kernel_reads = 0

    def send(self, stream: bytes) -> None:
        self.theirs.sendall(stream)

    def read(self, count: int) -> int:
        client = self.client
        while True:
            client.loop_read()
            client._out_packet.clear()  # noqa: SLF001 - the PUBACKs queued are not written here
            if isinstance(self.sock, BufferedSocket):
                if self.sock.pending() == 0:
                    break
            elif not _readable(self.ours):
                break
        if isinstance(self.sock, BufferedSocket):
            self.kernel_reads = self.sock.kernel_reads
        return count


def _readable(sock: socket.socket) -> bool:
    try:
        return bool(sock.recv(1, socket.MSG_PEEK))
    except BlockingIOError:
        return False


def measure(cribs: int, repeat: int) -> dict[str, float]:
    topics = Topics(SITE)
    sids = sensor_ids(cribs)
    batch = 2000
    out: dict[str, float] = {}

    heartbeat = encode(
        TelemetryPayload(
            boot=1, seq=1, ts=time.time(), battery_pct=90, rssi_dbm=-60, fw="1.0.0", uptime_s=1, interval_s=1.0
        )
    )
    latch = encode(LatchPayload(boot=1, seq=1, ts=time.time(), state=LatchState.OPEN))
    tel_topic = topics.sensor(sids[0], SensorChannel.TELEMETRY)
    latch_topic = topics.sensor(sids[0], SensorChannel.LATCH)

    # -- read
    heartbeats = b"".join(publish_packet(tel_topic, heartbeat) for _ in range(batch))
    latches = b"".join(publish_packet(latch_topic, latch, qos=1, mid=1 + i % 60000) for i in range(batch))
    for label, stream in (("heartbeat", heartbeats), ("latch", latches)):
        for buffered in (True, False):
            reader = Reader(buffered=buffered)

            def run(r: Reader = reader) -> int:
                return r.read(batch)

            def feed(r: Reader = reader, s: bytes = stream) -> None:
                r.send(s)

            out[f"read_{label}_{'buffered' if buffered else 'bare'}_us"] = best_us(run, repeat, feed)
            if buffered:
                out[f"read_{label}_kernel_reads_per_packet"] = reader.kernel_reads / (batch * repeat)

    # -- hand-on: paho's message -> aiomqtt's Message -> the inbox -> the handler
    taken: list[aiomqtt.Message] = []
    inbox = _Inbox(taken.append)
    paho_message = mqtt.MQTTMessage(mid=1, topic=tel_topic.encode())
    paho_message.payload = heartbeat

    def hand_on() -> int:
        taken.clear()
        inbox.reading = True
        for _ in range(batch):
            inbox.put(aiomqtt.Message._from_paho_message(paho_message))  # noqa: SLF001
        inbox.reading = False
        inbox.hand_on()
        return batch

    out["hand_on_us"] = best_us(hand_on, repeat)

    # -- decode
    route = topics.parse_sensor_topic(tel_topic)
    wireless = frozenset(sids)

    def decode_hot(payload: bytes, rt: tuple[str, SensorChannel]) -> Callable[[], int]:
        def run() -> int:
            for _ in range(batch):
                screen_payload(payload)
                decode_sensor(rt[0], rt[1], payload, observed_at=1.0)
            return batch

        return run

    def decode_full(topic: str, payload: bytes) -> Callable[[], int]:
        def run() -> int:
            for _ in range(batch):
                screen_inbound(topics, topic, payload, wireless=wireless)
                decode_inbound(topics, topic, payload, observed_at=1.0)
            return batch

        return run

    out["decode_heartbeat_us"] = best_us(decode_hot(heartbeat, route), repeat)
    out["decode_heartbeat_full_path_us"] = best_us(decode_full(tel_topic, heartbeat), repeat)
    out["decode_latch_us"] = best_us(decode_hot(latch, topics.parse_sensor_topic(latch_topic)), repeat)
    out["decode_latch_full_path_us"] = best_us(decode_full(latch_topic, latch), repeat)

    # -- decide, encode
    env = {ENV_MQTT_USERNAME: "bench", ENV_MQTT_PASSWORD: "x" * 16}
    settings = settings_from_mapping(_toml(site_toml(cribs, "127.0.0.1", 1883)), env=env)
    clock = FakeClock()
    core = CribMonitor(settings, clock)
    seq = dict.fromkeys(sids, 0)

    def reading(sid: str, state: LatchState) -> LatchReading:
        seq[sid] += 1
        return LatchReading(sid, state, boot=1, seq=seq[sid], sensor_ts=clock.time(), source=Source.MQTT,
                            observed_at=clock.monotonic())  # fmt: skip

    for sid in sids:  # every sensor heard from, every latch closed
        core.decide(reading(sid, LatchState.CLOSED))
    tel_seq = [0]

    def heartbeats_decided() -> int:
        for i in range(batch):
            sid = sids[i % len(sids)]
            tel_seq[0] += 1
            clock.advance(0.0001)
            core.decide(TelemetryReading(sid, 1, tel_seq[0], clock.time(), 90, -60, "1.0.0", 1, 1.0,
                                         observed_at=clock.monotonic()))  # fmt: skip
        return batch

    out["decide_heartbeat_us"] = best_us(heartbeats_decided, repeat)
    alarms: list[AlarmEvent] = []
    states: list[CribState] = []
    per_alarm = 200

    def open_and_close(which: str) -> Callable[[], int]:
        def run() -> int:
            total = 0.0
            for i in range(per_alarm):
                sid = sids[i % len(sids)]
                clock.advance(0.001)
                opening = reading(sid, LatchState.OPEN)
                start = CPU_CLOCK()
                events = core.decide(opening).events
                took = CPU_CLOCK() - start
                if which == "open":
                    total += took
                alarms.extend(e for e in events if isinstance(e, AlarmEvent))
                states.extend(e for e in events if isinstance(e, CribState))
                clock.advance(0.001)
                closing = reading(sid, LatchState.CLOSED)
                start = CPU_CLOCK()
                core.decide(closing)
                if which == "close":
                    total += CPU_CLOCK() - start
            # best_us divides by the count: give it the time measured here, as a count of the same ratio
            run.took = total  # type: ignore[attr-defined]
            return per_alarm

        return run

    for which in ("open", "close"):
        timed = open_and_close(which)
        best = float("inf")
        for _ in range(repeat):
            timed()
            best = min(best, timed.took / per_alarm * 1e6)  # type: ignore[attr-defined]
        out[f"decide_latch_{which}_us"] = best
    alarm, state = alarms[-1], states[-1]

    def encoded(event: AlarmEvent | CribState) -> Callable[[], int]:
        def run() -> int:
            for _ in range(batch):
                encode_outbound(topics, event, 1)
            return batch

        return run

    out["encode_alarm_us"] = best_us(encoded(alarm), repeat)
    out["encode_crib_state_us"] = best_us(encoded(state), repeat)
    if validated is not None:  # the reference the fast encoding must equal (tests/test_fast_encoding.py)

        def encoded_validated(event: AlarmEvent | CribState) -> Callable[[], int]:
            def run() -> int:
                for _ in range(batch):
                    validated(topics, event, 1)
                return batch

            return run

        out["encode_alarm_validated_us"] = best_us(encoded_validated(alarm), repeat)
        out["encode_crib_state_validated_us"] = best_us(encoded_validated(state), repeat)

    # -- after the alarm: the alert policy's take of the alarm's events (each alarm's raise and its crib state)
    policy = AlertPolicy(settings.alerting, clock)
    raised = [(a, s) for a, s in zip(alarms, states, strict=False) if a.type is AlarmEventType.RAISED]
    chunk = max(1, len(raised) // repeat)
    chunks = iter([raised[i : i + chunk] for i in range(0, chunk * repeat, chunk)])

    def policy_takes() -> int:
        part = next(chunks)
        for pair in part:
            policy.take(pair)
        return len(part)

    out["policy_take_us"] = best_us(policy_takes, repeat)

    # -- publish + write (paho to a socket pair, QoS 1; the other end drained between runs)
    payload = encode_outbound(topics, alarm, 1).payload
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    ours.setblocking(False)  # noqa: FBT003
    theirs.setblocking(False)  # noqa: FBT003
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.max_inflight_messages_set(0)
    client.max_queued_messages_set(0)
    client._sock = BufferedSocket(ours)  # noqa: SLF001
    client._state = mqtt._ConnectionState.MQTT_CS_CONNECTED  # type: ignore[attr-defined]  # noqa: SLF001
    client.on_socket_register_write = lambda *_: None  # as aiomqtt: paho asks, the loop would write
    topic = topics.alarm("room")
    per_write = 500

    def published() -> int:
        for _ in range(per_write):
            client.publish(topic, payload, qos=1)
            client._packet_write()  # noqa: SLF001
        client._out_messages.clear()  # noqa: SLF001 - no PUBACK will come
        with_drain(theirs)
        return per_write

    out["publish_and_write_alarm_us"] = best_us(published, repeat)

    # -- after the alarm: the log line
    logger = logging.getLogger("bench.stages.alarm")
    logger.propagate = False
    with open(os.devnull, "w") as devnull:
        handler = logging.StreamHandler(devnull)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
        logger.addHandler(handler)
        from alerts.channels.log import LogChannel  # noqa: PLC0415

        channel = LogChannel(logger)

        def logged() -> int:
            for _ in range(batch // 4):
                channel.deliver(alarm)
            return batch // 4

        out["log_line_us"] = best_us(logged, repeat)
        logger.removeHandler(handler)
    return out


def with_drain(sock: socket.socket) -> None:
    try:
        while sock.recv(1 << 20):
            pass
    except BlockingIOError:
        pass


def _toml(text: str) -> dict[str, Any]:
    import tomllib  # noqa: PLC0415

    return tomllib.loads(text)


def table(m: dict[str, float], cribs: int) -> str:
    per_heartbeat = (
        m["read_heartbeat_buffered_us"] + m["hand_on_us"] + m["decode_heartbeat_us"] + m["decide_heartbeat_us"]
    )
    before_write = (
        m["read_latch_buffered_us"] + m["hand_on_us"] + m["decode_latch_us"] + m["decide_latch_open_us"]
        + m["encode_alarm_us"] + m["publish_and_write_alarm_us"]
    )  # fmt: skip
    after_write = m["encode_crib_state_us"] + m["publish_and_write_alarm_us"] + m["log_line_us"]
    rows = [
        f"cribwatch per-stage cost, {cribs} cribs, microseconds (best of the runs; one process, no broker)",
        "",
        f"{'stage':58} {'heartbeat':>10} {'alarm':>10}",
        f"{'read: paho parses the packet, BufferedSocket':58} {m['read_heartbeat_buffered_us']:10.1f} "
        f"{m['read_latch_buffered_us']:10.1f}",
        f"{'  (bare socket, as paho reads alone)':58} {m['read_heartbeat_bare_us']:10.1f} "
        f"{m['read_latch_bare_us']:10.1f}",
        f"{'  (kernel recv calls per packet, buffered)':58} {m['read_heartbeat_kernel_reads_per_packet']:10.3f} "
        f"{m['read_latch_kernel_reads_per_packet']:10.3f}",
        f"{'hand-on: aiomqtt Message, inbox, to MqttLink':58} {m['hand_on_us']:10.1f} {m['hand_on_us']:10.1f}",
        f"{'decode: screen_payload + decode_sensor':58} {m['decode_heartbeat_us']:10.1f} {m['decode_latch_us']:10.1f}",
        f"{'  (full path: screen_inbound + decode_inbound)':58} {m['decode_heartbeat_full_path_us']:10.1f} "
        f"{m['decode_latch_full_path_us']:10.1f}",
        f"{'decide: CribMonitor.decide (latch: the opening)':58} {m['decide_heartbeat_us']:10.1f} "
        f"{m['decide_latch_open_us']:10.1f}",
        f"{'encode the alarm event':58} {'':>10} {m['encode_alarm_us']:10.1f}",
        *(
            [f"{'  (through the validated payload models)':58} {'':>10} {m['encode_alarm_validated_us']:10.1f}"]
            if "encode_alarm_validated_us" in m
            else []
        ),
        f"{'publish + write the alarm (paho, QoS 1)':58} {'':>10} {m['publish_and_write_alarm_us']:10.1f}",
        f"{'TOTAL to the socket':58} {per_heartbeat:10.1f} {before_write:10.1f}",
        f"{'after: crib state encoded and written, log line':58} {'':>10} {after_write:10.1f}",
        f"{'after: the alert policy takes the alarm and its crib state':58} {'':>10} {m['policy_take_us']:10.1f}",
        f"{'  (decide the closing, which resolves it)':58} {'':>10} {m['decide_latch_close_us']:10.1f}",
    ]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stages", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cribs", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=7, help="runs per stage, the best kept (7)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    figures = measure(max(1, args.cribs), max(1, args.repeat))
    load = os.getloadavg()[0]
    if args.json:
        print(json.dumps({k: round(v, 3) for k, v in figures.items()} | {"cribs": args.cribs, "loadavg_1m": load}))
    else:
        print(table(figures, args.cribs))
        print(f"\nload average (1 min) {load:.2f}; median of the stages {statistics.median(figures.values()):.1f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
