"""Billing worker job: run every contract's invoice a set number of days after each period ends."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg
import structlog

from infra.db import acquire
from services.banking import store as bank_store
from services.billing import rules, run, store
from services.catalog import store as catalog_store
from services.identity import store as identity_store

log = structlog.get_logger("carebank.billing")


def period_starts(period: rules.Period, first: date, last: date) -> list[date]:
    """Every period start from the one holding `first` up to `last` inclusive."""
    if period == "week":
        start = first - timedelta(days=first.weekday())
        return [start + timedelta(days=7 * i) for i in range((last - start).days // 7 + 1)]
    starts = []
    current = first.replace(day=1)
    while current <= last:
        starts.append(current)
        current = (current.replace(day=28) + timedelta(days=4)).replace(day=1)
    return starts


async def run_due_invoices(pool: asyncpg.Pool, now: datetime | None = None, *, after_days: int = 2) -> int:
    """Issue every invoice whose period ended `after_days` ago (and is settled) and has none yet."""
    now = now or datetime.now(tz=UTC)
    issued = 0
    async with acquire(pool) as conn:
        contracts = await store.contracts_to_invoice(conn)
    for row in contracts:
        async with acquire(pool) as conn:
            tenant = await identity_store.get_tenant(conn, row["tenant_id"])
            contract = await catalog_store.get_contract(conn, row["tenant_id"], row["contract_id"])
            assert tenant is not None
            assert contract is not None
            zone = ZoneInfo(tenant.zone)
            today = now.astimezone(zone).date()
            last_day = today
            if (
                contract.valid_to
                and contract.valid_to < today
                and not await _still_billing(conn, tenant.id, contract.id, now)
            ):
                last_day = contract.valid_to
            done = await store.invoiced_periods(conn, tenant.id, contract.id)
            for start in period_starts(contract.period, contract.valid_from, last_day):
                bounds = rules.period_bounds(contract.period, start, zone)
                due = bounds.ends_at + timedelta(days=after_days)
                if start in done or now < due or not rules.is_settled(bounds, contract.pay_rules.settle_h, now):
                    continue
                async with conn.transaction():
                    _, created = await run.run_invoice(conn, tenant, contract, row["provider_code"], start, now)
                issued += int(created)
    return issued


async def _still_billing(conn: asyncpg.Connection, tenant_id: UUID, contract_id: UUID, now: datetime) -> bool:
    """After a contract ends, its runs go on while visits wait to be billed (or billed again) or its
    bank has lots to expire or expiries and shortfalls to carry (DOMAIN.md)."""
    return await store.has_unbilled_visits(conn, tenant_id, contract_id) or await bank_store.has_bank_to_bill(
        conn, tenant_id, contract_id, now
    )
