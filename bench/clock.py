"""The one clock of the benchmarks' processes: timestamps taken in one process are compared with another's.

:func:`now_ns` is ``clock_gettime(CLOCK_MONOTONIC)`` in nanoseconds. On Linux CLOCK_MONOTONIC counts from
boot and is the same clock for every process on the machine (it is not per process, and NTP cannot step it),
so a publish stamped in the sensor process and its arrival stamped in the staff process can be subtracted.
``time.perf_counter`` is the same clock on Linux in CPython 3.11, but Python documents its reference point
as undefined (only differences within one process are meaningful), so the benchmarks name the clock
they rely on instead. :func:`check_shared` is the benchmark's check that a child's clock is this clock.
"""

from __future__ import annotations

import time

CLOCK = time.CLOCK_MONOTONIC


def now_ns() -> int:
    """CLOCK_MONOTONIC in nanoseconds: system-wide, comparable between processes on this machine."""
    return time.clock_gettime_ns(CLOCK)


def check_shared(child_ns: int, before_ns: int, after_ns: int, who: str) -> None:
    """A stamp that a child took between ``before_ns`` and ``after_ns`` of ours must lie between them.

    A per-process clock (one that starts at 0 in every process) fails this by a wide margin.
    """
    if not before_ns <= child_ns <= after_ns:
        msg = (
            f"{who}'s clock is not this process's: it said {child_ns} ns, taken between {before_ns} and "
            f"{after_ns} ns here; latencies across processes would be meaningless"
        )
        raise RuntimeError(msg)
