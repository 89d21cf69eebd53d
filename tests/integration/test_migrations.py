"""Migrations: idempotent, checksummed, serialised; the schema is Citus-ready by construction."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import asyncpg
import pytest

from infra.db import MIGRATIONS_DIR, MigrationError, connect, create_pool, load_migrations, migrate

# Installation tables: not tenant data, so they are not distributed by tenant_id.
INSTALLATION_TABLES = {"schema_migrations", "admin_credentials"}


async def test_migrating_again_applies_nothing(db: asyncpg.Connection) -> None:
    assert await migrate(db) == []
    recorded = await db.fetch("SELECT version, name, checksum FROM schema_migrations ORDER BY version")
    assert [(r["version"], r["name"], r["checksum"]) for r in recorded] == [
        (m.version, m.name, m.checksum) for m in load_migrations()
    ]


async def test_concurrent_migrations_apply_each_file_once(database_url: str, tmp_path: Path) -> None:
    directory = tmp_path / "migrations"
    directory.mkdir()
    (directory / "0001_one.sql").write_text("CREATE TABLE once_only (tenant_id uuid PRIMARY KEY);")
    conns = [await connect(database_url) for _ in range(3)]
    try:
        await conns[0].execute("DROP TABLE schema_migrations")
        results = await asyncio.gather(*(migrate(conn, directory) for conn in conns))
        assert sorted(len(r) for r in results) == [0, 0, 1]
    finally:
        for conn in conns:
            await conn.close()


async def test_an_edited_applied_migration_stops_start_up(db: asyncpg.Connection, tmp_path: Path) -> None:
    directory = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, directory)
    first = sorted(directory.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- a harmless-looking edit\n")
    with pytest.raises(MigrationError, match="edited after it was applied"):
        await migrate(db, directory)


async def test_a_failing_migration_leaves_nothing_behind(db: asyncpg.Connection, tmp_path: Path) -> None:
    directory = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, directory)
    number = len(load_migrations()) + 1
    (directory / f"{number:04d}_broken.sql").write_text(
        "CREATE TABLE half_done (tenant_id uuid PRIMARY KEY); SELECT no_such_function();"
    )
    with pytest.raises(asyncpg.UndefinedFunctionError):
        await migrate(db, directory)
    assert await db.fetchval("SELECT to_regclass('half_done')") is None
    assert await db.fetchval("SELECT max(version) FROM schema_migrations") == number - 1


def test_badly_named_or_missing_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "0001_ok.sql").write_text("SELECT 1;")
    (tmp_path / "0003_gap.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="expected migration 0002"):
        load_migrations(tmp_path)
    (tmp_path / "0003_gap.sql").unlink()
    (tmp_path / "2_bad.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=r"not NNNN_name\.sql"):
        load_migrations(tmp_path)


async def citus_breaches(db: asyncpg.Connection, schema: str = "public") -> list[str]:
    """Every way the schema's tenant tables fail to lead with tenant_id."""
    tables = [
        r["relname"]
        for r in await db.fetch(
            """SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')""",
            schema,
        )
    ]
    constraints = await db.fetch(
        """SELECT t.relname AS tbl, c.conname, c.contype::text AS contype,
                  (SELECT array_agg(a.attname ORDER BY k.ord)
                     FROM unnest(c.conkey) WITH ORDINALITY k(attnum, ord)
                     JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum) AS cols,
                  (SELECT array_agg(a.attname ORDER BY k.ord)
                     FROM unnest(c.confkey) WITH ORDINALITY k(attnum, ord)
                     JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.attnum) AS ref_cols
           FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
           JOIN pg_class t ON t.oid = c.conrelid
           WHERE n.nspname = $1 AND c.contype IN ('p', 'f', 'u')""",
        schema,
    )
    unique_indexes = await db.fetch(
        """SELECT c.relname AS tbl, i.indexrelid::regclass::text AS name,
                  (SELECT a.attname FROM pg_attribute a
                    WHERE a.attrelid = i.indrelid AND a.attnum = i.indkey[0]) AS first_col
           FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = $1 AND i.indisunique""",
        schema,
    )
    breaches: list[str] = []
    with_pk = set()
    for row in constraints:
        table = row["tbl"]
        if table in INSTALLATION_TABLES:
            continue
        if row["contype"] == "p":
            with_pk.add(table)
        if row["cols"][0] != "tenant_id":
            breaches.append(f"{table}.{row['conname']} ({row['contype']}) leads with {row['cols'][0]}")
        if row["contype"] == "f" and row["ref_cols"][0] != "tenant_id":
            breaches.append(f"{table}.{row['conname']} references {row['ref_cols']}")
    for row in unique_indexes:
        if row["tbl"] not in INSTALLATION_TABLES and row["first_col"] != "tenant_id":
            breaches.append(f"unique index {row['name']} leads with {row['first_col']}")
    breaches += [f"{table} has no primary key" for table in set(tables) - INSTALLATION_TABLES - with_pk]
    return breaches


async def test_schema_is_citus_ready(db: asyncpg.Connection) -> None:
    """tenant_id leads every primary key, foreign key and unique constraint of tenant data."""
    assert await db.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") >= 8
    breaches = await citus_breaches(db)
    assert not breaches, "\n".join(breaches)


async def test_the_citus_check_catches_a_breach(db: asyncpg.Connection) -> None:
    await db.execute(
        """CREATE SCHEMA bad;
           CREATE TABLE bad.things (id uuid PRIMARY KEY, tenant_id uuid NOT NULL, code text UNIQUE);
           CREATE TABLE bad.parts (tenant_id uuid, id uuid, thing_id uuid REFERENCES bad.things (id),
                                   PRIMARY KEY (tenant_id, id));
           CREATE TABLE bad.loose (tenant_id uuid);"""
    )
    breaches = await citus_breaches(db, "bad")
    assert any("things_pkey" in b for b in breaches)
    assert any("things_code_key" in b for b in breaches)
    assert any("parts_thing_id_fkey" in b for b in breaches)
    assert "loose has no primary key" in breaches


async def test_the_monitor_s_pool_plans_every_statement_afresh(database_url: str) -> None:
    """Decision 157: the alert timers' reads never run on a cached generic plan made for other data;
    the service's other pools keep PostgreSQL's own choice."""
    from services.monitoring.jobs import monitor_pool

    for made, mode in (
        (await monitor_pool(database_url), "force_custom_plan"),
        (await create_pool(database_url), "auto"),
    ):
        try:
            assert (await made.fetchval("SHOW plan_cache_mode"), await made.fetchval("SHOW jit")) == (mode, "off")
        finally:
            await made.close()


async def test_connections_and_pools_run_without_jit(database_url: str) -> None:
    """Decision 123: JIT compilation costs more than carebank's statements take to run."""
    conn = await connect(database_url)
    try:
        assert await conn.fetchval("SHOW jit") == "off"
    finally:
        await conn.close()
    pool = await create_pool(database_url, max_size=1)
    try:
        assert await pool.fetchval("SHOW jit") == "off"
    finally:
        await pool.close()
