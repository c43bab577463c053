"""What TLS costs on the site broker: a QoS 1 hop and a connect, plain beside TLS, in the same run.

``python -m bench.tls [--samples 2000] [--connects 50] [--json]``

One real Mosquitto with the shipped configuration (deploy/mosquitto/mosquitto.conf and tls.conf), the accounts of
``cribwatch provision`` (gateway/provision.py) for a one-sensor site, and a CA made for the run (devtools.certs).
A sensor's connection publishes its latch topic at QoS 1 (written to the socket at once, as the gateway's alarms
are) and the gateway's account receives it: the time from just before the write to the arrival is one sample.
Plain and TLS alternate in blocks of 100 after a discarded warm-up, so both see the same machine. Then
``--connects`` connections each way: the time to a CONNACK (TCP, the TLS handshake, the password check).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import aiomqtt

from bench.stats import Summary, summarize
from devtools.brokers import MosquittoBroker
from devtools.certs import make_test_ca
from gateway.credentials import read_credentials_file
from gateway.mqtt.connection import BrokerAddress, new_client, publish_now
from gateway.provision import Paths, provision

BLOCK = 100
WARMUP = 100
TOPIC = "cribwatch/bench/sensor/s-1/latch"


async def _hops(sensor: BrokerAddress, gateway: BrokerAddress, n: int) -> list[float]:
    arrived: asyncio.Queue[int] = asyncio.Queue()

    def on_message(_: aiomqtt.Message) -> None:
        arrived.put_nowait(time.perf_counter_ns())

    samples: list[float] = []
    async with (
        new_client(gateway, identifier="gateway", on_message=on_message) as sub,
        new_client(sensor, identifier="s-1") as pub,
    ):
        await sub.subscribe(TOPIC, qos=1)
        for _ in range(n):
            start = time.perf_counter_ns()
            publish_now(pub, TOPIC, b'{"v":1}', qos=1, retain=False)
            samples.append((await asyncio.wait_for(arrived.get(), 10) - start) / 1e6)
    return samples


async def _connects(address: BrokerAddress, n: int) -> list[float]:
    samples: list[float] = []
    for _ in range(n):
        start = time.perf_counter_ns()
        async with new_client(address, identifier="s-1"):
            samples.append((time.perf_counter_ns() - start) / 1e6)
    return samples


async def run(samples: int, connects: int, workdir: Path) -> dict[str, Summary]:
    site = workdir / "site"
    paths = Paths(site / "creds.toml", site / "passwd", site / "acl")
    provision(paths, site_id="bench", sensors=["s-1"])
    creds = read_credentials_file(paths.credentials)
    broker_tls, client_tls = make_test_ca(workdir / "ca")
    with MosquittoBroker(
        workdir / "broker", shipped=True, password_file=paths.password_file, acl_file=paths.acl, tls=broker_tls
    ) as broker:
        assert broker.tls_port is not None
        plain = BrokerAddress("127.0.0.1", broker.endpoint.port)
        tls = BrokerAddress(
            "127.0.0.1", broker.tls_port, tls=dataclasses.replace(client_tls, cert_file=None, key_file=None)
        )

        def login(address: BrokerAddress, table: str) -> BrokerAddress:
            account = creds.sensors["s-1"] if table == "s-1" else creds.single[table]
            return dataclasses.replace(address, username=account.username, password=account.password)

        results: dict[str, list[float]] = {"hop_plain_ms": [], "hop_tls_ms": []}
        for address in (plain, tls):  # warm-up, discarded
            await _hops(login(address, "s-1"), login(address, "gateway"), WARMUP)
        for _ in range(max(1, samples // BLOCK)):
            for name, address in (("hop_plain_ms", plain), ("hop_tls_ms", tls)):
                results[name] += await _hops(login(address, "s-1"), login(address, "gateway"), BLOCK)
        results["connect_plain_ms"] = await _connects(login(plain, "s-1"), connects)
        results["connect_tls_ms"] = await _connects(login(tls, "s-1"), connects)
    return {name: summarize(values) for name, values in results.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tls", description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=2000, help="hops each way (2000)")
    parser.add_argument("--connects", type=int, default=50, help="connections each way (50)")
    parser.add_argument("--json", action="store_true", help="print the summaries as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cribwatch-bench-tls-") as tmp:
        summaries = asyncio.run(run(args.samples, args.connects, Path(tmp)))
    if args.json:
        print(json.dumps({k: dataclasses.asdict(v) for k, v in summaries.items()}, indent=2))
        return 0
    for name, s in summaries.items():
        print(f"{name:<18} n={s.n:<5} p50 {s.p50:7.3f}  p90 {s.p90:7.3f}  p99 {s.p99:7.3f}  max {s.max:7.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
