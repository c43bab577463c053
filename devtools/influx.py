"""Run a real InfluxDB for tests and the benchmark: Debian's ``influxd`` (1.x) and ``victoria-metrics`` (a server
that speaks InfluxDB 2.x's ``/api/v2/write``), each a subprocess on a free loopback port with its files in a work
directory of its own. ``scripts/ensure-system-deps`` installs both.

* :class:`InfluxdServer`: InfluxDB 1.x with authentication on (an admin user made at the first start) and a
  database; :meth:`InfluxdServer.query` runs InfluxQL. :meth:`~InfluxdServer.kill` is SIGKILL (a crash),
  :meth:`~InfluxdServer.start` again keeps the port, the users and the data.
* :class:`VictoriaMetricsServer`: accepts line protocol on ``/write`` and ``/api/v2/write``; read back with
  :meth:`VictoriaMetricsServer.export` (series are named ``<measurement>_<field>``, timestamps in ms). Started with
  a retention of 100 years (its default month would drop older points silently) and no query latency offset
  (recent points would otherwise be hidden for 30 s).

Nothing here runs at import time. Blocking calls (tens of milliseconds to a second): from async code, use
``asyncio.to_thread``.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from devtools.brokers import LOCALHOST, free_port, kill_child, stop_child

log = logging.getLogger(__name__)

_START_TIMEOUT_S = 20.0
_STOP_TIMEOUT_S = 10.0
_POLL_S = 0.02
INFLUXD = "influxd"
VICTORIA_METRICS = "victoria-metrics"


def find_influxd() -> str | None:
    return shutil.which(INFLUXD) or (f"/usr/bin/{INFLUXD}" if os.access(f"/usr/bin/{INFLUXD}", os.X_OK) else None)


def find_victoria_metrics() -> str | None:
    return shutil.which(VICTORIA_METRICS)


def _http(
    method: str, url: str, *, body: bytes | None = None, auth: tuple[str, str] | None = None, timeout: float = 10.0
) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method)  # noqa: S310 - loopback http URLs we build
    if auth is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    if body is not None:
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - as above
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


class _Server:
    """A server subprocess with its output in ``workdir/<name>.log``."""

    name = "server"

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = Path(workdir)
        self._port = port
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"{self.name} has not been started: no port yet")
        return self._port

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no output)"

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def _after_start(self) -> None:
        return None

    def start(self) -> str:
        """Start (on the same port as before, if started before) and wait until it answers; returns the URL."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running on port {self.port}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self._port is None:
            self._port = free_port()
        self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            self._argv(), stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, cwd=self.workdir
        )
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            if self._proc.poll() is not None:
                rc = self._proc.returncode
                self._reap()
                raise RuntimeError(f"{self.name} exited with code {rc} before answering\n{self.log_tail()}")
            try:
                if self._ready():
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{self.name} did not answer within {_START_TIMEOUT_S:.0f} s\n{self.log_tail()}")
            time.sleep(_POLL_S)
        self._after_start()
        log.debug("%s (pid %d) on %s", self.name, self._proc.pid, self.url)
        return self.url

    def stop(self) -> None:
        """SIGTERM, SIGKILL after 10 s."""
        stop_child(self._proc, "influxd", _STOP_TIMEOUT_S)
        self._reap()

    def kill(self) -> None:
        """SIGKILL, as a crash or a pulled plug would (what the server had confirmed must survive)."""
        kill_child(self._proc)
        self._reap()

    def _reap(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            self._proc = None
        if self._proc is None and self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class InfluxdServer(_Server):
    """InfluxDB 1.x (``influxd``), authentication on, with ``database`` made at the first start."""

    name = "influxd"

    def __init__(
        self,
        workdir: Path,
        *,
        database: str = "cribwatch",
        username: str = "admin",
        password: str = "admin-password",  # noqa: S107 - a throwaway server on loopback, for tests
        port: int | None = None,
        max_body_size: int | None = None,
    ) -> None:
        """``max_body_size``: influxd's ``[http] max-body-size`` in bytes (a larger write is answered 413)."""
        super().__init__(workdir, port)
        self.max_body_size = max_body_size
        self.database = database
        self.username = username
        self.password = password
        self._rpc_port: int | None = None
        self._made = False

    @property
    def config_path(self) -> Path:
        return self.workdir / "influxd.conf"

    def _argv(self) -> list[str]:
        executable = find_influxd()
        if executable is None:
            raise RuntimeError("influxd is not installed: run `make system-deps` (Debian's influxdb)")
        if self._rpc_port is None:
            self._rpc_port = free_port()
        work = self.workdir.resolve()
        self.config_path.write_text(
            "\n".join(
                [
                    "# Generated by devtools.influx.InfluxdServer: an InfluxDB 1.x for tests and benchmarks.",
                    "reporting-disabled = true",
                    f'bind-address = "{LOCALHOST}:{self._rpc_port}"',
                    "[meta]",
                    f'  dir = "{work}/meta"',
                    "[data]",
                    f'  dir = "{work}/data"',
                    f'  wal-dir = "{work}/wal"',
                    "  query-log-enabled = false",
                    "[http]",
                    f'  bind-address = "{LOCALHOST}:{self.port}"',
                    "  auth-enabled = true",
                    "  log-enabled = false",
                    *([] if self.max_body_size is None else [f"  max-body-size = {self.max_body_size}"]),
                    "[monitor]",
                    "  store-enabled = false",
                    "[subscriber]",
                    "  enabled = false",
                    "[continuous_queries]",
                    "  enabled = false",
                    "[logging]",
                    '  level = "warn"',
                    "",
                ]
            )
        )
        return [executable, "-config", str(self.config_path)]

    def _ready(self) -> bool:
        status, _ = _http("GET", f"{self.url}/ping", timeout=1.0)
        return status == 204

    def _after_start(self) -> None:
        if self._made:
            return
        # With no user yet, influxd takes this one statement without credentials (then never again).
        user = self.username.replace("'", "")
        secret = self.password.replace("'", "")
        self.query(f"CREATE USER \"{user}\" WITH PASSWORD '{secret}' WITH ALL PRIVILEGES", auth=False)
        self.query(f'CREATE DATABASE "{self.database}"')
        self._made = True

    def query(self, q: str, *, db: str | None = None, auth: bool = True) -> list[dict[str, Any]]:
        """Run InfluxQL (POST /query, epoch ns); the ``results`` of the answer. RuntimeError on any error."""
        params = {"q": q, "epoch": "ns"}
        if db is not None:
            params["db"] = db
        body = urllib.parse.urlencode(params).encode()
        status, data = _http(
            "POST", f"{self.url}/query", body=body, auth=(self.username, self.password) if auth else None
        )
        if status != 200:
            raise RuntimeError(f"influxd answered {status} to {q!r}: {data[:300]!r}")
        answer = json.loads(data)
        results: list[dict[str, Any]] = answer.get("results", [])
        for result in results:
            if "error" in result:
                raise RuntimeError(f"influxd: {q!r}: {result['error']}")
        return results

    def rows(self, q: str, *, db: str | None = None) -> list[dict[str, Any]]:
        """The rows of a SELECT on ``db`` (default :attr:`database`), as dicts (``time`` in ns), every series after
        the other."""
        out: list[dict[str, Any]] = []
        for result in self.query(q, db=db or self.database):
            for series in result.get("series", []):
                tags = series.get("tags", {})
                for values in series["values"]:
                    out.append({**tags, **dict(zip(series["columns"], values, strict=True))})
        return out


class VictoriaMetricsServer(_Server):
    """VictoriaMetrics: InfluxDB line protocol in on ``/write`` and ``/api/v2/write``; read back with
    :meth:`export`."""

    name = "victoria-metrics"

    def _argv(self) -> list[str]:
        executable = find_victoria_metrics()
        if executable is None:
            raise RuntimeError("victoria-metrics is not installed: run `make system-deps`")
        return [
            executable,
            f"-storageDataPath={self.workdir.resolve() / 'data'}",
            f"-httpListenAddr={LOCALHOST}:{self.port}",
            "-retentionPeriod=100y",
            "-search.latencyOffset=0s",
            "-loggerLevel=ERROR",
        ]

    def _ready(self) -> bool:
        status, _ = _http("GET", f"{self.url}/health", timeout=1.0)
        return status == 200

    def flush(self) -> None:
        """Make what was written searchable now (``/internal/force_flush``)."""
        _http("GET", f"{self.url}/internal/force_flush")

    def export(self, match: str = '{__name__!=""}') -> list[dict[str, Any]]:
        """Every series matching ``match``: ``{"metric": {...labels}, "values": [...], "timestamps": [ms...]}``."""
        self.flush()
        body = urllib.parse.urlencode({"match[]": match}).encode()
        status, data = _http("POST", f"{self.url}/api/v1/export", body=body)
        if status != 200:
            raise RuntimeError(f"victoria-metrics answered {status} to an export: {data[:300]!r}")
        return [json.loads(line) for line in data.splitlines() if line.strip()]
