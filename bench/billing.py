"""Invoice-run benchmark: one run over a monthly period that holds `--visits` final visits.

Creates a throw-away database (dropped again at the end), seeds one tenant with carers, people, one
monthly time-and-task contract and a care plan per person, COPYs `--visits` past visits into each of
two settled months (A and B; a third settled month C gets none), with a check-in and a check-out
for most of them (a few are missed, cancelled or single-handed double visits, a few bank funded),
reconciles every visit with `service.reconcile_visits` (not timed: the target is the run) and then:

- times `run.run_invoice` for month A inside one transaction, as POST /v1/invoice-runs calls it
  (tenant, contract and provider loaded first, commit included), against the 10 s target;
- times it again for month A (idempotent: the existing invoice comes back);
- splits a run of month B into its SQL and Python steps with a copy of run_invoice's steps
  (using the service's private helpers; the sum of the steps is printed next to the real run of
  month A: if the two drift apart, the service has changed and the split needs updating), with a
  cProfile of the Python part;
- changes `--adjust` visits already invoiced on A (an approved amendment each, then reconciled)
  and times the run of month C, which holds only their adjustment lines (split first, rolled back).

It prints figures and never asserts; the exit code is non-zero only when the benchmark itself broke.
It is run as a script, so `bench/` is on sys.path and the seeding helpers come from reconcile.py.

    .venv/bin/python bench/billing.py                  # 100,000 visits a month (about 70 seconds)
    .venv/bin/python bench/billing.py --visits 10000   # a smoke run (about 10 seconds)
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import math
import pstats
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg
import msgspec
from reconcile import (
    EVENT_COLUMNS,
    NONE,
    OUTCOMES,
    PLANNED_MIN,
    RATES,
    ROUND,
    SLOTS,
    VISIT_COLUMNS,
    BenchError,
    Cpu,
    add_scratch_database_args,
    in_scratch_database,
    memory_line,
    pass_lines,
    profile_lines,
    recompute,
    say,
)

from infra.db import connect, migrate_url
from schemas.catalog import Banking, Contract, PayRules
from schemas.identity import Tenant
from services.billing import rules as billing_rules
from services.billing import run as billing_run
from services.billing import store as billing_store
from services.catalog import store as catalog_store
from services.common.ids import new_id
from services.identity import store as identity_store
from services.identity.rules import holiday_calendar
from services.planning import store as planning_store
from services.reconcile import service as reconcile_service

TARGET_SECONDS = 10.0
ZONE = "Europe/London"
PROVIDER_CODE = "BENCH"
BILLING_VISIT_COLUMNS = (*VISIT_COLUMNS, "cancellation")
T = TypeVar("T")


# ---------------------------------------------------------------------------------------------
# Periods and seeding


def month_start(day: date, months_back: int = 0) -> date:
    index = day.year * 12 + day.month - 1 - months_back
    return date(index // 12, index % 12 + 1, 1)


def settled_months(now: datetime, zone: ZoneInfo, settle_h: int) -> tuple[date, date, date]:
    """The three latest calendar months a run is allowed for (ended plus settle_h), oldest first."""
    latest = month_start(now.astimezone(zone).date(), 1)
    while not billing_rules.is_settled(billing_rules.period_bounds("month", latest, zone), settle_h, now):
        latest = month_start(latest, 1)
    return month_start(latest, 2), month_start(latest, 1), latest


def days_of(start: date) -> list[date]:
    bounds = billing_rules.period_bounds("month", start, ZoneInfo("UTC"))
    return [start + timedelta(days=i) for i in range((bounds.end - start).days + 1)]


def split_evenly(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


@dataclass
class World:
    tenant_id: UUID
    provider_id: UUID
    contract_id: UUID
    carer_ids: list[UUID]
    person_ids: list[UUID]
    plan_ids: list[UUID]
    coords: list[tuple[float, float]]
    zone: ZoneInfo


async def seed(conn: asyncpg.Connection, people: int, carers: int, valid_from: date) -> World:
    """One tenant, provider, carers, people, one monthly time-and-task contract, a plan per person."""
    tenant_id, provider_id, contract_id = new_id(), new_id(), new_id()
    await conn.execute(
        """INSERT INTO tenants (tenant_id, name, zone, holiday_region, currency, max_event_age_days)
           VALUES ($1, 'Bench', $2, 'GB-ENG', 'GBP', 45)""",
        tenant_id,
        ZONE,
    )
    await conn.execute(
        "INSERT INTO providers (tenant_id, id, code, name) VALUES ($1, $2, $3, 'Bench Care')",
        tenant_id,
        provider_id,
        PROVIDER_CODE,
    )
    carer_ids = [new_id() for _ in range(carers)]
    await conn.copy_records_to_table(
        "carers",
        records=[(tenant_id, c, provider_id, f"Carer {i}") for i, c in enumerate(carer_ids)],
        columns=("tenant_id", "id", "provider_id", "name"),
    )
    rng = random.Random(11)
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
    await conn.execute(
        """INSERT INTO contracts (tenant_id, id, provider_id, model, period, rates, pay_rules, banking, valid_from)
           VALUES ($1, $2, $3, 'time_and_task', 'month', $4::jsonb, $5::jsonb, $6::jsonb, $7)""",
        tenant_id,
        contract_id,
        provider_id,
        encode(RATES).decode(),
        encode(msgspec.to_builtins(PayRules())).decode(),
        encode(msgspec.to_builtins(Banking())).decode(),
        valid_from,
    )
    schedule = [
        {"weekday": d, "start": f"{h:02d}:{m:02d}", "minutes": 30, "carers_required": 1, "outcome_ids": ["wash"]}
        for d in range(1, 8)
        for h, m in SLOTS
    ]
    outcomes_json, schedule_json = encode(OUTCOMES).decode(), encode(schedule).decode()
    plan_ids = [new_id() for _ in range(people)]
    await conn.copy_records_to_table(
        "care_plans",
        records=[
            (
                tenant_id,
                plan_ids[i],
                person_ids[i],
                contract_id,
                provider_id,
                7 * len(SLOTS) * max(PLANNED_MIN),
                outcomes_json,
                schedule_json,
                valid_from,
                28,
                valid_from,
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
    zone = ZoneInfo(ZONE)
    return World(tenant_id, provider_id, contract_id, carer_ids, person_ids, plan_ids, coords, zone)


def generate_day(
    world: World, day: date, visits: int, day_index: int
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """One day's visits and events, deterministic per day index.

    The day's visits are split over the four slots of reconcile.py (planned starts 07:00 to 23:00
    tenant time, so every band but bank holidays appears, those too on a bank holiday); in a slot
    carer k // ROUND makes ROUND visits an hour apart, person k + 7919 b (mod people). 1% are
    cancelled (by the person, provider or commissioner, half at short notice), 2% missed (no
    events), 2% need two carers but get one, 3% are bank funded; the rest are checked in -10..+20
    min around the planned start and out 10-40 min later (short, within grace, rounded, capped).
    """
    rng = random.Random(day_index)
    people, n_carers = len(world.person_ids), len(world.carer_ids)
    tenant_id, provider_id = world.tenant_id, world.provider_id
    rows: list[tuple[Any, ...]] = []
    events: list[tuple[Any, ...]] = []
    outcome_ids = ["wash"]
    for slot, size in enumerate(split_evenly(visits, len(SLOTS))):
        block = day_index * len(SLOTS) + slot
        hour, minute = SLOTS[slot]
        for k in range(size):
            planned_start = datetime(day.year, day.month, day.day, hour + k % ROUND, minute, tzinfo=world.zone)
            p = (k + block * 7919) % people
            carer_index = (k // ROUND + block) % n_carers
            carer_id, person_id, visit_id = world.carer_ids[carer_index], world.person_ids[p], new_id()
            draw = rng.random()
            cancellation = None
            if draw < 0.01:
                short = rng.random() < 0.5
                cancellation = msgspec.json.encode(
                    {
                        "by": rng.choice(("person", "person", "provider", "commissioner")),
                        "notified_at": planned_start - timedelta(hours=2 if short else 48),
                        "reason": "bench",
                        "short_notice": short,
                        "confirmed": True,
                        "recorded_by": "commissioner",
                    }
                ).decode()
            rows.append(
                (
                    tenant_id,
                    visit_id,
                    person_id,
                    world.contract_id,
                    provider_id,
                    world.plan_ids[p],
                    slot,
                    day,
                    planned_start,
                    PLANNED_MIN[rng.randrange(len(PLANNED_MIN))],
                    2 if rng.random() < 0.02 else 1,
                    [carer_id],
                    outcome_ids,
                    "bank" if rng.random() < 0.03 else "package",
                    "plan",
                    "approved",
                    "planned",
                    planned_start,
                    planned_start,
                    cancellation,
                )
            )
            if draw < 0.03:  # cancelled, or missed: nobody came
                continue
            check_in = planned_start + timedelta(seconds=rng.randint(-10 * 60, 20 * 60))
            check_out = check_in + timedelta(seconds=rng.randint(10 * 60, 40 * 60))
            draw = rng.random()
            method = "gps" if draw < 0.85 else "nfc" if draw < 0.93 else "telephony" if draw < 0.97 else "manual"
            gps = method == "gps"
            lat, lon = world.coords[p]
            for kind, at in (("check_in", check_in), ("check_out", check_out)):
                event_id = new_id()
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
                        f"device-{carer_index}",
                        NONE,
                        "forgot phone" if method == "manual" else None,
                        method != "manual" and (not gps or rng.random() >= 0.05),
                        event_id.hex * 2,
                    )
                )
    return rows, events


async def load(url: str, world: World, days: list[tuple[date, int]], workers: int, fk_checks: bool) -> int:
    """COPY every day's visits and events on `workers` connections; returns the visits loaded."""
    todo: Iterator[tuple[int, tuple[date, int]]] = iter(enumerate(days))
    loaded = 0

    async def loader(conn: asyncpg.Connection) -> None:
        nonlocal loaded
        if not fk_checks:
            await conn.execute("SET session_replication_role = replica")  # consistent by construction
        for day_index, (day, visits) in todo:
            rows, events = generate_day(world, day, visits, day_index)
            await planning_store.copy_visits(conn, rows, BILLING_VISIT_COLUMNS)
            await conn.copy_records_to_table("visit_events", records=events, columns=EVENT_COLUMNS)
            loaded += len(rows)

    conns = [await asyncpg.connect(url) for _ in range(workers)]
    try:
        await asyncio.gather(*(loader(conn) for conn in conns))
    finally:
        for conn in conns:
            await conn.close()
    return loaded


