"""Monitoring worker job: raise the alerts whose thresholds have passed and resolve those that ended.

Polls PostgreSQL every few seconds; two workers at once raise each alert once (a unique key).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import structlog

from infra.db import acquire
from schemas.monitoring import Alert
from services.common.ids import new_id
from services.monitoring import rules, store
from services.monitoring.live import AlertPublisher

log = structlog.get_logger("carebank.monitoring")
LOOKBACK = timedelta(hours=30)  # a day of visits, plus no_check_out's hour after the end


def _facts(row: asyncpg.Record) -> rules.VisitFacts:
    return rules.VisitFacts(
        planned_start=row["planned_start"],
        planned_min=row["planned_min"],
        carers_required=row["carers_required"],
        created_at=row["created_at"],
        cancelled=row["cancelled"],
        carers_checked_in=row["carers_checked_in"],
        carers_on_site=row["carers_on_site"],
        late_after_min=row["late_after_min"],
        missed_after_min=row["missed_after_min"],
    )


Changed = list[tuple[UUID, Alert]]


async def evaluate_alerts(pool: asyncpg.Pool, now: datetime | None = None) -> tuple[Changed, Changed]:
    """(raised, resolved) alerts this round, each with its tenant."""
    now = now or datetime.now(tz=UTC)
    async with acquire(pool) as conn, conn.transaction():
        rows: list[dict[str, Any]] = []
        for visit in await store.visits_near_thresholds(conn, now, LOOKBACK):
            for kind, due_at in rules.alerts_due(_facts(visit), now):
                rows.append(_alert_row(visit, kind, "", due_at, now))
        for event in await store.unalerted_outside_geofence(conn, now - LOOKBACK):
            rows.append(_alert_row(event, "outside_geofence", str(event["event_id"]), event["received_at"], now))
        raised = await store.raise_alerts(conn, rows)
        resolved: Changed = []
        facts = [(row, _facts(row)) for row in await store.facts_of_open_alerts(conn)]
        for kind in ("late", "missed", "no_check_out"):
            ended = [(row["tenant_id"], row["id"]) for row, f in facts if not rules.condition_holds(kind, f)]
            resolved += await store.resolve(conn, ended, kind, now)
    return raised, resolved


def _alert_row(source: asyncpg.Record, kind: str, subject: str, due_at: datetime, now: datetime) -> dict[str, Any]:
    visit_id = source["visit_id"] if "visit_id" in source else source["id"]
    return {
        "tenant_id": source["tenant_id"],
        "id": new_id(),
        "visit_id": visit_id,
        "person_id": source["person_id"],
        "provider_id": source["provider_id"],
        "kind": kind,
        "subject": subject,
        "due_at": due_at,
        "raised_at": now,
    }


async def alerts_job(pool: asyncpg.Pool, publisher: AlertPublisher | None = None) -> int:
    """The worker's job: raise and resolve, then push the changes live; returns how many changed."""
    raised, resolved = await evaluate_alerts(pool)
    for _, alert in raised:
        log.info("alert_raised", kind=alert.kind, alert_id=str(alert.id), visit_id=str(alert.visit_id))
    if publisher is not None:
        await publisher.publish(raised + resolved)
    return len(raised) + len(resolved)
