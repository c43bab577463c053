"""Shared fixtures for the cribwatch test suite.

Brokers
    ``mosquitto_broker`` (session): one real Mosquitto for the whole run, password-protected, in a temporary
    directory. It runs the shipped configuration (deploy/mosquitto/mosquitto.conf) without the ACL and the client-id
    lock: its one account plays every role (tests/test_broker_lockdown.py runs the whole lock-down).
    ``mqtt_endpoint`` (function): where it listens and the credentials to use.
    Mosquitto is required: ``make test`` installs it (``make system-deps``); a missing one fails, not skips.
    Tests that kill, restart or reconfigure a broker should start their own ``MosquittoBroker`` rather than
    disturb the shared one.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.brokers import BrokerEndpoint, MosquittoBroker, find_mosquitto
from gateway.settings import DEFAULT_STATE_DIR

# -- brokers -----------------------------------------------------------------------------------------

MQTT_USERNAME = "cribwatch"


@pytest.fixture(scope="session")
def mosquitto_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    """A running Mosquitto on 127.0.0.1 for the whole session; anonymous clients are refused."""
    if find_mosquitto() is None:
        pytest.fail(
            "Mosquitto is not installed (not in PATH nor /usr/sbin). Run `make system-deps` "
            "(or `make test`, which does it) to install Debian's mosquitto and mosquitto-clients.",
            pytrace=False,
        )
    workdir = tmp_path_factory.mktemp("mosquitto")
    with MosquittoBroker(workdir, users={MQTT_USERNAME: secrets.token_urlsafe(16)}, shipped=True) as broker:
        yield broker


@pytest.fixture
def mqtt_endpoint(mosquitto_broker: MosquittoBroker) -> BrokerEndpoint:
    """Host, port, username and password of the session's Mosquitto.

    If an earlier test killed the shared broker, it is started again (same port, users and persistence).
    """
    if not mosquitto_broker.running:
        mosquitto_broker.start()
    return mosquitto_broker.endpoint


# -- the gateway's own files -------------------------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def _no_store_in_the_system_state_dir() -> Iterator[None]:
    """A gateway built by a test with an environment of its own, without ``CRIBWATCH_STATE_DIR``, would keep its
    store in /var/lib/cribwatch (it happened twice): the run fails then, naming the files."""
    system = Path(DEFAULT_STATE_DIR)
    existed = system.exists()
    yield
    if not existed and system.exists():
        left = sorted(p.name for p in system.iterdir())
        pytest.fail(f"tests wrote to {system}: {left}; give their settings the test's CRIBWATCH_STATE_DIR")


@pytest.fixture(autouse=True)
def state_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test's gateway keeps its store in a directory of its own (``CRIBWATCH_STATE_DIR``), never in
    /var/lib/cribwatch: settings built from the environment find it there, and the builders that pass an
    environment of their own copy it (``tests.helpers.test_env``)."""
    path = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("CRIBWATCH_STATE_DIR", str(path))
    # The shared broker (mosquitto_broker) has no client-id lock: its one account may serve both of the gateway's
    # connections (the lock-down tests run the shipped broker with the lock and provisioned accounts).
    monkeypatch.setenv("CRIBWATCH_MQTT_CLIENT_ID_IS_USERNAME", "false")
    return path
