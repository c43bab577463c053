"""The store's place among the alert channels: every outbound event, handed to the writer thread.

:class:`StoreRecorder` is an :class:`alerts.dispatch.EventSink` in all but the import (the store does not import
``alerts``). It comes after the MQTT channel and the buzzer in the dispatcher's order, and only enqueues: the alarm
reaches the socket and the buzzer before anything is written, and the disk never holds up the event loop.
Besides the incidents and the crib states, it keeps the sensors' health history: each sensor going offline and
coming back, read off the crib states as they change.
"""

from __future__ import annotations

from typing import Protocol

from gateway.domain.events import AlarmEvent, CribState, OutboundEvent


class RecordWriter(Protocol):
    """What the recorder needs of :class:`gateway.store.writer.StoreWriter`."""

    def record_alarm_event(self, ev: AlarmEvent) -> None: ...

    def record_crib_state(self, st: CribState) -> None: ...

    def sensor_event(self, at: float, sensor_id: str, crib_id: str, kind: str, detail: str | None = None) -> None: ...


class StoreRecorder:
    """Records every alarm event (the incident log) and crib state (the last known state) through the writer."""

    name = "store"

    def __init__(self, writer: RecordWriter, sensor_of: dict[str, str]) -> None:
        self._writer = writer
        self._sensor_of = sensor_of
        """crib id -> its sensor key (the wireless sensor id, or gpio<pin>)."""
        self._online: dict[str, bool | None] = {}

    def deliver(self, event: OutboundEvent) -> None:
        if isinstance(event, AlarmEvent):
            self._writer.record_alarm_event(event)
            return
        self._writer.record_crib_state(event)
        before = self._online.get(event.crib_id)
        now = event.sensor_online
        self._online[event.crib_id] = now
        if (now is False and before is not False) or (now is True and before is False):
            sensor = self._sensor_of.get(event.crib_id, event.crib_id)
            self._writer.sensor_event(event.at, sensor, event.crib_id, "online" if now else "offline")

    def seed(self, online: dict[str, bool | None]) -> None:
        """What each crib's sensor was when the gateway started (restored from the store), so a restart adds no
        history of its own."""
        self._online.update(online)

    def close(self) -> None:
        return None
