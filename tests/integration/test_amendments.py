"""Amendments and exceptions over HTTP: auto-approval, commissioner decisions, the trail of payable
minutes, moves between visits, approving unplanned visits, acknowledging exceptions."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest

from infra.db import connect
from services.common.auth import Principal
from services.reconcile import jobs
from services.reconcile import service as reconcile_service
from services.reconcile import store as reconcile_store
from services.reconcile.api import _decide
from tests.integration.test_ingest import at, event, visit_at, yesterday
from tests.integration.test_planning import plan_body
from tests.support import (
    Client,
    World,
    approved_move,
    build_world,
    create,
    credential_headers,
    decide,
    extra_visit,
    reconciled,
    requeue_by,
)


@pytest.fixture
async def world(client: Client, db: asyncpg.Connection) -> World:
    built = await build_world(client, db)
    await create(client, built.a.commissioner, "/v1/care-plans", plan_body(built.a))
    return built


async def visited(
    client: Client, world: World, db: asyncpg.Connection, pool: asyncpg.Pool, *events: dict[str, Any]
) -> UUID:
    """Yesterday's 08:00 visit with these events posted and reconciled."""
    visit_id = await visit_at(db, world.a.person_id, yesterday())
    for body in events:
        response = await client.post(
            "/v1/visit-events", json={**body, "visit_id": str(visit_id)}, headers=world.a.carer_headers[0]
        )
        assert response.status_code == 201, response.text
    await reconciled(pool)
    return visit_id


async def propose(client: Client, headers: dict[str, str], visit_id: UUID, **body: Any) -> Any:
    return await client.post(f"/v1/visits/{visit_id}/amendments", json=body, headers=headers)


async def forgot_check_out(client: Client, world: World, visit_id: UUID, hhmm: str) -> Any:
    """Provider 0 proposes carer 0's forgotten check-out at `hhmm` yesterday."""
    return await propose(
        client,
        world.a.provider_headers[0],
        visit_id,
        carer_id=world.a.carers[0],
        check_out_at=at(yesterday(), hhmm).isoformat(),
        reason_code="forgot_check_out",
    )


async def get_visit(client: Client, world: World, visit_id: UUID) -> dict[str, Any]:
    result: dict[str, Any] = (await client.get(f"/v1/visits/{visit_id}", headers=world.a.commissioner)).json()
    return result


