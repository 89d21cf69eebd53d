"""Planning worker job: roll every care plan's visits forward to its horizon."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import asyncpg
import msgspec

from infra.db import acquire
from schemas.planning import ScheduleSlot
from services.planning import rules, store


async def generate_plan(conn: asyncpg.Connection, plan: asyncpg.Record, now: datetime) -> int:
    """Create one plan's missing visits up to today + horizon_days; safe to repeat. Returns how many."""
    zone = ZoneInfo(plan["zone"])
    window = rules.generation_window(
        plan_from=plan["valid_from"],
        plan_to=plan["valid_to"],
        contract_from=plan["contract_from"],
        contract_to=plan["contract_to"],
        generated_until=plan["generated_until"],
        today=now.astimezone(zone).date(),
        horizon_days=plan["horizon_days"],
    )
    if window is None:
        return 0
    visits = rules.expand_schedule(msgspec.convert(plan["schedule"], list[ScheduleSlot]), zone, *window)
    return await store.insert_generated_visits(conn, plan["tenant_id"], plan["id"], visits, window[1])


async def extend_care_plans(pool: asyncpg.Pool, now: datetime | None = None) -> int:
    """Every plan that may be short of its horizon, one transaction each; returns visits created."""
    now = now or datetime.now(tz=UTC)
    async with acquire(pool) as conn:
        plans = await store.plans_needing_visits(conn, now.date())
    created = 0
    for plan in plans:
        async with acquire(pool) as conn, conn.transaction():
            created += await generate_plan(conn, plan, now)
    return created
