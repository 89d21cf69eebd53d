"""An unplanned visit's approval racing the carer's check-in (decision 125): whichever commits first,
the other's write keeps it. The approval is `reconcile.api._apply` (an approved amendment sizing the
visit); the check-in is ingest moving an unplanned visit's start to its earliest check-in. Through the
`visits` view of 0018 each undid the other: the waiting write put back what its snapshot had seen.
Then the visit endpoints (change, cancel, approve) racing each other and reconciliation over visits linked
by moves (decision 156): each locked its visit before the visits its moves lead to, and deadlocked."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import msgspec
import pytest

from infra.db import connect
from schemas.ingest import EventAnswer, VisitEventIn
from schemas.reconcile import Amendment
from services.common.ids import new_id
from services.ingest.accept import Poster, Submission, accept, accept_committed
from services.planning import store as planning_store
from services.reconcile import store as reconcile_store
from services.reconcile.api import _apply
from tests.integration.test_amendments import in_background, until_waiting
from tests.integration.test_ingest import at, event, yesterday
from tests.integration.test_planning import plan_body
from tests.integration.test_visit_states import until_waiting_for_a_lock
from tests.support import Client, World, approved_move, build_world, create, extra_visit


@pytest.fixture
async def world(client: Client, db: asyncpg.Connection) -> World:
    built = await build_world(client, db)
    await create(client, built.a.commissioner, "/v1/care-plans", plan_body(built.a))
    return built


async def unplanned_visit(client: Client, world: World, check_out: datetime) -> UUID:
    """An unplanned visit made by a carer's check-out alone (its start is the check-out until a check-in)."""
    made = await client.post(
        "/v1/visit-events",
        json=event("check_out", check_out, person_id=world.a.person_id),
        headers=world.a.carer_headers[0],
    )
    assert made.status_code == 201, made.text
    return UUID(made.json()["visit_id"])


def check_in(world: World, when: datetime) -> list[Submission]:
    body = msgspec.json.encode(event("check_in", when, person_id=world.a.person_id))
    poster = Poster(UUID(world.a.carers[0]), UUID(world.a.providers[0]))
    return [Submission(poster, msgspec.json.decode(body, type=VisitEventIn))]


def sizing(world: World, visit_id: UUID, minutes: int) -> Amendment:
    """An approved amendment giving an unplanned visit its length (what `_apply` acts on)."""
    now = datetime.now(tz=UTC)
    return Amendment(
        id=new_id(),
        visit_id=visit_id,
        carer_id=UUID(world.a.carers[0]),
        reason_code="other",
        note="extra visit",
        check_in_at=None,
        check_out_at=None,
        extension_min=None,
        planned_min=minutes,
        move_to_visit_id=None,
        status="approved",
        auto_approved=False,
        proposed_by="provider",
        proposed_at=now,
        decided_by="commissioner",
        decided_at=now,
        payable_before=0,
        payable_after=0,
        banked_before=0,
        banked_after=0,
        decided_payable_before=0,
        decided_payable_after=None,
    )


async def plan_of(db: asyncpg.Connection, visit_id: UUID) -> dict[str, Any]:
    row = await db.fetchrow(
        "SELECT approval, planned_min, planned_start, band_start FROM visit_plans WHERE id = $1", visit_id
    )
    assert row is not None
    return dict(row)


async def test_a_check_in_that_waited_for_an_approval_leaves_the_approved_visit_as_approved(
    client: Client, world: World, db: asyncpg.Connection, database_url: str, pool: asyncpg.Pool
) -> None:
    """The approval commits first: the check-in, which moves only a pending visit's start, finds the
    visit approved and leaves it (as if it had come after), and the approval stays."""
    tenant, day = UUID(world.a.tenant_id), yesterday()
    visit_id = await unplanned_visit(client, world, at(day, "15:40"))
    before = await plan_of(db, visit_id)
    assert (before["approval"], before["planned_min"]) == ("pending", 0)

    decider = await connect(database_url)
    try:
        transaction = decider.transaction()
        await transaction.start()
        await _apply(decider, tenant, sizing(world, visit_id, 40), datetime.now(tz=UTC))
        # `accept_committed` is what the ingest endpoint's group committer runs (here in this loop: the
        # test client would block it until the app answers).
        arriving = asyncio.create_task(accept_committed(pool, tenant, check_in(world, at(day, "15:00"))))
        # Until the check-in's connection (one of the pool's) waits for the approval's lock.
        await until_waiting_for_a_lock(db, arriving, other_than=[decider.get_server_pid()])
        await transaction.commit()
        (answer,) = await arriving
    finally:
        await decider.close()
    assert isinstance(answer, EventAnswer), answer
    assert (answer.status, answer.visit_id) == ("accepted", visit_id)
    after = await plan_of(db, visit_id)
    assert (after["approval"], after["planned_min"]) == ("approved", 40)
    assert (after["planned_start"], after["band_start"]) == (before["planned_start"], before["band_start"])


