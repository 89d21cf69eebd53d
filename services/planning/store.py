"""Planning SQL: care plans and visits. Every query is filtered by tenant_id."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any, NamedTuple
from uuid import UUID

import asyncpg
import msgspec

from schemas.planning import Cancellation, CarePlan, CarePlanCreate, Outcome, ScheduleSlot, Visit, VisitActual
from services.common.ids import new_id
from services.planning.rules import GeneratedVisit

_PLAN_COLUMNS = """id, person_id, contract_id, provider_id, weekly_min, outcomes, schedule, valid_from,
    valid_to, horizon_days, generated_until, created_at,
    (SELECT count(*) FROM visits v WHERE v.tenant_id = care_plans.tenant_id AND v.plan_id = care_plans.id)
        AS visits_created"""


def _plan(row: asyncpg.Record) -> CarePlan:
    return CarePlan(
        id=row["id"],
        person_id=row["person_id"],
        contract_id=row["contract_id"],
        provider_id=row["provider_id"],
        weekly_min=row["weekly_min"],
        outcomes=msgspec.convert(row["outcomes"], list[Outcome]),
        schedule=msgspec.convert(row["schedule"], list[ScheduleSlot]),
        valid_from=row["valid_from"],
        valid_to=row["valid_to"],
        horizon_days=row["horizon_days"],
        generated_until=row["generated_until"],
        visits_created=row["visits_created"],
        created_at=row["created_at"],
    )


async def insert_care_plan(
    conn: asyncpg.Connection, tenant_id: UUID, plan_id: UUID, provider_id: UUID, data: CarePlanCreate
) -> None:
    await conn.execute(
        """INSERT INTO care_plans (tenant_id, id, person_id, contract_id, provider_id, weekly_min, outcomes,
                                   schedule, valid_from, valid_to, horizon_days)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)""",
        tenant_id,
        plan_id,
        data.person_id,
        data.contract_id,
        provider_id,
        data.weekly_min,
        msgspec.to_builtins(data.outcomes),
        msgspec.to_builtins(data.schedule),
        data.valid_from,
        data.valid_to,
        data.horizon_days,
    )


async def get_care_plan(conn: asyncpg.Connection, tenant_id: UUID, plan_id: UUID) -> CarePlan | None:
    row = await conn.fetchrow(
        f"SELECT {_PLAN_COLUMNS} FROM care_plans WHERE tenant_id = $1 AND id = $2", tenant_id, plan_id
    )
    return _plan(row) if row else None


async def list_care_plans(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    *,
    person_id: UUID | None,
    provider_id: UUID | None,
    after: UUID | None,
    limit: int,
) -> list[CarePlan]:
    rows = await conn.fetch(
        f"""SELECT {_PLAN_COLUMNS} FROM care_plans
            WHERE tenant_id = $1 AND ($2::uuid IS NULL OR person_id = $2)
              AND ($3::uuid IS NULL OR provider_id = $3) AND ($4::uuid IS NULL OR id > $4)
            ORDER BY id LIMIT $5""",
        tenant_id,
        person_id,
        provider_id,
        after,
        limit,
    )
    return [_plan(row) for row in rows]


_GENERATION_STATE = """SELECT p.tenant_id, p.id, p.schedule, p.valid_from, p.valid_to, p.horizon_days,
           p.generated_until, c.valid_from AS contract_from, c.valid_to AS contract_to, t.zone
    FROM care_plans p
    JOIN contracts c ON c.tenant_id = p.tenant_id AND c.id = p.contract_id
    JOIN tenants t ON t.tenant_id = p.tenant_id"""


async def plan_generation_state(conn: asyncpg.Connection, tenant_id: UUID, plan_id: UUID) -> asyncpg.Record:
    """What generation needs of one plan: schedule, validity, its contract's validity, the zone."""
    row = await conn.fetchrow(_GENERATION_STATE + " WHERE p.tenant_id = $1 AND p.id = $2", tenant_id, plan_id)
    assert row is not None
    return row


