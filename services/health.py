"""Liveness and readiness for load balancers and operators."""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec
from litestar import Controller, Request, get
from litestar.response import Response

from infra.redis import redis_ok


class Readiness(msgspec.Struct, frozen=True):
    """Whether each backing server answered just now."""

    status: str
    postgres: str
    redis: str


class HealthController(Controller):
    """`/healthz` says the process is up; `/readyz` checks PostgreSQL and Redis for real."""

    tags = ["health"]

    @get("/healthz", operation_id="healthz", exclude_from_auth=True)
    async def healthz(self) -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @get("/readyz", operation_id="readyz", exclude_from_auth=True)
    async def readyz(self, request: Request[Any, Any, Any]) -> Response[Readiness]:
        """Readiness: 200 when PostgreSQL and Redis both answer, else 503 naming the one that did not."""
        state = request.app.state
        postgres = "ok"
        try:
            async with state.pool.acquire(timeout=2) as conn:
                await conn.fetchval("SELECT 1")
        except (OSError, asyncpg.PostgresError, TimeoutError):
            postgres = "unreachable"
        redis = "ok" if await redis_ok(state.redis) else "unreachable"
        ready = postgres == "ok" and redis == "ok"
        body = Readiness(status="ok" if ready else "degraded", postgres=postgres, redis=redis)
        return Response(body, status_code=200 if ready else 503)
