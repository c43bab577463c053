"""What the alert policy asks the channels to deliver: a :class:`Notice` to its :class:`Recipient` s.

The contract between ``alerts/policy/`` (pure: who is told what and when, from the core's alarm events and the
clock) and ``alerts/channels/`` (the edges: each channel its own queue, timeout, retries and a delivery record
in the store). The policy never waits on a channel; a channel never decides who is told.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from gateway.domain.events import AlarmEvent
from gateway.protocol.helping import HelpingHandsPayload


class NoticeKind(enum.StrEnum):
    """Why a notice goes out."""

    ALARM = "alarm"  # the first step of an alarm's chain (raised)
    ESCALATION = "escalation"  # a later step: nobody acknowledged in time
    REPEAT = "repeat"  # the chain repeats from a step: still nobody acknowledged
    ACKNOWLEDGED = "acknowledged"  # someone has it: to everyone who was told (who has it, which device)
    REMINDER = "reminder"  # acknowledged, but the crib is still open after the configured time
    RESOLVED = "resolved"  # the alarm ended: to everyone who was told


@dataclass(frozen=True, slots=True)
class Recipient:
    """One address of one member of a staff group, on one channel.

    ``channel`` names a channel of the site file (``mqtt``, ``siren``, ``webhook``, ``apprise``, or a named
    instance of one); ``address`` is what that channel needs (a staff device id for ``mqtt``, a URL for a
    webhook or an Apprise target, empty for the siren). ``member`` is a staff id or a device id: never a child.
    """

    group: str
    member: str
    channel: str
    address: str


@dataclass(frozen=True, slots=True)
class Notice:
    """One step of an alarm's chain for a set of recipients, decided at ``at`` (wall clock)."""

    notice_id: str  # "<alarm_id>/<n>": unique, n counts the alarm's notices from 1
    kind: NoticeKind
    alarm: AlarmEvent  # the alarm's latest event when the notice was decided
    step: int  # the index of the escalation step (0 = first); for RESOLVED, the last step reached
    recipients: tuple[Recipient, ...]
    at: float

    @property
    def test(self) -> bool:
        return self.alarm.test


@dataclass(frozen=True, slots=True)
class RequestNotice:
    """Not an alarm: the coordinators told of a new (or urgent) helping-hands request (docs/helping-hands.md).

    LOW priority on every channel: each channel's worker takes it only when no alarm notice waits, a full queue drops
    it before any alarm notice, and the siren never sounds for it. Labels and staff ids only, never a child."""

    notice_id: str  # "hh-<request>/<change>"
    request: HelpingHandsPayload
    recipients: tuple[Recipient, ...]
    at: float
    test: bool = False

    @property
    def urgent(self) -> bool:
        return self.request.urgent


class NoticeSink(Protocol):
    """Where notices go (the channel router). ``send`` must return at once: a slow channel queues."""

    def send(self, notice: Notice) -> None: ...
