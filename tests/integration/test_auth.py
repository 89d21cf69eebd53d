"""Tokens: issued for a right secret, refused (401) when missing, expired, tampered or foreign."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import jwt
import msgspec
import pytest
from litestar.testing import AsyncTestClient

from infra.settings import Settings
from services.app import AUTH_COOKIE, create_app
from services.identity.issue import issue_credential
from services.identity.rules import Binding, SecretHasher
from tests.conftest import JWT_SECRET
from tests.support import Client, admin_headers, bearer


async def _admin_secret(db: asyncpg.Connection) -> tuple[str, str]:
    made = await issue_credential(db, SecretHasher.for_profile("CHEAPEST"), Binding("admin", None, None, None), "t")
    return made.client_id, made.client_secret


async def test_token_is_issued_for_15_minutes(client: Client, db: asyncpg.Connection) -> None:
    client_id, secret = await _admin_secret(db)
    response = await client.post("/v1/auth/token", json={"client_id": client_id, "client_secret": secret})
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    claims = jwt.decode(body["access_token"], JWT_SECRET, algorithms=["HS256"])
    assert claims["sub"] == client_id
    assert 895 <= claims["exp"] - time.time() <= 901
    assert (await client.get("/v1/tenants", headers=bearer(body["access_token"]))).status_code == 200


@pytest.mark.parametrize(
    "client_id",
    ["adm_000000000000000000000000", "cb_" + "0" * 32 + "_" + "0" * 16, "nonsense", "x" * 200],
)
async def test_unknown_or_malformed_client_is_401(client: Client, client_id: str) -> None:
    response = await client.post("/v1/auth/token", json={"client_id": client_id, "client_secret": "whatever"})
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_credentials"


async def test_wrong_secret_is_401(client: Client, db: asyncpg.Connection) -> None:
    client_id, secret = await _admin_secret(db)
    response = await client.post("/v1/auth/token", json={"client_id": client_id, "client_secret": secret + "x"})
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")


def _forge(claims: dict[str, object], secret: str = JWT_SECRET) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


async def test_missing_expired_tampered_and_foreign_tokens_are_401(client: Client, db: asyncpg.Connection) -> None:
    headers = await admin_headers(client, db)
    good = headers["Authorization"].removeprefix("Bearer ")
    claims = jwt.decode(good, JWT_SECRET, algorithms=["HS256"])
    now = datetime.now(tz=UTC)
    expired = _forge(
        {
            **claims,
            "iat": int((now - timedelta(hours=1)).timestamp()),
            "exp": int((now - timedelta(minutes=1)).timestamp()),
        }
    )
    foreign = _forge(claims, secret="another-installations-secret-0123456789")
    head, payload, signature = good.split(".")
    raised = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    raised["extras"]["role"] = "commissioner"
    raised["extras"]["tenant_id"] = "01936f3e-5a4b-7c8d-9e0f-112233445566"
    tampered_payload = base64.urlsafe_b64encode(json.dumps(raised).encode()).decode().rstrip("=")
    tampered = f"{head}.{tampered_payload}.{signature}"
    for label, auth in [
        ("missing", {}),
        ("garbage", {"Authorization": "Bearer not-a-jwt"}),
        ("expired", bearer(expired)),
        ("foreign", bearer(foreign)),
        ("tampered", bearer(tampered)),
    ]:
        response = await client.get("/v1/tenants", headers=auth)
        assert response.status_code == 401, label
        assert response.json()["code"] == "unauthorized", label
    assert (await client.get("/v1/tenants", headers=headers)).status_code == 200


async def test_token_with_unknown_role_claim_is_401(client: Client) -> None:
    now = int(time.time())
    forged = _forge({"sub": "adm_x", "iat": now, "exp": now + 60, "extras": {"role": "superuser"}})
    assert (await client.get("/v1/tenants", headers=bearer(forged))).status_code == 401


async def test_cookie_carries_the_token_too(client: Client, db: asyncpg.Connection) -> None:
    token = (await admin_headers(client, db))["Authorization"].removeprefix("Bearer ")
    client.cookies.set(AUTH_COOKIE, f"Bearer {token}")
    try:
        assert (await client.get("/v1/tenants")).status_code == 200
    finally:
        client.cookies.clear()


async def test_token_endpoint_is_rate_limited(settings: Settings, db: asyncpg.Connection) -> None:
    limited = msgspec.structs.replace(settings, auth_rate_limit_per_minute=3)
    async with AsyncTestClient(app=create_app(limited)) as client:
        statuses = [
            (await client.post("/v1/auth/token", json={"client_id": "nonsense", "client_secret": "x"})).status_code
            for _ in range(5)
        ]
        assert statuses[:3] == [401, 401, 401]
        assert statuses[3:] == [429, 429]
        last = await client.post("/v1/auth/token", json={"client_id": "nonsense", "client_secret": "x"})
        assert last.json()["code"] == "rate_limited"
        # other endpoints are not limited by the token bucket
        assert (await client.get("/healthz")).status_code == 200


async def test_secrets_never_reach_the_logs(
    client: Client, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    client_id, secret = await _admin_secret(db)
    await client.post("/v1/auth/token", json={"client_id": client_id, "client_secret": secret})
    await client.post("/v1/auth/token", json={"client_id": client_id, "client_secret": secret + "wrong"})
    made = await client.post("/v1/credentials", json={"role": "admin"}, headers=await admin_headers(client, db))
    logged = caplog.text
    assert '"path": "/v1/auth/token"' in logged  # the access log did run
    assert secret not in logged
    assert made.json()["client_secret"] not in logged
