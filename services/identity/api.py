"""Identity HTTP: token issuance, tenants and credentials."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Annotated, Any
from uuid import UUID

import asyncpg
from litestar import Controller, Request, get, post
from litestar.params import JSONBody, PathParameter

from schemas.common import Page
from schemas.identity import (
    CredentialCreate,
    CredentialSecret,
    Tenant,
    TenantCreate,
    TokenRequest,
    TokenResponse,
)
from services.common.auth import Principal, allow
from services.common.deps import Caller, Conn
from services.common.errors import found_or_404, problem
from services.common.ids import new_id
from services.common.pagination import CursorParam, LimitParam, decode_cursor, page_of
from services.identity import rules, store
from services.identity.issue import issue_credential


class AuthController(Controller):
    """Credentials in, JWT out."""

    path = "/v1/auth"
    tags = ["identity"]

    @post("/token", operation_id="issueToken", status_code=200, exclude_from_auth=True)
    async def issue_token(
        self, request: Request[Any, Any, Any], data: JSONBody[TokenRequest], conn: Conn
    ) -> TokenResponse:
        """Exchange a client id and secret for a bearer token (15 minutes unless configured)."""
        principal = await _authenticate(conn, request.app.state.hasher, data.client_id, data.client_secret)
        if principal is None:
            raise problem(401, "invalid_credentials", "unknown client id or wrong secret")
        ttl = request.app.state.settings.token_ttl_s
        token = request.app.state.jwt_auth.create_token(
            identifier=principal.client_id,
            token_expiration=timedelta(seconds=ttl),
            token_extras=principal.claims(),
        )
        return TokenResponse(access_token=token, token_type="Bearer", expires_in=ttl)  # noqa: S106


async def _authenticate(
    conn: asyncpg.Connection, hasher: rules.SecretHasher, client_id: str, secret: str
) -> Principal | None:
    well_formed, tenant_id = rules.parse_client_id(client_id)
    secret_hash: str | None = None
    row: asyncpg.Record | None = None
    if well_formed and tenant_id is None:
        secret_hash = await store.find_admin_credential(conn, client_id)
    elif well_formed and tenant_id is not None:
        row = await store.find_credential(conn, tenant_id, client_id)
        secret_hash = row["secret_hash"] if row else None
    # argon2 costs tens of milliseconds of CPU: keep it off the event loop.
    if not await asyncio.to_thread(hasher.verify, secret_hash, secret):
        return None
    if row is None:
        return Principal(client_id=client_id, role="admin")
    return Principal(
        client_id=client_id,
        role=row["role"],
        tenant_id=tenant_id,
        provider_id=row["provider_id"],
        carer_id=row["carer_id"],
    )


class TenantController(Controller):
    """Tenants (commissioners), managed by the installation's admin."""

    path = "/v1/tenants"
    tags = ["identity"]
    guards = [allow("admin")]

    @post("/", operation_id="createTenant")
    async def create_tenant(self, data: JSONBody[TenantCreate], conn: Conn) -> Tenant:
        """Create a tenant (a council)."""
        rules.check_tenant(data)
        return await store.insert_tenant(conn, new_id(), data)

    @get("/", operation_id="listTenants")
    async def list_tenants(self, conn: Conn, limit: LimitParam = 50, cursor: CursorParam = None) -> Page[Tenant]:
        """List tenants."""
        rows = await store.list_tenants(conn, decode_cursor(cursor), limit + 1)
        return page_of(rows, limit)

    @get("/{tenant_id:uuid}", operation_id="getTenant")
    async def get_tenant(self, tenant_id: Annotated[UUID, PathParameter()], conn: Conn) -> Tenant:
        """One tenant."""
        return found_or_404(await store.get_tenant(conn, tenant_id), "tenant")


class CredentialController(Controller):
    """Credentials: admin any; a commissioner its tenant's; a provider its own carers'."""

    path = "/v1/credentials"
    tags = ["identity"]
    guards = [allow("admin", "commissioner", "provider")]

    @post("/", operation_id="createCredential")
    async def create_credential(
        self, request: Request[Any, Any, Any], data: JSONBody[CredentialCreate], conn: Conn, caller: Caller
    ) -> CredentialSecret:
        """Create a credential; the secret is in this answer and nowhere else."""
        binding = rules.bind_credential(rules.Caller(caller.role, caller.tenant_id, caller.provider_id), data)
        return await issue_credential(conn, request.app.state.hasher, binding, created_by=caller.client_id)
