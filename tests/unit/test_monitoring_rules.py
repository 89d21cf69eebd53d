"""Alert thresholds (pure): when each alert is due, when its condition holds, the 12-hour rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

from services.monitoring import rules

START = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


def facts(**changes: object) -> rules.VisitFacts:
    base: dict[str, object] = {
        "planned_start": START,
        "planned_min": 30,
        "carers_required": 2,
        "created_at": START - timedelta(days=3),
        "cancelled": False,
        "carers_checked_in": 0,
        "carers_on_site": 0,
        "late_after_min": 15,
        "missed_after_min": 60,
    }
    return rules.VisitFacts(**{**base, **changes})  # type: ignore[arg-type]


def test_thresholds_come_from_the_contract_and_the_planned_end() -> None:
    assert rules.thresholds(facts()) == {
        "late": START + timedelta(minutes=15),
        "missed": START + timedelta(minutes=60),
        "no_check_out": START + timedelta(minutes=90),
    }


def test_due_alerts_follow_the_clock_and_the_facts() -> None:
    assert rules.alerts_due(facts(), START + timedelta(minutes=14)) == []
    assert [k for k, _ in rules.alerts_due(facts(), START + timedelta(minutes=15))] == ["late"]
    assert [k for k, _ in rules.alerts_due(facts(), START + timedelta(minutes=60))] == ["late", "missed"]
    one_came = facts(carers_checked_in=1, carers_on_site=1)
    assert [k for k, _ in rules.alerts_due(one_came, START + timedelta(minutes=90))] == ["late", "no_check_out"]
    assert rules.alerts_due(facts(cancelled=True), START + timedelta(hours=2)) == []


def test_no_alert_for_a_threshold_long_before_the_visit_existed() -> None:
    back_dated = facts(created_at=START + timedelta(hours=12, minutes=16))
    assert [k for k, _ in rules.alerts_due(back_dated, START + timedelta(hours=13))] == ["missed"]  # late is too old
    much_later = facts(created_at=START + timedelta(days=2))
    assert rules.alerts_due(much_later, START + timedelta(days=2)) == []


def test_timers_are_set_from_the_plan_alone_at_the_same_instants() -> None:
    f = facts(planned_min=45, late_after_min=10, missed_after_min=30)
    assert rules.thresholds_of(START, 45, 10, 30) == rules.thresholds(f)
    assert rules.thresholds_of(START, 45, 10, 30)["no_check_out"] == START + timedelta(minutes=105)


def test_carers_are_counted_as_the_stored_facts_count_them() -> None:
    """`carers_counted` (for visits moves take events to or from) counts as `store._FACTS` does."""
    a, b, c = UUID(int=1), UUID(int=2), UUID(int=3)

    def at(minutes: int) -> datetime:
        return START + timedelta(minutes=minutes)

    events = [
        rules.CarerEvent(a, "check_in", at(0)),  # still on site
        rules.CarerEvent(b, "check_in", at(1)),
        rules.CarerEvent(b, "check_out", at(30)),  # left
        rules.CarerEvent(c, "check_out", at(30)),  # a check-out alone is no check-in
    ]
    assert rules.carers_counted(events, []) == (2, 1)
    amended_out = [rules.CarerTimes(a, None, at(31))]  # a's check-out, fixed by an amendment
    assert rules.carers_counted(events, amended_out) == (2, 0)
    amended_in = [rules.CarerTimes(c, at(2), None)]  # c's check-in, fixed by an amendment
    assert rules.carers_counted(events, amended_in) == (3, 1)
    assert rules.carers_counted([], []) == (0, 0)
