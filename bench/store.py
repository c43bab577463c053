"""The incident log with a year of incidents: how fast the manager's pages answer with 100,000 incidents.

``python -m bench.store [--incidents 100000] [--samples 200] [--store PATH] [--json]``

Fills a real store file (SQLite, WAL, ``synchronous=FULL``, as on a site) with ``--incidents`` incidents over the
last 365 days, each with its whole timeline as the gateway writes it (raised, notices of the escalation chain with
two delivery attempts each, acknowledgements, reminders, resolved), plus sensor offline periods; then serves the web
app (uvicorn, on a port of this machine) and times, from the request's first byte out to the last byte in (httpx,
one manager's session, requests one at a time, the routes interleaved round by round):

* ``baseline``: the welcome page: the same login check and template rendering without the store (the floor);
* ``first``: the incident log's first page (50 newest, the total count, the filters' choices);
* ``filtered``: one room, one kind, tests hidden, one month;
* ``rare``: a kind that is 0.2 % of the log (its index walks far less than the newest-first scan would);
* ``deep``: a page 90,000 incidents deep (a keyset cursor: no OFFSET);
* ``timeline``: one incident's page with its whole timeline;
* ``api``: the JSON of the first page;
* ``stats``: the response times of 13 weeks, computed afresh (every incident's first acknowledgement, medians,
  p90s, three SVG charts, nuisance per sensor): each request a range that ends one day earlier than the last, so the
  app's cache of figures never has it;
* ``stats_warm``: the default 13 weeks asked again while the record stands still (the app keeps the figures of the
  last ranges it computed until the record moves: a page, then its CSV, then the report);
* ``stats_year``: per month over a whole year, computed afresh (fewer samples: ``--samples`` / 10).

Percentiles by nearest rank (bench/stats.py). The goal (issue 12): the log's pages under 200 ms. Figures:
docs/performance.md#the-incident-log-with-a-year-of-incidents. ``--store PATH`` keeps the filled file to reuse.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import random
import re
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from gpiozero.pins.mock import MockFactory

from bench.stats import Summary, summarize
from devtools.brokers import free_port
from gateway.app import Gateway
from gateway.domain.events import AlarmEvent, Trigger
from gateway.domain.vocab import PRIORITY_OF, AlarmEventType, AlarmKind, Resolution
from gateway.settings import Settings, settings_from_mapping
from gateway.store.accounts import AccountStore
from gateway.store.incident_log import encode_cursor
from gateway.store.store import DeliveryRow, Store
from gateway.web.app import create_app, wrap
from gateway.web.auth import hash_password
from gateway.web.server import GatewayAdapter

log = logging.getLogger("bench.store")
SITE = "bench-store"
ROOMS = [(f"r{i}", f"Groep {i}") for i in range(1, 7)]
CRIBS_PER_ROOM = 8
DAY = 86_400.0
GOAL_MS = 200.0
GOAL_ROUTES = frozenset({"first", "filtered", "rare", "deep", "timeline", "api"})
"""The incident log's pages (the goal of issue 12); the statistics are shown beside them, without a goal."""
KIND_WEIGHTS = [
    (AlarmKind.CRIB_OPEN, 0.868),
    (AlarmKind.SENSOR_OFFLINE, 0.08),
    (AlarmKind.BATTERY_LOW, 0.05),
    (AlarmKind.GATEWAY_FAULT, 0.002),
]


def site(store: Path, port: int) -> Settings:
    return settings_from_mapping(
        {
            "site": {"id": SITE, "label": "Bench store", "demo": True},
            "store": {"path": str(store)},
            "web": {"host": "127.0.0.1", "port": port},
            "rooms": [
                {
                    "id": room,
                    "label": label,
                    "cribs": [
                        {"id": f"{room}-c{j}", "label": f"Bedje {j}", "sensor_id": f"s-{room}-{j}"}
                        for j in range(1, CRIBS_PER_ROOM + 1)
                    ],
                }
                for room, label in ROOMS
            ],
        },
        env={},
    )


