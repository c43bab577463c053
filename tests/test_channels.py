"""The channels of notices (docs/channels.md) against real endpoints: a small HTTP server for the webhook and for
Apprise's json:// target, delivery records in a real SQLite store through the real writer thread, the siren on
gpiozero's mock pins. No timing is asserted: a hanging channel is proven harmless by what the others complete
while it hangs.
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import time
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory

from alerts.channels.apprise import AppriseTransport
from alerts.channels.base import ChannelWorker, DeliveryRecord, Limits
from alerts.channels.router import ChannelRouter, build_channels
from alerts.channels.siren import SirenTransport
from alerts.channels.webhook import WebhookTransport
from alerts.notices import Notice, NoticeKind, Recipient
from gateway.domain.events import AlarmEvent
from gateway.domain.vocab import AlarmEventType, AlarmKind, Priority
from gateway.protocol import NotifyPayload, decode
from gateway.protocol.payloads import NoticeKindName
from gateway.settings import ConfigError, settings_from_mapping
from gateway.store import DeliveryRow, Store, StoreWriter
from gateway.store.schema import MIGRATIONS
from tests.channel_helpers import WAIT_S, HttpEndpoint
from tests.helpers import site_mapping

SITE = "ch-site"


# ------------------------------------------------------------------------------------------ builders


def alarm(
    alarm_id: str = "7-1", type_: AlarmEventType = AlarmEventType.RAISED, at: float = 1000.0, **kw: Any
) -> AlarmEvent:
    return AlarmEvent(
        seq=1,
        type=type_,
        alarm_id=alarm_id,
        kind=AlarmKind.CRIB_OPEN,
        priority=Priority.HIGH,
        site_id=SITE,
        room_id="vlinders",
        crib_id="vl-1",
        room_label="Vlinders",
        crib_label="Bedje 1",
        at=at,
        raised_at=1000.0,
        run=7,
        **kw,
    )


def notice(
    *recipients: Recipient,
    n: int = 1,
    kind: NoticeKind = NoticeKind.ALARM,
    event: AlarmEvent | None = None,
    at: float = 1000.0,
) -> Notice:
    ev = event or alarm()
    return Notice(f"{ev.alarm_id}/{n}", kind, ev, 0, tuple(recipients), at)


def to(channel: str, member: str = "staff-1", address: str = "", group: str = "room") -> Recipient:
    return Recipient(group=group, member=member, channel=channel, address=address)


def wait_until(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT_S
    while not (found := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"waited {WAIT_S} s for {what}")
        time.sleep(0.01)
    return found


# ------------------------------------------------------------------------------------------ endpoints


@pytest.fixture
def http() -> Iterator[HttpEndpoint]:
    endpoint = HttpEndpoint()
    yield endpoint
    endpoint.close()


@pytest.fixture
def http2() -> Iterator[HttpEndpoint]:
    endpoint = HttpEndpoint()
    yield endpoint
    endpoint.close()


class Record:
    """The delivery records in a real SQLite store, written by the real writer thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.writer = StoreWriter(Store.open(path, site_id=SITE))
        self.writer.start()
        self.taken: list[DeliveryRecord] = []
        self._lock = threading.Lock()

    def __call__(self, rec: DeliveryRecord) -> None:
        with self._lock:
            self.taken.append(rec)
        self.writer.delivery(DeliveryRow(**dataclasses.asdict(rec)))

    def results(self, channel: str) -> list[str]:
        with self._lock:
            return [r.result for r in self.taken if r.channel == channel]

    def rows(self) -> list[DeliveryRow]:
        assert self.writer.flush(timeout=WAIT_S)
        store = Store.open(self.path, site_id=SITE, readonly=True)
        try:
            return store.deliveries()
        finally:
            store.close()


@pytest.fixture
def record(tmp_path: Path) -> Iterator[Record]:
    rec = Record(tmp_path / "site.sqlite3")
    yield rec
    rec.writer.stop(timeout=5.0)


def worker(transport: Any, record: Record, **limits: Any) -> ChannelWorker:
    w = ChannelWorker(transport, Limits(**{"timeout_s": 5.0, "attempts": 3, "backoff_s": 0.01, **limits}), record)
    w.start()
    return w


