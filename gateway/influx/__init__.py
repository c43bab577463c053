"""InfluxDB: every reading and every alarm as points (docs/influx-schema.md), through a durable outbox in the store.

:mod:`~gateway.influx.schema` makes every point (pure); :mod:`~gateway.influx.feed` turns the gateway's events
into points; :mod:`~gateway.influx.writer` ships each target's outbox; :mod:`~gateway.influx.client` is the only
code that speaks HTTP to InfluxDB (1.x and 2.x).
"""
