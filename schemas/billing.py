"""Wire contracts of billing: invoice runs, invoices and their lines, payments, disputes."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal
from uuid import UUID

import msgspec

LineKind = Literal["visit", "adjustment", "expired_bank_credit", "bank_shortfall"]
InvoiceStatus = Literal["issued", "disputed", "paid"]


class InvoiceRunIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Run (or fetch) the invoice of one contract for one period."""

    contract_id: UUID
    period_start: date


class InvoiceLine(msgspec.Struct, frozen=True):
    """One line: a visit place, an adjustment of an earlier line, or a bank credit or debit."""

    line_id: UUID
    kind: LineKind
    adjusts_line_id: UUID | None
    visit_id: UUID | None
    person_reference: str | None
    carer_id: UUID | None
    date: date | None
    band: str | None
    planned_min: int | None
    check_in: datetime | None
    check_out: datetime | None
    payable_min: int
    rate_pence_per_hour: int
    amount_pence: int
    funding: str | None
    exceptions: list[str]


class Invoice(msgspec.Struct, frozen=True):
    """An issued invoice; its status is derived from payments and disputes."""

    id: UUID
    number: str
    contract_id: UUID
    provider_id: UUID
    period_start: date
    period_end: date
    status: InvoiceStatus
    currency: str
    issued_at: datetime
    lines: list[InvoiceLine]
    total_pence: int
    planned_total_pence: int
    saving_pence: int
    pending: int
    paid_pence: int


class InvoiceSummary(msgspec.Struct, frozen=True):
    """An invoice in a list, without its lines."""

    id: UUID
    number: str
    contract_id: UUID
    provider_id: UUID
    period_start: date
    period_end: date
    status: InvoiceStatus
    issued_at: datetime
    total_pence: int
    paid_pence: int


class PaymentIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A payment a commissioner made against an invoice."""

    paid_on: date
    amount_pence: Annotated[int, msgspec.Meta(gt=0, le=10**12)]
    reference: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class Payment(msgspec.Struct, frozen=True):
    id: UUID
    invoice_id: UUID
    paid_on: date
    amount_pence: int
    reference: str
    recorded_at: datetime


class DisputedLine(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    line_id: UUID
    note: Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]


class DisputeIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A provider disputes lines of its invoice, each with a note."""

    lines: Annotated[list[DisputedLine], msgspec.Meta(min_length=1, max_length=500)]
