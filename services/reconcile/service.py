"""Reconciling stored visits: load inputs set-wise, apply the pure rules, store the state.

Used by the queue drainer (events, cancellations), the clock job (missed, settled) and
`carebank reconcile`, which recomputes from scratch and compares with what is stored.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from schemas.catalog import PayRules
from schemas.planning import AttendanceOut, VisitActual
from services.banking import ledger as bank_ledger
from services.reconcile import rules, store

_ACTUAL = msgspec.json.Encoder()
# Longer is a mistake awaiting amendment, not an overlap (the `attendances` table's CHECK says the same).
MAX_ATTENDANCE = timedelta(days=2)
# The API reconciles on the event loop that answers requests; the rules are CPU work with no await
# between visits, so a batch yields every this many visits (a few milliseconds of work).
YIELD_EVERY = 50


class State(msgspec.Struct, frozen=True):
    """A visit's reconciled state as stored (without the time it was computed). A struct, not a frozen
    dataclass: one is made for every visit reconciled, and a struct is made in a tenth of the time."""

    status: str
    actual: VisitActual | None
    exceptions: tuple[str, ...]
    payable_min: int
    banked_min: int

    def comparable(self) -> tuple[Any, ...]:
        actual = msgspec.structs.replace(self.actual, reconciled_at=datetime.min) if self.actual else None
        return (self.status, msgspec.to_builtins(actual), self.exceptions, self.payable_min, self.banked_min)


@dataclass
class Computed:
    """A batch's recomputed states (`states`), the stored ones when asked for (`stored`), when the clock
    may next change each (`next_checks`) and, when the stored states are asked for, when the stored row
    says the clock job will next look at it (`stored_next_checks`), and the visits the bank may care about
    (`bank_visits`: those bank-funded or on an outcome-based contract, the only ones `bank.sync_visits`
    ever posts for)."""

    states: dict[UUID, State] = field(default_factory=dict)
    stored: dict[UUID, State] = field(default_factory=dict)
    next_checks: dict[UUID, datetime | None] = field(default_factory=dict)
    stored_next_checks: dict[UUID, datetime | None] = field(default_factory=dict)
    bank_visits: list[UUID] = field(default_factory=list)


def _plan(row: asyncpg.Record) -> rules.Plan:
    cancellation = row["cancellation"] or {}
    return rules.Plan(
        planned_start=row["planned_start"],
        planned_min=row["planned_min"],
        carers_required=row["carers_required"],
        funding=row["funding"],
        model=row["model"],
        key_outcomes=frozenset(row["key_outcomes"]),
        unplanned=row["origin"] == "unplanned" and row["approval"] != "approved",
        made_for_events=row["origin"] == "unplanned",
        approved=row["approval"] == "approved" or row["origin"] == "unplanned",
        cancelled_by=cancellation.get("by"),
        short_notice=bool(cancellation.get("short_notice")),
        cancellation_confirmed=bool(cancellation.get("confirmed", True)),
    )


def _event(row: asyncpg.Record) -> rules.Event:
    return rules.Event(
        carer_id=row["carer_id"],
        kind=row["kind"],
        occurred_at=row["occurred_at"],
        method=row["method"],
        verified=row["verified"],
        outcomes=tuple((o["outcome_id"], o["status"]) for o in row["outcomes"]),
    )


def _as_wire(actual: rules.Actual, now: datetime) -> VisitActual | None:
    """Nothing to show before anyone came, except what a cancellation pays."""
    return None if not actual.attendances and actual.status != "cancelled" else _wire(actual, now)


def _wire(actual: rules.Actual, now: datetime) -> VisitActual:
    attendances = [
        AttendanceOut(
            carer_id=a.carer_id,
            check_in=a.check_in,
            check_out=a.check_out,
            actual_seconds=a.actual_seconds,
            actual_min=round(a.actual_seconds / 60, 2) if a.actual_seconds is not None else None,
            payable_min=a.payable_min,
            verified_in_home=a.verified_in_home,
            counted=a.counted,
            exceptions=list(a.exceptions),
        )
        for a in actual.attendances
    ]
    return VisitActual(
        attendances=attendances,
        payable_min=actual.payable_min,
        banked_min=actual.banked_min,
        place_payables=list(actual.place_payables),
        # DOMAIN.md: when all its attendances are (an extra carer's too).
        verified_in_home=bool(attendances) and all(a.verified_in_home for a in attendances),
        reconciled_at=now,
    )


def _amendment(row: asyncpg.Record) -> rules.Amendment:
    return rules.Amendment(
        carer_id=row["carer_id"],
        decided_at=row["decided_at"],
        check_in_at=row["check_in_at"],
        check_out_at=row["check_out_at"],
        extension_min=row["extension_min"],
        planned_min=row["planned_min"],
    )


async def compute(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    visit_ids: Sequence[UUID],
    now: datetime,
    extra: dict[UUID, list[rules.Amendment]] | None = None,
    *,
    with_stored: bool = True,
) -> Computed:
    """Each visit's state from the database's current inputs (plus `extra` amendments, to preview what
    a proposal would do), with its stored state if wanted."""
    visits = await store.load_visits(conn, tenant_id, visit_ids, with_stored=with_stored)
    stored_rules = await store.load_pay_rules(conn, tenant_id, {row["contract_id"] for row in visits})
    pay_rules_of = {contract_id: msgspec.convert(doc, PayRules) for contract_id, doc in stored_rules.items()}
    events: dict[UUID, list[rules.Event]] = defaultdict(list)
    moves = await store.load_moves(conn, tenant_id, visit_ids)
    for row in await store.load_events(conn, tenant_id, visit_ids, moves):
        events[row["visit_id"]].append(_event(row))
    amendments: dict[UUID, list[rules.Amendment]] = defaultdict(list)
    for row in await store.load_amendments(conn, tenant_id, visit_ids, moves):
        amendments[row["visit_id"]].append(_amendment(row))
    for visit_id, more in (extra or {}).items():
        amendments[visit_id] += more
    result = Computed()
    for done, row in enumerate(visits, 1):
        if done % YIELD_EVERY == 0:
            await asyncio.sleep(0)  # let the event loop answer requests between stretches of rules
        plan = _plan(row)
        pay_rules = pay_rules_of[row["contract_id"]]
        actual = rules.reconcile(plan, events[row["id"]], amendments[row["id"]], pay_rules, now)
        result.states[row["id"]] = State(
            actual.status, _as_wire(actual, now), actual.exceptions, actual.payable_min, actual.banked_min
        )
        if with_stored:
            result.stored[row["id"]] = State(
                row["status"],
                msgspec.convert(row["actual"], VisitActual) if row["actual"] else None,
                tuple(row["exceptions"]),
                row["payable_min"],
                row["banked_min"],
            )
            result.stored_next_checks[row["id"]] = row["next_check_at"]
        result.next_checks[row["id"]] = rules.next_check_at(plan, actual, pay_rules)
        if plan.funding == "bank" or plan.model == "outcome_based":
            result.bank_visits.append(row["id"])
    return result


Lock = Callable[[asyncpg.Connection, UUID, Sequence[UUID]], Awaitable[None]]


async def hold_visits(conn: asyncpg.Connection, tenant_id: UUID, visit_ids: Sequence[UUID], lock: Lock) -> list[UUID]:
    """Lock (with `lock`, which takes them in id order) these visits and those approved moves lead to from
    them, all in one statement; returns them all, sorted. A reconciliation of a visit changes the visits its
    events were moved to as well, so they are held with it."""
    visit_ids = sorted(set(visit_ids) | set(await store.move_targets(conn, tenant_id, visit_ids)))
    await lock(conn, tenant_id, visit_ids)
    # The targets again, now that the visits are held: a move approved while this waited (it held one of
    # them) can take these visits' events further along a chain, to a visit not read above. Those are
    # locked after the others, out of order: a rare deadlock, which PostgreSQL breaks (decision 133).
    while more := set(await store.move_targets(conn, tenant_id, visit_ids)) - set(visit_ids):
        visit_ids = sorted(set(visit_ids) | more)
        await lock(conn, tenant_id, visit_ids)
    return visit_ids


async def reconcile_visits(conn: asyncpg.Connection, tenant_id: UUID, visit_ids: Sequence[UUID], now: datetime) -> int:
    """Recompute these visits' state and store what changed; returns how many were reconciled."""
    if not visit_ids:
        return 0
    # Locked so that two reconciliations of one visit take turns and the later reads what the earlier
    # committed: every input is read after the lock, by statements that start after it was granted.
    # (The overlap pass's carers are locked last, `overlap_pass`: visits, then accounts, then carers.)
    visit_ids = await hold_visits(conn, tenant_id, visit_ids, store.lock_visits)
    result = await compute(conn, tenant_id, visit_ids, now, with_stored=False)
    # The attendances to store, against those stored (only reconciliations of these visits, which wait
    # for their locks, write them): the visits whose attendances change have their overlap flag decided
    # again by the pass, below.
    stored = await store.stored_attendances(conn, tenant_id, list(result.states))
    change = attendance_change(stored, as_rows(intervals_of(result.states)))
    states = [
        {
            "id": visit_id,
            "status": state.status,
            "actual": _ACTUAL.encode(state.actual).decode() if state.actual else None,
            "exceptions": state.exceptions,
            "overlapping": False if visit_id in change.moved else None,
            "payable_min": state.payable_min,
            "banked_min": state.banked_min,
            "next_check_at": result.next_checks[visit_id],
        }
        for visit_id, state in result.states.items()
    ]
    await store.save_states(conn, tenant_id, states, now)
    # The bank follows the reconciliation in the same transaction: accruals, corrections, deliveries.
    await bank_ledger.sync_visits(conn, tenant_id, result.bank_visits, now)
    await overlap_pass(conn, tenant_id, change)
    return len(states)