# ------------------------------------------------------------------------------------------ webhook


def test_the_webhook_posts_each_notice_and_each_attempt_is_on_record(http: HttpEndpoint, record: Record) -> None:
    router = ChannelRouter({"webhook": worker(WebhookTransport(http.url(), token="s3cret"), record)}, record)
    router.send(notice(to("webhook", "staff-1", "pager-1"), to("webhook", "staff-2")))
    wait_until(lambda: record.results("webhook") == ["delivered", "delivered"], "two deliveries")
    router.close()
    first, second = http.json_bodies()
    assert first["channel"] == "webhook"
    assert (first["member"], first["address"], second["member"]) == ("staff-1", "pager-1", "staff-2")
    body = {k: v for k, v in first.items() if k not in {"channel", "address"}}
    payload = decode(NotifyPayload, json.dumps(body).encode())  # the notify payload of docs/protocol.md
    assert (payload.notice_id, payload.kind, payload.alarm.alarm_id, payload.alarm.crib_label) == (
        "7-1/1", "alarm", "7-1", "Bedje 1",
    )  # fmt: skip
    assert http.received[0][1]["Authorization"] == "Bearer s3cret"
    rows = record.rows()
    assert [(r.channel, r.member, r.notice_id, r.alarm_id, r.attempt, r.result) for r in rows] == [
        ("webhook", "staff-1", "7-1/1", "7-1", 1, "delivered"),
        ("webhook", "staff-2", "7-1/1", "7-1", 1, "delivered"),
    ]
    assert all(r.latency_ms is not None and r.latency_ms >= 0 and r.error is None for r in rows)


def test_a_failing_webhook_retries_gives_up_and_shows_failing_until_it_delivers_again(
    http: HttpEndpoint, record: Record
) -> None:
    http.status = 503
    w = worker(WebhookTransport(http.url()), record, attempts=3)
    router = ChannelRouter({"webhook": w}, record)
    router.send(notice(to("webhook"), kind=NoticeKind.RESOLVED))  # a resolved notice is retried like any
    wait_until(lambda: record.results("webhook") == ["failed", "failed", "gave_up"], "three attempts")
    health = router.health()["webhook"]
    assert (health.state, health.failed, health.gave_up, health.consecutive_failures) == ("failing", 3, 1, 3)
    assert health.last_error is not None
    assert "503" in health.last_error
    assert len(http.received) == 3

    http.status = 200
    router.send(notice(to("webhook"), n=2))
    wait_until(lambda: record.results("webhook")[-1:] == ["delivered"], "a delivery")
    health = router.health()["webhook"]
    assert (health.state, health.consecutive_failures, health.delivered) == ("ok", 0, 1)
    router.close()
    rows = record.rows()
    assert [(r.attempt, r.result, r.kind) for r in rows] == [
        (1, "failed", "resolved"), (2, "failed", "resolved"), (3, "gave_up", "resolved"), (1, "delivered", "alarm"),
    ]  # fmt: skip
    assert all(r.error and "503" in r.error for r in rows[:3])


def test_a_test_notice_is_marked_as_a_test_in_its_record(http: HttpEndpoint, record: Record) -> None:
    w = worker(WebhookTransport(http.url()), record)
    router = ChannelRouter({"webhook": w}, record)
    router.send(notice(to("webhook"), event=alarm(test=True)))
    wait_until(lambda: record.results("webhook") == ["delivered"], "the delivery")
    router.close()
    assert http.json_bodies()[0]["test"] is True
    (row,) = record.rows()
    assert row.test is True


# ------------------------------------------------------------------------------------------ Apprise


