"""Helping hands on a real Mosquitto, through the gateway's served web app: each request and each status change
reaches a city-wide coordinator's subscription (``<base>/+/helping-hands/+``, QoS 1) from the store's durable
outbox, which marks each message delivered once the broker acknowledged it; the coordinators' device is told at
low priority; and a request made while the broker is away survives a gateway restart and reaches the coordinator
when the broker is back."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar
from zoneinfo import ZoneInfo

import aiomqtt
import httpx
import pytest

from devtools.brokers import BrokerEndpoint, MosquittoBroker, free_port
from gateway.mqtt.connection import new_client
from gateway.protocol import Topics
from gateway.protocol.helping import HelpingHandsNoticePayload, HelpingHandsPayload
from gateway.settings import Settings
from gateway.store import Store
from gateway.store.accounts import AccountStore
from gateway.web.auth import Role
from tests.test_brokers import SHIPPED_ACL, as_user, client, next_message
from tests.test_gateway_integration import make_settings, running
from tests.web_helpers import PASSWORD, USERS, add_users

pytestmark = pytest.mark.integration

WAIT_S = 15.0
CITY_FILTER = "cribwatch/+/helping-hands/+"
"""What a city-wide coordinator subscribes to through the broker bridge: every site's requests."""
T = TypeVar("T")


def helping_site(endpoint: BrokerEndpoint) -> tuple[Settings, str]:
    port = free_port()
    helping = {"coordinators": [{"id": "coord-1", "channels": [{"channel": "mqtt", "address": "coord-tab-1"}]}]}
    settings = make_settings(endpoint, web={"host": "127.0.0.1", "port": port}, helping_hands=helping)
    accounts = AccountStore.open(settings.store_path, site_id=settings.site.id)
    add_users(accounts)
    accounts.close()
    return settings, f"http://127.0.0.1:{port}"


def tomorrow(settings: Settings) -> str:
    zone = ZoneInfo(settings.alerting.time_zone)
    return (dt.datetime.now(zone).date() + dt.timedelta(days=1)).isoformat()


async def until(check: Callable[[], T | None], what: str) -> T:
    async with asyncio.timeout(WAIT_S):
        while (found := check()) is None or found is False:  # noqa: ASYNC110 - a condition no event signals
            await asyncio.sleep(0.05)
    return found


@asynccontextmanager
async def web_session(base: str, role: Role) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """Logged in through the login form, as a browser: (client, the session's CSRF token)."""
    async with httpx.AsyncClient(base_url=base) as client:
        async with asyncio.timeout(WAIT_S):
            while True:
                try:
                    page = await client.get("/login")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
        token = client.cookies["cw_login"]
        answer = await client.post("/login", data={"username": USERS[role], "password": PASSWORD, "csrf": token})
        assert answer.status_code == 303, page.text[:200]
        welcome = await client.get("/welcome")
        found = re.search(r'name="csrf" value="([^"]+)"', welcome.text)
        assert found
        yield client, found.group(1)


async def ask(base: str, settings: Settings, **changes: str) -> int:
    form = {
        "site": settings.site.id,
        "room": "Dolfijnen",
        "day": tomorrow(settings),
        "start": "09:00",
        "end": "12:30",
        "people": "2",
        "reason": "busy",
        "urgency": "urgent",
        "note": "",
        "contact_kind": "phone",
        "contact": "+31 6 12345678",
        **changes,
    }
    async with web_session(base, Role.STAFF) as (client, csrf):
        answer = await client.post("/helping/new", data={**form, "csrf": csrf})
    assert answer.status_code == 303, answer.text[:500]
    return int(answer.headers["location"].rsplit("=", 1)[1])


def outbox_of(settings: Settings) -> list[tuple[str, float | None]]:
    store = Store.open(settings.store_path, site_id=settings.site.id, readonly=True)
    try:
        rows = store.connection.execute("SELECT key, delivered_at FROM outbox WHERE key LIKE 'hh:%' ORDER BY id")
        return [(r[0], r[1]) for r in rows.fetchall()]
    finally:
        store.close()


