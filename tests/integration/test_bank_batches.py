"""Accrual batches (decision 107): one statement locks the batch's people and writes their accruals,
splitting each visit's minutes at the cap in SQL. Checked against the sequential rule (rules.cap_split
over the batch in visit order) on random batches, when another transaction moved the person's balance
while this one waited for the lock, and for a person whose visits in one batch name two caps."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infra.db import connect
from services.banking import ledger, rules
from services.banking.check import breaches
from services.common.ids import new_id

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # a Monday
RATES = {"day": 2430, "evening": 2700, "night": 3000, "weekend": 2900, "bank_holiday": 4860}


class Ledger:
    """A tenant with one provider, its contracts (one cap each) and people, on the test's connection."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.tenant, self.provider = new_id(), new_id()
        self.people: list[UUID] = []
        self.clock = 0

    async def seed(self, caps: list[int], people: int) -> list[UUID]:
        """The tenant, provider and people, and a contract per cap (returned in that order)."""
        c = self.conn
        await c.execute(
            "INSERT INTO tenants (tenant_id, name, zone, holiday_region, currency, max_event_age_days) "
            "VALUES ($1, 'Batches', 'Europe/London', 'GB-ENG', 'GBP', 45)",
            self.tenant,
        )
        await c.execute(
            "INSERT INTO providers (tenant_id, id, code, name) VALUES ($1, $2, 'B', 'B')", self.tenant, self.provider
        )
        contracts = []
        for cap in caps:
            contracts.append(new_id())
            await c.execute(
                """INSERT INTO contracts (tenant_id, id, provider_id, model, period, rates, pay_rules, banking,
                                          valid_from)
                   VALUES ($1, $2, $3, 'outcome_based', 'week', $4, '{}', $5, '2026-01-01')""",
                self.tenant,
                contracts[-1],
                self.provider,
                RATES,
                {"expiry_weeks": 12, "cap_min": cap, "expiry_action": "credit_note"},
            )
        for n in range(people):
            self.people.append(new_id())
            await c.execute(
                "INSERT INTO people (tenant_id, id, reference, display_name, lat, lon, geofence_m) "
                "VALUES ($1, $2, $3, 'x', 53.7, -2.7, 100)",
                self.tenant,
                self.people[-1],
                f"B-{n}",
            )
        return contracts

    async def visit(self, contract: UUID, person: int, banked: int) -> UUID:
        """A completed 60-minute outcome-based visit that banks `banked` minutes (ids in creation order,
        so a batch's visits are judged at the cap in the order they were made)."""
        self.clock += 1
        end = NOW - timedelta(hours=2) + timedelta(minutes=self.clock)
        visit_id = new_id()
        await self.conn.execute(
            """INSERT INTO visits (tenant_id, id, person_id, contract_id, provider_id, planned_start, planned_min,
                                   carers_required, funding, origin, approval, status, band_start, actual, banked_min)
               VALUES ($1, $2, $3, $4, $5, $6, 60, 1, 'package', 'commissioner', 'approved', 'completed', $6,
                       $7, $8)""",
            self.tenant,
            visit_id,
            self.people[person],
            contract,
            self.provider,
            end - timedelta(minutes=60),
            {"attendances": [{"counted": True, "check_out": end.isoformat()}], "place_payables": [60 - banked]},
            banked,
        )
        return visit_id

    async def sync(self, visit_ids: list[UUID], conn: asyncpg.Connection | None = None) -> None:
        conn = conn or self.conn
        async with conn.transaction():
            await ledger.sync_visits(conn, self.tenant, visit_ids, NOW)

    async def split(self, visit_id: UUID) -> tuple[int, int]:
        """(to the person, to the pool) that the visit's accrual posted."""
        rows = await self.conn.fetch(
            "SELECT kind, sum(minutes)::int AS m FROM bank_postings WHERE tenant_id = $1 AND visit_id = $2 GROUP BY 1",
            self.tenant,
            visit_id,
        )
        posted = {row["kind"]: row["m"] for row in rows}
        return posted.get("accrue", 0), posted.get("cap_overflow", 0)

    async def kept(self, person: int) -> int | None:
        balance: int | None = await self.conn.fetchval(
            "SELECT balance FROM bank_accounts WHERE tenant_id = $1 AND account = $2",
            self.tenant,
            rules.person_account(self.people[person]),
        )
        return balance


def expected_splits(
    balances: dict[int, int], visits: list[tuple[int, int, int]]
) -> tuple[list[tuple[int, int]], dict[int, int]]:
    """The sequential rule: each (person, minutes, cap) visit in order, judged on the balance the
    visits before it left."""
    balances, splits = defaultdict(int, balances), []
    for person, minutes, cap in visits:
        to_person, to_pool = rules.cap_split(balances[person], minutes, cap)
        balances[person] += to_person
        splits.append((to_person, to_pool))
    return splits, dict(balances)


@pytest.fixture
def loop() -> Any:
    made = asyncio.new_event_loop()
    yield made
    made.close()


