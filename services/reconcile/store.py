"""Reconciliation SQL: the inputs of many visits at once, their stored state, and the queue."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from schemas.reconcile import Amendment, VisitExceptions
from services.reconcile.rules import Move, Moves, moved_to


async def enqueue(conn: asyncpg.Connection, tenant_id: UUID, visit_ids: Sequence[UUID]) -> None:
    """Mark visits for recomputation, in the caller's transaction: a new row each, never a write to a row
    already there (decision 154). A drainer cannot take the new row before the caller commits (it is not
    visible until then), and the caller never waits for a drainer's batch that holds an older row of the
    same visit: that batch deletes only the rows it took, so the new one stays for the next."""
    if visit_ids:
        await conn.execute(
            "INSERT INTO reconcile_queue (tenant_id, visit_id) SELECT $1, unnest($2::uuid[])",
            tenant_id,
            sorted(set(visit_ids)),
        )


async def take_queued(conn: asyncpg.Connection, limit: int) -> list[tuple[UUID, UUID]]:
    """Claim the first `limit` due queue rows and every other due row of their visits, so that a visit
    queued several times is reconciled once for all of them (skipping rows another process holds, and
    those held back after a failure until their time comes); call in a transaction. Returns a pair per
    row taken: a visit may come back more than once."""
    rows = await conn.fetch(
        """WITH picked AS (
               SELECT tenant_id, visit_id FROM reconcile_queue WHERE queued_at <= clock_timestamp()
               ORDER BY queued_at LIMIT $1 FOR UPDATE SKIP LOCKED),
           taken AS (
               SELECT q.tenant_id, q.visit_id, q.id FROM reconcile_queue q
               WHERE (q.tenant_id, q.visit_id) IN (SELECT tenant_id, visit_id FROM picked)
                 AND q.queued_at <= clock_timestamp()
               FOR UPDATE SKIP LOCKED)
           DELETE FROM reconcile_queue q USING taken
           WHERE q.tenant_id = taken.tenant_id AND q.visit_id = taken.visit_id AND q.id = taken.id
           RETURNING q.tenant_id, q.visit_id""",
        limit,
    )
    return [(row["tenant_id"], row["visit_id"]) for row in rows]


async def queued(conn: asyncpg.Connection, limit: int) -> list[tuple[UUID, UUID]]:
    """The first `limit` visits `take_queued` would claim, without claiming them."""
    rows = await conn.fetch(
        """SELECT tenant_id, visit_id FROM reconcile_queue WHERE queued_at <= clock_timestamp()
           ORDER BY queued_at LIMIT $1""",
        limit,
    )
    return [(row["tenant_id"], row["visit_id"]) for row in rows]


async def take_queued_visit(conn: asyncpg.Connection, tenant_id: UUID, visit_id: UUID, now: datetime) -> bool:
    """Claim one queued visit, if it is still queued and due; call in a transaction."""
    return bool(
        await conn.fetchval(
            """DELETE FROM reconcile_queue WHERE tenant_id = $1 AND visit_id = $2 AND queued_at <= clock_timestamp()
               RETURNING true""",
            tenant_id,
            visit_id,
        )
    )


async def still_due(conn: asyncpg.Connection, tenant_id: UUID, visit_id: UUID, now: datetime) -> bool:
    """Whether the clock still has something to change on this visit."""
    return bool(
        await conn.fetchval(
            "SELECT next_check_at <= $3 FROM visit_states WHERE tenant_id = $1 AND visit_id = $2",
            tenant_id,
            visit_id,
            now,
        )
    )


async def hold_back(conn: asyncpg.Connection, tenant_id: UUID, visit_id: UUID, until: datetime) -> None:
    """Keep a visit whose reconciliation failed queued, but out of the way until `until`: queued again
    (an event or amendment since, or a due clock check) and tried then."""
    await conn.execute(
        """WITH held AS (
               UPDATE reconcile_queue SET queued_at = greatest(queued_at, $3)
               WHERE tenant_id = $1 AND visit_id = $2 RETURNING 1)
           INSERT INTO reconcile_queue (tenant_id, visit_id, queued_at)
           SELECT $1, $2, $3 WHERE NOT EXISTS (SELECT 1 FROM held)""",
        tenant_id,
        visit_id,
        until,
    )
    await conn.execute(
        "UPDATE visit_states SET next_check_at = $3 WHERE tenant_id = $1 AND visit_id = $2 AND next_check_at < $3",
        tenant_id,
        visit_id,
        until,
    )


async def pending_visits(
    conn: asyncpg.Connection, tenant_id: UUID, visit_ids: Sequence[UUID], now: datetime
) -> set[UUID]:
    """Those of these visits with a change still on its way at `now`: queued (held back too), due for the
    clock, waiting for an overlap recheck, or stored by a reconciliation later than `now`; and those that
    approved moves lead to from a queued visit (an event arriving on the visit a carer's events were moved
    from queues that visit only, and counts where its moves lead: `move_targets`)."""
    rows = await conn.fetch(
        """WITH RECURSIVE upstream(source, target) AS (
               SELECT visit_id, move_to_visit_id FROM amendments
               WHERE tenant_id = $1 AND status = 'approved' AND move_to_visit_id = ANY($2::uuid[])
             UNION
               SELECT m.visit_id, u.target FROM upstream u JOIN amendments m
                 ON m.tenant_id = $1 AND m.status = 'approved' AND m.move_to_visit_id = u.source)
           SELECT u.target AS visit_id FROM upstream u
           JOIN reconcile_queue q ON q.tenant_id = $1 AND q.visit_id = u.source
           UNION
           SELECT visit_id FROM reconcile_queue WHERE tenant_id = $1 AND visit_id = ANY($2::uuid[])
           UNION
           SELECT visit_id FROM overlap_rechecks WHERE tenant_id = $1 AND visit_id = ANY($2::uuid[])
           UNION
           SELECT visit_id FROM visit_states WHERE tenant_id = $1 AND visit_id = ANY($2::uuid[])
             AND (next_check_at <= $3 OR reconciled_at > $3)""",
        tenant_id,
        list(visit_ids),
        now,
    )
    return {row["visit_id"] for row in rows}


async def due_visits(conn: asyncpg.Connection, now: datetime, limit: int) -> list[tuple[UUID, UUID]]:
    """Visits whose state may have changed with the clock."""
    rows = await conn.fetch(
        """SELECT tenant_id, visit_id FROM visit_states WHERE next_check_at <= $1
           ORDER BY next_check_at LIMIT $2""",
        now,
        limit,
    )
    return [(row["tenant_id"], row["visit_id"]) for row in rows]


async def tenant_visit_ids(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    start: datetime | None,
    end: datetime | None,
    after: UUID | None,
    limit: int,
) -> list[UUID]:
    """The next `limit` of the tenant's visits planned in [start, end), in id order after `after`."""
    rows = await conn.fetch(
        # `visit_plans`, not the `visits` view: PostgreSQL cannot carry `id > $4` over the view's join,
        # so through it each page would scan the states from the tenant's first visit.
        """SELECT id FROM visit_plans WHERE tenant_id = $1
             AND ($2::timestamptz IS NULL OR planned_start >= $2) AND ($3::timestamptz IS NULL OR planned_start < $3)
             AND ($4::uuid IS NULL OR id > $4)
           ORDER BY id LIMIT $5""",
        tenant_id,
        start,
        end,
        after,
        limit,
    )
    return [row["id"] for row in rows]


