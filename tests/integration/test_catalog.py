"""The catalog over HTTP: defaults filled in, field rules as 422 naming the field, pages, replays."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg
import jwt
import pytest

from tests.support import RATES, Client, admin_headers, count, create, credential_headers


@pytest.fixture
async def commissioner(client: Client, db: asyncpg.Connection) -> dict[str, str]:
    admin = await admin_headers(client, db)
    tenant = await create(client, admin, "/v1/tenants", {"name": "Lancashire"})
    return await credential_headers(client, admin, {"role": "commissioner", "tenant_id": tenant["id"]})


@pytest.fixture
async def provider_id(client: Client, commissioner: dict[str, str]) -> str:
    return str((await create(client, commissioner, "/v1/providers", {"code": "ACME", "name": "Acme Care"}))["id"])


def contract_body(provider_id: str, **changes: Any) -> dict[str, Any]:
    return {
        "provider_id": provider_id,
        "model": "outcome_based",
        "period": "week",
        "rates": RATES,
        "valid_from": "2026-01-05",
        **changes,
    }


def person_body(**changes: Any) -> dict[str, Any]:
    return {"reference": "P-1", "display_name": "Ann", "location": {"lat": 53.76, "lon": -2.70}, **changes}


async def test_contract_gets_domain_defaults(client: Client, commissioner: dict[str, str], provider_id: str) -> None:
    made = await create(client, commissioner, "/v1/contracts", contract_body(provider_id, pay_rules={"grace_min": 3}))
    assert made["pay_rules"] == {
        "grace_min": 3,
        "rounding_unit_min": 1,
        "rounding_mode": "nearest",
        "minimum_min": 0,
        "cap_at_planned": True,
        "late_after_min": 15,
        "missed_after_min": 60,
        "settle_h": 24,
        "cancellation_notice_h": 24,
        "short_notice_pay_pct": 100,
        "min_bankable_min": 5,
        "auto_approve_min": 0,
    }
    assert made["banking"] == {"expiry_weeks": 12, "cap_min": 1200, "expiry_action": "credit_note"}
    assert made["rates"] == RATES
    again = await client.get(f"/v1/contracts/{made['id']}", headers=commissioner)
    assert again.json() == made


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/contracts", lambda p: contract_body(p, rates={**RATES, "night": -1}), "rates.night"),
        (
            "/v1/contracts",
            lambda p: contract_body(p, pay_rules={"rounding_mode": "sideways"}),
            "pay_rules.rounding_mode",
        ),
        (
            "/v1/contracts",
            lambda p: contract_body(p, pay_rules={"short_notice_pay_pct": 101}),
            "pay_rules.short_notice_pay_pct",
        ),
        (
            "/v1/contracts",
            lambda p: contract_body(p, pay_rules={"late_after_min": 60, "missed_after_min": 30}),
            "pay_rules.missed_after_min",
        ),
        (
            "/v1/contracts",
            lambda p: contract_body(p, banking={"expiry_action": "burn"}),
            "banking.expiry_action",
        ),
        ("/v1/contracts", lambda p: contract_body(p, valid_to="2025-01-01"), "valid_to"),
        ("/v1/contracts", lambda p: contract_body(p, valid_from="2026-02-30"), "valid_from"),
        ("/v1/people", lambda p: person_body(geofence_m=0), "geofence_m"),
        ("/v1/people", lambda p: person_body(location={"lat": 95, "lon": 0}), "location.lat"),
        ("/v1/people", lambda p: person_body(phones=["12"]), "phones[0]"),
        ("/v1/people", lambda p: person_body(phones=["01632 96x"]), "phones[0]"),
        ("/v1/people", lambda p: person_body(tags=["  "]), "tags[0]"),
        ("/v1/providers", lambda p: {"code": "lower case", "name": "x"}, "code"),
        ("/v1/providers", lambda p: {"code": "OK", "name": ""}, "name"),
    ],
)
async def test_rule_breaking_fields_are_422_and_named(
    client: Client,
    db: asyncpg.Connection,
    commissioner: dict[str, str],
    provider_id: str,
    path: str,
    body: Any,
    field: str,
) -> None:
    before = {table: await count(db, table) for table in ("contracts", "people", "providers")}
    response = await client.post(path, json=body(provider_id), headers=commissioner)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["code"] == "validation_failed"
    assert problem["status"] == 422
    assert {"type", "title", "detail"} <= problem.keys()
    assert field in [error["field"] for error in problem["errors"]]
    assert {table: await count(db, table) for table in before} == before


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (b'{"code": "X1", "name": ', 400, "malformed_body"),
        (b"not json at all", 400, "malformed_body"),
        (b"[]", 400, "validation_failed"),
        (b'{"code": 12, "name": "x"}', 400, "validation_failed"),
        (b'{"name": "x"}', 400, "validation_failed"),
        (b'{"code": "X1", "name": "x", "extra": 1}', 400, "validation_failed"),
        (b'{"code": "X1", "name": "' + b"x" * 3_000_000 + b'"}', 413, "payload_too_large"),
    ],
)
async def test_malformed_bodies_are_4xx_and_write_nothing(
    client: Client, db: asyncpg.Connection, commissioner: dict[str, str], raw: bytes, status: int, code: str
) -> None:
    before = await count(db, "providers")
    response = await client.post(
        "/v1/providers", content=raw, headers={**commissioner, "content-type": "application/json"}
    )
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code
    assert await count(db, "providers") == before


async def test_person_phones_are_e164_and_patch_changes_only_what_is_given(
    client: Client, commissioner: dict[str, str]
) -> None:
    made = await create(
        client,
        commissioner,
        "/v1/people",
        person_body(phones=["01772 254868", "+44 1772 254868"], tags=[" T1 ", "T1", "T2"]),
    )
    assert made["phones"] == ["+441772254868"]
    assert made["tags"] == ["T1", "T2"]
    assert made["geofence_m"] == 100
    patched = await client.patch(
        f"/v1/people/{made['id']}", json={"geofence_m": 150, "phones": ["07911 123456"]}, headers=commissioner
    )
    assert patched.status_code == 200
    assert patched.json() == {**made, "geofence_m": 150, "phones": ["+447911123456"]}


async def test_duplicate_codes_and_references_are_409(
    client: Client, commissioner: dict[str, str], provider_id: str
) -> None:
    again = await client.post("/v1/providers", json={"code": "ACME", "name": "Other"}, headers=commissioner)
    assert again.status_code == 409
    await create(client, commissioner, "/v1/people", person_body())
    assert (await client.post("/v1/people", json=person_body(), headers=commissioner)).status_code == 409


async def test_cursor_pagination_walks_every_row_once(client: Client, commissioner: dict[str, str]) -> None:
    made = [
        (await create(client, commissioner, "/v1/providers", {"code": f"P{i}", "name": f"Agency {i}"}))["id"]
        for i in range(5)
    ]
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/v1/providers", params=params, headers=commissioner)).json()
        seen += [item["id"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == made
    assert pages == 3
    bad = await client.get("/v1/providers", params={"cursor": "!!!"}, headers=commissioner)
    assert bad.status_code == 422
    assert (await client.get("/v1/providers", params={"limit": 0}, headers=commissioner)).status_code in (
        400,
        422,
    )
    assert (await client.get("/v1/providers", params={"limit": 501}, headers=commissioner)).status_code in (
        400,
        422,
    )


async def test_idempotency_key_replays_the_first_answer(
    client: Client, db: asyncpg.Connection, commissioner: dict[str, str]
) -> None:
    headers = {**commissioner, "Idempotency-Key": "create-acme-1"}
    first = await client.post("/v1/providers", json={"code": "ACME", "name": "Acme"}, headers=headers)
    second = await client.post("/v1/providers", json={"code": "ACME", "name": "Acme"}, headers=headers)
    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert second.headers.get("idempotent-replayed") == "true"
    assert await count(db, "providers") == 1
    different = await client.post("/v1/providers", json={"code": "ACME2", "name": "Acme"}, headers=headers)
    assert different.status_code == 409
    assert different.json()["code"] == "idempotency_key_reused"
    assert await count(db, "providers") == 1


async def test_idempotency_key_is_freed_after_a_refusal(client: Client, commissioner: dict[str, str]) -> None:
    headers = {**commissioner, "Idempotency-Key": "k-2"}
    refused = await client.post("/v1/providers", json={"code": "bad code", "name": "x"}, headers=headers)
    assert refused.status_code == 422
    fixed = await client.post("/v1/providers", json={"code": "GOOD", "name": "x"}, headers=headers)
    assert fixed.status_code == 201


async def test_nul_characters_are_422_and_write_nothing(
    client: Client, db: asyncpg.Connection, commissioner: dict[str, str]
) -> None:
    response = await client.post("/v1/providers", json={"code": "NUL", "name": "bad\u0000name"}, headers=commissioner)
    assert response.status_code == 422
    assert response.json()["errors"][0]["code"] == "nul_character"
    assert await count(db, "providers") == 0


async def test_a_placeholder_left_by_a_dead_request_is_taken_over(
    client: Client, db: asyncpg.Connection, commissioner: dict[str, str]
) -> None:
    token = commissioner["Authorization"].removeprefix("Bearer ")
    claims = jwt.decode(token, options={"verify_signature": False})
    tenant = UUID(claims["extras"]["tenant_id"])
    await db.execute(
        """INSERT INTO idempotency_keys (tenant_id, client_id, key, request_hash, status_code, body, created_at)
           VALUES ($1, $2, 'k-dead', 'h', 0, '', now() - interval '2 minutes')""",
        tenant,
        claims["sub"],
    )
    headers = {**commissioner, "Idempotency-Key": "k-dead"}
    made = await client.post("/v1/providers", json={"code": "LATE", "name": "x"}, headers=headers)
    assert made.status_code == 201, made.text
    again = await client.post("/v1/providers", json={"code": "LATE", "name": "x"}, headers=headers)
    assert again.json() == made.json()
