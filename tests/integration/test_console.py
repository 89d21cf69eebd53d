"""The console over the in-process client: cookie sign-in, CSRF only for cookie-authenticated unsafe
requests (bearer API clients untouched), pages by role, and a provider kept to its own rows."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from services.app import AUTH_COOKIE
from services.console.csrf import CSRF_COOKIE
from services.identity.issue import issue_credential
from services.identity.rules import Binding, SecretHasher
from tests.integration.test_ingest import event
from tests.support import (
    Client,
    TenantWorld,
    World,
    admin_headers,
    build_tenant,
    build_world,
    count,
    create,
    reconciled,
)

_CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


@pytest.fixture
async def world(client: Client, db: asyncpg.Connection) -> World:
    """Two tenants, for the test that needs somebody else's rows in another tenant."""
    client.follow_redirects = False  # the answers themselves are what these tests look at
    return await build_world(client, db)


@pytest.fixture
async def tw(client: Client, db: asyncpg.Connection) -> TenantWorld:
    """One tenant (two providers) is enough for the rest, and half the setup."""
    client.follow_redirects = False
    return await build_tenant(client, await admin_headers(client, db), "Lancashire")


async def csrf_token(client: Client) -> str:
    """What a console page hands its forms (and sets as the CSRF cookie)."""
    response = await client.get("/console/sign-in")
    assert response.status_code == 200
    found = _CSRF_META.search(response.text)
    assert found is not None
    return found.group(1)


async def secret_for(
    db: asyncpg.Connection, role: str, tenant_id: str, provider_id: str | None = None
) -> tuple[str, str]:
    from uuid import UUID

    made = await issue_credential(
        db,
        SecretHasher.for_profile("CHEAPEST"),
        Binding(role, UUID(tenant_id), UUID(provider_id) if provider_id else None, None),  # type: ignore[arg-type]
        created_by="test",
    )
    return made.client_id, made.client_secret