class Listener:
    """A coordinator's MQTT client: every helping-hands message of every site, and its device's notices."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.requests: list[HelpingHandsPayload] = []
        self.notices: list[HelpingHandsNoticePayload] = []
        self.retained: list[bool] = []

    async def listen(self) -> None:
        async for message in self.client.messages:
            raw = message.payload
            assert isinstance(raw, bytes)
            if "/notify/" in message.topic.value:
                self.notices.append(HelpingHandsNoticePayload.model_validate_json(raw, context={"wire": True}))
            else:
                self.requests.append(HelpingHandsPayload.model_validate_json(raw, context={"wire": True}))
                self.retained.append(bool(message.retain))


@asynccontextmanager
async def listener(
    endpoint: BrokerEndpoint, topics: Topics, *, client_id: str | None = None, clean: bool = True
) -> AsyncIterator[Listener]:
    async with new_client(endpoint, identifier=client_id or f"city-{secrets.token_hex(3)}", clean_session=clean) as c:
        await c.subscribe(CITY_FILTER, qos=1)
        await c.subscribe(topics.notify("coord-tab-1"), qos=1)
        found = Listener(c)
        task = asyncio.create_task(found.listen())
        try:
            yield found
        finally:
            task.cancel()


async def test_each_request_and_change_reaches_the_city_coordinator_and_leaves_the_outbox(
    mqtt_endpoint: BrokerEndpoint,
) -> None:
    settings, base = helping_site(mqtt_endpoint)
    topics = Topics(settings.site.id)
    async with running(settings), listener(mqtt_endpoint, topics) as city:
        request_id = await ask(base, settings)
        created = await until(lambda: city.requests[0] if city.requests else None, "the new request")
        assert (created.request, created.event, created.status, created.urgent) == (request_id, "created", "new", True)
        assert (created.gateway_site, created.site, created.contact) == (
            settings.site.id,
            settings.site.id,
            "+31612345678",
        )
        assert city.retained == [False]
        notice = await until(lambda: city.notices[0] if city.notices else None, "the coordinators' notice")
        assert (notice.kind, notice.group, notice.member, notice.request.request) == (
            "helping_hands", "coordinators", "coord-1", request_id,
        )  # fmt: skip

        async with web_session(base, Role.COORDINATOR) as (coordinator, csrf):
            answer = await coordinator.post(
                f"/helping/requests/{request_id}/status", data={"to": "assigned", "csrf": csrf}
            )
            assert answer.status_code == 303
        assigned = await until(lambda: city.requests[1] if len(city.requests) > 1 else None, "the change")
        assert (assigned.event, assigned.status, assigned.assignee) == ("changed", "assigned", USERS[Role.COORDINATOR])
        assert len(city.notices) == 1  # a status change is published, not told again

        # the broker acknowledged both: their outbox rows are marked delivered (the link settles within 0.5 s)
        def delivered() -> list[tuple[str, float | None]] | None:
            rows = outbox_of(settings)
            return rows if len(rows) == 2 and all(at is not None for _, at in rows) else None

        rows = await until(delivered, "both outbox rows delivered")
        assert [key for key, _ in rows] == [f"hh:{request_id}:1", f"hh:{request_id}:2"]


async def test_a_request_made_while_the_broker_is_away_survives_a_restart_and_reaches_the_coordinator(
    tmp_path: Path,
) -> None:
    with MosquittoBroker(tmp_path / "broker", users={"gw": secrets.token_urlsafe(8)}) as broker:
        endpoint = broker.endpoint
        settings, base = helping_site(endpoint)
        topics = Topics(settings.site.id)
        city_id = f"city-{secrets.token_hex(3)}"
        async with listener(endpoint, topics, client_id=city_id, clean=False):
            pass  # a persistent session: the broker keeps what comes while the coordinator is away
        async with running(settings) as gw:
            broker.stop()  # a clean stop: Mosquitto saves the coordinator's session
            await until(lambda: not gw.mqtt.connected.is_set(), "the gateway sees the broker gone")
            request_id = await ask(base, settings, urgency="normal")  # the form works without the broker
        # the gateway stopped before the broker came back: the message waits in the store
        assert outbox_of(settings) == [(f"hh:{request_id}:1", None)]
        broker.start()
        async with running(settings) as restarted:
            assert restarted.resent >= 1
            async with listener(endpoint, topics, client_id=city_id, clean=False) as city:
                got = await until(lambda: city.requests[0] if city.requests else None, "the request after restart")
                assert (got.request, got.status, got.urgent) == (request_id, "new", False)
            await until(lambda: outbox_of(settings)[0][1] is not None or None, "the row marked delivered")


async def test_the_shipped_acl_lets_the_coordinator_account_read_the_requests_and_nothing_else(tmp_path: Path) -> None:
    """A denied PUBLISH still succeeds for the client (Mosquitto drops it silently): each forbidden message is
    followed by an allowed one, and the reader must get the allowed one only."""
    users = {"gateway": "gw", "coordinator": "co-secret", "staff": "staff-secret"}
    with MosquittoBroker(tmp_path, users=users, extra_config=f"acl_file {SHIPPED_ACL}") as broker:
        ep = broker.endpoint
        async with (
            client(as_user(ep, "gateway", "gw")) as gateway,
            client(as_user(ep, "coordinator", "co-secret")) as coordinator,
            client(as_user(ep, "staff", "staff-secret")) as staff,
        ):
            await gateway.subscribe("cribwatch/#", qos=1)
            await coordinator.subscribe("cribwatch/#", qos=1)  # allowed to subscribe; only requests are delivered
            await staff.subscribe("cribwatch/+/helping-hands/+", qos=1)
            await gateway.publish("cribwatch/site1/alarm/room1", b"alarm", qos=1)
            await gateway.publish("cribwatch/site1/helping-hands/4", b"request", qos=1)
            got = await next_message(coordinator)
            assert (got.topic.value, got.payload) == ("cribwatch/site1/helping-hands/4", b"request")
            for _ in range(2):
                await next_message(gateway)  # its own two, through cribwatch/#
            # the coordinator forges no request (its own ack topic, which the ACL's patterns give every account, the
            # gateway refuses: `coordinator` is a reserved device id, RESERVED_DEVICE_IDS)
            await coordinator.publish("cribwatch/site1/helping-hands/5", b"forged", qos=1)
            await gateway.publish("cribwatch/site1/gateway/stats", b"stats", qos=1)
            got = await next_message(gateway)
            assert got.topic.value == "cribwatch/site1/gateway/stats"
            with pytest.raises(TimeoutError):
                await next_message(coordinator, within=0.3)  # not the alarm, not the stats
            with pytest.raises(TimeoutError):
                await next_message(staff, within=0.1)  # the board account reads no requests