def test_apprise_delivers_to_a_json_target_and_records_each_delivery(http: HttpEndpoint, record: Record) -> None:
    transport = AppriseTransport(urls=[f"json://127.0.0.1:{http.port}/apprise"])
    router = ChannelRouter({"apprise": worker(transport, record)}, record)
    router.send(notice(to("apprise", "manager-1"), n=1))
    router.send(notice(to("apprise", "manager-1"), n=2, kind=NoticeKind.ESCALATION))
    wait_until(lambda: record.results("apprise") == ["delivered", "delivered"], "two deliveries")
    router.close()
    first, second = http.json_bodies("/apprise")
    assert "Vlinders / Bedje 1" in first["title"]
    assert "7-1" in first["message"]
    assert "escalated" in second["title"]
    assert [(r.notice_id, r.result) for r in record.rows()] == [("7-1/1", "delivered"), ("7-1/2", "delivered")]


def test_an_apprise_configuration_file_picks_targets_by_the_recipients_tag(
    http: HttpEndpoint, record: Record, tmp_path: Path
) -> None:
    config = tmp_path / "apprise.txt"
    config.write_text(
        f"managers=json://127.0.0.1:{http.port}/managers\nroom=json://127.0.0.1:{http.port}/room\n", encoding="utf-8"
    )
    router = ChannelRouter({"apprise": worker(AppriseTransport(config_path=str(config)), record)}, record)
    router.send(notice(to("apprise", "manager-1", address="managers")))
    router.send(notice(to("apprise", "nobody", address="no-such-tag"), n=2))
    wait_until(lambda: len(record.results("apprise")) == 4, "a delivery and three attempts")
    router.close()
    assert [p for p, _, _ in http.received] == ["/managers"]
    assert record.results("apprise") == ["delivered", "failed", "failed", "gave_up"]
    assert "no-such-tag" in (router.health()["apprise"].last_error or "")


# ------------------------------------------------------------------------------------------ siren


def test_the_siren_sounds_until_its_alarm_is_acknowledged_and_a_late_notice_is_skipped(record: Record) -> None:
    pins = MockFactory()
    siren = SirenTransport(24, pin_factory=pins)
    router = ChannelRouter({"siren": worker(siren, record)}, record)
    router.send(notice(to("siren", "site", group="site"), at=1030.0))
    wait_until(lambda: record.results("siren") == ["delivered"], "the siren on")
    assert pins.pin(24).state is True

    router.deliver(alarm(type_=AlarmEventType.ACKNOWLEDGED, at=1040.0, by="staff-1", device="pager-1"))
    assert pins.pin(24).state is False
    router.send(notice(to("siren", "site", group="site"), n=2, at=1035.0))  # decided before the ack: queued late
    wait_until(lambda: record.results("siren") == ["delivered", "skipped"], "the stale notice skipped")
    assert pins.pin(24).state is False

    router.send(notice(to("siren", "site", group="site"), n=3, kind=NoticeKind.REMINDER, at=1100.0))
    wait_until(lambda: record.results("siren")[-1:] == ["delivered"], "the reminder's siren")
    assert pins.pin(24).state is True  # a reminder after the ack escalates again: the siren sounds again
    router.send(notice(to("siren", "site", group="site"), n=4, kind=NoticeKind.RESOLVED, at=1200.0))
    wait_until(lambda: len(record.results("siren")) == 4, "the resolved notice")
    assert pins.pin(24).state is False
    router.close()


def test_the_siren_stops_when_its_alarm_resolves_and_sounds_while_another_alarm_does(record: Record) -> None:
    pins = MockFactory()
    router = ChannelRouter({"siren": worker(SirenTransport(24, pin_factory=pins), record)}, record)
    router.send(notice(to("siren"), event=alarm("7-1")))
    router.send(notice(to("siren"), event=alarm("7-2")))
    wait_until(lambda: record.results("siren") == ["delivered", "delivered"], "both alarms on the siren")
    router.deliver(alarm("7-1", AlarmEventType.RESOLVED, at=1050.0))
    assert pins.pin(24).state is True
    router.deliver(alarm("7-2", AlarmEventType.RESOLVED, at=1060.0))
    assert pins.pin(24).state is False
    router.close()


# ------------------------------------------------------------------------------------------ isolation


