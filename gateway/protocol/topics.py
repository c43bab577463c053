"""Topic names of one site, and how each kind of message is published (QoS, retain).

Topic scheme (``<base>`` defaults to ``cribwatch``)::

    <base>/<site>/sensor/<sensor>/latch         sensor -> gateway   QoS 1, retained
    <base>/<site>/sensor/<sensor>/telemetry     sensor -> gateway   QoS 0, not retained
    <base>/<site>/sensor/<sensor>/availability  sensor -> gateway   QoS 1, retained (MQTT last will)
    <base>/<site>/alarm/<room>                  gateway -> staff    QoS 1, not retained
    <base>/<site>/crib/<crib>/state             gateway -> staff    QoS 1, retained
    <base>/<site>/gateway/availability          gateway -> all      QoS 1, retained (MQTT last will)
    <base>/<site>/gateway/stats                 gateway -> techs    QoS 0, retained
    <base>/<site>/ack/<device>                  staff -> gateway    QoS 1, not retained (the device's own account)
    <base>/<site>/ack/answer/<device>           gateway -> staff    QoS 1, not retained
    <base>/<site>/notify/<device>               gateway -> staff    QoS 1, not retained (alert channel "mqtt")
    <base>/<site>/sim/pin/<pin>                 techs -> gateway    QoS 1, not retained (simulation mode only)
    <base>/<site>/cmd/<device>                  techs -> gateway    QoS 1, not retained (test alarm, maintenance)
    <base>/<site>/cmd/<device>/answer           gateway -> techs    QoS 1, not retained

The last one exists only on a test bench: a gateway started with ``--simulate-pins`` (allowed in demo mode alone)
takes ``high``/``low`` for a wired crib's mock GPIO pin there (:mod:`gateway.protocol.simpins`); any other gateway
never subscribes to it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from gateway.domain.vocab import DEFAULT_BASE_TOPIC, ID_PATTERN, is_identifier
from gateway.protocol.errors import ProtocolError


class Qos(enum.IntEnum):
    AT_MOST_ONCE = 0
    AT_LEAST_ONCE = 1


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """How one kind of message is published: its QoS and retain flag."""

    qos: Qos
    retain: bool


LATCH = TopicSpec(Qos.AT_LEAST_ONCE, retain=True)
"""Latch changes must arrive; retained so a restarted gateway learns every latch at once."""
TELEMETRY = TopicSpec(Qos.AT_MOST_ONCE, retain=False)
"""Periodic; the next heartbeat replaces a lost one. Not retained: a retained heartbeat would make a
dead sensor look alive to a gateway that has just started."""
AVAILABILITY = TopicSpec(Qos.AT_LEAST_ONCE, retain=True)
"""Online on connect, offline by the broker's last will; retained so late subscribers know."""
ALARM_EVENT = TopicSpec(Qos.AT_LEAST_ONCE, retain=False)
"""Each alarm event must reach staff once at least; events are history, never replayed by retain."""
CRIB_STATE = TopicSpec(Qos.AT_LEAST_ONCE, retain=True)
"""The current truth of a crib; retained so a tablet that connects sees every open alarm."""
GATEWAY_AVAILABILITY = TopicSpec(Qos.AT_LEAST_ONCE, retain=True)
GATEWAY_STATS = TopicSpec(Qos.AT_MOST_ONCE, retain=True)
ACK = TopicSpec(Qos.AT_LEAST_ONCE, retain=False)
"""A pager button press must arrive; never retained (a retained ack would acknowledge again). The gateway rejects
an ack the broker replays with the retain flag, and deletes it with a zero-length retained message (MqttLink)."""
NOTIFY = TopicSpec(Qos.AT_LEAST_ONCE, retain=False)
"""A notice of the alert policy for one staff device (alarm, escalation, repeat, reminder, resolved): must arrive;
not retained (a retained notice would alarm a device again on every reconnect)."""
ACK_ANSWER = TopicSpec(Qos.AT_LEAST_ONCE, retain=False)
"""The gateway's answer to one ack, for the device that sent it: must arrive, means nothing later (not retained)."""
COMMAND = TopicSpec(Qos.AT_LEAST_ONCE, retain=False)
"""A technician's command (test alarm, maintenance): must arrive; never retained (a replay would run it again:
the gateway rejects a retained one). Its answer the same."""
SIM_PIN = TopicSpec(Qos.AT_LEAST_ONCE, retain=False)
"""A test bench's command for a wired crib's mock pin (simulation mode only): must arrive; never retained, so no
pin moves again when the gateway reconnects (the gateway rejects a retained one)."""


# --------------------------------------------------------------------------------------------- topics


