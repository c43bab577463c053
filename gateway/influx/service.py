"""InfluxDB for one gateway, built from ``[influx]``: the feed (points in), one shipper per target (points out).

``Gateway`` builds it when the site file has an ``[influx]`` section, adds :attr:`InfluxService.feed` to its
channels after the store's recorder, hands it each reading after the channels had the event, starts the shippers
beside the store's writer thread and stops them before it.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.domain.clock import Clock
from gateway.influx.client import InfluxClient, V1Client, V2Client
from gateway.influx.feed import InfluxFeed
from gateway.influx.schema import Point
from gateway.influx.writer import InfluxShipper, TargetHealth
from gateway.settings import InfluxConfig, InfluxTargetConfig, Settings
from gateway.store import Store, StoreWriter


def client_for(target: InfluxTargetConfig) -> InfluxClient:
    """The client of one target's API generation."""
    if target.api == "v1":
        assert target.database is not None
        return V1Client(
            target.url,
            target.database,
            retention_policy=target.retention_policy,
            username=target.username,
            password=None if target.password is None else target.password.get_secret_value(),
            timeout_s=target.timeout_s,
        )
    assert target.org is not None
    assert target.bucket is not None
    return V2Client(
        target.url,
        org=target.org,
        bucket=target.bucket,
        token=None if target.token is None else target.token.get_secret_value(),
        timeout_s=target.timeout_s,
    )


class InfluxService:
    def __init__(
        self,
        settings: Settings,
        config: InfluxConfig,
        writer: StoreWriter,
        open_store: Callable[[], Store],
        clock: Clock,
    ) -> None:
        self.config = config
        self._writer = writer
        names = tuple(t.name for t in config.targets)
        writer.influx_limit = config.outbox_max_points
        writer.influx_targets = names
        cribs = settings.cribs()
        self.feed = InfluxFeed(
            settings.site.id,
            self.put,
            clock,
            sensor_of={crib.id: crib.sensor_key for _, crib in cribs},
            room_of={crib.id: room.id for room, crib in cribs},
        )
        self.shippers = [
            InfluxShipper(
                target.name,
                lambda target=target: client_for(target),  # type: ignore[misc]
                open_store,
                writer.influx_confirmed,
                url=target.url,
                api=target.api,
                batch_size=config.batch_size,
                flush_interval_s=config.flush_interval_s,
                retry_min_s=config.retry_min_s,
                retry_max_s=config.retry_max_s,
            )
            for target in config.targets
        ]

    def put(self, point: Point) -> None:
        self._writer.influx_put(point)

    def start(self) -> None:
        for shipper in self.shippers:
            shipper.start()

    def stop(self, timeout: float = 5.0) -> None:
        for shipper in self.shippers:
            shipper.stop(timeout)

    def health(self) -> list[TargetHealth]:
        return [shipper.health for shipper in self.shippers]
