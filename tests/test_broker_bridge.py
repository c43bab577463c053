"""A site's Mosquitto bridged to the city's central broker (deploy/mosquitto/bridge.conf, central.acl): two real
Mosquittos on loopback. The site runs the shipped configuration with the accounts of `cribwatch provision`, the
bridge as the provision command renders it (without TLS: loopback), the central broker the shipped central ACL."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import pytest

from devtools.brokers import MosquittoBroker
from gateway.cli import main as cribwatch
from gateway.credentials import SiteCredentials, read_credentials_file
from gateway.mqtt.connection import BrokerAddress, new_client, stop_if_cancelled
from gateway.protocol import Topics
from gateway.provision import BRIDGE_TEMPLATE, Bridge, render_bridge

pytestmark = pytest.mark.integration

WAIT_S = 30.0
"""The bridge reconnects after 1 s, backing off to 10 s (bridge.conf restart_timeout): a generous bound."""
SITE = "bridged"
TOPICS = Topics(SITE)
CENTRAL_ACL = Path(__file__).resolve().parents[1] / "deploy" / "mosquitto" / "central.acl"
OTHER_SITE_PASSWORD = secrets.token_urlsafe(16)
SITE_FILE = f"""
[site]
id = "{SITE}"
label = "Bridged site"

[[rooms]]
id = "nursery"
label = "Nursery"

  [[rooms.cribs]]
  id = "n-1"
  label = "Crib 1"
  sensor_id = "s-1"
"""


@dataclass
class City:
    site: MosquittoBroker
    central: MosquittoBroker
    creds: SiteCredentials
    reader_password: str

    def site_login(self, username: str) -> BrokerAddress:
        account = next(a for a in self.creds.all_accounts() if a.username == username)
        return BrokerAddress("127.0.0.1", self.site.endpoint.port, account.username, account.password)

    def reader(self) -> BrokerAddress:
        return BrokerAddress("127.0.0.1", self.central.endpoint.port, "city-reader", self.reader_password)


@pytest.fixture
def city(tmp_path: Path) -> Iterator[City]:
    (tmp_path / "site.toml").write_text(SITE_FILE)
    creds_file = tmp_path / "creds.toml"
    files = ["--credentials", str(creds_file), "--password-file", str(tmp_path / "passwd")]
    files += ["--acl", str(tmp_path / "acl"), "--bridge-to", "127.0.0.1:1", "--bridge-conf", str(tmp_path / "b.conf")]
    assert cribwatch(["provision", "--config", str(tmp_path / "site.toml"), *files]) == 0
    creds = read_credentials_file(creds_file)
    bridge_account = creds.single["bridge"]
    assert bridge_account.username == SITE
    reader_password = secrets.token_urlsafe(16)
    users = {SITE: bridge_account.password, "city-reader": reader_password, "other-site": OTHER_SITE_PASSWORD}
    central_config = f"acl_file {CENTRAL_ACL}\nuse_username_as_clientid true"
    with MosquittoBroker(tmp_path / "central", users=users, extra_config=central_config) as central:
        # provision rendered the bridge for port 1 with the production CA; the same template, here without TLS.
        bridge = render_bridge(
            BRIDGE_TEMPLATE.read_text(),
            Bridge(SITE, "127.0.0.1", central.endpoint.port, bridge_account.password, ca_file=None),
        )
        with MosquittoBroker(
            tmp_path / "site",
            shipped=True,
            password_file=tmp_path / "passwd",
            acl_file=tmp_path / "acl",
            extra_config=bridge,
        ) as site:
            yield City(site, central, creds, reader_password)


class Reader:
    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.got: list[tuple[str, bytes]] = []
        self.changed = asyncio.Event()

    async def listen(self) -> None:
        async for message in self.client.messages:
            assert isinstance(message.payload, bytes)
            self.got.append((message.topic.value, message.payload))
            self.changed.set()

    async def until(self, topic: str, payload: bytes) -> None:
        stop_if_cancelled()
        async with asyncio.timeout(WAIT_S):
            while (topic, payload) not in self.got:
                self.changed.clear()
                await self.changed.wait()


@asynccontextmanager
async def reading(address: BrokerAddress, *, subscribe: bool = True) -> AsyncIterator[Reader]:
    """The city's reader: a persistent session (its subscription and queued messages outlive a disconnect)."""
    async with new_client(address, identifier="city-reader", clean_session=False) as client:
        reader = Reader(client)
        if subscribe:
            await client.subscribe(f"{TOPICS.base}/#", qos=1)
        task = asyncio.create_task(reader.listen())
        try:
            yield reader
        finally:
            task.cancel()


async def test_alarms_and_helping_hands_reach_the_city_also_after_an_outage(city: City) -> None:
    alarm, helping = TOPICS.alarm("nursery"), f"{TOPICS.prefix}/helping-hands/request"
    async with reading(city.reader()) as reader:
        await reader.until(f"{TOPICS.prefix}/bridge/state", b"1")  # the bridge's own notice: the link is up
        async with new_client(city.site_login("gateway"), identifier="gateway") as gateway:
            # What the bridge does not carry (a sensor's latch), then what it does: the city sees only the latter.
            await gateway.publish(f"{TOPICS.prefix}/sensor/s-1/latch", b"not for the city", qos=1)
            await gateway.publish(alarm, b"alarm-1", qos=1)
            await gateway.publish(helping, b"two hands in the Nursery", qos=1)
            await reader.until(alarm, b"alarm-1")
            await reader.until(helping, b"two hands in the Nursery")
            assert [t for t, _ in reader.got if "/sensor/" in t] == []

    # The central broker stops (cleanly: it keeps the reader's session); an alarm is raised meanwhile.
    await asyncio.to_thread(city.central.stop)
    async with new_client(city.site_login("gateway"), identifier="gateway") as gateway:
        await gateway.publish(alarm, b"alarm-2", qos=1)
    await asyncio.to_thread(city.central.start)
    async with reading(city.reader(), subscribe=False) as reader:
        await reader.until(alarm, b"alarm-2")
    assert "Denied" not in city.central.log_text()


async def test_a_site_cannot_write_under_another_sites_prefix_centrally(city: City) -> None:
    """central.acl: a site's account (its bridge) writes under its own site's prefix only."""
    other = BrokerAddress("127.0.0.1", city.central.endpoint.port, "other-site", OTHER_SITE_PASSWORD)
    async with reading(city.reader()) as reader, new_client(other, identifier="other-site") as other_site:
        await other_site.publish(TOPICS.alarm("nursery"), b"forged", qos=1)
        await other_site.publish("cribwatch/other-site/alarm/room", b"own", qos=1)
        await reader.until("cribwatch/other-site/alarm/room", b"own")
        assert [t for t, _ in reader.got if t == TOPICS.alarm("nursery")] == []
