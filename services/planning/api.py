"""Planning HTTP: care plans (with visit generation), extra visits, moves, cancellations, the carer's day."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg
import msgspec
from litestar import Controller, get, patch, post
from litestar.params import JSONBody, PathParameter, QueryParameter

from schemas.common import Page
from schemas.planning import (
    Cancellation,
    CarePlan,
    CarePlanCreate,
    Visit,
    VisitCancel,
    VisitCreate,
    VisitPatch,
    VisitStatus,
)
from services.banking import ledger as bank_ledger
from services.billing import store as billing_store
from services.catalog import store as catalog_store
from services.common.auth import Principal, allow, provider_scope
from services.common.deadlocks import deadlock_retried
from services.common.deps import Caller, Conn
from services.common.domain import RuleError, check_instant
from services.common.errors import found_or_404, not_found, problem
from services.common.ids import new_id
from services.common.pagination import CursorParam, LimitParam, decode_cursor, page_of
from services.identity import store as identity_store
from services.ingest import store as ingest_store
from services.planning import jobs, rules, store
from services.reconcile import service as reconcile_service
from services.reconcile import store as reconcile_store

DateParam = Annotated[date | None, QueryParameter(description="local date (tenant time)")]


def utc_now() -> datetime:
    """The service clock; rules never read it themselves."""
    return datetime.now(tz=UTC)


async def tenant_zone(conn: asyncpg.Connection, tenant_id: UUID) -> ZoneInfo:
    tenant = await identity_store.get_tenant(conn, tenant_id)
    assert tenant is not None, "a token's tenant exists"
    return ZoneInfo(tenant.zone)


def local_day_bounds(day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """[start, end) of a local day as UTC instants (23 or 25 hours on clock-change days)."""
    start = rules.local_instant(day, "00:00", zone)
    return start, rules.local_instant(day + timedelta(days=1), "00:00", zone)


class CarePlanController(Controller):
    """Care plans; creating one generates its visits from valid_from to today + horizon_days."""

    path = "/v1/care-plans"
    tags = ["planning"]
    guards = [allow("commissioner")]

    @post("/", operation_id="createCarePlan")
    async def create_care_plan(self, data: JSONBody[CarePlanCreate], conn: Conn, caller: Caller) -> CarePlan:
        """Create a care plan and its planned visits."""
        rules.check_care_plan(data)
        tenant = caller.tenant
        if await catalog_store.get_person(conn, tenant, data.person_id) is None:
            raise not_found("person", "person_id")
        contract = await catalog_store.get_contract(conn, tenant, data.contract_id)
        if contract is None:
            raise not_found("contract", "contract_id")
        plan_id = new_id()
        async with conn.transaction():
            # An extra visit's key outcomes are those of its person's plans on its contract: this plan's
            # count from now on, so those visits are reconciled again (queue rows first, as ingest).
            extra = await store.extra_visit_ids(conn, tenant, data.person_id, data.contract_id)
            await reconcile_store.enqueue(conn, tenant, extra)
            await store.insert_care_plan(conn, tenant, plan_id, contract.provider_id, data)
            await jobs.generate_plan(conn, await store.plan_generation_state(conn, tenant, plan_id), utc_now())
        return found_or_404(await store.get_care_plan(conn, tenant, plan_id), "care plan")

    @get("/", operation_id="listCarePlans")
    async def list_care_plans(
        self,
        conn: Conn,
        caller: Caller,
        person_id: Annotated[UUID | None, QueryParameter()] = None,
        provider_id: Annotated[UUID | None, QueryParameter()] = None,
        limit: LimitParam = 50,
        cursor: CursorParam = None,
    ) -> Page[CarePlan]:
        """List care plans."""
        rows = await store.list_care_plans(
            conn,
            caller.tenant,
            person_id=person_id,
            provider_id=provider_id,
            after=decode_cursor(cursor),
            limit=limit + 1,
        )
        return page_of(rows, limit)

    @get("/{plan_id:uuid}", operation_id="getCarePlan")
    async def get_care_plan(self, plan_id: Annotated[UUID, PathParameter()], conn: Conn, caller: Caller) -> CarePlan:
        """One care plan."""
        return found_or_404(await store.get_care_plan(conn, caller.tenant, plan_id), "care plan")


async def visible_visit(conn: asyncpg.Connection, caller: Principal, visit_id: UUID) -> Visit:
    """The visit if the caller may see it: a provider its own, a carer those it is on; else 404."""
    visit = await store.get_visit(conn, caller.tenant, visit_id)
    if visit is None:
        raise not_found("visit")
    if caller.role in ("provider", "carer") and visit.provider_id != caller.provider_id:
        raise not_found("visit")
    if caller.role == "carer":
        assert caller.carer_id is not None
        on_visit = caller.carer_id in visit.carer_ids or await ingest_store.carer_has_events_on(
            conn, caller.tenant, visit.id, caller.carer_id
        )
        if not on_visit:
            raise not_found("visit")
    return visit


async def held_visit(conn: asyncpg.Connection, caller: Principal, visit_id: UUID) -> Visit:
    """The visit, as `visible_visit`, once it is locked with every visit its reconciliation will touch (those
    approved moves lead to from it), plans and states, at once and in id order; call in a transaction.
    Locked one after the other, its move targets were taken after it and so out of id order: two such
    writes on crossing moves, or one and a reconciliation or amendment taking the same visits in order,
    each held one and waited for the other (decision 156). Read after the lock, so it is the latest
    committed version."""
    await reconcile_service.hold_visits(conn, caller.tenant, [visit_id], reconcile_store.lock_whole_visits)
    return await visible_visit(conn, caller, visit_id)


class VisitController(Controller):
    """Planned visits: extra ones, moves, cancellations and approvals."""

    path = "/v1/visits"
    tags = ["planning"]

    @post("/", operation_id="createVisit", guards=[allow("commissioner", "provider")])
    async def create_visit(self, data: JSONBody[VisitCreate], conn: Conn, caller: Caller) -> Visit:
        """An extra visit: planned at once for a commissioner, pending approval for a provider."""
        tenant = caller.tenant
        contract = await catalog_store.get_contract(conn, tenant, data.contract_id)
        if contract is None or (caller.role == "provider" and contract.provider_id != caller.provider_id):
            raise not_found("contract", "contract_id")
        if await catalog_store.get_person(conn, tenant, data.person_id) is None or (
            caller.role == "provider"
            and not await store.person_is_with_provider(conn, tenant, data.person_id, contract.provider_id)
        ):
            raise not_found("person", "person_id")
        check_instant(data.planned_start, "planned_start")
        rules.check_carers(data.carer_ids, data.carers_required)
        await _check_carers_of(conn, tenant, contract.provider_id, data.carer_ids)
        known = await store.plan_outcome_ids(conn, tenant, data.person_id, data.contract_id)
        for index, outcome_id in enumerate(data.outcome_ids):
            if outcome_id not in known:
                raise RuleError(
                    "unknown_outcome",
                    f"{outcome_id!r} is not an outcome of the person's plan",
                    f"outcome_ids[{index}]",
                )
        by_commissioner = caller.role == "commissioner"
        visit = Visit(
            id=new_id(),
            person_id=data.person_id,
            provider_id=contract.provider_id,
            contract_id=contract.id,
            plan_id=None,
            status="planned",
            planned_start=data.planned_start,
            planned_min=data.planned_min,
            carers_required=data.carers_required,
            carer_ids=data.carer_ids,
            outcome_ids=data.outcome_ids,
            funding=data.funding,
            origin="commissioner" if by_commissioner else "provider_request",
            approval="approved" if by_commissioner else "pending",
            band_start=data.planned_start,
            cancellation=None,
            actual=None,
            exceptions=[],
            created_at=utc_now(),
        )
        async with conn.transaction():
            created = await store.insert_visit(conn, tenant, visit)
            if visit.funding == "bank":
                await bank_ledger.place_visit_hold(
                    conn,
                    tenant,
                    visit_id=visit.id,
                    provider_id=visit.provider_id,
                    person_id=visit.person_id,
                    minutes=visit.planned_min * visit.carers_required,
                    now=visit.created_at,
                )
            return created

    @get("/", operation_id="listVisits", guards=[allow("commissioner", "provider", "carer")])
    async def list_visits(
        self,
        conn: Conn,
        caller: Caller,
        date_from: Annotated[date | None, QueryParameter(name="from", description="first local date")] = None,
        date_to: Annotated[date | None, QueryParameter(name="to", description="last local date")] = None,
        provider_id: Annotated[UUID | None, QueryParameter()] = None,
        person_id: Annotated[UUID | None, QueryParameter()] = None,
        carer_id: Annotated[UUID | None, QueryParameter()] = None,
        status: Annotated[VisitStatus | None, QueryParameter()] = None,
        limit: LimitParam = 50,
        cursor: CursorParam = None,
    ) -> Page[Visit]:
        """Visits by local date range, provider, person, carer and status (a provider sees its own)."""
        provider_id = provider_scope(caller, provider_id)
        if caller.role == "carer":
            if carer_id is not None and carer_id != caller.carer_id:
                raise not_found("carer", "carer_id")
            carer_id = caller.carer_id
        zone = await tenant_zone(conn, caller.tenant)
        rows = await store.list_visits(
            conn,
            caller.tenant,
            start_from=local_day_bounds(date_from, zone)[0] if date_from else None,
            start_before=local_day_bounds(date_to, zone)[1] if date_to else None,
            provider_id=provider_id,
            person_id=person_id,
            carer_id=carer_id,
            status=status,
            after=decode_cursor(cursor),
            limit=limit + 1,
        )
        return page_of(rows, limit)

    @get("/{visit_id:uuid}", operation_id="getVisit", guards=[allow("commissioner", "provider", "carer")])
    async def get_visit(self, visit_id: Annotated[UUID, PathParameter()], conn: Conn, caller: Caller) -> Visit:
        """One visit with its plan, actual and exceptions."""
        return await visible_visit(conn, caller, visit_id)

    @patch("/{visit_id:uuid}", operation_id="updateVisit", guards=[allow("commissioner", "provider")])
    async def update_visit(
        self,
        visit_id: Annotated[UUID, PathParameter()],
        data: JSONBody[VisitPatch],
        conn: Conn,
        caller: Caller,
    ) -> Visit:
        """Assign carers or move the start, before the visit starts and before any event."""
        return await deadlock_retried(lambda: _update(conn, caller, visit_id, data, utc_now()), "visit_update")

    @post(
        "/{visit_id:uuid}/cancel",
        operation_id="cancelVisit",
        status_code=200,
        guards=[allow("commissioner", "provider")],
    )
    async def cancel_visit(
        self,
        visit_id: Annotated[UUID, PathParameter()],
        data: JSONBody[VisitCancel],
        conn: Conn,
        caller: Caller,
    ) -> Visit:
        """Cancel a visit that has no event; short notice is judged on the contract's notice hours."""
        now = utc_now()
        check_instant(data.notified_at, "notified_at")
        if data.notified_at > now:
            raise RuleError("in_the_future", "notified_at is in the future", "notified_at")
        return await deadlock_retried(lambda: _cancel(conn, caller, visit_id, data, now), "visit_cancel")

    @post(
        "/{visit_id:uuid}/approve",
        operation_id="approveVisit",
        status_code=200,
        guards=[allow("commissioner")],
    )
    async def approve_visit(self, visit_id: Annotated[UUID, PathParameter()], conn: Conn, caller: Caller) -> Visit:
        """Approve a provider's requested visit, or confirm its short-notice person cancellation."""
        return await deadlock_retried(lambda: _approve(conn, caller, visit_id), "visit_approve")


