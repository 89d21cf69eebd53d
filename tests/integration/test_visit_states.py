"""`visits` as a view over `visit_plans` and `visit_states` (decision 122): migration 0018 keeps every
visit's state, writes through the view land in the table that holds what they change, and
reconciliation writes only the state."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from infra.db import MIGRATIONS_DIR, connect, migrate
from services.common.ids import new_id
from services.reconcile import service as reconcile_service
from tests.conftest import with_database
from tests.integration.test_ingest import visit_at, yesterday
from tests.integration.test_planning import plan_body
from tests.servers import Servers
from tests.support import Client, World, build_world, create

VERSIONS = """SELECT (SELECT xmin::text FROM visit_plans WHERE id = $1),
                     (SELECT xmin::text FROM visit_states WHERE visit_id = $1)"""


@pytest.fixture
async def world(client: Client, db: asyncpg.Connection) -> World:
    built = await build_world(client, db)
    await create(client, built.a.commissioner, "/v1/care-plans", plan_body(built.a))
    return built


async def versions(db: asyncpg.Connection, visit_id: UUID) -> tuple[str, str]:
    """The row versions of the visit's plan and state."""
    row = await db.fetchrow(VERSIONS, visit_id)
    assert row is not None
    return row[0], row[1]


async def test_a_plan_change_through_the_view_leaves_the_state_row_alone(world: World, db: asyncpg.Connection) -> None:
    visit_id = await visit_at(db, world.a.person_id, yesterday())
    plan, state = await versions(db, visit_id)
    await db.execute("UPDATE visits SET planned_min = 45, updated_at = now() WHERE id = $1", visit_id)
    new_plan, new_state = await versions(db, visit_id)
    assert (new_plan != plan, new_state) == (True, state)
    assert await db.fetchval("SELECT planned_min FROM visit_plans WHERE id = $1", visit_id) == 45


async def test_a_state_change_through_the_view_leaves_the_plan_row_alone(world: World, db: asyncpg.Connection) -> None:
    visit_id = await visit_at(db, world.a.person_id, yesterday())
    plan, state = await versions(db, visit_id)
    await db.execute("UPDATE visits SET payable_min = 7, exceptions = '{short_visit}' WHERE id = $1", visit_id)
    new_plan, new_state = await versions(db, visit_id)
    assert (new_plan, new_state != state) == (plan, True)
    row = await db.fetchrow("SELECT payable_min, exceptions FROM visit_states WHERE visit_id = $1", visit_id)
    assert row is not None
    assert (row["payable_min"], row["exceptions"]) == (7, ["short_visit"])


async def test_an_update_that_changes_nothing_writes_neither_row(world: World, db: asyncpg.Connection) -> None:
    visit_id = await visit_at(db, world.a.person_id, yesterday())
    before = await versions(db, visit_id)
    await db.execute("UPDATE visits SET status = status, planned_min = planned_min WHERE id = $1", visit_id)
    assert await versions(db, visit_id) == before


async def until_waiting_for_a_lock(
    db: asyncpg.Connection, task: asyncio.Task[Any], *, pid: int | None = None, other_than: Sequence[int] = ()
) -> None:
    """Return once backend `pid` (without it: any backend of this database but `db`'s and `other_than`,
    such as a pool's connection) waits for a lock; fail if `task` ends or nothing waits first."""
    for _ in range(500):
        if await db.fetchval(
            """SELECT count(*) > 0 FROM pg_stat_activity
               WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()
                 AND ($1::int IS NULL OR pid = $1) AND pid <> ALL($2::int[])""",
            pid,
            list(other_than),
        ):
            return
        assert not task.done(), "the statement finished without waiting for a lock"
        await asyncio.sleep(0.02)
    raise AssertionError(f"no backend ({pid or 'any'}) waited for a lock")


async def test_an_update_through_the_view_that_waited_keeps_what_the_other_committed(
    world: World, db: asyncpg.Connection, database_url: str
) -> None:
    """Two UPDATEs through the view, each of other columns of one row: the second waits for the first's
    lock, then writes only what it changed over the first's committed values (decision 125; 0018 wrote
    every column back from its snapshot, undoing the first)."""
    visit_id = await visit_at(db, world.a.person_id, yesterday())
    first, second = await connect(database_url), await connect(database_url)
    try:
        transaction = first.transaction()
        await transaction.start()
        await first.execute("UPDATE visits SET planned_min = 55 WHERE id = $1", visit_id)
        await first.execute("UPDATE visits SET payable_min = 11 WHERE id = $1", visit_id)
        waiting = asyncio.create_task(
            second.execute("UPDATE visits SET carers_required = 2, banked_min = 3 WHERE id = $1", visit_id)
        )
        await until_waiting_for_a_lock(db, waiting, pid=second.get_server_pid())
        await transaction.commit()
        await waiting
    finally:
        await first.close()
        await second.close()
    row = await db.fetchrow(
        "SELECT planned_min, carers_required, payable_min, banked_min FROM visits WHERE id = $1", visit_id
    )
    assert row is not None
    assert tuple(row) == (55, 2, 11, 3)


