"""One simulated crib-latch sensor: its own MQTT connection, speaking exactly :mod:`gateway.protocol`.

What the firmware does, and so what :class:`SimulatedSensor` does:

* It connects with client id ``sensor-<id>``, a clean session and a last will ``offline`` (retained, QoS 1)
  on its availability topic, carrying its boot counter and the time of the connect.
* Once connected it publishes ``online`` (retained), its current latch state (retained, QoS 1) and a first
  heartbeat, then a heartbeat (:class:`~gateway.protocol.TelemetryPayload`, QoS 0) every ``interval_s``.
* Every sensor payload carries ``boot`` (increases on every power-up) and ``seq``: one counter per channel
  (latch, telemetry), starting at 0 on each boot. A network hiccup keeps both; a power cycle starts a new
  boot with the counters back at 0.
* Powered off (or with its connection cut) it is silent: the broker publishes its last will. The latch and
  the battery still change physically; their current values go out with the next connect.
* A clean shutdown publishes ``offline`` itself before its DISCONNECT (which suppresses the will).

Only the connection handling here touches aiomqtt (through :mod:`gateway.mqtt_client`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Self

import aiomqtt

from gateway.mqtt_client import BrokerAddress, drop_connection, new_client
from gateway.protocol import (
    AVAILABILITY,
    LATCH,
    TELEMETRY,
    AvailabilityPayload,
    LatchPayload,
    LatchState,
    SensorChannel,
    TelemetryPayload,
    Topics,
    TopicSpec,
    encode,
    is_identifier,
)

__all__ = [
    "SensorConnectError",
    "SensorError",
    "SensorOfflineError",
    "Sent",
    "SimulatedSensor",
]

log = logging.getLogger(__name__)

CLIENT_ID_PREFIX = "sensor-"
KEEPALIVE_S = 60
"""The firmware's MQTT keepalive."""
TEARDOWN_TIMEOUT_S = 5.0
"""How long to wait for our own side of a cut connection to notice it (it takes microseconds)."""
_FW_MAX_LEN = 32
_RSSI_RANGE = (-130, 0)


class SensorError(RuntimeError):
    """A simulated sensor cannot do what was asked."""


class SensorOfflineError(SensorError):
    """The sensor has no connection (powered off, or its connection was lost): nothing was sent."""


class SensorConnectError(SensorError):
    """The sensor could not connect to the broker (refused, unreachable, bad credentials).

    ``reason`` is what the connection attempt said, e.g. ``[Errno 111] Connection refused``.
    """

    def __init__(self, sensor_id: str, broker: BrokerAddress, reason: str) -> None:
        super().__init__(f"sensor {sensor_id}: cannot connect to {broker.host}:{broker.port}: {reason}")
        self.sensor_id = sensor_id
        self.reason = reason


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


