"""Monitoring worker job: raise alerts at their thresholds, resolve those that ended, keep the live board.

While Redis answers, the worker waits on timers there (`timers.py`): thresholds of the visits
planned in the next 24 hours, and notes from ingest that events arrived. It wakes every half
second, leases what fell due, asks PostgreSQL for those visits' facts only, and raises,
resolves and updates the board from them. It learns of new, moved and cancelled visits by
reading the visits changed since its last look (`updated_at`, indexed). It runs on a thread of
its own (`MonitorThread`); a job with the worker's others sweeps PostgreSQL in full once a
minute as a safety net. When Redis is unreachable it sweeps PostgreSQL every
few seconds instead; when Redis comes back it rebuilds timers and boards from PostgreSQL.
PostgreSQL decides every alert and its unique key means two workers raise each alert once.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from infra.db import acquire, create_pool
from infra.redis import create_redis
from schemas.monitoring import Alert, OnSite
from services.common.ids import new_id
from services.monitoring import rules, store
from services.monitoring.board import LiveBoards, on_site_of
from services.monitoring.live import AlertPublisher
from services.monitoring.timers import Timers, threshold_member

log = structlog.get_logger("carebank.monitoring")
LOOKBACK = timedelta(hours=30)  # a day of visits, plus no_check_out's hour after the end
HORIZON = timedelta(hours=24)  # timers are set for visits planned up to this far ahead
ON_SITE_WINDOW = timedelta(hours=12)  # an older check-in without a check-out is an exception, not a presence
# Changes are read back from the oldest open transaction's start, but never further than this:
# a change committed by a transaction open longer is left to the sweep.
CHANGE_LOOKBACK_MAX = timedelta(minutes=2)
KINDS: tuple[rules.Kind, ...] = ("late", "missed", "no_check_out")
# A bulk change (a plan extension of 50,000 visits) is read this many visits a round, so timers
# that fall due meanwhile are not held up by it.
CHANGED_PER_ROUND = 5000
_FIRST = UUID(int=0)
SLOW_TICK_S = 1.0  # a round slower than this eats into the 5 seconds an alert has: logged


def _facts(row: asyncpg.Record) -> rules.VisitFacts:
    return rules.VisitFacts(
        planned_start=row["planned_start"],
        planned_min=row["planned_min"],
        carers_required=row["carers_required"],
        created_at=row["created_at"],
        cancelled=row["cancelled"],
        carers_checked_in=row["carers_checked_in"],
        carers_on_site=row["carers_on_site"],
        late_after_min=row["late_after_min"],
        missed_after_min=row["missed_after_min"],
    )


async def _facts_of(
    conn: asyncpg.Connection, rows: Sequence[asyncpg.Record]
) -> list[tuple[asyncpg.Record, rules.VisitFacts]]:
    """Each visit row with its facts. A visit that approved moves took events from or brought events
    to (`moved`) has its carers counted again where reconciliation counts them (decision 155): the
    row counted the events stored on it, which then says nobody came to the right visit and that the
    carer is still on the wrong one."""
    moved = await store.moved_counts(conn, [(row["tenant_id"], row["id"]) for row in rows if row["moved"]])
    result: list[tuple[asyncpg.Record, rules.VisitFacts]] = []
    for row in rows:
        facts = _facts(row)
        if (counted := moved.get((row["tenant_id"], row["id"]))) is not None:
            facts = replace(facts, carers_checked_in=counted[0], carers_on_site=counted[1])
        result.append((row, facts))
    return result


Changed = list[tuple[UUID, Alert]]


async def evaluate_alerts(
    pool: asyncpg.Pool, now: datetime | None = None, since: datetime | None = None
) -> tuple[Changed, Changed]:
    """A sweep of PostgreSQL: (raised, resolved) alerts, each with its tenant. The fallback while
    Redis is away, and the safety net behind the timers while it is up. With `since` (the previous
    sweep, less a margin), visits whose thresholds had all passed by then and that have not
    changed since are skipped: an earlier sweep saw them."""
    now = now or datetime.now(tz=UTC)
    # No transaction around it all: the inserts would hold their unique keys until the end of a
    # long read, and a timer raising the same alert meanwhile would wait for it. Each statement
    # commits on its own; the unique key still decides.
    async with acquire(pool) as conn:
        rows: list[dict[str, Any]] = []
        near = await store.visits_near_thresholds(
            conn, now, LOOKBACK, since=since, no_check_out_after=rules.NO_CHECK_OUT_AFTER
        )
        for visit, facts in await _facts_of(conn, near):
            for kind, due_at in rules.alerts_due(facts, now):
                rows.append(_alert_row(visit, kind, "", due_at, now))
        for event in await store.unalerted_outside_geofence(conn, now - LOOKBACK):
            rows.append(_alert_row(event, "outside_geofence", str(event["event_id"]), event["received_at"], now))
        raised = await store.raise_alerts(conn, rows)
        resolved = await _resolve(conn, await store.facts_of_open_alerts(conn), now)
    return raised, resolved


def _alert_row(source: asyncpg.Record, kind: str, subject: str, due_at: datetime, now: datetime) -> dict[str, Any]:
    visit_id = source["visit_id"] if "visit_id" in source else source["id"]
    return {
        "tenant_id": source["tenant_id"],
        "id": new_id(),
        "visit_id": visit_id,
        "person_id": source["person_id"],
        "provider_id": source["provider_id"],
        "kind": kind,
        "subject": subject,
        "due_at": due_at,
        "raised_at": now,
    }


class Monitor:
    """The worker's monitoring job: `tick` is run every half second (or with a given clock, in tests)."""

    def __init__(
        self,
        redis: Redis | None,
        namespace: str,
        publisher: AlertPublisher | None = None,
        *,
        fallback_every_s: float = 5.0,
    ) -> None:
        self.timers = Timers(redis, namespace) if redis is not None else None
        self.boards = LiveBoards(redis, namespace) if redis is not None else None
        self._publisher = publisher
        self._fallback_every_s = fallback_every_s
        self.ready = False  # timers and boards rebuilt since Redis was last (re)found
        self._since: datetime | None = None  # read visits changed from here (database clock)
        # Where the current pass over changed visits has got to, and where the next one starts.
        self._cursor: tuple[datetime, UUID, UUID] | None = None
        self._next_since: datetime | None = None
        self._horizon_end: datetime | None = None
        self._last_sweep = -float("inf")
        self._sweeps = Sweeps()

    async def tick(self, pool: asyncpg.Pool, now: datetime | None = None) -> int:
        """One round; returns how many alerts were raised or resolved."""
        now = now or datetime.now(tz=UTC)
        if self.timers is None or self.boards is None:
            return await self._sweep_if_due(pool, now, self._fallback_every_s)
        try:
            if not self.ready:
                await self.timers.ping()
                changed = await self.rebuild(pool, now)
                self.ready = True
                log.info("monitoring_timers_rebuilt")
                return changed
            touched = await self._refresh(pool, now)
            return await self._fire(pool, now, touched)
        except (RedisError, OSError) as exc:
            if self.ready:
                log.warning("monitoring_polling_postgres", reason="redis_unavailable", error=type(exc).__name__)
                self._last_sweep = -float("inf")  # catch up at once
            self.ready = False
            return await self._sweep_if_due(pool, now, self._fallback_every_s)

    async def rebuild(self, pool: asyncpg.Pool, now: datetime) -> int:
        """Sweep PostgreSQL for what is due, then set every timer of the next 24 hours and every
        live board from it."""
        assert self.timers is not None
        assert self.boards is not None
        self._sweeps.forget()  # a full sweep: whatever happened while nobody was looking
        changed = await self._sweep_if_due(pool, now, 0)
        async with acquire(pool) as conn:
            _, oldest = await store.clock(conn)
            rows = await store.visits_starting(conn, now - LOOKBACK, now + HORIZON)
            present = await store.on_site_everywhere(conn, now - ON_SITE_WINDOW)
        timers, _ = _timers_of(rows, after=now)
        await self.timers.schedule(timers)
        boards: dict[UUID, list[OnSite]] = defaultdict(list)
        for tenant in await self.timers.tenants():
            boards[tenant] = []
        for row in present:
            boards[row["tenant_id"]].append(on_site_of(row))
        await self.boards.replace(boards)
        self._since, self._cursor, self._horizon_end = oldest, None, now + HORIZON
        return changed

    async def _refresh(self, pool: asyncpg.Pool, now: datetime) -> set[tuple[UUID, UUID]]:
        """Timers for visits created, moved or cancelled since the last look (a page of them a
        round), and for visits that entered the horizon; returns changed visits that have alerts
        (a cancellation resolves). A pass over the changes starts where the oldest transaction
        open at the previous pass's start began, so a change committed late is not missed."""
        assert self.timers is not None
        async with acquire(pool) as conn:
            db_now, oldest = await store.clock(conn)
            if self._cursor is None:  # a new pass, from where the last one said to start
                self._next_since = max(oldest, db_now - CHANGE_LOOKBACK_MAX)
                self._cursor = (self._since or oldest, _FIRST, _FIRST)
            changed = await store.visits_changed_since(
                conn, self._cursor, now - LOOKBACK, now + HORIZON, CHANGED_PER_ROUND
            )
            start = self._horizon_end or now
            entering = await store.visits_starting(conn, start, now + HORIZON) if now + HORIZON > start else []
        timers, gone = _timers_of([*changed, *entering], after=None)
        await self.timers.schedule(timers, gone)
        if len(changed) == CHANGED_PER_ROUND:  # more to read: next round, after the due timers
            last = changed[-1]
            self._cursor = (last["updated_at"], last["tenant_id"], last["id"])
        else:
            self._since, self._cursor = self._next_since, None
        self._horizon_end = max(start, now + HORIZON)
        return {(row["tenant_id"], row["id"]) for row in changed if row["alerted"]}

    async def _fire(self, pool: asyncpg.Pool, now: datetime, touched: set[tuple[UUID, UUID]]) -> int:
        """Handle the due timers: raise at thresholds, resolve and look for geofence failures where
        events arrived, update the boards of the carers who posted them."""
        assert self.timers is not None
        assert self.boards is not None
        dues = await self.timers.lease_due(now)
        at_threshold = [(d.tenant_id, v) for d in dues for v in d.thresholds]
        touched = touched | {(d.tenant_id, v) for d in dues for _, v in d.touched}
        if not at_threshold and not touched:
            await self.timers.done(dues)
            return 0
        async with acquire(pool) as conn, conn.transaction():
            rows: list[dict[str, Any]] = []
            for visit, facts in await _facts_of(conn, await store.facts_of_visits(conn, at_threshold)):
                for kind, due_at in rules.alerts_due(facts, now):
                    rows.append(_alert_row(visit, kind, "", due_at, now))
            for event in await store.unalerted_outside_geofence_of(conn, sorted(touched)):
                rows.append(_alert_row(event, "outside_geofence", str(event["event_id"]), event["received_at"], now))
            raised = await store.raise_alerts(conn, rows)
            events_at = await store.facts_of_visits(conn, sorted(touched))
            # An event on a visit the carer's events were moved from counts where the moves lead: that
            # visit's alerts may end too (a check-out still sent to the wrong visit ends the right one's).
            moved_on = await store.move_targets_of(conn, [(r["tenant_id"], r["id"]) for r in events_at if r["moved"]])
            events_at += await store.facts_of_visits(conn, sorted(set(moved_on) - touched))
            resolved = await _resolve(conn, events_at, now)
            boards = [(d.tenant_id, sorted(d.touched)) for d in dues if d.touched]
            present = [await store.on_site_at(conn, t, pairs, now - ON_SITE_WINDOW) for t, pairs in boards]
        for (tenant_id, pairs), rows_now in zip(boards, present, strict=True):
            await self.boards.merge(tenant_id, pairs, [on_site_of(r) for r in rows_now])
        await self._publish(raised, resolved)
        await self.timers.done(dues)
        return len(raised) + len(resolved)

    async def _sweep_if_due(self, pool: asyncpg.Pool, now: datetime, every_s: float) -> int:
        if time.monotonic() - self._last_sweep < every_s:
            return 0
        self._last_sweep = time.monotonic()
        raised, resolved = await self._sweeps.sweep(pool, now)
        await self._publish(raised, resolved)
        return len(raised) + len(resolved)

    async def _publish(self, raised: Changed, resolved: Changed) -> None:
        for _, alert in raised:
            log.info("alert_raised", kind=alert.kind, alert_id=str(alert.id), visit_id=str(alert.visit_id))
        if self._publisher is not None and (raised or resolved):
            await self._publisher.publish(raised + resolved)


