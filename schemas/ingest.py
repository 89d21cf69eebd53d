"""Wire contracts of ingest: visit events from phones, one at a time or in batches."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

import msgspec

from schemas.common import FieldProblem

EventKind = Literal["check_in", "check_out"]
Method = Literal["gps", "nfc", "qr", "telephony", "manual"]
OutcomeStatus = Literal["met", "not_met", "refused"]
MAX_BATCH = 500


class GeoFix(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A phone's GPS fix, with its reported accuracy in metres."""

    lat: Annotated[float, msgspec.Meta(ge=-90, le=90)]
    lon: Annotated[float, msgspec.Meta(ge=-180, le=180)]
    accuracy_m: Annotated[float, msgspec.Meta(ge=0, le=100_000)]


class OutcomeRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a carer recorded for one of the plan's outcomes at check-out."""

    outcome_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    status: OutcomeStatus


class VisitEventIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a phone says happened; the carer comes from the credential, never the body."""

    event_id: UUID
    kind: EventKind
    occurred_at: Annotated[datetime, msgspec.Meta(tz=True)]
    method: Method
    device_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    visit_id: UUID | None = None
    person_id: UUID | None = None
    location: GeoFix | None = None
    tag: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] | None = None
    phone: Annotated[str, msgspec.Meta(min_length=3, max_length=32)] | None = None
    outcomes: Annotated[list[OutcomeRecord], msgspec.Meta(max_length=50)] = []
    note: Annotated[str, msgspec.Meta(max_length=2000)] | None = None


class EventBatchIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Up to 500 events; each is checked on its own, so one bad event does not sink the rest."""

    events: Annotated[list[msgspec.Raw], msgspec.Meta(max_length=MAX_BATCH)]


EventStatus = Literal["accepted", "duplicate", "conflict", "rejected"]


class EventAnswer(msgspec.Struct, frozen=True):
    """The fate of one event: accepted (committed), duplicate (already had it), or refused."""

    event_id: UUID | None
    status: EventStatus
    visit_id: UUID | None = None
    verified: bool | None = None
    errors: list[FieldProblem] = []


class BatchAnswer(msgspec.Struct, frozen=True):
    """One answer per event, in the order sent."""

    results: list[EventAnswer]
