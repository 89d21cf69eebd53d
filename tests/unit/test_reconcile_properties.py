"""Properties of the pay rules: the cap holds, pay never falls as time on site grows, and the
answer does not depend on the order events arrive in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import get_args
from uuid import UUID, uuid4

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from schemas.catalog import PayRules
from schemas.reconcile import ExceptionKind
from services.reconcile import rules

START = datetime(2026, 11, 10, 8, 0, tzinfo=UTC)

pay_rules = st.builds(
    PayRules,
    grace_min=st.integers(0, 15),
    rounding_unit_min=st.sampled_from([1, 5, 15, 30]),
    rounding_mode=st.sampled_from(["nearest", "up", "down"]),
    minimum_min=st.integers(0, 60),
    cap_at_planned=st.booleans(),
    min_bankable_min=st.integers(0, 10),
)


@given(pay_rules, st.integers(5, 120), st.integers(0, 60), st.integers(0, 4 * 3600), st.integers(0, 3600))
def test_capped_pay_is_bounded_and_never_falls_as_time_grows(
    rules_: PayRules, planned: int, extension: int, seconds: int, more: int
) -> None:
    now = rules.time_and_task_payable(seconds, planned, extension, rules_)
    later = rules.time_and_task_payable(seconds + more, planned, extension, rules_)
    assert later >= now
    assert now >= 0
    if rules_.cap_at_planned:
        assert later <= planned + extension


@given(st.integers(0, 10**6), st.sampled_from([1, 5, 15, 30, 60]), st.sampled_from(["nearest", "up", "down"]))
def test_rounding_lands_on_the_unit_and_within_one_unit(seconds: int, unit: int, mode: str) -> None:
    rounded = rules.round_minutes(seconds, unit, mode)
    assert rounded % unit == 0
    assert abs(rounded * 60 - seconds) <= unit * 60
    if mode == "up":
        assert rounded * 60 >= seconds
    if mode == "down":
        assert rounded * 60 <= seconds


carers = st.sampled_from([UUID(int=1), UUID(int=2), UUID(int=3)])
events = st.lists(
    st.builds(
        rules.Event,
        carer_id=carers,
        kind=st.sampled_from(["check_in", "check_out"]),
        occurred_at=st.integers(-90, 240).map(lambda m: START + timedelta(minutes=m)),
        method=st.sampled_from(["gps", "nfc", "manual"]),
        verified=st.booleans(),
        outcomes=st.lists(st.tuples(st.just("wash"), st.sampled_from(["met", "not_met", "refused"])), max_size=1).map(
            tuple
        ),
    ),
    max_size=8,
)
plans = st.builds(
    rules.Plan,
    planned_start=st.just(START),
    planned_min=st.integers(10, 90),
    carers_required=st.integers(1, 2),
    model=st.sampled_from(["time_and_task", "outcome_based"]),
    key_outcomes=st.sampled_from([frozenset(), frozenset({"wash"})]),
)


@given(plans, events, pay_rules, st.integers(0, 3 * 24 * 60), st.randoms())
def test_the_order_of_arrival_does_not_matter(
    plan: rules.Plan, evs: list[rules.Event], rules_: PayRules, minutes: int, rnd: object
) -> None:
    now = START + timedelta(minutes=minutes)
    first = rules.reconcile(plan, evs, [], rules_, now)
    shuffled = list(evs)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert rules.reconcile(plan, shuffled, [], rules_, now) == first
    assert rules.reconcile(plan, evs, [], rules_, now) == first  # and recomputing changes nothing
    assert first.payable_min >= 0
    assert len(first.place_payables) == plan.carers_required
    if rules_.cap_at_planned and plan.model == "time_and_task":
        assert all(p <= first.planned_min for p in first.place_payables)
    if first.banked_min:
        assert first.banked_min <= first.planned_min
        assert first.banked_min >= rules_.min_bankable_min


extensions = st.lists(
    st.builds(
        rules.Amendment,
        carer_id=carers,
        decided_at=st.integers(0, 60).map(lambda m: START + timedelta(days=1, minutes=m)),
        extension_min=st.integers(1, 60),
    ),
    max_size=2,
)


# Each carer's stay: a check-in, and a check-out that usually records the key outcome.
stays = st.lists(
    st.tuples(carers, st.integers(-30, 60), st.integers(1, 120), st.sampled_from(["met", "met", "not_met"])),
    min_size=1,
    max_size=3,
).map(
    lambda spans: [
        event
        for carer, start, length, status in spans
        for event in (
            rules.Event(carer, "check_in", START + timedelta(minutes=start)),
            rules.Event(carer, "check_out", START + timedelta(minutes=start + length), outcomes=(("wash", status),)),
        )
    ]
)


@given(plans, stays, extensions, pay_rules, st.integers(0, 3 * 24 * 60))
def test_meeting_the_outcomes_never_pays_less_than_time_and_task(
    plan: rules.Plan, evs: list[rules.Event], granted: list[rules.Amendment], rules_: PayRules, minutes: int
) -> None:
    """Decision 141: on an outcome-based contract each place pays at least what the same visit pays under
    time and task (an approved extension, an uncapped overrun), and at least planned when it banks."""
    now = START + timedelta(minutes=minutes)
    outcome_based = msgspec.structs.replace(plan, model="outcome_based", key_outcomes=frozenset({"wash"}))
    time_and_task = msgspec.structs.replace(outcome_based, model="time_and_task")
    ob = rules.reconcile(outcome_based, evs, granted, rules_, now)
    tt = rules.reconcile(time_and_task, evs, granted, rules_, now)
    assert all(o >= t for o, t in zip(ob.place_payables, tt.place_payables, strict=True))
    if ob.banked_min:
        assert all(p >= ob.planned_min for p in ob.place_payables)


def test_a_met_visit_keeps_its_approved_extension() -> None:
    """Found in review: a met outcome-based visit that ran 20 minutes over with those 20 minutes approved
    paid planned (30), while the same visit with the outcome not met paid 50."""
    carer = UUID(int=1)
    plan = rules.Plan(START, 30, model="outcome_based", key_outcomes=frozenset({"wash"}))
    extension = rules.Amendment(carer, START + timedelta(days=1), extension_min=20)
    now = START + timedelta(days=2)
    for status in ("met", "not_met"):
        came = [
            rules.Event(carer, "check_in", START),
            rules.Event(carer, "check_out", START + timedelta(minutes=50), outcomes=(("wash", status),)),
        ]
        assert rules.reconcile(plan, came, [extension], PayRules(), now).place_payables == (50,)


def test_overlaps_are_one_carer_in_two_visits_at_once() -> None:
    a, b, c = UUID(int=10), UUID(int=11), UUID(int=12)
    carer, other = UUID(int=1), UUID(int=2)
    t = START
    spans = [
        rules.Interval(a, carer, t, t + timedelta(minutes=30)),
        rules.Interval(b, carer, t + timedelta(minutes=29), t + timedelta(minutes=60)),
        rules.Interval(c, carer, t + timedelta(minutes=60), t + timedelta(minutes=90)),  # touching is not overlapping
        rules.Interval(c, other, t, t + timedelta(minutes=120)),  # another carer at the same time is fine
    ]
    assert rules.overlapping_visits(spans) == {a, b}
    assert rules.with_overlap(("short_visit",), True) == ("short_visit", "overlapping_visits")
    assert rules.with_overlap(("overlapping_visits", "manual_event"), False) == ("manual_event",)


def test_delivered_time_is_rounded_once_over_the_whole_union() -> None:
    """A review finding: each stretch of presence was cut to whole seconds before they were added, so two
    carers' separate stretches of 600.6 s and 869.6 s (1470.2 s, 24.5 minutes and a bit: 25) made 1469 s
    (24), and the visit banked 6 minutes instead of 5."""
    a, b = UUID(int=1), UUID(int=2)
    met = (("wash", "met"),)
    events = [
        rules.Event(a, "check_in", START),
        rules.Event(a, "check_out", START + timedelta(seconds=600, milliseconds=600), outcomes=met),
        rules.Event(b, "check_in", START + timedelta(minutes=15)),
        rules.Event(b, "check_out", START + timedelta(minutes=15, seconds=869, milliseconds=600), outcomes=met),
    ]
    plan = rules.Plan(START, 30, carers_required=2, model="outcome_based", key_outcomes=frozenset({"wash"}))
    actual = rules.reconcile(plan, events, [], PayRules(), START + timedelta(days=2))
    assert actual.place_payables == (30, 30)
    assert actual.banked_min == 5


def test_the_exceptions_filter_knows_every_exception_in_order() -> None:
    """The rules take their order from the API's list; both are DOMAIN.md's list, in its order."""
    assert get_args(ExceptionKind) == rules.EXCEPTION_ORDER
    assert rules.EXCEPTION_ORDER == (
        "no_check_in",
        "no_check_out",
        "outside_geofence",
        "outside_window",
        "manual_event",
        "short_visit",
        "overrun",
        "outcomes_not_met",
        "single_handed",
        "extra_carer",
        "unplanned",
        "overlapping_visits",
    )


def test_an_amendment_that_names_a_carer_but_no_time_is_not_an_attendance() -> None:
    """A move's amendment counts on the visit moved to only through the events it moves: once a later
    move takes them elsewhere (or the carer had none), the visit has no event at all and is missed,
    as DOMAIN.md says, not completed with an empty attendance."""
    carer = UUID(int=7)
    plan = rules.Plan(planned_start=START, planned_min=30, carers_required=1)
    now = START + timedelta(days=2)
    move = rules.Amendment(carer_id=carer, decided_at=START + timedelta(hours=1))
    actual = rules.reconcile(plan, [], [move], PayRules(), now)
    assert (actual.status, actual.attendances, actual.exceptions) == ("missed", (), ())
    # one carer of two came; the other is only named by an extension: single-handed, not `no_check_in`
    pair = rules.Plan(planned_start=START, planned_min=30, carers_required=2)
    came = [
        rules.Event(UUID(int=1), "check_in", START),
        rules.Event(UUID(int=1), "check_out", START + timedelta(minutes=30)),
    ]
    extension = rules.Amendment(carer_id=carer, decided_at=START, extension_min=10)
    actual = rules.reconcile(pair, came, [extension], PayRules(), now)
    assert [a.carer_id for a in actual.attendances] == [UUID(int=1)]
    assert actual.exceptions == ("single_handed",)


@given(pay_rules, st.integers(0, 120), st.booleans(), st.integers(-3 * 24 * 60, 30 * 24 * 60))
def test_an_unplanned_visit_left_without_events_is_never_missed(
    rules_: PayRules, planned: int, approved: bool, minutes_after_start: int
) -> None:
    """Decision 152: an unplanned visit whose events were all moved away (a move's amendment naming the
    carer comes with it) is cancelled and pays 0 at any time, approved or not; the clock never comes back
    for it, so it is never marked missed nor alerted on. A planned visit in the same place is missed."""
    carer = UUID(int=7)
    move = rules.Amendment(carer_id=carer, decided_at=START + timedelta(hours=1))
    now = START + timedelta(minutes=minutes_after_start)
    plan = rules.Plan(
        planned_start=START, planned_min=planned if approved else 0, unplanned=not approved, made_for_events=True
    )
    actual = rules.reconcile(plan, [], [move], rules_, now)
    assert (actual.status, actual.payable_min, actual.banked_min, actual.exceptions) == ("cancelled", 0, 0, ())
    assert actual.attendances == ()
    assert rules.next_check_at(plan, actual, rules_) is None
    planned_visit = rules.Plan(planned_start=START, planned_min=max(planned, 1))
    if now >= START + timedelta(minutes=rules_.missed_after_min):
        assert rules.reconcile(planned_visit, [], [move], rules_, now).status == "missed"


@given(
    pay_rules,
    st.sampled_from(["person", "provider", "commissioner"]),
    st.booleans(),
    st.lists(st.tuples(st.integers(1, 3), st.booleans(), st.integers(-180, 300)), max_size=8),
)
def test_a_cancelled_visit_pays_as_its_cancellation_says_whoever_came(
    rules_: PayRules, by: str, short: bool, sent: list[tuple[int, bool, int]]
) -> None:
    """Decision 153: events accepted after a cancellation change nothing a cancelled visit pays or banks;
    each carer who came is shown, counted for no place, as `extra_carer`."""
    plan = rules.Plan(planned_start=START, planned_min=30, carers_required=2, cancelled_by=by, short_notice=short)
    events = [
        rules.Event(UUID(int=c), "check_in" if is_in else "check_out", START + timedelta(minutes=m))
        for c, is_in, m in sent
    ]
    now = START + timedelta(days=2)
    nobody = rules.reconcile(plan, [], [], rules_, now)
    actual = rules.reconcile(plan, events, [], rules_, now)
    assert (actual.status, actual.place_payables, actual.place_carers, actual.banked_min) == (
        "cancelled",
        nobody.place_payables,
        (None, None),
        0,
    )
    assert {a.carer_id for a in actual.attendances} == {UUID(int=c) for c, _, _ in sent}
    assert all(not a.counted and a.payable_min == 0 and "extra_carer" in a.exceptions for a in actual.attendances)
    assert ("extra_carer" in actual.exceptions) == bool(sent)


def test_moves_are_followed_in_the_order_they_were_decided() -> None:
    """`rules.moved_to`: a chain takes events to its end, moving back returns them, and a move decided
    before the one that brought events to a visit does not take them on."""
    carer, other = uuid4(), uuid4()
    x, y, z = uuid4(), uuid4(), uuid4()
    t1, t2 = datetime(2026, 11, 10, 9, tzinfo=UTC), datetime(2026, 11, 10, 10, tzinfo=UTC)
    chain = {(x, carer): rules.Move(y, t1), (y, carer): rules.Move(z, t2)}
    assert [rules.moved_to(chain, v, carer) for v in (x, y, z)] == [z, z, z]
    assert rules.moved_to(chain, x, other) == x  # another carer's events stay put
    back = {(x, carer): rules.Move(y, t1), (y, carer): rules.Move(x, t2)}
    assert [rules.moved_to(back, v, carer) for v in (x, y)] == [x, x]
    # Y's own events went to Z first; X's events moved into Y later stay on Y
    into_emptied = {(y, carer): rules.Move(z, t1), (x, carer): rules.Move(y, t2)}
    assert [rules.moved_to(into_emptied, v, carer) for v in (x, y)] == [y, z]
    # a move's other fields apply from its own decision on
    assert rules.moved_to(chain, y, carer, since=t1) == z
    assert rules.moved_to(into_emptied, y, carer, since=t2) == y
