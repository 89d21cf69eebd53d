"""Reconciliation jobs: drain the queue of changed visits, and move visits the clock has moved."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

import asyncpg
import msgspec
import structlog

from infra.db import acquire
from services.common.ids import by_tenant
from services.reconcile import rules, service, store

log = structlog.get_logger("carebank.reconcile")
BATCH = 2000


async def _reconcile_by_tenant(conn: asyncpg.Connection, pairs: Sequence[tuple[UUID, UUID]], now: datetime) -> int:
    return sum([await service.reconcile_visits(conn, t, ids, now) for t, ids in by_tenant(pairs)])


# Failures that say nothing about the batch: it is retried whole, next time round.
TRANSIENT = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
)
# How long a visit whose own reconciliation fails waits before it is tried again (decision 129).
HOLD_AFTER_FAILURE = timedelta(minutes=5)

Pairs = list[tuple[UUID, UUID]]


async def _in_batches(
    pool: asyncpg.Pool,
    now: datetime | None,
    take: Callable[[asyncpg.Connection], Awaitable[Pairs]],
    peek: Callable[[asyncpg.Connection], Awaitable[Pairs]],
    claim: Callable[[asyncpg.Connection, UUID, UUID, datetime], Awaitable[bool]],
) -> int:
    """Reconcile what `take` gives, BATCH visits a transaction, until it gives less. A batch that fails for
    a reason of its own is done again a visit at a time (what `peek` lists, each if `claim` says it is still
    to do), so one visit that cannot be reconciled holds up only itself (decision 129)."""
    total = 0
    while True:
        try:
            async with acquire(pool) as conn, conn.transaction():
                pairs = await take(conn)
                total += await _reconcile_by_tenant(conn, pairs, now or datetime.now(tz=UTC))
        except TRANSIENT:
            raise
        except Exception:
            log.exception("reconcile_batch_failed")
            async with acquire(pool) as conn:
                total += await _one_at_a_time(conn, await peek(conn), now, claim)
            continue
        if len(pairs) < BATCH:
            return total


async def _one_at_a_time(
    conn: asyncpg.Connection,
    pairs: Sequence[tuple[UUID, UUID]],
    now: datetime | None,
    claim: Callable[[asyncpg.Connection, UUID, UUID, datetime], Awaitable[bool]],
) -> int:
    """Reconcile each visit in a transaction of its own (after `claim` says it is still to do); one that
    fails is logged and held back for HOLD_AFTER_FAILURE (`store.hold_back`)."""
    done = 0
    for tenant_id, visit_id in pairs:
        at = now or datetime.now(tz=UTC)
        try:
            async with conn.transaction():
                if await claim(conn, tenant_id, visit_id, at):
                    done += await service.reconcile_visits(conn, tenant_id, [visit_id], at)
        except TRANSIENT:
            raise
        except Exception:
            log.exception("reconcile_visit_failed", tenant_id=str(tenant_id), visit_id=str(visit_id))
            async with conn.transaction():
                await store.hold_back(conn, tenant_id, visit_id, at + HOLD_AFTER_FAILURE)
    return done


async def drain_queue(pool: asyncpg.Pool, now: datetime | None = None) -> int:
    """Reconcile every queued visit (in batches, each claimed and stored in one transaction), then
    recheck the overlap flags reconciliations had to leave."""

    async def take(conn: asyncpg.Connection) -> Pairs:
        return await store.take_queued(conn, BATCH)

    async def peek(conn: asyncpg.Connection) -> Pairs:
        return await store.queued(conn, BATCH)

    total = await _in_batches(pool, now, take, peek, store.take_queued_visit)
    await recheck_overlaps(pool)
    return total


async def recheck_overlaps(pool: asyncpg.Pool) -> int:
    """Recompute the overlap flag of the visits an overlap pass could not mark because another transaction
    held them (decision 128), from the committed attendances; one still held is left for the next time."""
    async with acquire(pool) as conn, conn.transaction():
        pairs = await store.take_overlap_rechecks(conn, BATCH)
        for tenant_id, visit_ids in by_tenant(pairs):
            await store.queue_overlap_rechecks(conn, tenant_id, await store.mark_overlaps(conn, tenant_id, visit_ids))
    return len(pairs)


async def reconcile_due(pool: asyncpg.Pool, now: datetime | None = None) -> int:
    """Reconcile visits whose missed or settle time has passed."""
    at = now or datetime.now(tz=UTC)

    async def due(conn: asyncpg.Connection) -> Pairs:
        return await store.due_visits(conn, at, BATCH)

    return await _in_batches(pool, at, due, due, store.still_due)


class QueueDrainer:
    """In the API process: reconcile changed visits within a fraction of a second of the change."""

    def __init__(self, pool: asyncpg.Pool, interval_s: float = 0.2) -> None:
        self._pool = pool
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="reconcile-drainer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                await drain_queue(self._pool)
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("reconcile_drain_failed", error=str(exc))
            except Exception:
                # The batch rolled back and stays queued; ending the task would stop the API's draining for good.
                log.exception("reconcile_drain_failed")
            await asyncio.sleep(self._interval_s)


@dataclass(frozen=True)
class Verification:
    """What `verify_tenant` found: how many visits it compared, those whose stored state differs from
    a recomputation, and those it left out because a change to them was still on its way (queued, due
    for the clock, waiting for an overlap recheck, or stored after the check began)."""

    checked: int
    differing: list[UUID]
    pending: list[UUID]


async def verify_tenant(
    pool: asyncpg.Pool, tenant_id: UUID, start: datetime | None = None, end: datetime | None = None
) -> Verification:
    """Bring every visit up to date, then recompute the tenant's visits from scratch and compare with
    what is stored.

    Batch by batch (ids read a page at a time too), so memory stays bounded however many visits
    there are: each batch's overlap pass runs over its recomputed attendances and the stored ones
    they overlap on other visits (a visit whose stored attendances are wrong is reported in its own
    batch). Each batch is read in one snapshot (repeatable read), and the visits with a change still
    on its way are left out and reported as pending: on a live system an event accepted during the
    check is not a difference, only a visit whose reconciliation is not yet done."""
    now = datetime.now(tz=UTC)
    await drain_queue(pool, now)
    await reconcile_due(pool, now)
    checked = 0
    differing: list[UUID] = []
    pending: list[UUID] = []
    async with acquire(pool) as conn:
        after: UUID | None = None
        while page := await store.tenant_visit_ids(conn, tenant_id, start, end, after, BATCH):
            after = page[-1]
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                waiting = await store.pending_visits(conn, tenant_id, page, now)
                visit_ids = [visit_id for visit_id in page if visit_id not in waiting]
                pending += [visit_id for visit_id in page if visit_id in waiting]
                checked += len(visit_ids)
                differing += await _differing(conn, tenant_id, visit_ids, now)
    return Verification(checked, differing, pending)


async def _differing(conn: asyncpg.Connection, tenant_id: UUID, visit_ids: list[UUID], now: datetime) -> list[UUID]:
    """Those of these visits whose stored state is not what the rules and the overlap pass make of them."""
    if not visit_ids:
        return []
    result = await service.compute(conn, tenant_id, visit_ids, now)
    computed, stored = result.states, result.stored
    intervals = service.intervals_of(computed)
    neighbours = await store.stored_partners(conn, tenant_id, service.as_rows(intervals), list(computed))
    overlapping = rules.overlapping_visits(intervals + [rules.Interval(*n) for n in neighbours])
    return [
        v
        for v, state in computed.items()
        if msgspec.structs.replace(
            state, exceptions=rules.with_overlap(state.exceptions, v in overlapping)
        ).comparable()
        != stored[v].comparable()
        or not checked_in_time(result.stored_next_checks[v], result.next_checks[v])
    ]


def checked_in_time(stored: datetime | None, needed: datetime | None) -> bool:
    """Whether a visit's stored next check brings the clock job back no later than its state needs (its
    missed or settle time, `rules.next_check_at`). One that is later, or missing, is wrong: the visit would
    be marked missed late or never, and no alert raised for it. One that is earlier is not: the clock job
    then finds the state unchanged and stores the right time (a generated visit is stored with its planned
    start, before its missed time, and is first reconciled then), and one already passed is pending."""
    return needed is None or (stored is not None and stored <= needed)
