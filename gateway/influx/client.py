"""The two ways to InfluxDB: 1.x (``POST /write``, database, retention policy, user and password) and 2.x/3.x
(``influxdb-client``'s synchronous write: url, org, bucket, token). The only module that speaks HTTP to InfluxDB.

Both take one body of line protocol and either return (the server confirmed every point: 204) or raise:

* :class:`WriteRefusedError`: the server refused points of the body for what they are (400): sending them again will
  not help. InfluxDB 1.x writes the good points of such a body all the same ("partial write").
* :class:`WriteTooLargeError`: the body is over the server's limit (413): send it in smaller parts.
* :class:`WriteFailedError`: anything else (no connection, a timeout, 401/403, 404, 5xx): the points stay in the outbox
  and are sent again. A write that timed out after the server took it does no harm: the same points overwrite
  themselves (docs/influx-schema.md).

Never influxdb-client's default batching write API: it logs a failed batch and drops it (measured with a 404).
"""

from __future__ import annotations

import base64
from typing import Protocol, cast
from urllib.parse import urlencode

import urllib3
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException

_NS = cast("WritePrecision", WritePrecision.NS)  # the library types its string constants as the class
HTTP_NO_CONTENT = 204
HTTP_BAD_REQUEST = 400
HTTP_TOO_LARGE = 413
_HINTS = {
    401: "the server refuses the credentials (check the user and password or token in the environment)",
    403: "the account may not write there (check its privileges)",
    404: "not found: the database or bucket does not exist, or the server does not speak this API version",
}


class WriteFailedError(Exception):
    """The write did not happen or its outcome is unknown: send again later."""


class WriteRefusedError(Exception):
    """The server refused (some of) the points for what they are: sending them again will not help."""


class WriteTooLargeError(Exception):
    """The body is over the server's size limit: send it in smaller parts."""


class InfluxClient(Protocol):
    """One target's server."""

    def write(self, body: bytes) -> None:
        """Write line protocol; return only when the server confirmed every point."""
        ...

    def close(self) -> None: ...


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    text = data.decode(errors="replace") if isinstance(data, bytes) else data
    return " ".join(text.split())[:300]


def _raise_for(status: int, body: str) -> None:
    if status == HTTP_NO_CONTENT:
        return
    if status == HTTP_BAD_REQUEST:
        raise WriteRefusedError(f"HTTP 400: {body}")
    if status == HTTP_TOO_LARGE:
        raise WriteTooLargeError(f"HTTP 413: {body}")
    hint = _HINTS.get(status, "")
    raise WriteFailedError(f"HTTP {status}{': ' + hint if hint else ''}{' (' + body + ')' if body else ''}")


class V1Client:
    """InfluxDB 1.x: ``POST <url>/write?db=...&rp=...&precision=ns``, basic authentication when a user is given
    (the credentials never appear in a URL or a log)."""

    def __init__(
        self,
        url: str,
        database: str,
        *,
        retention_policy: str | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        query = {"db": database, "precision": "ns"}
        if retention_policy:
            query["rp"] = retention_policy
        self._url = f"{url.rstrip('/')}/write?{urlencode(query)}"
        self._headers = {"Content-Type": "text/plain; charset=utf-8"}
        if username is not None:
            token = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"
        self._pool = urllib3.PoolManager(
            num_pools=1, maxsize=1, retries=False, timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s)
        )

    def write(self, body: bytes) -> None:
        try:
            response = self._pool.request("POST", self._url, body=body, headers=self._headers)
        except urllib3.exceptions.HTTPError as exc:
            raise WriteFailedError(f"{type(exc).__name__}: {exc}") from exc
        _raise_for(response.status, _text(response.data))

    def close(self) -> None:
        self._pool.clear()


class V2Client:
    """InfluxDB 2.x/3.x (and servers that speak ``/api/v2/write``) through influxdb-client's SYNCHRONOUS write API,
    whose failures raise (``ApiException``, or urllib3's errors for a connection that failed)."""

    def __init__(self, url: str, *, org: str, bucket: str, token: str | None, timeout_s: float = 10.0) -> None:
        self._bucket = bucket
        self._org = org
        self._client = InfluxDBClient(url=url, token=token or "", org=org, timeout=int(timeout_s * 1000))
        self._api = self._client.write_api(write_options=SYNCHRONOUS)

    def write(self, body: bytes) -> None:
        try:
            self._api.write(bucket=self._bucket, org=self._org, record=body, write_precision=_NS)
        except ApiException as exc:
            _raise_for(int(exc.status or 0), _text(exc.body))
            raise WriteFailedError(f"HTTP {exc.status}") from exc  # a 204 that raised: not expected
        except urllib3.exceptions.HTTPError as exc:
            raise WriteFailedError(f"{type(exc).__name__}: {exc}") from exc
        except OSError as exc:
            raise WriteFailedError(f"{type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]
