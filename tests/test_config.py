"""The validated config tree (gateway.settings) and ``cribwatch check-config``.

Every rejected configuration must give a ConfigError whose message names the key path, the value and
what was expected, so an installer can fix the file without reading code.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.domain.vocab import ID_PATTERN
from gateway.settings import (
    ENV_MQTT_HOST,
    ENV_MQTT_PASSWORD,
    ENV_MQTT_PORT,
    ENV_MQTT_USERNAME,
    RESERVED_SENSOR_IDS,
    ConfigError,
    Settings,
    load_settings,
    settings_from_mapping,
)

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "kids-f.toml"
ACL = REPO / "deploy" / "mosquitto" / "cribwatch.acl"
CONFIGURATION_MD = REPO / "docs" / "configuration.md"
CREDS = {ENV_MQTT_USERNAME: "gateway", ENV_MQTT_PASSWORD: "s3cret-pw"}


def example_data() -> dict[str, Any]:
    return tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))


def config_error(data: dict[str, Any], env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        settings_from_mapping(data, env=CREDS if env is None else env)
    return info.value


def mutated(change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    data = copy.deepcopy(example_data())
    change(data)
    return data


def crib(data: dict[str, Any], room: int, index: int) -> dict[str, Any]:
    found: dict[str, Any] = data["rooms"][room]["cribs"][index]
    return found


# ------------------------------------------------------------------------------------------ example


class TestExampleFile:
    def test_loads_with_credentials_from_the_environment(self) -> None:
        settings = load_settings(EXAMPLE, env=CREDS)

        assert (settings.site.id, settings.site.label, settings.site.demo) == ("kids-f", "KDV Kids-F", False)
        assert [r.id for r in settings.rooms] == ["vlinders", "egeltjes", "kikkers", "slaapkamer"]
        assert [r.grace_s for r in settings.rooms] == [10, 20, 30, 10]
        cribs = settings.cribs()
        assert len(cribs) == 12
        assert [c.id for _, c in cribs if c.wired] == ["sk-1", "sk-2", "sk-3"]
        assert [c.sensor_key for _, c in cribs if c.wired] == ["gpio17", "gpio27", "gpio22"]
        assert cribs[0][1].sensor_key == "s-0101"
        assert cribs[0][0].id == "vlinders"
        assert settings.mqtt.username == "gateway"
        assert settings.mqtt.password is not None
        assert settings.mqtt.password.get_secret_value() == "s3cret-pw"
        assert (settings.mqtt.host, settings.mqtt.port) == ("127.0.0.1", 1883)
        assert settings.gateway_client_id == "cribwatch-gateway-kids-f"
        alarms = settings.alarms
        assert (alarms.heartbeat_interval_s, alarms.missed_heartbeats, alarms.offline_grace_s) == (30, 3, 5)
        assert (alarms.battery_low_pct, alarms.battery_ok_pct, alarms.debounce_gpio_ms) == (20, 25, 30)
        assert (settings.buzzer.pin, settings.buzzer.led_pin, settings.buzzer.min_priority) == (18, 23, "medium")

    def test_no_child_names_only_numbered_labels(self) -> None:
        settings = load_settings(EXAMPLE, env=CREDS)
        assert all(c.label.startswith("Bedje ") for _, c in settings.cribs())

    def test_fails_without_credentials(self) -> None:
        with pytest.raises(ConfigError) as info:
            load_settings(EXAMPLE, env={})
        message = str(info.value)
        assert str(EXAMPLE) in message
        assert ENV_MQTT_USERNAME in message
        assert ENV_MQTT_PASSWORD in message
        assert "demo" in message

    @pytest.mark.parametrize("only", [ENV_MQTT_USERNAME, ENV_MQTT_PASSWORD])
    def test_fails_with_half_the_credentials(self, only: str) -> None:
        with pytest.raises(ConfigError, match="credentials"):
            load_settings(EXAMPLE, env={only: CREDS[only]})

    def test_the_file_alone_can_be_checked_without_credentials(self) -> None:
        settings = load_settings(EXAMPLE, env={}, require_credentials=False)
        assert settings.needs_credentials
        assert (settings.mqtt.username, settings.mqtt.password) == (None, None)
        assert not load_settings(EXAMPLE, env=CREDS).needs_credentials

    def test_checking_the_file_alone_still_finds_its_problems(self) -> None:
        data = mutated(lambda d: d["rooms"][0].update(grace_s=-1))
        with pytest.raises(ConfigError, match=r"rooms\[0\]\.grace_s = -1"):
            settings_from_mapping(data, env={}, require_credentials=False)

    def test_demo_needs_no_credentials(self) -> None:
        data = mutated(lambda d: d["site"].update(demo=True))
        settings = settings_from_mapping(data, env={})
        assert settings.site.demo is True
        assert (settings.mqtt.username, settings.mqtt.password) == (None, None)
        assert not settings.needs_credentials

    def test_reads_os_environ_by_default(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in (ENV_MQTT_HOST, ENV_MQTT_PORT, ENV_MQTT_USERNAME, ENV_MQTT_PASSWORD):
            monkeypatch.delenv(name, raising=False)
        with pytest.raises(ConfigError):
            load_settings(EXAMPLE)
        monkeypatch.setenv(ENV_MQTT_USERNAME, "from-env")
        monkeypatch.setenv(ENV_MQTT_PASSWORD, "pw")
        assert load_settings(EXAMPLE).mqtt.username == "from-env"


# ---------------------------------------------------------------------------------------- environment


class TestEnvironment:
    def test_env_overrides_host_and_port(self) -> None:
        env = CREDS | {ENV_MQTT_HOST: "broker.lan", ENV_MQTT_PORT: "8883"}
        settings = load_settings(EXAMPLE, env=env)
        assert (settings.mqtt.host, settings.mqtt.port) == ("broker.lan", 8883)

    def test_empty_env_values_do_not_override(self) -> None:
        settings = load_settings(EXAMPLE, env=CREDS | {ENV_MQTT_HOST: "", ENV_MQTT_PORT: ""})
        assert (settings.mqtt.host, settings.mqtt.port) == ("127.0.0.1", 1883)

    @pytest.mark.parametrize(
        "port", ["abc", "0", "65536", "-1", "18.5", "0x50", "1883 1884", "\uff11\uff18\uff18\uff13"]
    )
    def test_bad_env_port_names_the_variable_and_value(self, port: str) -> None:
        with pytest.raises(ConfigError) as info:
            load_settings(EXAMPLE, env=CREDS | {ENV_MQTT_PORT: port})
        assert info.value.problems == [f"{ENV_MQTT_PORT} = {port!r}: expected a port number 1-65535"]

    @pytest.mark.parametrize(("port", "expected"), [("1", 1), ("65535", 65535), (" 8883 ", 8883), ("018830", 18830)])
    def test_env_port_is_converted_from_text(self, port: str, expected: int) -> None:
        assert load_settings(EXAMPLE, env=CREDS | {ENV_MQTT_PORT: port}).mqtt.port == expected

    def test_bad_env_port_is_reported_with_the_file_problems(self) -> None:
        data = mutated(lambda d: d["rooms"][0].update(grace_s=-1))
        error = config_error(data, env=CREDS | {ENV_MQTT_PORT: "abc"})
        assert len(error.problems) == 2, error.problems
        assert error.problems[0].startswith(ENV_MQTT_PORT)
        assert error.problems[1].startswith("rooms[0].grace_s")

    @pytest.mark.parametrize(("key", "var"), [("username", ENV_MQTT_USERNAME), ("password", ENV_MQTT_PASSWORD)])
    def test_secrets_in_the_file_are_refused(self, key: str, var: str) -> None:
        data = mutated(lambda d: d["mqtt"].update({key: "hunter2"}))
        error = config_error(data)  # refused even though the environment has credentials
        message = str(error)
        assert f"mqtt.{key}" in message
        assert var in message
        assert "hunter2" not in message

    def test_the_password_is_never_shown(self) -> None:
        settings = load_settings(EXAMPLE, env=CREDS)
        assert "s3cret-pw" not in repr(settings)
        assert "s3cret-pw" not in str(settings.mqtt)
        assert "s3cret-pw" not in settings.model_dump_json()


# ------------------------------------------------------------------------------------------- errors


def _set(path: str, value: object) -> Callable[[dict[str, Any]], object]:
    """A change that sets ``path`` (dotted, with [i] indexes, as in the error messages) to ``value``."""

    def change(data: dict[str, Any]) -> None:
        node: Any = data
        parts = path.replace("[", ".[").split(".")
        for part in parts[:-1]:
            node = node[int(part[1:-1])] if part.startswith("[") else node.setdefault(part, {})
        last = parts[-1]
        if last.startswith("["):
            node[int(last[1:-1])] = value
        elif value is _DELETE:
            del node[last]
        else:
            node[last] = value

    return change


_DELETE = object()

# (change, fragments the message must contain: the key path, the value, what was expected)
BAD_VALUES: dict[str, tuple[Callable[[dict[str, Any]], object], list[str]]] = {
    "unknown top-level key": (_set("extras", 1), ["extras", "unknown key", "1"]),
    "unknown crib key": (
        _set("rooms[0].cribs[1].sensr", "s-0999"),
        ["rooms[0].cribs[1].sensr", "'s-0999'", "unknown key"],
    ),
    "unknown alarms key": (_set("alarms.grace_s", 3), ["alarms.grace_s", "3", "unknown key"]),
    "port not a number": (_set("mqtt.port", "abc"), ["mqtt.port", "'abc'", "valid integer"]),
    "port out of range": (_set("mqtt.port", 70000), ["mqtt.port", "70000", "65535"]),
    "grace not a number": (_set("rooms[1].grace_s", "ten"), ["rooms[1].grace_s", "'ten'", "valid number"]),
    "demo not a bool": (_set("site.demo", "maybe"), ["site.demo", "'maybe'", "valid boolean"]),
    "negative grace": (_set("rooms[0].grace_s", -1), ["rooms[0].grace_s", "-1", "greater than or equal to 0"]),
    "grace too long": (_set("rooms[2].grace_s", 3601), ["rooms[2].grace_s", "3601", "3600"]),
    "wireless sensor named like a pin": (
        _set("rooms[0].cribs[0].sensor_id", "gpio5"),
        ["rooms[0].cribs[0].sensor_id", "'gpio5'", "wired sensors"],
    ),
    "gpio pin off the header": (
        _set("rooms[3].cribs[1].gpio_pin", 28),
        ["rooms[3].cribs[1].gpio_pin", "28", "less than or equal to 27"],
    ),
    "no heartbeats": (
        _set("alarms.missed_heartbeats", 0),
        ["alarms.missed_heartbeats", "0", "greater than or equal to 1"],
    ),
    "buzzer priority": (_set("buzzer.min_priority", "loud"), ["buzzer.min_priority", "'loud'", "low|medium|high"]),
    "empty label": (_set("rooms[0].cribs[2].label", ""), ["rooms[0].cribs[2].label", "''", "at least 1"]),
    "missing site label": (_set("site.label", _DELETE), ["site.label", "missing"]),
    "no rooms": (_set("rooms", []), ["rooms", "at least 1"]),
    "room without cribs": (_set("rooms[1].cribs", []), ["rooms[1].cribs", "at least 1"]),
    "crib with both sensors": (
        _set("rooms[0].cribs[1].gpio_pin", 5),
        ["rooms[0].cribs[1]", "exactly one of sensor_id", "gpio_pin"],
    ),
    "crib with no sensor": (
        _set("rooms[3].cribs[2].gpio_pin", _DELETE),
        ["rooms[3].cribs[2]", "exactly one of sensor_id", "gpio_pin"],
    ),
    "backoff order": (
        lambda d: d["mqtt"].update(reconnect_min_s=5.0, reconnect_max_s=1.0),
        ["mqtt", "reconnect_max_s", "reconnect_min_s"],
    ),
    "battery_ok below battery_low": (
        lambda d: d["alarms"].update(battery_low_pct=30, battery_ok_pct=10),
        ["alarms", "battery_ok_pct", ">= battery_low_pct"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_bad_value_names_key_value_and_expectation(case: str) -> None:
    change, fragments = BAD_VALUES[case]
    error = config_error(mutated(change))
    message = str(error)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} missing from:\n{message}"
    assert message.startswith("invalid configuration")
    assert error.problems
    assert all(p in message for p in error.problems)


@pytest.mark.parametrize(
    ("path", "value"),
    [("rooms[0].cribs[0].id", "Bedje 1"), ("site.id", "Kids F"), ("rooms[1].cribs[0].sensor_id", "S-0201")],
)
def test_bad_id_names_key_value_and_the_id_rule(path: str, value: str) -> None:
    message = str(config_error(mutated(_set(path, value))))
    assert f"{path} = {value!r}" in message
    assert "lower case" in message or ID_PATTERN in message


def test_one_problem_in_a_room_is_reported_once() -> None:
    """A bad value inside the only room is one problem, not also 'rooms: too short' with the whole list."""
    data = mutated(lambda d: d.update(rooms=[d["rooms"][0]]))
    data["rooms"][0]["grace_s"] = -1
    error = config_error(data)
    assert len(error.problems) == 1, error.problems
    assert error.problems[0].startswith("rooms[0].grace_s")


def test_several_problems_are_all_reported() -> None:
    def change(d: dict[str, Any]) -> None:
        d["rooms"][0]["grace_s"] = -1
        d["mqtt"]["port"] = "abc"
        d["alarms"]["typo"] = 1

    error = config_error(mutated(change))
    joined = "\n".join(error.problems)
    assert len(error.problems) == 3
    for key in ("rooms[0].grace_s", "mqtt.port", "alarms.typo"):
        assert key in joined


# The file has real types: TOML says 10, "10", 10.0 and true differently, and strict validation holds it to them.
# (edit of the example file, fragments the message must contain)
WRONG_TYPES: dict[str, tuple[tuple[str, str], list[str]]] = {
    "bool as a string": (
        ('label = "KDV Kids-F"', 'label = "KDV Kids-F"\ndemo = "yes"'),
        ["site.demo = 'yes'", "valid boolean", "write true or false, without quotes"],
    ),
    "bool as a string 'true'": (
        ('label = "KDV Kids-F"', 'label = "KDV Kids-F"\ndemo = "true"'),
        ["site.demo = 'true'", "write true or false, without quotes"],
    ),
    "bool as a number": (
        ('label = "KDV Kids-F"', 'label = "KDV Kids-F"\ndemo = 1'),
        ["site.demo = 1", "valid boolean", "write true or false"],
    ),
    "port as a string": (("port = 1883", 'port = "18830"'), ["mqtt.port = '18830'", "without quotes: port = 18830"]),
    "pin as a bool": (("gpio_pin = 17", "gpio_pin = true"), ["rooms[3].cribs[0].gpio_pin = true", "not a number"]),
    "grace as a string": (
        ("grace_s = 20", 'grace_s = "10"'),
        ["rooms[1].grace_s = '10'", "without quotes: grace_s = 10"],
    ),
    "int as a float": (
        ("missed_heartbeats = 3 ", "missed_heartbeats = 3.0 "),
        ["alarms.missed_heartbeats = 3.0", "whole number", "missed_heartbeats = 3"],
    ),
    "int with a fraction": (
        ("battery_low_pct = 20", "battery_low_pct = 20.5"),
        ["battery_low_pct = 20.5", "whole number"],
    ),
    "buzzer pin as a string": (("pin = 18", 'pin = "18"'), ["buzzer.pin = '18'", "without quotes: pin = 18"]),
    "float as a string": (
        ("debounce_gpio_ms = 30", 'debounce_gpio_ms = "30"'),
        ["alarms.debounce_gpio_ms = '30'", "valid number", "debounce_gpio_ms = 30"],
    ),
    "float as a bool": (
        ("offline_grace_s = 5", "offline_grace_s = false"),
        ["offline_grace_s = false", "not a number"],
    ),
    "string as a number": (
        ('label = "Bedje 2"', "label = 2"),
        ["rooms[0].cribs[1].label = 2", 'in quotes: label = "2"'],
    ),
    "id as a number": (('sensor_id = "s-0102"', "sensor_id = 102"), ["sensor_id = 102", 'sensor_id = "102"']),
}


@pytest.mark.parametrize("case", list(WRONG_TYPES))
def test_values_of_the_wrong_toml_type_are_refused(tmp_path: Path, case: str) -> None:
    (old, new), fragments = WRONG_TYPES[case]
    text = EXAMPLE.read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "site.toml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env=CREDS)
    assert len(info.value.problems) == 1, info.value.problems
    for fragment in fragments:
        assert fragment in info.value.problems[0], info.value.problems[0]


def test_float_keys_take_toml_integers() -> None:
    settings = load_settings(EXAMPLE, env=CREDS)  # grace_s = 10, offline_grace_s = 5, debounce_gpio_ms = 30
    assert settings.rooms[0].grace_s == 10
    assert isinstance(settings.rooms[0].grace_s, float)
    assert isinstance(settings.alarms.offline_grace_s, float)
    assert isinstance(settings.alarms.debounce_gpio_ms, float)
    data = mutated(lambda d: d["mqtt"].update(reconnect_min_s=1, reconnect_max_s=30, stats_interval_s=5))
    mqtt = settings_from_mapping(data, env=CREDS).mqtt
    assert (mqtt.reconnect_min_s, mqtt.reconnect_max_s, mqtt.stats_interval_s) == (1.0, 30.0, 5.0)


def test_float_keys_take_toml_floats() -> None:
    data = mutated(lambda d: d["rooms"][0].update(grace_s=7.5))
    assert settings_from_mapping(data, env=CREDS).rooms[0].grace_s == 7.5


# ---------------------------------------------------------------------------------------- broker host


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "localhost", "broker.local", "mosquitto", "gw-01.kids-f.gent.be", "Broker.LAN", "broker.local.",
     "::1", "fe80::1", "2001:db8::10", "10.0.0.5"],
)  # fmt: skip
def test_host_is_a_host_name_or_an_ip_address(host: str) -> None:
    assert settings_from_mapping(mutated(lambda d: d["mqtt"].update(host=host)), env=CREDS).mqtt.host == host


# (value, what to write instead)
URL_LIKE_HOSTS = {
    "mqtt://broker.local": 'write host = "broker.local" (the port goes in port, 1883 by default)',
    "mqtt://broker.local:1884": 'write host = "broker.local" and port = 1884',
    "tcp://10.0.0.5:1883/": 'write host = "10.0.0.5" and port = 1883',
    "broker.local:18830": 'write host = "broker.local" and port = 18830',
    "broker.local/cribwatch": 'write host = "broker.local" (the port goes in port',
    "[::1]:1883": 'write host = "::1" and port = 1883',
    " broker.local ": 'write host = "broker.local"',
}


@pytest.mark.parametrize("value", list(URL_LIKE_HOSTS))
def test_host_with_a_scheme_port_or_path_says_what_to_write(value: str) -> None:
    error = config_error(mutated(lambda d: d["mqtt"].update(host=value)))
    assert len(error.problems) == 1, error.problems
    problem = error.problems[0]
    assert problem.startswith(f"mqtt.host = {value!r}: expected a host name or IP address"), problem
    assert "without scheme, port or path" in problem
    assert URL_LIKE_HOSTS[value] in problem


@pytest.mark.parametrize("value", ["broker local", "-broker.local", "broker..local", "999.1.1.1", "bröker", "a" * 64])
def test_host_that_is_no_host_name(value: str) -> None:
    error = config_error(mutated(lambda d: d["mqtt"].update(host=value)))
    assert error.problems == [
        f"mqtt.host = {value!r}: expected a host name (letters, digits, '-' and dots) or an IP address, "
        'e.g. host = "broker.local"'
    ]


def test_host_from_the_environment_is_checked_and_named_by_its_variable() -> None:
    error = config_error(example_data(), env=CREDS | {ENV_MQTT_HOST: "mqtt://broker.lan:1884"})
    assert error.problems == [
        f"{ENV_MQTT_HOST} = 'mqtt://broker.lan:1884': expected a host name or IP address alone, "
        f"without scheme, port or path: set {ENV_MQTT_HOST}=broker.lan and {ENV_MQTT_PORT}=1884"
    ]
    error = config_error(example_data(), env=CREDS | {ENV_MQTT_HOST: "broker lan"})
    assert error.problems[0].startswith(f"{ENV_MQTT_HOST} = 'broker lan': expected a host name")


# ----------------------------------------------------------------------------------- reserved sensor ids


@pytest.mark.parametrize("reserved", RESERVED_SENSOR_IDS)
def test_reserved_sensor_ids_are_refused(reserved: str) -> None:
    error = config_error(mutated(_set("rooms[1].cribs[2].sensor_id", reserved)))
    assert len(error.problems) == 1, error.problems
    problem = error.problems[0]
    assert problem.startswith(f"rooms[1].cribs[2].sensor_id = {reserved!r}: reserved"), problem
    assert "deploy/mosquitto/cribwatch.acl" in problem
    assert "give the sensor another id" in problem


@pytest.mark.parametrize("near", ["gateway-1", "staff2", "gw", "s-staff"])
def test_ids_that_only_resemble_a_reserved_one_are_fine(near: str) -> None:
    settings = settings_from_mapping(mutated(_set("rooms[1].cribs[2].sensor_id", near)), env=CREDS)
    assert settings.rooms[1].cribs[2].sensor_id == near


def test_the_reserved_ids_are_the_accounts_of_the_shipped_acl() -> None:
    """The ACL's sensor pattern applies to every user: each named account could write as a sensor of its name."""
    acl = ACL.read_text(encoding="utf-8")
    users = {line.split()[1] for line in acl.splitlines() if line.startswith("user ")}
    assert users == set(RESERVED_SENSOR_IDS)
    assert "RESERVED_SENSOR_IDS" in acl
    docs = CONFIGURATION_MD.read_text(encoding="utf-8")
    assert "RESERVED_SENSOR_IDS" in docs
    for reserved in RESERVED_SENSOR_IDS:
        assert f"`{reserved}`" in docs


