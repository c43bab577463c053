"""`cribwatch provision` and the settings it feeds, without a broker (the broker's side: test_broker_lockdown.py)."""

from __future__ import annotations

import dataclasses
import os
import pwd
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory

from gateway.app import Gateway
from gateway.cli import main as cribwatch
from gateway.credentials import read_credentials_file
from gateway.mqtt.connection import TlsOptions, broker_address, intake_address
from gateway.provision import (
    BRIDGE_TEMPLATE,
    Bridge,
    Paths,
    ProvisionError,
    acl_text,
    provision,
    render_bridge,
    site_coordinator_devices,
)
from gateway.settings import ConfigError, settings_from_mapping

REPO = Path(__file__).resolve().parent.parent
SITE: dict[str, Any] = {
    "site": {"id": "prov", "label": "Provisioned"},
    "rooms": [{"id": "r", "label": "Room", "cribs": [{"id": "c-1", "label": "Crib 1", "sensor_id": "s-1"}]}],
}


def paths(tmp_path: Path) -> Paths:
    return Paths(tmp_path / "creds.toml", tmp_path / "passwd", tmp_path / "acl")


def with_mqtt(**mqtt: Any) -> dict[str, Any]:
    return {**SITE, "mqtt": mqtt}


def test_the_gateway_takes_both_accounts_from_the_credentials_file(tmp_path: Path) -> None:
    provision(paths(tmp_path), site_id="prov", sensors=["s-1"])
    creds = read_credentials_file(tmp_path / "creds.toml")
    settings = settings_from_mapping(with_mqtt(credentials_file=str(tmp_path / "creds.toml")), env={})
    main, intake = broker_address(settings.mqtt), intake_address(settings.mqtt)
    assert (main.username, main.password) == ("gateway", creds.single["gateway"].password)
    assert (intake.username, intake.password) == ("gateway-intake", creds.single["gateway_intake"].password)
    # The environment's main account wins for the main connection only: the intake keeps the file's own (one account
    # for both would make them take each other's session on the shipped broker).
    env = {"CRIBWATCH_MQTT_USERNAME": "u", "CRIBWATCH_MQTT_PASSWORD": "p"}
    settings = settings_from_mapping(with_mqtt(credentials_file=str(tmp_path / "creds.toml")), env=env)
    assert (broker_address(settings.mqtt).username, intake_address(settings.mqtt).username) == ("u", "gateway-intake")
    assert intake_address(settings.mqtt).password == creds.single["gateway_intake"].password
    assert settings.shared_account_problem is None
    # ... and so does the environment's intake account, the file's main one being kept.
    env = {"CRIBWATCH_MQTT_INTAKE_USERNAME": "i", "CRIBWATCH_MQTT_INTAKE_PASSWORD": "q"}
    settings = settings_from_mapping(with_mqtt(credentials_file=str(tmp_path / "creds.toml")), env=env)
    assert (broker_address(settings.mqtt).username, intake_address(settings.mqtt).username) == ("gateway", "i")
    # ... and CRIBWATCH_MQTT_CREDENTIALS names the file.
    settings = settings_from_mapping(SITE, env={"CRIBWATCH_MQTT_CREDENTIALS": str(tmp_path / "creds.toml")})
    assert settings.mqtt.intake_username == "gateway-intake"


