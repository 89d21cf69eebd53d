"""Reconciliation benchmark: recompute every visit of a large tenant in set-based batches.

Creates a throw-away database (dropped again at the end), seeds one tenant with carers, people,
two contracts (time and task, outcome based) and a care plan per person, loads `--visits` past
visits with a check-in and a check-out each by COPY, then times `service.reconcile_visits` over
all of them in batches of `--batch` visit ids on `--workers` concurrent connections (or in
`--processes` processes). Before, it splits one batch's time over the real reconcile_visits' SQL
steps and the Python between them; after, it times `carebank reconcile`'s recompute-and-compare
over the whole tenant (`jobs.verify_tenant`, one connection) and other batch sizes on disjoint
slices of already reconciled visits.
It prints figures and never asserts: the target (1,000,000 visits in 60 s) is reported as met
or missed, and the exit code is non-zero only when the benchmark itself broke.

    .venv/bin/python bench/reconcile.py                   # 1,000,000 visits (about 8.5 minutes)
    .venv/bin/python bench/reconcile.py --visits 100000   # a smoke run (about 1.5 minutes)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import math
import multiprocessing
import os
import pstats
import random
import re
import resource
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit
from uuid import UUID

import asyncpg
import msgspec
from machine import reference_line

from infra import collector
from infra.db import connect, create_pool, migrate_url
from schemas.catalog import Banking, PayRules
from services.banking import ledger as bank_ledger
from services.common.ids import new_id
from services.planning import store as planning_store
from services.reconcile import jobs, service, store

REPO = Path(__file__).resolve().parent.parent

HOST = "127.0.0.1"
TARGET_SECONDS_PER_MILLION = 60.0
RATES = {"day": 2430, "evening": 2700, "night": 3000, "weekend": 2900, "bank_holiday": 4860}
# Four blocks a day; in each a carer makes ROUND visits an hour apart (planned starts on the hour).
SLOTS = ((7, 0), (12, 0), (16, 0), (20, 0))
ROUND = 4
DAYS_BACK = 60
PLANNED_MIN = (20, 30, 30, 45)
OUTCOMES = [
    {"id": "wash", "domain": "personal_care", "text": "Washed and dressed", "key": True},
    {"id": "meal", "domain": "food_and_drink", "text": "Had a hot meal", "key": False},
]
MET = msgspec.json.encode([{"outcome_id": "wash", "status": "met"}]).decode()
NOT_MET = msgspec.json.encode([{"outcome_id": "wash", "status": "not_met"}]).decode()
NONE = "[]"
VISIT_COLUMNS = (
    "tenant_id",
    "id",
    "person_id",
    "contract_id",
    "provider_id",
    "plan_id",
    "slot",
    "local_date",
    "planned_start",
    "planned_min",
    "carers_required",
    "carer_ids",
    "outcome_ids",
    "funding",
    "origin",
    "approval",
    "status",
    "band_start",
    "next_check_at",
)
EVENT_COLUMNS = (
    "tenant_id",
    "event_id",
    "carer_id",
    "provider_id",
    "person_id",
    "posted_visit_id",
    "visit_id",
    "kind",
    "occurred_at",
    "method",
    "lat",
    "lon",
    "accuracy_m",
    "tag",
    "phone",
    "device_id",
    "outcomes",
    "note",
    "verified",
    "content_hash",
)
ZERO_ID = UUID(int=0)
T = TypeVar("T")


class BenchError(RuntimeError):
    """The benchmark could not run (setup failed); figures would mean nothing."""


def say(message: str = "") -> None:
    print(message, flush=True)


# ---------------------------------------------------------------------------------------------
# Memory, CPU, sizes


def peak_rss_mib() -> float:
    """Peak resident set of this process since it started (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def memory_line() -> str:
    return f"benchmark process RSS: now {current_rss_mib():,.0f} MiB, peak so far {peak_rss_mib():,.0f} MiB"


def _cpu_seconds(pid: str) -> float:
    """User + system CPU seconds of a live process (0 once it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = raw[raw.rfind(")") + 2 :].split()
    return (float(fields[11]) + float(fields[12])) / float(os.sysconf("SC_CLK_TCK"))


def _postgres_seconds() -> float:
    """CPU seconds used so far by every live postgres process (PostgreSQL runs on this machine)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and Path(f"/proc/{entry}/comm").read_text().strip() == "postgres":
                total += _cpu_seconds(entry)
        except OSError:
            continue
    return total


def _own_seconds() -> float:
    """CPU seconds of this process and of its child processes that have ended."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


@dataclass
class Cpu:
    """CPU used by this process and by PostgreSQL during a phase, as % of one core."""

    wall: float = 0.0
    bench: float = 0.0
    postgres: float = 0.0
    _start: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def start(self) -> Cpu:
        self._start = (time.perf_counter(), _own_seconds(), _postgres_seconds())
        return self

    def stop(self, ended_backends_s: float = 0.0) -> Cpu:
        """`ended_backends_s`: CPU of backends that exited during the phase (they take it with them)."""
        wall0, bench0, pg0 = self._start
        self.wall = max(time.perf_counter() - wall0, 1e-9)
        self.bench = 100 * (_own_seconds() - bench0) / self.wall
        self.postgres = 100 * (max(0.0, _postgres_seconds() - pg0) + ended_backends_s) / self.wall
        return self

    def line(self) -> str:
        return (
            f"cpu (100% = one core, {os.cpu_count()} cores): benchmark process (Python) {self.bench:.0f}%, "
            f"postgres {self.postgres:.0f}%"
        )


async def sizes(conn: asyncpg.Connection) -> str:
    row = await conn.fetchrow(
        """SELECT pg_database_size(current_database()) AS db,
                  pg_total_relation_size('visit_plans') + pg_total_relation_size('visit_states') AS visits,
                  pg_total_relation_size('visit_events') AS events"""
    )
    assert row is not None
    return (
        f"database {row['db'] / 2**30:.2f} GiB (visits with indexes {row['visits'] / 2**30:.2f} GiB, "
        f"visit_events with indexes {row['events'] / 2**30:.2f} GiB)"
    )


# ---------------------------------------------------------------------------------------------
# Seeding


@dataclass
class World:
    tenant_id: UUID
    provider_id: UUID
    carer_ids: list[UUID]
    person_ids: list[UUID]
    plan_ids: list[UUID]
    contract_ids: list[UUID]  # per person: outcome based for odd people
    outcome_based: list[bool]
    coords: list[tuple[float, float]]
    visits: int
    today: date


def per_block(visits: int) -> int:
    """Visits in each (day, slot) block: the visits spread evenly over DAYS_BACK days."""
    return math.ceil(visits / (DAYS_BACK * len(SLOTS)))


async def seed(conn: asyncpg.Connection, visits: int, people: int, carers: int) -> World:
    """One tenant, provider, carers, people, two contracts and a care plan per person.

    There are as many carers as one block's rounds need (`carers` is a floor) and at least as
    many people as visits in a block, so nobody has two visits in the same slot of a day."""
    carers = max(carers, math.ceil(per_block(visits) / ROUND))
    people = max(people, per_block(visits))
    tenant_id, provider_id = new_id(), new_id()
    today = datetime.now(tz=UTC).date()
    await conn.execute(
        """INSERT INTO tenants (tenant_id, name, zone, holiday_region, currency, max_event_age_days)
           VALUES ($1, 'Bench', 'Europe/London', 'GB-ENG', 'GBP', 45)""",
        tenant_id,
    )
    await conn.execute(
        "INSERT INTO providers (tenant_id, id, code, name) VALUES ($1, $2, 'BENCH', 'Bench Care')",
        tenant_id,
        provider_id,
    )
    carer_ids = [new_id() for _ in range(carers)]
    await conn.copy_records_to_table(
        "carers",
        records=[(tenant_id, c, provider_id, f"Carer {i}") for i, c in enumerate(carer_ids)],
        columns=("tenant_id", "id", "provider_id", "name"),
    )
    rng = random.Random(7)
    person_ids = [new_id() for _ in range(people)]
    coords = [(51.3 + rng.random() * 0.5, -0.5 + rng.random() * 0.6) for _ in range(people)]
    await conn.copy_records_to_table(
        "people",
        records=[
            (tenant_id, p, f"P{i:07d}", f"Person {i}", lat, lon, 100)
            for i, (p, (lat, lon)) in enumerate(zip(person_ids, coords, strict=True))
        ],
        columns=("tenant_id", "id", "reference", "display_name", "lat", "lon", "geofence_m"),
    )
    encode = msgspec.json.encode
    contracts = {}
    for model in ("time_and_task", "outcome_based"):
        contracts[model] = new_id()
        await conn.execute(
            """INSERT INTO contracts (tenant_id, id, provider_id, model, period, rates, pay_rules, banking,
                                      valid_from)
               VALUES ($1, $2, $3, $4, 'week', $5::jsonb, $6::jsonb, $7::jsonb, $8)""",
            tenant_id,
            contracts[model],
            provider_id,
            model,
            encode(RATES).decode(),
            encode(msgspec.to_builtins(PayRules())).decode(),
            encode(msgspec.to_builtins(Banking())).decode(),
            today - timedelta(days=365),
        )
    outcome_based = [i % 2 == 1 for i in range(people)]
    contract_ids = [contracts["outcome_based" if ob else "time_and_task"] for ob in outcome_based]
    schedule = [
        {"weekday": d, "start": f"{h:02d}:{m:02d}", "minutes": 30, "carers_required": 1, "outcome_ids": ["wash"]}
        for d in range(1, 8)
        for h, m in SLOTS
    ]
    outcomes_json, schedule_json = encode(OUTCOMES).decode(), encode(schedule).decode()
    weekly_min = 7 * len(SLOTS) * max(PLANNED_MIN)
    plan_ids = [new_id() for _ in range(people)]
    await conn.copy_records_to_table(
        "care_plans",
        records=[
            (
                tenant_id,
                plan_ids[i],
                person_ids[i],
                contract_ids[i],
                provider_id,
                weekly_min,
                outcomes_json,
                schedule_json,
                today - timedelta(days=DAYS_BACK + 30),
                28,
                today,
            )
            for i in range(people)
        ],
        columns=(
            "tenant_id",
            "id",
            "person_id",
            "contract_id",
            "provider_id",
            "weekly_min",
            "outcomes",
            "schedule",
            "valid_from",
            "horizon_days",
            "generated_until",
        ),
    )
    return World(
        tenant_id, provider_id, carer_ids, person_ids, plan_ids, contract_ids, outcome_based, coords, visits, today
    )


def generate(world: World, first: int, last: int) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Visits first..last-1 and their two events each, deterministic per range.

    Visits are made in time order (ids are UUIDv7, so id order is planned order): visit i is the
    k-th of block b (slot b % 4 of day b // 4 of the past DAYS_BACK days); carer k // ROUND of the
    block (rotated by b) makes it as the (k % ROUND)-th visit of the round, an hour after the
    previous one; person k + 7919 b (mod people). Check-in -10..+20 min around the planned start
    (0.5% 90 min early: outside the window), check-out 10-40 min later against 20/30/45 planned
    minutes (short, within grace, rounded, overrun; a long visit sometimes overlaps the carer's
    next one). Mostly GPS (5% of it outside the geofence), some NFC, telephony and manual events;
    2% need two carers but only one came (single handed). Under an outcome-based contract 75% of
    check-outs report the key outcome met, 10% not met.
    """
    rng = random.Random(first)
    people = len(world.person_ids)
    n_carers = len(world.carer_ids)
    block_size = per_block(world.visits)
    first_day = world.today - timedelta(days=DAYS_BACK)
    tenant_id, provider_id = world.tenant_id, world.provider_id
    visits: list[tuple[Any, ...]] = []
    events: list[tuple[Any, ...]] = []
    outcome_ids = ["wash"]
    for i in range(first, last):
        block, k = divmod(i, block_size)
        day, slot = divmod(block, len(SLOTS))
        local_date = first_day + timedelta(days=day)
        hour, minute = SLOTS[slot]
        planned_start = datetime(local_date.year, local_date.month, local_date.day, hour, minute, tzinfo=UTC)
        planned_start += timedelta(hours=k % ROUND)
        p = (k + block * 7919) % people
        planned_min = PLANNED_MIN[rng.randrange(len(PLANNED_MIN))]
        carers_required = 2 if rng.random() < 0.02 else 1
        carer_index = (k // ROUND + block) % n_carers
        carer_id = world.carer_ids[carer_index]
        person_id, visit_id = world.person_ids[p], new_id()
        visits.append(
            (
                tenant_id,
                visit_id,
                person_id,
                world.contract_ids[p],
                provider_id,
                world.plan_ids[p],
                slot,
                local_date,
                planned_start,
                planned_min,
                carers_required,
                [carer_id],
                outcome_ids,
                "package",
                "plan",
                "approved",
                "planned",
                planned_start,
                planned_start,
            )
        )
        early = rng.random() < 0.005
        check_in = planned_start + timedelta(seconds=-90 * 60 if early else rng.randint(-10 * 60, 20 * 60))
        check_out = check_in + timedelta(seconds=rng.randint(10 * 60, 40 * 60))
        draw = rng.random()
        method = "gps" if draw < 0.85 else "nfc" if draw < 0.93 else "telephony" if draw < 0.97 else "manual"
        if world.outcome_based[p]:
            draw = rng.random()
            outcomes = MET if draw < 0.75 else NOT_MET if draw < 0.85 else NONE
        else:
            outcomes = NONE
        lat, lon = world.coords[p]
        device = f"device-{carer_index}"
        for kind, at, out in (("check_in", check_in, NONE), ("check_out", check_out, outcomes)):
            event_id = new_id()
            gps = method == "gps"
            events.append(
                (
                    tenant_id,
                    event_id,
                    carer_id,
                    provider_id,
                    person_id,
                    visit_id,
                    visit_id,
                    kind,
                    at,
                    method,
                    lat if gps else None,
                    lon if gps else None,
                    12.0 if gps else None,
                    f"tag-{p}" if method == "nfc" else None,
                    "+441632960000" if method == "telephony" else None,
                    device,
                    out,
                    "forgot phone" if method == "manual" else None,
                    method != "manual" and (not gps or rng.random() >= 0.05),
                    event_id.hex * 2,
                )
            )
    return visits, events


async def load(url: str, world: World, chunk: int, workers: int, fk_checks: bool) -> None:
    """COPY the visits and events in chunks on `workers` connections (generation overlaps COPY)."""
    total_events = 2 * world.visits
    starts = iter(range(0, world.visits, chunk))
    gen_s = 0.0
    copy_s = 0.0

    async def loader(conn: asyncpg.Connection) -> None:
        nonlocal gen_s, copy_s
        if not fk_checks:
            # Bulk load of rows that are consistent by construction: skip the per-row foreign
            # key triggers (superuser only; the recompute runs with them as normal).
            await conn.execute("SET session_replication_role = replica")
        for first in starts:
            t0 = time.perf_counter()
            visits, events = generate(world, first, min(first + chunk, world.visits))
            t1 = time.perf_counter()
            await planning_store.copy_visits(conn, visits, VISIT_COLUMNS)
            await conn.copy_records_to_table("visit_events", records=events, columns=EVENT_COLUMNS)
            gen_s += t1 - t0
            copy_s += time.perf_counter() - t1

    conns = [await asyncpg.connect(url) for _ in range(workers)]
    try:
        cpu = Cpu().start()
        await asyncio.gather(*(loader(conn) for conn in conns))
        cpu.stop()  # before the backends exit, so their CPU is counted
    finally:
        for conn in conns:
            await conn.close()
    rows = world.visits + total_events
    say(
        f"loaded {world.visits:,} visits + {total_events:,} events by COPY in {cpu.wall:.1f} s "
        f"= {rows / cpu.wall:,.0f} rows/s ({world.visits / cpu.wall:,.0f} visits/s) on {workers} connections, "
        f"FK triggers {'on' if fk_checks else 'off (session_replication_role = replica)'}"
    )
    say(f"  of which generating rows in Python {gen_s:.1f} s, COPY calls {copy_s:.1f} s (summed over connections)")
    say(f"  {cpu.line()}")


# ---------------------------------------------------------------------------------------------
# Recompute


class IdPages:
    """Visit ids in keyset pages, handed out one batch at a time to concurrent workers."""

    def __init__(self, conn: asyncpg.Connection, tenant_id: UUID, batch: int, limit: int, after: UUID) -> None:
        self._conn, self._tenant_id, self._batch = conn, tenant_id, batch
        self.remaining, self.after = limit, after
        self._lock = asyncio.Lock()

    async def next(self) -> list[UUID]:
        async with self._lock:
            size = min(self._batch, self.remaining)
            if size <= 0:
                return []
            # The pages `carebank reconcile` reads, with no planned-start range.
            ids = await store.tenant_visit_ids(self._conn, self._tenant_id, None, None, self.after, size)
            if ids:
                self.after = ids[-1]
            self.remaining = self.remaining - len(ids) if len(ids) == size else 0
            return ids


@dataclass
class Pass:
    visits: int
    seconds: float
    batches: list[float]
    cpu: Cpu
    after: UUID
    deadlocks: int

    @property
    def per_million(self) -> float:
        return self.seconds * 1_000_000 / max(self.visits, 1)


async def recompute(
    conns: Sequence[asyncpg.Connection],
    id_conn: asyncpg.Connection,
    tenant_id: UUID,
    now: datetime,
    batch: int,
    limit: int,
    after: UUID = ZERO_ID,
) -> Pass:
    """reconcile_visits over `limit` visits from `after` on, each batch in its own transaction."""
    pages = IdPages(id_conn, tenant_id, batch, limit, after)
    batch_seconds: list[float] = []
    done = 0
    deadlocks = 0

    async def worker(conn: asyncpg.Connection) -> None:
        nonlocal done, deadlocks
        while ids := await pages.next():
            t0 = time.perf_counter()
            while True:
                try:
                    async with conn.transaction():
                        written = await service.reconcile_visits(conn, tenant_id, ids, now)
                    break
                except asyncpg.DeadlockDetectedError:
                    # The overlap pass also updates neighbours, which may sit in another worker's
                    # batch; the batch is simply retried (its time, the wait included, counts).
                    deadlocks += 1
            done += written
            batch_seconds.append(time.perf_counter() - t0)

    cpu = Cpu().start()
    await asyncio.gather(*(worker(conn) for conn in conns))
    cpu.stop()
    return Pass(done, cpu.wall, batch_seconds, cpu, pages.after, deadlocks)


def _share_of_pass(
    url: str, tenant_id: UUID, now: datetime, batch: int, limit: int, after: UUID, workers: int
) -> tuple[int, list[float], int, float]:
    """One process's slice of a pass (runs in a child process): visits, batch seconds, deadlocks and
    the CPU seconds of its PostgreSQL backends."""

    async def run_slice() -> tuple[int, list[float], int, float]:
        conns = [await connect(url) for _ in range(workers)]
        id_conn = await connect(url)
        try:
            result = await recompute(conns, id_conn, tenant_id, now, batch, limit, after)
            backends = [str(conn.get_server_pid()) for conn in [*conns, id_conn]]
            backends_s = sum(_cpu_seconds(pid) for pid in backends)  # new connections: all of it is this pass's
        finally:
            for conn in [*conns, id_conn]:
                await conn.close()
        return result.visits, result.batches, result.deadlocks, backends_s

    return asyncio.run(run_slice())


async def recompute_in_processes(
    url: str,
    id_conn: asyncpg.Connection,
    tenant_id: UUID,
    now: datetime,
    batch: int,
    limit: int,
    processes: int,
    workers: int,
) -> Pass:
    """The same pass split into `processes` contiguous slices of visit ids, each reconciled by a process
    of its own on `workers` connections, so the Python work can use more than one core."""
    total = min(limit, await id_conn.fetchval("SELECT count(*) FROM visit_plans WHERE tenant_id = $1", tenant_id))
    shares = [total * (k + 1) // processes - total * k // processes for k in range(processes)]
    starts = [ZERO_ID]
    for k in range(1, processes):
        starts.append(
            await id_conn.fetchval(
                "SELECT id FROM visit_plans WHERE tenant_id = $1 ORDER BY id OFFSET $2 LIMIT 1",
                tenant_id,
                total * k // processes - 1,
            )
        )
    loop = asyncio.get_running_loop()
    cpu = Cpu().start()
    # fork: the children start with this process's modules loaded, so start-up is not timed as work.
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork")) as pool:
        results = await asyncio.gather(
            *(
                loop.run_in_executor(pool, _share_of_pass, url, tenant_id, now, batch, share, start, workers)
                for share, start in zip(shares, starts, strict=True)
            )
        )
    cpu.stop(ended_backends_s=sum(r[3] for r in results))
    last = await id_conn.fetchval(
        "SELECT id FROM visit_plans WHERE tenant_id = $1 ORDER BY id OFFSET $2 LIMIT 1", tenant_id, total - 1
    )
    return Pass(
        sum(r[0] for r in results), cpu.wall, [b for r in results for b in r[1]], cpu, last, sum(r[2] for r in results)
    )


def pass_lines(result: Pass, batch: int, workers: int, processes: int = 1) -> list[str]:
    b = sorted(result.batches) or [0.0]
    where = f"{workers} workers" if processes == 1 else f"{processes} processes of {workers} workers"
    return [
        f"{result.visits:,} visits in {result.seconds:.1f} s = {result.visits / result.seconds:,.0f} visits/s "
        f"= {result.per_million:.1f} s per million visits (batch {batch:,}, {where})",
        f"  per batch: {len(result.batches)} batches, mean {statistics.fmean(b):.3f} s, "
        f"p50 {b[len(b) // 2]:.3f} s, max {b[-1]:.3f} s; deadlocks retried: {result.deadlocks}",
        f"  {result.cpu.line()}",
    ]


async def outcome_summary(conn: asyncpg.Connection, tenant_id: UUID) -> list[str]:
    """What the rules made of the visits, to show the run exercised them (one scan, not timed)."""
    statuses = await conn.fetch(
        """SELECT status, count(*) AS n, sum(payable_min) AS payable, sum(banked_min) AS banked
           FROM visits WHERE tenant_id = $1 GROUP BY status ORDER BY status""",
        tenant_id,
    )
    exceptions = await conn.fetch(
        """SELECT e, count(*) AS n FROM visits, unnest(exceptions) e WHERE tenant_id = $1
           GROUP BY e ORDER BY n DESC""",
        tenant_id,
    )
    lines = [
        f"  {r['status']}: {r['n']:,} visits, payable {r['payable']:,} min, banked {r['banked']:,} min"
        for r in statuses
    ]
    lines.append("  exceptions: " + ", ".join(f"{r['e']} {r['n']:,}" for r in exceptions))
    return lines


# ---------------------------------------------------------------------------------------------
# One batch, step by step


# What reconcile_visits calls between its Python steps: the store's statements and the bank's sync.
SQL_STEPS = (
    (store, "move_targets"),
    (store, "lock_visits"),
    (store, "load_visits"),
    (store, "load_pay_rules"),
    (store, "load_moves"),
    (store, "load_events"),
    (store, "load_amendments"),
    (store, "stored_attendances"),
    (store, "save_states"),
    (bank_ledger, "sync_visits"),
    (store, "lock_attendances"),
    (store, "write_attendances"),
    (store, "overlap_pairs"),
    (store, "set_overlaps"),
    (store, "mark_overlaps"),
)


@contextlib.contextmanager
def timed_sql_steps(stages: dict[str, float]) -> Iterator[None]:
    """Time each SQL step of the real reconcile_visits (wrapped in place, restored after) into `stages`."""
    originals = [(module, name, getattr(module, name)) for module, name in SQL_STEPS]

    def timed(label: str, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def call(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                stages[label] = stages.get(label, 0.0) + time.perf_counter() - t0

        return call

    for module, name, fn in originals:
        setattr(module, name, timed(f"SQL {module.__name__.split('.')[-2]}.{name}", fn))
    try:
        yield
    finally:
        for module, name, fn in originals:
            setattr(module, name, fn)


async def breakdown(
    conn: asyncpg.Connection, tenant_id: UUID, id_conn: asyncpg.Connection, batch: int, samples: int, now: datetime
) -> tuple[dict[str, float], float, int, str]:
    """Mean time of each SQL step of reconcile_visits over `samples` batches spread over the table
    (each rolled back, so the visits stay as loaded), the whole call's mean, and a cProfile of the
    last batch's call (run again, rolled back too)."""
    total = await id_conn.fetchval("SELECT count(*) FROM visit_plans WHERE tenant_id = $1", tenant_id)
    stages: dict[str, float] = {}
    whole = 0.0
    ids: list[UUID] = []
    for k in range(samples):
        offset = max(0, (total - batch) * k // max(samples - 1, 1))
        rows = await id_conn.fetch(
            "SELECT id FROM visit_plans WHERE tenant_id = $1 ORDER BY id OFFSET $2 LIMIT $3", tenant_id, offset, batch
        )
        ids = [row["id"] for row in rows]
        async with _rolled_back(conn):
            with timed_sql_steps(stages):
                t0 = time.perf_counter()
                await service.reconcile_visits(conn, tenant_id, ids, now)
                whole += time.perf_counter() - t0
    profiler = cProfile.Profile()
    async with _rolled_back(conn):
        profiler.enable()
        await service.reconcile_visits(conn, tenant_id, ids, now)
        profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(12)
    return {name: seconds / samples for name, seconds in stages.items()}, whole / samples, len(ids), text.getvalue()


@contextlib.asynccontextmanager
async def _rolled_back(conn: asyncpg.Connection) -> AsyncIterator[None]:
    transaction = conn.transaction()
    await transaction.start()
    try:
        yield
    finally:
        await transaction.rollback()


def profile_lines(text: str) -> list[str]:
    """The table of a pstats printout, paths shortened to the repository."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip().startswith("ncalls")), len(lines))
    repo, out = str(REPO) + "/", []
    for line in lines[start:]:
        if line.strip():
            out.append("    " + re.sub(r"\S*/site-packages/", "", line.replace(repo, "")))
    return out


# ---------------------------------------------------------------------------------------------
# Database


def database_url(admin_url: str, name: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise BenchError(f"--bench-db must be a plain lower-case identifier, not {name!r}")
    parts = urlsplit(admin_url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


async def recreate_database(admin_url: str, name: str, *, create: bool) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if create:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


# ---------------------------------------------------------------------------------------------
# Run


async def run(url: str, args: argparse.Namespace) -> int:
    started = time.perf_counter()
    await migrate_url(url)
    conn = await asyncpg.connect(url)
    try:
        say(await reference_line(conn))
        t0 = time.perf_counter()
        world = await seed(conn, args.visits, args.people, args.carers)
        people = len(world.person_ids)
        say(
            f"seeded 1 tenant, {len(world.carer_ids):,} carers, {people:,} people, 2 contracts, {people:,} care plans "
            f"in {time.perf_counter() - t0:.1f} s ({per_block(args.visits):,} visits per slot of a day, "
            f"{ROUND} per carer)"
        )
        await load(url, world, args.chunk, args.load_workers, args.fk_checks)
        t0 = time.perf_counter()
        await conn.execute("VACUUM (ANALYZE) visit_plans, visit_states")
        await conn.execute("VACUUM (ANALYZE) visit_events")
        await conn.execute("ANALYZE")
        await conn.execute("CHECKPOINT")
        say(f"VACUUM (ANALYZE) + CHECKPOINT after the load in {time.perf_counter() - t0:.1f} s (not timed below)")
        say(f"  {await sizes(conn)}")
        say(f"  {memory_line()}")
    finally:
        await conn.close()

    conns = [await connect(url) for _ in range(args.workers)]
    id_conn = await connect(url)
    try:
        now = datetime.now(tz=UTC)
        if args.breakdown_batches > 0:
            say()
            say(
                f"== one batch of {args.batch:,}, step by step, as loaded (mean of {args.breakdown_batches} batches "
                "spread over the table, each rolled back, one connection) =="
            )
            stages, whole_call, n, profile = await breakdown(
                conns[0], world.tenant_id, id_conn, args.batch, args.breakdown_batches, now
            )
            sql = sum(stages.values())
            for name, seconds in [*stages.items(), ("Python (rules, inputs, JSON) and the rest", whole_call - sql)]:
                say(f"  {name:<60} {seconds * 1000:8.1f} ms  {100 * seconds / whole_call:5.1f}%")
            say(
                f"  {'service.reconcile_visits':<60} {whole_call * 1000:8.1f} ms  = "
                f"{whole_call * 1_000_000 / max(n, 1):.1f} s per million visits on one connection"
            )
            say("  cProfile of one batch's call (top 12 by own time; `poll` is waiting for PostgreSQL):")
            for line in profile_lines(profile):
                say(line)
            t0 = time.perf_counter()
            await id_conn.execute("VACUUM (ANALYZE) visit_states, attendances")
            say(
                f"  (VACUUM (ANALYZE) visit_states, attendances after the rolled-back batches: "
                f"{time.perf_counter() - t0:.1f} s, not timed)"
            )

        say()
        say("== recompute: reconcile_visits over every visit (first pass: every visit changes state) ==")
        if args.processes > 1:
            first = await recompute_in_processes(
                url, id_conn, world.tenant_id, now, args.batch, args.visits, args.processes, args.workers
            )
        else:
            first = await recompute(conns, id_conn, world.tenant_id, now, args.batch, args.visits)
        for line in pass_lines(first, args.batch, args.workers, args.processes):
            say(line)
        verdict = "met" if first.per_million <= TARGET_SECONDS_PER_MILLION else "missed"
        say(f"  target <= {TARGET_SECONDS_PER_MILLION:.0f} s per million visits: {verdict}")
        say(f"  {await reference_line(id_conn)}")
        say(f"  {memory_line()}")
        say(f"  {await sizes(id_conn)}")
        say("  what the rules made of them (not timed):")
        for line in await outcome_summary(id_conn, world.tenant_id):
            say(line)

        if not args.skip_verify:
            say()
            say("== carebank reconcile: recompute every visit from scratch and compare with what is stored ==")
            pool = await create_pool(url, max_size=1)
            try:
                cpu = Cpu().start()
                found = await jobs.verify_tenant(pool, world.tenant_id)
                checked, differing = found.checked, found.differing
                cpu.stop()
            finally:
                await pool.close()
            say(
                f"{checked:,} visits in {cpu.wall:.1f} s = {cpu.wall * 1_000_000 / max(checked, 1):.1f} s per million "
                f"visits (one connection, batches of {jobs.BATCH:,}); stored state differing: {len(differing):,}"
            )
            say(f"  {cpu.line()}")
            say(f"  {memory_line()}")

        sizes_to_try = sorted(set(args.compare))
        if sizes_to_try:
            per_size = min(args.compare_visits, args.visits // len(sizes_to_try))
            say()
            say(
                f"== batch sizes: {per_size:,} already reconciled visits each, disjoint slices, "
                f"{args.workers} workers (second pass over a table of {args.visits:,}) =="
            )
            after = ZERO_ID
            results: dict[int, Pass] = {}
            vacuum_s = 0.0
            for size in sizes_to_try:
                t0 = time.perf_counter()
                # The same starting point for each size: the dead row versions of the runs before vacuumed.
                await id_conn.execute("VACUUM (ANALYZE) visit_states, attendances")
                vacuum_s += time.perf_counter() - t0
                results[size] = await recompute(conns, id_conn, world.tenant_id, now, size, per_size, after)
                after = results[size].after
                say(f"batch {size:>6,}: " + pass_lines(results[size], size, args.workers)[0])
                say(f"              {results[size].cpu.line()}")
            best = min(results, key=lambda s: results[s].per_million)
            say(f"  fastest: batch {best:,} ({results[best].per_million:.1f} s per million)")
            say(f"  (VACUUM (ANALYZE) visit_states, attendances before each size: {vacuum_s:.1f} s in all, not timed)")
            say(f"  {memory_line()}")

    finally:
        for c in [*conns, id_conn]:
            await c.close()
    say()
    say(f"whole benchmark {time.perf_counter() - started:.0f} s; {memory_line()}")
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_scratch_database_args(parser, "carebank_bench_reconcile")
    parser.add_argument("--visits", type=int, default=1_000_000, help="visits to load, two events each")
    parser.add_argument("--people", type=int, default=20_000, help="raised to the visits in one slot of a day")
    parser.add_argument("--carers", type=int, default=200, help=f"raised to what {ROUND}-visit rounds need")
    parser.add_argument("--chunk", type=int, default=20_000, help="visits per COPY chunk")
    parser.add_argument("--load-workers", type=int, default=2, help="connections loading chunks concurrently")
    parser.add_argument(
        "--fk-checks", action="store_true", help="keep the foreign key triggers on during the load (slower)"
    )
    parser.add_argument("--batch", type=int, default=5000, help="visit ids per reconcile_visits call")
    parser.add_argument("--workers", type=int, default=2, help="concurrent connections, each on its own batches")
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="first pass only: split the visits over this many processes, each with --workers connections",
    )
    parser.add_argument(
        "--compare",
        type=lambda s: [int(v) for v in s.split(",") if v.strip()],
        default=[2000, 5000, 10000],
        help="batch sizes timed on disjoint slices after the full pass (comma-separated; '' skips)",
    )
    parser.add_argument("--compare-visits", type=int, default=100_000, help="visits per batch size compared")
    parser.add_argument("--breakdown-batches", type=int, default=3, help="batches timed step by step (0 skips)")
    parser.add_argument(
        "--skip-verify", action="store_true", help="skip timing `carebank reconcile` (recompute and compare) after"
    )
    args = parser.parse_args(argv)
    if min(args.visits, args.batch, args.workers, args.chunk, args.load_workers, args.processes) < 1:
        parser.error("--visits, --batch, --workers, --processes, --chunk and --load-workers must be positive")
    if args.carers < 1 or args.people < 1 or any(size < 1 for size in args.compare):
        parser.error("--carers, --people and --compare sizes must be positive")
    return args


def add_scratch_database_args(parser: argparse.ArgumentParser, bench_db: str) -> None:
    """`--database-url` and `--bench-db`, as `in_scratch_database` uses them."""
    parser.add_argument(
        "--database-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="a URL with rights to create and drop the bench database (a superuser, to skip FK triggers on load)",
    )
    parser.add_argument("--bench-db", default=bench_db, help="dropped and recreated, dropped again at the end")


def in_scratch_database(
    args: argparse.Namespace, banner: str, body: Callable[[str, argparse.Namespace], Coroutine[Any, Any, int]]
) -> int:
    """Run a benchmark body against a database made for it on this machine, dropped afterwards."""
    if urlsplit(args.database_url).hostname not in (HOST, "localhost"):
        raise SystemExit(f"the benchmark measures this machine; {args.database_url!r} is not on {HOST}")
    say(f"{banner}, {os.cpu_count()} cores, database {args.bench_db}")
    try:
        asyncio.run(recreate_database(args.database_url, args.bench_db, create=True))
        return asyncio.run(body(database_url(args.database_url, args.bench_db), args))
    except (BenchError, OSError, asyncpg.PostgresError) as exc:
        say(f"benchmark failed: {type(exc).__name__}: {exc}")
        return 1
    finally:
        asyncio.run(recreate_database(args.database_url, args.bench_db, create=False))
        say(f"dropped database {args.bench_db}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    collector.settle()  # as the worker and server processes that reconcile do (forked children inherit it)
    banner = f"reconcile benchmark: {args.visits:,} visits, batch {args.batch:,}, {args.workers} workers"
    return in_scratch_database(args, banner, run)


if __name__ == "__main__":
    raise SystemExit(main())
