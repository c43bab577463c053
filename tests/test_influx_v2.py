"""The InfluxDB 2.x write path over the wire: influxdb-client's SYNCHRONOUS write to a real server that speaks
``/api/v2/write`` (Debian's ``victoria-metrics``), read back through that server's own export API. And the trap
this path must not fall into: a server that answers the write with an error (influxd 1.x has no /api/v2/write:
404) leaves every point in the outbox, counted, where the client's batching API would drop the batch."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devtools.influx import InfluxdServer, VictoriaMetricsServer, find_victoria_metrics
from gateway.influx import schema
from gateway.influx.client import InfluxClient, V2Client, WriteFailedError
from gateway.settings import ConfigError, influx_env, settings_from_mapping
from tests.test_influx_v1 import BASE, Pipeline, influxd, need, raised, reading  # noqa: F401 - the fixture

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def victoria(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VictoriaMetricsServer]:
    need(find_victoria_metrics(), "victoria-metrics")
    with VictoriaMetricsServer(tmp_path_factory.mktemp("vm")) as server:
        yield server


def v2(url: str) -> Callable[[], InfluxClient]:
    return lambda: V2Client(url, org="city", bucket="cribwatch", token=secrets.token_hex(8), timeout_s=5.0)


def test_the_2x_write_path_over_the_wire(tmp_path: Path, victoria: VictoriaMetricsServer) -> None:
    points = [reading(i, sensor="s-v2") for i in range(1000)] + [raised(1000)]
    with Pipeline(tmp_path / "s.sqlite3", {"city": v2(victoria.url)}, batch_size=300) as pipe:
        pipe.put(points)
        pipe.wait(lambda: pipe.shipped("city"), "written")
        health = pipe.shippers["city"].health
        sent = pipe.confirmed_lines("city")
    assert sent == [p.line() for p in points], "sent oldest first (the server's export is sorted by time anyway)"
    assert health.connected is True
    assert health.sent == 1001
    [seq] = victoria.export('sensor_seq{sensor="s-v2"}')
    assert seq["values"] == list(range(1000))
    assert seq["timestamps"] == [round((BASE + i * 0.001) * 1000) for i in range(1000)]  # the events' times (ms)
    [level] = victoria.export('alarm_level{event="raised"}')
    assert level["metric"]["crib"] == "c-1"
    assert level["metric"]["priority"] == "high"


def test_a_2x_write_the_server_answers_with_an_error_keeps_every_point(
    tmp_path: Path,
    influxd: InfluxdServer,  # noqa: F811 - the session's fixture
) -> None:
    """influxdb-client's batching API logs "The batch item wasn't processed successfully" and drops the batch;
    the synchronous write raises, and the points wait."""
    with pytest.raises(WriteFailedError, match="404"):
        v2(influxd.url)().write(reading(0).line().encode())
    with Pipeline(tmp_path / "s.sqlite3", {"city": v2(influxd.url)}, batch_size=50) as pipe:
        pipe.put([reading(i) for i in range(120)])
        shipper = pipe.shippers["city"]
        pipe.wait(lambda: shipper.health.failures >= 2 and shipper.health.waiting == 120, "failing, all kept")
        health = shipper.health
        assert pipe.writer.health.influx_rows == 120
    assert health.connected is False
    assert health.sent == 0
    assert health.last_error is not None
    assert "404" in health.last_error


def test_a_v2_target_needs_org_bucket_and_a_token_from_the_environment() -> None:
    site = {
        "site": {"id": "kids-f", "label": "Kids F"},
        "rooms": [{"id": "r", "label": "R", "cribs": [{"id": "c", "label": "C", "sensor_id": "s"}]}],
    }
    env = {"CRIBWATCH_MQTT_USERNAME": "gw", "CRIBWATCH_MQTT_PASSWORD": "pw"}
    target = {"name": "city", "api": "v2", "url": "https://influx.city.example", "org": "city", "bucket": "kdv"}
    with pytest.raises(ConfigError, match="CRIBWATCH_INFLUX_CITY_TOKEN"):
        settings_from_mapping(site | {"influx": {"targets": [target]}}, env=env)
    with pytest.raises(ConfigError, match="secrets do not belong in the file; set CRIBWATCH_INFLUX_CITY_TOKEN"):
        settings_from_mapping(site | {"influx": {"targets": [target | {"token": "x"}]}}, env=env)
    with pytest.raises(ConfigError, match="api v2 needs org and bucket"):
        settings_from_mapping(
            site | {"influx": {"targets": [{k: v for k, v in target.items() if k != "bucket"}]}}, env=env
        )
    with pytest.raises(ConfigError, match="credentials do not belong in the URL"):
        settings_from_mapping(site | {"influx": {"targets": [target | {"url": "http://u:p@h:8086"}]}}, env=env)
    settings = settings_from_mapping(
        site | {"influx": {"targets": [target]}}, env=env | {influx_env("city", "token"): "t0k3n"}
    )
    assert settings.influx is not None
    assert settings.influx.targets[0].token is not None
    assert settings.influx.targets[0].token.get_secret_value() == "t0k3n"
    assert "t0k3n" not in repr(settings)


def test_a_site_without_influx_runs_without_it() -> None:
    site = {
        "site": {"id": "kids-f", "label": "Kids F", "demo": True},
        "rooms": [{"id": "r", "label": "R", "cribs": [{"id": "c", "label": "C", "sensor_id": "s"}]}],
    }
    assert settings_from_mapping(site, env={}).influx is None
    demo = site | {"influx": {"targets": [{"url": "http://127.0.0.1:8086", "database": "cw"}]}}
    settings = settings_from_mapping(demo, env={})  # demo mode: an InfluxDB without credentials is allowed
    assert settings.influx is not None
    assert schema.MEASUREMENTS  # the schema module is there for it


def test_check_config_warns_of_an_influx_target_without_credentials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.cli import main

    for var in ("CRIBWATCH_INFLUX_SITE_PASSWORD", "CRIBWATCH_MQTT_USERNAME", "CRIBWATCH_MQTT_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    site = tmp_path / "site.toml"
    site.write_text(
        '[site]\nid = "kids-f"\nlabel = "Kids F"\n\n[influx]\n[[influx.targets]]\nurl = "http://127.0.0.1:8086"\n'
        'database = "cw"\nusername = "gw"\n\n[[rooms]]\nid = "r"\nlabel = "R"\n'
        '[[rooms.cribs]]\nid = "c"\nlabel = "C"\nsensor_id = "s"\n'
    )
    assert main(["check-config", str(site)]) == 0
    err = capsys.readouterr().err
    assert "influx target 'site' has no credentials here" in err
    assert "CRIBWATCH_INFLUX_SITE_PASSWORD" in err


def test_the_commented_influx_section_of_the_example_site_is_valid() -> None:
    import tomllib

    lines = (Path(__file__).resolve().parent.parent / "examples" / "kids-f.toml").read_text().splitlines()
    start = lines.index("# [influx]")
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("#"))
    block = [line.removeprefix("#").removeprefix(" ") for line in lines[start:end]]
    text = "\n".join(lines[:start] + lines[end:]) + "\n" + "\n".join(block) + "\n"
    env = {
        "CRIBWATCH_MQTT_USERNAME": "gw",
        "CRIBWATCH_MQTT_PASSWORD": "pw",
        influx_env("site", "password"): "p",
        influx_env("city", "token"): "t",
    }
    settings = settings_from_mapping(tomllib.loads(text), env=env)
    assert settings.influx is not None
    assert [(t.name, t.api) for t in settings.influx.targets] == [("site", "v1"), ("city", "v2")]
