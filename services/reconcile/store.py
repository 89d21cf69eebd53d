"""Reconciliation SQL: the inputs of many visits at once, their stored state, and the queue."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg


async def enqueue(conn: asyncpg.Connection, tenant_id: UUID, visit_ids: Sequence[UUID]) -> None:
    """Mark visits for recomputation, in the caller's transaction."""
    if visit_ids:
        await conn.execute(
            """INSERT INTO reconcile_queue (tenant_id, visit_id) SELECT $1, unnest($2::uuid[])
               ON CONFLICT DO NOTHING""",
            tenant_id,
            sorted(set(visit_ids)),
        )


async def take_queued(conn: asyncpg.Connection, limit: int) -> list[tuple[UUID, UUID]]:
    """Claim up to `limit` queued visits (skipping those another process holds); call in a transaction."""
    rows = await conn.fetch(
        """DELETE FROM reconcile_queue q USING (
               SELECT tenant_id, visit_id FROM reconcile_queue ORDER BY queued_at LIMIT $1 FOR UPDATE SKIP LOCKED
           ) picked
           WHERE q.tenant_id = picked.tenant_id AND q.visit_id = picked.visit_id
           RETURNING q.tenant_id, q.visit_id""",
        limit,
    )
    return [(row["tenant_id"], row["visit_id"]) for row in rows]


async def due_visits(conn: asyncpg.Connection, now: datetime, limit: int) -> list[tuple[UUID, UUID]]:
    """Visits whose state may have changed with the clock."""
    rows = await conn.fetch(
        "SELECT tenant_id, id FROM visits WHERE next_check_at <= $1 ORDER BY next_check_at LIMIT $2", now, limit
    )
    return [(row["tenant_id"], row["id"]) for row in rows]


async def tenant_visit_ids(
    conn: asyncpg.Connection, tenant_id: UUID, start: datetime | None, end: datetime | None
) -> list[UUID]:
    rows = await conn.fetch(
        """SELECT id FROM visits WHERE tenant_id = $1
             AND ($2::timestamptz IS NULL OR planned_start >= $2) AND ($3::timestamptz IS NULL OR planned_start < $3)
           ORDER BY id""",
        tenant_id,
        start,
        end,
    )
    return [row["id"] for row in rows]


async def load_visits(conn: asyncpg.Connection, tenant_id: UUID, visit_ids: Sequence[UUID]) -> list[asyncpg.Record]:
    """Each visit's plan facts, contract rules, key outcomes and stored state."""
    return await conn.fetch(
        """SELECT v.id, v.planned_start, v.planned_min, v.carers_required, v.funding, v.origin, v.approval,
                  v.cancellation, v.status, v.actual, v.exceptions, v.payable_min, v.banked_min,
                  c.model, c.pay_rules,
                  ARRAY(SELECT DISTINCT o ->> 'id' FROM care_plans p, jsonb_array_elements(p.outcomes) o
                        WHERE p.tenant_id = v.tenant_id AND p.person_id = v.person_id
                          AND p.contract_id = v.contract_id AND (o ->> 'key')::boolean
                          AND (o ->> 'id') = ANY(v.outcome_ids)) AS key_outcomes
           FROM visits v JOIN contracts c ON c.tenant_id = v.tenant_id AND c.id = v.contract_id
           WHERE v.tenant_id = $1 AND v.id = ANY($2::uuid[])""",
        tenant_id,
        list(visit_ids),
    )


async def load_events(conn: asyncpg.Connection, tenant_id: UUID, visit_ids: Sequence[UUID]) -> list[asyncpg.Record]:
    return await conn.fetch(
        """SELECT visit_id, carer_id, kind, occurred_at, method, verified, outcomes FROM visit_events
           WHERE tenant_id = $1 AND visit_id = ANY($2::uuid[])""",
        tenant_id,
        list(visit_ids),
    )


async def save_states(conn: asyncpg.Connection, tenant_id: UUID, states: Sequence[dict[str, Any]]) -> None:
    """Write each visit's reconciled state in one statement."""
    if not states:
        return
    await conn.execute(
        """UPDATE visits v SET status = s.status, actual = s.actual::jsonb,
                  exceptions = ARRAY(SELECT jsonb_array_elements_text(s.exceptions::jsonb)),
                  payable_min = s.payable_min, banked_min = s.banked_min, next_check_at = s.next_check_at,
                  reconciled_at = s.reconciled_at
           FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::int[], $7::int[], $8::timestamptz[],
                       $9::timestamptz[])
                AS s(id, status, actual, exceptions, payable_min, banked_min, next_check_at, reconciled_at)
           WHERE v.tenant_id = $1 AND v.id = s.id""",
        tenant_id,
        [s["id"] for s in states],
        [s["status"] for s in states],
        [s["actual"] for s in states],
        [s["exceptions"] for s in states],
        [s["payable_min"] for s in states],
        [s["banked_min"] for s in states],
        [s["next_check_at"] for s in states],
        [s["reconciled_at"] for s in states],
    )
