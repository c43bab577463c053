"""The web app inside the gateway's process: uvicorn serving :func:`create_app` as one task of the gateway's
TaskGroup, on the gateway's event loop (docs/web.md)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

import uvicorn

from gateway.domain.events import AckRequest, Outcome, SiteSnapshot
from gateway.protocol import GatewayStatsPayload
from gateway.protocol.codec import Outgoing
from gateway.store.accounts import AccountStore
from gateway.web.app import create_app, wrap
from gateway.web.live import GatewayVitals

if TYPE_CHECKING:
    from alerts.notices import RequestNotice
    from gateway.app import Gateway

log = logging.getLogger("cribwatch.web")


class GatewayAdapter:
    """The gateway seen through :class:`~gateway.web.live.GatewayPort`."""

    def __init__(self, gateway: Gateway) -> None:
        self._gw = gateway

    def snapshot(self) -> SiteSnapshot:
        return self._gw.snapshot()

    def broker_connected(self) -> bool:
        return self._gw.mqtt.connected.is_set()

    def acknowledge(self, ack: AckRequest) -> Outcome:
        """``ack.by`` is the staff id the board authenticated (its login, or the person picked on a wall tablet):
        the fact the gateway records, with the board or tablet as the device."""
        return self._gw.submit(ack, login=ack.by)

    def test_alarm(self, crib: str, *, by: str) -> Outcome:
        return self._gw.test_alarm(crib, by=by)

    def maintenance_on(self, crib: str, *, reason: str, until: float, by: str) -> Outcome:
        return self._gw.maintenance_on(crib, reason=reason, until=until, by=by)

    def maintenance_off(self, crib: str, *, by: str) -> Outcome:
        return self._gw.maintenance_off(crib, by=by)

    def stats_payload(self) -> GatewayStatsPayload:
        return self._gw.stats_payload()

    def audit(self, at: float, actor: str, source: str, action: str, detail: str) -> None:
        self._gw.writer.audit(at, actor, source, action, detail)

    def vitals(self) -> GatewayVitals:
        gw = self._gw
        return GatewayVitals(gw.started_at, len(gw.mqtt.offline_buffer), tuple(gw.recent_alert_latency_s))

    def publish_kept(self, item: Outgoing) -> None:
        """The link reports the broker's acknowledgement of ``item.key`` to the gateway, which marks its outbox row
        delivered (the same path as an alarm event's); at a restart before that, the row is sent again."""
        self._gw.mqtt.send(item)

    def notify_low(self, notice: RequestNotice) -> None:
        self._gw.channels.send(notice)


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the gateway's process owns SIGINT/SIGTERM, and stops this task by
    cancelling it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class WebServerError(Exception):
    """uvicorn gave up (it calls ``sys.exit`` when it cannot bind its port)."""


async def _serve(server: uvicorn.Server) -> None:
    """``server.serve()``, with uvicorn's SystemExit turned into an exception of this task: a SystemExit in a task
    would leave the event loop itself and stop the gateway."""
    try:
        await server.serve()
    except SystemExit as exc:
        raise WebServerError(f"the web server exited (code {exc.code}): is web.port taken?") from None


async def serve_web(gateway: Gateway) -> None:
    """Serve the web app until cancelled (``[web]`` must be set). A failure (the port taken, the store unreadable)
    is logged CRITICAL and ends this task alone: the alarm path goes on without a board."""
    web = gateway.settings.web
    if web is None:
        return
    try:
        accounts = await asyncio.to_thread(AccountStore.open, gateway.store_path, site_id=gateway.settings.site.id)
    except Exception:
        log.critical("the web app cannot open the accounts: no board or console (the alarms go on)", exc_info=True)
        return
    app = create_app(gateway.settings, GatewayAdapter(gateway), accounts, gateway.web_changes)
    config = uvicorn.Config(
        wrap(app),
        host=web.host,
        port=web.port,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=1,
        server_header=False,
    )
    server = _Server(config)
    inner = asyncio.create_task(_serve(server), name="web-server")
    try:
        await asyncio.shield(inner)
        log.critical("the web app stopped: no board or console until the gateway restarts (the alarms go on)")
    except asyncio.CancelledError:
        server.should_exit = True
        gateway.web_changes.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(inner, timeout=3)
        raise
    except Exception:
        log.critical(
            "the web app failed: no board or console until the gateway restarts (the alarms go on)", exc_info=True
        )
    finally:
        accounts.close()
