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
import io
import re
import secrets
from pathlib import Path

import pytest
from rich.console import Console as RichConsole

from devtools.brokers import BrokerEndpoint, MosquittoBroker, free_port
from firmware_sim.check import run_scenario
from firmware_sim.fleet import Fleet, SensorOptions
from firmware_sim.live import LiveView
from firmware_sim.scenario import Progress, parse_scenario, resolve
from gateway.mqtt.connection import BrokerAddress
from gateway.protocol import Topics
from gateway.settings import Settings, load_settings
from tests.test_gateway_integration import running
from tests.test_scenarios import short_site, site_env

__all__ = ["site_env"]  # a fixture

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


# -- every misbehaviour against the real gateway ----------------------------------------------------


def misbehaviour_site(tmp_path: Path, endpoint: BrokerEndpoint) -> Settings:
    """The short kids-f with 2 missed heartbeats (a hang is reported after 2-3 s) and stats every 0.5 s."""
    path = short_site(tmp_path, endpoint)
    text = path.read_text()
    text = re.sub(r"missed_heartbeats = \d+", "missed_heartbeats = 2", text)
    text = text.replace("[mqtt]\n", "[mqtt]\nstats_interval_s = 0.5\n", 1)
    path.write_text(text)
    settings = load_settings(path)
    assert (settings.alarms.missed_heartbeats, settings.mqtt.stats_interval_s) == (2, 0.5)
    return settings


MISBEHAVIOUR = """\
[scenario]
name = "misbehaving-firmware"
description = "each crib's sensor misbehaves in its own way, all at once"

# vl-1: the firmware hangs (its connection stays up: no last will), then runs again.
[[steps]]
at = 0
action = "hang"
crib = "vl-1"

[[steps]]
at = "offline + offline_grace + 3s"
action = "recover"
crib = "vl-1"

[[expect]]
kind = "alarm"
alarm = "sensor_offline"
crib = "vl-1"
within = "offline + offline_grace + 3s"

[[expect]]
kind = "alarm"
alarm = "sensor_offline"
event = "resolved"
crib = "vl-1"
after = "offline + offline_grace + 3s"
within = 3

[[expect]]
kind = "no_alarm"
alarm = "crib_open"
crib = "vl-1"

# vl-2: a clock an hour behind: the gateway times a crib by arrival, not by the sensor's ts.
[[steps]]
at = 0
action = "clock_skew"
crib = "vl-2"
seconds = -3600

[[steps]]
at = 0.5
action = "open"
crib = "vl-2"
for = "grace + 2s"

[[expect]]
kind = "alarm"
crib = "vl-2"
after = 0.5
within = "grace + 2s"

[[expect]]
kind = "alarm"
event = "resolved"
crib = "vl-2"
after = 0.5
within = "grace + 5s"

# vl-3: the latch counter jumps 1000 ahead. The opening is doubtful but taken (fail toward the alarm); the
# closing continues the jump, so the gateway resynchronises on it and the alarm is resolved.
[[steps]]
at = 0
action = "jump_seq"
crib = "vl-3"
by = 1000

[[steps]]
at = 0.5
action = "open"
crib = "vl-3"
for = "grace + 2s"

[[expect]]
kind = "alarm"
crib = "vl-3"
after = 0.5
within = "grace + 2s"

[[expect]]
kind = "alarm"
event = "resolved"
crib = "vl-3"
after = 0.5
within = "grace + 5s"

[[expect]]
kind = "stats"
counter = "resynced"
crib = "vl-3"

# eg-1: open, then an old "closed" from before arrives: a doubtful closing is refused, the crib stays alarmed.
[[steps]]
at = 0.5
action = "open"
crib = "eg-1"

[[steps]]
at = 1.5
action = "out_of_order"
crib = "eg-1"
state = "closed"
back = 10

[[expect]]
kind = "alarm"
crib = "eg-1"
after = 0.5
within = "grace + 2s"

[[expect]]
kind = "state"
crib = "eg-1"
latch = "open"
alarms = ["crib_open"]

[[expect]]
kind = "stats"
counter = "refused"
crib = "eg-1"

# eg-2: opened and closed within its grace, then the closing delivered twice: nothing new.
[[steps]]
at = 0.5
action = "open"
crib = "eg-2"
for = 0.5

[[steps]]
at = 1.5
action = "duplicate"
crib = "eg-2"

[[expect]]
kind = "no_alarm"
crib = "eg-2"

[[expect]]
kind = "stats"
counter = "ignored"
reason = "duplicate"

# eg-3: a cut JSON and a payload that is JSON but not a latch message: rejected and counted, nothing raised.
[[steps]]
at = 1
action = "malformed"
crib = "eg-3"

[[steps]]
at = 1.2
action = "malformed"
crib = "eg-3"
payload = '{"v": 1, "boot": 1, "seq": 5, "ts": 1, "state": "ajar"}'

[[expect]]
kind = "no_alarm"
crib = "eg-3"

[[expect]]
kind = "stats"
counter = "rejected"
reason = "bad_payload"

# kk-1: 300 junk heartbeats, then a real opening: the gateway still hears it.
[[steps]]
at = 1
action = "flood"
crib = "kk-1"
count = 300

[[steps]]
at = 3
action = "open"
crib = "kk-1"
for = "grace + 2s"

[[expect]]
kind = "stats"
counter = "rejected"
reason = "bad_json"
at_least = 301

[[expect]]
kind = "alarm"
crib = "kk-1"
after = 3
within = "grace + 2s"

# kk-2 does nothing wrong and hears nothing.
[[expect]]
kind = "no_alarm"
crib = "kk-2"
"""