class Sweeps:
    """Successive sweeps: the first looks at every visit of the last 30 hours, the next ones only
    at visits with a threshold after the previous sweep (less a margin for slow commits) or
    changed since; open alerts are all looked at every time."""

    MARGIN = timedelta(minutes=2)

    def __init__(self) -> None:
        self._last: datetime | None = None

    def forget(self) -> None:
        self._last = None

    async def sweep(self, pool: asyncpg.Pool, now: datetime) -> tuple[Changed, Changed]:
        since = self._last - self.MARGIN if self._last is not None and self._last <= now else None
        changed = await evaluate_alerts(pool, now, since)
        self._last = now
        return changed


class SweepJob:
    """The minutely sweep behind the timers: whatever they missed (an approved amendment, a lost
    note) shows within a minute. Runs with the worker's other jobs, not on the monitoring thread,
    so a slow sweep never holds up a timer."""

    def __init__(self, publisher: AlertPublisher | None = None) -> None:
        self._publisher = publisher
        self._sweeps = Sweeps()

    async def __call__(self, pool: asyncpg.Pool) -> int:
        raised, resolved = await self._sweeps.sweep(pool, datetime.now(tz=UTC))
        if self._publisher is not None and (raised or resolved):
            await self._publisher.publish(raised + resolved)
        return len(raised) + len(resolved)