async def move_targets(conn: asyncpg.Connection, tenant_id: UUID, visit_ids: Sequence[UUID]) -> list[UUID]:
    """Visits that approved moves send carers' events to from these visits, and on from those (a chain of
    moves): an event that arrives later on a visit it was moved from counts where its moves lead, so
    those visits are reconciled with it."""
    rows = await conn.fetch(
        """WITH RECURSIVE targets(visit_id) AS (
               SELECT move_to_visit_id FROM amendments
               WHERE tenant_id = $1 AND visit_id = ANY($2::uuid[]) AND status = 'approved'
                 AND move_to_visit_id IS NOT NULL
             UNION
               SELECT m.move_to_visit_id FROM targets t JOIN amendments m
                 ON m.tenant_id = $1 AND m.visit_id = t.visit_id AND m.status = 'approved'
                AND m.move_to_visit_id IS NOT NULL)
           SELECT visit_id FROM targets""",
        tenant_id,
        list(visit_ids),
    )
    return [row["visit_id"] for row in rows]


async def lock_visits(conn: asyncpg.Connection, tenant_id: UUID, visit_ids: Sequence[UUID]) -> None:
    """Lock the visits' states (in id order: no deadlocks) so two reconciliations of one visit take turns
    and the later one reads what the earlier committed. A statement of its own, before the inputs are
    read: a read that locked the states would still see the plan rows as its snapshot had them."""
    await conn.execute(
        """SELECT 1 FROM visit_states WHERE tenant_id = $1 AND visit_id = ANY($2::uuid[])
           ORDER BY visit_id FOR NO KEY UPDATE""",
        tenant_id,
        sorted(set(visit_ids)),
    )


