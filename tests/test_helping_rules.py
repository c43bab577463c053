"""Helping hands' pure rules (gateway/domain/helping.py): the one table of status changes and who may make them;
and the notices to the coordinators on the real alert channels: low priority behind every alarm notice, the first
dropped from a full queue, never the siren, a phone-readable text with no note."""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from gpiozero.pins.mock import MockFactory

from alerts.channels.apprise import AppriseTransport
from alerts.channels.base import Delivery, describe_notice
from alerts.channels.mqtt_notify import notify_message
from alerts.channels.router import ChannelRouter
from alerts.channels.siren import SirenTransport
from alerts.channels.webhook import WebhookTransport
from alerts.notices import RequestNotice
from gateway.domain.helping import (
    START_GRACE_S,
    TRANSITIONS,
    Limits,
    Move,
    MoveError,
    Status,
    check_move,
    moves_for,
    validate_request,
)
from gateway.protocol import Topics
from gateway.protocol.helping import HELPING_HANDS, HelpingHandsNoticePayload, HelpingHandsPayload, helping_hands_topic
from tests.channel_helpers import WAIT_S, HttpEndpoint
from tests.test_channels import Record, http, http2, notice, record, to, wait_until, worker

__all__ = ["http", "http2", "record"]  # the fixtures, from the channels' tests

# ------------------------------------------------------------------------------------------ transitions


def _move(to: Status) -> Move:
    return Move(
        to=to, assignee="coor01" if to is Status.ASSIGNED else None, filled=1 if to is Status.PARTLY_FILLED else None
    )


@pytest.mark.parametrize(("current", "to"), list(itertools.product(Status, Status)))
def test_a_coordinator_may_make_exactly_the_changes_of_the_table(current: Status, to: Status) -> None:
    allowed = to in TRANSITIONS[current]
    args: dict[str, Any] = {"people": 3, "assignee": "coor02", "filled": 0, "coordinator": True, "requester": False}
    if allowed:
        assert check_move(current, _move(to), **args).status is to
    else:
        with pytest.raises(MoveError, match="not_allowed"):
            check_move(current, _move(to), **args)
    assert (to in moves_for(current, coordinator=True, requester=False)) == allowed


def test_done_and_cancelled_are_final_and_every_open_status_can_be_cancelled() -> None:
    assert TRANSITIONS[Status.DONE] == TRANSITIONS[Status.CANCELLED] == frozenset()
    for status in Status:
        if status not in {Status.DONE, Status.CANCELLED}:
            assert Status.CANCELLED in TRANSITIONS[status]
    assert Status.NEW not in set().union(*TRANSITIONS.values())  # nothing goes back to new


@pytest.mark.parametrize("to", list(Status))
def test_a_requester_may_only_cancel_and_another_person_nothing(to: Status) -> None:
    own = moves_for(Status.ASSIGNED, coordinator=False, requester=True)
    assert own == [Status.CANCELLED]
    assert moves_for(Status.ASSIGNED, coordinator=False, requester=False) == []
    if to is Status.CANCELLED:
        check_move(Status.ASSIGNED, _move(to), people=3, assignee=None, filled=0, coordinator=False, requester=True)
    else:
        with pytest.raises(MoveError):
            check_move(Status.ASSIGNED, _move(to), people=3, assignee=None, filled=0, coordinator=False, requester=True)
    with pytest.raises(MoveError, match="not_yours"):
        check_move(Status.NEW, _move(to), people=3, assignee=None, filled=0, coordinator=False, requester=False)


def test_filled_counts_and_assignees() -> None:
    def go(current: Status, move: Move, **kw: Any) -> Any:
        args = {"people": 3, "assignee": "coor01", "filled": 0, "coordinator": True, "requester": False, **kw}
        return check_move(current, move, **args)

    assert go(Status.NEW, Move(Status.FILLED)).filled == 3
    assert go(Status.ASSIGNED, Move(Status.PARTLY_FILLED, filled=2)).assignee == "coor01"
    assert go(Status.FILLED, Move(Status.PARTLY_FILLED, filled=2), filled=3).filled == 2  # someone dropped out
    for bad in (0, 3, None):
        with pytest.raises(MoveError, match="filled_range"):
            go(Status.NEW, Move(Status.PARTLY_FILLED, filled=bad))
    with pytest.raises(MoveError, match="not_allowed"):
        go(Status.PARTLY_FILLED, Move(Status.PARTLY_FILLED, filled=2), filled=2)  # nothing changed
    with pytest.raises(MoveError, match="assignee_missing"):
        go(Status.NEW, Move(Status.ASSIGNED))
    with pytest.raises(MoveError, match="comment_too_long"):
        go(Status.NEW, Move(Status.CANCELLED, comment="c" * 201))


# ------------------------------------------------------------------------------------------ the form's window