async def plans_needing_visits(conn: asyncpg.Connection, today_utc: date) -> list[asyncpg.Record]:
    """Every plan, in any tenant, whose visits may not yet reach its horizon (the worker job)."""
    return await conn.fetch(
        _GENERATION_STATE
        + """ WHERE (p.generated_until IS NULL OR p.generated_until < $1::date + p.horizon_days + 1)
                AND (p.valid_to IS NULL OR p.generated_until IS NULL OR p.generated_until < p.valid_to)
                AND (c.valid_to IS NULL OR p.generated_until IS NULL OR p.generated_until < c.valid_to)""",
        today_utc,
    )


async def insert_generated_visits(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    plan_id: UUID,
    visits: Sequence[GeneratedVisit],
    generated_until: date,
) -> int:
    """Insert the plan's visits that do not exist yet (by plan, slot, local date); returns how many."""
    inserted = 0
    if visits:
        result = await conn.execute(
            # The two tables behind `visits` directly: the view cannot take ON CONFLICT.
            """WITH added AS (
                   INSERT INTO visit_plans (tenant_id, id, person_id, contract_id, provider_id, plan_id, slot,
                                            local_date, planned_start, planned_min, carers_required, outcome_ids,
                                            funding, origin, approval, band_start)
                   SELECT p.tenant_id, g.id, p.person_id, p.contract_id, p.provider_id, p.id, g.slot, g.local_date,
                          g.planned_start, g.planned_min, g.carers_required,
                          ARRAY(SELECT jsonb_array_elements_text(g.outcome_ids::jsonb)), 'package', 'plan',
                          'approved', g.planned_start
                   FROM care_plans p,
                        unnest($3::uuid[], $4::int[], $5::date[], $6::timestamptz[], $7::int[], $8::int[],
                               $9::text[])
                            AS g(id, slot, local_date, planned_start, planned_min, carers_required, outcome_ids)
                   WHERE p.tenant_id = $1 AND p.id = $2
                   ON CONFLICT (tenant_id, plan_id, slot, local_date) DO NOTHING
                   RETURNING tenant_id, id, planned_start)
               INSERT INTO visit_states (tenant_id, visit_id, status, next_check_at)
               SELECT tenant_id, id, 'planned', planned_start FROM added""",
            tenant_id,
            plan_id,
            [new_id() for _ in visits],
            [v.slot for v in visits],
            [v.local_date for v in visits],
            [v.planned_start for v in visits],
            [v.planned_min for v in visits],
            [v.carers_required for v in visits],
            # JSON text per visit: asyncpg would read nested lists as a 2-D array.
            [msgspec.json.encode(list(v.outcome_ids)).decode() for v in visits],
        )
        inserted = int(result.split()[-1])
    await conn.execute(
        """UPDATE care_plans SET generated_until = greatest(generated_until, $3)
           WHERE tenant_id = $1 AND id = $2""",
        tenant_id,
        plan_id,
        generated_until,
    )
    return inserted


async def extra_visit_ids(conn: asyncpg.Connection, tenant_id: UUID, person_id: UUID, contract_id: UUID) -> list[UUID]:
    """The person's visits on the contract that no care plan generated (commissioner's, requested, unplanned)."""
    rows = await conn.fetch(
        """SELECT id FROM visit_plans
           WHERE tenant_id = $1 AND person_id = $2 AND contract_id = $3 AND plan_id IS NULL""",
        tenant_id,
        person_id,
        contract_id,
    )
    return [row["id"] for row in rows]


async def plan_outcome_ids(conn: asyncpg.Connection, tenant_id: UUID, person_id: UUID, contract_id: UUID) -> set[str]:
    """Outcome ids of the person's plans on this contract."""
    rows = await conn.fetch(
        """SELECT DISTINCT o ->> 'id' AS id FROM care_plans, jsonb_array_elements(outcomes) o
           WHERE tenant_id = $1 AND person_id = $2 AND contract_id = $3""",
        tenant_id,
        person_id,
        contract_id,
    )
    return {row["id"] for row in rows}