async def lock_whole_visits(conn: asyncpg.Connection, tenant_id: UUID, visit_ids: Sequence[UUID]) -> None:
    """Lock the visits' plans and states (through the `visits` view, as `planning.store.get_visit(lock=True)`
    does: each plan, then its state), in id order. What an amendment and a visit endpoint take before
    they read or write anything: they then lock as each other and as reconciliation do, so neither
    waits for a row the other holds while holding one the other waits for (decisions 150, 156)."""
    await conn.execute(
        """SELECT 1 FROM visits WHERE tenant_id = $1 AND id = ANY($2::uuid[])
           ORDER BY id FOR NO KEY UPDATE""",
        tenant_id,
        sorted(set(visit_ids)),
    )


async def clock(conn: asyncpg.Connection) -> datetime:
    """The database's clock, now (not the transaction's start): one clock for every process that decides,
    read once the decision holds its visits, so that decision times follow the order decisions commit
    in (decision 149)."""
    now: datetime = await conn.fetchval("SELECT clock_timestamp()")
    return now


_JOIN_STATES = "JOIN visit_states s ON s.tenant_id = v.tenant_id AND s.visit_id = v.id"


async def load_visits(
    conn: asyncpg.Connection, tenant_id: UUID, visit_ids: Sequence[UUID], *, with_stored: bool = True
) -> list[asyncpg.Record]:
    """Each visit's plan facts, contract model and key outcomes (as its own care plan says; an extra visit,
    which has none, as the person's plans on the contract say), and its stored state if wanted (decoding
    the stored `actual` is a good part of the read, so it is left out when only the inputs are needed,
    and then the states are not read at all)."""
    stored, states = (
        ("s.status, s.actual, s.exceptions, s.payable_min, s.banked_min, s.next_check_at,", _JOIN_STATES)
        if with_stored
        else ("", "")
    )
    return await conn.fetch(
        f"""SELECT v.id, v.contract_id, v.planned_start, v.planned_min, v.carers_required, v.funding, v.origin,
                  v.approval, v.cancellation, {stored}
                  c.model,
                  ARRAY(SELECT DISTINCT o ->> 'id' FROM care_plans p, jsonb_array_elements(p.outcomes) o
                        WHERE p.tenant_id = v.tenant_id AND p.person_id = v.person_id
                          AND p.contract_id = v.contract_id AND (v.plan_id IS NULL OR p.id = v.plan_id)
                          AND (o ->> 'key')::boolean
                          AND (o ->> 'id') = ANY(v.outcome_ids)) AS key_outcomes
           FROM visit_plans v {states} JOIN contracts c ON c.tenant_id = v.tenant_id AND c.id = v.contract_id
           WHERE v.tenant_id = $1 AND v.id = ANY($2::uuid[])""",
        tenant_id,
        list(visit_ids),
    )


async def load_pay_rules(conn: asyncpg.Connection, tenant_id: UUID, contract_ids: Iterable[UUID]) -> dict[UUID, Any]:
    """The pay rules of these contracts as stored, by contract id (read once per batch, not once per visit)."""
    rows = await conn.fetch(
        "SELECT id, pay_rules FROM contracts WHERE tenant_id = $1 AND id = ANY($2::uuid[])",
        tenant_id,
        list(contract_ids),
    )
    return {row["id"]: row["pay_rules"] for row in rows}


async def load_moves(conn: asyncpg.Connection, tenant_id: UUID, visit_ids: Sequence[UUID]) -> Moves:
    """The latest approved move of each (visit, carer) among the visits that moves link to these ones, in
    either direction and through other visits (a later move of the same events from the same visit
    supersedes an earlier one: decision 126). Usually there are none, and the recursion stops at once."""
    rows = await conn.fetch(
        """WITH RECURSIVE linked(visit_id) AS (
               SELECT unnest(ARRAY[visit_id, move_to_visit_id]) FROM amendments
               WHERE tenant_id = $1 AND status = 'approved' AND move_to_visit_id IS NOT NULL
                 AND (visit_id = ANY($2::uuid[]) OR move_to_visit_id = ANY($2::uuid[]))
             UNION
               SELECT unnest(ARRAY[m.visit_id, m.move_to_visit_id]) FROM linked l JOIN amendments m
                 ON m.tenant_id = $1 AND m.status = 'approved' AND m.move_to_visit_id IS NOT NULL
                AND (m.visit_id = l.visit_id OR m.move_to_visit_id = l.visit_id))
           SELECT DISTINCT ON (visit_id, carer_id) visit_id, carer_id, move_to_visit_id, decided_at
           FROM amendments
           WHERE tenant_id = $1 AND status = 'approved' AND move_to_visit_id IS NOT NULL
             AND visit_id IN (SELECT visit_id FROM linked)
           ORDER BY visit_id, carer_id, decided_at DESC, id DESC""",
        tenant_id,
        list(visit_ids),
    )
    return {(r["visit_id"], r["carer_id"]): Move(r["move_to_visit_id"], r["decided_at"]) for r in rows}


