"""Reconciliation against the database: events, cancellations and the clock move a visit's stored
state, and recomputing from scratch gives exactly what is stored."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import msgspec
import pytest

from infra.db import connect
from infra.settings import Settings
from services.reconcile import jobs
from services.reconcile import service as reconcile_service
from services.reconcile import store as reconcile_store
from tests.integration.test_catalog import contract_body
from tests.integration.test_ingest import at, event, visit_at, yesterday
from tests.integration.test_planning import monday_weeks_ago, plan_body
from tests.support import (
    Client,
    World,
    approved_move,
    build_world,
    create,
    credential_headers,
    extra_visit,
    reconciled,
    requeue_by,
)


@pytest.fixture
async def world(client: Client, db: asyncpg.Connection) -> World:
    built = await build_world(client, db)
    await create(client, built.a.commissioner, "/v1/care-plans", plan_body(built.a))
    return built


async def visit(client: Client, world: World, visit_id: UUID) -> dict[str, Any]:
    response = await client.get(f"/v1/visits/{visit_id}", headers=world.a.commissioner)
    assert response.status_code == 200
    result: dict[str, Any] = response.json()
    return result


async def test_events_reconcile_into_attendances_and_pay(
    client: Client, world: World, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    visit_id = await visit_at(db, world.a.person_id, yesterday())
    carer = world.a.carer_headers[0]
    for body in (
        event("check_in", at(yesterday(), "08:00"), visit_id=str(visit_id)),
        event(
            "check_out",
            at(yesterday(), "08:24") + timedelta(seconds=30),
            visit_id=str(visit_id),
            outcomes=[{"outcome_id": "wash", "status": "met"}],
        ),
    ):
        assert (await client.post("/v1/visit-events", json=body, headers=carer)).status_code == 201
    await reconciled(pool)
    shown = await visit(client, world, visit_id)
    assert shown["status"] == "completed"
    assert shown["exceptions"] == ["short_visit"]
    actual = shown["actual"]
    assert actual["payable_min"] == 25
    assert actual["banked_min"] == 0
    [attendance] = actual["attendances"]
    assert attendance["carer_id"] == world.a.carers[0]
    assert attendance["actual_seconds"] == 1470
    assert attendance["actual_min"] == 24.5
    assert attendance["payable_min"] == 25
    assert attendance["verified_in_home"] is True
    assert attendance["exceptions"] == ["short_visit"]


async def test_a_visit_is_verified_in_the_home_only_when_all_its_attendances_are(
    client: Client, world: World, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    """DOMAIN.md: a visit is `verified_in_home` when all its attendances are, the extra carer's too."""
    visit_id = await visit_at(db, world.a.person_id, yesterday())
    extra = await create(client, world.a.provider_headers[0], "/v1/carers", {"name": "Carer 0b"})
    extra_headers = await credential_headers(
        client, world.a.provider_headers[0], {"role": "carer", "carer_id": extra["id"]}
    )
    for body, headers in (
        (event("check_in", at(yesterday(), "08:00"), visit_id=str(visit_id)), world.a.carer_headers[0]),
        (event("check_out", at(yesterday(), "08:30"), visit_id=str(visit_id)), world.a.carer_headers[0]),
        (event("check_in", at(yesterday(), "08:05"), visit_id=str(visit_id), method="manual"), extra_headers),
        (event("check_out", at(yesterday(), "08:25"), visit_id=str(visit_id)), extra_headers),
    ):
        assert (await client.post("/v1/visit-events", json=body, headers=headers)).status_code == 201
    await reconciled(pool)
    actual = (await visit(client, world, visit_id))["actual"]
    counted, uncounted = actual["attendances"]
    assert (counted["counted"], counted["verified_in_home"]) == (True, True)
    assert (uncounted["counted"], uncounted["verified_in_home"]) == (False, False)
    assert actual["verified_in_home"] is False
    # As the rules before decision 131 stored it: migration 0021 queues the visit, and it is put right.
    await db.execute(
        """UPDATE visit_states SET actual = jsonb_set(actual, '{verified_in_home}', 'true') WHERE visit_id = $1""",
        visit_id,
    )
    assert (await jobs.verify_tenant(pool, UUID(world.a.tenant_id))).differing == [visit_id]
    await requeue_by(db, "0021_requeue_for_rule_fixes.sql")
    assert await db.fetchval("SELECT count(*) FROM reconcile_queue WHERE visit_id = $1", visit_id) == 1
    await reconciled(pool)
    assert (await visit(client, world, visit_id))["actual"]["verified_in_home"] is False
    assert (await jobs.verify_tenant(pool, UUID(world.a.tenant_id))).differing == []


