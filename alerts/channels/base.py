"""What every notice channel shares: one :class:`ChannelWorker` per channel, with its own threads, bounded queue,
timeout, retries with backoff, a delivery record per attempt and its health.

A channel has two lanes, each its own thread: alarm notices, and deliveries of low priority (helping-hands requests).
A low delivery starts only when no alarm notice waits or is in hand; once started, its attempts and backoff run in
the low lane's thread, so an alarm notice that comes meanwhile is taken at once by the alarm lane: it never waits
behind a low delivery (docs/channels.md, "Helping-hands requests go last, in a lane of their own").

A channel's :class:`Transport` does one thing: deliver one :class:`Delivery` (a notice for one recipient) within a
timeout, raising :class:`ChannelError` (or anything) when it could not. It runs in the channel's own threads, so a
transport may block (an HTTP request, Apprise's ``notify``): a channel that hangs or fails holds up only its own
queue, never another channel, the event loop, the MQTT alert or the buzzer.

:meth:`ChannelWorker.put` is what the event loop calls: it appends to the queue and returns (it never waits and
never raises). A full queue drops its oldest delivery, which is recorded (``dropped``) and counted, never silent.
"""

from __future__ import annotations

import collections
import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from alerts.notices import Notice, NoticeKind, Recipient, RequestNotice
from gateway.domain.events import AlarmEvent

log = logging.getLogger("cribwatch.channels")

HANG_GRACE_S = 1.0
"""An attempt still running this long past its channel's timeout counts as hanging: the channel shows ``failing``."""
LOG_EVERY_S = 60.0
"""A channel that goes on failing is logged again at most this often."""


class DeliveryResult(enum.StrEnum):
    """What became of one attempt (one row of the store's ``deliveries`` table)."""

    DELIVERED = "delivered"  # the channel took it (HTTP 2xx, Apprise success, MQTT written to the socket, siren on)
    BUFFERED = "buffered"  # MQTT: the broker is away; it waits in the gateway's offline buffer (QoS 1)
    FAILED = "failed"  # this attempt failed; another follows after the backoff
    GAVE_UP = "gave_up"  # the last attempt failed: the delivery is given up
    DROPPED = "dropped"  # never attempted: the queue was full, the channel unknown, or the gateway stopping
    SKIPPED = "skipped"  # nothing to do (the siren for an alarm already acknowledged or resolved)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One notice for one of its recipients, as a channel takes it (a :class:`RequestNotice` at low priority)."""

    notice: Notice | RequestNotice
    recipient: Recipient

    @property
    def low(self) -> bool:
        """Not about an alarm: behind every alarm notice in the queue, and the first dropped when it is full."""
        return isinstance(self.notice, RequestNotice)


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """One attempt, for the store (``deliveries``). ``address`` is redacted: a URL keeps its scheme and host only."""

    at: float
    channel: str
    group: str
    member: str
    address: str
    notice_id: str
    alarm_id: str
    kind: str
    attempt: int
    result: str
    latency_ms: float | None
    error: str | None
    test: bool
    notice_at: float | None = None
    """When the notice was decided (wall clock): ``at - notice_at`` is how long it took to this outcome."""
    room: str | None = None
    """The alarm's room."""


class ChannelError(Exception):
    """A failed attempt; its message is what the delivery record and the health say (never a secret)."""


class Skipped(Exception):  # noqa: N818 - not an error: the delivery had nothing to do
    """Raised by a transport for a delivery with nothing to do (recorded ``skipped``, not a failure)."""


class Transport(Protocol):
    """One channel's way out. ``send`` runs in the channel's own threads and may block, up to ``timeout_s``; the
    alarm lane and the low lane may call it at the same time (each call is one request of its own)."""

    name: str

    def send(self, delivery: Delivery, timeout_s: float) -> DeliveryResult:
        """Deliver or raise; return DELIVERED (or BUFFERED)."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class AlarmObserver(Protocol):
    """A transport that also follows alarm events (the siren stops when its alarm is acknowledged or resolved).
    ``observe`` is called on the event loop's thread and must not block."""

    def observe(self, event: AlarmEvent) -> None: ...


