"""Catalog HTTP: providers, carers, people and contracts, each scoped to the caller's tenant."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

import asyncpg
import msgspec
from litestar import Controller, get, patch, post
from litestar.params import JSONBody, PathParameter, QueryParameter

from schemas.catalog import (
    Carer,
    CarerCreate,
    Contract,
    ContractCreate,
    Person,
    PersonCreate,
    PersonPatch,
    Provider,
    ProviderCreate,
)
from schemas.common import Page
from services.catalog import rules, store
from services.common.auth import allow, provider_scope
from services.common.deps import Caller, Conn
from services.common.errors import field_problem, found_or_404, not_found, problem
from services.common.ids import new_id
from services.common.pagination import CursorParam, LimitParam, decode_cursor, page_of
from services.identity import store as identity_store

ProviderFilter = Annotated[UUID | None, QueryParameter(description="only this provider's rows")]


class ProviderController(Controller):
    """Home-care agencies of the commissioner's tenant."""

    path = "/v1/providers"
    tags = ["catalog"]
    guards = [allow("commissioner")]

    @post("/", operation_id="createProvider")
    async def create_provider(self, data: JSONBody[ProviderCreate], conn: Conn, caller: Caller) -> Provider:
        """Create a provider; its code is unique in the tenant."""
        try:
            return await store.insert_provider(conn, caller.tenant, new_id(), data.code, data.name)
        except asyncpg.UniqueViolationError:
            raise problem(409, "conflict", f"provider code {data.code!r} is already used") from None

    @get("/", operation_id="listProviders")
    async def list_providers(
        self, conn: Conn, caller: Caller, limit: LimitParam = 50, cursor: CursorParam = None
    ) -> Page[Provider]:
        """List the tenant's providers."""
        rows = await store.list_providers(conn, caller.tenant, decode_cursor(cursor), limit + 1)
        return page_of(rows, limit)

    @get("/{provider_id:uuid}", operation_id="getProvider")
    async def get_provider(self, provider_id: Annotated[UUID, PathParameter()], conn: Conn, caller: Caller) -> Provider:
        """One provider."""
        return found_or_404(await store.get_provider(conn, caller.tenant, provider_id), "provider")


class CarerController(Controller):
    """Care workers: a provider manages its own, a commissioner sees all of the tenant's."""

    path = "/v1/carers"
    tags = ["catalog"]
    guards = [allow("commissioner", "provider")]

    @post("/", operation_id="createCarer")
    async def create_carer(self, data: JSONBody[CarerCreate], conn: Conn, caller: Caller) -> Carer:
        """Create a carer."""
        provider_id = provider_scope(caller, data.provider_id)
        if provider_id is None:
            raise field_problem("provider_id", "required", "provider_id is required")
        if await store.get_provider(conn, caller.tenant, provider_id) is None:
            raise not_found("provider", "provider_id")
        return await store.insert_carer(conn, caller.tenant, new_id(), provider_id, data.name)

    @get("/", operation_id="listCarers")
    async def list_carers(
        self,
        conn: Conn,
        caller: Caller,
        provider_id: ProviderFilter = None,
        limit: LimitParam = 50,
        cursor: CursorParam = None,
    ) -> Page[Carer]:
        """List carers (a provider sees only its own)."""
        scope = provider_scope(caller, provider_id)
        rows = await store.list_carers(conn, caller.tenant, scope, decode_cursor(cursor), limit + 1)
        return page_of(rows, limit)

    @get("/{carer_id:uuid}", operation_id="getCarer")
    async def get_carer(self, carer_id: Annotated[UUID, PathParameter()], conn: Conn, caller: Caller) -> Carer:
        """One carer."""
        found = await store.get_carer(conn, caller.tenant, carer_id)
        if found is None or (caller.role == "provider" and found.provider_id != caller.provider_id):
            raise not_found("carer")
        return found