async def monitor_pool(database_url: str) -> asyncpg.Pool:
    """The timers' own pool, with plans made for each execution (decision 157). A generic plan cached
    while the tables were nearly empty, and kept until something analyzes them, read 50,000 new visits
    for a minute a statement, and the alerts waited for it."""
    return await create_pool(database_url, max_size=2, custom_plans=True)


class MonitorThread:
    """`Monitor.tick` every half second on a thread and event loop of its own, with its own pool
    and Redis client: the worker's other jobs (a reconciliation batch is seconds of Python) would
    otherwise hold up a timer that fell due. The GIL still shares the CPU, in 5 ms slices."""

    def __init__(self, database_url: str, redis_url: str | None, namespace: str, interval_s: float = 0.5) -> None:
        self._database_url = database_url
        self._redis_url = redis_url
        self._namespace = namespace
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="carebank-monitoring", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 15.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout_s)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        pool = await monitor_pool(self._database_url)
        redis = create_redis(self._redis_url) if self._redis_url else None
        publisher = AlertPublisher(redis, self._namespace) if redis is not None else None
        monitor = Monitor(redis, self._namespace, publisher)
        try:
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    if count := await monitor.tick(pool):
                        log.info("job_done", job="alerts", count=count)
                except (OSError, asyncpg.PostgresError) as exc:
                    log.warning("job_failed", job="alerts", error=str(exc))
                took = time.perf_counter() - started
                if took > SLOW_TICK_S:
                    log.warning("monitoring_tick_slow", seconds=round(took, 2))
                await asyncio.sleep(self._interval_s)
        finally:
            await pool.close()
            if redis is not None:
                await redis.aclose()


