"""A fleet of simulated sensors: all of a site's wireless sensors, or any list of ids, started together."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import tomllib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Self, TypedDict, Unpack

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from firmware_sim.sensor import SensorConnectError, SensorState, SimulatedSensor
from gateway.domain.vocab import LatchState
from gateway.mqtt.connection import BrokerAddress, broker_address
from gateway.protocol import Topics
from gateway.settings import Settings

__all__ = [
    "Credentials",
    "CredentialsError",
    "Fleet",
    "SensorOptions",
    "broker_from_settings",
    "load_credentials",
    "wireless_sensor_ids",
]

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
    battery_life_s: float | None
    jitter: float


class _Account(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    username: str = Field(min_length=1)
    password: str = Field(min_length=1)


class Credentials(BaseModel):
    """The simulator's MQTT accounts, from a TOML file (see :func:`load_credentials`)::

        [sensors.s-0101]            # one account per sensor, as provisioning writes them
        username = "s-0101"
        password = "..."

        [shared]                    # or one account for every sensor (a demo broker)
        username = "demo"
        password = "..."

        [watcher]                   # what `sim run --check` listens with (the shipped ACL: its own account, with
        username = "watcher"        # the reads of a wall board; never `staff`, whose live board it would knock off)
        password = "..."

    A sensor uses its own ``[sensors.<id>]`` account, else ``[shared]``, else the environment's credentials. The file
    that ``cribwatch provision`` writes (gateway/credentials.py) is such a file: its other accounts (``site``,
    ``[gateway]``, ``[devices.*]``, ...) are read and not used here.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    sensors: dict[str, _Account] = Field(default_factory=dict)
    shared: _Account | None = None
    watcher: _Account | None = None
    site: str | None = None
    gateway: _Account | None = None
    gateway_intake: _Account | None = None
    technician: _Account | None = None
    technician_tool: _Account | None = None
    staff: _Account | None = None
    coordinator: _Account | None = None
    bridge: _Account | None = None
    devices: dict[str, _Account] = Field(default_factory=dict)
    boards: dict[str, _Account] = Field(default_factory=dict)
    coordinator_devices: dict[str, _Account] = Field(default_factory=dict)

    def apply(self, broker: BrokerAddress, sensor_id: str) -> BrokerAddress:
        """``broker`` with the credentials ``sensor_id`` connects with."""
        account = self.sensors.get(sensor_id, self.shared)
        if account is None:
            return broker
        return dataclasses.replace(broker, username=account.username, password=account.password)

    def for_watcher(self, broker: BrokerAddress) -> BrokerAddress:
        if self.watcher is None:
            return broker
        return dataclasses.replace(broker, username=self.watcher.username, password=self.watcher.password)


class CredentialsError(Exception):
    """A credentials file that cannot be read or does not follow the format."""


def load_credentials(path: str | Path) -> Credentials:
    """Read a credentials file; :class:`CredentialsError` naming the file and the problem."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise CredentialsError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise CredentialsError(f"{path}: not valid TOML: {exc}") from None
    try:
        return Credentials.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg'].lower()}" for e in exc.errors(include_input=False)
        )
        raise CredentialsError(f"{path}: {problems}") from None


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
    Once started, each sensor reconnects by itself when its connection is lost (until :meth:`stop`);
    :meth:`start_each` also keeps the sensors that could not connect at start trying.
    """

    def __init__(
        self,
        topics: Topics,
        broker: BrokerAddress,
        sensor_ids: Iterable[str],
        *,
        credentials: Credentials | None = None,
        **sensor_options: Unpack[SensorOptions],
    ) -> None:
        ids = list(sensor_ids)
        doubles = sorted(i for i, n in Counter(ids).items() if n > 1)
        if doubles:
            msg = f"sensor ids must be unique; used more than once: {', '.join(doubles)}"
            raise ValueError(msg)
        self._topics = topics
        self._broker = broker
        creds = credentials or Credentials()
        self._sensors = {i: SimulatedSensor(i, topics, creds.apply(broker, i), **sensor_options) for i in ids}

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        broker: BrokerAddress | None = None,
        *,
        credentials: Credentials | None = None,
        **sensor_options: Unpack[SensorOptions],
    ) -> Self:
        """Every wireless sensor of the site; the broker from ``settings.mqtt`` unless ``broker`` is given.

        The heartbeat interval is the site's ``heartbeat_interval_s`` unless ``interval_s`` is given."""
        topics = Topics(settings.site.id, settings.mqtt.base_topic)
        sensor_options.setdefault("interval_s", settings.alarms.heartbeat_interval_s)
        return cls(
            topics,
            broker or broker_from_settings(settings),
            wireless_sensor_ids(settings),
            credentials=credentials,
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

    async def start_each(self, *, wait_for_broker: bool = False) -> dict[SensorState, list[str]]:
        """Power up every sensor at once, whatever some of them meet. A sensor that cannot connect stays powered
        and keeps trying by itself, as the firmware does: ``connecting`` (a broker it cannot reach, retried with
        the reconnect backoff) or ``refused`` (bad credentials, not authorized: retried every ``reconnect_max_s``
        only). Returns the sensor ids by state.

        Unless ``wait_for_broker``, a broker that nobody reached at all (no sensor connected, none refused: most
        likely a wrong host or port) stops the fleet and raises the first
        :class:`~firmware_sim.sensor.SensorConnectError`; with it the sensors go on trying until the broker
        comes (or :meth:`stop`)."""
        results = await asyncio.gather(*(s.start() for s in self), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        for error in errors:
            if not isinstance(error, SensorConnectError):
                await self.stop()
                raise error
        refused = any(isinstance(e, SensorConnectError) and e.refused for e in errors)
        if errors and len(errors) == len(self) and not refused and not wait_for_broker:
            await self.stop()
            raise errors[0]
        if errors:
            log.info(
                "%d of %d sensors could not connect at start and keep trying: %s", len(errors), len(self), errors[0]
            )
        return self.states()

    def states(self) -> dict[SensorState, list[str]]:
        """The sensor ids by state (``online``, ``refused``, ...), states in no particular order."""
        out: dict[SensorState, list[str]] = {}
        for sensor in self:
            out.setdefault(sensor.state, []).append(sensor.sensor_id)
        return out

    def summary(self) -> str:
        """E.g. ``7 sensors: 1 online, 6 refused (s-0102, s-0103, ...)``: each state counted, never "7 online"
        when six were refused."""
        order: tuple[SensorState, ...] = ("online", "connecting", "refused", "hung", "off")
        states = self.states()
        parts = []
        for state in order:
            ids = states.get(state, [])
            if not ids:
                continue
            part = f"{len(ids)} {state}"
            if state != "online":
                shown = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
                part += f" ({shown})"
            parts.append(part)
        return f"{len(self)} sensors: " + ", ".join(parts)

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
