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
