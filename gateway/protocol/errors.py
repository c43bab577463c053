"""The one error of the protocol package."""

from __future__ import annotations


class ProtocolError(ValueError):
    """A message that does not follow the protocol. ``reason`` is a short counter key."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