@pytest.mark.integration
async def test_every_misbehaviour_gets_what_the_protocol_promises(tmp_path: Path, site_env: BrokerEndpoint) -> None:
    settings = misbehaviour_site(tmp_path, site_env)
    resolved = resolve(parse_scenario(MISBEHAVIOUR), settings, MISBEHAVIOUR)
    out = io.StringIO()
    async with running(settings):
        results, _ = await run_scenario(resolved, settings, broker=site_env, out=out)
    report = out.getvalue() + "\n".join(f"{'PASS' if r.passed else 'FAIL'} {r.name}: {r.detail}" for r in results)
    assert len(results) == 18, report
    assert all(r.passed for r in results), report
    assert "not done" not in out.getvalue(), report


# -- a broker restart in a scenario, with a broker the run manages ------------------------------------

RESTART = """\
[scenario]
name = "broker-restart"

[[steps]]
at = 0
action = "open"
crib = "vl-1"
for = "grace + 1s"

[[steps]]
at = "longest_grace + 1s"
action = "broker_restart"

[[steps]]
at = "grace + 6s"
action = "open"
crib = "vl-2"
for = "grace + 2s"

[[expect]]
kind = "alarm"
crib = "vl-1"
within = "grace + 2s"

[[expect]]
kind = "alarm"
crib = "vl-2"
after = "grace + 6s"
within = "grace + 3s"

[[expect]]
kind = "alarm"
event = "resolved"
crib = "vl-2"
after = "grace + 6s"
within = "grace + 6s"

[[expect]]
kind = "state"
crib = "vl-2"
latch = "closed"
alarms = []
sensor_online = true
"""


@pytest.mark.integration
async def test_a_broker_restart_step_restarts_a_managed_broker_and_everyone_comes_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user, password = "gw", secrets.token_urlsafe(8)
    monkeypatch.setenv("CRIBWATCH_MQTT_USERNAME", user)
    monkeypatch.setenv("CRIBWATCH_MQTT_PASSWORD", password)
    with MosquittoBroker(tmp_path / "broker", users={user: password}) as broker:
        settings = misbehaviour_site(tmp_path, broker.endpoint)
        resolved = resolve(parse_scenario(RESTART), settings, RESTART)

        async def restart_broker() -> None:
            await asyncio.to_thread(broker.restart)

        shown = io.StringIO()

        async def live(fleet: Fleet, progress: Progress) -> None:
            """The live view of `sim run --live`, on a console that is not a terminal."""
            view = LiveView(fleet, progress=progress, scenario=resolved.name)
            await view.run(broker.endpoint, RichConsole(file=shown, width=160))

        out = io.StringIO()
        async with running(settings) as gateway:
            results, _ = await run_scenario(
                resolved, settings, broker=broker.endpoint, out=out, restart_broker=restart_broker, live=live
            )
            assert gateway.mqtt.connections >= 2
    report = out.getvalue() + "\n".join(f"{'PASS' if r.passed else 'FAIL'} {r.name}: {r.detail}" for r in results)
    assert "broker_restart skipped" not in report
    assert len(results) == 4, report
    assert all(r.passed for r in results), report
    screen = shown.getvalue()  # printed once, when the view was cancelled at the end of the run
    assert "scenario broker-restart: finished" in screen
    assert "step" in screen
    assert "3 of 3: done" in screen
    assert "4 passed, 0 failed, 0 pending" in screen


# -- the live view's progress, rendered without a terminal --------------------------------------------


def test_the_live_view_shows_the_step_and_the_verdicts_so_far() -> None:
    fleet = Fleet(Topics("t-live"), BrokerAddress("127.0.0.1", 1), ["s-0101", "s-0102"])
    progress = Progress(steps_total=5, checks_total=4, steps_done=2, step="1.5 s open vl-1 (s-0101) for 1 s")
    progress.passed = ["crib_open raised for crib vl-1 (sensor s-0101, room vlinders)"]
    progress.failed = ["no alarm raised for crib vl-2 (sensor s-0102, room vlinders)"]
    view = LiveView(fleet, progress=progress, scenario="nap-time")
    screen = io.StringIO()
    console = RichConsole(file=screen, width=160)
    assert not console.is_terminal
    console.print(view.render())
    text = screen.getvalue()
    assert "\x1b[" not in text
    assert "scenario nap-time: running" in text
    assert "2 of 5: 1.5 s open vl-1 (s-0101) for 1 s" in text
    assert "1 passed, 1 failed, 2 pending" in text
    assert "FAIL" in text
    assert "no alarm raised for crib vl-2" in text
    assert "powered off" in text  # the sensors themselves, as without a scenario
    progress.finished = True
    screen.truncate(0)
    console.print(view.render())
    assert "scenario nap-time: finished" in screen.getvalue()
