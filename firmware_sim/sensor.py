"""One simulated crib-latch sensor: its own MQTT connection, speaking exactly :mod:`gateway.protocol`.

What the firmware does, and so what :class:`SimulatedSensor` does:

* It connects with client id ``sensor-<id>``, a clean session and a last will ``offline`` (retained, QoS 1)
  on its availability topic, carrying its boot counter and the time of the connect. The will is composed
  anew for every connection (also a reconnect), so its ``ts`` is the time of that connection's connect.
* Once connected it publishes ``online`` (retained), its current latch state (retained, QoS 1) and a first
  heartbeat, then a heartbeat (:class:`~gateway.protocol.TelemetryPayload`, QoS 0) every ``interval_s``.
  It does this on every connect: the first one of a boot and every reconnect.
* Latch and telemetry payloads carry ``boot`` (increases on every power-up) and ``seq``: one counter per channel
  (latch, telemetry), starting at 0 on each boot; availability carries ``boot`` only. Both are unsigned 32-bit
  counters that wrap from 4294967295 to 0 (:func:`next_count`). A lost connection keeps both; a power cycle
  starts a new boot with the counters back at 0.
* Powered off it is silent: the broker publishes its last will. The latch and the battery still change
  physically; their current values go out with the next connect.
* Powered on, a connection lost on its own (the broker restarts, the network drops it, another client
  connects with the same client id) is noticed and the sensor reconnects by itself: same boot, counters
  continuing, with exponential backoff and jitter between attempts (each wait is a random 50-100 % of a
  delay that starts at ``reconnect_min_s`` and doubles after every attempt up to ``reconnect_max_s``; it
  starts at the minimum again after a connection that lasted :data:`STABLE_AFTER_S`). While it
  has no connection it is silent, as when powered off. A connection that is closed within
  :data:`STABLE_AFTER_S` of its connect :data:`TAKEOVER_LOSSES` times in a row most likely shares its client
  id with another client (two simulators running the same sensor; real firmware cannot be duplicated): the
  sensor logs a warning and waits ``reconnect_max_s`` (with jitter) before each attempt, so the two do not
  fight for ever.
* Powered on while the broker cannot be reached (nobody listens yet, the network is not up), the first
  connect fails and the sensor keeps trying for ever with the same backoff (state ``connecting``). A broker
  that answers and refuses the sensor's credentials (state ``refused``) is tried again every
  ``reconnect_max_s`` (with jitter) only: wrong credentials are not fixed by hammering the broker.
* A clean shutdown publishes ``offline`` itself before its DISCONNECT (which suppresses the will).

Only the connection handling here touches aiomqtt (through :mod:`gateway.mqtt.connection`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Self

import aiomqtt

from gateway.domain.vocab import LatchState, is_identifier
from gateway.mqtt.connection import BrokerAddress, drop_connection, new_client
from gateway.protocol import (
    AVAILABILITY,
    BOOT_MAX,
    LATCH,
    SEQ_MAX,
    TELEMETRY,
    AvailabilityPayload,
    LatchPayload,
    SensorChannel,
    TelemetryPayload,
    Topics,
    TopicSpec,
    encode,
)

__all__ = [
    "SensorConnectError",
    "SensorError",
    "SensorOfflineError",
    "Sent",
    "SimulatedSensor",
    "next_count",
]

log = logging.getLogger(__name__)

CLIENT_ID_PREFIX = "sensor-"
KEEPALIVE_S = 60
"""The firmware's MQTT keepalive."""
TEARDOWN_TIMEOUT_S = 5.0
"""How long to wait for our own side of a cut connection to notice it (it takes microseconds)."""
STABLE_AFTER_S = 5.0
"""A connection that lasted this long was stable: its loss starts the reconnect backoff at the minimum again."""
TAKEOVER_LOSSES = 3
"""After this many connections in a row closed within :data:`STABLE_AFTER_S`, assume another client uses the
same client id: warn, and wait ``reconnect_max_s`` (with jitter) before each attempt."""
_FW_MAX_LEN = 32
_RSSI_RANGE = (-130, 0)


