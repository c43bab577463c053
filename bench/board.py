"""The alarm board's latency: latch-open publish -> the tile turning red in real Chromium, beside the MQTT alarm.

``python -m bench.board [--boards 1 20] [--samples 30] [--json]``

One process runs a real Mosquitto (its own port and password), the gateway with its web app (in this process's
event loop, as on a site), one simulated sensor per crib and a staff MQTT subscriber; Chromium (Debian's, driven by
Playwright) opens N boards, each logged in as its own staff account. Each sample opens a random crib's latch (grace
0: the alarm is raised at once) and measures, on the wall clock of this machine, from just before the sensor's
publish to

* MQTT: the ``raised`` alarm event arriving at the staff subscriber (in this process), and
* BOARD: each board's tile getting ``data-status="alarm"`` (a MutationObserver in the page, timed with
  ``performance.timeOrigin + performance.now()``).

Then it closes the latch and waits until every board shows it closed again. Both are measured in the same run, so
the board's figure stands beside the MQTT one on the same loaded machine. Figures: docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gpiozero.pins.mock import MockFactory
from playwright.async_api import Page, async_playwright

from bench.stats import Summary, summarize
from devtools.brokers import MosquittoBroker, free_port
from firmware_sim.sensor import SimulatedSensor
from gateway.app import Gateway
from gateway.mqtt.connection import new_client
from gateway.protocol import AlarmEventPayload, Topics, decode
from gateway.settings import Settings, settings_from_mapping
from gateway.store.accounts import AccountStore
from gateway.web.auth import hash_password

CHROMIUM = "/usr/bin/chromium"
CRIBS = 10
PASSWORD = secrets.token_urlsafe(12)
WAIT_S = 20.0
PROGRESS = asyncio.Event()
"""Set when a board or the staff subscriber saw something (created per run, in its event loop)."""

WATCH = """
() => {
  const seen = new Set();
  const look = () => {
    const now = performance.timeOrigin + performance.now();
    const alarming = new Set();
    for (const tile of document.querySelectorAll('[data-status="alarm"]')) alarming.add(tile.dataset.crib);
    for (const crib of alarming) if (!seen.has(crib)) window.cwAlarm(crib, now);
    seen.clear();
    for (const crib of alarming) seen.add(crib);
  };
  new MutationObserver(look).observe(document.getElementById('tiles'), { childList: true, subtree: true });
}
"""


def site(broker: Any, store: Path, port: int) -> Settings:
    data = {
        "site": {"id": "bench-board", "label": "Bench board", "demo": True},
        "mqtt": {"host": broker.host, "port": broker.port, "stats_interval_s": 5},
        "alarms": {"heartbeat_interval_s": 60, "offline_grace_s": 60},
        "store": {"path": str(store)},
        "web": {"host": "127.0.0.1", "port": port},
        # Every sample opens and closes a crib at once: not a flapping latch here (docs/alerting.md).
        "alerting": {"flapping": {"transitions": 1000, "window_s": 1}},
        "rooms": [
            {
                "id": "room",
                "label": "Room",
                "grace_s": 0,
                "cribs": [{"id": f"c-{i}", "label": f"Crib {i}", "sensor_id": f"s-{i}"} for i in range(CRIBS)],
            }
        ],
    }
    env = {"CRIBWATCH_MQTT_USERNAME": broker.username or "", "CRIBWATCH_MQTT_PASSWORD": broker.password or ""}
    return settings_from_mapping(data, env=env)


async def open_boards(browser: Any, base: str, boards: int, seen: dict[tuple[int, str], float]) -> list[Page]:
    pages = []
    for n in range(boards):
        context = await browser.new_context()
        page = await context.new_page()

        def record(crib: str, at_ms: float, n: int = n) -> None:
            seen.setdefault((n, crib), at_ms / 1000.0)
            PROGRESS.set()

        await page.expose_function("cwAlarm", record)
        await page.goto(f"{base}/login")
        await page.fill("input[name=username]", f"b{n:03d}")
        await page.fill("input[name=password]", PASSWORD)
        await page.click("button[type=submit]")
        await page.wait_for_selector("#connection.ok", timeout=WAIT_S * 1000)
        await page.wait_for_selector('[data-crib="c-0"]')
        await page.evaluate(WATCH)
        pages.append(page)
    return pages


async def run(boards: int, samples: int, seed: int) -> dict[str, Summary]:
    global PROGRESS  # noqa: PLW0603 - one per event loop (asyncio.run per board count)
    PROGRESS = asyncio.Event()
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="bench-board-") as tmp:
        users = {"bench": secrets.token_urlsafe(12)}
        with MosquittoBroker(Path(tmp) / "mqtt", users=users, extra_config="set_tcp_nodelay true\n") as mosquitto:
            broker = mosquitto.endpoint
            port = free_port()
            settings = site(broker, Path(tmp) / "store.sqlite3", port)
            accounts = AccountStore.open(settings.store_path, site_id=settings.site.id)
            hashed = hash_password(PASSWORD)
            for n in range(boards):
                accounts.add_user(f"b{n:03d}", "staff", hashed, time.time())
            accounts.close()
            topics = Topics(settings.site.id)
            gateway = Gateway(settings, pin_factory=MockFactory())
            raised: dict[str, float] = {}

            def on_message(message: Any) -> None:
                at = time.time()  # only the alarm topics are subscribed
                with contextlib.suppress(Exception):
                    event = decode(AlarmEventPayload, message.payload)
                    if event.event == "raised":
                        raised.setdefault(event.crib, at)
                        PROGRESS.set()

            gw_task = asyncio.create_task(gateway.run(), name="gateway")
            try:
                async with asyncio.timeout(WAIT_S):
                    await gateway.mqtt.connected.wait()
                return await _measure(broker, topics, on_message, raised, port, boards, samples, rng)
            finally:
                gw_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await gw_task


async def _measure(  # noqa: PLR0917 - the run's parts
    broker: Any,
    topics: Topics,
    on_message: Any,
    raised: dict[str, float],
    port: int,
    boards: int,
    samples: int,
    rng: random.Random,
) -> dict[str, Summary]:
    sensors = [SimulatedSensor(f"s-{i}", topics, broker, interval_s=60) for i in range(CRIBS)]
    seen: dict[tuple[int, str], float] = {}
    mqtt_ms: list[float] = []
    board_ms: list[float] = []
    last_ms: list[float] = []
    async with contextlib.AsyncExitStack() as stack:
        for sensor in sensors:
            await stack.enter_async_context(sensor)
        staff = await stack.enter_async_context(new_client(broker, identifier="bench-staff", on_message=on_message))
        await staff.subscribe(topics.alarm_filter, qos=1)
        pw = await stack.enter_async_context(async_playwright())
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        stack.push_async_callback(browser.close)
        pages = await open_boards(browser, f"http://127.0.0.1:{port}", boards, seen)
        for _ in range(samples):
            i = rng.randrange(CRIBS)
            crib = f"c-{i}"
            raised.pop(crib, None)
            for n in range(boards):
                seen.pop((n, crib), None)
            start = time.time()
            await sensors[i].open()
            async with asyncio.timeout(WAIT_S):
                while crib not in raised or any((n, crib) not in seen for n in range(boards)):
                    PROGRESS.clear()
                    await PROGRESS.wait()
            mqtt_ms.append((raised[crib] - start) * 1000)
            per_board = [(seen[(n, crib)] - start) * 1000 for n in range(boards)]
            board_ms.extend(per_board)
            last_ms.append(max(per_board))
            await sensors[i].close_latch()
            for page in pages:
                await page.wait_for_selector(f'[data-crib="{crib}"][data-status="closed"]', timeout=WAIT_S * 1000)
    return {"mqtt": summarize(mqtt_ms), "board": summarize(board_ms), "last_board": summarize(last_ms)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.board", description=__doc__.splitlines()[0])
    parser.add_argument("--boards", type=int, nargs="+", default=[1, 20], help="numbers of open boards to run")
    parser.add_argument("--samples", type=int, default=30, help="alarms per run")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="one JSON object per run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("cribwatch.alarm").setLevel(logging.ERROR)  # one line per alarm otherwise
    for boards in args.boards:
        figures = asyncio.run(run(boards, args.samples, args.seed))
        if args.json:
            out = {
                k: {f: round(getattr(v, f), 2) for f in ("n", "p50", "p90", "p99", "max")} for k, v in figures.items()
            }
            print(json.dumps({"boards": boards, **out}), flush=True)
            continue
        print(f"{boards} board(s), {args.samples} alarms:")
        for name, s in figures.items():
            print(
                f"  {name:<10} n={s.n:<4} p50 {s.p50:7.2f} ms  p90 {s.p90:7.2f} ms  p99 {s.p99:7.2f} ms  "
                f"max {s.max:7.2f} ms"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
