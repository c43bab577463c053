"""`cribwatch provision` and the settings it feeds, without a broker (the broker's side: test_broker_lockdown.py)."""

from __future__ import annotations

import dataclasses
import os
import pwd
import re
from pathlib import Path
from typing import Any

import pytest

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
)
from gateway.settings import ConfigError, settings_from_mapping

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
    # The environment's account wins, for both connections.
    env = {"CRIBWATCH_MQTT_USERNAME": "u", "CRIBWATCH_MQTT_PASSWORD": "p"}
    settings = settings_from_mapping(with_mqtt(credentials_file=str(tmp_path / "creds.toml")), env=env)
    assert intake_address(settings.mqtt).username == broker_address(settings.mqtt).username == "u"
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
    with pytest.raises(ProvisionError, match="both a sensor and a staff device"):
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
