"""Live alert fan-out over Redis pub/sub (Litestar channels): the worker publishes, API streams.

Channel names carry the tenant as a Redis Cluster hash tag. Publishing fails open: with Redis
down, alerts are still stored and listed, only the push is skipped (and logged).
"""

from __future__ import annotations

from collections.abc import Iterable
from uuid import UUID

import msgspec
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from schemas.monitoring import Alert

log = structlog.get_logger("carebank.live")
_ENCODER = msgspec.json.Encoder()


def tenant_channel(namespace: str, tenant_id: UUID) -> str:
    """Everything of a tenant (what a commissioner watches)."""
    return f"{namespace}:alerts:{{{tenant_id}}}"


def provider_channel(namespace: str, tenant_id: UUID, provider_id: UUID) -> str:
    """One provider's alerts."""
    return f"{namespace}:alerts:{{{tenant_id}}}:{provider_id}"


class AlertPublisher:
    """Publishes alerts to their tenant's and provider's channels, a round's alerts in one round trip
    (plain PUBLISH, which is what Litestar's Redis pub/sub backend sends and its subscribers read)."""

    def __init__(self, redis: Redis, namespace: str) -> None:
        self._redis = redis
        self._namespace = namespace

    async def publish(self, tenant_ids: Iterable[tuple[UUID, Alert]]) -> int:
        """Returns how many alerts were pushed (all, or none when Redis is away)."""
        alerts = list(tenant_ids)
        if not alerts:
            return 0
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for tenant_id, alert in alerts:
                    data = _ENCODER.encode(alert)
                    pipe.publish(tenant_channel(self._namespace, tenant_id), data)
                    pipe.publish(provider_channel(self._namespace, tenant_id, alert.provider_id), data)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("redis_unavailable_fail_open", op="publish_alert", error=type(exc).__name__)
            return 0
        return len(alerts)