def test_a_batch_splits_each_visit_at_the_cap_in_visit_order(database_url: str, loop: Any) -> None:
    conn: asyncpg.Connection = loop.run_until_complete(connect(database_url))

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        cap=st.integers(0, 90),
        starting=st.lists(st.integers(0, 60), min_size=1, max_size=3),
        batch=st.lists(st.tuples(st.integers(0, 2), st.integers(1, 45)), min_size=1, max_size=10),
    )
    def example(cap: int, starting: list[int], batch: list[tuple[int, int]]) -> None:
        async def run() -> None:
            # Each example in a transaction rolled back at the end (the ledger's become savepoints).
            example_tx = conn.transaction()
            await example_tx.start()
            try:
                bank = Ledger(conn)
                (contract,) = await bank.seed([cap], len(starting))
                first = [(n, m) for n, m in enumerate(starting) if m > 0]
                await bank.sync([await bank.visit(contract, n, m) for n, m in first])
                _, before = expected_splits({}, [(n, m, cap) for n, m in first])
                visits = [(n % len(starting), m) for n, m in batch]
                ids = [await bank.visit(contract, n, m) for n, m in visits]
                await bank.sync(ids)
                splits, after = expected_splits(before, [(n, m, cap) for n, m in visits])
                assert [await bank.split(visit_id) for visit_id in ids] == splits
                assert [await bank.kept(n) for n in range(len(starting))] == [
                    after.get(n) for n in range(len(starting))
                ]
                assert await breaches(conn) == []
            finally:
                await example_tx.rollback()

        loop.run_until_complete(run())

    try:
        example()
    finally:
        loop.run_until_complete(conn.close())


async def test_a_batch_waiting_for_a_persons_lock_splits_on_the_balance_the_other_left(
    database_url: str, db: asyncpg.Connection
) -> None:
    bank = Ledger(db)
    (contract,) = await bank.seed([60], 1)
    await bank.sync([await bank.visit(contract, 0, 50)])
    first, second = await bank.visit(contract, 0, 8), await bank.visit(contract, 0, 8)
    one, other = await connect(database_url), await connect(database_url)
    try:
        holding = one.transaction()
        await holding.start()
        await ledger.sync_visits(one, bank.tenant, [first], NOW)  # 8 to the person: 58, locked until commit
        waiting = asyncio.create_task(bank.sync([second], other))
        for _ in range(200):  # until the second batch waits for the person's lock
            blocked = await db.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )
            if blocked:
                break
            await asyncio.sleep(0.01)
        assert blocked
        assert not waiting.done()
        await holding.commit()
        await waiting
    finally:
        await one.close()
        await other.close()
    # The second read the balance the first left (58), not the 50 it started from: 2 fit under the cap.
    assert await bank.split(first) == (8, 0)
    assert await bank.split(second) == (2, 6)
    assert await bank.kept(0) == 60
    assert await breaches(db) == []


async def test_a_person_whose_batch_names_two_caps_is_judged_on_each_visits_own(db: asyncpg.Connection) -> None:
    bank = Ledger(db)
    low, high = await bank.seed([30, 100], 1)
    ids = [
        await bank.visit(low, 0, 20),  # 20 of 30
        await bank.visit(high, 0, 40),  # 40 more: 60 of 100
        await bank.visit(low, 0, 10),  # already past 30: all to the pool
        await bank.visit(high, 0, 45),  # 40 fit under 100
    ]
    await bank.sync(ids)
    assert [await bank.split(visit_id) for visit_id in ids] == [(20, 0), (40, 0), (0, 10), (40, 5)]
    assert await bank.kept(0) == 100
    assert await breaches(db) == []


class Counting(asyncpg.Connection):
    """A connection that counts the statements it sends with arguments (fetch, fetchrow, fetchval,
    execute with values: every statement of the ledger; BEGIN and COMMIT go another way)."""

    sent = 0

    async def _execute(self, query: str, *args: Any, **kwargs: Any) -> Any:
        self.sent += 1
        parent: Any = super()  # asyncpg-stubs leave out the private method every fetch and execute goes through
        return await parent._execute(query, *args, **kwargs)


async def test_an_accrual_batch_and_the_expiry_of_many_lots_take_a_few_statements_each(
    database_url: str, db: asyncpg.Connection
) -> None:
    bank = Ledger(db)
    (contract,) = await bank.seed([600], 3)
    counting: Counting = await asyncpg.connect(database_url, connection_class=Counting)
    try:
        for kind in ("json", "jsonb"):  # as infra.db's connections decode them
            await counting.set_type_codec(kind, schema="pg_catalog", encoder=json.dumps, decoder=json.loads)
        ids = [await bank.visit(contract, n % 3, 10 + n) for n in range(20)]
        await bank.sync(ids[:3])  # every person's lock row made
        counting.sent = 0
        await bank.sync(ids[3:], counting)
        assert counting.sent == 2  # the visits' facts; the locks and every lot, queue entry and posting
        counting.sent = 0
        async with counting.transaction():
            taken = await ledger.expire_due(counting, NOW + timedelta(weeks=13))
        assert taken == 20
        assert counting.sent == 4  # the queue entries with their lots; the locks; remainders; postings
    finally:
        await counting.close()
    expired = await db.fetch(
        "SELECT from_lot_id, minutes, effective_at FROM bank_postings WHERE tenant_id = $1 AND kind = 'expire'",
        bank.tenant,
    )
    lots = await db.fetch("SELECT id, expires_at FROM bank_lots WHERE tenant_id = $1", bank.tenant)
    assert sorted((row["from_lot_id"], row["effective_at"]) for row in expired) == sorted(
        (row["id"], row["expires_at"]) for row in lots
    )
    assert sum(row["minutes"] for row in expired) == sum(10 + n for n in range(20))
    assert [await bank.kept(n) for n in range(3)] == [0, 0, 0]
    assert await breaches(db) == []