async def test_the_clock_marks_missed_and_settles(
    client: Client, world: World, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    missed = await visit_at(db, world.a.person_id, yesterday() - timedelta(days=1))
    an_hour_ago = datetime.now(tz=UTC) - timedelta(hours=1)
    made = await create(
        client,
        world.a.commissioner,
        "/v1/visits",
        {
            "person_id": world.a.person_id,
            "contract_id": world.a.contracts[0],
            "planned_start": an_hour_ago.isoformat(),
            "planned_min": 30,
        },
    )
    open_visit = UUID(made["id"])
    body = event("check_in", an_hour_ago + timedelta(minutes=1), visit_id=str(open_visit))
    assert (await client.post("/v1/visit-events", json=body, headers=world.a.carer_headers[0])).status_code == 201
    await reconciled(pool)
    assert (await visit(client, world, open_visit))["status"] == "in_progress"
    await jobs.reconcile_due(pool)
    assert (await visit(client, world, missed))["status"] == "missed"
    later = datetime.now(tz=UTC) + timedelta(days=2)
    await jobs.reconcile_due(pool, later)
    settled = await visit(client, world, open_visit)
    assert settled["status"] == "completed"
    assert settled["exceptions"] == ["no_check_out"]
    assert settled["actual"]["payable_min"] == 0


async def test_a_cancellation_is_reconciled_with_its_answer(client: Client, world: World) -> None:
    tw = world.a
    soon = datetime.now(tz=UTC) + timedelta(hours=2)
    made = await create(
        client,
        tw.commissioner,
        "/v1/visits",
        {
            "person_id": tw.person_id,
            "contract_id": tw.contracts[0],
            "planned_start": soon.isoformat(),
            "planned_min": 40,
        },
    )
    cancelled = await client.post(
        f"/v1/visits/{made['id']}/cancel",
        json={"by": "person", "notified_at": datetime.now(tz=UTC).isoformat(), "reason": "unwell"},
        headers=tw.commissioner,
    )
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["actual"]["place_payables"] == [40]


async def test_a_carer_s_attendance_on_a_cancelled_visit_is_shown_on_it_and_changes_no_pay(
    client: Client, world: World, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    """A review finding (decision 153): a cancellation is refused once the visit has an event, but an
    event naming a visit already cancelled (a phone that was offline, a carer who went anyway) is accepted,
    and the rules dropped it: the carer's attendance showed nowhere. The visit stays cancelled and pays as
    its cancellation says; the attendance is shown on it, counted for no place (`extra_carer`, paying 0),
    so it is in the open exceptions and on the invoice line for someone to look at."""
    tw = world.a
    start = datetime.now(tz=UTC) - timedelta(hours=1)
    visit_id = await extra_visit(client, tw, start)
    cancelled = await client.post(
        f"/v1/visits/{visit_id}/cancel",
        json={"by": "person", "notified_at": (start - timedelta(hours=2)).isoformat(), "reason": "in hospital"},
        headers=tw.commissioner,
    )
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["actual"]["place_payables"] == [30]  # short notice: the person's cancellation pays
    for body in (
        event("check_in", start + timedelta(minutes=2), visit_id=str(visit_id)),
        event("check_out", start + timedelta(minutes=28), visit_id=str(visit_id)),
    ):
        response = await client.post("/v1/visit-events", json=body, headers=tw.carer_headers[0])
        assert (response.status_code, response.json()["visit_id"]) == (201, str(visit_id)), response.text
    await reconciled(pool)
    shown = await visit(client, world, visit_id)
    assert (shown["status"], shown["actual"]["payable_min"], shown["actual"]["place_payables"]) == (
        "cancelled",
        30,
        [30],
    )
    (attendance,) = shown["actual"]["attendances"]
    assert (attendance["carer_id"], attendance["counted"], attendance["payable_min"]) == (tw.carers[0], False, 0)
    assert attendance["actual_seconds"] == 26 * 60
    assert shown["exceptions"] == attendance["exceptions"] == ["extra_carer"]
    listed = await client.get("/v1/exceptions", params={"kind": "extra_carer"}, headers=tw.provider_headers[0])
    assert str(visit_id) in [item["id"] for item in listed.json()["items"]]
    found = await jobs.verify_tenant(pool, UUID(tw.tenant_id))
    assert (found.differing, found.pending) == ([], [])
    # As the rules before decision 153 stored it: migration 0026 queues the visit, and it is put right.
    await db.execute(
        """UPDATE visit_states SET actual = jsonb_set(actual, '{attendances}', '[]'), exceptions = '{}'
           WHERE visit_id = $1""",
        visit_id,
    )
    await db.execute("DELETE FROM attendances WHERE visit_id = $1", visit_id)
    assert (await jobs.verify_tenant(pool, UUID(tw.tenant_id))).differing == [visit_id]
    await requeue_by(db, "0026_requeue_for_reconcile_review.sql")
    assert await db.fetchval("SELECT count(*) FROM reconcile_queue WHERE visit_id = $1", visit_id) == 1
    await reconciled(pool)
    assert (await visit(client, world, visit_id))["exceptions"] == ["extra_carer"]
    assert (await jobs.verify_tenant(pool, UUID(tw.tenant_id))).differing == []


async def test_recomputing_from_scratch_gives_what_is_stored(
    client: Client, world: World, db: asyncpg.Connection, pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    carer = world.a.carer_headers[0]
    for days in range(1, 6):
        day = datetime.now(tz=UTC) - timedelta(days=days)
        visit_id = str(await visit_at(db, world.a.person_id, day))
        events = [event("check_in", at(day, "08:00"), visit_id=visit_id)]
        if days % 2:
            events.append(event("check_out", at(day, "08:00") + timedelta(minutes=10 * days), visit_id=visit_id))
        response = await client.post("/v1/visit-events/batch", json={"events": events}, headers=carer)
        assert response.status_code == 200
    await reconciled(pool)
    found = await jobs.verify_tenant(pool, UUID(world.a.tenant_id))
    assert found.checked > 5
    assert (found.differing, found.pending) == ([], [])
    # a stored state that no longer matches its inputs is found
    await db.execute("UPDATE visits SET payable_min = payable_min + 1 WHERE status = 'completed'")
    tampered = (await jobs.verify_tenant(pool, UUID(world.a.tenant_id))).differing
    assert len(tampered) >= 3
    env = {"DATABASE_URL": database_url, "PATH": "/usr/bin:/bin", "CAREBANK_DATA_DIR": str(tmp_path)}
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.cli", "reconcile", "--tenant", world.a.tenant_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert json.loads(result.stdout)["differing"] == len(tampered)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--tenant", "00000000-0000-4000-8000-000000000000"], "no tenant"),
        (["--tenant", "not-a-tenant"], "--tenant"),
        (["--from", "2026-13-01"], "--from"),
        (["--to", "yesterday"], "--to"),
        (["--from", "2026-05-10", "--to", "2026-05-01"], "--from"),
    ],
)
async def test_carebank_reconcile_refuses_what_it_cannot_check_with_exit_2(
    world: World, database_url: str, tmp_path: Path, args: list[str], says: str
) -> None:
    """A review finding (decision 146): exit 1 means "a stored state differs", yet an unknown tenant, a
    tenant id or date that does not parse (a traceback) exited 1 too, and a range whose end comes before
    its start checked nothing and exited 0, "all is well". Each is now a usage error: a message, exit 2."""
    if args[0] != "--tenant":
        args = ["--tenant", world.a.tenant_id, *args]
    env = {"DATABASE_URL": database_url, "PATH": "/usr/bin:/bin", "CAREBANK_DATA_DIR": str(tmp_path)}
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.cli", "reconcile", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    assert says in result.stderr
    assert "Traceback" not in result.stderr