# ---------------------------------------------------------------------------------------------
# Runs


@dataclass
class Outcome:
    """One invoice as stored, for the printout."""

    number: str
    lines: int
    visits: int
    kinds: dict[str, int]
    total: int
    planned_total: int
    saving: int
    pending: int


async def outcome(conn: asyncpg.Connection, tenant_id: UUID, invoice_id: UUID) -> Outcome:
    head = await conn.fetchrow(
        """SELECT number, total_pence, planned_total_pence, saving_pence, pending FROM invoices
           WHERE tenant_id = $1 AND id = $2""",
        tenant_id,
        invoice_id,
    )
    assert head is not None
    kinds = await conn.fetch(
        """SELECT kind, count(*) AS n, count(DISTINCT visit_id) AS visits FROM invoice_lines
           WHERE tenant_id = $1 AND invoice_id = $2 GROUP BY kind ORDER BY kind""",
        tenant_id,
        invoice_id,
    )
    return Outcome(
        head["number"],
        sum(r["n"] for r in kinds),
        sum(r["visits"] for r in kinds if r["kind"] == "visit"),
        {r["kind"]: r["n"] for r in kinds},
        head["total_pence"],
        head["planned_total_pence"],
        head["saving_pence"],
        head["pending"],
    )


def money(pence: int) -> str:
    return f"£{pence / 100:,.2f}"


