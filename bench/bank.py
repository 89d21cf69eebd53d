"""Bank benchmark (issue #6): sustained postings/s through the ledger, and as-of balance latency
over a large ledger.

Creates a throw-away database (dropped again at the end) and runs two parts in it:

1. Postings/s with the invariants on. One tenant, `--providers` providers (an outcome-based
   contract each), `--people` people, each with a few accrued lots to start from (accrued through
   `ledger.sync_visits`, not timed). Then `--workers` connections drive the ledger for
   `--duration` seconds, each operation in its own transaction as the API and the reconciliation
   worker run it (account locks, append-only triggers and foreign keys all on): accruals
   (`sync_visits` over `--accrual-batch` reconciled outcome-based visits, as a reconciliation batch
   calls it; 200 by default, decision 117: at thousands of postings a second the worker's
   once-a-second drain finds thousands of visits queued and takes them 2,000 a batch, so its
   accrual batches are hundreds; `--accrual-batch 20` is the light-load shape, reported beside it),
   corrections (a visit's banked minutes reduced, then `sync_visits`: take-backs),
   bank-funded bookings (visit row + `place_visit_hold`) and their deliveries (visit completed or
   missed, then `sync_visits`), transfers (`request_transfer`, then `decide_transfer`),
   allocations from the pool (`allocate`) and, on one connection about once a second, the expiry
   job (`expire_due`). Postings are counted in the table before and after; it prints postings/s,
   operations/s, per-operation latency, postings by kind, and then the invariant checks
   `carebank check` runs (services/banking/check.py, if it exists) with their duration, next to
   three checks of its own.
2. `balances.person_bank` as of random instants with `--postings` postings loaded (default
   10,000,000): a second tenant with `--as-of-providers` providers and one person per ~100
   postings; each ledger's history over two years is simulated in Python (accruals into lots,
   bank-funded visits holding and then taking lots oldest expiry first, a few missed, expiry of
   what is left after 12 weeks, some holds still open) and COPYed with its lots, holds, hold lots
   and hold ends. The secondary indexes of those tables are dropped for the load and built again
   from their own definitions afterwards (timed apart); foreign-key triggers are off during the
   load (`session_replication_role = replica`; the rows are consistent by construction, except
   that the visits they name are not loaded). Then ANALYZE, and p50/p99 of `person_bank` for
   `--queries` random people (half as of now, half as of a random instant of the two years),
   with its one statement (`store.account_lots`) timed apart.

It prints figures and never asserts; the exit code is non-zero only when the benchmark itself broke.
It is run as a script, so `bench/` is on sys.path and the shared helpers come from reconcile.py.

    .venv/bin/python bench/bank.py            # 10,000,000 postings (14-16 minutes on the shared 2-core machine)
    .venv/bin/python bench/bank.py --quick    # 15 s of postings, 1,000,000 loaded (3.5 minutes there)
    .venv/bin/python bench/bank.py --postings 2000000 --skip-postings   # the as-of part alone, smaller
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import inspect
import os
import random
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg
import msgspec
from reconcile import RATES, add_scratch_database_args, in_scratch_database, memory_line, say
from uuid_utils import uuid7

from infra import collector
from infra.db import connect, migrate_url
from schemas.catalog import Banking, PayRules
from services.banking import balances, ledger, rules, store
from services.billing.rules import band_of
from services.common.domain import RuleError
from services.common.ids import new_id
from services.identity.rules import holiday_calendar
from services.planning import store as planning_store
from services.reconcile import store as reconcile_store

TARGET_POSTINGS_PER_S = 5_000.0
TARGET_P99_MS = 10.0
ZONE = "Europe/London"
EXPIRY = timedelta(weeks=Banking().expiry_weeks)
HISTORY = timedelta(days=730)
ACCRUE_MIN = (10, 15, 15, 20, 20, 25, 30, 45)
REDEPLOY_MIN = (30, 30, 45, 60)
VISIT_COLUMNS = (
    "tenant_id",
    "id",
    "person_id",
    "contract_id",
    "provider_id",
    "planned_start",
    "planned_min",
    "carers_required",
    "funding",
    "origin",
    "approval",
    "status",
    "band_start",
    "payable_min",
    "banked_min",
    "reconciled_at",
)
LOT_COLUMNS = (
    "tenant_id",
    "id",
    "provider_id",
    "contract_id",
    "account",
    "rate_pence_per_hour",
    "effective_at",
    "expires_at",
    "visit_id",
    "recorded_at",
)
POSTING_COLUMNS = (
    "tenant_id",
    "id",
    "provider_id",
    "kind",
    "from_account",
    "to_account",
    "minutes",
    "from_lot_id",
    "to_lot_id",
    "visit_id",
    "effective_at",
    "recorded_at",
)
HOLD_COLUMNS = ("tenant_id", "id", "provider_id", "account", "minutes", "visit_id", "held_at")
HOLD_LOT_COLUMNS = ("tenant_id", "hold_id", "lot_id", "minutes")
HOLD_END_COLUMNS = ("tenant_id", "hold_id", "outcome", "ended_at")
QUEUE_COLUMNS = ("tenant_id", "id", "lot_id", "expires_at")
KINDS_SQL = "SELECT kind, count(*) AS n FROM bank_postings GROUP BY kind"
BANK_TABLES = (
    "bank_accounts",
    "bank_lots",
    "bank_postings",
    "bank_holds",
    "bank_hold_lots",
    "bank_hold_ends",
    "bank_expiry_queue",
    "bank_transfers",
    "bank_shortfalls",
)
LOADED_TABLES = ("bank_lots", "bank_postings", "bank_holds", "bank_hold_lots", "bank_hold_ends", "bank_expiry_queue")


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def ms_line(values: Sequence[float]) -> str:
    """p50 / p99 / max of durations in seconds, in ms."""
    return (
        f"p50 {percentile(values, 0.5) * 1000:6.2f} ms, p99 {percentile(values, 0.99) * 1000:7.2f} ms, "
        f"max {max(values, default=0.0) * 1000:7.2f} ms"
    )


def _cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds so far of these processes (our PostgreSQL backends)."""
    tick, total = float(os.sysconf("SC_CLK_TCK")), 0.0
    for pid in pids:
        try:
            raw = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rfind(")") + 2 :].split()
        total += (float(fields[11]) + float(fields[12])) / tick
    return total


async def backend_pids(conns: Sequence[asyncpg.Connection]) -> list[int]:
    return [int(await conn.fetchval("SELECT pg_backend_pid()")) for conn in conns]


