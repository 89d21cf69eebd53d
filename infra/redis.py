"""Redis: the client, and a rate-limit store that fails open when Redis is away.

Redis holds only what can be rebuilt from PostgreSQL, so its absence must never stop ingest,
auth or invoicing: every use here degrades and logs instead of raising.
"""

from __future__ import annotations

from datetime import timedelta

import structlog
from litestar.stores.redis import RedisStore
from redis.asyncio import Redis
from redis.exceptions import RedisError

log = structlog.get_logger("carebank.redis")


def create_redis(url: str) -> Redis:
    """A client that gives up fast, so a dead Redis costs a request milliseconds, not seconds."""
    return Redis.from_url(
        url,
        socket_connect_timeout=0.5,
        socket_timeout=0.5,
        health_check_interval=10,
    )


async def redis_ok(redis: Redis) -> bool:
    """Whether Redis answers a PING now."""
    try:
        return bool(await redis.ping())
    except (RedisError, OSError):
        return False


class FailOpenRedisStore(RedisStore):
    """A Litestar store whose reads miss and writes vanish while Redis is unreachable."""

    async def get(self, key: str, renew_for: int | timedelta | None = None) -> bytes | None:
        try:
            return await super().get(key, renew_for)
        except (RedisError, OSError) as exc:
            log.warning("redis_unavailable_fail_open", op="get", error=type(exc).__name__)
            return None

    async def set(self, key: str, value: str | bytes, expires_in: int | timedelta | None = None) -> None:
        try:
            await super().set(key, value, expires_in)
        except (RedisError, OSError) as exc:
            log.warning("redis_unavailable_fail_open", op="set", error=type(exc).__name__)
