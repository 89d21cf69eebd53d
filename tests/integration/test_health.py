"""Health, metrics, OpenAPI, request ids, and what keeps working while Redis is away."""

from __future__ import annotations

import asyncpg
import msgspec
from litestar.testing import AsyncTestClient

from infra.settings import Settings
from services.app import create_app
from tests.support import Client, admin_headers, create

# Nothing listens on port 1 of the loopback: a Redis that is down.
DEAD_REDIS = "redis://127.0.0.1:1/0"


async def test_healthz_and_readyz(client: Client) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "postgres": "ok", "redis": "ok"}


async def test_metrics_and_openapi_are_public(client: Client) -> None:
    await client.get("/healthz")
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200
    assert "carebank_requests_total" in metrics.text
    schema = (await client.get("/schema/openapi.json")).json()
    assert "/v1/auth/token" in schema["paths"]
    assert "/v1/contracts" in schema["paths"]


async def test_request_id_is_echoed_or_made(client: Client) -> None:
    given = await client.get("/healthz", headers={"X-Request-ID": "trace-123"})
    assert given.headers["x-request-id"] == "trace-123"
    unsafe = await client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
    assert unsafe.headers["x-request-id"] != "bad id\twith spaces"
    assert len(unsafe.headers["x-request-id"]) == 32


async def test_unknown_path_and_method_are_problems(client: Client, db: asyncpg.Connection) -> None:
    headers = await admin_headers(client, db)
    missing = await client.get("/v1/nowhere", headers=headers)
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    wrong = await client.delete("/v1/tenants", headers=headers)
    assert wrong.status_code == 405
    assert wrong.json()["code"] == "method_not_allowed"


async def test_without_redis_auth_and_catalog_work_and_readyz_says_so(
    settings: Settings, db: asyncpg.Connection
) -> None:
    no_redis = msgspec.structs.replace(settings, redis_url=DEAD_REDIS, auth_rate_limit_per_minute=2)
    async with AsyncTestClient(app=create_app(no_redis)) as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json() == {"status": "degraded", "postgres": "ok", "redis": "unreachable"}
        admin = await admin_headers(client, db)  # token issuance through the fail-open limiter
        for _ in range(3):  # past the limit: with no counter store the limiter lets requests by
            again = await client.post("/v1/auth/token", json={"client_id": "nonsense", "client_secret": "x"})
            assert again.status_code == 401
        tenant = await create(client, admin, "/v1/tenants", {"name": "Still working"})
        assert tenant["name"] == "Still working"


async def test_refused_and_unknown_requests_still_get_a_request_id(client: Client) -> None:
    unauthenticated = await client.get("/v1/tenants")
    assert unauthenticated.status_code == 401
    assert len(unauthenticated.headers["x-request-id"]) == 32
    unknown = await client.get("/nowhere")
    assert unknown.status_code == 404
    assert "x-request-id" in unknown.headers
