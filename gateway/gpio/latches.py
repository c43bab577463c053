"""Wired crib-latch sensors on the gateway's GPIO header, through gpiozero.

One input per crib, pull-up enabled, reed switch to ground: closed latch = low = "pressed".
gpiozero calls back on its own threads; each edge becomes a :class:`LatchReading` here and is handed
to the event loop with ``call_soon_threadsafe``. No debounce here (``bounce_time`` is ignored on mock
pins and hides timing from the core): the core debounces.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

from gateway.domain.events import InboundEvent, LatchReading
from gateway.domain.vocab import LatchState, Source
from gateway.gpio.pins import opening_pin
from gateway.settings import CribConfig

log = logging.getLogger("cribwatch.gpio")


class GpioLatchInputs:
    def __init__(
        self,
        cribs: list[CribConfig],
        submit: Callable[[InboundEvent], object],
        loop: asyncio.AbstractEventLoop,
        *,
        pin_factory: Any = None,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        from gpiozero import Button  # noqa: PLC0415 - gpiozero probes for pin libraries: only when needed

        self._submit = submit
        self._loop = loop
        self._wall = wall_clock
        self._monotonic = monotonic
        self._buttons: list[Any] = []
        self._seq = itertools.count()
        self.boot = int(wall_clock())
        try:
            for crib in cribs:
                assert crib.gpio_pin is not None
                with opening_pin(f"wired crib {crib.id!r}", crib.gpio_pin):
                    button = Button(crib.gpio_pin, pull_up=True, bounce_time=None, pin_factory=pin_factory)
                key = crib.sensor_key
                button.when_pressed = self._callback(key, LatchState.CLOSED)
                button.when_released = self._callback(key, LatchState.OPEN)
                self._buttons.append((key, button))
        except Exception:
            self.close()
            raise
        log.info("watching %d wired cribs", len(self._buttons))

    def _callback(self, sensor_key: str, state: LatchState) -> Callable[[], None]:
        def on_edge() -> None:  # runs on a gpiozero thread; the reading is stamped here, at the edge
            self._loop.call_soon_threadsafe(self._submit, self._reading(sensor_key, state))

        return on_edge

    def _reading(self, sensor_key: str, state: LatchState) -> LatchReading:
        return LatchReading(
            sensor_id=sensor_key,
            state=state,
            boot=self.boot,
            seq=next(self._seq),
            sensor_ts=self._wall(),
            source=Source.GPIO,
            observed_at=self._monotonic(),
        )

    def read_all(self) -> None:
        """Report the current level of every input (at start, so the core knows every latch)."""
        for key, button in self._buttons:
            state = LatchState.CLOSED if button.is_pressed else LatchState.OPEN
            self._submit(self._reading(key, state))

    def close(self) -> None:
        for _, button in self._buttons:
            button.close()
        self._buttons.clear()
