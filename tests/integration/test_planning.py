"""Planning over HTTP: plans generate visits (idempotently, across clock changes), extra visits,
moves, cancellations and approvals, and who sees which visits."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from infra.db import create_pool
from services.planning.jobs import extend_care_plans
from tests.support import Client, TenantWorld, World, build_world, create

LONDON = ZoneInfo("Europe/London")


def monday_weeks_ago(weeks: int) -> date:
    today = datetime.now(tz=LONDON).date()
    return today - timedelta(days=today.weekday() + 7 * weeks)


def plan_body(tw: TenantWorld, **changes: Any) -> dict[str, Any]:
    return {
        "person_id": tw.person_id,
        "contract_id": tw.contracts[0],
        "weekly_min": 7 * 60,
        "outcomes": [
            {"id": "wash", "domain": "personal_care", "text": "Washed and dressed", "key": True},
            {"id": "eat", "domain": "food_and_drink", "text": "Breakfast", "key": False},
        ],
        "schedule": [
            {"weekday": d, "start": "08:00", "minutes": 30, "outcome_ids": ["wash", "eat"]} for d in range(1, 8)
        ],
        "valid_from": monday_weeks_ago(1).isoformat(),
        **changes,
    }


@pytest.fixture
async def world(client: Client, db: asyncpg.Connection) -> World:
    return await build_world(client, db)


async def all_visits(client: Client, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {"limit": 500, **params} | ({"cursor": cursor} if cursor else {})
        response = await client.get("/v1/visits", params=query, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


async def test_plan_generates_its_visits_once(client: Client, world: World, database_url: str) -> None:
    tw = world.a
    plan = await create(client, tw.commissioner, "/v1/care-plans", plan_body(tw, horizon_days=14))
    today = datetime.now(tz=LONDON).date()
    expected_days = (today + timedelta(days=14) - monday_weeks_ago(1)).days + 1
    assert plan["visits_created"] == expected_days
    assert plan["generated_until"] == (today + timedelta(days=14)).isoformat()
    visits = await all_visits(client, tw.commissioner, person_id=tw.person_id)
    assert len(visits) == expected_days
    first = visits[0]
    assert first["status"] == "planned"
    assert first["planned_min"] == 30
    assert first["outcome_ids"] == ["wash", "eat"]
    assert first["provider_id"] == tw.providers[0]
    assert first["funding"] == "package"
    assert {datetime.fromisoformat(v["planned_start"]).astimezone(LONDON).strftime("%H:%M") for v in visits} == {
        "08:00"
    }
    pool = await create_pool(database_url, max_size=2)
    try:
        assert await extend_care_plans(pool) == 0  # nothing new: generation is keyed
        later = datetime.now(tz=UTC) + timedelta(days=3)
        assert await extend_care_plans(pool, now=later) == 3  # the horizon rolls forward a day at a time
    finally:
        await pool.close()


async def test_back_dated_plan_crosses_the_autumn_clock_change_at_eight_local(client: Client, world: World) -> None:
    tw = world.a
    await create(
        client,
        tw.commissioner,
        "/v1/contracts",
        {
            "provider_id": tw.providers[0],
            "model": "time_and_task",
            "period": "week",
            "rates": {"day": 1, "evening": 1, "night": 1, "weekend": 1, "bank_holiday": 1},
            "valid_from": "2026-01-01",
        },
    )
    body = plan_body(tw, valid_from="2026-10-19", valid_to="2026-11-01")
    await create(client, tw.commissioner, "/v1/care-plans", body)
    visits = await all_visits(
        client, tw.commissioner, person_id=tw.person_id, **{"from": "2026-10-24", "to": "2026-10-26"}
    )
    starts = sorted(v["planned_start"] for v in visits)
    assert starts == ["2026-10-24T07:00:00Z", "2026-10-25T08:00:00Z", "2026-10-26T08:00:00Z"]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"outcomes": [{"id": "x", "domain": "happiness", "text": "t", "key": True}]}, "outcomes[0].domain"),
        ({"weekly_min": 100}, "weekly_min"),
        ({"schedule": [{"weekday": 8, "start": "08:00", "minutes": 30}]}, "schedule[0].weekday"),
        ({"schedule": [{"weekday": 1, "start": "24:00", "minutes": 30}]}, "schedule[0].start"),
        (
            {"schedule": [{"weekday": 1, "start": "08:00", "minutes": 30, "carers_required": 3}]},
            "schedule[0].carers_required",
        ),
    ],
)
async def test_bad_plans_are_422_and_create_nothing(
    client: Client, world: World, db: asyncpg.Connection, changes: dict[str, Any], field: str
) -> None:
    response = await client.post("/v1/care-plans", json=plan_body(world.a, **changes), headers=world.a.commissioner)
    assert response.status_code == 422, response.text
    assert field in [e["field"] for e in response.json()["errors"]]
    assert await db.fetchval("SELECT count(*) FROM visits") == 0
    assert await db.fetchval("SELECT count(*) FROM care_plans") == 0


async def test_plan_for_another_tenants_person_is_404(client: Client, world: World) -> None:
    body = plan_body(world.a, person_id=world.b.person_id)
    assert (await client.post("/v1/care-plans", json=body, headers=world.a.commissioner)).status_code == 404


def tomorrow_at(hhmm: str) -> str:
    day = datetime.now(tz=LONDON).date() + timedelta(days=2)
    hours, minutes = map(int, hhmm.split(":"))
    return datetime(day.year, day.month, day.day, hours, minutes, tzinfo=LONDON).astimezone(UTC).isoformat()


async def extra_visit(client: Client, headers: dict[str, str], tw: TenantWorld, **changes: Any) -> Any:
    body = {
        "person_id": tw.person_id,
        "contract_id": tw.contracts[0],
        "planned_start": tomorrow_at("12:00"),
        "planned_min": 45,
        **changes,
    }
    return await client.post("/v1/visits", json=body, headers=headers)


async def test_provider_requests_and_commissioner_approves_an_extra_visit(client: Client, world: World) -> None:
    tw = world.a
    await create(client, tw.commissioner, "/v1/care-plans", plan_body(tw))
    requested = await extra_visit(client, tw.provider_headers[0], tw, outcome_ids=["eat"])
    assert requested.status_code == 201, requested.text
    assert requested.json()["approval"] == "pending"
    assert requested.json()["origin"] == "provider_request"
    visit_id = requested.json()["id"]
    assert (await client.post(f"/v1/visits/{visit_id}/approve", headers=tw.provider_headers[0])).status_code == 403
    approved = await client.post(f"/v1/visits/{visit_id}/approve", headers=tw.commissioner)
    assert approved.status_code == 200
    assert approved.json()["approval"] == "approved"
    again = await client.post(f"/v1/visits/{visit_id}/approve", headers=tw.commissioner)
    assert again.status_code == 409
    by_commissioner = await extra_visit(client, tw.commissioner, tw)
    assert by_commissioner.json()["approval"] == "approved"
    # A bank-funded visit needs banked minutes to hold (tests/integration/test_banking.py): none here.
    unfunded = await extra_visit(client, tw.commissioner, tw, funding="bank")
    assert unfunded.status_code == 422
    assert unfunded.json()["code"] == "insufficient_bank"


async def test_extra_visit_reach_and_rules(client: Client, world: World) -> None:
    tw = world.a
    await create(client, tw.commissioner, "/v1/care-plans", plan_body(tw))
    other_contract = await extra_visit(client, tw.provider_headers[0], tw, contract_id=tw.contracts[1])
    assert other_contract.status_code == 404
    # provider 1 has no plan with the person: the person is not "with" it
    not_with = await extra_visit(client, tw.provider_headers[1], tw, contract_id=tw.contracts[1])
    assert not_with.status_code == 404
    unknown_outcome = await extra_visit(client, tw.commissioner, tw, outcome_ids=["fly"])
    assert unknown_outcome.status_code == 422
    too_many = await extra_visit(client, tw.commissioner, tw, carer_ids=tw.carers[:1] * 2, carers_required=2)
    assert too_many.status_code == 422
    foreign_carer = await extra_visit(client, tw.commissioner, tw, carer_ids=[tw.carers[1]])
    assert foreign_carer.status_code == 404


async def test_moves_and_assignments(client: Client, world: World) -> None:
    tw = world.a
    await create(client, tw.commissioner, "/v1/care-plans", plan_body(tw))
    visit = (await extra_visit(client, tw.commissioner, tw)).json()
    path = f"/v1/visits/{visit['id']}"
    provider = tw.provider_headers[0]
    moved = await client.patch(
        path, json={"planned_start": tomorrow_at("20:00"), "carer_ids": [tw.carers[0]]}, headers=provider
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["carer_ids"] == [tw.carers[0]]
    assert moved.json()["planned_start"].startswith(tomorrow_at("20:00")[:16])
    assert moved.json()["band_start"] == visit["band_start"]  # a provider's move keeps the original band
    other_day = (datetime.fromisoformat(tomorrow_at("12:00")) + timedelta(days=1)).isoformat()
    assert (await client.patch(path, json={"planned_start": other_day}, headers=provider)).status_code == 422
    by_commissioner = await client.patch(path, json={"planned_start": other_day}, headers=tw.commissioner)
    assert by_commissioner.status_code == 200
    assert by_commissioner.json()["band_start"] == by_commissioner.json()["planned_start"]
    past = await all_visits(client, tw.commissioner, person_id=tw.person_id, **{"to": monday_weeks_ago(1).isoformat()})
    started = await client.patch(f"/v1/visits/{past[0]['id']}", json={"carer_ids": []}, headers=tw.commissioner)
    assert started.status_code == 409
    assert (
        await client.patch(path, json={"carer_ids": [tw.carers[0]]}, headers=tw.provider_headers[1])
    ).status_code == 404


async def test_cancellations(client: Client, world: World) -> None:
    tw = world.a
    await create(client, tw.commissioner, "/v1/care-plans", plan_body(tw))
    now = datetime.now(tz=UTC)
    soon = (await extra_visit(client, tw.commissioner, tw, planned_start=(now + timedelta(hours=3)).isoformat())).json()
    path = f"/v1/visits/{soon['id']}/cancel"
    future = await client.post(
        path,
        json={"by": "person", "notified_at": (now + timedelta(hours=1)).isoformat(), "reason": "x"},
        headers=tw.provider_headers[0],
    )
    assert future.status_code == 422
    short = await client.post(
        path,
        json={"by": "person", "notified_at": now.isoformat(), "reason": "in hospital"},
        headers=tw.provider_headers[0],
    )
    assert short.status_code == 200, short.text
    assert short.json()["status"] == "cancelled"
    assert short.json()["cancellation"]["short_notice"] is True  # 3 hours' notice against 24
    assert short.json()["cancellation"]["confirmed"] is False  # recorded by the provider
    again = await client.post(
        path, json={"by": "provider", "notified_at": now.isoformat(), "reason": "again"}, headers=tw.commissioner
    )
    assert again.status_code == 409
    confirmed = await client.post(f"/v1/visits/{soon['id']}/approve", headers=tw.commissioner)
    assert confirmed.json()["cancellation"]["confirmed"] is True
    later = (await extra_visit(client, tw.commissioner, tw)).json()  # two days ahead
    with_notice = await client.post(
        f"/v1/visits/{later['id']}/cancel",
        json={"by": "person", "notified_at": now.isoformat(), "reason": "away"},
        headers=tw.provider_headers[0],
    )
    assert with_notice.json()["cancellation"]["short_notice"] is False
    assert with_notice.json()["cancellation"]["confirmed"] is True


async def test_a_requested_visit_cancelled_at_short_notice_pays_only_once_approved(
    client: Client, world: World
) -> None:
    """DOMAIN.md: a provider's requested visit pays 0 until a commissioner approves it; its short-notice
    cancellation by the person is no exception (decision 131)."""
    tw = world.a
    await create(client, tw.commissioner, "/v1/care-plans", plan_body(tw))
    now = datetime.now(tz=UTC)
    soon = (now + timedelta(hours=3)).isoformat()
    requested = (await extra_visit(client, tw.provider_headers[0], tw, planned_start=soon)).json()
    assert requested["approval"] == "pending"
    cancelled = await client.post(
        f"/v1/visits/{requested['id']}/cancel",
        json={"by": "person", "notified_at": now.isoformat(), "reason": "in hospital"},
        headers=tw.commissioner,
    )
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["cancellation"] == {
        **cancelled.json()["cancellation"],
        "short_notice": True,
        "confirmed": True,
    }
    assert cancelled.json()["actual"]["place_payables"] == [0]
    approved = await client.post(f"/v1/visits/{requested['id']}/approve", headers=tw.commissioner)
    assert approved.status_code == 200, approved.text
    assert approved.json()["actual"]["place_payables"] == [45]  # short_notice_pay_pct 100


async def test_carers_see_their_own_visits_only(client: Client, world: World) -> None:
    tw = world.a
    await create(client, tw.commissioner, "/v1/care-plans", plan_body(tw))
    mine = (await extra_visit(client, tw.commissioner, tw, carer_ids=[tw.carers[0]])).json()
    carer = tw.carer_headers[0]
    listed = await all_visits(client, carer)
    assert [v["id"] for v in listed] == [mine["id"]]
    day = datetime.fromisoformat(mine["planned_start"]).astimezone(LONDON).date().isoformat()
    my_day = await client.get("/v1/me/visits", params={"date": day}, headers=carer)
    assert [v["id"] for v in my_day.json()] == [mine["id"]]
    other = await all_visits(client, tw.commissioner, person_id=tw.person_id)
    unassigned = next(v for v in other if v["id"] != mine["id"])
    assert (await client.get(f"/v1/visits/{unassigned['id']}", headers=carer)).status_code == 404
    assert (await client.get(f"/v1/visits/{mine['id']}", headers=carer)).status_code == 200
    assert (await client.get(f"/v1/visits/{mine['id']}", headers=world.b.commissioner)).status_code == 404
    assert await all_visits(client, tw.provider_headers[1]) == []