def outcome_lines(result: Outcome) -> list[str]:
    kinds = ", ".join(f"{kind} {n:,}" for kind, n in result.kinds.items()) or "none"
    return [
        f"  invoice {result.number}: {result.lines:,} lines written ({kinds}) for {result.visits:,} visits; "
        f"total {money(result.total)} ({result.total:,} pence), planned total {money(result.planned_total)}, "
        f"saving {money(result.saving)}, pending {result.pending:,}"
    ]


@dataclass
class Timed:
    invoice_id: UUID
    created: bool
    load_s: float  # tenant, contract, provider, as the API loads them
    run_s: float  # run_invoice
    commit_s: float
    cpu: Cpu

    @property
    def seconds(self) -> float:
        return self.load_s + self.run_s + self.commit_s


async def timed_run(conn: asyncpg.Connection, tenant_id: UUID, contract_id: UUID, period_start: date) -> Timed:
    """run_invoice as the API calls it, in one transaction, timed from the loads to the commit."""
    cpu = Cpu().start()
    t0 = time.perf_counter()
    tenant, contract, provider_code = await load_inputs(conn, tenant_id, contract_id)
    t1 = time.perf_counter()
    tr = conn.transaction()
    await tr.start()
    try:
        invoice_id, created = await billing_run.run_invoice(
            conn, tenant, contract, provider_code, period_start, datetime.now(tz=UTC)
        )
    except BaseException:
        await tr.rollback()
        raise
    t2 = time.perf_counter()
    await tr.commit()
    t3 = time.perf_counter()
    cpu.stop()
    return Timed(invoice_id, created, t1 - t0, t2 - t1, t3 - t2, cpu)