async def sign_in(client: Client, client_id: str, secret: str) -> None:
    token = await csrf_token(client)
    response = await client.post(
        "/console/sign-in",
        data={"client_id": client_id, "client_secret": secret, "tz": "Europe/London", "_csrf_token": token},
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/console"


def bearer_token(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


async def test_sign_in_sets_an_httponly_strict_cookie_and_pages_follow(
    client: Client, tw: TenantWorld, db: asyncpg.Connection
) -> None:
    client_id, secret = await secret_for(db, "commissioner", tw.tenant_id)
    token = await csrf_token(client)
    response = await client.post(
        "/console/sign-in", data={"client_id": client_id, "client_secret": secret, "_csrf_token": token}
    )
    assert response.status_code == 303
    set_cookie = next(v for v in response.headers.get_list("set-cookie") if v.startswith(AUTH_COOKIE + "="))
    assert "HttpOnly" in set_cookie
    assert "samesite=strict" in set_cookie.lower()
    assert "Path=/" in set_cookie
    home = await client.get("/console")
    assert (home.status_code, home.headers["location"]) == (303, "/console/live")
    live = await client.get("/console/live")
    assert live.status_code == 200
    assert "On site now" in live.text
    assert "Reports" in live.text  # a commissioner's navigation
    # the API takes the same cookie, for reads, and for the live stream's path
    assert (await client.get("/v1/providers")).status_code == 200


async def test_wrong_secret_is_refused_on_the_page(client: Client, tw: TenantWorld, db: asyncpg.Connection) -> None:
    client_id, _ = await secret_for(db, "commissioner", tw.tenant_id)
    token = await csrf_token(client)
    response = await client.post(
        "/console/sign-in", data={"client_id": client_id, "client_secret": "wrong", "_csrf_token": token}
    )
    assert response.status_code == 401
    assert "Unknown client id or wrong secret" in response.text
    assert AUTH_COOKIE not in response.headers.get("set-cookie", "")


async def test_console_pages_without_a_cookie_go_to_sign_in(client: Client) -> None:
    client.follow_redirects = False
    for path in ("/console", "/console/live", "/console/invoices", "/console/bank", "/console/reports"):
        response = await client.get(path)
        assert (response.status_code, response.headers.get("location")) == (303, "/console/sign-in"), path
    assert (await client.get("/console/static/console.css")).status_code == 200


async def test_a_cookie_authenticated_unsafe_request_needs_the_csrf_token(
    client: Client, tw: TenantWorld, db: asyncpg.Connection
) -> None:
    commissioner = bearer_token(tw.commissioner)
    before = await count(db, "providers")
    token = await csrf_token(client)  # also sets the CSRF cookie
    client.cookies.set(AUTH_COOKIE, commissioner)
    try:
        refused = await client.post("/v1/providers", json={"code": "X1", "name": "Forged"})
        assert refused.status_code == 403
        assert refused.json()["code"] == "forbidden"
        wrong = await client.post(
            "/v1/providers", json={"code": "X1", "name": "Forged"}, headers={"X-CSRF-Token": "0" * 128}
        )
        assert wrong.status_code == 403
        assert await count(db, "providers") == before
        accepted = await client.post(
            "/v1/providers", json={"code": "X1", "name": "Real"}, headers={"X-CSRF-Token": token}
        )
        assert accepted.status_code == 201, accepted.text
        # a form without the field is refused too
        form = await client.post(f"/console/amendments/{tw.providers[0]}/approve", data={})
        assert form.status_code == 403
        # without the CSRF cookie the header alone proves nothing
        client.cookies.delete(CSRF_COOKIE)
        no_cookie = await client.post(
            "/v1/providers", json={"code": "X2", "name": "X"}, headers={"X-CSRF-Token": token}
        )
        assert no_cookie.status_code == 403
    finally:
        client.cookies.clear()


async def test_bearer_requests_are_unaffected_by_csrf(client: Client, tw: TenantWorld) -> None:
    # a bearer client never sees the console's cookies, even with a stray auth cookie beside its header
    made = await create(client, tw.commissioner, "/v1/providers", {"code": "B1", "name": "Bearer"})
    assert made["code"] == "B1"
    client.cookies.set(AUTH_COOKIE, bearer_token(tw.provider_headers[1]))
    try:
        response = await client.post("/v1/providers", json={"code": "B2", "name": "Both"}, headers=tw.commissioner)
        assert response.status_code == 201
        assert CSRF_COOKIE not in response.headers.get("set-cookie", "")
    finally:
        client.cookies.clear()
    # and the token endpoint stays a plain JSON endpoint
    assert (await client.post("/v1/auth/token", json={"client_id": "x", "client_secret": "y"})).status_code == 401


async def test_sign_in_itself_needs_the_csrf_token(client: Client, tw: TenantWorld, db: asyncpg.Connection) -> None:
    client_id, secret = await secret_for(db, "commissioner", tw.tenant_id)
    await csrf_token(client)
    response = await client.post("/console/sign-in", data={"client_id": client_id, "client_secret": secret})
    assert response.status_code == 403
    assert AUTH_COOKIE not in response.headers.get("set-cookie", "")


async def test_sign_out_forgets_the_cookie(client: Client, tw: TenantWorld, db: asyncpg.Connection) -> None:
    await sign_in(client, *await secret_for(db, "commissioner", tw.tenant_id))
    token = await csrf_token(client)
    response = await client.post("/console/sign-out", data={"_csrf_token": token})
    assert (response.status_code, response.headers["location"]) == (303, "/console/sign-in?done=signed-out")
    assert AUTH_COOKIE not in client.cookies
    assert (await client.get("/console/live")).status_code == 303


async def test_a_provider_sees_its_own_rows_and_not_the_reports(
    client: Client, tw: TenantWorld, db: asyncpg.Connection
) -> None:
    start = datetime.now(tz=UTC) - timedelta(hours=3)
    visits = []
    for provider in (0, 1):
        made = await create(
            client,
            tw.commissioner,
            "/v1/visits",
            {
                "person_id": tw.person_id,
                "contract_id": tw.contracts[provider],
                "planned_start": start.isoformat(),
                "planned_min": 30,
            },
        )
        visits.append(made["id"])
    await sign_in(client, *await secret_for(db, "provider", tw.tenant_id, tw.providers[0]))
    reports = await client.get("/console/reports")
    assert reports.status_code == 403
    assert "Reports" not in (await client.get("/console/live")).text
    assert (await client.get(f"/console/visits/{visits[0]}/amend")).status_code == 200
    other = await client.get(f"/console/visits/{visits[1]}/amend")
    assert other.status_code == 404
    assert "no such visit" in other.text
    for path in ("/console/exceptions", "/console/invoices", "/console/bank"):
        page = await client.get(path)
        assert page.status_code == 200, (path, page.text)
        assert tw.providers[1][-8:] not in page.text, path
        assert visits[1][-8:] not in page.text, path


async def test_pages_are_never_framed_or_cached(client: Client, tw: TenantWorld, db: asyncpg.Connection) -> None:
    await sign_in(client, *await secret_for(db, "provider", tw.tenant_id, tw.providers[0]))
    for path in ("/console/sign-in", "/console/live", "/console/reports"):  # the last one a 403 page
        response = await client.get(path)
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"], path
        assert response.headers["cache-control"] == "no-store", path
        assert response.headers["content-type"].startswith("text/html"), path


async def test_a_carer_gets_a_note_and_another_tenant_sees_nothing(
    client: Client, world: World, db: asyncpg.Connection
) -> None:
    start = datetime.now(tz=UTC) - timedelta(hours=2)
    body = {"person_id": world.a.person_id, "contract_id": world.a.contracts[0], "planned_start": start.isoformat()}
    visit = await create(client, world.a.commissioner, "/v1/visits", {**body, "planned_min": 30})
    carer = await create(
        client, world.a.provider_headers[0], "/v1/credentials", {"role": "carer", "carer_id": world.a.carers[0]}
    )
    await sign_in(client, carer["client_id"], carer["client_secret"])
    home = await client.get("/console")
    assert home.status_code == 200
    assert "The console is for commissioners and providers" in home.text
    assert (await client.get("/console/live")).status_code == 403
    client.cookies.clear()
    await sign_in(client, *await secret_for(db, "commissioner", world.b.tenant_id))
    assert (await client.get(f"/console/visits/{visit['id']}/amend")).status_code == 404
    for path in ("/console/live", "/console/exceptions", "/console/invoices", "/console/bank", "/console/reports"):
        page = await client.get(path)
        assert page.status_code == 200, (path, page.text)
        for theirs in (world.a.person_id, world.a.providers[0], visit["id"]):
            assert theirs[-8:] not in page.text, path  # pages show ids by their last 8 characters


async def test_a_form_posted_twice_creates_once(
    client: Client, tw: TenantWorld, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    start = datetime.now(tz=UTC) - timedelta(days=1)
    body = {"person_id": tw.person_id, "contract_id": tw.contracts[0], "planned_start": start.isoformat()}
    visit = await create(client, tw.commissioner, "/v1/visits", {**body, "planned_min": 30})
    checked_in = await client.post(
        "/v1/visit-events", json=event("check_in", start, visit_id=visit["id"]), headers=tw.carer_headers[0]
    )
    assert checked_in.status_code == 201, checked_in.text
    await reconciled(pool)
    await sign_in(client, *await secret_for(db, "provider", tw.tenant_id, tw.providers[0]))
    form = await client.get(f"/console/visits/{visit['id']}/amend")
    key = re.search(r'name="_key" value="([0-9a-f]+)"', form.text)
    assert key is not None
    check_out = (start + timedelta(minutes=30)).astimezone(ZoneInfo("Europe/London")).strftime("%Y-%m-%dT%H:%M")
    fields = {
        "_csrf_token": await csrf_token(client),
        "_key": key.group(1),
        "carer_id": tw.carers[0],
        "reason_code": "forgot_check_out",
        "check_out_at": check_out,
    }
    for _ in range(2):  # a double click, or a resubmission from the history
        sent = await client.post(f"/console/visits/{visit['id']}/amendments", data=fields)
        assert (sent.status_code, sent.headers["location"]) == (303, "/console/exceptions?done=proposed")
    assert await count(db, "amendments") == 1
