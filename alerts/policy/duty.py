"""Who is on duty: the staff groups of the site file, their members' channel addresses and shifts, resolved for
one alarm at one instant (local time of the site). Pure: the wall-clock time is given."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from alerts.notices import Recipient
from gateway.settings import (
    MQTT_CHANNEL,
    SIREN_CHANNEL,
    WEEKDAYS,
    AlertingConfig,
    GroupConfig,
    MemberConfig,
    ShiftConfig,
    hhmm_minutes,
)

SIREN = Recipient(group=SIREN_CHANNEL, member="gateway", channel=SIREN_CHANNEL, address="")
"""The site's siren, as a recipient of a step with ``siren = true``."""


def on_shift(shifts: Iterable[ShiftConfig], local: datetime) -> bool:
    """True when ``local`` (the site's local time) falls in one of ``shifts``; no shifts at all: always."""
    shifts = tuple(shifts)
    if not shifts:
        return True
    minute = local.hour * 60 + local.minute
    today = WEEKDAYS[local.weekday()]
    yesterday = WEEKDAYS[(local - timedelta(days=1)).weekday()]
    for shift in shifts:
        start, end = hhmm_minutes(shift.start), hhmm_minutes(shift.end)
        if start < end:
            if today in shift.days and start <= minute < end:
                return True
        elif (today in shift.days and minute >= start) or (yesterday in shift.days and minute < end):
            return True  # a night shift: from start today until end tomorrow
    return False


class Roster:
    """The site's staff groups, asked who a step's targets are for one alarm at one instant."""

    def __init__(self, config: AlertingConfig) -> None:
        self._groups = config.groups
        self._zone = ZoneInfo(config.time_zone)
        owners: dict[str, set[str]] = {}
        for group in config.groups:
            for member in group.members:
                for address in member.channels:
                    if address.channel == MQTT_CHANNEL:
                        owners.setdefault(address.address, set()).add(member.id)
        self._owners = {device: next(iter(ids)) for device, ids in owners.items() if len(ids) == 1}
        """Staff device id -> the one member whose device it is (a device several members list is shared)."""

    def owner(self, device: str) -> str | None:
        """The member (a staff id, or the device's own id) a staff device belongs to; None for a device the roster
        does not know, or one that several members share (a room tablet)."""
        return self._owners.get(device)

    def identify(self, device: str, claimed: str | None, *, login: str | None = None) -> tuple[str, str | None]:
        """Who acknowledged on ``device`` (a fact the broker vouches for: the ack topic's device), as ``(by, claim)``.

        ``by``: the staff id of an authenticated web login (``login``: the staff alarm board, for a shared tablet),
        else the member the device belongs to, else the device id itself (a device the roster does not know, or a
        shared one). ``claim``: what the ack's payload said ``by`` was, when it says someone else (neither ``by``
        nor the device): recorded as a claim only, never as who acknowledged.
        """
        by = login or self._owners.get(device) or device
        claim = claimed if claimed is not None and claimed not in (by, device) else None
        return by, claim

    @property
    def empty(self) -> bool:
        return not self._groups

    def local(self, wall: float) -> datetime:
        return datetime.fromtimestamp(wall, self._zone)

    def groups_for(self, targets: Iterable[str], room_id: str) -> list[GroupConfig]:
        """The groups a step names: group ids, or ``room`` (the alarm's room groups), ``site``, ``managers``."""
        chosen: dict[str, GroupConfig] = {}
        for target in targets:
            for group in self._groups:
                if (
                    group.id == target
                    or (target == "room" and group.kind == "room" and room_id in group.rooms)
                    or (target == "site" and group.kind == "site")
                    or (target == "managers" and group.kind == "managers")
                ):
                    chosen.setdefault(group.id, group)
        return list(chosen.values())

    def recipients(self, targets: Iterable[str], room_id: str, wall: float) -> tuple[list[Recipient], str]:
        """The recipients on duty now for a step's targets, and how they were found.

        Never nobody while the site has groups at all (fail toward the alarm): when no one of the step's groups is
        on duty (or the step names none the site has), the site-wide groups on duty get it (``fallback_site``),
        else every member on duty (``fallback_all``), else every member of the site whatever the shifts
        (``fallback_off_duty``).
        """
        local = self.local(wall)
        first = self._on_duty(self.groups_for(targets, room_id), local)
        if first or self.empty:
            return first, "on_duty"
        site = self._on_duty(self.groups_for(("site",), room_id), local)
        if site:
            return site, "fallback_site"
        everyone = self._on_duty(self._groups, local)
        if everyone:
            return everyone, "fallback_all"
        return self._all(self._groups), "fallback_off_duty"

    def _on_duty(self, groups: Iterable[GroupConfig], local: datetime) -> list[Recipient]:
        out: list[Recipient] = []
        for group in groups:
            if not on_shift(group.shifts, local):
                continue
            out += [r for m in group.members if on_shift(m.shifts, local) for r in _addresses(group, m)]
        return out

    @staticmethod
    def _all(groups: Iterable[GroupConfig]) -> list[Recipient]:
        return [r for g in groups for m in g.members for r in _addresses(g, m)]


def _addresses(group: GroupConfig, member: MemberConfig) -> list[Recipient]:
    return [Recipient(group.id, member.id, a.channel, a.address) for a in member.channels]