async def _resolve(conn: asyncpg.Connection, facts: Sequence[asyncpg.Record], now: datetime) -> Changed:
    resolved: Changed = []
    rows = await _facts_of(conn, facts)
    for kind in KINDS:
        ended = [(row["tenant_id"], row["id"]) for row, f in rows if not rules.condition_holds(kind, f)]
        resolved += await store.resolve(conn, ended, kind, now)
    return resolved


def _timers_of(
    rows: Iterable[asyncpg.Record], *, after: datetime | None
) -> tuple[dict[UUID, dict[str, float]], dict[UUID, list[str]]]:
    """Timer members per tenant for these visits (kinds already alerted left out; thresholds not
    after `after` left out when given), and the members of visits that can no longer alert."""
    timers: dict[UUID, dict[str, float]] = defaultdict(dict)
    gone: dict[UUID, list[str]] = defaultdict(list)
    for row in rows:
        kinds = rules.thresholds_of(
            row["planned_start"], row["planned_min"], row["late_after_min"], row["missed_after_min"]
        )
        for kind, at in kinds.items():
            member = threshold_member(kind, row["id"])
            if not row["alertable"] or kind in row["alerted"]:
                gone[row["tenant_id"]].append(member)
            elif after is None or at > after:
                timers[row["tenant_id"]][member] = at.timestamp()
    return timers, gone
