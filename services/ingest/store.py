"""Ingest SQL: visit events. Every query is filtered by tenant_id."""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple
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


async def lock_people(conn: asyncpg.Connection, tenant_id: UUID, person_ids: list[UUID]) -> None:
    """Serialise matching per person (in a fixed order, so two batches never deadlock)."""
    keys = sorted({f"{tenant_id}:{person_id}" for person_id in person_ids})
    if keys:  # one round trip; the subquery's ORDER BY fixes the locking order
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM (SELECT unnest($1::text[]) AS k ORDER BY 1) s",
            keys,
        )


async def existing_events(
    conn: asyncpg.Connection, tenant_id: UUID, event_ids: list[UUID]
) -> dict[UUID, asyncpg.Record]:
    # One primary-key probe per id, whatever the statistics say. `event_id = ANY($2)` let the
    # planner, on a young table whose statistics still said "tiny" (a new installation, or the
    # benchmark's fresh database), scan every event of the tenant and filter: a cost that grows
    # with the table, paid by every group. LIMIT 1 keeps the subquery a per-id lookup.
    rows = await conn.fetch(
        """SELECT e.event_id, e.content_hash, e.visit_id, e.verified
           FROM unnest($2::uuid[]) AS wanted (event_id)
           CROSS JOIN LATERAL (
               SELECT event_id, content_hash, visit_id, verified FROM visit_events
               WHERE tenant_id = $1 AND event_id = wanted.event_id LIMIT 1) e""",
        tenant_id,
        event_ids,
    )
    return {row["event_id"]: row for row in rows}


async def latest_check_in(
    conn: asyncpg.Connection, tenant_id: UUID, person_id: UUID, carer_id: UUID, at_or_before: datetime
) -> tuple[UUID, datetime] | None:
    """The carer's latest check-in for the person at or before an instant: (visit, when)."""
    row = await conn.fetchrow(
        """SELECT visit_id, occurred_at FROM visit_events
           WHERE tenant_id = $1 AND person_id = $2 AND carer_id = $3 AND kind = 'check_in' AND occurred_at <= $4
           ORDER BY occurred_at DESC, visit_id DESC LIMIT 1""",
        tenant_id,
        person_id,
        carer_id,
        at_or_before,
    )
    return (row["visit_id"], row["occurred_at"]) if row else None


class EventRow(NamedTuple):
    """One accepted event as `visit_events` stores it (tenant and receipt time aside); its fields
    are the type `visit_event_row`'s, in its order."""

    event_id: UUID
    carer_id: UUID
    provider_id: UUID
    person_id: UUID
    posted_visit_id: UUID | None
    visit_id: UUID
    kind: str
    occurred_at: datetime
    method: str
    lat: float | None
    lon: float | None
    accuracy_m: float | None
    tag: str | None
    phone: str | None
    device_id: str
    outcomes: str  # JSON text
    note: str | None
    verified: bool
    content_hash: str


_INSERT_EVENTS = f"""INSERT INTO visit_events (tenant_id, {", ".join(EventRow._fields)})
    SELECT $1, {", ".join("e.outcomes::jsonb" if name == "outcomes" else f"e.{name}" for name in EventRow._fields)}
    FROM unnest($2::visit_event_row[]) AS e
    ON CONFLICT (tenant_id, event_id) DO NOTHING RETURNING event_id"""


async def insert_events(conn: asyncpg.Connection, tenant_id: UUID, rows: list[EventRow]) -> set[UUID]:
    """Insert in one statement, the rows bound as one array of `visit_event_row` (migration 0015);
    returns the event ids written (a concurrent twin wins otherwise)."""
    if not rows:
        return set()
    # In key order, so two groups inserting the same ids (retries) wait on each other, never deadlock.
    rows = sorted(rows, key=lambda row: row.event_id.int)
    inserted = await conn.fetch(_INSERT_EVENTS, tenant_id, rows)
    return {row["event_id"] for row in inserted}


async def with_person_only_check_outs(
    conn: asyncpg.Connection, tenant_id: UUID, person_ids: list[UUID]
) -> set[tuple[UUID, UUID]]:
    """(person, carer) pairs that have person-only check-outs (which a late check-in may take over)."""
    rows = await conn.fetch(
        """SELECT DISTINCT person_id, carer_id FROM visit_events
           WHERE tenant_id = $1 AND person_id = ANY($2::uuid[]) AND kind = 'check_out' AND posted_visit_id IS NULL""",
        tenant_id,
        person_ids,
    )
    return {(row["person_id"], row["carer_id"]) for row in rows}


async def rematch_check_outs(
    conn: asyncpg.Connection, tenant_id: UUID, person_id: UUID, carer_id: UUID, check_in_at: datetime, visit_id: UUID
) -> list[UUID]:
    """Move person-only check-outs whose latest check-in is now this one; returns the visits they left."""
    rows = await conn.fetch(
        """WITH moved AS (
               SELECT co.event_id, co.visit_id AS old_visit FROM visit_events co
               WHERE co.tenant_id = $1 AND co.person_id = $2 AND co.carer_id = $3 AND co.kind = 'check_out'
                 AND co.posted_visit_id IS NULL AND co.occurred_at >= $4 AND co.visit_id <> $5
                 AND NOT EXISTS (
                     SELECT 1 FROM visit_events ci
                     WHERE ci.tenant_id = co.tenant_id AND ci.person_id = co.person_id AND ci.carer_id = co.carer_id
                       AND ci.kind = 'check_in' AND ci.occurred_at > $4 AND ci.occurred_at <= co.occurred_at)
               FOR UPDATE)
           UPDATE visit_events e SET visit_id = $5 FROM moved
           WHERE e.tenant_id = $1 AND e.event_id = moved.event_id
           RETURNING moved.old_visit""",
        tenant_id,
        person_id,
        carer_id,
        check_in_at,
        visit_id,
    )
    return [row["old_visit"] for row in rows]


async def count_events(conn: asyncpg.Connection, tenant_id: UUID) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM visit_events WHERE tenant_id = $1", tenant_id))
