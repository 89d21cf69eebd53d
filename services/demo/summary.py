"""The demo's summary: rich tables of what the reports say, next to the literature's 5-8% figure."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

LITERATURE = "5-8% (CSED 2008; Downing 2008)"


def pounds(pence: int) -> str:
    return f"£{pence / 100:,.2f}"


def pct(share: float | None) -> str:
    return "n/a" if share is None else f"{share * 100:.1f}%"


def hours(minutes: float) -> str:
    return f"{minutes / 60:,.1f} h"


def bank_totals(result: dict[str, Any]) -> dict[str, int]:
    """Minutes by posting kind and the value now, from the bank summary (empty without banking)."""
    bank = result["bank"]
    if not bank.get("available"):
        return {}
    summary = bank["summary"]
    totals = {k: int(v) for k, v in summary.get("totals_by_kind", {}).items()}
    totals["value_pence"] = int(summary.get("value_pence", 0))
    return totals


def summary_rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    """(figure, value) lines of the summary table."""
    t = result["delivery"]["totals"]
    tally = result["tally"]
    rows = [
        ("Period", f"{result['from']} to {result['to']}"),
        ("County", f"{result['people']} people, {result['carers']} carers, {len(result['providers'])} providers"),
        ("Visits planned", f"{t['visits_planned']:,}"),
        (
            "Delivered / missed / cancelled",
            f"{t['visits_delivered']:,} / {t['visits_missed']:,} / {t['visits_cancelled']:,}",
        ),
        ("Missed", pct(t["visits_missed"] / t["visits_planned"] if t["visits_planned"] else None)),
        ("Events sent (duplicates)", f"{tally['events_sent']:,} ({tally['duplicates']:,})"),
        (
            "Amendments (after invoicing)",
            f"{tally['amendments'] + tally['late_amendments']:,} ({tally['late_amendments']:,})",
        ),
        (
            "Hours planned / delivered / paid",
            f"{hours(t['planned_min'])} / {hours(t['delivered_min'])} / {hours(t['paid_min'])}",
        ),
        ("Cost as planned", pounds(t["cost_planned_pence"])),
        ("Cost paid on actual delivery", pounds(t["cost_paid_pence"])),
        ("Saving", f"{pounds(t['saving_pence'])} ({t['saving_pct'] or 0:.1f}%)"),
        ("Saving reported in the literature", LITERATURE),
        ("Punctual (first check-in on time)", pct(t["punctuality"])),
        ("Verified in the home", pct(t["verified_in_home_share"])),
        ("Recomputed from scratch (differing)", f"{tally['checked']:,} ({tally['stale_fixed']})"),
        ("Invoices (adjustment lines)", f"{tally['invoices']} ({tally['adjustment_lines']})"),
    ]
    bank = bank_totals(result)
    if bank:
        rows += [
            ("Banked (accrued)", hours(bank.get("accrue", 0))),
            (
                "Redeployed",
                f"{hours(bank.get('redeploy', 0))} in {tally['redeploy_visits']} bank-funded visits",
            ),
            (
                "Transferred between people",
                f"{hours(bank.get('transfer', 0))} in {tally['transfers']} approved transfers",
            ),
            ("Expired", hours(bank.get("expire", 0))),
            ("Bank value now", pounds(bank["value_pence"])),
        ]
    else:
        rows.append(("Bank", "banking not available"))
    rows.append(("Run time", f"{result.get('seconds', 0):.0f} s, {result['requests']:,} requests"))
    return rows


def print_summary(console: Console, result: dict[str, Any]) -> None:
    table = Table(title="carebank demo", show_header=False, title_style="bold")
    table.add_column("figure", style="cyan")
    table.add_column("value", justify="right")
    for name, value in summary_rows(result):
        table.add_row(name, value)
    console.print(table)
    providers = Table(title="By provider", title_style="bold")
    for column in ("provider", "model", "visits", "missed", "planned", "paid", "saving", "punctual", "verified"):
        providers.add_column(column, justify="left" if column in ("provider", "model") else "right")
    models = {p["id"]: p["model"] for p in result["providers"]}
    for code, pid, f in provider_totals(result):
        providers.add_row(
            code,
            models.get(pid, ""),
            f"{f['visits_planned']:,}",
            f"{f['visits_missed']:,}",
            f"£{f['cost_planned_pence'] / 100:,.0f}",
            f"£{f['cost_paid_pence'] / 100:,.0f}",
            f"{(f['saving_pence'] * 100 / f['cost_planned_pence']) if f['cost_planned_pence'] else 0:.1f}%",
            pct(f["visits_punctual"] / f["visits_with_check_in"] if f["visits_with_check_in"] else None),
            pct(f["visits_verified_in_home"] / f["visits_delivered"] if f["visits_delivered"] else None),
        )
    console.print(providers)


def provider_totals(result: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """The delivery report's rows summed per provider (counts and money add up; shares are recomputed)."""
    sums: dict[str, dict[str, Any]] = {}
    codes: dict[str, str] = {}
    for row in result["delivery"]["rows"]:
        codes[row["provider_id"]] = row["provider_code"]
        into = sums.setdefault(row["provider_id"], {})
        for key, value in row["figures"].items():
            if isinstance(value, int) and not isinstance(value, bool):
                into[key] = into.get(key, 0) + value
    return [(codes[pid], pid, figures) for pid, figures in sorted(sums.items(), key=lambda s: codes[s[0]])]
