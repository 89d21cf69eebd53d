"""Alert rules (pure): when a visit is late, missed or left without a check-out, and when that ends."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from uuid import UUID

Kind = Literal["late", "missed", "no_check_out", "outside_geofence"]
NO_CHECK_OUT_AFTER = timedelta(minutes=60)
TOO_LATE_TO_RAISE = timedelta(hours=12)


@dataclass(frozen=True)
class VisitFacts:
    """What alerting needs of one visit now."""

    planned_start: datetime
    planned_min: int
    carers_required: int
    created_at: datetime
    cancelled: bool
    carers_checked_in: int
    carers_on_site: int  # checked in, not yet checked out (nor amended out)
    late_after_min: int
    missed_after_min: int


@dataclass(frozen=True)
class CarerEvent:
    """One event of a carer, on the visit where it counts (after approved moves)."""

    carer_id: UUID
    kind: str
    occurred_at: datetime


@dataclass(frozen=True)
class CarerTimes:
    """The times an approved amendment set for a carer, on the visit where they count."""

    carer_id: UUID
    check_in_at: datetime | None
    check_out_at: datetime | None


def carers_counted(events: Iterable[CarerEvent], amendments: Iterable[CarerTimes]) -> tuple[int, int]:
    """(carers checked in, carers on site) of one visit, as `store._FACTS` counts them from the
    events and amendments stored on it: checked in = a check-in event or an amended check-in;
    on site = a check-in event with no later check-out event, and no amended check-out. Used for
    the visits approved moves take events to or from, whose events are not all stored on them."""
    events = list(events)
    amendments = list(amendments)
    checked_in = {e.carer_id for e in events if e.kind == "check_in"}
    checked_in |= {a.carer_id for a in amendments if a.check_in_at is not None}
    amended_out = {a.carer_id for a in amendments if a.check_out_at is not None}
    last_out: dict[UUID, datetime] = {}
    for e in events:
        if e.kind == "check_out" and (e.carer_id not in last_out or e.occurred_at > last_out[e.carer_id]):
            last_out[e.carer_id] = e.occurred_at
    on_site = {
        e.carer_id
        for e in events
        if e.kind == "check_in"
        and e.carer_id not in amended_out
        and (e.carer_id not in last_out or last_out[e.carer_id] <= e.occurred_at)
    }
    return len(checked_in), len(on_site)


def thresholds(facts: VisitFacts) -> dict[Kind, datetime]:
    """The instant each visit-level alert becomes due."""
    return thresholds_of(facts.planned_start, facts.planned_min, facts.late_after_min, facts.missed_after_min)


def thresholds_of(
    planned_start: datetime, planned_min: int, late_after_min: int, missed_after_min: int
) -> dict[Kind, datetime]:
    """The same instants from the plan alone (what a timer is set for, before any event is known)."""
    end = planned_start + timedelta(minutes=planned_min)
    return {
        "late": planned_start + timedelta(minutes=late_after_min),
        "missed": planned_start + timedelta(minutes=missed_after_min),
        "no_check_out": end + NO_CHECK_OUT_AFTER,
    }


def condition_holds(kind: Kind, facts: VisitFacts) -> bool:
    """Whether the situation an alert is about is (still) true."""
    if facts.cancelled:
        return False
    if kind == "late":
        return facts.carers_checked_in < facts.carers_required
    if kind == "missed":
        return facts.carers_checked_in == 0
    if kind == "no_check_out":
        return facts.carers_on_site > 0
    return False


def alerts_due(facts: VisitFacts, now: datetime) -> list[tuple[Kind, datetime]]:
    """Alerts to raise now: threshold passed, condition true, and the threshold did not pass more than
    12 hours before the visit existed (a back-dated plan raises nothing for its past)."""
    due: list[tuple[Kind, datetime]] = []
    for kind, at in thresholds(facts).items():
        if at <= now and condition_holds(kind, facts) and at >= facts.created_at - TOO_LATE_TO_RAISE:
            due.append((kind, at))
    return due
