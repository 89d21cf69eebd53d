"""Billing rules: bands in tenant time with English bank holidays, half-even pence, periods."""

from __future__ import annotations

from datetime import UTC, date, datetime
from fractions import Fraction
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.billing import rules
from services.common.domain import RuleError
from services.identity.rules import holiday_calendar

LONDON = ZoneInfo("Europe/London")
ENGLAND = holiday_calendar("GB-ENG")


def local(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=LONDON)


@pytest.mark.parametrize(
    ("when", "band"),
    [
        ("2026-11-10T06:59", "night"),
        ("2026-11-10T07:00", "day"),
        ("2026-11-10T18:59", "day"),
        ("2026-11-10T19:00", "evening"),
        ("2026-11-10T21:59", "evening"),
        ("2026-11-10T22:00", "night"),
        ("2026-11-14T08:00", "weekend"),  # Saturday
        ("2026-11-15T23:00", "weekend"),  # Sunday night: weekend wins over night
        ("2026-12-25T08:00", "bank_holiday"),  # Christmas Day, a Friday
        ("2026-12-28T08:00", "bank_holiday"),  # Boxing Day falls on Saturday: substitute Monday
        ("2026-12-26T08:00", "bank_holiday"),  # the Saturday itself is still Boxing Day
        ("2026-04-06T20:00", "bank_holiday"),  # Easter Monday beats evening
        ("2026-03-17T08:00", "day"),  # St Patrick's Day is not an English bank holiday
    ],
)
def test_bands_in_tenant_time(when: str, band: str) -> None:
    assert rules.band_of(local(when), LONDON, ENGLAND) == band


def test_band_follows_local_time_across_the_clock_change() -> None:
    # 06:30 UTC is 07:30 BST (day) in summer, 06:30 GMT (night) in winter
    assert rules.band_of(datetime(2026, 10, 23, 6, 30, tzinfo=UTC), LONDON, ENGLAND) == "day"
    assert rules.band_of(datetime(2026, 10, 26, 6, 30, tzinfo=UTC), LONDON, ENGLAND) == "night"


@pytest.mark.parametrize(
    ("rate", "minutes", "pence"),
    [
        (2430, 30, 1215),
        (2430, 25, 1012),
        (2430, 1, 40),
        (2430, 0, 0),
        (90, 1, 2),
        (30, 1, 0),
        (150, 1, 2),
        (2430, -25, -1012),
    ],
)
def test_amounts_round_half_to_even(rate: int, minutes: int, pence: int) -> None:
    assert rules.amount_pence(rate, minutes) == pence


@given(st.integers(0, 100_000), st.integers(-24 * 60, 24 * 60))
def test_amount_is_the_exact_value_rounded_half_even(rate: int, minutes: int) -> None:
    exact = Fraction(rate * minutes, 60)
    assert rules.amount_pence(rate, minutes) == round(exact)  # Python's round on Fraction is half-even


def test_periods() -> None:
    week = rules.period_bounds("week", date(2026, 10, 19), LONDON)
    assert (week.start, week.end) == (date(2026, 10, 19), date(2026, 10, 25))
    assert week.starts_at == datetime(2026, 10, 18, 23, 0, tzinfo=UTC)  # Monday 00:00 BST
    assert week.ends_at == datetime(2026, 10, 26, 0, 0, tzinfo=UTC)  # Monday 00:00 GMT: a 169-hour week
    month = rules.period_bounds("month", date(2026, 2, 1), LONDON)
    assert month.end == date(2026, 2, 28)
    for period, start in (("week", date(2026, 10, 20)), ("month", date(2026, 2, 2))):
        with pytest.raises(RuleError):
            rules.period_bounds(period, start, LONDON)  # type: ignore[arg-type]
    assert not rules.is_settled(week, 24, datetime(2026, 10, 26, 23, 59, tzinfo=UTC))
    assert rules.is_settled(week, 24, datetime(2026, 10, 27, 0, 0, tzinfo=UTC))


def test_invoice_numbers() -> None:
    assert rules.invoice_number("ACME", 2026, 1) == "ACME-2026-00001"
    assert rules.invoice_number("ACME", 2027, 12345) == "ACME-2027-12345"
