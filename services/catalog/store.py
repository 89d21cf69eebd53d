"""Catalog SQL. Every query takes the tenant and filters by it; provider scoping is explicit."""

from __future__ import annotations

from uuid import UUID

import asyncpg
import msgspec

from schemas.catalog import (
    Banking,
    Carer,
    Contract,
    ContractCreate,
    Location,
    PayRules,
    Person,
    Provider,
    Rates,
)


def _provider(row: asyncpg.Record) -> Provider:
    return Provider(id=row["id"], code=row["code"], name=row["name"], created_at=row["created_at"])


async def insert_provider(
    conn: asyncpg.Connection, tenant_id: UUID, provider_id: UUID, code: str, name: str
) -> Provider:
    row = await conn.fetchrow(
        """INSERT INTO providers (tenant_id, id, code, name) VALUES ($1, $2, $3, $4)
           RETURNING id, code, name, created_at""",
        tenant_id,
        provider_id,
        code,
        name,
    )
    assert row is not None
    return _provider(row)


async def get_provider(conn: asyncpg.Connection, tenant_id: UUID, provider_id: UUID) -> Provider | None:
    row = await conn.fetchrow(
        "SELECT id, code, name, created_at FROM providers WHERE tenant_id = $1 AND id = $2",
        tenant_id,
        provider_id,
    )
    return _provider(row) if row else None


async def list_providers(conn: asyncpg.Connection, tenant_id: UUID, after: UUID | None, limit: int) -> list[Provider]:
    rows = await conn.fetch(
        """SELECT id, code, name, created_at FROM providers
           WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3""",
        tenant_id,
        after,
        limit,
    )
    return [_provider(row) for row in rows]


_CARER_COLUMNS = "id, provider_id, name, active, created_at"


def _carer(row: asyncpg.Record) -> Carer:
    return Carer(**dict(row))


async def insert_carer(
    conn: asyncpg.Connection, tenant_id: UUID, carer_id: UUID, provider_id: UUID, name: str
) -> Carer:
    row = await conn.fetchrow(
        f"""INSERT INTO carers (tenant_id, id, provider_id, name) VALUES ($1, $2, $3, $4)
            RETURNING {_CARER_COLUMNS}""",
        tenant_id,
        carer_id,
        provider_id,
        name,
    )
    assert row is not None
    return _carer(row)


async def get_carer(conn: asyncpg.Connection, tenant_id: UUID, carer_id: UUID) -> Carer | None:
    row = await conn.fetchrow(
        f"SELECT {_CARER_COLUMNS} FROM carers WHERE tenant_id = $1 AND id = $2", tenant_id, carer_id
    )
    return _carer(row) if row else None


async def list_carers(
    conn: asyncpg.Connection, tenant_id: UUID, provider_id: UUID | None, after: UUID | None, limit: int
) -> list[Carer]:
    """Carers of the tenant, or of one provider when `provider_id` is given."""
    rows = await conn.fetch(
        f"""SELECT {_CARER_COLUMNS} FROM carers
            WHERE tenant_id = $1 AND ($2::uuid IS NULL OR provider_id = $2)
              AND ($3::uuid IS NULL OR id > $3)
            ORDER BY id LIMIT $4""",
        tenant_id,
        provider_id,
        after,
        limit,
    )
    return [_carer(row) for row in rows]


_PERSON_COLUMNS = "id, reference, display_name, lat, lon, geofence_m, tags, phones, active, created_at"


def _person(row: asyncpg.Record) -> Person:
    return Person(
        id=row["id"],
        reference=row["reference"],
        display_name=row["display_name"],
        location=Location(lat=row["lat"], lon=row["lon"]),
        geofence_m=row["geofence_m"],
        tags=list(row["tags"]),
        phones=list(row["phones"]),
        active=row["active"],
        created_at=row["created_at"],
    )


async def insert_person(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    person_id: UUID,
    *,
    reference: str,
    display_name: str,
    location: Location,
    geofence_m: int,
    tags: list[str],
    phones: list[str],
) -> Person:
    row = await conn.fetchrow(
        f"""INSERT INTO people (tenant_id, id, reference, display_name, lat, lon, geofence_m, tags, phones)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {_PERSON_COLUMNS}""",
        tenant_id,
        person_id,
        reference,
        display_name,
        location.lat,
        location.lon,
        geofence_m,
        tags,
        phones,
    )
    assert row is not None
    return _person(row)