async def test_an_approval_that_waited_for_a_check_in_keeps_the_moved_start(
    client: Client, world: World, db: asyncpg.Connection, database_url: str
) -> None:
    """The check-in commits first: the visit starts at it, and the approval that waited for the row
    approves that visit without putting the old start back."""
    tenant, day = UUID(world.a.tenant_id), yesterday()
    visit_id = await unplanned_visit(client, world, at(day, "15:40"))
    first_in = at(day, "15:00")

    ingest, decider = await connect(database_url), await connect(database_url)
    try:
        transaction = ingest.transaction()
        await transaction.start()
        (answer,) = await accept(ingest, tenant, check_in(world, first_in), datetime.now(tz=UTC))
        assert isinstance(answer, EventAnswer), answer
        assert answer.visit_id == visit_id

        async def decide() -> None:
            async with decider.transaction():
                await _apply(decider, tenant, sizing(world, visit_id, 40), datetime.now(tz=UTC))

        deciding = asyncio.create_task(decide())
        await until_waiting_for_a_lock(db, deciding, pid=decider.get_server_pid())
        await transaction.commit()
        await deciding
    finally:
        await ingest.close()
        await decider.close()
    after = await plan_of(db, visit_id)
    assert (after["approval"], after["planned_min"]) == ("approved", 40)
    assert (after["planned_start"], after["band_start"]) == (first_in, first_in)


# Decision 156: the visit endpoints (change, cancel, approve) lock every visit they reconcile at once.


async def crossing_moves(client: Client, world: World) -> tuple[UUID, UUID]:
    """Two of tomorrow's visits, X and Y (X made first, so the lower id), with carer 0's events moved from
    X to Y and back, both approved: reconciling either reconciles the other with it."""
    tw = world.a
    x, y = [await extra_visit(client, tw, at(tomorrow(), hhmm)) for hhmm in ("08:00", "10:00")]
    await approved_move(client, tw, x, y)
    await approved_move(client, tw, y, x)
    assert x < y
    return x, y


def tomorrow() -> datetime:
    return yesterday() + timedelta(days=2)


async def test_a_visit_changed_while_the_visit_its_events_move_to_is_cancelled_does_not_deadlock(
    client: Client, world: World, db: asyncpg.Connection, database_url: str
) -> None:
    """Decision 156: a change (PATCH) or cancellation locked its visit, and its reconciliation then locked
    the visits approved moves lead to. With moves X to Y and Y to X, changing X while Y was cancelled left
    each holding one visit and waiting for the other, until PostgreSQL broke the deadlock and one answered
    500. The carers' and contracts' tables are held here so that each request stops after its first lock
    (the change checks its carers, the cancellation reads its contract's notice); now each takes both
    visits at once, in id order, before anything else, and the second waits for the first."""
    tw = world.a
    x, y = await crossing_moves(client, world)
    holder = await connect(database_url)
    try:
        async with holder.transaction():
            await holder.execute("LOCK TABLE carers, contracts IN ACCESS EXCLUSIVE MODE")
            changing = in_background(
                client, f"/v1/visits/{x}", tw.commissioner, {"carer_ids": [tw.carers[0]]}, method="PATCH"
            )
            await until_waiting(db, 1, changing)
            notice = {"by": "provider", "notified_at": datetime.now(tz=UTC).isoformat(), "reason": "no carer"}
            cancelling = in_background(client, f"/v1/visits/{y}/cancel", tw.commissioner, notice)
            await until_waiting(db, 2, changing, cancelling)
        answers = await asyncio.wait_for(asyncio.gather(changing, cancelling), 20)
    finally:
        await holder.close()
    assert [answer.status_code for answer in answers] == [200, 200], [answer.text for answer in answers]
    assert answers[0].json()["carer_ids"] == [tw.carers[0]]
    assert answers[1].json()["status"] == "cancelled"


