"""Helping hands on the broker: each request for extra staff and each change of its status, on
``<base>/<site>/helping-hands/<request>`` (QoS 1, not retained), so that a city-wide coordinator receives the
requests of every site through the broker bridge (docs/protocol.md, docs/helping-hands.md).

Not retained: each message is one step of a request's history (created, assigned, filled...), and a coordinator's
system keeps a persistent session (QoS 1), so it receives every step it missed, in order; a retained message would
replay only the last step, and would stay on the broker (and every bridge) for every request ever made. The
messages leave from the store's durable outbox, like alarm events: a broker away or a restart loses none.

Nothing in a payload identifies a child: the room or group, the window, how many people, the reason from a fixed
list, the status, and a staff contact. The free-text note stays on the site (it is the one field a person could
fill with what does not belong there).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gateway.domain.vocab import Identifier, Label
from gateway.protocol.payloads import _Payload
from gateway.protocol.topics import Qos, Topics, TopicSpec

HELPING_HANDS = TopicSpec(Qos.AT_LEAST_ONCE, retain=False)
"""A request and each change of it must arrive; not retained (history, see the module's docstring)."""

StatusName = Literal["new", "assigned", "partly_filled", "filled", "done", "cancelled"]
ReasonName = Literal["illness", "outing", "settling_in", "busy", "training", "other"]
SiteKindName = Literal["kdv", "cmww", "bso", "psz", "other"]


def helping_hands_topic(topics: Topics, request_id: int) -> str:
    """Where one request and each of its changes are published."""
    return f"{topics.prefix}/helping-hands/{request_id}"


def helping_hands_filter(topics: Topics) -> str:
    """Every request of the site (a coordinator's subscription; ``<base>/+/helping-hands/+`` for every site)."""
    return f"{topics.prefix}/helping-hands/+"


class HelpingHandsPayload(_Payload):
    """``<prefix>/helping-hands/<request>``: a request for helping hands as it is after one change."""

    request: int = Field(ge=1, description="The request's number on its gateway (unique for the life of the store).")
    change: int = Field(ge=1, description="The number of this change in the gateway's history (orders the steps).")
    event: Literal["created", "changed"] = Field(description="created (a new request) or changed (its status).")
    gateway_site: Identifier = Field(description="The site whose gateway took the request (the topic's site).")
    site: str = Field(min_length=1, max_length=64, description="The site that asks: this site or a partner site.")
    site_label: Label = Field(description="Its name as people read it (the settings' label, at most LABEL_MAX).")
    site_kind: SiteKindName = Field(description="kdv, cmww, bso, psz or other.")
    room: str = Field(min_length=1, max_length=64, description="The room or group that needs the help.")
    date: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$", description="The day, ISO 8601, in the site's time zone.")
    start: str = Field(pattern=r"^\d{2}:\d{2}$", description="From, HH:MM local time.")
    end: str = Field(pattern=r"^\d{2}:\d{2}$", description="To, HH:MM local time.")
    starts_at: float = Field(ge=0, description="From, Unix seconds.")
    ends_at: float = Field(ge=0, description="To, Unix seconds.")
    people: int = Field(ge=1, description="How many people are asked for.")
    filled: int = Field(ge=0, description="How many have been found so far.")
    reason: ReasonName = Field(description="illness, outing, settling_in, busy, training or other.")
    urgent: bool = Field(description="The requester marked it urgent.")
    status: StatusName = Field(description="new, assigned, partly_filled, filled, done or cancelled.")
    assignee: str | None = Field(default=None, max_length=64, description="The coordinator who has it (staff id).")
    contact: str = Field(min_length=1, max_length=64, description="Whom to call back: a staff id or a phone number.")
    requested_by: str = Field(min_length=1, max_length=64, description="The staff id that asked.")
    by: str = Field(min_length=1, max_length=64, description="The staff id that made this change.")
    ts: float = Field(ge=0, description="When this change was made, Unix seconds.")


class HelpingHandsNoticePayload(_Payload):
    """``<prefix>/notify/<device>``: a coordinator's device told of a new (or urgent) request (alert channel
    ``mqtt``; the webhook posts the same). Low priority: it waits behind every alarm notice."""

    notice_id: str = Field(min_length=1, max_length=96, description="hh-<request>/<change>: unique.")
    kind: Literal["helping_hands"] = "helping_hands"
    group: str = Field(min_length=1, max_length=64, description="The staff group the device is told as.")
    member: str | None = Field(default=None, max_length=64, description="The coordinator or device told.")
    ts: float = Field(ge=0, description="When the notice was decided, Unix seconds.")
    request: HelpingHandsPayload


def encode_helping(payload: HelpingHandsPayload | HelpingHandsNoticePayload) -> bytes:
    """Compact JSON, ``None`` fields left out (as :func:`gateway.protocol.encode`)."""
    return payload.model_dump_json(exclude_none=True).encode()
