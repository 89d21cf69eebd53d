"""Live alert fan-out over Redis pub/sub (Litestar channels): the worker publishes, API streams.

Channel names carry the tenant as a Redis Cluster hash tag. Publishing fails open: with Redis
down, alerts are still stored and listed, only the push is skipped (and logged).
"""

from __future__ import annotations

from collections.abc import Iterable
from uuid import UUID

import msgspec
import structlog
from litestar.channels.backends.redis import RedisChannelsPubSubBackend
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
    """Publishes alerts to their tenant's and provider's channels."""

    def __init__(self, redis: Redis, namespace: str) -> None:
        self._backend = RedisChannelsPubSubBackend(redis=redis)
        self._namespace = namespace

    async def publish(self, tenant_ids: Iterable[tuple[UUID, Alert]]) -> int:
        sent = 0
        for tenant_id, alert in tenant_ids:
            channels = [
                tenant_channel(self._namespace, tenant_id),
                provider_channel(self._namespace, tenant_id, alert.provider_id),
            ]
            try:
                await self._backend.publish(_ENCODER.encode(alert), channels)
                sent += 1
            except (RedisError, OSError) as exc:
                log.warning("redis_unavailable_fail_open", op="publish_alert", error=type(exc).__name__)
                return sent
        return sent
