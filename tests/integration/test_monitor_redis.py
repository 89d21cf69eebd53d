"""The monitoring worker with Redis: timers set, moved and dropped as visits change, alerts raised by
them at their thresholds, events noted by ingest, the live board kept and rebuilt, and a Redis
outage survived (polling PostgreSQL) and recovered from without raising anything twice."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit
from uuid import UUID

import asyncpg
import msgspec
import pytest
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis

from infra.redis import create_redis
from infra.settings import Settings
from services.app import create_app
from services.monitoring import jobs
from services.monitoring.jobs import Monitor
from services.monitoring.timers import timers_key
from tests.integration.test_alerts import alerts, kinds_of, new_visit
from tests.integration.test_alerts import world as world  # the fixture, shared
from tests.integration.test_ingest import event
from tests.support import Client, World, approved_move, reconciled


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = create_redis(settings.redis_url or "")
    yield client
    await flush_namespace(client, settings.redis_namespace)
    await client.aclose()


def monitor_of(redis: Redis, settings: Settings) -> Monitor:
    # `tick` sweeps PostgreSQL only at start and while Redis is away (the minutely safety sweep
    # is another job), so what it raises otherwise was raised by a timer.
    return Monitor(redis, settings.redis_namespace, fallback_every_s=0)


async def flush_namespace(redis: Redis, namespace: str) -> int:
    """Delete every key of the namespace: Redis emptied, as far as this installation can tell."""
    keys = [key async for key in redis.scan_iter(match=f"{namespace}:*")]
    return int(await redis.delete(*keys)) if keys else 0


async def timer(redis: Redis, settings: Settings, tenant_id: str, member: str) -> float | None:
    score = await redis.zscore(timers_key(settings.redis_namespace, UUID(tenant_id)), member)
    return None if score is None else float(score)


async def noted(redis: Redis, settings: Settings, tenant_id: str) -> None:
    """Wait for ingest's note of an event (a due-at-once timer), written just after it answered."""
    for _ in range(200):
        if await redis.zrangebyscore(timers_key(settings.redis_namespace, UUID(tenant_id)), 0, 0):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("ingest left no note of the event in Redis")


async def test_timers_follow_visits_created_moved_and_cancelled(
    client: Client, world: World, pool: asyncpg.Pool, redis: Redis, settings: Settings
) -> None:
    monitor = monitor_of(redis, settings)
    now = datetime.now(tz=UTC).replace(microsecond=0)
    await monitor.tick(pool, now)  # the worker starts: timers rebuilt from PostgreSQL
    assert monitor.ready
    start = now + timedelta(minutes=10)
    kept, moved, cancelled = [await new_visit(client, world, start) for _ in range(3)]
    await monitor.tick(pool, now)  # created after the start: found among the visits changed since
    tenant = world.a.tenant_id
    assert await timer(redis, settings, tenant, f"late:{kept}") == (start + timedelta(minutes=15)).timestamp()
    assert await timer(redis, settings, tenant, f"missed:{kept}") == (start + timedelta(minutes=60)).timestamp()
    new_start = start + timedelta(minutes=20)
    patched = await client.patch(
        f"/v1/visits/{moved}", json={"planned_start": new_start.isoformat()}, headers=world.a.commissioner
    )
    assert patched.status_code == 200, patched.text
    notice = {"by": "commissioner", "notified_at": now.isoformat(), "reason": "in hospital"}
    gone = await client.post(f"/v1/visits/{cancelled}/cancel", json=notice, headers=world.a.commissioner)
    assert gone.status_code == 200, gone.text
    await monitor.tick(pool, now)
    assert await timer(redis, settings, tenant, f"late:{moved}") == (new_start + timedelta(minutes=15)).timestamp()
    assert await timer(redis, settings, tenant, f"late:{cancelled}") is None

    assert await monitor.tick(pool, start + timedelta(minutes=14, seconds=59)) == 0
    assert await monitor.tick(pool, start + timedelta(minutes=15)) == 1  # the timer fell due
    items = await alerts(client, world.a.commissioner)
    assert kinds_of(items, kept) == {"late": "open"}
    assert kinds_of(items, moved) == {}
    assert kinds_of(items, cancelled) == {}
    assert await timer(redis, settings, tenant, f"late:{kept}") is None  # handled, so removed
    assert await monitor.tick(pool, new_start + timedelta(minutes=15)) == 1
    assert kinds_of(await alerts(client, world.a.commissioner), moved) == {"late": "open"}