async def load_events(
    conn: asyncpg.Connection, tenant_id: UUID, visit_ids: Sequence[UUID], moves: Moves | None = None
) -> list[asyncpg.Record]:
    """The visits' events, after approved moves (`load_moves`, read here unless given: a carer's events
    on the wrong visit count where `moved_to` says)."""
    if moves is None:
        moves = await load_moves(conn, tenant_id, visit_ids)
    wanted = list(visit_ids)
    rows = await conn.fetch(
        """SELECT visit_id, carer_id, kind, occurred_at, method, verified, outcomes FROM visit_events
           WHERE tenant_id = $1 AND visit_id = ANY($2::uuid[])""",
        tenant_id,
        wanted + sorted({from_visit for from_visit, _ in moves}),
    )
    if not moves:
        return rows
    keep = set(wanted)
    result = []
    for row in rows:
        visit_id = moved_to(moves, row["visit_id"], row["carer_id"])
        if visit_id in keep:
            result.append({**dict(row), "visit_id": visit_id})
    return result  # type: ignore[return-value]


async def load_amendments(
    conn: asyncpg.Connection, tenant_id: UUID, visit_ids: Sequence[UUID], moves: Moves
) -> list[asyncpg.Record]:
    """Approved amendments of the visits, in order of decision. The carer's times an amendment sets go with
    the carer's events where moves decided after it take them (`moved_to`: a check-out fixed on the wrong
    visit goes with the move to the right one), and so do a move's other fields; planned minutes and an
    extension stay with the visit they were decided for. A move that a later move of the same carer's
    events from the same visit superseded applies nowhere."""
    wanted = list(visit_ids)
    rows = await conn.fetch(
        """SELECT coalesce(move_to_visit_id, visit_id) AS visit_id, carer_id, decided_at, check_in_at,
                  check_out_at, extension_min, planned_min, move_to_visit_id IS NOT NULL AS move
           FROM amendments a
           WHERE tenant_id = $1 AND status = 'approved'
             AND coalesce(move_to_visit_id, visit_id) = ANY($2::uuid[])
             AND (move_to_visit_id IS NULL OR NOT EXISTS (
                   SELECT 1 FROM amendments later
                   WHERE later.tenant_id = a.tenant_id AND later.visit_id = a.visit_id
                     AND later.carer_id = a.carer_id AND later.status = 'approved'
                     AND later.move_to_visit_id IS NOT NULL
                     AND (later.decided_at, later.id) > (a.decided_at, a.id)))
           ORDER BY decided_at, id  -- the rules' order of decision; the id breaks a tie""",
        tenant_id,
        wanted + sorted({visit for visit, _ in moves} | {move.to_visit for move in moves.values()}),
    )
    if not moves:
        return rows
    keep = set(wanted)
    result = []
    for row in rows:
        to_visit = moved_to(moves, row["visit_id"], row["carer_id"], row["decided_at"])
        if to_visit == row["visit_id"] or row["move"]:
            parts = [{**dict(row), "visit_id": to_visit}]
        else:  # the carer's times go with the events; planned minutes and an extension are the visit's own
            times = row["check_in_at"] is not None or row["check_out_at"] is not None
            own = row["extension_min"] is not None or row["planned_min"] is not None
            parts = [{**dict(row), "visit_id": to_visit, "extension_min": None, "planned_min": None}] if times else []
            parts += [{**dict(row), "check_in_at": None, "check_out_at": None}] if own else []
        result += [part for part in parts if part["visit_id"] in keep]
    return result  # type: ignore[return-value]


# The rules' exceptions, then the overlap pass's flag (last in canonical order): cleared (false) where the
# pass will decide it again, or as stored (null).
_EXCEPTIONS = """(s.exceptions || CASE WHEN coalesce(s.overlapping, 'overlapping_visits' = ANY(v.exceptions))
                               THEN ARRAY['overlapping_visits'] ELSE ARRAY[]::text[] END)"""