@dataclass(frozen=True, slots=True)
class Limits:
    """A channel's bounds: its queue, the timeout of one attempt, how many attempts, the backoff between them."""

    queue_size: int = 100
    timeout_s: float = 5.0
    attempts: int = 3
    backoff_s: float = 1.0
    backoff_max_s: float = 30.0

    def backoff(self, attempt: int) -> float:
        """The wait after failed attempt ``attempt`` (1-based): backoff_s, doubling, at most backoff_max_s."""
        return float(min(self.backoff_s * 2.0 ** (attempt - 1), self.backoff_max_s))


@dataclass(frozen=True, slots=True)
class ChannelHealth:
    """A channel as the gateway's stats show it."""

    state: str  # "ok" or "failing"
    queued: int
    delivered: int
    failed: int
    gave_up: int
    dropped: int
    consecutive_failures: int
    last_error: str | None


def redact(address: str) -> str:
    """What of an address may be recorded: a URL's scheme and host (tokens live in its path, user or query)."""
    if "://" not in address:
        return address
    scheme, _, rest = address.partition("://")
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    return f"{scheme}://{host}"


_KIND_WORDS = {
    NoticeKind.ALARM: "",
    NoticeKind.ESCALATION: "escalated",
    NoticeKind.REPEAT: "still not acknowledged",
    NoticeKind.REMINDER: "reminder: acknowledged, still open",
    NoticeKind.ACKNOWLEDGED: "acknowledged",
    NoticeKind.RESOLVED: "resolved",
}


def describe_notice(notice: Notice | RequestNotice) -> tuple[str, str]:
    """A title and a body a person reads on a phone: labels and ids only, never a child."""
    if isinstance(notice, RequestNotice):
        return describe_request(notice)
    alarm = notice.alarm
    what = alarm.kind.value.replace("_", " ")
    where = f"{alarm.room_label} / {alarm.crib_label}"
    test = "[TEST] " if notice.test else ""
    words = _KIND_WORDS[notice.kind]
    title = f"{test}{alarm.priority.label.upper()} {what}: {where}" + (f" ({words})" if words else "")
    body = f"{test}{what} at {where} ({alarm.crib_id}), alarm {alarm.alarm_id}"
    if notice.kind is not NoticeKind.ALARM:
        body += f"; {words}, step {notice.step + 1}"
    if alarm.acknowledged_by:
        body += f"; acknowledged by {alarm.acknowledged_by}"
    return title, body


_REASON_WORDS = {
    "illness": "illness",
    "outing": "outing",
    "settling_in": "settling in",
    "busy": "busy period",
    "training": "training",
    "other": "other",
}


def describe_request(notice: RequestNotice) -> tuple[str, str]:
    """A helping-hands request as a coordinator reads it on a phone (no note: it stays on the site's page)."""
    r = notice.request
    urgent = "URGENT " if r.urgent else ""
    title = f"{urgent}Helping hands: {r.people} for {r.site_label} / {r.room}, {r.date} {r.start}-{r.end}"
    body = (
        f"{urgent}request {r.request} from {r.site_label} ({r.site_kind}), room or group {r.room}: {r.people} "
        f"people on {r.date} from {r.start} to {r.end}, reason {_REASON_WORDS.get(r.reason, r.reason)}; "
        f"contact {r.contact} (asked by {r.requested_by}). Status: {r.status}."
    )
    return title, body


@dataclass(slots=True)
class _Lane:
    """One of a channel's two lanes (alarm notices, low priority): its queue, its thread, its attempt in hand.
    Read and changed under the worker's lock."""

    name: str
    queue: collections.deque[Delivery] = field(default_factory=collections.deque)
    in_hand: bool = False
    attempt_started: float | None = None
    thread: threading.Thread | None = None


