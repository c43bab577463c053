"""A technician's commands to the running gateway: ``<prefix>/cmd/<device>``, answered on
``<prefix>/cmd/<device>/answer`` (see docs/protocol.md).

``test_alarm`` runs a crib's whole alarm chain, marked test; ``maintenance_on`` puts a crib (or its sensor) in
maintenance until ``until`` with a ``reason``; ``maintenance_off`` ends it. Parsing only; the core decides.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from gateway.domain.vocab import Identifier
from gateway.protocol.errors import ProtocolError
from gateway.protocol.payloads import _Payload, decode
from gateway.protocol.topics import Topics

COMMAND_REASON = "command"
"""The counter key (IngestStats ``rejected``) of a command message that is not one."""

CommandName = Literal["test_alarm", "maintenance_on", "maintenance_off"]


class CommandPayload(_Payload):
    """``<prefix>/cmd/<device>``: one command of a technician's tool."""

    command: CommandName
    crib: Identifier = Field(description="A crib id, or the id of its sensor.")
    by: Identifier = Field(description="The technician's account (a staff id, never a name).")
    reason: str | None = Field(default=None, min_length=1, max_length=200, description="maintenance_on: why.")
    until: float | None = Field(default=None, gt=0, description="maintenance_on: when it ends, Unix seconds.")
    request: str | None = Field(default=None, max_length=64, description="Echoed in the answer.")
    ts: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _maintenance_needs_reason_and_end(self) -> Self:
        if self.command == "maintenance_on" and (self.reason is None or self.until is None):
            raise ValueError("maintenance_on needs a reason and an end (until): never open-ended")
        return self


CommandResult = Literal[
    "accepted",
    "unknown_crib",
    "maintenance_past",
    "maintenance_too_long",
    "not_in_maintenance",
    "test_running",
    "invalid",
    "fault",
]


class CommandAnswerPayload(_Payload):
    """``<prefix>/cmd/<device>/answer``: what the gateway made of one command."""

    result: CommandResult
    command: str
    crib: str
    detail: str | None = None
    alarm_ids: tuple[str, ...] = Field(default=(), description="test_alarm: the test alarm raised.")
    request: str | None = None
    gw_run: int
    ts: float


def encode_message(payload: CommandPayload | CommandAnswerPayload) -> bytes:
    """Compact JSON, ``None`` fields left out (as :func:`gateway.protocol.payloads.encode`)."""
    return payload.model_dump_json(exclude_none=True).encode()


def parse_command(topics: Topics, topic: str, payload: bytes, *, retained: bool = False) -> tuple[str, CommandPayload]:
    """``<prefix>/cmd/<device>`` + JSON -> (device, command); ProtocolError (reason ``command``) otherwise."""
    head = f"{topics.prefix}/cmd/"
    device = topic[len(head) :] if topic.startswith(head) else ""
    if not device or "/" in device:
        raise ProtocolError(COMMAND_REASON, f"not a command topic of site {topics.site!r}: {topic!r}")
    if retained:
        raise ProtocolError(COMMAND_REASON, f"{topic!r}: a retained command is not carried out (a replay)")
    try:
        return device, decode(CommandPayload, payload)
    except ProtocolError as exc:
        raise ProtocolError(COMMAND_REASON, exc.detail) from None