@dataclass
class OwnCpu:
    """CPU used during a phase by this process and by its own PostgreSQL backends (not by other
    work on the shared machine, nor by parallel workers, the WAL writer or the checkpointer), as %
    of one core, with the machine's load average at the end."""

    pids: list[int]
    wall: float = 0.0
    bench: float = 0.0
    postgres: float = 0.0
    _start: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def start(self) -> OwnCpu:
        self._start = (time.perf_counter(), time.process_time(), _cpu_seconds(self.pids))
        return self

    def stop(self) -> OwnCpu:
        wall0, bench0, pg0 = self._start
        self.wall = max(time.perf_counter() - wall0, 1e-9)
        self.bench = 100 * (time.process_time() - bench0) / self.wall
        self.postgres = 100 * (_cpu_seconds(self.pids) - pg0) / self.wall
        return self

    def line(self) -> str:
        load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
        return (
            f"cpu (100% = one core, {os.cpu_count()} cores): benchmark process (Python) {self.bench:.0f}%, "
            f"its PostgreSQL backends {self.postgres:.0f}%; machine load average {load}"
        )


async def seed_tenant(conn: asyncpg.Connection, providers: int, label: str) -> tuple[UUID, list[UUID]]:
    """A tenant with `providers` providers, each with one outcome-based weekly contract; returns
    (tenant, [(provider, contract)] flattened as provider ids with contract ids in the same order)."""
    tenant_id = new_id()
    await conn.execute(
        """INSERT INTO tenants (tenant_id, name, zone, holiday_region, currency, max_event_age_days)
           VALUES ($1, $2, $3, 'GB-ENG', 'GBP', 45)""",
        tenant_id,
        f"Bench {label}",
        ZONE,
    )
    provider_ids = [new_id() for _ in range(providers)]
    for i, provider_id in enumerate(provider_ids):
        await conn.execute(
            "INSERT INTO providers (tenant_id, id, code, name) VALUES ($1, $2, $3, $4)",
            tenant_id,
            provider_id,
            f"P{i}",
            f"Provider {i}",
        )
    return tenant_id, provider_ids


async def seed_contracts(
    conn: asyncpg.Connection, tenant_id: UUID, provider_ids: Sequence[UUID], cap_min: int
) -> list[UUID]:
    """One outcome-based weekly contract per provider (default banking rules but the cap)."""
    encode = msgspec.json.encode
    banking = msgspec.to_builtins(Banking(cap_min=cap_min))
    contract_ids = []
    for provider_id in provider_ids:
        contract_id = new_id()
        await conn.execute(
            """INSERT INTO contracts (tenant_id, id, provider_id, model, period, rates, pay_rules, banking, valid_from)
               VALUES ($1, $2, $3, 'outcome_based', 'week', $4::text::jsonb, $5::text::jsonb, $6::text::jsonb, $7)""",
            tenant_id,
            contract_id,
            provider_id,
            encode(RATES).decode(),
            encode(msgspec.to_builtins(PayRules())).decode(),
            encode(banking).decode(),
            (datetime.now(UTC) - HISTORY - timedelta(days=30)).date(),
        )
        contract_ids.append(contract_id)
    return contract_ids


async def seed_people(conn: asyncpg.Connection, tenant_id: UUID, count: int, prefix: str) -> list[UUID]:
    person_ids = [new_id() for _ in range(count)]
    await conn.copy_records_to_table(
        "people",
        records=[(tenant_id, p, f"{prefix}{i:07d}", f"Person {i}", 51.5, -0.1, 100) for i, p in enumerate(person_ids)],
        columns=("tenant_id", "id", "reference", "display_name", "lat", "lon", "geofence_m"),
    )
    return person_ids


# ---------------------------------------------------------------------------------------------
# Part 1: postings/s through the ledger


@dataclass
class Ledger1:
    """The world of part 1."""

    tenant_id: UUID
    provider_ids: list[UUID]
    contract_of: dict[UUID, UUID]
    people_of: dict[UUID, list[UUID]]  # provider -> its people
    provider_of: dict[UUID, UUID]  # person -> provider


def accrual_visit(world: Ledger1, rng: random.Random, person_id: UUID, end: datetime, banked: int) -> tuple[Any, ...]:
    """A reconciled, completed, package-funded visit on an outcome-based contract that banks `banked`
    minutes (no attendances stored, so the bank dates it at planned start + planned minutes)."""
    planned_min = rng.choice((30, 45, 60))
    start = end - timedelta(minutes=planned_min)
    provider_id = world.provider_of[person_id]
    return (
        world.tenant_id,
        new_id(),
        person_id,
        world.contract_of[provider_id],
        provider_id,
        start,
        planned_min,
        1,
        "package",
        "commissioner",
        "approved",
        "completed",
        start,
        planned_min - banked,
        banked,
        end,
    )


async def seed_part1(conn: asyncpg.Connection, args: argparse.Namespace) -> Ledger1:
    tenant_id, provider_ids = await seed_tenant(conn, args.providers, "postings")
    contracts = await seed_contracts(conn, tenant_id, provider_ids, args.cap_min)
    person_ids = await seed_people(conn, tenant_id, args.people, "A")
    provider_of = {p: provider_ids[i % len(provider_ids)] for i, p in enumerate(person_ids)}
    people_of: dict[UUID, list[UUID]] = defaultdict(list)
    for person_id, provider_id in provider_of.items():
        people_of[provider_id].append(person_id)
    return Ledger1(tenant_id, provider_ids, dict(zip(provider_ids, contracts, strict=True)), people_of, provider_of)


async def copy_visits(conn: asyncpg.Connection, rows: list[tuple[Any, ...]]) -> None:
    """COPY visit rows that are consistent by construction, without the per-row FK triggers."""
    await conn.execute("SET session_replication_role = replica")
    try:
        await planning_store.copy_visits(conn, rows, VISIT_COLUMNS)
    finally:
        await conn.execute("SET session_replication_role = DEFAULT")


