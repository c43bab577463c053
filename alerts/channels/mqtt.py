"""The MQTT channel: alarm events to pagers and tablets, crib states (retained) for every screen."""

from __future__ import annotations

from collections.abc import Callable

from gateway.domain.events import OutboundEvent
from gateway.protocol import Topics
from gateway.protocol.codec import Outgoing, encode_outbound


class MqttChannel:
    """Alarm events to ``<site>/alarm/<room>``, crib states (retained) to ``<site>/crib/<crib>/state``."""

    name = "mqtt"

    def __init__(self, topics: Topics, gw_run: int, send: Callable[[Outgoing], None]) -> None:
        self._topics = topics
        self._gw_run = gw_run
        self._send = send

    def deliver(self, event: OutboundEvent) -> None:
        self._send(encode_outbound(self._topics, event, self._gw_run))

    def close(self) -> None:
        return None
