"""Requests that PostgreSQL may pick as a deadlock's victim: run again, then refused with 409."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
import structlog

from services.common.errors import problem

log = structlog.get_logger("carebank.deadlocks")
T = TypeVar("T")

# A victim was rolled back whole, so it can be run again; three tries in all, as for ingest (decision 99).
DEADLOCK_TRIES = 3


async def deadlock_retried(run: Callable[[], Awaitable[T]], what: str) -> T:
    """`run` (one transaction) again, up to DEADLOCK_TRIES times in all, when PostgreSQL broke a deadlock
    by rolling it back; then 409 `conflict`. The writes that lock visits take them all at once in id order
    (decisions 150, 156), so what is left is the rare chain of moves approved while one waited (decision
    133); nothing of a rolled-back try stays. `what` names the request in the log."""
    for tries_left in range(DEADLOCK_TRIES - 1, -1, -1):
        try:
            return await run()
        except asyncpg.DeadlockDetectedError:
            if not tries_left:
                raise problem(
                    409, "conflict", "other changes to these visits were being made at once; nothing was changed"
                ) from None
            log.warning("deadlock_retried", request=what)
    raise AssertionError("unreachable")
