"""The gateway's own record in SQLite (see docs/store.md): the only package that touches the database."""

from gateway.store.schema import MIGRATIONS, SCHEMA_VERSION, StoreError, migrate
from gateway.store.store import AuditEntry, DeliveryRow, Incident, OutboxRow, SensorEventRow, Store, TimelineEntry
from gateway.store.writer import StoreWriter, WriterHealth

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "AuditEntry",
    "DeliveryRow",
    "Incident",
    "OutboxRow",
    "SensorEventRow",
    "Store",
    "StoreError",
    "StoreWriter",
    "TimelineEntry",
    "WriterHealth",
    "migrate",
]
