# syntax=docker/dockerfile:1
# The cribwatch gateway (and the sensor simulator, `cribwatch sim`) for a site's Raspberry Pi.
#
#   docker compose build                      # the Pi builds its own (arm64), or on another machine:
#   docker buildx build --platform linux/arm64,linux/amd64 -t cribwatch .
#
# arm64 images get lgpio, the pin library gpiozero uses on Raspberry Pi OS Bookworm (/dev/gpiochip*); amd64
# images have no pin library (a site with wired cribs, a buzzer or an LED refuses to start there, saying so):
# they are for the simulator, a test bench with --simulate-pins, and a gateway of wireless sensors only.
# Runs as the non-root user `cribwatch`; docker-compose.yml adds the host's gpio group (GPIO_GID in .env).
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CRIBWATCH_STATE_DIR=/var/lib/cribwatch \
    CRIBWATCH_HEARTBEAT_FILE=/run/cribwatch/heartbeat \
    LG_WD=/var/lib/cribwatch

ARG TARGETARCH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway gateway
COPY alerts alerts
COPY firmware_sim firmware_sim
COPY devtools devtools
COPY bench bench
RUN if [ "$TARGETARCH" = "arm64" ]; then pip install '.[pi]'; else pip install .; fi \
    && rm -rf /src

# The gateway's own user; its store and the heartbeat file are the only places it writes.
# Fixed ids, so that files made for it on the host (site/mqtt-credentials.toml) can be given to it: uid 10001.
RUN groupadd --system --gid 10001 cribwatch \
    && useradd --system --uid 10001 --gid cribwatch --home-dir /var/lib/cribwatch --shell /usr/sbin/nologin cribwatch \
    && install -d -o cribwatch -g cribwatch -m 0750 /var/lib/cribwatch /run/cribwatch \
    && install -d -m 0755 /etc/cribwatch
USER cribwatch
WORKDIR /var/lib/cribwatch
VOLUME ["/var/lib/cribwatch"]

# The gateway touches CRIBWATCH_HEARTBEAT_FILE every 10 s from its event loop (gateway/sdnotify.py): older than
# 45 s, it is hung (Docker shows it unhealthy). Docker restarts only a process that exits: CRIBWATCH_LOOP_WATCHDOG_S
# (docker-compose.yml: 60) makes the gateway end itself when its event loop hangs that long.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=2 \
    CMD ["python", "-c", "import os, sys, time; sys.exit(time.time() - os.stat(os.environ['CRIBWATCH_HEARTBEAT_FILE']).st_mtime > 45)"]

ENTRYPOINT ["cribwatch"]
CMD ["gateway", "--config", "/etc/cribwatch/site.toml"]