def test_a_hanging_and_a_broken_channel_never_hold_up_the_others(
    http: HttpEndpoint, http2: HttpEndpoint, record: Record
) -> None:
    """The webhook's endpoint takes the request and never answers; Apprise's target refuses connections. While the
    webhook's first attempt hangs, the siren and a second Apprise target deliver every notice, each on record."""
    http.hanging = True
    dead_port = http2.port
    http2.close()  # nothing listens there any more: connection refused
    pins = MockFactory()
    router = ChannelRouter(
        {
            "webhook": worker(WebhookTransport(http.url()), record, timeout_s=WAIT_S * 3),
            "apprise": worker(AppriseTransport(urls=[f"json://127.0.0.1:{dead_port}/x"]), record, attempts=2),
            "siren": worker(SirenTransport(24, pin_factory=pins), record),
        },
        record,
    )
    for n in (1, 2, 3):
        router.send(notice(to("webhook"), to("apprise"), to("siren", group="site"), n=n, event=alarm(f"7-{n}")))
    assert http.entered.wait(WAIT_S)
    wait_until(lambda: record.results("siren") == ["delivered"] * 3, "the siren's three deliveries")
    wait_until(lambda: record.results("apprise").count("gave_up") == 3, "Apprise's three deliveries given up")
    assert record.results("webhook") == []  # still in its first attempt, holding up nobody
    health = router.health()
    assert (health["webhook"].queued, health["webhook"].state) == (3, "ok")
    assert (health["apprise"].state, health["apprise"].consecutive_failures) == ("failing", 6)
    assert health["siren"].state == "ok"
    assert pins.pin(24).state is True

    http.release()
    wait_until(lambda: record.results("webhook") == ["delivered"] * 3, "the webhook once released")
    router.close()
    rows = record.rows()
    assert {(r.channel, r.result) for r in rows} == {
        ("webhook", "delivered"), ("siren", "delivered"), ("apprise", "failed"), ("apprise", "gave_up"),
    }  # fmt: skip


def test_a_channel_whose_attempt_hangs_past_its_timeout_shows_failing(http: HttpEndpoint, record: Record) -> None:
    """A transport that ignores its timeout (a library that hangs) is seen by the health, not by a stuck queue."""
    http.hanging = True

    class IgnoresItsTimeout(WebhookTransport):
        """The real webhook, as if its HTTP library ignored the timeout it is given."""

        def send(self, delivery: Any, timeout_s: float) -> Any:
            return super().send(delivery, WAIT_S * 3)

    now = [0.0]
    w = ChannelWorker(IgnoresItsTimeout(http.url()), Limits(timeout_s=2.0), record, monotonic=lambda: now[0])
    w.start()
    router = ChannelRouter({"webhook": w}, record)
    router.send(notice(to("webhook")))
    assert http.entered.wait(WAIT_S)
    assert router.health()["webhook"].state == "ok"
    now[0] = 10.0  # the attempt has now run for 10 s on the worker's clock, past 2 s + grace
    health = router.health()["webhook"]
    assert health.state == "failing"
    assert "running for 10 s" in (health.last_error or "")
    http.release()
    router.close()


def test_a_full_queue_drops_its_oldest_notice_on_record(http: HttpEndpoint, record: Record) -> None:
    http.hanging = True
    w = worker(WebhookTransport(http.url()), record, queue_size=2, timeout_s=WAIT_S * 3)
    router = ChannelRouter({"webhook": w}, record)
    router.send(notice(to("webhook"), n=1))
    assert http.entered.wait(WAIT_S)  # the first is in hand; the queue is empty
    for n in (2, 3, 4, 5):
        router.send(notice(to("webhook"), n=n))
    dropped = [r for r in record.taken if r.result == "dropped"]
    assert [r.notice_id for r in dropped] == ["7-1/2", "7-1/3"]  # the oldest waiting ones
    assert all("queue full" in (r.error or "") for r in dropped)
    assert (router.health()["webhook"].dropped, router.health()["webhook"].queued) == (2, 3)
    http.release()
    wait_until(lambda: record.results("webhook").count("delivered") == 3, "the rest delivered")
    router.close()
    assert [(r.notice_id, r.result) for r in record.rows()] == [
        ("7-1/2", "dropped"), ("7-1/3", "dropped"), ("7-1/1", "delivered"), ("7-1/4", "delivered"),
        ("7-1/5", "delivered"),
    ]  # fmt: skip


