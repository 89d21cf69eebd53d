"""Two ways minutes went wrong, found in review (session 6), and what `carebank check` now also sees:

- a hold released by a reconciliation whose `now` is before its lot's expiry, after the expiry job
  had already taken the lot's queue entry (while it was held), left the released minutes in the lot
  forever: nothing queued it again, so they never expired and no credit note came;
- a bank-funded visit delivered less after an amendment returned its minutes to the lot it took
  from first (the one expiring first, maybe expired already), not the reverse of the order taken;
- the check now also names a lot past expiry that nothing queues, and a hold on another ledger's lot."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import UUID

import asyncpg

from services.banking import ledger, rules, store
from services.banking.check import breaches
from services.common.ids import new_id
from tests.integration.test_bank_batches import NOW, Ledger


async def bank_funded_visit(bank: Ledger, contract: UUID, minutes: int, start: Any) -> UUID:
    visit_id = new_id()
    await bank.conn.execute(
        """INSERT INTO visits (tenant_id, id, person_id, contract_id, provider_id, planned_start, planned_min,
                               carers_required, funding, origin, approval, status, band_start, actual, banked_min)
           VALUES ($1, $2, $3, $4, $5, $6, $7, 1, 'bank', 'commissioner', 'approved', 'planned', $6, NULL, 0)""",
        bank.tenant,
        visit_id,
        bank.people[0],
        contract,
        bank.provider,
        start,
        minutes,
    )
    async with bank.conn.transaction():
        await ledger.place_visit_hold(
            bank.conn,
            bank.tenant,
            visit_id=visit_id,
            provider_id=bank.provider,
            person_id=bank.people[0],
            minutes=minutes,
            now=NOW,
        )
    return visit_id


async def in_lot(db: asyncpg.Connection, tenant: UUID, lot_id: UUID) -> int:
    minutes: int = await db.fetchval(
        """SELECT coalesce(sum(CASE WHEN to_lot_id = $2 THEN minutes ELSE -minutes END), 0) FROM bank_postings
           WHERE tenant_id = $1 AND (to_lot_id = $2 OR from_lot_id = $2)""",
        tenant,
        lot_id,
    )
    return minutes


async def test_a_hold_released_after_the_expiry_job_took_its_lot_still_expires(db: asyncpg.Connection) -> None:
    bank = Ledger(db)
    (contract,) = await bank.seed([600], 1)
    await bank.sync([await bank.visit(contract, 0, 60)])  # one lot of 60 minutes
    (lot,) = await db.fetch("SELECT id, expires_at FROM bank_lots WHERE tenant_id = $1", bank.tenant)
    visit = await bank_funded_visit(bank, contract, 30, NOW + timedelta(days=1))  # holds 30 of it
    async with db.transaction():  # just after the lot's expiry: the 30 unheld expire, its entry is taken
        await ledger.expire_due(db, lot["expires_at"] + timedelta(seconds=5))
    assert await in_lot(db, bank.tenant, lot["id"]) == 30
    # A reconciliation batch that started 10 s before the expiry reaches the visit, missed, only now.
    await db.execute("UPDATE visits SET status = 'missed' WHERE tenant_id = $1 AND id = $2", bank.tenant, visit)
    async with db.transaction():
        await ledger.sync_visits(db, bank.tenant, [visit], lot["expires_at"] - timedelta(seconds=10))
    assert await breaches(db) == []  # queued again, so nothing is stuck
    async with db.transaction():
        await ledger.expire_due(db, lot["expires_at"] + timedelta(days=3))
    assert await in_lot(db, bank.tenant, lot["id"]) == 0
    assert await bank.kept(0) == 0
    assert await breaches(db) == []


async def test_a_smaller_delivery_returns_minutes_to_the_lot_that_expires_last(db: asyncpg.Connection) -> None:
    bank = Ledger(db)
    (contract,) = await bank.seed([600], 1)
    person = rules.person_account(bank.people[0])
    early, late = new_id(), new_id()  # `early` made first (the lower id) and expiring first
    lots = [
        {"id": lot_id, "provider_id": bank.provider, "contract_id": contract, "account": person}
        | {"rate_pence_per_hour": 2430, "effective_at": NOW - age, "expires_at": NOW + life}
        for lot_id, age, life in (
            (early, timedelta(weeks=10), timedelta(weeks=2)),
            (late, timedelta(days=1), timedelta(weeks=12)),
        )
    ]
    postings = [
        {"id": new_id(), "provider_id": bank.provider, "kind": "accrue", "from_account": "owed"}
        | {"to_account": person, "minutes": 30, "to_lot_id": lot["id"], "effective_at": lot["effective_at"]}
        for lot in lots
    ]
    async with db.transaction():
        await store.lock_accounts(db, bank.tenant, bank.provider, [person])
        await store.Writes(bank.tenant).lots(lots).postings(postings).run(db)
    start = NOW + timedelta(days=1)
    visit = await bank_funded_visit(bank, contract, 60, start)  # holds 30 of each, `early`'s first
    attended = {"attendances": [{"counted": True, "check_out": (start + timedelta(hours=1)).isoformat()}]}
    for payable, at in ((60, NOW + timedelta(days=2)), (30, NOW + timedelta(weeks=3))):
        # Delivered in full, then three weeks on (`early` expired, `late` has 9 weeks left) an amendment halves it.
        await db.execute(
            "UPDATE visits SET status = 'completed', actual = $3 WHERE tenant_id = $1 AND id = $2",
            bank.tenant,
            visit,
            attended | {"place_payables": [payable]},
        )
        async with db.transaction():
            await ledger.sync_visits(db, bank.tenant, [visit], at)
            await ledger.expire_due(db, at)
    returned = await db.fetch(
        "SELECT to_lot_id, minutes FROM bank_postings WHERE tenant_id = $1 AND kind = 'redeploy_return'", bank.tenant
    )
    assert [(row["to_lot_id"], row["minutes"]) for row in returned] == [(late, 30)]
    assert await in_lot(db, bank.tenant, late) == 30
    assert await bank.kept(0) == 30  # usable for nine more weeks, not expired at once
    assert await breaches(db) == []


async def test_check_names_a_lot_past_expiry_that_nothing_queues(db: asyncpg.Connection) -> None:
    bank = Ledger(db)
    (contract,) = await bank.seed([600], 1)
    await bank.sync([await bank.visit(contract, 0, 45)])  # its lot expires 12 weeks after NOW: long past
    assert await breaches(db) == []  # queued: the expiry job will take it
    await db.execute("DELETE FROM bank_expiry_queue WHERE tenant_id = $1", bank.tenant)
    found = await breaches(db)
    assert len(found) == 1
    assert str(bank.tenant) in found[0]
    assert "past its expiry keeps unheld minutes and is not queued to expire" in found[0]


async def test_check_names_a_hold_on_another_providers_lot(db: asyncpg.Connection) -> None:
    """A person with two providers has an account of the same name at each; a hold is of one ledger."""
    bank = Ledger(db)
    (contract,) = await bank.seed([600], 1)
    visit_id = await bank.visit(contract, 0, 45)
    await bank.sync([visit_id])
    (lot_id,) = [row["id"] for row in await db.fetch("SELECT id FROM bank_lots WHERE tenant_id = $1", bank.tenant)]
    other = new_id()
    await db.execute("INSERT INTO providers (tenant_id, id, code, name) VALUES ($1, $2, 'O', 'O')", bank.tenant, other)
    hold = {"id": new_id(), "account": rules.person_account(bank.people[0]), "minutes": 10, "held_at": NOW}
    hold |= {"visit_id": visit_id}  # any visit: the hold's owner is not what is checked here
    await store.Writes(bank.tenant).hold(hold | {"provider_id": other}, [(lot_id, 10)]).run(db)
    assert await breaches(db) == [f"hold {hold['id']} of {bank.tenant}: earmarks a lot of another account or provider"]
