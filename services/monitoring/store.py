"""Monitoring SQL: visits near their alert thresholds, alerts raised, resolved and acknowledged."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg

from schemas.monitoring import Alert, AlertStatus
from services.common.ids import by_tenant
from services.monitoring import rules
from services.reconcile import store as reconcile_store

_FACTS = """SELECT v.tenant_id, v.id, v.person_id, v.provider_id, v.planned_start, v.planned_min, v.carers_required,
           v.created_at, v.status = 'cancelled' AS cancelled,
           (c.pay_rules ->> 'late_after_min')::int AS late_after_min,
           (c.pay_rules ->> 'missed_after_min')::int AS missed_after_min,
           (SELECT count(*) FROM (
               SELECT e.carer_id FROM visit_events e
               WHERE e.tenant_id = v.tenant_id AND e.visit_id = v.id AND e.kind = 'check_in'
               UNION  -- a check-in an approved amendment recorded counts, as it does for reconciliation
               SELECT a.carer_id FROM amendments a
               WHERE a.tenant_id = v.tenant_id AND a.visit_id = v.id AND a.status = 'approved'
                 AND a.check_in_at IS NOT NULL) c) AS carers_checked_in,
           (SELECT count(DISTINCT e.carer_id) FROM visit_events e
             WHERE e.tenant_id = v.tenant_id AND e.visit_id = v.id AND e.kind = 'check_in'
               AND NOT EXISTS (SELECT 1 FROM visit_events o WHERE o.tenant_id = e.tenant_id AND o.visit_id = e.visit_id
                                 AND o.carer_id = e.carer_id AND o.kind = 'check_out' AND o.occurred_at > e.occurred_at)
               AND NOT EXISTS (SELECT 1 FROM amendments a WHERE a.tenant_id = e.tenant_id AND a.visit_id = e.visit_id
                                 AND a.carer_id = e.carer_id AND a.status = 'approved' AND a.check_out_at IS NOT NULL)
           ) AS carers_on_site,
           -- Approved moves take carers' events (and amended times) from this visit or bring them here:
           -- the counts above are then worked out again where reconciliation counts them (`moved_counts`).
           EXISTS (SELECT 1 FROM amendments a WHERE a.tenant_id = v.tenant_id AND a.visit_id = v.id
                     AND a.status = 'approved' AND a.move_to_visit_id IS NOT NULL)
             OR EXISTS (SELECT 1 FROM amendments a WHERE a.tenant_id = v.tenant_id AND a.move_to_visit_id = v.id
                          AND a.status = 'approved') AS moved
    FROM visits v JOIN contracts c ON c.tenant_id = v.tenant_id AND c.id = v.contract_id"""


async def visits_near_thresholds(
    conn: asyncpg.Connection,
    now: datetime,
    lookback: timedelta,
    *,
    since: datetime | None = None,
    no_check_out_after: timedelta = timedelta(minutes=60),
) -> list[asyncpg.Record]:
    """Every tenant's visits planned in [now - lookback, now] that are not finished or cancelled;
    with `since`, only those that may have a threshold after it (their latest threshold, as
    `rules.thresholds_of` sets it, is later), that were created or changed after it, or that an
    approved move decided after it took events from or brought events to (its plan is unchanged,
    but a condition may have become true: a visit left with no event is missed)."""
    return await conn.fetch(
        _FACTS
        + """ WHERE v.planned_start BETWEEN $1 AND $2 AND v.status IN ('planned', 'in_progress', 'missed')
              AND ($3::timestamptz IS NULL OR v.created_at > $3 OR v.updated_at > $3
                   OR v.planned_start + make_interval(mins => greatest(
                          (c.pay_rules ->> 'late_after_min')::int, (c.pay_rules ->> 'missed_after_min')::int,
                          v.planned_min + $4::int)) > $3
                   -- one read of the (few) moves decided since, hashed, rather than two probes a visit
                   OR (v.tenant_id, v.id) IN (
                        SELECT a.tenant_id, unnest(ARRAY[a.visit_id, a.move_to_visit_id]) FROM amendments a
                        WHERE a.move_to_visit_id IS NOT NULL AND a.status = 'approved' AND a.decided_at > $3))""",
        now - lookback,
        now,
        since,
        int(no_check_out_after.total_seconds() // 60),
    )


async def moved_counts(
    conn: asyncpg.Connection, pairs: Sequence[tuple[UUID, UUID]]
) -> dict[tuple[UUID, UUID], tuple[int, int]]:
    """(carers checked in, carers on site) of these (tenant, visit) pairs, counting each carer's events
    and amended times where approved moves take them, as reconciliation does (its own `load_events`
    and `load_amendments`, so the two never disagree on where they count). Meant for the few visits
    `_FACTS` marks `moved`; a query or three per tenant that has any."""
    counts: dict[tuple[UUID, UUID], tuple[int, int]] = {}
    for tenant_id, visit_ids in by_tenant(pairs):
        moves = await reconcile_store.load_moves(conn, tenant_id, visit_ids)
        events: dict[UUID, list[rules.CarerEvent]] = defaultdict(list)
        for e in await reconcile_store.load_events(conn, tenant_id, visit_ids, moves):
            events[e["visit_id"]].append(rules.CarerEvent(e["carer_id"], e["kind"], e["occurred_at"]))
        times: dict[UUID, list[rules.CarerTimes]] = defaultdict(list)
        for a in await reconcile_store.load_amendments(conn, tenant_id, visit_ids, moves):
            times[a["visit_id"]].append(rules.CarerTimes(a["carer_id"], a["check_in_at"], a["check_out_at"]))
        for visit_id in visit_ids:
            counts[(tenant_id, visit_id)] = rules.carers_counted(events[visit_id], times[visit_id])
    return counts


async def move_targets_of(conn: asyncpg.Connection, pairs: Sequence[tuple[UUID, UUID]]) -> list[tuple[UUID, UUID]]:
    """The (tenant, visit) pairs approved moves send carers' events to from these, along their chains
    (reconciliation's `move_targets`, a query per tenant that has any)."""
    return [
        (tenant_id, target)
        for tenant_id, visit_ids in by_tenant(pairs)
        for target in await reconcile_store.move_targets(conn, tenant_id, visit_ids)
    ]


async def facts_of_open_alerts(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """The current facts of every visit with an unresolved late, missed or no_check_out alert."""
    return await conn.fetch(
        _FACTS
        + """ WHERE EXISTS (SELECT 1 FROM alerts al WHERE al.tenant_id = v.tenant_id AND al.visit_id = v.id
                                   AND al.resolved_at IS NULL AND al.kind <> 'outside_geofence')"""
    )


async def raise_alerts(conn: asyncpg.Connection, rows: Sequence[dict[str, Any]]) -> list[tuple[UUID, Alert]]:
    """Insert alerts; one already raised (by this or another worker) is skipped. Returns the new ones."""
    if not rows:
        return []
    inserted = await conn.fetch(
        f"""INSERT INTO alerts (tenant_id, id, visit_id, person_id, provider_id, kind, subject, due_at, raised_at)
            SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::uuid[], $6::text[], $7::text[],
                                 $8::timestamptz[], $9::timestamptz[])
            ON CONFLICT (tenant_id, visit_id, kind, subject) DO NOTHING
            RETURNING tenant_id, {_ALERT_COLUMNS}""",
        *(
            [row[name] for row in rows]
            for name in (
                "tenant_id",
                "id",
                "visit_id",
                "person_id",
                "provider_id",
                "kind",
                "subject",
                "due_at",
                "raised_at",
            )
        ),
    )
    return [(row["tenant_id"], alert_from_row(row)) for row in inserted]


async def resolve(
    conn: asyncpg.Connection, pairs: Sequence[tuple[UUID, UUID]], kind: str, now: datetime
) -> list[tuple[UUID, Alert]]:
    """Resolve the open `kind` alerts of these (tenant, visit) pairs."""
    if not pairs:
        return []
    rows = await conn.fetch(
        f"""UPDATE alerts SET resolved_at = $4
            FROM unnest($1::uuid[], $2::uuid[]) AS p(tenant_id, visit_id)
            WHERE alerts.tenant_id = p.tenant_id AND alerts.visit_id = p.visit_id AND alerts.kind = $3
              AND alerts.resolved_at IS NULL
            RETURNING alerts.tenant_id, {", ".join("alerts." + c.strip() for c in _ALERT_COLUMNS.split(","))}""",
        [p[0] for p in pairs],
        [p[1] for p in pairs],
        kind,
        now,
    )
    return [(row["tenant_id"], alert_from_row(row)) for row in rows]


async def unalerted_outside_geofence(conn: asyncpg.Connection, since: datetime) -> list[asyncpg.Record]:
    """Unverified GPS events received since `since` that have no alert yet."""
    return await conn.fetch(
        """SELECT e.tenant_id, e.event_id, e.visit_id, e.person_id, e.provider_id, e.received_at, v.created_at,
                  e.occurred_at
           FROM visit_events e JOIN visits v ON v.tenant_id = e.tenant_id AND v.id = e.visit_id
           WHERE e.received_at >= $1 AND e.method = 'gps' AND NOT e.verified
             AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.tenant_id = e.tenant_id AND a.visit_id = e.visit_id
                               AND a.kind = 'outside_geofence' AND a.subject = e.event_id::text)""",
        since,
    )


_ALERT_COLUMNS = """id, visit_id, person_id, provider_id, kind, raised_at, acknowledged_by, acknowledged_at,
    resolved_at"""


def alert_from_row(row: asyncpg.Record) -> Alert:
    status: AlertStatus = "resolved" if row["resolved_at"] else ("acknowledged" if row["acknowledged_at"] else "open")
    fields = {k: v for k, v in dict(row).items() if k != "tenant_id"}
    return Alert(**fields, status=status)


async def list_alerts(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    *,
    provider_id: UUID | None,
    status: str | None,
    kind: str | None,
    after: UUID | None,
    limit: int,
) -> list[Alert]:
    rows = await conn.fetch(
        f"""SELECT {_ALERT_COLUMNS} FROM alerts
            WHERE tenant_id = $1 AND ($2::uuid IS NULL OR provider_id = $2) AND ($3::text IS NULL OR kind = $3)
              AND ($4::text IS NULL
                   OR ($4 = 'open' AND resolved_at IS NULL AND acknowledged_at IS NULL)
                   OR ($4 = 'acknowledged' AND resolved_at IS NULL AND acknowledged_at IS NOT NULL)
                   OR ($4 = 'resolved' AND resolved_at IS NOT NULL))
              AND ($5::uuid IS NULL OR id > $5)
            ORDER BY id LIMIT $6""",
        tenant_id,
        provider_id,
        kind,
        status,
        after,
        limit,
    )
    return [alert_from_row(row) for row in rows]


async def acknowledge(
    conn: asyncpg.Connection, tenant_id: UUID, alert_id: UUID, by: str, now: datetime
) -> Alert | None:
    """Record who acknowledged an alert (the first acknowledgement stands); an outside_geofence alert
    is closed by it."""
    row = await conn.fetchrow(
        f"""UPDATE alerts SET acknowledged_by = coalesce(acknowledged_by, $3),
                   acknowledged_at = coalesce(acknowledged_at, $4),
                   resolved_at = CASE WHEN kind = 'outside_geofence' THEN coalesce(resolved_at, $4) ELSE resolved_at END
            WHERE tenant_id = $1 AND id = $2 RETURNING {_ALERT_COLUMNS}""",
        tenant_id,
        alert_id,
        by,
        now,
    )
    return alert_from_row(row) if row else None


async def get_alert(conn: asyncpg.Connection, tenant_id: UUID, alert_id: UUID) -> Alert | None:
    row = await conn.fetchrow(
        f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE tenant_id = $1 AND id = $2", tenant_id, alert_id
    )
    return alert_from_row(row) if row else None


async def on_site(
    conn: asyncpg.Connection, tenant_id: UUID, provider_id: UUID | None, since: datetime
) -> list[asyncpg.Record]:
    """Carers checked in (since `since`) with no later check-out on that visit: who is on site now."""
    return await conn.fetch(
        """SELECT DISTINCT ON (e.carer_id) e.carer_id, c.name AS carer_name, e.provider_id, e.visit_id, e.person_id,
                  p.reference AS person_reference, e.occurred_at AS checked_in_at, e.verified
           FROM visit_events e
           JOIN carers c ON c.tenant_id = e.tenant_id AND c.id = e.carer_id
           JOIN people p ON p.tenant_id = e.tenant_id AND p.id = e.person_id
           WHERE e.tenant_id = $1 AND ($2::uuid IS NULL OR e.provider_id = $2) AND e.kind = 'check_in'
             AND e.occurred_at >= $3
             AND NOT EXISTS (SELECT 1 FROM visit_events o
                             WHERE o.tenant_id = e.tenant_id AND o.visit_id = e.visit_id AND o.carer_id = e.carer_id
                               AND o.kind = 'check_out' AND o.occurred_at > e.occurred_at)
           ORDER BY e.carer_id, e.occurred_at DESC""",
        tenant_id,
        provider_id,
        since,
    )


async def facts_of_visits(conn: asyncpg.Connection, pairs: Sequence[tuple[UUID, UUID]]) -> list[asyncpg.Record]:
    """The current facts of these (tenant, visit) pairs, whatever their status."""
    if not pairs:
        return []
    return await conn.fetch(
        _FACTS
        + """ JOIN unnest($1::uuid[], $2::uuid[]) AS k(tenant_id, id)
                       ON k.tenant_id = v.tenant_id AND k.id = v.id""",
        [p[0] for p in pairs],
        [p[1] for p in pairs],
    )


_SCHEDULE = """SELECT v.tenant_id, v.id, v.updated_at, v.planned_start, v.planned_min,
           v.status IN ('planned', 'in_progress', 'missed') AS alertable,
           (c.pay_rules ->> 'late_after_min')::int AS late_after_min,
           (c.pay_rules ->> 'missed_after_min')::int AS missed_after_min,
           ARRAY(SELECT al.kind FROM alerts al WHERE al.tenant_id = v.tenant_id AND al.visit_id = v.id
                   AND al.kind <> 'outside_geofence') AS alerted
    FROM visits v JOIN contracts c ON c.tenant_id = v.tenant_id AND c.id = v.contract_id"""


async def clock(conn: asyncpg.Connection) -> tuple[datetime, datetime]:
    """The database's now, and the start of its oldest open transaction on this database (or now).

    A row written by a transaction still open carries an `updated_at` no older than that start,
    so "changed since" that instant cannot miss a change that commits later.
    """
    row = await conn.fetchrow(
        """SELECT now() AS now, least(now(), min(xact_start)) AS oldest FROM pg_stat_activity
           WHERE datname = current_database() AND xact_start IS NOT NULL"""
    )
    assert row is not None
    return row["now"], row["oldest"]


async def visits_changed_since(
    conn: asyncpg.Connection,
    after: tuple[datetime, UUID, UUID],
    start_from: datetime,
    start_to: datetime,
    limit: int,
) -> list[asyncpg.Record]:
    """Visits created or changed (moved, cancelled, re-timed) after the position `after`
    (updated_at, tenant, id), planned in the window: the next `limit` of them in that order."""
    return await conn.fetch(
        _SCHEDULE
        + """ WHERE v.updated_at >= $1 AND (v.updated_at, v.tenant_id, v.id) > ($1, $2, $3)
                AND v.planned_start BETWEEN $4 AND $5
              ORDER BY v.updated_at, v.tenant_id, v.id LIMIT $6""",
        *after,
        start_from,
        start_to,
        limit,
    )


async def visits_starting(conn: asyncpg.Connection, after: datetime, until: datetime) -> list[asyncpg.Record]:
    """Visits that can still raise an alert, planned in (after, until]."""
    return await conn.fetch(
        _SCHEDULE
        + """ WHERE v.planned_start > $1 AND v.planned_start <= $2
                          AND v.status IN ('planned', 'in_progress', 'missed')""",
        after,
        until,
    )


async def unalerted_outside_geofence_of(
    conn: asyncpg.Connection, pairs: Sequence[tuple[UUID, UUID]]
) -> list[asyncpg.Record]:
    """Unverified GPS events of these (tenant, visit) pairs that have no alert yet."""
    if not pairs:
        return []
    return await conn.fetch(
        """SELECT e.tenant_id, e.event_id, e.visit_id, e.person_id, e.provider_id, e.received_at, v.created_at,
                  e.occurred_at
           FROM unnest($1::uuid[], $2::uuid[]) AS k(tenant_id, visit_id)
           JOIN visit_events e ON e.tenant_id = k.tenant_id AND e.visit_id = k.visit_id
           JOIN visits v ON v.tenant_id = e.tenant_id AND v.id = e.visit_id
           WHERE e.method = 'gps' AND NOT e.verified
             AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.tenant_id = e.tenant_id AND a.visit_id = e.visit_id
                               AND a.kind = 'outside_geofence' AND a.subject = e.event_id::text)""",
        [p[0] for p in pairs],
        [p[1] for p in pairs],
    )


_ON_SITE = """SELECT DISTINCT ON ({distinct}) e.tenant_id, e.carer_id, c.name AS carer_name, e.provider_id, e.visit_id,
                  e.person_id, p.reference AS person_reference, e.occurred_at AS checked_in_at, e.verified
           FROM visit_events e
           JOIN carers c ON c.tenant_id = e.tenant_id AND c.id = e.carer_id
           JOIN people p ON p.tenant_id = e.tenant_id AND p.id = e.person_id
           {join}
           WHERE e.kind = 'check_in' AND e.occurred_at >= $1 {where}
             AND NOT EXISTS (SELECT 1 FROM visit_events o
                             WHERE o.tenant_id = e.tenant_id AND o.visit_id = e.visit_id AND o.carer_id = e.carer_id
                               AND o.kind = 'check_out' AND o.occurred_at > e.occurred_at)
           ORDER BY {distinct}, e.occurred_at DESC"""


async def on_site_everywhere(conn: asyncpg.Connection, since: datetime) -> list[asyncpg.Record]:
    """Every tenant's carers on site (as `on_site`), for rebuilding the live boards at once."""
    return await conn.fetch(
        _ON_SITE.format(distinct="e.tenant_id, e.carer_id", join="", where=""),
        since,
    )


async def on_site_at(
    conn: asyncpg.Connection, tenant_id: UUID, pairs: Sequence[tuple[UUID, UUID]], since: datetime
) -> list[asyncpg.Record]:
    """Of these (carer, visit) pairs of one tenant, those where the carer is on site at that visit now."""
    if not pairs:
        return []
    return await conn.fetch(
        _ON_SITE.format(
            distinct="e.carer_id, e.visit_id",
            join="""JOIN unnest($3::uuid[], $4::uuid[]) AS k(carer_id, visit_id)
                      ON e.tenant_id = $2 AND e.visit_id = k.visit_id AND e.carer_id = k.carer_id""",
            where="AND e.tenant_id = $2",
        ),
        since,
        tenant_id,
        [p[0] for p in pairs],
        [p[1] for p in pairs],
    )
