"""Building a report: read the range's visits, price the ones not invoiced yet with billing's own
rules (services.billing), read outcomes from the counted carers' check-outs, and tally (rules.py)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg

from schemas.catalog import Contract
from schemas.identity import Tenant
from schemas.reports import BankFigures, DeliveryReport, DeliveryRow, OutcomesReport, OutcomesRow
from services.banking import balances as bank_balances
from services.billing import rules as billing_rules
from services.billing.run import visit_to_bill as billing_visit
from services.catalog import store as catalog_store
from services.identity.rules import holiday_calendar
from services.reconcile import store as reconcile_store
from services.reports import rules, store


async def _facts(
    conn: asyncpg.Connection,
    tenant: Tenant,
    first: date,
    last: date,
    provider_id: UUID | None,
    *,
    with_outcomes: bool,
) -> list[rules.VisitFacts]:
    zone = ZoneInfo(tenant.zone)
    span = rules.report_range(first, last, zone)
    rows = await store.visits_in_range(conn, tenant.id, span.starts_at, span.ends_at, provider_id)
    ids = [row["id"] for row in rows]
    lines = await store.invoice_lines_of(conn, tenant.id, ids)
    contracts: dict[UUID, Contract] = {}
    for contract_id in {row["contract_id"] for row in rows}:
        contract = await catalog_store.get_contract(conn, tenant.id, contract_id)
        assert contract is not None
        contracts[contract_id] = contract
    holidays = holiday_calendar(tenant.holiday_region)
    bands: dict[datetime, billing_rules.Band] = {}
    domains: dict[tuple[UUID, UUID], dict[str, str]] = {}
    events: dict[UUID, list[Any]] = {}
    if with_outcomes:
        domains = await store.outcome_domains(conn, tenant.id, [row["person_id"] for row in rows])
        delivered = [row["id"] for row in rows if row["status"] == "completed"]
        for event in await reconcile_store.load_events(conn, tenant.id, delivered):
            events.setdefault(event["visit_id"], []).append(event)
    facts = []
    for row in rows:
        contract = contracts[row["contract_id"]]
        cancellation = row["cancellation"] or {}
        with_notice = row["status"] == "cancelled" and not cancellation.get("short_notice")
        costs: rules.Costs | None = None
        if row["id"] in lines:
            costs = rules.invoiced_costs(lines[row["id"]], with_notice)
        elif row["status"] in rules.FINAL:
            visit, _ = billing_visit(row, contract, zone, holidays, bands)
            costs = rules.uninvoiced_costs(billing_rules.visit_lines(visit))
        outcome_ids: tuple[str, ...] = tuple(row["outcome_ids"])
        plan_domains = domains.get((row["person_id"], row["contract_id"]), {})
        counted = {UUID(str(a["carer_id"])) for a in (row["actual"] or {}).get("attendances", []) if a.get("counted")}
        recorded = rules.latest_check_out_outcomes(events.get(row["id"], []), counted) if with_outcomes else {}
        facts.append(
            rules.VisitFacts(
                provider_id=row["provider_id"],
                week=rules.week_of(row["planned_start"], zone),
                planned_start=row["planned_start"],
                status=row["status"],
                planned_min=row["planned_min"],
                carers_required=row["carers_required"],
                cancelled_with_notice=with_notice,
                actual=row["actual"],
                payable_min=row["payable_min"],
                late_after_min=contract.pay_rules.late_after_min,
                costs=costs,
                outcome_domains=tuple(plan_domains.get(o, "unknown") for o in outcome_ids),
                outcome_statuses=tuple((o, tuple(recorded.get(o, ()))) for o in outcome_ids),
            )
        )
    return facts


async def delivery_report(
    conn: asyncpg.Connection, tenant: Tenant, first: date, last: date, provider_id: UUID | None
) -> DeliveryReport:
    """Per provider and week of planned start; see docs/decisions.md 70-79."""
    facts = await _facts(conn, tenant, first, last, provider_id, with_outcomes=False)
    codes = await store.provider_codes(conn, tenant.id)
    groups, totals = rules.delivery(facts)
    rows = [
        DeliveryRow(provider_id=provider, provider_code=codes[provider], week_start=week, figures=figures)
        for (provider, week), figures in groups.items()
    ]
    rows.sort(key=lambda r: (r.provider_code, r.week_start))
    return DeliveryReport(
        date_from=first, date_to=last, provider_id=provider_id, currency=tenant.currency, rows=rows, totals=totals
    )


async def outcomes_report(
    conn: asyncpg.Connection, tenant: Tenant, first: date, last: date, provider_id: UUID | None
) -> OutcomesReport:
    """Outcomes met by ASCOT domain per provider and week; the bank figures come from banking (#6)."""
    facts = await _facts(conn, tenant, first, last, provider_id, with_outcomes=True)
    codes = await store.provider_codes(conn, tenant.id)
    groups, totals = rules.outcomes(facts)
    rows = [
        OutcomesRow(
            provider_id=provider, provider_code=codes[provider], week_start=week, visits_delivered=count, domains=doms
        )
        for (provider, week), (count, doms) in groups.items()
    ]
    rows.sort(key=lambda r: (r.provider_code, r.week_start))
    bank = await _bank_figures(conn, tenant, first, last, provider_id)
    return OutcomesReport(date_from=first, date_to=last, provider_id=provider_id, rows=rows, totals=totals, bank=bank)


async def _bank_figures(
    conn: asyncpg.Connection, tenant: Tenant, first: date, last: date, provider_id: UUID | None
) -> list[BankFigures]:
    """Per provider: minutes moved in the range (by effective instant), the balance of people and pool
    with its value at the range's end (or now, if sooner), and lots expiring in the 28 days after."""
    span = rules.report_range(first, last, ZoneInfo(tenant.zone))
    as_of = min(span.ends_at - timedelta(microseconds=1), datetime.now(UTC))
    figures = []
    for provider in await bank_balances.providers_with_bank(conn, tenant.id, provider_id):
        moved = await bank_balances.movements(conn, tenant.id, provider, span.starts_at, span.ends_at)
        summary = await bank_balances.summary(conn, tenant.id, provider, as_of)
        figures.append(
            BankFigures(
                provider_id=provider,
                accrued_min=moved["accrued"],
                redeployed_min=moved["redeployed"],
                transferred_min=moved["transferred"],
                allocated_min=moved["allocated"],
                expired_min=moved["expired"],
                shortfall_min=moved["shortfall"],
                balance_min=summary.balances["people"] + summary.balances["pool"],
                value_pence=summary.value_pence,
                expiring_28d_min=summary.expiring_soon.minutes,
                expiring_28d_value_pence=summary.expiring_soon.value_pence,
            )
        )
    return figures
