"""Billing rules (pure): the rate band of a visit, money arithmetic, invoice periods and numbers."""

from __future__ import annotations

from calendar import monthrange
from collections.abc import Container
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from services.common.domain import RuleError

Band = Literal["day", "evening", "night", "weekend", "bank_holiday"]
Period = Literal["week", "month"]
LineKind = Literal["visit", "adjustment", "expired_bank_credit", "bank_shortfall"]
DAY_STARTS = time(7, 0)
EVENING_STARTS = time(19, 0)
NIGHT_STARTS = time(22, 0)


def band_of(instant: datetime, zone: ZoneInfo, holidays: Container[date]) -> Band:
    """The band of an instant in tenant time: bank_holiday > weekend > night > evening > day."""
    local = instant.astimezone(zone)
    if local.date() in holidays:
        return "bank_holiday"
    if local.isoweekday() >= 6:
        return "weekend"
    clock = local.time()
    if clock >= NIGHT_STARTS or clock < DAY_STARTS:
        return "night"
    if clock >= EVENING_STARTS:
        return "evening"
    return "day"


def amount_pence(rate_pence_per_hour: int, minutes: int) -> int:
    """round_half_even(rate * minutes / 60) in exact integers (negative minutes round symmetrically)."""
    sign = -1 if minutes < 0 else 1
    quotient, remainder = divmod(rate_pence_per_hour * abs(minutes), 60)
    if remainder * 2 > 60 or (remainder * 2 == 60 and quotient % 2 == 1):
        quotient += 1
    return sign * quotient


@dataclass(frozen=True)
class PeriodBounds:
    """An invoice period: local dates start..end inclusive, and its instants [starts_at, ends_at)."""

    start: date
    end: date
    starts_at: datetime
    ends_at: datetime


def period_bounds(period: Period, start: date, zone: ZoneInfo) -> PeriodBounds:
    """A week from Monday 00:00 tenant time, or a calendar month; another start is 422."""
    if period == "week":
        if start.isoweekday() != 1:
            raise RuleError("not_a_period_start", "a weekly period starts on a Monday", "period_start")
        end = start + timedelta(days=6)
    else:
        if start.day != 1:
            raise RuleError("not_a_period_start", "a monthly period starts on the 1st", "period_start")
        end = start.replace(day=monthrange(start.year, start.month)[1])
    midnight = time(0, 0)
    return PeriodBounds(
        start=start,
        end=end,
        starts_at=datetime.combine(start, midnight, tzinfo=zone),
        ends_at=datetime.combine(end + timedelta(days=1), midnight, tzinfo=zone),
    )


def is_settled(bounds: PeriodBounds, settle_h: int, now: datetime) -> bool:
    """A run is allowed once the period has ended plus settle_h."""
    return now >= bounds.ends_at + timedelta(hours=settle_h)


def invoice_number(provider_code: str, year: int, sequence: int) -> str:
    """`{PROVIDERCODE}-{YYYY}-{NNNNN}`, gapless per provider and year of issue."""
    return f"{provider_code}-{year}-{sequence:05d}"


@dataclass(frozen=True)
class VisitToBill:
    """What billing needs of one final visit."""

    visit_id: object
    person_reference: str
    local_date: date
    band: Band
    rate: int
    planned_min: int
    funding: str
    place_carers: tuple[object | None, ...]
    place_payables: tuple[int, ...]
    check_ins: tuple[datetime | None, ...]
    check_outs: tuple[datetime | None, ...]
    exceptions: tuple[str, ...]
    short_person_cancellation: bool
    cancelled_with_notice: bool


@dataclass(frozen=True)
class Line:
    """An invoice line before it is stored."""

    kind: LineKind
    visit_id: object
    place: int
    carer_id: object | None
    payable_min: int
    rate: int
    amount: int
    counts_in_planned_total: bool
    planned_amount: int


def billable_minutes(payable_min: int, planned_min: int, funding: str, short_person_cancellation: bool) -> int:
    """Minutes the provider is paid for on the invoice: a bank-funded place is paid from the bank up to
    its share (planned minutes), so only what is above the share is invoiced; a short-notice person
    cancellation is invoiced as a normal package line."""
    if funding == "bank" and not short_person_cancellation:
        return max(0, payable_min - planned_min)
    return payable_min


def visit_lines(visit: VisitToBill) -> list[Line]:
    """One line per required carer: counted carers by check-in time, then empty places."""
    lines = []
    for place, (carer, payable) in enumerate(zip(visit.place_carers, visit.place_payables, strict=True)):
        billable = billable_minutes(payable, visit.planned_min, visit.funding, visit.short_person_cancellation)
        in_planned_total = visit.funding == "package" and not visit.cancelled_with_notice
        lines.append(
            Line(
                kind="visit",
                visit_id=visit.visit_id,
                place=place,
                carer_id=carer,
                payable_min=payable,
                rate=visit.rate,
                amount=amount_pence(visit.rate, billable),
                counts_in_planned_total=in_planned_total,
                planned_amount=amount_pence(visit.rate, visit.planned_min) if in_planned_total else 0,
            )
        )
    return lines


def adjustment_amount(
    rate: int, payable_min: int, planned_min: int, funding: str, short_person_cancellation: bool, invoiced: int
) -> int:
    """round_half_even(original rate * new billable minutes / 60) - everything already invoiced for the place."""
    billable = billable_minutes(payable_min, planned_min, funding, short_person_cancellation)
    return amount_pence(rate, billable) - invoiced


def invoice_totals(lines: list[Line]) -> tuple[int, int, int]:
    """(total, planned total, saving): the planned total is what paying the schedule would have cost
    over the package-funded visit lines (visits cancelled with enough notice left out); the saving is
    that minus what those same lines charge."""
    total = sum(line.amount for line in lines)
    counted = [line for line in lines if line.kind == "visit" and line.counts_in_planned_total]
    planned_total = sum(line.planned_amount for line in counted)
    return total, planned_total, planned_total - sum(line.amount for line in counted)
