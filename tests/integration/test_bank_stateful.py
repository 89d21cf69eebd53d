"""The bank against a small in-memory model (hypothesis RuleBasedStateMachine).

Random sequences of accruals, reconciliation changes, redeployments (book, deliver, miss),
transfers (request, approve, reject), allocations from the pool and expiry, run through
services.banking.ledger on real PostgreSQL; after every step each account's balance and holds
equal the model's and `carebank check` finds no breach.

The model keeps minutes per (account, expiry) bucket. People 0 and 1 accrue; transfers only go
to a higher-numbered person and allocations only to person 2, so a person never holds another
lot with the expiry of one of their own accruals (expiries are unique per accrual) and buckets
behave exactly like the lots they stand for.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, initialize, invariant, rule

from infra.db import connect
from services.banking import ledger
from services.banking.check import breaches
from services.banking.rules import person_account
from services.common.domain import RuleError
from services.common.ids import new_id

CAP = 60
EXPIRY_WEEKS = 1
BASE = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday, weekday day band
RATES = {"day": 2430, "evening": 2700, "night": 3000, "weekend": 2900, "bank_holiday": 4860}
PEOPLE = 3
POOL = "pool"


class Model:
    """Minutes per account and expiry; holds as earmarked (expiry, minutes) pieces."""

    def __init__(self) -> None:
        self.buckets: dict[str, dict[datetime, int]] = defaultdict(lambda: defaultdict(int))
        self.holds: dict[UUID, tuple[str, list[tuple[datetime, int]]]] = {}
        self.sinks: dict[str, int] = defaultdict(int)

    def balance(self, account: str) -> int:
        return sum(self.buckets[account].values())

    def held(self, account: str, expiry: datetime | None = None) -> int:
        return sum(
            m for acct, pieces in self.holds.values() if acct == account for e, m in pieces if expiry in (None, e)
        )

    def available(self, account: str, expiry: datetime) -> int:
        return self.buckets[account][expiry] - self.held(account, expiry)

    def oldest_first(
        self, account: str, minutes: int, now: datetime, skip: datetime | None = None
    ) -> list[tuple[datetime, int]]:
        pieces, left = [], minutes
        for expiry in sorted(self.buckets[account]):
            if expiry <= now or expiry == skip or left <= 0:
                continue
            piece = min(left, self.available(account, expiry))
            if piece > 0:
                pieces.append((expiry, piece))
                left -= piece
        return pieces

    def move(self, source: str, target: str | None, pieces: list[tuple[datetime, int]]) -> None:
        for expiry, minutes in pieces:
            self.buckets[source][expiry] -= minutes
            if target in (POOL,) or (target and target.startswith("person:")):
                self.buckets[target][expiry] += minutes
            elif target:
                self.sinks[target] += minutes


class BankMachine(RuleBasedStateMachine):
    """One provider's ledger per example (providers isolate ledgers), all in the test's database."""

    accruals = Bundle("accruals")
    bookings = Bundle("bookings")
    transfers = Bundle("transfers")

    database_url: str = ""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.conn: asyncpg.Connection = self.run(connect(self.database_url))
        # Each example runs in a transaction rolled back at the end (the ledger's own transactions
        # become savepoints), so examples never see each other's rows.
        self.example = self.conn.transaction()
        self.run(self.example.start())
        self.model = Model()
        self.now = BASE
        self.clock = 0  # distinct check-out minutes, so every accrual's expiry is unique
        self.visit_facts: dict[UUID, tuple[int, datetime, int]] = {}  # visit -> (person, expiry, banked)
        self.short: dict[UUID, int] = {}  # visit -> net minutes on record short of its accrual

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def teardown(self) -> None:
        self.run(self.example.rollback())
        self.run(self.conn.close())
        self.loop.close()

    @initialize()
    def seed(self) -> None:
        self.tenant, self.provider, self.contract = new_id(), new_id(), new_id()
        self.people = [new_id() for _ in range(PEOPLE)]
        self.run(self._seed())

    async def _seed(self) -> None:
        c = self.conn
        await c.execute(
            "INSERT INTO tenants (tenant_id, name, zone, holiday_region, currency, max_event_age_days) "
            "VALUES ($1, 'Model', 'Europe/London', 'GB-ENG', 'GBP', 45)",
            self.tenant,
        )
        await c.execute(
            "INSERT INTO providers (tenant_id, id, code, name) VALUES ($1, $2, 'M', 'M')", self.tenant, self.provider
        )
        await c.execute(
            """INSERT INTO contracts (tenant_id, id, provider_id, model, period, rates, pay_rules, banking, valid_from)
               VALUES ($1, $2, $3, 'outcome_based', 'week', $4, '{}', $5, '2026-01-01')""",
            self.tenant,
            self.contract,
            self.provider,
            RATES,
            {"expiry_weeks": EXPIRY_WEEKS, "cap_min": CAP, "expiry_action": "credit_note"},
        )
        for n, person in enumerate(self.people):
            await c.execute(
                "INSERT INTO people (tenant_id, id, reference, display_name, lat, lon, geofence_m) "
                "VALUES ($1, $2, $3, 'x', 53.7, -2.7, 100)",
                self.tenant,
                person,
                f"M-{n}",
            )

    async def _visit(self, person: int, funding: str, planned: int, banked: int, status: str, end: datetime) -> UUID:
        visit_id = new_id()
        actual = {"attendances": [{"counted": True, "check_out": end.isoformat()}], "place_payables": [0]}
        await self.conn.execute(
            """INSERT INTO visits (tenant_id, id, person_id, contract_id, provider_id, planned_start, planned_min,
                                   carers_required, funding, origin, approval, status, band_start, actual, banked_min)
               VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, 'commissioner', 'approved', $9, $6, $10, $11)""",
            self.tenant,
            visit_id,
            self.people[person],
            self.contract,
            self.provider,
            end - timedelta(minutes=planned),
            planned,
            funding,
            status,
            actual,
            banked,
        )
        return visit_id

    async def _sync(self, visit_id: UUID) -> None:
        async with self.conn.transaction():
            await ledger.sync_visits(self.conn, self.tenant, [visit_id], self.now)

    # --- accruals and their corrections --------------------------------------------------------

    @rule(target=accruals, person=st.integers(0, 1), banked=st.integers(5, 45))
    def accrue(self, person: int, banked: int) -> UUID:
        self.clock += 1
        end = self.now - timedelta(hours=1) + timedelta(minutes=self.clock)
        expiry = end + timedelta(weeks=EXPIRY_WEEKS)
        visit_id: UUID = self.run(self._visit(person, "package", 60, banked, "completed", end))
        self.run(self._sync(visit_id))
        self._model_accrue(person, expiry, banked)
        self.visit_facts[visit_id] = (person, expiry, banked)
        return visit_id

    def _model_accrue(self, person: int, expiry: datetime, minutes: int) -> None:
        account = person_account(self.people[person])
        to_person = max(0, min(minutes, CAP - self.model.balance(account)))
        self.model.buckets[account][expiry] += to_person
        self.model.buckets[POOL][expiry] += minutes - to_person

    @rule(visit=accruals, banked=st.integers(0, 45))
    def reconciliation_changes(self, visit: UUID, banked: int) -> None:
        person, expiry, before = self.visit_facts[visit]
        self.run(
            self.conn.execute(
                "UPDATE visits SET banked_min = $2 WHERE tenant_id = $1 AND id = $3", self.tenant, banked, visit
            )
        )
        self.run(self._sync(visit))
        self.visit_facts[visit] = (person, expiry, banked)
        if banked > before:
            undone = min(self.short.get(visit, 0), banked - before)  # what was charged short comes back first
            self.short[visit] = self.short.get(visit, 0) - undone
            self._model_accrue(person, expiry, banked - before - undone)
            return
        left = before - banked
        account = person_account(self.people[person])
        for acct in (account, POOL):  # the accrual's own lots first, expired or not
            piece = min(left, max(0, self.model.available(acct, expiry)))
            self.model.move(acct, None, [(expiry, piece)])
            left -= piece
        more = self.model.oldest_first(account, left, self.now, skip=expiry)
        self.model.move(account, None, more)  # the rest is a shortfall, outside the ledger
        self.short[visit] = self.short.get(visit, 0) + left - sum(m for _, m in more)

    # --- redeployment ------------------------------------------------------------------------------

    @rule(target=bookings, person=st.integers(0, 2), minutes=st.integers(1, 40))
    def book(self, person: int, minutes: int) -> UUID | None:
        account = person_account(self.people[person])
        pieces = self.model.oldest_first(account, minutes, self.now)
        try:
            visit_id: UUID = self.run(self._book(person, minutes))
        except RuleError as error:
            assert (error.code, sum(m for _, m in pieces) < minutes) == ("insufficient_bank", True)  # noqa: PT017
            return None
        assert sum(m for _, m in pieces) == minutes
        self.model.holds[visit_id] = (account, pieces)
        return visit_id

    async def _book(self, person: int, minutes: int) -> UUID:
        """The visit and its hold in one transaction, as the API makes them."""
        async with self.conn.transaction():
            visit_id = await self._visit(person, "bank", minutes, 0, "planned", self.now + timedelta(days=1))
            await ledger.place_visit_hold(
                self.conn,
                self.tenant,
                visit_id=visit_id,
                provider_id=self.provider,
                person_id=self.people[person],
                minutes=minutes,
                now=self.now,
            )
            return visit_id

    @rule(booking=consumes(bookings), share=st.floats(0, 1), missed=st.booleans())
    def visit_happens(self, booking: UUID | None, share: float, missed: bool) -> None:
        if booking is None:
            return
        account, pieces = self.model.holds.pop(booking)
        planned = sum(m for _, m in pieces)
        delivered = 0 if missed else round(planned * share)
        places = [delivered]
        self.run(
            self.conn.execute(
                """UPDATE visits SET status = $3, actual = jsonb_set(actual, '{place_payables}', $4::jsonb)
                   WHERE tenant_id = $1 AND id = $2""",
                self.tenant,
                booking,
                "missed" if missed else "completed",
                places,
            )
        )
        self.run(self._sync(booking))
        taken, left = [], delivered
        for expiry, m in pieces:
            if left > 0:
                taken.append((expiry, min(m, left)))
                left -= min(m, left)
        self.model.move(account, "delivered", taken)

    # --- transfers and allocations -----------------------------------------------------------------

    @rule(target=transfers, giver=st.integers(0, 1), step=st.integers(1, 2), minutes=st.integers(1, 40))
    def request_transfer(self, giver: int, step: int, minutes: int) -> UUID | None:
        receiver = min(giver + step, PEOPLE - 1)
        account = person_account(self.people[giver])
        pieces = self.model.oldest_first(account, minutes, self.now)
        try:
            transfer_id: UUID = self.run(self._request(giver, receiver, minutes))
        except RuleError:
            assert sum(m for _, m in pieces) < minutes
            return None
        self.model.holds[transfer_id] = (account, pieces)
        self.receivers[transfer_id] = person_account(self.people[receiver])
        return transfer_id

    @property
    def receivers(self) -> dict[UUID, str]:
        if not hasattr(self, "_receivers"):
            self._receivers: dict[UUID, str] = {}
        return self._receivers

    async def _request(self, giver: int, receiver: int, minutes: int) -> UUID:
        async with self.conn.transaction():
            return await ledger.request_transfer(
                self.conn,
                self.tenant,
                provider_id=self.provider,
                from_person_id=self.people[giver],
                to_person_id=self.people[receiver],
                minutes=minutes,
                review_ref="model",
                by="requester",
                now=self.now,
            )

    @rule(transfer=consumes(transfers), approve=st.booleans())
    def decide(self, transfer: UUID | None, approve: bool) -> None:
        if transfer is None:
            return
        self.run(self._decide(transfer, approve))
        account, pieces = self.model.holds.pop(transfer)
        if approve:
            self.model.move(account, self.receivers[transfer], pieces)

    async def _decide(self, transfer_id: UUID, approve: bool) -> None:
        async with self.conn.transaction():
            row = await self.conn.fetchrow(
                "SELECT * FROM bank_transfers WHERE tenant_id = $1 AND id = $2", self.tenant, transfer_id
            )
            assert row is not None
            await ledger.decide_transfer(self.conn, self.tenant, row, approve=approve, by="decider", now=self.now)

    @rule(minutes=st.integers(1, 30))
    def allocate(self, minutes: int) -> None:
        pieces = self.model.oldest_first(POOL, minutes, self.now)
        try:
            self.run(self._allocate(minutes))
        except RuleError:
            assert sum(m for _, m in pieces) < minutes
            return
        self.model.move(POOL, person_account(self.people[2]), pieces)

    async def _allocate(self, minutes: int) -> None:
        async with self.conn.transaction():
            await ledger.allocate(
                self.conn,
                self.tenant,
                provider_id=self.provider,
                person_id=self.people[2],
                minutes=minutes,
                note="model",
                by="c",
                now=self.now,
            )

    # --- time ----------------------------------------------------------------------------------------

    @rule(days=st.integers(1, 9))
    def time_passes_and_lots_expire(self, days: int) -> None:
        self.now += timedelta(days=days)
        self.run(self._expire())
        for account, buckets in list(self.model.buckets.items()):
            for expiry in list(buckets):
                if expiry <= self.now:
                    unheld = self.model.available(account, expiry)
                    if unheld > 0:
                        self.model.move(account, "expired", [(expiry, unheld)])

    async def _expire(self) -> None:
        while True:
            async with self.conn.transaction():
                if await ledger.expire_due(self.conn, self.now, 500) < 500:
                    return

    # --- after every step ----------------------------------------------------------------------------

    @invariant()
    def the_database_equals_the_model(self) -> None:
        if not hasattr(self, "tenant"):
            return
        rows = self.run(
            self.conn.fetch(
                """SELECT account, sum(amount)::int AS balance FROM (
                       SELECT to_account AS account, minutes AS amount FROM bank_postings WHERE tenant_id = $1
                       UNION ALL SELECT from_account, -minutes FROM bank_postings WHERE tenant_id = $1) m
                   GROUP BY account""",
                self.tenant,
            )
        )
        stored = {row["account"]: row["balance"] for row in rows}
        accounts = {*self.model.buckets, *self.model.sinks}
        for account in accounts:
            expected = self.model.sinks[account] if account in self.model.sinks else self.model.balance(account)
            assert stored.get(account, 0) == expected, (account, stored, dict(self.model.buckets))
        lots = self.run(
            self.conn.fetch(
                """SELECT l.account, l.expires_at, sum(coalesce(i.m, 0) - coalesce(o.m, 0))::int AS remaining
                   FROM bank_lots l
                   LEFT JOIN (SELECT to_lot_id, sum(minutes) AS m FROM bank_postings WHERE tenant_id = $1
                              GROUP BY to_lot_id) i ON i.to_lot_id = l.id
                   LEFT JOIN (SELECT from_lot_id, sum(minutes) AS m FROM bank_postings WHERE tenant_id = $1
                              GROUP BY from_lot_id) o ON o.from_lot_id = l.id
                   WHERE l.tenant_id = $1 GROUP BY l.account, l.expires_at""",
                self.tenant,
            )
        )
        by_expiry = {(row["account"], row["expires_at"]): row["remaining"] for row in lots if row["remaining"]}
        assert by_expiry == {
            (account, expiry): minutes
            for account, buckets in self.model.buckets.items()
            for expiry, minutes in buckets.items()
            if minutes
        }  # which lots were taken (oldest expiry first) shows here
        held = self.run(
            self.conn.fetch(
                """SELECT h.account, sum(h.minutes)::int AS held FROM bank_holds h
                   WHERE h.tenant_id = $1
                     AND NOT EXISTS (SELECT 1 FROM bank_hold_ends e
                                     WHERE e.tenant_id = h.tenant_id AND e.hold_id = h.id)
                   GROUP BY h.account""",
                self.tenant,
            )
        )
        assert {row["account"]: row["held"] for row in held} == {
            account: self.model.held(account) for account in self.model.buckets if self.model.held(account)
        }
        for account in self.model.buckets:
            assert self.model.balance(account) - self.model.held(account) >= 0
        shortfalls = self.run(
            self.conn.fetch(
                """SELECT visit_id, sum(minutes)::int AS net FROM bank_shortfalls WHERE tenant_id = $1
                   GROUP BY visit_id""",
                self.tenant,
            )
        )
        assert {row["visit_id"]: row["net"] for row in shortfalls if row["net"]} == {
            visit: minutes for visit, minutes in self.short.items() if minutes
        }
        found = self.run(breaches(self.conn))
        assert found == [], found


@pytest.fixture
def machine(database_url: str) -> type[BankMachine]:
    BankMachine.database_url = database_url
    return BankMachine


def test_the_bank_follows_the_model(machine: type[BankMachine]) -> None:
    test_case = machine.TestCase
    test_case.settings = settings(
        max_examples=25, stateful_step_count=20, deadline=None, suppress_health_check=list(HealthCheck)
    )
    test_case().runTest()
