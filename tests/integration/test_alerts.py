"""Alerts with a controlled clock: each kind raised at its threshold, resolved by what ends it, raised
once even by two workers, and visible through the API."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest
import uvicorn

from infra.redis import create_redis
from infra.settings import Settings
from services.app import create_app
from services.monitoring import jobs
from services.monitoring.live import AlertPublisher
from tests.e2e.test_serve import free_port
from tests.integration.test_ingest import event
from tests.support import (
    LONDON,
    Client,
    World,
    approved_move,
    build_world,
    create,
    credential_headers,
    decide,
    reconciled,
)


@pytest.fixture
async def world(client: Client, db: asyncpg.Connection) -> World:
    built = await build_world(client, db)
    tw = built.a
    # The plan's own visits are put twelve hours from now, so that their thresholds never fall inside
    # a test's ticks (an 08:00 visit made tick counts wrong from about 07:00 to 09:00 UTC). The plan
    # starts on that visit's date: from noon on, the same hour today lies twelve hours back, and its
    # missed threshold less than twelve hours before the visit was made, which raises an alert.
    far = datetime.now(tz=LONDON) + timedelta(hours=12)
    schedule = [{"weekday": d, "start": far.strftime("%H:00"), "minutes": 30} for d in range(1, 8)]
    await create(
        client,
        tw.commissioner,
        "/v1/care-plans",
        {
            "person_id": tw.person_id,
            "contract_id": tw.contracts[0],
            "weekly_min": 210,
            "outcomes": [],
            "schedule": schedule,
            "valid_from": far.date().isoformat(),
            "horizon_days": 1,
        },
    )
    return built


async def new_visit(client: Client, world: World, start: datetime, carers: int = 1, provider: int = 0) -> str:
    made = await create(
        client,
        world.a.commissioner,
        "/v1/visits",
        {
            "person_id": world.a.person_id,
            "contract_id": world.a.contracts[provider],
            "planned_start": start.isoformat(),
            "planned_min": 30,
            "carers_required": carers,
        },
    )
    return str(made["id"])


async def alerts(client: Client, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    response = await client.get("/v1/alerts", params={"limit": 500, **params}, headers=headers)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def kinds_of(items: list[dict[str, Any]], visit_id: str) -> dict[str, str]:
    return {a["kind"]: a["status"] for a in items if a["visit_id"] == visit_id}


async def test_late_then_missed_then_resolved_by_a_check_in(client: Client, world: World, pool: asyncpg.Pool) -> None:
    start = datetime.now(tz=UTC) + timedelta(minutes=2)  # created before its thresholds
    visit_id = await new_visit(client, world, start)
    commissioner = world.a.commissioner
    await jobs.evaluate_alerts(pool, start + timedelta(minutes=14))
    assert kinds_of(await alerts(client, commissioner), visit_id) == {}
    raised, _ = await jobs.evaluate_alerts(pool, start + timedelta(minutes=15))
    assert [(a.kind, str(a.visit_id)) for _, a in raised] == [("late", visit_id)]
    await jobs.evaluate_alerts(pool, start + timedelta(minutes=60))
    assert kinds_of(await alerts(client, commissioner), visit_id) == {"late": "open", "missed": "open"}
    # the carer arrives (an hour and a minute late)
    body = event("check_in", start + timedelta(minutes=1), visit_id=visit_id)
    assert (await client.post("/v1/visit-events", json=body, headers=world.a.carer_headers[0])).status_code == 201
    _, resolved = await jobs.evaluate_alerts(pool, start + timedelta(minutes=61))
    assert sorted(a.kind for _, a in resolved) == ["late", "missed"]
    assert kinds_of(await alerts(client, commissioner), visit_id) == {"late": "resolved", "missed": "resolved"}
    # provider 1 sees none of provider 0's alerts; another tenant neither
    assert await alerts(client, world.a.provider_headers[1]) == []
    assert await alerts(client, world.b.commissioner) == []


async def test_a_double_handed_visit_is_late_until_both_carers_check_in(
    client: Client, world: World, pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    start = datetime.now(tz=UTC) - timedelta(minutes=20)
    visit_id = await new_visit(client, world, start, carers=2)
    body = event("check_in", start, visit_id=visit_id)
    await client.post("/v1/visit-events", json=body, headers=world.a.carer_headers[0])
    await jobs.evaluate_alerts(pool, start + timedelta(minutes=15))
    assert kinds_of(await alerts(client, world.a.commissioner), visit_id) == {"late": "open"}  # one of two came
    carer_b = await create(client, world.a.provider_headers[0], "/v1/carers", {"name": "B"})
    b_headers = await credential_headers(
        client, world.a.provider_headers[0], {"role": "carer", "carer_id": carer_b["id"]}
    )
    second = event("check_in", start + timedelta(minutes=16), visit_id=visit_id)
    assert (await client.post("/v1/visit-events", json=second, headers=b_headers)).status_code == 201
    await jobs.evaluate_alerts(pool, start + timedelta(minutes=17))
    assert kinds_of(await alerts(client, world.a.commissioner), visit_id) == {"late": "resolved"}


async def test_no_check_out_an_hour_after_the_end(client: Client, world: World, pool: asyncpg.Pool) -> None:
    start = datetime.now(tz=UTC) - timedelta(minutes=5)
    visit_id = await new_visit(client, world, start)
    await client.post(
        "/v1/visit-events", json=event("check_in", start, visit_id=visit_id), headers=world.a.carer_headers[0]
    )
    end = start + timedelta(minutes=30)
    await jobs.evaluate_alerts(pool, end + timedelta(minutes=59))
    assert "no_check_out" not in kinds_of(await alerts(client, world.a.commissioner), visit_id)
    await jobs.evaluate_alerts(pool, end + timedelta(minutes=60))
    assert kinds_of(await alerts(client, world.a.commissioner), visit_id)["no_check_out"] == "open"
    out = event("check_out", datetime.now(tz=UTC), visit_id=visit_id)
    await client.post("/v1/visit-events", json=out, headers=world.a.carer_headers[0])
    await jobs.evaluate_alerts(pool, end + timedelta(minutes=61))
    assert kinds_of(await alerts(client, world.a.commissioner), visit_id)["no_check_out"] == "resolved"


async def test_outside_geofence_is_closed_by_acknowledgement(client: Client, world: World, pool: asyncpg.Pool) -> None:
    start = datetime.now(tz=UTC) - timedelta(minutes=5)
    visit_id = await new_visit(client, world, start)
    far = event("check_in", start, visit_id=visit_id, location={"lat": 54.5, "lon": -2.0, "accuracy_m": 10})
    await client.post("/v1/visit-events", json=far, headers=world.a.carer_headers[0])
    await jobs.evaluate_alerts(pool)
    [alert] = [a for a in await alerts(client, world.a.provider_headers[0]) if a["kind"] == "outside_geofence"]
    assert alert["status"] == "open"
    assert (await client.post(f"/v1/alerts/{alert['id']}/ack", headers=world.a.provider_headers[1])).status_code == 404
    acked = await client.post(f"/v1/alerts/{alert['id']}/ack", headers=world.a.provider_headers[0])
    assert acked.status_code == 200
    assert acked.json()["status"] == "resolved"
    assert acked.json()["acknowledged_by"] is not None


async def test_two_workers_raise_each_alert_once(
    client: Client, world: World, pool: asyncpg.Pool, database_url: str
) -> None:
    from infra.db import create_pool

    start = datetime.now(tz=UTC) + timedelta(minutes=1)
    visit_ids = [await new_visit(client, world, start) for _ in range(5)]
    other = await create_pool(database_url, max_size=2)
    try:
        rounds = await asyncio.gather(
            *(jobs.evaluate_alerts(p, start + timedelta(minutes=61)) for p in (pool, other, pool, other))
        )
    finally:
        await other.close()
    raised = [a for r in rounds for _, a in r[0]]
    assert sorted((str(a.visit_id), a.kind) for a in raised) == sorted(
        (v, k) for v in visit_ids for k in ("late", "missed")
    )


async def test_no_alert_for_a_threshold_passed_long_before_the_visit_existed(
    client: Client, world: World, pool: asyncpg.Pool
) -> None:
    start = datetime.now(tz=UTC) - timedelta(hours=14)  # back-dated: its late threshold passed 13.75 h ago
    visit_id = await new_visit(client, world, start)
    await jobs.evaluate_alerts(pool)
    assert kinds_of(await alerts(client, world.a.commissioner), visit_id) == {}


async def test_an_alert_arrives_on_the_live_stream(
    client: Client, world: World, pool: asyncpg.Pool, settings: Settings
) -> None:
    """Over real HTTP (the in-process test client buffers whole responses, so it cannot stream)."""
    start = datetime.now(tz=UTC) + timedelta(minutes=1)
    visit_id = await new_visit(client, world, start)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_config=None))
    serving = asyncio.create_task(server.serve())
    redis = create_redis(settings.redis_url or "")
    publisher = AlertPublisher(redis, settings.redis_namespace)
    received: list[str] = []

    async def listen() -> None:
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http,
            http.stream("GET", "/v1/alerts/stream", headers=world.a.provider_headers[0]) as response,
        ):
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    received.append(line.removeprefix("data: "))
                    return

    try:
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.05)
        listener = asyncio.create_task(listen())
        await asyncio.sleep(0.5)  # let it subscribe
        raised, _ = await jobs.evaluate_alerts(pool, start + timedelta(minutes=15))
        assert await publisher.publish(raised) == 1
        await asyncio.wait_for(listener, timeout=5)
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, timeout=10)
        await redis.aclose()
    alert = json.loads(received[0])
    assert (alert["kind"], alert["visit_id"], alert["status"]) == ("late", visit_id, "open")


async def test_the_live_board_shows_who_is_on_site(
    client: Client, world: World, pool: asyncpg.Pool, settings: Settings
) -> None:
    redis = create_redis(settings.redis_url or "")
    monitor = jobs.Monitor(redis, settings.redis_namespace)
    try:
        await monitor.tick(pool)
        start = datetime.now(tz=UTC) - timedelta(minutes=10)
        visit_id = await new_visit(client, world, start)
        carer = world.a.carer_headers[0]
        await client.post("/v1/visit-events", json=event("check_in", start, visit_id=visit_id), headers=carer)
        await asyncio.sleep(0.1)  # ingest notes the event in Redis just after answering
        await monitor.tick(pool)
        board = (await client.get("/v1/live", headers=world.a.provider_headers[0])).json()
        assert [(row["carer_id"], row["visit_id"]) for row in board["on_site"]] == [(world.a.carers[0], visit_id)]
        assert board["on_site"][0]["person_reference"] == "P-A"
        assert (await client.get("/v1/live", headers=world.a.provider_headers[1])).json()["on_site"] == []
        assert (await client.get("/v1/live", headers=world.b.commissioner)).json()["on_site"] == []
        assert (await client.get("/v1/live", headers=carer)).status_code == 403
        await client.post(
            "/v1/visit-events", json=event("check_out", datetime.now(tz=UTC), visit_id=visit_id), headers=carer
        )
        await asyncio.sleep(0.1)
        await monitor.tick(pool)
        assert (await client.get("/v1/live", headers=world.a.commissioner)).json()["on_site"] == []
    finally:
        await redis.aclose()


async def test_later_sweeps_still_raise_what_fell_due_or_appeared_since(
    client: Client, world: World, pool: asyncpg.Pool
) -> None:
    sweeps = jobs.Sweeps()
    now = datetime.now(tz=UTC)
    soon = await new_visit(client, world, now - timedelta(minutes=14))  # late a minute from now
    raised, _ = await sweeps.sweep(pool, now)  # the first sweep looks at everything
    assert [a for _, a in raised if str(a.visit_id) == soon] == []
    back_dated = await new_visit(client, world, now - timedelta(hours=3))  # its thresholds passed hours ago
    raised, _ = await sweeps.sweep(pool, now + timedelta(minutes=1))
    assert sorted((str(a.visit_id), a.kind) for _, a in raised if str(a.visit_id) in (soon, back_dated)) == sorted(
        [(soon, "late"), (back_dated, "late"), (back_dated, "missed")]
    )


async def visit_status(client: Client, world: World, visit_id: str) -> str:
    response = await client.get(f"/v1/visits/{visit_id}", headers=world.a.commissioner)
    assert response.status_code == 200, response.text
    status: str = response.json()["status"]
    return status


async def post_event(client: Client, world: World, body: dict[str, Any]) -> None:
    response = await client.post("/v1/visit-events", json=body, headers=world.a.carer_headers[0])
    assert response.status_code == 201, response.text


async def test_a_carer_s_events_moved_to_the_right_visit_count_there_for_every_alert(
    client: Client, world: World, pool: asyncpg.Pool
) -> None:
    """A review finding (decision 155): the alerts counted a carer's events on the visit they were posted
    to, while reconciliation counts them where approved `wrong_visit_selected` moves take them. The carer
    checked in on Y by mistake; X was rightly late and then missed. Once the move Y→X was approved, X
    (in progress) kept both alerts open for good, Y (nobody came) raised nothing, and the hour after
    the end brought `no_check_out` on Y rather than X."""
    tw = world.a
    start = datetime.now(tz=UTC) - timedelta(minutes=61)
    right = await new_visit(client, world, start)
    wrong = await new_visit(client, world, start - timedelta(minutes=5))
    await post_event(client, world, event("check_in", start + timedelta(minutes=2), visit_id=wrong))
    await reconciled(pool)
    now = datetime.now(tz=UTC)
    await jobs.evaluate_alerts(pool, now)
    shown = await alerts(client, tw.commissioner)
    assert kinds_of(shown, right) == {"late": "open", "missed": "open"}  # correct at the time
    assert kinds_of(shown, wrong) == {}
    await approved_move(client, tw, UUID(wrong), UUID(right))
    assert (await visit_status(client, world, right), await visit_status(client, world, wrong)) == (
        "in_progress",
        "missed",
    )
    await jobs.evaluate_alerts(pool, now + timedelta(minutes=1))
    shown = await alerts(client, tw.commissioner)
    assert kinds_of(shown, right) == {"late": "resolved", "missed": "resolved"}
    assert kinds_of(shown, wrong) == {"late": "open", "missed": "open"}  # a visit nobody came to
    # An hour after the end the carer is still on site at X (their check-in counts there), not at Y.
    end = start + timedelta(minutes=30)
    await jobs.evaluate_alerts(pool, end + timedelta(minutes=60))
    shown = await alerts(client, tw.commissioner)
    assert kinds_of(shown, right)["no_check_out"] == "open"
    assert "no_check_out" not in kinds_of(shown, wrong)
    # The phone still names Y: the check-out counts at X too, and ends X's alert.
    await post_event(client, world, event("check_out", datetime.now(tz=UTC), visit_id=wrong))
    await reconciled(pool)
    await jobs.evaluate_alerts(pool, end + timedelta(minutes=61))
    shown = await alerts(client, tw.commissioner)
    assert kinds_of(shown, right) == {"late": "resolved", "missed": "resolved", "no_check_out": "resolved"}
    assert await visit_status(client, world, right) == "completed"


async def test_a_visit_whose_events_were_moved_away_late_is_missed_at_the_next_sweep(
    client: Client, world: World, pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    """Decision 155: a visit left with no event by a move approved after its thresholds had passed is
    alertable as missed, like any visit nobody came to, at the next minutely sweep; the visit it had been
    mistaken for is no longer missed. Both visits' plans are unchanged, so a sweep that looked only at
    visits with a threshold or a plan change since the last one saw neither."""
    tw = world.a
    sweeps = jobs.Sweeps()
    now = datetime.now(tz=UTC)
    wrong = await new_visit(client, world, now - timedelta(hours=3))
    right = await new_visit(client, world, now - timedelta(hours=2))
    await post_event(client, world, event("check_in", now - timedelta(hours=2), visit_id=wrong))
    await post_event(client, world, event("check_out", now - timedelta(minutes=90), visit_id=wrong))
    await reconciled(pool)
    # Planned ten minutes ago, so that only the move (not the plan's creation) is news to the second sweep.
    await db.execute(
        """UPDATE visit_plans SET created_at = created_at - interval '10 minutes',
                  updated_at = updated_at - interval '10 minutes' WHERE id = ANY($1::uuid[])""",
        [UUID(wrong), UUID(right)],
    )
    await sweeps.sweep(pool, now)
    shown = await alerts(client, tw.commissioner)
    assert (kinds_of(shown, wrong), kinds_of(shown, right)) == ({}, {"late": "open", "missed": "open"})
    await approved_move(client, tw, UUID(wrong), UUID(right))
    assert (await visit_status(client, world, wrong), await visit_status(client, world, right)) == (
        "missed",
        "completed",
    )
    raised, resolved = await sweeps.sweep(pool, now + timedelta(minutes=1))
    assert sorted((str(a.visit_id), a.kind) for _, a in raised) == [(wrong, "late"), (wrong, "missed")]
    assert sorted((str(a.visit_id), a.kind) for _, a in resolved) == [(right, "late"), (right, "missed")]


async def test_an_approved_check_in_amendment_ends_late_and_missed(
    client: Client, world: World, pool: asyncpg.Pool
) -> None:
    """Decision 155: a carer's check-in recorded by an approved amendment (the phone failed) counts as a
    check-in, as reconciliation counts it: the visit is completed, and its late and missed alerts end."""
    tw = world.a
    start = datetime.now(tz=UTC) - timedelta(minutes=61)
    visit_id = await new_visit(client, world, start)
    await jobs.evaluate_alerts(pool, start + timedelta(minutes=61))
    assert kinds_of(await alerts(client, tw.commissioner), visit_id) == {"late": "open", "missed": "open"}
    made = await client.post(
        f"/v1/visits/{visit_id}/amendments",
        json={
            "carer_id": tw.carers[0],
            "check_in_at": (start + timedelta(minutes=3)).isoformat(),
            "check_out_at": (start + timedelta(minutes=33)).isoformat(),
            "reason_code": "device_failure",
        },
        headers=tw.provider_headers[0],
    )
    assert made.status_code == 201, made.text
    await decide(client, tw.commissioner, made)
    assert await visit_status(client, world, visit_id) == "completed"
    await jobs.evaluate_alerts(pool, start + timedelta(minutes=62))
    assert kinds_of(await alerts(client, tw.commissioner), visit_id) == {"late": "resolved", "missed": "resolved"}
