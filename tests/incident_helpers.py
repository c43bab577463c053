"""A small incident log written into a real store through the store's own methods (alarm events, notices of the
escalation chain, delivery attempts, sensor events), for the manager pages' tests."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from gateway.domain.events import AlarmEvent, Trigger
from gateway.domain.vocab import PRIORITY_OF, AlarmEventType, AlarmKind, Resolution
from gateway.store.store import DeliveryRow, Store

DAY = 86_400.0


@dataclasses.dataclass(frozen=True)
class Made:
    alarm_id: str
    room_id: str
    crib_id: str
    kind: AlarmKind
    raised_at: float
    ack_s: float | None
    resolve_s: float | None
    test: bool = False


class LogWriter:
    """Writes whole incidents (raised, notices, deliveries, acknowledged, reminded, resolved) into a store."""

    def __init__(self, store: Store, site_id: str, run: int = 1) -> None:
        self.store = store
        self.site_id = site_id
        self.run = run
        self.n = 0
        self.seq = 0
        self.made: list[Made] = []

    def _event(self, base: AlarmEvent, type_: AlarmEventType, at: float, **more: object) -> AlarmEvent:
        self.seq += 1
        return dataclasses.replace(base, seq=self.seq, type=type_, at=at, trigger=None, **more)  # type: ignore[arg-type]

    def incident(
        self,
        room: tuple[str, str],
        crib: tuple[str, str, str],
        at: float,
        *,
        kind: AlarmKind = AlarmKind.CRIB_OPEN,
        ack_s: float | None = None,
        by: str = "staf01",
        device: str = "pager-2",
        resolve_s: float | None = None,
        remind_s: float | None = None,
        test: bool = False,
        failed_delivery: bool = False,
        flaps: int = 0,
    ) -> str:
        """One incident in ``room`` (id, label) on ``crib`` (id, label, sensor) raised at ``at``."""
        self.n += 1
        self.seq += 1
        alarm_id = f"{self.run}-{self.n}"
        raised = AlarmEvent(
            seq=self.seq,
            type=AlarmEventType.RAISED,
            alarm_id=alarm_id,
            kind=kind,
            priority=PRIORITY_OF[kind],
            site_id=self.site_id,
            room_id=room[0],
            crib_id=crib[0],
            room_label=room[1],
            crib_label=crib[1],
            at=at,
            raised_at=at,
            run=self.run,
            trigger=Trigger(sensor_id=crib[2], boot=1, seq=self.n),
            latch_opened_at=at - 30 if kind is AlarmKind.CRIB_OPEN else None,
            test=test,
            flaps=flaps,
        )
        s = self.store
        s.record_alarm_event(raised)
        notices = 0

        def notice(when: float, kind_: str, step: int) -> None:
            nonlocal notices
            notices += 1
            detail = {"kind": kind_, "step": step, "groups": ["room"], "recipients": 2, "channels": ["mqtt"]}
            s.record_step(alarm_id, self.run, notices, when, step, {**detail, "how": "on_duty"})
            for attempt, member in enumerate(("staf01", "mana01"), start=1):
                failed = failed_delivery and member == "mana01"
                s.record_delivery(
                    DeliveryRow(
                        at=when + 0.05 * attempt,
                        channel="mqtt",
                        group="room",
                        member=member,
                        address=f"notify/{member}-pager",
                        notice_id=f"{alarm_id}/{notices}",
                        alarm_id=alarm_id,
                        kind=kind_,
                        attempt=1,
                        result="failed" if failed else "delivered",
                        latency_ms=3.0,
                        error="broker away" if failed else None,
                        test=test,
                    )
                )

        notice(at, "alarm", 0)
        if ack_s is not None and ack_s > 60:
            notice(at + 60, "escalation", 1)
        if ack_s is not None:
            acked = self._event(
                raised, AlarmEventType.ACKNOWLEDGED, at + ack_s, by=by, device=device,
                acknowledged_at=at + ack_s, acknowledged_by=by,
            )  # fmt: skip
            s.record_alarm_event(acked)
            if remind_s is not None:
                s.record_alarm_event(self._event(raised, AlarmEventType.REMINDED, at + ack_s + remind_s))
                notice(at + ack_s + remind_s, "reminder", 0)
        if resolve_s is not None:
            ended = self._event(raised, AlarmEventType.RESOLVED, at + resolve_s, resolution=Resolution.LATCH_CLOSED)
            s.record_alarm_event(ended)
            notice(at + resolve_s, "resolved", 0)
        self.made.append(Made(alarm_id, room[0], crib[0], kind, at, ack_s, resolve_s, test))
        return alarm_id


FAST = ("fast", "Fast room")
SLOW = ("slow", "Slow room")
F1 = ("f-1", "Bedje F1", "s-f1")
S1 = ("s-1", "Bedje S1", "s-s1")
S2 = ("s-2", "Bedje S2", "s-s2")


def small_log(path: Path, site_id: str, now: float) -> LogWriter:
    """Nine incidents over the last two weeks before ``now``: ack times 10 20 30 40 (fast), 15 45 90 (slow), one
    never acknowledged, one still open, one test alarm; a sensor that went offline twice."""
    store = Store.open(path, site_id=site_id)
    w = LogWriter(store, site_id)
    try:
        with store.transaction():
            t = now - 10 * DAY
            w.incident(FAST, F1, t, ack_s=10, resolve_s=60)
            w.incident(FAST, F1, t + 3600, ack_s=20, resolve_s=120, flaps=3)
            w.incident(FAST, F1, t + 7200, ack_s=30, resolve_s=180, remind_s=100, device="web-board")
            w.incident(FAST, F1, t + 3 * DAY, ack_s=40, resolve_s=240)
            w.incident(SLOW, S1, t + 1 * DAY, ack_s=15, resolve_s=30)
            w.incident(SLOW, S2, t + 2 * DAY, ack_s=45, resolve_s=90, failed_delivery=True)
            w.incident(SLOW, S1, t + 4 * DAY, ack_s=90, resolve_s=95, by="mana01", device="tablet-slow-wall")
            w.incident(SLOW, S2, t + 5 * DAY, kind=AlarmKind.SENSOR_OFFLINE, resolve_s=3)
            w.incident(FAST, F1, t + 6 * DAY, ack_s=1000, resolve_s=1001, test=True)
            w.incident(SLOW, S1, now - 600)  # still open
            store.sensor_event(t + 5 * DAY, "s-s2", "s-2", "offline")
            store.sensor_event(t + 6 * DAY, "s-s2", "s-2", "offline")
    finally:
        store.close()
    return w


def busy_log(path: Path, site_id: str, now: float, *, weeks: int = 13, seed: int = 5) -> LogWriter:
    """:func:`small_log` and a quarter of ordinary days before it (a few alarms a day in both rooms, answered in
    seconds to minutes): something to page through and to chart."""
    import random

    w = small_log(path, site_id, now)
    rng = random.Random(seed)
    store = Store.open(path, site_id=site_id)
    lw = LogWriter(store, site_id, run=2)
    try:
        with store.transaction():
            for day in range(weeks * 7, 11, -1):
                for _ in range(rng.randrange(0, 3)):
                    room, crib = rng.choice([(FAST, F1), (SLOW, S1), (SLOW, S2)])
                    ack = rng.lognormvariate(3.2, 0.6)
                    lw.incident(room, crib, now - day * DAY + rng.uniform(8, 17) * 3600, ack_s=ack, resolve_s=ack * 3)
    finally:
        store.close()
    w.made.extend(lw.made)
    return w
