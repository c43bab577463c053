"""What the shipper makes of a server's answers, over the wire: a small real HTTP server in the test (the answers
of a proxy, a firewall or an InfluxDB 2.x that no Debian package provides here) and the real influxd 1.6.7.

The rule: a point is given up only when the server's answer names it (InfluxDB's "partial write" or "unable to
parse", on 400 or 422); any other answer is a failure (retried, every point kept, the target not connected), and
an alarm point given up is counted apart and logged CRITICAL."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from devtools.influx import InfluxdServer
from gateway.influx.client import InfluxClient, V1Client, V2Client, WriteFailedError, names_points
from tests.test_influx_v1 import Pipeline, database, influxd, raised, reading, v1  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration

Answer = tuple[int, dict[str, str], bytes]
"""Status, headers, body."""


class Server:
    """A real HTTP server on a free loopback port; ``answer(lines)`` decides each write's answer (settable while
    it runs). Keeps every body it got, in the order they came, and the lines it took (204, or the named ones left
    out of a partial write)."""

    def __init__(self, answer: Callable[[list[str]], Answer]) -> None:
        self.answer = answer
        self.bodies: list[list[str]] = []
        self.taken: list[str] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                lines = self.rfile.read(int(self.headers["Content-Length"])).decode().split("\n")
                with outer._lock:
                    outer.bodies.append(lines)
                    status, headers, body = outer.answer(lines)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Server:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def take(self, lines: list[str]) -> Answer:
        self.taken += lines
        return 204, {}, b""

    def requests(self) -> int:
        with self._lock:
            return len(self.bodies)


@pytest.fixture
def server() -> Iterator[Server]:
    with Server(lambda lines: (204, {}, b"")) as s:
        s.answer = s.take
        yield s


def to_v1(url: str) -> Callable[[], InfluxClient]:
    return lambda: V1Client(url, "cribwatch", timeout_s=5.0)


def to_v2(url: str) -> Callable[[], InfluxClient]:
    return lambda: V2Client(url, org="city", bucket="cribwatch", token="t0ken", timeout_s=5.0)


HTML_400 = (
    b"<html><head><title>400 The plain HTTP request was sent to HTTPS port</title></head>"
    b"<body><center><h1>400 Bad Request</h1></center><hr><center>nginx</center></body></html>"
)


@pytest.mark.parametrize("body", [HTML_400, b"", b'{"error":"request blocked by policy"}'])
def test_a_400_that_names_no_point_gives_up_nothing(tmp_path: Path, server: Server, body: bytes) -> None:
    """A proxy's HTML page, an empty answer, a firewall's JSON: every write fails; nothing is given up, the target
    is not connected and says why; once the way is clear every point arrives, in order."""
    points = [reading(i) for i in range(60)] + [raised(60)] + [reading(i) for i in range(61, 80)]
    server.answer = lambda lines: (400, {"Content-Type": "text/html"}, body)
    with Pipeline(tmp_path / "s.sqlite3", {"site": to_v1(server.url)}, batch_size=25) as pipe:
        pipe.put(points)
        shipper = pipe.shippers["site"]
        pipe.wait(lambda: shipper.health.failures >= 3, "failing")
        health = shipper.health
        assert pipe.writer.health.influx_rows == 80
        assert health.rejected == 0
        assert health.connected is False
        assert health.last_error is not None
        assert "HTTP 400" in health.last_error
        assert all(len(b) == 25 for b in server.bodies), "never halved: the answer names no point"
        server.answer = server.take
        pipe.wait(lambda: pipe.shipped("site"), "written once the way is clear")
        health = shipper.health
    assert server.taken == [p.line() for p in points], "every point, in the order sent"
    assert health.connected is True
    assert health.rejected == 0


def partial_write(status: int, marker: str, message: str) -> Callable[[Server, list[str]], Answer]:
    """InfluxDB's answer to a body with a point it refuses: the others are written all the same."""

    def answer(server: Server, lines: list[str]) -> Answer:
        bad = [line for line in lines if marker in line]
        if not bad:
            return server.take(lines)
        server.taken += [line for line in lines if marker not in line]
        key = "message" if status == 422 else "error"
        return status, {"Content-Type": "application/json"}, json.dumps({"code": "invalid", key: message}).encode()

    return answer


