"""The bank over HTTP, checked against movements computed by hand: accrual and its cap, corrections
(take-back and shortfall), redeployment holds, transfers, allocations, expiry and its credit line,
as-of queries, reach, and the append-only ledger."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest

from services.banking import store as bank_store
from services.banking.check import breaches
from services.banking.jobs import expire_due_lots
from services.billing.jobs import run_due_invoices
from services.billing.rules import amount_pence
from services.cli import main as cli_main
from tests.support import (
    LONDON,
    RATES,
    Client,
    TenantWorld,
    build_world,
    create,
    credential_headers,
    decide,
    reconciled,
    requeue_by,
    settled_monday,
)

DAY_RATE = RATES["day"]


def local(day: date, hhmm: str, plus_min: float = 0) -> datetime:
    hours, minutes = map(int, hhmm.split(":"))
    return datetime(day.year, day.month, day.day, hours, minutes, tzinfo=LONDON) + timedelta(minutes=plus_min)


def pence(minutes: int, rate: int = DAY_RATE) -> int:
    """round_half_even(rate x minutes / 60), worked the long way."""
    whole, rest = divmod(rate * minutes, 60)
    return whole + (1 if rest * 2 > 60 or (rest * 2 == 60 and whole % 2) else 0)


@dataclass
class Bank:
    """One tenant, provider 0 on an outcome-based weekly contract, two people with daily 45-minute calls
    (A at 08:00, B at 10:00) over the settled week."""

    client: Client
    tw: TenantWorld
    contract_id: str
    people: list[str]
    monday: date

    @property
    def commissioner(self) -> dict[str, str]:
        return self.tw.commissioner

    @property
    def provider(self) -> dict[str, str]:
        return self.tw.provider_headers[0]

    async def visit_on(self, person: int, day: date) -> str:
        response = await self.client.get(
            "/v1/visits",
            params={"person_id": self.people[person], "from": day.isoformat(), "to": day.isoformat()},
            headers=self.commissioner,
        )
        items = [v for v in response.json()["items"] if v["funding"] == "package"]
        assert len(items) == 1, response.text
        return str(items[0]["id"])

    async def attend(self, visit_id: str, start: datetime, minutes: float, outcome: str | None = "met") -> None:
        out: dict[str, Any] = {
            "event_id": str(uuid4()),
            "visit_id": visit_id,
            "kind": "check_out",
            "occurred_at": (start + timedelta(minutes=minutes)).isoformat(),
            "method": "manual",
            "device_id": "p",
        }
        if outcome:
            out["outcomes"] = [{"outcome_id": "wash", "status": outcome}]
        events = [
            {
                "event_id": str(uuid4()),
                "visit_id": visit_id,
                "kind": "check_in",
                "occurred_at": start.isoformat(),
                "method": "manual",
                "device_id": "p",
            },
            out,
        ]
        response = await self.client.post(
            "/v1/visit-events/batch", json={"events": events}, headers=self.tw.carer_headers[0]
        )
        assert [r["status"] for r in response.json()["results"]] == ["accepted", "accepted"], response.text

    async def bank(self, person: int, **params: str) -> dict[str, Any]:
        response = await self.client.get(
            f"/v1/people/{self.people[person]}/bank", params=params, headers=self.commissioner
        )
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    async def invoice_run(self) -> Any:
        """The contract's invoice run for the week."""
        return await self.client.post(
            "/v1/invoice-runs",
            json={"contract_id": self.contract_id, "period_start": self.monday.isoformat()},
            headers=self.commissioner,
        )

    async def bank_visit(self, person: int, start: datetime, minutes: int) -> Any:
        return await self.client.post(
            "/v1/visits",
            json={
                "person_id": self.people[person],
                "contract_id": self.contract_id,
                "planned_start": start.isoformat(),
                "planned_min": minutes,
                "funding": "bank",
            },
            headers=self.commissioner,
        )


async def make_bank(client: Client, db: asyncpg.Connection, valid_to: date | None = None, **banking: Any) -> Bank:
    world = await build_world(client, db)
    tw = world.a
    ends = {"valid_to": valid_to.isoformat()} if valid_to else {}
    contract = await create(
        client,
        tw.commissioner,
        "/v1/contracts",
        {
            "provider_id": tw.providers[0],
            "model": "outcome_based",
            "period": "week",
            "rates": RATES,
            "banking": banking,
            "valid_from": "2026-01-05",
            **ends,
        },
    )
    other = await create(
        client,
        tw.commissioner,
        "/v1/people",
        {"reference": "P-B", "display_name": "B. Person", "location": {"lat": 53.7632, "lon": -2.7031}},
    )
    monday = settled_monday()
    for person, start in ((tw.person_id, "08:00"), (other["id"], "10:00")):
        await create(
            client,
            tw.commissioner,
            "/v1/care-plans",
            {
                "person_id": person,
                "contract_id": contract["id"],
                "weekly_min": 7 * 45,
                "outcomes": [{"id": "wash", "domain": "personal_care", "text": "washed", "key": True}],
                "schedule": [
                    {"weekday": d, "start": start, "minutes": 45, "outcome_ids": ["wash"]} for d in range(1, 8)
                ],
                "valid_from": monday.isoformat(),
                "valid_to": (monday + timedelta(days=6)).isoformat(),
            },
        )
    return Bank(client, tw, contract["id"], [tw.person_id, other["id"]], monday)


