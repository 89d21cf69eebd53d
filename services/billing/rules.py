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
