"""Scenario files and ``cribwatch sim run --check``: every shipped scenario against a real gateway and a real
Mosquitto, a broken file (file:line, exit 2), a failing expectation (exit 1, JUnit), per-sensor credentials
against the shipped ACL (refused shown as such), and the firmware details (battery curve, durations).

The site is examples/kids-f.toml with its ids unchanged (the shipped scenarios name them) and short timings:
a fresh site id per test, grace periods of 1 to 2.5 s, a heartbeat every 1 s. No timing is asserted beyond the
scenarios' own expectations, whose limits follow the site's settings.
"""

from __future__ import annotations

import io
import itertools
import re
import secrets
import socket
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from devtools.brokers import BrokerEndpoint, MosquittoBroker
from firmware_sim import cli
from firmware_sim.check import run_scenario
from firmware_sim.fleet import Fleet, load_credentials
from firmware_sim.scenario import ScenarioError, SiteTimes, load_scenario, parse_scenario, resolve, seconds
from firmware_sim.sensor import discharge_fraction
from gateway.settings import Settings, load_settings
from tests.test_gateway_integration import running

REPO = Path(__file__).resolve().parents[1]
KIDS_F = REPO / "examples" / "kids-f.toml"
SCENARIOS = REPO / "firmware_sim" / "scenarios"
SHIPPED_ACL = REPO / "deploy" / "mosquitto" / "cribwatch.acl"
SHORT = {"vlinders": 1.5, "egeltjes": 2, "kikkers": 2.5, "slaapkamer": 1}


def short_site(tmp_path: Path, endpoint: BrokerEndpoint) -> Path:
    """kids-f.toml with a fresh site id, the test broker and short timings; returns the file."""
    text = KIDS_F.read_text()
    text = text.replace('id = "kids-f"', f'id = "t-{secrets.token_hex(4)}"')
    text = text.replace('host = "127.0.0.1"\nport = 1883', f'host = "{endpoint.host}"\nport = {endpoint.port}')
    text = re.sub(r"heartbeat_interval_s = \d+", "heartbeat_interval_s = 1", text)
    text = re.sub(r"offline_grace_s = \d+", "offline_grace_s = 1", text)
    for room, grace in SHORT.items():
        text = re.sub(rf'(id = "{room}"\nlabel = "[^"]*"\ngrace_s = )\d+', rf"\g<1>{grace}", text)
    path = tmp_path / "site.toml"
    path.write_text(text)
    return path


@pytest.fixture
def site_env(mqtt_endpoint: BrokerEndpoint, monkeypatch: pytest.MonkeyPatch) -> BrokerEndpoint:
    monkeypatch.setenv("CRIBWATCH_MQTT_USERNAME", mqtt_endpoint.username or "")
    monkeypatch.setenv("CRIBWATCH_MQTT_PASSWORD", mqtt_endpoint.password or "")
    return mqtt_endpoint


def site_settings(tmp_path: Path, endpoint: BrokerEndpoint) -> Settings:
    settings = load_settings(short_site(tmp_path, endpoint))
    assert [r.grace_s for r in settings.rooms] == list(SHORT.values())  # the rewrite took
    return settings


# -- every shipped scenario against the real gateway ------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(p.stem for p in SCENARIOS.glob("*.toml")))
async def test_shipped_scenario_passes_against_the_gateway(name: str, tmp_path: Path, site_env: BrokerEndpoint) -> None:
    settings = site_settings(tmp_path, site_env)
    scenario, text = load_scenario(SCENARIOS / f"{name}.toml")
    resolved = resolve(scenario, settings, text)
    out = io.StringIO()
    async with running(settings):
        results, _ = await run_scenario(resolved, settings, broker=site_env, out=out)
    assert results, out.getvalue()
    assert all(r.passed for r in results), out.getvalue() + "\n".join(f"{r.name}: {r.detail}" for r in results)


# -- the command line: broken file, failing expectation ---------------------------------------------


