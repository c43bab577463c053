"""The simulator's hand on a wired crib's reed switch: pin commands to a gateway in simulation mode.

A wired crib has no wireless sensor; on a test bench its gateway runs with ``--simulate-pins`` (demo sites only)
and moves the crib's mock GPIO pin on ``<base>/<site>/sim/pin/<pin>`` (:mod:`gateway.protocol.simpins`).
:class:`PinDriver` publishes those commands (QoS 1, never retained) on a connection of its own, opened at the
first command and opened again after the broker dropped it.
"""

from __future__ import annotations

import contextlib
import uuid

import aiomqtt

from gateway.mqtt.connection import BrokerAddress, new_client
from gateway.protocol import SIM_PIN, PinLevel, Topics, sim_pin_payload

__all__ = ["PinDriver"]


class PinDriver:
    """Publishes pin commands for one site; :meth:`close` when done."""

    def __init__(self, topics: Topics, broker: BrokerAddress) -> None:
        self.topics = topics
        self._broker = broker
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: aiomqtt.Client | None = None
        self.sent = 0

    async def drive(self, pin: int, level: PinLevel) -> None:
        """Publish one pin command and wait for the broker to take it; aiomqtt.MqttError if it cannot."""
        for attempt in range(2):  # a connection the broker dropped since the last command: once more, anew
            client = await self._connected()
            try:
                await client.publish(
                    self.topics.sim_pin(pin), sim_pin_payload(level), qos=int(SIM_PIN.qos), retain=SIM_PIN.retain
                )
            except aiomqtt.MqttError:
                await self.close()
                if attempt:
                    raise
                continue
            self.sent += 1
            return

    async def _connected(self) -> aiomqtt.Client:
        if self._client is None:
            stack = contextlib.AsyncExitStack()
            identifier = f"cribwatch-sim-pins-{self.topics.site}-{uuid.uuid4().hex[:8]}"
            client = await stack.enter_async_context(new_client(self._broker, identifier=identifier, keepalive=30))
            self._stack, self._client = stack, client
        return self._client

    async def close(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await stack.aclose()
