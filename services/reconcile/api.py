"""Reconciliation HTTP: amendments (propose, approve, reject) and open exceptions."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

import asyncpg
from litestar import Controller, get, post
from litestar.params import JSONBody, PathParameter, QueryParameter

from schemas.common import Page
from schemas.planning import Visit
from schemas.reconcile import Amendment, AmendmentCreate, ExceptionKind, VisitExceptions
from services.catalog import store as catalog_store
from services.common.auth import Principal, allow, provider_scope
from services.common.deadlocks import deadlock_retried
from services.common.deps import Caller, Conn
from services.common.errors import found_or_404, not_found, problem
from services.common.ids import new_id
from services.common.pagination import CursorParam, LimitParam, decode_cursor, page_of
from services.planning import store as planning_store
from services.reconcile import amendments as amendment_rules
from services.reconcile import rules, service, store


async def _visit_in_reach(
    conn: asyncpg.Connection, caller: Principal, visit_id: UUID, field: str | None = None
) -> Visit:
    visit = await planning_store.get_visit(conn, caller.tenant, visit_id, lock=True)
    if visit is None or (caller.role == "provider" and visit.provider_id != caller.provider_id):
        raise not_found("visit", field)
    return visit


class AmendmentController(Controller):
    """Corrections of visits: proposed by a provider or commissioner, decided by a commissioner."""

    tags = ["reconciliation"]

    @post(
        "/v1/visits/{visit_id:uuid}/amendments",
        operation_id="proposeAmendment",
        guards=[allow("commissioner", "provider")],
    )
    async def propose(
        self, visit_id: Annotated[UUID, PathParameter()], data: JSONBody[AmendmentCreate], conn: Conn, caller: Caller
    ) -> Amendment:
        """Propose an amendment; it approves itself when pay falls (or moves within auto_approve_min)."""
        amendment_id = await deadlock_retried(lambda: _propose(conn, caller, visit_id, data), "amendment")
        return found_or_404(await store.get_amendment(conn, caller.tenant, amendment_id), "amendment")

    @get("/v1/amendments", operation_id="listAmendments", guards=[allow("commissioner", "provider")])
    async def list_amendments(
        self,
        conn: Conn,
        caller: Caller,
        status: Annotated[Literal["pending", "approved", "rejected"] | None, QueryParameter()] = None,
        visit_id: Annotated[UUID | None, QueryParameter()] = None,
        provider_id: Annotated[UUID | None, QueryParameter()] = None,
        limit: LimitParam = 50,
        cursor: CursorParam = None,
    ) -> Page[Amendment]:
        """Amendments, e.g. `?status=pending` for a commissioner's queue (a provider sees its own)."""
        rows = await store.list_amendments(
            conn,
            caller.tenant,
            provider_id=provider_scope(caller, provider_id),
            visit_id=visit_id,
            status=status,
            after=decode_cursor(cursor),
            limit=limit + 1,
        )
        return page_of(rows, limit)

    @post(
        "/v1/amendments/{amendment_id:uuid}/approve",
        operation_id="approveAmendment",
        status_code=200,
        guards=[allow("commissioner")],
    )
    async def approve(self, amendment_id: Annotated[UUID, PathParameter()], conn: Conn, caller: Caller) -> Amendment:
        """Approve: the amendment now counts, and the visit is reconciled with it."""
        return await deadlock_retried(lambda: _decide(conn, caller, amendment_id, "approved"), "amendment")

    @post(
        "/v1/amendments/{amendment_id:uuid}/reject",
        operation_id="rejectAmendment",
        status_code=200,
        guards=[allow("commissioner")],
    )
    async def reject(self, amendment_id: Annotated[UUID, PathParameter()], conn: Conn, caller: Caller) -> Amendment:
        """Reject: the amendment is kept, and never counts."""
        return await deadlock_retried(lambda: _decide(conn, caller, amendment_id, "rejected"), "amendment")