def fill(path: Path, count: int, *, end: float, seed: int) -> dict[str, Any]:
    """``count`` incidents over the 365 days before ``end``, each with its timeline and deliveries, in batches of
    2,000 per transaction. Returns what the measurements need (a deep cursor, an incident id)."""
    rng = random.Random(seed)
    store = Store.open(path, site_id=SITE)
    kinds, weights = zip(*KIND_WEIGHTS, strict=True)
    times = sorted(rng.uniform(end - 365 * DAY, end - 60) for _ in range(count))
    seq = 0
    sample_id = ""
    try:
        for start in range(0, count, 2000):
            with store.transaction():
                for n in range(start, min(count, start + 2000)):
                    at = times[n]
                    room, room_label = ROOMS[rng.randrange(len(ROOMS))]
                    j = rng.randrange(1, CRIBS_PER_ROOM + 1)
                    kind = rng.choices(kinds, weights)[0]
                    test = rng.random() < 0.03
                    alarm_id = f"{1 + n // 5000}-{n % 5000 + 1}"
                    seq += 1
                    raised = AlarmEvent(
                        seq=seq, type=AlarmEventType.RAISED, alarm_id=alarm_id, kind=kind, priority=PRIORITY_OF[kind],
                        site_id=SITE, room_id=room, crib_id=f"{room}-c{j}", room_label=room_label,
                        crib_label=f"Bedje {j}", at=at, raised_at=at, run=1 + n // 5000,
                        trigger=Trigger(sensor_id=f"s-{room}-{j}", boot=1, seq=n),
                        latch_opened_at=at - 30 if kind is AlarmKind.CRIB_OPEN else None, test=test,
                        flaps=rng.choice([0] * 30 + [2, 4, 7]),
                    )  # fmt: skip
                    store.record_alarm_event(raised)
                    notices = 0

                    def notice(when: float, what: str, step: int, alarm_id: str = alarm_id, test: bool = test) -> None:
                        nonlocal notices
                        notices += 1
                        detail = {"kind": what, "step": step, "groups": ["room"], "recipients": 2}
                        store.record_step(alarm_id, 1, notices, when, step, {**detail, "channels": ["mqtt"]})
                        for member in ("staff-1", "staff-2"):
                            store.record_delivery(
                                DeliveryRow(
                                    when + 0.004, "mqtt", "room", member, f"notify/{member}", f"{alarm_id}/{notices}",
                                    alarm_id, what, 1, "delivered", 3.5, None, test,
                                )
                            )  # fmt: skip

                    notice(at, "alarm", 0)
                    quick = rng.random() < 0.05
                    ack = None if quick else rng.lognormvariate(math.log(25), 0.8)
                    resolve = rng.uniform(0.5, 5) if quick else (ack or 0) + rng.lognormvariate(math.log(60), 1.0)
                    if ack is not None and ack > 90:
                        notice(at + 90, "escalation", 1)
                    if ack is not None:
                        seq += 1
                        store.record_alarm_event(
                            AlarmEvent(
                                **{**_fields(raised), "seq": seq, "type": AlarmEventType.ACKNOWLEDGED, "at": at + ack,
                                   "by": f"staff-{rng.randrange(1, 30)}", "device": f"pager-{rng.randrange(1, 12)}",
                                   "trigger": None, "acknowledged_at": at + ack}
                            )
                        )  # fmt: skip
                    if n < count - 20:  # the last few stay open
                        seq += 1
                        store.record_alarm_event(
                            AlarmEvent(
                                **{**_fields(raised), "seq": seq, "type": AlarmEventType.RESOLVED, "at": at + resolve,
                                   "trigger": None, "resolution": Resolution.LATCH_CLOSED}
                            )
                        )  # fmt: skip
                        notice(at + resolve, "resolved", 0)
                    if rng.random() < 0.03:
                        store.sensor_event(at - 5, f"s-{room}-{j}", f"{room}-c{j}", "offline")
                    if n == count // 2:
                        sample_id = alarm_id
        deep = store.connection.execute(
            "SELECT raised_at, alarm_id FROM incidents ORDER BY raised_at DESC, alarm_id DESC LIMIT 1 OFFSET ?",
            (min(90_000, count * 9 // 10),),
        ).fetchone()
        rows = {
            t: store.connection.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]  # noqa: S608 - fixed names
            for t in ("incidents", "timeline", "deliveries", "sensor_events")
        }
    finally:
        store.close()
    return {"deep_cursor": encode_cursor(deep[0], deep[1]), "sample_id": sample_id, "rows": rows}


def _fields(ev: AlarmEvent) -> dict[str, Any]:
    return {name: getattr(ev, name) for name in AlarmEvent.__dataclass_fields__}


def _serve(settings: Settings, password: str) -> tuple[uvicorn.Server, threading.Thread]:
    accounts = AccountStore.open(settings.store_path, site_id=SITE)
    if accounts.user("mgr1") is None:
        accounts.add_user("mgr1", "manager", hash_password(password), time.time())
    else:
        accounts.set_password_hash("mgr1", hash_password(password))
    gateway = Gateway(settings, pin_factory=MockFactory())  # not started: the pages read the store, not the core
    app = create_app(settings, GatewayAdapter(gateway), accounts, gateway.web_changes)
    assert settings.web is not None
    config = uvicorn.Config(
        wrap(app), host="127.0.0.1", port=settings.web.port, log_config=None, access_log=False, lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), name="bench-web", daemon=True)
    thread.start()
    return server, thread