@pytest.mark.parametrize(
    ("status", "message", "connect"),
    [
        (422, "failure writing points to database: partial write: points beyond retention policy dropped=1", to_v2),
        (400, 'partial write: field type conflict: input field "level" on measurement "alarm" dropped=1', to_v1),
        (400, "unable to parse 'alarm,crib=c-1 level=x': invalid boolean", to_v2),
    ],
)
def test_a_point_the_answer_names_is_given_up_alone_an_alarm_point_loudly(  # noqa: PLR0917 - fixtures, parameters
    tmp_path: Path,
    server: Server,
    caplog: pytest.LogCaptureFixture,
    status: int,
    message: str,
    connect: Callable[[str], Callable[[], InfluxClient]],
) -> None:
    """InfluxDB 2.x's 422 (points beyond the bucket's retention) and the partial writes of 1.x and 2.x: the named
    point (an alarm point here) is given up alone, counted apart, logged CRITICAL; every other point arrives."""
    bad = raised(40)
    answer = partial_write(status, 'alarm_id="1-40"', message)
    server.answer = lambda lines: answer(server, lines)
    points = [reading(i) for i in range(40)] + [bad] + [reading(i) for i in range(41, 70)]
    with (
        caplog.at_level(logging.ERROR, logger="cribwatch.influx"),
        Pipeline(tmp_path / "s.sqlite3", {"site": connect(server.url)}, batch_size=32) as pipe,
    ):
        pipe.put(points)
        pipe.wait(lambda: pipe.shipped("site"), "written")
        health = pipe.shippers["site"].health
    assert health.rejected == 1
    assert health.rejected_alarm == 1
    assert health.connected is True
    assert sorted(set(server.taken)) == sorted(p.line() for p in points if p is not bad)
    critical = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(critical) == 1
    assert "alarm_id" in critical[0].getMessage()


