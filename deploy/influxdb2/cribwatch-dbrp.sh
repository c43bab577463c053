#!/bin/bash
# InfluxDB 2.x only: the DBRP mapping that lets the dashboards' InfluxQL read the gateway's bucket, and a v1
# (InfluxQL) user for Grafana, made once at the server's first start. Mount it into the influxdb:2 image's
# /docker-entrypoint-initdb.d/ (docs/deploy.md, "InfluxDB"); the image runs it after its own setup
# (DOCKER_INFLUXDB_INIT_MODE=setup), with the influx CLI logged in as the initial admin and
# DOCKER_INFLUXDB_INIT_BUCKET_ID set to the bucket it made. Not run on this project's machines (no InfluxDB 2.x
# here): the dashboards are tested against InfluxDB 1.x.
#
# Environment: INFLUXDB_DB (the InfluxQL database name the dashboards use, e.g. cribwatch),
# INFLUXDB_READ_USER and INFLUXDB_READ_USER_PASSWORD (Grafana's user), and the image's DOCKER_INFLUXDB_INIT_*.
set -euo pipefail

: "${DOCKER_INFLUXDB_INIT_BUCKET_ID:?run by the influxdb:2 image after its setup}"
: "${INFLUXDB_DB:?the InfluxQL database name}"
: "${INFLUXDB_READ_USER:?Grafana's user}"
: "${INFLUXDB_READ_USER_PASSWORD:?Grafana's password}"

influx v1 dbrp create \
    --org "${DOCKER_INFLUXDB_INIT_ORG}" \
    --bucket-id "${DOCKER_INFLUXDB_INIT_BUCKET_ID}" \
    --db "${INFLUXDB_DB}" \
    --rp autogen \
    --default

influx v1 auth create \
    --org "${DOCKER_INFLUXDB_INIT_ORG}" \
    --read-bucket "${DOCKER_INFLUXDB_INIT_BUCKET_ID}" \
    --username "${INFLUXDB_READ_USER}" \
    --password "${INFLUXDB_READ_USER_PASSWORD}"
