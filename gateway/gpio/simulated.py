"""Simulation mode's pins (``cribwatch gateway --simulate-pins``, demo mode only): gpiozero's ``MockFactory``, with
a wired crib's reed switch moved by a pin command from a test bench instead of a hand.

Every pin of the site (the wired cribs, the buzzer, the LED) is a mock pin: nothing on the machine is touched.
Each wired crib's pin starts LOW (the reed switch closed: the latch is shut), as the demo does, and stays low
when :class:`~gateway.gpio.latches.GpioLatchInputs` turns the pull-up on (a closed switch to ground beats the
pull-up). A pin command (:mod:`gateway.protocol.simpins`) drives the pin ``high`` (open) or ``low`` (closed) on the
event loop's thread; the edge then goes through :class:`GpioLatchInputs` exactly as a real one: stamped there,
debounced by the core. A command for a pin that is no wired crib's is counted (``rejected``, reason ``sim_pin``)
and changes nothing; nothing a command says raises.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from gateway.domain.stats import IngestStats
from gateway.protocol.simpins import SIM_PIN_REASON, PinLevel, SimPinCommand

log = logging.getLogger("cribwatch.gpio")

NEEDS_DEMO = (
    "--simulate-pins is allowed in demo mode only ([site] demo = true in the site file, never on a site with "
    "children): it lets a network message move a crib's latch"
)


class SimulationRefusedError(Exception):
    """Simulation mode asked for on a site that is not in demo mode."""


def _reed_switch_pin_class() -> type[Any]:
    from gpiozero.pins.mock import MockPin  # noqa: PLC0415 - gpiozero only where pins are opened

    class ReedSwitchPin(MockPin):  # type: ignore[misc]  # gpiozero has no type hints
        """A mock input with a reed switch to ground: the pull-up does not move it; only drive_high/low do."""

        def _set_pull(self, value: str) -> None:
            if value == "up" and self.function == "input":
                self._pull = value  # the switch decides the level: closed (low) until driven high
                return
            super()._set_pull(value)

    return ReedSwitchPin


class SimulatedPins:
    """The mock pin factory of a gateway in simulation mode, and the pin commands that move its wired cribs."""

    def __init__(self, wired_pins: Iterable[int], stats: IngestStats) -> None:
        from gpiozero.pins.mock import MockFactory  # noqa: PLC0415

        self.factory: Any = MockFactory(pin_class=_reed_switch_pin_class())
        """Give this to the GPIO adapters as their ``pin_factory``; ``factory.pin(n)`` is pin ``n`` (tests)."""
        self.wired = frozenset(wired_pins)
        self._stats = stats
        for pin in sorted(self.wired):  # every wired crib starts closed, before its input is opened
            self.factory.pin(pin).drive_low()
        self.driven = 0
        """Pin commands carried out so far."""

    def drive(self, command: SimPinCommand) -> None:
        """Move a wired crib's pin as its reed switch would; a command for any other pin is counted and dropped."""
        if command.pin not in self.wired:
            known = ", ".join(str(pin) for pin in sorted(self.wired)) or "none"
            self._stats.reject(SIM_PIN_REASON, f"pin {command.pin} is no wired crib's pin (wired: {known})")
            return
        try:
            pin = self.factory.pin(command.pin)
            if command.level is PinLevel.HIGH:
                pin.drive_high()
            else:
                pin.drive_low()
        except Exception as exc:  # noqa: BLE001 - a test bench's command must never take the gateway down
            self._stats.reject(SIM_PIN_REASON, f"pin {command.pin}: {type(exc).__name__}: {exc}")
            return
        self.driven += 1
        log.info("simulated pin %d driven %s (%s)", command.pin, command.level.value, _meaning(command.level))


def _meaning(level: PinLevel) -> str:
    return "reed switch open: latch open" if level is PinLevel.HIGH else "reed switch closed: latch closed"
