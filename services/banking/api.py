"""Bank HTTP: a person's bank as of an instant, the ledger's postings and summary, transfers and
allocations (API.md). Providers see and move only their own people's minutes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal
from uuid import UUID

import asyncpg
from litestar import Controller, get, post
from litestar.params import JSONBody, PathParameter, QueryParameter

from schemas.banking import (
    Allocation,
    AllocationCreate,
    BankSummary,
    PersonBank,
    Posting,
    PostingKind,
    Transfer,
    TransferCreate,
)
from schemas.common import Page
from services.banking import balances, ledger, rules, store
from services.catalog import store as catalog_store
from services.common.auth import Principal, allow, provider_scope
from services.common.deps import Caller, Conn
from services.common.domain import RuleError, check_instant
from services.common.errors import found_or_404, not_found, problem
from services.common.pagination import CursorParam, LimitParam, decode_cursor, page_of
from services.planning import store as planning_store

AsOf = Annotated[datetime | None, QueryParameter(description="an instant with offset; now by default")]
ProviderParam = Annotated[UUID | None, QueryParameter(description="only this provider's ledger")]


def _now() -> datetime:
    return datetime.now(UTC)


def _instant(value: datetime | None, field: str) -> datetime | None:
    """A query instant must carry its offset, like every instant on the wire."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise RuleError("validation_failed", "give the instant with its offset, e.g. 2026-11-23T08:00:00Z", field)
    check_instant(value, field)
    return value


async def _person_in_reach(conn: asyncpg.Connection, caller: Principal, person_id: UUID, field: str) -> None:
    """The person exists in the tenant and, for a provider, is with that provider; else 404."""
    if await catalog_store.get_person(conn, caller.tenant, person_id) is None or (
        caller.role == "provider"
        and not await planning_store.person_is_with_provider(conn, caller.tenant, person_id, caller.provider_id)  # type: ignore[arg-type]
    ):
        raise not_found("person", field)


def _posting(row: asyncpg.Record) -> Posting:
    person = rules.person_of(row["to_account"]) or rules.person_of(row["from_account"])
    return Posting(person_id=person, **{key: row[key] for key in row.keys()})  # noqa: SIM118


def _transfer(row: asyncpg.Record) -> Transfer:
    outcome = row["outcome"]
    return Transfer(
        id=row["id"],
        provider_id=row["provider_id"],
        from_person_id=row["from_person_id"],
        to_person_id=row["to_person_id"],
        minutes=row["minutes"],
        review_ref=row["review_ref"],
        status="pending" if outcome is None else ("approved" if outcome == "posted" else "rejected"),
        requested_by=row["requested_by"],
        requested_at=row["requested_at"],
        decided_by=row["decided_by"],
        decided_at=row["decided_at"],
    )


class PersonBankController(Controller):
    """A person's banked minutes."""

    tags = ["banking"]

    @get(
        "/v1/people/{person_id:uuid}/bank",
        operation_id="getPersonBank",
        guards=[allow("commissioner", "provider")],
    )
    async def get_bank(
        self,
        person_id: Annotated[UUID, PathParameter()],
        conn: Conn,
        caller: Caller,
        as_of: AsOf = None,
        provider_id: ProviderParam = None,
    ) -> PersonBank:
        """Balance, held, available and value as of an instant, with lots and the part at each provider."""
        await _person_in_reach(conn, caller, person_id, "person_id")
        when = _instant(as_of, "as_of") or _now()
        return await balances.person_bank(conn, caller.tenant, person_id, provider_scope(caller, provider_id), when)


