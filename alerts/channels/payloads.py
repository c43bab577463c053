"""A notice for one recipient as the payload of docs/protocol.md: ``notify`` for an alarm's notice, the
helping-hands notice for a request. The channels that send JSON (``mqtt``, ``webhook``) build it here, once."""

from __future__ import annotations

from alerts.channels.base import Delivery
from alerts.notices import RequestNotice
from gateway.protocol import NotifyPayload
from gateway.protocol.codec import alarm_event_payload
from gateway.protocol.helping import HelpingHandsNoticePayload


def notice_payload(delivery: Delivery) -> NotifyPayload | HelpingHandsNoticePayload:
    notice, recipient = delivery.notice, delivery.recipient
    if isinstance(notice, RequestNotice):
        return HelpingHandsNoticePayload(
            notice_id=notice.notice_id,
            group=recipient.group,
            member=recipient.member,
            ts=notice.at,
            request=notice.request,
        )
    return NotifyPayload(
        notice_id=notice.notice_id,
        kind=notice.kind.value,
        step=notice.step,
        group=recipient.group,
        member=recipient.member,
        test=notice.test,
        ts=notice.at,
        alarm=alarm_event_payload(notice.alarm),
    )
