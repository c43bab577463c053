"""The escalation policy: each alarm's chain of notices, from the core's alarm events and the clock.

Pure (no I/O, no asyncio): :meth:`AlertPolicy.take` reads the core's outbound events after the MQTT channel and
the buzzer have them, :meth:`AlertPolicy.advance` fires the chains that fell due (``next_deadline`` says when, on a
:class:`~gateway.domain.timers.DeadlineHeap`, one entry per alarm); both return the :class:`StepReached` of each
notice decided, for the composition root to send (``NoticeSink``), record on the incident's timeline and mark on
the alarm (``escalation_level``).

Per alarm::

    raised ──▶ step 0 (ALARM) ─after_s─▶ step 1 (ESCALATION) ─▶ ... ─▶ last step ─repeat_every_s─▶ step repeat_from
                  │                                                                          (REPEAT) ─▶ ...
    acknowledged ─┴▶ the chain stops (no escalation, no repeat); the alarm stays open; ACKNOWLEDGED (who has it) to
                     everyone who was told
    reminded (the crib still open long after the ack) ─▶ REMINDER to step 0's groups, then the chain again
    resolved ─▶ RESOLVED to everyone who was told

Alarms raised during maintenance are skipped (recorded by the store, sent to no one); test alarms run the whole
chain and their notices say test.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from alerts.notices import Notice, NoticeKind, Recipient
from alerts.policy.duty import SIREN, Roster
from gateway.domain.clock import Clock
from gateway.domain.events import AlarmEvent, CribState, OutboundEvent
from gateway.domain.timers import DeadlineHeap
from gateway.domain.vocab import AlarmEventType
from gateway.settings import AlertingConfig, PolicyConfig


@dataclass(frozen=True, slots=True)
class StepReached:
    """One notice decided, with what the record wants besides: the groups it named and how its recipients were
    found (``on_duty``, or a fallback when nobody of those groups was on duty: see :meth:`Roster.recipients`)."""

    notice: Notice
    groups: tuple[str, ...]
    how: str


@dataclass(slots=True)
class _Chain:
    alarm: AlarmEvent
    policy: PolicyConfig
    reached: int = -1
    """The index of the last step reached (-1: none yet)."""
    next_step: int = 0
    passes: int = 0
    """Times the chain went back to ``repeat_from``."""
    notices: int = 0
    told: dict[Recipient, None] = field(default_factory=dict)
    """Everyone told so far, in order (the resolved notice goes to them all)."""
    acknowledged: bool = False


class AlertPolicy:
    """Every open alarm's chain of notices. Build once per run; feed it the core's events; fire its timers."""

    def __init__(self, config: AlertingConfig, clock: Clock, *, siren: bool = True) -> None:
        """``siren``: the site has a siren channel; without one a step's ``siren = true`` adds no recipient (the
        gateway's own buzzer sounds for every alarm anyway)."""
        self._config = config
        self._clock = clock
        self._siren = siren
        self._roster = Roster(config)
        self._chains: dict[str, _Chain] = {}
        self._timers: DeadlineHeap[str] = DeadlineHeap()
        self.skipped: Counter[str] = Counter()
        """Alarm events the policy sent nothing for, by why (``maintenance``)."""

    @property
    def active(self) -> bool:
        """False when the site names no staff group: notices would reach no one (pagers still get the alarm topic)."""
        return not self._roster.empty

    def next_deadline(self) -> float | None:
        return self._timers.peek()

    def chain_step(self, alarm_id: str) -> int | None:
        """The last step an open alarm's chain reached (None: no chain)."""
        chain = self._chains.get(alarm_id)
        return None if chain is None else chain.reached

    def take(self, events: Iterable[OutboundEvent]) -> list[StepReached]:
        """The core's outbound events, in order; the notices they call for now."""
        out: list[StepReached] = []
        for event in events:
            if not isinstance(event, AlarmEvent):
                continue
            if event.maintenance:
                self.skipped["maintenance"] += 1
                continue
            self._on_event(event, out)
        return out

    def advance(self) -> list[StepReached]:
        """Every chain step that fell due: escalations and repeats of alarms nobody acknowledged."""
        now = self._clock.monotonic()
        out: list[StepReached] = []
        while (alarm_id := self._timers.pop_due(now)) is not None:
            chain = self._chains.get(alarm_id)
            if chain is None or chain.acknowledged:
                continue
            kind = NoticeKind.REPEAT if chain.passes else NoticeKind.ESCALATION
            self._step(chain, chain.next_step, kind, out)
            self._schedule_after(chain, now)
        return out

    def resume(
        self, states: Iterable[CribState], sent: Mapping[str, int] | None = None, *, run: int = 0
    ) -> list[StepReached]:
        """After a restart: the open alarms the core restored (read off its crib states) take up their chains.

        Everyone of the steps up to the one reached (the alarm's ``escalation_level``) counts as told. An alarm nobody
        acknowledged repeats that step at once (REPEAT: what happened while the gateway was down is unknown) and goes
        on from there; an acknowledged one waits (its reminder comes from the core). ``sent``: how many notices each
        alarm's chain sent before (its notices are numbered on from there: notice ids stay unique); ``run``: this
        gateway run (the ``run`` of the alarm events the notices carry)."""
        out: list[StepReached] = []
        now = self._clock.monotonic()
        wall = self._clock.time()
        for state in states:
            for summary in state.alarms:
                if summary.maintenance or summary.alarm_id in self._chains:
                    continue
                alarm = AlarmEvent(
                    seq=state.seq,
                    type=AlarmEventType.RAISED,
                    alarm_id=summary.alarm_id,
                    kind=summary.kind,
                    priority=summary.priority,
                    site_id=state.site_id,
                    room_id=state.room_id,
                    crib_id=state.crib_id,
                    room_label=state.room_label,
                    crib_label=state.crib_label,
                    at=wall,
                    raised_at=summary.raised_at,
                    run=run,
                    latch_opened_at=summary.latch_opened_at,
                    acknowledged_at=summary.acknowledged_at,
                    acknowledged_by=summary.acknowledged_by,
                    test=summary.test,
                    escalation_level=summary.escalation_level,
                )
                policy = self._config.policy_for(summary.priority.label)
                level = min(summary.escalation_level, len(policy.steps) - 1)
                chain = _Chain(alarm=alarm, policy=policy, acknowledged=summary.acknowledged_by is not None)
                chain.notices = (sent or {}).get(alarm.alarm_id, 0)
                self._chains[alarm.alarm_id] = chain
                for index in range(level + 1):
                    recipients, _ = self._recipients(policy, index, alarm)
                    chain.told.update(dict.fromkeys(recipients))
                chain.reached = level
                if not chain.acknowledged:
                    self._step(chain, level, NoticeKind.REPEAT, out)
                    self._schedule_after(chain, now)
        return out

    # ------------------------------------------------------------------------------------------ events

    def _on_event(self, event: AlarmEvent, out: list[StepReached]) -> None:
        alarm_id = event.alarm_id
        chain = self._chains.get(alarm_id)
        if event.type is AlarmEventType.RAISED:
            if chain is not None:
                return  # a replay: the chain goes on as it is
            policy = self._config.policy_for(event.priority.label)
            chain = self._chains[alarm_id] = _Chain(alarm=event, policy=policy)
            self._step(chain, 0, NoticeKind.ALARM, out)
            self._schedule_after(chain, self._clock.monotonic())
            return
        if chain is None:
            return  # an alarm the policy never saw raised (one of an earlier run not resumed): nothing to stop
        chain.alarm = event
        if event.type is AlarmEventType.ACKNOWLEDGED:
            chain.acknowledged = True
            self._timers.set(alarm_id, None)
            # Everyone told hears who has it (the alarm event says who and which device): a pager of the site
            # reads its own notify topic only, not the room's alarm topic. Not the siren: the ack silences it.
            told = tuple(r for r in chain.told if r.channel != SIREN.channel)
            if told:
                groups = tuple(dict.fromkeys(r.group for r in told))
                out.append(
                    StepReached(self._notice(chain, NoticeKind.ACKNOWLEDGED, chain.reached, told), groups, "told")
                )
        elif event.type is AlarmEventType.REMINDED:
            chain.acknowledged = False
            chain.passes = 0
            self._step(chain, 0, NoticeKind.REMINDER, out)
            self._schedule_after(chain, self._clock.monotonic())
        elif event.type is AlarmEventType.RESOLVED:
            del self._chains[alarm_id]
            self._timers.set(alarm_id, None)
            if chain.told:
                recipients = tuple(chain.told)
                groups = tuple(dict.fromkeys(r.group for r in recipients))
                out.append(
                    StepReached(self._notice(chain, NoticeKind.RESOLVED, chain.reached, recipients), groups, "told")
                )

    # ------------------------------------------------------------------------------------------ steps

    def _recipients(self, policy: PolicyConfig, index: int, alarm: AlarmEvent) -> tuple[list[Recipient], str]:
        step = policy.steps[index]
        recipients: list[Recipient] = []
        how = "siren"
        if step.notify:
            recipients, how = self._roster.recipients(step.notify, alarm.room_id, self._clock.time())
        if step.siren and self._siren:
            recipients.append(SIREN)
        return recipients, how

    def _step(self, chain: _Chain, index: int, kind: NoticeKind, out: list[StepReached]) -> None:
        recipients, how = self._recipients(chain.policy, index, chain.alarm)
        chain.reached = index
        chain.told.update(dict.fromkeys(recipients))
        groups = tuple(dict.fromkeys(r.group for r in recipients))
        out.append(StepReached(self._notice(chain, kind, index, tuple(recipients)), groups, how))

    def _notice(self, chain: _Chain, kind: NoticeKind, step: int, recipients: tuple[Recipient, ...]) -> Notice:
        chain.notices += 1
        alarm = chain.alarm
        if step > alarm.escalation_level:  # (dataclasses.replace is slow: only when the level moves)
            alarm = replace(alarm, escalation_level=step)
        return Notice(
            notice_id=f"{alarm.alarm_id}/{chain.notices}",
            kind=kind,
            alarm=alarm,
            step=step,
            recipients=recipients,
            at=self._clock.time(),
        )

    def _schedule_after(self, chain: _Chain, now: float) -> None:
        """The next step after the one just reached: the following step after its wait, or after the last step the
        repeat (``repeat_every_s``) from ``repeat_from``. There is always a next one: the chain never goes quiet
        until the alarm is acknowledged or resolved."""
        policy = chain.policy
        following = chain.reached + 1
        if following < len(policy.steps):
            chain.next_step = following
            wait = policy.steps[following].after_s
        else:
            chain.next_step = policy.repeat_from
            chain.passes += 1
            wait = policy.repeat_every_s
        self._timers.set(chain.alarm.alarm_id, now + wait)
