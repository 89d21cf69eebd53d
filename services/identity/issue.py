"""Issuing a credential: shared by `POST /v1/credentials` and `carebank credentials create`."""

from __future__ import annotations

import asyncio
from uuid import UUID

import asyncpg

from schemas.identity import CredentialSecret
from services.catalog import store as catalog_store
from services.common.domain import RuleError
from services.identity import rules, store


async def issue_credential(
    conn: asyncpg.Connection, hasher: rules.SecretHasher, binding: rules.Binding, created_by: str
) -> CredentialSecret:
    """Check what the binding names exists and agrees, store the hash, return the secret once."""
    secret = rules.new_secret()
    # argon2 costs tens of milliseconds of CPU: keep it off the event loop.
    secret_hash = await asyncio.to_thread(hasher.hash, secret)
    client_id = rules.new_client_id(binding.tenant_id)
    provider_id = binding.provider_id
    async with conn.transaction():
        if binding.tenant_id is None:
            await store.insert_admin_credential(conn, client_id, secret_hash)
        else:
            provider_id = await _checked_provider(conn, binding)
            await store.insert_credential(
                conn,
                tenant_id=binding.tenant_id,
                client_id=client_id,
                secret_hash=secret_hash,
                role=binding.role,
                provider_id=provider_id,
                carer_id=binding.carer_id,
                created_by=created_by,
            )
    return CredentialSecret(
        client_id=client_id,
        client_secret=secret,
        role=binding.role,
        tenant_id=binding.tenant_id,
        provider_id=provider_id,
        carer_id=binding.carer_id,
    )


async def _checked_provider(conn: asyncpg.Connection, binding: rules.Binding) -> UUID | None:
    """The provider the credential ends up bound to (a carer's own provider)."""
    assert binding.tenant_id is not None
    if await store.get_tenant(conn, binding.tenant_id) is None:
        raise RuleError("not_found", "no such tenant", "tenant_id", status=404)
    if binding.carer_id is not None:
        carer = await catalog_store.get_carer(conn, binding.tenant_id, binding.carer_id)
        if carer is None or (binding.provider_id is not None and carer.provider_id != binding.provider_id):
            raise RuleError("not_found", "no such carer", "carer_id", status=404)
        return carer.provider_id
    if (
        binding.provider_id is not None
        and await catalog_store.get_provider(conn, binding.tenant_id, binding.provider_id) is None
    ):
        raise RuleError("not_found", "no such provider", "provider_id", status=404)
    return binding.provider_id