@dataclass(frozen=True)
class AttendanceChange:
    """What a reconciliation changes in its visits' stored attendances: the rows to delete (`gone`) and
    to insert (`new`), the visits whose attendances change (`moved`) and the carers of every attendance
    of those visits, stored or new (`carers`, the ones the overlap pass locks)."""

    gone: list[store.Attendance]
    new: list[store.Attendance]
    moved: set[UUID]
    carers: set[UUID]


def attendance_change(stored: set[store.Attendance], attendances: list[store.Attendance]) -> AttendanceChange:
    given = set(attendances)
    gone = [row for row in stored if row not in given]
    new = [row for row in attendances if row not in stored]
    moved = {row[0] for row in gone} | {row[0] for row in new}
    return AttendanceChange(gone, new, moved, {row[1] for row in stored | given if row[0] in moved})


async def overlap_pass(conn: asyncpg.Connection, tenant_id: UUID, change: AttendanceChange) -> None:
    """The separate pass (DOMAIN.md keeps it out of the pure rules): one carer in two visits at once.

    Last in the transaction, with the carers of the visits whose attendances change locked until it
    ends (decision 128): two passes over one carer take turns, so the later reads the earlier's
    committed attendances, and little of a batch runs under those locks. The visits whose attendances
    change get their flag back where they overlap; the partners of what changed are marked, except
    those another transaction holds (never waited for here: the holder may be waiting for these
    carers), which are left for the recheck."""
    if not change.moved:
        return
    await store.lock_attendances(conn, tenant_id, change.carers)
    old_partners = await store.write_attendances(conn, tenant_id, change.gone, change.new)
    moved = change.moved
    pairs = await store.overlap_pairs(conn, tenant_id, sorted(moved))
    await store.set_overlaps(conn, tenant_id, sorted({visit_id for visit_id, _ in pairs}))
    partners = sorted((old_partners | {partner for _, partner in pairs}) - moved)
    await store.queue_overlap_rechecks(conn, tenant_id, await store.mark_overlaps(conn, tenant_id, partners))


def intervals_of(states: dict[UUID, State]) -> list[rules.Interval]:
    """Every paired attendance (counted or not: the carer was there) of these visits."""
    return [
        rules.Interval(visit_id, a.carer_id, a.check_in, a.check_out)
        for visit_id, state in states.items()
        if state.actual is not None
        for a in state.actual.attendances
        if a.check_in is not None
        and a.check_out is not None
        and a.actual_seconds is not None
        # The exact span, as the table's CHECK compares it: whole `actual_seconds` let 2 days + 0.5 s pass.
        and a.check_out - a.check_in <= MAX_ATTENDANCE
    ]


def as_rows(intervals: Sequence[rules.Interval]) -> list[store.Attendance]:
    """Intervals as the (visit, carer, check-in, check-out) rows the store takes."""
    return [(i.visit_id, i.carer_id, i.check_in, i.check_out) for i in intervals]