async def postings(bank: Bank, **params: str) -> list[dict[str, Any]]:
    response = await bank.client.get("/v1/bank/postings", params={"limit": 500, **params}, headers=bank.commissioner)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_an_outcome_met_early_banks_the_unused_minutes_in_a_lot(
    client: Client, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    bank = await make_bank(client, db, expiry_weeks=12)
    monday = bank.monday
    visit_id = await bank.visit_on(0, monday)
    await bank.attend(visit_id, local(monday, "08:00"), 20)  # 45 planned, 20 delivered, outcome met
    await reconciled(pool)

    state = await bank.bank(0)
    assert (state["balance_min"], state["held_min"], state["available_min"]) == (25, 0, 25)
    assert state["value_pence"] == pence(25) == 1012  # 1012.5 rounds to even
    [lot] = state["lots"]
    checked_out = local(monday, "08:20")
    assert lot["remaining_min"] == 25
    assert lot["rate_pence_per_hour"] == DAY_RATE
    assert datetime.fromisoformat(lot["effective_at"]) == checked_out
    assert datetime.fromisoformat(lot["expires_at"]) == checked_out + timedelta(weeks=12)
    [posting] = await postings(bank, person_id=bank.people[0])
    assert (posting["kind"], posting["from_account"], posting["minutes"]) == ("accrue", "owed", 25)
    assert posting["to_account"] == f"person:{bank.people[0]}"
    assert posting["visit_id"] == visit_id

    # As of a moment before the check-out, nothing was banked yet.
    before = await bank.bank(0, as_of=(checked_out - timedelta(seconds=1)).isoformat())
    assert (before["balance_min"], before["lots"]) == (0, [])
    # The provider still paid the planned 45 minutes.
    visit = (await client.get(f"/v1/visits/{visit_id}", headers=bank.commissioner)).json()
    assert (visit["actual"]["payable_min"], visit["actual"]["banked_min"]) == (45, 25)


async def test_outcomes_not_met_or_short_banking_bank_nothing(
    client: Client, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    bank = await make_bank(client, db, expiry_weeks=12)
    monday = bank.monday
    await bank.attend(await bank.visit_on(0, monday), local(monday, "08:00"), 20, outcome="refused")
    tuesday = monday + timedelta(days=1)
    await bank.attend(await bank.visit_on(0, tuesday), local(tuesday, "08:00"), 41)  # 4 < min_bankable_min 5
    await reconciled(pool)
    assert (await bank.bank(0))["balance_min"] == 0
    assert await postings(bank) == []


async def test_the_cap_sends_the_excess_to_the_pool_and_allocation_moves_pool_lots(
    client: Client, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    bank = await make_bank(client, db, expiry_weeks=12, cap_min=30)
    monday, tuesday = bank.monday, bank.monday + timedelta(days=1)
    await bank.attend(await bank.visit_on(0, monday), local(monday, "08:00"), 20)  # 25 banked
    await bank.attend(await bank.visit_on(0, tuesday), local(tuesday, "08:00"), 20)  # 25 more: 5 to A, 20 to pool
    await reconciled(pool)
    assert (await bank.bank(0))["balance_min"] == 30
    summary = (await client.get("/v1/bank/summary", headers=bank.commissioner)).json()
    assert summary["balances"] == {"people": 30, "pool": 20, "owed": -50, "delivered": 0, "expired": 0}
    assert summary["totals_by_kind"]["cap_overflow"] == 20

    body = {"provider_id": bank.tw.providers[0], "person_id": bank.people[1], "minutes": 15, "note": "review 7"}
    assert (await client.post("/v1/bank/allocations", json=body, headers=bank.provider)).status_code == 403
    allocated = await client.post("/v1/bank/allocations", json=body, headers=bank.commissioner)
    assert allocated.status_code == 201, allocated.text
    b_state = await bank.bank(1)
    assert b_state["balance_min"] == 15
    [lot] = b_state["lots"]
    pool_lot_expiry = local(tuesday, "08:20") + timedelta(weeks=12)
    assert datetime.fromisoformat(lot["expires_at"]) == pool_lot_expiry  # the lot keeps its expiry and rate
    assert lot["rate_pence_per_hour"] == DAY_RATE
    too_much = await client.post("/v1/bank/allocations", json={**body, "minutes": 6}, headers=bank.commissioner)
    assert too_much.status_code == 422
    assert too_much.json()["code"] == "insufficient_bank"


async def banked_on_monday(client: Client, db: asyncpg.Connection, pool: asyncpg.Pool) -> tuple[Bank, str]:
    """Person 0 banks 25 minutes on Monday (lots expiring after 12 weeks), reconciled; returns the bank
    and Monday's visit."""
    bank = await make_bank(client, db, expiry_weeks=12)
    visit_id = await bank.visit_on(0, bank.monday)
    await bank.attend(visit_id, local(bank.monday, "08:00"), 20)  # 25 banked
    await reconciled(pool)
    return bank, visit_id


async def test_a_bank_funded_visit_holds_then_delivers_and_releases_the_rest(
    client: Client, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    bank, _ = await banked_on_monday(client, db, pool)
    friday = bank.monday + timedelta(days=4)

    refused = await bank.bank_visit(0, local(friday, "14:00"), 30)
    assert refused.status_code == 422
    assert refused.json()["code"] == "insufficient_bank"
    made = await bank.bank_visit(0, local(friday, "14:00"), 20)
    assert made.status_code == 201, made.text
    state = await bank.bank(0)
    assert (state["balance_min"], state["held_min"], state["available_min"]) == (25, 20, 5)

    await bank.attend(made.json()["id"], local(friday, "14:00"), 10, outcome=None)  # 10 of 20: payable 10
    await reconciled(pool)
    state = await bank.bank(0)
    assert (state["balance_min"], state["held_min"], state["available_min"]) == (15, 0, 15)
    [delivery] = await postings(bank, kind="redeploy")
    assert (delivery["from_account"], delivery["to_account"], delivery["minutes"]) == (
        f"person:{bank.people[0]}",
        "delivered",
        10,
    )
    assert datetime.fromisoformat(delivery["effective_at"]) == local(friday, "14:10")

    invoice = await bank.invoice_run()
    assert invoice.status_code == 201, invoice.text
    [bank_line] = [line for line in invoice.json()["lines"] if line["funding"] == "bank"]
    assert (bank_line["payable_min"], bank_line["amount_pence"]) == (10, 0)  # paid from the bank


async def test_a_missed_or_cancelled_bank_funded_visit_releases_its_whole_hold(
    client: Client, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    bank = await make_bank(client, db, expiry_weeks=12)
    monday = bank.monday
    await bank.attend(await bank.visit_on(0, monday), local(monday, "08:00"), 20)
    await reconciled(pool)
    missed = await bank.bank_visit(0, local(monday + timedelta(days=2), "14:00"), 10)  # nobody comes: missed
    later = datetime.now(tz=LONDON) + timedelta(days=3)
    cancelled = await bank.bank_visit(0, later, 10)
    assert (missed.status_code, cancelled.status_code) == (201, 201)
    assert (await bank.bank(0))["held_min"] == 20
    response = await client.post(
        f"/v1/visits/{cancelled.json()['id']}/cancel",
        json={"by": "person", "notified_at": datetime.now(tz=LONDON).isoformat(), "reason": "in hospital"},
        headers=bank.commissioner,
    )
    assert response.status_code == 200, response.text
    await bank.invoice_run()  # settles the missed one first
    await reconciled(pool)
    state = await bank.bank(0)
    assert (state["balance_min"], state["held_min"], state["available_min"]) == (25, 0, 25)
    assert await postings(bank, kind="redeploy") == []


async def test_a_transfer_waits_for_a_second_commissioner_and_keeps_lot_expiry(
    client: Client, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    bank = await make_bank(client, db, expiry_weeks=12)
    monday = bank.monday
    await bank.attend(await bank.visit_on(0, monday), local(monday, "08:00"), 20)
    await reconciled(pool)
    body = {"from_person_id": bank.people[0], "to_person_id": bank.people[1], "minutes": 15, "review_ref": "R-1"}
    requested = await client.post("/v1/bank/transfers", json=body, headers=bank.commissioner)
    assert requested.status_code == 201, requested.text
    transfer = requested.json()
    assert transfer["status"] == "pending"
    assert transfer["provider_id"] == bank.tw.providers[0]
    assert ((await bank.bank(0))["available_min"], (await bank.bank(1))["balance_min"]) == (10, 0)

    own = await client.post(f"/v1/bank/transfers/{transfer['id']}/approve", headers=bank.commissioner)
    assert own.status_code == 403  # the requester may not decide
    other = await credential_headers(
        client, bank.tw.commissioner, {"role": "commissioner", "tenant_id": bank.tw.tenant_id}
    )
    approved = await client.post(f"/v1/bank/transfers/{transfer['id']}/approve", headers=other)
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approved"
    again = await client.post(f"/v1/bank/transfers/{transfer['id']}/reject", headers=other)
    assert again.status_code == 409

    a, b = await bank.bank(0), await bank.bank(1)
    assert (a["balance_min"], a["held_min"], b["balance_min"]) == (10, 0, 15)
    assert b["lots"][0]["expires_at"] == a["lots"][0]["expires_at"]
    assert b["lots"][0]["rate_pence_per_hour"] == DAY_RATE
    # Each person's postings are listed, into and out of their lots (the giver's debit too).
    giver, receiver = await postings(bank, person_id=bank.people[0]), await postings(bank, person_id=bank.people[1])
    assert [(p["kind"], p["minutes"]) for p in giver] == [("accrue", 25), ("transfer", 15)]
    assert [(p["kind"], p["from_account"], p["to_account"]) for p in receiver] == [
        ("transfer", f"person:{bank.people[0]}", f"person:{bank.people[1]}")
    ]
    assert (await postings(bank, person_id=bank.people[0], kind="transfer"))[0]["id"] == receiver[0]["id"]

    # A provider may request too; a rejection releases the hold.
    second = await client.post("/v1/bank/transfers", json={**body, "minutes": 10}, headers=bank.provider)
    assert second.status_code == 201, second.text
    assert (await bank.bank(0))["available_min"] == 0
    too_much = await client.post("/v1/bank/transfers", json={**body, "minutes": 1}, headers=bank.provider)
    assert too_much.status_code == 422
    assert too_much.json()["code"] == "insufficient_bank"
    pending = await client.get("/v1/bank/transfers", params={"status": "pending"}, headers=bank.commissioner)
    assert [t["id"] for t in pending.json()["items"]] == [second.json()["id"]]
    theirs = await client.get("/v1/bank/transfers", headers=bank.tw.provider_headers[1])
    assert theirs.json()["items"] == []  # another provider's transfers are out of reach
    rejected = await client.post(f"/v1/bank/transfers/{second.json()['id']}/reject", headers=bank.commissioner)
    assert rejected.status_code == 200
    assert rejected.json()["status"] == "rejected"
    assert (await bank.bank(0))["available_min"] == 10


async def amend_check_out(client: Client, bank: Bank, visit_id: str, check_out: datetime) -> None:
    """The provider corrects the first carer's check-out; a commissioner approves it if it waits."""
    proposed = await client.post(
        f"/v1/visits/{visit_id}/amendments",
        json={"carer_id": bank.tw.carers[0], "check_out_at": check_out.isoformat(), "reason_code": "forgot_check_out"},
        headers=bank.provider,
    )
    assert proposed.status_code == 201, proposed.text
    if proposed.json()["status"] == "pending":
        await decide(client, bank.commissioner, proposed)


async def banked_then_spent(
    client: Client, db: asyncpg.Connection, pool: asyncpg.Pool, spent_min: int
) -> tuple[Bank, str]:
    """Person 0 banks 25 minutes on Monday, then a bank-funded visit on Friday delivers `spent_min` of
    them, both reconciled; returns the bank and Monday's visit."""
    bank, visit_id = await banked_on_monday(client, db, pool)
    friday = bank.monday + timedelta(days=4)
    spent = await bank.bank_visit(0, local(friday, "14:00"), spent_min)
    await bank.attend(spent.json()["id"], local(friday, "14:00"), spent_min, outcome=None)
    await reconciled(pool)
    return bank, visit_id


async def test_an_amendment_that_reduces_banked_time_takes_it_back_or_bills_a_shortfall(
    client: Client, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    bank, visit_id = await banked_then_spent(client, db, pool, 20)
    monday = bank.monday
    assert (await bank.bank(0))["balance_min"] == 5

    # The carer in fact left at 08:40: 5 banked, not 25. 5 of the 20 can be taken back; 15 were spent.
    await amend_check_out(client, bank, visit_id, local(monday, "08:40"))
    await reconciled(pool)
    assert (await bank.bank(0))["balance_min"] == 0
    [take_back] = await postings(bank, kind="take_back")
    assert take_back["minutes"] == 5
    assert take_back["to_account"] == "owed"

    invoice = await bank.invoice_run()
    [shortfall] = [line for line in invoice.json()["lines"] if line["kind"] == "bank_shortfall"]
    assert (shortfall["payable_min"], shortfall["amount_pence"]) == (15, pence(15))  # 607.5 -> 608
    assert shortfall["visit_id"] == visit_id

    # A second look: the carer did leave at 08:20. The 15 charged short are undone first (a credit at
    # the same rate for the next invoice), and only the 5 taken back are banked again.
    await amend_check_out(client, bank, visit_id, local(monday, "08:20"))
    await reconciled(pool)
    assert (await bank.bank(0))["balance_min"] == 5
    unbilled = await bank_store.unbilled_shortfalls(db, UUID(bank.tw.tenant_id), UUID(bank.contract_id))
    assert [(row["visit_id"], row["minutes"]) for row in unbilled] == [(UUID(visit_id), -15)]
    assert amount_pence(unbilled[0]["rate_pence_per_hour"], -15) == -pence(15)  # the credit line's amount


async def test_a_delivery_charged_short_is_undone_before_minutes_return_to_the_bank(
    client: Client, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    bank, _ = await banked_on_monday(client, db, pool)
    friday = bank.monday + timedelta(days=4)
    first = (await bank.bank_visit(0, local(friday, "14:00"), 20)).json()["id"]
    await bank.attend(first, local(friday, "14:00"), 10, outcome=None)  # 10 delivered, 10 released
    await reconciled(pool)
    assert (await bank.bank_visit(0, local(friday, "16:00"), 15)).status_code == 201  # holds the last 15
    state = await bank.bank(0)
    assert (state["balance_min"], state["available_min"]) == (15, 0)

    # The first visit in fact lasted 20 minutes: the bank has nothing available, so 10 are short.
    await amend_check_out(client, bank, first, local(friday, "14:20"))
    await reconciled(pool)
    shortfalls = "SELECT minutes FROM bank_shortfalls WHERE visit_id = $1 ORDER BY recorded_at"
    assert [row["minutes"] for row in await db.fetch(shortfalls, UUID(first))] == [10]
    # And back to 10: the shortfall is undone; nothing was taken from the lots, so nothing returns.
    await amend_check_out(client, bank, first, local(friday, "14:10"))
    await reconciled(pool)
    assert [row["minutes"] for row in await db.fetch(shortfalls, UUID(first))] == [10, -10]
    state = await bank.bank(0)
    assert (state["balance_min"], state["held_min"], state["available_min"]) == (15, 15, 0)
    assert await breaches(db) == []


@pytest.mark.parametrize(("action", "credited"), [("credit_note", True), ("forfeit", False)])
async def test_expired_lots_are_posted_to_expired_and_credited_on_the_next_invoice(
    client: Client, db: asyncpg.Connection, pool: asyncpg.Pool, action: str, credited: bool
) -> None:
    bank = await make_bank(client, db, expiry_weeks=1, expiry_action=action)
    monday = bank.monday
    await bank.attend(await bank.visit_on(0, monday), local(monday, "08:00"), 20)  # 25 banked, expires after a week
    await reconciled(pool)
    # Past its expiry but not yet posted by the job: still in the balance, no longer available.
    lapsed = await bank.bank(0)
    assert (lapsed["balance_min"], lapsed["available_min"]) == (25, 0)
    assert await expire_due_lots(pool) == 1
    state = await bank.bank(0)
    assert (state["balance_min"], state["lots"]) == (0, [])
    [expired] = await postings(bank, kind="expire")
    assert expired["minutes"] == 25
    assert datetime.fromisoformat(expired["effective_at"]) == local(monday, "08:20") + timedelta(weeks=1)
    # As of a moment before expiry the minutes were still there.
    just_before = (local(monday, "08:20") + timedelta(weeks=1, seconds=-1)).isoformat()
    assert (await bank.bank(0, as_of=just_before))["balance_min"] == 25

    invoice = (await bank.invoice_run()).json()
    credits = [line for line in invoice["lines"] if line["kind"] == "expired_bank_credit"]
    if credited:
        [credit] = credits
        assert (credit["payable_min"], credit["amount_pence"]) == (25, -pence(25))
        assert invoice["total_pence"] == sum(line["amount_pence"] for line in invoice["lines"])
    else:
        assert credits == []
    summary = (await client.get("/v1/bank/summary", headers=bank.commissioner)).json()
    assert summary["balances"]["expired"] == 25
    assert summary["totals_by_kind"]["expire"] == 25


async def test_a_provider_sees_only_its_own_people_and_ledger(
    client: Client, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    bank = await make_bank(client, db, expiry_weeks=12)
    await bank.attend(await bank.visit_on(0, bank.monday), local(bank.monday, "08:00"), 20)
    await reconciled(pool)
    person = bank.people[0]
    mine = await client.get(f"/v1/people/{person}/bank", headers=bank.provider)
    assert mine.status_code == 200
    assert mine.json()["balance_min"] == 25
    other_provider = bank.tw.provider_headers[1]
    assert (await client.get(f"/v1/people/{person}/bank", headers=other_provider)).status_code == 404
    assert (await client.get("/v1/bank/postings", headers=other_provider)).json()["items"] == []
    summary = (await client.get("/v1/bank/summary", headers=other_provider)).json()
    assert summary["balances"]["people"] == 0
    assert (await client.get(f"/v1/people/{person}/bank", headers=bank.tw.carer_headers[0])).status_code == 403
    bad = await client.get(f"/v1/people/{person}/bank", params={"as_of": "2026-01-01T00:00:00"}, headers=bank.provider)
    assert bad.status_code == 422


async def test_postings_and_lots_cannot_be_changed_or_deleted(
    client: Client, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    bank = await make_bank(client, db, expiry_weeks=12)
    await bank.attend(await bank.visit_on(0, bank.monday), local(bank.monday, "08:00"), 20)
    await reconciled(pool)
    for statement in (
        "UPDATE bank_postings SET minutes = 1",
        "DELETE FROM bank_postings",
        "UPDATE bank_lots SET rate_pence_per_hour = 1",
    ):
        with pytest.raises(asyncpg.RestrictViolationError):
            await db.execute(statement)


async def test_check_finds_no_breach_in_a_busy_bank_and_names_one_made_by_hand(
    client: Client, db: asyncpg.Connection, pool: asyncpg.Pool, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bank = await make_bank(client, db, expiry_weeks=12)
    monday, friday = bank.monday, bank.monday + timedelta(days=4)
    visit_id = await bank.visit_on(0, monday)
    await bank.attend(visit_id, local(monday, "08:00"), 20)
    await reconciled(pool)
    spent = await bank.bank_visit(0, local(friday, "14:00"), 10)
    await bank.attend(spent.json()["id"], local(friday, "14:00"), 10, outcome=None)
    body = {"from_person_id": bank.people[0], "to_person_id": bank.people[1], "minutes": 5, "review_ref": "R-2"}
    await client.post("/v1/bank/transfers", json=body, headers=bank.provider)
    await reconciled(pool)
    await expire_due_lots(pool)
    assert await breaches(db) == []
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert await asyncio.to_thread(cli_main, ["check"]) == 0  # the CLI runs its own event loop

    # A visit whose stored banked minutes no longer match the ledger is named.
    await db.execute("UPDATE visits SET banked_min = banked_min + 5 WHERE id = $1", UUID(visit_id))
    found = await breaches(db)
    assert found == [f"visit {visit_id}: bank accrual 25, reconciliation banks 30"]
    assert await asyncio.to_thread(cli_main, ["check"]) == 1

    # So is a posting naming a visit that does not exist (no foreign key stops it since migration 0011).
    posting_id, tenant_id = uuid4(), UUID(bank.tw.tenant_id)
    await db.execute(
        """INSERT INTO bank_postings (tenant_id, id, provider_id, kind, from_account, to_account, minutes, visit_id,
                                      effective_at)
           VALUES ($1, $2, $3, 'redeploy', 'owed', 'delivered', 1, $4, now())""",
        tenant_id,
        posting_id,
        UUID(bank.tw.providers[0]),
        uuid4(),
    )
    assert (await breaches(db))[0] == (
        f"posting {posting_id} of {tenant_id}: names a provider, contract, visit or lot it may not"
    )


async def test_a_persons_lock_row_keeps_the_balance_and_postgres_refuses_it_below_0_or_a_pool_hold(
    client: Client, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    bank, visit_id = await banked_then_spent(client, db, pool, 10)
    account = f"person:{bank.people[0]}"
    kept = "SELECT balance FROM bank_accounts WHERE account = $1"
    assert (await bank.bank(0))["balance_min"] == 15
    assert await db.fetchval(kept, account) == 15
    assert await db.fetchval("SELECT balance FROM bank_accounts WHERE account = 'pool'") is None

    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute("UPDATE bank_accounts SET balance = -1 WHERE account = $1", account)
    with pytest.raises(asyncpg.CheckViolationError):  # holds earmark people's lots only, never the pool's
        await db.execute(
            """INSERT INTO bank_holds (tenant_id, id, provider_id, account, minutes, visit_id, held_at)
               VALUES ($1, $2, $3, 'pool', 5, $4, now())""",
            UUID(bank.tw.tenant_id),
            uuid4(),
            UUID(bank.tw.providers[0]),
            UUID(visit_id),
        )
    await db.execute("UPDATE bank_accounts SET balance = 16 WHERE account = $1", account)
    assert await breaches(db) == [
        f"account {account} of {bank.tw.tenant_id}/{bank.tw.providers[0]}: "
        "its lock row keeps balance 16 but its postings say 15"
    ]


async def test_concurrent_transfers_round_a_ring_and_holds_never_overdraw_or_deadlock(
    client: Client, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    bank = await make_bank(client, db, expiry_weeks=12, cap_min=0)  # every banked minute goes to the pool
    for n in range(2):
        person = await create(
            client,
            bank.commissioner,
            "/v1/people",
            {"reference": f"P-R{n}", "display_name": "R. Person", "location": {"lat": 53.76, "lon": -2.70}},
        )
        await create(
            client,
            bank.commissioner,
            "/v1/care-plans",
            {
                "person_id": person["id"],
                "contract_id": bank.contract_id,
                "weekly_min": 45,
                "outcomes": [{"id": "wash", "domain": "personal_care", "text": "washed", "key": True}],
                "schedule": [{"weekday": 1, "start": f"1{n + 4}:00", "minutes": 45, "outcome_ids": ["wash"]}],
                "valid_from": bank.monday.isoformat(),
                "valid_to": bank.monday.isoformat(),
            },
        )
        bank.people.append(person["id"])
    for day in range(7):
        when = bank.monday + timedelta(days=day)
        await bank.attend(await bank.visit_on(0, when), local(when, "08:00"), 20)  # 25 a day to the pool
    await reconciled(pool)
    for person_id in bank.people:
        body = {"provider_id": bank.tw.providers[0], "person_id": person_id, "minutes": 40, "note": "seed"}
        assert (await client.post("/v1/bank/allocations", json=body, headers=bank.commissioner)).status_code == 201
    ring = len(bank.people)

    async def transfer(i: int) -> Any:
        body = {
            "from_person_id": bank.people[i % ring],
            "to_person_id": bank.people[(i + 1) % ring],
            "minutes": 9 + i % 5,
            "review_ref": f"ring-{i}",
        }
        return await client.post("/v1/bank/transfers", json=body, headers=bank.provider)

    async def hold(i: int) -> Any:
        return await bank.bank_visit(i % ring, datetime.now(tz=LONDON) + timedelta(days=2, hours=i), 10)

    answers = await asyncio.gather(*(transfer(i) for i in range(20)), *(hold(i) for i in range(8)))
    assert {a.status_code for a in answers} <= {201, 422}, [a.text for a in answers if a.status_code >= 500]
    refused = [a.json()["code"] for a in answers if a.status_code == 422]
    assert set(refused) <= {"insufficient_bank"}
    pending = [a.json()["id"] for a in answers[:20] if a.status_code == 201]
    other = await credential_headers(
        client, bank.commissioner, {"role": "commissioner", "tenant_id": bank.tw.tenant_id}
    )
    decided = await asyncio.gather(
        *(
            client.post(f"/v1/bank/transfers/{t}/{'approve' if n % 3 else 'reject'}", headers=other)
            for n, t in enumerate(pending)
        )
    )
    assert {d.status_code for d in decided} == {200}
    assert await breaches(db) == []
    states = [await bank.bank(n) for n in range(ring)]
    assert all(state["available_min"] >= 0 for state in states)
    summary = (await client.get("/v1/bank/summary", headers=bank.commissioner)).json()
    assert summary["balances"]["people"] + summary["balances"]["pool"] == 7 * 25  # nothing made or lost


async def test_the_outcomes_report_carries_the_bank_figures_of_the_range(
    client: Client, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    bank = await make_bank(client, db, expiry_weeks=12)
    monday, tuesday, friday = bank.monday, bank.monday + timedelta(days=1), bank.monday + timedelta(days=4)
    await bank.attend(await bank.visit_on(0, monday), local(monday, "08:00"), 20)  # 25
    await bank.attend(await bank.visit_on(1, tuesday), local(tuesday, "10:00"), 15)  # 30
    await reconciled(pool)
    spent = await bank.bank_visit(0, local(friday, "14:00"), 10)
    await bank.attend(spent.json()["id"], local(friday, "14:00"), 10, outcome=None)  # 10 delivered on Friday
    await reconciled(pool)
    body = {"from_person_id": bank.people[1], "to_person_id": bank.people[0], "minutes": 5, "review_ref": "R-3"}
    await client.post("/v1/bank/transfers", json=body, headers=bank.provider)  # pending: held, not moved

    week = {"from": monday.isoformat(), "to": (monday + timedelta(days=6)).isoformat()}
    report = (await client.get("/v1/reports/outcomes", params=week, headers=bank.commissioner)).json()
    [figures] = report["bank"]
    assert figures["provider_id"] == bank.tw.providers[0]
    assert (figures["accrued_min"], figures["redeployed_min"], figures["transferred_min"]) == (55, 10, 0)
    assert (figures["expired_min"], figures["shortfall_min"], figures["balance_min"]) == (0, 0, 45)
    # 15 minutes left of Monday's lot, 30 of Tuesday's, both at the day rate: valued per lot.
    assert figures["value_pence"] == pence(15) + pence(30)
    # The same figures the ledger gives as of the end of that week.
    end = (local(monday + timedelta(days=7), "00:00") - timedelta(microseconds=1)).isoformat()
    summary = (await client.get("/v1/bank/summary", params={"as_of": end}, headers=bank.commissioner)).json()
    assert summary["balances"]["people"] == figures["balance_min"]
    assert summary["value_pence"] == figures["value_pence"]


async def test_after_a_contract_ends_the_worker_still_invoices_its_expiring_bank(
    client: Client, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    last_sunday = settled_monday() + timedelta(days=6)
    bank = await make_bank(client, db, valid_to=last_sunday, expiry_weeks=2)
    monday = bank.monday
    await bank.attend(await bank.visit_on(0, monday), local(monday, "08:00"), 20)  # 25, expiring in 2 weeks
    await reconciled(pool)
    # Three days after the contract's last week: its last invoice, before anything expired.
    first_run = local(last_sunday + timedelta(days=4), "00:00")
    await run_due_invoices(pool, first_run)
    # Later the lot expires, after the contract ended: the worker goes on to the next period's invoice.
    await expire_due_lots(pool)
    await run_due_invoices(pool)
    params: dict[str, Any] = {"limit": 50, "contract_id": bank.contract_id}
    invoices = (await client.get("/v1/invoices", params=params, headers=bank.commissioner)).json()["items"]
    credits = []
    for summary in invoices:
        invoice = (await client.get(f"/v1/invoices/{summary['id']}", headers=bank.commissioner)).json()
        credits += [
            (invoice["period_start"], line["amount_pence"])
            for line in invoice["lines"]
            if line["kind"] == "expired_bank_credit"
        ]
    assert credits == [((monday + timedelta(days=7)).isoformat(), -pence(25))]


async def test_reconciling_the_same_visits_again_posts_nothing_more(
    client: Client, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    """The bank follows a visit's reconciliation: reconciled again (a re-queued visit, the clock job, a
    recompute that rewrote a tampered state), the same state posts nothing."""
    from services.reconcile.service import reconcile_visits

    bank, banked = await banked_on_monday(client, db, pool)
    friday = bank.monday + timedelta(days=4)
    made = await bank.bank_visit(0, local(friday, "14:00"), 20)
    assert made.status_code == 201, made.text
    await bank.attend(made.json()["id"], local(friday, "14:00"), 10, outcome=None)
    await reconciled(pool)
    before = (await postings(bank), {**await bank.bank(0), "as_of": None})
    tenant = UUID(bank.tw.tenant_id)
    visits = [UUID(banked), UUID(made.json()["id"])]
    for _ in range(3):
        await db.execute("UPDATE visits SET payable_min = payable_min + 1 WHERE id = ANY($1::uuid[])", visits)
        async with db.transaction():
            await reconcile_visits(db, tenant, visits, datetime.now(tz=UTC))
    assert (await postings(bank), {**await bank.bank(0), "as_of": None}) == before


async def put_right_by_0023(db: asyncpg.Connection, pool: asyncpg.Pool, tenant: UUID, visit_id: UUID) -> None:
    """A visit stored as the rules before decisions 141-142 had it differs from a recomputation until
    migration 0023 queues it and the drainers reconcile it."""
    from services.reconcile.jobs import verify_tenant

    assert (await verify_tenant(pool, tenant)).differing == [visit_id]
    await requeue_by(db, "0023_requeue_for_pay_rule_review.sql")
    assert await db.fetchval("SELECT count(*) FROM reconcile_queue WHERE visit_id = $1", visit_id) == 1
    await reconciled(pool)
    assert (await verify_tenant(pool, tenant)).differing == []


async def test_a_met_visit_keeps_its_approved_extension(
    client: Client, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    """Decision 141: a met outcome-based visit pays planned at least. The carer stayed 60 minutes of a
    planned 45 and a commissioner authorised the extra 15; the rules paid 45 (the outcome not met, 60)."""
    bank = await make_bank(client, db)
    visit_id = await bank.visit_on(0, bank.monday)
    await bank.attend(visit_id, local(bank.monday, "08:00"), 60)
    proposed = await client.post(
        f"/v1/visits/{visit_id}/amendments",
        json={"carer_id": bank.tw.carers[0], "extension_min": 15, "reason_code": "extended_visit_authorised"},
        headers=bank.provider,
    )
    assert proposed.status_code == 201, proposed.text
    await reconciled(pool)
    approved = await decide(client, bank.commissioner, proposed)
    assert (approved["payable_before"], approved["payable_after"]) == (45, 60)
    actual = (await client.get(f"/v1/visits/{visit_id}", headers=bank.commissioner)).json()["actual"]
    assert (actual["payable_min"], actual["banked_min"]) == (60, 0)
    # As the rules before decision 141 stored it: migration 0023 queues the visit, and it is put right.
    await db.execute(
        """UPDATE visit_states SET payable_min = 45, actual = jsonb_set(jsonb_set(actual, '{payable_min}', '45'),
                                                                        '{place_payables}', '[45]')
           WHERE visit_id = $1""",
        UUID(visit_id),
    )
    await put_right_by_0023(db, pool, UUID(bank.tw.tenant_id), UUID(visit_id))
    assert (await client.get(f"/v1/visits/{visit_id}", headers=bank.commissioner)).json()["actual"]["payable_min"] == 60


async def test_an_extra_carer_s_time_is_delivered_time(
    client: Client, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    """Decision 142: the counted carer met the outcome in 20 minutes of 45, and an extra carer stayed
    until 08:40. The person had 40 minutes of care, so 5 are banked, not 25."""
    bank = await make_bank(client, db)
    monday = bank.monday
    visit_id = await bank.visit_on(0, monday)
    extra = await create(client, bank.provider, "/v1/carers", {"name": "Carer 0b"})
    extra_headers = await credential_headers(client, bank.provider, {"role": "carer", "carer_id": extra["id"]})
    await bank.attend(visit_id, local(monday, "08:00"), 20)
    for kind, hhmm in (("check_in", "08:05"), ("check_out", "08:40")):
        body = {
            "event_id": str(uuid4()),
            "visit_id": visit_id,
            "kind": kind,
            "occurred_at": local(monday, hhmm).isoformat(),
            "method": "manual",
            "device_id": "q",
        }
        assert (await client.post("/v1/visit-events", json=body, headers=extra_headers)).status_code == 201
    await reconciled(pool)
    actual = (await client.get(f"/v1/visits/{visit_id}", headers=bank.commissioner)).json()["actual"]
    assert (actual["payable_min"], actual["banked_min"]) == (45, 5)
    assert [a["counted"] for a in actual["attendances"]] == [True, False]
    assert (await bank.bank(0))["balance_min"] == 5
    # As the rules before decision 142 stored it: migration 0023 queues the visit, and it is put right.
    await db.execute("UPDATE visit_states SET banked_min = 25 WHERE visit_id = $1", UUID(visit_id))
    await put_right_by_0023(db, pool, UUID(bank.tw.tenant_id), UUID(visit_id))
    assert (await bank.bank(0))["balance_min"] == 5
