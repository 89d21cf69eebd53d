"""The two-tenant world builds through the API alone."""

from __future__ import annotations

import asyncpg

from tests.support import Client, build_world, count


async def test_world_builds(client: Client, db: asyncpg.Connection) -> None:
    world = await build_world(client, db)
    assert world.a.tenant_id != world.b.tenant_id
    assert await count(db, "providers") == 4
    assert await count(db, "credentials") == 2 * (1 + 2 + 2)
