"""Where the points come from: the core's outbound events (an :class:`~alerts.dispatch.EventSink`, after the
store's recorder), the readings the core took (:meth:`InfluxFeed.reading`, called by ``Gateway.submit`` after the
channels had the event), and the gateway's health at each stats interval (:meth:`InfluxFeed.health`).

Every method only builds points (:mod:`gateway.influx.schema`) and hands them to ``put`` (the store writer's
queue): no I/O, nothing that waits, so it can sit on the event loop's thread behind the alarm.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from gateway.domain.clock import Clock
from gateway.domain.events import AlarmEvent, CribState, InboundEvent, OutboundEvent, Outcome, TelemetryReading
from gateway.influx import schema
from gateway.influx.schema import FieldValue, Point

CLOCK_PAIR_S = 0.0002
"""The wall clock is read between two monotonic readings at most this far apart (else read again, twice)."""


class InfluxFeed:
    """Turns what happens at a site into points; ``put`` takes each one (it must not block)."""

    name = "influx"

    def __init__(
        self,
        site_id: str,
        put: Callable[[Point], None],
        clock: Clock,
        *,
        sensor_of: Mapping[str, str],
        room_of: Mapping[str, str],
    ) -> None:
        """``sensor_of``: crib id -> its sensor key; ``room_of``: crib id -> its room id."""
        self._site = site_id
        self._put = put
        self._clock = clock
        self._sensor_of = dict(sensor_of)
        self._room_of = dict(room_of)
        self._crib_of = {sensor: crib for crib, sensor in sensor_of.items()}
        self._last: dict[str, CribState] = {}
        self._rejected: dict[str, int] = {}
        self._ignored: dict[str, int] = {}
        self._refused: dict[str, int] = {}
        self._resynced: dict[str, int] = {}
        self._nuisance: dict[str, dict[str, int]] = {}
        self.points = 0
        """Points handed to ``put`` since the start."""

    def seed(self, states: list[CribState]) -> None:
        """Each crib's state when the gateway started: a restart is not a change."""
        for state in states:
            self._last[state.crib_id] = state

    def _emit(self, point: Point) -> None:
        self.points += 1
        self._put(point)

    # ------------------------------------------------------------------------------------------ the sink

    def deliver(self, event: OutboundEvent) -> None:
        if isinstance(event, AlarmEvent):
            self._emit(schema.alarm_point(event))
            return
        before = self._last.get(event.crib_id)
        self._last[event.crib_id] = event
        sensor = self._sensor_of.get(event.crib_id, event.crib_id)
        for point in schema.crib_change_points(before, event, sensor):
            self._emit(point)

    def close(self) -> None:
        return None

    # ------------------------------------------------------------------------------------------ readings

    def reading(self, event: InboundEvent, outcome: Outcome) -> None:
        """A reading the core took: telemetry becomes a ``sensor`` point at the wall time it was seen."""
        if not outcome.accepted or not isinstance(event, TelemetryReading):
            return
        crib = self._crib_of.get(event.sensor_id)
        if crib is None:
            return
        self._emit(schema.telemetry_point(self._site, self._room_of[crib], crib, event, at=self._seen(event)))

    def _seen(self, event: TelemetryReading) -> float:
        """The wall time the adapter saw the event (its ``observed_at`` is on the monotonic clock).

        The two clocks are read close together (monotonic, wall, monotonic; again if a thread switch came in
        between), so that readings a millisecond apart keep their order on the wall clock."""
        clock = self._clock
        for _ in range(3):
            before = clock.monotonic()
            wall = clock.time()
            after = clock.monotonic()
            if after - before < CLOCK_PAIR_S:
                break
        if event.observed_at is None:
            return wall
        return wall - max(0.0, (before + after) / 2 - event.observed_at)

    # ------------------------------------------------------------------------------------------ health

    def health(  # noqa: PLR0917 - the stats' parts, as the stats loop has them
        self,
        at: float,
        fields: Mapping[str, FieldValue | None],
        rejected: Mapping[str, int],
        ignored: Mapping[str, int],
        refused: Mapping[str, int],
        resynced: Mapping[str, int],
    ) -> None:
        """The gateway's health (every time), and the nuisance counts and the sensors' ordering refusals as running
        counts, each only when it changed since the last time (a dashboard carries the last value forward): a
        hundred sensors that once had a refusal do not make a hundred points every interval."""
        self._emit(schema.gateway_point(self._site, at, fields))
        rejected_new = _changed(self._rejected, rejected)
        ignored_new = _changed(self._ignored, ignored)
        for point in schema.input_points(self._site, at, rejected_new, ignored_new):
            self._emit(point)
        sensors = set(_changed(self._refused, refused)) | set(_changed(self._resynced, resynced))
        refused_new = {s: refused.get(s, 0) for s in sensors}
        resynced_new = {s: resynced.get(s, 0) for s in sensors}
        for point in schema.sensor_refused_points(self._site, at, refused_new, resynced_new, self._crib_of):
            self._emit(point)

    # ------------------------------------------------------------------------------------------ later steps

    def escalated(self, event: AlarmEvent, *, level: int, at: float, repeat: bool = False) -> None:
        """An escalation (or a repeat of the chain) of the alert policy."""
        self._emit(schema.escalation_point(event, level=level, at=at, repeat=repeat))

    def nuisance(self, at: float, counts: Mapping[str, Mapping[str, int]]) -> None:
        """Per sensor, its nuisance counts (flaps, offline periods, quick resolves), each sensor only when its
        counts changed since the last time."""
        changed = {sensor: dict(c) for sensor, c in counts.items() if self._nuisance.get(sensor) != dict(c)}
        if not changed:
            return
        self._nuisance.update(changed)
        for point in schema.nuisance_points(self._site, at, changed, self._crib_of):
            self._emit(point)

    def maintenance(
        self, room: str, crib: str | None, at: float, *, on: bool, by: str | None = None, reason: str | None = None
    ) -> None:
        """A crib or room into or out of maintenance (wired when maintenance mode lands)."""
        self._emit(schema.maintenance_point(self._site, room, crib, at, on=on, by=by, reason=reason))

    def delivered(
        self,
        channel: str,
        notice_kind: str,
        outcome: str,
        at: float,
        *,
        notice_id: str,
        alarm_id: str,
        attempts: int,
        seconds: float,
        room: str | None = None,
        error: str | None = None,
    ) -> None:
        """A channel's delivery record (wired when the channels keep them)."""
        self._emit(
            schema.delivery_point(
                self._site,
                channel,
                notice_kind,
                outcome,
                at,
                notice_id=notice_id,
                alarm_id=alarm_id,
                attempts=attempts,
                seconds=seconds,
                room=room,
                error=error,
            )
        )


def _changed(seen: dict[str, int], now: Mapping[str, int]) -> dict[str, int]:
    """The counts of ``now`` that differ from ``seen`` (which is brought up to date)."""
    out = {key: count for key, count in now.items() if seen.get(key) != count}
    seen.update(out)
    return out