def next_count(value: int) -> int:
    """The value after ``value`` of a 32-bit counter (``boot``, ``seq``): one more, and 4294967295 wraps to 0."""
    return (value + 1) % (SEQ_MAX + 1)  # SEQ_MAX == BOOT_MAX: one width for both counters


class SensorError(RuntimeError):
    """A simulated sensor cannot do what was asked."""


class SensorOfflineError(SensorError):
    """The sensor has no connection (powered off, or its connection was lost): nothing was sent."""


class SensorConnectError(SensorError):
    """The sensor could not connect to the broker (refused, unreachable, bad credentials).

    ``reason`` is what the connection attempt said, e.g. ``[Errno 111] Connection refused``.
    """

    def __init__(self, sensor_id: str, broker: BrokerAddress, reason: str, *, refused: bool = False) -> None:
        super().__init__(f"sensor {sensor_id}: cannot connect to {broker.host}:{broker.port}: {reason}")
        self.sensor_id = sensor_id
        self.reason = reason
        self.refused = refused
        """The broker answered and refused the sensor (bad username or password, not authorized)."""


_REFUSED_CODES = frozenset({4, 5, 134, 135})
"""CONNACK codes of a broker that refuses the client's credentials: MQTT 3.1.1 (4, 5) and 5 (0x86, 0x87)."""


def _is_refusal(exc: aiomqtt.MqttError) -> bool:
    rc = getattr(exc, "rc", None)
    return isinstance(exc, aiomqtt.MqttCodeError) and getattr(rc, "value", rc) in _REFUSED_CODES


SensorState = Literal["off", "refused", "connecting", "online", "hung"]
"""What a technician needs to know about a sensor: powered off, refused by the broker (bad credentials or
not authorized), powered but not connected (yet), connected and announced, or hung (connected but silent)."""


def discharge_fraction(used: float) -> float:
    """The fraction of a full battery left after ``used`` (0..1) of its life: a lithium cell's curve, nearly
    flat (100 % down to 80 % over the first 85 % of its life), then a knee down to 0."""
    used = min(max(used, 0.0), 1.0)
    if used <= _KNEE_AT:
        return 1.0 - (1.0 - _KNEE_LEFT) * used / _KNEE_AT
    return _KNEE_LEFT * (1.0 - (used - _KNEE_AT) / (1.0 - _KNEE_AT))


_KNEE_AT = 0.85
_KNEE_LEFT = 0.8
HEARTBEAT_JITTER = 0.03
"""Each heartbeat comes a random -3 %..+3 % of the interval early or late, as crystal drift and radio
retries make it on real sensors; the average interval stays the announced one."""
RSSI_WANDER_DB = 8
"""The signal strength wanders by a random step of at most 2 dB per heartbeat, within this many dB of the
sensor's configured RSSI."""


@dataclass(frozen=True, slots=True)
class Sent:
    """What one latch publish carried, and when it was handed to the MQTT client.

    ``at_perf`` is :func:`time.perf_counter` just before the publish: the start of a latency measurement.
    """

    boot: int
    seq: int
    at_perf: float