async def get_person(conn: asyncpg.Connection, tenant_id: UUID, person_id: UUID) -> Person | None:
    row = await conn.fetchrow(
        f"SELECT {_PERSON_COLUMNS} FROM people WHERE tenant_id = $1 AND id = $2", tenant_id, person_id
    )
    return _person(row) if row else None


async def list_people(conn: asyncpg.Connection, tenant_id: UUID, after: UUID | None, limit: int) -> list[Person]:
    rows = await conn.fetch(
        f"""SELECT {_PERSON_COLUMNS} FROM people
            WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3""",
        tenant_id,
        after,
        limit,
    )
    return [_person(row) for row in rows]


async def update_person(conn: asyncpg.Connection, tenant_id: UUID, person: Person) -> Person:
    """Write back every changeable field of `person`."""
    row = await conn.fetchrow(
        f"""UPDATE people SET display_name = $3, lat = $4, lon = $5, geofence_m = $6, tags = $7,
                   phones = $8, active = $9, updated_at = now()
            WHERE tenant_id = $1 AND id = $2 RETURNING {_PERSON_COLUMNS}""",
        tenant_id,
        person.id,
        person.display_name,
        person.location.lat,
        person.location.lon,
        person.geofence_m,
        person.tags,
        person.phones,
        person.active,
    )
    assert row is not None
    return _person(row)


_CONTRACT_COLUMNS = "id, provider_id, model, period, rates, pay_rules, banking, valid_from, valid_to, created_at"


def _contract(row: asyncpg.Record) -> Contract:
    return Contract(
        id=row["id"],
        provider_id=row["provider_id"],
        model=row["model"],
        period=row["period"],
        rates=msgspec.convert(row["rates"], Rates),
        pay_rules=msgspec.convert(row["pay_rules"], PayRules),
        banking=msgspec.convert(row["banking"], Banking),
        valid_from=row["valid_from"],
        valid_to=row["valid_to"],
        created_at=row["created_at"],
    )


async def insert_contract(
    conn: asyncpg.Connection, tenant_id: UUID, contract_id: UUID, data: ContractCreate
) -> Contract:
    row = await conn.fetchrow(
        f"""INSERT INTO contracts
                (tenant_id, id, provider_id, model, period, rates, pay_rules, banking, valid_from, valid_to)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {_CONTRACT_COLUMNS}""",
        tenant_id,
        contract_id,
        data.provider_id,
        data.model,
        data.period,
        msgspec.to_builtins(data.rates),
        msgspec.to_builtins(data.pay_rules),
        msgspec.to_builtins(data.banking),
        data.valid_from,
        data.valid_to,
    )
    assert row is not None
    return _contract(row)


async def get_contract(conn: asyncpg.Connection, tenant_id: UUID, contract_id: UUID) -> Contract | None:
    row = await conn.fetchrow(
        f"SELECT {_CONTRACT_COLUMNS} FROM contracts WHERE tenant_id = $1 AND id = $2", tenant_id, contract_id
    )
    return _contract(row) if row else None


async def list_contracts(
    conn: asyncpg.Connection, tenant_id: UUID, provider_id: UUID | None, after: UUID | None, limit: int
) -> list[Contract]:
    rows = await conn.fetch(
        f"""SELECT {_CONTRACT_COLUMNS} FROM contracts
            WHERE tenant_id = $1 AND ($2::uuid IS NULL OR provider_id = $2)
              AND ($3::uuid IS NULL OR id > $3)
            ORDER BY id LIMIT $4""",
        tenant_id,
        provider_id,
        after,
        limit,
    )
    return [_contract(row) for row in rows]


async def carers_of_provider(
    conn: asyncpg.Connection, tenant_id: UUID, provider_id: UUID, carer_ids: list[UUID]
) -> set[UUID]:
    """Which of these carers belong to the provider (and are active)."""
    rows = await conn.fetch(
        """SELECT id FROM carers
           WHERE tenant_id = $1 AND provider_id = $2 AND id = ANY($3::uuid[]) AND active""",
        tenant_id,
        provider_id,
        carer_ids,
    )
    return {row["id"] for row in rows}


async def get_people(conn: asyncpg.Connection, tenant_id: UUID, person_ids: list[UUID]) -> dict[UUID, Person]:
    rows = await conn.fetch(
        f"SELECT {_PERSON_COLUMNS} FROM people WHERE tenant_id = $1 AND id = ANY($2::uuid[])", tenant_id, person_ids
    )
    return {row["id"]: _person(row) for row in rows}