async def starting_balances(conn: asyncpg.Connection, world: Ledger1, args: argparse.Namespace) -> None:
    """Give every person `--warm-up-visits` accruals of the last 11 weeks (every 50th person four
    times as many of 45 minutes, passing the cap, so the pools hold minutes): the visits, their lots,
    accrue and cap-overflow postings and expiry queue entries COPYed as sync_visits would have
    written them (same rate, dates, cap split), and a released hold on each person's earliest lot (a
    missed bank-funded visit), FK triggers off."""
    rng = random.Random(1)
    now = datetime.now(UTC)
    zone, calendar = ZoneInfo(ZONE), holiday_calendar("GB-ENG")
    visits = []
    for i, person_id in enumerate(world.provider_of):
        big = i % 50 == 0
        for _ in range(args.warm_up_visits * (4 if big else 1)):
            end = now - timedelta(seconds=rng.randint(3600, 11 * 7 * 86400))
            visits.append(accrual_visit(world, rng, person_id, end, 45 if big else rng.choice(ACCRUE_MIN)))
    visits.sort(key=lambda row: row[15])  # the order they were reconciled in
    balance: Counter[UUID] = Counter()
    lots, postings = [], []
    tenant_id = world.tenant_id
    for visit in visits:
        visit_id, person_id, contract_id, provider_id, start, planned_min = visit[1:7]
        banked, end = visit[14], start + timedelta(minutes=planned_min)
        rate = int(RATES[band_of(start, zone, calendar)])
        to_person, to_pool = rules.cap_split(balance[person_id], banked, args.cap_min)
        balance[person_id] += to_person
        for account, kind, minutes in (
            (rules.person_account(person_id), "accrue", to_person),
            (rules.POOL, "cap_overflow", to_pool),
        ):
            if minutes > 0:
                lot_id = new_id()
                lots.append(
                    (tenant_id, lot_id, provider_id, contract_id, account, rate, end, end + EXPIRY, visit_id, visit[15])
                )
                postings.append(
                    (
                        tenant_id,
                        new_id(),
                        provider_id,
                        kind,
                        "owed",
                        account,
                        minutes,
                        None,
                        lot_id,
                        visit_id,
                        end,
                        visit[15],
                    )
                )
    # Each person's earliest lot was also held once by a bank-funded visit that was then missed (the
    # hold released): a live ledger has a history of holds, and plans made from statistics of empty
    # hold tables scan them whole for every lot once they fill (decisions 105, 108).
    credited = {posting[8]: posting[6] for posting in postings}
    earliest: dict[str, tuple[Any, ...]] = {}
    for lot in lots:
        if lot[4] != rules.POOL and lot[4] not in earliest:
            earliest[lot[4]] = lot
    missed, holds, hold_lots, hold_ends = [], [], [], []
    for account, lot in earliest.items():
        held_at = lot[6] + timedelta(hours=1)
        start = held_at + timedelta(days=1)
        ended = start + timedelta(hours=2)
        if ended > now:
            continue
        visit_id, hold_id = new_id(), new_id()
        person_id = rules.person_of(account)
        visit = (tenant_id, visit_id, person_id, lot[3], lot[2], start, 30, 1, "bank", "commissioner", "approved")
        missed.append((*visit, "missed", start, 0, 0, ended))
        minutes = min(15, credited[lot[1]])
        holds.append((tenant_id, hold_id, lot[2], account, minutes, visit_id, held_at))
        hold_lots.append((tenant_id, hold_id, lot[1], minutes))
        hold_ends.append((tenant_id, hold_id, "released", ended))
    t0 = time.perf_counter()
    await conn.execute("SET session_replication_role = replica")
    try:
        await planning_store.copy_visits(conn, visits + missed, VISIT_COLUMNS)
        await conn.copy_records_to_table("bank_lots", records=lots, columns=LOT_COLUMNS)
        await conn.copy_records_to_table("bank_holds", records=holds, columns=HOLD_COLUMNS)
        await conn.copy_records_to_table("bank_hold_lots", records=hold_lots, columns=HOLD_LOT_COLUMNS)
        await conn.copy_records_to_table("bank_hold_ends", records=hold_ends, columns=HOLD_END_COLUMNS)
        await conn.copy_records_to_table("bank_postings", records=postings, columns=POSTING_COLUMNS)
        await conn.copy_records_to_table(
            "bank_expiry_queue", records=[(tenant_id, new_id(), lot[1], lot[7]) for lot in lots], columns=QUEUE_COLUMNS
        )
        # The lock rows sync_visits makes for an account's first accrual, with the balance a person's
        # keeps (every posting here credits one account; the pool keeps none).
        kept: Counter[tuple[UUID, str]] = Counter()
        for posting in postings:
            kept[(posting[2], posting[5])] += posting[6]
        await conn.copy_records_to_table(
            "bank_accounts",
            records=[
                (tenant_id, provider_id, account, None if account == rules.POOL else minutes)
                for (provider_id, account), minutes in sorted(kept.items())
            ],
            columns=("tenant_id", "provider_id", "account", "balance"),
        )
    finally:
        await conn.execute("SET session_replication_role = DEFAULT")
    pool = sum(posting[6] for posting in postings if posting[3] == "cap_overflow")
    say(
        f"starting balances: {len(visits):,} reconciled visits with {len(lots):,} lots and {len(postings):,} postings "
        f"({pool:,} minutes in the pools), {len(holds):,} released holds of missed bank-funded visits, COPYed in "
        f"{time.perf_counter() - t0:.1f} s"
    )


@dataclass
class OpStats:
    seconds: list[float] = field(default_factory=list)
    refused: int = 0
    deadlocks: int = 0


@dataclass
class Worker:
    """One connection's state: its own pre-seeded accrual visits, its bookings and transfers."""

    index: int
    conn: asyncpg.Connection
    rng: random.Random
    to_accrue: list[tuple[UUID, int]]  # (visit, minutes its reconciliation banks)
    accrued: list[UUID] = field(default_factory=list)
    booked: list[UUID] = field(default_factory=list)
    transfers: list[UUID] = field(default_factory=list)
    stats: dict[str, OpStats] = field(default_factory=lambda: defaultdict(OpStats))
    ran_out_at: float | None = None


WEIGHTS = {"accrue": 40, "correct": 4, "book": 16, "deliver": 16, "transfer": 8, "decide": 8, "allocate": 4}


async def op_accrue(w: Worker, world: Ledger1, batch: int) -> None:
    """As reconciliation does for a batch: lock the visits, save their state (here only the banked
    minutes change), then sync_visits in the same transaction."""
    todo, w.to_accrue = w.to_accrue[:batch], w.to_accrue[batch:]
    ids = [visit_id for visit_id, _ in todo]
    async with w.conn.transaction():
        await reconcile_store.lock_visits(w.conn, world.tenant_id, ids)
        await w.conn.execute(
            """UPDATE visits v SET banked_min = u.banked, payable_min = v.planned_min - u.banked
               FROM unnest($2::uuid[], $3::int[]) u (id, banked) WHERE v.tenant_id = $1 AND v.id = u.id""",
            world.tenant_id,
            ids,
            [minutes for _, minutes in todo],
        )
        await ledger.sync_visits(w.conn, world.tenant_id, ids, datetime.now(UTC))
    w.accrued.extend(ids)


async def op_correct(w: Worker, world: Ledger1) -> None:
    """A reconciliation that banks 5 minutes less than before (an amendment): take-back postings."""
    visit_id = w.accrued.pop(w.rng.randrange(len(w.accrued)))
    async with w.conn.transaction():
        await reconcile_store.lock_visits(w.conn, world.tenant_id, [visit_id])
        await w.conn.execute(
            "UPDATE visits SET banked_min = greatest(banked_min - 5, 0) WHERE tenant_id = $1 AND id = $2",
            world.tenant_id,
            visit_id,
        )
        await ledger.sync_visits(w.conn, world.tenant_id, [visit_id], datetime.now(UTC))