class SensorChannel(enum.StrEnum):
    LATCH = "latch"
    TELEMETRY = "telemetry"
    AVAILABILITY = "availability"


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names of one site."""

    site: str
    base: str = DEFAULT_BASE_TOPIC

    @property
    def prefix(self) -> str:
        return f"{self.base}/{self.site}"

    def sensor(self, sensor_id: str, channel: SensorChannel) -> str:
        return f"{self.prefix}/sensor/{sensor_id}/{channel.value}"

    @property
    def sensor_filter(self) -> str:
        """Every sensor topic of the site, whatever the sensor id."""
        return f"{self.prefix}/sensor/+/+"

    def sensor_filter_of(self, sensor_id: str) -> str:
        """Every channel of one sensor: the gateway subscribes to this for each of its site's sensors."""
        return f"{self.prefix}/sensor/{sensor_id}/+"

    def alarm(self, room_id: str) -> str:
        return f"{self.prefix}/alarm/{room_id}"

    @property
    def alarm_filter(self) -> str:
        """Every alarm event of the site (a site-wide pager or the manager's tablet)."""
        return f"{self.prefix}/alarm/+"

    def crib_state(self, crib_id: str) -> str:
        return f"{self.prefix}/crib/{crib_id}/state"

    @property
    def crib_state_filter(self) -> str:
        return f"{self.prefix}/crib/+/state"

    @property
    def gateway_availability(self) -> str:
        return f"{self.prefix}/gateway/availability"

    @property
    def gateway_stats(self) -> str:
        return f"{self.prefix}/gateway/stats"

    def ack(self, device: str) -> str:
        """Where one staff device acknowledges: the broker lets each device's account write only its own
        (deploy/mosquitto/cribwatch.acl, ``pattern write cribwatch/+/ack/%u``), so the device is a fact."""
        return f"{self.prefix}/ack/{device}"

    @property
    def ack_filter(self) -> str:
        """Every device's ack topic (not the answers: ``ack/answer/<device>`` has one level more)."""
        return f"{self.prefix}/ack/+"

    @property
    def legacy_ack(self) -> str:
        """The shared ack topic of earlier versions, where any device could claim any id: no longer taken (the
        gateway unsubscribes from it, as its persistent session may still hold the filter)."""
        return f"{self.prefix}/ack"

    def ack_device(self, topic: str) -> str | None:
        """The device of ``<prefix>/ack/<device>``; None for any other topic (``ack/answer/...`` included)."""
        head = f"{self.prefix}/ack/"
        if not topic.startswith(head):
            return None
        device = topic[len(head) :]
        return None if "/" in device else device

    def notify(self, device: str) -> str:
        """Where the gateway's alert channel ``mqtt`` tells one staff device (its account alone may read it)."""
        return f"{self.prefix}/notify/{device}"

    @property
    def notify_filter(self) -> str:
        return f"{self.prefix}/notify/+"

    def ack_answer(self, device: str) -> str:
        """Where the gateway answers the acks of one staff device (its pager, tablet or board)."""
        return f"{self.prefix}/ack/answer/{device}"

    @property
    def ack_answer_filter(self) -> str:
        return f"{self.prefix}/ack/answer/+"

    def command(self, device: str) -> str:
        """Where a technician's tool sends commands to the gateway (test alarm, maintenance)."""
        return f"{self.prefix}/cmd/{device}"

    @property
    def command_filter(self) -> str:
        return f"{self.prefix}/cmd/+"

    def command_answer(self, device: str) -> str:
        """Where the gateway answers the commands of one device."""
        return f"{self.prefix}/cmd/{device}/answer"

    def sim_pin(self, pin: int | str) -> str:
        """Where a test bench drives a wired crib's mock GPIO pin (simulation mode only)."""
        return f"{self.prefix}/sim/pin/{pin}"

    @property
    def sim_pin_filter(self) -> str:
        return f"{self.prefix}/sim/pin/+"

    def parse_sensor_topic(self, topic: str) -> tuple[str, SensorChannel]:
        """``<prefix>/sensor/<id>/<channel>`` -> (id, channel); ProtocolError on anything else."""
        head = f"{self.prefix}/sensor/"
        if not topic.startswith(head):
            raise ProtocolError("topic", f"not a sensor topic of site {self.site!r}: {topic!r}")
        parts = topic[len(head) :].split("/")
        if len(parts) != 2:
            raise ProtocolError("topic", f"expected {head}<sensor>/<channel>, got {topic!r}")
        sensor_id, channel = parts
        if not is_identifier(sensor_id):
            raise ProtocolError("topic", f"sensor id {sensor_id!r} does not match {ID_PATTERN}")
        try:
            return sensor_id, SensorChannel(channel)
        except ValueError:
            known = ", ".join(c.value for c in SensorChannel)
            raise ProtocolError("topic", f"unknown channel {channel!r} (expected one of {known})") from None
