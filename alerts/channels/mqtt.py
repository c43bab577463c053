"""The MQTT channel: alarm events to pagers and tablets, crib states (retained) for every screen."""

from __future__ import annotations

from collections.abc import Callable

from gateway.domain.events import AlarmEvent, OutboundEvent
from gateway.protocol import Topics
from gateway.protocol.codec import Outgoing, encode_outbound


def outbox_key(event: AlarmEvent) -> str:
    """The durable outbox's key of an alarm event: its run and its gateway-wide sequence number (unique)."""
    return f"{event.run}:{event.seq}"


class MqttChannel:
    """Alarm events to ``<site>/alarm/<room>``, crib states (retained) to ``<site>/crib/<crib>/state``.

    An alarm event is written to the socket first (``send``), then handed to ``keep`` (the store's durable
    outbox, which only enqueues): if the broker is away and the gateway restarts before it is back, the event
    still reaches the pagers. Crib states are not kept: every connect publishes them all again.
    """

    name = "mqtt"

    def __init__(
        self,
        topics: Topics,
        gw_run: int,
        send: Callable[[Outgoing], None],
        keep: Callable[[Outgoing], None] | None = None,
    ) -> None:
        self._topics = topics
        self._gw_run = gw_run
        self._send = send
        self._keep = keep

    def deliver(self, event: OutboundEvent) -> None:
        if isinstance(event, AlarmEvent) and event.maintenance:
            return  # raised in maintenance: recorded in the store, not sent (the crib's state says maintenance)
        item = encode_outbound(self._topics, event, self._gw_run)
        if isinstance(event, AlarmEvent) and self._keep is not None:
            item = Outgoing(item.topic, item.payload, item.qos, item.retain, outbox_key(event))  # (not replace: 4x)
            self._send(item)
            self._keep(item)
        else:
            self._send(item)

    def close(self) -> None:
        return None