async def op_book(w: Worker, world: Ledger1) -> None:
    """A bank-funded visit booked for later today: the visit row and its hold, one transaction."""
    person_id = w.rng.choice(list(world.provider_of))
    provider_id = world.provider_of[person_id]
    planned_min = w.rng.choice(REDEPLOY_MIN)
    now = datetime.now(UTC)
    start = now + timedelta(hours=w.rng.randint(1, 8))
    visit_id = new_id()
    async with w.conn.transaction():
        await w.conn.execute(
            """INSERT INTO visits (tenant_id, id, person_id, contract_id, provider_id, planned_start, planned_min,
                                   carers_required, funding, origin, approval, status, band_start)
               VALUES ($1, $2, $3, $4, $5, $6, $7, 1, 'bank', 'commissioner', 'approved', 'planned', $6)""",
            world.tenant_id,
            visit_id,
            person_id,
            world.contract_of[provider_id],
            provider_id,
            start,
            planned_min,
        )
        await ledger.place_visit_hold(
            w.conn,
            world.tenant_id,
            visit_id=visit_id,
            provider_id=provider_id,
            person_id=person_id,
            minutes=planned_min,
            now=now,
        )
    w.booked.append(visit_id)


async def op_deliver(w: Worker, world: Ledger1) -> None:
    """A booked bank-funded visit reconciled: completed (90%, payable around its planned minutes:
    redeploy postings and the rest released) or missed (the whole hold released)."""
    visit_id = w.booked.pop(0)
    now = datetime.now(UTC)
    missed = w.rng.random() < 0.1
    async with w.conn.transaction():
        await reconcile_store.lock_visits(w.conn, world.tenant_id, [visit_id])
        planned = await w.conn.fetchval(
            "SELECT planned_min FROM visits WHERE tenant_id = $1 AND id = $2", world.tenant_id, visit_id
        )
        payable = 0 if missed else max(1, planned + w.rng.randint(-10, 5))
        actual = {
            "place_payables": [] if missed else [payable],
            "attendances": [] if missed else [{"check_out": now.isoformat(), "counted": True}],
        }
        await w.conn.execute(
            """UPDATE visits SET status = $3, actual = $4::jsonb, payable_min = $5, reconciled_at = $6
               WHERE tenant_id = $1 AND id = $2""",
            world.tenant_id,
            visit_id,
            "missed" if missed else "completed",
            actual,
            payable,
            now,
        )
        await ledger.sync_visits(w.conn, world.tenant_id, [visit_id], now)


async def op_transfer(w: Worker, world: Ledger1) -> None:
    provider_id = w.rng.choice(world.provider_ids)
    giver, receiver = w.rng.sample(world.people_of[provider_id], 2)
    async with w.conn.transaction():
        transfer_id = await ledger.request_transfer(
            w.conn,
            world.tenant_id,
            provider_id=provider_id,
            from_person_id=giver,
            to_person_id=receiver,
            minutes=w.rng.randint(10, 30),
            review_ref=f"R-{w.index}-{len(w.transfers)}",
            by="bench-provider",
            now=datetime.now(UTC),
        )
    w.transfers.append(transfer_id)


async def op_decide(w: Worker, world: Ledger1) -> None:
    """As the approve/reject endpoints: read the transfer, then decide (80% approved)."""
    transfer_id = w.transfers.pop(0)
    async with w.conn.transaction():
        row = await store.get_transfer(w.conn, world.tenant_id, transfer_id)
        assert row is not None
        await ledger.decide_transfer(
            w.conn, world.tenant_id, row, approve=w.rng.random() < 0.8, by="bench-commissioner", now=datetime.now(UTC)
        )


async def op_allocate(w: Worker, world: Ledger1) -> None:
    provider_id = w.rng.choice(world.provider_ids)
    async with w.conn.transaction():
        await ledger.allocate(
            w.conn,
            world.tenant_id,
            provider_id=provider_id,
            person_id=w.rng.choice(world.people_of[provider_id]),
            minutes=w.rng.randint(10, 30),
            note="bench allocation",
            by="bench-commissioner",
            now=datetime.now(UTC),
        )


async def op_expire(w: Worker) -> None:
    async with w.conn.transaction():
        await ledger.expire_due(w.conn, datetime.now(UTC), 500)


def choose(w: Worker) -> str:
    kind = w.rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()))[0]
    if kind == "deliver" and not w.booked:
        kind = "book"
    if kind == "decide" and not w.transfers:
        kind = "transfer"
    if kind == "correct" and not w.accrued:
        kind = "accrue"
    if kind == "accrue" and not w.to_accrue:
        kind = "book"
    return kind


async def drive(w: Worker, world: Ledger1, args: argparse.Namespace, start: float, deadline: float) -> None:
    next_expiry = start + 1.0
    next_analyze = start + (args.analyze_every or deadline)
    while (now := time.perf_counter()) < deadline:
        if w.index == 0 and args.analyze_every and now >= next_analyze:
            # As autovacuum would (it is off on the development server): statistics of tables that
            # were nearly empty at the start, timed apart from the ledger's operations.
            await w.conn.execute(f"ANALYZE {', '.join(BANK_TABLES)}")
            w.stats["analyze"].seconds.append(time.perf_counter() - now)
            next_analyze = time.perf_counter() + args.analyze_every
            continue
        if w.index == 0 and now >= next_expiry:
            kind, next_expiry = "expire", now + 1.0
        else:
            kind = choose(w)
        if len(w.to_accrue) < args.accrual_batch and w.ran_out_at is None:  # accruals turn into bookings
            w.ran_out_at = now - start
        t0 = time.perf_counter()
        try:
            match kind:
                case "accrue":
                    await op_accrue(w, world, args.accrual_batch)
                case "correct":
                    await op_correct(w, world)
                case "book":
                    await op_book(w, world)
                case "deliver":
                    await op_deliver(w, world)
                case "transfer":
                    await op_transfer(w, world)
                case "decide":
                    await op_decide(w, world)
                case "allocate":
                    await op_allocate(w, world)
                case _:
                    await op_expire(w)
        except RuleError:
            w.stats[kind].refused += 1
        except asyncpg.DeadlockDetectedError:
            w.stats[kind].deadlocks += 1
        w.stats[kind].seconds.append(time.perf_counter() - t0)


