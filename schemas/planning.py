"""Wire contracts of planning: care plans, planned visits, moves and cancellations."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal
from uuid import UUID

import msgspec

Domain = Literal[
    "personal_care",
    "food_and_drink",
    "safety",
    "accommodation",
    "occupation",
    "social_participation",
    "control",
    "dignity",
]
OutcomeId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
VisitMinutes = Annotated[int, msgspec.Meta(ge=1, le=24 * 60)]
CarersRequired = Annotated[int, msgspec.Meta(ge=1, le=2)]
Funding = Literal["package", "bank"]
VisitStatus = Literal["planned", "in_progress", "completed", "missed", "cancelled", "unplanned"]
Origin = Literal["plan", "commissioner", "provider_request", "unplanned"]
Approval = Literal["approved", "pending"]
# An instant with its offset (a naive time is 422); services.common.domain.check_instant bounds it.
Instant = Annotated[datetime, msgspec.Meta(tz=True)]


class Outcome(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An outcome of a care plan, in one of the eight ASCOT domains."""

    id: OutcomeId
    domain: Domain
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
    key: bool = False


class ScheduleSlot(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A weekly call: weekday (Monday 1), local start time, length, carers, outcomes."""

    weekday: Annotated[int, msgspec.Meta(ge=1, le=7)]
    start: Annotated[str, msgspec.Meta(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]
    minutes: VisitMinutes
    carers_required: CarersRequired = 1
    outcome_ids: Annotated[list[OutcomeId], msgspec.Meta(max_length=20)] = []


class CarePlanCreate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A person's commissioned care on one contract."""

    person_id: UUID
    contract_id: UUID
    weekly_min: Annotated[int, msgspec.Meta(ge=1, le=7 * 24 * 60 * 2)]
    outcomes: Annotated[list[Outcome], msgspec.Meta(max_length=50)]
    schedule: Annotated[list[ScheduleSlot], msgspec.Meta(min_length=1, max_length=50)]
    valid_from: date
    valid_to: date | None = None
    horizon_days: Annotated[int, msgspec.Meta(ge=1, le=366)] = 28


class CarePlan(msgspec.Struct, frozen=True):
    """A care plan as stored; `generated_until` is the last local date visits exist for."""

    id: UUID
    person_id: UUID
    contract_id: UUID
    provider_id: UUID
    weekly_min: int
    outcomes: list[Outcome]
    schedule: list[ScheduleSlot]
    valid_from: date
    valid_to: date | None
    horizon_days: int
    generated_until: date | None
    visits_created: int
    created_at: datetime


class VisitCreate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An extra visit: planned at once by a commissioner, a request when a provider asks."""

    person_id: UUID
    contract_id: UUID
    planned_start: Instant
    planned_min: VisitMinutes
    carers_required: CarersRequired = 1
    carer_ids: Annotated[list[UUID], msgspec.Meta(max_length=2)] = []
    outcome_ids: Annotated[list[OutcomeId], msgspec.Meta(max_length=20)] = []
    funding: Funding = "package"


class VisitPatch(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Assign carers or move a visit that has not started."""

    carer_ids: Annotated[list[UUID], msgspec.Meta(max_length=2)] | msgspec.UnsetType = msgspec.UNSET
    planned_start: Instant | msgspec.UnsetType = msgspec.UNSET


class VisitCancel(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Who cancelled, when the provider was told, and why."""

    by: Literal["person", "provider", "commissioner"]
    notified_at: Instant
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]


class Cancellation(msgspec.Struct, frozen=True):
    """A visit's cancellation: short notice pays per the contract; `confirmed` as DOMAIN.md says."""

    by: str
    notified_at: datetime
    reason: str
    short_notice: bool
    confirmed: bool
    recorded_by: str


class AttendanceOut(msgspec.Struct, frozen=True):
    """One carer's presence on a visit, as reconciled."""

    carer_id: UUID
    check_in: datetime | None
    check_out: datetime | None
    actual_seconds: int | None
    actual_min: float | None
    payable_min: int
    verified_in_home: bool
    counted: bool
    exceptions: list[str]


class VisitActual(msgspec.Struct, frozen=True):
    """What happened, and what it pays and banks."""

    attendances: list[AttendanceOut]
    payable_min: int
    banked_min: int
    place_payables: list[int]
    verified_in_home: bool
    reconciled_at: datetime


class Visit(msgspec.Struct, frozen=True):
    """A planned (or unplanned) visit; `actual` and `exceptions` come from reconciliation."""

    id: UUID
    person_id: UUID
    provider_id: UUID
    contract_id: UUID
    plan_id: UUID | None
    status: VisitStatus
    planned_start: datetime
    planned_min: int
    carers_required: int
    carer_ids: list[UUID]
    outcome_ids: list[str]
    funding: Funding
    origin: Origin
    approval: Approval
    band_start: datetime
    cancellation: Cancellation | None
    actual: VisitActual | None
    exceptions: list[str]
    created_at: datetime
