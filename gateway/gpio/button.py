"""The gateway's own acknowledge button (beside its buzzer), through gpiozero: one press acknowledges every open
alarm, as an ack from the device ``gateway-button``. Wired between the pin and ground (pull-up: pressed = low).
gpiozero calls back on its own thread; the press is handed to the event loop with ``call_soon_threadsafe``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from gateway.domain.events import AckRequest, InboundEvent
from gateway.gpio.pins import opening_pin

log = logging.getLogger("cribwatch.gpio")

BUTTON_BY = "gateway"
"""The ``by`` of an acknowledgement from the gateway's own button (whoever stands at the gateway)."""
BUTTON_DEVICE = "gateway-button"


class AckButton:
    def __init__(
        self,
        pin: int,
        submit: Callable[[InboundEvent], object],
        loop: asyncio.AbstractEventLoop,
        *,
        pin_factory: Any = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        from gpiozero import Button  # noqa: PLC0415 - gpiozero probes for pin libraries: only when needed

        self._submit = submit
        self._loop = loop
        self._monotonic = monotonic
        self._wall = wall_clock
        with opening_pin("the acknowledge button ([alerting] ack_button_pin)", pin):
            self._button: Any = Button(pin, pull_up=True, bounce_time=None, pin_factory=pin_factory)
        self._button.when_pressed = self._pressed
        self.presses = 0

    def _pressed(self) -> None:  # a gpiozero thread
        self.presses += 1
        ack = AckRequest(
            by=BUTTON_BY, device=BUTTON_DEVICE, every=True, sent_ts=self._wall(), observed_at=self._monotonic()
        )
        self._loop.call_soon_threadsafe(self._submit, ack)

    def close(self) -> None:
        self._button.close()