class BankController(Controller):
    """The ledger: postings, summary, transfers and allocations."""

    path = "/v1/bank"
    tags = ["banking"]

    @get("/postings", operation_id="listBankPostings", guards=[allow("commissioner", "provider")])
    async def list_postings(
        self,
        conn: Conn,
        caller: Caller,
        provider_id: ProviderParam = None,
        person_id: Annotated[UUID | None, QueryParameter()] = None,
        kind: Annotated[PostingKind | None, QueryParameter()] = None,
        start: Annotated[datetime | None, QueryParameter(name="from", description="effective from")] = None,
        end: Annotated[datetime | None, QueryParameter(name="to", description="effective before")] = None,
        limit: LimitParam = 50,
        cursor: CursorParam = None,
    ) -> Page[Posting]:
        """Postings in the order they were recorded, filterable by person, kind and effective range."""
        if person_id is not None:
            await _person_in_reach(conn, caller, person_id, "person_id")
        rows = await store.list_postings(
            conn,
            caller.tenant,
            provider_id=provider_scope(caller, provider_id),
            account=rules.person_account(person_id) if person_id else None,
            kind=kind,
            start=_instant(start, "from"),
            end=_instant(end, "to"),
            after=decode_cursor(cursor),
            limit=limit + 1,
        )
        return page_of([_posting(row) for row in rows], limit)

    @get("/summary", operation_id="getBankSummary", guards=[allow("commissioner", "provider")])
    async def get_summary(
        self, conn: Conn, caller: Caller, provider_id: ProviderParam = None, as_of: AsOf = None
    ) -> BankSummary:
        """Totals by kind, balances, value, and lots expiring within 28 days."""
        when = _instant(as_of, "as_of") or _now()
        return await balances.summary(conn, caller.tenant, provider_scope(caller, provider_id), when)

    @post("/transfers", operation_id="requestTransfer", guards=[allow("commissioner", "provider")])
    async def request_transfer(self, data: JSONBody[TransferCreate], conn: Conn, caller: Caller) -> Transfer:
        """Hold the giver's minutes until a commissioner other than the requester decides."""
        tenant = caller.tenant
        for person_id, field in ((data.from_person_id, "from_person_id"), (data.to_person_id, "to_person_id")):
            await _person_in_reach(conn, caller, person_id, field)
        if data.from_person_id == data.to_person_id:
            raise RuleError("same_person", "a transfer needs two different people", "to_person_id")
        provider_id = await _transfer_provider(conn, caller, data)
        for person_id, field in ((data.from_person_id, "from_person_id"), (data.to_person_id, "to_person_id")):
            if not await planning_store.person_is_with_provider(conn, tenant, person_id, provider_id):
                raise RuleError("not_with_provider", "both people must be with the transfer's provider", field)
        async with conn.transaction():
            transfer_id = await ledger.request_transfer(
                conn,
                tenant,
                provider_id=provider_id,
                from_person_id=data.from_person_id,
                to_person_id=data.to_person_id,
                minutes=data.minutes,
                review_ref=data.review_ref,
                by=caller.client_id,
                now=_now(),
            )
        return await _get_transfer(conn, caller, transfer_id)

    @get("/transfers", operation_id="listTransfers", guards=[allow("commissioner", "provider")])
    async def list_transfers(
        self,
        conn: Conn,
        caller: Caller,
        status: Annotated[Literal["pending", "approved", "rejected"] | None, QueryParameter()] = None,
        person_id: Annotated[UUID | None, QueryParameter(description="giver or receiver")] = None,
        provider_id: ProviderParam = None,
        limit: LimitParam = 50,
        cursor: CursorParam = None,
    ) -> Page[Transfer]:
        """Transfers in request order, e.g. `?status=pending` for those waiting for a decision."""
        rows = await store.list_transfers(
            conn,
            caller.tenant,
            provider_id=provider_scope(caller, provider_id),
            status=status,
            person_id=person_id,
            after=decode_cursor(cursor),
            limit=limit + 1,
        )
        return page_of([_transfer(row) for row in rows], limit)

    @get("/transfers/{transfer_id:uuid}", operation_id="getTransfer", guards=[allow("commissioner", "provider")])
    async def get_transfer(self, transfer_id: Annotated[UUID, PathParameter()], conn: Conn, caller: Caller) -> Transfer:
        """A transfer and its decision."""
        return await _get_transfer(conn, caller, transfer_id)

    @post(
        "/transfers/{transfer_id:uuid}/approve",
        operation_id="approveTransfer",
        status_code=200,
        guards=[allow("commissioner")],
    )
    async def approve(self, transfer_id: Annotated[UUID, PathParameter()], conn: Conn, caller: Caller) -> Transfer:
        """Post the held minutes to the receiver; the lots keep their rate and expiry."""
        return await _decide(conn, caller, transfer_id, approve=True)

    @post(
        "/transfers/{transfer_id:uuid}/reject",
        operation_id="rejectTransfer",
        status_code=200,
        guards=[allow("commissioner")],
    )
    async def reject(self, transfer_id: Annotated[UUID, PathParameter()], conn: Conn, caller: Caller) -> Transfer:
        """Release the held minutes back to the giver."""
        return await _decide(conn, caller, transfer_id, approve=False)

    @post("/allocations", operation_id="allocateFromPool", guards=[allow("commissioner")])
    async def allocate(self, data: JSONBody[AllocationCreate], conn: Conn, caller: Caller) -> Allocation:
        """pool -> person, oldest-expiring pool lots first."""
        tenant = caller.tenant
        if await catalog_store.get_provider(conn, tenant, data.provider_id) is None:
            raise not_found("provider", "provider_id")
        await _person_in_reach(conn, caller, data.person_id, "person_id")
        if not await planning_store.person_is_with_provider(conn, tenant, data.person_id, data.provider_id):
            raise RuleError("not_with_provider", "the person has no care plan with this provider", "person_id")
        async with conn.transaction():
            postings = await ledger.allocate(
                conn,
                tenant,
                provider_id=data.provider_id,
                person_id=data.person_id,
                minutes=data.minutes,
                note=data.note,
                by=caller.client_id,
                now=_now(),
            )
        rows = await store.postings_by_id(conn, tenant, [p["id"] for p in postings])
        return Allocation(
            provider_id=data.provider_id,
            person_id=data.person_id,
            minutes=data.minutes,
            note=data.note,
            postings=[_posting(row) for row in rows],
        )


