"""An unplanned visit's approval racing the carer's check-in (decision 125): whichever commits first,
the other's write keeps it. The approval is `reconcile.api._apply` (an approved amendment sizing the
visit); the check-in is ingest moving an unplanned visit's start to its earliest check-in. Through the
`visits` view of 0018 each undid the other: the waiting write put back what its snapshot had seen."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
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
from services.reconcile.api import _apply
from tests.integration.test_ingest import at, event, yesterday
from tests.integration.test_planning import plan_body
from tests.integration.test_visit_states import until_waiting_for_a_lock
from tests.support import Client, World, build_world, create


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