async def test_approving_a_requested_visit_while_it_is_reconciled_does_not_deadlock(
    client: Client, world: World, db: asyncpg.Connection, database_url: str
) -> None:
    """Decision 156: approving a requested visit R locked R, then reconciled it with V, the visit an approved
    move sends its carer's events to, taking V after R although V's id is lower. A reconciliation of R (a
    drainer's, the worker's) takes V and then R, in id order. The holder here is that reconciliation, stopped
    between the two: it holds V when the approval starts, and asks for R (as its one statement does) once the
    approval waits for V; PostgreSQL broke the deadlock and the approval answered 500 (the holder's own
    deadlock check is put off so that the approval's finds it). Now the approval takes V and R at once, in id
    order, and waits for V holding nothing."""
    tw = world.a
    tenant = UUID(tw.tenant_id)
    v = await extra_visit(client, tw, at(tomorrow(), "08:00"))
    requested = await create(
        client,
        tw.provider_headers[0],
        "/v1/visits",
        {
            "person_id": tw.person_id,
            "contract_id": tw.contracts[0],
            "planned_start": at(tomorrow(), "10:00").isoformat(),
            "planned_min": 30,
        },
    )
    r = UUID(requested["id"])
    assert requested["approval"] == "pending"
    assert v < r
    await approved_move(client, tw, r, v)
    holder = await connect(database_url)
    try:
        async with holder.transaction():
            await holder.execute("SET LOCAL deadlock_timeout = '20s'")
            await reconcile_store.lock_visits(holder, tenant, [v])
            approving = in_background(client, f"/v1/visits/{r}/approve", tw.commissioner)
            await until_waiting(db, 1, approving)
            await asyncio.wait_for(reconcile_store.lock_visits(holder, tenant, [v, r]), 20)
        answer = await asyncio.wait_for(approving, 20)
    finally:
        await holder.close()
    assert answer.status_code == 200, answer.text
    assert answer.json()["approval"] == "approved"


async def test_a_visit_change_picked_as_a_deadlock_s_victim_is_run_again_and_then_refused_whole(
    client: Client, world: World, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decision 156, as decision 150 for amendments: what is left to deadlock (a chain of moves approved
    while a visit endpoint waited) rolls the request back whole; it is run again, and one that loses every
    try answers 409 `conflict`, not 500, with nothing of it kept."""
    tw = world.a
    x, y = await crossing_moves(client, world)
    real = planning_store.cancel_visit
    victim = [True]  # this many tries are picked, one after the other

    async def picked(*args: Any, **kwargs: Any) -> Any:
        cancelled = await real(*args, **kwargs)  # written, then rolled back with the rest of the try
        if victim and victim.pop():
            raise asyncpg.DeadlockDetectedError("deadlock detected")
        return cancelled

    monkeypatch.setattr(planning_store, "cancel_visit", picked)
    notice = {"by": "provider", "notified_at": datetime.now(tz=UTC).isoformat(), "reason": "no carer"}
    cancelled = await client.post(f"/v1/visits/{x}/cancel", json=notice, headers=tw.commissioner)
    assert (cancelled.status_code, cancelled.json()["status"]) == (200, "cancelled"), cancelled.text
    victim[:] = [True] * 3
    refused = await client.post(f"/v1/visits/{y}/cancel", json=notice, headers=tw.commissioner)
    assert (refused.status_code, refused.json()["code"]) == (409, "conflict"), refused.text
    assert await db.fetchval("SELECT status FROM visits WHERE id = $1", y) == "planned"
    assert await db.fetchval("SELECT cancellation FROM visits WHERE id = $1", y) is None