def test_wired_pin_names_are_still_refused_for_wireless_sensors() -> None:
    message = str(config_error(mutated(_set("rooms[0].cribs[0].sensor_id", "gpio17"))))
    assert "rooms[0].cribs[0].sensor_id = 'gpio17'" in message
    assert "wired sensors" in message


# ------------------------------------------------------------------------------------------ crib labels


def test_two_cribs_of_a_room_with_one_label_are_refused_naming_both_keys() -> None:
    error = config_error(mutated(_set("rooms[1].cribs[2].label", "Bedje 1")))
    assert error.problems == [
        "rooms[1].cribs[2].label = 'Bedje 1': already used by rooms[1].cribs[0].label in the same room; "
        "staff could not tell the two cribs apart: give each crib of a room its own label"
    ]


@pytest.mark.parametrize("label", ["bedje 1", "BEDJE 1", "Bedje  1", " Bedje 1"])
def test_labels_that_only_differ_in_case_or_spaces_are_the_same_label(label: str) -> None:
    error = config_error(mutated(_set("rooms[0].cribs[3].label", label)))
    assert len(error.problems) == 1
    assert error.problems[0].startswith(f"rooms[0].cribs[3].label = {label!r}: already used by rooms[0].cribs[0].label")


def test_labels_may_repeat_across_rooms() -> None:
    settings = load_settings(EXAMPLE, env=CREDS)  # every room has a "Bedje 1"
    assert sum(1 for _, c in settings.cribs() if c.label == "Bedje 1") == len(settings.rooms)