async def load_inputs(conn: asyncpg.Connection, tenant_id: UUID, contract_id: UUID) -> tuple[Tenant, Contract, str]:
    tenant = await identity_store.get_tenant(conn, tenant_id)
    contract = await catalog_store.get_contract(conn, tenant_id, contract_id)
    assert tenant is not None
    assert contract is not None
    provider = await catalog_store.get_provider(conn, tenant_id, contract.provider_id)
    assert provider is not None
    return tenant, contract, provider.code


def timed_lines(result: Timed, visits: int) -> list[str]:
    return [
        f"{result.seconds:.3f} s = {visits / result.seconds:,.0f} visits/s (created: {result.created}); "
        f"of which loading tenant/contract/provider {result.load_s * 1000:.1f} ms, run_invoice "
        f"{result.run_s:.3f} s, COMMIT {result.commit_s * 1000:.1f} ms",
        f"  {result.cpu.line()}",
    ]


# ---------------------------------------------------------------------------------------------
# One run, step by step


def _timed(stages: dict[str, float], name: str, fn: Callable[[], T]) -> T:
    t0 = time.perf_counter()
    value = fn()
    stages[name] = stages.get(name, 0.0) + time.perf_counter() - t0
    return value


async def _timed_sql(stages: dict[str, float], name: str, call: Awaitable[T]) -> T:
    t0 = time.perf_counter()
    value = await call
    stages[name] = stages.get(name, 0.0) + time.perf_counter() - t0
    return value


Built = tuple[list[billing_rules.Line], list[dict[str, Any]]]


def _build_visit_lines(
    rows: Sequence[asyncpg.Record], contract: Contract, zone: ZoneInfo, holidays: Any, stages: dict[str, float]
) -> Built:
    """run_invoice's loop over the final unbilled visits, one phase at a time."""
    bands: dict[datetime, billing_rules.Band] = {}
    bills = _timed(
        stages,
        "Python: visit_to_bill (band, rate, place facts)",
        lambda: [billing_run.visit_to_bill(row, contract, zone, holidays, bands) for row in rows],
    )
    per_visit = _timed(
        stages, "Python: rules.visit_lines", lambda: [billing_rules.visit_lines(visit) for visit, _ in bills]
    )

    def records() -> Built:
        lines: list[billing_rules.Line] = []
        out: list[dict[str, Any]] = []
        for (visit, attendances), visit_lines in zip(bills, per_visit, strict=True):
            for line in visit_lines:
                lines.append(line)
                out.append(billing_run._line_record(line, visit, attendances))
        return lines, out

    return _timed(stages, "Python: _line_record (line dicts, new ids, instants)", records)


