"""``python -m firmware_sim``: the sensor simulator without the gateway's main CLI."""

from firmware_sim.cli import run

raise SystemExit(run())
