"""An account's available lots are read a page at a time, oldest expiry first, only until they cover
what a movement takes (decision 118). Checked against reading every lot at once: the same pieces for
any amount, with ties on expiry and on effective date, lots used up or expired, and lots excluded."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any
from uuid import UUID

import asyncpg

from services.banking import rules, store
from services.common.ids import new_id
from tests.integration.test_bank_batches import NOW, Ledger

POOL = "pool"


async def pool_lots(bank: Ledger, contract: UUID, rng: random.Random, count: int) -> list[UUID]:
    """`count` pool lots of 1 to 30 minutes, a third of them partly or wholly expired away, a few already
    past expiry, with many sharing an expiry instant or an effective instant."""
    lots: list[dict[str, Any]] = []
    postings: list[dict[str, Any]] = []
    for _ in range(count):
        effective_at = NOW - timedelta(days=rng.randint(1, 3), minutes=rng.choice((0, 0, 5)))
        expires_at = NOW + timedelta(days=rng.choice((-1, 2, 2, 5, 9)), minutes=rng.choice((0, 0, 30)))
        lot = {"id": new_id(), "provider_id": bank.provider, "contract_id": contract, "account": POOL}
        lots.append({**lot, "rate_pence_per_hour": 2430, "effective_at": effective_at, "expires_at": expires_at})
        minutes = rng.randint(1, 30)
        moved = {"provider_id": bank.provider, "effective_at": effective_at}
        postings.append(
            {
                **moved,
                "id": new_id(),
                "kind": "cap_overflow",
                "from_account": "owed",
                "to_account": POOL,
                "minutes": minutes,
                "to_lot_id": lot["id"],
            }
        )
        if rng.random() < 0.33:  # some of it (or all) gone already
            postings.append(
                {
                    **moved,
                    "id": new_id(),
                    "kind": "expire",
                    "from_account": POOL,
                    "to_account": "expired",
                    "minutes": rng.randint(1, minutes),
                    "from_lot_id": lot["id"],
                }
            )
    await store.Writes(bank.tenant).lots(lots).postings(postings).run(bank.conn)
    return [lot["id"] for lot in lots]


async def test_pages_of_lots_give_the_pieces_that_all_lots_give(db: asyncpg.Connection) -> None:
    rng = random.Random(118)
    for case in range(12):
        tx = db.transaction()
        await tx.start()
        try:
            bank = Ledger(db)
            (contract,) = await bank.seed([600], 1)
            ids = await pool_lots(bank, contract, rng, rng.randint(0, 40))
            every = await store.available_lots(db, bank.tenant, bank.provider, POOL, NOW, 10**9, page=10_000)
            assert all(lot.expires_at > NOW and lot.available > 0 for lot in every)
            total = sum(lot.available for lot in every)
            for _ in range(8):
                wanted = rng.randint(1, total + 20)
                excluding = set(rng.sample(ids, k=min(len(ids), rng.randint(0, 3))))
                page = rng.randint(1, 5)
                paged = await store.available_lots(
                    db, bank.tenant, bank.provider, POOL, NOW, wanted, excluding=excluding, page=page
                )
                whole = [lot for lot in every if lot.lot_id not in excluding]
                assert rules.take_oldest_first(paged, wanted) == rules.take_oldest_first(whole, wanted), case
                # Pages stop once they cover `wanted`: the lots found before the last page fell short.
                assert sum(lot.available for lot in paged[:-page]) < wanted
        finally:
            await tx.rollback()