def test_a_recipient_of_a_channel_the_site_does_not_have_is_dropped_on_record(record: Record) -> None:
    router = ChannelRouter({}, record)
    router.send(notice(to("pigeon", "staff-1")))
    assert [(r.channel, r.result) for r in record.taken] == [("pigeon", "dropped")]
    assert router.health()["pigeon"].state == "failing"
    assert router.health()["pigeon"].dropped == 1


def test_addresses_are_recorded_without_their_secrets(record: Record) -> None:
    router = ChannelRouter({}, record)
    router.send(notice(to("apprise", address="tgram://123456:SECRET-TOKEN@telegram/987")))
    (rec,) = record.taken
    assert rec.address == "tgram://telegram"
    assert "SECRET" not in rec.address


# ------------------------------------------------------------------------------------------ settings


def channels_site(channels: dict[str, Any], *, demo: bool = False) -> dict[str, Any]:
    data = site_mapping()
    data["site"] = {**data["site"], "demo": demo}
    data["channels"] = channels
    return data


def test_channel_settings_take_their_secrets_from_the_environment_or_a_file(tmp_path: Path) -> None:
    env = {"CRIBWATCH_MQTT_USERNAME": "gw", "CRIBWATCH_MQTT_PASSWORD": "pw"}
    url_file = tmp_path / "webhook-url"
    url_file.write_text("https://alerts.example.org/hook/abc123\n", encoding="utf-8")
    settings = settings_from_mapping(
        channels_site({"webhook": {"url_file": str(url_file), "attempts": 5}, "siren": {"pin": 24}}),
        env={**env, "CRIBWATCH_APPRISE_URLS": "json://127.0.0.1/x ntfy://topic"},
    )
    webhook = settings.channels.webhook
    assert webhook.url is not None
    assert webhook.url.get_secret_value() == "https://alerts.example.org/hook/abc123"
    assert "abc123" not in repr(settings)
    assert (webhook.attempts, settings.channels.siren.pin) == (5, 24)
    assert settings.channels.apprise.urls is not None
    with_env = settings_from_mapping(
        channels_site({"webhook": {"url_file": str(url_file)}}),
        env={**env, "CRIBWATCH_WEBHOOK_URL": "https://other.example.org/h"},
    )
    assert with_env.channels.webhook.url is not None
    assert with_env.channels.webhook.url.get_secret_value() == "https://other.example.org/h"


@pytest.mark.parametrize(
    ("channels", "env", "says"),
    [
        ({"webhook": {"url": "https://x.example.org/t0ken"}}, {}, "secrets do not belong in the site file"),
        ({"apprise": {"urls": "tgram://a/b"}}, {}, "CRIBWATCH_APPRISE_URLS"),
        ({}, {"CRIBWATCH_WEBHOOK_URL": "http://alerts.example.org/hook"}, "use https"),
        ({}, {"CRIBWATCH_WEBHOOK_URL": "ftp://alerts.example.org/hook"}, "http(s) URL"),
        ({"webhook": {"url_file": "/nonexistent/webhook-url"}}, {}, "cannot read the file"),
        ({"siren": {"pin": 18}, "webhook": {"attempts": 0}}, {}, "attempts"),
        ({"mqtt": {"queue_size": "10"}}, {}, "queue_size"),
    ],
)
def test_bad_channel_settings_are_refused_with_the_key(
    channels: dict[str, Any], env: dict[str, str], says: str
) -> None:
    with pytest.raises(ConfigError) as err:
        settings_from_mapping(
            channels_site(channels), env={"CRIBWATCH_MQTT_USERNAME": "gw", "CRIBWATCH_MQTT_PASSWORD": "pw", **env}
        )
    assert says in str(err.value)


def test_the_siren_pin_cannot_be_a_crib_s_pin() -> None:
    with pytest.raises(ConfigError) as err:
        settings_from_mapping(channels_site({"siren": {"pin": 5}}, demo=True), env={})  # crib f-2 is on pin 5
    assert "channels.siren.pin" in str(err.value)


