"""Ingest SQL: visit events. Every query is filtered by tenant_id."""

from __future__ import annotations

from uuid import UUID

import asyncpg


async def visit_has_events(conn: asyncpg.Connection, tenant_id: UUID, visit_id: UUID) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM visit_events WHERE tenant_id = $1 AND visit_id = $2)",
            tenant_id,
            visit_id,
        )
    )


async def carer_has_events_on(conn: asyncpg.Connection, tenant_id: UUID, visit_id: UUID, carer_id: UUID) -> bool:
    return bool(
        await conn.fetchval(
            """SELECT EXISTS (SELECT 1 FROM visit_events
                              WHERE tenant_id = $1 AND visit_id = $2 AND carer_id = $3)""",
            tenant_id,
            visit_id,
            carer_id,
        )
    )