# Duplicates: (change, the duplicated value, the key path of the second use)
DUPLICATES: dict[str, tuple[Callable[[dict[str, Any]], object], str, list[str]]] = {
    "crib id": (_set("rooms[1].cribs[0].id", "vl-1"), "vl-1", ["rooms[1].cribs[0].id"]),
    "room id": (_set("rooms[2].id", "vlinders"), "vlinders", ["rooms[2].id"]),
    "sensor id": (_set("rooms[1].cribs[0].sensor_id", "s-0101"), "s-0101", ["rooms[1].cribs[0].sensor_id"]),
    "gpio pin": (_set("rooms[3].cribs[1].gpio_pin", 17), "17", ["rooms[3].cribs[1].gpio_pin"]),
    "gpio pin = buzzer pin": (
        _set("rooms[3].cribs[0].gpio_pin", 18),
        "18",
        ["rooms[3].cribs[0].gpio_pin", "buzzer.pin"],
    ),
    "buzzer led pin = buzzer pin": (_set("buzzer.led_pin", 18), "18", ["buzzer.led_pin"]),
}


@pytest.mark.parametrize("case", list(DUPLICATES))
def test_duplicate_is_refused_naming_the_value(case: str) -> None:
    change, value, _ = DUPLICATES[case]
    message = str(config_error(mutated(change)))
    assert "unique" in message
    assert value in message


