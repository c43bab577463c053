"""A fleet of simulated sensors: all of a site's wireless sensors, or any list of ids, started together."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Self, TypedDict, Unpack

from firmware_sim.sensor import SimulatedSensor
from gateway.domain.vocab import LatchState
from gateway.mqtt.connection import BrokerAddress, broker_address
from gateway.protocol import Topics
from gateway.settings import Settings

__all__ = ["Fleet", "SensorOptions", "broker_from_settings", "wireless_sensor_ids"]

log = logging.getLogger(__name__)


class SensorOptions(TypedDict, total=False):
    """Keyword arguments of :class:`SimulatedSensor`, given to every sensor of a fleet."""

    boot: int
    latch: LatchState
    interval_s: float
    battery_pct: int
    rssi_dbm: int
    firmware: str
    wall_clock: Callable[[], float]
    reconnect_min_s: float
    reconnect_max_s: float


def wireless_sensor_ids(settings: Settings) -> list[str]:
    """The sensor ids of the site's wireless cribs, in configuration order (wired cribs have none)."""
    return [crib.sensor_id for _, crib in settings.cribs() if crib.sensor_id is not None]


def broker_from_settings(settings: Settings) -> BrokerAddress:
    return broker_address(settings.mqtt)


class Fleet:
    """N :class:`SimulatedSensor` s, each with its own connection, started and stopped concurrently.

    ``async with Fleet(...) as fleet``; then ``fleet["s-0101"]``, ``for sensor in fleet``, ``len(fleet)``,
    ``"s-0101" in fleet``. If any sensor cannot connect, :meth:`start` stops the ones that did and raises
    the first error (a :class:`~firmware_sim.sensor.SensorConnectError` if the broker cannot be reached).
    Once started, each sensor reconnects by itself when its connection is lost (until :meth:`stop`).
    """

    def __init__(
        self,
        topics: Topics,
        broker: BrokerAddress,
        sensor_ids: Iterable[str],
        **sensor_options: Unpack[SensorOptions],
    ) -> None:
        ids = list(sensor_ids)
        doubles = sorted(i for i, n in Counter(ids).items() if n > 1)
        if doubles:
            msg = f"sensor ids must be unique; used more than once: {', '.join(doubles)}"
            raise ValueError(msg)
        self._topics = topics
        self._broker = broker
        self._sensors = {i: SimulatedSensor(i, topics, broker, **sensor_options) for i in ids}

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        broker: BrokerAddress | None = None,
        **sensor_options: Unpack[SensorOptions],
    ) -> Self:
        """Every wireless sensor of the site; the broker from ``settings.mqtt`` unless ``broker`` is given."""
        topics = Topics(settings.site.id, settings.mqtt.base_topic)
        return cls(
            topics,
            broker or broker_from_settings(settings),
            wireless_sensor_ids(settings),
            **sensor_options,
        )

    @property
    def topics(self) -> Topics:
        return self._topics

    @property
    def broker(self) -> BrokerAddress:
        return self._broker

    @property
    def sensor_ids(self) -> list[str]:
        return list(self._sensors)

    def __getitem__(self, sensor_id: str) -> SimulatedSensor:
        return self._sensors[sensor_id]

    def __contains__(self, sensor_id: object) -> bool:
        return sensor_id in self._sensors

    def __iter__(self) -> Iterator[SimulatedSensor]:
        return iter(self._sensors.values())

    def __len__(self) -> int:
        return len(self._sensors)

    async def start(self) -> None:
        """Power up every sensor at once."""
        began = time.perf_counter()
        results = await asyncio.gather(*(s.start() for s in self), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            log.info("%d of %d sensors could not start: %s", len(failures), len(self), failures[0])
            await self.stop()
            raise failures[0]
        log.debug("%d sensors started in %.3f s", len(self), time.perf_counter() - began)

    async def stop(self) -> None:
        """Shut every powered sensor down cleanly (each publishes ``offline`` itself)."""
        results = await asyncio.gather(*(s.stop() for s in self), return_exceptions=True)
        for sensor, result in zip(self, results, strict=True):
            if isinstance(result, Exception):
                log.warning("sensor %s did not stop cleanly: %s", sensor.sensor_id, result)

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
