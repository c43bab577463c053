"""Run a real MQTT broker for tests, benchmarks and the demo.

Two brokers are supported:

* :class:`MosquittoBroker` runs the system's ``mosquitto`` (Debian's 2.0.x) as a subprocess with a
  generated configuration in a work directory of its own. This is what the tests and the benchmark use,
  since it is what a site gateway runs in production.
* :class:`AmqttBroker` runs amqtt (an optional dependency, extra ``demo``) inside the current event loop.
  It only exists so that ``cribwatch demo`` works on a machine without Mosquitto.

:func:`start_embedded_broker` picks one of them for the demo.

Nothing here does any work at import time.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, NoReturn, Self

from gateway.mqtt.connection import BrokerAddress

__all__ = [
    "SHIPPED_CONFIG",
    "AmqttBroker",
    "BrokerEndpoint",
    "BrokerTls",
    "MosquittoBroker",
    "find_mosquitto",
    "free_port",
    "start_embedded_broker",
]

log = logging.getLogger(__name__)

LOCALHOST = "127.0.0.1"
_SBIN_MOSQUITTO = "/usr/sbin/mosquitto"
_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 5.0
_POLL_INTERVAL_S = 0.01
_LOG_TAIL_LINES = 40
# Attempts at binding a freshly picked free port (another process may grab it in between).
_PORT_ATTEMPTS = 3

_DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "mosquitto"
SHIPPED_CONFIG = _DEPLOY / "mosquitto.conf"
"""The site broker's configuration (deploy/mosquitto/): what ``shipped=True`` runs, with this machine's paths."""
SHIPPED_TLS = _DEPLOY / "tls.conf"


@dataclass(frozen=True)
class BrokerTls:
    """Certificates for the TLS listener of deploy/mosquitto/tls.conf (``MosquittoBroker(..., tls=...)``)."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    require_certificate: bool = False


_PLACED = ("pid_file", "user", "listener", "persistence_location", "log_dest", "password_file", "acl_file")
"""Directives of the shipped files that name this machine's paths, users and ports: replaced, every other kept."""


def shipped_config_text(
    *,
    port: int,
    workdir: Path,
    password_file: Path,
    acl_file: Path | None,
    tls: BrokerTls | None = None,
    tls_port: int | None = None,
    extra_config: str = "",
) -> str:
    """deploy/mosquitto/mosquitto.conf (and tls.conf with ``tls``) for a broker on 127.0.0.1 in ``workdir``: the
    directives of :data:`_PLACED` point here, ``include_dir`` becomes the TLS listener and ``extra_config`` (a
    bridge, say), every other line is the shipped one. Without ``acl_file`` the ACL and the client-id lock are
    left out (a broker whose one account plays every role)."""
    out = ["# deploy/mosquitto/mosquitto.conf with this machine's paths (devtools.brokers.shipped_config_text)"]
    for line in SHIPPED_CONFIG.read_text(encoding="utf-8").splitlines():
        key = line.split(maxsplit=1)[0] if line.strip() and not line.lstrip().startswith("#") else ""
        if key == "pid_file":
            continue
        if key == "user":
            if os.geteuid() == 0:  # as root Mosquitto drops to `mosquitto`, which cannot write workdir
                out.append("user root")
            continue
        if key == "listener":
            out.append(f"listener {port} {LOCALHOST}")
        elif key == "persistence_location":
            out.append(f"persistence_location {workdir.resolve()}/")
        elif key == "log_dest":
            out.append(f"log_dest file {(workdir / 'mosquitto.log').resolve()}")
        elif key == "password_file":
            out.append(f"password_file {password_file.resolve()}")
        elif key in ("acl_file", "use_username_as_clientid"):
            if acl_file is not None:
                out.append(f"acl_file {acl_file.resolve()}" if key == "acl_file" else line)
        elif key == "include_dir":
            if tls is not None and tls_port is not None:
                out += ["", "# deploy/mosquitto/tls.conf", *_tls_lines(tls, tls_port)]
            if extra_config.strip():
                out += ["", "# extra_config", extra_config.strip()]
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def _tls_lines(tls: BrokerTls, port: int) -> list[str]:
    paths = {"cafile": tls.ca_file, "certfile": tls.cert_file, "keyfile": tls.key_file}
    lines = []
    for line in SHIPPED_TLS.read_text(encoding="utf-8").splitlines():
        key = line.split(maxsplit=1)[0] if line.strip() and not line.lstrip().startswith("#") else ""
        if key == "listener":
            lines.append(f"listener {port} {LOCALHOST}")
        elif key in paths:
            lines.append(f"{key} {paths[key].resolve()}")
        elif key == "require_certificate":
            lines.append(f"require_certificate {'true' if tls.require_certificate else 'false'}")
        elif key:
            lines.append(line)
    return lines


