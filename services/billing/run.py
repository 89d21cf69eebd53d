"""An invoice run: every final, not-yet-invoiced visit of a contract planned before the period's end,
plus adjustment lines for invoiced visits whose pay changed; numbered gaplessly; stored immutable."""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg

from schemas.catalog import Contract
from schemas.identity import Tenant
from services.banking import store as bank_store
from services.billing import rules, store
from services.common.domain import RuleError, check_instant
from services.common.ids import new_id
from services.identity.rules import holiday_calendar
from services.reconcile import service as reconcile_service


def _place_facts(row: asyncpg.Record) -> tuple[tuple[Any, ...], tuple[int, ...], dict[Any, dict[str, Any]]]:
    """(carers, payables, attendance by carer) per place, from the visit's reconciled state."""
    actual = row["actual"]
    places = row["carers_required"]
    if actual is None:
        return (None,) * places, (0,) * places, {}
    attendances = {UUID(a["carer_id"]): a for a in actual["attendances"] if a["counted"]}
    carers = tuple(attendances) + (None,) * (places - len(attendances))
    return carers[:places], tuple(actual["place_payables"]), attendances


def _cancellation(row: asyncpg.Record) -> tuple[bool, bool]:
    """(short-notice person cancellation, cancelled with enough notice)."""
    cancellation = row["cancellation"] or {}
    cancelled = row["status"] == "cancelled"
    short = bool(cancellation.get("short_notice"))
    return cancelled and short and cancellation.get("by") == "person", cancelled and not short


def visit_to_bill(
    row: asyncpg.Record, contract: Contract, zone: ZoneInfo, holidays: Any, bands: dict[datetime, rules.Band]
) -> tuple[rules.VisitToBill, dict[Any, dict[str, Any]]]:
    carers, payables, attendances = _place_facts(row)
    # Visits start at few distinct instants (the schedule's times): each band is worked out once.
    band = bands.get(row["band_start"]) or bands.setdefault(
        row["band_start"], rules.band_of(row["band_start"], zone, holidays)
    )
    short_person, with_notice = _cancellation(row)
    visit = rules.VisitToBill(
        visit_id=row["id"],
        person_reference=row["person_reference"],
        local_date=row["planned_start"].astimezone(zone).date(),
        band=band,
        rate=getattr(contract.rates, band),
        planned_min=row["planned_min"],
        funding=row["funding"],
        place_carers=carers,
        place_payables=payables,
        check_ins=tuple(attendances[c]["check_in"] if c else None for c in carers),
        check_outs=tuple(attendances[c]["check_out"] if c else None for c in carers),
        exceptions=tuple(row["exceptions"]),
        short_person_cancellation=short_person,
        cancelled_with_notice=with_notice,
    )
    return visit, attendances


def _record(**fields: Any) -> dict[str, Any]:
    """An invoice line's row: a new id, what is given, and nothing for the rest."""
    blank: dict[str, Any] = {
        "adjusts_line_id": None,
        "place": None,
        "carer_id": None,
        "band": None,
        "planned_min": None,
        "check_in": None,
        "check_out": None,
        "exceptions": [],
    }
    return {"line_id": new_id(), **blank, **fields}


