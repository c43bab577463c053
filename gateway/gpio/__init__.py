"""Wired inputs on the gateway's GPIO header (gpiozero)."""
