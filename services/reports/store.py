"""Report SQL: read-only views over visits, their invoice lines and care-plan outcomes of a date
range. Reports are a read model of the other areas' tables (docs/decisions.md 70); they never write."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import asyncpg


async def visits_in_range(
    conn: asyncpg.Connection, tenant_id: UUID, starts_at: datetime, ends_at: datetime, provider_id: UUID | None
) -> list[asyncpg.Record]:
    """Visits planned to start in [starts_at, ends_at) (of one provider if given), with what billing's
    rules need to price them and what the reports count. Unplanned visits are left out while they await
    approval, and once cancelled: one is cancelled only when its events all went to the visit they belonged
    to (decision 152), so it was neither planned nor delivered, and counting it as a cancellation would
    report one nobody made."""
    return await conn.fetch(
        """SELECT v.id, v.provider_id, v.contract_id, v.person_id, v.planned_start, v.band_start, v.planned_min,
                  v.carers_required, v.funding, v.status, v.cancellation, v.actual, v.exceptions, v.payable_min,
                  v.outcome_ids, p.reference AS person_reference
           FROM visits v JOIN people p ON p.tenant_id = v.tenant_id AND p.id = v.person_id
           WHERE v.tenant_id = $1 AND v.planned_start >= $2 AND v.planned_start < $3
             AND ($4::uuid IS NULL OR v.provider_id = $4) AND v.status <> 'unplanned'
             AND NOT (v.origin = 'unplanned' AND v.status = 'cancelled')
           ORDER BY v.planned_start, v.id""",
        tenant_id,
        starts_at,
        ends_at,
        provider_id,
    )


async def invoice_lines_of(
    conn: asyncpg.Connection, tenant_id: UUID, visit_ids: Sequence[UUID]
) -> dict[UUID, list[asyncpg.Record]]:
    """The visit and adjustment lines issued so far for each of these visits."""
    rows = await conn.fetch(
        """SELECT visit_id, kind, funding, rate_pence_per_hour, planned_min, amount_pence FROM invoice_lines
           WHERE tenant_id = $1 AND visit_id = ANY($2::uuid[]) AND kind IN ('visit', 'adjustment')""",
        tenant_id,
        list(visit_ids),
    )
    lines: dict[UUID, list[asyncpg.Record]] = defaultdict(list)
    for row in rows:
        lines[row["visit_id"]].append(row)
    return lines


async def outcome_domains(
    conn: asyncpg.Connection, tenant_id: UUID, person_ids: Sequence[UUID]
) -> dict[tuple[UUID, UUID], dict[str, str]]:
    """(person, contract) → outcome id → ASCOT domain, from the people's care plans."""
    rows = await conn.fetch(
        """SELECT person_id, contract_id, o ->> 'id' AS outcome_id, o ->> 'domain' AS domain
           FROM care_plans, jsonb_array_elements(outcomes) o
           WHERE tenant_id = $1 AND person_id = ANY($2::uuid[])
           ORDER BY created_at""",
        tenant_id,
        list(set(person_ids)),
    )
    domains: dict[tuple[UUID, UUID], dict[str, str]] = defaultdict(dict)
    for row in rows:
        domains[(row["person_id"], row["contract_id"])].setdefault(row["outcome_id"], row["domain"])
    return domains


async def provider_codes(conn: asyncpg.Connection, tenant_id: UUID) -> dict[UUID, str]:
    rows = await conn.fetch("SELECT id, code FROM providers WHERE tenant_id = $1", tenant_id)
    return {row["id"]: row["code"] for row in rows}


async def provider_exists(conn: asyncpg.Connection, tenant_id: UUID, provider_id: UUID) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM providers WHERE tenant_id = $1 AND id = $2)", tenant_id, provider_id
        )
    )
