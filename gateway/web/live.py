"""What the web app sees of the gateway: a small port over it, the board's view of a snapshot, and the wake-up
that tells open boards something changed. No web framework here: the gateway imports this module."""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Protocol

from gateway.domain.events import AckRequest, OutboundEvent, Outcome, SiteSnapshot
from gateway.protocol import GatewayStatsPayload
from gateway.protocol.codec import Outgoing

if TYPE_CHECKING:
    from alerts.notices import RequestNotice


class GatewayPort(Protocol):
    """The gateway as the web app uses it; every call on the event loop's thread."""

    def snapshot(self) -> SiteSnapshot: ...

    def broker_connected(self) -> bool:
        """The gateway is connected to its MQTT broker (without it, wireless sensors cannot reach it)."""
        ...

    def acknowledge(self, ack: AckRequest) -> Outcome: ...

    def test_alarm(self, crib: str, *, by: str) -> Outcome: ...

    def maintenance_on(self, crib: str, *, reason: str, until: float, by: str) -> Outcome: ...

    def maintenance_off(self, crib: str, *, by: str) -> Outcome: ...

    def stats_payload(self) -> GatewayStatsPayload: ...

    def audit(self, at: float, actor: str, source: str, action: str, detail: str) -> None: ...

    def vitals(self) -> GatewayVitals:
        """What the technician console shows of the gateway beside its stats."""
        ...

    def publish_kept(self, item: Outgoing) -> None:
        """Send a message already in the store's durable outbox (``item.key``: its row, marked delivered when the
        broker acknowledges it; a helping-hands request). Never waits: kept in the link's buffer while offline."""
        ...

    def notify_low(self, notice: RequestNotice) -> None:
        """Hand a notice that is not an alarm (helping hands) to the alert channels, at low priority."""
        ...


@dataclass(frozen=True, slots=True)
class GatewayVitals:
    started_at: float
    """When the gateway started (wall clock): its uptime."""
    mqtt_outbox: int
    """Messages waiting for the broker (the MQTT link's offline buffer)."""
    alert_latencies_s: tuple[float, ...]
    """The latest raised alarms' latencies, oldest first."""


class BoardChanges:
    """An event sink (the last of the gateway's channels): every outbound event wakes the open boards, which then
    send the whole state again. It only counts and sets an event: it never waits."""

    name = "web"

    def __init__(self) -> None:
        self.version = 0
        self.closed = False
        """The gateway is stopping: open streams end (so the web server stops at once)."""
        self._wake: asyncio.Event | None = None

    def deliver(self, event: OutboundEvent) -> None:
        self.bump()

    def close(self) -> None:
        self.closed = True
        self.bump()

    def bump(self) -> None:
        """Wake every open board (the state changed, or the gateway is stopping)."""
        self.version += 1
        if self._wake is not None:
            self._wake.set()
            self._wake = None

    async def wait(self, seen: int, within_s: float) -> int:
        """The version after ``seen`` (at once when it moved already), or ``seen`` after ``within_s`` seconds."""
        if self.version != seen:
            return self.version
        if self._wake is None:
            self._wake = asyncio.Event()
        wake = self._wake
        try:
            async with asyncio.timeout(within_s):
                await wake.wait()
        except TimeoutError:
            pass
        return self.version


@dataclass(frozen=True, slots=True)
class TileAlarm:
    alarm_id: str
    kind: str
    priority: str
    raised_at: float
    acknowledged_by: str | None
    test: bool
    maintenance: bool


@dataclass(frozen=True, slots=True)
class Tile:
    crib_id: str
    crib_label: str
    room_id: str
    room_label: str
    status: str
    """``alarm`` (an alarm waits for someone), ``acknowledged`` (every open alarm is taken), ``maintenance``,
    ``offline``, ``open``, ``closed`` or ``unknown`` (no reading yet): the first that holds, in that order."""
    priority: str | None
    """The highest priority of the unacknowledged alarms (``alarm``) or of all open ones."""
    latch: str | None
    online: bool | None
    battery_pct: int | None
    low_battery: bool
    test: bool
    maintenance_reason: str | None
    maintenance_until: float | None
    alarms: tuple[TileAlarm, ...] = field(default=())


_RANK = {"high": 3, "medium": 2, "low": 1}


def board_tiles(snapshot: SiteSnapshot, *, battery_low_pct: int, room: str | None = None) -> list[Tile]:
    """Every crib of the site (or of one room) as the board shows it."""
    tiles = []
    for view in snapshot.cribs:
        st = view.state
        if room is not None and st.room_id != room:
            continue
        alarms = tuple(
            TileAlarm(a.alarm_id, a.kind.value, a.priority.label, a.raised_at, a.acknowledged_by, a.test, a.maintenance)
            for a in st.alarms
        )
        waiting = [a for a in alarms if a.acknowledged_by is None]
        ranked = waiting or list(alarms)
        priority = max((a.priority for a in ranked), key=lambda p: _RANK.get(p, 0)) if ranked else None
        latch = None if st.latch is None else st.latch.value
        if waiting:
            status = "alarm"
        elif alarms:
            status = "acknowledged"
        elif st.maintenance is not None:
            status = "maintenance"
        elif st.sensor_online is False:
            status = "offline"
        elif latch is None:
            status = "unknown"
        else:
            status = latch
        tiles.append(
            Tile(
                crib_id=st.crib_id,
                crib_label=st.crib_label,
                room_id=st.room_id,
                room_label=st.room_label,
                status=status,
                priority=priority,
                latch=latch,
                online=st.sensor_online,
                battery_pct=st.battery_pct,
                low_battery=st.battery_pct is not None and st.battery_pct < battery_low_pct,
                test=any(a.test for a in alarms),
                maintenance_reason=None if st.maintenance is None else st.maintenance.reason,
                maintenance_until=None if st.maintenance is None else st.maintenance.until,
                alarms=alarms,
            )
        )
    return tiles


def board_state(
    snapshot: SiteSnapshot, *, battery_low_pct: int, room: str | None = None, broker: bool = True
) -> dict[str, object]:
    """The board's whole state as JSON-ready data (sent on every change and after every reconnect). ``broker``:
    the gateway is connected to its broker (else the board warns that wireless sensors cannot reach it)."""
    tiles = board_tiles(snapshot, battery_low_pct=battery_low_pct, room=room)
    return {
        "site": snapshot.site_id,
        "run": snapshot.run,
        "at": snapshot.at,
        "broker": broker,
        "tiles": [asdict(t) for t in tiles],
    }