class PersonController(Controller):
    """Service users: the minimum personal data needed to verify and pay for visits."""

    path = "/v1/people"
    tags = ["catalog"]
    guards = [allow("commissioner")]

    @post("/", operation_id="createPerson")
    async def create_person(self, data: JSONBody[PersonCreate], conn: Conn, caller: Caller) -> Person:
        """Register a person; phones are stored in E.164."""
        region = await _holiday_region(conn, caller.tenant)
        try:
            return await store.insert_person(
                conn,
                caller.tenant,
                new_id(),
                reference=data.reference,
                display_name=data.display_name,
                location=data.location,
                geofence_m=data.geofence_m,
                tags=rules.normalise_tags(data.tags),
                phones=rules.normalise_phones(data.phones, region),
            )
        except asyncpg.UniqueViolationError:
            raise problem(409, "conflict", f"reference {data.reference!r} is already used") from None

    @get("/", operation_id="listPeople")
    async def list_people(
        self, conn: Conn, caller: Caller, limit: LimitParam = 50, cursor: CursorParam = None
    ) -> Page[Person]:
        """List people."""
        rows = await store.list_people(conn, caller.tenant, decode_cursor(cursor), limit + 1)
        return page_of(rows, limit)

    @get("/{person_id:uuid}", operation_id="getPerson")
    async def get_person(self, person_id: Annotated[UUID, PathParameter()], conn: Conn, caller: Caller) -> Person:
        """One person."""
        return found_or_404(await store.get_person(conn, caller.tenant, person_id), "person")

    @patch("/{person_id:uuid}", operation_id="updatePerson")
    async def update_person(
        self,
        person_id: Annotated[UUID, PathParameter()],
        data: JSONBody[PersonPatch],
        conn: Conn,
        caller: Caller,
    ) -> Person:
        """Change a person's name, location, geofence, tags, phones or active flag."""
        async with conn.transaction():
            found = found_or_404(await store.get_person(conn, caller.tenant, person_id), "person")
            changes = {
                name: value for name, value in msgspec.structs.asdict(data).items() if value is not msgspec.UNSET
            }
            if "tags" in changes:
                changes["tags"] = rules.normalise_tags(changes["tags"])
            if "phones" in changes:
                region = await _holiday_region(conn, caller.tenant)
                changes["phones"] = rules.normalise_phones(changes["phones"], region)
            return await store.update_person(conn, caller.tenant, msgspec.structs.replace(found, **changes))


async def _holiday_region(conn: asyncpg.Connection, tenant_id: UUID) -> str:
    tenant = await identity_store.get_tenant(conn, tenant_id)
    assert tenant is not None, "a token's tenant exists"
    return tenant.holiday_region


class ContractController(Controller):
    """Contracts with providers: model, invoice period, rate card, pay and banking rules."""

    path = "/v1/contracts"
    tags = ["catalog"]
    guards = [allow("commissioner")]

    @post("/", operation_id="createContract")
    async def create_contract(self, data: JSONBody[ContractCreate], conn: Conn, caller: Caller) -> Contract:
        """Create a contract; rules left out take DOMAIN.md's defaults."""
        rules.check_contract(data)
        if await store.get_provider(conn, caller.tenant, data.provider_id) is None:
            raise not_found("provider", "provider_id")
        return await store.insert_contract(conn, caller.tenant, new_id(), data)

    @get("/", operation_id="listContracts")
    async def list_contracts(
        self,
        conn: Conn,
        caller: Caller,
        provider_id: ProviderFilter = None,
        limit: LimitParam = 50,
        cursor: CursorParam = None,
    ) -> Page[Contract]:
        """List contracts."""
        rows = await store.list_contracts(conn, caller.tenant, provider_id, decode_cursor(cursor), limit + 1)
        return page_of(rows, limit)

    @get("/{contract_id:uuid}", operation_id="getContract")
    async def get_contract(self, contract_id: Annotated[UUID, PathParameter()], conn: Conn, caller: Caller) -> Contract:
        """One contract."""
        return found_or_404(await store.get_contract(conn, caller.tenant, contract_id), "contract")
