"""The live board in Redis: who is on site now, one hash per tenant, field = carer.

`{namespace}:live:{<tenant>}` maps a carer id to `<check-in epoch ms, 15 digits> <visit id> <OnSite
JSON>`; `{namespace}:live-built:{<tenant>}` says the hash was built from PostgreSQL and kept up
since (same hash tag, so both change in one MULTI on Redis Cluster). Without that marker the
board is rebuilt from PostgreSQL before it is read, which is what happens after Redis was
emptied. The worker merges changes carer by carer as events arrive; a newer check-in wins, and a
check-out removes the carer only from the visit it closes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
from redis.asyncio import Redis

from schemas.monitoring import OnSite
from services.monitoring.timers import tenants_key

_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(OnSite)
_STAMP = 15  # digits of the check-in instant in ms, so strings compare as instants

_MERGE = """
for i = 1, #ARGV, 3 do
  local carer, visit, value = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local current = redis.call('HGET', KEYS[1], carer)
  if value ~= '' then
    if (not current) or string.sub(current, 1, 15) <= string.sub(value, 1, 15) then
      redis.call('HSET', KEYS[1], carer, value)
    end
  elseif current and string.sub(current, 17, 16 + #visit) == visit then
    redis.call('HDEL', KEYS[1], carer)
  end
end
return 1
"""
_REPLACE = """
redis.call('DEL', KEYS[1])
for i = 1, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('SET', KEYS[2], '1')
return 1
"""


def board_key(namespace: str, tenant_id: UUID) -> str:
    return f"{namespace}:live:{{{tenant_id}}}"


def built_key(namespace: str, tenant_id: UUID) -> str:
    return f"{namespace}:live-built:{{{tenant_id}}}"


def on_site_of(row: Any) -> OnSite:
    """An OnSite from a store row (extra columns, such as tenant_id, ignored)."""
    return OnSite(
        carer_id=row["carer_id"],
        carer_name=row["carer_name"],
        provider_id=row["provider_id"],
        visit_id=row["visit_id"],
        person_id=row["person_id"],
        person_reference=row["person_reference"],
        checked_in_at=row["checked_in_at"],
        verified=row["verified"],
    )


def _value(entry: OnSite) -> bytes:
    stamp = int(entry.checked_in_at.timestamp() * 1000)
    return f"{stamp:0{_STAMP}d} {entry.visit_id} ".encode() + _ENCODER.encode(entry)


def _entry(value: bytes) -> OnSite:
    return _DECODER.decode(value[_STAMP + 1 + 36 + 1 :])


class LiveBoards:
    """Every tenant's board in one namespace. Methods raise RedisError/OSError when Redis is away."""

    def __init__(self, redis: Redis, namespace: str) -> None:
        self._redis = redis
        self._namespace = namespace
        self._merge = redis.register_script(_MERGE)
        self._replace = redis.register_script(_REPLACE)

    async def read(self, tenant_id: UUID) -> list[OnSite] | None:
        """The tenant's board, or None when it was never built (or Redis was emptied)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.exists(built_key(self._namespace, tenant_id))
            pipe.hvals(board_key(self._namespace, tenant_id))
            built, values = await pipe.execute()
        if not built:
            return None
        return [_entry(v) for v in values]

    async def replace(self, boards: Mapping[UUID, Sequence[OnSite]]) -> None:
        """Replace whole boards (built from PostgreSQL), marking them built."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for tenant_id, entries in boards.items():
                args: list[str | bytes] = []
                for e in entries:
                    args += [str(e.carer_id), _value(e)]
                # A script per tenant: atomic, and its two keys share a slot on Redis Cluster.
                keys = [board_key(self._namespace, tenant_id), built_key(self._namespace, tenant_id)]
                await self._replace(keys=keys, args=args, client=pipe)
                pipe.sadd(tenants_key(self._namespace), str(tenant_id))
            await pipe.execute()

    async def merge(self, tenant_id: UUID, checked: Sequence[tuple[UUID, UUID]], present: Sequence[OnSite]) -> None:
        """Apply what PostgreSQL now says of these (carer, visit) pairs: `present` are on site."""
        on = {(e.carer_id, e.visit_id): e for e in present}
        args: list[str | bytes] = []
        for carer_id, visit_id in checked:
            entry = on.get((carer_id, visit_id))
            args += [str(carer_id), str(visit_id), _value(entry) if entry is not None else b""]
        if args:
            await self._merge(keys=[board_key(self._namespace, tenant_id)], args=args)

    async def forget(self, tenant_ids: Sequence[UUID]) -> None:
        """Drop boards, so the next read rebuilds them (used in tests and by operators)."""
        if tenant_ids:
            keys = [k for t in tenant_ids for k in (board_key(self._namespace, t), built_key(self._namespace, t))]
            await self._redis.delete(*keys)


def current(entries: Sequence[OnSite], provider_id: UUID | None, since: datetime) -> list[OnSite]:
    """Entries a caller may see (its provider's, or all) that are not older than `since`, by carer."""
    return sorted(
        (e for e in entries if (provider_id is None or e.provider_id == provider_id) and e.checked_in_at >= since),
        key=lambda e: e.carer_id,
    )