async def own_checks(conn: asyncpg.Connection, tenant_id: UUID) -> list[str]:
    """Three of the ledger's invariants over part 1's tenant, as counts."""
    sums = await conn.fetchval(
        """SELECT count(*) FROM (
               SELECT provider_id, sum(amount) AS total FROM (
                   SELECT provider_id, minutes AS amount FROM bank_postings WHERE tenant_id = $1
                   UNION ALL SELECT provider_id, -minutes FROM bank_postings WHERE tenant_id = $1) m
               GROUP BY provider_id) s WHERE total <> 0""",
        tenant_id,
    )
    # The store's own SQL fragments are spliced in; every value is a $n parameter.
    row = await conn.fetchrow(
        f"""WITH lots AS (
                SELECT l.provider_id, l.account,
                       {store._REMAINING.format(as_of=store._FOREVER)} AS remaining,
                       {store._HELD.format(as_of=store._FOREVER)} AS held
                FROM bank_lots l WHERE l.tenant_id = $1),
            accounts AS (
                SELECT provider_id, account, sum(remaining) AS lots, sum(held) AS held FROM lots
                GROUP BY provider_id, account),
            bal AS (
                SELECT provider_id, account, sum(amount) AS balance FROM (
                    SELECT provider_id, to_account AS account, minutes AS amount FROM bank_postings WHERE tenant_id = $1
                    UNION ALL
                    SELECT provider_id, from_account, -minutes FROM bank_postings WHERE tenant_id = $1) m
                WHERE account = 'pool' OR account LIKE 'person:%' GROUP BY provider_id, account)
            SELECT (SELECT count(*) FROM lots WHERE remaining < 0 OR held > remaining) AS bad_lots,
                   (SELECT count(*) FROM bal b FULL JOIN accounts a USING (provider_id, account)
                     WHERE coalesce(b.balance, 0) <> coalesce(a.lots, 0)) AS lots_differ,
                   (SELECT count(*) FROM bal b LEFT JOIN accounts a USING (provider_id, account)
                     WHERE b.balance - coalesce(a.held, 0) < 0) AS below_zero,
                   (SELECT count(*) FROM bal) AS accounts""",  # noqa: S608
        tenant_id,
    )
    assert row is not None
    return [
        f"  ledgers not summing to 0: {sums}; of {row['accounts']:,} person and pool accounts, "
        f"below 0 counting holds: {row['below_zero']}, balance ≠ sum of its lots: {row['lots_differ']}; "
        f"lots held beyond or below their remainder: {row['bad_lots']}"
    ]


def project_check() -> Callable[..., Awaitable[object]] | None:
    """The invariant check `carebank check` runs, if services/banking/check.py exists by now."""
    if importlib.util.find_spec("services.banking.check") is None:
        return None
    module = importlib.import_module("services.banking.check")
    for name in ("check", "check_all", "check_invariants", "run_checks", "breaches", "verify"):
        fn = getattr(module, name, None)
        if inspect.iscoroutinefunction(fn):
            return fn
    return None


def describe(result: object) -> str:
    if isinstance(result, list | tuple | dict | set):
        return f"{len(result)} breaches reported" + (f", e.g. {str(next(iter(result)))[:160]}" if result else "")
    return repr(result)[:200]


