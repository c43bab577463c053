"""InfluxDB 1.x for real: Debian's ``influxd`` (1.6.7, authentication on), started on a free port, written with
``POST /write`` and read back with InfluxQL. The outbox in a real SQLite file, the StoreWriter and the shipper
threads as the gateway runs them; the last tests run the whole gateway with a real Mosquitto.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory

from devtools.brokers import BrokerEndpoint
from devtools.influx import InfluxdServer, find_influxd
from gateway.app import Gateway
from gateway.domain.events import LatchReading, TelemetryReading
from gateway.domain.vocab import LatchState, Source
from gateway.influx import schema
from gateway.influx.client import InfluxClient, V1Client
from gateway.influx.schema import Point
from gateway.influx.writer import InfluxShipper
from gateway.settings import Settings, influx_env, settings_from_mapping
from gateway.store import Store, StoreWriter

pytestmark = pytest.mark.integration

SITE = "kids-f"
WAIT_S = 30.0
BASE = 1_764_000_000.0


# ------------------------------------------------------------------------------------------ servers


def need(found: str | None, what: str) -> None:
    if found is None:
        pytest.fail(f"{what} is not installed: run `make system-deps` (or `make test`, which does it)", pytrace=False)


@pytest.fixture(scope="session")
def influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxdServer]:
    """One influxd for the session; tests that kill or stop a server start their own."""
    need(find_influxd(), "influxd (Debian's influxdb)")
    with InfluxdServer(tmp_path_factory.mktemp("influxd"), password=secrets.token_urlsafe(12)) as server:
        yield server


@pytest.fixture
def database(influxd: InfluxdServer) -> str:
    """A database of the test's own on the session's influxd."""
    name = f"t_{secrets.token_hex(4)}"
    influxd.query(f'CREATE DATABASE "{name}"')
    return name


def v1(server: InfluxdServer, database: str | None = None) -> Callable[[], InfluxClient]:
    return lambda: V1Client(
        server.url, database or server.database, username=server.username, password=server.password, timeout_s=5.0
    )


# ------------------------------------------------------------------------------------------ the pipeline


class Recording:
    """The real client, with a note of every body the server confirmed, in order."""

    def __init__(self, inner: InfluxClient, confirmed: list[bytes]) -> None:
        self._inner = inner
        self._confirmed = confirmed

    def write(self, body: bytes) -> None:
        self._inner.write(body)
        self._confirmed.append(body)

    def close(self) -> None:
        self._inner.close()


class Pipeline:
    """The outbox (a real store file), the StoreWriter thread and one shipper thread per target."""

    def __init__(
        self, path: Path, targets: dict[str, Callable[[], InfluxClient]], *, batch_size: int = 500, limit: int = 10**6
    ) -> None:
        self.path = path
        self.confirmed: dict[str, list[bytes]] = {name: [] for name in targets}
        self.writer = StoreWriter(self.open_store, gather_s=0.005, influx_limit=limit, influx_targets=tuple(targets))
        self.shippers = {
            name: InfluxShipper(
                name,
                lambda c=connect, n=name: Recording(c(), self.confirmed[n]),  # type: ignore[misc]
                self.open_store,
                self.writer.influx_confirmed,
                batch_size=batch_size,
                flush_interval_s=0.05,
                retry_min_s=0.05,
                retry_max_s=0.2,
            )
            for name, connect in targets.items()
        }

    def open_store(self) -> Store:
        return Store.open(self.path, site_id=SITE)

    def __enter__(self) -> Pipeline:
        self.writer.start()
        for shipper in self.shippers.values():
            shipper.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for shipper in self.shippers.values():
            shipper.stop()
        self.writer.stop()

    def put(self, points: list[Point]) -> None:
        for p in points:
            self.writer.influx_put(p)

    def wait(self, check: Callable[[], Any], what: str) -> Any:
        deadline = time.monotonic() + WAIT_S
        while not (found := check()):
            if time.monotonic() > deadline:
                health = {name: s.health for name, s in self.shippers.items()}
                raise AssertionError(f"{what}: not within {WAIT_S} s; {health}; {self.writer.health}")
            time.sleep(0.02)
        return found

    def shipped(self, name: str) -> bool:
        return self.writer.pending == 0 and self.shippers[name].health.waiting == 0 and self._empty_for(name)

    def _empty_for(self, name: str) -> bool:
        store = self.open_store()
        try:
            return store.influx_waiting(store.influx_position(name, 0.0))[0] == 0
        finally:
            store.close()

    def confirmed_lines(self, name: str) -> list[str]:
        return [line for body in self.confirmed[name] for line in body.decode().split("\n")]


def reading(i: int, *, sensor: str = "s-1") -> Point:
    return schema.point("sensor", BASE + i * 0.001, {"site": SITE, "sensor": sensor}, {"seq": i, "battery_pct": 80})


def raised(i: int) -> Point:
    return schema.alarm_step_point(
        SITE, "baby", "c-1", "crib_open", "high", "raised", BASE + i * 0.001, alarm_id=f"1-{i}", raised_at=BASE
    )


# ------------------------------------------------------------------------------------------ tests


def test_points_are_written_and_read_back_with_influxql(tmp_path: Path, influxd: InfluxdServer, database: str) -> None:
    points = [reading(i) for i in range(300)] + [raised(300)]
    with Pipeline(tmp_path / "s.sqlite3", {"site": v1(influxd, database)}, batch_size=100) as pipe:
        pipe.put(points)
        pipe.wait(lambda: pipe.shipped("site"), "every point written")
        health = pipe.shippers["site"].health
    assert health.connected is True
    assert health.sent == 301
    rows = influxd.rows('SELECT "seq", "battery_pct" FROM "sensor" ORDER BY time', db=database)
    assert [r["seq"] for r in rows] == list(range(300))
    assert rows[7]["time"] == schema.time_ns(BASE + 0.007)  # the event's time, not the write's
    [alarm] = influxd.rows('SELECT * FROM "alarm"', db=database)
    assert (alarm["alarm_id"], alarm["event"], alarm["crib"], alarm["priority"]) == ("1-300", "raised", "c-1", "high")
    store = Store.open(tmp_path / "s.sqlite3", site_id=SITE)
    assert store.influx_rows() == 0, "confirmed points are deleted"
    store.close()


def test_influxd_killed_mid_run_every_point_arrives_once_in_order(tmp_path: Path) -> None:
    """SIGKILL in the middle of 6,000 points, more points while it is down, then started again."""
    server = InfluxdServer(tmp_path / "influxd", password=secrets.token_urlsafe(12))
    server.start()
    try:
        with Pipeline(tmp_path / "s.sqlite3", {"site": v1(server)}, batch_size=200) as pipe:
            pipe.put([reading(i) for i in range(3000)])
            shipper = pipe.shippers["site"]
            pipe.wait(lambda: shipper.health.sent >= 600, "a part written")
            server.kill()
            pipe.put([reading(i) for i in range(3000, 6000)])
            pipe.wait(lambda: shipper.health.connected is False, "the failure seen")
            waiting = pipe.wait(lambda: shipper.health.waiting, "points waiting")
            assert waiting > 0
            server.start()
            pipe.wait(lambda: pipe.shipped("site"), "the backfill done")
            health = shipper.health
            lines = pipe.confirmed_lines("site")
        assert health.failures >= 1
        assert health.last_error is not None
        assert lines == [reading(i).line() for i in range(6000)], "confirmed once each, oldest first"
        rows = server.rows('SELECT "seq" FROM "sensor"')
        assert sorted(r["seq"] for r in rows) == list(range(6000)), (
            "every point once (influxd sorts: the order is above)"
        )
    finally:
        server.stop()


def test_points_sent_again_after_the_server_took_them_do_not_double(
    tmp_path: Path, influxd: InfluxdServer, database: str
) -> None:
    """The server took a batch but its confirmation never reached the store (a timeout, a crash before the commit):
    the batch goes again, and InfluxDB still holds each point once (same series and timestamp overwrite)."""
    path = tmp_path / "s.sqlite3"
    away = InfluxdServer(tmp_path / "away", password=secrets.token_urlsafe(12))
    away.start()
    away.stop()  # a second target that never answers keeps the rows in the outbox
    targets = {"site": v1(influxd, database), "city": v1(away)}
    points = [reading(i) for i in range(500)] + [raised(500)]
    with Pipeline(path, targets, batch_size=100) as pipe:
        pipe.put(points)
        pipe.wait(lambda: pipe.shipped("site"), "written once")
    store = Store.open(path, site_id=SITE)
    with store.transaction():  # the confirmations lost: the site's position back to the start
        store.connection.execute("UPDATE influx_targets SET position = 0 WHERE name = 'site'")
    store.close()
    with Pipeline(path, targets, batch_size=100) as pipe:
        pipe.wait(lambda: pipe.shipped("site"), "written again")
        assert pipe.shippers["site"].health.sent == 501, "every point went a second time"
    assert len(influxd.rows('SELECT "seq" FROM "sensor"', db=database)) == 500
    assert len(influxd.rows('SELECT "alarm_id" FROM "alarm"', db=database)) == 1


def test_a_point_the_server_refuses_is_given_up_alone(tmp_path: Path, influxd: InfluxdServer, database: str) -> None:
    """A field type conflict (400) would block the outbox forever if retried: the body is halved until the point
    is alone; it is counted and logged, and every other point is written."""
    V1Client(influxd.url, database, username=influxd.username, password=influxd.password).write(
        b"conflict f=1.5 1764000000000000000"
    )
    bad = schema.point("conflict", BASE + 1, {}, {"f": 2})  # an integer where InfluxDB has a float
    points = [reading(i) for i in range(40)] + [bad] + [reading(i) for i in range(40, 80)]
    with Pipeline(tmp_path / "s.sqlite3", {"site": v1(influxd, database)}, batch_size=100) as pipe:
        pipe.put(points)
        pipe.wait(lambda: pipe.shipped("site"), "written")
        health = pipe.shippers["site"].health
    assert health.rejected == 1
    assert health.last_error is not None
    assert "field type conflict" in health.last_error
    assert len(influxd.rows('SELECT "seq" FROM "sensor"', db=database)) == 80


def test_a_body_over_the_servers_limit_is_sent_in_smaller_parts(tmp_path: Path) -> None:
    """influxd answers 413 to a body over its ``max-body-size``: the shipper halves it until it fits."""
    server = InfluxdServer(tmp_path / "influxd", password=secrets.token_urlsafe(12), max_body_size=20_000)
    server.start()
    try:
        with Pipeline(tmp_path / "s.sqlite3", {"site": v1(server)}, batch_size=1000) as pipe:
            pipe.put([reading(i) for i in range(1000)])  # about 90 kB a batch of 1,000
            pipe.wait(lambda: pipe.shipped("site"), "written")
            lines = pipe.confirmed_lines("site")
            health = pipe.shippers["site"].health
        assert lines == [reading(i).line() for i in range(1000)]
        assert max(len(body) for body in pipe.confirmed["site"]) <= 20_000
        assert health.rejected == 0
        assert [r["seq"] for r in server.rows('SELECT "seq" FROM "sensor" ORDER BY time')] == list(range(1000))
    finally:
        server.stop()


def test_wrong_credentials_keep_every_point_and_say_why(tmp_path: Path, influxd: InfluxdServer, database: str) -> None:
    def wrong() -> InfluxClient:
        return V1Client(influxd.url, database, username=influxd.username, password="not-the-password")

    with Pipeline(tmp_path / "s.sqlite3", {"site": wrong}) as pipe:
        pipe.put([raised(1), reading(2)])
        shipper = pipe.shippers["site"]
        pipe.wait(lambda: shipper.health.failures >= 2 and shipper.health.waiting == 2, "failing, kept")
        health = shipper.health
    assert health.connected is False
    assert health.last_error is not None
    assert "401" in health.last_error
    assert "credentials" in health.last_error
    assert influxd.rows('SELECT * FROM "alarm"', db=database) == []


def test_the_outbox_at_its_limit_drops_telemetry_never_an_alarm_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = InfluxdServer(tmp_path / "influxd", password=secrets.token_urlsafe(12))
    server.start()
    server.stop()  # known port, users and database; nobody answers
    try:
        with Pipeline(tmp_path / "s.sqlite3", {"site": v1(server)}, limit=100) as pipe:
            points = [raised(i) if i % 5 == 0 else reading(i) for i in range(300)]  # 60 alarms, 240 readings
            pipe.put(points)
            assert pipe.writer.flush()
            assert pipe.writer.health.influx_dropped == 200
            assert "the InfluxDB outbox is full" in caplog.text
            server.start()
            pipe.wait(lambda: pipe.shipped("site"), "written")
            lines = pipe.confirmed_lines("site")
        newest = set([i for i in range(300) if i % 5][-40:])
        assert lines == [p.line() for i, p in enumerate(points) if i % 5 == 0 or i in newest], (
            "sent oldest first: every alarm point and the newest readings, in the order they were made"
        )
        alarms = server.rows('SELECT "alarm_id" FROM "alarm"')
        assert sorted(r["alarm_id"] for r in alarms) == sorted(f"1-{i}" for i in range(0, 300, 5))
        kept = [r["seq"] for r in server.rows('SELECT "seq" FROM "sensor" ORDER BY time')]
        assert kept == [i for i in range(300) if i % 5][-40:], "the newest readings are kept"
    finally:
        server.stop()


def test_two_targets_each_at_their_own_pace(tmp_path: Path, influxd: InfluxdServer, database: str) -> None:
    """The city's InfluxDB is away: the site's gets everything meanwhile; the city's gets it all when back."""
    city = InfluxdServer(tmp_path / "city", password=secrets.token_urlsafe(12))
    city.start()
    city.stop()
    try:
        targets = {"site": v1(influxd, database), "city": v1(city)}
        with Pipeline(tmp_path / "s.sqlite3", targets, batch_size=100) as pipe:
            pipe.put([reading(i) for i in range(500)])
            pipe.wait(lambda: pipe.shipped("site"), "the site's written")
            # The city's shipper has tried (and failed) by itself: its first attempt may come after the site's.
            pipe.wait(lambda: pipe.shippers["city"].health.failures > 0, "the city's first attempt failed")
            assert pipe.shippers["city"].health.connected is False
            assert pipe.writer.health.influx_rows == 500, "kept for the city"
            city.start()
            pipe.wait(lambda: pipe.shipped("city"), "the city's written")
            pipe.wait(lambda: pipe.writer.health.influx_rows == 0, "deleted once both have them")
        assert len(city.rows('SELECT "seq" FROM "sensor"')) == 500
        assert len(influxd.rows('SELECT "seq" FROM "sensor"', db=database)) == 500
    finally:
        city.stop()