async def save_states(
    conn: asyncpg.Connection, tenant_id: UUID, states: Sequence[dict[str, Any]], reconciled_at: datetime
) -> None:
    """Write the reconciled state of the visits whose state differs from the stored one, in one statement.
    A visit computed to what is stored keeps its row (and its `reconciled_at`): writing
    it again would only add a row version and its index entries. Each state's `overlapping` is False for
    a visit whose attendances change (the overlap pass, after, sets the flag again where it finds an
    overlap: `set_overlaps`, decision 128), or None to keep the stored flag."""
    if not states:
        return
    await conn.execute(
        f"""UPDATE visit_states v SET status = s.status, actual = s.actual, exceptions = {_EXCEPTIONS},
                  payable_min = s.payable_min, banked_min = s.banked_min, next_check_at = s.next_check_at,
                  reconciled_at = $9::timestamptz
           FROM (SELECT id, status, actual::jsonb AS actual, string_to_array(exceptions, ',') AS exceptions,
                        payable_min, banked_min, next_check_at, overlapping
                 FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::int[], $7::int[],
                             $8::timestamptz[], $10::boolean[])
                      AS s(id, status, actual, exceptions, payable_min, banked_min, next_check_at, overlapping)
                ) s
           WHERE v.tenant_id = $1 AND v.visit_id = s.id
             AND (v.status, v.actual - 'reconciled_at', v.exceptions, v.payable_min, v.banked_min, v.next_check_at)
                 IS DISTINCT FROM
                 (s.status, s.actual - 'reconciled_at', {_EXCEPTIONS}, s.payable_min, s.banked_min, s.next_check_at)""",
        tenant_id,
        [s["id"] for s in states],
        [s["status"] for s in states],
        [s["actual"] for s in states],
        [",".join(s["exceptions"]) for s in states],
        [s["payable_min"] for s in states],
        [s["banked_min"] for s in states],
        [s["next_check_at"] for s in states],
        reconciled_at,
        [s["overlapping"] for s in states],
    )
    # An invoiced visit that was reconciled again is for the next run to look at (billing compares).
    await conn.execute(
        """UPDATE visit_billing SET rebill = true
           WHERE tenant_id = $1 AND visit_id = ANY($2::uuid[]) AND NOT rebill""",
        tenant_id,
        [s["id"] for s in states],
    )


_AMENDMENT_COLUMNS = """id, visit_id, carer_id, reason_code, note, check_in_at, check_out_at, extension_min,
    planned_min, move_to_visit_id, status, auto_approved, proposed_by, proposed_at, decided_by, decided_at,
    payable_before, payable_after, banked_before, banked_after, decided_payable_before, decided_payable_after,
    decided_target_payable_before, decided_target_payable_after"""


def _amendment_out(row: asyncpg.Record) -> Amendment:
    return Amendment(**dict(row))


async def insert_amendment(conn: asyncpg.Connection, tenant_id: UUID, fields: dict[str, Any]) -> Amendment:
    names = list(fields)
    row = await conn.fetchrow(
        f"""INSERT INTO amendments (tenant_id, {", ".join(names)})
            VALUES ($1, {", ".join(f"${i + 2}" for i in range(len(names)))})
            RETURNING {_AMENDMENT_COLUMNS}""",
        tenant_id,
        *fields.values(),
    )
    assert row is not None
    return _amendment_out(row)


async def get_amendment(
    conn: asyncpg.Connection, tenant_id: UUID, amendment_id: UUID, *, lock: bool = False
) -> Amendment | None:
    row = await conn.fetchrow(
        f"SELECT {_AMENDMENT_COLUMNS} FROM amendments WHERE tenant_id = $1 AND id = $2"
        + (" FOR UPDATE" if lock else ""),
        tenant_id,
        amendment_id,
    )
    return _amendment_out(row) if row else None


async def decide_amendment(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    amendment_id: UUID,
    *,
    status: str,
    decided_by: str,
    decided_at: datetime,
    payable_before: int,
    target_payable_before: int | None,
) -> None:
    await conn.execute(
        """UPDATE amendments SET status = $3, decided_by = $4, decided_at = $5, decided_payable_before = $6,
                  decided_target_payable_before = $7
           WHERE tenant_id = $1 AND id = $2""",
        tenant_id,
        amendment_id,
        status,
        decided_by,
        decided_at,
        payable_before,
        target_payable_before,
    )


async def record_payable_after(
    conn: asyncpg.Connection, tenant_id: UUID, amendment_id: UUID, payable: int, target_payable: int | None
) -> None:
    await conn.execute(
        """UPDATE amendments SET decided_payable_after = $3, decided_target_payable_after = $4
           WHERE tenant_id = $1 AND id = $2""",
        tenant_id,
        amendment_id,
        payable,
        target_payable,
    )