class _Connection:
    """One MQTT connection of a sensor and the tasks that live exactly as long as it."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.lost = asyncio.Event()
        self.watcher: asyncio.Task[None] | None = None
        self.heartbeat: asyncio.Task[None] | None = None
        self.closing = False  # set when we end it ourselves: the heartbeat stops even if a cancel is swallowed
        self.connected_at = time.monotonic()
        self.lost_at: float | None = None

    def lasted_s(self) -> float:
        """How long the connection lasted (so far, if it has not ended)."""
        end = time.monotonic() if self.lost_at is None else self.lost_at
        return end - self.connected_at


class SimulatedSensor:
    """A wireless crib-latch sensor, as its firmware behaves on the wire.

    Use ``async with SimulatedSensor(...)`` or :meth:`start` / :meth:`stop`. Every method that sends
    something raises :class:`SensorOfflineError` while the sensor has no connection; the new latch or
    battery value is kept all the same and goes out with the next connect, as the firmware does.

    While powered, a connection lost on its own is re-established by the sensor itself (see the module
    documentation); :attr:`reconnects` counts those reconnects and :meth:`wait_connected` waits for one.
    """

    def __init__(
        self,
        sensor_id: str,
        topics: Topics,
        broker: BrokerAddress,
        *,
        boot: int = 1,
        latch: LatchState = LatchState.CLOSED,
        interval_s: float = 30.0,
        battery_pct: int = 100,
        rssi_dbm: int = -60,
        firmware: str = "1.0.0",
        wall_clock: Callable[[], float] = time.time,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        battery_life_s: float | None = None,
        jitter: float = HEARTBEAT_JITTER,
    ) -> None:
        _check_tuning(battery_life_s, jitter)
        if not is_identifier(sensor_id):
            msg = f"sensor id {sensor_id!r}: use lower case letters, digits, - and _ (at most 64)"
            raise ValueError(msg)
        if not 0 <= boot <= BOOT_MAX:
            msg = f"boot must be within 0..{BOOT_MAX} (unsigned 32-bit), got {boot}"
            raise ValueError(msg)
        if not interval_s > 0:
            msg = f"interval_s must be > 0, got {interval_s}"
            raise ValueError(msg)
        _check_battery(battery_pct)
        if not _RSSI_RANGE[0] <= rssi_dbm <= _RSSI_RANGE[1]:
            msg = f"rssi_dbm must be within {_RSSI_RANGE[0]}..{_RSSI_RANGE[1]}, got {rssi_dbm}"
            raise ValueError(msg)
        if not 1 <= len(firmware) <= _FW_MAX_LEN:
            msg = f"firmware must be 1 to {_FW_MAX_LEN} characters, got {firmware!r}"
            raise ValueError(msg)
        if not 0 < reconnect_min_s <= reconnect_max_s:
            msg = (
                f"reconnect_min_s and reconnect_max_s must be 0 < min <= max, got {reconnect_min_s}, {reconnect_max_s}"
            )
            raise ValueError(msg)
        self._sensor_id = sensor_id
        self._topics = topics
        self._broker = broker
        self._boot = boot
        self._latch = LatchState(latch)
        self._interval_s = float(interval_s)
        self._battery_pct = battery_pct
        self._rssi_dbm = rssi_dbm
        self._firmware = firmware
        self._wall_clock = wall_clock
        self._reconnect_min_s = float(reconnect_min_s)
        self._reconnect_max_s = float(reconnect_max_s)
        # The battery curve's starting point (set_battery moves it), the RSSI's centre, the heartbeat's jitter.
        self._battery_life_s, self._battery_full_pct = battery_life_s, battery_pct
        self._battery_since, self._rssi_base, self._jitter = time.monotonic(), rssi_dbm, jitter
        self.clock_skew_s = 0.0
        """How far the sensor's clock is off: added to every ``ts`` it sends."""
        self._hung, self._refused = False, False
        self._last_latch: bytes | None = None

        self.reconnects = 0
        """How many times the sensor reconnected by itself after losing its connection (all boots together;
        neither power-ups nor :meth:`network_blip` count)."""
        self._powered = False
        self._ever_powered = False
        self._powered_at = 0.0  # time.monotonic() of the last power-up: the base of uptime_s
        self._seq: dict[SensorChannel, int] = {SensorChannel.LATCH: 0, SensorChannel.TELEMETRY: 0}
        self._conn: _Connection | None = None
        self._announced = asyncio.Event()  # set while the current connection is live and has announced itself
        self._keeper: asyncio.Task[None] | None = None  # reconnects while powered (see _keep_connected)
        self._lock = asyncio.Lock()  # one power or connection change at a time

    # -- state ------------------------------------------------------------------------------------

    @property
    def sensor_id(self) -> str:
        return self._sensor_id

    @property
    def client_id(self) -> str:
        return f"{CLIENT_ID_PREFIX}{self._sensor_id}"

    @property
    def topics(self) -> Topics:
        return self._topics

    @property
    def boot(self) -> int:
        """The boot counter of the current (or, while powered off, the last) power-up."""
        return self._boot

    @property
    def latch(self) -> LatchState:
        return self._latch

    @property
    def battery_pct(self) -> int:
        return self._battery_pct

    @property
    def interval_s(self) -> float:
        return self._interval_s

    @property
    def powered(self) -> bool:
        return self._powered

    @property
    def state(self) -> SensorState:
        """``online``, ``connecting``, ``refused``, ``hung`` or ``off`` (see :data:`SensorState`)."""
        if not self._powered:
            return "off"
        if self._hung and self.connected:
            return "hung"
        if self._announced.is_set() and self.connected:
            return "online"
        return "refused" if self._refused else "connecting"

    @property
    def hung(self) -> bool:
        return self._hung

    @property
    def connected(self) -> bool:
        """True while the sensor has a live connection to the broker."""
        conn = self._conn
        return conn is not None and not conn.lost.is_set()

    async def wait_disconnected(self) -> None:
        """Return once the current connection has ended (at once if there is none), whoever ended it."""
        conn = self._conn
        if conn is not None:
            await conn.lost.wait()

    async def wait_connected(self) -> None:
        """Return once the sensor is connected and has announced itself (at once if it is now).

        Waits through reconnect attempts, and also while powered off (for someone to power it on); bound it
        with ``asyncio.timeout``.
        """
        # Set only while the current connection is live: cleared in the same step that marks it lost.
        await self._announced.wait()

    def next_seq(self, channel: SensorChannel) -> int:
        """The ``seq`` the next message on ``channel`` (latch or telemetry) will carry."""
        return self._seq[channel]

    def __repr__(self) -> str:
        return (
            f"SimulatedSensor({self._sensor_id!r}, boot={self._boot}, latch={self._latch.value}, "
            f"battery_pct={self._battery_pct}, connected={self.connected}, reconnects={self.reconnects})"
        )

    # -- power ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Power up and connect; the same as :meth:`power_on`.

        The first power-up keeps the ``boot`` given to the constructor; every later one (after :meth:`stop`
        or :meth:`power_off`) is a new boot.
        """
        await self.power_on()

    async def power_on(self) -> None:
        """Power up: a new boot (the next ``boot`` after the first, see :func:`next_count`), counters at 0, connect,
        announce.

        From then on until :meth:`power_off` or :meth:`stop` the sensor reconnects by itself whenever its
        connection is lost. Raises :class:`SensorError` if already powered, :class:`SensorConnectError` if the
        first attempt failed: the sensor is powered all the same and keeps trying by itself, as the firmware does
        (state ``connecting``, with the reconnect backoff; ``refused`` if the broker refused its credentials,
        then every ``reconnect_max_s``), until it connects or :meth:`stop` / :meth:`power_off`.
        """
        async with self._lock:
            if self._powered:
                msg = f"sensor {self._sensor_id} is already powered on (boot {self._boot})"
                raise SensorError(msg)
            boot = next_count(self._boot) if self._ever_powered else self._boot
            previous = (self._boot, dict(self._seq), self._powered_at)
            self._boot = boot
            self._seq = dict.fromkeys(self._seq, 0)
            self._powered_at = time.monotonic()
            failed: SensorConnectError | None = None
            try:
                await self._connect()
            except SensorConnectError as exc:
                failed = exc  # powered all the same: the firmware keeps trying (below)
            except BaseException:
                self._boot, self._seq, self._powered_at = previous
                raise
            self._powered = True
            self._ever_powered = True
            first_delay = self._retry_delay(failed)
            self._keeper = asyncio.create_task(self._keep_connected(first_delay), name=f"{self.client_id}-keeper")
            self._keeper.add_done_callback(self._keeper_done)
        if failed is not None:
            log.info("%s: %s; keeps trying (%s)", self._sensor_id, failed, self.state)
            raise failed

    async def power_off(self) -> None:
        """Lose power: the TCP connection is cut without DISCONNECT, so the broker publishes the last will.

        The sensor stays off (no reconnect) until :meth:`power_on`. Does nothing if it is already off. If a
        reconnect attempt is under way, waits for it to end first (at most the connect timeout).
        """
        async with self._lock:
            if not self._powered:
                return
            self._powered = False
            await self._stop_keeper()
            await self._disconnect(clean=False)
            log.debug("%s: powered off (boot %d)", self._sensor_id, self._boot)

    async def reboot(self) -> None:
        """A power cycle: :meth:`power_off` then :meth:`power_on` (``boot`` + 1, counters back at 0)."""
        await self.power_off()
        await self.power_on()

    async def network_blip(self, *, down_s: float = 0.0) -> None:
        """A Wi-Fi hiccup: the connection is cut (the broker publishes the will), ``down_s`` later the
        sensor reconnects with the SAME boot and its counters continue; it announces itself as on connect.

        This reconnect is not counted in :attr:`reconnects`. Raises :class:`SensorOfflineError` if the sensor
        is powered off, :class:`SensorConnectError` if it cannot connect again (it then keeps trying by
        itself, with backoff, as after any lost connection).
        """
        if down_s < 0:
            msg = f"down_s must be >= 0, got {down_s}"
            raise ValueError(msg)
        async with self._lock:
            if not self._powered:
                raise SensorOfflineError(f"sensor {self._sensor_id} is powered off")
            await self._disconnect(clean=False)
            if down_s:
                await asyncio.sleep(down_s)
            await self._connect()

    async def stop(self) -> None:
        """Clean shutdown: publish ``offline`` (retained), then DISCONNECT (the broker drops the will).

        The sensor stays off (no reconnect). Does nothing if it is already off. With no connection at the
        moment (lost, not back yet) there is nothing to publish on: the broker has sent the will already.
        """
        async with self._lock:
            if not self._powered:
                return
            self._powered = False
            await self._stop_keeper()
            await self._disconnect(clean=True)

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except SensorConnectError:
            await self.stop()  # no block runs, so no __aexit__: end the retrying here
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- what the firmware sends -----------------------------------------------------------------

    async def set_latch(self, state: LatchState) -> Sent:
        """The latch is now ``state``: publish it (also when unchanged; firmware re-sends on request)."""
        self._latch = LatchState(state)
        return await self._publish_latch()

    async def open(self) -> Sent:
        return await self.set_latch(LatchState.OPEN)

    async def close_latch(self) -> Sent:
        return await self.set_latch(LatchState.CLOSED)

    async def set_battery(self, pct: int) -> None:
        """The battery is now at ``pct`` percent: publish a heartbeat at once."""
        _check_battery(pct)
        self._battery_pct = pct
        self._battery_full_pct = pct
        self._battery_since = time.monotonic()
        await self._publish_telemetry()

    # -- misbehaviour, for scenarios --------------------------------------------------------------

    def hang(self) -> None:
        """The firmware hangs: it sends nothing more (no heartbeat, no latch), but its radio module keeps the
        MQTT connection alive, so the broker publishes NO last will: only missed heartbeats tell."""
        self._hung = True
        conn = self._conn
        if conn is not None and conn.heartbeat is not None:
            conn.heartbeat.cancel()

    async def recover(self) -> None:
        """The firmware runs again after :meth:`hang`: a heartbeat at once, then on schedule."""
        if not self._hung:
            return
        self._hung = False
        conn = self._conn
        if conn is not None and not conn.lost.is_set():
            conn.heartbeat = asyncio.create_task(self._heartbeat(conn), name=f"{self.client_id}-heartbeat")
            await self._publish_telemetry()

    async def duplicate_latch(self) -> None:
        """Publish the last latch message again, byte for byte (what a QoS 1 redelivery looks like)."""
        if self._last_latch is None:
            raise SensorError(f"sensor {self._sensor_id} has sent no latch message yet")
        await self._publish_spec(SensorChannel.LATCH, self._last_latch, LATCH)

    def jump_seq(self, channel: SensorChannel, by: int) -> int:
        """A counter bug: the next ``seq`` on ``channel`` is ``by`` further (wrapping at 32 bits). The new one."""
        self._seq[channel] = (self._seq[channel] + by) % (SEQ_MAX + 1)
        return self._seq[channel]

    async def send_old_latch(self, state: LatchState, *, back: int = 10) -> int:
        """An out-of-order latch message: ``state`` under a ``seq`` ``back`` behind the next one (a message that
        was stuck somewhere). The latch itself does not change. Returns the ``seq`` sent."""
        if back < 1:
            raise ValueError(f"back must be >= 1, got {back}")
        self._require_connection()
        seq = (self._seq[SensorChannel.LATCH] - back) % (SEQ_MAX + 1)
        payload = LatchPayload(boot=self._boot, seq=seq, ts=self._now(), state=LatchState(state))
        await self._publish_spec(SensorChannel.LATCH, encode(payload), LATCH)
        return seq

    async def heartbeat_now(self) -> None:
        """Publish a heartbeat now (the periodic ones keep their schedule)."""
        await self._publish_telemetry()

    async def send_raw(
        self,
        channel: SensorChannel,
        payload: bytes,
        *,
        qos: Literal[0, 1] = 1,
        retain: bool = False,
    ) -> None:
        """Publish ``payload`` as is on one of this sensor's topics (for tests of malformed messages)."""
        await self._publish(self._topics.sensor(self._sensor_id, channel), payload, qos=qos, retain=retain)

    # -- internals -------------------------------------------------------------------------------

    def _take_seq(self, channel: SensorChannel) -> int:
        seq = self._seq[channel]
        self._seq[channel] = next_count(seq)
        return seq

    def _now(self) -> float:
        return self._wall_clock() + self.clock_skew_s

    def _require_connection(self) -> aiomqtt.Client:
        conn = self._conn
        if self._hung:
            raise SensorOfflineError(f"sensor {self._sensor_id} is hung: nothing sent")
        if conn is None or conn.lost.is_set():
            state = "powered off" if not self._powered else "not connected"
            raise SensorOfflineError(f"sensor {self._sensor_id} is {state}: nothing sent")
        return conn.client

    async def _publish(self, topic: str, payload: bytes, *, qos: int, retain: bool) -> None:
        client = self._require_connection()
        try:
            await client.publish(topic, payload, qos=qos, retain=retain)
        except aiomqtt.MqttError as exc:
            raise SensorOfflineError(f"sensor {self._sensor_id}: publish failed: {exc}") from exc

    async def _publish_spec(self, channel: SensorChannel, payload: bytes, spec: TopicSpec) -> None:
        topic = self._topics.sensor(self._sensor_id, channel)
        await self._publish(topic, payload, qos=int(spec.qos), retain=spec.retain)

    async def _publish_latch(self) -> Sent:
        self._require_connection()  # before taking a seq: a message that is never sent has none
        seq = self._take_seq(SensorChannel.LATCH)
        payload = LatchPayload(boot=self._boot, seq=seq, ts=self._now(), state=self._latch)
        at_perf = time.perf_counter()
        self._last_latch = encode(payload)
        # No await between taking the seq and handing the message to paho: the wire order is seq order.
        await self._publish_spec(SensorChannel.LATCH, self._last_latch, LATCH)
        return Sent(boot=self._boot, seq=seq, at_perf=at_perf)

    def _drain(self) -> None:
        """Move the battery along its discharge curve and the signal strength a random step."""
        if self._battery_life_s is not None:
            used = (time.monotonic() - self._battery_since) / self._battery_life_s
            self._battery_pct = round(self._battery_full_pct * discharge_fraction(used))
        low = max(_RSSI_RANGE[0], self._rssi_base - RSSI_WANDER_DB)
        high = min(_RSSI_RANGE[1], self._rssi_base + RSSI_WANDER_DB)
        self._rssi_dbm = min(high, max(low, self._rssi_dbm + random.randint(-2, 2)))

    async def _publish_telemetry(self) -> None:
        self._require_connection()
        payload = TelemetryPayload(
            boot=self._boot,
            seq=self._take_seq(SensorChannel.TELEMETRY),
            ts=self._now(),
            battery_pct=self._battery_pct,
            rssi_dbm=self._rssi_dbm,
            fw=self._firmware,
            uptime_s=int(time.monotonic() - self._powered_at),
            interval_s=self._interval_s,
        )
        self._drain()  # what the next heartbeat will measure
        await self._publish_spec(SensorChannel.TELEMETRY, encode(payload), TELEMETRY)

    def _availability(self, state: Literal["online", "offline"]) -> bytes:
        return encode(AvailabilityPayload(state=state, boot=self._boot, ts=self._now()))

    async def _connect(self, *, reconnect: bool = False) -> None:
        """Open a connection (with a will made now), announce the sensor and start the heartbeat.

        ``reconnect``: this is the sensor reconnecting by itself (counted in :attr:`reconnects`).
        """
        topic = self._topics.sensor(self._sensor_id, SensorChannel.AVAILABILITY)
        will = aiomqtt.Will(topic, self._availability("offline"), qos=int(AVAILABILITY.qos), retain=AVAILABILITY.retain)
        client = new_client(
            self._broker, identifier=self.client_id, will=will, clean_session=True, keepalive=KEEPALIVE_S
        )
        try:
            await client.__aenter__()
        except aiomqtt.MqttError as exc:
            self._refused = _is_refusal(exc)
            raise SensorConnectError(self._sensor_id, self._broker, str(exc), refused=self._refused) from exc
        self._refused = False
        self._hung = False  # a new connection is a running firmware
        conn = _Connection(client)
        self._conn = conn
        conn.watcher = asyncio.create_task(self._watch(conn), name=f"{self.client_id}-watch")
        try:
            await self._publish_spec(SensorChannel.AVAILABILITY, self._availability("online"), AVAILABILITY)
            await self._publish_latch()
            await self._publish_telemetry()
        except SensorOfflineError:
            # Lost again at once; the keeper notices (conn.lost) and reconnects, like the firmware would.
            log.debug("%s: connection lost while announcing", self._sensor_id, exc_info=True)
        except BaseException:  # cancelled while announcing: leave no connection behind
            self._conn = None
            with contextlib.suppress(OSError):
                drop_connection(client)
            raise
        conn.heartbeat = asyncio.create_task(self._heartbeat(conn), name=f"{self.client_id}-heartbeat")
        if reconnect:
            self.reconnects += 1
        if not conn.lost.is_set():
            self._announced.set()
        log.debug("%s: connected (boot %d)", self._sensor_id, self._boot)

    async def _watch(self, conn: _Connection) -> None:
        """Notice the end of a connection, whoever ended it: our side, the broker, or the network."""
        try:
            async for _ in conn.client.messages:  # the sensor subscribes to nothing
                pass
        except aiomqtt.MqttError as exc:
            log.debug("%s: connection ended: %s", self._sensor_id, exc.__cause__ or exc)
        finally:
            conn.lost_at = time.monotonic()
            conn.lost.set()
            if self._conn is conn:
                self._announced.clear()
            if conn.heartbeat is not None:
                conn.heartbeat.cancel()

    def _retry_delay(self, failed: SensorConnectError | None) -> float:
        """The delay before the first retry after a connect that ``failed`` (None: it did not fail): the
        minimum, or ``reconnect_max_s`` for a broker that refused the sensor (no hammering it)."""
        return self._reconnect_max_s if failed is not None and failed.refused else self._reconnect_min_s

    async def _keep_connected(self, delay: float) -> None:
        """While powered: notice a connection that ended on its own, and reconnect with backoff.

        Also runs after a first connect that failed (no connection yet): it then starts trying after ``delay``.

        Runs from a successful power-up until :meth:`power_off` / :meth:`stop`, which cancel it while they
        hold the lock (so never in the middle of a connect). A connection that :meth:`network_blip` replaced
        is simply watched in turn.
        """
        short_losses = 0
        while True:
            watched = self._conn
            if watched is not None:
                await watched.lost.wait()
            async with self._lock:
                if not self._powered:
                    return
                if self.connected:
                    continue  # network_blip made a new connection: watch that one
                if watched is not None and watched is self._conn:  # lost on its own, not by our hand
                    lasted = watched.lasted_s()
                    if lasted >= STABLE_AFTER_S:
                        short_losses = 0
                        delay = self._reconnect_min_s
                    else:
                        short_losses += 1
                    if short_losses >= TAKEOVER_LOSSES:
                        delay = self._reconnect_max_s
                        log.warning(
                            "client id %s is used by another client, most likely: its connection was closed within "
                            "%g s of connecting %d times in a row; sensor %s now waits up to %g s between attempts",
                            self.client_id,
                            STABLE_AFTER_S,
                            short_losses,
                            self._sensor_id,
                            delay,
                        )
                    else:
                        log.info("%s: connection lost after %.1f s; reconnecting", self._sensor_id, lasted)
            delay = await self._reconnect(delay, counted=watched is not None)

    async def _reconnect(self, delay: float, *, counted: bool = True) -> float:
        """Try to connect again, waiting a jittered ``delay`` before each attempt and doubling it after each
        (up to ``reconnect_max_s``; always that after a refusal: wrong credentials do not heal by hammering),
        until connected. ``counted``: a success counts in :attr:`reconnects` (not so the first connection of a
        power-up whose first attempt failed). Returns the delay for the next time."""
        while True:
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self._reconnect_max_s)
            async with self._lock:
                if self.connected or not self._powered:
                    return delay  # network_blip got there first, or power_off / stop did
                await self._disconnect(clean=False)  # release the dead connection, if any
                try:
                    await self._connect(reconnect=counted)
                except SensorConnectError as exc:
                    log.debug("%s: reconnect failed: %s", self._sensor_id, exc.reason)
                    delay = self._retry_delay(exc) if exc.refused else delay
                    continue
            log.info("%s: reconnected (boot %d)", self._sensor_id, self._boot)
            return delay

    async def _stop_keeper(self) -> None:
        """Cancel the reconnecting task (called with the lock held, so it is not in the middle of a connect)."""
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.cancel()
            await asyncio.wait([keeper])  # unlike `await keeper`, a cancellation of the caller still propagates

    def _keeper_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("%s: reconnecting stopped by an error; the sensor stays offline", self._sensor_id, exc_info=exc)

    async def _heartbeat(self, conn: _Connection) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while not (conn.lost.is_set() or conn.closing or self._hung):
            due += self._interval_s * random.uniform(1.0 - self._jitter, 1.0 + self._jitter)
            await asyncio.sleep(max(0.0, due - loop.time()))
            try:
                await self._publish_telemetry()
            except SensorOfflineError as exc:
                log.debug("%s: heartbeat not sent: %s", self._sensor_id, exc)

    async def _disconnect(self, *, clean: bool) -> None:
        """End the current connection: cleanly (offline, then DISCONNECT) or by cutting TCP (the will)."""
        conn, self._conn = self._conn, None
        self._announced.clear()
        if conn is None:
            return
        conn.closing = True
        if conn.heartbeat is not None:
            conn.heartbeat.cancel()
            # Not `await conn.heartbeat`: that would swallow a cancellation of the caller, and it would hang
            # if the heartbeat swallowed its own (asyncio.wait_for inside aiomqtt's publish can, on 3.11).
            await asyncio.wait([conn.heartbeat], timeout=TEARDOWN_TIMEOUT_S)
        if clean and not conn.lost.is_set():
            try:
                await conn.client.publish(
                    self._topics.sensor(self._sensor_id, SensorChannel.AVAILABILITY),
                    self._availability("offline"),
                    qos=int(AVAILABILITY.qos),
                    retain=AVAILABILITY.retain,
                )
            except aiomqtt.MqttError as exc:
                log.debug("%s: offline not sent: %s", self._sensor_id, exc)
        if not clean and not conn.lost.is_set():
            with contextlib.suppress(OSError):  # the other side may have closed it a moment ago
                drop_connection(conn.client)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TEARDOWN_TIMEOUT_S):
                    await conn.lost.wait()
        try:
            # After a cut connection this only releases the client; otherwise it sends DISCONNECT.
            await conn.client.__aexit__(None, None, None)
        except aiomqtt.MqttError as exc:
            log.debug("%s: disconnect: %s", self._sensor_id, exc)
        if conn.watcher is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TEARDOWN_TIMEOUT_S):
                    await conn.watcher


def _check_tuning(battery_life_s: float | None, jitter: float) -> None:
    if battery_life_s is not None and not battery_life_s > 0:
        msg = f"battery_life_s must be > 0, got {battery_life_s}"
        raise ValueError(msg)
    if not 0 <= jitter < 1:
        msg = f"jitter must be within 0..1, got {jitter}"
        raise ValueError(msg)


def _check_battery(pct: int) -> None:
    if not 0 <= pct <= 100:
        msg = f"battery_pct must be within 0..100, got {pct}"
        raise ValueError(msg)