# ------------------------------------------------------------------------------------------ the gateway


def gateway_settings(endpoint: BrokerEndpoint, server: InfluxdServer, **influx: Any) -> Settings:
    data: dict[str, Any] = {
        "site": {"id": f"t-{secrets.token_hex(4)}", "label": "Test site"},
        "mqtt": {"host": endpoint.host, "port": endpoint.port, "stats_interval_s": 0.2, "reconnect_max_s": 0.5},
        "rooms": [
            {
                "id": "baby",
                "label": "Babies",
                "grace_s": 0,
                "cribs": [{"id": f"c-{i}", "label": f"Crib {i}", "sensor_id": f"s-{i}"} for i in (1, 2)],
            }
        ],
        "influx": {
            "targets": [{"name": "site", "url": server.url, "database": server.database, "username": server.username}],
            "flush_interval_s": 0.05,
            "retry_min_s": 0.05,
            "retry_max_s": 0.2,
            **influx,
        },
    }
    env = {
        "CRIBWATCH_MQTT_USERNAME": endpoint.username or "",
        "CRIBWATCH_MQTT_PASSWORD": endpoint.password or "",
        "CRIBWATCH_STATE_DIR": os.environ["CRIBWATCH_STATE_DIR"],
        "CRIBWATCH_MQTT_CLIENT_ID_IS_USERNAME": "false",  # a test broker without the client-id lock
        influx_env("site", "password"): server.password,
    }
    return settings_from_mapping(data, env=env)