async def list_amendments(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    *,
    provider_id: UUID | None,
    visit_id: UUID | None,
    status: str | None,
    after: UUID | None,
    limit: int,
) -> list[Amendment]:
    rows = await conn.fetch(
        f"""SELECT {_AMENDMENT_COLUMNS} FROM amendments a
            WHERE tenant_id = $1 AND ($3::uuid IS NULL OR visit_id = $3) AND ($4::text IS NULL OR status = $4)
              AND ($2::uuid IS NULL OR EXISTS (
                    SELECT 1 FROM visits v WHERE v.tenant_id = a.tenant_id AND v.id = a.visit_id
                      AND v.provider_id = $2))
              AND ($5::uuid IS NULL OR id > $5)
            ORDER BY id LIMIT $6""",
        tenant_id,
        provider_id,
        visit_id,
        status,
        after,
        limit,
    )
    return [_amendment_out(row) for row in rows]


async def stored_payable(conn: asyncpg.Connection, tenant_id: UUID, visit_id: UUID) -> tuple[int, int]:
    row = await conn.fetchrow(
        "SELECT payable_min, banked_min FROM visits WHERE tenant_id = $1 AND id = $2", tenant_id, visit_id
    )
    assert row is not None
    return row["payable_min"], row["banked_min"]


_OPEN = """ARRAY(SELECT k FROM unnest(s.exceptions) k
                  WHERE ($2::text IS NULL OR k = $2)
                    AND NOT EXISTS (SELECT 1 FROM exception_acks x
                                    WHERE x.tenant_id = s.tenant_id AND x.visit_id = s.visit_id AND x.kind = k))"""


async def open_exceptions(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    *,
    kind: str | None,
    provider_id: UUID | None,
    person_id: UUID | None,
    visit_id: UUID | None = None,
    after: UUID | None = None,
    limit: int = 50,
) -> list[VisitExceptions]:
    """Visits with exceptions on their current state that nobody has acknowledged. Read from the two
    tables rather than the `visits` view, so that the page's `id > after` applies to the states' index of
    visits with exceptions (the view's join would not carry it over)."""
    rows = await conn.fetch(
        f"""SELECT * FROM (
                SELECT v.id, v.person_id, v.provider_id, v.planned_start, s.status, {_OPEN} AS exceptions
                FROM visit_states s JOIN visit_plans v ON v.tenant_id = s.tenant_id AND v.id = s.visit_id
                WHERE s.tenant_id = $1 AND cardinality(s.exceptions) > 0
                  AND ($3::uuid IS NULL OR v.provider_id = $3) AND ($4::uuid IS NULL OR v.person_id = $4)
                  AND ($5::uuid IS NULL OR s.visit_id = $5) AND ($6::uuid IS NULL OR s.visit_id > $6)
            ) open WHERE cardinality(exceptions) > 0
            ORDER BY id LIMIT $7""",
        tenant_id,
        kind,
        provider_id,
        person_id,
        visit_id,
        after,
        limit,
    )
    return [VisitExceptions(**{**dict(row), "exceptions": list(row["exceptions"])}) for row in rows]


async def acknowledge(conn: asyncpg.Connection, tenant_id: UUID, visit_id: UUID, kind: str, by: str) -> None:
    await conn.execute(
        """INSERT INTO exception_acks (tenant_id, visit_id, kind, acknowledged_by) VALUES ($1, $2, $3, $4)
           ON CONFLICT DO NOTHING""",
        tenant_id,
        visit_id,
        kind,
        by,
    )


# Attendances last at most two days (a CHECK), so a partner's check-in lies within two days before
# ours. A partner of at most LONG_ATTENDANCE starts less than that before ours, and the
# (tenant, carer, check_in) index finds it in that short stretch (a carer's half day, not two days of
# visits each read from the heap); a longer partner, rare, is found in the partial index migration
# 0022 keeps of long attendances, over the two days. The two stretches do not meet, so no partner is
# found twice. Each lateral subquery is kept apart (OFFSET 0) so that it stays one index probe per
# attendance: as a plain join, a planner with stale statistics hashed every attendance of the tenant
# for each batch.
LONG_ATTENDANCE = "interval '12 hours'"  # as migration 0022's index predicate says it
_PARTNERS = f"""CROSS JOIN LATERAL (
                   (SELECT b.visit_id, b.check_in, b.check_out FROM attendances b
                    WHERE b.tenant_id = $1 AND b.carer_id = a.carer_id AND b.visit_id <> a.visit_id
                      AND b.check_in < a.check_out AND a.check_in < b.check_out
                      AND b.check_in > a.check_in - {LONG_ATTENDANCE}
                    OFFSET 0)
                   UNION ALL
                   (SELECT b.visit_id, b.check_in, b.check_out FROM attendances b
                    WHERE b.tenant_id = $1 AND b.carer_id = a.carer_id AND b.visit_id <> a.visit_id
                      AND b.check_in < a.check_out AND a.check_in < b.check_out
                      AND b.check_in > a.check_in - interval '2 days' AND b.check_in <= a.check_in - {LONG_ATTENDANCE}
                      AND b.check_out - b.check_in > {LONG_ATTENDANCE}
                    OFFSET 0)) b"""