@pytest.mark.parametrize("case", list(DUPLICATES))
def test_duplicate_names_the_key_path(case: str) -> None:
    change, _, paths = DUPLICATES[case]
    message = str(config_error(mutated(change)))
    assert any(path in message for path in paths), message


def test_battery_hysteresis_error_shows_the_values() -> None:
    message = str(config_error(mutated(lambda d: d["alarms"].update(battery_low_pct=30, battery_ok_pct=10))))
    assert "alarms.battery_ok_pct" in message
    assert "10" in message
    assert "30" in message


@pytest.mark.parametrize("value", [5, "broker.lan"])
def test_mqtt_that_is_not_a_table_is_a_config_error(value: object) -> None:
    data = example_data()
    data["mqtt"] = value
    message = str(config_error(data))
    assert "mqtt" in message
    assert repr(value) in message


def test_defaults_of_a_minimal_site() -> None:
    settings = settings_from_mapping(
        {
            "site": {"id": "mini", "label": "Mini", "demo": True},
            "rooms": [{"id": "r", "label": "R", "cribs": [{"id": "c", "label": "C", "gpio_pin": 4}]}],
        },
        env={},
    )
    a = settings.alarms
    assert (a.heartbeat_interval_s, a.missed_heartbeats, a.offline_grace_s) == (30, 3, 5)
    assert (a.battery_low_pct, a.battery_ok_pct, a.debounce_mqtt_ms, a.debounce_gpio_ms) == (20, 25, 0, 30)
    assert settings.rooms[0].grace_s == 10
    assert (settings.mqtt.host, settings.mqtt.port, settings.mqtt.base_topic) == ("127.0.0.1", 1883, "cribwatch")
    assert settings.gateway_client_id == "cribwatch-gateway-mini"
    assert (settings.buzzer.pin, settings.buzzer.led_pin) == (None, None)


