"""Wire contracts of reconciliation: amendments and open exceptions."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

import msgspec

ReasonCode = Literal[
    "forgot_check_in",
    "forgot_check_out",
    "device_failure",
    "no_signal",
    "wrong_visit_selected",
    "person_requested_change",
    "emergency_during_visit",
    "schedule_error",
    "extended_visit_authorised",
    "other",
]

# Every exception a visit can carry, in DOMAIN.md's order (`rules.EXCEPTION_ORDER` is this list).
ExceptionKind = Literal[
    "no_check_in",
    "no_check_out",
    "outside_geofence",
    "outside_window",
    "manual_event",
    "short_visit",
    "overrun",
    "outcomes_not_met",
    "single_handed",
    "extra_carer",
    "unplanned",
    "overlapping_visits",
]


class AmendmentCreate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A correction of one carer's attendance on a visit; events themselves never change."""

    carer_id: UUID
    reason_code: ReasonCode
    check_in_at: Annotated[datetime, msgspec.Meta(tz=True)] | None = None
    check_out_at: Annotated[datetime, msgspec.Meta(tz=True)] | None = None
    extension_min: Annotated[int, msgspec.Meta(ge=1, le=24 * 60)] | None = None
    planned_min: Annotated[int, msgspec.Meta(ge=1, le=24 * 60)] | None = None
    move_to_visit_id: UUID | None = None
    note: Annotated[str, msgspec.Meta(max_length=2000)] | None = None


class Amendment(msgspec.Struct, frozen=True):
    """An amendment with who proposed and decided it, and the payable minutes before and after."""

    id: UUID
    visit_id: UUID
    carer_id: UUID
    reason_code: str
    note: str | None
    check_in_at: datetime | None
    check_out_at: datetime | None
    extension_min: int | None
    planned_min: int | None
    move_to_visit_id: UUID | None
    status: Literal["pending", "approved", "rejected"]
    auto_approved: bool
    proposed_by: str
    proposed_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    payable_before: int
    payable_after: int
    banked_before: int
    banked_after: int
    decided_payable_before: int | None
    decided_payable_after: int | None
    # A move's other visit, the one the carer's events went to: its payable minutes at the decision.
    decided_target_payable_before: int | None = None
    decided_target_payable_after: int | None = None


class VisitExceptions(msgspec.Struct, frozen=True):
    """A visit's open exceptions: present on its current state and not acknowledged. `id` is the visit's."""

    id: UUID
    person_id: UUID
    provider_id: UUID
    planned_start: datetime
    status: str
    exceptions: list[str]
