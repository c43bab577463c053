"""The benchmarks' simulated sensors, in a process of their own, opening and closing latches on command.

``python -m bench.sensors --port P --site bench --cribs 100``

N :class:`firmware_sim.sensor.SimulatedSensor` s (ids ``b-0001``...; each its own MQTT connection, a heartbeat
every ``--interval`` seconds from connect to the end; their starts spread evenly over one interval, so their
heartbeats are spread as those of independent sensors are). It prints ``{"ready": true, "t": ...}`` once
all are connected, then takes one command per line on stdin::

    <request id> open <sensor id>      ->  {"id": <request id>, "sid": ..., "boot": ..., "seq": ..., "t": ...}
    <request id> close <sensor id>     ->  the same for the closing message

``t`` (:func:`bench.clock.now_ns`, the system-wide monotonic clock) is taken just before the latch message
is written to the socket, and the write happens at once, in the same call (the way the gateway writes its
alarms, :func:`gateway.mqtt.connection.publish_now`), not one or two event-loop iterations later as an
aiomqtt ``publish`` would: the measured path starts at the socket, not in this process's event loop.
A command that fails is answered with ``{"id": ..., "error": "..."}``. End of file on stdin (or SIGTERM)
stops every sensor cleanly (each publishes ``offline``) and ends the process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from typing import Any

import gateway.mqtt.connection
from bench.clock import now_ns
from firmware_sim.sensor import SensorError, SensorOfflineError, SimulatedSensor
from gateway.domain.vocab import LatchState
from gateway.mqtt.connection import BrokerAddress, publish_now
from gateway.protocol import Topics
from gateway.settings import ENV_MQTT_PASSWORD, ENV_MQTT_USERNAME

log = logging.getLogger("bench.sensors")

STOP_TIMEOUT_S = 10.0


def sensor_ids(cribs: int) -> list[str]:
    return [f"b-{i:04d}" for i in range(1, cribs + 1)]


class BenchSensor(SimulatedSensor):
    """A simulated sensor whose latch messages are written to the socket at once, stamped just before."""

    sent_ns = 0

    async def _publish(self, topic: str, payload: bytes, *, qos: int, retain: bool) -> None:
        if not topic.endswith("/latch"):
            await super()._publish(topic, payload, qos=qos, retain=retain)
            return
        client = self._require_connection()
        self.sent_ns = now_ns()
        if publish_now(client, topic, payload, qos, retain) is None:
            raise SensorOfflineError(f"sensor {self.sensor_id}: not connected, nothing sent")


class Driver:
    def __init__(self, args: argparse.Namespace, broker: BrokerAddress) -> None:
        topics = Topics(args.site)
        self.spread_s: float = args.interval
        self.sensors = {
            sid: BenchSensor(sid, topics, broker, interval_s=args.interval) for sid in sensor_ids(args.cribs)
        }

    async def start(self) -> None:
        """Power the sensors up spread evenly over one heartbeat interval; stop them all if any fails."""
        n = len(self.sensors)

        async def start(i: int, sensor: BenchSensor) -> None:
            await asyncio.sleep(self.spread_s * i / n)
            await sensor.start()

        results = await asyncio.gather(
            *(start(i, s) for i, s in enumerate(self.sensors.values())), return_exceptions=True
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            await self.stop()
            raise failures[0]

    async def stop(self) -> None:
        await asyncio.gather(*(s.stop() for s in self.sensors.values()), return_exceptions=True)

    async def command(self, line: str) -> dict[str, Any]:
        request, verb, sid = [*line.split(), "", "", ""][:3]
        sensor = self.sensors.get(sid)
        if sensor is None or verb not in ("open", "close"):
            return {"id": request, "error": f"bad command {line!r}"}
        try:
            sent = await sensor.set_latch(LatchState.OPEN if verb == "open" else LatchState.CLOSED)
        except SensorError as exc:
            return {"id": request, "error": str(exc)}
        return {"id": request, "sid": sid, "boot": sent.boot, "seq": sent.seq, "t": sensor.sent_ns}


def _write(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def serve(args: argparse.Namespace, broker: BrokerAddress) -> int:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    driver = Driver(args, broker)
    await driver.start()
    try:
        _write({"ready": True, "t": now_ns(), "sensors": len(driver.sensors)})
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():  # end of file: whoever started us is done or gone
            if line.strip():
                _write(await driver.command(line.decode()))
    except asyncio.CancelledError:
        pass
    finally:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await driver.stop()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.sensors", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--site", required=True, help="the site id of the topics")
    parser.add_argument("--cribs", type=int, required=True, help="how many sensors (b-0001...)")
    parser.add_argument("--interval", type=float, default=1.0, help="heartbeat interval in seconds (1)")
    parser.add_argument("--no-nodelay", action="store_true", help="leave Nagle's algorithm on")
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="sensors: %(levelname)s %(message)s", stream=sys.stderr)
    args = build_parser().parse_args(argv)
    if args.no_nodelay:
        gateway.mqtt.connection.TCP_NODELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
    broker = BrokerAddress(args.host, args.port, os.environ.get(ENV_MQTT_USERNAME), os.environ.get(ENV_MQTT_PASSWORD))
    return asyncio.run(serve(args, broker))


if __name__ == "__main__":
    raise SystemExit(main())
