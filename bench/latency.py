"""Alarm latency benchmark: latch-open publish -> alarm at a staff subscriber, beside the broker's two-hop floor.

``python -m bench.latency --cribs 100 [--samples 1000] [--seed 1] [--json]``

One run starts, each in a process of its own: a real Mosquitto (127.0.0.1, a random password), the gateway
(``python -m gateway.cli gateway --config <generated site file>``, as on a site), a minimal paho-mqtt relay
(:mod:`bench.relay`), a staff subscriber (:mod:`bench.staff`, plain paho) and N simulated sensors
(:mod:`bench.sensors`: each its own MQTT connection, heartbeats every second throughout). This process only
orchestrates: it tells the sensors process which latch to open or close and reads, as JSON lines, when the
sensors process wrote each latch message and when the staff process received what. Then, sample after sample,
it opens a random crib's latch (the room's grace is 0, so the gateway raises the alarm at once) and measures,
on the system-wide monotonic clock (:mod:`bench.clock`), from just before the sensor's socket write to the
arrival at the staff subscriber of

* ALERT: the gateway's ``raised`` alarm event for that latch message (``trigger`` = sensor, boot, seq), or
* FLOOR: the relay's unchanged copy of that latch message (same publisher, same subscriber, same broker,
  two hops: publisher -> broker -> relay -> broker -> subscriber).

Both the gateway and the relay get every latch message in both phases, so the load is the same; only what is
timed differs. Phases alternate in blocks after a discarded warm-up; see docs/performance.md.

Exit status: 0 when every sample arrived, 1 if any was lost or the run hit its time limit (the figures are
printed all the same), 2 if the setup failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import enum
import itertools
import json
import logging
import os
import random
import secrets
import sys
import time
import tomllib
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench import nodered
from bench.harness import (
    REPO_ROOT,
    STARTUP_TIMEOUT_S,
    Child,
    ChildExitedError,
    machine_json,
    machine_text,
    round_ms,
    run_benchmark,
    run_while_alive,
    setup_logging,
    start_child_with_clock,
)
from bench.sensors import sensor_ids
from bench.stats import Summary, ratio, summarize
from devtools.brokers import MosquittoBroker, free_port
from firmware_sim.sensor import SensorError
from gateway.domain.vocab import AlarmEventType, AlarmKind, LatchState
from gateway.mqtt.connection import BrokerAddress, new_client
from gateway.protocol import (
    AlarmEventPayload,
    GatewayAvailabilityPayload,
    LatchPayload,
    ProtocolError,
    SensorChannel,
    Topics,
    decode,
    encode,
)
from gateway.settings import ENV_MQTT_PASSWORD, ENV_MQTT_USERNAME, settings_from_mapping

log = logging.getLogger("bench.latency")

SITE_ID = "bench"
ROOM_ID = "room"
USERNAME = "bench"
RELAY_PREFIX = "bench/relay"
PEER_PREFIX = nodered.PEER_PREFIX
HEARTBEAT_S = 1.0
TARGET_RATIO_P99 = 1.5
"""The issue's target: the alarm's p99 within 1.5 times the two-hop floor's p99."""

PAUSE_MAX_S = 0.005

# Mosquitto as configured on a site (deploy/mosquitto/mosquitto.conf) logs errors to information, not every
# PUBLISH; MosquittoBroker logs everything (`log_type all`). "none" resets the types given before it.
BROKER_LOGGING = "log_type none\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\n"


class Phase(enum.StrEnum):
    FLOOR = "floor"
    ALERT = "alert"


class Arrival(enum.StrEnum):
    """What the staff subscriber can receive about one latch message."""

    RELAYED = "relayed"  # the relay's copy of the latch message itself
    RAISED = "raised"  # the gateway's alarm event raised by it
    RESOLVED = "resolved"  # the gateway's event that resolved the alarm it raised (carries the same trigger)
    PEER = "peer"  # the peer's (Node-RED's, bench.peers) alarm event for the latch message, open or close


Key = tuple[Arrival, str, int, int]
"""(what, sensor id, boot, seq of the latch message)."""

MEASURED = {Phase.FLOOR: Arrival.RELAYED, Phase.ALERT: Arrival.RAISED}


@dataclasses.dataclass(frozen=True, slots=True)
class Options:
    cribs: int
    samples: int
    seed: int
    json: bool
    warmup: int = 20
    blocks: int = 10
    timeout_s: float = 5.0
    time_limit_s: float = 120.0
    nodelay: bool = True
    keep_dir: bool = False
    gateway_profile: Path | None = None
    gateway_trace: Path | None = None