def _adjustment_lines(
    changed: Sequence[asyncpg.Record],
    places: Sequence[asyncpg.Record],
    contract: Contract,
    zone: ZoneInfo,
    holidays: Any,
    lines: list[billing_rules.Line],
    records: list[dict[str, Any]],
) -> None:
    """The Python part of run._adjustments (a copy)."""
    bands: dict[datetime, billing_rules.Band] = {}
    billed = {(r["visit_id"], r["place"]): r for r in places}
    for row in changed:
        visit, attendances = billing_run.visit_to_bill(row, contract, zone, holidays, bands)
        for place, (carer, payable) in enumerate(zip(visit.place_carers, visit.place_payables, strict=True)):
            original = billed.get((visit.visit_id, place))
            if original is None:
                continue
            delta = billing_rules.adjustment_amount(
                original["rate"],
                payable,
                visit.planned_min,
                visit.funding,
                visit.short_person_cancellation,
                int(original["invoiced"]),
            )
            if delta == 0:
                continue
            line = billing_rules.Line(
                "adjustment", visit.visit_id, place, carer, payable, original["rate"], delta, False, 0
            )
            lines.append(line)
            records.append(
                billing_run._line_record(
                    line,
                    visit,
                    attendances,
                    adjusts_line_id=original["original_line"],
                    band=original["band"],
                    date=original["date"],
                )
            )


@dataclass
class Split:
    stages: dict[str, float]
    lines: int
    visits: int
    profile: str


async def run_by_steps(
    conn: asyncpg.Connection, tenant_id: UUID, contract_id: UUID, period_start: date, *, commit: bool
) -> Split:
    """run_invoice's steps (a copy), each timed, in one transaction; the Python steps profiled again after."""
    stages: dict[str, float] = {}
    tenant, contract, provider_code = await _timed_sql(
        stages, "SQL load tenant, contract, provider (as the API)", load_inputs(conn, tenant_id, contract_id)
    )
    now = datetime.now(tz=UTC)
    zone = ZoneInfo(tenant.zone)
    bounds = billing_rules.period_bounds(contract.period, period_start, zone)
    tr = conn.transaction()
    await _timed_sql(stages, "SQL BEGIN", tr.start())
    try:
        await _timed_sql(
            stages, "SQL lock_contract_runs", billing_store.lock_contract_runs(conn, tenant.id, contract.id)
        )
        existing = await _timed_sql(
            stages, "SQL invoice_id_for", billing_store.invoice_id_for(conn, tenant.id, contract.id, period_start)
        )
        if existing is not None:
            raise BenchError(f"period {period_start} has an invoice already; the split needs a fresh period")
        stale = await _timed_sql(
            stages,
            "SQL visits_to_refresh",
            billing_store.visits_to_refresh(conn, tenant.id, contract.id, bounds.ends_at, now),
        )
        await _timed_sql(
            stages,
            "SQL lock_run_visits",
            billing_store.lock_run_visits(conn, tenant.id, contract.id, bounds.ends_at, stale),
        )
        await _timed_sql(
            stages,
            f"reconcile_visits of the stale visits ({len(stale):,})",
            reconcile_service.reconcile_visits(conn, tenant.id, stale, now),
        )
        holidays = _timed(stages, "holiday_calendar", lambda: holiday_calendar(tenant.holiday_region))
        rows = await _timed_sql(
            stages,
            "SQL final_unbilled_visits (+ jsonb decoding)",
            billing_store.final_unbilled_visits(conn, tenant.id, contract.id, bounds.ends_at),
        )
        lines, records = _build_visit_lines(rows, contract, zone, holidays, stages)
        billed = [row["id"] for row in rows]
        changed = await _timed_sql(
            stages, "SQL changed_billed_visits", billing_store.changed_billed_visits(conn, tenant.id, contract.id)
        )
        if changed:
            places = await _timed_sql(
                stages,
                "SQL billed_places",
                billing_store.billed_places(conn, tenant.id, [r["id"] for r in changed]),
            )
            _timed(
                stages,
                "Python: adjustment lines",
                lambda: _adjustment_lines(changed, places, contract, zone, holidays, lines, records),
            )
            billed += [row["id"] for row in changed]
        await _timed_sql(stages, "SQL mark_billed", billing_store.mark_billed(conn, tenant.id, billed))
        total, planned_total, saving = _timed(
            stages, "Python: invoice_totals", lambda: billing_rules.invoice_totals(lines)
        )
        year = now.astimezone(zone).year
        sequence = await _timed_sql(
            stages, "SQL next_number", billing_store.next_number(conn, tenant.id, contract.provider_id, year)
        )
        number = billing_rules.invoice_number(provider_code, year, sequence)
        for position, record in enumerate(records):
            record["position"] = position
        pending = await _timed_sql(
            stages, "SQL pending_count", billing_store.pending_count(conn, tenant.id, contract.id, bounds.ends_at)
        )
        fields = {
            "id": new_id(),
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
            "pending": pending,
        }
        await _timed_sql(
            stages,
            "SQL insert_invoice (INSERT invoice + COPY lines)",
            billing_store.insert_invoice(conn, tenant.id, fields, records),
        )
    except BaseException:
        await tr.rollback()
        raise
    await _timed_sql(stages, "SQL COMMIT" if commit else "SQL ROLLBACK", tr.commit() if commit else tr.rollback())

    profiler = cProfile.Profile()  # the Python steps again (not in the times)
    profiler.enable()
    _build_visit_lines(rows, contract, zone, holidays, {})
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(12)
    return Split(stages, len(records), len(billed), text.getvalue())


