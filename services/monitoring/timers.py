"""Alert timers in Redis: one sorted set per tenant, scored by the instant a member falls due.

Members are `<kind>:<visit>` for a threshold (late, missed, no_check_out) and `event:<carer>:<visit>`
(score 0, due at once) for events just ingested, so the worker looks at that visit and that carer
again. Keys are `{namespace}:alert-timers:{<tenant>}` (the tenant is the Redis Cluster hash tag),
and `{namespace}:monitored-tenants` is the set of tenants that have one (or a live board).

Everything here can be rebuilt from PostgreSQL, which alone decides whether an alert is raised: a
timer only says when to look. Due members are leased (re-scored a little later) rather than
removed, and removed once handled, so a worker that dies holding them leaves them for another.
Only commands of Redis 6.2 or older are used.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast
from uuid import UUID

import structlog
from litestar.background_tasks import BackgroundTask
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.monitoring.rules import Kind

log = structlog.get_logger("carebank.monitoring")

LEASE_S = 30.0  # a worker holding due timers this long without finishing is taken to be gone
EVENT = "event"

# Due members (score <= now), at most ARGV[2], are re-scored to ARGV[3] and returned.
_LEASE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  redis.call('ZADD', KEYS[1], 'XX', ARGV[3], member)
end
return due
"""
# Members still carrying the lease score ARGV[1] are removed; one re-scored meanwhile (moved
# visit, new event) stays.
_DONE = """
local removed = 0
local lease = tonumber(ARGV[1])
for i = 2, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) == lease then
    removed = removed + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return removed
"""


def timers_key(namespace: str, tenant_id: UUID) -> str:
    return f"{namespace}:alert-timers:{{{tenant_id}}}"


def tenants_key(namespace: str) -> str:
    return f"{namespace}:monitored-tenants"


def threshold_member(kind: Kind, visit_id: UUID) -> str:
    return f"{kind}:{visit_id}"


def event_member(carer_id: UUID, visit_id: UUID) -> str:
    return f"{EVENT}:{carer_id}:{visit_id}"


@dataclass
class Due:
    """What one tenant's due members ask for."""

    tenant_id: UUID
    lease: float
    members: list[str]
    thresholds: set[UUID] = field(default_factory=set)  # visits with a threshold due
    touched: set[tuple[UUID, UUID]] = field(default_factory=set)  # (carer, visit) with new events

    @classmethod
    def parse(cls, tenant_id: UUID, lease: float, members: list[str]) -> Due:
        due = cls(tenant_id, lease, members)
        for member in members:
            parts = member.split(":")
            try:
                if parts[0] == EVENT and len(parts) == 3:
                    due.touched.add((UUID(parts[1]), UUID(parts[2])))
                elif len(parts) == 2:
                    due.thresholds.add(UUID(parts[1]))
            except ValueError:
                log.warning("alert_timer_unreadable", member=member)
        return due


class Timers:
    """The timer sets of one namespace. Every method raises RedisError/OSError when Redis is away;
    the worker catches that and falls back to polling PostgreSQL."""

    def __init__(self, redis: Redis, namespace: str) -> None:
        self._redis = redis
        self._namespace = namespace
        self._lease = redis.register_script(_LEASE)
        self._done = redis.register_script(_DONE)

    async def ping(self) -> bool:
        return bool(await self._redis.ping())

    async def schedule(self, timers: dict[UUID, dict[str, float]], gone: dict[UUID, list[str]] | None = None) -> int:
        """Set `member -> due epoch` per tenant (a later call for a member moves it), drop `gone`."""
        if not timers and not gone:
            return 0
        async with self._redis.pipeline(transaction=False) as pipe:
            for tenant_id, members in timers.items():
                if members:
                    pipe.zadd(timers_key(self._namespace, tenant_id), cast(Any, members))
                    pipe.sadd(tenants_key(self._namespace), str(tenant_id))
            for tenant_id, names in (gone or {}).items():
                if names:
                    pipe.zrem(timers_key(self._namespace, tenant_id), *names)
            await pipe.execute()
        return sum(len(m) for m in timers.values())

    async def tenants(self) -> list[UUID]:
        """Tenants that have (or had) timers or a live board."""
        raw = await self._redis.smembers(tenants_key(self._namespace))
        return sorted(UUID(t.decode() if isinstance(t, bytes) else t) for t in raw)

    async def lease_due(self, now: datetime, limit: int = 2000) -> list[Due]:
        """Every tenant's members due by `now` (up to `limit` each), leased for LEASE_S."""
        tenants = await self.tenants()
        if not tenants:
            return []
        at = now.timestamp()
        lease = at + LEASE_S
        async with self._redis.pipeline(transaction=False) as pipe:
            for tenant_id in tenants:
                await self._lease(keys=[timers_key(self._namespace, tenant_id)], args=[at, limit, lease], client=pipe)
            results = await pipe.execute()
        due: list[Due] = []
        for tenant_id, members in zip(tenants, results, strict=True):
            if members:
                due.append(Due.parse(tenant_id, lease, [m.decode() for m in members]))
        return due

    async def done(self, handled: Iterable[Due]) -> int:
        """Remove handled members that nobody re-scored meanwhile."""
        removed = 0
        async with self._redis.pipeline(transaction=False) as pipe:
            count = 0
            for due in handled:
                if due.members:
                    await self._done(
                        keys=[timers_key(self._namespace, due.tenant_id)], args=[due.lease, *due.members], client=pipe
                    )
                    count += 1
            if count:
                removed = sum(await pipe.execute())
        return removed

    async def count(self, tenant_id: UUID) -> int:
        return int(await self._redis.zcard(timers_key(self._namespace, tenant_id)))


