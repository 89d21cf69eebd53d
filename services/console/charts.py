"""Charts drawn server-side as inline SVG: no script, no library, readable without colour alone.

Each chart is an `<svg role="img">` with a title and a description naming its figures; the pages
put the same figures in a table beside it, so a screen reader gets the numbers either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

# Colour-blind safe (Okabe-Ito); series also differ by pattern of position and by their legend text.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00")


@dataclass(frozen=True)
class Series:
    """One named series of values, one per category (None: no figure)."""

    name: str
    values: Sequence[float | None]


def _nice_max(value: float) -> float:
    """A round axis maximum at or above the value."""
    if value <= 0:
        return 1.0
    step = 10 ** (len(str(int(value))) - 1)
    for multiple in (1, 2, 2.5, 5, 10):
        if value <= multiple * step:
            return float(multiple * step)
    return float(10 * step)


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 10 or value == int(value) else f"{value:,.1f}"


def _describe(value: float | None) -> str:
    return "none" if value is None else _fmt(value)


def grouped_bars(
    key: str,
    title: str,
    categories: Sequence[str],
    series: Sequence[Series],
    unit: str = "",
    max_value: float | None = None,
) -> Markup:
    """Vertical bars: one group per category, one bar per series, a legend and a y axis."""
    width, height = 640, 280
    left, right, top, bottom = 84, 12, 16, 64
    plot_w, plot_h = width - left - right, height - top - bottom
    found = [v for s in series for v in s.values if v is not None]
    top_value = max_value if max_value is not None else _nice_max(max(found, default=0.0))
    group_w = plot_w / max(len(categories), 1)
    bar_w = max(min(group_w * 0.8 / max(len(series), 1), 28.0), 2.0)
    summary = "; ".join(
        f"{cat}: " + ", ".join(f"{s.name} {_describe(s.values[i])}" for s in series) for i, cat in enumerate(categories)
    )
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-labelledby="t-{key} d-{key}"'
        ' xmlns="http://www.w3.org/2000/svg">',
        f'<title id="t-{key}">{escape(title)}</title>',
        f'<desc id="d-{key}">{escape(summary) or "no figures"}</desc>',
    ]
    for tick in range(5):
        tick_value = top_value * tick / 4
        y = top + plot_h - plot_h * tick / 4
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        parts.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">'
            f"{_fmt(tick_value)}{escape(unit)}</text>"
        )
    for i, category in enumerate(categories):
        group_x = left + group_w * i + (group_w - bar_w * len(series)) / 2
        for j, s in enumerate(series):
            value = s.values[i]
            if value is None:
                continue
            bar_h = plot_h * min(max(value, 0.0), top_value) / top_value
            x = group_x + bar_w * j
            parts.append(
                f'<rect x="{x:.1f}" y="{top + plot_h - bar_h:.1f}" width="{bar_w - 1:.1f}" height="{bar_h:.1f}"'
                f' fill="{PALETTE[j % len(PALETTE)]}"><title>{escape(s.name)}, {escape(category)}:'
                f" {_fmt(value)}{escape(unit)}</title></rect>"
            )
        parts.append(
            f'<text x="{left + group_w * (i + 0.5):.1f}" y="{top + plot_h + 16}" text-anchor="middle"'
            f' class="tick">{escape(category)}</text>'
        )
    legend_x = left
    for j, s in enumerate(series):
        parts.append(
            f'<rect x="{legend_x}" y="{height - 24}" width="12" height="12" fill="{PALETTE[j % len(PALETTE)]}"/>'
        )
        parts.append(f'<text x="{legend_x + 16}" y="{height - 14}" class="legend">{escape(s.name)}</text>')
        legend_x += 24 + 8 * len(s.name)
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text piece above is escaped


def stacked_rows(key: str, title: str, rows: Sequence[tuple[str, Sequence[tuple[str, int]]]]) -> Markup:
    """Horizontal 100% bars, one per row, split into named parts (e.g. met / not met / refused)."""
    width = 640
    label_w, right, row_h, top = 150, 12, 28, 8
    names = [name for name, _ in rows[0][1]] if rows else []
    height = top + row_h * len(rows) + 36
    plot_w = width - label_w - right
    summary = "; ".join(f"{label}: " + ", ".join(f"{n} {v}" for n, v in parts) for label, parts in rows)
    parts_svg = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-labelledby="t-{key} d-{key}"'
        ' xmlns="http://www.w3.org/2000/svg">',
        f'<title id="t-{key}">{escape(title)}</title>',
        f'<desc id="d-{key}">{escape(summary) or "no figures"}</desc>',
    ]
    for i, (label, pieces) in enumerate(rows):
        y = top + row_h * i
        parts_svg.append(f'<text x="{label_w - 6}" y="{y + 17}" text-anchor="end" class="tick">{escape(label)}</text>')
        total = sum(v for _, v in pieces) or 1
        x = float(label_w)
        for j, (name, value) in enumerate(pieces):
            w = plot_w * value / total
            if w > 0:
                parts_svg.append(
                    f'<rect x="{x:.1f}" y="{y + 4}" width="{w:.1f}" height="{row_h - 8}"'
                    f' fill="{PALETTE[j % len(PALETTE)]}">'
                    f"<title>{escape(label)}, {escape(name)}: {value}</title></rect>"
                )
            x += w
    legend_x = label_w
    for j, name in enumerate(names):
        parts_svg.append(
            f'<rect x="{legend_x}" y="{height - 24}" width="12" height="12" fill="{PALETTE[j % len(PALETTE)]}"/>'
        )
        parts_svg.append(f'<text x="{legend_x + 16}" y="{height - 14}" class="legend">{escape(name)}</text>')
        legend_x += 24 + 8 * len(name)
    parts_svg.append("</svg>")
    return Markup("".join(parts_svg))  # noqa: S704 - every text piece above is escaped