BROKEN = """\
[scenario]
name = "broken"

[[steps]]
at = 0
action = "open"
crib = "vl-1"

[[steps]]
at = 2
action = "open"
crib = "vl-1"
for = "grace + soon"
"""


def test_a_broken_scenario_names_file_and_line(
    tmp_path: Path, site_env: BrokerEndpoint, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = tmp_path / "broken.toml"
    scenario.write_text(BROKEN)
    site = short_site(tmp_path, site_env)
    assert cli.run(["run", str(scenario), "--config", str(site), "--check"]) == 2
    err = capsys.readouterr().err
    assert f"{scenario}:13: steps[1].for" in err
    assert "unknown name 'soon'" in err


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ('[scenario]\nname = "x"\n\n[[steps]]\nat = 0\naction = "opne"\ncrib = "vl-1"\n', 6, "unknown action 'opne'"),
        ('[scenario]\nname = "x"\n\n[[expect]]\nkind = "alarm"\ncrib = "vl-1"\nwithn = 3\n', 7, "withn: unknown key"),
        ('[scenario]\nname = "x"\n\n[[steps]]\nat = 0\naction = "battery"\ncrib = "vl-1"\npct = 120\n', 8, "pct = 120"),
        ('[scenario]\nname = "x"\n\n[[steps]]\nat = 0\naction = "open"\n', 4, "exactly one of crib, sensor, room"),
        ('[scenario]\nname = "x"\n[[steps]\n', 3, "not valid TOML"),
    ],
)
def test_parse_errors_have_their_line(text: str, line: int, words: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text, "s.toml")
    assert caught.value.line == line, str(caught.value)
    assert words in str(caught.value)
    assert str(caught.value).startswith(f"s.toml:{line}: ")


def test_an_id_the_site_does_not_have_is_named_with_its_line(tmp_path: Path, site_env: BrokerEndpoint) -> None:
    text = '[scenario]\nname = "x"\n\n[[expect]]\nkind = "no_alarm"\ncrib = "zz-9"\n'
    with pytest.raises(ScenarioError, match=r"^s.toml:4: expect\[0\]: crib 'zz-9' is not a wireless crib"):
        resolve(parse_scenario(text), site_settings(tmp_path, site_env), text, "s.toml")
    text = '[scenario]\nname = "x"\n\n[[steps]]\nat = 0\naction = "open"\ncrib = "sk-1"\n'
    with pytest.raises(ScenarioError, match=r"^s.toml:4: .*'sk-1' is wired"):
        resolve(parse_scenario(text), site_settings(tmp_path, site_env), text, "s.toml")


FAILING = """\
[scenario]
name = "nobody-listens"
settle = 0

[[steps]]
at = 0
action = "open"
crib = "vl-1"
for = 0.5

[[expect]]
kind = "alarm"
crib = "vl-1"
within = 1

[[expect]]
kind = "no_alarm"
crib = "vl-2"
"""


@pytest.mark.integration
def test_a_failing_expectation_exits_1_with_a_junit_failure(
    tmp_path: Path, site_env: BrokerEndpoint, capsys: pytest.CaptureFixture[str]
) -> None:
    """No gateway runs: the alarm never comes."""
    scenario = tmp_path / "failing.toml"
    scenario.write_text(FAILING)
    junit = tmp_path / "out.xml"
    site = short_site(tmp_path, site_env)
    code = cli.run(["run", str(scenario), "--config", str(site), "--check", "--junit", str(junit)])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "FAIL  crib_open raised for crib vl-1" in out
    assert "PASS  no alarm raised for crib vl-2" in out
    assert "1 of 2 expectations passed" in out
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("name"), suite.get("tests"), suite.get("failures")) == ("nobody-listens", "2", "1")
    failures = [c for c in suite.iter("testcase") if c.find("failure") is not None]
    assert [c.get("name") for c in failures] == ["crib_open raised for crib vl-1 (sensor s-0101, room vlinders)"]


# -- per-sensor credentials against the shipped ACL -------------------------------------------------