class EventTouches:
    """The ingest side: notes that events were accepted, as due-now timers, without ever making
    ingest wait or fail. Notes made in the same turn of the event loop (a group commit answers
    its whole group at once) are written in one pipeline, after the responses are sent; while
    Redis is unreachable they are dropped (the worker's PostgreSQL sweep covers them) and writes
    are not tried again for a few seconds."""

    def __init__(self, redis: Redis, namespace: str, *, gather_s: float = 0.0, quiet_s: float = 5.0) -> None:
        self._redis = redis
        self._namespace = namespace
        self._gather_s = gather_s
        self._quiet_s = quiet_s
        self._quiet_until = 0.0
        self._pending: dict[UUID, set[str]] = defaultdict(set)
        self._flush: asyncio.Task[None] | None = None

    def note(self, tenant_id: UUID, carer_id: UUID, visit_ids: Iterable[UUID]) -> asyncio.Task[None] | None:
        """Remember that `carer_id` posted events to these visits; returns at once, with the write
        that will carry the note (None when Redis was found away a moment ago)."""
        if time.monotonic() < self._quiet_until:
            return None
        self._pending[tenant_id].update(event_member(carer_id, v) for v in visit_ids)
        if self._flush is None or self._flush.done():
            self._flush = asyncio.get_running_loop().create_task(self._write(), name="monitoring-touches")
        return self._flush

    async def _write(self) -> None:
        # Notes made while a write is under way go in the next round; once nothing is left the
        # task ends without awaiting again, so `note` never finds a finished-looking live task.
        while self._pending:
            await asyncio.sleep(self._gather_s)
            pending, self._pending = self._pending, defaultdict(set)
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for tenant_id, members in pending.items():
                        pipe.zadd(timers_key(self._namespace, tenant_id), dict.fromkeys(members, 0))
                        pipe.sadd(tenants_key(self._namespace), str(tenant_id))
                    await pipe.execute()
            except (RedisError, OSError) as exc:
                self._quiet_until = time.monotonic() + self._quiet_s
                self._pending.clear()
                log.warning("redis_unavailable_fail_open", op="note_events", error=type(exc).__name__)


def note_events(
    state: Any, tenant_id: UUID, carer_id: UUID | None, visit_ids: Iterable[UUID | None]
) -> BackgroundTask | None:
    """Ingest's hook, after its commit: tell the monitoring worker (through Redis, best effort)
    that this carer's events reached these visits. Returns a task for the response to run after
    it is sent (so the write is finished before the server stops); it never raises."""
    visits = [v for v in visit_ids if v is not None]
    if carer_id is None or not visits:
        return None
    touches = getattr(state, "event_touches", None)
    if touches is None:
        touches = state.event_touches = EventTouches(state.redis, state.settings.redis_namespace)
    flush = touches.note(tenant_id, carer_id, visits)
    return BackgroundTask(_written, flush) if flush is not None else None


async def _written(flush: asyncio.Task[None]) -> None:
    # Shielded: a request cancelled (client gone) must not cancel the write others wait on.
    await asyncio.shield(flush)
