"""Reading the bank as of an instant: a person's balance, holds and lots; a ledger's summary.

A balance as of T sums the postings effective by T among all recorded so far (DOMAIN.md); a
hold counts while it was placed by T and had not ended by T.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from uuid import UUID

import asyncpg

from schemas.banking import BankSummary, ExpiringSoon, Lot, PersonBank, ProviderBank
from services.banking import rules, store
from services.billing.rules import amount_pence

EXPIRING_WITHIN_DAYS = 28


def _lot(row: asyncpg.Record) -> Lot:
    return Lot(
        lot_id=row["id"],
        provider_id=row["provider_id"],
        contract_id=row["contract_id"],
        remaining_min=row["remaining"],
        held_min=row["held"],
        rate_pence_per_hour=row["rate_pence_per_hour"],
        value_pence=amount_pence(row["rate_pence_per_hour"], row["remaining"]),
        effective_at=row["effective_at"],
        expires_at=row["expires_at"],
        visit_id=row["visit_id"],
    )


async def person_bank(
    conn: asyncpg.Connection, tenant_id: UUID, person_id: UUID, provider_id: UUID | None, as_of: datetime
) -> PersonBank:
    """Totals over the person's providers (or the one named), with each provider's part and the lots."""
    account = rules.person_account(person_id)
    rows = await store.account_lots(conn, tenant_id, provider_id, [account], as_of)
    balances: dict[UUID, int] = defaultdict(int)
    held: dict[UUID, int] = defaultdict(int)
    value: dict[UUID, int] = defaultdict(int)
    # Minutes of lots past expiry that the expiry job has not posted yet are not available.
    lapsed: dict[UUID, int] = defaultdict(int)
    for row in rows:
        balances[row["provider_id"]] += row["remaining"]
        held[row["provider_id"]] += row["held"]
    lots = [_lot(row) for row in rows if row["remaining"] > 0]
    for lot in lots:
        value[lot.provider_id] += lot.value_pence
        if lot.expires_at <= as_of:
            lapsed[lot.provider_id] += max(0, lot.remaining_min - lot.held_min)
    providers = sorted(set(balances) | ({provider_id} if provider_id else set()))
    by_provider = [
        ProviderBank(
            provider_id=p,
            balance_min=balances[p],
            held_min=held[p],
            available_min=balances[p] - held[p] - lapsed[p],
            value_pence=value[p],
        )
        for p in providers
    ]
    return PersonBank(
        person_id=person_id,
        as_of=as_of,
        balance_min=sum(p.balance_min for p in by_provider),
        held_min=sum(p.held_min for p in by_provider),
        available_min=sum(p.available_min for p in by_provider),
        value_pence=sum(p.value_pence for p in by_provider),
        lots=lots,
        by_provider=by_provider,
    )


async def summary(conn: asyncpg.Connection, tenant_id: UUID, provider_id: UUID | None, as_of: datetime) -> BankSummary:
    """Minutes posted by kind, every account's balance (people together), the value of what people
    and pools hold, and lots running out within 28 days."""
    totals = await store.totals_by_kind(conn, tenant_id, provider_id, None, as_of)
    shortfalls = await store.shortfalls(conn, tenant_id, provider_id, None, as_of)
    totals["shortfall"] = sum(minutes for minutes, _ in shortfalls)
    balances = {
        row["account"]: row["balance"] for row in await store.ledger_accounts(conn, tenant_id, provider_id, as_of)
    }
    lots = [
        _lot(row) for row in await store.account_lots(conn, tenant_id, provider_id, None, as_of) if row["remaining"] > 0
    ]
    horizon = as_of + timedelta(days=EXPIRING_WITHIN_DAYS)
    soon = [lot for lot in lots if as_of < lot.expires_at <= horizon]
    return BankSummary(
        as_of=as_of,
        provider_id=provider_id,
        totals_by_kind=totals,
        balances={account: balances.get(account, 0) for account in ("people", "pool", "owed", "delivered", "expired")},
        value_pence=sum(lot.value_pence for lot in lots),
        expiring_soon=ExpiringSoon(
            within_days=EXPIRING_WITHIN_DAYS,
            minutes=sum(lot.remaining_min for lot in soon),
            value_pence=sum(lot.value_pence for lot in soon),
            lots=soon,
        ),
    )


async def movements(
    conn: asyncpg.Connection, tenant_id: UUID, provider_id: UUID, start: datetime, end: datetime
) -> dict[str, int]:
    """Minutes moved in [start, end) by what moved them: net accrual (accruals and cap overflow less
    take-backs), net redeployment (less returns), transfers, allocations, expiry, and shortfalls."""
    until = end - timedelta(microseconds=1)
    kinds = await store.totals_by_kind(conn, tenant_id, provider_id, start, until)
    return {
        "accrued": kinds.get("accrue", 0) + kinds.get("cap_overflow", 0) - kinds.get("take_back", 0),
        "redeployed": kinds.get("redeploy", 0) - kinds.get("redeploy_return", 0),
        "transferred": kinds.get("transfer", 0),
        "allocated": kinds.get("allocate", 0),
        "expired": kinds.get("expire", 0),
        "shortfall": sum(minutes for minutes, _ in await store.shortfalls(conn, tenant_id, provider_id, start, until)),
    }


async def providers_with_bank(conn: asyncpg.Connection, tenant_id: UUID, provider_id: UUID | None) -> list[UUID]:
    """Providers whose ledger has any lot (the one asked for, if it has)."""
    return [p for p in await store.bank_providers(conn, tenant_id) if provider_id in (None, p)]