def test_a_missing_or_broken_credentials_file_stops_the_gateway_with_its_name(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    with pytest.raises(ConfigError, match=r"nowhere\.toml: cannot read"):
        settings_from_mapping(with_mqtt(credentials_file=str(missing)), env={})
    # check-config (credentials not required) reads the file alone: an unreadable one is not its business.
    settings = settings_from_mapping(with_mqtt(credentials_file=str(missing)), env={}, require_credentials=False)
    assert settings.needs_credentials
    broken = tmp_path / "broken.toml"
    broken.write_text('[sensors.s-1]\nusername = "s-1"\n')
    with pytest.raises(ConfigError, match=r"broken.toml: \[sensors.s-1\] must have exactly username and password"):
        settings_from_mapping(with_mqtt(credentials_file=str(broken)), env={})
    no_gateway = tmp_path / "sensors-only.toml"
    no_gateway.write_text('[sensors.s-1]\nusername = "s-1"\npassword = "x"\n')
    with pytest.raises(ConfigError, match=r"no \[gateway\] account"):
        settings_from_mapping(with_mqtt(credentials_file=str(no_gateway)), env={})
    with pytest.raises(ConfigError, match="intake_password: secrets do not belong in the file"):
        settings_from_mapping(with_mqtt(intake_password="x"), env={})


def test_tls_settings(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("not checked here")
    env = {"CRIBWATCH_MQTT_USERNAME": "u", "CRIBWATCH_MQTT_PASSWORD": "p"}
    settings = settings_from_mapping(with_mqtt(port=8883, tls=True, tls_ca_file=str(ca)), env=env)
    assert broker_address(settings.mqtt).tls == TlsOptions(str(ca))
    assert broker_address(settings_from_mapping(SITE, env=env).mqtt).tls is None
    for mqtt, problem in (
        ({"tls_ca_file": str(ca)}, "tls_ca_file given but tls = false"),
        ({"tls": True, "tls_ca_file": str(tmp_path / "nope")}, "no such file"),
        ({"tls": True, "tls_cert_file": str(ca)}, "go together"),
    ):
        with pytest.raises(ConfigError, match=problem):
            settings_from_mapping(with_mqtt(**mqtt), env=env)


def test_provision_refuses_what_it_cannot_do_and_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(ProvisionError, match="reserved"):
        provision(paths(tmp_path), site_id="prov", sensors=["gateway-intake"])
    with pytest.raises(ProvisionError, match=r"two kinds of account: x-1 \(sensor and device\)"):
        provision(paths(tmp_path), site_id="prov", sensors=["x-1"], devices=["x-1"])
    with pytest.raises(ProvisionError, match="nothing to remove"):
        provision(paths(tmp_path), site_id="prov", remove=[("sensor", "s-9")])
    with pytest.raises(ProvisionError, match="--acl-template"):
        provision(dataclasses.replace(paths(tmp_path), acl_template=tmp_path / "no.acl"), site_id="prov")
    assert list(tmp_path.iterdir()) == []
    assert cribwatch(["provision", "--add", "sensor", "s-1", "--credentials", str(tmp_path / "c.toml")]) == 2


def test_removing_an_account_and_keeping_foreign_users(tmp_path: Path) -> None:
    p = paths(tmp_path)
    p.password_file.write_text("legacy-board:$7$101$c2FsdA==$aGFzaA==\n")
    provision(p, site_id="prov", sensors=["s-1"], devices=["pager-1"])
    outcome = provision(p, site_id="prov", remove=[("device", "pager-1")])
    assert outcome.removed == ["pager-1"]
    assert outcome.foreign == ["legacy-board"]
    users = [line.split(":")[0] for line in p.password_file.read_text().splitlines()]
    assert "pager-1" not in users
    assert "legacy-board" in users
    assert "user pager-1" not in p.acl.read_text()
    assert os.stat(p.credentials).st_mode & 0o777 == 0o600
    assert os.stat(p.password_file).st_mode & 0o777 == 0o640


def test_the_acl_gives_each_staff_device_the_reads_of_alarms_and_crib_states() -> None:
    text = acl_text("pattern write cribwatch/+/ack/%u\n", "prov", ["pager-1"])
    assert text.endswith("user pager-1\ntopic read cribwatch/+/alarm/#\ntopic read cribwatch/+/crib/#\n")


def test_the_rendered_bridge_has_every_placeholder_filled() -> None:
    text = render_bridge(BRIDGE_TEMPLATE.read_text(), Bridge("kids-f", "central.example.org", 8883, "pw"))
    directives = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert [line for line in directives if re.search(r"\$\{?\w", line)] == []
    assert "remote_username kids-f\n" in text
    assert "bridge_cafile /etc/mosquitto/certs/city-ca.crt\n" in text
    assert "topic helping-hands/# out 1 cribwatch/kids-f/ cribwatch/kids-f/\n" in text
    plain = render_bridge(BRIDGE_TEMPLATE.read_text(), Bridge("kids-f", "127.0.0.1", 1883, "pw", ca_file=None))
    assert "bridge_cafile" not in plain


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_the_credentials_file_belongs_to_the_gateways_user_and_stays_so(tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    p = paths(tmp_path)
    provision(p, site_id="prov", sensors=["s-1"], owner="nobody")
    assert (p.credentials.stat().st_uid, p.credentials.stat().st_gid) == (nobody.pw_uid, nobody.pw_gid)
    provision(p, site_id="prov", sensors=["s-1", "s-2"])  # rewritten: the owner stays
    assert p.credentials.stat().st_uid == nobody.pw_uid
    assert p.credentials.stat().st_mode & 0o777 == 0o600
    with pytest.raises(ProvisionError, match="no such user"):
        provision(p, site_id="prov", owner="no-such-user-here")


def test_one_account_for_both_connections_refuses_to_start_outside_demo_mode(tmp_path: Path) -> None:
    """CRIBWATCH_MQTT_USERNAME alone (README's old advice) on the shipped broker, which makes the username the client
    id: the gateway's two connections would knock each other off in turn. It refuses to start, clearly; demo mode and
    a broker without the lock (mqtt.client_id_is_username = false, as the tests' shared broker) may share one."""
    env = {"CRIBWATCH_MQTT_USERNAME": "gateway", "CRIBWATCH_MQTT_PASSWORD": "p"}
    settings = settings_from_mapping(SITE, env=env)
    assert settings.shared_account_problem is not None
    assert "both MQTT connections would log in as 'gateway'" in settings.shared_account_problem
    with pytest.raises(ConfigError, match="take each other's session"):
        Gateway(settings, pin_factory=MockFactory())
    assert (
        settings_from_mapping({**SITE, "site": {**SITE["site"], "demo": True}}, env=env).shared_account_problem is None
    )
    assert settings_from_mapping(with_mqtt(client_id_is_username=False), env=env).shared_account_problem is None
    unlocked = settings_from_mapping(SITE, env={**env, "CRIBWATCH_MQTT_CLIENT_ID_IS_USERNAME": "false"})
    assert unlocked.shared_account_problem is None
    with pytest.raises(ConfigError, match="CRIBWATCH_MQTT_CLIENT_ID_IS_USERNAME"):
        settings_from_mapping(SITE, env={**env, "CRIBWATCH_MQTT_CLIENT_ID_IS_USERNAME": "perhaps"})
    # `cribwatch gateway` says so and stops before it connects anywhere.
    site_file = tmp_path / "site.toml"
    site_file.write_text(
        '[site]\nid = "prov"\nlabel = "P"\n[[rooms]]\nid = "r"\nlabel = "Room"\n'
        '[[rooms.cribs]]\nid = "c-1"\nlabel = "Crib 1"\nsensor_id = "s-1"\n'
    )
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CRIBWATCH_")}
    environment |= {**env, "CRIBWATCH_STATE_DIR": os.environ["CRIBWATCH_STATE_DIR"], "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "gateway", "--config", str(site_file)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "cannot start: both MQTT connections would log in as 'gateway'" in result.stderr


def test_coordinators_devices_and_wall_boards_get_accounts_of_their_own(tmp_path: Path) -> None:
    """A helping-hands coordinator's mqtt device gets an account with no alarm/crib block (the patterns give it its
    notices); wall boards (--add board) and the simulator's watcher each their own, with staff's reads."""
    site = {
        **SITE,
        "helping_hands": {"coordinators": [{"id": "coord", "channels": [{"channel": "mqtt", "address": "tablet-c"}]}]},
    }
    settings = settings_from_mapping(site, env={}, require_credentials=False)
    assert site_coordinator_devices(settings) == ["tablet-c"]
    site_file = tmp_path / "site.toml"
    site_file.write_text(
        '[site]\nid = "prov"\nlabel = "P"\n[[rooms]]\nid = "r"\nlabel = "Room"\n[[rooms.cribs]]\nid = "c-1"\n'
        'label = "Crib 1"\nsensor_id = "s-1"\n[helping_hands]\n'
        'coordinators = [{ id = "coord", channels = [{ channel = "mqtt", address = "tablet-c" }] }]\n'
    )
    p = paths(tmp_path)
    files = ["--credentials", str(p.credentials), "--password-file", str(p.password_file), "--acl", str(p.acl)]
    assert cribwatch(["provision", "--config", str(site_file), *files]) == 0
    assert cribwatch(["provision", "--add", "board", "hall-1", "--add", "board", "hall-2", *files]) == 0
    creds = read_credentials_file(p.credentials)
    assert list(creds.coordinator_devices) == ["tablet-c"]
    assert list(creds.boards) == ["hall-1", "hall-2"]
    assert (creds.single["watcher"].username, creds.single["technician_tool"].username) == (
        "watcher",
        "technician-tool",
    )
    users = {line.split(":")[0] for line in p.password_file.read_text().splitlines()}
    assert {"tablet-c", "hall-1", "hall-2", "watcher", "technician-tool"} <= users
    acl = p.acl.read_text()
    assert "user tablet-c" not in acl
    assert "user hall-1\ntopic deny cribwatch/+/ack/#\ntopic read cribwatch/+/alarm/#\n" in acl
    assert cribwatch(["provision", "--add", "board", "watcher", *files]) == 2  # a fixed account's name
    assert cribwatch(["provision", "--add", "board", "tablet-c", *files]) == 2  # already a coordinator's device
    assert cribwatch(["provision", "--remove", "board", "hall-2", *files]) == 0
    assert list(read_credentials_file(p.credentials).boards) == ["hall-1"]


def test_an_older_files_watcher_copy_of_staff_becomes_its_own_account(tmp_path: Path) -> None:
    p = paths(tmp_path)
    provision(p, site_id="prov", sensors=["s-1"])
    text = p.credentials.read_text()
    staff = read_credentials_file(p.credentials).single["staff"]
    start = text.index("\n[watcher]\n") + 1
    end = text.index("\n\n", start)
    old_watcher = f'[watcher]\nusername = "staff"\npassword = "{staff.password}"'
    p.credentials.write_text(text[:start] + old_watcher + text[end:])
    outcome = provision(p, site_id="prov", sensors=["s-1"])
    creds = read_credentials_file(p.credentials)
    assert creds.single["watcher"].username == "watcher"
    assert creds.single["watcher"].password != staff.password
    assert creds.single["staff"] == staff
    assert "watcher" in outcome.created
