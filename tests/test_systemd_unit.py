"""The shipped systemd unit (deploy/systemd/cribwatch.service): ``systemd-analyze verify`` (Debian's systemd;
`make system-deps` installs it) finds nothing to say, ``systemd-analyze security`` rates it well exposed at most
"OK", and it keeps what the gateway needs: the notify protocol and watchdog of gateway/sdnotify.py, restarts,
GPIO for a non-root user, and a state directory it may write under ProtectSystem=strict.

verify needs ExecStart's program to exist: the copy it checks runs this checkout's ``cribwatch`` instead of
/opt/cribwatch/venv's, and is otherwise the shipped file byte for byte.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from gateway.settings import DEFAULT_STATE_DIR, ENV_STATE_DIR

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "deploy" / "systemd" / "cribwatch.service"
INSTALLED = "/opt/cribwatch/venv/bin/cribwatch"


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.fail("systemd-analyze is not installed: run `make system-deps` (Debian's systemd)", pytrace=False)
    probe = subprocess.run([found, "--version"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"systemd-analyze cannot run in this container: {probe.stderr.strip()}")
    return found


def settings(text: str) -> dict[str, dict[str, list[str]]]:
    """section -> key -> every value given (systemd keys repeat: Environment, DeviceAllow)."""
    out: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out[section][key].append(value)
    return out


def verify(analyze: str, unit_text: str, where: Path) -> subprocess.CompletedProcess[str]:
    cribwatch = Path(sys.executable).parent / "cribwatch"
    assert cribwatch.exists(), "the checkout's cribwatch (make venv)"
    assert INSTALLED in unit_text
    path = where / "cribwatch.service"
    path.write_text(unit_text.replace(INSTALLED, str(cribwatch)), encoding="utf-8")
    return subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True, check=False, cwd=where)


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = systemd_analyze()
    result = verify(analyze, UNIT.read_text(encoding="utf-8"), tmp_path)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")

    # ... and verify does speak up: a misspelt key and a bad value in a copy.
    broken = UNIT.read_text(encoding="utf-8").replace("WatchdogSec=30", "WatchdogSecs=30\nRestart=sometimes")
    result = verify(analyze, broken, tmp_path)
    assert "Unknown key 'WatchdogSecs'" in result.stderr
    assert "restart specifier" in result.stderr


def test_the_unit_is_well_confined(tmp_path: Path) -> None:
    analyze = systemd_analyze()
    path = tmp_path / "cribwatch.service"
    shutil.copy(UNIT, path)
    result = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if "--offline" in result.stderr and "unrecognized" in result.stderr:
        pytest.skip("this systemd-analyze has no --offline security check (systemd < 250)")
    match = re.search(r"Overall exposure level for cribwatch\.service: (\d+\.\d+) (\w+)", result.stdout)
    assert match is not None, result.stdout + result.stderr
    assert float(match.group(1)) <= 3.0, f"exposure {match.group(1)} {match.group(2)}"


def test_the_unit_keeps_what_the_gateway_needs() -> None:
    unit = settings(UNIT.read_text(encoding="utf-8"))
    service = {key: values[-1] for key, values in unit["Service"].items()}
    assert service["Type"] == "notify", "READY=1 from gateway/sdnotify.py"
    assert int(service["WatchdogSec"]) >= 10, "WATCHDOG=1 every half period from the event loop"
    assert service["Restart"] == "always"
    assert unit["Unit"]["StartLimitIntervalSec"] == ["0"], "never give up restarting"
    assert service["User"] not in {"root", "0"}
    assert "gpio" in service["SupplementaryGroups"].split()
    assert service["ExecStart"].split()[:2] == [INSTALLED, "gateway"]
    for key in ("NoNewPrivileges", "PrivateTmp", "ProtectHome"):
        assert service[key] == "yes", key
    assert service["ProtectSystem"] == "strict"
    # Under ProtectSystem=strict the gateway writes only its state directory: the store lives there.
    environment = dict(pair.split("=", 1) for line in unit["Service"]["Environment"] for pair in line.split())
    assert environment[ENV_STATE_DIR] == DEFAULT_STATE_DIR
    assert service["ReadWritePaths"] == DEFAULT_STATE_DIR
    assert f"/var/lib/{service['StateDirectory']}" == DEFAULT_STATE_DIR
    assert service["WorkingDirectory"] == DEFAULT_STATE_DIR, "lgpio makes its pipes in the working directory"
    # GPIO devices reachable, nothing else.
    assert service["DevicePolicy"] == "closed"
    assert "char-gpiochip rw" in unit["Service"]["DeviceAllow"]
    assert "PrivateDevices" not in service, "it would hide /dev/gpiochip*"
