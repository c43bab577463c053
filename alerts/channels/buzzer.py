"""The gateway's own buzzer and LED, on GPIO through gpiozero: they work with the broker down.

The buzzer beeps while any alarm at or above ``min_priority`` is raised and not yet acknowledged
(acknowledging silences it, as on a nurse-call panel); the LED is lit while any alarm is open. A ``gateway_fault``
alarm is high priority, so it sounds too; a failure the core could not pin on one crib calls :meth:`fault`, which
sounds the buzzer until staff acknowledge any alarm.

``sounding`` and ``lit`` are what each device last accepted. A device call that fails (a GPIO glitch) is raised,
for the caller to count (the :class:`~alerts.dispatch.Dispatcher` under ``channel_failures``), and is tried
again on every later event, :meth:`fault` or :meth:`reset` while the wanted state still differs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from gateway.domain.events import AlarmEvent, AlarmSummary, OutboundEvent
from gateway.domain.vocab import AlarmEventType, Priority
from gateway.gpio.pins import opening_pin
from gateway.settings import BuzzerConfig

log = logging.getLogger("cribwatch.buzzer")


class BuzzerChannel:
    name = "buzzer"

    def __init__(self, config: BuzzerConfig, pin_factory: Any = None) -> None:
        from gpiozero import LED, Buzzer  # noqa: PLC0415 - only a gateway with a buzzer needs gpiozero here

        self._min = Priority[config.min_priority.upper()]
        self._buzzer: Any = None
        self._led: Any = None
        try:
            if config.pin is not None:
                with opening_pin("the buzzer ([buzzer] pin)", config.pin):
                    self._buzzer = Buzzer(config.pin, pin_factory=pin_factory)
            if config.led_pin is not None:
                with opening_pin("the LED ([buzzer] led_pin)", config.led_pin):
                    self._led = LED(config.led_pin, pin_factory=pin_factory)
        except BaseException:
            self.close()
            raise
        self._open: dict[str, tuple[Priority, bool]] = {}
        """alarm id -> (priority, acknowledged)"""
        self.sounding = False
        """Whether the buzzer last accepted ``beep`` (rather than ``off``): what the device took, not what is wanted."""
        self.lit = False
        """Whether the LED last accepted being lit."""
        self.faulted = False
        """Set by :meth:`fault`; cleared by the next acknowledgement of any alarm."""

    def deliver(self, event: OutboundEvent) -> None:
        """Any event, an alarm's or a crib state, also retries a device call that failed before."""
        if isinstance(event, AlarmEvent) and event.maintenance:
            pass  # raised in maintenance: recorded, never sounded
        elif isinstance(event, AlarmEvent):
            if event.type in (AlarmEventType.RAISED, AlarmEventType.REMINDED):  # a reminder sounds again
                self._open[event.alarm_id] = (event.priority, False)
            elif event.type is AlarmEventType.ACKNOWLEDGED:
                self._open[event.alarm_id] = (event.priority, True)
                self.faulted = False
            else:
                self._open.pop(event.alarm_id, None)
        self._update()

    def reset(self, alarms: Iterable[AlarmSummary]) -> None:
        """Start from these open alarms (those restored from a previous run)."""
        self._open = {a.alarm_id: (a.priority, a.acknowledged_by is not None) for a in alarms if not a.maintenance}
        self._update()

    def fault(self) -> None:
        """The gateway failed somewhere it cannot name a crib: sound until someone acknowledges an alarm."""
        self.faulted = True
        self._update()

    def refresh(self) -> None:
        """Drive the buzzer and LED to what the open alarms want again (called periodically, so a device call that
        failed is retried even when no new event comes)."""
        self._update()

    def _update(self) -> None:
        """Drive each device toward the wanted state: every update re-drives a device whose last accepted state
        differs from the wanted one, so a device call that failed (a GPIO glitch) is tried again on the next
        event or :meth:`fault`. ``sounding`` and ``lit`` only change once the device took the call; a failure
        still leaves the other device driven, and is then raised for the caller to count."""
        sound = self.faulted or any(prio >= self._min and not acked for prio, acked in self._open.values())
        lit = bool(self._open)
        failure: Exception | None = None
        if sound != self.sounding:
            try:
                if self._buzzer is not None:
                    if sound:
                        self._buzzer.beep(on_time=0.4, off_time=0.4)
                    else:
                        self._buzzer.off()
            except Exception as exc:  # noqa: BLE001 - the LED is still driven; raised below
                failure = exc
            else:
                self.sounding = sound
                log.info("buzzer %s", "on" if sound else "off")
        if lit != self.lit:
            try:
                if self._led is not None:
                    self._led.value = lit
            except Exception as exc:  # raised below
                if failure is None:
                    failure = exc
                else:  # the buzzer's failure is the one raised: this one is only logged
                    log.exception("the LED failed too")
            else:
                self.lit = lit
        if failure is not None:
            raise failure

    def close(self) -> None:
        for device in (self._buzzer, self._led):
            if device is not None:
                device.close()
