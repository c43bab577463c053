"""The alert channel ``mqtt``: a notice to one staff device on ``<base>/<site>/notify/<device>`` (QoS 1).

It goes out through the gateway's own link (:meth:`gateway.mqtt.link.MqttLink.send`), which is not thread-safe:
the channel's thread hands each message to the event loop (``call_soon_threadsafe``) and waits, at most its
timeout, until the loop has written it to the socket, or kept it in the link's offline buffer while the broker is
away (recorded ``buffered``: QoS 1 and the buffer deliver it when the broker is back). The recipient's ``address``
is the device id; the broker lets only that device's account read its topic (deploy/mosquitto/cribwatch.acl).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable

from alerts.channels.base import ChannelError, Delivery, DeliveryResult
from alerts.channels.payloads import notice_payload
from gateway.domain.vocab import is_identifier
from gateway.protocol import NOTIFY, Topics, encode
from gateway.protocol.codec import Outgoing
from gateway.protocol.helping import HelpingHandsNoticePayload, encode_helping


def notify_message(topics: Topics, delivery: Delivery) -> Outgoing:
    """The notice for one device as an MQTT message; ChannelError if the address is no device id."""
    recipient = delivery.recipient
    device = recipient.address or recipient.member
    if not is_identifier(device):
        raise ChannelError(f"{device!r} is not a device id (lower case letters, digits, - and _)")
    payload = notice_payload(delivery)
    if isinstance(payload, HelpingHandsNoticePayload):
        return Outgoing.of(topics.notify(device), encode_helping(payload), NOTIFY)
    return Outgoing.of(topics.notify(device), encode(payload), NOTIFY)


class MqttNotifyTransport:
    """``send`` runs in the channel's thread; the link is only touched on the event loop's thread."""

    name = "mqtt"

    def __init__(self, topics: Topics, send: Callable[[Outgoing], None], is_up: Callable[[], bool]) -> None:
        self._topics = topics
        self._send = send
        self._is_up = is_up
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The event loop that owns the link (set when the gateway starts running)."""
        self._loop = loop

    def send(self, delivery: Delivery, timeout_s: float) -> DeliveryResult:
        item = notify_message(self._topics, delivery)
        loop = self._loop
        if loop is None or loop.is_closed():
            raise ChannelError("the gateway's event loop is not running")
        done: concurrent.futures.Future[bool] = concurrent.futures.Future()

        def publish() -> None:
            try:
                up = self._is_up()
                self._send(item)
            except Exception as exc:  # noqa: BLE001 - handed to the channel's thread, which records it
                done.set_exception(exc)
            else:
                done.set_result(up)

        loop.call_soon_threadsafe(publish)
        try:
            up = done.result(timeout_s)
        except concurrent.futures.TimeoutError:
            raise ChannelError(f"the event loop did not take the message within {timeout_s:g} s") from None
        return DeliveryResult.DELIVERED if up else DeliveryResult.BUFFERED

    def close(self) -> None:
        return None
