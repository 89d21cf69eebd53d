"""Wire contracts of the commissioners' reports: delivery (visits, minutes, cost, punctuality,
verification) and outcomes (ASCOT domains, and a place for the bank figures)."""

from __future__ import annotations

from datetime import date
from uuid import UUID

import msgspec


class DeliveryFigures(msgspec.Struct, frozen=True, kw_only=True):
    """One provider-week (or the totals): see docs/decisions.md 70-79 for what each figure counts."""

    visits_planned: int
    visits_delivered: int
    visits_missed: int
    visits_cancelled: int
    visits_open: int
    planned_min: int
    delivered_min: float
    paid_min: int
    cost_planned_pence: int
    cost_paid_pence: int
    saving_pence: int
    saving_pct: float | None
    invoiced_pence: int
    not_invoiced_pence: int
    visits_with_check_in: int
    visits_punctual: int
    punctuality: float | None
    visits_verified_in_home: int
    verified_in_home_share: float | None


class DeliveryRow(msgspec.Struct, frozen=True, kw_only=True):
    """The figures of one provider for one week (Monday, tenant time) of planned start."""

    provider_id: UUID
    provider_code: str
    week_start: date
    figures: DeliveryFigures


class DeliveryReport(msgspec.Struct, frozen=True, kw_only=True):
    """GET /v1/reports/delivery: rows per provider and week, and the totals over them."""

    date_from: date = msgspec.field(name="from")
    date_to: date = msgspec.field(name="to")
    provider_id: UUID | None
    currency: str
    rows: list[DeliveryRow]
    totals: DeliveryFigures


class DomainOutcomes(msgspec.Struct, frozen=True, kw_only=True):
    """Outcomes of one ASCOT domain on delivered visits: each (visit, outcome) counted once."""

    domain: str
    expected: int
    met: int
    not_met: int
    refused: int
    not_recorded: int
    met_share: float | None


class OutcomesRow(msgspec.Struct, frozen=True, kw_only=True):
    """One provider's outcomes in one week, by domain (domains with no outcome are left out)."""

    provider_id: UUID
    provider_code: str
    week_start: date
    visits_delivered: int
    domains: list[DomainOutcomes]


class BankFigures(msgspec.Struct, frozen=True, kw_only=True):
    """One provider's bank over the range (minutes, value in pence): filled by the banking area (#6)."""

    provider_id: UUID
    accrued_min: int
    redeployed_min: int
    transferred_min: int
    allocated_min: int
    expired_min: int
    shortfall_min: int
    balance_min: int
    value_pence: int
    expiring_28d_min: int
    expiring_28d_value_pence: int


class OutcomesReport(msgspec.Struct, frozen=True, kw_only=True):
    """GET /v1/reports/outcomes: outcomes per provider, week and domain; totals by domain; the bank."""

    date_from: date = msgspec.field(name="from")
    date_to: date = msgspec.field(name="to")
    provider_id: UUID | None
    rows: list[OutcomesRow]
    totals: list[DomainOutcomes]
    bank: list[BankFigures] | None = None
