"""Hypothesis throws bodies at every create endpoint: never a 5xx, and a 4xx writes nothing."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import Client, admin_headers, count, create, credential_headers

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=12,
)
FIELDS = [
    "code",
    "name",
    "reference",
    "display_name",
    "location",
    "lat",
    "lon",
    "geofence_m",
    "tags",
    "phones",
    "provider_id",
    "model",
    "period",
    "rates",
    "day",
    "pay_rules",
    "banking",
    "valid_from",
    "valid_to",
    "rounding_mode",
    "role",
    "tenant_id",
    "carer_id",
    "zone",
    "holiday_region",
    "currency",
    "event_id",
    "kind",
    "occurred_at",
    "method",
    "device_id",
    "visit_id",
    "person_id",
    "outcomes",
    "events",
    "schedule",
    "weekly_min",
    "planned_start",
    "planned_min",
]
BODIES = st.one_of(
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, max_size=8).map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=64),
)
PATHS = [
    "/v1/tenants",
    "/v1/providers",
    "/v1/carers",
    "/v1/people",
    "/v1/contracts",
    "/v1/credentials",
    "/v1/care-plans",
    "/v1/visits",
    "/v1/visit-events",
    "/v1/visit-events/batch",
]
TABLES = [
    "tenants",
    "providers",
    "carers",
    "people",
    "contracts",
    "credentials",
    "admin_credentials",
    "care_plans",
    "visits",
    "visit_events",
]


@pytest.fixture
async def callers(client: Client, db: asyncpg.Connection) -> dict[str, dict[str, str]]:
    admin = await admin_headers(client, db)
    tenant = await create(client, admin, "/v1/tenants", {"name": "Fuzz"})
    commissioner = await credential_headers(client, admin, {"role": "commissioner", "tenant_id": tenant["id"]})
    provider = await create(client, commissioner, "/v1/providers", {"code": "FZ", "name": "Fuzz Care"})
    provider_headers = await credential_headers(
        client, commissioner, {"role": "provider", "provider_id": provider["id"]}
    )
    carer = await create(client, provider_headers, "/v1/carers", {"name": "Fuzz"})
    carer_headers = await credential_headers(client, provider_headers, {"role": "carer", "carer_id": carer["id"]})
    return {
        "/v1/tenants": admin,
        "/v1/credentials": commissioner,
        "/v1/visit-events": carer_headers,
        "/v1/visit-events/batch": carer_headers,
        "default": commissioner,
    }


def test_random_bodies_never_break_the_service(
    client: Client, db: asyncpg.Connection, callers: dict[str, dict[str, str]]
) -> None:
    loop = asyncio.get_event_loop()

    async def tally() -> dict[str, int]:
        return {table: await count(db, table) for table in TABLES}

    @settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
    @given(path=st.sampled_from(PATHS), body=BODIES)
    def check(path: str, body: bytes) -> None:
        async def run() -> None:
            before = await tally()
            headers = {**callers.get(path, callers["default"]), "content-type": "application/json"}
            response = await client.post(path, content=body, headers=headers)
            assert response.status_code < 500, (path, body, response.text)
            if response.status_code >= 400:
                assert response.headers["content-type"].startswith("application/problem+json")
                problem: dict[str, Any] = response.json()
                assert problem["status"] == response.status_code
                assert problem["code"]
                assert await tally() == before, (path, body)

        loop.run_until_complete(run())

    check()