async def test_a_forgotten_check_out_waits_for_a_commissioner(
    client: Client, world: World, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    visit_id = await visited(client, world, db, pool, event("check_in", at(yesterday(), "08:00")))
    provider = world.a.provider_headers[0]
    made = await forgot_check_out(client, world, visit_id, "08:30")
    assert made.status_code == 201, made.text
    amendment = made.json()
    assert amendment["status"] == "pending"  # pay rises from 0 to 30: not automatic
    assert (amendment["payable_before"], amendment["payable_after"]) == (0, 30)
    assert (await get_visit(client, world, visit_id))["actual"]["payable_min"] == 0
    assert (await client.post(f"/v1/amendments/{amendment['id']}/approve", headers=provider)).status_code == 403
    approved = await client.post(f"/v1/amendments/{amendment['id']}/approve", headers=world.a.commissioner)
    assert approved.status_code == 200
    assert approved.json()["status"] == "approved"
    assert (approved.json()["decided_payable_before"], approved.json()["decided_payable_after"]) == (0, 30)
    shown = await get_visit(client, world, visit_id)
    assert shown["actual"]["payable_min"] == 30
    assert shown["actual"]["attendances"][0]["verified_in_home"] is False  # amended
    again = await client.post(f"/v1/amendments/{amendment['id']}/reject", headers=world.a.commissioner)
    assert again.status_code == 409
    assert again.json()["code"] == "already_decided"
    # the event itself is untouched
    assert await db.fetchval("SELECT count(*) FROM visit_events WHERE kind = 'check_out'") == 0


async def test_a_decision_s_payable_before_includes_what_was_still_queued(
    client: Client, world: World, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    """The session-10 review's suspicion: `decided_payable_before` was read from the stored state, which
    can lag an event whose reconciliation is still queued; the event's change was then put down to the
    decision. Now the visit is brought up to date first."""
    visit_id = await visited(client, world, db, pool, event("check_in", at(yesterday(), "08:00")))
    made = await forgot_check_out(client, world, visit_id, "08:30")
    assert made.json()["status"] == "pending", made.text
    late_out = event("check_out", at(yesterday(), "08:20"), visit_id=str(visit_id))
    assert (await client.post("/v1/visit-events", json=late_out, headers=world.a.carer_headers[0])).status_code == 201
    await reconciled(pool)
    assert (await get_visit(client, world, visit_id))["actual"]["payable_min"] == 20
    async with db.transaction():  # as if the check-out's reconciliation were still queued
        await db.execute("UPDATE visit_states SET payable_min = 0 WHERE visit_id = $1", visit_id)
        await reconcile_store.hold_back(
            db, UUID(world.a.tenant_id), visit_id, datetime.now(tz=UTC) + timedelta(hours=1)
        )
    approved = await decide(client, world.a.commissioner, made)
    assert (approved["decided_payable_before"], approved["decided_payable_after"]) == (20, 30)


async def test_an_amendment_can_be_rejected_on_a_visit_that_cannot_be_reconciled(
    client: Client, world: World, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    """A rejection changes nothing, so it does not reconcile the visit first (the review of decision 134):
    a visit whose contract's rules were broken by hand (decision 129) can still have amendments rejected."""
    visit_id = await visited(client, world, db, pool, event("check_in", at(yesterday(), "08:00")))
    made = await forgot_check_out(client, world, visit_id, "08:30")
    await db.execute(
        """UPDATE contracts SET pay_rules = '{"grace_min": "x"}' WHERE id = $1""", UUID(world.a.contracts[0])
    )
    rejected = await decide(client, world.a.commissioner, made, "reject")
    assert (rejected["decided_payable_before"], rejected["decided_payable_after"]) == (0, 0)


async def test_decisions_of_the_same_microsecond_apply_in_id_order(
    client: Client, world: World, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    """Two approved amendments of one field decided at the same instant: the later id wins, every time the
    visit is recomputed (before, the order was whatever the database returned)."""
    visit_id = await visited(client, world, db, pool, event("check_in", at(yesterday(), "08:00")))
    made = [await forgot_check_out(client, world, visit_id, hhmm) for hhmm in ("08:20", "08:30")]
    for response in made:
        await decide(client, world.a.commissioner, response)
    ids = sorted(UUID(response.json()["id"]) for response in made)
    winner = 20 if ids[-1] == UUID(made[0].json()["id"]) else 30
    instant = datetime.now(tz=UTC)
    for amendment_id in reversed(ids):  # the later id written first: the table hands it back first
        await db.execute("UPDATE amendments SET decided_at = $2 WHERE id = $1", amendment_id, instant)
    state = (await reconcile_service.compute(db, UUID(world.a.tenant_id), [visit_id], instant)).states
    assert state[visit_id].payable_min == winner


async def test_a_decrease_approves_itself(
    client: Client, world: World, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    visit_id = await visited(
        client,
        world,
        db,
        pool,
        event("check_in", at(yesterday(), "08:00")),
        event("check_out", at(yesterday(), "08:30")),
    )
    made = await propose(
        client,
        world.a.provider_headers[0],
        visit_id,
        carer_id=world.a.carers[0],
        check_out_at=at(yesterday(), "08:15").isoformat(),
        reason_code="device_failure",
    )
    assert made.json()["status"] == "approved"
    assert made.json()["auto_approved"] is True
    # the automatic decision keeps its trail as a commissioner's does (a review finding: `_after` was null)
    assert (made.json()["decided_payable_before"], made.json()["decided_payable_after"]) == (30, 15)
    assert (await get_visit(client, world, visit_id))["actual"]["payable_min"] == 15


async def test_the_proposer_may_not_decide_and_other_commissioners_may(
    client: Client, world: World, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    visit_id = await visited(client, world, db, pool, event("check_in", at(yesterday(), "08:00")))
    made = await propose(
        client,
        world.a.commissioner,
        visit_id,
        carer_id=world.a.carers[0],
        check_out_at=at(yesterday(), "08:30").isoformat(),
        reason_code="other",
        note="phone died",
    )
    amendment_id = made.json()["id"]
    assert (await client.post(f"/v1/amendments/{amendment_id}/reject", headers=world.a.commissioner)).status_code == 403
    second = await credential_headers(client, world.a.commissioner, {"role": "commissioner"})
    rejected = await client.post(f"/v1/amendments/{amendment_id}/reject", headers=second)
    assert rejected.json()["status"] == "rejected"
    assert (await get_visit(client, world, visit_id))["actual"]["payable_min"] == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"reason_code": "other", "check_out_at": "2026-01-01T08:30:00Z"}, "note"),
        ({"reason_code": "forgot_check_out", "extension_min": 10}, "reason_code"),
        ({"reason_code": "forgot_check_out", "planned_min": 10}, "planned_min"),
        ({"reason_code": "forgot_check_out"}, "check_in_at"),
        (
            {
                "reason_code": "forgot_check_out",
                "check_in_at": "2026-01-01T09:00:00Z",
                "check_out_at": "2026-01-01T08:00:00Z",
            },
            "check_out_at",
        ),
        # a review finding: instants that overflow date arithmetic were a 500
        ({"reason_code": "no_signal", "check_out_at": "0001-01-01T00:00:00+01:00"}, "check_out_at"),
        ({"reason_code": "no_signal", "check_in_at": "9999-12-31T23:59:59-01:00"}, "check_in_at"),
        ({"reason_code": "no_signal", "check_out_at": "1900-01-01T00:00:00Z"}, "check_out_at"),
    ],
)
async def test_bad_amendments_are_422(
    client: Client, world: World, db: asyncpg.Connection, pool: asyncpg.Pool, body: dict[str, Any], field: str
) -> None:
    visit_id = await visited(client, world, db, pool, event("check_in", at(yesterday(), "08:00")))
    response = await propose(client, world.a.provider_headers[0], visit_id, carer_id=world.a.carers[0], **body)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == field
    assert await db.fetchval("SELECT count(*) FROM amendments") == 0


async def test_an_amendment_cannot_say_a_carer_came_or_left_in_the_future(
    client: Client, world: World, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    """A review finding (decision 147): an amendment corrects what happened, yet times ahead of the clock
    were taken, and once approved a visit planned for the day after tomorrow was `completed` and paid 30
    minutes before anyone had come. Such times are refused as an event's are (`clock_ahead`)."""
    tw = world.a
    visit_id = await visited(client, world, db, pool, event("check_in", at(yesterday(), "08:00")))
    tomorrow = datetime.now(tz=UTC) + timedelta(days=1)
    late = await propose(
        client,
        tw.provider_headers[0],
        visit_id,
        carer_id=tw.carers[0],
        check_out_at=tomorrow.isoformat(),
        reason_code="forgot_check_out",
    )
    assert late.status_code == 422, late.text
    assert (late.json()["code"], late.json()["errors"][0]["field"]) == ("clock_ahead", "check_out_at")
    start = datetime.now(tz=UTC) + timedelta(days=2)
    ahead = await extra_visit(client, tw, start)
    early = await propose(
        client,
        tw.provider_headers[0],
        ahead,
        carer_id=tw.carers[0],
        check_in_at=start.isoformat(),
        check_out_at=(start + timedelta(minutes=30)).isoformat(),
        reason_code="forgot_check_in",
    )
    assert early.status_code == 422, early.text
    assert (early.json()["code"], early.json()["errors"][0]["field"]) == ("clock_ahead", "check_in_at")
    assert await db.fetchval("SELECT count(*) FROM amendments") == 0
    # a phone's few minutes of skew are allowed, as for events
    now_ish = await propose(
        client,
        tw.provider_headers[0],
        visit_id,
        carer_id=tw.carers[0],
        check_out_at=(datetime.now(tz=UTC) + timedelta(minutes=2)).isoformat(),
        reason_code="forgot_check_out",
    )
    assert now_ish.status_code == 201, now_ish.text


async def test_reach(client: Client, world: World, db: asyncpg.Connection, pool: asyncpg.Pool) -> None:
    visit_id = await visited(client, world, db, pool, event("check_in", at(yesterday(), "08:00")))
    body = {
        "carer_id": world.a.carers[0],
        "check_out_at": at(yesterday(), "08:30").isoformat(),
        "reason_code": "forgot_check_out",
    }
    assert (await propose(client, world.a.provider_headers[1], visit_id, **body)).status_code == 404
    assert (await propose(client, world.b.commissioner, visit_id, **body)).status_code == 404
    assert (await propose(client, world.a.carer_headers[0], visit_id, **body)).status_code == 403
    other_carer = {**body, "carer_id": world.a.carers[1]}
    assert (await propose(client, world.a.provider_headers[0], visit_id, **other_carer)).status_code == 404


async def test_an_extension_lifts_the_cap_once_approved(
    client: Client, world: World, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    visit_id = await visited(
        client,
        world,
        db,
        pool,
        event("check_in", at(yesterday(), "08:00")),
        event("check_out", at(yesterday(), "08:50")),
    )
    assert (await get_visit(client, world, visit_id))["actual"]["payable_min"] == 30
    made = await propose(
        client,
        world.a.provider_headers[0],
        visit_id,
        carer_id=world.a.carers[0],
        extension_min=15,
        reason_code="extended_visit_authorised",
    )
    assert made.json()["status"] == "pending"
    assert made.json()["payable_after"] == 45
    await decide(client, world.a.commissioner, made)
    assert (await get_visit(client, world, visit_id))["actual"]["payable_min"] == 45


async def test_an_amendment_to_a_requested_visit_awaiting_approval_waits_for_a_commissioner(
    client: Client, world: World, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    """A review finding (decision 145): a provider's requested visit pays 0 until a commissioner approves it,
    so any amendment left its pay at 0 → 0 and approved itself; approving the visit then paid the amended
    times (10 delivered minutes became 60) without anyone having looked at the amendment."""
    tw = world.a
    start = datetime.now(tz=UTC) - timedelta(hours=5)
    requested = await client.post(
        "/v1/visits",
        json={
            "person_id": tw.person_id,
            "contract_id": tw.contracts[0],
            "planned_start": start.isoformat(),
            "planned_min": 60,
        },
        headers=tw.provider_headers[0],
    )
    assert requested.json()["approval"] == "pending", requested.text
    visit_id = UUID(requested.json()["id"])
    for body in (event("check_in", start), event("check_out", start + timedelta(minutes=10))):
        posted = await client.post(
            "/v1/visit-events", json={**body, "visit_id": str(visit_id)}, headers=tw.carer_headers[0]
        )
        assert posted.status_code == 201, posted.text
    await reconciled(pool)
    made = await propose(
        client,
        tw.provider_headers[0],
        visit_id,
        carer_id=tw.carers[0],
        check_out_at=(start + timedelta(minutes=60)).isoformat(),
        reason_code="forgot_check_out",
    )
    assert made.status_code == 201, made.text
    assert (made.json()["status"], made.json()["auto_approved"]) == ("pending", False)
    approved_visit = await client.post(f"/v1/visits/{visit_id}/approve", headers=tw.commissioner)
    assert approved_visit.status_code == 200, approved_visit.text
    assert approved_visit.json()["actual"]["payable_min"] == 10  # what was delivered, until the amendment is decided
    decided = await decide(client, tw.commissioner, made)
    assert (decided["decided_payable_before"], decided["decided_payable_after"]) == (10, 60)


async def test_an_unplanned_visit_is_approved_by_sizing_it(
    client: Client, world: World, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    carer = world.a.carer_headers[0]
    day = yesterday()
    for body in (
        event("check_in", at(day, "15:00"), person_id=world.a.person_id),
        event("check_out", at(day, "15:40"), person_id=world.a.person_id),
    ):
        response = await client.post("/v1/visit-events", json=body, headers=carer)
    visit_id = UUID(response.json()["visit_id"])
    await reconciled(pool)
    shown = await get_visit(client, world, visit_id)
    assert shown["status"] == "unplanned"
    assert shown["exceptions"] == ["unplanned"]
    # planned minutes are the visit's, and a move's fields go with the events to the other visit
    both = await propose(
        client,
        world.a.provider_headers[0],
        visit_id,
        carer_id=world.a.carers[0],
        planned_min=45,
        move_to_visit_id=str(await visit_at(db, world.a.person_id, day)),
        reason_code="wrong_visit_selected",
    )
    assert (both.status_code, both.json()["errors"][0]["field"]) == (422, "planned_min"), both.text
    made = await propose(
        client,
        world.a.provider_headers[0],
        visit_id,
        carer_id=world.a.carers[0],
        planned_min=45,
        reason_code="schedule_error",
    )
    assert made.json()["status"] == "pending"  # never automatic for unplanned visits
    await decide(client, world.a.commissioner, made)
    approved = await get_visit(client, world, visit_id)
    assert approved["approval"] == "approved"
    assert approved["planned_min"] == 45
    assert approved["status"] == "completed"
    assert approved["actual"]["payable_min"] == 45  # 40 minutes is within grace of 45
    assert approved["exceptions"] == []
    # DOMAIN.md: never automatic for unplanned visits, approved ones too (decision 136): a decrease waits
    decrease = await propose(
        client,
        world.a.provider_headers[0],
        visit_id,
        carer_id=world.a.carers[0],
        check_out_at=at(day, "15:20").isoformat(),
        reason_code="device_failure",
    )
    assert decrease.status_code == 201, decrease.text
    assert (decrease.json()["status"], decrease.json()["payable_before"], decrease.json()["payable_after"]) == (
        "pending",
        45,
        20,
    )


async def test_a_wrong_visit_is_moved(client: Client, world: World, db: asyncpg.Connection, pool: asyncpg.Pool) -> None:
    day = yesterday() - timedelta(days=1)
    wrong = await visited(
        client,
        world,
        db,
        pool,
        event("check_in", at(yesterday(), "08:00")),
        event("check_out", at(yesterday(), "08:30")),
    )
    right = await visit_at(db, world.a.person_id, day)
    made = await propose(
        client,
        world.a.provider_headers[0],
        wrong,
        carer_id=world.a.carers[0],
        move_to_visit_id=str(right),
        reason_code="wrong_visit_selected",
    )
    assert made.json()["status"] == "pending"
    await decide(client, world.a.commissioner, made)
    assert (await get_visit(client, world, wrong))["actual"] is None
    moved = await get_visit(client, world, right)
    assert moved["actual"]["attendances"][0]["carer_id"] == world.a.carers[0]


@pytest.mark.parametrize("sized_first", [False, True], ids=["awaiting_approval", "approved"])
async def test_an_unplanned_visit_whose_events_all_move_to_the_right_visit_is_cancelled_not_missed(
    client: Client, world: World, db: asyncpg.Connection, pool: asyncpg.Pool, sized_first: bool
) -> None:
    """A review finding (decision 152): the carer's events matched no planned visit, so an unplanned visit
    was made for them, and an approved `wrong_visit_selected` move took them all to the visit they belonged
    to. Left with nothing, the unplanned visit stayed `unplanned` for ever (awaiting an approval there was
    nothing to give, pending on every invoice run) or, once its minutes had been approved, became `missed`
    (a missed visit in the reports, and for the alerts) though nobody ever planned it. It is cancelled
    now, paying 0 with no exception, and nothing counts it."""
    tw = world.a
    day = yesterday()
    right = await visit_at(db, tw.person_id, day)  # 08:00 for 30 minutes
    # 125 minutes after its planned start the check-in matches no visit: an unplanned visit is made.
    for body in (
        event("check_in", at(day, "10:05"), person_id=tw.person_id),
        event("check_out", at(day, "10:25"), person_id=tw.person_id),
    ):
        response = await client.post("/v1/visit-events", json=body, headers=tw.carer_headers[0])
        assert response.status_code == 201, response.text
    wrong = UUID(response.json()["visit_id"])
    assert wrong != right
    await reconciled(pool)
    if sized_first:
        made = await propose(
            client, tw.provider_headers[0], wrong, carer_id=tw.carers[0], planned_min=20, reason_code="schedule_error"
        )
        await decide(client, tw.commissioner, made)
        assert (await get_visit(client, world, wrong))["actual"]["payable_min"] == 20
    await approved_move(client, tw, wrong, right)
    await reconciled(pool)
    moved = await get_visit(client, world, right)
    assert (moved["status"], moved["actual"]["payable_min"]) == ("completed", 20)
    left = await get_visit(client, world, wrong)
    assert (left["status"], left["exceptions"]) == ("cancelled", [])
    assert (left["actual"]["payable_min"], left["actual"]["attendances"]) == (0, [])
    # Nothing open on it for anyone to approve or acknowledge.
    found = await client.get("/v1/exceptions", params={"person_id": tw.person_id}, headers=tw.commissioner)
    assert str(wrong) not in [item["id"] for item in found.json()["items"]]
    # The report of that day counts the visit that was planned and delivered, and nothing else.
    local_day = day.date().isoformat()
    report = await client.get(
        "/v1/reports/delivery", params={"from": local_day, "to": local_day}, headers=tw.commissioner
    )
    totals = report.json()["totals"]
    assert (totals["visits_planned"], totals["visits_delivered"], totals["visits_missed"]) == (1, 1, 0)
    assert totals["visits_cancelled"] == 0
    # The clock does not come back for it (the alerts look only at planned, in-progress and missed visits).
    assert await db.fetchval("SELECT next_check_at FROM visit_states WHERE visit_id = $1", wrong) is None
    await jobs.reconcile_due(pool, datetime.now(tz=UTC) + timedelta(days=2))
    assert (await get_visit(client, world, wrong))["status"] == "cancelled"
    tenant = UUID(tw.tenant_id)
    assert (await jobs.verify_tenant(pool, tenant)).differing == []
    # As the rules before decision 152 stored it: migration 0026 queues the visit, and it is put right.
    before = "missed" if sized_first else "unplanned"
    await db.execute("UPDATE visit_states SET status = $2, actual = NULL WHERE visit_id = $1", wrong, before)
    assert (await jobs.verify_tenant(pool, tenant)).differing == [wrong]
    await requeue_by(db, "0026_requeue_for_reconcile_review.sql")
    assert await db.fetchval("SELECT count(*) FROM reconcile_queue WHERE visit_id = $1", wrong) == 1
    await reconciled(pool)
    assert (await get_visit(client, world, wrong))["status"] == "cancelled"
    assert (await jobs.verify_tenant(pool, tenant)).differing == []


async def test_a_move_s_decision_records_what_both_visits_paid_before_and_after(
    client: Client, world: World, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    """A review finding (decision 148): a move's proposal records before = after (decision 31: "the
    effect is recorded at the decision"), but the decision recorded only the visit the events left. The
    trail read as a 30-minute cut, and the 30 minutes the other visit gained were written down nowhere."""
    tw = world.a
    wrong = await visited(
        client,
        world,
        db,
        pool,
        event("check_in", at(yesterday(), "08:00")),
        event("check_out", at(yesterday(), "08:30")),
    )
    right = await extra_visit(client, tw, at(yesterday(), "08:00"))
    made = await propose(
        client,
        tw.provider_headers[0],
        wrong,
        carer_id=tw.carers[0],
        move_to_visit_id=str(right),
        reason_code="wrong_visit_selected",
    )
    assert made.json()["status"] == "pending", made.text
    approved = await decide(client, tw.commissioner, made)
    assert (approved["decided_payable_before"], approved["decided_payable_after"]) == (30, 0)
    assert (approved["decided_target_payable_before"], approved["decided_target_payable_after"]) == (0, 30)
    assert (await get_visit(client, world, right))["actual"]["payable_min"] == 30
    # a rejected move changes neither visit, and says so; an amendment that is no move has no target
    back = await propose(
        client,
        tw.provider_headers[0],
        right,
        carer_id=tw.carers[0],
        move_to_visit_id=str(wrong),
        reason_code="wrong_visit_selected",
    )
    rejected = await decide(client, tw.commissioner, back, "reject")
    assert (rejected["decided_payable_before"], rejected["decided_payable_after"]) == (30, 30)
    assert (rejected["decided_target_payable_before"], rejected["decided_target_payable_after"]) == (0, 0)
    plain = await forgot_check_out(client, world, wrong, "08:30")
    assert (plain.json()["decided_target_payable_before"], plain.json()["decided_target_payable_after"]) == (
        None,
        None,
    )


async def test_open_exceptions_and_acknowledgement(
    client: Client, world: World, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    visit_id = await visited(
        client,
        world,
        db,
        pool,
        event("check_in", at(yesterday(), "08:00"), method="manual", location=None),
        event("check_out", at(yesterday(), "08:10")),
    )
    listed = (await client.get("/v1/exceptions", headers=world.a.provider_headers[0])).json()["items"]
    assert [(item["id"], item["exceptions"]) for item in listed] == [(str(visit_id), ["manual_event", "short_visit"])]
    assert (await client.get("/v1/exceptions", headers=world.a.provider_headers[1])).json()["items"] == []
    short_only = (
        await client.get("/v1/exceptions", params={"kind": "short_visit"}, headers=world.a.commissioner)
    ).json()
    assert short_only["items"][0]["exceptions"] == ["short_visit"]
    # a review finding: a misspelt kind answered 200 with no exceptions, as if there were none
    misspelt = await client.get("/v1/exceptions", params={"kind": "short-visit"}, headers=world.a.commissioner)
    assert misspelt.status_code == 422, misspelt.text
    assert misspelt.json()["errors"][0]["field"] == "kind"
    acked = await client.post(f"/v1/visits/{visit_id}/exceptions/manual_event/ack", headers=world.a.provider_headers[0])
    assert acked.status_code == 200
    assert acked.json()["exceptions"] == ["short_visit"]
    absent = await client.post(f"/v1/visits/{visit_id}/exceptions/overrun/ack", headers=world.a.commissioner)
    assert absent.status_code == 422


async def test_an_amendment_on_an_unfinished_visit_waits_for_a_commissioner(
    client: Client, world: World, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    """A review finding: before, pay 0 → 0 made an earlier check-in approve itself, and it paid later."""
    tw = world.a
    start = datetime.now(tz=UTC) - timedelta(minutes=40)
    made = await create(
        client,
        tw.commissioner,
        "/v1/visits",
        {
            "person_id": tw.person_id,
            "contract_id": tw.contracts[0],
            "planned_start": start.isoformat(),
            "planned_min": 60,
        },
    )
    late_in = event("check_in", start + timedelta(minutes=35), visit_id=made["id"])
    assert (await client.post("/v1/visit-events", json=late_in, headers=tw.carer_headers[0])).status_code == 201
    await reconciled(pool)
    proposed = await propose(
        client,
        tw.provider_headers[0],
        UUID(made["id"]),
        carer_id=tw.carers[0],
        check_in_at=start.isoformat(),
        reason_code="forgot_check_in",
    )
    assert proposed.json()["status"] == "pending"
    assert proposed.json()["auto_approved"] is False


async def test_an_unplanned_visit_is_not_approved_without_its_minutes(
    client: Client, world: World, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    day = yesterday()
    response = await client.post(
        "/v1/visit-events",
        json=event("check_in", at(day, "15:00"), person_id=world.a.person_id),
        headers=world.a.carer_headers[0],
    )
    refused = await client.post(f"/v1/visits/{response.json()['visit_id']}/approve", headers=world.a.commissioner)
    assert refused.status_code == 422
    assert refused.json()["code"] == "use_an_amendment"


async def test_an_event_arriving_on_the_visit_a_carer_was_moved_from_counts_on_the_target(
    client: Client, world: World, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    """A review finding: the late check-out reconciled only the visit it was posted to, so the visit the
    carer had been moved to kept `no_check_out` and paid 0."""
    tw = world.a
    right = await extra_visit(client, tw, at(yesterday(), "09:00"))
    wrong = await visited(client, world, db, pool, event("check_in", at(yesterday(), "09:00")))
    await approved_move(client, tw, wrong, right)
    late_out = event("check_out", at(yesterday(), "09:30"), visit_id=str(wrong))
    assert (await client.post("/v1/visit-events", json=late_out, headers=tw.carer_headers[0])).status_code == 201
    await reconciled(pool)
    shown = await get_visit(client, world, right)
    assert shown["status"] == "completed"
    assert shown["exceptions"] == []
    assert shown["actual"]["payable_min"] == 30


async def test_a_chain_of_moves_takes_the_carer_s_events_to_its_end(
    client: Client, world: World, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    """The session-10 review's open question: X's events moved to Y, then Y's moved on to Z. Y used to keep
    the events it had from X (a move followed one step), so Y and Z each had half an attendance. Now
    a move takes on the events earlier moves brought, and a check-out arriving late on X reconciles Z."""
    tw = world.a
    y, z = [await extra_visit(client, tw, at(yesterday(), hhmm)) for hhmm in ("09:00", "09:10")]
    x = await visited(client, world, db, pool, event("check_in", at(yesterday(), "09:00")))
    await approved_move(client, tw, x, y)
    await approved_move(client, tw, y, z)
    late_out = event("check_out", at(yesterday(), "09:30"), visit_id=str(x))
    assert (await client.post("/v1/visit-events", json=late_out, headers=tw.carer_headers[0])).status_code == 201
    await reconciled(pool)
    shown = {visit_id: await get_visit(client, world, visit_id) for visit_id in (x, y, z)}
    assert [shown[v]["actual"] for v in (x, y)] == [None, None]
    assert (shown[z]["status"], shown[z]["exceptions"], shown[z]["actual"]["payable_min"]) == ("completed", [], 30)
    assert (await jobs.verify_tenant(pool, UUID(tw.tenant_id))).differing == []
    # stored by the one-step rule before, these visits are reconciled again after the upgrade
    await requeue_by(db, "0021_requeue_for_rule_fixes.sql")
    assert {row["visit_id"] for row in await db.fetch("SELECT visit_id FROM reconcile_queue")} == {x, y, z}


async def test_a_time_fixed_on_the_wrong_visit_goes_with_the_move_to_the_right_one(
    client: Client, world: World, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    """The review's open question: a check-out fixed on Y, then the carer's events moved from Y to Z. The fix
    stayed on Y (an attendance with only a check-out: `no_check_in`, 0), and Z had no check-out."""
    tw = world.a
    z = await extra_visit(client, tw, at(yesterday(), "09:00"))
    y = await visited(client, world, db, pool, event("check_in", at(yesterday(), "09:00")))
    fixed = await forgot_check_out(client, world, y, "09:30")
    await decide(client, tw.commissioner, fixed)
    await approved_move(client, tw, y, z)
    moved_from, moved_to = await get_visit(client, world, y), await get_visit(client, world, z)
    assert moved_from["actual"] is None
    assert (moved_to["status"], moved_to["actual"]["payable_min"]) == ("completed", 30)
    assert (await jobs.verify_tenant(pool, UUID(tw.tenant_id))).differing == []


async def test_events_moved_back_count_where_they_were_moved_back_to(
    client: Client, world: World, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    """X's events moved to Y, and then (the coordinator's mistake) moved back from Y to X: they count on X
    again. A move followed one step used to swap them: X's events on Y, none on X."""
    tw = world.a
    y = await extra_visit(client, tw, at(yesterday(), "09:00"))
    x = await visited(
        client,
        world,
        db,
        pool,
        event("check_in", at(yesterday(), "08:00")),
        event("check_out", at(yesterday(), "08:30")),
    )
    await approved_move(client, tw, x, y)
    assert (await get_visit(client, world, y))["actual"]["payable_min"] == 30
    await approved_move(client, tw, y, x)
    back, moved_off = await get_visit(client, world, x), await get_visit(client, world, y)
    assert (back["status"], back["actual"]["payable_min"]) == ("completed", 30)
    assert moved_off["actual"] is None
    assert (await jobs.verify_tenant(pool, UUID(tw.tenant_id))).differing == []


async def test_a_carer_moved_twice_counts_only_on_the_latest_target(
    client: Client, world: World, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    """A review finding: after a move was corrected by a second move, the first target kept an attendance
    (completed, `no_check_in`) and, reconciled on its own, counted the carer's events again: paid twice."""
    tw = world.a
    targets = [await extra_visit(client, tw, at(yesterday(), hhmm)) for hhmm in ("09:00", "09:10")]
    wrong = await visited(
        client,
        world,
        db,
        pool,
        event("check_in", at(yesterday(), "09:00")),
        event("check_out", at(yesterday(), "09:30")),
    )
    for target in targets:
        await approved_move(client, tw, wrong, target)
    first, second = [await get_visit(client, world, target) for target in targets]
    assert (first["status"], first["actual"], first["exceptions"]) == ("missed", None, [])
    assert second["actual"]["payable_min"] == 30
    # and each visit recomputed on its own says the same as what is stored
    differing = (await jobs.verify_tenant(pool, UUID(tw.tenant_id))).differing
    assert differing == []
    for target in targets:
        alone = await reconcile_service.compute(db, UUID(tw.tenant_id), [target], datetime.now(tz=UTC))
        state = alone.states[target]
        assert state.payable_min == (0 if target is targets[0] else 30)


async def test_a_visit_events_were_moved_to_is_pending_while_an_event_on_the_source_is_queued(
    client: Client, world: World, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    """Review of decision 132: an event that arrives on X, whose carer's events were moved to Y, queues X
    only (the drainer adds Y when it reconciles X). Until then Y's stored state lags an input that is on
    its way, so `carebank reconcile` must report Y pending, not differing."""
    tw = world.a
    tenant = UUID(tw.tenant_id)
    y = await extra_visit(client, tw, at(yesterday(), "09:00"))
    x = await visited(client, world, db, pool, event("check_in", at(yesterday(), "09:00")))
    await approved_move(client, tw, x, y)
    before = await db.fetchrow("SELECT * FROM visit_states WHERE visit_id = $1", y)
    assert before is not None
    late_out = event("check_out", at(yesterday(), "09:30"), visit_id=str(x))
    assert (await client.post("/v1/visit-events", json=late_out, headers=tw.carer_headers[0])).status_code == 201
    await reconciled(pool)
    assert (await get_visit(client, world, y))["actual"]["payable_min"] == 30
    async with db.transaction():  # Y as it was before the check-out, X's reconciliation still on its way
        await db.execute(
            """UPDATE visit_states SET status = $2, actual = $3, exceptions = $4, payable_min = $5,
                      banked_min = $6, next_check_at = $7, reconciled_at = $8 WHERE visit_id = $1""",
            y,
            *(before[c] for c in ("status", "actual", "exceptions", "payable_min", "banked_min")),
            before["next_check_at"],
            before["reconciled_at"],
        )
        await reconcile_store.hold_back(db, tenant, x, datetime.now(tz=UTC) + timedelta(minutes=5))
    found = await jobs.verify_tenant(pool, tenant)
    assert x in found.pending
    assert (found.differing, y in found.pending) == ([], True)


async def test_an_event_reconciled_while_a_move_further_along_its_chain_is_approved_reaches_the_chain_s_end(
    client: Client, world: World, db: asyncpg.Connection, pool: asyncpg.Pool, database_url: str
) -> None:
    """Review of decision 133: X's events were moved to Y; a move of Y's on to Z is being approved (it holds
    Y and Z) when a check-out arrives on X. The drainer reconciling X read X's move targets before it waited
    for Y, so it missed Z: the check-out then counted on Z (X to Y to Z) but Z was never reconciled with it."""
    tw = world.a
    tenant = UUID(tw.tenant_id)
    y, z = [await extra_visit(client, tw, at(yesterday(), hhmm)) for hhmm in ("09:00", "09:10")]
    x = await visited(client, world, db, pool, event("check_in", at(yesterday(), "09:00")))
    await approved_move(client, tw, x, y)
    made = await propose(
        client,
        tw.provider_headers[0],
        y,
        carer_id=tw.carers[0],
        move_to_visit_id=str(z),
        reason_code="wrong_visit_selected",
    )
    assert made.json()["status"] == "pending", made.text
    approver = await connect(database_url)
    try:
        tx = approver.transaction()
        await tx.start()
        now = datetime.now(tz=UTC)  # the approval, as `_decide` does it, not yet committed
        await reconcile_store.decide_amendment(
            approver,
            tenant,
            UUID(made.json()["id"]),
            status="approved",
            decided_by="c",
            decided_at=now,
            payable_before=0,
            target_payable_before=0,
        )
        await reconcile_service.reconcile_visits(approver, tenant, [y, z], now)
        late_out = event("check_out", at(yesterday(), "09:30"), visit_id=str(x))
        assert (await client.post("/v1/visit-events", json=late_out, headers=tw.carer_headers[0])).status_code == 201
        draining = asyncio.create_task(jobs.drain_queue(pool))  # (or the app's own drainer) waits for Y
        await asyncio.sleep(1)
        await tx.commit()
        await draining
    finally:
        await approver.close()
    await reconciled(pool)
    shown = await get_visit(client, world, z)
    assert (shown["status"], shown["actual"]["payable_min"]) == ("completed", 30)
    assert (await jobs.verify_tenant(pool, tenant)).differing == []


def _second_commissioner(tenant: UUID) -> Principal:
    """A commissioner other than the proposer, deciding through `_decide` on a connection of the test's."""
    return Principal(client_id="commissioner-two", role="commissioner", tenant_id=tenant)


def in_background(
    client: Client, url: str, headers: dict[str, str], body: Any = None, method: str = "POST"
) -> asyncio.Task[httpx.Response]:
    """POST (or `method`) while the test goes on: the test client runs the app on its portal's thread and
    blocks its caller until the answer, so this request is sent from a thread of its own, over the same app."""

    transport: Any = client._transport  # Litestar's, which answers synchronously too

    def send() -> httpx.Response:
        # Not closed: closing an httpx client closes its transport, the app's, which the test goes on using.
        sender = httpx.Client(transport=transport, base_url=client.base_url)
        return sender.request(method, url, json=body, headers=headers)

    return asyncio.create_task(asyncio.to_thread(send))


async def until_waiting(db: asyncpg.Connection, backends: int, *tasks: asyncio.Task[Any]) -> None:
    """Return once `backends` backends other than `db`'s wait for a lock; fail if a task ends first, or
    after ten seconds."""
    for _ in range(500):
        if (
            await db.fetchval(
                """SELECT count(*) FROM pg_stat_activity
                   WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"""
            )
            >= backends
        ):
            return
        assert not any(task.done() for task in tasks), "a request finished without waiting for a lock"
        await asyncio.sleep(0.02)
    raise AssertionError(f"{backends} backends did not wait for a lock")


async def test_a_decision_that_waited_for_the_visit_is_dated_after_the_one_it_waited_for(
    client: Client, world: World, db: asyncpg.Connection, pool: asyncpg.Pool, database_url: str
) -> None:
    """Decision 149: approved amendments apply in order of decision time, the latest winning. A decision
    took its time before it waited for the visit, so one that waited behind another's commit was dated
    before it: the other's check-out won, the visit kept it, and the trail said the later decision
    changed nothing. Now the time is taken once the visits are held, so decision order is lock order."""
    tw = world.a
    tenant = UUID(tw.tenant_id)
    visit_id = await visited(client, world, db, pool, event("check_in", at(yesterday(), "08:00")))
    first, second = [await forgot_check_out(client, world, visit_id, hhmm) for hhmm in ("08:20", "08:30")]
    holder = await connect(database_url)
    try:
        async with holder.transaction():
            # held as a decision holds it (plan and state), so that the decision run here waits for nothing
            await reconcile_store.lock_whole_visits(holder, tenant, [visit_id])
            waiting = in_background(client, f"/v1/amendments/{first.json()['id']}/approve", tw.commissioner)
            await until_waiting(db, 1, waiting)
            # The second is decided, and commits, while the first waits for the visit.
            await _decide(holder, _second_commissioner(tenant), UUID(second.json()["id"]), "approved")
        answer = await asyncio.wait_for(waiting, 20)
    finally:
        await holder.close()
    assert answer.status_code == 200, answer.text
    later = answer.json()
    earlier = await db.fetchval("SELECT decided_at FROM amendments WHERE id = $1", UUID(second.json()["id"]))
    assert datetime.fromisoformat(later["decided_at"]) > earlier
    assert (later["decided_payable_before"], later["decided_payable_after"]) == (30, 20)
    assert (await get_visit(client, world, visit_id))["actual"]["payable_min"] == 20  # the later decision's
    assert (await jobs.verify_tenant(pool, tenant)).differing == []


async def test_an_amendment_that_approves_itself_after_waiting_for_the_visit_is_dated_after_the_decision_it_waited_for(
    client: Client, world: World, db: asyncpg.Connection, pool: asyncpg.Pool, database_url: str
) -> None:
    """Decision 149, for a proposal that approves itself: it measured its fall against the state the other
    decision committed (30 to 20) but was dated before that decision, so the visit went on paying 30."""
    tw = world.a
    tenant = UUID(tw.tenant_id)
    visit_id = await visited(
        client,
        world,
        db,
        pool,
        event("check_in", at(yesterday(), "08:00")),
        event("check_out", at(yesterday(), "08:10")),
    )
    rise = await forgot_check_out(client, world, visit_id, "08:30")
    assert rise.json()["status"] == "pending", rise.text
    holder = await connect(database_url)
    try:
        async with holder.transaction():
            # held as a decision holds it (plan and state), so that the decision run here waits for nothing
            await reconcile_store.lock_whole_visits(holder, tenant, [visit_id])
            fall = {"carer_id": tw.carers[0], "check_out_at": at(yesterday(), "08:20").isoformat()}
            waiting = in_background(
                client,
                f"/v1/visits/{visit_id}/amendments",
                tw.provider_headers[0],
                {**fall, "reason_code": "forgot_check_out"},
            )
            await until_waiting(db, 1, waiting)
            await _decide(holder, _second_commissioner(tenant), UUID(rise.json()["id"]), "approved")
        answer = await asyncio.wait_for(waiting, 20)
    finally:
        await holder.close()
    assert answer.status_code == 201, answer.text
    fallen = answer.json()
    assert (fallen["status"], fallen["decided_payable_before"], fallen["decided_payable_after"]) == ("approved", 30, 20)
    decided_rise = await db.fetchval("SELECT decided_at FROM amendments WHERE id = $1", UUID(rise.json()["id"]))
    assert datetime.fromisoformat(fallen["decided_at"]) > decided_rise
    assert (await get_visit(client, world, visit_id))["actual"]["payable_min"] == 20
    assert (await jobs.verify_tenant(pool, tenant)).differing == []


async def test_crossing_moves_proposed_at_once_do_not_deadlock(
    client: Client, world: World, db: asyncpg.Connection, pool: asyncpg.Pool, database_url: str
) -> None:
    """Decision 150: a move's proposal locked its own visit, then the one the events would go to. Moves
    X to Y and Y to X proposed at once each held one visit and waited for the other, until PostgreSQL
    broke the deadlock and one of them answered 500. The carers' table is held here so that each
    proposal stops after taking its first lock (the code before 150 read the provider's carers between
    its two visits); now both visits are locked at once, in id order, and the second proposal waits
    for the first instead."""
    tw = world.a
    x = await visited(
        client,
        world,
        db,
        pool,
        event("check_in", at(yesterday(), "08:00")),
        event("check_out", at(yesterday(), "08:30")),
    )
    y = await extra_visit(client, tw, at(yesterday(), "08:00"))

    def move(source: UUID, target: UUID) -> asyncio.Task[httpx.Response]:
        body = {"carer_id": tw.carers[0], "move_to_visit_id": str(target), "reason_code": "wrong_visit_selected"}
        return in_background(client, f"/v1/visits/{source}/amendments", tw.provider_headers[0], body)

    holder = await connect(database_url)
    try:
        async with holder.transaction():
            await holder.execute("LOCK TABLE carers IN ACCESS EXCLUSIVE MODE")
            there = move(x, y)
            await until_waiting(db, 1, there)
            back = move(y, x)
            await until_waiting(db, 2, there, back)
        answers = await asyncio.wait_for(asyncio.gather(there, back), 20)
    finally:
        await holder.close()
    assert [answer.status_code for answer in answers] == [201, 201], [answer.text for answer in answers]
    assert {answer.json()["status"] for answer in answers} == {"pending"}


async def test_crossing_moves_decided_at_once_take_turns(
    client: Client, world: World, db: asyncpg.Connection, pool: asyncpg.Pool, database_url: str
) -> None:
    """Decision 150, pinned (it held before: a decision locks through reconciliation, which sorts what it
    locks): the approvals of moves X to Y and Y to X, started while both visits are held, both succeed, and
    the later one decides where the carer's events end up."""
    tw = world.a
    tenant = UUID(tw.tenant_id)
    x = await visited(
        client,
        world,
        db,
        pool,
        event("check_in", at(yesterday(), "08:00")),
        event("check_out", at(yesterday(), "08:30")),
    )
    y = await extra_visit(client, tw, at(yesterday(), "08:00"))
    made = [
        await propose(
            client,
            tw.provider_headers[0],
            source,
            carer_id=tw.carers[0],
            move_to_visit_id=str(target),
            reason_code="wrong_visit_selected",
        )
        for source, target in ((x, y), (y, x))
    ]
    holder = await connect(database_url)
    try:
        async with holder.transaction():
            await reconcile_store.lock_visits(holder, tenant, [x, y])
            there = in_background(client, f"/v1/amendments/{made[0].json()['id']}/approve", tw.commissioner)
            await until_waiting(db, 1, there)
            back = in_background(client, f"/v1/amendments/{made[1].json()['id']}/approve", tw.commissioner)
            await until_waiting(db, 2, there, back)
        answers = await asyncio.wait_for(asyncio.gather(there, back), 20)
    finally:
        await holder.close()
    assert [answer.status_code for answer in answers] == [200, 200], [answer.text for answer in answers]
    last = max(answers, key=lambda answer: answer.json()["decided_at"]).json()
    ends = UUID(last["move_to_visit_id"])
    assert (await get_visit(client, world, ends))["actual"]["payable_min"] == 30
    assert (await get_visit(client, world, y if ends == x else x))["actual"] is None
    assert (await jobs.verify_tenant(pool, tenant)).differing == []


async def test_sizing_an_unplanned_visit_while_an_amendment_to_it_is_proposed_does_not_deadlock(
    client: Client, world: World, db: asyncpg.Connection, pool: asyncpg.Pool, database_url: str
) -> None:
    """Decision 150, on one visit: a proposal locks the visit through the `visits` view (its plan, then its
    state), while a decision locked the state to reconcile and, approving planned minutes, the plan only
    later. Each then held one row of the visit and waited for the other's. The contracts' table is held
    here so that the decision stops between the two (it reads its contract's rules in between); now it
    takes both rows first, as the proposal does, and the proposal waits for it."""
    tw = world.a
    day = yesterday()
    for body in (
        event("check_in", at(day, "15:00"), person_id=tw.person_id),
        event("check_out", at(day, "15:40"), person_id=tw.person_id),
    ):
        response = await client.post("/v1/visit-events", json=body, headers=tw.carer_headers[0])
    visit_id = UUID(response.json()["visit_id"])
    await reconciled(pool)
    sizing = await propose(
        client, tw.provider_headers[0], visit_id, carer_id=tw.carers[0], planned_min=45, reason_code="schedule_error"
    )
    assert sizing.json()["status"] == "pending", sizing.text
    holder = await connect(database_url)
    try:
        async with holder.transaction():
            await holder.execute("LOCK TABLE contracts IN ACCESS EXCLUSIVE MODE")
            deciding = in_background(client, f"/v1/amendments/{sizing.json()['id']}/approve", tw.commissioner)
            await until_waiting(db, 1, deciding)
            body = {"carer_id": tw.carers[0], "check_out_at": at(day, "15:30").isoformat()}
            proposing = in_background(
                client,
                f"/v1/visits/{visit_id}/amendments",
                tw.provider_headers[0],
                {**body, "reason_code": "no_signal"},
            )
            await until_waiting(db, 2, deciding, proposing)
        decided, proposed = await asyncio.wait_for(asyncio.gather(deciding, proposing), 20)
    finally:
        await holder.close()
    assert (decided.status_code, proposed.status_code) == (200, 201), (decided.text, proposed.text)
    shown = await get_visit(client, world, visit_id)
    assert (shown["approval"], shown["planned_min"], shown["actual"]["payable_min"]) == ("approved", 45, 45)


async def test_a_decision_picked_as_a_deadlock_s_victim_is_run_again_and_then_refused_whole(
    client: Client, world: World, db: asyncpg.Connection, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decision 150's second line: a deadlock PostgreSQL breaks (what is left of them: a chain of moves
    approved while a decision waited) rolls the decision back whole, and it is run again; one that loses
    every try answers 409 `conflict`, not 500, with nothing of it kept."""
    tw = world.a
    visit_id = await visited(client, world, db, pool, event("check_in", at(yesterday(), "08:00")))
    made = await forgot_check_out(client, world, visit_id, "08:30")
    real = reconcile_store.decide_amendment
    victim = [True]  # this many tries are picked, one after the other

    async def picked(*args: Any, **kwargs: Any) -> None:
        await real(*args, **kwargs)  # written, then rolled back with the rest of the try
        if victim and victim.pop():
            raise asyncpg.DeadlockDetectedError("deadlock detected")

    monkeypatch.setattr(reconcile_store, "decide_amendment", picked)
    approved = await decide(client, tw.commissioner, made)
    assert (approved["decided_payable_before"], approved["decided_payable_after"]) == (0, 30)
    again = await propose(  # an extension, which never approves itself
        client,
        tw.provider_headers[0],
        visit_id,
        carer_id=tw.carers[0],
        check_out_at=at(yesterday(), "08:40").isoformat(),
        extension_min=10,
        reason_code="extended_visit_authorised",
    )
    assert again.json()["status"] == "pending", again.text
    victim[:] = [True] * 3
    refused = await client.post(f"/v1/amendments/{again.json()['id']}/approve", headers=tw.commissioner)
    assert (refused.status_code, refused.json()["code"]) == (409, "conflict"), refused.text
    assert (await db.fetchval("SELECT status FROM amendments WHERE id = $1", UUID(again.json()["id"]))) == "pending"
    assert (await get_visit(client, world, visit_id))["actual"]["payable_min"] == 30
    assert (await jobs.verify_tenant(pool, UUID(tw.tenant_id))).differing == []
