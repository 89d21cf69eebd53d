"""Report rules without I/O: ranges, weeks, outcome statuses and how visits add up."""

from __future__ import annotations

from datetime import UTC, date, datetime
from uuid import uuid4
from zoneinfo import ZoneInfo

import pytest

from services.common.domain import RuleError
from services.reports import rules

LONDON = ZoneInfo("Europe/London")
PROVIDER = uuid4()


def test_a_range_is_local_days_both_included() -> None:
    span = rules.report_range(date(2026, 3, 23), date(2026, 3, 29), LONDON)
    assert span.starts_at == datetime(2026, 3, 23, tzinfo=LONDON)
    # the clocks go forward on the 29th: the range still ends at local midnight
    assert span.ends_at.astimezone(UTC) == datetime(2026, 3, 29, 23, 0, tzinfo=UTC)
    with pytest.raises(RuleError) as backwards:
        rules.report_range(date(2026, 3, 2), date(2026, 3, 1), LONDON)
    assert backwards.value.code == "invalid_range"
    rules.report_range(date(2024, 1, 1), date(2026, 12, 31), LONDON)  # three years is fine
    with pytest.raises(RuleError):
        rules.report_range(date(2020, 1, 1), date(2026, 1, 1), LONDON)


def test_weeks_start_on_monday_in_tenant_time() -> None:
    # Sunday 23:30 UTC in summer is Monday 00:30 in London
    assert rules.week_of(datetime(2026, 6, 14, 23, 30, tzinfo=UTC), LONDON) == date(2026, 6, 15)
    assert rules.week_of(datetime(2026, 6, 14, 22, 30, tzinfo=UTC), LONDON) == date(2026, 6, 8)


def test_an_outcome_is_met_only_when_nobody_says_otherwise() -> None:
    assert rules.outcome_status(["met", "met"]) == "met"
    assert rules.outcome_status(["met", "not_met"]) == "not_met"
    assert rules.outcome_status(["not_met", "refused"]) == "refused"
    assert rules.outcome_status([]) == "not_recorded"


def visit(status: str, attendances: list[dict[str, object]], **overrides: object) -> rules.VisitFacts:
    fields: dict[str, object] = {
        "provider_id": PROVIDER,
        "week": date(2026, 11, 9),
        "planned_start": datetime(2026, 11, 9, 8, 0, tzinfo=UTC),
        "status": status,
        "planned_min": 30,
        "carers_required": 1,
        "cancelled_with_notice": False,
        "actual": {"attendances": attendances, "verified_in_home": bool(attendances)},
        "payable_min": 30 if attendances else 0,
        "late_after_min": 15,
        "costs": rules.Costs(1215, 1215 if attendances else 0, 1215 if attendances else 0, True),
    }
    fields.update(overrides)
    return rules.VisitFacts(**fields)  # type: ignore[arg-type]


def paired(check_in: str, seconds: int) -> dict[str, object]:
    return {"check_in": check_in, "check_out": "x", "actual_seconds": seconds, "counted": True}


def test_visits_add_up_per_provider_and_week() -> None:
    visits = [
        visit("completed", [paired("2026-11-09T08:15:00+00:00", 1800)]),  # exactly on the limit: on time
        visit("completed", [paired("2026-11-09T08:16:00+00:00", 1500)]),  # late
        visit("completed", [{"check_in": "2026-11-09T08:00:00+00:00", "actual_seconds": None, "counted": True}]),
        visit("missed", []),
        visit("cancelled", [], cancelled_with_notice=True, costs=rules.Costs(0, 0, 0, True)),
        visit("planned", [], costs=None),
    ]
    groups, totals = rules.delivery(visits)
    assert list(groups) == [(PROVIDER, date(2026, 11, 9))]
    assert (totals.visits_planned, totals.visits_delivered, totals.visits_missed, totals.visits_cancelled) == (
        6,
        2,
        1,
        1,
    )
    assert totals.visits_open == 2  # the unpaired one and the one not yet final
    assert totals.planned_min == 5 * 30  # the one cancelled with notice is not planned time
    assert totals.delivered_min == (1800 + 1500) / 60
    assert totals.paid_min == 30 + 30 + 30  # final visits only
    assert (totals.visits_with_check_in, totals.visits_punctual, totals.punctuality) == (3, 2, 0.6667)
    assert totals.verified_in_home_share == 1.0
    assert totals.cost_planned_pence == 4 * 1215
    assert totals.saving_pence == 4 * 1215 - 3 * 1215