async def _propose(conn: asyncpg.Connection, caller: Principal, visit_id: UUID, data: AmendmentCreate) -> UUID:
    """Check and store a proposal, deciding it at once when it approves itself; returns its id."""
    tenant = caller.tenant
    async with conn.transaction():
        # The visit and the one a move names, both at once and in id order, with those moves lead on to:
        # locked one after the other, crossing moves proposed at once each held one and waited for the
        # other (decision 150). Then the time, which dates an amendment that approves itself (decision 149).
        named = [visit_id] + ([data.move_to_visit_id] if data.move_to_visit_id else [])
        await service.hold_visits(conn, tenant, named, store.lock_whole_visits)
        now = await store.clock(conn)
        visit = await _visit_in_reach(conn, caller, visit_id)
        unplanned = visit.origin == "unplanned" and visit.approval != "approved"
        amendment_rules.check_amendment(data, unplanned=unplanned, now=now)
        if data.carer_id not in await catalog_store.carers_of_provider(
            conn, tenant, visit.provider_id, [data.carer_id]
        ):
            raise not_found("carer", "carer_id")
        if data.move_to_visit_id is not None:
            target = await _visit_in_reach(conn, caller, data.move_to_visit_id, "move_to_visit_id")
            if target.provider_id != visit.provider_id or target.id == visit.id:
                raise not_found("visit", "move_to_visit_id")
        contract = await catalog_store.get_contract(conn, tenant, visit.contract_id)
        assert contract is not None
        preview = rules.Amendment(
            carer_id=data.carer_id,
            decided_at=now,
            check_in_at=data.check_in_at,
            check_out_at=data.check_out_at,
            extension_min=data.extension_min,
            planned_min=data.planned_min,
        )
        # Both from the current inputs, so a stale stored state cannot make a rise look like a fall.
        before = (await service.compute(conn, tenant, [visit.id], now)).states
        after = (await service.compute(conn, tenant, [visit.id], now, extra={visit.id: [preview]})).states
        payable_before, banked_before = before[visit.id].payable_min, before[visit.id].banked_min
        move = data.move_to_visit_id is not None
        # A move changes two visits; its effect is recorded when it is decided.
        payable_after = payable_before if move else after[visit.id].payable_min
        banked_after = banked_before if move else after[visit.id].banked_min
        automatic = amendment_rules.approves_itself(
            payable_before=payable_before,
            payable_after=payable_after,
            banked_before=banked_before,
            banked_after=banked_after,
            auto_approve_min=contract.pay_rules.auto_approve_min,
            unplanned=visit.origin == "unplanned",  # "never for unplanned visits", approved ones too
            # A requested visit pays 0 until approved: 0 → 0 says nothing of what approval will pay.
            awaiting_approval=visit.approval != "approved",
            extension=data.extension_min is not None,
            move=move,
            final=before[visit.id].status in ("completed", "missed", "cancelled")
            and after[visit.id].status in ("completed", "missed", "cancelled"),
        )
        amendment = await store.insert_amendment(
            conn,
            tenant,
            {
                "id": new_id(),
                "visit_id": visit.id,
                "carer_id": data.carer_id,
                "check_in_at": data.check_in_at,
                "check_out_at": data.check_out_at,
                "extension_min": data.extension_min,
                "planned_min": data.planned_min,
                "move_to_visit_id": data.move_to_visit_id,
                "reason_code": data.reason_code,
                "note": data.note,
                "proposed_by": caller.client_id,
                "proposed_role": caller.role,
                "proposed_at": now,
                "status": "approved" if automatic else "pending",
                "auto_approved": automatic,
                "decided_by": "auto" if automatic else None,
                "decided_at": now if automatic else None,
                "payable_before": payable_before,
                "payable_after": payable_after,
                "banked_before": banked_before,
                "banked_after": banked_after,
                "decided_payable_before": payable_before if automatic else None,
                "decided_payable_after": payable_after if automatic else None,
            },
        )
        if automatic:
            await _apply(conn, tenant, amendment, now)
    return amendment.id


