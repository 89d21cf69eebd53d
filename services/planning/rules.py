"""Planning rules: care-plan consistency, visit generation in tenant time, moves, cancellations.

Pure functions: the clock (`now`, `today`) and the tenant's zone are always passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from schemas.planning import CarePlanCreate, ScheduleSlot
from services.common.domain import RuleError


@dataclass(frozen=True)
class GeneratedVisit:
    """One visit a plan's schedule asks for, keyed by (plan, slot, local date)."""

    slot: int
    local_date: date
    planned_start: datetime
    planned_min: int
    carers_required: int
    outcome_ids: tuple[str, ...]


def check_care_plan(data: CarePlanCreate) -> None:
    """Outcome ids unique, schedule outcomes known, sum of minutes * carers <= weekly_min, dates in order."""
    seen: set[str] = set()
    for index, outcome in enumerate(data.outcomes):
        if outcome.id in seen:
            raise RuleError("duplicate_outcome", f"outcome id {outcome.id!r} is used twice", f"outcomes[{index}].id")
        seen.add(outcome.id)
    for index, slot in enumerate(data.schedule):
        for position, outcome_id in enumerate(slot.outcome_ids):
            if outcome_id not in seen:
                raise RuleError(
                    "unknown_outcome",
                    f"outcome {outcome_id!r} is not one of the plan's outcomes",
                    f"schedule[{index}].outcome_ids[{position}]",
                )
    scheduled = sum(slot.minutes * slot.carers_required for slot in data.schedule)
    if scheduled > data.weekly_min:
        raise RuleError(
            "schedule_exceeds_weekly_min",
            f"the schedule needs {scheduled} carer-minutes a week, more than weekly_min {data.weekly_min}",
            "weekly_min",
        )
    if data.valid_to is not None and data.valid_to < data.valid_from:
        raise RuleError("before_valid_from", "valid_to is before valid_from", "valid_to")


def local_instant(local_date: date, hhmm: str, zone: ZoneInfo) -> datetime:
    """The UTC instant of a local wall-clock time.

    A time skipped by the spring-forward gap moves forward by the gap (01:30 → 02:30 BST); a
    time that occurs twice at fall-back takes the first occurrence. zoneinfo's fold=0 does both.
    """
    hours, minutes = (int(part) for part in hhmm.split(":"))
    wall = datetime.combine(local_date, time(hours, minutes), tzinfo=zone)
    return wall.astimezone(UTC)


def generation_window(
    *,
    plan_from: date,
    plan_to: date | None,
    contract_from: date,
    contract_to: date | None,
    generated_until: date | None,
    today: date,
    horizon_days: int,
) -> tuple[date, date] | None:
    """Local dates still to generate: after what exists, within plan and contract, up to the horizon."""
    start = max(plan_from, contract_from)
    if generated_until is not None:
        start = max(start, generated_until + timedelta(days=1))
    end = today + timedelta(days=horizon_days)
    for limit in (plan_to, contract_to):
        if limit is not None:
            end = min(end, limit)
    return (start, end) if start <= end else None


def expand_schedule(schedule: list[ScheduleSlot], zone: ZoneInfo, start: date, end: date) -> list[GeneratedVisit]:
    """Every visit of the weekly schedule on local dates start..end inclusive, in time order."""
    visits: list[GeneratedVisit] = []
    day = start
    while day <= end:
        weekday = day.isoweekday()
        for index, slot in enumerate(schedule):
            if slot.weekday == weekday:
                visits.append(
                    GeneratedVisit(
                        slot=index,
                        local_date=day,
                        planned_start=local_instant(day, slot.start, zone),
                        planned_min=slot.minutes,
                        carers_required=slot.carers_required,
                        outcome_ids=tuple(slot.outcome_ids),
                    )
                )
        day += timedelta(days=1)
    visits.sort(key=lambda v: (v.planned_start, v.slot))
    return visits


def check_carers(carer_ids: Sequence[object], carers_required: int) -> None:
    """At most `carers_required` carers, none twice."""
    if len(set(carer_ids)) != len(carer_ids):
        raise RuleError("duplicate_carer", "a carer is assigned twice", "carer_ids")
    if len(carer_ids) > carers_required:
        raise RuleError(
            "too_many_carers",
            f"the visit needs {carers_required} carer(s); {len(carer_ids)} assigned",
            "carer_ids",
        )


def check_move(
    *,
    role: str,
    planned_start: datetime,
    new_start: datetime,
    zone: ZoneInfo,
    now: datetime,
) -> None:
    """A provider moves within the same local day; nobody moves a visit into the past."""
    if new_start <= now:
        raise RuleError("in_the_past", "a visit cannot be moved to a time already passed", "planned_start")
    if role == "provider" and new_start.astimezone(zone).date() != planned_start.astimezone(zone).date():
        raise RuleError(
            "other_day", "a provider may move a visit only within its local day", "planned_start", status=422
        )


def check_changeable(*, started: bool, has_events: bool, cancelled: bool, invoiced: bool = False) -> None:
    """Moves, assignments and cancellations happen only before a visit starts or has any event."""
    if cancelled:
        raise RuleError("already_cancelled", "the visit is cancelled", status=409)
    if has_events:
        raise RuleError("visit_has_events", "the visit already has events from carers", status=409)
    if invoiced:
        raise RuleError("visit_invoiced", "the visit is already invoiced", status=409)
    if started:
        raise RuleError("visit_started", "the visit's planned start has passed", status=409)


def is_short_notice(planned_start: datetime, notified_at: datetime, notice_h: int) -> bool:
    """Notice below `cancellation_notice_h` is short; exactly the notice is not."""
    return planned_start - notified_at < timedelta(hours=notice_h)


def cancellation_needs_confirmation(*, by: str, short_notice: bool, recorded_by_role: str) -> bool:
    """A short-notice person cancellation recorded by a provider pays only once a commissioner confirms."""
    return by == "person" and short_notice and recorded_by_role == "provider"
