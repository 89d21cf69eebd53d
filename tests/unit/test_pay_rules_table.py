"""Runs docs/pay-rules.md, the hand-worked table, against the pay rules. The table is the test data."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec
import pytest

from schemas.catalog import PayRules
from services.reconcile import rules

TABLE = Path(__file__).parents[2] / "docs" / "pay-rules.md"
START = datetime(2026, 11, 10, 8, 0, tzinfo=UTC)
EVENT = re.compile(r"^([A-Z])([+-])(\d\d:\d\d(?::\d\d)?)([?mn]?)(?:\[(.*)\])?$")
AMENDMENT = re.compile(r"^!([A-Z]) (in|out|ext|planned)=(\S+)$")
RULE_NAMES = {
    "grace": "grace_min",
    "unit": "rounding_unit_min",
    "mode": "rounding_mode",
    "min": "minimum_min",
    "cap": "cap_at_planned",
    "pct": "short_notice_pay_pct",
    "bankable": "min_bankable_min",
}


def carer(letter: str) -> UUID:
    return UUID(int=ord(letter))


def at(text: str) -> datetime:
    parts = [int(p) for p in text.split(":")]
    return START.replace(hour=parts[0], minute=parts[1], second=parts[2] if len(parts) > 2 else 0)


def parse_plan(text: str) -> rules.Plan:
    head, *flags = text.split()
    minutes, _, places = head.partition("x")
    options = dict(flag.partition("=")[::2] for flag in flags)
    return rules.Plan(
        planned_start=START,
        planned_min=int(minutes),
        carers_required=int(places or 1),
        funding="bank" if "bank" in options else "package",
        model="outcome_based" if "ob" in options else "time_and_task",
        key_outcomes=frozenset([options["key"]]) if "key" in options else frozenset(),
        unplanned="unplanned" in options and "approved" not in options,
        made_for_events="unplanned" in options,
        approved="requested" not in options,
        cancelled_by=options.get("cancel") or None,
        short_notice="short" in options,
        cancellation_confirmed="unconfirmed" not in options,
    )


def parse_rules(text: str) -> PayRules:
    changes: dict[str, Any] = {}
    for item in [] if text == "-" else text.split():
        name, _, value = item.partition("=")
        key = RULE_NAMES[name]
        changes[key] = value if key == "rounding_mode" else (value == "yes") if key == "cap_at_planned" else int(value)
    return msgspec.convert(changes, PayRules)


def parse_events(text: str) -> tuple[list[rules.Event], list[rules.Amendment]]:
    events: list[rules.Event] = []
    amendments: list[rules.Amendment] = []
    for index, item in enumerate(part.strip() for part in ([] if text == "-" else text.split(";"))):
        if match := AMENDMENT.match(item):
            letter, field, value = match.groups()
            decided = START + timedelta(days=1, minutes=index)
            amendments.append(
                rules.Amendment(
                    carer(letter),
                    decided,
                    check_in_at=at(value) if field == "in" else None,
                    check_out_at=at(value) if field == "out" else None,
                    extension_min=int(value) if field == "ext" else None,
                    planned_min=int(value) if field == "planned" else None,
                )
            )
            continue
        match = EVENT.match(item)
        assert match, f"cannot read event {item!r}"
        letter, sign, clock, flag, outcomes = match.groups()
        events.append(
            rules.Event(
                carer_id=carer(letter),
                kind="check_in" if sign == "+" else "check_out",
                occurred_at=at(clock),
                method={"m": "manual", "n": "nfc"}.get(flag, "gps"),
                verified=flag != "?" and flag != "m",
                outcomes=tuple((o.partition("=")[0], o.partition("=")[2]) for o in outcomes.split(","))
                if outcomes
                else (),
            )
        )
    return events, amendments


def load_cases() -> list[list[str]]:
    rows = []
    for line in TABLE.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 9 and cells[0].isdigit():
            rows.append(cells)
    return rows


CASES = load_cases()


def test_the_table_has_at_least_forty_cases() -> None:
    assert len(CASES) >= 40
    assert [int(row[0]) for row in CASES] == list(range(1, len(CASES) + 1))


@pytest.mark.parametrize("row", CASES, ids=[f"case-{row[0]}" for row in CASES])
def test_worked_case(row: list[str]) -> None:
    _, plan_text, rules_text, events_text, now_text, status, payable, banked, exceptions = row
    events, amendments = parse_events(events_text)
    now = START + timedelta(days=2) if now_text == "+2d" else at(now_text)
    actual = rules.reconcile(parse_plan(plan_text), events, amendments, parse_rules(rules_text), now)
    assert actual.status == status
    assert "+".join(str(p) for p in actual.place_payables) == payable
    assert actual.banked_min == int(banked)
    assert (", ".join(actual.exceptions) or "-") == exceptions