async def test_a_visit_key_cannot_change_through_the_view(world: World, db: asyncpg.Connection) -> None:
    visit_id = await visit_at(db, world.a.person_id, yesterday())
    with pytest.raises(asyncpg.RaiseError, match="cannot change"):
        await db.execute("UPDATE visits SET id = $2 WHERE id = $1", visit_id, new_id())


async def test_an_insert_through_the_view_writes_both_rows_with_the_defaults(
    world: World, db: asyncpg.Connection
) -> None:
    template = await db.fetchrow("SELECT * FROM visits WHERE person_id = $1 LIMIT 1", UUID(world.a.person_id))
    assert template is not None
    visit_id = new_id()
    inserted = await db.fetchrow(
        """INSERT INTO visits (tenant_id, id, person_id, contract_id, provider_id, planned_start, planned_min,
                               carers_required, funding, origin, approval, status, band_start)
           VALUES ($1, $2, $3, $4, $5, $6, 30, 1, 'package', 'commissioner', 'approved', 'planned', $6)
           RETURNING id, exceptions, payable_min, carer_ids""",
        template["tenant_id"],
        visit_id,
        template["person_id"],
        template["contract_id"],
        template["provider_id"],
        template["planned_start"],
    )
    assert inserted is not None
    assert (inserted["id"], inserted["exceptions"], inserted["payable_min"], inserted["carer_ids"]) == (
        visit_id,
        [],
        0,
        [],
    )
    row = await db.fetchrow("SELECT status, created_at, exceptions FROM visits WHERE id = $1", visit_id)
    assert row is not None
    assert (row["status"], row["exceptions"]) == ("planned", [])
    assert row["created_at"] is not None


async def test_reconciliation_writes_the_state_and_not_the_plan(world: World, db: asyncpg.Connection) -> None:
    """The point of the split: a reconciled visit gets a new state row version, its plan row none."""
    visit_id = await visit_at(db, world.a.person_id, yesterday())
    plan, state = await versions(db, visit_id)
    async with db.transaction():
        await reconcile_service.reconcile_visits(db, UUID(world.a.tenant_id), [visit_id], datetime.now(tz=UTC))
    new_plan, new_state = await versions(db, visit_id)
    assert (new_plan, new_state != state) == (plan, True)
    assert await db.fetchval("SELECT status FROM visits WHERE id = $1", visit_id) == "missed"


async def test_migration_0018_keeps_every_visits_state(servers: Servers, tmp_path: Path) -> None:
    """A database at 0017 with a reconciled visit: after 0018 the view shows the same visit, and the
    plan table no longer has the state columns."""
    before = tmp_path / "migrations"
    before.mkdir()
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        if int(path.name[:4]) <= 17:
            shutil.copy(path, before / path.name)
    name = f"carebank_m_{new_id().hex[-20:]}"
    admin = await asyncpg.connect(servers.database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        conn = await connect(with_database(servers.database_url, name))
        try:
            await migrate(conn, before)
            ids = [new_id() for _ in range(5)]  # tenant, person, contract, provider, visit
            actual = {"attendances": [], "payable_min": 30, "banked_min": 5, "place_payables": [30]}
            await conn.execute("SET session_replication_role = replica")  # no parents: the FKs are not the point
            await conn.execute(
                """INSERT INTO visits (tenant_id, id, person_id, contract_id, provider_id, planned_start, planned_min,
                                       carers_required, funding, origin, approval, status, band_start, actual,
                                       exceptions, payable_min, banked_min, reconciled_at, next_check_at)
                   VALUES ($1, $5, $2, $3, $4, '2026-11-01 08:00Z', 30, 1, 'package', 'plan', 'approved',
                           'completed', '2026-11-01 08:00Z', $6, '{short_visit}', 30, 5, '2026-11-02Z',
                           '2026-11-03Z')""",
                *ids,
                actual,
            )
            await conn.execute("SET session_replication_role = DEFAULT")
            old = dict(await conn.fetchrow("SELECT * FROM visits") or {})
            assert [m for m in await migrate(conn) if m.startswith("0018")]
            new = dict(await conn.fetchrow("SELECT * FROM visits") or {})
            assert new == old
            assert list(new) == list(old)  # the view keeps the table's column order
            plan_columns = {
                r["attname"]
                for r in await conn.fetch(
                    "SELECT attname FROM pg_attribute WHERE attrelid = 'visit_plans'::regclass AND NOT attisdropped"
                )
            }
            assert not plan_columns & {"status", "actual", "exceptions", "payable_min", "next_check_at"}
            assert json.loads(json.dumps(new["actual"])) == actual
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
