"""Load mode, for benchmarks and sizing: thousands of sensors at a set total message rate, from few connections.

``cribwatch sim-load --sensors 5000 --rate 2000 --duration 60`` (or ``python -m firmware_sim.load ...``)

A gateway subscribes per sensor topic, so what matters to it is the topics and payloads, not how many TCP
connections carry them: here ``--connections`` plain paho-mqtt clients per process (``--processes``, default 1)
each publish for their own share of the sensor ids, exactly as real sensors would (:class:`gateway.protocol.Topics`,
:func:`gateway.protocol.encode` of :class:`~gateway.protocol.TelemetryPayload` and
:class:`~gateway.protocol.LatchPayload`), each sensor with its own ``boot`` and per-channel ``seq`` (a sensor
belongs to exactly one connection, so its messages keep their order on the wire).

* At the start every sensor announces itself as the firmware does on connect (``online`` and its latch state,
  retained, QoS 1); these are counted apart, not in the rate. At the end each publishes ``offline``.
* Then, for ``--duration`` seconds, ``--rate`` messages per second in all: heartbeats (QoS 0, round robin over the
  sensors; the ``interval_s`` they announce is what that rate gives each sensor) and a ``--latch-share`` of latch
  changes (QoS 1, retained; a random sensor of the connection toggles).
* Every ``--report-every`` seconds, and at the end, it prints what was sent, the achieved rate and the publish
  errors. Exit status 0 when every message was handed to the broker's connection and the achieved rate was
  within 10 % of the target, 1 otherwise (or when a connection could not be made), 2 on bad arguments.

Mind the broker's per-client limits (the shipped ``deploy/mosquitto/mosquitto.conf``, also in
:class:`devtools.brokers.MosquittoBroker`): ``max_queued_messages`` 100000 and ``max_inflight_messages`` 100 per
client. A subscriber (the gateway) that reads slower than the load arrives gets a queue that grows up to that
limit and then loses messages. The account must be allowed to publish on every sensor topic of the site (the
shipped ACL gives each sensor its own account: use the gateway's account, or a test broker).
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import math
import multiprocessing
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.sharedctypes import SynchronizedArray
from types import FrameType
from typing import Any, TextIO

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway.domain.vocab import LatchState, is_identifier
from gateway.mqtt.connection import BrokerAddress, make_tls_context
from gateway.protocol import (
    AVAILABILITY,
    DEFAULT_BASE_TOPIC,
    LATCH,
    TELEMETRY,
    AvailabilityPayload,
    LatchPayload,
    SensorChannel,
    TelemetryPayload,
    Topics,
    encode,
)
from gateway.settings import ENV_MQTT_HOST, ENV_MQTT_PASSWORD, ENV_MQTT_PORT, ENV_MQTT_USERNAME

__all__ = ["LoadPlan", "LoadReport", "main", "run_load"]

log = logging.getLogger(__name__)

PROG = "cribwatch sim-load"
TICK_S = 0.002
CONNECT_TIMEOUT_S = 10.0
RATE_TOLERANCE = 0.10
"""An achieved rate more than this much below the target is a failed run (exit 1)."""
_FIELDS = 5  # per connection: ready, sent, heartbeats, latches, errors
_READY, _SENT, _HEARTBEATS, _LATCHES, _ERRORS = range(_FIELDS)
_FAILED = -1  # in the ready field: the connection could not be made


@dataclass(frozen=True, slots=True)
class LoadPlan:
    topics: Topics
    broker: BrokerAddress
    sensor_ids: tuple[str, ...]
    rate: float
    """Messages per second in all (heartbeats and latch changes)."""
    duration_s: float
    latch_share: float = 0.05
    connections: int = 4
    """Connections per process."""
    processes: int = 1
    boot: int = 1
    report_every_s: float = 2.0
    firmware: str = "load-1.0"

    @property
    def total_connections(self) -> int:
        return self.connections * self.processes

    def share(self, index: int) -> tuple[str, ...]:
        """The sensor ids of connection ``index`` (every ``total_connections``-th id)."""
        return self.sensor_ids[index :: self.total_connections]

    @property
    def heartbeat_interval_s(self) -> float:
        """How often each sensor sends a heartbeat at this rate (what its telemetry announces)."""
        per_s = self.rate * (1 - self.latch_share)
        return min(3600.0, len(self.sensor_ids) / per_s) if per_s > 0 else 3600.0


@dataclass
class LoadReport:
    seconds: float = 0.0
    sent: int = 0
    heartbeats: int = 0
    latches: int = 0
    errors: int = 0
    announced: int = 0
    """Sensors that announced themselves (online and latch) before the load."""
    failed_connections: int = 0
    lines: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


class _Sensor:
    __slots__ = ("latch", "latch_seq", "sensor_id", "telemetry_seq")

    def __init__(self, sensor_id: str) -> None:
        self.sensor_id = sensor_id
        self.latch = LatchState.CLOSED
        self.latch_seq = 0
        self.telemetry_seq = 0


def _paho_client(client_id: str, broker: BrokerAddress) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True, protocol=mqtt.MQTTv311)
    if broker.username:
        client.username_pw_set(broker.username, broker.password)
    if broker.tls is not None:
        client.tls_set_context(make_tls_context(broker.tls))
    client.max_inflight_messages_set(0)  # no window of our own: the broker's limits are what is measured
    client.max_queued_messages_set(0)
    return client


class _Connection:
    """One connection publishing for its share of the sensors (runs in its own thread)."""

    def __init__(self, plan: LoadPlan, index: int, counters: Any, go: Any, stop: Any) -> None:
        self.plan = plan
        self.index = index
        self.counters = counters
        self.go = go
        self.stop = stop
        self.sensors = [_Sensor(i) for i in plan.share(index)]
        self.rate = plan.rate / plan.total_connections
        self.rng = random.Random(index)
        self.started = time.monotonic()
        self.client = _paho_client(f"cribwatch-load-{os.getpid()}-{index}", plan.broker)
        self.connected = threading.Event()
        self.refused = False
        self.client.on_connect = self._on_connect

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, props: Any) -> None:
        if reason_code.is_failure:
            log.error("load connection %d: the broker refused it: %s", self.index, reason_code)
            self.refused = True
            return
        self.connected.set()

    def _count(self, slot: int, n: int = 1) -> None:
        self.counters[self.index * _FIELDS + slot] += n

    def _publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> bool:
        info = self.client.publish(topic, payload, qos, retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self._count(_ERRORS)
            return False
        return True

    def _topic(self, sensor: _Sensor, channel: SensorChannel) -> str:
        return self.plan.topics.sensor(sensor.sensor_id, channel)

    def _availability(self, sensor: _Sensor, state: str) -> None:
        payload = encode(AvailabilityPayload(state=state, boot=self.plan.boot, ts=time.time()))
        topic = self._topic(sensor, SensorChannel.AVAILABILITY)
        self._publish(topic, payload, int(AVAILABILITY.qos), AVAILABILITY.retain)

    def _latch(self, sensor: _Sensor) -> bool:
        payload = LatchPayload(boot=self.plan.boot, seq=sensor.latch_seq, ts=time.time(), state=sensor.latch)
        sensor.latch_seq = (sensor.latch_seq + 1) % 2**32
        return self._publish(self._topic(sensor, SensorChannel.LATCH), encode(payload), int(LATCH.qos), LATCH.retain)

    def _heartbeat(self, sensor: _Sensor) -> bool:
        payload = TelemetryPayload(
            boot=self.plan.boot,
            seq=sensor.telemetry_seq,
            ts=time.time(),
            battery_pct=100,
            rssi_dbm=-60,
            fw=self.plan.firmware,
            uptime_s=int(time.monotonic() - self.started),
            interval_s=self.plan.heartbeat_interval_s,
        )
        sensor.telemetry_seq = (sensor.telemetry_seq + 1) % 2**32
        topic = self._topic(sensor, SensorChannel.TELEMETRY)
        return self._publish(topic, encode(payload), int(TELEMETRY.qos), TELEMETRY.retain)

    def _connect(self) -> bool:
        host, port = self.plan.broker.host, self.plan.broker.port
        try:
            self.client.connect(host, port, keepalive=60)
        except OSError as exc:
            log.error("load connection %d: cannot connect to %s:%d: %s", self.index, host, port, exc)
            return False
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while not self.connected.is_set() and not self.refused and time.monotonic() < deadline:
            self.client.loop(timeout=0.05)
        return self.connected.is_set()

    def _idle(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.client.loop(timeout=min(0.05, max(0.0, end - time.monotonic())))

    def run(self) -> None:
        if not self._connect():
            self.counters[self.index * _FIELDS + _READY] = _FAILED
            return
        for sensor in self.sensors:  # what the firmware sends on connect
            self._availability(sensor, "online")
            self._latch(sensor)
            self.client.loop(timeout=0)
        self.counters[self.index * _FIELDS + _READY] = 1
        while not self.go.wait(0.05):
            if self.stop.is_set():
                break
            self.client.loop(timeout=0)
        try:
            self._load()
        finally:
            for sensor in self.sensors:
                self._availability(sensor, "offline")
                self.client.loop(timeout=0)
            self._idle(0.3)  # the last PUBACKs
            self.client.disconnect()

    def _load(self) -> None:
        sensors, rate, share = self.sensors, self.rate, self.plan.latch_share
        if not sensors or rate <= 0:
            return
        began = time.monotonic()
        end = began + self.plan.duration_s
        sent = next_heartbeat = 0
        while not self.stop.is_set():
            now = time.monotonic()
            if now >= end:
                break
            due = min(int((now - began) * rate) + 1, sent + max(1, math.ceil(rate / 100)))
            heartbeats = latches = 0
            while sent < due:
                # Message n is a latch change when the running share of latch changes passes a whole number.
                if math.floor((sent + 1) * share) > math.floor(sent * share):
                    sensor = self.rng.choice(sensors)
                    sensor.latch = LatchState.OPEN if sensor.latch is LatchState.CLOSED else LatchState.CLOSED
                    latches += self._latch(sensor)
                else:
                    heartbeats += self._heartbeat(sensors[next_heartbeat])
                    next_heartbeat = (next_heartbeat + 1) % len(sensors)
                sent += 1
            self._count(_HEARTBEATS, heartbeats)
            self._count(_LATCHES, latches)
            self._count(_SENT, heartbeats + latches)
            if self.client.loop(timeout=0) != mqtt.MQTT_ERR_SUCCESS:  # PUBACKs; a lost connection
                self.connected.clear()
                self._idle(0.5)
                with _suppress_os_error():
                    self.client.reconnect()
            time.sleep(TICK_S)


class _suppress_os_error:  # noqa: N801 - used as a statement
    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> bool:
        return exc_type is not None and issubclass(exc_type, OSError)


def _run_connections(plan: LoadPlan, indexes: Sequence[int], counters: Any, go: Any, stop: Any) -> None:
    """Run the connections ``indexes`` of ``plan``, one thread each, until they end (a process's work)."""
    threads = [
        threading.Thread(target=_Connection(plan, i, counters, go, stop).run, name=f"load-{i}", daemon=True)
        for i in indexes
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _process_main(plan: LoadPlan, indexes: Sequence[int], counters: Any, go: Any, stop: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us through `stop`
    _run_connections(plan, indexes, counters, go, stop)


def _totals(plan: LoadPlan, counters: Any) -> tuple[int, int, int, int]:
    sums = [0] * _FIELDS
    for index in range(plan.total_connections):
        for slot in (_SENT, _HEARTBEATS, _LATCHES, _ERRORS):
            sums[slot] += counters[index * _FIELDS + slot]
    return sums[_SENT], sums[_HEARTBEATS], sums[_LATCHES], sums[_ERRORS]


def run_load(plan: LoadPlan, out: TextIO | None = None, *, stop: threading.Event | None = None) -> LoadReport:
    """Run the load and print progress to ``out`` (stdout); the report. Blocking (from async code: a thread)."""
    report = LoadReport()
    out = sys.stdout if out is None else out

    def say(text: str) -> None:
        report.lines.append(text)
        out.write(f"load: {text}\n")
        out.flush()

    counters, go, stopping, workers = _start_workers(plan)
    where = f"{plan.broker.host}:{plan.broker.port}"
    try:
        ready = _wait_ready(plan, counters, workers, stop)
        report.failed_connections = sum(1 for r in ready if r == _FAILED)
        if report.failed_connections:
            say(f"{report.failed_connections} of {plan.total_connections} connections to {where} failed: stopping")
            return report
        report.announced = len(plan.sensor_ids)
        say(
            f"{len(plan.sensor_ids)} sensors online at {where}, site {plan.topics.site}, on {plan.connections} "
            f"connections x {plan.processes} process(es); {plan.rate:g} msg/s for {plan.duration_s:g} s "
            f"({plan.latch_share:.0%} latch changes, a heartbeat every {plan.heartbeat_interval_s:.3g} s per sensor)"
        )
        go.set()
        began = last_at = time.monotonic()
        last_sent = 0
        while any(_alive(w) for w in workers):
            if stop is not None and stop.is_set():
                stopping.set()
            _join_any(workers, plan.report_every_s)
            now = time.monotonic()
            if now - last_at >= plan.report_every_s * 0.999 and any(_alive(w) for w in workers):
                sent, _, latches, errors = _totals(plan, counters)
                say(
                    f"{now - began:.1f} s: sent {sent} ({sent / (now - began):.0f} msg/s; "
                    f"last {now - last_at:.1f} s {(sent - last_sent) / (now - last_at):.0f} msg/s), "
                    f"latch {latches}, publish errors {errors}"
                )
                last_at, last_sent = now, sent
        report.seconds = min(time.monotonic() - began, plan.duration_s) if plan.duration_s else 0.0
    finally:
        stopping.set()
        go.set()
        for worker in workers:
            worker.join()
    report.sent, report.heartbeats, report.latches, report.errors = _totals(plan, counters)
    say(
        f"done: {report.sent} messages in {report.seconds:.1f} s: {report.rate:.1f} msg/s achieved "
        f"(target {plan.rate:g}); {report.heartbeats} heartbeats, {report.latches} latch changes, "
        f"{report.errors} publish errors"
    )
    return report


def _start_workers(plan: LoadPlan) -> tuple[Any, Any, Any, list[Any]]:
    """Counters, the go and stop events, and the started workers: a thread running every connection, or
    ``plan.processes`` processes (spawned: no inherited threads) each running its share."""
    context = multiprocessing.get_context("spawn")
    counters: SynchronizedArray[ctypes.c_longlong] | list[int]
    if plan.processes > 1:
        counters = context.Array(ctypes.c_longlong, plan.total_connections * _FIELDS, lock=False)
        go: Any = context.Event()
        stopping: Any = context.Event()
    else:
        counters = [0] * (plan.total_connections * _FIELDS)
        go, stopping = threading.Event(), threading.Event()
    workers: list[Any] = []
    for p in range(plan.processes):
        indexes = range(p * plan.connections, (p + 1) * plan.connections)
        if plan.processes > 1:
            process = context.Process(target=_process_main, args=(plan, indexes, counters, go, stopping))
            workers.append(process)
        else:
            workers.append(threading.Thread(target=_run_connections, args=(plan, indexes, counters, go, stopping)))
    for worker in workers:
        worker.start()
    return counters, go, stopping, workers


def _alive(worker: Any) -> bool:
    return bool(worker.is_alive())


def _join_any(workers: Sequence[Any], timeout_s: float) -> None:
    end = time.monotonic() + timeout_s
    for worker in workers:
        worker.join(max(0.0, end - time.monotonic()))


def _wait_ready(plan: LoadPlan, counters: Any, workers: Sequence[Any], stop: threading.Event | None) -> list[int]:
    """Each connection's ready field, once every one is connected and announced (1) or has failed (-1)."""
    while True:
        ready = [counters[i * _FIELDS + _READY] for i in range(plan.total_connections)]
        if all(r != 0 for r in ready) or not any(_alive(w) for w in workers) or (stop is not None and stop.is_set()):
            return [r if r != 0 else _FAILED for r in ready]
        time.sleep(0.02)


def ok(plan: LoadPlan, report: LoadReport) -> bool:
    """Every connection made, no publish error, and the achieved rate within :data:`RATE_TOLERANCE`."""
    return report.failed_connections == 0 and report.errors == 0 and report.rate >= plan.rate * (1 - RATE_TOLERANCE)


# -- command line --------------------------------------------------------------------------------------


def _positive(kind: Callable[[str], float], *, upper: float = math.inf) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not 0 < value <= upper:
            raise argparse.ArgumentTypeError(f"must be > 0 and <= {upper:g}, got {text!r}")
        return value

    return parse


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be within 0..1, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sensors", type=_positive(int, upper=1_000_000), default=1000, help="how many (1000)")
    parser.add_argument("--prefix", default="load-", help="sensor ids are PREFIX00001, ... (load-)")
    parser.add_argument("--site", default="load", help="site id (load)")
    parser.add_argument("--base-topic", default=DEFAULT_BASE_TOPIC, help=f"first topic level ({DEFAULT_BASE_TOPIC})")
    parser.add_argument("--rate", type=_positive(float), default=1000.0, help="messages per second in all (1000)")
    parser.add_argument("--latch-share", type=_share, default=0.05, help="share of latch changes, 0..1 (0.05)")
    parser.add_argument("--duration", type=_positive(float), default=10.0, help="seconds of load (10)")
    parser.add_argument("--connections", type=_positive(int, upper=1000), default=4, help="per process (4)")
    parser.add_argument("--processes", type=_positive(int, upper=64), default=1, help="worker processes (1)")
    parser.add_argument("--boot", type=int, help="the sensors' boot counter (default: seconds since 1970, mod 2^32)")
    parser.add_argument("--report-every", type=_positive(float), default=2.0, help="seconds between reports (2)")
    parser.add_argument("--host", help=f"broker host (default {ENV_MQTT_HOST}, else 127.0.0.1)")
    parser.add_argument(
        "--port", type=_positive(int, upper=65535), help=f"broker port (default {ENV_MQTT_PORT}, else 1883)"
    )


def build_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser] | None = None,
) -> argparse.ArgumentParser:
    description = "Many simulated sensors at a set total message rate, from few connections (benchmarks, sizing)."
    epilog = f"Broker credentials come from {ENV_MQTT_USERNAME} and {ENV_MQTT_PASSWORD}."
    if subparsers is None:
        parser = argparse.ArgumentParser(prog=PROG, description=description, epilog=epilog)
    else:
        parser = subparsers.add_parser("sim-load", help="sensor load at a set rate", description=description,
                                       epilog=epilog)  # fmt: skip
    add_arguments(parser)
    return parser


def plan_from_args(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> LoadPlan:
    env = os.environ if env is None else env
    for what, value in (("--site", args.site), ("--base-topic", args.base_topic)):
        if not is_identifier(value):
            raise ValueError(f"{what} {value!r}: use lower case letters, digits, - and _")
    ids = tuple(f"{args.prefix}{n:05d}" for n in range(1, args.sensors + 1))
    if not is_identifier(ids[-1]):
        msg = f"--prefix {args.prefix!r}: sensor ids ({ids[-1]!r}) must be lower case letters, digits, - and _"
        raise ValueError(msg)
    if args.boot is not None and not 0 <= args.boot < 2**32:
        raise ValueError(f"--boot must be within 0..4294967295, got {args.boot}")
    boot = args.boot if args.boot is not None else int(time.time()) % 2**32
    broker = BrokerAddress(
        args.host or env.get(ENV_MQTT_HOST) or "127.0.0.1",
        args.port or int(env.get(ENV_MQTT_PORT) or 1883),
        env.get(ENV_MQTT_USERNAME) or None,
        env.get(ENV_MQTT_PASSWORD) or None,
    )
    return LoadPlan(
        topics=Topics(args.site, args.base_topic),
        broker=broker,
        sensor_ids=ids,
        rate=args.rate,
        duration_s=args.duration,
        latch_share=args.latch_share,
        connections=args.connections,
        processes=args.processes,
        boot=boot,
        report_every_s=args.report_every,
    )


def main_from_args(args: argparse.Namespace) -> int:
    try:
        plan = plan_from_args(args)
    except ValueError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def interrupted(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGINT, interrupted)
    try:
        report = run_load(plan, stop=stop)
    finally:
        signal.signal(signal.SIGINT, previous)
    if report.failed_connections:
        return 1
    if not ok(plan, report):
        print(f"{PROG}: the target was not met (publish errors, or under {1 - RATE_TOLERANCE:.0%} of the rate)",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    return main_from_args(args)


if __name__ == "__main__":
    raise SystemExit(main())
