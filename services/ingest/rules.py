"""Ingest rules: what an event must carry, when it is too early or too old, duplicates,
verification in the home, and matching person-only events to visits. No I/O, no clock."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple
from uuid import UUID

import msgspec

from schemas.common import FieldProblem
from schemas.ingest import VisitEventIn

CLOCK_SKEW = timedelta(minutes=5)
MATCH_BEFORE = timedelta(minutes=60)  # an event may come this long before planned start …
MATCH_AFTER = timedelta(minutes=120)  # … or this long after it, to match a visit by time
GPS_ACCURACY_CAP_M = 50.0
EARTH_RADIUS_M = 6_371_008.8


class EventProblem(Exception):
    """An event refused as a whole: `status` is what a single-event request answers."""

    def __init__(self, status: int, code: str, problems: list[FieldProblem]) -> None:
        super().__init__(problems[0].message if problems else code)
        self.status = status
        self.code = code
        self.problems = problems


def _refuse(code: str, field: str, message: str, status: int = 422) -> EventProblem:
    return EventProblem(status, code, [FieldProblem(field, code, message)])


# What each method must carry besides its kind; manual carries nothing.
_METHOD_NEEDS = {"gps": "location", "nfc": "tag", "qr": "tag", "telephony": "phone"}


def check_event(event: VisitEventIn, now: datetime, max_event_age_days: int) -> None:
    """The checks that need nothing but the event and the clock; raises EventProblem."""
    if event.occurred_at > now + CLOCK_SKEW:
        raise _refuse("clock_ahead", "occurred_at", "occurred_at is more than 5 minutes ahead of the server clock")
    if event.occurred_at < now - timedelta(days=max_event_age_days):
        raise _refuse("too_old", "occurred_at", f"occurred_at is older than {max_event_age_days} days")
    for field, text in (
        ("device_id", event.device_id),
        ("note", event.note),
        ("tag", event.tag),
        ("phone", event.phone),
    ):
        if text is not None and "\x00" in text:
            raise _refuse("nul_character", field, "text may not contain NUL characters")
    for index, outcome in enumerate(event.outcomes):
        if "\x00" in outcome.outcome_id:
            raise _refuse("nul_character", f"outcomes[{index}].outcome_id", "text may not contain NUL characters")
    if event.visit_id is None and event.person_id is None:
        raise _refuse("required", "visit_id", "an event names its visit_id, or person_id for an unplanned visit")
    if event.kind == "check_in" and event.outcomes:
        raise _refuse("outcomes_on_check_in", "outcomes", "outcomes are recorded at check-out only")
    needed = _METHOD_NEEDS.get(event.method)
    if needed is not None and getattr(event, needed) is None:
        raise _refuse("required", needed, f"a {event.method} event carries {needed}")
    seen: set[str] = set()
    for index, outcome in enumerate(event.outcomes):
        if outcome.outcome_id in seen:
            raise _refuse("duplicate_outcome", f"outcomes[{index}].outcome_id", "an outcome is recorded twice")
        seen.add(outcome.outcome_id)


def check_outcomes(event: VisitEventIn, known: set[str]) -> None:
    """Outcome ids must be the visit's plan's."""
    for index, outcome in enumerate(event.outcomes):
        if outcome.outcome_id not in known:
            raise _refuse(
                "unknown_outcome",
                f"outcomes[{index}].outcome_id",
                f"{outcome.outcome_id!r} is not an outcome of the plan",
            )


def content_hash(event: VisitEventIn, carer_id: UUID) -> str:
    """What makes a resend a duplicate: the content after decoding (instants in UTC, outcomes sorted)."""
    canonical = event
    if event.occurred_at.tzinfo is not UTC or len(event.outcomes) > 1:  # else already canonical
        canonical = msgspec.structs.replace(
            event,
            occurred_at=event.occurred_at.astimezone(UTC),
            outcomes=sorted(event.outcomes, key=lambda o: o.outcome_id),
        )
    payload = msgspec.json.encode({"carer_id": carer_id, "event": canonical})
    return hashlib.sha256(payload).hexdigest()


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


@dataclass(frozen=True)
class Home:
    """What verification needs of a person."""

    lat: float
    lon: float
    geofence_m: int
    tags: frozenset[str]
    phones: frozenset[str]


def is_verified(event: VisitEventIn, home: Home, phone_e164: str | None) -> bool:
    """gps within geofence + min(accuracy, 50 m); a registered tag; a registered phone; manual never."""
    if event.method == "gps" and event.location is not None:
        distance = haversine_m(event.location.lat, event.location.lon, home.lat, home.lon)
        return distance <= home.geofence_m + min(event.location.accuracy_m, GPS_ACCURACY_CAP_M)
    if event.method in ("nfc", "qr"):
        return event.tag in home.tags
    if event.method == "telephony":
        return phone_e164 is not None and phone_e164 in home.phones
    return False


class Candidate(NamedTuple):
    """A visit a person-only event could belong to."""

    visit_id: UUID
    planned_start: datetime


def match_by_time(occurred_at: datetime, candidates: Iterable[Candidate]) -> UUID | None:
    """The visit whose planned start is closest, with occurred_at - start in [-60, +120] min; ties earlier."""
    best: tuple[timedelta, datetime, UUID] | None = None
    for candidate in candidates:
        offset = occurred_at - candidate.planned_start
        if -MATCH_BEFORE <= offset <= MATCH_AFTER:
            key = (abs(offset), candidate.planned_start, candidate.visit_id)
            if best is None or key < best:
                best = key
    return best[2] if best else None


class CheckIn(NamedTuple):
    """A check-in of the same carer for the same person."""

    visit_id: UUID
    occurred_at: datetime


def match_check_out(occurred_at: datetime, check_ins: Sequence[CheckIn]) -> UUID | None:
    """A person-only check-out belongs to the visit of the carer's latest check-in at or before it."""
    before = [c for c in check_ins if c.occurred_at <= occurred_at]
    return max(before, key=lambda c: (c.occurred_at, c.visit_id)).visit_id if before else None
