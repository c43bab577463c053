"""Charts as inline SVG markup, drawn on the server (no JavaScript, nothing for the CSP to refuse): pure functions
of the figures, every label escaped."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape


@dataclass(frozen=True, slots=True)
class Bar:
    """One group of the chart: its label, its median and p90 (seconds; None: nothing to show) and its count."""

    label: str
    median_s: float | None
    p90_s: float | None
    n: int


def duration(seconds: float | None) -> str:
    """``42 s``, ``2.5 min``, ``1.2 h`` (``-`` for None)."""
    if seconds is None:
        return "-"
    if seconds < 100:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    if seconds < 6000:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


AXIS_TOPS = (4, 8, 20, 40, 60, 120, 240, 600, 1200, 2400, 3600, 7200, 14400, 28800, 57600, 86400)
"""Tops of the y axis (seconds): a quarter of each is a round figure (1 s, 5 s, 15 s, 30 s, 1 min, 5 min, ...)."""


def _nice_top(value: float) -> float:
    """The axis' top: the smallest of :data:`AXIS_TOPS` at least ``value`` (whole days beyond them)."""
    for top in AXIS_TOPS:
        if value <= top:
            return float(top)
    return 86400.0 * -(-value // 86400)


def tick(seconds: float) -> str:
    """An axis label: ``15 s``, ``2 min``, ``1.5 h`` (no ``.0``)."""
    if seconds < 60:
        return f"{seconds:g} s"
    if seconds < 3600:
        return f"{seconds / 60:g} min"
    return f"{seconds / 3600:g} h"


def bar_chart(
    bars: Sequence[Bar], *, title: str, median_label: str, p90_label: str, count_label: str, width: int = 720
) -> str:
    """A bar per group (its median) with a thin bar beside it (its p90), the count under each label, a y axis in
    seconds. Returns ``<svg ...>`` markup with a ``<title>`` and one ``<desc>`` line per group for screen readers."""
    height, left, right, top, bottom = 260, 64, 16, 28, 58
    plot_w, plot_h = width - left - right, height - top - bottom
    highest = max([b.p90_s or 0.0 for b in bars] + [b.median_s or 0.0 for b in bars] + [0.0])
    axis_top = _nice_top(highest)
    slot = plot_w / max(1, len(bars))
    bar_w = max(3.0, min(28.0, slot * 0.35))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]
    for b in bars:
        parts.append(
            f"<desc>{escape(b.label)}: {escape(median_label)} {escape(duration(b.median_s))}, "
            f"{escape(p90_label)} {escape(duration(b.p90_s))}, {escape(count_label)} {b.n}</desc>"
        )
    for i in range(5):
        level = axis_top * i / 4
        y = top + plot_h - plot_h * i / 4
        parts.append(f'<line class="grid" x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}"/>')
        parts.append(
            f'<text class="axis" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(tick(level))}</text>'
        )
    for i, b in enumerate(bars):
        x = left + slot * i + slot / 2
        for value, cls, dx in ((b.median_s, "median", -bar_w), (b.p90_s, "p90", 0.0)):
            if value is None:
                continue
            h = plot_h * min(value, axis_top) / axis_top
            parts.append(
                f'<rect class="{cls}" x="{x + dx:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w:.1f}" height="{h:.1f}">'
                f"<title>{escape(b.label)} {escape(median_label if cls == 'median' else p90_label)}: "
                f"{escape(duration(value))}</title></rect>"
            )
        parts.append(
            f'<text class="label" x="{x:.1f}" y="{height - bottom + 18}" text-anchor="middle">{escape(b.label)}</text>'
        )
        parts.append(f'<text class="count" x="{x:.1f}" y="{height - bottom + 36}" text-anchor="middle">n={b.n}</text>')
    legend_y = 16
    parts.append(f'<rect class="median" x="{left}" y="{legend_y - 10}" width="12" height="12"/>')
    parts.append(f'<text class="legend" x="{left + 16}" y="{legend_y}">{escape(median_label)}</text>')
    parts.append(f'<rect class="p90" x="{left + 140}" y="{legend_y - 10}" width="12" height="12"/>')
    parts.append(f'<text class="legend" x="{left + 156}" y="{legend_y}">{escape(p90_label)}</text>')
    parts.append("</svg>")
    return "".join(parts)
