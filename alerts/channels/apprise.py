"""The alert channel ``apprise``: notices through Apprise (https://github.com/caronc/apprise), which speaks SMS
gateways, e-mail, ntfy, Telegram, Signal, Matrix, Slack, generic JSON/form/XML webhooks and a hundred more.
cribwatch writes no sender of its own: it hands Apprise a title and a body and reads back the outcome.

Targets come from an Apprise configuration file (``[channels.apprise] config``, a path outside the repository,
YAML or text, where each target may carry tags) and from ``CRIBWATCH_APPRISE_URLS`` (whitespace-separated URLs).
Both hold secrets (tokens, passwords), so neither is in the site file. A recipient's ``address`` picks targets:
empty for every target, a tag (e.g. ``managers``) for the targets tagged so, or an Apprise URL itself (for a target
without a secret, such as ``json://`` to a local bridge).

Apprise's ``notify`` blocks (it does the network I/O): it runs in the channel's own thread, bounded by its timeout.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from alerts.channels.base import ChannelError, Delivery, DeliveryResult, describe_notice
from alerts.notices import NoticeKind, RequestNotice

_ERROR_LEVELS = frozenset({"ERROR", "WARNING", "CRITICAL"})


def _notify_type(kind: NoticeKind | None, *, urgent: bool = False) -> Any:
    """Apprise's type of a notice; ``kind`` None: a helping-hands request (info, a warning when urgent)."""
    import apprise  # noqa: PLC0415 - imported when a notice goes out, not when the gateway imports its modules

    if kind is None:
        return apprise.NotifyType.WARNING if urgent else apprise.NotifyType.INFO

    if kind is NoticeKind.RESOLVED:
        return apprise.NotifyType.SUCCESS
    if kind is NoticeKind.ACKNOWLEDGED:
        return apprise.NotifyType.INFO
    if kind is NoticeKind.REMINDER:
        return apprise.NotifyType.WARNING
    return apprise.NotifyType.FAILURE


class AppriseTransport:
    name = "apprise"

    def __init__(self, *, config_path: str | None = None, urls: Sequence[str] = ()) -> None:
        import apprise  # noqa: PLC0415

        self._apprise: Any = apprise.Apprise()
        if config_path is not None:
            if not os.access(config_path, os.R_OK):
                raise ChannelError(f"cannot read the Apprise configuration {config_path}")
            config = apprise.AppriseConfig()
            if not config.add(config_path):
                raise ChannelError(f"Apprise cannot take the configuration {config_path}")
            self._apprise.add(config)
        for number, url in enumerate(urls, start=1):
            if not self._apprise.add(url):
                raise ChannelError(f"Apprise does not know target URL number {number} of CRIBWATCH_APPRISE_URLS")
        if len(self._apprise) == 0:
            raise ChannelError("no Apprise target: give [channels.apprise] config or CRIBWATCH_APPRISE_URLS")

    def send(self, delivery: Delivery, timeout_s: float) -> DeliveryResult:
        import apprise  # noqa: PLC0415

        notice, address = delivery.notice, delivery.recipient.address
        title, body = describe_notice(notice)
        if isinstance(notice, RequestNotice):
            kind = _notify_type(None, urgent=notice.urgent)
        else:
            kind = _notify_type(notice.kind)
        target: Any = self._apprise
        tag: str = apprise.common.MATCH_ALL_TAG
        if "://" in address:
            target = apprise.Apprise()
            if not target.add(address):
                raise ChannelError("Apprise does not know the recipient's target URL")
        elif address:
            tag = address
        result = target.notify(body=body, title=title, notify_type=kind, tag=tag, timeout=timeout_s)
        if bool(result):
            return DeliveryResult.DELIVERED
        raise ChannelError(_why(result, tag))

    def close(self) -> None:
        return None


def _why(result: Any, tag: str) -> str:
    """What Apprise said about a failed call, without the targets' URLs (they hold secrets)."""
    status = getattr(result, "status", None)
    name = getattr(status, "name", None)
    if name == "NOMATCH":
        return f"no Apprise target matches {tag!r}"
    if name == "TIMEOUT":
        return "Apprise timed out"
    messages: list[str] = []
    logs = getattr(result, "logs", None)
    if callable(logs):
        messages = [entry.message for entry in logs() if getattr(entry, "level", "") in _ERROR_LEVELS]
    failed = getattr(result, "failed_count", None)
    head = f"Apprise: {failed} target(s) failed" if isinstance(failed, int) else "Apprise: notify failed"
    return f"{head}: {messages[-1][:200]}" if messages else head
