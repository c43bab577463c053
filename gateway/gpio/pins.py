"""Opening the gateway's GPIO pins through gpiozero, with one clear error where the machine has no pin library.

gpiozero picks its pin library (lgpio, RPi.GPIO, pigpio, its own native one) when the first pin is opened and
raises ``BadPinFactory`` where none works: on a laptop or a CI machine, or with ``GPIOZERO_PIN_FACTORY`` set to
a name it does not know. :func:`opening_pin` turns that into :class:`GpioUnavailableError`, which names the
device and its pin and says what to do. gpiozero is imported only here, when a pin is opened.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator

log = logging.getLogger("cribwatch.gpio")

MOCK_PINS_ADVICE = (
    "Run the gateway on the site's Raspberry Pi. On a test bench only, set GPIOZERO_PIN_FACTORY=mock "
    "(simulated pins: no real latch is read, no buzzer sounds)."
)


class GpioUnavailableError(Exception):
    """A pin the site file asks for cannot be opened: this machine has no GPIO pin library (or not the one named).

    ``str()`` says which device and pin, why, and what to do.
    """

    def __init__(self, device: str, pin: int, reason: str, *, factory: str | None = None) -> None:
        self.device = device
        self.pin = pin
        self.reason = reason
        """What gpiozero said, and the pin libraries it tried."""
        if factory is None:
            self.problem = f"{device} needs GPIO pin {pin}, but this machine has no GPIO pin library"
        else:
            self.problem = f"{device} needs GPIO pin {pin}, but GPIOZERO_PIN_FACTORY={factory} names no pin library"
        super().__init__(f"{self.problem} ({reason}). {MOCK_PINS_ADVICE}")


@contextlib.contextmanager
def opening_pin(device: str, pin: int) -> Iterator[None]:
    """Around the gpiozero call that opens ``pin`` for ``device`` (e.g. ``"wired crib 'sk-1'"``).

    gpiozero's warnings about the pin libraries it tried go to the log instead of stderr; if none could be
    loaded they become part of the :class:`GpioUnavailableError`.
    """
    from gpiozero.exc import BadPinFactory, NativePinFactoryFallback, PinFactoryFallback  # noqa: PLC0415

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PinFactoryFallback)
        warnings.simplefilter("always", NativePinFactoryFallback)
        try:
            yield
        except BadPinFactory as exc:
            tried = [str(w.message) for w in caught if issubclass(w.category, PinFactoryFallback)]
            reason = "; ".join([f"gpiozero: {exc}", *tried])
            raise GpioUnavailableError(device, pin, reason, factory=os.environ.get("GPIOZERO_PIN_FACTORY")) from None
    for w in caught:
        if issubclass(w.category, PinFactoryFallback | NativePinFactoryFallback):
            log.info("gpiozero: %s", w.message)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