def stop_child(proc: subprocess.Popen[Any] | None, what: str, timeout: float) -> None:
    """SIGTERM a server this module started, SIGKILL if it is still there after ``timeout`` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        log.warning("%s (pid %d) ignored SIGTERM: killing it", what, proc.pid)
        proc.kill()
        proc.wait()


def kill_child(proc: subprocess.Popen[Any] | None) -> None:
    """SIGKILL a server, as a crash or a pulled plug would."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        port: int = sock.getsockname()[1]
        return port


def find_mosquitto() -> str | None:
    """Path of the ``mosquitto`` executable: from PATH, else /usr/sbin (often not in a user's PATH)."""
    found = shutil.which("mosquitto")
    if found is not None:
        return found
    if os.access(_SBIN_MOSQUITTO, os.X_OK):
        return _SBIN_MOSQUITTO
    return None


def _find_mosquitto_passwd(mosquitto: str) -> str | None:
    found = shutil.which("mosquitto_passwd")
    if found is not None:
        return found
    for candidate in (Path(mosquitto).with_name("mosquitto_passwd"), Path("/usr/bin/mosquitto_passwd")):
        if os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _mosquitto_password_hash(password: str) -> str:
    """Hash ``password`` the way mosquitto_passwd 2.0 does (``$7$``: PBKDF2-HMAC-SHA512, 101 rounds)."""
    iterations = 101
    salt = secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def _port_accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no output)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty)"


BrokerEndpoint = BrokerAddress
"""Where a broker listens, and the credentials to give it (None for anonymous)."""


