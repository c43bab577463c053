"""Pin commands of a test bench: ``<base>/<site>/sim/pin/<pin>`` with payload ``high`` or ``low``.

Only a gateway in simulation mode (``cribwatch gateway --simulate-pins``, allowed with ``[site] demo = true``
alone) subscribes to these; it drives the named mock GPIO pin as a reed switch would: ``high`` is an open latch
(the switch no longer pulls the pin low), ``low`` a closed one. Parsing only; which pins may move is the GPIO
adapter's to decide (:mod:`gateway.gpio.simulated`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from gateway.protocol.errors import ProtocolError
from gateway.protocol.topics import Topics

SIM_PIN_REASON = "sim_pin"
"""The counter key (IngestStats ``rejected``) of every pin command the gateway does not carry out."""
MAX_PIN = 63
"""No GPIO header has more pins than this; a larger number is refused before any pin library sees it."""


class PinLevel(enum.StrEnum):
    HIGH = "high"
    """The reed switch is open (the latch is open): the pull-up holds the pin high."""
    LOW = "low"
    """The reed switch is closed (the latch is closed): it pulls the pin to ground."""


@dataclass(frozen=True, slots=True)
class SimPinCommand:
    pin: int
    level: PinLevel


def sim_pin_payload(level: PinLevel) -> bytes:
    return level.value.encode("ascii")


def parse_sim_pin(topics: Topics, topic: str, payload: bytes, *, retained: bool = False) -> SimPinCommand:
    """``<prefix>/sim/pin/<pin>`` + ``high``/``low`` -> :class:`SimPinCommand`; ProtocolError (reason ``sim_pin``)
    on anything else, and on a retained command (a broker's replay must not move a pin)."""
    head = f"{topics.prefix}/sim/pin/"
    if not topic.startswith(head):
        raise ProtocolError(SIM_PIN_REASON, f"not a pin command topic of site {topics.site!r}: {topic!r}")
    text = topic[len(head) :]
    if not (text.isascii() and text.isdigit()) or len(text) > 2 or int(text) > MAX_PIN:
        raise ProtocolError(SIM_PIN_REASON, f"{topic!r}: {text!r} is not a GPIO pin number (0..{MAX_PIN})")
    if retained:
        raise ProtocolError(SIM_PIN_REASON, f"{topic!r}: a retained pin command is not carried out (a replay)")
    try:
        level = PinLevel(payload.decode("ascii").strip().lower())
    except (UnicodeDecodeError, ValueError):
        shown = payload[:20]
        raise ProtocolError(SIM_PIN_REASON, f"{topic!r}: payload {shown!r} is not `high` or `low`") from None
    return SimPinCommand(int(text), level)
