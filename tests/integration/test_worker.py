"""Worker jobs against a real database."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from infra.db import create_pool
from services.common import idempotency


async def test_old_idempotency_keys_are_purged(database_url: str, db: asyncpg.Connection) -> None:
    for key, age_days in [("old", 8), ("recent", 6)]:
        await db.execute(
            """INSERT INTO idempotency_keys
                   (tenant_id, client_id, key, request_hash, status_code, body, created_at)
               VALUES ($1, 'c', $2, 'h', 201, '{}', now() - make_interval(days => $3))""",
            UUID(int=0),
            key,
            age_days,
        )
    pool = await create_pool(database_url, max_size=1)
    try:
        assert await idempotency.purge_expired(pool) == 1
    finally:
        await pool.close()
    assert [r["key"] for r in await db.fetch("SELECT key FROM idempotency_keys")] == ["recent"]
