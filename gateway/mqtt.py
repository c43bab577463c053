"""The gateway's MQTT link: one persistent session that takes sensor messages and acks in, and sends
alarm events and crib states out.

- In: every message is converted once at this edge (:func:`gateway.codec.decode_inbound`) and put on
  the core's queue; a malformed one is counted and dropped, never raised.
- Out: an outbox that keeps what could not be sent while the broker was away, and sends it on
  reconnect, oldest first. Publishes are not serialised on their PUBACKs, so one slow
  acknowledgement does not hold up the next alarm.
- Reconnect: exponential backoff with jitter; QoS 1 and a persistent session (clean_session=False)
  so what sensors and pagers sent while the gateway was away is delivered when it is back.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from collections.abc import Callable

import aiomqtt

from gateway.codec import Outgoing, decode_inbound
from gateway.events import InboundEvent
from gateway.mqtt_client import BrokerAddress, new_client
from gateway.protocol import (
    ACK,
    GATEWAY_AVAILABILITY,
    LATCH,
    GatewayAvailabilityPayload,
    ProtocolError,
    Topics,
    encode,
)
from gateway.stats import IngestStats

log = logging.getLogger("cribwatch.mqtt")

OUTBOX_LIMIT = 10_000


class Outbox:
    """A bounded FIFO of outgoing messages that survives disconnects. Oldest dropped (and counted) when full."""

    def __init__(self, limit: int = OUTBOX_LIMIT) -> None:
        self._items: collections.deque[Outgoing] = collections.deque()
        self._limit = limit
        self._ready = asyncio.Event()
        self.dropped = 0

    def put(self, item: Outgoing) -> None:
        if len(self._items) >= self._limit:
            self._items.popleft()
            self.dropped += 1
        self._items.append(item)
        self._ready.set()

    def put_front(self, item: Outgoing) -> None:
        self._items.appendleft(item)
        self._ready.set()

    async def get(self) -> Outgoing:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    def __len__(self) -> int:
        return len(self._items)


class MqttLink:
    def __init__(
        self,
        *,
        topics: Topics,
        broker: BrokerAddress,
        client_id: str,
        inbound: asyncio.Queue[InboundEvent],
        stats: IngestStats,
        gw_boot: int,
        keepalive: int = 10,
        reconnect_min_s: float = 0.2,
        reconnect_max_s: float = 10.0,
        on_connected: Callable[[], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._topics = topics
        self._broker = broker
        self._client_id = client_id
        self._inbound = inbound
        self._stats = stats
        self._gw_boot = gw_boot
        self._keepalive = keepalive
        self._backoff = (reconnect_min_s, reconnect_max_s)
        self._on_connected = on_connected
        self._monotonic = monotonic
        self.outbox = Outbox()
        self.connected = asyncio.Event()
        self.connections = 0
        self._inflight = asyncio.Semaphore(200)

    def _availability(self, state: str) -> bytes:
        return encode(GatewayAvailabilityPayload(state=state, gw_boot=self._gw_boot))

    async def run(self) -> None:
        """Stay connected until cancelled."""
        delay = self._backoff[0]
        while True:
            will = aiomqtt.Will(
                self._topics.gateway_availability,
                self._availability("offline"),
                qos=int(GATEWAY_AVAILABILITY.qos),
                retain=GATEWAY_AVAILABILITY.retain,
            )
            client = new_client(
                self._broker,
                identifier=self._client_id,
                will=will,
                clean_session=False,
                keepalive=self._keepalive,
            )
            try:
                async with client:
                    delay = self._backoff[0]
                    try:
                        await self._session(client)
                    except asyncio.CancelledError:
                        await self._goodbye(client)
                        raise
            except aiomqtt.MqttError as exc:
                self.connected.clear()
                wait = delay * random.uniform(0.8, 1.2)
                log.warning(
                    "broker %s:%s unreachable (%s); retrying in %.1f s", self._broker.host, self._broker.port, exc, wait
                )
                await asyncio.sleep(wait)
                delay = min(delay * 2, self._backoff[1])

    async def _goodbye(self, client: aiomqtt.Client) -> None:
        """On shutdown: say offline ourselves (a clean disconnect does not fire the last will)."""
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
            async with asyncio.timeout(1.0):
                await client.publish(
                    self._topics.gateway_availability,
                    self._availability("offline"),
                    qos=int(GATEWAY_AVAILABILITY.qos),
                    retain=GATEWAY_AVAILABILITY.retain,
                )
        log.info("disconnected from broker %s:%s", self._broker.host, self._broker.port)

    async def _session(self, client: aiomqtt.Client) -> None:
        await client.subscribe(self._topics.sensor_filter, qos=int(LATCH.qos))
        await client.subscribe(self._topics.ack, qos=int(ACK.qos))
        await client.publish(
            self._topics.gateway_availability,
            self._availability("online"),
            qos=int(GATEWAY_AVAILABILITY.qos),
            retain=GATEWAY_AVAILABILITY.retain,
        )
        self.connections += 1
        log.info("connected to broker %s:%s as %s", self._broker.host, self._broker.port, self._client_id)
        if self._on_connected is not None:
            self._on_connected()
        self.connected.set()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._send_loop(client, tg), name="mqtt-send")
                await self._receive_loop(client)
        except* aiomqtt.MqttError as group:
            raise group.exceptions[0] from None
        finally:
            self.connected.clear()

    async def _receive_loop(self, client: aiomqtt.Client) -> None:
        topics, stats, put, monotonic = self._topics, self._stats, self._inbound.put_nowait, self._monotonic
        async for message in client.messages:
            observed_at = monotonic()
            payload = message.payload
            if not isinstance(payload, bytes):
                stats.reject("bad_payload", f"non-bytes payload on {message.topic.value}")
                continue
            try:
                put(
                    decode_inbound(
                        topics, message.topic.value, payload, retained=message.retain, observed_at=observed_at
                    )
                )
            except ProtocolError as exc:
                stats.reject(exc.reason, f"{message.topic.value}: {exc.detail}")
        raise aiomqtt.MqttError("message stream ended")

    async def _send_loop(self, client: aiomqtt.Client, tg: asyncio.TaskGroup) -> None:
        while True:
            item = await self.outbox.get()
            await self._inflight.acquire()
            # The task calls paho's publish synchronously when it starts; tasks start in creation order,
            # so messages leave in outbox order even though their PUBACKs are awaited concurrently.
            tg.create_task(self._publish(client, item))

    async def _publish(self, client: aiomqtt.Client, item: Outgoing) -> None:
        try:
            await client.publish(item.topic, item.payload, qos=item.qos, retain=item.retain)
        except aiomqtt.MqttError:
            self.outbox.put_front(item)
            raise
        finally:
            self._inflight.release()