ZONE = ZoneInfo("Europe/Amsterdam")
NOW = dt.datetime(2026, 3, 2, 8, 0, 40, tzinfo=ZONE).timestamp()
"""08:00:40 on the day of the request: a person typing 08:00 means "now"."""


def window_errors(start: str, end: str) -> dict[str, str]:
    form = {
        "site": "kids-f", "room": "Dolfijnen", "day": "2026-03-02", "start": start, "end": end, "people": "2",
        "reason": "illness", "urgency": "normal", "note": "", "contact_kind": "phone", "contact": "+31612345678",
    }  # fmt: skip
    fields, errors = validate_request(
        form,
        now=NOW,
        zone=ZONE,
        sites=frozenset({"kids-f"}),
        limits=Limits(max_people=8, note_max=300, days_ahead=30),
        is_account=lambda name: False,
        phone=lambda text: text,
    )
    assert (fields is None) == bool(errors)
    return errors


@pytest.mark.parametrize(
    ("start", "end", "errors"),
    [
        ("08:00", "12:00", {}),  # the current minute
        ("07:46", "12:00", {}),  # a shift that began a quarter of an hour ago, less 40 s
        ("07:45", "12:00", {"start": "start_past"}),  # 15 min 40 s ago
        ("06:00", "12:00", {"start": "start_past"}),
        ("07:50", "08:00", {"end": "end_past"}),  # within the grace, but over: nothing left to help with
        ("08:30", "09:00", {}),
    ],
)
def test_a_start_up_to_a_quarter_of_an_hour_ago_is_taken_while_the_end_is_to_come(
    start: str, end: str, errors: dict[str, str]
) -> None:
    assert START_GRACE_S == 15 * 60
    assert window_errors(start, end) == errors


# ------------------------------------------------------------------------------------------ the channels

REQUEST = HelpingHandsPayload(
    request=4,
    change=9,
    event="created",
    gateway_site="kids-f",
    site="bso-vlinder",
    site_label="BSO De Vlinder",
    site_kind="bso",
    room="Dolfijnen",
    date="2026-03-02",
    start="13:00",
    end="17:30",
    starts_at=1_772_452_800.0,
    ends_at=1_772_469_000.0,
    people=2,
    filled=0,
    reason="illness",
    urgent=True,
    status="new",
    contact="+31612345678",
    requested_by="staf01",
    by="staf01",
    ts=1_772_430_000.0,
)


def request_notice(*recipients: Any, n: int = 1) -> RequestNotice:
    return RequestNotice(f"hh-4/{n}", REQUEST, tuple(recipients), 1000.0)


def test_requests_wait_behind_every_alarm_notice_of_their_channel(http: HttpEndpoint, record: Record) -> None:
    http.hanging = True
    router = ChannelRouter({"webhook": worker(WebhookTransport(http.url()), record, timeout_s=30)}, record)
    router.send(notice(to("webhook"), n=1))
    assert http.entered.wait(10)  # the first alarm notice is in hand
    router.send(request_notice(to("webhook", group="coordinators"), n=1))
    router.send(notice(to("webhook"), n=2))
    router.send(request_notice(to("webhook", group="coordinators"), n=2))
    router.send(notice(to("webhook"), n=3))
    http.release()
    wait_until(lambda: record.results("webhook").count("delivered") == 5, "all five delivered")
    router.close()
    order = [b.get("notice_id") for b in http.json_bodies()]
    assert order == ["7-1/1", "7-1/2", "7-1/3", "hh-4/1", "hh-4/2"]
    told = HelpingHandsNoticePayload.model_validate(
        {k: v for k, v in http.json_bodies()[3].items() if k not in {"channel", "address"}}
    )
    assert (told.kind, told.request.request, told.request.urgent) == ("helping_hands", 4, True)
    rows = [(r.notice_id, r.alarm_id, r.kind) for r in record.rows() if r.notice_id.startswith("hh-")]
    assert rows == [("hh-4/1", "hh-4", "helping_hands"), ("hh-4/2", "hh-4", "helping_hands")]


