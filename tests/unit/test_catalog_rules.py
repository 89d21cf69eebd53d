"""Catalog rules without I/O: phones, tags and contract consistency."""

from __future__ import annotations

from datetime import date
from uuid import UUID

import pytest

from schemas.catalog import ContractCreate, PayRules, Rates
from services.catalog import rules
from services.common.domain import RuleError

RATES = Rates(day=2430, evening=2700, night=3000, weekend=2900, bank_holiday=4860)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("01772 254868", "+441772254868"),
        ("+44 (0)1772 254868", "+441772254868"),
        ("07911 123456", "+447911123456"),
        ("+1 212 555 0123", "+12125550123"),
    ],
)
def test_phones_become_e164(raw: str, expected: str) -> None:
    assert rules.normalise_phones([raw], "GB-ENG") == [expected]


def test_equal_phones_in_two_spellings_are_kept_once() -> None:
    assert rules.normalise_phones(["01772 254868", "+441772254868"], "GB-ENG") == ["+441772254868"]


@pytest.mark.parametrize("raw", ["12", "not a number", "0177"])
def test_bad_phones_name_their_position(raw: str) -> None:
    with pytest.raises(RuleError) as raised:
        rules.normalise_phones(["01772 254868", raw], "GB-ENG")
    assert raised.value.field == "phones[1]"


def test_tags_are_trimmed_and_deduplicated() -> None:
    assert rules.normalise_tags([" a", "a ", "b"]) == ["a", "b"]
    with pytest.raises(RuleError):
        rules.normalise_tags(["ok", " "])


def _contract(**changes: object) -> ContractCreate:
    base: dict[str, object] = {
        "provider_id": UUID(int=1),
        "model": "time_and_task",
        "period": "week",
        "rates": RATES,
        "valid_from": date(2026, 1, 5),
    }
    return ContractCreate(**{**base, **changes})  # type: ignore[arg-type]


def test_contract_dates_and_alert_thresholds_must_be_in_order() -> None:
    rules.check_contract(_contract(valid_to=date(2026, 1, 5)))
    with pytest.raises(RuleError) as early:
        rules.check_contract(_contract(valid_to=date(2026, 1, 4)))
    assert early.value.field == "valid_to"
    with pytest.raises(RuleError) as thresholds:
        rules.check_contract(_contract(pay_rules=PayRules(late_after_min=60, missed_after_min=60)))
    assert thresholds.value.field == "pay_rules.missed_after_min"
