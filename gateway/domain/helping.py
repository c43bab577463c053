"""Helping hands ("handjes hulp"): a site asks the city's coordinators for extra staff for a time window.

Pure: the words (status, reason, urgency), the one table of allowed status changes and who may make them, and the
validation of a request form, given the time and the site's limits. No I/O; the web module and the store call
these (docs/helping-hands.md). Nothing here identifies a child: a request names a room or group, a window, a
number of people, a reason from a fixed list, a short note and a staff contact.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from zoneinfo import ZoneInfo


class Status(enum.StrEnum):
    NEW = "new"
    ASSIGNED = "assigned"  # a coordinator has taken it (``assignee``)
    PARTLY_FILLED = "partly_filled"  # some of the people found (``filled`` < ``people``)
    FILLED = "filled"  # everyone found
    DONE = "done"  # the window is over, the help came
    CANCELLED = "cancelled"


class Reason(enum.StrEnum):
    ILLNESS = "illness"
    OUTING = "outing"
    SETTLING_IN = "settling_in"
    BUSY = "busy"
    TRAINING = "training"
    OTHER = "other"


class Urgency(enum.StrEnum):
    NORMAL = "normal"
    URGENT = "urgent"


class ContactKind(enum.StrEnum):
    ACCOUNT = "account"  # a staff account of this site (its staff id)
    PHONE = "phone"


OPEN_STATUSES = frozenset({Status.NEW, Status.ASSIGNED, Status.PARTLY_FILLED, Status.FILLED})
"""A request still being worked on (``done`` and ``cancelled`` end it)."""

TRANSITIONS: Mapping[Status, frozenset[Status]] = {
    Status.NEW: frozenset({Status.ASSIGNED, Status.PARTLY_FILLED, Status.FILLED, Status.CANCELLED}),
    Status.ASSIGNED: frozenset({Status.ASSIGNED, Status.PARTLY_FILLED, Status.FILLED, Status.CANCELLED}),
    Status.PARTLY_FILLED: frozenset(
        {Status.ASSIGNED, Status.PARTLY_FILLED, Status.FILLED, Status.DONE, Status.CANCELLED}
    ),
    Status.FILLED: frozenset({Status.PARTLY_FILLED, Status.DONE, Status.CANCELLED}),
    Status.DONE: frozenset(),
    Status.CANCELLED: frozenset(),
}
"""Every allowed status change, the one place that says so. ``assigned -> assigned`` hands a request to another
coordinator; ``partly_filled -> partly_filled`` counts one more person found; ``filled -> partly_filled``: someone
dropped out. ``done`` and ``cancelled`` are final."""

REQUESTER_MOVES = frozenset({Status.CANCELLED})
"""What the person who asked may do to their own open request: cancel it (the rest is the coordinators')."""


class MoveError(ValueError):
    """A status change that is not allowed; ``code`` names why (a message key)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass(frozen=True, slots=True)
class Move:
    """A status change as asked: the new status, and for ``assigned`` whom, for ``partly_filled`` how many."""

    to: Status
    assignee: str | None = None
    filled: int | None = None
    comment: str = ""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a request becomes after a :class:`Move`."""

    status: Status
    assignee: str | None
    filled: int


COMMENT_MAX = 200
"""The longest comment on a status change."""


def check_move(
    current: Status,
    move: Move,
    *,
    people: int,
    assignee: str | None,
    filled: int,
    coordinator: bool,
    requester: bool,
) -> Outcome:
    """The request after ``move``, or :class:`MoveError`. ``coordinator``: the actor is a coordinator;
    ``requester``: the actor asked for this request."""
    if not coordinator and not (requester and move.to in REQUESTER_MOVES):
        raise MoveError("not_yours")
    if move.to not in TRANSITIONS[current]:
        raise MoveError("not_allowed")
    if len(move.comment) > COMMENT_MAX:
        raise MoveError("comment_too_long")
    match move.to:
        case Status.ASSIGNED:
            if not move.assignee:
                raise MoveError("assignee_missing")
            if current is Status.ASSIGNED and move.assignee == assignee:
                raise MoveError("not_allowed")
            return Outcome(Status.ASSIGNED, move.assignee, filled)
        case Status.PARTLY_FILLED:
            count = move.filled
            if count is None or not 1 <= count < people:
                raise MoveError("filled_range")
            if current is Status.PARTLY_FILLED and count == filled:
                raise MoveError("not_allowed")
            return Outcome(Status.PARTLY_FILLED, move.assignee or assignee, count)
        case Status.FILLED:
            return Outcome(Status.FILLED, move.assignee or assignee, people)
        case _:
            return Outcome(move.to, assignee, filled)


def moves_for(current: Status, *, coordinator: bool, requester: bool) -> list[Status]:
    """The statuses this actor may move a request to (in the order of :class:`Status`)."""
    allowed = TRANSITIONS[current]
    if not coordinator:
        allowed = allowed & REQUESTER_MOVES if requester else frozenset()
    return [s for s in Status if s in allowed]


# ------------------------------------------------------------------------------------------ the form


@dataclass(frozen=True, slots=True)
class Limits:
    """The site's limits on a request ([helping_hands] in the site file)."""

    max_people: int
    note_max: int
    days_ahead: int
    room_max: int = 64


@dataclass(frozen=True, slots=True)
class RequestFields:
    """A valid request, as the store keeps it (times as the site's local wall clock and as Unix seconds)."""

    site: str
    room: str
    day: dt.date
    start: str
    end: str
    starts_at: float
    ends_at: float
    people: int
    reason: Reason
    urgency: Urgency
    note: str
    contact_kind: ContactKind
    contact: str


START_GRACE_S = 15 * 60.0
"""How far in the past a request's start may be (the current minute typed a moment ago, a shift already begun):
the request is for help still to come, so its end must be in the future."""

FORM_FIELDS = ("site", "room", "day", "start", "end", "people", "reason", "urgency", "note", "contact_kind", "contact")
"""The form's fields, in its order."""

_HHMM = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")
_PEOPLE = re.compile(r"[0-9]{1,3}")


def _minutes(text: str) -> int:
    return int(text[:2]) * 60 + int(text[3:])


def validate_request(  # noqa: PLR0915 - one rule after the other, each with its message
    form: Mapping[str, str],
    *,
    now: float,
    zone: ZoneInfo,
    sites: frozenset[str],
    limits: Limits,
    is_account: Callable[[str], bool],
    phone: Callable[[str], str | None],
) -> tuple[RequestFields | None, dict[str, str]]:
    """The request of a filled form, or the errors: ``{field: code}``, one per wrong field (codes are message
    keys ``helping.error.<code>``). The start may be up to :data:`START_GRACE_S` in the past, the end must be in the
    future. ``sites``: the site ids one may ask for; ``is_account``: a staff id of an active staff or manager account
    of this site; ``phone``: the number normalised (E.164), or None when it is not a phone number."""
    errors: dict[str, str] = {}
    value = {name: str(form.get(name, "")).strip() for name in FORM_FIELDS}

    if value["site"] not in sites:
        errors["site"] = "site_unknown"

    room = value["room"]
    if not room:
        errors["room"] = "room_missing"
    elif len(room) > limits.room_max:
        errors["room"] = "room_too_long"

    day: dt.date | None = None
    try:
        day = dt.date.fromisoformat(value["day"])
    except ValueError:
        errors["day"] = "day_invalid"

    start_ok = bool(_HHMM.fullmatch(value["start"]))
    end_ok = bool(_HHMM.fullmatch(value["end"]))
    if not start_ok:
        errors["start"] = "time_invalid"
    if not end_ok:
        errors["end"] = "time_invalid"
    starts_at = ends_at = 0.0
    if start_ok and end_ok and _minutes(value["end"]) <= _minutes(value["start"]):
        errors["end"] = "end_before_start"
    elif day is not None and start_ok and end_ok:
        start = dt.datetime.combine(day, dt.time.fromisoformat(value["start"]), tzinfo=zone)
        end = dt.datetime.combine(day, dt.time.fromisoformat(value["end"]), tzinfo=zone)
        starts_at, ends_at = start.timestamp(), end.timestamp()
        today = dt.datetime.fromtimestamp(now, zone).date()
        if day < today:
            errors["day"] = "day_past"
        elif (day - today).days > limits.days_ahead:
            errors["day"] = "day_too_far"
        elif ends_at <= now:
            errors["end"] = "end_past"
        elif starts_at < now - START_GRACE_S:
            errors["start"] = "start_past"

    people = 0
    if not _PEOPLE.fullmatch(value["people"]):
        errors["people"] = "people_invalid"
    else:
        people = int(value["people"])
        if not 1 <= people <= limits.max_people:
            errors["people"] = "people_range"

    try:
        reason = Reason(value["reason"])
    except ValueError:
        errors["reason"] = "reason_invalid"
        reason = Reason.OTHER
    try:
        urgency = Urgency(value["urgency"])
    except ValueError:
        errors["urgency"] = "urgency_invalid"
        urgency = Urgency.NORMAL

    note = value["note"]
    if len(note) > limits.note_max:
        errors["note"] = "note_too_long"
    elif reason is Reason.OTHER and not note and "reason" not in errors:
        errors["note"] = "note_needed"

    contact = value["contact"]
    kind: ContactKind | None = None
    try:
        kind = ContactKind(value["contact_kind"])
    except ValueError:
        errors["contact"] = "contact_kind_invalid"
    if kind is ContactKind.ACCOUNT:
        if not contact:
            errors["contact"] = "contact_missing"
        elif not is_account(contact):
            errors["contact"] = "contact_no_account"
    elif kind is ContactKind.PHONE:
        normalised = phone(contact) if contact else None
        if not contact:
            errors["contact"] = "contact_missing"
        elif normalised is None:
            errors["contact"] = "contact_bad_phone"
        else:
            contact = normalised

    if errors or day is None or kind is None:
        return None, errors
    fields = RequestFields(
        site=value["site"],
        room=room,
        day=day,
        start=value["start"],
        end=value["end"],
        starts_at=starts_at,
        ends_at=ends_at,
        people=people,
        reason=reason,
        urgency=urgency,
        note=note,
        contact_kind=kind,
        contact=contact,
    )
    return fields, {}