@pytest.mark.integration
async def test_per_sensor_accounts_and_a_refused_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    users = {"gateway": "gw", "s-0101": "right-1", "s-0102": "right-2", "s-0201": "right-3"}
    monkeypatch.setenv("CRIBWATCH_MQTT_USERNAME", "gateway")
    monkeypatch.setenv("CRIBWATCH_MQTT_PASSWORD", "gw")
    with MosquittoBroker(tmp_path, users=users, extra_config=f"acl_file {SHIPPED_ACL}") as broker:
        creds_file = tmp_path / "credentials.toml"
        creds_file.write_text(
            '[sensors.s-0101]\nusername = "s-0101"\npassword = "right-1"\n'
            '[sensors.s-0102]\nusername = "s-0102"\npassword = "WRONG"\n'
            '[sensors.s-0201]\nusername = "s-0201"\npassword = "right-3"\n'
            '[shared]\nusername = "nobody"\npassword = "x"\n'
        )
        settings = site_settings(tmp_path, broker.endpoint)
        fleet = Fleet.from_settings(settings, broker.endpoint, credentials=load_credentials(creds_file))
        try:
            states = await fleet.start_each()
            summary = fleet.summary()
        finally:
            await fleet.stop()
        assert sorted(states["online"]) == ["s-0101", "s-0201"]
        assert "s-0102" in states["refused"]
        assert len(states["refused"]) == len(fleet) - 2  # the shared account does not exist either
        assert summary.startswith(f"{len(fleet)} sensors: 2 online, {len(fleet) - 2} refused (s-0102, ")


def test_a_bad_credentials_file_is_a_usage_error(tmp_path: Path, site_env: BrokerEndpoint) -> None:
    creds = tmp_path / "c.toml"
    creds.write_text('[sensors.s-0101]\nusername = "s-0101"\n')
    scenario = SCENARIOS / "nap-time.toml"
    site = short_site(tmp_path, site_env)
    assert cli.run(["run", str(scenario), "--config", str(site), "--credentials", str(creds)]) == 2


# -- the firmware's details ------------------------------------------------------------------------


def test_the_battery_curve_is_flat_then_drops_at_the_knee() -> None:
    values = [discharge_fraction(i / 100) for i in range(101)]
    assert values[0] == 1.0
    assert values[-1] == 0.0
    assert all(a >= b for a, b in itertools.pairwise(values))
    assert values[85] == pytest.approx(0.8)  # 85 % of the life gone, 80 % of the charge left
    assert values[95] < 0.3


def test_durations_follow_the_site(tmp_path: Path, site_env: BrokerEndpoint) -> None:
    site = SiteTimes.of(site_settings(tmp_path, site_env))
    assert seconds("grace + 2s", site, 1.5) == 3.5
    assert seconds("offline + offline_grace - 500ms", site, None) == 3 + 1 - 0.5
    assert seconds("longest_grace", site, None) == 2.5
    assert seconds(4, site, None) == 4.0


def test_interval_defaults_to_the_site_and_a_longer_one_is_named() -> None:
    err = io.StringIO()
    assert cli.choose_interval(None, 10.0, err) == 10.0
    assert cli.choose_interval(5.0, 10.0, err) == 5.0
    assert err.getvalue() == ""
    assert cli.choose_interval(30.0, 10.0, err) == 30.0
    assert "longer than the site's heartbeat_interval_s (10 s)" in err.getvalue()
    assert cli.choose_interval(None, None, err) == cli.DEFAULT_INTERVAL_S


@pytest.mark.integration
def test_no_broker_is_a_clear_message_and_exit_1(
    tmp_path: Path, site_env: BrokerEndpoint, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by a review: with --check and nothing listening, the checking client's MqttError escaped."""
    scenario = tmp_path / "failing.toml"
    scenario.write_text(FAILING)
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    nowhere = BrokerEndpoint(site_env.host, free, site_env.username, site_env.password)
    site = short_site(tmp_path, nowhere)
    assert cli.run(["run", str(scenario), "--config", str(site), "--check"]) == 1
    err = capsys.readouterr().err
    assert f"127.0.0.1:{free}" in err
    assert "Traceback" not in err
