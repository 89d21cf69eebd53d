"""DOMAIN.md's role table, endpoint by endpoint: allowed, 403 for other roles, 404 out of reach."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg
import pytest

from tests.support import RATES, Client, World, build_world

Body = Callable[[World], dict[str, Any]] | None
# (method, path template, body, roles that may call it)
ENDPOINTS: list[tuple[str, str, Body, set[str]]] = [
    ("POST", "/v1/tenants", lambda w: {"name": "New council"}, {"admin"}),
    ("GET", "/v1/tenants", None, {"admin"}),
    ("GET", "/v1/tenants/{a.tenant_id}", None, {"admin"}),
    ("POST", "/v1/providers", lambda w: {"code": "NEW1", "name": "New agency"}, {"commissioner"}),
    ("GET", "/v1/providers", None, {"commissioner"}),
    ("GET", "/v1/providers/{a.providers[0]}", None, {"commissioner"}),
    (
        "POST",
        "/v1/carers",
        lambda w: {"name": "New carer", "provider_id": w.a.providers[0]},
        {"commissioner", "provider"},
    ),
    ("GET", "/v1/carers", None, {"commissioner", "provider"}),
    ("GET", "/v1/carers/{a.carers[0]}", None, {"commissioner", "provider"}),
    (
        "POST",
        "/v1/people",
        lambda w: {"reference": "P-NEW", "display_name": "New", "location": {"lat": 54.0, "lon": -2.8}},
        {"commissioner"},
    ),
    ("GET", "/v1/people", None, {"commissioner"}),
    ("GET", "/v1/people/{a.person_id}", None, {"commissioner"}),
    ("PATCH", "/v1/people/{a.person_id}", lambda w: {"geofence_m": 150}, {"commissioner"}),
    (
        "POST",
        "/v1/contracts",
        lambda w: {
            "provider_id": w.a.providers[0],
            "model": "outcome_based",
            "period": "month",
            "rates": RATES,
            "valid_from": "2026-02-01",
        },
        {"commissioner"},
    ),
    ("GET", "/v1/contracts", None, {"commissioner"}),
    ("GET", "/v1/contracts/{a.contracts[0]}", None, {"commissioner"}),
]
ROLES = ["admin", "commissioner", "provider", "carer"]


def headers_of(world: World, role: str) -> dict[str, str]:
    return {
        "admin": world.admin,
        "commissioner": world.a.commissioner,
        "provider": world.a.provider_headers[0],
        "carer": world.a.carer_headers[0],
    }[role]


@pytest.fixture
async def world(client: Client, db: asyncpg.Connection) -> World:
    return await build_world(client, db)


async def test_role_matrix(client: Client, world: World) -> None:
    failures = []
    for method, template, body, allowed in ENDPOINTS:
        path = template.format(a=world.a)
        for role in ROLES:
            response = await client.request(
                method, path, json=body(world) if body else None, headers=headers_of(world, role)
            )
            expected = "2xx" if role in allowed else "403"
            ok = response.is_success if role in allowed else response.status_code == 403
            if not ok:
                failures.append(f"{role} {method} {path}: expected {expected}, got {response.status_code}")
            if role not in allowed:
                assert response.headers["content-type"].startswith("application/problem+json")
                assert response.json()["code"] == "forbidden"
    assert not failures, "\n".join(failures)


async def test_carer_may_not_create_credentials(client: Client, world: World) -> None:
    response = await client.post(
        "/v1/credentials",
        json={"role": "carer", "carer_id": world.a.carers[0]},
        headers=world.a.carer_headers[0],
    )
    assert response.status_code == 403


@pytest.mark.parametrize(
    "path",
    [
        "/v1/providers/{b.providers[0]}",
        "/v1/people/{b.person_id}",
        "/v1/contracts/{b.contracts[0]}",
        "/v1/carers/{b.carers[0]}",
    ],
)
async def test_another_tenants_rows_are_404(client: Client, world: World, path: str) -> None:
    response = await client.get(path.format(b=world.b), headers=world.a.commissioner)
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


async def test_lists_never_show_another_tenant(client: Client, world: World) -> None:
    for path, ids_a, ids_b in [
        ("/v1/providers", world.a.providers, world.b.providers),
        ("/v1/carers", world.a.carers, world.b.carers),
        ("/v1/contracts", world.a.contracts, world.b.contracts),
        ("/v1/people", [world.a.person_id], [world.b.person_id]),
    ]:
        response = await client.get(path, headers=world.a.commissioner)
        seen = {item["id"] for item in response.json()["items"]}
        assert seen == set(ids_a), path
        assert not seen & set(ids_b), path


async def test_patching_another_tenants_person_is_404_and_changes_nothing(
    client: Client, world: World, db: asyncpg.Connection
) -> None:
    response = await client.patch(
        f"/v1/people/{world.b.person_id}", json={"geofence_m": 5}, headers=world.a.commissioner
    )
    assert response.status_code == 404
    assert await db.fetchval("SELECT geofence_m FROM people WHERE id = $1", world.b.person_id) == 100


async def test_referencing_another_tenants_provider_is_404(client: Client, world: World) -> None:
    contract = {
        "provider_id": world.b.providers[0],
        "model": "time_and_task",
        "period": "week",
        "rates": RATES,
        "valid_from": "2026-01-05",
    }
    assert (await client.post("/v1/contracts", json=contract, headers=world.a.commissioner)).status_code == 404
    carer = {"name": "x", "provider_id": world.b.providers[0]}
    assert (await client.post("/v1/carers", json=carer, headers=world.a.commissioner)).status_code == 404


async def test_provider_sees_only_its_own_carers(client: Client, world: World) -> None:
    own = world.a.provider_headers[0]
    listed = await client.get("/v1/carers", headers=own)
    assert {item["id"] for item in listed.json()["items"]} == {world.a.carers[0]}
    assert (await client.get(f"/v1/carers/{world.a.carers[1]}", headers=own)).status_code == 404
    other = await client.get("/v1/carers", params={"provider_id": world.a.providers[1]}, headers=own)
    assert other.status_code == 404
    made = await client.post("/v1/carers", json={"name": "x", "provider_id": world.a.providers[1]}, headers=own)
    assert made.status_code == 404
    mine = await client.post("/v1/carers", json={"name": "Mine"}, headers=own)
    assert mine.status_code == 201
    assert mine.json()["provider_id"] == world.a.providers[0]


async def test_credential_reach(client: Client, world: World) -> None:
    commissioner, provider = world.a.commissioner, world.a.provider_headers[0]
    cases = [
        (commissioner, {"role": "admin"}, 403),
        (commissioner, {"role": "commissioner", "tenant_id": world.b.tenant_id}, 404),
        (commissioner, {"role": "provider", "provider_id": world.b.providers[0]}, 404),
        (commissioner, {"role": "carer", "carer_id": world.b.carers[0]}, 404),
        (provider, {"role": "provider", "provider_id": world.a.providers[0]}, 403),
        (provider, {"role": "carer", "carer_id": world.a.carers[1]}, 404),
        (
            provider,
            {"role": "carer", "carer_id": world.a.carers[0], "provider_id": world.a.providers[1]},
            404,
        ),
        (commissioner, {"role": "provider"}, 422),
        (commissioner, {"role": "commissioner", "carer_id": world.a.carers[0]}, 422),
        (world.admin, {"role": "commissioner"}, 422),
        (world.admin, {"role": "admin", "tenant_id": world.a.tenant_id}, 422),
    ]
    for headers, body, status in cases:
        response = await client.post("/v1/credentials", json=body, headers=headers)
        assert response.status_code == status, (body, response.text)
    allowed = [
        (world.admin, {"role": "admin"}),
        (world.admin, {"role": "carer", "tenant_id": world.b.tenant_id, "carer_id": world.b.carers[1]}),
        (commissioner, {"role": "carer", "carer_id": world.a.carers[1]}),
        (provider, {"role": "carer", "carer_id": world.a.carers[0]}),
    ]
    for headers, body in allowed:
        response = await client.post("/v1/credentials", json=body, headers=headers)
        assert response.status_code == 201, (body, response.text)
        assert response.json()["client_secret"]


async def test_carer_credential_is_bound_to_its_provider(client: Client, world: World) -> None:
    made = await client.post(
        "/v1/credentials",
        json={"role": "carer", "carer_id": world.a.carers[1]},
        headers=world.a.commissioner,
    )
    assert made.json()["provider_id"] == world.a.providers[1]
