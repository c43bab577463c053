"""The gateway's MQTT link: one persistent session that takes sensor messages and acks in, and sends
alarm events and crib states out.

- In: every message is converted once at this edge (:func:`gateway.protocol.codec.decode_inbound`) and handed to
  ``on_event`` on the event loop's thread; a malformed one is counted and dropped, never raised. A retained ack
  that the broker replays is rejected and deleted from the broker (:meth:`MqttLink._clear_retained_ack`).
- Out: :meth:`MqttLink.send` writes a message to the socket before it returns when the link is up (an
  alarm waits for nothing: not for a PUBACK, not for a loop iteration); while the broker is away,
  messages wait in the :class:`OfflineBuffer` and leave, oldest first, on reconnect. QoS 1 messages not yet
  acknowledged when a connection dies are sent again on the next one.
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
from typing import TYPE_CHECKING

import aiomqtt

from gateway.domain.events import CribState, InboundEvent
from gateway.domain.stats import IngestStats
from gateway.mqtt.connection import BrokerAddress, new_client, publish_now
from gateway.protocol import (
    ACK,
    CRIB_STATE,
    GATEWAY_AVAILABILITY,
    LATCH,
    CribStatePayload,
    GatewayAvailabilityPayload,
    ProtocolError,
    Topics,
    decode,
    encode,
)
from gateway.protocol.codec import Outgoing, crib_state_from_payload, decode_inbound

if TYPE_CHECKING:
    from paho.mqtt.client import MQTTMessageInfo

log = logging.getLogger("cribwatch.mqtt")

OFFLINE_BUFFER_LIMIT = 10_000


class OfflineBuffer:
    """A bounded FIFO of messages that wait for the broker. Oldest dropped (and counted) when full."""

    def __init__(self, limit: int = OFFLINE_BUFFER_LIMIT) -> None:
        self._items: collections.deque[Outgoing] = collections.deque()
        self._limit = limit
        self.dropped = 0

    def put(self, item: Outgoing) -> None:
        if len(self._items) >= self._limit:
            self._items.popleft()
            self.dropped += 1
        self._items.append(item)

    def put_front(self, item: Outgoing) -> None:
        self._items.appendleft(item)

    def pop(self) -> Outgoing:
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
        on_event: Callable[[InboundEvent], None],
        stats: IngestStats,
        gw_run: int,
        keepalive: int = 10,
        reconnect_min_s: float = 0.2,
        reconnect_max_s: float = 10.0,
        on_connected: Callable[[bool], None] | None = None,
        on_restore: Callable[[CribState], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._topics = topics
        self._broker = broker
        self._client_id = client_id
        self._on_event = on_event
        self._stats = stats
        self._gw_run = gw_run
        self._keepalive = keepalive
        self._backoff = (reconnect_min_s, reconnect_max_s)
        self._on_connected = on_connected
        self._on_restore = on_restore
        self._restoring = False
        self._crib_state_head = f"{topics.prefix}/crib/"
        self._monotonic = monotonic
        self.offline_buffer = OfflineBuffer()
        self.connected = asyncio.Event()
        self.connections = 0
        self._client: aiomqtt.Client | None = None
        """The live session's client; None while there is none (then :meth:`send` fills the offline buffer)."""
        self._unacked: collections.deque[tuple[MQTTMessageInfo, Outgoing]] = collections.deque()

    # ------------------------------------------------------------------------------------------ out

    def send(self, item: Outgoing) -> None:
        """Publish now if the link is up and nothing older waits; else keep it for the next connection."""
        client = self._client
        if client is not None and not self.offline_buffer:
            self._publish(client, item)
        elif item.qos > 0:
            self.offline_buffer.put(item)
        # QoS 0 (stats) only ever says "the latest value": it is not kept for a broker that is away

    def _publish(self, client: aiomqtt.Client, item: Outgoing) -> bool:
        info = publish_now(client, item.topic, item.payload, item.qos, item.retain)
        if info is None:  # the connection is gone; the receive side will notice and end the session
            self._client = None
            self.offline_buffer.put(item)
            return False
        if item.qos > 0:
            unacked = self._unacked
            unacked.append((info, item))
            while unacked and unacked[0][0].is_published():
                unacked.popleft()
        return True

    def _drain(self, client: aiomqtt.Client) -> None:
        buffer = self.offline_buffer
        while buffer:
            if not self._publish(client, buffer.pop()):
                return

    def _requeue_unacked(self) -> None:
        """After a connection died: what the broker never acknowledged goes out again, in order."""
        for info, item in reversed(self._unacked):
            if not info.is_published():
                self.offline_buffer.put_front(item)
        self._unacked.clear()

    def _availability(self, state: str) -> bytes:
        return encode(GatewayAvailabilityPayload(state=state, gw_run=self._gw_run))

    # ------------------------------------------------------------------------------------------- in

    def _on_message(self, message: aiomqtt.Message) -> None:
        observed_at = self._monotonic()
        topic = message.topic.value
        payload = message.payload
        if not isinstance(payload, bytes):
            self._stats.reject("bad_payload", f"non-bytes payload on {topic}")
            return
        if topic.startswith(self._crib_state_head):
            self._restore_from(topic, payload)
            return
        if topic == self._topics.ack and self._clear_retained_ack(payload, retained=message.retain):
            return
        try:
            event = decode_inbound(self._topics, topic, payload, retained=message.retain, observed_at=observed_at)
        except ProtocolError as exc:
            self._stats.reject(exc.reason, f"{topic}: {exc.detail}")
            return
        self._on_event(event)

    def _clear_retained_ack(self, payload: bytes, *, retained: bool) -> bool:
        """Delete a retained ack that the broker replays; True for a deletion's echo, which is done with here.

        A replayed ack (retain flag set) is still rejected by the codec (``retained_ack``); here the gateway also
        publishes a zero-length retained message on the ack topic, which is how MQTT deletes a retained message,
        so it is not replayed again. That message comes back through the gateway's own subscription; it, and any
        other zero-length message on the ack topic (a deletion by someone else), acknowledges nothing.
        """
        if not payload:
            self._stats.ignore("retained_cleared", f"{self._topics.ack}: zero-length (a retained ack deleted)")
            return True
        if retained:
            self.send(Outgoing(self._topics.ack, b"", int(ACK.qos), retain=True))
        return False

    def _restore_from(self, topic: str, payload: bytes) -> None:
        """A retained crib state of the previous run, read back once at start-up."""
        if not self._restoring or self._on_restore is None:
            return
        try:
            state = decode(CribStatePayload, payload)
        except ProtocolError as exc:
            self._stats.reject(exc.reason, f"{topic}: {exc.detail}")
            return
        self._on_restore(crib_state_from_payload(state))

    # -------------------------------------------------------------------------------------- session

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
                on_message=self._on_message,
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
        first = self.connections == 0
        # On the first connection, read back the retained crib states of the previous run before any sensor
        # message: the broker sends a subscription's retained messages in order, so they are all handled
        # by the time the sensors' subscription is acknowledged.
        self._restoring = first and self._on_restore is not None
        if self._restoring:
            await client.subscribe(self._topics.crib_state_filter, qos=int(CRIB_STATE.qos))
        await client.subscribe(self._topics.sensor_filter, qos=int(LATCH.qos))
        if self._restoring:
            await client.unsubscribe(self._topics.crib_state_filter)
            self._restoring = False
        await client.subscribe(self._topics.ack, qos=int(ACK.qos))
        await client.publish(
            self._topics.gateway_availability,
            self._availability("online"),
            qos=int(GATEWAY_AVAILABILITY.qos),
            retain=GATEWAY_AVAILABILITY.retain,
        )
        self.connections += 1
        log.info("connected to broker %s:%s as %s", self._broker.host, self._broker.port, self._client_id)
        self._drain(client)
        self._client = client
        try:
            if self._on_connected is not None:
                self._on_connected(first)
            self.connected.set()
            async for _ in client.messages:  # messages go to _on_message; this only waits for the end
                pass
            raise aiomqtt.MqttError("message stream ended")
        finally:
            self._client = None
            self.connected.clear()
            self._requeue_unacked()
