"""The two ways to InfluxDB: 1.x (``POST /write``, database, retention policy, user and password) and 2.x/3.x
(``influxdb-client``'s synchronous write: url, org, bucket, token). The only module that speaks HTTP to InfluxDB.

Both take one body of line protocol and either return (the server confirmed every point: 204) or raise:

* :class:`WriteRefusedError`: the server refused points of the body for what they are, and its answer says so
  (400 or 422 with InfluxDB's JSON naming a line it cannot parse, or "partial write": a field type conflict, points
  beyond the retention policy): sending them again will not help. InfluxDB writes the good points of such a body
  all the same.
* :class:`WriteTooLargeError`: the body is over the server's limit (413): send it in smaller parts.
* :class:`WriteFailedError`: anything else (no connection, a timeout, 401/403, 404, 5xx, a 400 that names no point:
  a proxy's HTML page, a firewall, plain HTTP sent to a TLS port; a 2xx whose body is not InfluxDB's): the points
  stay in the outbox and are sent again. A write that timed out after the server took it does no harm: the same
  points overwrite themselves (docs/influx-schema.md). On 429 and 503 it carries the server's ``Retry-After``.

Never influxdb-client's default batching write API: it logs a failed batch and drops it (measured with a 404).
"""

from __future__ import annotations

import base64
import email.utils
import json
import time
from collections.abc import Mapping
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
HTTP_UNPROCESSABLE = 422
"""InfluxDB 2.x: "some or all of the data rejected" (points beyond the bucket's retention, field type conflicts)."""
RETRY_AFTER_STATUSES = frozenset({429, 503})
NAMES_POINTS = ("partial write", "unable to parse", "points beyond retention", "field type conflict", "dropped=")
"""What InfluxDB 1.x and 2.x say (in ``error`` or ``message`` of their JSON answer) when they refuse points of a
body for what they are; a 400 or 422 without any of these is not taken as a refusal of points."""
_HINTS = {
    401: "the server refuses the credentials (check the user and password or token in the environment)",
    403: "the account may not write there (check its privileges)",
    404: "not found: the database or bucket does not exist, or the server does not speak this API version",
}


class WriteFailedError(Exception):
    """The write did not happen or its outcome is unknown: send again later (``retry_after_s``: the server's
    ``Retry-After``, if it sent one)."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


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


def _message(data: bytes | str | None) -> str | None:
    """``error`` (1.x) or ``message`` (2.x) of InfluxDB's JSON answer; None: not such an answer."""
    if not data:
        return None
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    found = doc.get("error", doc.get("message"))
    return found if isinstance(found, str) else None


def names_points(data: bytes | str | None) -> bool:
    """The answer is InfluxDB's, refusing points of the body for what they are."""
    message = _message(data)
    return message is not None and any(marker in message.lower() for marker in NAMES_POINTS)


def retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (seconds or an HTTP date); None: none or unreadable."""
    value = None if headers is None else headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _ok_2xx(data: bytes | str | None) -> bool:
    """A 2xx other than 204 is a success when its body is empty or JSON without an error (a proxy's HTML page
    saying "200 OK" is not InfluxDB's confirmation)."""
    if data is None or not data.strip():
        return True
    try:
        doc = json.loads(data)
    except ValueError:
        return False
    return not (isinstance(doc, dict) and doc.get("error"))


def _raise_for(status: int, data: bytes | str | None, headers: Mapping[str, str] | None = None) -> None:
    if status == HTTP_NO_CONTENT:
        return
    body = _text(data)
    if 200 <= status < 300:
        if _ok_2xx(data):
            return
        raise WriteFailedError(f"HTTP {status} with a body that is not InfluxDB's confirmation ({body})")
    if status in {HTTP_BAD_REQUEST, HTTP_UNPROCESSABLE}:
        if names_points(data):
            raise WriteRefusedError(f"HTTP {status}: {body}")
        raise WriteFailedError(
            f"HTTP {status} that names no point (not InfluxDB's answer? a proxy, a firewall, http to an https port)"
            f"{' (' + body + ')' if body else ''}"
        )
    if status == HTTP_TOO_LARGE:
        raise WriteTooLargeError(f"HTTP 413: {body}")
    hint = _HINTS.get(status, "")
    wait = retry_after(headers) if status in RETRY_AFTER_STATUSES else None
    raise WriteFailedError(
        f"HTTP {status}{': ' + hint if hint else ''}{' (' + body + ')' if body else ''}", retry_after_s=wait
    )


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
        _raise_for(response.status, response.data, response.headers)

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
            _raise_for(int(exc.status or 0), exc.body, _headers(exc.headers))
            raise WriteFailedError(f"HTTP {exc.status}") from exc  # a 204 that raised: not expected
        except urllib3.exceptions.HTTPError as exc:
            raise WriteFailedError(f"{type(exc).__name__}: {exc}") from exc
        except OSError as exc:
            raise WriteFailedError(f"{type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]


def _headers(found: object) -> Mapping[str, str] | None:
    """ApiException's headers: urllib3's (a mapping) or a list of pairs."""
    if found is None:
        return None
    if isinstance(found, Mapping):
        return cast("Mapping[str, str]", found)
    try:
        return {str(k).title(): str(v) for k, v in cast("list[tuple[object, object]]", found)}
    except (TypeError, ValueError):
        return None