# ------------------------------------------------------------------------------------------ site file


def load_sensor_ids(count: int) -> list[str]:
    """The ids of the load sensors of :mod:`bench.throughput` (cribs of the site that only its load generator
    speaks for)."""
    return [f"l-{i:04d}" for i in range(1, count + 1)]


def site_toml(
    cribs: int,
    host: str,
    port: int,
    *,
    stats_interval_s: float | None = None,
    load_sensors: int = 0,
    heartbeat_s: float = 1.0,
) -> str:
    """The gateway's site file: one room with grace 0 and ``cribs`` wireless cribs (sensors b-0001...), then
    ``load_sensors`` more (sensors l-0001...)."""
    lines = [
        "# Generated by bench.latency: one room, grace 0, every crib wireless.",
        "[site]",
        f'id = "{SITE_ID}"',
        'label = "Benchmark site"',
        "",
        "[mqtt]",
        f'host = "{host}"',
        f"port = {port}",
        "# The benches' brokers do not tie client ids to usernames: one account serves both connections.",
        "client_id_is_username = false",
        *([] if stats_interval_s is None else [f"stats_interval_s = {stats_interval_s}"]),
        "",
        "[alarms]",
        f"heartbeat_interval_s = {heartbeat_s}",
        "missed_heartbeats = 5",
        "offline_grace_s = 5",
        "",
        "# The alert policy on (docs/alerting.md): every alarm also goes through the escalation chain. The",
        "# benchmark opens and closes each crib over and over: no flapping, so that every opening is an alarm.",
        "[alerting.flapping]",
        "transitions = 1000",
        "window_s = 1",
        "[[alerting.groups]]",
        'id = "bench-room-staff"',
        'kind = "room"',
        f'rooms = ["{ROOM_ID}"]',
        'members = [{ id = "pager-1", channels = [{ channel = "mqtt", address = "pager-1" }] }]',
        "[[alerting.groups]]",
        'id = "bench-floor"',
        'kind = "site"',
        'members = [{ id = "tablet-1", channels = [{ channel = "mqtt", address = "tablet-1" }] }]',
        "",
        "[[rooms]]",
        f'id = "{ROOM_ID}"',
        'label = "Benchmark room"',
        "grace_s = 0",
    ]
    for number, sensor_id in enumerate(sensor_ids(cribs) + load_sensor_ids(load_sensors), start=1):
        lines += ["", "  [[rooms.cribs]]", f'  id = "c-{number:04d}"', f'  label = "Bedje {number}"']
        lines.append(f'  sensor_id = "{sensor_id}"')
    return "\n".join(lines) + "\n"


