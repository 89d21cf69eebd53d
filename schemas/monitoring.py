"""Wire contracts of monitoring: alerts."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

import msgspec

AlertKind = Literal["late", "missed", "no_check_out", "outside_geofence"]
AlertStatus = Literal["open", "acknowledged", "resolved"]


class Alert(msgspec.Struct, frozen=True):
    """An alert: open → acknowledged → resolved, or open → resolved."""

    id: UUID
    kind: AlertKind
    visit_id: UUID
    person_id: UUID
    provider_id: UUID
    raised_at: datetime
    status: AlertStatus
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    resolved_at: datetime | None


class OnSite(msgspec.Struct, frozen=True):
    """A carer on a visit now: checked in, not yet out."""

    carer_id: UUID
    carer_name: str
    provider_id: UUID
    visit_id: UUID
    person_id: UUID
    person_reference: str
    checked_in_at: datetime
    verified: bool


class LiveBoard(msgspec.Struct, frozen=True):
    """Who is on site now (check-ins of the last 12 hours without a check-out)."""

    as_of: datetime
    on_site: list[OnSite]
