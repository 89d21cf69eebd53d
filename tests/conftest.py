"""Fixtures: real PostgreSQL and Redis, a fresh database per test, the app under test."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from infra.db import connect, create_pool, migrate_url
from infra.settings import Settings
from services.app import create_app
from services.common.ids import new_id
from tests.servers import Servers, resolve_servers

JWT_SECRET = "test-signing-secret-" + "x" * 24


def with_database(url: str, name: str) -> str:
    """The same server URL pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    with resolve_servers() as resolved:
        yield resolved


@pytest.fixture(scope="session")
async def template_database(servers: Servers) -> AsyncIterator[str]:
    """A migrated database that every test's database is copied from."""
    name = f"carebank_template_{os.getpid()}"
    admin = await asyncpg.connect(servers.database_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await admin.execute(f'CREATE DATABASE "{name}"')
        await migrate_url(with_database(servers.database_url, name))
        yield name
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def database_url(servers: Servers, template_database: str) -> AsyncIterator[str]:
    """A database of this test's own, migrated, dropped afterwards."""
    name = f"carebank_t_{new_id().hex[-20:]}"
    admin = await asyncpg.connect(servers.database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
        yield with_database(servers.database_url, name)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
def settings(servers: Servers, database_url: str) -> Settings:
    return Settings(
        env="test",
        database_url=database_url,
        redis_url=servers.redis_url,
        jwt_secret=JWT_SECRET,
        redis_namespace=f"test-{new_id().hex}",
        auth_rate_limit_per_minute=100_000,
        db_pool_max=4,
        argon2_profile="CHEAPEST",
    )


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """The test's own connection, for seeding and for checking what was written."""
    conn = await connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the test's database, for running worker jobs as the worker would."""
    made = await create_pool(database_url, max_size=2)
    yield made
    await made.close()