def _login(client: httpx.Client, password: str) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            page = client.get("/login")
            break
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token is not None
    answer = client.post("/login", data={"username": "mgr1", "password": password, "csrf": token.group(1)})
    assert answer.status_code == 303, answer.text


def measure(
    base: str, password: str, routes: dict[str, str | Callable[[int], str]], samples: int
) -> dict[str, Summary]:
    """Each route's answer times in ms, round-robin (every route once per round, in a shuffled order). A route given
    as a function gets the round's number (a new range each time)."""

    def path_of(name: str, round_: int) -> str:
        route = routes[name]
        return route if isinstance(route, str) else route(round_)

    times: dict[str, list[float]] = {name: [] for name in routes}
    rng = random.Random(7)
    with httpx.Client(base_url=base, timeout=30, follow_redirects=False) as client:
        _login(client, password)
        for name in routes:  # warm up: the first answer of each also checks it works
            path = path_of(name, -1)
            answer = client.get(path)
            if answer.status_code != 200:
                raise RuntimeError(f"{name}: {path} answered {answer.status_code}: {answer.text[:200]}")
        for round_ in range(samples):
            order = list(routes)
            rng.shuffle(order)
            for name in order:
                if name == "stats_year" and round_ % 10:
                    continue
                began = time.perf_counter()
                answer = client.get(path_of(name, round_))
                elapsed = (time.perf_counter() - began) * 1000
                if answer.status_code != 200:
                    raise RuntimeError(f"{name} answered {answer.status_code}")
                times[name].append(elapsed)
    return {name: summarize(values) for name, values in times.items()}