def test_plain_http_to_this_machine_or_on_a_demo_site_is_allowed() -> None:
    local = settings_from_mapping(
        channels_site({}, demo=True), env={"CRIBWATCH_WEBHOOK_URL": "http://192.0.2.7:8080/hook"}
    )
    assert local.channels.webhook.url is not None
    loopback = settings_from_mapping(
        channels_site({}),
        env={
            "CRIBWATCH_MQTT_USERNAME": "gw",
            "CRIBWATCH_MQTT_PASSWORD": "pw",
            "CRIBWATCH_WEBHOOK_URL": "http://127.0.0.1:9/h",
        },
    )
    assert loopback.channels.webhook.url is not None


def test_build_channels_opens_what_the_site_file_asks_and_a_broken_one_fails_on_record(
    tmp_path: Path, record: Record
) -> None:
    """A channel that cannot be opened (an Apprise configuration that does not exist) does not stop the gateway:
    it is there, failing every attempt on record and in the health."""
    settings = settings_from_mapping(
        channels_site(
            {"siren": {"pin": 24}, "apprise": {"config": str(tmp_path / "missing.yml"), "attempts": 1}}, demo=True
        ),
        env={"CRIBWATCH_WEBHOOK_URL": "http://127.0.0.1:9/h"},
    )
    router = build_channels(settings, send=lambda _: None, is_up=lambda: True, record=record, pin_factory=MockFactory())
    assert set(router.workers) == {"mqtt", "siren", "webhook", "apprise"}
    router.start()
    router.send(notice(to("apprise")))
    wait_until(lambda: record.results("apprise") == ["gave_up"], "the attempt")
    assert router.health()["apprise"].state == "failing"
    assert "not available" in (router.health()["apprise"].last_error or "")
    router.close()


# ------------------------------------------------------------------------------------------ the store


def row(at: float, alarm_id: str = "7-1", result: str = "delivered") -> DeliveryRow:
    return DeliveryRow(
        at, "webhook", "room", "staff-1", "", f"{alarm_id}/1", alarm_id, "alarm", 1, result, 3.5, None, test=False
    )


V1_TABLES = {"meta", "incidents", "timeline", "cribs", "outbox", "audit", "sensor_events", "sqlite_sequence"}


def test_a_store_of_schema_version_1_gains_the_deliveries_table_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "site.sqlite3"
    store = Store.open(path, site_id=SITE)
    with store.transaction():
        store.audit(1000.0, "staff-1", "test", "poke")
    conn = store.connection
    # As a file written by a gateway of schema version 1: without any table version 2 brought.
    for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
        if table not in V1_TABLES:
            conn.execute(f"DROP TABLE {table}")
    for table, column in re.findall(r"ALTER TABLE (\w+) ADD COLUMN (\w+)", "\n".join(map(str, MIGRATIONS[1:]))):
        conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")  # nor any column it added
    conn.execute("PRAGMA user_version = 1")
    store.close()
    store = Store.open(path, site_id=SITE)
    try:
        assert store.schema_version >= 2
        assert [e.action for e in store.audit_log()] == ["poke"]
        with store.transaction():
            store.record_delivery(row(1000.0))
        assert store.deliveries(alarm_id="7-1") == [row(1000.0)]
    finally:
        store.close()


def test_pruning_forgets_old_delivery_records(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "site.sqlite3", site_id=SITE)
    try:
        with store.transaction():
            store.record_delivery(row(1000.0, "1-1"))
            store.record_delivery(row(1000.0 + 86400 * 500, "2-1", "gave_up"))
        with store.transaction():
            counts = store.prune(now=1000.0 + 86400 * 500, keep_s=86400 * 400)
        assert counts["deliveries"] == 1
        assert [(r.alarm_id, r.result) for r in store.deliveries()] == [("2-1", "gave_up")]
    finally:
        store.close()


def test_the_notify_payload_knows_every_kind_of_notice() -> None:
    """The wire's kinds (gateway/protocol) and the policy's (alerts/notices.py) are written twice: they must agree."""
    assert set(typing.get_args(NoticeKindName)) == {kind.value for kind in NoticeKind}
