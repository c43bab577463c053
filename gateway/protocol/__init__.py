"""The cribwatch MQTT contract, written once: topics (:mod:`.topics`), payloads (:mod:`.payloads`) and the
conversion between MQTT messages and domain events (:mod:`.codec`). ``docs/protocol.md`` says the same for people.

The gateway and the sensor simulator both import this package; it imports only :mod:`gateway.domain`.
"""

from gateway.domain.vocab import DEFAULT_BASE_TOPIC, Identifier
from gateway.protocol.errors import ProtocolError
from gateway.protocol.payloads import (
    MAX_PAYLOAD_BYTES,
    SCHEMA_VERSION,
    SENSOR_PAYLOADS,
    AckPayload,
    AlarmEventPayload,
    AnyPayload,
    AvailabilityPayload,
    CribAlarmSummary,
    CribStatePayload,
    GatewayAvailabilityPayload,
    GatewayStatsPayload,
    LatchPayload,
    TelemetryPayload,
    TriggerPayload,
    decode,
    encode,
)
from gateway.protocol.topics import (
    ACK,
    ALARM_EVENT,
    AVAILABILITY,
    CRIB_STATE,
    GATEWAY_AVAILABILITY,
    GATEWAY_STATS,
    LATCH,
    TELEMETRY,
    Qos,
    SensorChannel,
    Topics,
    TopicSpec,
)

__all__ = [
    "ACK",
    "ALARM_EVENT",
    "AVAILABILITY",
    "CRIB_STATE",
    "DEFAULT_BASE_TOPIC",
    "GATEWAY_AVAILABILITY",
    "GATEWAY_STATS",
    "LATCH",
    "MAX_PAYLOAD_BYTES",
    "SCHEMA_VERSION",
    "SENSOR_PAYLOADS",
    "TELEMETRY",
    "AckPayload",
    "AlarmEventPayload",
    "AnyPayload",
    "AvailabilityPayload",
    "CribAlarmSummary",
    "CribStatePayload",
    "GatewayAvailabilityPayload",
    "GatewayStatsPayload",
    "Identifier",
    "LatchPayload",
    "ProtocolError",
    "Qos",
    "SensorChannel",
    "TelemetryPayload",
    "TopicSpec",
    "Topics",
    "TriggerPayload",
    "decode",
    "encode",
]