async def _transfer_provider(conn: asyncpg.Connection, caller: Principal, data: TransferCreate) -> UUID:
    """The provider whose ledger the transfer moves in: the caller's, the one named, or the giver's
    only provider (naming one is required when the giver is with several)."""
    if caller.role == "provider":
        assert caller.provider_id is not None
        if data.provider_id not in (None, caller.provider_id):
            raise not_found("provider", "provider_id")
        return caller.provider_id
    if data.provider_id is not None:
        if await catalog_store.get_provider(conn, caller.tenant, data.provider_id) is None:
            raise not_found("provider", "provider_id")
        return data.provider_id
    providers = await planning_store.providers_of_person(conn, caller.tenant, data.from_person_id)
    if len(providers) != 1:
        raise RuleError(
            "provider_required", "the giver is with several providers (or none): name provider_id", "provider_id"
        )
    return providers[0]


async def _get_transfer(conn: asyncpg.Connection, caller: Principal, transfer_id: UUID) -> Transfer:
    row = await store.get_transfer(conn, caller.tenant, transfer_id)
    if row is None or (caller.role == "provider" and row["provider_id"] != caller.provider_id):
        raise not_found("transfer")
    return _transfer(row)


async def _decide(conn: asyncpg.Connection, caller: Principal, transfer_id: UUID, *, approve: bool) -> Transfer:
    tenant = caller.tenant
    async with conn.transaction():
        row = found_or_404(await store.get_transfer(conn, tenant, transfer_id), "transfer")
        if row["requested_by"] == caller.client_id:
            raise problem(403, "forbidden", "the requester may not decide its own transfer")
        await ledger.decide_transfer(conn, tenant, row, approve=approve, by=caller.client_id, now=_now())
    return await _get_transfer(conn, caller, transfer_id)
