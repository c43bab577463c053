"""The pure domain: vocabulary, events, clock, timers and the per-crib monitor. No asyncio, no I/O."""
