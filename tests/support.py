"""Helpers for API tests: credentials, tokens and a two-tenant world to test reach against."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg
from litestar import Litestar
from litestar.testing import AsyncTestClient

from infra.db import MIGRATIONS_DIR
from services.identity.issue import issue_credential
from services.identity.rules import Binding, SecretHasher
from services.reconcile.jobs import drain_queue

Client = AsyncTestClient[Litestar]

RATES = {"day": 2430, "evening": 2700, "night": 3000, "weekend": 2900, "bank_holiday": 4860}
LONDON = ZoneInfo("Europe/London")


def settled_monday() -> date:
    """Three weeks back: that week and the next have both ended and settled, whatever today is
    (on a Monday the week just ended is not settled yet)."""
    today = datetime.now(tz=LONDON).date()
    return today - timedelta(days=today.weekday()) - timedelta(days=21)


def at(day: date, hhmm: str, seconds: int = 0) -> str:
    """A local time of a day in London, as the wire writes it."""
    hours, minutes = map(int, hhmm.split(":"))
    return datetime(day.year, day.month, day.day, hours, minutes, seconds, tzinfo=LONDON).isoformat()


def utc_key(local_iso: str) -> str:
    """A local instant as the API shows it (UTC, `Z`): the key of a visit by its planned start."""
    return datetime.fromisoformat(local_iso).astimezone(ZoneInfo("UTC")).isoformat().replace("+00:00", "Z")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def token_for(client: Client, client_id: str, client_secret: str) -> str:
    response = await client.post("/v1/auth/token", json={"client_id": client_id, "client_secret": client_secret})
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


async def admin_headers(client: Client, db: asyncpg.Connection) -> dict[str, str]:
    """A fresh admin credential (as `carebank credentials create --role admin` makes) and its token."""
    hasher = SecretHasher.for_profile("CHEAPEST")
    secret = await issue_credential(db, hasher, Binding("admin", None, None, None), created_by="test")
    return bearer(await token_for(client, secret.client_id, secret.client_secret))


async def create(client: Client, headers: dict[str, str], path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(path, json=body, headers=headers)
    assert response.status_code == 201, f"{path}: {response.status_code} {response.text}"
    result: dict[str, Any] = response.json()
    return result


async def credential_headers(client: Client, headers: dict[str, str], body: dict[str, Any]) -> dict[str, str]:
    made = await create(client, headers, "/v1/credentials", body)
    return bearer(await token_for(client, made["client_id"], made["client_secret"]))


@dataclass
class TenantWorld:
    """One tenant with two providers, each with a carer and a contract, and one person."""

    tenant_id: str
    commissioner: dict[str, str]
    providers: list[str] = field(default_factory=list)
    provider_headers: list[dict[str, str]] = field(default_factory=list)
    carers: list[str] = field(default_factory=list)
    carer_headers: list[dict[str, str]] = field(default_factory=list)
    contracts: list[str] = field(default_factory=list)
    person_id: str = ""


@dataclass
class World:
    """Two tenants, so every test of reach has somebody else's rows to fail to see."""

    admin: dict[str, str]
    a: TenantWorld
    b: TenantWorld


async def build_tenant(client: Client, admin: dict[str, str], name: str, **tenant: Any) -> TenantWorld:
    """A tenant (with `tenant` fields, e.g. max_event_age_days) and its providers, carers and person."""
    tenant = await create(client, admin, "/v1/tenants", {"name": name, **tenant})
    commissioner = await credential_headers(client, admin, {"role": "commissioner", "tenant_id": tenant["id"]})
    world = TenantWorld(tenant_id=tenant["id"], commissioner=commissioner)
    for index in range(2):
        provider = await create(client, commissioner, "/v1/providers", {"code": f"P{index}", "name": f"Agency {index}"})
        world.providers.append(provider["id"])
        provider_headers = await credential_headers(
            client, commissioner, {"role": "provider", "provider_id": provider["id"]}
        )
        world.provider_headers.append(provider_headers)
        carer = await create(client, provider_headers, "/v1/carers", {"name": f"Carer {index}"})
        world.carers.append(carer["id"])
        world.carer_headers.append(
            await credential_headers(client, provider_headers, {"role": "carer", "carer_id": carer["id"]})
        )
        contract = await create(
            client,
            commissioner,
            "/v1/contracts",
            {
                "provider_id": provider["id"],
                "model": "time_and_task",
                "period": "week",
                "rates": RATES,
                "valid_from": "2026-01-05",
            },
        )
        world.contracts.append(contract["id"])
    person = await create(
        client,
        commissioner,
        "/v1/people",
        {"reference": "P-A", "display_name": "A. Person", "location": {"lat": 53.7632, "lon": -2.7031}},
    )
    world.person_id = person["id"]
    return world


