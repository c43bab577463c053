"""``cribwatch incidents`` as a person runs it: a process, a site file, the store read-only."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.store import Store
from tests.store_helpers import SITE, T0, acked_event, raised_event, resolved_event

REPO = Path(__file__).resolve().parent.parent


def site_file(tmp_path: Path, store_path: Path) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(
        f"""
[site]
id = "{SITE}"
label = "Store CLI test site"

[store]
path = "{store_path}"

[[rooms]]
id = "room-1"
label = "Room 1"

  [[rooms.cribs]]
  id = "c-1"
  label = "Crib 1"
  sensor_id = "s-1"
""",
        encoding="utf-8",
    )
    return path


def incidents(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRIBWATCH_")}
    env["PYTHONPATH"] = str(REPO)
    env["TZ"] = "UTC"
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "incidents", "--config", str(config), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def filled(tmp_path: Path) -> Path:
    """A site file whose store holds four incidents: two rooms, one test alarm, one acknowledged and resolved."""
    store_path = tmp_path / "state" / "site.sqlite3"
    store = Store.open(store_path, site_id=SITE)
    store.begin_run(T0)
    first = raised_event("1-1", room_id="room-1", crib_id="c-1", at=T0)
    ack = acked_event(first, at=T0 + 12.5, by="staff-3", device="tablet-1")
    with store.transaction():
        store.record_alarm_event(first)
        store.record_alarm_event(ack)
        store.record_alarm_event(resolved_event(ack, at=T0 + 60))
        store.record_alarm_event(raised_event("1-2", room_id="room-1", crib_id="c-2", at=T0 + 3600, test=True))
        store.record_alarm_event(raised_event("1-3", room_id="room-2", crib_id="c-3", at=T0 + 7200))
        store.record_alarm_event(raised_event("1-4", room_id="room-2", crib_id="c-4", at=time.time() - 60))
    store.close()
    return site_file(tmp_path, store_path)


def test_the_table_lists_incidents_newest_first(filled: Path) -> None:
    result = incidents(filled)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["alarm", "kind", "priority"]
    assert [line.split()[0] for line in lines[1:]] == ["1-4", "1-3", "1-2", "1-1"]
    last = lines[-1]
    assert "2023-11-14T22:13:20+00:00" in last
    assert "12.5" in last
    assert "staff-3/tablet-1" in last
    assert "latch_closed" in last
    assert "TEST" in lines[3]
    assert "open" in lines[1]


def test_csv_with_filters(filled: Path) -> None:
    result = incidents(filled, "--csv", "--room", "room-1", "--no-tests")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["alarm_id"] for r in rows] == ["1-1"]
    row = rows[0]
    assert row["raised_at"] == "2023-11-14T22:13:20+00:00"
    assert row["acknowledged_at"] == "2023-11-14T22:13:32+00:00"
    assert row["resolved_at"] == "2023-11-14T22:14:20+00:00"
    assert (row["response_s"], row["acknowledged_by"], row["acknowledged_device"]) == ("12.5", "staff-3", "tablet-1")
    assert (row["crib_id"], row["crib_label"], row["test"]) == ("c-1", "Crib c-1", "no")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--crib", "c-3"], ["1-3"]),
        (["--since", "1d"], ["1-4"]),
        (["--since", "2023-11-14T23:00", "--until", "2023-11-15T01:00"], ["1-3", "1-2"]),
        (["--until", "2023-11-15"], ["1-2", "1-1"]),  # a date: local midnight
        (["--until", "2023-11-14T22:14:00+00:00"], ["1-1"]),
        (["--limit", "2"], ["1-4", "1-3"]),
    ],
)
def test_filters(filled: Path, args: list[str], expected: list[str]) -> None:
    result = incidents(filled, "--csv", *args)
    assert result.returncode == 0, result.stderr
    assert [r["alarm_id"] for r in csv.DictReader(io.StringIO(result.stdout))] == expected


def test_a_missing_store_is_a_clear_message(tmp_path: Path) -> None:
    store_path = tmp_path / "never" / "site.sqlite3"
    result = incidents(site_file(tmp_path, store_path))
    assert result.returncode == 1
    assert str(store_path) in result.stderr
    assert "no such store" in result.stderr
    assert "Traceback" not in result.stderr
    assert not store_path.parent.exists()  # read-only: nothing created


def test_a_bad_when_is_a_usage_error(filled: Path) -> None:
    result = incidents(filled, "--since", "last tuesday")
    assert result.returncode == 2
    assert "7d" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_empty_log_says_so(tmp_path: Path) -> None:
    store_path = tmp_path / "site.sqlite3"
    Store.open(store_path, site_id=SITE).close()
    result = incidents(site_file(tmp_path, store_path))
    assert result.returncode == 0, result.stderr
    assert "no incidents" in result.stdout