async def _update(
    conn: asyncpg.Connection, caller: Principal, visit_id: UUID, data: VisitPatch, now: datetime
) -> Visit:
    """A change of carers or start, in a transaction of its own (one try of `updateVisit`)."""
    tenant = caller.tenant
    async with conn.transaction():
        visit = await held_visit(conn, caller, visit_id)
        rules.check_changeable(
            started=visit.planned_start <= now,
            has_events=await ingest_store.visit_has_events(conn, tenant, visit.id),
            cancelled=visit.status == "cancelled",
        )
        carer_ids = visit.carer_ids if isinstance(data.carer_ids, msgspec.UnsetType) else data.carer_ids
        rules.check_carers(carer_ids, visit.carers_required)
        await _check_carers_of(conn, tenant, visit.provider_id, carer_ids)
        planned_start, band_start = visit.planned_start, visit.band_start
        if not isinstance(data.planned_start, msgspec.UnsetType):
            check_instant(data.planned_start, "planned_start")
            zone = await tenant_zone(conn, tenant)
            rules.check_move(
                role=caller.role,
                planned_start=visit.planned_start,
                new_start=data.planned_start,
                zone=zone,
                now=now,
            )
            planned_start = data.planned_start
            # A provider's move keeps the original band for pay; a commissioner's re-prices.
            band_start = visit.band_start if caller.role == "provider" else planned_start
        await store.update_schedule(
            conn, tenant, visit.id, carer_ids=carer_ids, planned_start=planned_start, band_start=band_start
        )
        return await _reconciled(conn, tenant, visit.id, now)


