"""The rooms of the code and the way their imports point (docs/architecture.md), checked on the source.

Each rule is read off the import statements of every module (including imports inside functions), so a
shortcut across layers fails here before it grows roots.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("gateway", "alerts", "firmware_sim", "devtools", "bench")


def modules() -> dict[str, set[str]]:
    """module name -> every module it imports (absolute names)."""
    found: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            rel = path.relative_to(REPO).with_suffix("")
            name = ".".join(p for p in rel.parts if p != "__init__")
            imports: set[str] = set()
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    imports.update(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    imports.add(node.module)
                    imports.update(f"{node.module}.{alias.name}" for alias in node.names)
            found[name] = imports
    return found


MODULES = modules()


def under(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def offenders(importers: tuple[str, ...], forbidden: tuple[str, ...], *, allow: tuple[str, ...] = ()) -> list[str]:
    return sorted(
        f"{mod} imports {imp}"
        for mod, imps in MODULES.items()
        if under(mod, *importers) and not under(mod, *allow)
        for imp in imps
        if under(imp, *forbidden)
    )


def test_the_packages_are_found() -> None:
    assert "gateway.domain.monitor" in MODULES
    assert "gateway.protocol.payloads" in MODULES
    assert "alerts.channels.buzzer" in MODULES


def test_domain_is_pure() -> None:
    """No asyncio, no broker, no pins, no files: the domain imports only itself and the settings tree."""
    io = ("asyncio", "aiomqtt", "paho", "gpiozero", "socket", "sqlite3", "time", "gateway.protocol", "gateway.mqtt")
    io += ("gateway.gpio", "gateway.app", "alerts", "firmware_sim", "devtools")
    assert offenders(("gateway.domain",), io, allow=("gateway.domain.clock",)) == []


def test_protocol_imports_only_the_domain() -> None:
    outside = ("gateway.mqtt", "gateway.gpio", "gateway.app", "gateway.settings", "alerts", "firmware_sim", "devtools")
    assert offenders(("gateway.protocol",), (*outside, "aiomqtt", "paho", "asyncio")) == []


@pytest.mark.parametrize("library", ["paho", "aiomqtt"])
def test_only_the_mqtt_package_speaks_mqtt(library: str) -> None:
    """The gateway reaches paho and aiomqtt through gateway.mqtt alone (tools and the simulator may too)."""
    assert offenders(("gateway", "alerts"), (library,), allow=("gateway.mqtt",)) == []


def test_only_the_gpio_adapters_touch_pins() -> None:
    gpio = ("gateway.gpio", "alerts.channels.buzzer", "alerts.channels.siren")
    assert offenders(("gateway", "alerts"), ("gpiozero",), allow=gpio) == []


def test_the_gateway_never_imports_the_simulator_or_the_tools() -> None:
    """Except the command line, which hands `cribwatch sim` and `cribwatch demo` over to them."""
    assert offenders(("gateway", "alerts"), ("firmware_sim", "devtools", "bench"), allow=("gateway.cli",)) == []


SHARED_BY_CHANNELS = ("alerts.channels.base", "alerts.channels.payloads")
"""The machinery every channel of notices shares (worker thread, queue, retries, records; a notice's JSON
payload): not a channel."""
CHANNEL_ROUTER = "alerts.channels.router"
"""The router builds the channels of notices from the settings: it alone imports them."""


def test_channels_do_not_import_each_other_or_the_composition_root() -> None:
    assert offenders(("alerts",), ("gateway.app", "gateway.cli", "gateway.mqtt.link")) == []
    for mod, imps in MODULES.items():
        if under(mod, "alerts.channels") and mod != CHANNEL_ROUTER:
            others = [i for i in imps if under(i, "alerts.channels") and not under(i, mod, *SHARED_BY_CHANNELS)]
            assert others == [], f"{mod} imports {others}"


def test_only_the_store_touches_sqlite() -> None:
    """The gateway's record has one door: gateway.store (docs/store.md)."""
    assert offenders(("gateway", "alerts"), ("sqlite3",), allow=("gateway.store",)) == []


def test_the_store_is_below_the_adapters() -> None:
    """The store is plain synchronous code on the domain: no event loop, no broker, no channels, no wiring."""
    forbidden = ("asyncio", "aiomqtt", "paho", "gateway.mqtt", "gateway.app", "gateway.cli", "alerts")
    assert offenders(("gateway.store",), forbidden) == []
    assert "gateway.store.store" in MODULES


@pytest.mark.parametrize("library", ["influxdb_client", "urllib3"])
def test_only_the_influx_client_speaks_to_influxdb(library: str) -> None:
    """gateway/influx/client.py is the one door to InfluxDB; the schema and the feed stay pure."""
    assert offenders(("gateway", "alerts"), (library,), allow=("gateway.influx.client",)) == []
    io = ("asyncio", "socket", "sqlite3", "time", "gateway.store", "gateway.mqtt", "alerts")
    assert offenders(("gateway.influx.schema", "gateway.influx.feed"), io) == []


def test_the_reports_are_pure() -> None:
    """gateway/reports/ (the incident log's statistics and charts) computes on plain data: no files, no store, no
    clock, no event loop, no web framework; the web app and the store hand it the facts."""
    io = ("asyncio", "socket", "sqlite3", "time", "gateway.store", "gateway.web", "gateway.mqtt", "gateway.app")
    io += ("fastapi", "starlette", "alerts")
    assert offenders(("gateway.reports",), io) == []
    assert "gateway.reports.response" in MODULES