async def until(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT_S
    while not (found := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {WAIT_S} s")
        await asyncio.sleep(0.05)
    return found


async def test_a_gateway_restart_with_a_full_outbox_resumes_the_backfill(
    tmp_path: Path, mqtt_endpoint: BrokerEndpoint
) -> None:
    """influxd is away while the gateway takes 3,000 readings and an alarm (the outbox holds 2,000): the gateway
    stops with its outbox full, starts again, and backfills it all once influxd is back; its stats say what was
    dropped."""
    server = InfluxdServer(tmp_path / "influxd", password=secrets.token_urlsafe(12))
    server.start()
    server.stop()
    settings = gateway_settings(mqtt_endpoint, server, outbox_max_points=2000)
    first = Gateway(settings, pin_factory=MockFactory())
    task = asyncio.create_task(first.run())
    try:
        await until(first.ready.is_set, "the first gateway running")
        now = time.monotonic()
        for seq in range(1, 3001):
            first.submit(
                TelemetryReading("s-2", 1, seq, BASE, 80, -60, "1.0.0", seq, 30.0, observed_at=now - 4 + seq * 0.001)
            )
        first.submit(LatchReading("s-1", LatchState.OPEN, 1, 3001, BASE, Source.MQTT, observed_at=time.monotonic()))
        await asyncio.to_thread(first.writer.flush, WAIT_S)
        stats = await until(
            lambda: (s := first.stats_payload()).influx and s.influx[0].failures and s.influx[0].dropped > 1000 and s,
            "failing, and the outbox at its limit dropping the oldest readings",
        )
        assert stats.influx[0].connected is False
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    store = Store.open(settings.store_path, site_id=settings.site.id)
    waiting = store.influx_rows()
    store.close()
    assert 2000 <= waiting <= 2010, "the outbox on disk, full, across the restart"

    await asyncio.to_thread(server.start)
    try:
        second = Gateway(settings, pin_factory=MockFactory())
        task = asyncio.create_task(second.run())
        try:
            await until(second.ready.is_set, "the second gateway running")
            stats = await until(
                lambda: (s := second.stats_payload()).influx and s.influx[0].sent >= waiting and s, "the backfill"
            )
            assert stats.influx[0].connected is True
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        alarms = server.rows('SELECT * FROM "alarm"')
        # The alarm's life: raised in the first run; the second run repeats the step its chain had reached.
        assert [(a["event"], a["crib"], a["kind"]) for a in alarms][:1] == [("raised", "c-1", "crib_open")]
        assert {(a["event"], a["crib"]) for a in alarms[1:]} <= {("escalated", "c-1"), ("repeated", "c-1")}
        seqs = sorted(r["seq"] for r in server.rows('SELECT "seq" FROM "sensor"'))  # influxd sorts by time
        assert seqs[-1] == 3000, "the newest readings are kept"
        assert len(seqs) == len(set(seqs)) >= 1900
        latch = server.rows('SELECT "open" FROM "latch"')
        assert [r["open"] for r in latch] == [1]
    finally:
        await asyncio.to_thread(server.stop)


async def test_an_influxdb_that_hangs_never_holds_up_an_alarm(tmp_path: Path, mqtt_endpoint: BrokerEndpoint) -> None:
    """A server that takes the connection and never answers: the shipper waits on it, the alarm does not."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(conn)  # never answered

    threading.Thread(target=accept, daemon=True).start()
    hung = InfluxdServer(tmp_path / "never-started", port=listener.getsockname()[1])
    settings = gateway_settings(mqtt_endpoint, hung)
    settings = settings.model_copy(
        update={"influx": settings.influx.model_copy(update={"targets": (settings.influx.targets[0].model_copy(
            update={"timeout_s": 60.0}),)})}  # type: ignore[union-attr]
    )  # fmt: skip
    from gateway.domain.vocab import AlarmEventType, AlarmKind
    from gateway.protocol import Topics
    from tests.test_gateway_integration import sensor, staff_device

    topics = Topics(settings.site.id)
    gateway = Gateway(settings, pin_factory=MockFactory())
    task = asyncio.create_task(gateway.run())
    try:
        async with staff_device(mqtt_endpoint, topics) as staff, sensor(mqtt_endpoint, topics, "s-1") as s1:
            await until(gateway.mqtt.connected.is_set, "connected")
            await until(lambda: accepted, "the shipper's write hangs on the server")
            await s1.open()
            event = await staff.event("c-1", AlarmKind.CRIB_OPEN, AlarmEventType.RAISED)
            assert event.crib == "c-1"
            health = gateway.influx.health()[0] if gateway.influx else None
            assert health is not None
            assert health.sent == 0, "the write still hangs"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        listener.close()
        for conn in accepted:
            conn.close()
