"""The gateway's MQTT link: two persistent sessions that take sensor messages and acks in, and send alarm events
and crib states out.

- In: every message is converted once at this edge (:func:`gateway.protocol.codec.decode_inbound`) and handed to
  ``on_event`` on the event loop's thread; a malformed one is counted and dropped, never raised. A retained ack
  that the broker replays is rejected and deleted from the broker (:meth:`MqttLink._clear_retained_ack`). Cheap
  checks come first (:func:`gateway.protocol.codec.screen_inbound`: topic, known sensor, size, JSON at all), so junk
  costs microseconds, not a JSON parser and a pydantic model.
- Two connections, so that no stranger can hold up a sensor's message. The *main* connection subscribes to the
  topics of the site's own wireless sensors (latch and availability at QoS 1, telemetry at QoS 0) and carries
  everything the gateway sends.
  The *intake* connection (client id ``<client id>-intake``, a persistent session too) takes the staff acks
  and every other sensor topic (ids that no crib uses, wired cribs' keys, malformed ids: counted and
  dropped; the site's own sensors' messages, which it gets too, are dropped at once). The broker keeps one
  queue per connection, so junk that the gateway cannot take as fast as it comes waits in the intake's queue,
  never in front of a latch message; and the intake's socket is read only when the main one has nothing
  waiting (or once every :data:`INTAKE_MAX_WAIT_S`), so the intake cannot take the main one's CPU either.
- Simulation mode only (``on_sim_pin`` given: ``cribwatch gateway --simulate-pins``, demo sites alone): the intake
  also takes a test bench's pin commands (``<prefix>/sim/pin/<pin>``, :mod:`gateway.protocol.simpins`) and hands
  each to ``on_sim_pin``; a bad one is counted (``sim_pin``). Any other gateway unsubscribes from that topic
  (a persistent session may keep a filter of an earlier simulation run) and counts whatever still comes there.
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
from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING

import aiomqtt

from gateway.domain.events import InboundEvent
from gateway.domain.stats import IngestStats
from gateway.mqtt.connection import BrokerAddress, has_input, new_client, publish_now, stop_if_cancelled
from gateway.protocol import (
    ACK,
    AVAILABILITY,
    GATEWAY_AVAILABILITY,
    LATCH,
    SIM_PIN,
    SIM_PIN_REASON,
    TELEMETRY,
    GatewayAvailabilityPayload,
    ProtocolError,
    SensorChannel,
    SimPinCommand,
    Topics,
    encode,
    parse_sim_pin,
)
from gateway.protocol.codec import Outgoing, decode_inbound, decode_sensor, screen_inbound, screen_payload
from gateway.protocol.commands import COMMAND_REASON, CommandPayload, parse_command
from gateway.protocol.topics import COMMAND

if TYPE_CHECKING:
    from paho.mqtt.client import MQTTMessageInfo

log = logging.getLogger("cribwatch.mqtt")

OFFLINE_BUFFER_LIMIT = 10_000
SETTLE_INTERVAL_S = 0.5
"""How often the link looks for broker acknowledgements of sent messages (to mark outbox rows delivered)."""
INTAKE_MAX_WAIT_S = 0.02
"""While the main connection has input waiting, the intake's socket is still read once every this many seconds:
acks keep moving (slowly) and its keepalive is answered, whatever floods the main connection."""


class OfflineBuffer:
    """A FIFO of messages that wait for the broker. Beyond its limit, the oldest message that is not an alarm event
    (a crib state: republished on every connect anyway) is dropped and counted; alarm events are never dropped (they
    are few, and one whose outbox row the disk has not taken yet exists nowhere else)."""

    def __init__(self, limit: int = OFFLINE_BUFFER_LIMIT) -> None:
        self._items: collections.deque[Outgoing] = collections.deque()
        self._limit = limit
        self.dropped = 0

    def put(self, item: Outgoing) -> None:
        items = self._items
        if len(items) >= self._limit:
            victim = next((queued for queued in items if queued.key is None), None)
            if victim is not None:
                items.remove(victim)
                self.dropped += 1
        items.append(item)

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
        on_event: Callable[[InboundEvent], object],
        stats: IngestStats,
        gw_run: int,
        sensor_ids: Collection[str],
        wired_keys: Collection[str] = (),
        keepalive: int = 10,
        reconnect_min_s: float = 0.2,
        reconnect_max_s: float = 10.0,
        on_connected: Callable[[bool], None] | None = None,
        on_delivered: Callable[[str], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        on_sim_pin: Callable[[SimPinCommand], object] | None = None,
        on_command: Callable[[str, CommandPayload], object] | None = None,
        intake_broker: BrokerAddress | None = None,
    ) -> None:
        self._topics = topics
        self._on_command = on_command
        """Where a technician's commands go (``<prefix>/cmd/<device>``; None: counted and dropped)."""
        self._command_head = f"{topics.prefix}/cmd/"
        self._on_sim_pin = on_sim_pin
        """Simulation mode: where a test bench's pin commands go (None: they are counted and dropped)."""
        self._sim_head = f"{topics.prefix}/sim/pin/"
        self._broker = broker
        self._intake_broker = intake_broker or broker
        """The intake's account: its own on the shipped broker (the client id is the username there)."""
        self._client_id = client_id
        self._on_event = on_event
        self._stats = stats
        self._gw_run = gw_run
        self._keepalive = keepalive
        self._backoff = (reconnect_min_s, reconnect_max_s)
        self._on_connected = on_connected
        self._on_delivered = on_delivered
        self._sensor_head = f"{topics.prefix}/sensor/"
        self._wireless = frozenset(sensor_ids)
        """The site's wireless sensor ids: the main connection subscribes to their topics (three filters each)."""
        self._wired = frozenset(wired_keys)
        self._routes = {topic: topics.parse_sensor_topic(topic) for topic, _ in self._sensor_subscriptions()}
        """Each topic the main connection subscribes to, parsed once: (sensor id, channel). The hot path looks the
        topic up here (no split, no pattern) and screens and decodes the payload only."""
        self._main_topics = frozenset(self._routes)
        """What the main connection subscribes to: the intake drops its copies of these (and only these)."""
        self._intake_id = f"{client_id}-intake"
        self._monotonic = monotonic
        self.offline_buffer = OfflineBuffer()
        self.connected = asyncio.Event()
        """Set while both connections are up (the main one subscribed to the sensors, the intake to the acks)."""
        self.connections = 0
        """Main connections made so far."""
        self.intake_connections = 0
        self._main_up = False
        self._intake_up = False
        self._sensors_subscribed = asyncio.Event()  # once: the first main session has subscribed to the sensors
        self._intake_read_at = 0.0
        self._io_clock: Callable[[], float] = time.monotonic  # socket scheduling: real time, whatever the domain clock
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

    def sends_now(self) -> bool:
        """Whether :meth:`send` would write to the socket at once (else the message waits in the offline buffer)."""
        return self._client is not None and not self.offline_buffer

    def _publish(self, client: aiomqtt.Client, item: Outgoing) -> bool:
        info = publish_now(client, item.topic, item.payload, item.qos, item.retain)
        if info is None:  # the connection is gone; the receive side will notice and end the session
            self._client = None
            self.offline_buffer.put(item)
            return False
        if item.qos > 0:
            self._unacked.append((info, item))
            self.settle()
        return True

    def settle(self) -> None:
        """Forget the oldest sent messages that the broker has acknowledged, reporting each outbox key as delivered.
        Called on every publish and periodically (so the last message of a burst is reported too)."""
        unacked, delivered = self._unacked, self._on_delivered
        while unacked and unacked[0][0].is_published():
            _, item = unacked.popleft()
            if item.key is not None and delivered is not None:
                delivered(item.key)

    def _drain(self, client: aiomqtt.Client) -> None:
        buffer = self.offline_buffer
        while buffer:
            if not self._publish(client, buffer.pop()):
                return

    def _requeue_unacked(self) -> None:
        """After a connection died: what the broker never acknowledged goes out again, in order; what it did
        acknowledge is reported delivered."""
        delivered = self._on_delivered
        for info, item in reversed(self._unacked):
            if not info.is_published():
                self.offline_buffer.put_front(item)
            elif item.key is not None and delivered is not None:
                delivered(item.key)
        self._unacked.clear()

    def _availability(self, state: str) -> bytes:
        return encode(GatewayAvailabilityPayload(state=state, gw_run=self._gw_run))

    # ------------------------------------------------------------------------------------------- in

    def _sensor_of(self, topic: str) -> str | None:
        """The sensor id of ``<prefix>/sensor/<id>/...`` if it is one of the site's wireless sensors."""
        if not topic.startswith(self._sensor_head):
            return None
        sensor_id = topic[len(self._sensor_head) :].partition("/")[0]
        return sensor_id if sensor_id in self._wireless else None

    def _on_message(self, message: aiomqtt.Message) -> None:
        """The main connection: the site's own sensors' messages."""
        topic = message.topic.value
        route = self._routes.get(topic)
        if route is not None:
            self._take_sensor(route, topic, message)
            return
        if self._sensor_of(topic) is None and not self._is_ack(topic):
            # Through a filter that an earlier run left in this persistent session (a sensor since taken out
            # of the site file, or the one-connection gateway's `sensor/+/+`): the intake gets it too and counts it.
            # An ack here was queued for the one-connection gateway before its filter was dropped: only here.
            return
        self._take(topic, message)

    def _on_intake_message(self, message: aiomqtt.Message) -> None:
        """The intake connection: staff acks, and the sensor topics of ids that are not the site's sensors."""
        topic = message.topic.value
        if topic in self._main_topics:
            return  # one of the site's sensors: the main connection takes it, in order with its others
        if topic.startswith(self._sim_head):
            self._take_sim_pin(topic, message)
            return
        if topic.startswith(self._command_head):
            self._take_command(topic, message)
            return
        self._take(topic, message)

    def _take_command(self, topic: str, message: aiomqtt.Message) -> None:
        """A technician's command (test alarm, maintenance): parsed once here, to ``on_command``."""
        payload = message.payload
        if self._on_command is None or not isinstance(payload, bytes):
            self._stats.reject(COMMAND_REASON, f"{topic}: no command taken here")
            return
        try:
            device, command = parse_command(self._topics, topic, payload, retained=message.retain)
        except ProtocolError as exc:
            self._stats.reject(exc.reason, exc.detail)
            return
        self._on_command(device, command)

    def _take_sim_pin(self, topic: str, message: aiomqtt.Message) -> None:
        """A test bench's pin command: to ``on_sim_pin`` in simulation mode, else only counted."""
        payload = message.payload
        if self._on_sim_pin is None:
            self._stats.reject(SIM_PIN_REASON, f"{topic}: this gateway is not in simulation mode (--simulate-pins)")
            return
        if not isinstance(payload, bytes):
            self._stats.reject(SIM_PIN_REASON, f"non-bytes payload on {topic}")
            return
        try:
            command = parse_sim_pin(self._topics, topic, payload, retained=message.retain)
        except ProtocolError as exc:
            self._stats.reject(exc.reason, exc.detail)
            return
        self._on_sim_pin(command)

    def _intake_may_read(self) -> bool:
        """The main connection first: the intake reads only when the main one has nothing waiting, or when it
        has not read for INTAKE_MAX_WAIT_S."""
        client = self._client
        now = self._io_clock()
        if client is not None and now - self._intake_read_at < INTAKE_MAX_WAIT_S and has_input(client):
            return False
        self._intake_read_at = now
        return True

    def _take_sensor(self, route: tuple[str, SensorChannel], topic: str, message: aiomqtt.Message) -> None:
        """The hot path: a message on one of the topics the main connection subscribed to (already parsed)."""
        observed_at = self._monotonic()
        payload = message.payload
        if not isinstance(payload, bytes):
            self._stats.reject("bad_payload", f"non-bytes payload on {topic}")
            return
        try:
            screen_payload(payload)
            event = decode_sensor(route[0], route[1], payload, retained=message.retain, observed_at=observed_at)
        except ProtocolError as exc:
            self._stats.reject(exc.reason, f"{topic}: {exc.detail}")
            return
        self._on_event(event)

    def _take(self, topic: str, message: aiomqtt.Message) -> None:
        observed_at = self._monotonic()
        payload = message.payload
        if not isinstance(payload, bytes):
            self._stats.reject("bad_payload", f"non-bytes payload on {topic}")
            return
        if self._is_ack(topic) and self._clear_retained_ack(topic, payload, retained=message.retain):
            return
        try:
            screen_inbound(self._topics, topic, payload, wireless=self._wireless, wired=self._wired)
            event = decode_inbound(self._topics, topic, payload, retained=message.retain, observed_at=observed_at)
        except ProtocolError as exc:
            self._stats.reject(exc.reason, f"{topic}: {exc.detail}")
            return
        self._on_event(event)

    def _is_ack(self, topic: str) -> bool:
        """A device's ack topic (``ack/<device>``), or the shared one of earlier versions (rejected: ``legacy_ack``)."""
        return topic == self._topics.legacy_ack or self._topics.ack_device(topic) is not None

    def _clear_retained_ack(self, topic: str, payload: bytes, *, retained: bool) -> bool:
        """Delete a retained ack that the broker replays; True for a deletion's echo, which is done with here.

        A replayed ack (retain flag set) is still rejected by the codec (``retained_ack``); here the gateway also
        publishes a zero-length retained message on the ack topic, which is how MQTT deletes a retained message,
        so it is not replayed again. That message comes back through the gateway's own subscription; it, and any
        other zero-length message on the ack topic (a deletion by someone else), acknowledges nothing.
        """
        if not payload:
            self._stats.ignore("retained_cleared", f"{topic}: zero-length (a retained ack deleted)")
            return True
        if retained:
            self.send(Outgoing(topic, b"", int(ACK.qos), retain=True))
        return False

    # -------------------------------------------------------------------------------------- session

    async def run(self) -> None:
        """Keep both connections up until cancelled."""
        async with asyncio.TaskGroup() as tg:
            main = self._stay_connected("main", self._main_client, self._session, goodbye=True)
            tg.create_task(main, name="mqtt-main")
            tg.create_task(self._run_intake(), name="mqtt-intake")
            tg.create_task(self._settle_loop(), name="mqtt-settle")

    async def _settle_loop(self) -> None:
        while True:
            await asyncio.sleep(SETTLE_INTERVAL_S)
            self.settle()

    async def _run_intake(self) -> None:
        # The intake starts once the main session is up: what the gateway says first (its availability and every
        # crib's state) goes out before it answers any ack. (Acks sent meanwhile wait in the intake's persistent
        # session, from its second connection on; the alarms they name were restored from the store at start.)
        await self._sensors_subscribed.wait()
        await self._stay_connected("intake", self._intake_client, self._intake_session)

    def _main_client(self) -> aiomqtt.Client:
        will = aiomqtt.Will(
            self._topics.gateway_availability,
            self._availability("offline"),
            qos=int(GATEWAY_AVAILABILITY.qos),
            retain=GATEWAY_AVAILABILITY.retain,
        )
        return new_client(
            self._broker,
            identifier=self._client_id,
            will=will,
            clean_session=False,
            keepalive=self._keepalive,
            on_message=self._on_message,
        )

    def _intake_client(self) -> aiomqtt.Client:
        return new_client(
            self._intake_broker,
            identifier=self._intake_id,
            clean_session=False,  # acks sent while the gateway was away are delivered when it is back
            keepalive=self._keepalive,
            on_message=self._on_intake_message,
            read_when=self._intake_may_read,
        )

    async def _stay_connected(
        self,
        name: str,
        make_client: Callable[[], aiomqtt.Client],
        session: Callable[[aiomqtt.Client], Awaitable[None]],
        *,
        goodbye: bool = False,
    ) -> None:
        """Connect, run ``session``, and reconnect with exponential backoff when the connection is lost.

        ``goodbye``: on cancellation, publish the gateway's ``offline`` before disconnecting (main connection).
        """
        delay = self._backoff[0]
        while True:
            client = make_client()
            try:
                async with client:
                    delay = self._backoff[0]
                    try:
                        stop_if_cancelled()
                        await session(client)
                    except asyncio.CancelledError:
                        if goodbye:
                            await self._goodbye(client)
                        raise
            except aiomqtt.MqttError as exc:
                wait = delay * random.uniform(0.8, 1.2)
                log.warning(
                    "broker %s:%s unreachable for the %s connection (%s); retrying in %.1f s",
                    self._broker.host,
                    self._broker.port,
                    name,
                    exc,
                    wait,
                )
                await asyncio.sleep(wait)
                delay = min(delay * 2, self._backoff[1])

    def _set_up(self, *, main: bool | None = None, intake: bool | None = None) -> None:
        if main is not None:
            self._main_up = main
        if intake is not None:
            self._intake_up = intake
        if self._main_up and self._intake_up:
            self.connected.set()
        else:
            self.connected.clear()

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
        """The main connection: the sensors in, everything the gateway says out.

        The retained crib states are never read back: they are a projection of the store, which the gateway
        restored from before this link started, and they are published again after every connect.
        """
        first = self.connections == 0
        # Earlier versions took everything on this connection, each sensor through one filter, or read the retained
        # crib states back at start; the persistent session keeps their filters.
        legacy = [self._topics.sensor_filter_of(sid) for sid in sorted(self._wireless)]
        await client.unsubscribe(
            [self._topics.sensor_filter, self._topics.legacy_ack, self._topics.crib_state_filter, *legacy]
        )
        if self._wireless:
            await client.subscribe(self._sensor_subscriptions())
        self._sensors_subscribed.set()
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
            self._set_up(main=True)
            stop_if_cancelled()
            async for _ in client.messages:  # messages go to _on_message; this only waits for the end
                pass
            raise aiomqtt.MqttError("message stream ended")
        finally:
            self._client = None
            self._set_up(main=False)
            self._requeue_unacked()

    def _sensor_subscriptions(self) -> list[tuple[str, int]]:
        """Each of the site's sensors, channel by channel, at the QoS its messages are published with.

        Telemetry at QoS 0: the sensor sends it so, and a heartbeat is worth no PUBACK nor a place in the queue
        while the gateway is away; subscribing at QoS 0 also caps anything published there at QoS 1 (junk from a
        sensor gone wrong) to QoS 0, which saves the gateway writing a PUBACK for each.
        """
        specs = (
            (SensorChannel.LATCH, LATCH),
            (SensorChannel.AVAILABILITY, AVAILABILITY),
            (SensorChannel.TELEMETRY, TELEMETRY),
        )
        return [
            (self._topics.sensor(sid, channel), int(spec.qos))
            for sid in sorted(self._wireless)
            for channel, spec in specs
        ]

    async def _intake_session(self, client: aiomqtt.Client) -> None:
        """The intake connection: staff acks (QoS 1), and every sensor topic at QoS 0: what comes here from a
        stranger is only counted, and is not worth a PUBACK nor a place in the queue while the gateway is away."""
        # Each device acknowledges on ack/<device> (its own account); the shared ack topic of earlier versions is
        # dropped from the persistent session, so no device can claim another's id there any more.
        await client.unsubscribe(self._topics.legacy_ack)
        filters = [(self._topics.ack_filter, int(ACK.qos)), (self._topics.sensor_filter, int(TELEMETRY.qos))]
        if self._on_command is not None:  # in the same SUBSCRIBE: no extra round trip before the link is up
            filters.append((self._topics.command_filter, int(COMMAND.qos)))
        await client.subscribe(filters)
        if self._on_sim_pin is not None:
            await client.subscribe(self._topics.sim_pin_filter, qos=int(SIM_PIN.qos))
        else:  # a filter left in the persistent session by a simulation run: no network message moves a pin here
            await client.unsubscribe(self._topics.sim_pin_filter)
        self.intake_connections += 1
        log.info("intake connected to broker %s:%s as %s", self._broker.host, self._broker.port, self._intake_id)
        try:
            self._set_up(intake=True)
            stop_if_cancelled()
            async for _ in client.messages:  # messages go to _on_intake_message
                pass
            raise aiomqtt.MqttError("message stream ended")
        finally:
            self._set_up(intake=False)
