"""The worker's job loop and the API's reconcile drainer outlive a failure that is not the database's:
one bad batch is logged and retried, and the other jobs (and later batches) go on."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from services import worker
from services.reconcile import jobs


async def test_a_job_that_raises_is_retried_and_does_not_stop_the_worker() -> None:
    calls = 0

    async def flaky(pool: asyncpg.Pool) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("a visit's stored document did not decode")
        return 0

    stop = asyncio.Event()
    looping = asyncio.create_task(worker._loop(worker.Job("flaky", 0.01, flaky), None, stop))  # type: ignore[arg-type]
    for _ in range(100):
        if calls >= 2 or looping.done():
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(looping, 5)  # raises if the loop died with the job's error
    assert calls >= 2


async def test_the_api_drainer_keeps_draining_after_a_batch_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0

    async def flaky(pool: Any, now: Any = None) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("an account's lock row is missing after it was made")
        return 0

    monkeypatch.setattr(jobs, "drain_queue", flaky)
    drainer = jobs.QueueDrainer(None, interval_s=0.01)  # type: ignore[arg-type]
    drainer.start()
    try:
        for _ in range(100):
            if calls >= 2:
                break
            await asyncio.sleep(0.01)
    finally:
        await drainer.stop()
    assert calls >= 2