async def test_a_visit_whose_change_is_still_on_its_way_is_pending_not_differing(
    client: Client, world: World, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    """`carebank reconcile` on a live system: a visit whose stored state lags a change that is queued
    (here held back after a failure, so no drainer takes it meanwhile) is reported pending, not as a
    difference; once nothing is on its way, the same lag is a difference."""
    visit_id = await visit_at(db, world.a.person_id, yesterday())
    body = event("check_in", at(yesterday(), "08:00"), visit_id=str(visit_id))
    assert (await client.post("/v1/visit-events", json=body, headers=world.a.carer_headers[0])).status_code == 201
    await reconciled(pool)
    tenant = UUID(world.a.tenant_id)
    async with db.transaction():  # the state as it was before the event, the event's reconciliation held back
        await db.execute("UPDATE visit_states SET status = 'planned', actual = NULL WHERE visit_id = $1", visit_id)
        await reconcile_store.hold_back(db, tenant, visit_id, datetime.now(tz=UTC) + timedelta(minutes=5))
    found = await jobs.verify_tenant(pool, tenant)
    assert (found.differing, found.pending) == ([], [visit_id])
    await db.execute("DELETE FROM reconcile_queue WHERE visit_id = $1", visit_id)
    await db.execute("UPDATE visit_states SET next_check_at = NULL WHERE visit_id = $1", visit_id)
    found = await jobs.verify_tenant(pool, tenant)
    assert (found.differing, found.pending) == ([visit_id], [])


async def test_a_stored_next_check_later_than_the_state_needs_is_a_difference(
    client: Client, world: World, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    """A review finding (decision 151): `carebank reconcile` compared a visit's status, actual, exceptions
    and minutes, not when the clock job must next look at it. A planned visit whose stored next check is
    lost is never marked missed (nor alerted on), an open one never settled, and the check said all was
    well. A check later than the state needs, or none, is now a difference; an earlier one is harmless."""
    tenant = UUID(world.a.tenant_id)
    ahead = await visit_at(db, world.a.person_id, datetime.now(tz=UTC) + timedelta(days=2))  # missed check ahead
    an_hour_ago = datetime.now(tz=UTC) - timedelta(hours=1)
    on_site = await extra_visit(client, world.a, an_hour_ago)  # checked in: the settle check ahead
    body = event("check_in", an_hour_ago + timedelta(minutes=1), visit_id=str(on_site))
    assert (await client.post("/v1/visit-events", json=body, headers=world.a.carer_headers[0])).status_code == 201
    await reconciled(pool)
    async with db.transaction():  # a generated visit is first reconciled at its start
        await reconcile_service.reconcile_visits(db, tenant, [ahead], datetime.now(tz=UTC))
    assert (await visit(client, world, on_site))["status"] == "in_progress"
    found = await jobs.verify_tenant(pool, tenant)
    assert (found.differing, found.pending) == ([], [])
    both = sorted([ahead, on_site])
    for wrong in (None, datetime.now(tz=UTC) + timedelta(days=30)):
        await db.execute("UPDATE visit_states SET next_check_at = $2 WHERE visit_id = ANY($1)", both, wrong)
        found = await jobs.verify_tenant(pool, tenant)
        assert (sorted(found.differing), found.pending) == (both, [])
    async with db.transaction():  # what the demo does with what the check found
        await reconcile_service.reconcile_visits(db, tenant, both, datetime.now(tz=UTC))
    assert (await jobs.verify_tenant(pool, tenant)).differing == []
    # Earlier than needed: the clock job looks, finds nothing changed, and stores the right time.
    soon = datetime.now(tz=UTC) + timedelta(minutes=20)
    await db.execute("UPDATE visit_states SET next_check_at = $2 WHERE visit_id = ANY($1)", both, soon)
    assert (await jobs.verify_tenant(pool, tenant)).differing == []


async def test_an_overlap_with_an_attendance_over_twelve_hours_long_is_found(
    client: Client, world: World, db: asyncpg.Connection, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Partners are looked up in the 12 hours before an attendance, and longer attendances in an index of
    their own (migration 0022): a 14-hour attendance that began 12.5 hours before is still a partner."""
    tw = world.a
    day = yesterday()
    evening = await extra_visit(client, tw, at(day, "20:30"))
    planned = await visit_at(db, tw.person_id, day)
    for bodies in (
        [
            event("check_in", at(day, "08:00"), visit_id=str(planned)),
            event("check_out", at(day, "22:00"), visit_id=str(planned)),
        ],
        [
            event("check_in", at(day, "20:30"), visit_id=str(evening)),
            event("check_out", at(day, "20:50"), visit_id=str(evening)),
        ],
    ):  # the long one first: the evening visit's pass has to find it
        response = await client.post("/v1/visit-events/batch", json={"events": bodies}, headers=tw.carer_headers[0])
        assert [r["status"] for r in response.json()["results"]] == ["accepted"] * 2
        await reconciled(pool)
    assert "overlapping_visits" in (await visit(client, world, planned))["exceptions"]
    assert "overlapping_visits" in (await visit(client, world, evening))["exceptions"]
    monkeypatch.setattr(jobs, "BATCH", 1)  # each visit's flag recomputed from the other's stored attendance
    assert (await jobs.verify_tenant(pool, UUID(tw.tenant_id))).differing == []


@pytest.mark.parametrize("together", [True, False], ids=["one batch", "one visit after the other"])
async def test_one_carer_on_two_visits_at_once_is_flagged_on_both(
    client: Client,
    world: World,
    db: asyncpg.Connection,
    pool: asyncpg.Pool,
    together: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tw = world.a
    day = yesterday()
    extra = await create(
        client,
        tw.commissioner,
        "/v1/visits",
        {
            "person_id": tw.person_id,
            "contract_id": tw.contracts[0],
            "planned_start": at(day, "08:15").isoformat(),
            "planned_min": 30,
        },
    )
    planned = await visit_at(db, tw.person_id, day)
    bodies = [
        event("check_in", at(day, "08:00"), visit_id=str(planned)),
        event("check_out", at(day, "08:30"), visit_id=str(planned)),
        event("check_in", at(day, "08:20"), visit_id=extra["id"]),
        event("check_out", at(day, "08:50"), visit_id=extra["id"]),
    ]
    # Apart, the first visit is stored without the flag and gets it when its partner is reconciled.
    for part in [bodies] if together else [bodies[:2], bodies[2:]]:
        response = await client.post("/v1/visit-events/batch", json={"events": part}, headers=tw.carer_headers[0])
        assert [r["status"] for r in response.json()["results"]] == ["accepted"] * len(part)
        await reconciled(pool)
    assert "overlapping_visits" in (await visit(client, world, planned))["exceptions"]
    assert "overlapping_visits" in (await visit(client, world, UUID(extra["id"])))["exceptions"]
    differing = (await jobs.verify_tenant(pool, UUID(tw.tenant_id))).differing
    assert differing == []
    # recomputed one visit a batch, each batch's flag comes from the other visit's stored attendance
    monkeypatch.setattr(jobs, "BATCH", 1)
    differing = (await jobs.verify_tenant(pool, UUID(tw.tenant_id))).differing
    assert differing == []
    # an amendment that starts the second visit after the first ended removes the overlap from both
    made = await client.post(
        f"/v1/visits/{extra['id']}/amendments",
        json={"carer_id": tw.carers[0], "check_in_at": at(day, "08:31").isoformat(), "reason_code": "no_signal"},
        headers=tw.provider_headers[0],
    )
    assert made.json()["status"] == "approved"  # 30 paid minutes fall to 19: approves itself
    assert "overlapping_visits" not in (await visit(client, world, planned))["exceptions"]
    assert "overlapping_visits" not in (await visit(client, world, UUID(extra["id"])))["exceptions"]


async def test_a_visit_reconciled_to_the_same_state_is_not_written_again(
    client: Client, world: World, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    visit_id = await visit_at(db, world.a.person_id, yesterday())
    bodies = [
        event("check_in", at(yesterday(), "08:00"), visit_id=str(visit_id)),
        event("check_out", at(yesterday(), "08:40"), visit_id=str(visit_id)),
    ]
    response = await client.post("/v1/visit-events/batch", json={"events": bodies}, headers=world.a.carer_headers[0])
    assert response.status_code == 200
    await reconciled(pool)
    row_version = "SELECT xmin::text AS version, reconciled_at, payable_min FROM visit_states WHERE visit_id = $1"
    before = await db.fetchrow(row_version, visit_id)
    assert before is not None
    tenant = UUID(world.a.tenant_id)
    async with db.transaction():
        assert await reconcile_service.reconcile_visits(db, tenant, [visit_id], datetime.now(tz=UTC)) == 1
    assert await db.fetchrow(row_version, visit_id) == before  # the same row version: nothing written
    # a stored state that differs from the computed one is written back
    await db.execute("UPDATE visits SET payable_min = 1 WHERE id = $1", visit_id)
    async with db.transaction():
        await reconcile_service.reconcile_visits(db, tenant, [visit_id], datetime.now(tz=UTC))
    after = await db.fetchrow(row_version, visit_id)
    assert after is not None
    assert after["payable_min"] == before["payable_min"] > 1
    assert after["reconciled_at"] > before["reconciled_at"]


class TestTheQueueAmongDrainers:
    """The queue's claims, with no other drainer about: the app under test runs without its own."""

    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return msgspec.structs.replace(settings, reconcile_in_api=False)

    async def test_a_visit_queued_again_while_a_batch_reconciles_it_waits_for_nothing_and_is_not_lost(
        self, client: Client, world: World, db: asyncpg.Connection, database_url: str
    ) -> None:
        """An ingest transaction queues a visit whose earlier row a drainer's batch has taken and is still
        reconciling (decision 154). The ingest's queueing must not wait for that batch to commit (with one
        row per visit it did: a carer's event held up behind thousands of other visits); the drainer must not
        take the new row before the ingest commits; and the batch's commit must leave it queued, since the
        batch read the visit before the new event was there."""
        visit_id = await visit_at(db, world.a.person_id, yesterday())
        tenant = UUID(world.a.tenant_id)
        await reconcile_store.enqueue(db, tenant, [visit_id])  # queued earlier, committed
        ingest, drainer = await connect(database_url), await connect(database_url)
        try:
            batch = drainer.transaction()
            await batch.start()
            assert await reconcile_store.take_queued(drainer, 100) == [(tenant, visit_id)]
            await reconcile_service.reconcile_visits(drainer, tenant, [visit_id], datetime.now(tz=UTC))
            async with ingest.transaction():  # the new event's transaction, while the batch is open
                await asyncio.wait_for(reconcile_store.enqueue(ingest, tenant, [visit_id]), timeout=5)
                assert await reconcile_store.take_queued(db, 100) == []  # not visible to a drainer before it commits
            await batch.commit()
        finally:
            await ingest.close()
            await drainer.close()
        assert await db.fetchval("SELECT count(*) FROM reconcile_queue WHERE visit_id = $1", visit_id) == 1

    async def test_two_drainers_take_different_rows_and_a_visit_queued_twice_is_reconciled_once_a_batch(
        self, db: asyncpg.Connection, world: World, database_url: str
    ) -> None:
        """Each drainer skips the rows another holds; a claim takes every due row of the visits it picks, so
        a visit queued twice comes back twice from a claim of one row, and is reconciled once."""
        tenant = UUID(world.a.tenant_id)
        day = yesterday()
        first_visit, second_visit = (
            await visit_at(db, world.a.person_id, day),
            await visit_at(db, world.a.person_id, day - timedelta(days=1)),
        )
        await reconcile_store.enqueue(db, tenant, [first_visit])
        await reconcile_store.enqueue(db, tenant, [first_visit])
        await reconcile_store.enqueue(db, tenant, [second_visit])
        one, other = await connect(database_url), await connect(database_url)
        try:
            async with one.transaction(), other.transaction():
                taken = await reconcile_store.take_queued(one, 1)
                assert taken == [(tenant, first_visit)] * 2
                assert await reconcile_store.take_queued(other, 100) == [(tenant, second_visit)]
                assert (
                    await reconcile_service.reconcile_visits(one, tenant, [v for _, v in taken], datetime.now(tz=UTC))
                    == 1
                )
        finally:
            await one.close()
            await other.close()
        assert await db.fetchval("SELECT count(*) FROM reconcile_queue") == 0


async def test_two_reconciliations_of_a_visit_take_turns_and_the_later_reads_what_the_earlier_committed(
    world: World, db: asyncpg.Connection, database_url: str
) -> None:
    """The read of a batch's visits locks them (decision 121): a second reconciliation waits at that
    read, then reads the first one's committed input, so it cannot write a state computed from the
    input as it was before."""
    visit_id = await visit_at(db, world.a.person_id, yesterday())
    tenant = UUID(world.a.tenant_id)
    first, second = await connect(database_url), await connect(database_url)
    try:
        changing = first.transaction()
        await changing.start()
        await first.execute(
            """UPDATE visits SET cancellation = '{"by": "provider", "short_notice": false}' WHERE id = $1""",
            visit_id,
        )
        await reconcile_service.reconcile_visits(first, tenant, [visit_id], datetime.now(tz=UTC))

        async def reconcile_again() -> None:
            async with second.transaction():
                await reconcile_service.reconcile_visits(second, tenant, [visit_id], datetime.now(tz=UTC))

        waiting = asyncio.create_task(reconcile_again())
        second_pid = second.get_server_pid()
        for _ in range(100):
            wait = await db.fetchval("SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", second_pid)
            if wait == "Lock":
                break
            await asyncio.sleep(0.05)
        assert wait == "Lock"  # the second waits at its read of the visit
        assert not waiting.done()
        await changing.commit()
        await asyncio.wait_for(waiting, 10)
    finally:
        await first.close()
        await second.close()
    row = await db.fetchrow("SELECT status, payable_min FROM visits WHERE id = $1", visit_id)
    assert row is not None
    assert (row["status"], row["payable_min"]) == ("cancelled", 0)


async def test_a_visit_s_key_outcomes_are_those_of_its_own_care_plan(
    client: Client, world: World, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    """A review finding: key outcomes were gathered from every plan of the person on the contract, so an
    outcome the current plan no longer calls key (an ended plan did) kept a met visit from banking."""
    tw = world.a
    contract = await create(client, tw.commissioner, "/v1/contracts", contract_body(tw.providers[0]))

    def plan(outcomes: list[dict[str, Any]], valid_from: Any, **valid_to: str) -> dict[str, Any]:
        return {
            "person_id": tw.person_id,
            "contract_id": contract["id"],
            "weekly_min": 7 * 30,
            "outcomes": outcomes,
            "schedule": [
                {"weekday": d, "start": "12:00", "minutes": 30, "outcome_ids": [o["id"] for o in outcomes]}
                for d in range(1, 8)
            ],
            "valid_from": valid_from.isoformat(),
            **valid_to,
        }

    ended = monday_weeks_ago(3)
    wash = {"id": "wash", "domain": "personal_care", "text": "washed", "key": True}
    await create(
        client, tw.commissioner, "/v1/care-plans", plan([wash], ended, valid_to=(ended + timedelta(days=6)).isoformat())
    )
    eat = {"id": "eat", "domain": "food_and_drink", "text": "ate", "key": True}
    current = [{**wash, "key": False}, eat]
    await create(client, tw.commissioner, "/v1/care-plans", plan(current, (yesterday() - timedelta(days=1)).date()))
    start = at(yesterday(), "12:00")
    visit_id = await db.fetchval(
        "SELECT id FROM visits WHERE person_id = $1 AND planned_start = $2", UUID(tw.person_id), start
    )
    met = [{"outcome_id": "eat", "status": "met"}]
    for body in (
        event("check_in", start, visit_id=str(visit_id)),
        event("check_out", start + timedelta(minutes=20), visit_id=str(visit_id), outcomes=met),
    ):
        assert (await client.post("/v1/visit-events", json=body, headers=tw.carer_headers[0])).status_code == 201
    await reconciled(pool)
    shown = await visit(client, world, visit_id)
    assert shown["exceptions"] == ["short_visit"]  # no outcomes_not_met: wash is not key in this plan
    assert (shown["actual"]["payable_min"], shown["actual"]["banked_min"]) == (30, 10)


async def test_an_event_arriving_on_a_visit_whose_events_were_moved_reconciles_the_visit_moved_to(
    client: Client, world: World, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    """A carer's events on a wrong visit count on the visit they were moved to, also those that arrive
    after the move: that visit must be reconciled with them, as the recompute from scratch does."""
    tw = world.a
    day = yesterday()
    wrong = await visit_at(db, tw.person_id, day)
    right = await visit_at(db, tw.person_id, day - timedelta(days=1))
    carer = tw.carer_headers[0]
    posted = await client.post(
        "/v1/visit-events", json=event("check_in", at(day, "08:00"), visit_id=str(wrong)), headers=carer
    )
    assert posted.status_code == 201
    await reconciled(pool)
    await approved_move(client, tw, wrong, right)
    assert (await visit(client, world, right))["actual"]["attendances"][0]["check_out"] is None
    # the phone, back online, sends the check-out for the visit it had selected
    posted = await client.post(
        "/v1/visit-events", json=event("check_out", at(day, "08:30"), visit_id=str(wrong)), headers=carer
    )
    assert posted.status_code == 201
    await reconciled(pool)
    moved = await visit(client, world, right)
    assert moved["actual"]["attendances"][0]["check_out"] is not None
    assert "no_check_out" not in moved["exceptions"]
    differing = (await jobs.verify_tenant(pool, UUID(tw.tenant_id))).differing
    assert differing == []


async def test_a_later_move_of_the_same_events_reconciles_the_visit_they_left(
    client: Client, world: World, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    """The latest approved move of a carer's events wins: the visit of the earlier move loses them."""
    tw = world.a
    day = yesterday()
    wrong = await visit_at(db, tw.person_id, day)
    first = await visit_at(db, tw.person_id, day - timedelta(days=1))
    second = await visit_at(db, tw.person_id, day - timedelta(days=2))
    bodies = [
        event("check_in", at(day, "08:00"), visit_id=str(wrong)),
        event("check_out", at(day, "08:30"), visit_id=str(wrong)),
    ]
    response = await client.post("/v1/visit-events/batch", json={"events": bodies}, headers=tw.carer_headers[0])
    assert response.status_code == 200
    await reconciled(pool)
    for target in (first, second):
        await approved_move(client, tw, wrong, target)
    assert (await visit(client, world, second))["status"] == "completed"
    left = await visit(client, world, first)
    assert (left["status"], left["actual"], left["exceptions"]) == ("missed", None, [])  # no event left on it
    differing = (await jobs.verify_tenant(pool, UUID(tw.tenant_id))).differing
    assert differing == []


async def test_an_attendance_a_fraction_of_a_second_over_two_days_does_not_block_the_queue(
    client: Client, world: World, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    """Longer than two days is a mistake awaiting amendment and not stored as an attendance (its CHECK):
    whole seconds of `actual_seconds` must not let 2 days and half a second through, which failed the
    batch, and so every batch after it, for good."""
    tw = world.a
    day = yesterday() - timedelta(days=2)
    visit_id = await visit_at(db, tw.person_id, day)
    other = await visit_at(db, tw.person_id, day + timedelta(days=1))
    bodies = [
        event("check_in", at(day, "08:00"), visit_id=str(visit_id)),
        event("check_out", at(day, "08:00") + timedelta(days=2, milliseconds=500), visit_id=str(visit_id)),
        event("check_in", at(day + timedelta(days=1), "08:00"), visit_id=str(other)),
    ]
    response = await client.post("/v1/visit-events/batch", json={"events": bodies}, headers=tw.carer_headers[0])
    assert [r["status"] for r in response.json()["results"]] == ["accepted"] * 3
    await reconciled(pool)
    assert (await visit(client, world, other))["actual"] is not None
    shown = await visit(client, world, visit_id)
    assert shown["actual"]["attendances"][0]["actual_seconds"] == 2 * 24 * 3600
    assert await db.fetchval("SELECT count(*) FROM attendances WHERE visit_id = $1", visit_id) == 0
    differing = (await jobs.verify_tenant(pool, UUID(tw.tenant_id))).differing
    assert differing == []


async def _two_overlapping_visits_not_yet_passed(
    client: Client, world: World, db: asyncpg.Connection, pool: asyncpg.Pool
) -> tuple[UUID, UUID]:
    """Tenant a's planned visit yesterday at 08:00 and an extra one at 08:15, attended by one carer
    08:00-08:30 and 08:20-08:50, reconciled, then put back as before the overlap pass ever ran on
    them: no attendance stored, no flag."""
    tw = world.a
    day = yesterday()
    planned, other = await visit_at(db, tw.person_id, day), await extra_visit(client, tw, at(day, "08:15"))
    bodies = [
        event("check_in", at(day, "08:00"), visit_id=str(planned)),
        event("check_out", at(day, "08:30"), visit_id=str(planned)),
        event("check_in", at(day, "08:20"), visit_id=str(other)),
        event("check_out", at(day, "08:50"), visit_id=str(other)),
    ]
    response = await client.post("/v1/visit-events/batch", json={"events": bodies}, headers=tw.carer_headers[0])
    assert response.status_code == 200
    await reconciled(pool)
    await db.execute("DELETE FROM attendances WHERE visit_id = ANY($1::uuid[])", [planned, other])
    await db.execute(
        """UPDATE visit_states SET exceptions = array_remove(exceptions, 'overlapping_visits')
           WHERE visit_id = ANY($1::uuid[])""",
        [planned, other],
    )
    return planned, other


async def test_two_visits_of_one_carer_reconciled_at_once_are_both_flagged_overlapping(
    client: Client, world: World, db: asyncpg.Connection, pool: asyncpg.Pool, database_url: str
) -> None:
    """Two transactions (the API's drainer and the worker's, or an approval and a drainer) reconciling
    two visits of one carer at the same time: each overlap pass must see the other's attendance."""
    planned, other = await _two_overlapping_visits_not_yet_passed(client, world, db, pool)
    tenant = UUID(world.a.tenant_id)
    first, second = await connect(database_url), await connect(database_url)
    try:
        one = first.transaction()
        await one.start()
        await reconcile_service.reconcile_visits(first, tenant, [planned], datetime.now(tz=UTC))

        async def reconcile_other() -> None:
            async with second.transaction():
                await reconcile_service.reconcile_visits(second, tenant, [other], datetime.now(tz=UTC))

        running = asyncio.create_task(reconcile_other())
        await asyncio.wait([running], timeout=0.5)
        await one.commit()
        await asyncio.wait_for(running, 10)
    finally:
        await first.close()
        await second.close()
    assert "overlapping_visits" in (await visit(client, world, planned))["exceptions"]
    assert "overlapping_visits" in (await visit(client, world, other))["exceptions"]
    differing = (await jobs.verify_tenant(pool, tenant)).differing
    assert differing == []


async def test_an_overlap_pass_skips_a_partner_another_transaction_holds_and_the_recheck_flags_it(
    client: Client, world: World, db: asyncpg.Connection, pool: asyncpg.Pool, database_url: str
) -> None:
    """The pass runs under the carers' locks, so it never waits for a visit (its holder may be waiting
    for those carers): a partner held elsewhere, here as an invoice run holds the visits it bills, is
    left for the recheck, which flags it once it is free (decision 128)."""
    planned, other = await _two_overlapping_visits_not_yet_passed(client, world, db, pool)
    tenant = UUID(world.a.tenant_id)
    await reconcile_service.reconcile_visits(db, tenant, [planned], datetime.now(tz=UTC))  # attendance stored
    await db.execute("UPDATE visit_states SET exceptions = '{}' WHERE visit_id = $1", planned)
    holder, reconciling = await connect(database_url), await connect(database_url)
    try:
        async with holder.transaction():
            await holder.execute("SELECT 1 FROM visits WHERE id = $1 FOR NO KEY UPDATE", planned)
            async with reconciling.transaction():
                reconciled_one = reconcile_service.reconcile_visits(reconciling, tenant, [other], datetime.now(tz=UTC))
                await asyncio.wait_for(reconciled_one, 10)  # did not wait for the held partner
            assert "overlapping_visits" in (await visit(client, world, other))["exceptions"]
            assert "overlapping_visits" not in (await visit(client, world, planned))["exceptions"]
            assert await db.fetchval("SELECT array_agg(visit_id) FROM overlap_rechecks") == [planned]
            await jobs.recheck_overlaps(pool)  # still held: left for the next time
            assert await db.fetchval("SELECT array_agg(visit_id) FROM overlap_rechecks") == [planned]
    finally:
        await holder.close()
        await reconciling.close()
    await jobs.recheck_overlaps(pool)  # (or the app's own drainer did it first)
    assert await db.fetchval("SELECT count(*) FROM overlap_rechecks") == 0
    assert "overlapping_visits" in (await visit(client, world, planned))["exceptions"]
    differing = (await jobs.verify_tenant(pool, tenant)).differing
    assert differing == []


async def test_a_new_care_plan_does_not_change_the_key_outcomes_of_visits_already_reconciled(
    client: Client, world: World, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    """A visit's key outcomes are its own plan's: a later plan of the same person and contract that
    marks the same outcome id key (nothing reconciles the earlier visits then) must not make the
    recompute differ from what is stored."""
    tw = world.a
    contract = await create(client, tw.commissioner, "/v1/contracts", contract_body(tw.providers[0]))
    outcomes = [{"id": "wash", "domain": "personal_care", "text": "Washed", "key": False}]
    schedule = [{"weekday": d, "start": "07:00", "minutes": 30, "outcome_ids": ["wash"]} for d in range(1, 8)]
    body = plan_body(tw, contract_id=contract["id"], outcomes=outcomes, schedule=schedule)
    await create(client, tw.commissioner, "/v1/care-plans", body)
    day = yesterday()
    start = datetime(day.year, day.month, day.day, 7, tzinfo=at(day, "07:00").tzinfo)
    visit_id = await db.fetchval(
        "SELECT id FROM visits WHERE contract_id = $1 AND planned_start = $2", UUID(contract["id"]), start
    )
    extra = await create(
        client,
        tw.commissioner,
        "/v1/visits",
        {
            "person_id": tw.person_id,
            "contract_id": contract["id"],
            "planned_start": at(day, "12:00").isoformat(),
            "planned_min": 30,
            "outcome_ids": ["wash"],
        },
    )
    bodies = [
        body
        for visited, hhmm in ((visit_id, "07:00"), (UUID(extra["id"]), "12:00"))
        for body in (
            event("check_in", at(day, hhmm), visit_id=str(visited)),
            event(
                "check_out",
                at(day, hhmm) + timedelta(minutes=30),
                visit_id=str(visited),
                outcomes=[{"outcome_id": "wash", "status": "not_met"}],
            ),
        )
    ]
    response = await client.post("/v1/visit-events/batch", json={"events": bodies}, headers=tw.carer_headers[0])
    assert [r["status"] for r in response.json()["results"]] == ["accepted"] * 4
    await reconciled(pool)
    for visited in (visit_id, UUID(extra["id"])):
        assert "outcomes_not_met" not in (await visit(client, world, visited))["exceptions"]  # not a key outcome
    later = {**outcomes[0], "key": True}
    next_month = (datetime.now(tz=UTC) + timedelta(days=40)).date()
    await create(
        client,
        tw.commissioner,
        "/v1/care-plans",
        {**body, "outcomes": [later], "valid_from": next_month.isoformat()},
    )
    await reconciled(pool)
    assert "outcomes_not_met" not in (await visit(client, world, visit_id))["exceptions"]  # its own plan's flag
    # an extra visit's outcomes are its person's plans' on the contract: reconciled again when one is added
    assert "outcomes_not_met" in (await visit(client, world, UUID(extra["id"])))["exceptions"]
    differing = (await jobs.verify_tenant(pool, UUID(tw.tenant_id))).differing
    assert differing == []


CHECK_IN_OUT = (("check_in", 0), ("check_out", 30))


async def test_a_visit_that_cannot_be_reconciled_holds_up_only_itself(
    client: Client, world: World, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    """A batch that fails for a reason of its own (here the pay rules of the contract of one visit broken
    by hand) is done again a visit at a time: the other visits are reconciled, the broken one stays
    queued and out of the way for a few minutes, and the clock's job does the same (decision 129)."""
    tw = world.a
    day = yesterday()
    good, unvisited = await visit_at(db, tw.person_id, day), await visit_at(db, tw.person_id, day - timedelta(days=1))
    broken = await extra_visit(client, tw, at(day, "12:00"), contract=1)
    await reconciled(pool)
    rules_as_were = await db.fetchval("SELECT pay_rules FROM contracts WHERE id = $1", UUID(tw.contracts[1]))
    await db.execute("""UPDATE contracts SET pay_rules = '{"grace_min": "x"}' WHERE id = $1""", UUID(tw.contracts[1]))
    for carer, visited, hhmm in ((0, good, "08:00"), (1, broken, "12:00")):
        bodies = [event(kind, at(day, hhmm) + timedelta(minutes=m), visit_id=str(visited)) for kind, m in CHECK_IN_OUT]
        response = await client.post("/v1/visit-events/batch", json={"events": bodies}, headers=tw.carer_headers[carer])
        assert response.status_code == 200
    await jobs.drain_queue(pool)
    assert (await visit(client, world, good))["status"] == "completed"
    assert (await visit(client, world, broken))["status"] == "planned"
    held = await db.fetchval("SELECT queued_at FROM reconcile_queue WHERE visit_id = $1", broken)
    assert held > datetime.now(tz=UTC) + timedelta(minutes=4)
    assert await db.fetchval("SELECT count(*) FROM reconcile_queue WHERE visit_id <> $1", broken) == 0

    # the clock's job: the visit nobody came to is missed; the broken one, due too, is held back there too
    await db.execute("UPDATE visit_states SET next_check_at = now() - interval '1 hour' WHERE visit_id = $1", broken)
    await jobs.reconcile_due(pool)
    assert (await visit(client, world, unvisited))["status"] == "missed"
    assert await db.fetchval(
        "SELECT next_check_at > now() + interval '4 minutes' FROM visit_states WHERE visit_id = $1", broken
    )

    # mended, and queued again (as a new event or amendment would): reconciled
    await db.execute("UPDATE contracts SET pay_rules = $2 WHERE id = $1", UUID(tw.contracts[1]), rules_as_were)
    await reconcile_store.enqueue(db, UUID(tw.tenant_id), [broken])
    await jobs.drain_queue(pool)
    assert (await visit(client, world, broken))["status"] == "completed"