async def providers_of_person(conn: asyncpg.Connection, tenant_id: UUID, person_id: UUID) -> list[UUID]:
    """The providers a person is with (has a care plan on one of their contracts)."""
    rows = await conn.fetch(
        "SELECT DISTINCT provider_id FROM care_plans WHERE tenant_id = $1 AND person_id = $2 ORDER BY provider_id",
        tenant_id,
        person_id,
    )
    return [row["provider_id"] for row in rows]


async def person_is_with_provider(
    conn: asyncpg.Connection, tenant_id: UUID, person_id: UUID, provider_id: UUID
) -> bool:
    """A person 'is with' a provider when they have a care plan on one of its contracts."""
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM care_plans WHERE tenant_id = $1 AND person_id = $2 AND provider_id = $3)",
            tenant_id,
            person_id,
            provider_id,
        )
    )


_VISIT_COLUMNS = """id, person_id, provider_id, contract_id, plan_id, status, planned_start, planned_min,
    carers_required, carer_ids, outcome_ids, funding, origin, approval, band_start, cancellation, actual,
    exceptions, created_at"""


def visit_from_row(row: asyncpg.Record | dict[str, Any]) -> Visit:
    data = dict(row)
    data["carer_ids"] = list(data["carer_ids"])
    data["outcome_ids"] = list(data["outcome_ids"])
    data["exceptions"] = list(data["exceptions"])
    data["cancellation"] = msgspec.convert(data["cancellation"], Cancellation) if data["cancellation"] else None
    data["actual"] = msgspec.convert(data["actual"], VisitActual) if data["actual"] else None
    return Visit(**data)


async def insert_visit(conn: asyncpg.Connection, tenant_id: UUID, visit: Visit) -> Visit:
    row = await conn.fetchrow(
        f"""INSERT INTO visits (tenant_id, id, person_id, contract_id, provider_id, planned_start, planned_min,
                                carers_required, carer_ids, outcome_ids, funding, origin, approval, status,
                                band_start, next_check_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $6)
            RETURNING {_VISIT_COLUMNS}""",
        tenant_id,
        visit.id,
        visit.person_id,
        visit.contract_id,
        visit.provider_id,
        visit.planned_start,
        visit.planned_min,
        visit.carers_required,
        visit.carer_ids,
        visit.outcome_ids,
        visit.funding,
        visit.origin,
        visit.approval,
        visit.status,
        visit.band_start,
    )
    assert row is not None
    return visit_from_row(row)


# The columns of `visits` that live in `visit_states` (the rest are the plan's, in `visit_plans`).
STATE_COLUMNS = frozenset(
    ("status", "actual", "exceptions", "payable_min", "banked_min", "reconciled_at", "next_check_at")
)


async def copy_visits(conn: asyncpg.Connection, records: Sequence[Sequence[Any]], columns: Sequence[str]) -> None:
    """Bulk-load rows of `visits` (values in the order of `columns`, which include `tenant_id`, `id`
    and `status`) by COPY into the two tables behind the view. Loads must not COPY into the view itself
    when they skip the foreign-key triggers: under `session_replication_role = replica` the view's
    triggers do not fire either, and its rows would be dropped without an error."""
    plan_at = [i for i, name in enumerate(columns) if name not in STATE_COLUMNS]
    state_at = [i for i, name in enumerate(columns) if name in STATE_COLUMNS]
    tenant_at, id_at = columns.index("tenant_id"), columns.index("id")
    await conn.copy_records_to_table(
        "visit_plans", records=[[row[i] for i in plan_at] for row in records], columns=[columns[i] for i in plan_at]
    )
    await conn.copy_records_to_table(
        "visit_states",
        records=[[row[tenant_at], row[id_at], *(row[i] for i in state_at)] for row in records],
        columns=["tenant_id", "visit_id", *(columns[i] for i in state_at)],
    )


async def get_visit(conn: asyncpg.Connection, tenant_id: UUID, visit_id: UUID, *, lock: bool = False) -> Visit | None:
    row = await conn.fetchrow(
        f"SELECT {_VISIT_COLUMNS} FROM visits WHERE tenant_id = $1 AND id = $2"
        + (" FOR NO KEY UPDATE" if lock else ""),
        tenant_id,
        visit_id,
    )
    return visit_from_row(row) if row else None


