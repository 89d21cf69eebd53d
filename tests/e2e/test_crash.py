"""Crash test: SIGKILL the server in the middle of batch ingest from several phones; after a restart
and re-sends, every event that got a 2xx is stored exactly once and re-sends come back duplicate."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest

from infra.db import connect
from tests.e2e.test_serve import base_env, free_port
from tests.servers import Servers

pytestmark = pytest.mark.e2e
CLIENTS = 4
BATCHES_PER_CLIENT = 12
BATCH_SIZE = 250
RATES = {"day": 2430, "evening": 2700, "night": 3000, "weekend": 2900, "bank_holiday": 4860}


def start_server(env: dict[str, str], port: int, log: Path, workers: int) -> subprocess.Popen[bytes]:
    command = ["serve", "--port", str(port), "--workers", str(workers)]
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "services.cli", *command], env=env, stdout=out, stderr=out)


async def port_closed(port: int) -> None:
    """Wait (bounded) until nothing accepts on the port: a killed server leaves no worker behind."""
    deadline = time.monotonic() + 10
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return
        writer.close()
        assert time.monotonic() < deadline, "a worker of the killed server still accepts connections"
        await asyncio.sleep(0.05)


async def wait_ready(base: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(base_url=base, timeout=2) as client:
        while True:
            assert process.poll() is None, log.read_text()[-3000:]
            try:
                if (await client.get("/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not become ready"
            await asyncio.sleep(0.2)


async def seed(base: str, env: dict[str, str]) -> tuple[list[str], list[str]]:
    """A tenant with one provider, CLIENTS carers (one phone each) and a plan; returns (tokens, visit ids)."""
    made = subprocess.run(
        [sys.executable, "-m", "services.cli", "credentials", "create", "--role", "admin"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:

        async def token(credential: dict[str, Any]) -> dict[str, str]:
            body = {"client_id": credential["client_id"], "client_secret": credential["client_secret"]}
            answer = (await client.post("/v1/auth/token", json=body)).json()
            return {"Authorization": f"Bearer {answer['access_token']}"}

        async def post(headers: dict[str, str], path: str, body: dict[str, Any]) -> dict[str, Any]:
            response = await client.post(path, json=body, headers=headers)
            assert response.status_code == 201, response.text
            result: dict[str, Any] = response.json()
            return result

        admin = await token(json.loads(made.stdout))
        tenant = await post(admin, "/v1/tenants", {"name": "Crash county"})
        commissioner = await token(
            await post(admin, "/v1/credentials", {"role": "commissioner", "tenant_id": tenant["id"]})
        )
        provider = await post(commissioner, "/v1/providers", {"code": "CRASH", "name": "Crash Care"})
        provider_h = await token(
            await post(commissioner, "/v1/credentials", {"role": "provider", "provider_id": provider["id"]})
        )
        person = await post(
            commissioner,
            "/v1/people",
            {"reference": "P-1", "display_name": "P", "location": {"lat": 54.0, "lon": -2.8}},
        )
        contract = await post(
            commissioner,
            "/v1/contracts",
            {
                "provider_id": provider["id"],
                "model": "time_and_task",
                "period": "week",
                "rates": RATES,
                "valid_from": "2026-01-01",
            },
        )
        start = (datetime.now(tz=UTC) - timedelta(days=20)).date().isoformat()
        schedule = [{"weekday": d, "start": "08:00", "minutes": 30} for d in range(1, 8)]
        await post(
            commissioner,
            "/v1/care-plans",
            {
                "person_id": person["id"],
                "contract_id": contract["id"],
                "weekly_min": 210,
                "outcomes": [],
                "schedule": schedule,
                "valid_from": start,
                "horizon_days": 1,
            },
        )
        visits = (await client.get("/v1/visits", params={"limit": 500}, headers=commissioner)).json()["items"]
        tokens = []
        for index in range(CLIENTS):
            carer = await post(provider_h, "/v1/carers", {"name": f"Carer {index}"})
            credential = await post(provider_h, "/v1/credentials", {"role": "carer", "carer_id": carer["id"]})
            tokens.append((await token(credential))["Authorization"])
    past = [v for v in visits if datetime.fromisoformat(v["planned_start"]) < datetime.now(tz=UTC) - timedelta(hours=3)]
    return tokens, [v["id"] for v in past]


def make_batches(visit_ids: list[str]) -> list[list[list[dict[str, Any]]]]:
    """Per client, its batches of events (unique ids), each on a visit near its planned start."""
    batches = []
    for client in range(CLIENTS):
        mine = []
        for b in range(BATCHES_PER_CLIENT):
            events = []
            for i in range(BATCH_SIZE):
                n = b * BATCH_SIZE + i
                visit = visit_ids[n % len(visit_ids)]
                events.append(
                    {
                        "event_id": str(uuid4()),
                        "visit_id": visit,
                        "kind": "check_in" if n % 2 == 0 else "check_out",
                        "occurred_at": None,
                        "method": "manual",
                        "device_id": f"phone-{client}",
                    }
                )
            mine.append(events)
        batches.append(mine)
    return batches


async def send_all(base: str, token: str, batches: list[list[dict[str, Any]]], acked: dict[str, str]) -> None:
    """Send batches in order until the server goes away; record each event's 2xx answer."""
    async with httpx.AsyncClient(base_url=base, timeout=15, headers={"Authorization": token}) as client:
        for batch in batches:
            try:
                response = await client.post("/v1/visit-events/batch", json={"events": batch})
            except httpx.TransportError:
                return
            if response.status_code != 200:
                return
            for result in response.json()["results"]:
                assert result["status"] in ("accepted", "duplicate"), result
                acked[result["event_id"]] = result["status"]


