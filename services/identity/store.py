"""Identity SQL: tenants and credentials. Every tenant query is filtered by tenant_id."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from schemas.identity import Role, Tenant, TenantCreate

_TENANT_COLUMNS = "tenant_id AS id, name, zone, holiday_region, currency, max_event_age_days, created_at"


def _tenant(row: asyncpg.Record) -> Tenant:
    return Tenant(**dict(row))


async def insert_tenant(conn: asyncpg.Connection, tenant_id: UUID, data: TenantCreate) -> Tenant:
    row = await conn.fetchrow(
        f"""INSERT INTO tenants (tenant_id, name, zone, holiday_region, currency, max_event_age_days)
            VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_TENANT_COLUMNS}""",
        tenant_id,
        data.name,
        data.zone,
        data.holiday_region,
        data.currency,
        data.max_event_age_days,
    )
    assert row is not None
    return _tenant(row)


async def get_tenant(conn: asyncpg.Connection, tenant_id: UUID) -> Tenant | None:
    row = await conn.fetchrow(f"SELECT {_TENANT_COLUMNS} FROM tenants WHERE tenant_id = $1", tenant_id)
    return _tenant(row) if row else None


async def list_tenants(conn: asyncpg.Connection, after: UUID | None, limit: int) -> list[Tenant]:
    rows = await conn.fetch(
        f"""SELECT {_TENANT_COLUMNS} FROM tenants
            WHERE ($1::uuid IS NULL OR tenant_id > $1) ORDER BY tenant_id LIMIT $2""",
        after,
        limit,
    )
    return [_tenant(row) for row in rows]


async def insert_admin_credential(conn: asyncpg.Connection, client_id: str, secret_hash: str) -> None:
    await conn.execute("INSERT INTO admin_credentials (client_id, secret_hash) VALUES ($1, $2)", client_id, secret_hash)


async def insert_credential(
    conn: asyncpg.Connection,
    *,
    tenant_id: UUID,
    client_id: str,
    secret_hash: str,
    role: Role,
    provider_id: UUID | None,
    carer_id: UUID | None,
    created_by: str,
) -> None:
    await conn.execute(
        """INSERT INTO credentials
               (tenant_id, client_id, secret_hash, role, provider_id, carer_id, created_by)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        tenant_id,
        client_id,
        secret_hash,
        role,
        provider_id,
        carer_id,
        created_by,
    )


async def find_admin_credential(conn: asyncpg.Connection, client_id: str) -> str | None:
    """The secret hash of an admin credential, if it exists."""
    value = await conn.fetchval("SELECT secret_hash FROM admin_credentials WHERE client_id = $1", client_id)
    return str(value) if value is not None else None


async def find_credential(conn: asyncpg.Connection, tenant_id: UUID, client_id: str) -> asyncpg.Record | None:
    """A tenant credential: secret hash, role, provider and carer."""
    return await conn.fetchrow(
        """SELECT client_id, secret_hash, role, provider_id, carer_id FROM credentials
           WHERE tenant_id = $1 AND client_id = $2""",
        tenant_id,
        client_id,
    )
