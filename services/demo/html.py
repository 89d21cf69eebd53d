"""demo-report.html: one self-contained page (no scripts, no fonts, no network) with the summary and
two charts drawn as inline SVG by the small functions below."""

from __future__ import annotations

from html import escape
from typing import Any

from services.demo.summary import provider_totals, summary_rows

COLOURS = ("#1b6ca8", "#e07b39", "#3a9e5c", "#9b4dca", "#c0392b", "#7f8c8d")
PLANNED, DELIVERED = "#b8c7d9", "#1b6ca8"


def _nice_max(value: float) -> float:
    """A round number at or above value, for an axis."""
    if value <= 0:
        return 1.0
    step = 10 ** (len(str(int(value))) - 1)
    for factor in (1, 2, 2.5, 5, 10):
        if value <= factor * step:
            return float(factor * step)
    return float(10 * step)


def bar_chart(groups: list[tuple[str, list[tuple[str, float, float]]]], unit: str) -> str:
    """Grouped bars: per group (a provider), per week a planned bar and a delivered bar."""
    bars = sum(len(weeks) for _, weeks in groups)
    width, height, left, bottom, top = max(640, 40 + bars * 34 + len(groups) * 30), 310, 60, 50, 30
    peak = _nice_max(max((max(p, d) for _, weeks in groups for _, p, d in weeks), default=1))
    scale = (height - bottom - top) / peak
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">']
    for tick in range(5):
        value = peak * tick / 4
        y = height - bottom - value * scale
        parts.append(f'<line x1="{left}" x2="{width - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{value:,.0f}</text>')
    x = left + 10
    for name, weeks in groups:
        group_start = x
        for label, planned, delivered in weeks:
            for offset, value, colour in ((0, planned, PLANNED), (13, delivered, DELIVERED)):
                h = value * scale
                parts.append(
                    f'<rect x="{x + offset}" y="{height - bottom - h:.1f}" width="12" height="{h:.1f}" fill="{colour}">'
                    f"<title>{escape(name)} {escape(label)}: {value:,.1f} {unit}</title></rect>"
                )
            parts.append(
                f'<text x="{x + 12}" y="{height - bottom + 14}" font-size="10" text-anchor="middle">'
                f"{escape(label)}</text>"
            )
            x += 34
        middle = (group_start + x - 8) / 2
        parts.append(
            f'<text x="{middle:.1f}" y="{height - bottom + 32}" font-size="12" font-weight="bold" '
            f'text-anchor="middle">{escape(name)}</text>'
        )
        x += 30
    parts.append(f'<text x="12" y="{top - 14}" font-size="11">{escape(unit)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def line_chart(series: dict[str, list[tuple[str, float]]], unit: str) -> str:
    """One line per series over shared x labels (days)."""
    width, height, left, bottom, top, right = 720, 310, 60, 40, 30, 110
    labels = next(iter(series.values()), [])
    count = max(1, len(labels) - 1)
    peak = _nice_max(max((v for points in series.values() for _, v in points), default=1))
    plot_w, plot_h = width - left - right, height - top - bottom
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">']
    for tick in range(5):
        value = peak * tick / 4
        y = top + plot_h - value / peak * plot_h
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{value:,.0f}</text>')
    for index, (label, _) in enumerate(labels):
        if index % 7 == 0:
            x = left + plot_w * index / count
            parts.append(
                f'<text x="{x:.1f}" y="{height - bottom + 16}" font-size="10" text-anchor="middle">{label}</text>'
            )
    for number, (name, points) in enumerate(series.items()):
        colour = COLOURS[number % len(COLOURS)]
        coords = " ".join(
            f"{left + plot_w * i / count:.1f},{top + plot_h - v / peak * plot_h:.1f}" for i, (_, v) in enumerate(points)
        )
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{coords}"/>')
        y = top + 14 + 18 * number
        parts.append(f'<rect x="{left + plot_w + 12}" y="{y - 9}" width="10" height="10" fill="{colour}"/>')
        parts.append(f'<text x="{left + plot_w + 26}" y="{y}" font-size="12">{escape(name)}</text>')
    parts.append(f'<text x="12" y="{top - 14}" font-size="11">{escape(unit)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def render(result: dict[str, Any]) -> str:
    """The whole page."""
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in summary_rows(result))
    groups: dict[str, list[tuple[str, float, float]]] = {}
    for row in result["delivery"]["rows"]:
        f = row["figures"]
        groups.setdefault(row["provider_code"], []).append(
            (row["week_start"][5:], f["planned_min"] / 60, f["delivered_min"] / 60)
        )
    chart = bar_chart(sorted(groups.items()), "hours")
    bank = result["bank"]
    if bank.get("available") and bank.get("balance_by_day"):
        series = {
            code: [(day[5:], minutes / 60) for day, minutes in points]
            for code, points in bank["balance_by_day"].items()
        }
        bank_chart = line_chart(series, "hours banked")
    else:
        bank_chart = "<p>banking not available: no bank balance to draw.</p>"
    providers = "".join(
        f"<tr><td>{escape(code)}</td><td>{f['visits_planned']:,}</td><td>{f['visits_missed']:,}</td>"
        f"<td>£{f['cost_planned_pence'] / 100:,.2f}</td><td>£{f['cost_paid_pence'] / 100:,.2f}</td>"
        f"<td>{(f['saving_pence'] * 100 / f['cost_planned_pence']) if f['cost_planned_pence'] else 0:.1f}%</td></tr>"
        for code, _, f in provider_totals(result)
    )
    outcomes = "".join(
        f"<tr><td>{escape(d['domain'].replace('_', ' '))}</td><td>{d['expected']:,}</td><td>{d['met']:,}</td>"
        f"<td>{d['not_met']:,}</td><td>{d['refused']:,}</td><td>{d['not_recorded']:,}</td>"
        f"<td>{(d['met_share'] or 0) * 100:.1f}%</td></tr>"
        for d in result["outcomes"]["totals"]
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>carebank demo report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ padding: 4px 10px; border-bottom: 1px solid #eee; text-align: left; }}
td {{ text-align: right; }} svg {{ display: block; margin: 1em 0; }}
.key span {{ display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 12px; }}
</style></head><body>
<h1>carebank demo</h1>
<p>A county's {escape(result["from"])} to {escape(result["to"])}, played through the carebank API
(seed {result["seed"]}). Figures come from <code>GET /v1/reports/delivery</code> and the bank endpoints.</p>
<table>{rows}</table>
<h2>By provider</h2>
<table><tr><th>provider</th><th>visits</th><th>missed</th><th>planned cost</th><th>paid</th><th>saving</th></tr>
{providers}</table>
<h2>Planned vs delivered hours, per provider and week</h2>
<p class="key"><span style="background:{PLANNED}"></span>planned
<span style="background:{DELIVERED}"></span>delivered</p>
{chart}
<h2>Outcomes met, by ASCOT domain</h2>
<p>Each outcome of each delivered visit, from what the carers recorded at check-out.</p>
<table><tr><th>domain</th><th>expected</th><th>met</th><th>not met</th><th>refused</th><th>not recorded</th>
<th>share met</th></tr>
{outcomes}</table>
<h2>Bank balance over time (outcome-based providers)</h2>
{bank_chart}
</body></html>
"""