@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "two-worker-processes"])
async def test_sigkill_mid_load_loses_and_doubles_nothing(
    servers: Servers, database_url: str, tmp_path: Path, workers: int
) -> None:
    env = base_env(
        DATABASE_URL=database_url,
        REDIS_URL=servers.redis_url,
        CAREBANK_DATA_DIR=str(tmp_path / "d"),
        CAREBANK_LOG_LEVEL="WARNING",
        CAREBANK_AUTH_RATE_LIMIT_PER_MINUTE="100000",
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    server = start_server(env, port, log, workers)
    try:
        await wait_ready(base, server, log)
        tokens, visit_ids = await seed(base, env)
        batches = make_batches(visit_ids)
        occurred = (datetime.now(tz=UTC) - timedelta(days=5)).isoformat()
        for per_client in batches:
            for batch in per_client:
                for event in batch:
                    event["occurred_at"] = occurred
        acked: dict[str, str] = {}
        senders = [asyncio.create_task(send_all(base, tokens[c], batches[c], acked)) for c in range(CLIENTS)]
        # Kill once some, but not all, batches have been answered.
        deadline = time.monotonic() + 30
        while len(acked) < CLIENTS * BATCH_SIZE * 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=10)
        await port_closed(port)
        await asyncio.wait_for(asyncio.gather(*senders), timeout=30)
        first_round = dict(acked)
        total = CLIENTS * BATCHES_PER_CLIENT * BATCH_SIZE
        assert 0 < len(first_round) < total, "the kill should land mid-load"

        server = start_server(env, port, log, workers)
        await wait_ready(base, server, log)
        resend: list[list[list[dict[str, Any]]]] = []
        for per_client in batches:
            unanswered = [b for b in per_client if any(e["event_id"] not in first_round for e in b)]
            answered = [b for b in per_client if all(e["event_id"] in first_round for e in b)][:2]
            resend.append(unanswered + answered)
        second: dict[str, str] = {}
        await asyncio.wait_for(
            asyncio.gather(*(send_all(base, tokens[c], resend[c], second) for c in range(CLIENTS))), timeout=60
        )
        for per_client in resend:
            for batch in per_client:
                for event in batch:
                    assert event["event_id"] in second, "every re-sent event gets a 2xx after the restart"
                    if event["event_id"] in first_round:
                        assert second[event["event_id"]] == "duplicate"
        conn = await connect(database_url)
        try:
            rows = await conn.fetch("SELECT event_id FROM visit_events")
        finally:
            await conn.close()
        stored = [str(r["event_id"]) for r in rows]
        assert len(stored) == len(set(stored))
        everything = {e["event_id"] for per_client in batches for b in per_client for e in b}
        acknowledged = set(first_round) | set(second)
        assert acknowledged == everything  # every event was eventually answered 2xx …
        assert set(stored) == everything  # … and is stored exactly once: none lost, none doubled
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
