"""The alert channel ``webhook``: each notice, for each recipient, as an HTTP POST of JSON to one URL.

The body is the ``notify`` payload of docs/protocol.md (the alarm's latest event, the notice's kind, step, group
and member) with ``channel`` and ``address``; a 2xx answer is a delivery, anything else (another status, a refused
connection, no answer within the timeout) a failed attempt. It runs in the channel's own thread (urllib is
blocking): a slow or dead endpoint holds up only this channel. The URL is a secret (it often carries a token): it
comes from the environment or a file outside the repository (docs/channels.md), and no error or record repeats it.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

from alerts.channels.base import ChannelError, Delivery, DeliveryResult
from alerts.channels.payloads import notice_payload
from gateway.domain.vocab import is_identifier

USER_AGENT = "cribwatch-gateway"


def webhook_body(delivery: Delivery) -> bytes:
    recipient = delivery.recipient
    payload = notice_payload(delivery)
    body = json.loads(payload.model_dump_json(exclude_none=True))
    body["channel"] = "webhook"
    if recipient.address and is_identifier(recipient.address):  # a device or staff id: never a URL (a secret)
        body["address"] = recipient.address
    return json.dumps(body, separators=(",", ":")).encode()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is a failed attempt: the POST is not repeated to another place the site file never named."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


class WebhookTransport:
    name = "webhook"

    def __init__(self, url: str, *, token: str | None = None) -> None:
        self._url = url
        self._token = token
        self._opener = urllib.request.build_opener(_NoRedirect())

    def send(self, delivery: Delivery, timeout_s: float) -> DeliveryResult:
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        request = urllib.request.Request(self._url, data=webhook_body(delivery), headers=headers, method="POST")  # noqa: S310 - the URL is checked: http(s) only
        try:
            with self._opener.open(request, timeout=timeout_s) as response:
                status = response.status
                response.read(65536)
        except urllib.error.HTTPError as exc:
            raise ChannelError(f"HTTP {exc.code} {exc.reason}") from None
        except TimeoutError:
            raise ChannelError(f"no answer within {timeout_s:g} s") from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, TimeoutError | socket.timeout):
                raise ChannelError(f"no answer within {timeout_s:g} s") from None
            raise ChannelError(f"cannot reach the webhook: {reason}") from None
        except OSError as exc:
            raise ChannelError(f"connection failed: {type(exc).__name__}: {exc.strerror or exc}") from None
        if not 200 <= status < 300:
            raise ChannelError(f"HTTP {status}")
        return DeliveryResult.DELIVERED

    def close(self) -> None:
        return None
