"""Helping hands ("handjes hulp", docs/helping-hands.md): staff and managers ask the city's coordinators for extra
people for a time window; coordinators follow every request through its statuses.

Plain HTML forms (POST with the session's CSRF token, then a redirect: it works without JavaScript, on a phone). The
rules (validation, which status may follow which, who may move a request) are pure, in gateway/domain/helping.py;
the store (gateway/store/helping.py) is used from worker threads only, never on the event loop. A request and each
change are written with their MQTT message in one transaction (the store's durable outbox), then handed to the
gateway's link, and a new (or urgent) request goes to the coordinators' alert channels at low priority.
"""

import asyncio
import datetime as dt
import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar
from zoneinfo import ZoneInfo

import phonenumbers
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from alerts.notices import Recipient, RequestNotice
from gateway.domain.helping import (
    FORM_FIELDS,
    OPEN_STATUSES,
    ContactKind,
    Limits,
    Move,
    MoveError,
    Outcome,
    Reason,
    Status,
    Urgency,
    check_move,
    moves_for,
    validate_request,
)
from gateway.influx import schema as influx_schema
from gateway.protocol import Topics
from gateway.protocol.codec import Outgoing
from gateway.protocol.helping import (
    HELPING_HANDS,
    HelpingHandsPayload,
    encode_helping,
    helping_hands_topic,
)
from gateway.settings import Settings
from gateway.store.helping import HelpChange, HelpingStore, HelpRequest, Points, RequestFilter
from gateway.store.schema import StoreError
from gateway.store.store import OutboxRow
from gateway.web.auth import Role
from gateway.web.i18n import Translator
from gateway.web.kit import Principal, WebKit, check_csrf

log = logging.getLogger("cribwatch.web")
T = TypeVar("T")

REQUESTERS = frozenset({Role.STAFF, Role.MANAGER})
"""Who may ask for helping hands: the people who work in the rooms and their managers."""
REQUESTER_ROLES = frozenset(role.value for role in REQUESTERS)
"""The same, as the account store names the roles (a request's contact is one of these accounts)."""
COORDINATORS = frozenset({Role.COORDINATOR})
"""Who sees every request and moves it through its statuses: the city's coordinators."""
ASSIGNING = frozenset({Status.ASSIGNED, Status.PARTLY_FILLED, Status.FILLED})
"""The moves that take an assignee from the form (check_move): it must be an active coordinator's account."""
PRUNE_EVERY_S = 6 * 3600.0
"""How often requests past ``[store] retention_days`` are deleted (checked when the pages use the store)."""
MAX_FORM_BYTES = 16_384
"""A request form is a few hundred bytes; anything far larger is refused before it is parsed."""


@dataclass(frozen=True, slots=True)
class SiteChoice:
    id: str
    label: str
    kind: str


def site_choices(settings: Settings) -> list[SiteChoice]:
    """This site first, then its partner sites, as the form offers them."""
    hh = settings.helping_hands
    own = SiteChoice(settings.site.id, settings.site.label, hh.site_kind)
    return [own, *(SiteChoice(p.id, p.label, p.kind) for p in hh.partner_sites)]


COORDINATORS_GROUP = "coordinators"
"""The group name of the ``[helping_hands] coordinators`` in notices and delivery records."""


def coordinator_recipients(settings: Settings) -> tuple[Recipient, ...]:
    """Every channel address of the ``[helping_hands] coordinators`` and of every member of its
    ``coordinator_groups`` (whatever their shifts: a request is for later, and it waits low in the channels' queues
    behind every alarm)."""
    hh = settings.helping_hands
    wanted = set(hh.coordinator_groups)
    own = [
        Recipient(COORDINATORS_GROUP, member.id, address.channel, address.address)
        for member in hh.coordinators
        for address in member.channels
    ]
    return tuple(own) + tuple(
        Recipient(group.id, member.id, address.channel, address.address)
        for group in settings.alerting.groups
        if group.id in wanted
        for member in group.members
        for address in member.channels
    )


