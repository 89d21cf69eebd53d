"""`carebank check`: every bank invariant over the whole database, each breach named.

- each ledger (tenant, provider) sums to 0;
- no person or pool account is below 0 counting holds, and each balance is the sum of its lots;
- each person's lock row keeps that person's balance (decision 104);
- no lot has a negative remainder or more held than remains; holds earmark exactly their minutes,
  of their own account's lots;
- no lot past its expiry keeps unheld minutes without a queue entry for the expiry job;
- the bank equals what each visit's current reconciliation says (accrual net of take-backs and
  shortfalls = banked minutes; a final bank-funded visit's delivery = its places' payable up to
  their share, with no hold left; an unfinished one still holds);
- postings and lots name providers, contracts and visits that exist, a posting's lots are of its
  ledger and accounts, and a lot's contract is of its provider (what foreign keys would check);
- postings, lots, holds and shortfalls carry the append-only trigger.
"""

from __future__ import annotations

from collections import defaultdict
from uuid import UUID

import asyncpg

from services.banking import rules, store

APPEND_ONLY = {
    "bank_postings",
    "bank_lots",
    "bank_holds",
    "bank_hold_lots",
    "bank_hold_ends",
    "bank_shortfalls",
    "bank_transfers",
}


async def breaches(conn: asyncpg.Connection) -> list[str]:
    """Every invariant that does not hold, as a sentence naming the rows; empty when all hold."""
    found = [
        f"ledger {row['tenant_id']}/{row['provider_id']} sums to {row['total']}, not 0"
        for row in await store.unbalanced_ledgers(conn)
    ]
    for row in await store.account_breaches(conn):
        where = f"account {row['account']} of {row['tenant_id']}/{row['provider_id']}"
        if row["balance"] != row["in_lots"]:
            found.append(f"{where}: balance {row['balance']} but its lots hold {row['in_lots']}")
        if row["balance"] - row["held"] < 0:
            found.append(f"{where}: below 0 counting holds ({row['balance']} - {row['held']} held)")
        if rules.is_person_account(row["account"]) and row["kept"] != row["balance"]:
            found.append(f"{where}: its lock row keeps balance {row['kept']} but its postings say {row['balance']}")
        if row["bad_lot"]:
            found.append(f"{where}: a lot has a negative remainder or more held than remains")
        if row["stuck_lot"]:
            found.append(f"{where}: a lot past its expiry keeps unheld minutes and is not queued to expire")
    found += [
        f"{row['what']} {row['id']} of {row['tenant_id']}: names a provider, contract, visit or lot it may not"
        for row in await store.reference_breaches(conn)
    ]
    for row in await store.hold_breaches(conn):
        where = f"hold {row['id']} of {row['tenant_id']}"
        if row["minutes"] != row["earmarked"]:
            found.append(f"{where}: {row['minutes']} minutes but earmarks {row['earmarked']}")
        if row["foreign_lot"]:
            found.append(f"{where}: earmarks a lot of another account or provider")
    found += await _visit_breaches(conn)
    missing = APPEND_ONLY - await store.append_only_tables(conn)
    found += [f"table {table} has no append-only trigger" for table in sorted(missing)]
    return found


async def _visit_breaches(conn: asyncpg.Connection) -> list[str]:
    by_tenant: dict[UUID, list[UUID]] = defaultdict(list)
    for tenant_id, visit_id in await store.banking_visit_ids(conn):
        by_tenant[tenant_id].append(visit_id)
    found: list[str] = []
    for tenant_id, visit_ids in by_tenant.items():
        for start in range(0, len(visit_ids), 5000):
            chunk = visit_ids[start : start + 5000]
            for row in await store.visit_bank_facts(conn, tenant_id, chunk):
                target = rules.target_of(rules.facts_of(row))
                accrual = row["accrued"] - row["taken_back"] - row["accrual_short"]
                delivery = row["delivered"] - row["returned"] + row["delivery_short"]
                holding = row["hold_id"] is not None
                if accrual != target.accrue_min:
                    found.append(f"visit {row['id']}: bank accrual {accrual}, reconciliation banks {target.accrue_min}")
                if row["funding"] == "bank" and (delivery != target.deliver_min or holding != target.hold_open):
                    found.append(
                        f"visit {row['id']}: bank delivery {delivery} (hold open: {holding}), "
                        f"reconciliation says {target.deliver_min} (hold open: {target.hold_open})"
                    )
    return found