def split_lines(split: Split, reference: float | None, reference_name: str) -> list[str]:
    steps = sum(split.stages.values())
    out = [
        f"  {name:<62} {seconds * 1000:9.1f} ms  {100 * seconds / steps:5.1f}%"
        for name, seconds in split.stages.items()
    ]
    sql = sum(s for name, s in split.stages.items() if name.startswith(("SQL", "reconcile")))
    out.append(f"  {'sum of the steps':<62} {steps * 1000:9.1f} ms  (SQL {sql:.3f} s, Python {steps - sql:.3f} s)")
    if reference is not None:
        out.append(f"  {reference_name:<62} {reference * 1000:9.1f} ms")
    return out


# ---------------------------------------------------------------------------------------------
# Adjustments


async def change_invoiced(conn: asyncpg.Connection, world: World, start: date, end: date, count: int) -> int:
    """An approved amendment cutting the check-out of `count` invoiced single-carer visits of the
    period to 5 minutes after the check-in; returns how many were changed (not reconciled yet)."""
    rows = await conn.fetch(
        """SELECT v.id, (v.actual -> 'attendances' -> 0 ->> 'carer_id')::uuid AS carer_id,
                  (v.actual -> 'attendances' -> 0 ->> 'check_in')::timestamptz AS check_in, v.payable_min
           FROM visits v
           WHERE v.tenant_id = $1 AND v.contract_id = $2 AND v.local_date BETWEEN $3 AND $4
             AND v.status = 'completed' AND v.carers_required = 1 AND v.funding = 'package'
             AND v.payable_min > 5 AND jsonb_array_length(v.actual -> 'attendances') = 1
             AND EXISTS (SELECT 1 FROM invoice_lines l WHERE l.tenant_id = v.tenant_id AND l.visit_id = v.id)
           ORDER BY v.id LIMIT $5""",
        world.tenant_id,
        world.contract_id,
        start,
        end,
        count,
    )
    now = datetime.now(tz=UTC)
    await conn.executemany(
        """INSERT INTO amendments (tenant_id, id, visit_id, carer_id, check_out_at, reason_code, note, proposed_by,
                                   proposed_role, proposed_at, status, decided_by, decided_at, payable_before,
                                   payable_after, banked_before, banked_after)
           VALUES ($1, $2, $3, $4, $5, 'forgot_check_out', 'bench', 'bench', 'provider', $6, 'approved', 'bench',
                   $6, $7, 5, 0, 0)""",
        [
            (
                world.tenant_id,
                new_id(),
                r["id"],
                r["carer_id"],
                r["check_in"] + timedelta(minutes=5),
                now,
                r["payable_min"],
            )
            for r in rows
        ],
    )
    return len(rows)