async def part1(url: str, args: argparse.Namespace) -> None:
    say()
    say(
        f"== part 1: postings/s with the invariants on: {args.workers} connections for {args.duration:.0f} s, "
        f"{args.people:,} people at {args.providers} providers, accrual batches of {args.accrual_batch} =="
    )
    conns = [await connect(url) for _ in range(args.workers)]
    try:
        t0 = time.perf_counter()
        world = await seed_part1(conns[0], args)
        seeded = time.perf_counter() - t0
        say(f"seeded 1 tenant, {args.providers} providers and contracts, {args.people:,} people in {seeded:.1f} s")
        await starting_balances(conns[0], world, args)
        rng = random.Random(2)
        now = datetime.now(UTC)
        people = list(world.provider_of)
        rows, banked = [], []
        for _ in range(args.accrual_visits):
            # Mostly fresh reconciliations; 2% late ones of visits past their lots' expiry (the
            # expiry job then expires those lots).
            late = rng.random() < 0.02
            back = rng.randint(12 * 7 * 86400 + 3600, 13 * 7 * 86400) if late else rng.randint(600, 3 * 86400)
            # Waiting with nothing banked yet: the accrual writes the reconciled minutes first.
            banked.append(rng.choice(ACCRUE_MIN))
            rows.append(accrual_visit(world, rng, rng.choice(people), now - timedelta(seconds=back), 0))
        t0 = time.perf_counter()
        await copy_visits(conns[0], rows)
        await conns[0].execute("ANALYZE")
        say(f"{len(rows):,} reconciled visits waiting to accrue COPYed and ANALYZE in {time.perf_counter() - t0:.1f} s")
        share = len(rows) // args.workers
        pending = [(row[1], minutes) for row, minutes in zip(rows, banked, strict=True)]
        workers = [
            Worker(i, conn, random.Random(100 + i), pending[i * share : (i + 1) * share])
            for i, conn in enumerate(conns)
        ]
        before = await conns[0].fetchval("SELECT count(*) FROM bank_postings")
        kinds_before = {r["kind"]: r["n"] for r in await conns[0].fetch(KINDS_SQL)}
        cpu = OwnCpu(await backend_pids(conns)).start()
        start = time.perf_counter()
        await asyncio.gather(*(drive(w, world, args, start, start + args.duration) for w in workers))
        wall = time.perf_counter() - start
        cpu.stop()
        after = await conns[0].fetchval("SELECT count(*) FROM bank_postings")
        kinds_after = {r["kind"]: r["n"] for r in await conns[0].fetch(KINDS_SQL)}
        stats: dict[str, OpStats] = defaultdict(OpStats)
        for w in workers:
            for kind, s in w.stats.items():
                stats[kind].seconds += s.seconds
                stats[kind].refused += s.refused
                stats[kind].deadlocks += s.deadlocks
        ops = sum(len(s.seconds) for kind, s in stats.items() if kind != "analyze")
        postings = after - before
        verdict = "met" if postings / wall >= TARGET_POSTINGS_PER_S else "missed"
        say(
            f"postings written: {postings:,} in {wall:.1f} s = {postings / wall:,.0f} postings/s "
            f"(target >= {TARGET_POSTINGS_PER_S:,.0f}: {verdict}); {ops:,} operations = {ops / wall:,.0f} ops/s"
        )
        say(f"  {cpu.line()}")
        written = Counter({k: kinds_after.get(k, 0) - kinds_before.get(k, 0) for k in kinds_after})
        say("  postings by kind: " + ", ".join(f"{k} {n:,}" for k, n in written.most_common() if n))
        say("  operations (each its own transaction; latency includes waiting for account locks):")
        for kind in (*WEIGHTS, "expire", "analyze"):
            if not (s := stats[kind]).seconds:
                continue
            extra = f", accrual batch {args.accrual_batch} visits" if kind == "accrue" else ""
            say(
                f"    {kind:<9} {len(s.seconds):7,} ({len(s.seconds) / wall:6,.0f}/s) {ms_line(s.seconds)}; "
                f"refused (insufficient_bank) {s.refused}, deadlocks {s.deadlocks}{extra}"
            )
        ran_out = [w.ran_out_at for w in workers if w.ran_out_at is not None]
        if ran_out:
            say(f"  the pre-seeded accrual visits ran out after {min(ran_out):.0f} s: raise --accrual-visits")
        say(f"  {memory_line()}")
        t0 = time.perf_counter()
        # Statistics as autovacuum would keep them (it is off on the development server): the tables
        # were nearly empty at the last ANALYZE, and the per-lot sums below would scan them per lot.
        await conns[0].execute("ANALYZE")
        say(f"ANALYZE in {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        lines = await own_checks(conns[0], world.tenant_id)
        say(f"invariants over part 1's tenant (this benchmark's own SQL, {time.perf_counter() - t0:.2f} s):")
        for line in lines:
            say(line)
        check = project_check()
        if check is not None:
            t0 = time.perf_counter()
            try:
                result = await check(conns[0])
            except TypeError as exc:
                say(f"services/banking/check.py: {check.__name__}(conn) could not be called: {exc}")
            else:
                say(
                    f"services/banking/check.py {check.__name__} over the whole database: "
                    f"{time.perf_counter() - t0:.2f} s, {describe(result)}"
                )
    finally:
        for conn in conns:
            await conn.close()


# ---------------------------------------------------------------------------------------------
# Part 2: as-of balances over a large ledger


@dataclass
class Spec:
    tenant_id: UUID
    provider_ids: list[UUID]
    contract_ids: list[UUID]
    now: datetime
    per_ledger: float
    cap_min: int


@dataclass
class Rows:
    lots: list[tuple[Any, ...]] = field(default_factory=list)
    postings: list[tuple[Any, ...]] = field(default_factory=list)
    holds: list[tuple[Any, ...]] = field(default_factory=list)
    hold_lots: list[tuple[Any, ...]] = field(default_factory=list)
    hold_ends: list[tuple[Any, ...]] = field(default_factory=list)
    queue: list[tuple[Any, ...]] = field(default_factory=list)


def ledgers_of(index: int, providers: int) -> list[int]:
    """The providers (by index) a person is with: one, and a second for every 20th person."""
    first = index % providers
    return [first, (first + 1) % providers] if index % 20 == 0 and providers > 1 else [first]


def simulate(rows: Rows, rng: random.Random, spec: Spec, p: int, account: str, target: int) -> None:
    """One (person, provider) ledger over the last two years: accruals (a lot each), bank-funded
    visits (a hold placed up to an hour before, then redeploy postings from its lots, oldest expiry
    first; 5% missed: released; 15% delivered short: the rest released), expiry of what is left 12
    weeks after a lot's accrual, and for 30% of people a hold for a visit still to come."""
    tenant, provider, contract = spec.tenant_id, spec.provider_ids[p], spec.contract_ids[p]
    rand, expo, now = rng.random, rng.expovariate, spec.now
    rates = tuple(RATES.values())
    begin = now - HISTORY + timedelta(seconds=rand() * HISTORY.total_seconds() / 4)
    rate = max(target, 1) / ((now - begin).total_seconds() * 1.35)  # events per second
    lots: list[list[Any]] = []  # [id, remaining, expires_at, effective_at]: creation order = expiry order
    first = balance = written = 0
    post, add_lot, add_hold_lot = rows.postings.append, rows.lots.append, rows.hold_lots.append
    hour, ten_min = timedelta(hours=1), timedelta(minutes=10)
    last = begin
    t = begin + timedelta(seconds=expo(rate))

    def expire_until(until: datetime) -> None:
        nonlocal first, written, balance
        while first < len(lots) and lots[first][2] <= until:
            lot = lots[first]
            if lot[1] > 0:
                at = lot[2]
                post((tenant, uuid7(), provider, "expire", account, "expired", lot[1], lot[0], None, None, at, at))
                balance -= lot[1]
                lot[1] = 0
                written += 1
            first += 1

    def hold(minutes: int, held_at: datetime, visit_id: Any) -> tuple[Any, list[tuple[list[Any], int]]]:
        """Earmark `minutes` oldest expiry first from the live lots accrued by `held_at`."""
        hold_id, pieces, left = uuid7(), [], minutes
        for k in range(first, len(lots)):
            lot = lots[k]
            if left <= 0 or lot[3] > held_at:
                break
            if lot[1] > 0:
                piece = min(left, lot[1])
                pieces.append((lot, piece))
                add_hold_lot((tenant, hold_id, lot[0], piece))
                left -= piece
        if pieces:
            rows.holds.append((tenant, hold_id, provider, account, minutes - left, visit_id, held_at))
        return hold_id, pieces

    while written < target and t < now:
        expire_until(t)
        if balance >= 30 and rand() < 0.42:
            minutes = min(REDEPLOY_MIN[int(rand() * len(REDEPLOY_MIN))], balance)
            visit_id = uuid7()
            hold_id, pieces = hold(minutes, max(t - hour, last), visit_id)
            draw = rand()
            if not pieces:
                pass  # nothing accrued before the hold would have been placed
            elif draw < 0.05:
                rows.hold_ends.append((tenant, hold_id, "released", t))
            else:
                left = minutes if draw < 0.85 else max(1, minutes - 5 - int(rand() * 10))
                recorded = t + ten_min
                for lot, piece in pieces:
                    take = min(piece, left)
                    if take <= 0:
                        break
                    post(
                        (
                            tenant,
                            uuid7(),
                            provider,
                            "redeploy",
                            account,
                            "delivered",
                            take,
                            lot[0],
                            None,
                            visit_id,
                            t,
                            recorded,
                        )
                    )
                    lot[1] -= take
                    balance -= take
                    left -= take
                    written += 1
                rows.hold_ends.append((tenant, hold_id, "posted", t))
        else:
            minutes = min(ACCRUE_MIN[int(rand() * len(ACCRUE_MIN))], spec.cap_min - balance)
            if minutes > 0:
                lot_id, visit_id, expires, recorded = uuid7(), uuid7(), t + EXPIRY, t + ten_min
                add_lot(
                    (
                        tenant,
                        lot_id,
                        provider,
                        contract,
                        account,
                        rates[int(rand() * len(rates))],
                        t,
                        expires,
                        visit_id,
                        recorded,
                    )
                )
                post(
                    (tenant, uuid7(), provider, "accrue", "owed", account, minutes, None, lot_id, visit_id, t, recorded)
                )
                lots.append([lot_id, minutes, expires, t])
                balance += minutes
                written += 1
        last = t
        t += timedelta(seconds=expo(rate))
    expire_until(now)
    rows.queue.extend((tenant, uuid7(), lots[k][0], lots[k][2]) for k in range(first, len(lots)))
    if balance >= 30 and rand() < 0.3:
        hold(30, max(now - timedelta(days=1), last), uuid7())


def generate(spec: Spec, people: Sequence[tuple[int, str]], seed: int) -> Rows:
    rng = random.Random(seed)
    rows = Rows()
    for index, account in people:
        for p in ledgers_of(index, len(spec.provider_ids)):
            target = max(1, round(spec.per_ledger * (0.5 + rng.random())))
            simulate(rows, rng, spec, p, account, target)
    return rows


@dataclass
class Loaded:
    counts: Counter[str] = field(default_factory=Counter)
    generate_s: float = 0.0
    copy_s: float = 0.0
    cpu: OwnCpu = field(default_factory=lambda: OwnCpu([]))


async def load_history(url: str, spec: Spec, accounts: list[str], args: argparse.Namespace) -> Loaded:
    """Generate (in a thread) and COPY people's ledgers in chunks on `--load-workers` connections."""
    loaded = Loaded()
    chunk = max(1, args.chunk_people)
    starts = iter(range(0, len(accounts), chunk))

    async def loader(conn: asyncpg.Connection) -> None:
        await conn.execute("SET session_replication_role = replica")
        for first in starts:
            people = [(i, accounts[i]) for i in range(first, min(first + chunk, len(accounts)))]
            t0 = time.perf_counter()
            rows = await asyncio.to_thread(generate, spec, people, first)
            t1 = time.perf_counter()
            for table, records, columns in (
                ("bank_lots", rows.lots, LOT_COLUMNS),
                ("bank_postings", rows.postings, POSTING_COLUMNS),
                ("bank_holds", rows.holds, HOLD_COLUMNS),
                ("bank_hold_lots", rows.hold_lots, HOLD_LOT_COLUMNS),
                ("bank_hold_ends", rows.hold_ends, HOLD_END_COLUMNS),
                ("bank_expiry_queue", rows.queue, QUEUE_COLUMNS),
            ):
                if records:
                    await conn.copy_records_to_table(table, records=records, columns=columns)
                loaded.counts[table] += len(records)
            loaded.generate_s += t1 - t0
            loaded.copy_s += time.perf_counter() - t1

    conns = [await asyncpg.connect(url) for _ in range(args.load_workers)]
    try:
        loaded.cpu = OwnCpu(await backend_pids(conns)).start()
        await asyncio.gather(*(loader(conn) for conn in conns))
        loaded.cpu.stop()  # before the backends exit, so their CPU is counted
    finally:
        for conn in conns:
            await conn.close()
    return loaded


async def secondary_indexes(conn: asyncpg.Connection) -> list[tuple[str, str]]:
    """(name, definition) of the loaded tables' indexes that back no constraint."""
    rows = await conn.fetch(
        """SELECT c.relname, pg_get_indexdef(i.indexrelid) AS def FROM pg_index i
           JOIN pg_class c ON c.oid = i.indexrelid
           WHERE i.indrelid = ANY(SELECT unnest($1::text[])::regclass)
             AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)
           ORDER BY c.relname""",
        list(LOADED_TABLES),
    )
    return [(row["relname"], row["def"]) for row in rows]


async def table_sizes(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(
        """SELECT t AS name, pg_relation_size(t::regclass) AS heap, pg_indexes_size(t::regclass) AS indexes
           FROM unnest($1::text[]) t""",
        list(LOADED_TABLES),
    )
    db = await conn.fetchval("SELECT pg_database_size(current_database())")
    lines = [
        f"    {row['name']:<18} table {row['heap'] / 2**20:8,.0f} MiB, indexes {row['indexes'] / 2**20:8,.0f} MiB"
        for row in rows
    ]
    return [*lines, f"    database {db / 2**30:.2f} GiB"]


@dataclass
class Timings:
    whole: list[float]
    now_half: list[float]
    past_half: list[float]
    steps: dict[str, list[float]]
    lots: int


Sample = tuple[UUID, datetime, bool]


async def time_queries(
    conn: asyncpg.Connection, tenant_id: UUID, warm: Sequence[Sample], samples: Sequence[Sample], budget: float
) -> Timings:
    """person_bank for each (person, as_of) after the untimed `warm` ones, then each of its three
    store queries on the same samples; each of the two loops stops early after `budget` seconds."""
    stop = time.perf_counter() + budget
    for person_id, as_of, _ in warm:
        await balances.person_bank(conn, tenant_id, person_id, None, as_of)
        if time.perf_counter() > stop:
            break
    stop = time.perf_counter() + budget
    whole: list[float] = []
    now_half: list[float] = []
    past_half: list[float] = []
    lots = 0
    for person_id, as_of, is_now in samples:
        t0 = time.perf_counter()
        bank = await balances.person_bank(conn, tenant_id, person_id, None, as_of)
        spent = time.perf_counter() - t0
        whole.append(spent)
        (now_half if is_now else past_half).append(spent)
        lots += len(bank.lots)
        if time.perf_counter() > stop:
            break
    samples = samples[: len(whole)]
    stop = time.perf_counter() + budget
    steps: dict[str, list[float]] = defaultdict(list)
    calls: dict[str, Callable[..., Awaitable[Any]]] = {"store.account_lots": store.account_lots}
    for person_id, as_of, _ in samples:
        account = [rules.person_account(person_id)]
        for name, call in calls.items():
            t0 = time.perf_counter()
            await call(conn, tenant_id, None, account, as_of)
            steps[name].append(time.perf_counter() - t0)
        # GET /v1/bank/postings?person_id=: the first page of the person's postings (found through their lots).
        t0 = time.perf_counter()
        await store.list_postings(
            conn,
            tenant_id,
            provider_id=None,
            account=account[0],
            kind=None,
            start=None,
            end=None,
            after=None,
            limit=51,
        )
        steps["store.list_postings"].append(time.perf_counter() - t0)
        if time.perf_counter() > stop:
            break
    return Timings(whole, now_half, past_half, dict(steps), lots)


def timing_lines(t: Timings) -> list[str]:
    verdict = "met" if percentile(t.whole, 0.99) * 1000 <= TARGET_P99_MS else "missed"
    lines = [
        f"  person_bank, {len(t.whole):,} queries: {ms_line(t.whole)}, mean {statistics.fmean(t.whole) * 1000:.2f} ms "
        f"(target p99 <= {TARGET_P99_MS:.0f} ms: {verdict}); {t.lots / max(len(t.whole), 1):.1f} lots per answer",
        f"    as of now:               {ms_line(t.now_half)}",
        f"    as of a random instant:  {ms_line(t.past_half)}",
    ]
    lines += [f"    {name:<24} {ms_line(values)}" for name, values in t.steps.items()]
    return lines


async def explain(conn: asyncpg.Connection, tenant_id: UUID, person_id: UUID, as_of: datetime) -> list[str]:
    """The plan of person_bank's one statement (its lots, with their remainders and holds) for one
    sample (with --explain)."""
    account = [rules.person_account(person_id)]
    rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + store.ACCOUNT_LOTS, tenant_id, None, account, as_of)
    return ["  EXPLAIN ANALYZE account_lots:"] + [f"    {row[0]}" for row in rows]


async def part2(url: str, args: argparse.Namespace) -> None:
    people = max(1, args.postings // 100)
    say()
    say(
        f"== part 2: person_bank as of an instant with {args.postings:,} postings loaded "
        f"({people:,} people at {args.as_of_providers} providers) =="
    )
    conn = await connect(url)
    try:
        now = datetime.now(UTC)
        t0 = time.perf_counter()
        tenant_id, provider_ids = await seed_tenant(conn, args.as_of_providers, "as-of")
        contract_ids = await seed_contracts(conn, tenant_id, provider_ids, Banking().cap_min)
        person_ids = await seed_people(conn, tenant_id, people, "B")
        ledgers = sum(len(ledgers_of(i, args.as_of_providers)) for i in range(people))
        spec = Spec(tenant_id, provider_ids, contract_ids, now, args.postings / ledgers, Banking().cap_min)
        say(
            f"seeded 1 tenant, {len(provider_ids)} providers, {people:,} people ({ledgers:,} ledgers) "
            f"in {time.perf_counter() - t0:.1f} s"
        )
        indexes = await secondary_indexes(conn)
        for name, _ in indexes:
            await conn.execute(f'DROP INDEX "{name}"')
        loaded = await load_history(url, spec, [rules.person_account(p) for p in person_ids], args)
        cpu = loaded.cpu
        rows_total = sum(loaded.counts.values())
        say(
            f"loaded {loaded.counts['bank_postings']:,} postings and {rows_total - loaded.counts['bank_postings']:,} "
            f"other rows by COPY in {cpu.wall:.1f} s = {rows_total / cpu.wall:,.0f} rows/s on {args.load_workers} "
            "connections, FK triggers off, secondary indexes dropped"
        )
        say("    " + ", ".join(f"{table} {n:,}" for table, n in loaded.counts.items()))
        say(
            f"    of which generating the history in Python {loaded.generate_s:.1f} s, "
            f"COPY calls {loaded.copy_s:.1f} s (summed over connections)"
        )
        say(f"    {cpu.line()}")
        await conn.execute("SET maintenance_work_mem = '512MB'")
        t0 = time.perf_counter()
        index_cpu = OwnCpu(await backend_pids([conn])).start()
        built = []
        for name, definition in indexes:
            t1 = time.perf_counter()
            await conn.execute(definition)
            built.append(f"{name} {time.perf_counter() - t1:.1f} s")
        say(
            f"built the {len(indexes)} secondary indexes again in {time.perf_counter() - t0:.1f} s: " + ", ".join(built)
        )
        say(f"    {index_cpu.stop().line()} (parallel index build workers not counted)")
        t0 = time.perf_counter()
        if args.vacuum:
            await conn.execute(f"VACUUM (ANALYZE) {', '.join(LOADED_TABLES)}")
        await conn.execute("ANALYZE")
        await conn.execute("CHECKPOINT")
        say(
            f"{'VACUUM (ANALYZE) of the loaded tables' if args.vacuum else 'ANALYZE'} + CHECKPOINT in "
            f"{time.perf_counter() - t0:.1f} s"
            + ("" if args.vacuum else " (autovacuum is off: no VACUUM, so no visibility map for index-only scans)")
        )
        for line in await table_sizes(conn):
            say(line)
        say(f"  {memory_line()}")

        rng = random.Random(3)
        samples = []
        for i in range(args.queries + args.warm_queries):
            is_now = i % 2 == 0
            as_of = now if is_now else now - timedelta(seconds=rng.random() * HISTORY.total_seconds())
            samples.append((rng.choice(person_ids), as_of, is_now))
        warm, timed = samples[: args.warm_queries], samples[args.warm_queries :]
        say(
            f"person_bank(conn, tenant, person, None, as_of) for up to {len(timed):,} random people "
            f"(or {args.query_seconds:.0f} s), after {len(warm)} untimed:"
        )
        for line in timing_lines(await time_queries(conn, tenant_id, warm, timed, args.query_seconds)):
            say(line)
        if args.explain:
            for line in await explain(conn, tenant_id, timed[1][0], timed[1][1]):
                say(line)
    finally:
        await conn.close()


# ---------------------------------------------------------------------------------------------
# Run


async def run(url: str, args: argparse.Namespace) -> int:
    started = time.perf_counter()
    await migrate_url(url)
    if not args.skip_postings:
        await part1(url, args)
    if not args.skip_as_of:
        await part2(url, args)
    say()
    say(f"whole benchmark {time.perf_counter() - started:.0f} s; {memory_line()}")
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_scratch_database_args(parser, "carebank_bench_bank")
    parser.add_argument(
        "--quick", action="store_true", help="15 s of postings, 1,000,000 postings loaded, 1,000 queries"
    )
    parser.add_argument("--duration", type=float, help="seconds of postings in part 1 [45; --quick 15]")
    parser.add_argument("--workers", type=int, default=4, help="connections driving the ledger in part 1")
    parser.add_argument("--providers", type=int, default=2, help="providers in part 1")
    parser.add_argument("--people", type=int, default=5_000, help="people in part 1")
    parser.add_argument(
        "--cap-min", type=int, default=600, help="the contracts' cap in part 1 (passing it feeds the pool)"
    )
    parser.add_argument("--warm-up-visits", type=int, default=4, help="accruals per person before part 1 is timed")
    parser.add_argument(
        "--accrual-batch",
        type=int,
        default=200,
        help="visits per sync_visits call for accruals [200: the worker's batches under load, decision 117]",
    )
    parser.add_argument(
        "--analyze-every",
        type=float,
        default=0.0,
        help="ANALYZE the bank tables every this many seconds during part 1, as autovacuum would [0: never]",
    )
    parser.add_argument("--accrual-visits", type=int, help="reconciled visits waiting to accrue [duration x 12,000]")
    parser.add_argument("--postings", type=int, help="postings loaded in part 2 [10,000,000; --quick 1,000,000]")
    parser.add_argument("--as-of-providers", type=int, default=3, help="providers in part 2")
    parser.add_argument("--chunk-people", type=int, default=2_000, help="people per generated COPY chunk in part 2")
    parser.add_argument("--load-workers", type=int, default=2, help="connections loading chunks concurrently")
    parser.add_argument("--queries", type=int, help="timed person_bank calls [2,000; --quick 1,000]")
    parser.add_argument("--query-seconds", type=float, help="stop each timing loop after this long [45; --quick 15]")
    parser.add_argument("--warm-queries", type=int, default=100, help="untimed person_bank calls first")
    parser.add_argument(
        "--vacuum", action="store_true", help="VACUUM (ANALYZE) the loaded tables, as autovacuum would in service"
    )
    parser.add_argument("--explain", action="store_true", help="print EXPLAIN ANALYZE of two of person_bank's queries")
    parser.add_argument("--skip-postings", action="store_true", help="skip part 1")
    parser.add_argument("--skip-as-of", action="store_true", help="skip part 2")
    args = parser.parse_args(argv)
    args.duration = args.duration or (15.0 if args.quick else 45.0)
    args.postings = args.postings or (1_000_000 if args.quick else 10_000_000)
    args.queries = args.queries or (1_000 if args.quick else 2_000)
    args.query_seconds = args.query_seconds or (15.0 if args.quick else 45.0)
    args.accrual_visits = args.accrual_visits or int(args.duration * 12_000)
    if min(args.workers, args.providers, args.people, args.accrual_batch, args.as_of_providers, args.load_workers) < 1:
        parser.error(
            "--workers, --providers, --people, --accrual-batch, --as-of-providers, --load-workers must be positive"
        )
    if args.people < 2 * args.providers:
        parser.error("--people must give every provider two people at least (transfers)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    collector.settle()  # as the worker and server processes that move banked minutes do (decision 115)
    banner = (
        f"bank benchmark: {args.duration:.0f} s of postings on {args.workers} connections, "
        f"{args.postings:,} postings loaded for as-of queries"
    )
    return in_scratch_database(args, banner, run)


if __name__ == "__main__":
    raise SystemExit(main())
