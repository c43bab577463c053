"""One validated configuration tree: a TOML file for the site, the environment for secrets.

Load it with :func:`load_settings`; every error names the key, the value and what was expected
(:class:`ConfigError`). Nothing here identifies a child: rooms and cribs have ids and labels only.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Self
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gateway.credentials import CredentialsFileError, read_credentials_file
from gateway.domain.vocab import DEFAULT_BASE_TOPIC, ID_PATTERN, Identifier, Label

GpioPin = Annotated[int, Field(ge=0, le=27, description="BCM pin number of the Raspberry Pi header.")]

RESERVED_SENSOR_IDS = (
    "gateway",
    "gateway-intake",
    "staff",
    "technician",
    "technician-tool",
    "coordinator",
    "watcher",
)
"""Ids no wireless sensor may have: the broker accounts of deploy/mosquitto/cribwatch.acl other than sensors.

A sensor's broker account is its sensor id, and the ACL's sensor pattern (``cribwatch/+/sensor/%u/#``) applies
to every account: a sensor named ``gateway`` or ``staff`` would share that account, and every staff device could
publish as that sensor. Keep this in step with the ACL's ``user`` lines (tests/test_config.py checks it)."""

ENV_PREFIX = "CRIBWATCH_"
ENV_MQTT_HOST = "CRIBWATCH_MQTT_HOST"
ENV_MQTT_PORT = "CRIBWATCH_MQTT_PORT"
ENV_MQTT_USERNAME = "CRIBWATCH_MQTT_USERNAME"
ENV_MQTT_PASSWORD = "CRIBWATCH_MQTT_PASSWORD"  # noqa: S105 - the name of a variable, not a secret
ENV_MQTT_CREDENTIALS = "CRIBWATCH_MQTT_CREDENTIALS"
ENV_MQTT_INTAKE_USERNAME = "CRIBWATCH_MQTT_INTAKE_USERNAME"
ENV_MQTT_INTAKE_PASSWORD = "CRIBWATCH_MQTT_INTAKE_PASSWORD"  # noqa: S105 - the name of a variable, not a secret
ENV_MQTT_CLIENT_ID_IS_USERNAME = "CRIBWATCH_MQTT_CLIENT_ID_IS_USERNAME"
"""The credentials file of ``cribwatch provision`` (gateway/credentials.py), if not ``[mqtt] credentials_file``."""
ENV_STORE_PATH = "CRIBWATCH_STORE_PATH"
ENV_STATE_DIR = "CRIBWATCH_STATE_DIR"
DEFAULT_STATE_DIR = "/var/lib/cribwatch"
DEFAULT_RETENTION_DAYS = 400
"""Incident rows are kept a year and a month: a year of incidents for the city's yearly report and the
manager's comparisons month on month, no longer (they hold staff ids, personal data of the staff)."""


DEFAULT_MQTT_PORT = 1883

_HOST_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_HOST_ALONE = "expected a host name or IP address alone, without scheme, port or path"


def is_host(value: str) -> bool:
    """An IP address (v4 or v6, no brackets) or a host name (RFC 1123: labels of letters, digits and '-')."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        pass
    else:
        return True
    name = value.removesuffix(".")
    labels = name.split(".")
    if not name or len(name) > 253 or all(label.isdigit() for label in labels):
        return False  # all digits: meant as an IPv4 address, and not a valid one
    return all(_HOST_LABEL.fullmatch(label) for label in labels)


def _meant_host(value: str) -> tuple[str, int | None] | None:
    """The host (and port) meant by a URL-like value such as ``mqtt://broker.local:1884``, if it can be told."""
    text = value.strip()
    try:
        parts = urlsplit(text if "://" in text else f"//{text}")
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if host is None or not is_host(host):
        return None
    return host, port


def _host_problem(value: str, *, env_var: str | None = None) -> str | None:
    """None for a valid host; else what is wrong and what to write instead (in the file, or in ``env_var``)."""
    if is_host(value):
        return None
    meant = _meant_host(value)
    if meant is None:
        example = f"{env_var}=broker.local" if env_var else 'host = "broker.local"'
        return f"expected a host name (letters, digits, '-' and dots) or an IP address, e.g. {example}"
    host, port = meant
    if env_var:
        return f"{_HOST_ALONE}: set {env_var}={host}" + (f" and {ENV_MQTT_PORT}={port}" if port else "")
    if port:
        return f'{_HOST_ALONE}: write host = "{host}" and port = {port}'
    return f'{_HOST_ALONE}: write host = "{host}" (the port goes in port, {DEFAULT_MQTT_PORT} by default)'


class _Model(BaseModel):
    """Strict: the TOML file has real types, so ``"10"`` is not a number, ``"yes"`` not a boolean, ``true`` not a
    pin. Float keys still take TOML integers (``grace_s = 10``). Values from the environment are text by nature:
    :func:`settings_from_mapping` converts them itself, naming the variable when it cannot."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class SiteConfig(_Model):
    id: Identifier = Field(description="The site's id, used in every MQTT topic.")
    label: Label = Field(description="Shown to staff, e.g. 'KDV Kids-F'.")
    demo: bool = Field(
        default=False,
        description="Demo mode: allows an anonymous broker connection and `gateway --simulate-pins` (wired cribs "
        "moved over MQTT). Never on a site with children.",
    )


class MqttConfig(_Model):
    host: str = Field(
        default="127.0.0.1", min_length=1, description="Broker host name or IP address (env CRIBWATCH_MQTT_HOST)."
    )
    port: int = Field(default=DEFAULT_MQTT_PORT, ge=1, le=65535, description="Broker port (env CRIBWATCH_MQTT_PORT).")
    username: str | None = Field(default=None, description="Only from env CRIBWATCH_MQTT_USERNAME.")
    password: SecretStr | None = Field(default=None, description="Only from env CRIBWATCH_MQTT_PASSWORD.")
    credentials_file: str | None = Field(
        default=None,
        min_length=1,
        description="The file of `cribwatch provision` (mode 0600): the gateway's accounts come from its [gateway] "
        "and [gateway_intake] unless CRIBWATCH_MQTT_USERNAME is set (env CRIBWATCH_MQTT_CREDENTIALS).",
    )
    intake_username: str | None = Field(
        default=None,
        description="The second (intake) connection's account: from the credentials file or env "
        "CRIBWATCH_MQTT_INTAKE_USERNAME; default the main one's.",
    )
    intake_password: SecretStr | None = Field(
        default=None, description="From the credentials file or env CRIBWATCH_MQTT_INTAKE_PASSWORD."
    )
    tls: bool = Field(default=False, description="Connect over TLS (the broker's TLS listener, port 8883 usually).")
    tls_ca_file: str | None = Field(
        default=None, min_length=1, description="CA certificate(s) that signed the broker's (default: the system's)."
    )
    tls_cert_file: str | None = Field(default=None, min_length=1, description="Client certificate (PEM), if asked.")
    tls_key_file: str | None = Field(default=None, min_length=1, description="The client certificate's key (PEM).")
    base_topic: Identifier = Field(default=DEFAULT_BASE_TOPIC, description="First level of every topic.")
    client_id: Identifier | None = Field(
        default=None, description="Gateway's MQTT client id; default cribwatch-gateway-<site>."
    )
    client_id_is_username: bool = Field(
        default=True,
        description="The broker makes each connection's client id its username (the shipped mosquitto.conf: "
        "use_username_as_clientid), so the gateway's two connections need two accounts: outside demo mode it refuses "
        "to start with one. false only for a broker without that lock (env CRIBWATCH_MQTT_CLIENT_ID_IS_USERNAME).",
    )
    keepalive_s: int = Field(default=10, ge=2, le=600, description="MQTT keepalive of the gateway.")
    reconnect_min_s: float = Field(default=0.2, gt=0, description="First wait before reconnecting.")
    reconnect_max_s: float = Field(default=10.0, gt=0, description="Longest wait between reconnects.")
    stats_interval_s: float = Field(default=10.0, gt=0, description="How often stats are published.")

    @field_validator("host")
    @classmethod
    def _host_alone(cls, value: str) -> str:
        problem = _host_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _tls_files(self) -> Self:
        given = [k for k in ("tls_ca_file", "tls_cert_file", "tls_key_file") if getattr(self, k) is not None]
        if given and not self.tls:
            raise ValueError(f"{', '.join(given)} given but tls = false: set tls = true (and the TLS port, 8883)")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together (a client certificate and its key)")
        for key in given:
            path = Path(str(getattr(self, key)))
            if not path.is_file():
                raise ValueError(f"{key} = {str(path)!r}: no such file")
        return self

    @field_validator("reconnect_max_s")
    @classmethod
    def _backoff_order(cls, value: float, info: ValidationInfo) -> float:
        low = info.data.get("reconnect_min_s")
        if low is not None and value < low:
            raise ValueError(f"must be >= reconnect_min_s ({low})")
        return value


class AlarmsConfig(_Model):
    heartbeat_interval_s: float = Field(
        default=30.0, gt=0, description="Expected heartbeat interval until a sensor announces its own."
    )
    missed_heartbeats: int = Field(
        default=3, ge=1, le=100, description="Heartbeats missed in a row before 'sensor offline'."
    )
    offline_grace_s: float = Field(
        default=5.0,
        ge=0,
        description="How long a sensor may be gone (last will) before 'sensor offline' is raised; "
        "absorbs a sensor that reconnects at once.",
    )
    battery_low_pct: int = Field(default=20, ge=0, le=100, description="Battery below this raises an alarm.")
    battery_ok_pct: int = Field(
        default=25, ge=0, le=100, description="Battery at or above this clears it (hysteresis)."
    )
    debounce_mqtt_ms: float = Field(
        default=0.0,
        ge=0,
        le=5000,
        description="Extra debounce for wireless sensors (their firmware already debounces).",
    )
    debounce_gpio_ms: float = Field(
        default=30.0, ge=0, le=5000, description="Debounce of wired reed switches (contact bounce)."
    )

    @field_validator("battery_ok_pct")
    @classmethod
    def _battery_hysteresis(cls, value: int, info: ValidationInfo) -> int:
        low = info.data.get("battery_low_pct")
        if low is not None and value < low:
            raise ValueError(f"must be >= battery_low_pct ({low})")
        return value


class BuzzerConfig(_Model):
    pin: GpioPin | None = Field(default=None, description="Buzzer on this pin sounds for unacknowledged alarms.")
    led_pin: GpioPin | None = Field(default=None, description="LED on this pin is lit while any alarm is open.")
    min_priority: str = Field(
        default="medium", pattern="^(low|medium|high)$", description="Lowest priority that sounds the buzzer."
    )


class StoreConfig(_Model):
    path: str | None = Field(
        default=None,
        min_length=1,
        description=f"The gateway's SQLite file (env {ENV_STORE_PATH}); default <state_dir>/<site id>.sqlite3.",
    )
    state_dir: str = Field(
        default=DEFAULT_STATE_DIR,
        min_length=1,
        description=f"Directory of the gateway's own files (env {ENV_STATE_DIR}).",
    )
    retention_days: int = Field(
        default=DEFAULT_RETENTION_DAYS,
        ge=30,
        le=3650,
        description="Resolved incidents (and audit and sensor history) older than this are pruned.",
    )


INFLUX_APIS = ("v1", "v2")


def influx_env(target: str, secret: str) -> str:
    """The environment variable of a target's secret: ``CRIBWATCH_INFLUX_<NAME>_<PASSWORD|TOKEN>``."""
    return f"{ENV_PREFIX}INFLUX_{target.upper().replace('-', '_')}_{secret.upper()}"


class InfluxTargetConfig(_Model):
    """One InfluxDB to write every point to: the site's own, or the city's (each with its own outbox position)."""

    name: Identifier = Field(default="site", description="The target's name (stats, logs, its outbox position).")
    api: str = Field(
        default="v1",
        pattern="^(v1|v2)$",
        description="v1: InfluxDB 1.x (POST /write: database, retention_policy, username, password); "
        "v2: InfluxDB 2.x/3.x through influxdb-client (org, bucket, token).",
    )
    url: str = Field(min_length=1, description="e.g. http://127.0.0.1:8086 (http or https, no path).")
    database: str | None = Field(default=None, min_length=1, description="v1: the database.")
    retention_policy: str | None = Field(default=None, min_length=1, description="v1: the retention policy.")
    username: str | None = Field(default=None, min_length=1, description="v1: the user (the password: env).")
    password: SecretStr | None = Field(default=None, description="Only from env CRIBWATCH_INFLUX_<NAME>_PASSWORD.")
    org: str | None = Field(default=None, min_length=1, description="v2: the organisation.")
    bucket: str | None = Field(default=None, min_length=1, description="v2: the bucket.")
    token: SecretStr | None = Field(default=None, description="Only from env CRIBWATCH_INFLUX_<NAME>_TOKEN.")
    timeout_s: float = Field(default=10.0, gt=0, le=300, description="Longest wait for one write.")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected an http:// or https:// URL with a host, e.g. http://127.0.0.1:8086")
        if parts.username or parts.password:
            raise ValueError("credentials do not belong in the URL: the password or token comes from the environment")
        return value

    @model_validator(mode="after")
    def _what_the_api_needs(self) -> Self:
        if self.api == "v1":
            if self.database is None:
                raise ValueError("api v1 needs database")
            if self.org is not None or self.bucket is not None:
                raise ValueError("org and bucket are for api v2; api v1 takes database and retention_policy")
        else:
            if self.org is None or self.bucket is None:
                raise ValueError("api v2 needs org and bucket")
            if self.database is not None or self.retention_policy is not None or self.username is not None:
                raise ValueError("database, retention_policy and username are for api v1; api v2 takes org, bucket")
        return self

    @property
    def needs_credentials(self) -> bool:
        if self.api == "v1":
            return self.username is None or self.password is None
        return self.token is None

    @property
    def secret_env(self) -> str:
        return influx_env(self.name, "password" if self.api == "v1" else "token")


class InfluxConfig(_Model):
    """Every point to InfluxDB through the store's durable outbox (docs/influx-schema.md). Optional."""

    # strict=False on the list only: a TOML array (see RoomConfig.cribs)
    targets: tuple[InfluxTargetConfig, ...] = Field(min_length=1, max_length=4, strict=False)
    batch_size: int = Field(default=5000, ge=1, le=100_000, description="Points per write, at most.")
    flush_interval_s: float = Field(
        default=1.0, gt=0, le=300, description="A batch that is not full leaves at most this often."
    )
    retry_min_s: float = Field(default=1.0, gt=0, description="First wait after a failed write.")
    retry_max_s: float = Field(default=60.0, gt=0, description="Longest wait between retries.")
    outbox_max_points: int = Field(
        default=2_000_000,
        ge=10,
        description="The most points the outbox keeps on disk; beyond it the oldest telemetry is dropped (counted, "
        "logged), alarm points never.",
    )

    @model_validator(mode="after")
    def _unique_targets(self) -> Self:
        _unique([(f"targets[{i}].name", t.name) for i, t in enumerate(self.targets)])
        if self.retry_max_s < self.retry_min_s:
            raise ValueError(f"retry_max_s must be >= retry_min_s ({self.retry_min_s})")
        return self


ENV_WEBHOOK_URL = "CRIBWATCH_WEBHOOK_URL"
ENV_WEBHOOK_TOKEN = "CRIBWATCH_WEBHOOK_TOKEN"  # noqa: S105 - the name of a variable, not a secret
ENV_APPRISE_URLS = "CRIBWATCH_APPRISE_URLS"


class ChannelLimitsConfig(_Model):
    """What every alert channel of notices has: its queue, the timeout of one attempt, retries with backoff."""

    queue_size: int = Field(
        default=100, ge=1, le=10_000, description="Deliveries that may wait; beyond, the oldest is dropped (counted)."
    )
    timeout_s: float = Field(default=10.0, gt=0, le=120, description="Longest wait for one attempt.")
    attempts: int = Field(default=3, ge=1, le=10, description="Attempts per delivery (1 = no retry).")
    backoff_s: float = Field(default=2.0, gt=0, le=60, description="Wait after the first failed attempt; doubles.")
    backoff_max_s: float = Field(default=30.0, gt=0, le=600, description="Longest wait between attempts.")


class MqttNotifyConfig(ChannelLimitsConfig):
    """``mqtt``: notices to staff devices on ``<base>/<site>/notify/<device>`` through the gateway's own link."""

    queue_size: int = Field(default=1000, ge=1, le=10_000)
    timeout_s: float = Field(default=2.0, gt=0, le=120)
    backoff_s: float = Field(default=0.5, gt=0, le=60)


class SirenConfig(ChannelLimitsConfig):
    """``siren``: a GPIO output that sounds for the policy's siren steps until the alarm is acknowledged."""

    pin: GpioPin | None = Field(default=None, description="The siren's output pin; none: no siren channel.")
    active_high: bool = Field(default=True, description="False for a relay board that switches on a low output.")
    timeout_s: float = Field(default=1.0, gt=0, le=120)
    backoff_s: float = Field(default=0.2, gt=0, le=60)


class WebhookConfig(ChannelLimitsConfig):
    """``webhook``: each notice as an HTTP POST of JSON. The URL is a secret: env or a file outside the repository."""

    url_file: str | None = Field(
        default=None, min_length=1, description=f"A file holding the URL (env {ENV_WEBHOOK_URL} wins over it)."
    )
    url: SecretStr | None = Field(default=None, description=f"Only from env {ENV_WEBHOOK_URL} or url_file.")
    token: SecretStr | None = Field(default=None, description=f"Bearer token; only from env {ENV_WEBHOOK_TOKEN}.")


class AppriseChannelConfig(ChannelLimitsConfig):
    """``apprise``: SMS gateways, e-mail, ntfy, Telegram, Signal... through Apprise's own configuration."""

    config: str | None = Field(
        default=None, min_length=1, description="An Apprise configuration file (YAML or text) outside the repository."
    )
    urls: SecretStr | None = Field(
        default=None, description=f"Only from env {ENV_APPRISE_URLS} (whitespace-separated)."
    )
    timeout_s: float = Field(default=30.0, gt=0, le=120)


class ChannelsConfig(_Model):
    """The alert channels of notices (docs/channels.md)."""

    mqtt: MqttNotifyConfig = MqttNotifyConfig()
    siren: SirenConfig = SirenConfig()
    webhook: WebhookConfig = WebhookConfig()
    apprise: AppriseChannelConfig = AppriseChannelConfig()


class CribConfig(_Model):
    id: Identifier
    label: Label = Field(description="What staff see, e.g. 'Bedje 3'. Never a child's name.")
    sensor_id: Identifier | None = Field(default=None, description="Id of the wireless (MQTT) sensor.")
    gpio_pin: GpioPin | None = Field(default=None, description="Pin of the wired reed switch.")

    @model_validator(mode="after")
    def _one_sensor(self) -> Self:
        if (self.sensor_id is None) == (self.gpio_pin is None):
            raise ValueError("a crib needs exactly one of sensor_id (wireless) or gpio_pin (wired)")
        return self

    @field_validator("sensor_id")
    @classmethod
    def _not_a_pin_name(cls, value: str | None) -> str | None:
        if value is not None and re.fullmatch(r"gpio\d+", value):
            raise ValueError("ids gpio<N> name the wired sensors; give the wireless sensor another id")
        if value in RESERVED_SENSOR_IDS:
            names = " and ".join(repr(name) for name in RESERVED_SENSOR_IDS)
            raise ValueError(
                f"reserved: {names} are broker accounts of deploy/mosquitto/cribwatch.acl, and a sensor's "
                "broker account is its sensor id; give the sensor another id"
            )
        return value

    @property
    def sensor_key(self) -> str:
        """The sensor's id inside the gateway: the MQTT sensor id, or ``gpio<pin>`` for a wired one."""
        if self.sensor_id is not None:
            return self.sensor_id
        return f"gpio{self.gpio_pin}"

    @property
    def wired(self) -> bool:
        return self.gpio_pin is not None


class RoomConfig(_Model):
    id: Identifier
    label: Label
    grace_s: float = Field(
        default=10.0, ge=0, le=3600, description="How long a crib may stand open before the alarm (0 allowed)."
    )
    # strict=False on the list only: TOML arrays are Python lists, which strict mode would refuse for a tuple.
    # The cribs themselves stay strict (the strictness of a model comes from its own config).
    cribs: tuple[CribConfig, ...] = Field(min_length=1, strict=False)


class WebConfig(_Model):
    """The web app served by the gateway (docs/web.md): the staff alarm board and the technician console."""

    host: str = Field(default="127.0.0.1", description="Address to listen on (0.0.0.0: every interface).")
    port: int = Field(default=8080, ge=1, le=65535, description="TCP port.")
    secure_cookies: bool = Field(
        default=False, description="Mark the session cookie Secure (set it when a TLS proxy serves the app)."
    )
    session_hours: float = Field(default=12.0, gt=0, le=24 * 30, description="A login lasts this long.")
    login_failures: int = Field(
        default=5, ge=1, le=100, description="Failed logins per account or per address before a lock-out."
    )
    lockout_s: float = Field(default=300.0, gt=0, le=86400, description="How long a lock-out lasts.")
    tablet_pin: bool = Field(
        default=False,
        description="On a shared wall tablet, the person acknowledging also types their personal PIN "
        "(`cribwatch user pin`).",
    )
    plain_http: bool = Field(
        default=False,
        description="Serve the site's network over plain HTTP without Secure cookies (passwords cross the network "
        "unencrypted): refused outside demo mode unless set.",
    )

    @property
    def loopback_only(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


class Settings(_Model):
    site: SiteConfig
    mqtt: MqttConfig = MqttConfig()
    alarms: AlarmsConfig = AlarmsConfig()
    buzzer: BuzzerConfig = BuzzerConfig()
    store: StoreConfig = StoreConfig()
    influx: InfluxConfig | None = Field(default=None, description="InfluxDB targets (optional).")
    channels: ChannelsConfig = ChannelsConfig()
    web: WebConfig | None = Field(default=None, description="The web app (docs/web.md); off when absent.")
    rooms: tuple[RoomConfig, ...] = Field(min_length=1, strict=False)  # a TOML array (see RoomConfig.cribs)
    alerting: AlertingConfig = Field(
        default_factory=lambda: AlertingConfig(),  # noqa: PLW0108 - defined further down
        description="Staff groups, shifts, escalation, maintenance.",
    )
    helping_hands: HelpingHandsConfig = Field(
        default_factory=lambda: HelpingHandsConfig(),  # noqa: PLW0108 - defined further down
        description="The helping-hands requests to the city's coordinators (docs/helping-hands.md).",
    )

    @model_validator(mode="after")
    def _unique_and_safe(self) -> Self:
        rooms = list(enumerate(self.rooms))
        cribs = [(f"rooms[{i}].cribs[{j}]", c) for i, r in rooms for j, c in enumerate(r.cribs)]
        _unique([(f"rooms[{i}].id", r.id) for i, r in rooms])
        _unique([(f"{at}.id", c.id) for at, c in cribs])
        _unique([(f"{at}.sensor_id", c.sensor_id) for at, c in cribs if c.sensor_id is not None])
        for i, room in rooms:
            _unique(
                [(f"rooms[{i}].cribs[{j}].label", c.label) for j, c in enumerate(room.cribs)],
                same=_same_label,
                why=" in the same room; staff could not tell the two cribs apart: "
                "give each crib of a room its own label",
            )
        pins: list[tuple[str, int | None]] = [(f"{at}.gpio_pin", c.gpio_pin) for at, c in cribs]
        pins += [("buzzer.pin", self.buzzer.pin), ("buzzer.led_pin", self.buzzer.led_pin)]
        pins += [("channels.siren.pin", self.channels.siren.pin)]
        pins += [("alerting.ack_button_pin", self.alerting.ack_button_pin)]
        _unique([(at, pin) for at, pin in pins if pin is not None])
        room_ids = {room.id for room in self.rooms}
        for i, group in enumerate(self.alerting.groups):
            for room_id in group.rooms:
                if room_id not in room_ids:
                    raise ValueError(f"alerting.groups[{i}].rooms: no room {room_id!r} (rooms: {sorted(room_ids)})")
        self._staff_devices_are_not_sensors({c.sensor_id for _, c in cribs if c.sensor_id is not None})
        return self

    def _staff_devices_are_not_sensors(self, sensor_ids: set[str]) -> None:
        """A staff device's id is its broker account: one equal to a sensor's id would be that sensor's account
        (which may write the sensor's readings), one equal to a reserved account is no staff device's; the gateway
        refuses acks from both, so such a device could never acknowledge."""
        for i, group in enumerate(self.alerting.groups):
            for j, member in enumerate(group.members):
                devices = [(f"alerting.groups[{i}].members[{j}].id", member.id)]
                devices += [
                    (f"alerting.groups[{i}].members[{j}].channels[{k}].address", a.address)
                    for k, a in enumerate(member.channels)
                    if a.channel == MQTT_CHANNEL
                ]
                for at, device in devices:
                    if device in sensor_ids:
                        raise ValueError(f"{at}: {device!r} is a sensor's id: a staff device needs its own id")
                    if device in RESERVED_DEVICE_IDS:
                        names = ", ".join(RESERVED_DEVICE_IDS)
                        raise ValueError(f"{at}: {device!r} is reserved ({names}): a staff device needs its own id")

    @model_validator(mode="after")
    def _helping_hands_consistent(self) -> Self:
        hh = self.helping_hands
        _unique([(f"helping_hands.partner_sites[{i}].id", p.id) for i, p in enumerate(hh.partner_sites)])
        for i, partner in enumerate(hh.partner_sites):
            if partner.id == self.site.id:
                raise ValueError(f"helping_hands.partner_sites[{i}].id: {partner.id!r} is this site's own id")
        sensors = {c.sensor_id for _, c in self.cribs() if c.sensor_id is not None}
        for i, member in enumerate(hh.coordinators):
            for j, address in enumerate(member.channels):
                device = address.address or member.id
                if address.channel == MQTT_CHANNEL and (device in sensors or device in RESERVED_DEVICE_IDS):
                    raise ValueError(
                        f"helping_hands.coordinators[{i}].channels[{j}].address: {device!r} is a sensor's id or "
                        "reserved: a coordinator's device needs its own id"
                    )
        groups = {g.id for g in self.alerting.groups}
        for i, group in enumerate(hh.coordinator_groups):
            if group not in groups:
                raise ValueError(
                    f"helping_hands.coordinator_groups[{i}]: no group {group!r} in [alerting] "
                    f"(groups: {sorted(groups) or 'none'})"
                )
        return self

    @model_validator(mode="after")
    def _web_not_plain_by_default(self) -> Self:
        web = self.web
        if (
            web is not None
            and not self.site.demo
            and not web.loopback_only
            and not (web.secure_cookies or web.plain_http)
        ):
            raise ValueError(
                f"web.host = {web.host!r} serves the site's network over plain HTTP: put a TLS proxy in front and set "
                "web.secure_cookies = true, or accept unencrypted passwords with web.plain_http = true (docs/web.md)"
            )
        return self

    @property
    def needs_credentials(self) -> bool:
        """True when the gateway may not start: not in demo mode and the broker credentials are missing.

        The credentials come from the environment, not the file: :func:`load_settings` refuses such settings
        unless asked to check the file alone (``cribwatch check-config``).
        """
        return not self.site.demo and (self.mqtt.username is None or self.mqtt.password is None)

    @property
    def shared_account_problem(self) -> str | None:
        """Why the gateway may not start with these accounts: both connections log in as one account on a broker
        that makes the username the client id (they would take each other's session in turn, and sensor input
        stalls); None when they may (distinct accounts, demo mode, or ``mqtt.client_id_is_username = false``)."""
        main, intake = self.mqtt.username, self.mqtt.intake_username or self.mqtt.username
        if main is None or main != intake or self.site.demo or not self.mqtt.client_id_is_username:
            return None
        return (
            f"both MQTT connections would log in as {main!r}: the broker makes the username the client id "
            "(use_username_as_clientid), so they would take each other's session in turn. Give the intake its own "
            f"account: [mqtt] credentials_file (or {ENV_MQTT_CREDENTIALS}), the file of `cribwatch provision` with "
            f"[gateway_intake], or {ENV_MQTT_INTAKE_USERNAME}/{ENV_MQTT_INTAKE_PASSWORD}; on a broker without that "
            "lock set [mqtt] client_id_is_username = false"
        )

    @property
    def gateway_client_id(self) -> str:
        return self.mqtt.client_id or f"cribwatch-gateway-{self.site.id}"

    @property
    def store_path(self) -> Path:
        """The gateway's SQLite file: ``store.path``, or ``<store.state_dir>/<site id>.sqlite3``."""
        if self.store.path is not None:
            return Path(self.store.path)
        return Path(self.store.state_dir) / f"{self.site.id}.sqlite3"

    def cribs(self) -> list[tuple[RoomConfig, CribConfig]]:
        return [(room, crib) for room in self.rooms for crib in room.cribs]


def _unique(
    entries: list[tuple[str, Any]], *, same: Callable[[Any], Any] = lambda value: value, why: str = "; must be unique"
) -> None:
    """Raise on the first value used twice, naming both keys; ``same`` maps values that count as one to one key."""
    first: dict[Any, str] = {}
    for key, value in entries:
        seen = same(value)
        if seen in first:
            raise ValueError(f"{key} = {value!r}: already used by {first[seen]}{why}")
        first[seen] = key


def _same_label(label: str) -> str:
    """What a person reads: 'Bedje 1', 'bedje 1' and 'Bedje  1' are one label on a pager."""
    return " ".join(label.split()).casefold()


CREDENTIALS_NEEDED = (
    f"the broker needs credentials: [mqtt] credentials_file (or {ENV_MQTT_CREDENTIALS}), the file of `cribwatch "
    f"provision`, or {ENV_MQTT_USERNAME} and {ENV_MQTT_PASSWORD} "
    "(an anonymous broker connection is allowed in demo mode only: [site] demo = true)"
)
"""Why settings without broker credentials cannot run (see :attr:`Settings.needs_credentials`)."""


class ConfigError(Exception):
    """A configuration that cannot run. ``problems`` has one line per problem."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid configuration {source}:\n{lines}")


def _shown(value: Any) -> str:
    """A value as the file spells it where Python would not (booleans), else its repr."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


_TOML_INTEGER = re.compile(r"[+-]?[0-9]+")
_TOML_FLOAT = re.compile(r"[+-]?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")


def _type_hint(err_type: str, value: Any, leaf: str) -> str | None:
    """The fix for a value of the wrong TOML type (strict validation), e.g. a number written in quotes."""
    if err_type == "bool_type":
        return "write true or false, without quotes" if isinstance(value, str) else "write true or false"
    if err_type in ("int_type", "float_type"):
        if isinstance(value, bool):
            return "a boolean (true or false) is not a number; write a number"
        if isinstance(value, str):
            pattern = _TOML_INTEGER if err_type == "int_type" else _TOML_FLOAT
            if pattern.fullmatch(value.strip()):
                return f"write the number without quotes: {leaf} = {value.strip()}"
            return None
        if isinstance(value, float) and err_type == "int_type":
            if value.is_integer():
                return f"expected a whole number: write {leaf} = {int(value)}"
            return "expected a whole number"
    if err_type == "string_type" and isinstance(value, int | float):
        return f'write it in quotes: {leaf} = "{_shown(value)}"'
    return None


def _format_error(err: Any) -> str:
    loc = list(err["loc"])
    key = _dotted(loc) or "(top level)"
    msg = str(err["msg"])
    if err["type"] == "extra_forbidden":
        return f"{key}: unknown key (value {err['input']!r}); check its spelling against docs/configuration.md"
    if err["type"] == "missing":
        return f"{key}: missing; {msg.lower()}"
    value = err.get("input")
    if err["type"] == "value_error":
        problem = msg.removeprefix("Value error, ")
        if not loc:
            return problem
        if not isinstance(value, Mapping):
            return f"{key} = {value!r}: {problem}"
        return f"{key}: {problem}"
    if isinstance(value, Mapping):
        return f"{key}: {msg}"
    shown = "********" if "password" in key else _shown(value)
    if err["type"] == "string_pattern_mismatch" and err.get("ctx", {}).get("pattern") == ID_PATTERN:
        msg = "expected an id: lower case letters, digits, '-' and '_', starting with a letter or digit, at most 64"
    msg = msg.lower()
    hint = _type_hint(err["type"], value, str(loc[-1])) if loc and "password" not in key else None
    if hint:
        msg = f"{msg}; {hint}"
    return f"{key} = {shown}: {msg}" if msg else f"{key} = {shown}"


def _dotted(loc: list[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def settings_from_mapping(
    data: Mapping[str, Any],
    *,
    env: Mapping[str, str] | None = None,
    source: str = "<mapping>",
    require_credentials: bool = True,
) -> Settings:
    """Validate a parsed TOML document, with the broker address and credentials from ``env``.

    Settings that could not run for want of broker credentials (:attr:`Settings.needs_credentials`) are a
    ConfigError too, unless ``require_credentials`` is false (to check a file apart from its environment).
    """
    env = os.environ if env is None else env
    merged: dict[str, Any] = dict(data)
    raw_mqtt = merged.get("mqtt", {})
    if not isinstance(raw_mqtt, Mapping):
        raise ConfigError(source, [f"mqtt = {raw_mqtt!r}: expected a table ([mqtt] with host, port, ...)"])
    mqtt: dict[str, Any] = dict(raw_mqtt)
    for key in ("username", "password", "intake_username", "intake_password"):
        if key in mqtt:
            raise ConfigError(
                source,
                [
                    f"mqtt.{key}: secrets do not belong in the file; set {ENV_PREFIX}MQTT_{key.upper()} "
                    "or mqtt.credentials_file"
                ],
            )
    # The environment's values are text: each is converted here, and a bad one is reported under its variable.
    env_problems: list[str] = []
    for key, var in (
        ("username", ENV_MQTT_USERNAME),
        ("password", ENV_MQTT_PASSWORD),
        ("intake_username", ENV_MQTT_INTAKE_USERNAME),
        ("intake_password", ENV_MQTT_INTAKE_PASSWORD),
    ):
        if env.get(var):
            mqtt[key] = env[var]
    if env.get(ENV_MQTT_HOST):
        problem = _host_problem(env[ENV_MQTT_HOST], env_var=ENV_MQTT_HOST)
        if problem is None:
            mqtt["host"] = env[ENV_MQTT_HOST]
        else:
            env_problems.append(f"{ENV_MQTT_HOST} = {env[ENV_MQTT_HOST]!r}: {problem}")
    if env.get(ENV_MQTT_PORT):
        port = _port_from_text(env[ENV_MQTT_PORT])
        if port is None:
            env_problems.append(f"{ENV_MQTT_PORT} = {env[ENV_MQTT_PORT]!r}: expected a port number 1-65535")
        else:
            mqtt["port"] = port
    env_problems += _client_id_lock_from_env(mqtt, env) + _provisioned_accounts(mqtt, env, required=require_credentials)
    merged["mqtt"] = mqtt
    raw_store = merged.get("store", {})
    if isinstance(raw_store, Mapping):
        store: dict[str, Any] = dict(raw_store)
        for key, var in (("path", ENV_STORE_PATH), ("state_dir", ENV_STATE_DIR)):
            if env.get(var):
                store[key] = env[var]
        merged["store"] = store
    secret_problems = [*_influx_secrets(merged, env), *_channel_secrets(merged, env)]
    if secret_problems:
        raise ConfigError(source, secret_problems)
    try:
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        errors = exc.errors()
        # A list whose items failed also reports "too short" for itself: the items' errors say it all.
        nested = [tuple(e["loc"]) for e in errors]
        errors = [
            e
            for e in errors
            if not (
                e["type"] == "too_short"
                and any(len(n) > len(e["loc"]) and n[: len(e["loc"])] == tuple(e["loc"]) for n in nested)
            )
        ]
        raise ConfigError(source, env_problems + [_format_error(e) for e in errors]) from None
    if env_problems:
        raise ConfigError(source, env_problems)
    if require_credentials and settings.needs_credentials:
        raise ConfigError(source, [CREDENTIALS_NEEDED])
    if require_credentials and settings.influx is not None and not settings.site.demo:
        missing = [t for t in settings.influx.targets if t.needs_credentials]
        if missing:
            raise ConfigError(
                source,
                [
                    f"influx target {t.name!r} needs credentials: "
                    + (f"username in the file and {t.secret_env}" if t.api == "v1" else t.secret_env)
                    + " (a write without credentials is allowed in demo mode only)"
                    for t in missing
                ],
            )
    return settings


def _client_id_lock_from_env(mqtt: dict[str, Any], env: Mapping[str, str]) -> list[str]:
    """``mqtt.client_id_is_username`` from env CRIBWATCH_MQTT_CLIENT_ID_IS_USERNAME (true/false), when set."""
    text = env.get(ENV_MQTT_CLIENT_ID_IS_USERNAME, "").strip().lower()
    if not text:
        return []
    if text not in ("true", "1", "yes", "false", "0", "no"):
        return [f"{ENV_MQTT_CLIENT_ID_IS_USERNAME} = {text!r}: expected true or false"]
    mqtt["client_id_is_username"] = text in ("true", "1", "yes")
    return []


def _provisioned_accounts(mqtt: dict[str, Any], env: Mapping[str, str], *, required: bool) -> list[str]:
    """The gateway's two accounts from ``mqtt.credentials_file`` into ``mqtt``. The environment's accounts win, each
    on its own: with only ``CRIBWATCH_MQTT_USERNAME`` set, the intake still logs in as the file's [gateway_intake]
    (one account for both connections would make them take each other's session on the shipped broker). Problems
    name the file; an unreadable file is one only if ``required`` (``cribwatch check-config`` may run as a user
    that cannot read it)."""
    if env.get(ENV_MQTT_CREDENTIALS):
        mqtt["credentials_file"] = env[ENV_MQTT_CREDENTIALS]
    path = mqtt.get("credentials_file")
    if not isinstance(path, str) or not path:
        return []
    try:
        creds = read_credentials_file(path)
    except CredentialsFileError as exc:
        return [f"mqtt.credentials_file: {exc}"] if required or "cannot read" not in str(exc) else []
    main = creds.single.get("gateway")
    if "username" not in mqtt:  # the environment's wins
        if main is None:
            return [f"mqtt.credentials_file: {path}: no [gateway] account (run `cribwatch provision`)"]
        mqtt["username"], mqtt["password"] = main.username, main.password
    intake = creds.single.get("gateway_intake")
    if intake is not None and "intake_username" not in mqtt:  # the environment's wins
        mqtt["intake_username"], mqtt["intake_password"] = intake.username, intake.password
    return []


def _influx_secrets(merged: dict[str, Any], env: Mapping[str, str]) -> list[str]:
    """Each InfluxDB target's password or token, from the environment into ``merged`` (never from the file)."""
    raw = merged.get("influx")
    if not isinstance(raw, Mapping) or not isinstance(raw.get("targets"), list):
        return []
    problems: list[str] = []
    targets: list[Any] = []
    for i, target in enumerate(raw["targets"]):
        if not isinstance(target, Mapping):
            targets.append(target)
            continue
        out = dict(target)
        name = out.get("name", "site")
        for key in ("password", "token"):
            if key in out:
                var = influx_env(str(name), key)
                problems.append(f"influx.targets[{i}].{key}: secrets do not belong in the file; set {var}")
            elif isinstance(name, str) and env.get(influx_env(name, key)):
                out[key] = env[influx_env(name, key)]
        targets.append(out)
    merged["influx"] = {**raw, "targets": targets}
    return problems


def _channel_secrets(merged: dict[str, Any], env: Mapping[str, str]) -> list[str]:
    """The alert channels' secrets into ``merged``: the webhook's URL and token and Apprise's URLs come from the
    environment (the webhook URL also from ``url_file``), never from the site file. Returns the problems."""
    raw = merged.get("channels")
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        return [f"channels = {raw!r}: expected a table ([channels.webhook], [channels.apprise], ...)"]
    channels: dict[str, Any] = dict(raw)
    problems: list[str] = []
    secrets_in_file = (
        ("webhook", "url", ENV_WEBHOOK_URL),
        ("webhook", "token", ENV_WEBHOOK_TOKEN),
        ("apprise", "urls", ENV_APPRISE_URLS),
    )
    for table, key, var in secrets_in_file:
        section = channels.get(table)
        if isinstance(section, Mapping) and key in section:
            problems.append(f"channels.{table}.{key}: secrets do not belong in the site file; set {var}")
    if problems:
        return problems
    webhook = channels.get("webhook", {})
    if isinstance(webhook, Mapping):
        webhook = dict(webhook)
        url = env.get(ENV_WEBHOOK_URL) or None
        url_file = webhook.get("url_file")
        if url is None and isinstance(url_file, str) and url_file:
            try:
                url = Path(url_file).read_text(encoding="utf-8").strip() or None
            except (OSError, UnicodeDecodeError) as exc:
                return [f"channels.webhook.url_file = {url_file!r}: cannot read the file ({exc})"]
            if url is None:
                return [f"channels.webhook.url_file = {url_file!r}: the file is empty"]
        if url is not None:
            problem = _webhook_url_problem(url, demo=_is_demo(merged))
            if problem is not None:
                return [f"the webhook URL ({ENV_WEBHOOK_URL} or channels.webhook.url_file): {problem}"]
            webhook["url"] = url
        if env.get(ENV_WEBHOOK_TOKEN):
            webhook["token"] = env[ENV_WEBHOOK_TOKEN]
        channels["webhook"] = webhook
    apprise = channels.get("apprise", {})
    if isinstance(apprise, Mapping) and env.get(ENV_APPRISE_URLS, "").strip():
        channels["apprise"] = {**apprise, "urls": env[ENV_APPRISE_URLS]}
    merged["channels"] = channels
    return problems


def _is_demo(merged: Mapping[str, Any]) -> bool:
    site = merged.get("site")
    return isinstance(site, Mapping) and site.get("demo") is True


def _webhook_url_problem(url: str, *, demo: bool) -> str | None:
    """None for a URL the webhook may post to: https, or http to this machine (a local bridge) or on a demo site."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return "not a URL"
    if parts.scheme not in {"http", "https"} or not host:
        return "expected an http(s) URL, e.g. https://alerts.example.org/hook/<token>"
    if parts.scheme == "http" and not demo:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            return "plain http would send alarms and the token unencrypted: use https (http only to this machine)"
    return None


def _port_from_text(text: str) -> int | None:
    """A TCP port written as text (an environment variable), or None if it is not one."""
    digits = text.strip()
    if not digits.isascii() or not digits.isdigit():
        return None
    port = int(digits)
    return port if 1 <= port <= 65535 else None


def load_settings(
    path: str | Path, *, env: Mapping[str, str] | None = None, require_credentials: bool = True
) -> Settings:
    """Read and validate the TOML file at ``path``; ConfigError on any problem.

    ``require_credentials=False`` checks the file alone: settings without broker credentials are returned
    (see :attr:`Settings.needs_credentials`) instead of refused.
    """
    return settings_from_mapping(
        read_site_file(path), env=env, source=str(path), require_credentials=require_credentials
    )


def read_site_file(path: str | Path) -> dict[str, Any]:
    """The TOML document at ``path``, not validated; ConfigError if it cannot be read or is not TOML."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read the file: {exc.strerror}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), [f"not UTF-8 text (byte {exc.start}): save the file as UTF-8"]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [f"not valid TOML: {exc}"]) from None


# ============================================================================ alerting (issue 7: who, when, how)

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
GROUP_SELECTORS = ("room", "site", "managers")
"""Words a policy step may name instead of a group id: the alarm's room groups, every site-wide group, every
managers group. No group may have one of these ids."""
SIREN_CHANNEL = "siren"
"""The channel name of the site's siren: a step with ``siren = true`` adds it as a recipient."""
MQTT_CHANNEL = "mqtt"
"""The channel name of staff devices: a member's ``mqtt`` address is a staff device id (its broker account)."""
RESERVED_DEVICE_IDS = (
    "gateway",
    "gateway-intake",
    "staff",
    "technician",
    "technician-tool",
    "answer",
    "coordinator",
    "watcher",
)
"""Ids no staff device may have: the broker accounts that are not staff devices' (the ACL's ``ack/%u`` pattern
applies to every account) and ``answer`` (``ack/answer/...`` are the gateway's answers)."""
_HHMM = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"


def hhmm_minutes(text: str) -> int:
    """``"07:30"`` -> 450 (minutes since midnight)."""
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


class ShiftConfig(_Model):
    """When a group or member is on duty: some days of the week, from ``start`` to ``end`` (local time of the
    site). ``end`` before ``start`` runs past midnight into the next day."""

    days: tuple[str, ...] = Field(
        default=WEEKDAYS, min_length=1, strict=False, description="Days the shift starts on: mon, tue, ... sun."
    )
    start: str = Field(pattern=_HHMM, description="Local time the shift starts, HH:MM (24 h).")
    end: str = Field(pattern=_HHMM, description="Local time it ends, HH:MM; before start: the next day.")

    @field_validator("days")
    @classmethod
    def _known_days(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        wrong = [d for d in value if d not in WEEKDAYS]
        if wrong:
            raise ValueError(f"unknown days {wrong}: write {', '.join(WEEKDAYS)}")
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if self.start == self.end:
            raise ValueError(f"start and end are both {self.start}: a shift of no time; leave shifts out for always")
        return self


class ChannelAddress(_Model):
    """One way to reach a member: a channel of the site (``mqtt``, ``webhook``, ``apprise`` or a named instance)
    and what it needs (a staff device id for ``mqtt``, a URL for a webhook or an Apprise target)."""

    channel: Identifier = Field(description="The channel's name (mqtt, webhook, apprise, or a named instance).")
    address: str = Field(min_length=1, max_length=512, description="What the channel needs to reach the member.")

    @field_validator("channel")
    @classmethod
    def _not_the_siren(cls, value: str) -> str:
        if value == SIREN_CHANNEL:
            raise ValueError("the siren is not a member's channel: give a policy step siren = true")
        return value


class MemberConfig(_Model):
    """A member of a staff group: a staff id or a staff device id (a pager, a tablet), never a person's name
    nor a child's."""

    id: Identifier = Field(description="A staff id or a staff device id (e.g. pager-vl-1); never a name.")
    channels: tuple[ChannelAddress, ...] = Field(
        min_length=1, strict=False, description="How the member is reached (one or more channel addresses)."
    )
    shifts: tuple[ShiftConfig, ...] = Field(
        default=(), strict=False, description="When this member is on duty (none: whenever the group is)."
    )


class GroupConfig(_Model):
    """A staff group: the people (devices) who get an alarm's notices at a step of its chain."""

    id: Identifier
    kind: str = Field(pattern="^(room|site|managers)$", description="room, site (site-wide) or managers.")
    rooms: tuple[Identifier, ...] = Field(
        default=(), strict=False, description="kind = room: the rooms whose alarms this group gets first."
    )
    members: tuple[MemberConfig, ...] = Field(min_length=1, strict=False)
    shifts: tuple[ShiftConfig, ...] = Field(
        default=(), strict=False, description="When the group is on duty (none: always)."
    )

    @field_validator("id")
    @classmethod
    def _not_a_selector(cls, value: str) -> str:
        if value in GROUP_SELECTORS:
            raise ValueError(f"reserved: {', '.join(GROUP_SELECTORS)} name kinds of groups in policy steps")
        return value

    @model_validator(mode="after")
    def _rooms_for_room_groups(self) -> Self:
        if self.kind == "room" and not self.rooms:
            raise ValueError(f'group {self.id!r} is a room group: name its rooms (rooms = ["..."])')
        if self.kind != "room" and self.rooms:
            raise ValueError(f"group {self.id!r} is kind {self.kind!r}: only room groups have rooms")
        return self


class StepConfig(_Model):
    """One step of an escalation chain: wait ``after_s`` since the previous step (or the alarm), then notify."""

    after_s: float = Field(default=0.0, ge=0, le=86400, description="Wait since the previous step, seconds.")
    notify: tuple[str, ...] = Field(
        default=(),
        strict=False,
        description="Group ids, or room (the alarm's room groups), site (every site-wide group), managers.",
    )
    siren: bool = Field(default=False, description="Sound the site's siren at this step.")

    @model_validator(mode="after")
    def _someone(self) -> Self:
        if not self.notify and not self.siren:
            raise ValueError("a step that notifies nobody: give notify = [...] or siren = true")
        return self


class PolicyConfig(_Model):
    """The escalation chain of one priority: steps in order, then repeats until someone acknowledges."""

    priority: str = Field(pattern="^(low|medium|high)$")
    steps: tuple[StepConfig, ...] = Field(min_length=1, strict=False)
    repeat_every_s: float = Field(
        gt=0, le=86400, description="After the last step, wait this long and go on from repeat_from: never silence."
    )
    repeat_from: int = Field(default=0, ge=0, description="The step (0 = the first) the chain repeats from.")

    @model_validator(mode="after")
    def _repeat_inside(self) -> Self:
        if self.repeat_from >= len(self.steps):
            raise ValueError(f"repeat_from = {self.repeat_from}: there are only {len(self.steps)} steps (0..)")
        if self.steps[0].after_s != 0:
            raise ValueError("the first step must notify at once (after_s = 0): the grace period is the room's")
        return self


class MaintenanceConfig(_Model):
    max_s: float = Field(
        default=8 * 3600.0, gt=0, le=7 * 86400, description="Longest maintenance a technician may set (seconds)."
    )


class FlappingConfig(_Model):
    transitions: int = Field(
        default=6, ge=3, le=1000, description="Latch changes within window_s that make a crib flapping."
    )
    window_s: float = Field(default=60.0, gt=0, le=3600, description="The window flapping is counted in.")
    quick_resolve_s: float = Field(
        default=5.0, ge=0, le=600, description="An alarm resolved within this counts as a nuisance alarm."
    )


class AlertingConfig(_Model):
    """Who is told, when and how: staff groups, shifts, escalation policies, reminders, maintenance, flapping."""

    time_zone: str = Field(default="Europe/Amsterdam", description="The site's local time zone (for shifts).")
    reminder_after_s: float = Field(
        default=300.0,
        ge=1,
        le=86400,
        description="An acknowledged crib still open this long comes back: a reminder, then escalation again.",
    )
    test_alarm_s: float = Field(
        default=120.0, gt=0, le=3600, description="A test alarm nobody acknowledges ends by itself after this."
    )
    ack_button_pin: GpioPin | None = Field(
        default=None, description="The gateway's own acknowledge button (to ground): acknowledges every open alarm."
    )
    groups: tuple[GroupConfig, ...] = Field(default=(), strict=False)
    policies: tuple[PolicyConfig, ...] = Field(
        default=(), strict=False, description="One per priority at most; a priority left out gets the default."
    )
    maintenance: MaintenanceConfig = MaintenanceConfig()
    flapping: FlappingConfig = FlappingConfig()

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        import zoneinfo  # noqa: PLC0415 - only to check the name

        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError("unknown time zone: write an IANA name such as Europe/Amsterdam") from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        _unique([(f"alerting.groups[{i}].id", g.id) for i, g in enumerate(self.groups)])
        _unique([(f"alerting.policies[{i}].priority", p.priority) for i, p in enumerate(self.policies)])
        ids = {g.id for g in self.groups}
        for i, policy in enumerate(self.policies):
            for j, step in enumerate(policy.steps):
                for target in step.notify:
                    if target not in ids and target not in GROUP_SELECTORS:
                        raise ValueError(
                            f"alerting.policies[{i}].steps[{j}].notify: no group {target!r} "
                            f"(groups: {sorted(ids) or 'none'}; or one of {', '.join(GROUP_SELECTORS)})"
                        )
        return self

    def policy_for(self, priority: str) -> PolicyConfig:
        """The site's chain for ``priority``, or the default one."""
        for policy in self.policies:
            if policy.priority == priority:
                return policy
        return DEFAULT_POLICIES[priority]


DEFAULT_POLICIES: dict[str, PolicyConfig] = {
    "high": PolicyConfig(
        priority="high",
        steps=(
            StepConfig(after_s=0, notify=("room",)),
            StepConfig(after_s=30, notify=("site",), siren=True),
            StepConfig(after_s=30, notify=("managers",)),
        ),
        repeat_every_s=30,
        repeat_from=1,
    ),
    "medium": PolicyConfig(
        priority="medium",
        steps=(StepConfig(after_s=0, notify=("room",)), StepConfig(after_s=120, notify=("site",))),
        repeat_every_s=300,
        repeat_from=1,
    ),
    "low": PolicyConfig(
        priority="low",
        steps=(StepConfig(after_s=0, notify=("managers",)),),
        repeat_every_s=4 * 3600,
        repeat_from=0,
    ),
}
"""The crèche defaults: a crib open (high) goes to its room at once, the whole site and the siren after 30 s, the
managers after 60 s, repeating every 30 s; a silent sensor (medium) to its room, the site after 2 minutes,
repeating every 5; a low battery (low) to the managers, again every 4 hours."""


SITE_KINDS = ("kdv", "cmww", "bso", "psz", "other")
"""Kinds of site that may ask for helping hands: a day nursery (kdv), a partner crèche (cmww), out-of-school care
(bso), a toddler group (psz)."""


class PartnerSiteConfig(_Model):
    """A site that asks for helping hands through this gateway's form (it has no gateway of its own, no cribs)."""

    id: Identifier = Field(description="The partner site's id (in the requests' MQTT payloads).")
    label: Label = Field(description="Its name as staff and coordinators read it, e.g. 'BSO De Vlinder'.")
    kind: str = Field(default="other", pattern=f"^({'|'.join(SITE_KINDS)})$", description="kdv, cmww, bso, psz, other.")


class HelpingHandsConfig(_Model):
    """``[helping_hands]``: the request form for extra staff ("handjes hulp") and its coordinators."""

    site_kind: str = Field(default="kdv", pattern=f"^({'|'.join(SITE_KINDS)})$", description="This site's kind.")
    partner_sites: tuple[PartnerSiteConfig, ...] = Field(
        default=(), strict=False, description="The other sites this site's staff may ask for (no crib data)."
    )
    max_people: int = Field(default=8, ge=1, le=50, description="The most people one request may ask for.")
    note_max: int = Field(default=300, ge=20, le=2000, description="The longest note on a request, in characters.")
    days_ahead: int = Field(default=90, ge=1, le=366, description="How far ahead a request may be, in days.")
    coordinators: tuple[MemberConfig, ...] = Field(
        default=(),
        strict=False,
        description="The coordinators told of new requests (id and channels, as a staff group's members; they get no "
        "alarms): low priority, behind every alarm notice.",
    )
    coordinator_groups: tuple[Identifier, ...] = Field(
        default=(),
        strict=False,
        description="[alerting] groups told of new requests too (e.g. the managers).",
    )
    notify: str = Field(
        default="all",
        pattern="^(all|urgent)$",
        description="Tell the coordinators of every new request, or urgent ones.",
    )
    phone_region: str = Field(
        default="NL", pattern="^[A-Z]{2}$", description="The country a phone number without +code is read in."
    )


Settings.model_rebuild()
