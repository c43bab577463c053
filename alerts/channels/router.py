"""The channel router: the alert policy's :class:`~alerts.notices.NoticeSink`, and the channels of notices.

:meth:`ChannelRouter.send` hands each recipient of a notice to its channel by ``recipient.channel`` (``mqtt``,
``siren``, ``webhook``, ``apprise``) and returns at once: each channel is a :class:`ChannelWorker` with its own
thread, bounded queue, timeout, retries and a delivery record per attempt (see docs/channels.md). A recipient of a
channel the site does not have is recorded ``dropped`` and counted under that name, never silent.

The router is also an event sink (``deliver``), placed after the MQTT channel, the buzzer and the store recorder:
it hands alarm events to the channels that follow them (the siren stops when its alarm is acknowledged or
resolved). :func:`build_channels` makes the router of a site's settings.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from alerts.channels.apprise import AppriseTransport
from alerts.channels.base import (
    AlarmObserver,
    ChannelError,
    ChannelHealth,
    ChannelWorker,
    Delivery,
    DeliveryRecord,
    DeliveryResult,
    Limits,
    Transport,
    delivery_record,
)
from alerts.channels.mqtt_notify import MqttNotifyTransport
from alerts.channels.siren import SirenTransport
from alerts.channels.webhook import WebhookTransport
from alerts.notices import Notice, RequestNotice
from gateway.domain.events import AlarmEvent, OutboundEvent
from gateway.protocol import Topics
from gateway.protocol.codec import Outgoing
from gateway.settings import ChannelLimitsConfig, Settings

log = logging.getLogger("cribwatch.channels")


class UnavailableTransport:
    """A channel the site file asks for that could not be opened (a bad Apprise configuration, a missing file):
    every attempt fails with why, so the channel shows ``failing`` in the stats and each delivery is on record."""

    def __init__(self, name: str, error: str) -> None:
        self.name = name
        self.error = error

    def send(self, delivery: Delivery, timeout_s: float) -> DeliveryResult:
        raise ChannelError(f"channel not available: {self.error}")

    def close(self) -> None:
        return None


class ChannelRouter:
    """Notices to channels by name; alarm events to the channels that follow them."""

    name = "channels"

    def __init__(self, workers: Mapping[str, ChannelWorker], record: Callable[[DeliveryRecord], None]) -> None:
        self.workers = dict(workers)
        self._record = record
        self.unrouted: dict[str, int] = {}
        """Recipients of channels the site does not have, by channel name."""
        self._observers = [w.transport for w in self.workers.values() if isinstance(w.transport, AlarmObserver)]

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Start every channel's thread; ``loop`` is the event loop that owns the MQTT link."""
        for worker in self.workers.values():
            if loop is not None and isinstance(worker.transport, MqttNotifyTransport):
                worker.transport.bind(loop)
            worker.start()

    # -------------------------------------------------------------------------------- NoticeSink

    def send(self, notice: Notice | RequestNotice) -> None:
        """Every recipient to its channel's queue; returns at once, never raises. A :class:`RequestNotice` (helping
        hands) waits behind every alarm notice of its channel."""
        for recipient in notice.recipients:
            delivery = Delivery(notice, recipient)
            worker = self.workers.get(recipient.channel)
            if worker is not None:
                worker.put(delivery)
                continue
            count = self.unrouted[recipient.channel] = self.unrouted.get(recipient.channel, 0) + 1
            why = f"no channel {recipient.channel!r} on this site (docs/channels.md)"
            if count == 1:
                log.error("a notice for %s/%s: %s", recipient.group, recipient.member, why)
            try:
                self._record(delivery_record(recipient.channel, delivery, 0, DeliveryResult.DROPPED, None, why))
            except Exception:  # the store writer's queue never raises; a router must go on anyway
                log.critical("could not record a dropped notice", exc_info=True)

    # -------------------------------------------------------------------------------- EventSink

    def deliver(self, event: OutboundEvent) -> None:
        if isinstance(event, AlarmEvent):
            for observer in self._observers:
                observer.observe(event)

    def health(self) -> dict[str, ChannelHealth]:
        out = {name: worker.health for name, worker in self.workers.items()}
        for name, count in self.unrouted.items():
            out[name] = ChannelHealth("failing", 0, 0, 0, 0, count, 0, f"no channel {name!r} on this site")
        return out

    def close(self) -> None:
        for worker in self.workers.values():
            worker.close()


def _limits(config: ChannelLimitsConfig) -> Limits:
    return Limits(
        queue_size=config.queue_size,
        timeout_s=config.timeout_s,
        attempts=config.attempts,
        backoff_s=config.backoff_s,
        backoff_max_s=config.backoff_max_s,
    )


def build_channels(
    settings: Settings,
    *,
    send: Callable[[Outgoing], None],
    is_up: Callable[[], bool],
    record: Callable[[DeliveryRecord], None],
    pin_factory: Any = None,
) -> ChannelRouter:
    """The router of a site: ``mqtt`` always (notices to staff devices through the gateway's link: ``send`` and
    ``is_up`` are the link's, called on the event loop's thread), and the siren, webhook and Apprise where the site
    file configures them. ``record`` takes every delivery record (the store writer's queue). Start it with
    :meth:`ChannelRouter.start` inside the running loop. A channel that cannot be opened does not stop the gateway:
    it is logged CRITICAL and fails every attempt, on record and in the stats."""
    cfg = settings.channels
    topics = Topics(settings.site.id, settings.mqtt.base_topic)
    made: list[tuple[str, ChannelLimitsConfig, Callable[[], Transport]]] = []
    made.append(("mqtt", cfg.mqtt, lambda: MqttNotifyTransport(topics, send, is_up)))
    if cfg.siren.pin is not None:
        pin = cfg.siren.pin
        active_high = cfg.siren.active_high
        made.append(("siren", cfg.siren, lambda: SirenTransport(pin, active_high=active_high, pin_factory=pin_factory)))
    if cfg.webhook.url is not None:
        url = cfg.webhook.url.get_secret_value()
        token = None if cfg.webhook.token is None else cfg.webhook.token.get_secret_value()
        made.append(("webhook", cfg.webhook, lambda: WebhookTransport(url, token=token)))
    if cfg.apprise.config is not None or cfg.apprise.urls is not None:
        urls = [] if cfg.apprise.urls is None else cfg.apprise.urls.get_secret_value().split()
        config_path = cfg.apprise.config
        made.append(("apprise", cfg.apprise, lambda: AppriseTransport(config_path=config_path, urls=urls)))
    workers: dict[str, ChannelWorker] = {}
    for name, limits, factory in made:
        transport: Transport
        try:
            transport = factory()
        except Exception as exc:  # noqa: BLE001 - a channel that cannot open must not stop the alarms
            error = str(exc) if isinstance(exc, ChannelError) else f"{type(exc).__name__}: {exc}"
            log.critical("alert channel %s cannot be opened (%s): its notices fail until this is fixed", name, error)
            transport = UnavailableTransport(name, error)
        workers[name] = ChannelWorker(transport, _limits(limits), record)
    log.info("alert channels: %s", ", ".join(workers))
    return ChannelRouter(workers, record)
