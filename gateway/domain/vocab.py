"""The words of the domain, apart from any wire format: latch states, alarm kinds, priorities, sources, ids.

The MQTT payloads (:mod:`gateway.protocol.payloads`), the settings and the core all use these; none of them
depends on how a message is encoded.
"""

from __future__ import annotations

import enum
import re
from typing import Annotated

from pydantic import Field

ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
"""Site, room, crib, sensor and staff ids: lower case, digits, ``-`` and ``_``; safe inside an MQTT topic."""

_ID_RE = re.compile(ID_PATTERN)

Identifier = Annotated[str, Field(pattern=ID_PATTERN, description="Lower case letters, digits, - and _.")]
"""An id as a pydantic field type (settings and payloads)."""

LABEL_MAX = 64
"""The longest label (a site's, a partner site's, a room's or a crib's name as people read it): the settings and the
payloads that carry a label take the same :data:`Label`, so a label the site file accepts is never refused on the
wire."""

Label = Annotated[str, Field(min_length=1, max_length=LABEL_MAX)]
"""A label as a pydantic field type (settings and payloads)."""

DEFAULT_BASE_TOPIC = "cribwatch"
"""The first level of every MQTT topic of cribwatch, unless a site file says otherwise."""


def is_identifier(value: str) -> bool:
    return bool(_ID_RE.fullmatch(value))


class LatchState(enum.StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class Source(enum.StrEnum):
    """Where a latch reading came from."""

    MQTT = "mqtt"
    GPIO = "gpio"


class AlarmKind(enum.StrEnum):
    CRIB_OPEN = "crib_open"
    SENSOR_OFFLINE = "sensor_offline"
    BATTERY_LOW = "battery_low"
    GATEWAY_FAULT = "gateway_fault"
    """The gateway's own code failed while handling this crib: check the crib by hand, call a technician."""


class Priority(enum.IntEnum):
    """Higher is more urgent. Sent as its name."""

    LOW = 1
    MEDIUM = 2
    HIGH = 3

    @property
    def label(self) -> str:
        return self.name.lower()


PRIORITY_OF: dict[AlarmKind, Priority] = {
    AlarmKind.CRIB_OPEN: Priority.HIGH,
    AlarmKind.SENSOR_OFFLINE: Priority.MEDIUM,
    AlarmKind.BATTERY_LOW: Priority.LOW,
    AlarmKind.GATEWAY_FAULT: Priority.HIGH,
}


class AlarmEventType(enum.StrEnum):
    RAISED = "raised"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    REMINDED = "reminded"
    """Acknowledged, but the crib is still open ``alerting.reminder_after_s`` later: the alarm is back, not
    acknowledged any more (a reminder, then escalation again)."""


class Resolution(enum.StrEnum):
    """Why an alarm ended (on its ``resolved`` event and in the incident log)."""

    LATCH_CLOSED = "latch_closed"
    """The crib was closed again."""
    SENSOR_BACK = "sensor_back"
    """The silent sensor spoke again."""
    BATTERY_OK = "battery_ok"
    """The battery is back at ``battery_ok_pct``."""
    FAULT_CLEARED = "fault_cleared"
    """A gateway fault was acknowledged and the crib's steps succeed again."""
    SENSOR_CHANGED = "sensor_changed"
    """The crib's sensor changed kind in the site file (wireless to wired): its sensor alarm cannot end otherwise."""
    SUPERSEDED = "superseded"
    """The store held a second open alarm of the same kind for one crib (never expected): the acknowledged one (else
    the older) stays."""
    MAINTENANCE = "maintenance"
    """The crib (or its sensor) was taken into maintenance: its open alarms end; what still holds is recorded only."""
    MAINTENANCE_ENDED = "maintenance_ended"
    """An alarm recorded during maintenance ends with it (what still holds is raised again, for real, at once)."""
    TEST_ENDED = "test_ended"
    """A test alarm ends when it is acknowledged, or by itself after ``alerting.test_alarm_s``."""
    CRIB_REMOVED = "crib_removed"
    """The crib (or its room) is no longer in the site file: found at a restart, ended on record."""
