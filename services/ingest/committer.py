"""Group commit for single events: concurrent requests are gathered for a moment and stored
in one transaction, so a busy morning costs one commit per group, not one per event."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from dataclasses import dataclass, field
from uuid import UUID

import asyncpg
import structlog

from services.ingest.accept import Outcome, Submission, accept_committed

log = structlog.get_logger("carebank.ingest")


@dataclass
class _Waiting:
    tenant_id: UUID
    submission: Submission
    answer: asyncio.Future[Outcome] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class GroupCommitter:
    """Queue single events; a background task commits whatever has gathered, tenant by tenant."""

    def __init__(
        self, pool: asyncpg.Pool, *, max_wait_s: float = 0.002, max_group: int = 500, max_in_flight: int = 4
    ) -> None:
        self._pool = pool
        self._max_in_flight = max_in_flight
        self._max_wait_s = max_wait_s
        self._max_group = max_group
        self._queue: asyncio.Queue[_Waiting] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ingest-group-commit")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        # Commits under way finish, so every waiting request hears its answer.
        await asyncio.gather(*self._in_flight, return_exceptions=True)

    async def submit(self, tenant_id: UUID, submission: Submission) -> Outcome:
        """Wait until the event's group has committed (or been refused) and return its answer."""
        waiting = _Waiting(tenant_id, submission)
        await self._queue.put(waiting)
        return await waiting.answer

    async def _run(self) -> None:
        commits = self._in_flight
        while True:
            group = [await self._queue.get()]
            # Let company arrive, then take what is there: no timer per event.
            await asyncio.sleep(self._max_wait_s)
            while len(group) < self._max_group and not self._queue.empty():
                group.append(self._queue.get_nowait())
            by_tenant: dict[UUID, list[_Waiting]] = defaultdict(list)
            for waiting in group:
                by_tenant[waiting.tenant_id].append(waiting)
            # Commits run side by side (bounded by the pool), so the next group gathers meanwhile.
            for tenant_id, items in by_tenant.items():
                task = asyncio.create_task(self._commit(tenant_id, items))
                commits.add(task)
                task.add_done_callback(commits.discard)
            while len(commits) >= self._max_in_flight:
                await asyncio.wait(commits, return_when=asyncio.FIRST_COMPLETED)

    async def _commit(self, tenant_id: UUID, items: list[_Waiting]) -> None:
        try:
            answers = await accept_committed(self._pool, tenant_id, [w.submission for w in items])
        except Exception as exc:  # every waiter must hear, or its request hangs
            log.exception("group_commit_failed", tenant_id=str(tenant_id), size=len(items))
            for waiting in items:
                if not waiting.answer.done():
                    waiting.answer.set_exception(exc)
            return
        for waiting, answer in zip(items, answers, strict=True):
            if not waiting.answer.done():
                waiting.answer.set_result(answer)
