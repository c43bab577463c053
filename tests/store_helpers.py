"""Builders of the events the store records (shared by the store's tests)."""

from __future__ import annotations

import dataclasses
import itertools

from gateway.domain.events import AlarmEvent, CribState, Trigger
from gateway.domain.vocab import PRIORITY_OF, AlarmEventType, AlarmKind, LatchState, Resolution

SITE = "store-site"
T0 = 1_700_000_000.0

_seq = itertools.count(1)


def raised_event(
    alarm_id: str,
    *,
    crib_id: str = "c-1",
    room_id: str = "room-1",
    at: float = T0,
    run: int = 1,
    kind: AlarmKind = AlarmKind.CRIB_OPEN,
    test: bool = False,
) -> AlarmEvent:
    return AlarmEvent(
        seq=next(_seq),
        type=AlarmEventType.RAISED,
        alarm_id=alarm_id,
        kind=kind,
        priority=PRIORITY_OF[kind],
        site_id=SITE,
        room_id=room_id,
        crib_id=crib_id,
        room_label=f"Room {room_id}",
        crib_label=f"Crib {crib_id}",
        at=at,
        raised_at=at,
        run=run,
        trigger=Trigger(sensor_id=f"s-{crib_id}", boot=3, seq=41),
        latch_opened_at=at - 10 if kind is AlarmKind.CRIB_OPEN else None,
        test=test,
    )


def acked_event(ev: AlarmEvent, *, at: float, by: str = "staff-7", device: str = "pager-2") -> AlarmEvent:
    return dataclasses.replace(
        ev,
        seq=next(_seq),
        type=AlarmEventType.ACKNOWLEDGED,
        at=at,
        by=by,
        device=device,
        trigger=None,
        acknowledged_at=at,
        acknowledged_by=by,
    )


def resolved_event(ev: AlarmEvent, *, at: float, resolution: Resolution = Resolution.LATCH_CLOSED) -> AlarmEvent:
    return dataclasses.replace(
        ev, seq=next(_seq), type=AlarmEventType.RESOLVED, at=at, by=None, device=None, trigger=None,
        resolution=resolution,
    )  # fmt: skip


def crib_state(
    crib_id: str = "c-1",
    *,
    latch: LatchState | None = LatchState.CLOSED,
    battery_pct: int | None = 80,
    at: float = T0,
    online: bool | None = True,
) -> CribState:
    return CribState(
        seq=next(_seq),
        site_id=SITE,
        room_id="room-1",
        crib_id=crib_id,
        room_label="Room 1",
        crib_label=f"Crib {crib_id}",
        latch=latch,
        sensor_online=online,
        battery_pct=battery_pct,
        alarms=(),
        at=at,
    )
