"""The benchmarks (latency and flood): statistics, plans, site file, the processes' line formats, and small real
runs end to end.

The integration test checks that the benchmark works and reports every sample, never how fast anything was:
these machines are shared, timings and ratios vary from run to run.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import bench.flood
from bench.clock import check_shared, now_ns
from bench.gwtrace import STAGES
from bench.junk import KINDS, junk_payload
from bench.latency import (
    Arrival,
    Arrivals,
    Options,
    Phase,
    Results,
    StaffFeed,
    block_plan,
    sensor_ids,
    site_toml,
    to_json,
    to_table,
)
from bench.relay import sensor_id_of
from bench.stats import percentile, ratio, summarize
from gateway.domain.events import AckRequest
from gateway.domain.vocab import AlarmEventType, AlarmKind, LatchState
from gateway.protocol import (
    AlarmEventPayload,
    GatewayAvailabilityPayload,
    LatchPayload,
    ProtocolError,
    Topics,
    TriggerPayload,
    encode,
)
from gateway.protocol.codec import decode_inbound, screen_inbound
from gateway.settings import settings_from_mapping

REPO_ROOT = Path(__file__).resolve().parent.parent

# -- statistics -------------------------------------------------------------------------------------


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == 50
    assert percentile(values, 90) == 90
    assert percentile(values, 99) == 99
    assert percentile(values, 99.5) == 100
    assert percentile(values, 100) == 100
    assert percentile(values, 0) == 1


def test_percentile_is_always_a_measured_value() -> None:
    values = [1.0, 2.0, 10.0, 20.0]
    assert percentile(values, 50) == 2.0  # rank ceil(0.5 * 4) = 2, no interpolation to 6.0
    assert percentile(values, 51) == 10.0
    assert percentile(values, 99) == 20.0
    assert percentile([7.5], 99) == 7.5


def test_percentile_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match=r"within 0\.\.100"):
        percentile([1.0], 101)
    with pytest.raises(ValueError, match=r"within 0\.\.100"):
        percentile([1.0], -1)


def test_summarize_sorts_and_describes() -> None:
    s = summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (s.n, s.min, s.max, s.mean) == (5, 1.0, 5.0, 3.0)
    assert (s.p50, s.p90, s.p99) == (3.0, 5.0, 5.0)


def test_summarize_of_1000_samples_picks_the_990th_for_p99() -> None:
    values = [float(v) for v in range(1000, 0, -1)]  # 1000..1, unsorted
    s = summarize(values)
    assert (s.p50, s.p90, s.p99, s.max) == (500.0, 900.0, 990.0, 1000.0)


def test_summarize_refuses_no_samples() -> None:
    with pytest.raises(ValueError, match="no samples"):
        summarize([])


def test_ratio() -> None:
    assert ratio(3.0, 2.0) == 1.5
    assert ratio(1.0, 0.0) == math.inf


# -- plan, site file, relay topic --------------------------------------------------------------------


@pytest.mark.parametrize(("samples", "blocks"), [(1000, 10), (30, 10), (7, 10), (3, 10), (1, 2), (10, 3)])
def test_block_plan_alternates_floor_first_and_gives_each_phase_its_samples(samples: int, blocks: int) -> None:
    plan = block_plan(samples, blocks)
    assert plan[0][0] is Phase.FLOOR
    assert [phase for phase, _ in plan] == [Phase.FLOOR, Phase.ALERT] * (len(plan) // 2)
    for phase in Phase:
        assert sum(size for p, size in plan if p is phase) == samples
    assert all(size > 0 for _, size in plan)
    sizes = [size for _, size in plan]
    assert max(sizes) - min(sizes) <= 1


def test_site_file_is_a_valid_site_with_grace_0_and_one_sensor_per_crib() -> None:
    text = site_toml(12, "127.0.0.1", 18830)
    settings = settings_from_mapping(
        tomllib.loads(text), env={"CRIBWATCH_MQTT_USERNAME": "u", "CRIBWATCH_MQTT_PASSWORD": "p"}
    )
    assert len(settings.rooms) == 1
    assert settings.rooms[0].grace_s == 0
    assert [crib.sensor_id for _, crib in settings.cribs()] == sensor_ids(12)
    assert sensor_ids(2) == ["b-0001", "b-0002"]
    assert settings.alarms.heartbeat_interval_s == 1.0
    assert (settings.mqtt.host, settings.mqtt.port) == ("127.0.0.1", 18830)
    assert "password" not in text


def test_relay_takes_the_sensor_id_from_the_topic() -> None:
    assert sensor_id_of("cribwatch/bench/sensor/b-0007/latch") == "b-0007"
    assert sensor_id_of("single") == "single"


# -- arrivals ---------------------------------------------------------------------------------------


async def test_arrivals_before_and_after_the_wait_and_a_timeout() -> None:
    arrivals = Arrivals()
    early = (Arrival.RELAYED, "b-0001", 1, 3)
    arrivals.record(early, 1.25)
    assert await arrivals.wait(early, 0.5) == 1.25

    late = (Arrival.RAISED, "b-0001", 1, 3)
    waiter = asyncio.ensure_future(arrivals.wait(late, 1.0))
    await asyncio.sleep(0)
    arrivals.record(late, 2.5)
    assert await waiter == 2.5

    assert await arrivals.wait((Arrival.RESOLVED, "b-0001", 1, 3), 0.01) is None
    arrivals.record((Arrival.RELAYED, "b-0002", 1, 0), 3.0)
    assert arrivals.clear() == 1
    assert arrivals.clear() == 0


# -- processes: one clock, line formats --------------------------------------------------------------


def test_the_clock_is_system_wide_monotonic_and_a_per_process_clock_is_caught() -> None:
    before = now_ns()
    child = subprocess.run(
        [sys.executable, "-c", "from bench.clock import now_ns; print(now_ns())"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    check_shared(int(child.stdout), before, now_ns(), "child")  # another process, the same clock
    with pytest.raises(RuntimeError, match="clock"):
        check_shared(12_345, before, now_ns(), "child")  # a clock that started at 0 in the child


def _staff_line(topic: str, payload: bytes, at: int) -> str:
    return json.dumps({"t": at, "topic": topic, "payload": payload.decode()})


def _alarm(event: AlarmEventType, sensor: str, boot: int, seq: int) -> bytes:
    return encode(
        AlarmEventPayload(
            seq=1, gw_run=1, event=event, alarm_id="a-1", kind=AlarmKind.CRIB_OPEN, priority="high", site="bench",
            room="room", crib="c-0001", room_label="R", crib_label="C", ts=1.0, raised_at=1.0,
            trigger=TriggerPayload(sensor=sensor, boot=boot, seq=seq),
        )
    )  # fmt: skip


async def test_staff_feed_files_relay_copies_alarms_availability_and_stats() -> None:
    topics = Topics("bench")
    feed = StaffFeed(topics)
    latch = encode(LatchPayload(boot=1, seq=4, ts=1.0, state=LatchState.OPEN))
    feed.take(_staff_line("bench/relay/b-0001", latch, 100))
    feed.take(_staff_line(topics.alarm("room"), _alarm(AlarmEventType.RAISED, "b-0001", 1, 4), 200))
    feed.take(_staff_line(topics.alarm("room"), _alarm(AlarmEventType.RESOLVED, "b-0001", 1, 4), 300))
    feed.take(_staff_line(topics.gateway_availability, encode(GatewayAvailabilityPayload(state="online", gw_run=1)), 1))
    stats = asyncio.ensure_future(feed.next_stats())
    await asyncio.sleep(0)
    feed.take(_staff_line(topics.gateway_stats, b'{"rejected": {"bad_json": 3}}', 400))
    assert (await stats)["rejected"] == {"bad_json": 3}
    assert feed.stats_received == 1
    assert feed.gateway_online.is_set()
    assert await feed.arrivals.wait((Arrival.RELAYED, "b-0001", 1, 4), 0.1) == 100
    assert await feed.arrivals.wait((Arrival.RAISED, "b-0001", 1, 4), 0.1) == 200
    assert await feed.arrivals.wait((Arrival.RESOLVED, "b-0001", 1, 4), 0.1) == 300
    feed.take(_staff_line("elsewhere", b"{}", 500))
    assert feed.arrivals.unexpected == {"other_topic": 1}


# -- flood: junk, plan, output -------------------------------------------------------------------------

JUNK_REASON = {"ack": None, "bad_json": "bad_json", "unknown_sensor": "unknown_sensor", "too_large": "too_large"}


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_of_junk_is_rejected_by_the_gateway_under_its_own_reason(kind: str) -> None:
    topics = Topics("bench")
    topic = bench.flood.junk_topic(topics, kind, 3)
    payload = junk_payload(kind, 7)
    assert junk_payload(kind, 8) != payload or kind == "too_large"
    reason = JUNK_REASON[kind]
    if reason is None:  # a well-formed ack for an alarm that does not exist: the core rejects it
        screen_inbound(topics, topic, payload, wireless=sensor_ids(3))
        assert isinstance(decode_inbound(topics, topic, payload), AckRequest)
        return
    with pytest.raises(ProtocolError) as info:  # before any parsing
        screen_inbound(topics, topic, payload, wireless=sensor_ids(3))
    assert info.value.reason == reason


def test_flood_plan_alternates_no_flood_and_each_kind() -> None:
    options = bench.flood.Options(kinds=("ack", "bad_json"), samples=5, blocks=2)
    plan = bench.flood.plan(options)
    assert [phase for phase, _ in plan] == ["quiet", "flood_ack", "flood_bad_json"] * 2
    for phase in options.phases:
        assert sum(n for p, n in plan if p == phase) == 5


def test_flood_json_and_table_from_results() -> None:
    options = bench.flood.Options(kinds=("ack",), samples=3)
    results = bench.flood.Results(options)
    results.alarm["quiet"] = [1.0, 2.0, 3.0]
    results.alarm["flood_ack"] = [2.0, 4.0]
    results.relay["quiet"] = [1.0]
    results.lost["flood_ack"] = 1
    report = bench.flood.FloodReport("ack", "cribwatch/bench/ack", sent=400, acked=400, seconds=0.1)
    report.rejected["ack_unknown_alarm"] = 390
    report.caught_up_s = [0.5, None]
    results.floods["ack"] = report
    out = bench.flood.to_json(results)
    json.dumps(out)
    assert (out["quiet_alarm_p50_ms"], out["flood_ack_alarm_max_ms"], out["flood_ack_alarm_lost"]) == (2.0, 4.0, 1)
    assert out["flood_ack_relay_p50_ms"] is None
    assert (out["flood_ack_rate"], out["flood_ack_unhandled"], out["flood_ack_blocks_not_caught_up"]) == (4000.0, 10, 1)
    assert out["flood_ack_rejected"] == {"ack_unknown_alarm": 390}
    assert not results.ok
    table = bench.flood.to_table(results)
    assert "alarm, flood ack" in table
    assert "4000 msg/s achieved" in table
    assert "ack_unknown_alarm 390" in table


# -- output -----------------------------------------------------------------------------------------

REQUIRED_KEYS = ("alert_p50_ms", "alert_p99_ms", "floor_p50_ms", "floor_p99_ms", "ratio_p99")


def test_json_and_table_from_results() -> None:
    results = Results(Options(cribs=3, samples=4, seed=1, json=True))
    results.latencies[Phase.ALERT] = [2.0, 3.0, 4.0, 5.0]
    results.latencies[Phase.FLOOR] = [1.0, 2.0, 2.0, 4.0]
    results.lost[Phase.ALERT] = 1
    out = to_json(results)
    assert out["alert_p50_ms"] == 3.0
    assert out["alert_p99_ms"] == 5.0
    assert out["floor_p50_ms"] == 2.0
    assert out["floor_p99_ms"] == 4.0
    assert out["ratio_p99"] == 1.25
    assert out["ratio_p50"] == 1.5
    assert (out["alert_lost"], out["floor_lost"], out["cribs"], out["samples"]) == (1, 0, 3, 4)
    assert out["alert_max_ms"] == 5.0
    assert out["floor_max_ms"] == 4.0
    json.dumps(out)  # serialisable as is
    assert not results.ok
    table = to_table(results)
    assert "p99" in table
    assert "MET" in table


def test_json_without_samples_has_nulls_not_a_crash() -> None:
    results = Results(Options(cribs=1, samples=1, seed=1, json=True))
    results.lost[Phase.ALERT] = 1
    results.lost[Phase.FLOOR] = 1
    out = to_json(results)
    assert all(out[key] is None for key in REQUIRED_KEYS)
    assert "-" in to_table(results)


# -- the real thing, small ---------------------------------------------------------------------------


def _run_bench(*args: str, module: str = "bench.latency") -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.mark.integration
def test_benchmark_runs_end_to_end_and_loses_nothing() -> None:
    result = _run_bench("--cribs", "5", "--samples", "30", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout  # one JSON object and nothing else on stdout
    out = json.loads(lines[0])
    for key in (*REQUIRED_KEYS, "alert_max_ms", "floor_max_ms", "ratio_p50"):
        assert isinstance(out[key], float | int), (key, out[key])
        assert out[key] > 0, (key, out[key])
    assert out["alert_lost"] == 0
    assert out["floor_lost"] == 0
    assert out["settle_missing"] == 0
    assert (out["alert_n"], out["floor_n"]) == (30, 30)
    assert (out["cribs"], out["samples"]) == (5, 30)
    assert out["complete"] is True
    for key in ("alert_minus_floor_p50_ms", "alert_minus_floor_p99_ms"):
        assert isinstance(out[key], float | int), (key, out[key])


@pytest.mark.integration
def test_flood_benchmark_runs_end_to_end_and_the_gateway_counts_the_junk() -> None:
    result = _run_bench(
        "--cribs", "3", "--samples", "6", "--blocks", "1", "--warmup", "1", "--rate", "300", "--ramp", "0.2",
        "--kind", "ack", "--kind", "unknown_sensor", "--json", module="bench.flood",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    out = json.loads(lines[0])
    for phase in ("quiet", "flood_ack", "flood_unknown_sensor"):
        assert out[f"{phase}_alarm_n"] == 6, phase
        assert out[f"{phase}_alarm_lost"] == 0, phase
        assert out[f"{phase}_alarm_p50_ms"] > 0, phase
        assert out[f"{phase}_alarm_p99_ms"] > 0, phase
        assert out[f"{phase}_relay_p99_ms"] > 0, phase
    for kind, reason in (("ack", "ack_unknown_alarm"), ("unknown_sensor", "unknown_sensor")):
        assert out[f"flood_{kind}_sent"] > 0, kind
        assert out[f"flood_{kind}_rate"] > 0, kind
        assert out[f"flood_{kind}_rejected"] == {reason: out[f"flood_{kind}_sent"]}, kind
        assert out[f"flood_{kind}_unhandled"] == 0, kind
    assert out["complete"] is True


@pytest.mark.integration
def test_gateway_trace_follows_every_raised_alarm_along_the_path(tmp_path: Path) -> None:
    trace = tmp_path / "trace.json"
    result = _run_bench("--cribs", "3", "--samples", "10", "--warmup", "2", "--json", "--gateway-trace", str(trace))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(trace.read_text())
    assert report["stages"] == list(STAGES)
    # every phase raises an alarm on every sample: (2 warm-up + 10) x 2 phases
    assert report["alarms_raised"] == 24
    assert report["alarms_traced"] == 24  # every stage stamped for every one of them
    for before, after in itertools.pairwise(STAGES):
        stage = report["path"][f"{before} -> {after}"]
        assert stage["n"] == 24
        assert stage["p50_us"] >= 0, (before, after)  # the stages come in this order
    assert report["path"]["TOTAL paho_on_message -> socket_write"]["n"] == 24
    calls = report["calls"]
    for name in ("MqttLink._on_message", "CribMonitor.decide[LatchReading]", "gateway.mqtt.connection.publish_now"):
        assert calls[name]["n"] > 0, name
    assert calls["paho.Client._packet_write[packets queued]"]["n"] > 0
