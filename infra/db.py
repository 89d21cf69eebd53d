"""PostgreSQL access: the asyncpg pool, JSON codecs, and the migration runner."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import asyncpg
import msgspec

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Any constant works; it only has to be the same for every process of this installation.
_MIGRATION_LOCK_KEY = 0x0CA7EBA4C
_MIGRATION_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")

Pool = asyncpg.Pool
Connection = asyncpg.Connection


class MigrationError(RuntimeError):
    """A migration cannot be applied, or an applied one was edited afterwards."""


@dataclass(frozen=True)
class Migration:
    """One numbered SQL file."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


# Sent when each connection starts (decision 123). JIT compilation costs about 100 ms a statement
# here, more than most of carebank's statements take to run: the planner's cost of a batched
# statement (a reconciliation batch's bank facts, 5,000 visits) passes `jit_above_cost` although
# it runs in tens of milliseconds.
SERVER_SETTINGS = {"jit": "off"}


async def _init_connection(conn: asyncpg.Connection) -> None:
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(kind, schema="pg_catalog", encoder=_encode_json, decoder=msgspec.json.decode)


def _encode_json(value: object) -> str:
    return msgspec.json.encode(value).decode()


async def connect(url: str) -> asyncpg.Connection:
    """One connection with the project's codecs (for CLI commands and tests)."""
    conn = await asyncpg.connect(url, server_settings=SERVER_SETTINGS)
    await _init_connection(conn)
    return conn


# For a pool whose statements must never run on a plan made for other data (decision 157): each
# execution is planned with its own parameters and the tables' current sizes, at a millisecond or two.
CUSTOM_PLANS = {"plan_cache_mode": "force_custom_plan"}


async def create_pool(url: str, *, min_size: int = 1, max_size: int = 10, custom_plans: bool = False) -> asyncpg.Pool:
    """The service's pool; every connection gets the JSON codecs (and, with `custom_plans`, plans made
    for each execution, never a cached generic one)."""
    pool = await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        command_timeout=60,
        server_settings={**SERVER_SETTINGS, **CUSTOM_PLANS} if custom_plans else SERVER_SETTINGS,
    )
    assert pool is not None
    return pool


@asynccontextmanager
async def acquire(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection, typed as the Connection it behaves as (the pool hands out a proxy)."""
    async with pool.acquire() as conn:
        yield cast(asyncpg.Connection, conn)


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migration files in version order; a gap or a badly named file is an error."""
    migrations: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_FILE.match(path.name)
        if match is None:
            raise MigrationError(f"migration file name {path.name!r} is not NNNN_name.sql")
        migrations.append(Migration(int(match.group(1)), path.name, path.read_text()))
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise MigrationError(f"expected migration {expected:04d}, found {migration.name}")
    return migrations


async def migrate(conn: asyncpg.Connection, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply pending migrations, each in its own transaction, under an advisory lock.

    Returns the names applied. Raises MigrationError when an applied file no longer matches
    its recorded checksum, so an edited migration stops start-up instead of drifting.
    """
    migrations = load_migrations(directory)
    await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK_KEY)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        applied = {
            row["version"]: row for row in await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
        }
        done: list[str] = []
        for migration in migrations:
            row = applied.get(migration.version)
            if row is not None:
                if row["checksum"] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.name} was edited after it was applied "
                        f"(recorded checksum {row['checksum'][:12]}…, file now "
                        f"{migration.checksum[:12]}…); add a new migration instead"
                    )
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            done.append(migration.name)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK_KEY)


async def migrate_url(url: str) -> list[str]:
    """Open a connection, migrate, close."""
    conn = await connect(url)
    try:
        return await migrate(conn)
    finally:
        await conn.close()
