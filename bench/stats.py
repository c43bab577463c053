"""Percentiles and summaries of latency samples: small, exact and without dependencies.

Percentiles use the nearest-rank method: the p-th percentile of n sorted samples is the sample of rank
``ceil(p / 100 * n)`` (1-based), so it is always one of the measured values, never an interpolation.
With 1,000 samples, p99 is the 990th smallest and p50 the 500th.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["Summary", "percentile", "ratio", "summarize"]


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile (0 < p <= 100) of already sorted values.

    ``p = 0`` gives the smallest value. Raises ValueError on an empty sequence or a ``p`` out of range.
    """
    if not sorted_values:
        msg = "percentile of no values"
        raise ValueError(msg)
    if not 0 <= p <= 100:
        msg = f"percentile must be within 0..100, got {p}"
        raise ValueError(msg)
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass(frozen=True, slots=True)
class Summary:
    """Distribution of one set of latency samples, in the unit they were given in (milliseconds here)."""

    n: int
    mean: float
    min: float
    p50: float
    p90: float
    p99: float
    max: float


def summarize(values: Iterable[float]) -> Summary:
    """n, mean, min, p50, p90, p99 (nearest rank) and max of ``values``; ValueError if there are none."""
    ordered = sorted(values)
    if not ordered:
        msg = "no samples to summarize"
        raise ValueError(msg)
    return Summary(
        n=len(ordered),
        mean=math.fsum(ordered) / len(ordered),
        min=ordered[0],
        p50=percentile(ordered, 50),
        p90=percentile(ordered, 90),
        p99=percentile(ordered, 99),
        max=ordered[-1],
    )


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``; ``inf`` for a zero denominator (a floor of 0 ms cannot be measured)."""
    if denominator == 0:
        return math.inf
    return numerator / denominator