class ChannelWorker:
    """One channel: its transport in its own two threads (lanes), a bounded queue, retries and a record of every
    attempt.

    ``record`` takes each :class:`DeliveryRecord` (the store writer's queue: it must not block either).
    """

    def __init__(
        self,
        transport: Transport,
        limits: Limits,
        record: Callable[[DeliveryRecord], None],
        *,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.transport = transport
        self.name = transport.name
        self.limits = limits
        self._record = record
        self._wall = wall_clock
        self._monotonic = monotonic
        self._alarms = _Lane("alarm")
        """Alarm notices: taken in order, one at a time, whatever the low lane is doing."""
        self._low = _Lane("low")
        """Deliveries of low priority (helping-hands requests): one starts only when no alarm notice waits or is
        in hand."""
        self._cond = threading.Condition()
        self._stopping = False
        self._delivered = 0
        self._failed = 0
        self._gave_up = 0
        self._dropped = 0
        self._streak = 0
        self._last_error: str | None = None
        self._last_log = float("-inf")

    # ------------------------------------------------------------------------------------ the loop's side

    def start(self) -> None:
        for lane in (self._alarms, self._low):
            suffix = "" if lane is self._alarms else "-low"
            lane.thread = threading.Thread(
                target=self._run, args=(lane,), name=f"channel-{self.name}{suffix}", daemon=True
            )
            lane.thread.start()

    def put(self, delivery: Delivery) -> None:
        """Queue one delivery and return at once; a full queue drops (and records) its oldest one, of low priority
        first (a helping-hands notice never pushes out an alarm notice)."""
        victim: Delivery | None = None
        why = f"queue full ({self.limits.queue_size}): the oldest"
        try:
            with self._cond:
                if self._stopping:
                    victim, why = delivery, "gateway stopping"
                else:
                    if len(self._alarms.queue) + len(self._low.queue) >= self.limits.queue_size:
                        if self._low.queue:
                            victim = self._low.queue.popleft()
                        elif delivery.low:
                            victim, why = delivery, f"queue full ({self.limits.queue_size}) of alarm notices"
                        else:
                            victim = self._alarms.queue.popleft()
                    if victim is not delivery:
                        (self._low if delivery.low else self._alarms).queue.append(delivery)
                        self._cond.notify_all()  # two lanes wait on this condition: wake the one it is for
        except Exception:  # never raise into the event loop
            log.critical("channel %s: could not queue a delivery", self.name, exc_info=True)
            return
        if victim is not None:
            self.drop(victim, why)

    def drop(self, delivery: Delivery, why: str) -> None:
        """Record a delivery that is never attempted (counted, logged at most once a minute)."""
        with self._cond:
            self._dropped += 1
            dropped = self._dropped
        self._write(delivery, 0, DeliveryResult.DROPPED, None, why)
        now = self._monotonic()
        if now - self._last_log >= LOG_EVERY_S:
            self._last_log = now
            log.error("channel %s dropped a notice (%s); %d dropped so far", self.name, why, dropped)

    @property
    def health(self) -> ChannelHealth:
        with self._cond:
            failing = self._streak > 0
            last_error = self._last_error
            starts = [lane.attempt_started for lane in (self._alarms, self._low) if lane.attempt_started is not None]
            if starts:
                running = self._monotonic() - min(starts)
                if running > self.limits.timeout_s + HANG_GRACE_S:
                    failing = True
                    last_error = (
                        f"an attempt has been running for {running:.0f} s (timeout {self.limits.timeout_s:g} s)"
                    )
            return ChannelHealth(
                state="failing" if failing else "ok",
                queued=sum(len(lane.queue) + lane.in_hand for lane in (self._alarms, self._low)),
                delivered=self._delivered,
                failed=self._failed,
                gave_up=self._gave_up,
                dropped=self._dropped,
                consecutive_failures=self._streak,
                last_error=last_error,
            )

    def close(self, timeout: float = 2.0) -> None:
        """Stop taking deliveries; what waits is recorded as dropped; the threads end after their attempts in hand
        (a transport that hangs past ``timeout`` is left to its daemon thread)."""
        with self._cond:
            self._stopping = True
            left = list(self._alarms.queue) + list(self._low.queue)
            self._alarms.queue.clear()
            self._low.queue.clear()
            self._cond.notify_all()
        for delivery in left:
            self.drop(delivery, "gateway stopping")
        until = time.monotonic() + timeout
        for lane in (self._alarms, self._low):
            if lane.thread is not None:
                lane.thread.join(max(0.0, until - time.monotonic()))
        try:
            self.transport.close()
        except Exception:
            log.exception("channel %s failed to close", self.name)

    # ------------------------------------------------------------------------------------ the thread

    def _ready(self, lane: _Lane) -> bool:
        """Something for ``lane`` to take: the low lane only while the alarm lane has nothing (under the lock)."""
        if not lane.queue:
            return False
        return lane is self._alarms or not (self._alarms.queue or self._alarms.in_hand)

    def _run(self, lane: _Lane) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self._ready(lane):
                    self._cond.wait()
                if self._stopping:
                    return
                delivery = lane.queue.popleft()
                lane.in_hand = True
            try:
                self._deliver(lane, delivery)
            except Exception:  # the worker itself must not die: its channel would go quiet
                log.critical("channel %s: delivery of %s failed unexpectedly", self.name, delivery, exc_info=True)
            finally:
                with self._cond:
                    lane.in_hand = False
                    lane.attempt_started = None
                    self._cond.notify_all()  # the low lane may wait for the alarm lane to be idle

    def _deliver(self, lane: _Lane, delivery: Delivery) -> None:
        limits = self.limits
        for attempt in range(1, limits.attempts + 1):
            started = self._monotonic()
            with self._cond:
                lane.attempt_started = started
            try:
                result = self.transport.send(delivery, limits.timeout_s)
            except Skipped as skip:
                self._finished(lane, delivery, attempt, DeliveryResult.SKIPPED, started, str(skip))
                return
            except Exception as exc:  # noqa: BLE001 - whatever a transport raises is a failed attempt
                error = str(exc) if isinstance(exc, ChannelError) else f"{type(exc).__name__}: {exc}"
                last = attempt == limits.attempts
                self._finished(
                    lane, delivery, attempt, DeliveryResult.GAVE_UP if last else DeliveryResult.FAILED, started, error
                )
                if last:
                    return
                if self._wait(limits.backoff(attempt)):
                    self.drop(delivery, f"gateway stopping after attempt {attempt} failed")
                    return
            else:
                self._finished(lane, delivery, attempt, result, started, None)
                return

    def _wait(self, seconds: float) -> bool:
        """Sleep before the next attempt; True if the worker is stopping meanwhile."""
        with self._cond:
            self._cond.wait_for(lambda: self._stopping, timeout=seconds)
            return self._stopping

    def _finished(  # noqa: PLR0917 - one attempt's outcome
        self, lane: _Lane, delivery: Delivery, attempt: int, result: DeliveryResult, started: float, error: str | None
    ) -> None:
        latency_ms = (self._monotonic() - started) * 1000.0
        recovered = 0
        with self._cond:
            lane.attempt_started = None
            if result in {DeliveryResult.FAILED, DeliveryResult.GAVE_UP}:
                self._failed += 1
                self._streak += 1
                self._last_error = error
                if result is DeliveryResult.GAVE_UP:
                    self._gave_up += 1
                streak = self._streak
            else:
                if result is not DeliveryResult.SKIPPED:
                    self._delivered += 1
                recovered, self._streak = self._streak, 0
                streak = 0
        self._write(delivery, attempt, result, latency_ms, error)
        if streak:
            now = self._monotonic()
            if streak == 1 or now - self._last_log >= LOG_EVERY_S:
                self._last_log = now
                log.error("channel %s failing (%d in a row): %s", self.name, streak, error)
        elif recovered:
            log.warning("channel %s delivers again after %d failed attempts", self.name, recovered)

    def _write(
        self, delivery: Delivery, attempt: int, result: DeliveryResult, latency_ms: float | None, error: str | None
    ) -> None:
        record = delivery_record(self.name, delivery, attempt, result, latency_ms, error, at=self._wall())
        try:
            self._record(record)
        except Exception:  # the record is the store writer's queue; it never raises, but a channel must go on
            log.critical("channel %s: could not record a delivery", self.name, exc_info=True)


def delivery_record(  # noqa: PLR0917 - one row's columns
    channel: str,
    delivery: Delivery,
    attempt: int,
    result: DeliveryResult,
    latency_ms: float | None,
    error: str | None,
    at: float | None = None,
) -> DeliveryRecord:
    notice, recipient = delivery.notice, delivery.recipient
    if isinstance(notice, RequestNotice):
        alarm_id, kind, room = f"hh-{notice.request.request}", "helping_hands", None
    else:
        alarm_id, kind, room = notice.alarm.alarm_id, notice.kind.value, notice.alarm.room_id
    return DeliveryRecord(
        at=time.time() if at is None else at,
        channel=channel,
        group=recipient.group,
        member=recipient.member,
        address=redact(recipient.address),
        notice_id=notice.notice_id,
        alarm_id=alarm_id,
        kind=kind,
        attempt=attempt,
        result=result.value,
        latency_ms=latency_ms,
        error=error,
        test=notice.test,
        notice_at=notice.at,
        room=room,
    )