def phone_checker(region: str) -> Callable[[str], str | None]:
    def phone(text: str) -> str | None:
        """The number in E.164 (+31612345678), or None when libphonenumber does not take it as a valid number."""
        if len(text) > 32:
            return None
        try:
            number = phonenumbers.parse(text, region)
        except phonenumbers.NumberParseException:
            return None
        if not phonenumbers.is_valid_number(number):
            return None
        return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))

    return phone


def influx_points(gateway_site: str) -> Points:
    """The ``helping_hands`` InfluxDB point of each change (gateway/influx/schema.py), as the outbox's rows: the
    HelpingStore writes them in the change's transaction. Nothing of the note, contact or names goes in."""

    def points(
        request: HelpRequest, change: HelpChange, before: HelpRequest | None, open_requests: int
    ) -> list[tuple[str, bool, float]]:
        p = influx_schema.helping_point(
            gateway_site,
            request.site_id,
            request.reason.value,
            request.urgency.value,
            change.status.value,
            change.at,
            request_id=request.id,
            change_id=change.id,
            people=request.people,
            filled=change.filled,
            filled_change=change.filled - (0 if before is None else before.filled),
            open_requests=open_requests,
        )
        return [(p.line(), p.alarm, p.time_ns / 1e9)]

    return points


def register(app: FastAPI, kit: WebKit) -> None:  # noqa: PLR0915 - the routes are closures over the kit
    settings = kit.settings
    hh = settings.helping_hands
    zone = ZoneInfo(settings.alerting.time_zone)
    topics = Topics(settings.site.id, settings.mqtt.base_topic)
    sites = site_choices(settings)
    site_of = {s.id: s for s in sites}
    limits = Limits(max_people=hh.max_people, note_max=hh.note_max, days_ahead=hh.days_ahead)
    phone = phone_checker(hh.phone_region)
    recipients = coordinator_recipients(settings)
    opened: list[HelpingStore] = []
    opening = threading.Lock()
    keep_s = settings.store.retention_days * 86400.0
    pruned_at = [float("-inf")]

    def store() -> HelpingStore:
        """The requests' store, opened on first use (in a worker thread) and kept; requests ended longer ago than
        the store's retention are deleted at most every PRUNE_EVERY_S (they hold staff ids and phone numbers)."""
        with opening:
            if not opened:
                # With InfluxDB targets, each change's point goes into the store's InfluxDB outbox with it.
                points = None if settings.influx is None else influx_points(settings.site.id)
                opened.append(HelpingStore.open(kit.store_path, site_id=settings.site.id, points=points))
            now = kit.now()
            if now - pruned_at[0] >= PRUNE_EVERY_S:
                pruned_at[0] = now
                try:
                    if gone := opened[0].prune(now, keep_s):
                        log.info(
                            "helping hands: %d requests past the retention of %s days deleted", gone, keep_s / 86400
                        )
                except StoreError:
                    log.exception("helping hands: could not delete the requests past the retention (tried again later)")
            return opened[0]

    async def in_store(call: Callable[[], T]) -> T:
        """A read of the store in a worker thread; a store that cannot be read is a 503 that says so."""
        try:
            return await asyncio.to_thread(call)
        except StoreError as exc:
            log.error("helping hands: %s", exc)
            raise HTTPException(status_code=503, detail="the site's store cannot be used now: try again") from None

    def payload(request: HelpRequest, change: HelpChange) -> HelpingHandsPayload:
        site = site_of.get(request.site_id, SiteChoice(request.site_id, request.site_id, "other"))
        return HelpingHandsPayload(
            request=request.id,
            change=change.id,
            event="created" if change.status is Status.NEW else "changed",
            gateway_site=settings.site.id,
            site=site.id,
            site_label=site.label,
            site_kind=site.kind,
            room=request.room,
            date=request.day.isoformat(),
            start=request.start,
            end=request.end,
            starts_at=request.starts_at,
            ends_at=request.ends_at,
            people=request.people,
            filled=request.filled,
            reason=request.reason.value,
            urgent=request.urgency is Urgency.URGENT,
            status=request.status.value,
            assignee=request.assignee,
            contact=request.contact,
            requested_by=request.requested_by,
            by=change.by,
            ts=change.at,
        )

    def message(request: HelpRequest, change: HelpChange) -> OutboxRow:
        body = encode_helping(payload(request, change))
        key = f"hh:{request.id}:{change.id}"
        topic = helping_hands_topic(topics, request.id)
        return OutboxRow(key, topic, body, int(HELPING_HANDS.qos), HELPING_HANDS.retain, change.at)

    def publish(row: OutboxRow) -> None:
        """On the event loop: the message is in the outbox already; the link sends it (or buffers it)."""
        try:
            kit.gateway.publish_kept(Outgoing(row.topic, row.payload, row.qos, row.retain, key=row.key))
        except Exception:  # the outbox row stays; the next start sends it
            log.exception("helping hands: could not hand message %s to the MQTT link (it stays in the outbox)", row.key)

    def local(ts: float) -> str:
        return dt.datetime.fromtimestamp(ts, zone).strftime("%Y-%m-%d %H:%M")

    def view(request: HelpRequest) -> dict[str, Any]:
        site = site_of.get(request.site_id)
        return {
            "r": request,
            "site_label": site.label if site else request.site_id,
            "site_kind": site.kind if site else "other",
            "created": local(request.created_at),
            "updated": local(request.updated_at),
        }

    def page(request: Request, template: str, who: Principal, status_code: int = 200, **context: Any) -> HTMLResponse:
        response = kit.page(request, template, who, hh=hh, sites=sites, P="helping.", **context)
        response.status_code = status_code
        response.headers["cache-control"] = "no-store"
        return response

    async def read_form(request: Request) -> dict[str, str]:
        if int(request.headers.get("content-length") or 0) > MAX_FORM_BYTES:
            raise HTTPException(status_code=413, detail="the form is too large")
        form = await request.form()
        return {name: value for name, value in form.items() if isinstance(value, str)}

    def form_page(
        request: Request,
        who: Principal,
        values: Mapping[str, str],
        errors: Mapping[str, str],
        status_code: int = 200,
        *,
        problem: str | None = None,
    ) -> HTMLResponse:
        return page(
            request,
            "helping_form.html",
            who,
            status_code,
            form=values,
            errors=errors,
            problem=problem,
            reasons=[r.value for r in Reason],
            urgencies=[u.value for u in Urgency],
            contact_kinds=[k.value for k in ContactKind],
            today=dt.datetime.fromtimestamp(kit.now(), zone).date().isoformat(),
        )

    # ------------------------------------------------------------------------------------------ requesters

    @app.get("/helping/new", response_class=HTMLResponse, openapi_extra=kit.roles_of(REQUESTERS))
    async def helping_form(request: Request, who: Annotated[Principal, kit.access(REQUESTERS)]) -> HTMLResponse:
        today = dt.datetime.fromtimestamp(kit.now(), zone).date().isoformat()
        values = {
            "site": settings.site.id,
            "day": today,
            "urgency": Urgency.NORMAL.value,
            "contact_kind": ContactKind.ACCOUNT.value,
            "contact": who.username,
        }
        return form_page(request, who, values, {})

    @app.post("/helping/new", response_class=HTMLResponse, openapi_extra=kit.roles_of(REQUESTERS))
    async def helping_submit(request: Request, who: Annotated[Principal, kit.access(REQUESTERS)]) -> Response:
        await check_csrf(request, who)
        values = await read_form(request)
        kept = {name: values.get(name, "") for name in FORM_FIELDS}
        at = kit.now()

        def is_account(name: str) -> bool:
            """An active staff or manager account: one answer for "no such account" and "not a staff account" (the
            form tells nobody which other accounts exist)."""
            user = kit.accounts.user(name)
            return user is not None and not user.disabled and user.role in REQUESTER_ROLES

        fields, errors = await asyncio.to_thread(
            validate_request,
            kept,
            now=at,
            zone=zone,
            sites=frozenset(site_of),
            limits=limits,
            is_account=is_account,
            phone=phone,
        )
        if fields is None:
            return form_page(request, who, kept, errors, status_code=422)
        try:
            made, row = await asyncio.to_thread(lambda: store().create(fields, who.username, at, message))
        except StoreError as exc:  # a full or failing disk: nothing was saved, the form and its input stay
            log.error("helping hands: a request could not be saved: %s", exc)
            return form_page(request, who, kept, {}, status_code=503, problem="helping.error.store")
        except Exception:  # a bug (e.g. a payload the protocol refuses): rolled back; the form and its input stay
            log.exception("helping hands: a request could not be saved (unexpected)")
            return form_page(request, who, kept, {}, status_code=503, problem="helping.error.unexpected")
        publish(row)
        if recipients and (hh.notify == "all" or made.urgency is Urgency.URGENT):
            notice = RequestNotice(f"hh-{made.id}/{row.key.rsplit(':', 1)[1]}", payload_of(row), recipients, at)
            kit.gateway.notify_low(notice)
        detail = {"request": made.id, "site": made.site_id, "people": made.people, "urgency": made.urgency.value}
        kit.gateway.audit(at, who.username, "web", "helping_requested", json.dumps(detail, sort_keys=True))
        return RedirectResponse(f"/helping/mine?sent={made.id}", status_code=303)

    def payload_of(row: OutboxRow) -> HelpingHandsPayload:
        return HelpingHandsPayload.model_validate_json(row.payload)

    @app.get("/helping/mine", response_class=HTMLResponse, openapi_extra=kit.roles_of(REQUESTERS))
    async def helping_mine(
        request: Request, who: Annotated[Principal, kit.access(REQUESTERS)], sent: int | None = None
    ) -> HTMLResponse:
        mine = await in_store(lambda: store().requests(RequestFilter(requested_by=who.username)))
        return page(request, "helping_mine.html", who, requests=[view(r) for r in mine], sent=sent)

    # ------------------------------------------------------------------------------------------ coordinators

    @app.get("/helping/requests", response_class=HTMLResponse, openapi_extra=kit.roles_of(COORDINATORS))
    async def helping_list(  # noqa: PLR0917 - one query parameter per filter
        request: Request,
        who: Annotated[Principal, kit.access(COORDINATORS)],
        status: str = "open",
        site: str = "",
        urgency: str = "",
        reason: str = "",
        from_day: str = "",
        to_day: str = "",
    ) -> HTMLResponse:
        t = Translator(kit.lang_of(request))
        problems: list[str] = []
        statuses: frozenset[Status] | tuple[()] = ()
        if status == "open":
            statuses = OPEN_STATUSES
        elif status in Status.__members__.values():
            statuses = frozenset({Status(status)})
        elif status not in {"", "all"}:
            problems.append(t("helping.filter_bad", what=status))
        where = RequestFilter(
            statuses=statuses,
            site_id=site if site in site_of else None,
            urgency=Urgency(urgency) if urgency in Urgency.__members__.values() else None,
            reason=Reason(reason) if reason in Reason.__members__.values() else None,
            from_day=_day(from_day, problems, t),
            to_day=_day(to_day, problems, t),
        )
        found = await in_store(lambda: store().requests(where))
        filters = {
            "status": status,
            "site": site,
            "urgency": urgency,
            "reason": reason,
            "from_day": from_day,
            "to_day": to_day,
        }
        return page(
            request,
            "helping_list.html",
            who,
            422 if problems else 200,
            requests=[view(r) for r in found],
            filters=filters,
            problems=problems,
            statuses=[s.value for s in Status],
            reasons=[r.value for r in Reason],
            urgencies=[u.value for u in Urgency],
        )

    async def detail_page(
        request: Request, who: Principal, request_id: int, message_key: str | None = None, status_code: int = 200
    ) -> HTMLResponse:
        found, history, users = await in_store(
            lambda: (store().get(request_id), store().history(request_id), kit.accounts.users())
        )
        coordinator = who.role in COORDINATORS
        if found is None or (not coordinator and found.requested_by != who.username):
            raise HTTPException(status_code=404, detail=f"no request {request_id}")
        moves = moves_for(found.status, coordinator=coordinator, requester=found.requested_by == who.username)
        assignees = [u.username for u in users if u.role == Role.COORDINATOR.value and not u.disabled]
        return page(
            request,
            "helping_detail.html",
            who,
            status_code,
            item=view(found),
            history=[(c, local(c.at)) for c in history],
            moves=[m.value for m in moves],
            assignees=assignees,
            coordinator=coordinator,
            message_key=message_key,
        )

    @app.get(
        "/helping/requests/{request_id}",
        response_class=HTMLResponse,
        openapi_extra=kit.roles_of(REQUESTERS | COORDINATORS),
    )
    async def helping_detail(
        request_id: int,
        request: Request,
        who: Annotated[Principal, kit.access(REQUESTERS | COORDINATORS)],
        changed: str | None = None,
    ) -> HTMLResponse:
        return await detail_page(request, who, request_id, "helping.changed" if changed else None)

    @app.post(
        "/helping/requests/{request_id}/status",
        response_class=HTMLResponse,
        openapi_extra=kit.roles_of(REQUESTERS | COORDINATORS),
    )
    async def helping_move(
        request_id: int, request: Request, who: Annotated[Principal, kit.access(REQUESTERS | COORDINATORS)]
    ) -> Response:
        await check_csrf(request, who)
        values = await read_form(request)
        coordinator = who.role in COORDINATORS
        try:
            to = Status(values.get("to", ""))
        except ValueError:
            return await detail_page(request, who, request_id, "helping.error.move_not_allowed", 422)
        filled_text = values.get("filled", "").strip()
        filled = int(filled_text) if filled_text.isdigit() and len(filled_text) <= 3 else None
        assignee = values.get("assignee", "").strip() or None
        if to is Status.ASSIGNED and assignee is None and coordinator:
            assignee = who.username
        move = Move(to=to, assignee=assignee, filled=filled, comment=values.get("comment", "").strip())
        at = kit.now()

        def is_coordinator(name: str) -> bool:
            user = kit.accounts.user(name)
            return user is not None and not user.disabled and user.role == Role.COORDINATOR.value

        def decide(current: HelpRequest) -> Outcome:
            if not coordinator and current.requested_by != who.username:
                raise LookupError(request_id)  # another's request: as if it did not exist
            if move.assignee is not None and move.to in ASSIGNING and not is_coordinator(move.assignee):
                raise MoveError("assignee_unknown")  # every move that may set the assignee: checked alike
            return check_move(
                current.status,
                move,
                people=current.people,
                assignee=current.assignee,
                filled=current.filled,
                coordinator=coordinator,
                requester=current.requested_by == who.username,
            )

        try:
            done = await asyncio.to_thread(
                lambda: store().change(request_id, decide, who.username, at, move.comment, message)
            )
        except LookupError:
            done = None
        except MoveError as exc:
            return await detail_page(request, who, request_id, f"helping.error.move_{exc.code}", 409)
        except StoreError as exc:
            log.error("helping hands: a status change could not be saved: %s", exc)
            return await detail_page(request, who, request_id, "helping.error.store", 503)
        except Exception:  # a bug (e.g. a payload the protocol refuses): rolled back, said on the page
            log.exception("helping hands: a status change could not be saved (unexpected)")
            return await detail_page(request, who, request_id, "helping.error.unexpected", 503)
        if done is None:
            raise HTTPException(status_code=404, detail=f"no request {request_id}")
        changed, row = done
        publish(row)
        detail = {"request": request_id, "status": changed.status.value, "assignee": changed.assignee}
        kit.gateway.audit(at, who.username, "web", "helping_changed", json.dumps(detail, sort_keys=True))
        return RedirectResponse(f"/helping/requests/{request_id}?changed=1", status_code=303)


def _day(text: str, problems: list[str], t: Translator) -> dt.date | None:
    if not text:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        problems.append(t("helping.filter_bad", what=text))
        return None
