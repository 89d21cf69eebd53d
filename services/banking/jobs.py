"""Bank worker job: expire lots whose expiry has come, in batches, each in its own transaction."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

from infra.db import acquire
from services.banking import ledger

BATCH = 500


async def expire_due_lots(pool: asyncpg.Pool, now: datetime | None = None) -> int:
    """Post every due lot's unheld remainder to `expired`; returns how many lots were looked at."""
    when = now or datetime.now(UTC)
    total = 0
    while True:
        async with acquire(pool) as conn, conn.transaction():
            looked_at = await ledger.expire_due(conn, when, BATCH)
        total += looked_at
        if looked_at < BATCH:
            return total