def test_settings_are_frozen() -> None:
    settings = load_settings(EXAMPLE, env=CREDS)
    with pytest.raises(ValueError, match="frozen"):
        settings.site.id = "other"  # type: ignore[misc]
    assert isinstance(settings, Settings)


# --------------------------------------------------------------------------------------------- files


def test_broken_toml_names_the_file_and_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('[site]\nid = "x"\nlabel = "unterminated\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env=CREDS)
    message = str(info.value)
    assert str(path) in message
    assert "not valid TOML" in message
    assert "line 3" in message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_settings(path, env=CREDS)
    message = str(info.value)
    assert str(path) in message
    assert "cannot read" in message
    assert "No such file" in message


def test_file_not_in_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    text = EXAMPLE.read_text(encoding="utf-8").replace('label = "KDV Kids-F"', 'label = "KDV Kids-F Créche"')
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load_settings(path, env=CREDS)
    assert str(path) in str(info.value)
    assert "UTF-8" in str(info.value)


# ------------------------------------------------------------------------------------------------ CLI


def run_check_config(path: Path, extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRIBWATCH_")}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra_env)
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check-config", str(path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_config_accepts_the_example() -> None:
    result = run_check_config(EXAMPLE, CREDS)
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout
    assert "kids-f" in result.stdout
    assert "12 cribs (3 wired)" in result.stdout
    assert "s3cret-pw" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("edit", "env", "expected"),
    [
        (("gpio_pin = 27", "gpio_pin = 40"), CREDS, ["rooms[3].cribs[1].gpio_pin = 40", "27"]),
        (('id = "vl-2"', 'id = "Vl 2"'), CREDS, ["rooms[0].cribs[1].id", "'Vl 2'"]),
        (("grace_s = 20", "grace_s = -5"), CREDS, ["rooms[1].grace_s = -5"]),
        (("[buzzer]", "[buzzer]\nvolume = 3"), CREDS, ["buzzer.volume", "unknown key"]),
        (('id = "kids-f"', 'id = "kids-f'), CREDS, ["not valid TOML"]),
        (("gpio_pin = 27", "gpio_pin = 40"), {}, ["rooms[3].cribs[1].gpio_pin = 40", "27"]),
    ],
    ids=["pin", "id", "grace", "unknown-key", "toml", "pin-without-credentials"],
)
def test_check_config_rejects_a_broken_file_readably(
    tmp_path: Path, edit: tuple[str, str], env: dict[str, str], expected: list[str]
) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    old, new = edit
    if old:
        assert old in text
        text = text.replace(old, new, 1)
    path = tmp_path / "site.toml"
    path.write_text(text, encoding="utf-8")

    result = run_check_config(path, env)

    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert str(path) in result.stderr
    for fragment in expected:
        assert fragment in result.stderr, result.stderr
    assert "OK" not in result.stdout


def test_check_config_checks_the_file_and_warns_about_missing_credentials() -> None:
    """The file is valid: exit 0, OK; the environment lacks the secrets: a WARNING says the gateway won't start."""
    result = run_check_config(EXAMPLE, {})
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "OK" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1, result.stderr
    assert ENV_MQTT_USERNAME in warnings[0]
    assert ENV_MQTT_PASSWORD in warnings[0]
    assert "refuse to start" in warnings[0]
    assert "demo = true" in warnings[0]


@pytest.mark.parametrize("only", [ENV_MQTT_USERNAME, ENV_MQTT_PASSWORD])
def test_check_config_warns_with_half_the_credentials(only: str) -> None:
    result = run_check_config(EXAMPLE, {only: CREDS[only]})
    assert result.returncode == 0, result.stderr
    assert "WARNING" in result.stderr


def test_check_config_does_not_warn_with_credentials_or_in_demo_mode(tmp_path: Path) -> None:
    assert "WARNING" not in run_check_config(EXAMPLE, CREDS).stderr
    demo = tmp_path / "demo.toml"
    demo.write_text(
        EXAMPLE.read_text(encoding="utf-8").replace('label = "KDV Kids-F"', 'label = "KDV Kids-F"\ndemo = true'),
        encoding="utf-8",
    )
    result = run_check_config(demo, {})
    assert result.returncode == 0, result.stderr
    assert "[DEMO MODE]" in result.stdout
    assert "WARNING" not in result.stderr


def test_check_config_on_a_missing_file(tmp_path: Path) -> None:
    result = run_check_config(tmp_path / "missing.toml", CREDS)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "cannot read" in result.stderr


# ----------------------------------------------------------------------------------- staff device ids


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("alerting.groups[0].members[0].channels[0].address", "s-0101"),  # a sensor's account
        ("alerting.groups[0].members[0].id", "s-0102"),
        ("alerting.groups[3].members[0].channels[0].address", "gateway"),
        ("alerting.groups[3].members[0].channels[0].address", "technician"),
        ("alerting.groups[3].members[0].id", "answer"),
    ],
)
def test_a_staff_device_id_that_is_a_sensor_s_or_reserved_is_refused(path: str, value: str) -> None:
    """A staff device's id is its broker account: a sensor's id would be that sensor's account, a reserved one no
    staff device's; the gateway refuses acks from both, so such a device could never acknowledge."""
    error = config_error(mutated(_set(path, value)))
    assert len(error.problems) == 1, error.problems
    assert f"{path}: {value!r} is " in error.problems[0]
    assert "a staff device needs its own id" in error.problems[0]


def test_an_address_of_another_channel_may_be_anything() -> None:
    """Only mqtt addresses are device ids: an Apprise tag may be a sensor's id without harm."""
    change = _set("alerting.groups[0].members[0].channels", [{"channel": "apprise", "address": "s-0101"}])
    settings = settings_from_mapping(mutated(change), env=CREDS)
    assert settings.alerting.groups[0].members[0].channels[0].address == "s-0101"