async def build_world(client: Client, db: asyncpg.Connection) -> World:
    admin = await admin_headers(client, db)
    return World(
        admin=admin,
        a=await build_tenant(client, admin, "Lancashire"),
        b=await build_tenant(client, admin, "Cumbria"),
    )


async def count(db: asyncpg.Connection, table: str) -> int:
    return int(await db.fetchval(f"SELECT count(*) FROM {table}"))  # noqa: S608 - test tables only


async def requeue_by(db: asyncpg.Connection, migration: str) -> None:
    """Run a migration that queues visits for reconciliation again, as on a database of today's schema.
    Those written before the queue became a log of rows (0025) name its old key to skip visits already
    queued; a visit queued twice is now simply reconciled once more, so that clause is left out."""
    sql = (MIGRATIONS_DIR / migration).read_text()
    await db.execute(sql.replace("ON CONFLICT (tenant_id, visit_id) DO NOTHING", ""))


async def reconciled(pool: asyncpg.Pool) -> None:
    """Drain the queue, and wait for the app's own drainer to commit what it claimed."""
    for _ in range(200):
        await drain_queue(pool)
        if await pool.fetchval("SELECT count(*) FROM reconcile_queue") == 0:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the reconcile queue did not empty")


async def extra_visit(client: Client, tw: TenantWorld, start: datetime, contract: int = 0) -> UUID:
    """A commissioner's extra 30-minute visit for the tenant's person, under its contract number `contract`."""
    body = {
        "person_id": tw.person_id,
        "contract_id": tw.contracts[contract],
        "planned_start": start.isoformat(),
        "planned_min": 30,
    }
    return UUID((await create(client, tw.commissioner, "/v1/visits", body))["id"])


async def approved_move(client: Client, tw: TenantWorld, wrong: UUID, right: UUID) -> None:
    """Provider 0 moves carer 0's events from `wrong` to `right` (wrong_visit_selected); the commissioner approves."""
    made = await client.post(
        f"/v1/visits/{wrong}/amendments",
        json={"carer_id": tw.carers[0], "move_to_visit_id": str(right), "reason_code": "wrong_visit_selected"},
        headers=tw.provider_headers[0],
    )
    assert made.status_code == 201, made.text
    await decide(client, tw.commissioner, made)


async def decide(client: Client, headers: dict[str, str], made: Any, verb: str = "approve") -> dict[str, Any]:
    """Approve (or `verb="reject"`) the amendment a proposal's response names, as `headers`; the decision
    must succeed. Returns the decided amendment."""
    response = await client.post(f"/v1/amendments/{made.json()['id']}/{verb}", headers=headers)
    assert response.status_code == 200, response.text
    decided: dict[str, Any] = response.json()
    return decided


async def plan_week(client: Client, world: World, monday: date, weeks: int = 1) -> dict[str, str]:
    """Under tenant a's contract 0: every day 08:00 for 30 minutes with outcome `wash` (personal care,
    key), and Tuesdays 20:00 (evening) for 60, for `weeks` weeks; returns visit ids by planned start."""
    tw = world.a
    schedule = [{"weekday": d, "start": "08:00", "minutes": 30, "outcome_ids": ["wash"]} for d in range(1, 8)]
    schedule.append({"weekday": 2, "start": "20:00", "minutes": 60})
    await create(
        client,
        tw.commissioner,
        "/v1/care-plans",
        {
            "person_id": tw.person_id,
            "contract_id": tw.contracts[0],
            "weekly_min": 7 * 30 + 60,
            "outcomes": [{"id": "wash", "domain": "personal_care", "text": "washed", "key": True}],
            "schedule": schedule,
            "valid_from": monday.isoformat(),
            "valid_to": (monday + timedelta(days=7 * weeks - 1)).isoformat(),
        },
    )
    response = await client.get("/v1/visits", params={"limit": 500}, headers=tw.commissioner)
    return {v["planned_start"]: v["id"] for v in response.json()["items"]}