def _line_record(
    line: rules.Line, visit: rules.VisitToBill, attendances: dict[Any, dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    attendance = attendances.get(line.carer_id) if line.carer_id else None
    facts = {
        "kind": line.kind,
        "visit_id": line.visit_id,
        "place": line.place,
        "person_reference": visit.person_reference,
        "carer_id": line.carer_id,
        "date": visit.local_date,
        "band": visit.band,
        "planned_min": visit.planned_min,
        "check_in": _instant(attendance["check_in"]) if attendance else None,
        "check_out": _instant(attendance["check_out"]) if attendance else None,
        "payable_min": line.payable_min,
        "rate_pence_per_hour": line.rate,
        "amount_pence": line.amount,
        "funding": visit.funding,
        "exceptions": list(attendance["exceptions"]) if attendance else list(visit.exceptions),
    }
    return _record(**{**facts, **extra})  # `extra` may override (an adjustment keeps the original's band, date)


def _instant(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


async def run_invoice(
    conn: asyncpg.Connection, tenant: Tenant, contract: Contract, provider_code: str, period_start: date, now: datetime
) -> tuple[UUID, bool]:
    """The invoice of (contract, period): (id, created). Call inside a transaction."""
    zone = ZoneInfo(tenant.zone)
    check_instant(datetime.combine(period_start, time(), tzinfo=zone), "period_start")
    bounds = rules.period_bounds(contract.period, period_start, zone)
    if not rules.is_settled(bounds, contract.pay_rules.settle_h, now):
        raise RuleError("period_not_settled", "the period has not ended plus settle_h yet", "period_start")
    await store.lock_contract_runs(conn, tenant.id, contract.id)
    existing = await store.invoice_id_for(conn, tenant.id, contract.id, period_start)
    if existing is not None:
        return existing, False
    # Bring the contract's visits up to date first: the clock may have settled or missed some.
    stale = await store.visits_to_refresh(conn, tenant.id, contract.id, bounds.ends_at, now)
    # Every visit the run may touch is locked first, in id order, as reconciliation takes them, and
    # before reconciling the stale ones takes bank accounts (decision 120).
    await store.lock_run_visits(conn, tenant.id, contract.id, bounds.ends_at, stale)
    await reconcile_service.reconcile_visits(conn, tenant.id, stale, now)

    holidays = holiday_calendar(tenant.holiday_region)
    bands: dict[datetime, rules.Band] = {}
    records: list[dict[str, Any]] = []
    lines: list[rules.Line] = []
    billed: list[UUID] = []
    for row in await store.final_unbilled_visits(conn, tenant.id, contract.id, bounds.ends_at):
        billed.append(row["id"])
        visit, attendances = visit_to_bill(row, contract, zone, holidays, bands)
        for line in rules.visit_lines(visit):
            lines.append(line)
            records.append(_line_record(line, visit, attendances))
    billed += await _adjustments(conn, tenant.id, contract, zone, holidays, bands, lines, records)
    await store.mark_billed(conn, tenant.id, billed)
    bank_items = await _bank_lines(conn, tenant.id, contract.id, zone, lines, records)

    total, planned_total, saving = rules.invoice_totals(lines)
    year = now.astimezone(zone).year
    number = rules.invoice_number(
        provider_code, year, await store.next_number(conn, tenant.id, contract.provider_id, year)
    )
    invoice_id = new_id()
    for position, record in enumerate(records):
        record["position"] = position
    await store.insert_invoice(
        conn,
        tenant.id,
        {
            "id": invoice_id,
            "contract_id": contract.id,
            "provider_id": contract.provider_id,
            "period_start": bounds.start,
            "period_end": bounds.end,
            "number": number,
            "currency": tenant.currency,
            "issued_at": now,
            "total_pence": total,
            "planned_total_pence": planned_total,
            "saving_pence": saving,
            "pending": await store.pending_count(conn, tenant.id, contract.id, bounds.ends_at),
        },
        records,
    )
    await bank_store.mark_bank_billed(conn, tenant.id, invoice_id, bank_items)
    return invoice_id, True


async def _bank_lines(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    contract_id: UUID,
    zone: ZoneInfo,
    lines: list[rules.Line],
    records: list[dict[str, Any]],
) -> list[UUID]:
    """Credit lines for this contract's expired banked minutes (when it credits them) and debit lines
    for bank shortfalls, each valued per lot at its rate; returns the ledger items carried."""
    items: list[UUID] = []
    kinds: tuple[tuple[rules.LineKind, list[asyncpg.Record], int], ...] = (
        ("expired_bank_credit", await bank_store.unbilled_expiries(conn, tenant_id, contract_id), -1),
        ("bank_shortfall", await bank_store.unbilled_shortfalls(conn, tenant_id, contract_id), 1),
    )
    for kind, rows, sign in kinds:
        for row in rows:
            amount = sign * rules.amount_pence(row["rate_pence_per_hour"], row["minutes"])
            line = rules.Line(
                kind, row["visit_id"], 0, None, row["minutes"], row["rate_pence_per_hour"], amount, False, 0
            )
            lines.append(line)
            records.append(
                _record(
                    kind=kind,
                    visit_id=row["visit_id"],
                    person_reference=row["person_reference"],
                    date=row["effective_at"].astimezone(zone).date(),
                    payable_min=row["minutes"],
                    rate_pence_per_hour=row["rate_pence_per_hour"],
                    amount_pence=amount,
                    funding="bank",
                )
            )
            items.append(row["id"])
    return items


async def _adjustments(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    contract: Contract,
    zone: ZoneInfo,
    holidays: Any,
    bands: dict[datetime, rules.Band],
    lines: list[rules.Line],
    records: list[dict[str, Any]],
) -> list[UUID]:
    """± lines for invoiced visits whose pay changed, at the original line's rate, referencing it;
    returns the visits looked at."""
    changed = await store.changed_billed_visits(conn, tenant_id, contract.id)
    if not changed:
        return []
    billed = {
        (r["visit_id"], r["place"]): r for r in await store.billed_places(conn, tenant_id, [r["id"] for r in changed])
    }
    for row in changed:
        visit, attendances = visit_to_bill(row, contract, zone, holidays, bands)
        for place, (carer, payable) in enumerate(zip(visit.place_carers, visit.place_payables, strict=True)):
            original = billed.get((visit.visit_id, place))
            if original is None:
                continue
            delta = rules.adjustment_amount(
                original["rate"],
                payable,
                visit.planned_min,
                visit.funding,
                visit.short_person_cancellation,
                int(original["invoiced"]),
            )
            if delta == 0:
                continue
            line = rules.Line("adjustment", visit.visit_id, place, carer, payable, original["rate"], delta, False, 0)
            lines.append(line)
            records.append(
                _line_record(
                    line,
                    visit,
                    attendances,
                    adjusts_line_id=original["original_line"],
                    band=original["band"],
                    date=original["date"],
                )
            )
    return [row["id"] for row in changed]