# ---------------------------------------------------------------------------------------------
# Run


async def run(url: str, args: argparse.Namespace) -> int:
    started = time.perf_counter()
    zone = ZoneInfo(ZONE)
    month_a, month_b, month_c = settled_months(datetime.now(tz=UTC), zone, PayRules().settle_h)
    per_day = math.ceil(args.visits / min(len(days_of(month_a)), len(days_of(month_b))))
    block = math.ceil(per_day / len(SLOTS))
    carers = max(args.carers, math.ceil(block / ROUND))
    people = max(args.people, block)
    await migrate_url(url)
    t0 = time.perf_counter()
    plain = await asyncpg.connect(url)  # no JSON codecs: COPY sends jsonb as text
    try:
        world = await seed(plain, people, carers, month_start(month_a, 12))
    finally:
        await plain.close()
    conn = await connect(url)
    conns: list[asyncpg.Connection] = []
    try:
        days = [
            (day, n)
            for month in (month_a, month_b)
            for day, n in zip(days_of(month), split_evenly(args.visits, len(days_of(month))), strict=True)
        ]
        loaded = await load(url, world, days, args.load_workers, args.fk_checks)
        say(
            f"seeded 1 tenant, {carers:,} carers, {people:,} people, 1 monthly contract; loaded {loaded:,} visits "
            f"({args.visits:,} in each of {month_a:%B %Y} (A) and {month_b:%B %Y} (B), none in {month_c:%B %Y} (C)) "
            f"with their events by COPY in {time.perf_counter() - t0:.1f} s"
        )
        conns = [await connect(url) for _ in range(args.workers)]
        now = datetime.now(tz=UTC)
        result = await recompute(conns, conn, world.tenant_id, now, args.batch, loaded)
        say(
            "reconciled every visit first (not timed against the target): "
            + pass_lines(result, args.batch, args.workers)[0]
        )
        statuses = await conn.fetch(
            "SELECT status, count(*) AS n FROM visits WHERE tenant_id = $1 GROUP BY status ORDER BY status",
            world.tenant_id,
        )
        say("  " + ", ".join(f"{r['status']} {r['n']:,}" for r in statuses))
        not_final = sum(r["n"] for r in statuses if r["status"] not in ("completed", "missed", "cancelled"))
        if not_final:
            raise BenchError(f"{not_final:,} visits are not final after reconciliation")
        t0 = time.perf_counter()
        # Every table, as autovacuum would have by then (people too: the run joins them). Left stale
        # on purpose: invoice_lines, empty until the first run, as right after a busy invoice run.
        await conn.execute("VACUUM (ANALYZE)")
        await conn.execute("CHECKPOINT")
        say(f"VACUUM (ANALYZE) of the database + CHECKPOINT in {time.perf_counter() - t0:.1f} s (not timed)")

        say()
        say(f"== invoice run of month A ({month_a:%B %Y}): run_invoice in one transaction, commit included ==")
        first = await timed_run(conn, world.tenant_id, world.contract_id, month_a)
        got = await outcome(conn, world.tenant_id, first.invoice_id)
        for line in timed_lines(first, got.visits):
            say(line)
        verdict = "met" if first.seconds <= TARGET_SECONDS else "missed"
        say(f"  target <= {TARGET_SECONDS:.0f} s for {args.visits:,} visits: {verdict}")
        for line in outcome_lines(got):
            say(line)
        say(f"  {memory_line()}")

        say()
        say("== the same run again (idempotent: returns the existing invoice) ==")
        again = await timed_run(conn, world.tenant_id, world.contract_id, month_a)
        same = "the same invoice" if again.invoice_id == first.invoice_id else "A DIFFERENT INVOICE"
        say(f"{again.seconds * 1000:.1f} ms (created: {again.created}, {same})")

        say()
        say(f"== month B ({month_b:%B %Y}) step by step: a copy of run_invoice's steps, committed ==")
        split = await run_by_steps(conn, world.tenant_id, world.contract_id, month_b, commit=True)
        for line in split_lines(split, first.load_s + first.run_s + first.commit_s, "the real run of month A"):
            say(line)
        say(f"  {split.lines:,} lines for {split.visits:,} visits")
        say("  cProfile of the Python steps (top 12 by own time):")
        for line in profile_lines(split.profile):
            say(line)

        if args.adjust > 0:
            say()
            say(
                f"== adjustments: {args.adjust:,} visits invoiced on A amended (check-out cut to 5 min after "
                f"check-in), "
                f"then the run of month C ({month_c:%B %Y}), which has no visits of its own =="
            )
            t0 = time.perf_counter()
            async with conn.transaction():
                changed = await change_invoiced(conn, world, month_a, days_of(month_a)[-1], args.adjust)
            ids = [
                r["id"]
                for r in await conn.fetch(
                    "SELECT visit_id AS id FROM amendments WHERE tenant_id = $1 ORDER BY visit_id", world.tenant_id
                )
            ]
            t1 = time.perf_counter()
            async with conn.transaction():
                await reconcile_service.reconcile_visits(conn, world.tenant_id, ids, datetime.now(tz=UTC))
            say(
                f"amended {changed:,} visits in {t1 - t0:.2f} s and reconciled them in "
                f"{time.perf_counter() - t1:.2f} s "
                "(not timed below)"
            )
            say("  step by step first (rolled back):")
            adjust_split = await run_by_steps(conn, world.tenant_id, world.contract_id, month_c, commit=False)
            for line in split_lines(adjust_split, None, ""):
                say(line)
            adjusted = await timed_run(conn, world.tenant_id, world.contract_id, month_c)
            got = await outcome(conn, world.tenant_id, adjusted.invoice_id)
            say("  the run itself:")
            say(
                f"  {adjusted.seconds * 1000:.1f} ms (created: {adjusted.created}); of which run_invoice "
                f"{adjusted.run_s * 1000:.1f} ms, COMMIT {adjusted.commit_s * 1000:.1f} ms"
            )
            for line in outcome_lines(got):
                say(line)
    finally:
        for c in [*conns, conn]:
            await c.close()
    say()
    say(f"whole benchmark {time.perf_counter() - started:.0f} s; {memory_line()}")
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_scratch_database_args(parser, "carebank_bench_billing")
    parser.add_argument("--visits", type=int, default=100_000, help="final visits in each of months A and B")
    parser.add_argument("--people", type=int, default=1_000, help="raised to the visits in one slot of a day")
    parser.add_argument("--carers", type=int, default=100, help=f"raised to what {ROUND}-visit rounds need")
    parser.add_argument("--load-workers", type=int, default=2, help="connections loading days concurrently")
    parser.add_argument(
        "--fk-checks", action="store_true", help="keep the foreign key triggers on during the load (slower)"
    )
    parser.add_argument("--batch", type=int, default=5000, help="visit ids per reconcile_visits call (setup)")
    parser.add_argument("--workers", type=int, default=2, help="connections reconciling concurrently (setup)")
    parser.add_argument("--adjust", type=int, default=1000, help="invoiced visits changed before run C (0 skips)")
    args = parser.parse_args(argv)
    if min(args.visits, args.people, args.carers, args.load_workers, args.batch, args.workers) < 1:
        parser.error("--visits, --people, --carers, --load-workers, --batch and --workers must be positive")
    if args.adjust < 0:
        parser.error("--adjust must not be negative")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return in_scratch_database(args, f"billing benchmark: {args.visits:,} final visits in the month invoiced", run)


if __name__ == "__main__":
    raise SystemExit(main())