def test_an_alarm_point_influxd_refuses_is_counted_apart(
    tmp_path: Path,
    influxd: InfluxdServer,  # noqa: F811 - the session's fixture
    database: str,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The real influxd 1.6.7: someone wrote ``level`` as a float by hand; the gateway's alarm point (an integer)
    is refused (partial write, field type conflict), counted in ``rejected_alarm`` and logged CRITICAL."""
    V1Client(influxd.url, database, username=influxd.username, password=influxd.password).write(
        b"alarm,event=raised level=1.5 1764000000000000000"
    )
    with (
        caplog.at_level(logging.ERROR, logger="cribwatch.influx"),
        Pipeline(tmp_path / "s.sqlite3", {"site": v1(influxd, database)}, batch_size=50) as pipe,
    ):
        pipe.put([reading(i) for i in range(20)] + [raised(20)] + [reading(i) for i in range(21, 30)])
        pipe.wait(lambda: pipe.shipped("site"), "written")
        health = pipe.shippers["site"].health
    assert (health.rejected, health.rejected_alarm) == (1, 1)
    assert health.last_error is not None
    assert "field type conflict" in health.last_error
    assert any(r.levelno == logging.CRITICAL for r in caplog.records)
    assert len(influxd.rows('SELECT "seq" FROM "sensor"', db=database)) == 29


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured_within_the_longest_backoff(tmp_path: Path, server: Server, status: int) -> None:
    server.answer = lambda lines: (status, {"Retry-After": "7"}, b'{"message":"slow down"}')
    with pytest.raises(WriteFailedError) as caught:
        to_v2(server.url)().write(reading(0).line().encode())
    assert caught.value.retry_after_s == 7.0
    with pytest.raises(WriteFailedError) as caught:
        to_v1(server.url)().write(reading(0).line().encode())
    assert caught.value.retry_after_s == 7.0
    with Pipeline(tmp_path / "a.sqlite3", {"site": to_v1(server.url)}) as pipe:
        pipe.shippers["site"]._retry_max_s = 30.0  # noqa: SLF001 - the bound above the server's wish
        pipe.put([reading(0)])
        # (Waited for the value: a first attempt may also fail on the store's own start, with the shortest backoff.)
        pipe.wait(lambda: pipe.shippers["site"].health.retry_in_s == 7.0, "the server's Retry-After taken")
    server.answer = lambda lines: (status, {"Retry-After": "86400"}, b"")
    with Pipeline(tmp_path / "b.sqlite3", {"site": to_v1(server.url)}) as pipe:  # retry_max_s 0.2
        pipe.put([reading(0)])
        pipe.wait(lambda: pipe.shippers["site"].health.retry_in_s == 0.2, "the server's Retry-After, bounded")
        server.answer = server.take
        pipe.wait(lambda: pipe.shipped("site"), "written after the bounded wait")


@pytest.mark.parametrize(
    ("status", "body", "ok"),
    [
        (200, b"", True),
        (200, b"{}", True),
        (201, b'{"results":[]}', True),
        (200, b'{"error":"database not found: cribwatch"}', False),
        (200, b"<html><body>Welcome to the guest network</body></html>", False),
    ],
)
def test_a_v1_2xx_is_success_when_its_body_is_empty_or_json_without_error(
    tmp_path: Path, server: Server, status: int, body: bytes, ok: bool
) -> None:
    def answer(lines: list[str]) -> Answer:
        if ok:
            server.taken += lines
        return status, {"Content-Type": "application/json"}, body

    server.answer = answer
    with Pipeline(tmp_path / "s.sqlite3", {"site": to_v1(server.url)}) as pipe:
        pipe.put([reading(i) for i in range(5)])
        if ok:
            pipe.wait(lambda: pipe.shipped("site"), "confirmed")
            assert server.requests() == 1, "not sent again"
            assert server.taken == [reading(i).line() for i in range(5)]
        else:
            pipe.wait(lambda: pipe.shippers["site"].health.failures >= 2, "failing")
            assert pipe.shippers["site"].health.connected is False
            assert pipe.writer.health.influx_rows == 5


def test_the_order_a_backfill_leaves_in(tmp_path: Path, server: Server) -> None:
    """Where the client sends (not what a server sorted): oldest first, batch after batch, a failed batch again
    whole before anything newer."""
    failed: list[list[str]] = []

    def answer(lines: list[str]) -> Answer:
        if len(failed) < 2 and len(server.bodies) == 3:  # the third body fails twice
            failed.append(server.bodies.pop())
            return 503, {}, b""
        return server.take(lines)

    server.answer = answer
    points = [reading(i) for i in range(100)]
    with Pipeline(tmp_path / "s.sqlite3", {"site": to_v1(server.url)}, batch_size=20) as pipe:
        pipe.put(points)
        pipe.wait(lambda: pipe.shipped("site"), "written")
    assert server.taken == [p.line() for p in points]
    assert failed[1] == failed[0][: len(failed[1])] or failed[1][: len(failed[0])] == failed[0]
    assert server.bodies[2][: len(failed[0])] == failed[0], "the failed batch, before anything newer"


@pytest.mark.parametrize(
    ("answer", "names"),
    [
        (b'{"error":"partial write: field type conflict: input field \\"v\\" is type float dropped=1"}', True),
        (b'{"error":"unable to parse \'sensor seq=\': missing field value"}', True),
        (b'{"code":"unprocessable entity","message":"failure writing points: points beyond retention policy"}', True),
        (b'{"code":"invalid","message":"write has been rejected: dropped=2"}', True),
        (b'{"error":"partial write of line protocol occurred","data":[{"line_number":2}]}', True),
        (b'{"error":"database not found: \\"cribwatch\\""}', False),
        (b'{"code":"unauthorized","message":"unauthorized access"}', False),
        (HTML_400, False),
        (b"", False),
        (b'["partial write"]', False),
    ],
)
def test_which_answers_name_points(answer: bytes, names: bool) -> None:
    assert names_points(answer) is names