async def _decide(conn: asyncpg.Connection, caller: Principal, amendment_id: UUID, status: str) -> Amendment:
    """Approve or reject a pending amendment, recording what its visits paid before and after."""
    tenant = caller.tenant
    async with conn.transaction():
        amendment = found_or_404(await store.get_amendment(conn, tenant, amendment_id, lock=True), "amendment")
        if amendment.status != "pending":
            raise problem(409, "already_decided", f"this amendment was already {amendment.status}")
        if amendment.proposed_by == caller.client_id:
            raise problem(403, "forbidden", "the proposer may not decide its own amendment")
        # Its visits first, at once and in id order as a proposal takes them (decision 150); a rejection
        # too, so that what it records before and after is one state. Then the time: a decision that
        # waited for another's visits is dated after the other committed, so the latest decision is the
        # one that came last (decision 149).
        await service.hold_visits(conn, tenant, _touched(amendment), store.lock_whole_visits)
        now = await store.clock(conn)
        if status == "approved":
            # Brought up to date first (an event still queued, say), so that before and after differ by
            # this decision alone; the visits stay locked until it commits. A rejection changes nothing.
            await service.reconcile_visits(conn, tenant, _touched(amendment), now)
        payable_before, _ = await store.stored_payable(conn, tenant, amendment.visit_id)
        target = amendment.move_to_visit_id
        # A move changes the visit its events go to as well: both sides are kept (decision 148).
        target_before = (await store.stored_payable(conn, tenant, target))[0] if target else None
        await store.decide_amendment(
            conn,
            tenant,
            amendment.id,
            status=status,
            decided_by=caller.client_id,
            decided_at=now,
            payable_before=payable_before,
            target_payable_before=target_before,
        )
        if status == "approved":
            await _apply(conn, tenant, amendment, now)
        payable_after, _ = await store.stored_payable(conn, tenant, amendment.visit_id)
        target_after = (await store.stored_payable(conn, tenant, target))[0] if target else None
        await store.record_payable_after(conn, tenant, amendment.id, payable_after, target_after)
    return found_or_404(await store.get_amendment(conn, tenant, amendment.id), "amendment")


async def _apply(conn: asyncpg.Connection, tenant_id: UUID, amendment: Amendment, now: datetime) -> None:
    """An approved amendment: approve an unplanned visit it sizes, and reconcile what it touches."""
    if amendment.planned_min is not None:
        # Locked before it is read: approval writes what it read back (decision 125).
        visit = await planning_store.get_visit(conn, tenant_id, amendment.visit_id, lock=True)
        assert visit is not None
        await planning_store.approve_visit(conn, tenant_id, visit)
        await planning_store.set_planned_min(conn, tenant_id, visit.id, amendment.planned_min)
    await service.reconcile_visits(conn, tenant_id, _touched(amendment), now)


def _touched(amendment: Amendment) -> list[UUID]:
    """The visits an amendment changes: its own, and the one a move sends events to."""
    return [amendment.visit_id] + ([amendment.move_to_visit_id] if amendment.move_to_visit_id else [])


class ExceptionController(Controller):
    """Exceptions on visits' current states that nobody has acknowledged."""

    tags = ["reconciliation"]
    guards = [allow("commissioner", "provider")]

    @get("/v1/exceptions", operation_id="listExceptions")
    async def list_exceptions(
        self,
        conn: Conn,
        caller: Caller,
        kind: Annotated[ExceptionKind | None, QueryParameter()] = None,
        provider_id: Annotated[UUID | None, QueryParameter()] = None,
        person_id: Annotated[UUID | None, QueryParameter()] = None,
        limit: LimitParam = 50,
        cursor: CursorParam = None,
    ) -> Page[VisitExceptions]:
        """Visits with open exceptions, filterable by kind, provider and person (a provider sees its own)."""
        rows = await store.open_exceptions(
            conn,
            caller.tenant,
            kind=kind,
            provider_id=provider_scope(caller, provider_id),
            person_id=person_id,
            after=decode_cursor(cursor),
            limit=limit + 1,
        )
        return page_of(rows, limit)

    @post("/v1/visits/{visit_id:uuid}/exceptions/{kind:str}/ack", operation_id="acknowledgeException", status_code=200)
    async def acknowledge(
        self,
        visit_id: Annotated[UUID, PathParameter()],
        kind: Annotated[str, PathParameter()],
        conn: Conn,
        caller: Caller,
    ) -> VisitExceptions:
        """Acknowledge one exception of a visit; the answer lists what is still open on it."""
        async with conn.transaction():
            visit = await _visit_in_reach(conn, caller, visit_id)
            if kind not in visit.exceptions:
                raise problem(422, "not_present", f"the visit has no {kind!r} exception now")
            await store.acknowledge(conn, caller.tenant, visit.id, kind, caller.client_id)
        remaining = await store.open_exceptions(
            conn, caller.tenant, kind=None, provider_id=None, person_id=None, visit_id=visit_id
        )
        return (
            remaining[0]
            if remaining
            else VisitExceptions(
                id=visit.id,
                person_id=visit.person_id,
                provider_id=visit.provider_id,
                planned_start=visit.planned_start,
                status=visit.status,
                exceptions=[],
            )
        )
