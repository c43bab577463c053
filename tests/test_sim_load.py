"""Load mode on a real Mosquitto: a small rate for about 2 s reports an achieved rate near the target, and a
subscriber receives every message it says it sent, on the topics and with the payloads real sensors use."""

from __future__ import annotations

import asyncio
import io
import uuid
from collections import Counter
from dataclasses import replace

import pytest

from devtools.brokers import BrokerEndpoint
from firmware_sim import load
from gateway.mqtt.connection import BrokerAddress, new_client
from gateway.protocol import LatchPayload, SensorChannel, TelemetryPayload, Topics, decode

pytestmark = pytest.mark.integration

WAIT_S = 10.0
SENSORS = 40
RATE = 200.0
DURATION_S = 2.0


def make_plan(endpoint: BrokerEndpoint, **changes: object) -> load.LoadPlan:
    plan = load.LoadPlan(
        topics=Topics(f"load-{uuid.uuid4().hex[:12]}"),
        broker=BrokerAddress(endpoint.host, endpoint.port, endpoint.username, endpoint.password),
        sensor_ids=tuple(f"ld-{n:03d}" for n in range(SENSORS)),
        rate=RATE,
        duration_s=DURATION_S,
        latch_share=0.1,
        connections=2,
        boot=7,
        report_every_s=1.0,
    )
    return replace(plan, **changes)  # type: ignore[arg-type]


async def load_and_count(plan: load.LoadPlan) -> tuple[load.LoadReport, Counter[SensorChannel], str]:
    """Run the load while a subscriber counts every sensor message by channel (checking each payload)."""
    counts: Counter[SensorChannel] = Counter()
    seqs: dict[str, list[int]] = {}
    async with new_client(plan.broker, identifier=f"test-load-{uuid.uuid4().hex[:8]}") as client:
        await client.subscribe(plan.topics.sensor_filter, qos=1)

        async def pump() -> None:
            async for message in client.messages:
                sensor, channel = plan.topics.parse_sensor_topic(message.topic.value)
                assert isinstance(message.payload, bytes)
                if channel is SensorChannel.TELEMETRY:
                    telemetry = decode(TelemetryPayload, message.payload)
                    assert telemetry.boot == plan.boot
                    seqs.setdefault(sensor, []).append(telemetry.seq)
                elif channel is SensorChannel.LATCH:
                    assert decode(LatchPayload, message.payload).boot == plan.boot
                counts[channel] += 1

        task = asyncio.create_task(pump())
        out = io.StringIO()
        try:
            report = await asyncio.to_thread(load.run_load, plan, out)
            expected = {
                SensorChannel.TELEMETRY: report.heartbeats,
                SensorChannel.LATCH: report.latches + len(plan.sensor_ids),  # and each sensor's latch on connect
                SensorChannel.AVAILABILITY: 2 * len(plan.sensor_ids),  # online, then offline at the end
            }
            async with asyncio.timeout(WAIT_S):
                while True:
                    if all(counts[channel] >= n for channel, n in expected.items()):
                        break
                    await asyncio.sleep(0.05)
        finally:
            task.cancel()
            await asyncio.wait([task])
    assert dict(counts) == expected
    for sensor, numbers in seqs.items():  # each sensor's heartbeats in order, from 0, none missing
        assert numbers == list(range(len(numbers))), sensor
    return report, counts, out.getvalue()


async def test_load_reports_the_achieved_rate_and_every_message_arrives(mqtt_endpoint: BrokerEndpoint) -> None:
    plan = make_plan(mqtt_endpoint)
    report, _, out = await load_and_count(plan)
    assert report.errors == 0
    assert report.failed_connections == 0
    assert report.sent == report.heartbeats + report.latches
    assert abs(report.sent - RATE * DURATION_S) <= 0.1 * RATE * DURATION_S
    assert report.latches == pytest.approx(0.1 * report.sent, abs=2)
    assert load.ok(plan, report)
    assert f"{SENSORS} sensors online" in out
    assert "1.0 s: sent" in out  # a progress report on the way
    assert "msg/s achieved (target 200)" in out


async def test_load_from_two_processes(mqtt_endpoint: BrokerEndpoint) -> None:
    plan = make_plan(mqtt_endpoint, processes=2, connections=1, duration_s=1.0)
    report, _, out = await load_and_count(plan)
    assert report.errors == 0
    assert abs(report.sent - RATE) <= 0.1 * RATE
    assert "on 1 connections x 2 process(es)" in out


def test_load_that_cannot_connect_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    from devtools.brokers import free_port

    port = free_port()
    assert load.main(["--sensors", "10", "--rate", "10", "--duration", "1", "--port", str(port)]) == 1
    assert "connections to 127.0.0.1:" in capsys.readouterr().out


def test_load_bad_arguments_exit_2() -> None:
    assert load.main(["--rate", "0"]) == 2
    assert load.main(["--prefix", "Bad "]) == 2