# Attendances given as four arrays ($2 to $5), under the alias {0}.
_GIVEN = """unnest($2::uuid[], $3::uuid[], $4::timestamptz[], $5::timestamptz[])
            AS {0}(visit_id, carer_id, check_in, check_out)"""

Attendance = tuple[UUID, UUID, datetime, datetime]


def _columns(rows: Sequence[Attendance]) -> list[list[Any]]:
    return [[r[i] for r in rows] for i in range(4)]


async def stored_attendances(conn: asyncpg.Connection, tenant_id: UUID, visit_ids: Sequence[UUID]) -> set[Attendance]:
    """The stored paired attendances (visit, carer, in, out) of these visits. Only a reconciliation of a
    visit writes them, under the visit's lock, so the caller holding the visits reads what stays."""
    rows = await conn.fetch(
        """SELECT visit_id, carer_id, check_in, check_out FROM attendances
           WHERE tenant_id = $1 AND visit_id = ANY($2::uuid[])""",
        tenant_id,
        list(visit_ids),
    )
    return {(r["visit_id"], r["carer_id"], r["check_in"], r["check_out"]) for r in rows}


async def write_attendances(
    conn: asyncpg.Connection, tenant_id: UUID, gone: Sequence[Attendance], new: Sequence[Attendance]
) -> set[UUID]:
    """Delete `gone` and insert `new` (each statement sends only what it changes: a first reconciliation
    sends its rows once, to the insert); returns the visits that overlapped a removed attendance."""
    if gone:
        await conn.execute(
            f"""DELETE FROM attendances a USING {_GIVEN.format("g")}
                WHERE a.tenant_id = $1 AND a.visit_id = g.visit_id AND a.carer_id = g.carer_id""",
            tenant_id,
            *_columns(gone),
        )
    if new:
        await conn.execute(
            f"""INSERT INTO attendances (tenant_id, visit_id, carer_id, check_in, check_out)
               SELECT $1, n.* FROM {_GIVEN.format("n")}""",
            tenant_id,
            *_columns(new),
        )
    if not gone:
        return set()
    found = f"SELECT DISTINCT b.visit_id FROM {_GIVEN.format('a')} {_PARTNERS}"
    return {row["visit_id"] for row in await conn.fetch(found, tenant_id, *_columns(gone))}


async def overlap_pairs(
    conn: asyncpg.Connection, tenant_id: UUID, visit_ids: Sequence[UUID]
) -> list[tuple[UUID, UUID]]:
    """(visit, partner) for every stored attendance of these visits overlapping another visit's."""
    if not visit_ids:
        return []
    rows = await conn.fetch(
        f"""SELECT DISTINCT a.visit_id, b.visit_id AS partner FROM attendances a {_PARTNERS}
            WHERE a.tenant_id = $1 AND a.visit_id = ANY($2::uuid[])""",
        tenant_id,
        list(visit_ids),
    )
    return [(row["visit_id"], row["partner"]) for row in rows]


# Advisory lock buckets per tenant for the carers' attendances: bounded, so a batch of thousands of
# carers takes at most this many locks (PostgreSQL's lock table is shared and small).
CARER_BUCKETS = 512


async def lock_attendances(conn: asyncpg.Connection, tenant_id: UUID, carer_ids: Iterable[UUID]) -> None:
    """Lock, until the transaction ends, the attendances of these carers (the carers of every attendance
    the overlap pass writes or reads as its own): two passes over one carer take turns, so the later
    one reads what the earlier committed (decision 128). Buckets of carers, in key order: no deadlock."""
    await conn.execute(
        f"""SELECT count(pg_advisory_xact_lock(k)) FROM (
               SELECT DISTINCT hashtextextended(
                          $1::uuid::text || ':attendances:' || (hashtext(c::text) & {CARER_BUCKETS - 1}), 2) AS k
               FROM unnest($2::uuid[]) AS carers(c)
               ORDER BY k) keys""",
        tenant_id,
        sorted(set(carer_ids)),
    )