class MosquittoBroker:
    """A Mosquitto broker run as a subprocess on 127.0.0.1, configured from scratch in ``workdir``.

    The configuration sets ``set_tcp_nodelay true`` (without it each hop costs about 44 ms of Nagle plus
    delayed ACK), keeps persistence in ``workdir`` (persistent sessions survive :meth:`restart`, which
    stops with SIGTERM so Mosquitto saves its database first; :meth:`kill` loses what was not saved, like a
    crash) and logs everything to ``workdir/mosquitto.log``.

    With ``users`` anonymous clients are refused and the first user's credentials go into :attr:`endpoint`.
    With ``shipped`` it runs deploy/mosquitto/mosquitto.conf itself (:func:`shipped_config_text`): with ``users``
    or a ``password_file`` (from ``cribwatch provision``), an ``acl_file``, and a TLS listener on :attr:`tls_port`
    with ``tls``.
    With ``own_session`` Mosquitto runs in a session (and process group) of its own, so a Ctrl-C in the terminal
    reaches the parent only, which then stops Mosquitto itself, after its clients.

    Use it as a context manager (``with MosquittoBroker(dir) as broker: broker.endpoint``) or call
    :meth:`start` and :meth:`stop`. Blocking: from async code, calls take tens of milliseconds
    (``asyncio.to_thread`` if that matters).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        users: Mapping[str, str] | None = None,
        extra_config: str = "",
        own_session: bool = False,
        shipped: bool = False,
        password_file: Path | None = None,
        acl_file: Path | None = None,
        tls: BrokerTls | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self._shipped = shipped
        self._given_password_file = password_file
        self._acl_file = acl_file
        self._tls = tls
        self.tls_port: int | None = None
        """The TLS listener's port once started (with ``tls``); it stays across :meth:`restart`."""
        if not shipped and (password_file is not None or acl_file is not None or tls is not None):
            msg = "password_file, acl_file and tls need shipped=True (the shipped configuration)"
            raise ValueError(msg)
        if shipped and password_file is None and not users:
            msg = "the shipped configuration refuses anonymous clients: give users or a password_file"
            raise ValueError(msg)
        self._own_session = own_session
        self._port: int | None = port
        self._users = dict(users or {})
        for name in self._users:
            if not name or ":" in name or any(ch.isspace() for ch in name):
                msg = f"invalid Mosquitto username {name!r}"
                raise ValueError(msg)
        self._extra_config = extra_config
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None

    # -- paths ------------------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.workdir / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    @property
    def password_path(self) -> Path:
        return self.workdir / "passwd"

    @property
    def _stderr_path(self) -> Path:
        return self.workdir / "mosquitto.stderr"

    # -- state ------------------------------------------------------------------------------------

    @property
    def endpoint(self) -> BrokerEndpoint:
        """Host, port and the first user's credentials. Stays valid across :meth:`restart`."""
        if self._port is None:
            msg = "MosquittoBroker has not been started: no port yet"
            raise RuntimeError(msg)
        username, password = next(iter(self._users.items()), (None, None))
        return BrokerEndpoint(LOCALHOST, self._port, username, password)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc is not None else None

    def log_text(self) -> str:
        """Everything Mosquitto logged so far (all log types), across restarts."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> BrokerEndpoint:
        """Write the configuration, start Mosquitto and wait until its port accepts connections."""
        if self.running:
            msg = f"Mosquitto is already running (pid {self.pid}) on port {self._port}"
            raise RuntimeError(msg)
        self._reap()
        executable = find_mosquitto()
        if executable is None:
            msg = "Mosquitto is not installed (not in PATH nor /usr/sbin): run `make system-deps`"
            raise RuntimeError(msg)
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self._users and self._given_password_file is None:
            self._write_password_file(executable)

        # A port we picked ourselves may be taken by someone else before Mosquitto binds it: pick again.
        attempts = _PORT_ATTEMPTS if self._port is None else 1
        for attempt in range(1, attempts + 1):
            port = self._port if self._port is not None else free_port()
            try:
                self._launch(executable, port)
            except RuntimeError as exc:
                if attempt == attempts or "Address already in use" not in str(exc):
                    raise
                log.debug("port %d was taken before Mosquitto could bind it; retrying", port)
                continue
            self._port = port
            break
        log.debug("Mosquitto (pid %s) listening on %s:%s", self.pid, LOCALHOST, self._port)
        return self.endpoint

    def stop(self) -> None:
        """Stop Mosquitto with SIGTERM (it saves its persistence database), SIGKILL after 5 s."""
        stop_child(self._proc, "Mosquitto", _STOP_TIMEOUT_S)
        self._reap()

    def kill(self) -> None:
        """SIGKILL Mosquitto, as a crash would (for fault tests). :meth:`start` brings it back."""
        kill_child(self._proc)
        self._reap()

    def reload(self) -> None:
        """SIGHUP, as ``systemctl reload mosquitto``: Mosquitto reads its password file and ACL again."""
        if self._proc is None or self._proc.poll() is not None:
            msg = "Mosquitto is not running"
            raise RuntimeError(msg)
        self._proc.send_signal(signal.SIGHUP)

    def restart(self) -> BrokerEndpoint:
        """Stop (cleanly) and start again on the same port, with the same users and persistence."""
        self.stop()
        return self.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals --------------------------------------------------------------------------------

    def _config_text(self, port: int) -> str:
        if self._shipped:
            if self._tls is not None and self.tls_port is None:
                self.tls_port = free_port()
            return shipped_config_text(
                port=port,
                workdir=self.workdir,
                password_file=self._given_password_file or self.password_path,
                acl_file=self._acl_file,
                tls=self._tls,
                tls_port=self.tls_port,
                extra_config=self._extra_config,
            )
        workdir = self.workdir.resolve()
        lines = [
            "# Generated by devtools.brokers.MosquittoBroker: a broker for tests and benchmarks.",
            f"listener {port} {LOCALHOST}",
            # Without it Nagle plus delayed ACK cost about 44 ms per hop (see shared FACTS).
            "set_tcp_nodelay true",
            # The queue limits of the shipped broker (deploy/mosquitto/mosquitto.conf), so that tests and
            # benchmarks see what a site sees under load. Mosquitto's defaults differ (20 in flight, 1,000
            # queued per client): with them a junk flood that outpaces the gateway makes Mosquitto drop QoS 1
            # messages to the gateway beyond 1,000 queued ("Outgoing messages are being dropped"), real latch
            # messages included, where a site's broker queues them (and delays them) instead.
            "max_inflight_messages 100",
            "max_queued_messages 100000",
            "max_queued_bytes 67108864",
            "max_packet_size 262144",
        ]
        if self._users:
            lines += ["allow_anonymous false", f"password_file {self.password_path.resolve()}"]
        else:
            lines += ["allow_anonymous true"]
        lines += [
            "persistence true",
            f"persistence_location {workdir}/",
            "persistence_file mosquitto.db",
            f"log_dest file {self.log_path.resolve()}",
            "log_type all",
            "log_timestamp true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            "connection_messages true",
        ]
        if os.geteuid() == 0:
            # As root Mosquitto otherwise drops to user `mosquitto`, which cannot write workdir.
            lines.append("user root")
        if self._extra_config.strip():
            lines += ["", "# extra_config", self._extra_config.strip()]
        return "\n".join(lines) + "\n"

    def _write_password_file(self, mosquitto: str) -> None:
        path = self.password_path
        path.unlink(missing_ok=True)
        tool = _find_mosquitto_passwd(mosquitto)
        if tool is not None:
            path.touch(mode=0o600)
            for name, password in self._users.items():
                result = subprocess.run(
                    [tool, "-b", str(path), name, password], capture_output=True, text=True, check=False
                )
                if result.returncode != 0:
                    output = (result.stderr or result.stdout).strip()
                    msg = f"mosquitto_passwd failed for user {name!r}: {output}"
                    raise RuntimeError(msg)
        else:
            text = "".join(f"{name}:{_mosquitto_password_hash(pw)}\n" for name, pw in self._users.items())
            path.write_text(text)
        path.chmod(0o600)

    def _launch(self, executable: str, port: int) -> None:
        self.config_path.write_text(self._config_text(port))
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._stderr = self._stderr_path.open("wb")
        self._proc = subprocess.Popen(
            [executable, "-c", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=self._stderr,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            start_new_session=self._own_session,
        )
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            if self._proc.poll() is not None:
                rc = self._proc.returncode
                self._reap()
                self._fail(f"Mosquitto exited with code {rc} before listening on port {port}")
            # Mosquitto logs "... running" once all its listeners are open; the port check alone could be
            # answered by another process that took the port first (Mosquitto then exits).
            if " running" in self._log_since(log_offset) and _port_accepts(LOCALHOST, port):
                return
            if time.monotonic() > deadline:
                self.kill()
                self._fail(f"Mosquitto did not listen on port {port} within {_START_TIMEOUT_S:.0f} s")
            time.sleep(_POLL_INTERVAL_S)

    def _log_since(self, offset: int) -> str:
        try:
            with self.log_path.open("rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def _fail(self, what: str) -> NoReturn:
        msg = (
            f"{what}.\n--- {self.config_path}:\n{_tail(self.config_path, 200)}"
            f"\n--- output:\n{_tail(self._stderr_path)}\n--- {self.log_path} (tail):\n{_tail(self.log_path)}"
        )
        raise RuntimeError(msg)

    def _reap(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            self._proc = None
        if self._proc is None and self._stderr is not None:
            self._stderr.close()
            self._stderr = None


class AmqttBroker:
    """amqtt 0.12 running inside the current event loop on 127.0.0.1, anonymous clients allowed.

    For the demo on machines without Mosquitto only: it is slower than Mosquitto, keeps nothing across a
    restart and has the same Nagle trap. amqtt is an optional dependency (``pip install 'cribwatch[demo]'``)
    and is imported only when the broker starts.

    ``quiet`` (the default) sets amqtt's and its state machine library's loggers to WARNING, unless they
    were configured already: at INFO amqtt logs every connection and then some.
    """

    def __init__(self, *, port: int | None = None, quiet: bool = True) -> None:
        self._requested_port = port
        self._port: int | None = None
        self._quiet = quiet
        self._broker: Any = None

    @property
    def endpoint(self) -> BrokerEndpoint:
        if self._port is None or self._broker is None:
            msg = "AmqttBroker is not running"
            raise RuntimeError(msg)
        return BrokerEndpoint(LOCALHOST, self._port)

    @property
    def running(self) -> bool:
        return self._broker is not None

    async def start(self) -> BrokerEndpoint:
        if self._broker is not None:
            msg = "AmqttBroker is already running"
            raise RuntimeError(msg)
        try:
            from amqtt.broker import Broker  # noqa: PLC0415 - optional dependency, imported when used
        except ImportError as exc:
            msg = (
                "amqtt is not installed: the in-process broker needs the `demo` extra "
                "(pip install 'cribwatch[demo]'), or install Mosquitto (make system-deps)"
            )
            raise RuntimeError(msg) from exc
        if self._quiet:
            for name in ("amqtt", "transitions"):
                logger = logging.getLogger(name)
                if logger.level == logging.NOTSET:
                    logger.setLevel(logging.WARNING)

        attempts = _PORT_ATTEMPTS if self._requested_port is None else 1
        for attempt in range(1, attempts + 1):
            port = self._requested_port if self._requested_port is not None else free_port()
            broker = Broker(self._config(port))
            try:
                await broker.start()
            except Exception:
                if attempt == attempts:
                    raise
                log.debug("amqtt could not bind port %d; retrying", port, exc_info=True)
                continue
            self._broker = broker
            self._port = port
            break
        return self.endpoint

    async def stop(self) -> None:
        broker, self._broker = self._broker, None
        if broker is not None:
            await broker.shutdown()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @staticmethod
    def _config(port: int) -> dict[str, Any]:
        # amqtt 0.12 format (amqtt.contexts.BrokerConfig): a "default" listener is required; giving
        # "plugins" replaces the default set (event and packet loggers, $SYS publisher, anonymous auth).
        return {
            "listeners": {"default": {"type": "tcp", "bind": f"{LOCALHOST}:{port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }


@asynccontextmanager
async def start_embedded_broker(
    workdir: Path, *, password_file: Path | None = None, acl_file: Path | None = None
) -> AsyncIterator[BrokerEndpoint]:
    """A broker for ``cribwatch demo``: Mosquitto if installed, else amqtt in-process (anonymous: demo mode only).

    With ``password_file`` (and ``acl_file``), Mosquitto runs the shipped configuration with them (the demo's
    accounts, made by ``cribwatch provision``'s code); without, it lets anonymous clients in. Logs at INFO which
    one it chose. Mosquitto keeps its configuration, log and persistence in ``workdir``.
    """
    executable = find_mosquitto()
    if executable is not None:
        # Its own session: Ctrl-C in the terminal would otherwise stop Mosquitto under the running demo, whose
        # gateway and sensors would then retry for seconds before the demo could stop.
        if password_file is not None:
            mosquitto = MosquittoBroker(
                workdir, own_session=True, shipped=True, password_file=password_file, acl_file=acl_file
            )
        else:
            mosquitto = MosquittoBroker(workdir, own_session=True)
        try:
            endpoint = await asyncio.to_thread(mosquitto.start)
        except RuntimeError as exc:
            log.warning("Mosquitto (%s) would not start, falling back to amqtt: %s", executable, exc)
        else:
            log.info(
                "demo broker: Mosquitto (%s) on %s:%d, log in %s",
                executable,
                endpoint.host,
                endpoint.port,
                mosquitto.log_path,
            )
            try:
                yield endpoint
            finally:
                await asyncio.to_thread(mosquitto.stop)
            return

    async with AmqttBroker() as amqtt_broker:
        endpoint = amqtt_broker.endpoint
        log.info(
            "demo broker: amqtt in-process on %s:%d (Mosquitto %s)",
            endpoint.host,
            endpoint.port,
            "not found" if executable is None else "failed to start",
        )
        yield endpoint