class VisitOwnership(NamedTuple):
    """Whose a visit is and what it may record: what ingest checks an event against."""

    id: UUID
    person_id: UUID
    provider_id: UUID
    contract_id: UUID
    outcome_ids: list[str]
    origin: str

    @classmethod
    def of(cls, visit: Visit) -> VisitOwnership:
        return cls(visit.id, visit.person_id, visit.provider_id, visit.contract_id, visit.outcome_ids, visit.origin)


async def visit_ownerships(
    conn: asyncpg.Connection, tenant_id: UUID, visit_ids: Sequence[UUID]
) -> dict[UUID, VisitOwnership]:
    """`VisitOwnership` of visits by id: six columns, not a whole `Visit` decoded per event's visit (all
    of the plan's, so read from `visit_plans` without the state the `visits` view would join)."""
    rows = await conn.fetch(
        """SELECT id, person_id, provider_id, contract_id, outcome_ids, origin FROM visit_plans
           WHERE tenant_id = $1 AND id = ANY($2::uuid[])""",
        tenant_id,
        list(visit_ids),
    )
    return {row[0]: VisitOwnership(*row) for row in rows}


async def list_visits(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    *,
    start_from: datetime | None,
    start_before: datetime | None,
    provider_id: UUID | None,
    person_id: UUID | None,
    carer_id: UUID | None,
    status: str | None,
    after: UUID | None,
    limit: int,
) -> list[Visit]:
    """Visits by filter; `carer_id` matches carers assigned or with events on the visit."""
    rows = await conn.fetch(
        f"""SELECT {_VISIT_COLUMNS} FROM visits v
            WHERE tenant_id = $1
              AND ($2::timestamptz IS NULL OR planned_start >= $2)
              AND ($3::timestamptz IS NULL OR planned_start < $3)
              AND ($4::uuid IS NULL OR provider_id = $4)
              AND ($5::uuid IS NULL OR person_id = $5)
              AND ($6::uuid IS NULL OR $6 = ANY(carer_ids) OR EXISTS (
                    SELECT 1 FROM visit_events e
                    WHERE e.tenant_id = v.tenant_id AND e.visit_id = v.id AND e.carer_id = $6))
              AND ($7::text IS NULL OR status = $7)
              AND ($8::uuid IS NULL OR id > $8)
            ORDER BY id LIMIT $9""",
        tenant_id,
        start_from,
        start_before,
        provider_id,
        person_id,
        carer_id,
        status,
        after,
        limit,
    )
    return [visit_from_row(row) for row in rows]


async def carer_day(
    conn: asyncpg.Connection, tenant_id: UUID, carer_id: UUID, start: datetime, end: datetime
) -> list[Visit]:
    """A carer's visits planned in [start, end): assigned to it or with its events, by start time."""
    rows = await conn.fetch(
        f"""SELECT {_VISIT_COLUMNS} FROM visits v
            WHERE tenant_id = $1 AND planned_start >= $3 AND planned_start < $4
              AND ($2 = ANY(carer_ids) OR EXISTS (
                    SELECT 1 FROM visit_events e
                    WHERE e.tenant_id = v.tenant_id AND e.visit_id = v.id AND e.carer_id = $2))
            ORDER BY planned_start, id""",
        tenant_id,
        carer_id,
        start,
        end,
    )
    return [visit_from_row(row) for row in rows]


async def update_schedule(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    visit_id: UUID,
    *,
    carer_ids: list[UUID],
    planned_start: datetime,
    band_start: datetime,
) -> Visit:
    row = await conn.fetchrow(
        f"""UPDATE visits SET carer_ids = $3, planned_start = $4, band_start = $5, updated_at = now()
            WHERE tenant_id = $1 AND id = $2 RETURNING {_VISIT_COLUMNS}""",
        tenant_id,
        visit_id,
        carer_ids,
        planned_start,
        band_start,
    )
    assert row is not None
    return visit_from_row(row)


