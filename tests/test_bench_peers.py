"""bench.peers and bench.throughput: goals, reports, the load generator's heartbeats, the Node-RED flow, and small
real runs end to end. As in test_bench.py, nothing here checks how fast anything was."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import bench.peers
import bench.throughput
from bench import nodered
from bench.junk import load_heartbeat
from bench.latency import load_sensor_ids, site_toml
from gateway.domain.events import TelemetryReading
from gateway.protocol import SensorChannel, Topics
from gateway.protocol.codec import decode_inbound, screen_inbound

REPO = Path(__file__).resolve().parent.parent


# -- peers: goals and report -------------------------------------------------------------------------


def scale_with(floor: list[float], gateway: list[float], peer: list[float] | None) -> bench.peers.Scale:
    targets = [bench.peers.FLOOR, bench.peers.GATEWAY, *([bench.peers.NODE_RED] if peer is not None else [])]
    scale = bench.peers.Scale(100, targets)
    scale.latencies = {bench.peers.FLOOR: floor, bench.peers.GATEWAY: gateway}
    scale.by_round = {bench.peers.FLOOR: [floor[:2], floor[2:]], bench.peers.GATEWAY: [gateway[:2], gateway[2:]]}
    if peer is not None:
        scale.latencies[bench.peers.NODE_RED] = peer
        scale.by_round[bench.peers.NODE_RED] = [peer]
    return scale


def test_peer_goals_met_and_missed_say_by_how_much() -> None:
    met = bench.peers.goals(scale_with([1.0, 1.0, 1.0, 1.0], [1.1, 1.1, 1.1, 1.1], [2.0, 2.0, 2.0, 2.0]))
    assert [g.met for g in met] == [True, True, True]
    missed = bench.peers.goals(scale_with([1.0, 1.0, 1.0, 1.0], [1.5, 1.5, 1.5, 2.0], [1.2, 1.2, 1.2, 1.2]))
    assert [g.met for g in missed] == [False, False, False]
    assert "missed by 0.300 ms" in missed[0].figure  # p50 1.5 against 1.0 + 0.2
    assert "missed by 0.800 ms" in missed[1].figure  # p99 2.0 against 1.2 x 1.0
    assert len(bench.peers.goals(scale_with([1.0] * 4, [1.1] * 4, None))) == 2  # no peer, no comparison


def test_peers_report_as_json_and_table() -> None:
    results = bench.peers.Results(bench.peers.Options(scales=(100,), samples=4, rounds=2))
    scale = scale_with([1.0, 1.2, 1.4, 1.6], [1.3, 1.5, 1.7, 1.9], [2.0, 2.1, 2.2, 2.3])
    scale.lost[bench.peers.NODE_RED] = 1
    results.scales.append(scale)
    out = bench.peers.to_json(results)
    json.dumps(out)
    entry = out["scales"][0]
    assert (entry["gateway_p50_ms"], entry["floor_p50_ms"], entry["node-red_lost"]) == (1.5, 1.2, 1)
    assert entry["gateway_p50_by_round_ms"] == [1.3, 1.7]
    assert [g["met"] for g in entry["goals"]] == [False, True, True]
    table = bench.peers.to_table(results)
    assert "goal: gateway p50 <= floor p50 + 0.2 ms: NOT MET" in table
    assert "goal: gateway ahead of Node-RED at p50 and p99: MET" in table
    assert not results.ok  # a lost sample


# -- throughput: the best step and the report --------------------------------------------------------


def step(rate: int, achieved: float, alarm: list[float], floor: list[float], *, caught_up: float | None = 0.1):
    s = bench.throughput.Step(rate, sent=int(achieved * 5), achieved=achieved, accepted=int(achieved * 5))
    s.alarm, s.floor, s.caught_up_s, s.cpu_pct = alarm, floor, caught_up, 50.0
    return s


def test_throughput_best_rate_is_the_highest_within_2x_the_floor_with_everything_taken() -> None:
    results = bench.throughput.Results(bench.throughput.Options(rates=(1000, 5000, 10000)))
    results.steps = [
        step(0, 0.0, [1.0], [1.0]),
        step(1000, 1000.0, [1.5], [1.0]),
        step(5000, 4990.0, [1.9], [1.0]),
        step(10000, 9000.0, [1.9], [1.0], caught_up=None),  # never caught up: not within the goal
        step(15000, 9500.0, [9.0], [1.0]),  # alarm p99 9 x the floor
    ]
    best = results.best
    assert best is not None
    assert best.rate == 5000
    out = bench.throughput.to_json(results)
    assert (out["best_rate_per_s"], out["goal_met"]) == (4990.0, False)
    assert [s["within_goal"] for s in out["steps"]] == [True, True, True, False, False]
    table = bench.throughput.to_table(results)
    assert "4990/s; goal 10000/s: NOT MET (missed by 5010/s)" in table


def test_load_heartbeats_are_valid_heartbeats_of_the_load_sensors_in_turn() -> None:
    topics = Topics("bench")
    sensors = load_sensor_ids(3)
    seen: dict[str, list[int]] = {}
    for n in range(7):
        sensor, payload = load_heartbeat(n, 3, 60.0)
        topic = topics.sensor(sensor, SensorChannel.TELEMETRY)
        screen_inbound(topics, topic, payload, wireless=sensors)
        event = decode_inbound(topics, topic, payload)
        assert isinstance(event, TelemetryReading)
        assert event.interval_s == 60.0
        seen.setdefault(sensor, []).append(event.seq)
    assert seen == {"l-0001": [0, 1, 2], "l-0002": [0, 1], "l-0003": [0, 1]}


def test_the_site_file_has_the_load_sensors_and_the_heartbeat_asked_for() -> None:
    site = tomllib.loads(site_toml(2, "127.0.0.1", 1883, load_sensors=3, heartbeat_s=60.0))
    assert site["alarms"]["heartbeat_interval_s"] == 60.0
    assert [c["sensor_id"] for c in site["rooms"][0]["cribs"]] == ["b-0001", "b-0002", "l-0001", "l-0002", "l-0003"]


# -- the Node-RED flow -------------------------------------------------------------------------------


def test_the_node_red_flow_takes_latch_messages_and_answers_on_the_peer_topic(tmp_path: Path) -> None:
    nodered.prepare(
        tmp_path, host="127.0.0.1", port=1883, username="u", password="p", site_prefix="cribwatch/s", http_port=1880
    )
    flow = json.loads((tmp_path / "flows.json").read_text())
    by_type = {node["type"]: node for node in flow}
    assert by_type["mqtt in"]["topic"] == "cribwatch/s/sensor/+/+"  # every sensor message, as the gateway
    assert by_type["mqtt in"]["qos"] == by_type["mqtt out"]["qos"] == "1"
    assert f'"{nodered.PEER_PREFIX}/"' in by_type["function"]["func"]
    assert json.loads((tmp_path / "flows_cred.json").read_text()) == {
        nodered.BROKER_NODE: {"user": "u", "password": "p"}
    }
    settings = (tmp_path / "settings.js").read_text()
    assert "setNoDelay(true)" in settings
    assert "httpAdminRoot: false" in settings


def test_without_npm_node_red_is_left_out_with_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    found = nodered.find_node()
    assert isinstance(found, str)
    assert "npm" in found


# -- end to end --------------------------------------------------------------------------------------


def _run(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        cwd=REPO,
        check=False,
    )


@pytest.mark.integration
def test_throughput_benchmark_runs_end_to_end_and_the_gateway_takes_the_load() -> None:
    result = _run(
        "bench.throughput", "--rates", "300", "--step", "1.5", "--ramp", "0.3", "--cribs", "3", "--load-sensors", "5",
        "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)
    quiet, loaded = out["steps"]
    assert quiet["rate"] == 0
    assert loaded["rate"] == 300
    assert loaded["sent"] > 0
    assert loaded["caught_up_s"] is not None  # the gateway accepted every load heartbeat
    assert loaded["lost"] == 0
    assert loaded["samples"] > 0
    assert loaded["alarm_p99_ms"] > 0


def _node_red_installed() -> bool:
    return (nodered.cache_dir() / f"node-red-{nodered.NODE_RED_VERSION}" / "node_modules/node-red/red.js").exists()


@pytest.mark.integration
def test_peers_benchmark_runs_end_to_end() -> None:
    """With Node-RED when the bench cache has it (``python -m bench.peers`` installs it with npm; a test does not
    download it), else without it, which must then say why."""
    node_red = not isinstance(nodered.find_node(), str) and _node_red_installed()
    args = ["--scales", "3", "--samples", "4", "--rounds", "2", "--warmup", "1", "--json"]
    result = _run("bench.peers", *args, *([] if node_red else ["--no-node-red"]))
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)
    (entry,) = out["scales"]
    targets = ["floor", "gateway", *(["node-red"] if node_red else [])]
    for target in targets:
        assert entry[f"{target}_n"] == 4, target
        assert entry[f"{target}_lost"] == 0, target
    assert entry["settle_missing"] == 0
    assert (out["node_red_skipped"] is None) == node_red
