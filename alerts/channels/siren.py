"""The alert channel ``siren``: a loud local siren on a GPIO output (gpiozero ``OutputDevice``), for the steps of
an escalation policy that call for it (e.g. the whole site after 30 s).

A notice to the siren switches it on for its alarm; it sounds until that alarm is acknowledged or resolved (the
router hands it every alarm event: :meth:`SirenTransport.observe`) or a ``resolved`` notice comes. A later notice
of the same alarm decided after its acknowledgement (a reminder that escalates again) sounds it again; one decided
before (it waited in the queue while staff acknowledged) is ``skipped``. It sounds while any of its alarms does.

The siren is separate from the gateway's buzzer ([buzzer]): the buzzer follows every unacknowledged alarm at once,
straight from the core; the siren follows the policy. Both are GPIO, so both work with the broker down.
"""

from __future__ import annotations

import collections
import threading
from typing import Any

from alerts.channels.base import Delivery, DeliveryResult, Skipped
from alerts.notices import NoticeKind, RequestNotice
from gateway.domain.events import AlarmEvent
from gateway.domain.vocab import AlarmEventType
from gateway.gpio.pins import opening_pin

ENDED_KEPT = 1024
"""How many ended alarm ids the siren remembers (a notice of one of them that was still queued is skipped)."""


class SirenTransport:
    name = "siren"

    def __init__(self, pin: int, *, active_high: bool = True, pin_factory: Any = None) -> None:
        from gpiozero import OutputDevice  # noqa: PLC0415 - only a gateway with a siren needs it here

        with opening_pin("the siren ([channels.siren] pin)", pin):
            self._device: Any = OutputDevice(pin, active_high=active_high, initial_value=False, pin_factory=pin_factory)
        self._lock = threading.Lock()
        self._sounding: set[str] = set()
        """The alarms the siren sounds for."""
        self._acknowledged: dict[str, float] = {}
        """alarm id -> when it was acknowledged (wall clock): notices decided before that are skipped."""
        self._ended: collections.OrderedDict[str, None] = collections.OrderedDict()

    @property
    def sounding(self) -> bool:
        """Whether the siren's output is on (what the device says)."""
        return bool(self._device.value)

    def send(self, delivery: Delivery, timeout_s: float) -> DeliveryResult:
        notice = delivery.notice
        if isinstance(notice, RequestNotice):
            raise Skipped("the siren sounds for alarms only, never for a helping-hands request")
        alarm_id = notice.alarm.alarm_id
        with self._lock:
            if notice.kind is NoticeKind.ACKNOWLEDGED:
                raise Skipped(f"alarm {alarm_id} is acknowledged: nothing to sound")
            if notice.kind is NoticeKind.RESOLVED:
                self._end(alarm_id)
                self._drive()
                return DeliveryResult.DELIVERED
            if alarm_id in self._ended:
                raise Skipped(f"alarm {alarm_id} has ended")
            acked = self._acknowledged.get(alarm_id)
            if acked is not None and notice.at <= acked:
                raise Skipped(f"alarm {alarm_id} was acknowledged after this notice was decided")
            self._sounding.add(alarm_id)
            self._drive()
        return DeliveryResult.DELIVERED

    def observe(self, event: AlarmEvent) -> None:
        """An alarm event (event loop's thread): an acknowledgement or the end of an alarm silences it."""
        if event.type is AlarmEventType.RAISED:
            return
        with self._lock:
            if event.type is AlarmEventType.ACKNOWLEDGED:
                self._acknowledged[event.alarm_id] = event.at
                self._sounding.discard(event.alarm_id)
            elif event.type is AlarmEventType.REMINDED:
                return  # the alarm is back, not ended: the reminder's chain sounds it again (notices after the ack)
            else:
                self._end(event.alarm_id)
            self._drive()

    def _end(self, alarm_id: str) -> None:
        self._sounding.discard(alarm_id)
        self._acknowledged.pop(alarm_id, None)
        self._ended[alarm_id] = None
        while len(self._ended) > ENDED_KEPT:
            self._ended.popitem(last=False)

    def _drive(self) -> None:
        """Held: the lock. A GPIO call that raises fails the attempt (retried, counted)."""
        want = bool(self._sounding)
        if bool(self._device.value) != want:
            if want:
                self._device.on()
            else:
                self._device.off()

    def close(self) -> None:
        with self._lock:
            self._sounding.clear()
            try:
                self._device.off()
            finally:
                self._device.close()
