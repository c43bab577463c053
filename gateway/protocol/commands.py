"""A technician's commands to the running gateway: ``<prefix>/cmd/<device>``, answered on
``<prefix>/cmd/<device>/answer`` (see docs/protocol.md).

``test_alarm`` runs a crib's whole alarm chain, marked test; ``maintenance_on`` puts a crib (or its sensor) in
maintenance until ``until`` with a ``reason``; ``maintenance_off`` ends it. Parsing only; the core decides.
"""

from __future__ import annotations

from gateway.protocol.errors import ProtocolError
from gateway.protocol.payloads import CommandAnswerPayload, CommandPayload, CommandResult, decode
from gateway.protocol.topics import Topics

COMMAND_REASON = "command"
"""The counter key (IngestStats ``rejected``) of a command message that is not one."""

__all__ = ["COMMAND_REASON", "CommandAnswerPayload", "CommandPayload", "CommandResult", "parse_command"]


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