def test_an_alarm_notice_never_waits_behind_a_request_in_hand(
    http: HttpEndpoint, http2: HttpEndpoint, record: Record
) -> None:
    """A coordinator's endpoint takes the request and never answers (Apprise, three attempts each as long as the
    test may wait): an alarm notice put in while the request is in hand is delivered by the same channel before the
    request's first attempt ends, let alone its retries."""
    http.hanging = True
    coordinator = to(
        "apprise", member="coord-1", group="coordinators", address=f"json://127.0.0.1:{http.port}/hh?rto=60"
    )
    staff = to("apprise", address=f"json://127.0.0.1:{http2.port}/staff")
    w = worker(AppriseTransport(urls=[f"json://127.0.0.1:{http2.port}/default"]), record, timeout_s=WAIT_S * 3)
    router = ChannelRouter({"apprise": w}, record)
    router.send(request_notice(coordinator))
    assert http.entered.wait(WAIT_S)  # the request is in hand, hanging
    router.send(notice(staff, n=1))
    wait_until(lambda: http2.json_bodies("/staff"), "the alarm notice while the request hangs")
    wait_until(lambda: "delivered" in record.results("apprise"), "the alarm notice's record")
    assert [(r.notice_id, r.result) for r in record.taken] == [("7-1/1", "delivered")]  # the request: no outcome yet
    assert router.health()["apprise"].queued == 1  # the request, still in hand
    http.release()
    wait_until(lambda: record.results("apprise").count("delivered") == 2, "the request once answered")
    router.close()
    assert [(r.notice_id, r.attempt, r.result) for r in record.rows()] == [
        ("7-1/1", 1, "delivered"), ("hh-4/1", 1, "delivered"),
    ]  # fmt: skip


def test_a_full_queue_drops_requests_first_and_never_an_alarm_notice_for_one(
    http: HttpEndpoint, record: Record
) -> None:
    http.hanging = True
    router = ChannelRouter(
        {"webhook": worker(WebhookTransport(http.url()), record, queue_size=2, timeout_s=30)}, record
    )
    router.send(notice(to("webhook"), n=1))
    assert http.entered.wait(10)
    router.send(request_notice(to("webhook"), n=1))
    router.send(notice(to("webhook"), n=2))  # full: queue = [hh-4/1, 7-1/2]
    router.send(notice(to("webhook"), n=3))  # the request goes, not an alarm notice
    router.send(request_notice(to("webhook"), n=2))  # full of alarm notices: the request itself is dropped
    dropped = [(r.notice_id, r.error) for r in record.taken if r.result == "dropped"]
    assert [d[0] for d in dropped] == ["hh-4/1", "hh-4/2"]
    assert "of alarm notices" in (dropped[1][1] or "")
    http.release()
    wait_until(lambda: record.results("webhook").count("delivered") == 3, "the alarm notices delivered")
    router.close()
    assert [b["notice_id"] for b in http.json_bodies()] == ["7-1/1", "7-1/2", "7-1/3"]


def test_the_siren_never_sounds_for_a_request(record: Record) -> None:
    pins = MockFactory()
    router = ChannelRouter({"siren": worker(SirenTransport(24, pin_factory=pins), record)}, record)
    router.send(request_notice(to("siren", group="coordinators")))
    wait_until(lambda: record.results("siren") == ["skipped"], "the siren's skip")
    assert pins.pin(24).state is False
    router.close()


def test_apprise_and_mqtt_tell_a_request_without_its_note(http: HttpEndpoint, record: Record) -> None:
    router = ChannelRouter(
        {"apprise": worker(AppriseTransport(urls=[f"json://127.0.0.1:{http.port}/apprise"]), record)}, record
    )
    router.send(request_notice(to("apprise", group="coordinators")))
    wait_until(lambda: record.results("apprise") == ["delivered"], "Apprise's delivery")
    router.close()
    [body] = http.json_bodies("/apprise")
    title, text = describe_notice(request_notice())
    assert (body["title"], body["message"], body["type"]) == (title, text, "warning")  # urgent: a warning
    assert title == "URGENT Helping hands: 2 for BSO De Vlinder / Dolfijnen, 2026-03-02 13:00-17:30"
    assert "+31612345678" in text
    message = notify_message(
        Topics("kids-f"), Delivery(request_notice(), to("mqtt", member="coord-1", address="tab-9"))
    )
    assert (message.topic, message.qos, message.retain) == ("cribwatch/kids-f/notify/tab-9", 1, False)
    told = HelpingHandsNoticePayload.model_validate_json(message.payload, context={"wire": True})
    assert (told.member, told.request) == ("coord-1", REQUEST)


# ------------------------------------------------------------------------------------------ docs/protocol.md


def test_the_protocol_doc_describes_the_topic_and_every_field_and_its_example_is_valid() -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text(encoding="utf-8")
    section = doc.split("### Gateway → coordinators: `helping-hands/<request>`", 1)[1].split("\n### ", 1)[0]
    example = section.split("```text\n", 1)[1].split("```", 1)[0]
    parsed = HelpingHandsPayload.model_validate_json(example, context={"wire": True})
    assert parsed.status == "partly_filled"
    for name in HelpingHandsPayload.model_fields:
        if name != "v":
            assert f"`{name}`" in section, name
    row = next(line for line in doc.splitlines() if line.startswith("| `<base>/<site>/helping-hands/<request>`"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert (cells[2], cells[3]) == (str(int(HELPING_HANDS.qos)), "yes" if HELPING_HANDS.retain else "no")
    assert helping_hands_topic(Topics("kids-f"), 4) == "cribwatch/kids-f/helping-hands/4"
