"""The demo's county and phones: deterministic for a seed, and shaped as the field reports describe."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta

from services.demo.county import County, build_county
from services.demo.phones import PlannedVisit, play

MONDAY = date(2026, 10, 5)


def visits_of(seed: int) -> tuple[County, list[PlannedVisit]]:
    county = build_county(seed, MONDAY, 2, people=120, carers=30)
    visits = []
    for index, person in enumerate(county.people):
        for slot in person.slots:
            for week in range(2):
                day = MONDAY + timedelta(days=7 * week + slot.weekday - 1)
                hours, minutes = map(int, slot.start.split(":"))
                visits.append(
                    PlannedVisit(
                        id=f"v-{index}-{slot.call}-{day}",
                        person=index,
                        planned_start=datetime(day.year, day.month, day.day, hours, minutes, tzinfo=UTC),
                        planned_min=slot.minutes,
                        carers_required=slot.carers_required,
                        outcome_ids=slot.outcome_ids,
                        call=slot.call,
                        provider=person.provider,
                    )
                )
    return county, visits


def test_the_same_seed_plays_the_same_month() -> None:
    county_a, visits_a = visits_of(11)
    county_b, visits_b = visits_of(11)
    assert county_a == county_b
    played_a, played_b = play(county_a, visits_a, 11), play(county_b, visits_b, 11)
    assert played_a == played_b
    other = play(county_a, visits_a, 12)
    assert other.syncs != played_a.syncs


def test_what_the_phones_do() -> None:
    county, visits = visits_of(5)
    played = play(county, visits, 5)
    # about 1.5% missed, a few forgotten check-outs, every event sent once (retries aside)
    assert 0.005 < played.missed / len(visits) < 0.03
    assert 0 < len(played.fixes) < 0.05 * len(visits)
    events = [e for sync in played.syncs for e in sync.events]
    assert len({e["event_id"] for e in events}) == len(events) == played.events
    kinds = Counter((e["visit_id"], e["kind"]) for e in events)
    fixed = {f.visit_id for f in played.fixes}
    for (visit_id, kind), _ in kinds.items():
        if kind == "check_out":
            assert (visit_id, "check_in") in kinds
    assert all((f.visit_id, "check_in") in kinds for f in played.fixes)
    assert fixed
    methods = Counter(e["method"] for e in events)
    assert methods["gps"] > methods["nfc"] > 0
    assert any(s.retried for s in played.syncs)
    assert any(s.one_by_one for s in played.syncs)
    # each upload is one carer's phone
    for sync in played.syncs:
        assert {e["device_id"] for e in sync.events} == {
            f"{county.providers[sync.provider].code.lower()}-phone-{sync.carer + 1}"
        }