def block_plan(samples: int, blocks: int) -> list[tuple[Phase, int]]:
    """Alternating blocks, FLOOR first: (phase, samples in that block); each phase gets ``samples`` in all."""
    per_phase = max(1, blocks // 2)
    plan: list[tuple[Phase, int]] = []
    for i in range(per_phase):
        size = samples // per_phase + (1 if i < samples % per_phase else 0)
        plan += [(Phase.FLOOR, size), (Phase.ALERT, size)]
    return [(phase, size) for phase, size in plan if size > 0]


# ------------------------------------------------------------------------------------------ arrivals


class Arrivals:
    """When the staff subscriber received what, by :data:`Key`; :meth:`wait` for one of them.

    Times are whatever the caller records: the benchmarks record :func:`bench.clock.now_ns` stamps taken in the
    staff process.
    """

    def __init__(self) -> None:
        self._times: dict[Key, float] = {}
        self._waiters: dict[Key, asyncio.Future[float]] = {}
        self.unexpected: Counter[str] = Counter()

    def record(self, key: Key, at: float) -> None:
        waiter = self._waiters.pop(key, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(at)
        else:
            self._times[key] = at

    async def wait(self, key: Key, timeout_s: float) -> float | None:
        """The time at which ``key`` arrived (now or within ``timeout_s``); None if it did not."""
        if key in self._times:
            return self._times.pop(key)
        waiter: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiters[key] = waiter
        try:
            async with asyncio.timeout(timeout_s):
                return await waiter
        except TimeoutError:
            return None
        finally:
            self._waiters.pop(key, None)

    def clear(self) -> int:
        """Forget arrivals nobody waited for; return how many there were."""
        stray = len(self._times)
        self._times.clear()
        return stray


class StaffFeed:
    """What the staff subscriber process (:mod:`bench.staff`) received, filed as it comes in.

    Alarm events and relay copies go to :attr:`arrivals`; the gateway's availability sets
    :attr:`gateway_online`; its stats messages are kept (the latest in :attr:`stats`).
    """

    def __init__(self, topics: Topics) -> None:
        self.topics = topics
        self.arrivals = Arrivals()
        self.gateway_online = asyncio.Event()
        self.stats: dict[str, Any] | None = None
        self.stats_received = 0
        self._stats_arrived = asyncio.Event()
        self._relay_head = f"{RELAY_PREFIX}/"
        self._peer_head = f"{PEER_PREFIX}/"
        self._alarm_head = f"{topics.prefix}/alarm/"

    def take(self, line: str) -> None:
        """One JSON line of :mod:`bench.staff`: ``{"t": ns, "topic": ..., "payload": ...}``."""
        item = json.loads(line)
        at, topic, payload = item["t"], item["topic"], item["payload"].encode()
        arrivals, topics = self.arrivals, self.topics
        try:
            if topic.startswith(self._relay_head):
                latch = decode(LatchPayload, payload)
                arrivals.record((Arrival.RELAYED, topic[len(self._relay_head) :], latch.boot, latch.seq), at)
            elif topic.startswith(self._peer_head):
                trigger = json.loads(payload)["trigger"]
                arrivals.record((Arrival.PEER, trigger["sensor"], int(trigger["boot"]), int(trigger["seq"])), at)
            elif topic.startswith(self._alarm_head):
                event = decode(AlarmEventPayload, payload)
                trigger = event.trigger
                if event.kind is AlarmKind.CRIB_OPEN and trigger is not None and event.event in _EVENT_ARRIVAL:
                    key = (_EVENT_ARRIVAL[event.event], trigger.sensor, trigger.boot, trigger.seq)
                    arrivals.record(key, at)
                else:
                    arrivals.unexpected[f"{event.kind.value}_{event.event.value}"] += 1
                    log.warning("unexpected alarm event: %s %s on crib %s", event.kind, event.event, event.crib)
            elif topic == topics.gateway_availability:
                if decode(GatewayAvailabilityPayload, payload).state == "online":
                    self.gateway_online.set()
            elif topic == topics.gateway_stats:
                self.stats = json.loads(payload)
                self.stats_received += 1
                self._stats_arrived.set()
            else:
                arrivals.unexpected["other_topic"] += 1
        except ProtocolError as exc:
            arrivals.unexpected["bad_payload"] += 1
            log.warning("bad payload on %s: %s", topic, exc)

    async def next_stats(self) -> dict[str, Any]:
        """The next stats message the gateway publishes (its ``gateway/stats``, as JSON)."""
        self._stats_arrived.clear()
        await self._stats_arrived.wait()
        assert self.stats is not None
        return self.stats


_EVENT_ARRIVAL = {AlarmEventType.RAISED: Arrival.RAISED, AlarmEventType.RESOLVED: Arrival.RESOLVED}


@dataclasses.dataclass(frozen=True, slots=True)
class Sent:
    """A latch message the sensors process wrote: whose, its (boot, seq), and when (``now_ns``, just before)."""

    sid: str
    boot: int
    seq: int
    t: int


class SensorsDriver:
    """Commands to the sensors process (:mod:`bench.sensors`) and its answers, matched by request id."""

    def __init__(self, child: Child, sids: Sequence[str]) -> None:
        self.child = child
        self.sensor_ids = list(sids)
        self.latch = dict.fromkeys(self.sensor_ids, LatchState.CLOSED)
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._next = 0

    def take(self, line: str) -> None:
        answer = json.loads(line)
        waiter = self._pending.pop(str(answer.get("id")), None)
        if waiter is not None and not waiter.done():
            waiter.set_result(answer)

    async def set_latch(self, sid: str, state: LatchState, timeout_s: float) -> Sent:
        """Open or close ``sid``'s latch; SensorError if the sensor could not send or did not answer."""
        proc = self.child.proc
        assert proc is not None
        assert proc.stdin is not None
        self._next += 1
        request = str(self._next)
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request] = waiter
        verb = "open" if state is LatchState.OPEN else "close"
        proc.stdin.write(f"{request} {verb} {sid}\n".encode())
        try:
            async with asyncio.timeout(timeout_s):
                await proc.stdin.drain()
                answer = await waiter
        except TimeoutError:
            raise SensorError(f"the sensors process did not answer {verb} {sid}") from None
        finally:
            self._pending.pop(request, None)
        if "error" in answer:
            raise SensorError(str(answer["error"]))
        self.latch[sid] = state
        return Sent(sid, int(answer["boot"]), int(answer["seq"]), int(answer["t"]))


# ------------------------------------------------------------------------------------------ processes


def child_env(password: str) -> dict[str, str]:
    env = dict(os.environ)
    env[ENV_MQTT_USERNAME] = USERNAME
    env[ENV_MQTT_PASSWORD] = password
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    for var in ("CRIBWATCH_MQTT_HOST", "CRIBWATCH_MQTT_PORT"):  # the site file says where the broker is
        env.pop(var, None)
    return env


# ------------------------------------------------------------------------------------------ the run


@dataclasses.dataclass
class Results:
    options: Options
    latencies: dict[Phase, list[float]] = dataclasses.field(default_factory=lambda: {p: [] for p in Phase})
    lost: Counter[Phase] = dataclasses.field(default_factory=Counter)
    settle_missing: Counter[str] = dataclasses.field(default_factory=Counter)
    stray: int = 0
    unexpected: Counter[str] = dataclasses.field(default_factory=Counter)
    complete: bool = True
    seconds: float = 0.0
    startup_s: float = 0.0
    load_before: float = 0.0
    load_after: float = 0.0

    def summary(self, phase: Phase) -> Summary | None:
        values = self.latencies[phase]
        return summarize(values) if values else None

    @property
    def ok(self) -> bool:
        return self.complete and not self.lost[Phase.ALERT] and not self.lost[Phase.FLOOR] and not self.settle_missing


class TimeLimitError(Exception):
    pass


class TooManyLostError(Exception):
    pass


MAX_LOST_IN_A_ROW = 3
"""Stop measuring after this many samples in a row lost: something is broken, waiting longer shows nothing."""


class Bench:
    def __init__(self, options: Options, rig: Rig, results: Results) -> None:
        self.options = options
        self.rig = rig
        self.sensors = rig.sensors
        self.arrivals = rig.staff_feed.arrivals
        self.results = results
        self.rng = random.Random(options.seed)
        self.deadline = time.monotonic() + options.time_limit_s

    async def _wait(self, key: Key) -> float | None:
        return await self.arrivals.wait(key, self.options.timeout_s)

    async def sample(self, phase: Phase) -> float | None:
        """Open a random closed latch, time what ``phase`` measures, close it and let everything settle.

        Returns the latency in ms, or None if the measured message did not arrive within the timeout.
        Every sample starts from a quiet system: the open's relay copy and alarm, and the close's relay copy
        and ``resolved`` event, have all arrived before the next one (the pause after it is 0-5 ms).
        """
        if time.monotonic() > self.deadline:
            raise TimeLimitError
        timeout = self.options.timeout_s
        self.results.stray += self.arrivals.clear()
        sensors = self.sensors
        closed_ones = [sid for sid in sensors.sensor_ids if sensors.latch[sid] is LatchState.CLOSED]
        if not closed_ones:
            raise TooManyLostError
        sid = self.rng.choice(closed_ones)
        try:
            opened = await sensors.set_latch(sid, LatchState.OPEN, timeout)
        except SensorError as exc:
            log.warning("%s: could not open the latch: %s", sid, exc)
            return None
        measured = MEASURED[phase]
        arrived = await self.arrivals.wait((measured, sid, opened.boot, opened.seq), timeout)
        latency = None if arrived is None else (arrived - opened.t) / 1e6
        other = Arrival.RAISED if measured is Arrival.RELAYED else Arrival.RELAYED
        if await self._wait((other, sid, opened.boot, opened.seq)) is None:
            self.results.settle_missing[f"open_{other.value}"] += 1
        try:
            closed = await sensors.set_latch(sid, LatchState.CLOSED, timeout)
        except SensorError as exc:
            log.warning("%s: could not close the latch: %s", sid, exc)
            self.results.settle_missing["close_failed"] += 1
            return latency
        if await self._wait((Arrival.RELAYED, sid, closed.boot, closed.seq)) is None:
            self.results.settle_missing["close_relayed"] += 1
        if await self._wait((Arrival.RESOLVED, sid, opened.boot, opened.seq)) is None:
            self.results.settle_missing["resolved"] += 1
        await asyncio.sleep(self.rng.uniform(0.0, PAUSE_MAX_S))
        return latency

    async def run(self) -> None:
        options = self.options
        lost_in_a_row = 0
        for _ in range(options.warmup):
            for phase in Phase:
                await self.sample(phase)
        for phase, size in block_plan(options.samples, options.blocks):
            for _ in range(size):
                latency = await self.sample(phase)
                if latency is None:
                    self.results.lost[phase] += 1
                    lost_in_a_row += 1
                    log.warning("%s sample lost (nothing within %.1f s)", phase.value, options.timeout_s)
                    if lost_in_a_row >= MAX_LOST_IN_A_ROW:
                        raise TooManyLostError
                else:
                    lost_in_a_row = 0
                    self.results.latencies[phase].append(latency)


@dataclasses.dataclass(frozen=True, slots=True)
class RigConfig:
    cribs: int
    nodelay: bool = True
    gateway_profile: Path | None = None
    gateway_trace: Path | None = None
    stats_interval_s: float | None = None
    load_sensors: int = 0
    """Cribs whose sensors no process simulates (ids l-0001...): bench.throughput's load generator speaks for them."""
    heartbeat_s: float = HEARTBEAT_S
    """The site's heartbeat interval (the simulated sensors send one every HEARTBEAT_S whatever it is)."""
    peer: tuple[str, Path] | None = None
    """(node, Node-RED's red.js): start the Node-RED peer flow too (bench.peers)."""
    extra_site: str = ""
    """TOML appended to the generated site file (bench.influx: an ``[influx]`` section)."""
    extra_env: tuple[tuple[str, str], ...] = ()
    """More environment for the gateway (bench.influx: the InfluxDB password)."""


@dataclasses.dataclass
class Rig:
    """Everything one benchmark run starts, each in a process of its own (all on 127.0.0.1)."""

    endpoint: BrokerAddress
    topics: Topics
    env: dict[str, str]
    gateway: Child
    relay: Child
    staff: Child
    sensors_process: Child
    staff_feed: StaffFeed
    sensors: SensorsDriver
    peer: Child | None = None

    @property
    def children(self) -> list[Child]:
        return [self.gateway, self.relay, self.staff, self.sensors_process, *([self.peer] if self.peer else [])]


async def _pump(child: Child, take: Callable[[str], None]) -> None:
    def safe_take(line: str) -> None:
        try:
            take(line)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("%s said something unexpected (%s): %r", child.name, exc, line[:200])

    await child.pump(safe_take)


async def start_rig(stack: contextlib.AsyncExitStack, workdir: Path, config: RigConfig) -> Rig:
    """Start the broker, the relay, the staff subscriber, the peer (if any), the gateway and the sensors, in that order.

    Everything is stopped by ``stack``, in the reverse order.
    """
    password = secrets.token_urlsafe(18)
    extra = BROKER_LOGGING + ("" if config.nodelay else "set_tcp_nodelay false\n")
    broker = MosquittoBroker(workdir / "mosquitto", users={USERNAME: password}, extra_config=extra)
    topics = Topics(SITE_ID)
    endpoint = await asyncio.to_thread(broker.start)
    stack.callback(broker.stop)
    address = BrokerAddress(endpoint.host, endpoint.port, endpoint.username, endpoint.password)
    nodelay_args = [] if config.nodelay else ["--no-nodelay"]
    where = ["--host", endpoint.host, "--port", str(endpoint.port)]

    site = workdir / "site.toml"
    site.write_text(
        site_toml(
            config.cribs,
            endpoint.host,
            endpoint.port,
            stats_interval_s=config.stats_interval_s,
            load_sensors=config.load_sensors,
            heartbeat_s=config.heartbeat_s,
        )
        + config.extra_site
    )
    settings_from_mapping(  # fail here, with the gateway's own message, rather than in the subprocess
        tomllib.loads(site.read_text()),
        env={ENV_MQTT_USERNAME: USERNAME, ENV_MQTT_PASSWORD: password, **dict(config.extra_env)},
    )
    env = child_env(password) | dict(config.extra_env)
    env["CRIBWATCH_STATE_DIR"] = str(workdir / "state")  # the gateway's store, on the disk the run uses

    relay = Child("relay", workdir / "relay.log")
    stack.push_async_callback(relay.stop)
    relay_argv = [
        sys.executable, "-m", "bench.relay", *where,
        "--topic-filter", f"{topics.prefix}/sensor/+/latch", "--out-prefix", RELAY_PREFIX,
    ]  # fmt: skip
    await relay.start(relay_argv + nodelay_args, env, stdout_pipe=True)

    staff = Child("staff", workdir / "staff.log")
    stack.push_async_callback(staff.stop)
    filters = [topics.alarm_filter, f"{RELAY_PREFIX}/#", topics.gateway_availability, topics.gateway_stats]
    filters += [f"{PEER_PREFIX}/#"] if config.peer else []
    staff_argv = [sys.executable, "-m", "bench.staff", *where, *(a for f in filters for a in ("--subscribe", f))]
    await start_child_with_clock(staff, staff_argv + nodelay_args, env)
    feed = StaffFeed(topics)
    stack.push_async_callback(_cancel, asyncio.create_task(_pump(staff, feed.take), name="staff-feed"))

    line = await relay.read_line(STARTUP_TIMEOUT_S)
    if line != "ready":
        raise RuntimeError(f"relay said {line!r} instead of 'ready'\n{relay.tail()}")
    peer = None  # started before the gateway: its sensors would go silent while Node-RED starts
    if config.peer is not None:
        peer = await _start_peer(stack, workdir=workdir, peer=config.peer, address=address, topics=topics, feed=feed)

    gw = Child("gateway", workdir / "gateway.log")
    stack.push_async_callback(gw.stop)
    gw_argv = [sys.executable, "-m", "gateway.cli", "gateway", "--config", str(site), "--log-level", "warning"]
    if config.gateway_trace is not None:
        gw_argv[1:4] = ["-m", "bench.gwtrace", "--out", str(config.gateway_trace.resolve()), "--", "gateway"]
    elif config.gateway_profile is not None:
        # cProfile writes its file when the gateway returns, which it does on SIGTERM (gateway.cli).
        gw_argv[1:1] = ["-m", "cProfile", "-o", str(config.gateway_profile.resolve())]
    await gw.start(gw_argv, env)

    await gw.wait_for(feed.gateway_online, STARTUP_TIMEOUT_S)

    sensors_process = Child("sensors", workdir / "sensors.log")
    stack.push_async_callback(sensors_process.stop)
    sensors_argv = [
        sys.executable, "-m", "bench.sensors", *where,
        "--site", SITE_ID, "--cribs", str(config.cribs), "--interval", str(HEARTBEAT_S),
    ]  # fmt: skip
    await start_child_with_clock(sensors_process, sensors_argv + nodelay_args, env)
    driver = SensorsDriver(sensors_process, sensor_ids(config.cribs))
    stack.push_async_callback(_cancel, asyncio.create_task(_pump(sensors_process, driver.take), name="sensors"))
    await asyncio.sleep(0.2)
    feed.arrivals.clear()  # the relay's copies of the latch states the sensors announced on connect
    return Rig(address, topics, env, gw, relay, staff, sensors_process, feed, driver, peer)


PROBE_SENSOR = "zz-probe"
"""The sensor id of the probe that tells when the peer flow takes latch messages (no crib uses it)."""


async def _start_peer(
    stack: contextlib.AsyncExitStack,
    *,
    workdir: Path,
    peer: tuple[str, Path],
    address: BrokerAddress,
    topics: Topics,
    feed: StaffFeed,
) -> Child:
    """Start Node-RED with the peer flow (:mod:`bench.nodered`); return once it relays a probe latch message."""
    node, red = peer
    user_dir = workdir / "node-red"
    assert address.username is not None
    assert address.password is not None
    nodered.prepare(
        user_dir,
        host=address.host,
        port=address.port,
        username=address.username,
        password=address.password,
        site_prefix=topics.prefix,
        http_port=free_port(),
    )
    child = Child("node-red", workdir / "node-red.log")
    stack.push_async_callback(child.stop)
    await child.start(nodered.argv(node, red, user_dir), dict(os.environ))
    probe_topic = topics.sensor(PROBE_SENSOR, SensorChannel.LATCH)
    async with new_client(address, identifier=f"bench-probe-{os.getpid()}") as probe:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        for seq in itertools.count():
            if not child.running:
                raise RuntimeError(f"node-red exited with code {child.proc and child.proc.returncode}\n{child.tail()}")
            if time.monotonic() > deadline:
                within = f"{STARTUP_TIMEOUT_S:.0f} s"
                raise RuntimeError(f"node-red did not relay a latch message within {within}\n{child.tail()}")
            payload = encode(LatchPayload(boot=1, seq=seq, ts=time.time(), state=LatchState.OPEN))
            await probe.publish(probe_topic, payload, qos=1)
            if await feed.arrivals.wait((Arrival.PEER, PROBE_SENSOR, 1, seq), 0.5) is not None:
                break
    log.info("node-red %s takes latch messages", nodered.NODE_RED_VERSION)
    return child


async def run(options: Options, workdir: Path) -> Results:
    results = Results(options)
    results.load_before = os.getloadavg()[0]
    began = time.perf_counter()
    config = RigConfig(
        cribs=options.cribs,
        nodelay=options.nodelay,
        gateway_profile=options.gateway_profile,
        gateway_trace=options.gateway_trace,
    )
    async with contextlib.AsyncExitStack() as stack:
        rig = await start_rig(stack, workdir, config)
        results.startup_s = time.perf_counter() - began
        log.info("broker, relay, gateway, staff and %d sensors up in %.1f s", options.cribs, results.startup_s)
        bench = Bench(options, rig, results)
        try:
            await run_while_alive(bench.run(), rig.children)
        except TimeLimitError:
            results.complete = False
            log.error("time limit of %.0f s reached: stopping with the samples taken so far", options.time_limit_s)
        except TooManyLostError:
            results.complete = False
            log.error("%d samples in a row lost: stopping with the samples taken so far", MAX_LOST_IN_A_ROW)
        except ChildExitedError as exc:
            results.complete = False
            log.error(
                "%s exited during the run: stopping with the samples taken so far\n%s", exc.child.name, exc.child.tail()
            )
        results.unexpected = rig.staff_feed.arrivals.unexpected
        if results.unexpected:
            log.warning("unexpected messages at the staff subscriber: %s", dict(results.unexpected))
    results.seconds = time.perf_counter() - began
    results.load_after = os.getloadavg()[0]
    return results


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


# ------------------------------------------------------------------------------------------ output


def to_json(results: Results) -> dict[str, Any]:
    alert, floor = results.summary(Phase.ALERT), results.summary(Phase.FLOOR)
    out: dict[str, Any] = {}
    for name, summary in (("alert", alert), ("floor", floor)):
        for stat in ("p50", "p90", "p99", "max", "mean"):
            out[f"{name}_{stat}_ms"] = round_ms(getattr(summary, stat)) if summary else None
    for name, phase in (("alert", Phase.ALERT), ("floor", Phase.FLOOR)):
        out[f"{name}_n"] = len(results.latencies[phase])
        out[f"{name}_lost"] = results.lost[phase]
    out["ratio_p50"] = round(ratio(alert.p50, floor.p50), 3) if alert and floor else None
    out["ratio_p99"] = round(ratio(alert.p99, floor.p99), 3) if alert and floor else None
    out["alert_minus_floor_p50_ms"] = round_ms(alert.p50 - floor.p50) if alert and floor else None
    out["alert_minus_floor_p99_ms"] = round_ms(alert.p99 - floor.p99) if alert and floor else None
    opts = results.options
    out |= {
        "target_ratio_p99": TARGET_RATIO_P99,
        "target_met": out["ratio_p99"] is not None and out["ratio_p99"] <= TARGET_RATIO_P99,
        "cribs": opts.cribs,
        "samples": opts.samples,
        "warmup": opts.warmup,
        "blocks": len(block_plan(opts.samples, opts.blocks)),
        "seed": opts.seed,
        "nodelay": opts.nodelay,
        "settle_missing": sum(results.settle_missing.values()),
        "stray_messages": results.stray,
        "unexpected_messages": sum(results.unexpected.values()),
        "complete": results.complete,
        "startup_s": round(results.startup_s, 2),
        "seconds": round(results.seconds, 2),
    }
    return out | machine_json(results.load_before, results.load_after)


def to_table(results: Results) -> str:
    opts = results.options
    rows = [
        f"cribwatch alarm latency: {opts.cribs} cribs, {opts.samples} samples per phase after {opts.warmup} "
        f"warm-up, {len(block_plan(opts.samples, opts.blocks))} alternating blocks, seed {opts.seed}"
        + ("" if opts.nodelay else ", TCP_NODELAY OFF (bench clients, relay, broker)"),
        "",
        f"{'ms':28} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8} {'mean':>8} {'n':>6} {'lost':>5}",
    ]
    labels = {
        Phase.ALERT: "alert (sensor->gw->staff)",
        Phase.FLOOR: "floor (sensor->relay->staff)",
    }
    for phase in (Phase.ALERT, Phase.FLOOR):
        s = results.summary(phase)
        if s is None:
            dashes = " ".join(f"{'-':>8}" for _ in range(5))
            rows.append(f"{labels[phase]:28} {dashes} {0:>6} {results.lost[phase]:>5}")
        else:
            rows.append(
                f"{labels[phase]:28} {s.p50:8.3f} {s.p90:8.3f} {s.p99:8.3f} {s.max:8.3f} {s.mean:8.3f} "
                f"{s.n:>6} {results.lost[phase]:>5}"
            )
    alert, floor = results.summary(Phase.ALERT), results.summary(Phase.FLOOR)
    if alert and floor:
        r50, r90, r99 = ratio(alert.p50, floor.p50), ratio(alert.p90, floor.p90), ratio(alert.p99, floor.p99)
        rmax, rmean = ratio(alert.max, floor.max), ratio(alert.mean, floor.mean)
        rows.append(f"{'ratio alert/floor':28} {r50:8.2f} {r90:8.2f} {r99:8.2f} {rmax:8.2f} {rmean:8.2f}")
        diffs = [getattr(alert, stat) - getattr(floor, stat) for stat in ("p50", "p90", "p99", "max", "mean")]
        rows.append(f"{'alert - floor (ms)':28} " + " ".join(f"{d:8.3f}" for d in diffs))
        verdict = "MET" if r99 <= TARGET_RATIO_P99 else "NOT MET"
        rows += [
            "",
            f"the gateway costs {alert.p50 - floor.p50:.3f} ms at p50 and {alert.p99 - floor.p99:.3f} ms at p99 beyond "
            f"the floor (ratio {r50:.2f} and {r99:.2f})",
            f"target: alarm p99 <= {TARGET_RATIO_P99} x floor p99: {verdict} (ratio {r99:.2f})",
        ]
    if results.settle_missing:
        rows.append(f"missing while settling: {dict(results.settle_missing)}")
    if not results.complete:
        rows.append("INCOMPLETE: the run stopped early (see the log above)")
    rows.append(
        f"run took {results.seconds:.1f} s (start-up {results.startup_s:.1f} s); "
        + machine_text(results.load_before, results.load_after)
    )
    return "\n".join(rows)


# ------------------------------------------------------------------------------------------ main


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.latency",
        description="Alarm latency (latch open -> staff) of the real gateway beside the broker's two-hop floor.",
    )
    parser.add_argument("--cribs", type=_positive_int, default=100, help="simulated wireless cribs (default 100)")
    parser.add_argument("--samples", type=_positive_int, default=1000, help="measured samples per phase (1000)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the choice of cribs and pauses (1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout, nothing else")
    parser.add_argument("--warmup", type=int, default=20, help="discarded samples of each phase first (20)")
    parser.add_argument("--blocks", type=_positive_int, default=10, help="alternating blocks, both phases (10)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for one message (5)")
    parser.add_argument("--time-limit", type=float, default=120.0, help="stop measuring after this many s (120)")
    parser.add_argument(
        "--no-nodelay",
        action="store_true",
        help="TCP_NODELAY off in the broker, the relay and this process's clients (the gateway keeps it): "
        "shows the Nagle + delayed ACK trap",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, site file)")
    parser.add_argument(
        "--gateway-profile",
        type=Path,
        metavar="FILE",
        help="run the gateway under cProfile and write its stats to FILE (slows the gateway: diagnosis only)",
    )
    parser.add_argument(
        "--gateway-trace",
        type=Path,
        metavar="FILE",
        help="run the gateway with timestamps along its alarm path (bench.gwtrace), figures to FILE (JSON)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    return parser


def options_from_args(args: argparse.Namespace) -> Options:
    return Options(
        cribs=args.cribs,
        samples=args.samples,
        seed=args.seed,
        json=args.json,
        warmup=max(0, args.warmup),
        blocks=args.blocks,
        timeout_s=args.timeout,
        time_limit_s=args.time_limit,
        nodelay=not args.no_nodelay,
        keep_dir=args.keep,
        gateway_profile=args.gateway_profile,
        gateway_trace=args.gateway_trace,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, quiet=("gateway", "firmware_sim"))
    options = options_from_args(args)
    return run_benchmark(
        run,
        options,
        to_json,
        to_table,
        logger=log,
        workdir_prefix="cribwatch-bench-",
        not_ok="some samples were lost or the run was cut short",
    )


if __name__ == "__main__":
    raise SystemExit(main())