async def _cancel(
    conn: asyncpg.Connection, caller: Principal, visit_id: UUID, data: VisitCancel, now: datetime
) -> Visit:
    """A cancellation, in a transaction of its own (one try of `cancelVisit`)."""
    tenant = caller.tenant
    async with conn.transaction():
        visit = await held_visit(conn, caller, visit_id)
        rules.check_changeable(
            started=False,
            has_events=await ingest_store.visit_has_events(conn, tenant, visit.id),
            cancelled=visit.status == "cancelled",
            invoiced=await billing_store.visit_invoiced(conn, tenant, visit.id),
        )
        contract = await catalog_store.get_contract(conn, tenant, visit.contract_id)
        assert contract is not None
        short = rules.is_short_notice(visit.planned_start, data.notified_at, contract.pay_rules.cancellation_notice_h)
        cancellation = Cancellation(
            by=data.by,
            notified_at=data.notified_at,
            reason=data.reason,
            short_notice=short,
            confirmed=not rules.cancellation_needs_confirmation(
                by=data.by, short_notice=short, recorded_by_role=caller.role
            ),
            recorded_by=caller.client_id,
        )
        await store.cancel_visit(conn, tenant, visit.id, cancellation)
        return await _reconciled(conn, tenant, visit.id, now)


async def _approve(conn: asyncpg.Connection, caller: Principal, visit_id: UUID) -> Visit:
    """An approval of a requested visit or a cancellation, in a transaction of its own (one try of
    `approveVisit`)."""
    async with conn.transaction():
        visit = await held_visit(conn, caller, visit_id)
        if visit.origin == "unplanned":
            raise problem(
                422, "use_an_amendment", "an unplanned visit is approved by an amendment that sets planned_min"
            )
        pending_request = visit.approval == "pending"
        pending_cancellation = visit.cancellation is not None and not visit.cancellation.confirmed
        if not (pending_request or pending_cancellation):
            raise problem(409, "already_decided", "nothing on this visit waits for approval")
        await store.approve_visit(conn, caller.tenant, visit)
        return await _reconciled(conn, caller.tenant, visit.id, utc_now())