async def set_overlaps(conn: asyncpg.Connection, tenant_id: UUID, visit_ids: Sequence[UUID]) -> None:
    """Add `overlapping_visits` (last in canonical order) to these visits, which the caller holds, where
    it is missing: the pass found them overlapping."""
    if visit_ids:
        await conn.execute(
            """UPDATE visit_states SET exceptions = exceptions || ARRAY['overlapping_visits']
               WHERE tenant_id = $1 AND visit_id = ANY($2::uuid[]) AND NOT 'overlapping_visits' = ANY(exceptions)""",
            tenant_id,
            list(visit_ids),
        )


async def mark_overlaps(conn: asyncpg.Connection, tenant_id: UUID, visit_ids: Sequence[UUID]) -> list[UUID]:
    """Set or clear `overlapping_visits` on these visits from the stored attendances (the separate pass).
    A visit another transaction holds is skipped, never waited for (decision 128: the holder may be
    waiting for the carers this transaction holds); returns the skipped ones, for `queue_overlap_rechecks`."""
    if not visit_ids:
        return []
    rows = await conn.fetch(
        f"""WITH free AS MATERIALIZED (
                SELECT visit_id FROM visit_states WHERE tenant_id = $1 AND visit_id = ANY($2::uuid[])
                ORDER BY visit_id FOR NO KEY UPDATE SKIP LOCKED),
            overlapping AS (SELECT DISTINCT a.visit_id FROM attendances a {_PARTNERS}
                            WHERE a.tenant_id = $1 AND a.visit_id IN (SELECT visit_id FROM free)),
            marked AS (
                UPDATE visit_states v SET exceptions = array_remove(v.exceptions, 'overlapping_visits')
                    || CASE WHEN v.visit_id IN (SELECT visit_id FROM overlapping) THEN ARRAY['overlapping_visits']
                            ELSE ARRAY[]::text[] END
                WHERE v.tenant_id = $1 AND v.visit_id IN (SELECT visit_id FROM free)
                  AND ('overlapping_visits' = ANY(v.exceptions))
                      IS DISTINCT FROM (v.visit_id IN (SELECT visit_id FROM overlapping)))
            SELECT visit_id FROM free""",
        tenant_id,
        list(visit_ids),
    )
    return sorted(set(visit_ids) - {row["visit_id"] for row in rows})


async def queue_overlap_rechecks(conn: asyncpg.Connection, tenant_id: UUID, visit_ids: Sequence[UUID]) -> None:
    """Leave visits whose flag could not be written for the recheck (a plain insert: it never waits)."""
    if visit_ids:
        await conn.execute(
            "INSERT INTO overlap_rechecks (tenant_id, visit_id) SELECT $1, unnest($2::uuid[])",
            tenant_id,
            list(visit_ids),
        )


async def take_overlap_rechecks(conn: asyncpg.Connection, limit: int) -> list[tuple[UUID, UUID]]:
    """Claim up to `limit` visits left for the recheck (skipping rows another process holds), each once;
    call in a transaction."""
    rows = await conn.fetch(
        """DELETE FROM overlap_rechecks r USING (
               SELECT tenant_id, id FROM overlap_rechecks ORDER BY queued_at LIMIT $1 FOR UPDATE SKIP LOCKED
           ) picked
           WHERE r.tenant_id = picked.tenant_id AND r.id = picked.id
           RETURNING r.tenant_id, r.visit_id""",
        limit,
    )
    return sorted({(row["tenant_id"], row["visit_id"]) for row in rows})


async def stored_partners(
    conn: asyncpg.Connection, tenant_id: UUID, rows: Sequence[Attendance], exclude: Sequence[UUID]
) -> list[Attendance]:
    """Stored attendances, on visits other than `exclude`, that overlap one of `rows` (same carer, times
    overlapping): the neighbours the overlap pass needs to recompute the flags of `rows`' visits."""
    if not rows:
        return []
    found = await conn.fetch(
        f"""SELECT DISTINCT b.visit_id, a.carer_id, b.check_in, b.check_out FROM {_GIVEN.format("a")} {_PARTNERS}
            WHERE NOT (b.visit_id = ANY($6::uuid[]))""",
        tenant_id,
        *_columns(rows),
        list(exclude),
    )
    return [(row["visit_id"], row["carer_id"], row["check_in"], row["check_out"]) for row in found]
