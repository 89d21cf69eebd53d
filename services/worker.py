"""`carebank worker`: runs each area's periodic jobs until stopped.

Each job is an async function of a pool, run every `interval_s`; a failing job is logged and
retried next interval, never allowed to stop the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import structlog

from infra.db import create_pool
from infra.logging import configure_logging
from infra.redis import create_redis
from infra.settings import Settings
from services.banking import jobs as banking_jobs
from services.billing import jobs as billing_jobs
from services.common import idempotency
from services.monitoring import jobs as monitoring_jobs
from services.monitoring.live import AlertPublisher
from services.planning import jobs as planning_jobs
from services.reconcile import jobs as reconcile_jobs

log = structlog.get_logger("carebank.worker")


@dataclass(frozen=True)
class Job:
    """A named periodic job."""

    name: str
    interval_s: float
    run: Callable[[asyncpg.Pool], Awaitable[int]]


def jobs_for(
    settings: Settings, publisher: AlertPublisher | None = None, monitor: monitoring_jobs.Monitor | None = None
) -> list[Job]:
    """The worker's jobs, with the settings they need; the alert timers' job only when given its
    monitor (a running worker ticks it on a thread of its own, `MonitorThread`)."""
    jobs = [
        Job("purge_idempotency_keys", 3600, idempotency.purge_expired),
        # Idempotent, so running hourly (rather than once at midnight) costs little and heals gaps.
        Job("extend_care_plans", 3600, planning_jobs.extend_care_plans),
        Job("reconcile_queue", 1, reconcile_jobs.drain_queue),
        Job("reconcile_due", 15, reconcile_jobs.reconcile_due),
        Job("alerts_sweep", 60, monitoring_jobs.SweepJob(publisher)),
        # Before invoice runs in the same pass, so a run credits what expired by then.
        Job("bank_expiry", 60, banking_jobs.expire_due_lots),
        Job(
            "invoice_runs",
            3600,
            functools.partial(billing_jobs.run_due_invoices, after_days=settings.invoice_after_days),
        ),
    ]
    if monitor is not None:
        # Every half second: due timers in Redis, or (Redis away) a PostgreSQL sweep every 5 s.
        jobs.append(Job("alerts", 0.5, monitor.tick))
    return jobs


async def run_worker(settings: Settings, *, once: bool = False) -> None:
    """Run every job (once, or forever until SIGINT/SIGTERM)."""
    configure_logging(settings.log_level)
    assert settings.database_url is not None
    pool = await create_pool(settings.database_url, max_size=4)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    redis = create_redis(settings.redis_url) if settings.redis_url else None
    publisher = AlertPublisher(redis, settings.redis_namespace) if redis is not None else None
    monitoring = monitoring_jobs.MonitorThread(settings.database_url, settings.redis_url, settings.redis_namespace)
    try:
        if once:
            monitor = monitoring_jobs.Monitor(redis, settings.redis_namespace, publisher)
            for job in jobs_for(settings, publisher, monitor):
                await _run_job(job, pool)
            return
        monitoring.start()
        await asyncio.gather(*(_loop(job, pool, stop) for job in jobs_for(settings, publisher)))
    finally:
        if not once:
            monitoring.stop()
        await pool.close()
        if redis is not None:
            await redis.aclose()


async def _loop(job: Job, pool: asyncpg.Pool, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await _run_job(job, pool)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=job.interval_s)


async def _run_job(job: Job, pool: asyncpg.Pool) -> None:
    try:
        count = await job.run(pool)
        log.info("job_done", job=job.name, count=count)
    except (OSError, asyncpg.PostgresError) as exc:
        log.warning("job_failed", job=job.name, error=str(exc))
    except Exception:
        # Any other failure too (a bug, a document that does not decode): logged with its trace and
        # retried next interval; letting it out would end `gather` and with it every other job.
        log.exception("job_failed", job=job.name)