async def cancel_visit(conn: asyncpg.Connection, tenant_id: UUID, visit_id: UUID, cancellation: Cancellation) -> Visit:
    row = await conn.fetchrow(
        f"""UPDATE visits SET status = 'cancelled', cancellation = $3, updated_at = now()
            WHERE tenant_id = $1 AND id = $2 RETURNING {_VISIT_COLUMNS}""",
        tenant_id,
        visit_id,
        msgspec.to_builtins(cancellation),
    )
    assert row is not None
    return visit_from_row(row)


async def approve_visit(conn: asyncpg.Connection, tenant_id: UUID, visit: Visit) -> Visit:
    """Approve a pending requested visit, or confirm a provider-recorded short-notice cancellation."""
    cancellation = (
        msgspec.to_builtins(msgspec.structs.replace(visit.cancellation, confirmed=True)) if visit.cancellation else None
    )
    row = await conn.fetchrow(
        f"""UPDATE visits SET approval = 'approved', cancellation = $3, updated_at = now()
            WHERE tenant_id = $1 AND id = $2 RETURNING {_VISIT_COLUMNS}""",
        tenant_id,
        visit.id,
        cancellation,
    )
    assert row is not None
    return visit_from_row(row)


async def candidate_visits(
    conn: asyncpg.Connection, tenant_id: UUID, person_id: UUID, provider_id: UUID, start: datetime, end: datetime
) -> list[tuple[UUID, datetime]]:
    """The person's non-cancelled visits with this provider planned in [start, end]."""
    rows = await conn.fetch(
        """SELECT id, planned_start FROM visits
           WHERE tenant_id = $1 AND person_id = $2 AND provider_id = $3 AND status <> 'cancelled'
             AND planned_start BETWEEN $4 AND $5""",
        tenant_id,
        person_id,
        provider_id,
        start,
        end,
    )
    return [(row["id"], row["planned_start"]) for row in rows]


async def contract_for_unplanned(
    conn: asyncpg.Connection, tenant_id: UUID, person_id: UUID, provider_id: UUID, on: date
) -> UUID | None:
    """The contract an unplanned visit falls under: that of the person's plan with the provider in force
    on the day (the latest plan when several are)."""
    value = await conn.fetchval(
        """SELECT contract_id FROM care_plans
           WHERE tenant_id = $1 AND person_id = $2 AND provider_id = $3
           ORDER BY (valid_from <= $4 AND (valid_to IS NULL OR valid_to >= $4)) DESC, valid_from DESC, id DESC
           LIMIT 1""",
        tenant_id,
        person_id,
        provider_id,
        on,
    )
    return value if isinstance(value, UUID) else None


async def set_planned_min(conn: asyncpg.Connection, tenant_id: UUID, visit_id: UUID, minutes: int) -> None:
    """The approved length of an unplanned visit."""
    await conn.execute(
        "UPDATE visits SET planned_min = $3, updated_at = now() WHERE tenant_id = $1 AND id = $2",
        tenant_id,
        visit_id,
        minutes,
    )


async def start_unplanned_at_first_check_in(
    conn: asyncpg.Connection, tenant_id: UUID, visit_ids: Sequence[UUID]
) -> None:
    """An unplanned visit starts (and is priced) at its earliest check-in, whichever event arrived first.
    The plan table itself, not the `visits` view: an UPDATE on a table re-checks `approval = 'pending'`
    against a row that an approval committed while this statement waited for it (decision 125)."""
    await conn.execute(
        """UPDATE visit_plans v SET planned_start = f.first_in, band_start = f.first_in, updated_at = now()
           FROM (SELECT visit_id, min(occurred_at) AS first_in FROM visit_events
                 WHERE tenant_id = $1 AND visit_id = ANY($2::uuid[]) AND kind = 'check_in' GROUP BY visit_id) f
           WHERE v.tenant_id = $1 AND v.id = f.visit_id AND v.origin = 'unplanned' AND v.approval = 'pending'
             AND v.planned_start <> f.first_in""",
        tenant_id,
        list(visit_ids),
    )
