"""A real HTTP endpoint for the channel tests: the webhook's server, and Apprise's json:// target."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

WAIT_S = 10.0


class HttpEndpoint:
    """A real HTTP server on loopback that records every POST; it answers ``status``, or holds each request
    until :meth:`release` while ``hanging``."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        self.status = 200
        self.hanging = False
        self.entered = threading.Event()
        self._release = threading.Event()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if endpoint.hanging:
                    endpoint.entered.set()
                    endpoint._release.wait(WAIT_S * 3)
                endpoint.received.append((self.path, dict(self.headers), body))
                self.send_response(endpoint.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def json_bodies(self, path: str | None = None) -> list[dict[str, Any]]:
        return [json.loads(body) for p, _, body in list(self.received) if path is None or p == path]

    def release(self) -> None:
        self.hanging = False
        self._release.set()

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()