class SimulatedSensor:
    """A wireless crib-latch sensor, as its firmware behaves on the wire.

    Use ``async with SimulatedSensor(...)`` or :meth:`start` / :meth:`stop`. Every method that sends
    something raises :class:`SensorOfflineError` while the sensor has no connection; the new latch or
    battery value is kept all the same and goes out with the next connect, as the firmware does.
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
    ) -> None:
        if not is_identifier(sensor_id):
            msg = f"sensor id {sensor_id!r}: use lower case letters, digits, - and _ (at most 64)"
            raise ValueError(msg)
        if boot < 0:
            msg = f"boot must be >= 0, got {boot}"
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

        self._powered = False
        self._ever_powered = False
        self._powered_at = 0.0  # time.monotonic() of the last power-up: the base of uptime_s
        self._seq: dict[SensorChannel, int] = {SensorChannel.LATCH: 0, SensorChannel.TELEMETRY: 0}
        self._conn: _Connection | None = None
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
    def connected(self) -> bool:
        """True while the sensor has a live connection to the broker."""
        conn = self._conn
        return conn is not None and not conn.lost.is_set()

    async def wait_disconnected(self) -> None:
        """Return once the current connection has ended (at once if there is none), whoever ended it."""
        conn = self._conn
        if conn is not None:
            await conn.lost.wait()

    def next_seq(self, channel: SensorChannel) -> int:
        """The ``seq`` the next message on ``channel`` (latch or telemetry) will carry."""
        return self._seq[channel]

    def __repr__(self) -> str:
        return (
            f"SimulatedSensor({self._sensor_id!r}, boot={self._boot}, latch={self._latch.value}, "
            f"battery_pct={self._battery_pct}, connected={self.connected})"
        )

    # -- power ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Power up and connect; the same as :meth:`power_on`.

        The first power-up keeps the ``boot`` given to the constructor; every later one (after :meth:`stop`
        or :meth:`power_off`) is a new boot.
        """
        await self.power_on()

    async def power_on(self) -> None:
        """Power up: a new boot (``boot`` + 1 after the first), counters at 0, connect, announce.

        Raises :class:`SensorError` if already powered, :class:`SensorConnectError` if the broker cannot be
        reached (the sensor then stays powered off).
        """
        async with self._lock:
            if self._powered:
                msg = f"sensor {self._sensor_id} is already powered on (boot {self._boot})"
                raise SensorError(msg)
            boot = self._boot + 1 if self._ever_powered else self._boot
            previous = (self._boot, dict(self._seq), self._powered_at)
            self._boot = boot
            self._seq = dict.fromkeys(self._seq, 0)
            self._powered_at = time.monotonic()
            try:
                await self._connect()
            except BaseException:
                self._boot, self._seq, self._powered_at = previous
                raise
            self._powered = True
            self._ever_powered = True

    async def power_off(self) -> None:
        """Lose power: the TCP connection is cut without DISCONNECT, so the broker publishes the last will.

        Does nothing if the sensor is already off.
        """
        async with self._lock:
            if not self._powered:
                return
            self._powered = False
            await self._disconnect(clean=False)
            log.debug("%s: powered off (boot %d)", self._sensor_id, self._boot)

    async def reboot(self) -> None:
        """A power cycle: :meth:`power_off` then :meth:`power_on` (``boot`` + 1, counters back at 0)."""
        await self.power_off()
        await self.power_on()

    async def network_blip(self, *, down_s: float = 0.0) -> None:
        """A Wi-Fi hiccup: the connection is cut (the broker publishes the will), ``down_s`` later the
        sensor reconnects with the SAME boot and its counters continue; it announces itself as on connect.

        Raises :class:`SensorOfflineError` if the sensor is powered off.
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

        Does nothing if the sensor is already off.
        """
        async with self._lock:
            if not self._powered:
                return
            self._powered = False
            await self._disconnect(clean=True)

    async def __aenter__(self) -> Self:
        await self.start()
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
        await self._publish_telemetry()

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
        self._seq[channel] = seq + 1
        return seq

    def _require_connection(self) -> aiomqtt.Client:
        conn = self._conn
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
        payload = LatchPayload(boot=self._boot, seq=seq, ts=self._wall_clock(), state=self._latch)
        at_perf = time.perf_counter()
        # No await between taking the seq and handing the message to paho: the wire order is seq order.
        await self._publish_spec(SensorChannel.LATCH, encode(payload), LATCH)
        return Sent(boot=self._boot, seq=seq, at_perf=at_perf)

    async def _publish_telemetry(self) -> None:
        self._require_connection()
        payload = TelemetryPayload(
            boot=self._boot,
            seq=self._take_seq(SensorChannel.TELEMETRY),
            ts=self._wall_clock(),
            battery_pct=self._battery_pct,
            rssi_dbm=self._rssi_dbm,
            fw=self._firmware,
            uptime_s=int(time.monotonic() - self._powered_at),
            interval_s=self._interval_s,
        )
        await self._publish_spec(SensorChannel.TELEMETRY, encode(payload), TELEMETRY)

    def _availability(self, state: Literal["online", "offline"]) -> bytes:
        return encode(AvailabilityPayload(state=state, boot=self._boot, ts=self._wall_clock()))

    async def _connect(self) -> None:
        """Open a connection (with its will), announce the sensor and start the heartbeat."""
        topic = self._topics.sensor(self._sensor_id, SensorChannel.AVAILABILITY)
        will = aiomqtt.Will(topic, self._availability("offline"), qos=int(AVAILABILITY.qos), retain=AVAILABILITY.retain)
        client = new_client(
            self._broker, identifier=self.client_id, will=will, clean_session=True, keepalive=KEEPALIVE_S
        )
        try:
            await client.__aenter__()
        except aiomqtt.MqttError as exc:
            raise SensorConnectError(self._sensor_id, self._broker, str(exc)) from exc
        conn = _Connection(client)
        self._conn = conn
        conn.watcher = asyncio.create_task(self._watch(conn), name=f"{self.client_id}-watch")
        try:
            await self._publish_spec(SensorChannel.AVAILABILITY, self._availability("online"), AVAILABILITY)
            await self._publish_latch()
            await self._publish_telemetry()
        except SensorOfflineError:
            # Lost again at once; the sensor stays powered and silent, like the firmware would.
            log.debug("%s: connection lost while announcing", self._sensor_id, exc_info=True)
        except BaseException:  # cancelled while announcing: leave no connection behind
            self._conn = None
            with contextlib.suppress(OSError):
                drop_connection(client)
            raise
        conn.heartbeat = asyncio.create_task(self._heartbeat(conn), name=f"{self.client_id}-heartbeat")
        log.debug("%s: connected (boot %d)", self._sensor_id, self._boot)

    async def _watch(self, conn: _Connection) -> None:
        """Notice the end of a connection, whoever ended it: our side, the broker, or the network."""
        try:
            async for _ in conn.client.messages:  # the sensor subscribes to nothing
                pass
        except aiomqtt.MqttError as exc:
            log.debug("%s: connection ended: %s", self._sensor_id, exc.__cause__ or exc)
        finally:
            conn.lost.set()
            if conn.heartbeat is not None:
                conn.heartbeat.cancel()

    async def _heartbeat(self, conn: _Connection) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while not conn.lost.is_set():
            due += self._interval_s
            await asyncio.sleep(max(0.0, due - loop.time()))
            try:
                await self._publish_telemetry()
            except SensorOfflineError as exc:
                log.debug("%s: heartbeat not sent: %s", self._sensor_id, exc)

    async def _disconnect(self, *, clean: bool) -> None:
        """End the current connection: cleanly (offline, then DISCONNECT) or by cutting TCP (the will)."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if conn.heartbeat is not None:
            conn.heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await conn.heartbeat
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


def _check_battery(pct: int) -> None:
    if not 0 <= pct <= 100:
        msg = f"battery_pct must be within 0..100, got {pct}"
        raise ValueError(msg)