async def test_a_bulk_change_is_read_a_page_a_round(
    client: Client,
    world: World,
    pool: asyncpg.Pool,
    redis: Redis,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(jobs, "CHANGED_PER_ROUND", 2)
    monitor = monitor_of(redis, settings)
    now = datetime.now(tz=UTC)
    await monitor.tick(pool, now)
    visit_ids = [await new_visit(client, world, now + timedelta(minutes=10)) for _ in range(5)]
    set_so_far = []
    for _ in range(3):
        await monitor.tick(pool, now)
        scores = [await timer(redis, settings, world.a.tenant_id, f"late:{v}") for v in visit_ids]
        set_so_far.append(sum(score is not None for score in scores))
    assert set_so_far == [2, 4, 5]


async def test_a_check_in_noted_by_ingest_resolves_and_shows_on_the_board(
    client: Client, world: World, pool: asyncpg.Pool, redis: Redis, settings: Settings
) -> None:
    monitor = monitor_of(redis, settings)
    now = datetime.now(tz=UTC)
    start = now - timedelta(minutes=20)  # late 5 minutes ago
    visit_id = await new_visit(client, world, start)
    await monitor.tick(pool, now)  # start-up sweep raises what is already due
    assert kinds_of(await alerts(client, world.a.commissioner), visit_id) == {"late": "open"}
    assert (await client.get("/v1/live", headers=world.a.commissioner)).json()["on_site"] == []
    far = event("check_in", now, visit_id=visit_id, location={"lat": 54.5, "lon": -2.0, "accuracy_m": 10})
    assert (await client.post("/v1/visit-events", json=far, headers=world.a.carer_headers[0])).status_code == 201
    await noted(redis, settings, world.a.tenant_id)
    assert await monitor.tick(pool, now) == 2  # no sweep: the note brought the worker here
    assert kinds_of(await alerts(client, world.a.commissioner), visit_id) == {
        "late": "resolved",
        "outside_geofence": "open",
    }
    board = (await client.get("/v1/live", headers=world.a.provider_headers[0])).json()["on_site"]
    assert [(row["carer_id"], row["visit_id"], row["verified"]) for row in board] == [
        (world.a.carers[0], visit_id, False)
    ]
    assert (await client.get("/v1/live", headers=world.a.provider_headers[1])).json()["on_site"] == []
    assert (await client.get("/v1/live", headers=world.b.commissioner)).json()["on_site"] == []
    out = event("check_out", datetime.now(tz=UTC), visit_id=visit_id)
    assert (await client.post("/v1/visit-events", json=out, headers=world.a.carer_headers[0])).status_code == 201
    await noted(redis, settings, world.a.tenant_id)
    await monitor.tick(pool, now)
    assert (await client.get("/v1/live", headers=world.a.commissioner)).json()["on_site"] == []


async def test_the_live_board_comes_back_after_redis_is_emptied(
    client: Client, world: World, pool: asyncpg.Pool, redis: Redis, settings: Settings
) -> None:
    monitor = monitor_of(redis, settings)
    start = datetime.now(tz=UTC) - timedelta(minutes=10)
    visits = [await new_visit(client, world, start, provider=p) for p in (0, 1)]
    await monitor.tick(pool)
    for visit_id, carer in zip(visits, world.a.carer_headers, strict=True):  # each provider's carer
        response = await client.post(
            "/v1/visit-events", json=event("check_in", start, visit_id=visit_id), headers=carer
        )
        assert response.status_code == 201, response.text
    await asyncio.sleep(0.1)
    await monitor.tick(pool)
    before = {
        name: (await client.get("/v1/live", headers=headers)).json()["on_site"]
        for name, headers in [
            ("commissioner", world.a.commissioner),
            ("provider 0", world.a.provider_headers[0]),
            ("provider 1", world.a.provider_headers[1]),
            ("other tenant", world.b.commissioner),
        ]
    }
    assert sorted((row["carer_id"], row["visit_id"]) for row in before["commissioner"]) == sorted(
        zip(world.a.carers, visits, strict=True)
    )
    assert [row["carer_id"] for row in before["provider 0"]] == [world.a.carers[0]]
    assert [row["carer_id"] for row in before["provider 1"]] == [world.a.carers[1]]
    assert before["other tenant"] == []
    assert await flush_namespace(redis, settings.redis_namespace) > 0
    after = {
        name: (await client.get("/v1/live", headers=headers)).json()["on_site"]
        for name, headers in [
            ("provider 1", world.a.provider_headers[1]),  # a provider's read rebuilds the whole tenant
            ("commissioner", world.a.commissioner),
            ("provider 0", world.a.provider_headers[0]),
            ("other tenant", world.b.commissioner),
        ]
    }
    assert after == before


async def test_two_workers_on_the_same_timers_raise_each_alert_once(
    client: Client, world: World, pool: asyncpg.Pool, redis: Redis, settings: Settings, database_url: str
) -> None:
    from infra.db import create_pool

    now = datetime.now(tz=UTC)
    start = now + timedelta(minutes=5)
    visit_ids = [await new_visit(client, world, start) for _ in range(5)]
    first, second = monitor_of(redis, settings), monitor_of(redis, settings)
    other = await create_pool(database_url, max_size=2)
    try:
        await asyncio.gather(first.tick(pool, now), second.tick(other, now))
        counts = await asyncio.gather(
            first.tick(pool, start + timedelta(minutes=61)), second.tick(other, start + timedelta(minutes=61))
        )
    finally:
        await other.close()
    assert sum(counts) == 10
    raised = [a for a in await alerts(client, world.a.commissioner) if a["visit_id"] in visit_ids]
    assert sorted((a["visit_id"], a["kind"]) for a in raised) == sorted(
        (v, k) for v in visit_ids for k in ("late", "missed")
    )


class RedisRelay:
    """A TCP relay in front of the test Redis that can be cut and restored: to its clients, an
    outage like any other (connections dropped, then refused)."""

    def __init__(self, redis_url: str) -> None:
        self._target = urlsplit(redis_url)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        if self._target.scheme == "unix":
            db = parse_qs(self._target.query).get("db", ["0"])[0]
        else:
            db = self._target.path.lstrip("/") or "0"
        return f"redis://127.0.0.1:{self.port}/{db}"

    async def _upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._target.scheme == "unix":
            return await asyncio.open_unix_connection(self._target.path)
        return await asyncio.open_connection(self._target.hostname, self._target.port or 6379)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await self._upstream()
        self._writers |= {writer, up_writer}
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        sink.close()

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()
        await self._server.wait_closed()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@pytest.fixture
async def relay(settings: Settings) -> AsyncIterator[RedisRelay]:
    made = RedisRelay(settings.redis_url or "")
    await made.start()
    yield made
    with contextlib.suppress(AssertionError):
        await made.cut()


async def test_a_redis_outage_falls_back_to_polling_and_recovers_without_raising_twice(
    world: World, pool: asyncpg.Pool, redis: Redis, settings: Settings, relay: RedisRelay
) -> None:
    through_relay = msgspec.structs.replace(settings, redis_url=relay.url)
    worker_redis = create_redis(relay.url)
    monitor = Monitor(worker_redis, settings.redis_namespace, fallback_every_s=0)
    async with AsyncTestClient(app=create_app(through_relay)) as client:
        try:
            now = datetime.now(tz=UTC)
            first = await new_visit(client, world, now - timedelta(minutes=14))  # late in a minute
            await monitor.tick(pool, now)
            assert monitor.ready
            await relay.cut()  # Redis goes away for the API and the worker alike

            # The worker polls PostgreSQL: the alert is raised at its threshold all the same.
            assert await monitor.tick(pool, now + timedelta(minutes=2)) == 1
            assert not monitor.ready
            assert kinds_of(await alerts(client, world.a.commissioner), first) == {"late": "open"}
            # Visits are planned, events ingested and the board read while Redis is away.
            second = await new_visit(client, world, now + timedelta(minutes=30))
            check_in = event("check_in", datetime.now(tz=UTC), visit_id=first)
            answer = await client.post("/v1/visit-events", json=check_in, headers=world.a.carer_headers[0])
            assert answer.status_code == 201, answer.text
            live = await client.get("/v1/live", headers=world.a.commissioner)
            assert live.status_code == 200
            assert [row["visit_id"] for row in live.json()["on_site"]] == [first]
            assert await monitor.tick(pool, now + timedelta(minutes=3)) == 1  # the check-in resolves
            assert kinds_of(await alerts(client, world.a.commissioner), first) == {"late": "resolved"}

            await relay.start()  # Redis is back (it kept its keys; an emptied one is the next test)
            await monitor.tick(pool, now + timedelta(minutes=4))
            assert monitor.ready
            # The timers were rebuilt: the visit planned during the outage has its own.
            late_at = (now + timedelta(minutes=45)).timestamp()
            assert await timer(redis, settings, world.a.tenant_id, f"late:{second}") == late_at
            # And the board, which missed the check-in while Redis was away.
            live = await client.get("/v1/live", headers=world.a.provider_headers[0])
            assert [row["visit_id"] for row in live.json()["on_site"]] == [first]
            # Nothing was raised twice; the timers go on raising.
            assert await monitor.tick(pool, now + timedelta(minutes=44)) == 0
            assert await monitor.tick(pool, now + timedelta(minutes=45)) == 1
            items = await alerts(client, world.a.commissioner)
            assert sorted((a["visit_id"], a["kind"]) for a in items) == sorted([(first, "late"), (second, "late")])
        finally:
            await worker_redis.aclose()


async def test_after_redis_was_emptied_the_worker_rebuilds_its_timers(
    client: Client, world: World, pool: asyncpg.Pool, redis: Redis, settings: Settings, relay: RedisRelay
) -> None:
    worker_redis = create_redis(relay.url)
    monitor = Monitor(worker_redis, settings.redis_namespace, fallback_every_s=0)
    try:
        now = datetime.now(tz=UTC)
        visit_id = await new_visit(client, world, now + timedelta(minutes=5))
        await monitor.tick(pool, now)
        await relay.cut()
        await flush_namespace(redis, settings.redis_namespace)  # restarted empty
        assert await monitor.tick(pool, now) == 0
        await relay.start()
        await monitor.tick(pool, now)
        assert await timer(redis, settings, world.a.tenant_id, f"late:{visit_id}") is not None
        assert await monitor.tick(pool, now + timedelta(minutes=20)) == 1
        assert kinds_of(await alerts(client, world.a.commissioner), visit_id) == {"late": "open"}
    finally:
        await worker_redis.aclose()


async def test_thresholds_after_a_move_follow_where_the_carer_s_events_count(
    client: Client, world: World, pool: asyncpg.Pool, redis: Redis, settings: Settings, db: asyncpg.Connection
) -> None:
    """Decision 155, on the timer path: the carer checked in on the wrong visit, and the move to the right
    one was approved before either was missed. At their missed thresholds the timers raise `missed` on the
    visit nobody came to, and nothing on the one the carer's check-in now counts for."""
    tw = world.a
    monitor = monitor_of(redis, settings)
    now = datetime.now(tz=UTC)
    right = await new_visit(client, world, now - timedelta(minutes=50))  # missed in 10 minutes
    wrong = await new_visit(client, world, now - timedelta(minutes=55))  # missed in 5 minutes
    checked_in = event("check_in", now - timedelta(minutes=50), visit_id=wrong)
    assert (await client.post("/v1/visit-events", json=checked_in, headers=tw.carer_headers[0])).status_code == 201
    await reconciled(pool)
    # Planned ten minutes ago: the worker does not look at them again as visits just made or changed.
    await db.execute(
        """UPDATE visit_plans SET created_at = created_at - interval '10 minutes',
                  updated_at = updated_at - interval '10 minutes' WHERE id = ANY($1::uuid[])""",
        [UUID(wrong), UUID(right)],
    )
    await monitor.tick(pool, now)  # start-up sweep: the right visit is late
    await monitor.tick(pool, now)  # and ingest's note of the check-in, on the wrong visit
    shown = await alerts(client, tw.commissioner)
    assert (kinds_of(shown, right), kinds_of(shown, wrong)) == ({"late": "open"}, {})
    await approved_move(client, tw, UUID(wrong), UUID(right))
    await monitor.tick(pool, now + timedelta(minutes=11))  # both missed thresholds fall due
    shown = await alerts(client, tw.commissioner)
    assert kinds_of(shown, wrong) == {"late": "open", "missed": "open"}
    assert "missed" not in kinds_of(shown, right)
    # The phone still names the wrong visit: the note of its check-out brings the worker to the right one
    # too, where the carer's check-in counts, and its late alert ends without waiting for a sweep.
    assert kinds_of(shown, right) == {"late": "open"}
    out = event("check_out", datetime.now(tz=UTC), visit_id=wrong)
    assert (await client.post("/v1/visit-events", json=out, headers=tw.carer_headers[0])).status_code == 201
    await noted(redis, settings, tw.tenant_id)
    await monitor.tick(pool, now + timedelta(minutes=12))
    assert kinds_of(await alerts(client, tw.commissioner), right) == {"late": "resolved"}
