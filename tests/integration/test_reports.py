"""The commissioners' reports over HTTP: figures worked out by hand, and cross-checked with invoices."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any
from uuid import uuid4

import asyncpg
import pytest

from tests.support import Client, World, at, build_world, plan_week, reconciled, settled_monday, utc_key

HOME = {"lat": 53.7632, "lon": -2.7031, "accuracy_m": 10}


@pytest.fixture
async def world(client: Client, db: asyncpg.Connection) -> World:
    return await build_world(client, db)


def event(visit_id: str, kind: str, occurred_at: str, gps: bool, outcome: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": str(uuid4()),
        "visit_id": visit_id,
        "kind": kind,
        "occurred_at": occurred_at,
        "method": "gps" if gps else "manual",
        "device_id": "phone-1",
    }
    if gps:
        body["location"] = HOME
    if outcome:
        body["outcomes"] = [{"outcome_id": "wash", "status": outcome}]
    return body


async def post(client: Client, world: World, events: list[dict[str, Any]]) -> None:
    response = await client.post("/v1/visit-events/batch", json={"events": events}, headers=world.a.carer_headers[0])
    assert [r["status"] for r in response.json()["results"]] == ["accepted"] * len(events), response.text


async def report(client: Client, world: World, kind: str, first: date, last: date, **params: str) -> Any:
    response = await client.get(
        f"/v1/reports/{kind}",
        params={"from": first.isoformat(), "to": last.isoformat(), **params},
        headers=world.a.commissioner,
    )
    assert response.status_code == 200, response.text
    return response.json()


async def play_the_week(client: Client, world: World, monday: date) -> dict[str, str]:
    """Monday 24.5 min verified (wash not met); Tuesday morning 08:20-08:50, manual (late, no outcome);
    Tuesday evening 60 min verified; Wednesday cancelled with notice; Saturday 08:10-08:40 verified
    (wash met); Thursday, Friday and Sunday missed."""
    visits = await plan_week(client, world, monday)
    tue, wed, sat = (monday + timedelta(days=n) for n in (1, 2, 5))
    mon_id = visits[utc_key(at(monday, "08:00"))]
    await post(
        client,
        world,
        [
            event(mon_id, "check_in", at(monday, "08:00"), True),
            event(mon_id, "check_out", at(monday, "08:24", 30), True, "not_met"),
            event(visits[utc_key(at(tue, "08:00"))], "check_in", at(tue, "08:20"), False),
            event(visits[utc_key(at(tue, "08:00"))], "check_out", at(tue, "08:50"), False),
            event(visits[utc_key(at(tue, "20:00"))], "check_in", at(tue, "20:00"), True),
            event(visits[utc_key(at(tue, "20:00"))], "check_out", at(tue, "21:00"), True),
            event(visits[utc_key(at(sat, "08:00"))], "check_in", at(sat, "08:10"), True),
            event(visits[utc_key(at(sat, "08:00"))], "check_out", at(sat, "08:40"), True, "met"),
        ],
    )
    cancelled = await client.post(
        f"/v1/visits/{visits[utc_key(at(wed, '08:00'))]}/cancel",
        json={"by": "commissioner", "notified_at": at(wed - timedelta(days=2), "09:00"), "reason": "in hospital"},
        headers=world.a.commissioner,
    )
    assert cancelled.status_code == 200, cancelled.text
    return visits


# Worked by hand (rates: day 2430, evening 2700, weekend 2900 pence an hour):
#   paid: Mon 25 min 1012 (2430*25/60 = 1012.5, half to even), Tue am 30 min 1215, Tue pm 60 min 2700,
#         Sat 30 min 1450 → 6377 pence for 145 minutes
#   planned: Mon, Tue, Thu, Fri mornings 4 * 1215, Tue evening 2700, Sat and Sun 2 * 1450 → 10460
#            (Wednesday was cancelled with notice: neither planned cost nor planned minutes)
EXPECTED = {
    "visits_planned": 8,
    "visits_delivered": 4,
    "visits_missed": 3,
    "visits_cancelled": 1,
    "visits_open": 0,
    "planned_min": 7 * 30 + 60 - 30,
    "delivered_min": 24.5 + 30 + 60 + 30,
    "paid_min": 145,
    "cost_planned_pence": 10460,
    "cost_paid_pence": 6377,
    "saving_pence": 10460 - 6377,
    "visits_with_check_in": 4,
    "visits_punctual": 3,  # Tuesday morning came 20 minutes late (late_after_min 15)
    "punctuality": 0.75,
    "visits_verified_in_home": 3,  # Tuesday morning was manual
    "verified_in_home_share": 0.75,
}


def check(figures: dict[str, Any], invoiced: int) -> None:
    for key, value in EXPECTED.items():
        assert figures[key] == value, (key, figures[key], value)
    assert figures["saving_pct"] == pytest.approx(100 * 4083 / 10460, abs=0.01)
    assert (figures["invoiced_pence"], figures["not_invoiced_pence"]) == (invoiced, 6377 - invoiced)


async def test_hand_computed_delivery_before_and_after_the_invoice(
    client: Client, world: World, pool: asyncpg.Pool
) -> None:
    monday = settled_monday()
    await play_the_week(client, world, monday)
    await reconciled(pool)
    sunday = monday + timedelta(days=6)
    # The clock job has not marked the missed visits yet: they are open, and cost nothing yet.
    before = await report(client, world, "delivery", monday, sunday)
    assert before["totals"]["visits_open"] + before["totals"]["visits_missed"] == 3
    run = await client.post(
        "/v1/invoice-runs",
        json={"contract_id": world.a.contracts[0], "period_start": monday.isoformat()},
        headers=world.a.commissioner,
    )
    assert run.status_code == 201, run.text
    invoice = run.json()
    after = await report(client, world, "delivery", monday, sunday)
    [row] = after["rows"]
    assert (row["provider_id"], row["provider_code"], row["week_start"]) == (
        world.a.providers[0],
        "P0",
        monday.isoformat(),
    )
    check(row["figures"], invoiced=6377)
    assert after["totals"] == row["figures"]
    # The same figures as the invoice itself.
    assert invoice["total_pence"] == row["figures"]["cost_paid_pence"]
    assert invoice["planned_total_pence"] == row["figures"]["cost_planned_pence"]
    assert invoice["saving_pence"] == row["figures"]["saving_pence"]
    assert (after["from"], after["to"], after["currency"]) == (monday.isoformat(), sunday.isoformat(), "GBP")


async def test_not_invoiced_visits_are_priced_by_the_billing_rules(
    client: Client, world: World, pool: asyncpg.Pool
) -> None:
    from services.reconcile.jobs import reconcile_due

    monday = settled_monday()
    await play_the_week(client, world, monday)
    await reconciled(pool)
    await reconcile_due(pool)  # the clock marks Thursday, Friday and Sunday missed, as a run would
    result = await report(client, world, "delivery", monday, monday + timedelta(days=6))
    check(result["totals"], invoiced=0)


async def test_outcomes_by_domain(client: Client, world: World, pool: asyncpg.Pool) -> None:
    monday = settled_monday()
    await play_the_week(client, world, monday)
    await reconciled(pool)
    result = await report(client, world, "outcomes", monday, monday + timedelta(days=6))
    # Delivered mornings carry `wash`: Monday not met, Tuesday not recorded, Saturday met.
    assert result["totals"] == [
        {
            "domain": "personal_care",
            "expected": 3,
            "met": 1,
            "not_met": 1,
            "refused": 0,
            "not_recorded": 1,
            "met_share": 0.3333,
        }
    ]
    [row] = result["rows"]
    assert row["visits_delivered"] == 4
    assert row["domains"] == result["totals"]
    assert result["bank"] is None or isinstance(result["bank"], list)


async def test_adjustments_count_in_their_visits_week_and_paid_cost_matches_invoices(
    client: Client, world: World, pool: asyncpg.Pool
) -> None:
    monday = settled_monday()
    next_monday = monday + timedelta(days=7)
    visits = await plan_week(client, world, monday, weeks=2)
    first = visits[utc_key(at(monday, "08:00"))]
    second = visits[utc_key(at(next_monday, "08:00"))]
    await post(client, world, [event(first, "check_in", at(monday, "08:00"), True)])  # forgot the check-out
    await post(
        client,
        world,
        [
            event(second, "check_in", at(next_monday, "08:00"), True),
            event(second, "check_out", at(next_monday, "08:30"), True),
        ],
    )
    await reconciled(pool)

    async def invoice_run(start: date) -> Any:
        response = await client.post(
            "/v1/invoice-runs",
            json={"contract_id": world.a.contracts[0], "period_start": start.isoformat()},
            headers=world.a.commissioner,
        )
        assert response.status_code == 201, response.text
        return response.json()

    week1 = await invoice_run(monday)
    proposed = await client.post(
        f"/v1/visits/{first}/amendments",
        json={"carer_id": world.a.carers[0], "check_out_at": at(monday, "08:30"), "reason_code": "forgot_check_out"},
        headers=world.a.provider_headers[0],
    )
    approved = await client.post(f"/v1/amendments/{proposed.json()['id']}/approve", headers=world.a.commissioner)
    assert approved.status_code == 200, approved.text
    await reconciled(pool)
    week2 = await invoice_run(next_monday)
    [adjustment] = [line for line in week2["lines"] if line["kind"] == "adjustment"]
    assert (adjustment["visit_id"], adjustment["amount_pence"]) == (first, 1215)

    one = await report(client, world, "delivery", monday, monday + timedelta(days=6))
    two = await report(client, world, "delivery", next_monday, next_monday + timedelta(days=6))
    # Week 1: only Monday morning paid, 1215 once its adjustment (on week 2's invoice) is counted.
    assert one["totals"]["cost_paid_pence"] == 1215
    assert one["totals"]["paid_min"] == 30
    # Week 2: only its Monday morning, 1215; the adjustment is not week 2's cost.
    assert two["totals"]["cost_paid_pence"] == 1215
    # Over both weeks (fully invoiced), paid cost is the sum of the matching invoice lines.
    both = await report(client, world, "delivery", monday, next_monday + timedelta(days=6))
    lines = [line for inv in (week1, week2) for line in inv["lines"] if line["kind"] in ("visit", "adjustment")]
    assert both["totals"]["cost_paid_pence"] == sum(line["amount_pence"] for line in lines) == 2430
    assert both["totals"]["invoiced_pence"] == 2430
    assert both["totals"]["not_invoiced_pence"] == 0
    # the saving of week 2's invoice leaves out the adjustment; the report puts it in week 1
    assert one["totals"]["saving_pence"] + two["totals"]["saving_pence"] == both["totals"]["saving_pence"]
    assert both["totals"]["saving_pence"] == week1["saving_pence"] + week2["saving_pence"] - 1215


async def test_who_may_ask_and_what_a_range_may_be(client: Client, world: World) -> None:
    monday = settled_monday()
    params = {"from": monday.isoformat(), "to": (monday + timedelta(days=6)).isoformat()}
    for headers in (world.a.provider_headers[0], world.a.carer_headers[0], world.admin):
        for kind in ("delivery", "outcomes"):
            response = await client.get(f"/v1/reports/{kind}", params=params, headers=headers)
            assert response.status_code == 403, (kind, response.text)
    assert (await client.get("/v1/reports/delivery", params=params)).status_code == 401
    backwards = {"from": params["to"], "to": params["from"]}
    response = await client.get("/v1/reports/delivery", params=backwards, headers=world.a.commissioner)
    assert response.status_code == 422
    assert response.json()["errors"][0]["code"] == "invalid_range"
    absurd = {"from": "1900-01-01", "to": "2100-01-01"}
    response = await client.get("/v1/reports/outcomes", params=absurd, headers=world.a.commissioner)
    assert response.status_code == 422
    assert response.json()["errors"][0]["code"] == "range_too_long"
    assert (await client.get("/v1/reports/delivery", params={}, headers=world.a.commissioner)).status_code == 400
    other = {**params, "provider_id": world.b.providers[0]}
    assert (await client.get("/v1/reports/delivery", params=other, headers=world.a.commissioner)).status_code == 404


async def test_a_tenant_sees_only_its_own_visits(client: Client, world: World, pool: asyncpg.Pool) -> None:
    monday = settled_monday()
    await play_the_week(client, world, monday)
    await reconciled(pool)
    params = {"from": monday.isoformat(), "to": (monday + timedelta(days=6)).isoformat()}
    theirs = (await client.get("/v1/reports/delivery", params=params, headers=world.b.commissioner)).json()
    assert theirs["rows"] == []
    assert theirs["totals"]["visits_planned"] == 0
    assert theirs["totals"]["punctuality"] is None
    other_provider = await report(client, world, "delivery", monday, monday, provider_id=world.a.providers[1])
    assert other_provider["rows"] == []