class MyVisitsController(Controller):
    """A carer's own day."""

    path = "/v1/me"
    tags = ["planning"]
    guards = [allow("carer")]

    @get("/visits", operation_id="myVisits")
    async def my_visits(
        self, conn: Conn, caller: Caller, day: Annotated[date | None, QueryParameter(name="date")] = None
    ) -> list[Visit]:
        """The carer's visits on a local date (today by default), in time order."""
        zone = await tenant_zone(conn, caller.tenant)
        assert caller.carer_id is not None
        start, end = local_day_bounds(day or utc_now().astimezone(zone).date(), zone)
        return await store.carer_day(conn, caller.tenant, caller.carer_id, start, end)


async def _reconciled(conn: asyncpg.Connection, tenant_id: UUID, visit_id: UUID, now: datetime) -> Visit:
    """Store the visit's new actual state with the change that caused it, and return the visit."""
    await reconcile_service.reconcile_visits(conn, tenant_id, [visit_id], now)
    return found_or_404(await store.get_visit(conn, tenant_id, visit_id), "visit")


async def _check_carers_of(conn: asyncpg.Connection, tenant_id: UUID, provider_id: UUID, carer_ids: list[UUID]) -> None:
    if not carer_ids:
        return
    known = await catalog_store.carers_of_provider(conn, tenant_id, provider_id, carer_ids)
    for index, carer_id in enumerate(carer_ids):
        if carer_id not in known:
            raise not_found("carer", f"carer_ids[{index}]")