def run(incidents: int, samples: int, store_path: Path | None, seed: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="cribwatch-bench-store-"))
    path = store_path or workdir / "site.sqlite3"
    port = free_port()
    settings = site(path, port)
    end = time.time()
    info_file = Path(f"{path}.bench.json")
    filled_s = 0.0
    if path.exists() and info_file.exists():
        info = json.loads(info_file.read_text())
        log.info("reusing %s (%s incidents)", path, info["rows"]["incidents"])
    else:
        began = time.monotonic()
        info = fill(path, incidents, end=end, seed=seed)
        filled_s = time.monotonic() - began
        info_file.write_text(json.dumps(info))
    password = secrets.token_urlsafe(12)
    server, thread = _serve(settings, password)

    def day(ago: float) -> str:
        return time.strftime("%Y-%m-%d", time.localtime(end - ago * DAY))

    month_end, month_start = day(30), day(60)
    routes: dict[str, str | Callable[[int], str]] = {
        "baseline": "/welcome",
        "first": "/incidents",
        "filtered": f"/incidents?room=r3&kind=crib_open&tests=hide&since={month_start}&until={month_end}",
        "rare": "/incidents?kind=gateway_fault",
        "deep": f"/incidents?older={info['deep_cursor']}",
        "timeline": f"/incidents/{info['sample_id']}",
        "api": "/api/incidents",
        "stats": lambda n: f"/incidents/stats?since={day(n % 200 + 91)}&until={day(n % 200)}",
        "stats_warm": "/incidents/stats",
        "stats_year": lambda n: f"/incidents/stats?by=month&since={day(n + 366)}&until={day(n + 2)}",
    }
    try:
        figures = measure(f"http://127.0.0.1:{port}", password, routes, samples)
    finally:
        server.should_exit = True
        thread.join(timeout=5)
    size = sum(os.path.getsize(p) for p in (str(path), f"{path}-wal") if os.path.exists(p))
    return {
        "incidents": info["rows"]["incidents"],
        "rows": info["rows"],
        "filled_s": filled_s,
        "store_mb": size / 1e6,
        "routes": {k: v if isinstance(v, str) else v(0) for k, v in routes.items()},
        "figures": figures,
        "load": os.getloadavg(),
    }


def to_table(result: dict[str, Any]) -> str:
    figures: dict[str, Summary] = result["figures"]
    base = figures["baseline"]
    lines = [
        f"store: {result['incidents']:,} incidents, {result['rows']['timeline']:,} timeline rows, "
        f"{result['rows']['deliveries']:,} deliveries, {result['rows']['sensor_events']:,} sensor events; "
        f"{result['store_mb']:.0f} MB" + (f"; filled in {result['filled_s']:.0f} s" if result["filled_s"] else ""),
        f"{'route':<11} {'n':>4} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8} {'p50 - floor':>12}  goal",
    ]
    for name, s in figures.items():
        goal = "" if name not in GOAL_ROUTES else ("ok" if s.p99 < GOAL_MS else "OVER 200 ms at p99")
        lines.append(
            f"{name:<11} {s.n:>4} {s.p50:>8.1f} {s.p90:>8.1f} {s.p99:>8.1f} {s.max:>8.1f} {s.p50 - base.p50:>12.1f}"
            f"  {goal}"
        )
    lines.append("load average before the end: " + " ".join(f"{x:.2f}" for x in result["load"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.store", description=__doc__.splitlines()[0])
    parser.add_argument("--incidents", type=int, default=100_000, help="incidents in the store (100000)")
    parser.add_argument("--samples", type=int, default=200, help="requests per route (200; stats_year a tenth)")
    parser.add_argument("--store", type=Path, help="fill this file once and reuse it (default: a temporary file)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON object, nothing else")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.json else logging.INFO, format="%(message)s")
    for name in ("cribwatch", "httpx", "uvicorn", "uvicorn.error"):
        logging.getLogger(name).setLevel(logging.WARNING)
    result = run(args.incidents, args.samples, args.store, args.seed)
    if args.json:
        out = {**result, "figures": {k: _summary(v) for k, v in result["figures"].items()}}
        json.dump(out, sys.stdout)
        print()
    else:
        print(to_table(result))
    over = [n for n, s in result["figures"].items() if n in GOAL_ROUTES and s.p99 >= GOAL_MS]
    return 1 if over else 0


def _summary(s: Summary) -> dict[str, float]:
    return {"n": s.n, "mean": s.mean, "min": s.min, "p50": s.p50, "p90": s.p90, "p99": s.p99, "max": s.max}


if __name__ == "__main__":
    raise SystemExit(main())
