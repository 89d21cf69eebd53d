"""Planning rules: local times across clock changes, generation windows, moves, notice."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from uuid import UUID
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.planning import CarePlanCreate, Outcome, ScheduleSlot
from services.common.domain import RuleError
from services.planning import rules

LONDON = ZoneInfo("Europe/London")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        (date(2026, 3, 28), utc("2026-03-28T08:00")),  # Saturday before spring forward: GMT
        (date(2026, 3, 29), utc("2026-03-29T07:00")),  # the clock-change Sunday itself: BST
        (date(2026, 3, 30), utc("2026-03-30T07:00")),
        (date(2026, 10, 24), utc("2026-10-24T07:00")),  # BST
        (date(2026, 10, 25), utc("2026-10-25T08:00")),  # fall back Sunday: GMT again by 08:00
        (date(2026, 10, 26), utc("2026-10-26T08:00")),
    ],
)
def test_eight_oclock_is_eight_oclock_local_on_both_sides_of_each_clock_change(day: date, expected: datetime) -> None:
    instant = rules.local_instant(day, "08:00", LONDON)
    assert instant == expected
    assert instant.astimezone(LONDON).strftime("%H:%M") == "08:00"


def test_a_skipped_time_moves_forward_by_the_gap() -> None:
    instant = rules.local_instant(date(2026, 3, 29), "01:30", LONDON)
    assert instant == utc("2026-03-29T01:30")
    assert instant.astimezone(LONDON).strftime("%H:%M") == "02:30"


def test_a_repeated_time_takes_its_first_occurrence() -> None:
    instant = rules.local_instant(date(2026, 10, 25), "01:30", LONDON)
    assert instant == utc("2026-10-25T00:30")  # 01:30 BST, not 01:30 GMT an hour later


def test_expanding_a_week_across_the_autumn_change() -> None:
    schedule = [ScheduleSlot(weekday=7, start="08:00", minutes=30), ScheduleSlot(weekday=1, start="21:00", minutes=15)]
    visits = rules.expand_schedule(schedule, LONDON, date(2026, 10, 19), date(2026, 11, 1))
    assert [(v.local_date.isoformat(), v.slot) for v in visits] == [
        ("2026-10-19", 1),
        ("2026-10-25", 0),
        ("2026-10-26", 1),
        ("2026-11-01", 0),
    ]
    assert [v.planned_start.astimezone(LONDON).strftime("%H:%M") for v in visits] == [
        "21:00",
        "08:00",
        "21:00",
        "08:00",
    ]
    assert visits[1].planned_start - visits[0].planned_start == timedelta(days=5, hours=12)  # 11 h + 1 h gained


@given(st.dates(min_value=date(2020, 1, 1), max_value=date(2035, 12, 31)), st.integers(0, 23), st.integers(0, 59))
def test_local_instant_keeps_the_local_date(day: date, hour: int, minute: int) -> None:
    instant = rules.local_instant(day, f"{hour:02d}:{minute:02d}", LONDON)
    local = instant.astimezone(LONDON)
    assert local.date() == day
    assert (local.hour, local.minute) >= (hour, minute)  # only a skipped time moves, and only forward


def test_generation_window_respects_plan_contract_existing_and_horizon() -> None:
    window = rules.generation_window(
        plan_from=date(2026, 11, 1),
        plan_to=None,
        contract_from=date(2026, 1, 1),
        contract_to=None,
        generated_until=None,
        today=date(2026, 11, 22),
        horizon_days=28,
    )
    assert window == (date(2026, 11, 1), date(2026, 12, 20))
    again = rules.generation_window(
        plan_from=date(2026, 11, 1),
        plan_to=None,
        contract_from=date(2026, 1, 1),
        contract_to=date(2026, 12, 1),
        generated_until=date(2026, 11, 25),
        today=date(2026, 11, 22),
        horizon_days=28,
    )
    assert again == (date(2026, 11, 26), date(2026, 12, 1))
    done = rules.generation_window(
        plan_from=date(2026, 11, 1),
        plan_to=date(2026, 11, 10),
        contract_from=date(2026, 1, 1),
        contract_to=None,
        generated_until=date(2026, 11, 10),
        today=date(2026, 11, 22),
        horizon_days=28,
    )
    assert done is None


def _plan(**changes: object) -> CarePlanCreate:
    base: dict[str, object] = {
        "person_id": UUID(int=1),
        "contract_id": UUID(int=2),
        "weekly_min": 60,
        "outcomes": [Outcome(id="o1", domain="food_and_drink", text="eats", key=True)],
        "schedule": [ScheduleSlot(weekday=1, start="08:00", minutes=30, carers_required=2, outcome_ids=["o1"])],
        "valid_from": date(2026, 11, 2),
    }
    return CarePlanCreate(**{**base, **changes})  # type: ignore[arg-type]


def test_care_plan_checks() -> None:
    rules.check_care_plan(_plan())
    cases: list[tuple[dict[str, object], str]] = [
        ({"weekly_min": 59}, "weekly_min"),
        (
            {"outcomes": [Outcome(id="o1", domain="safety", text="a"), Outcome(id="o1", domain="dignity", text="b")]},
            "outcomes[1].id",
        ),
        (
            {"schedule": [ScheduleSlot(weekday=1, start="08:00", minutes=30, outcome_ids=["o9"])]},
            "schedule[0].outcome_ids[0]",
        ),
        ({"valid_to": date(2026, 11, 1)}, "valid_to"),
    ]
    for changes, field in cases:
        with pytest.raises(RuleError) as raised:
            rules.check_care_plan(_plan(**changes))
        assert raised.value.field == field


def test_moves() -> None:
    start = utc("2026-11-23T08:00")
    now = utc("2026-11-22T12:00")
    rules.check_move(role="provider", planned_start=start, new_start=utc("2026-11-23T18:00"), zone=LONDON, now=now)
    with pytest.raises(RuleError):
        rules.check_move(role="provider", planned_start=start, new_start=utc("2026-11-24T08:00"), zone=LONDON, now=now)
    rules.check_move(role="commissioner", planned_start=start, new_start=utc("2026-11-24T08:00"), zone=LONDON, now=now)
    with pytest.raises(RuleError):
        rules.check_move(
            role="commissioner", planned_start=start, new_start=utc("2026-11-22T11:00"), zone=LONDON, now=now
        )


def test_changeable_only_before_start_and_events() -> None:
    rules.check_changeable(started=False, has_events=False, cancelled=False)
    flags = ("started", "has_events", "cancelled", "invoiced")
    for flag in flags:
        with pytest.raises(RuleError) as raised:
            rules.check_changeable(**{name: name == flag for name in flags})
        assert raised.value.status == 409


def test_exactly_the_notice_is_not_short() -> None:
    start = utc("2026-11-23T08:00")
    assert not rules.is_short_notice(start, start - timedelta(hours=24), 24)
    assert rules.is_short_notice(start, start - timedelta(hours=24) + timedelta(seconds=1), 24)
    assert rules.cancellation_needs_confirmation(by="person", short_notice=True, recorded_by_role="provider")
    assert not rules.cancellation_needs_confirmation(by="person", short_notice=True, recorded_by_role="commissioner")
    assert not rules.cancellation_needs_confirmation(by="provider", short_notice=True, recorded_by_role="provider")
