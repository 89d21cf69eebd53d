"""The pay rules of DOMAIN.md as pure functions: attendances, status, payable and banked minutes,
exceptions. Inputs are the visit's plan, its matched events, its approved amendments, the
contract's rules and `now`; the same inputs in any order give the same answer."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, get_args
from uuid import UUID

import msgspec

from schemas.catalog import PayRules
from schemas.reconcile import ExceptionKind

# Every exception, in DOMAIN.md's order (the wire schema's list: one list for the API filter and the rules).
EXCEPTION_ORDER: tuple[str, ...] = get_args(ExceptionKind)
WINDOW_BEFORE = timedelta(minutes=60)
WINDOW_AFTER_END = timedelta(minutes=120)
OVERRUN_AFTER = timedelta(minutes=15)
OVERRUN_AFTER_S = OVERRUN_AFTER.total_seconds()

Kind = Literal["check_in", "check_out"]
Status = Literal["planned", "in_progress", "completed", "missed", "cancelled", "unplanned"]


class Event(msgspec.Struct, frozen=True):
    """An accepted event, as reconciliation needs it."""

    carer_id: UUID
    kind: Kind
    occurred_at: datetime
    method: str = "gps"
    verified: bool = True
    outcomes: tuple[tuple[str, str], ...] = ()


class Amendment(msgspec.Struct, frozen=True):
    """An approved amendment; `decided_at` orders them (the latest decision wins, field by field). The sort
    is stable: decisions of the same microsecond keep the order they are given in (`store.load_amendments`
    gives them by id), so a recomputation gives the same answer."""

    carer_id: UUID
    decided_at: datetime
    check_in_at: datetime | None = None
    check_out_at: datetime | None = None
    extension_min: int | None = None
    planned_min: int | None = None


class Plan(msgspec.Struct, frozen=True):
    """What was planned, and how the visit was cancelled, if it was."""

    planned_start: datetime
    planned_min: int
    carers_required: int = 1
    funding: Literal["package", "bank"] = "package"
    model: Literal["time_and_task", "outcome_based"] = "time_and_task"
    key_outcomes: frozenset[str] = frozenset()
    # Awaiting approval: an unplanned visit whose minutes no commissioner has approved yet.
    unplanned: bool = False
    # Made for a carer's events that matched no planned visit (origin `unplanned`), approved or not.
    made_for_events: bool = False
    # A provider's requested extra visit pays 0 until a commissioner approves it.
    approved: bool = True
    cancelled_by: str | None = None
    short_notice: bool = False
    cancellation_confirmed: bool = True


class Attendance(msgspec.Struct, frozen=True):
    """One carer's presence: chosen check-in and check-out (amendments override), and what it pays."""

    carer_id: UUID
    check_in: datetime | None
    check_out: datetime | None
    actual_seconds: int | None
    payable_min: int
    verified_in_home: bool
    counted: bool
    exceptions: tuple[str, ...]

    @property
    def paired(self) -> bool:
        return self.actual_seconds is not None


class Actual(msgspec.Struct, frozen=True):
    """A visit's reconciled state. `place_payables` is one entry per required carer (invoice lines)."""

    status: Status
    planned_min: int
    attendances: tuple[Attendance, ...]
    place_carers: tuple[UUID | None, ...]
    place_payables: tuple[int, ...]
    banked_min: int
    exceptions: tuple[str, ...]

    @property
    def payable_min(self) -> int:
        return sum(self.place_payables)


def round_minutes(seconds: int, unit_min: int, mode: str) -> int:
    """Round a duration to whole multiples of the unit: nearest (ties up), up or down. Exact integers."""
    unit = unit_min * 60
    if mode == "up":
        units = -(-seconds // unit)
    elif mode == "down":
        units = seconds // unit
    else:
        units = (2 * seconds + unit) // (2 * unit)
    return units * unit_min


def time_and_task_payable(actual_seconds: int | None, planned_min: int, extension_min: int, rules: PayRules) -> int:
    """DOMAIN.md's four cases for one counted attendance (None: no pair, or outside the window)."""
    if actual_seconds is None:
        return 0
    planned_s = planned_min * 60
    rounded = round_minutes(actual_seconds, rules.rounding_unit_min, rules.rounding_mode)
    if (planned_min - rules.grace_min) * 60 <= actual_seconds <= planned_s:
        return planned_min
    if actual_seconds < (planned_min - rules.grace_min) * 60:
        return min(planned_min, max(rounded, rules.minimum_min))
    over = max(planned_min, rounded)
    return min(over, planned_min + extension_min) if rules.cap_at_planned else over


def short_notice_pay(planned_min: int, pct: int) -> int:
    """What each place of a short-notice person cancellation pays."""
    return planned_min * pct // 100


@dataclass(slots=True)
class _Presence:
    carer_id: UUID
    check_in: Event | None = None
    check_out: Event | None = None
    in_at: datetime | None = None
    out_at: datetime | None = None
    in_amended: bool = False
    out_amended: bool = False
    extension_min: int = 0
    last_outcomes: tuple[tuple[str, str], ...] = ()


def _event_order(event: Event) -> tuple[datetime, str, str, bool, tuple[tuple[str, str], ...]]:
    return (event.occurred_at, event.kind, event.method, event.verified, event.outcomes)


def _presences(events: Sequence[Event], amendments: Sequence[Amendment]) -> list[_Presence]:
    """Each carer's chosen times (`amendments` in order of decision: the latest wins), in check-in order."""
    by_carer: dict[UUID, _Presence] = {}
    for event in sorted(events, key=_event_order) if len(events) > 1 else events:
        presence = by_carer.get(event.carer_id)
        if presence is None:
            presence = by_carer[event.carer_id] = _Presence(event.carer_id)
        if event.kind == "check_in":
            if presence.check_in is None:
                presence.check_in = event  # the earliest check-in
        elif event.kind == "check_out":
            presence.check_out = event  # the latest check-out (sorted ascending)
    for presence in by_carer.values():
        if presence.check_in is not None:
            presence.in_at = presence.check_in.occurred_at
        if presence.check_out is not None:
            presence.out_at = presence.check_out.occurred_at
            presence.last_outcomes = presence.check_out.outcomes
    for amendment in amendments:  # in order of decision
        presence = by_carer.setdefault(amendment.carer_id, _Presence(amendment.carer_id))
        if amendment.check_in_at is not None:
            presence.in_at, presence.in_amended = amendment.check_in_at, True
        if amendment.check_out_at is not None:
            presence.out_at, presence.out_amended = amendment.check_out_at, True
        if amendment.extension_min is not None:
            presence.extension_min = amendment.extension_min
    # A carer with neither an event nor an amended time was not there: an amendment that only names it
    # (a move whose events a later move took on, an extension) makes no attendance.
    present = [p for p in by_carer.values() if p.in_at is not None or p.out_at is not None]
    if len(present) < 2:  # the usual visit: one carer, nothing to order
        return present
    # Carers by check-in time (those without one last), the carer id breaking ties.
    return sorted(present, key=lambda p: (p.in_at is None, p.in_at.timestamp() if p.in_at else 0.0, str(p.carer_id)))


def _decided(amendment: Amendment) -> datetime:
    return amendment.decided_at


def _effective_planned_min(plan: Plan, amendments: Sequence[Amendment]) -> int:
    """The planned minutes, as the latest decision that set them says (`amendments` in order of decision)."""
    planned = plan.planned_min
    for amendment in amendments:
        if amendment.planned_min is not None:
            planned = amendment.planned_min
    return planned


_RANK = {name: rank for rank, name in enumerate(EXCEPTION_ORDER)}


def _ordered(exceptions: Iterable[str]) -> tuple[str, ...]:
    """Exceptions once each, in DOMAIN.md's order."""
    unique = set(exceptions)
    if len(unique) < 2:  # most attendances and visits: nothing to order
        return tuple(unique)
    return tuple(sorted(unique, key=_RANK.__getitem__))


def reconcile(
    plan: Plan,
    events: Iterable[Event],
    amendments: Sequence[Amendment],
    rules: PayRules,
    now: datetime,
) -> Actual:
    """The visit's actual state now."""
    events = tuple(events)
    amendments = sorted(amendments, key=_decided) if len(amendments) > 1 else amendments  # the latest wins
    planned_min = _effective_planned_min(plan, amendments)
    presences = _presences(events, amendments)
    places = plan.carers_required

    if plan.cancelled_by is not None:
        return _cancelled(plan, planned_min, presences, rules)

    awaiting_approval = plan.unplanned and planned_min <= 0
    if not events and not presences:
        if plan.unplanned or plan.made_for_events:
            return _void(planned_min, places)
        missed = now >= plan.planned_start + timedelta(minutes=rules.missed_after_min)
        status: Status = "missed" if missed else "planned"
        return Actual(status, planned_min, (), (None,) * places, (0,) * places, 0, ())

    planned_end = plan.planned_start + timedelta(minutes=planned_min)
    window_start, window_end = _window(plan, planned_min)
    counted_ids = {p.carer_id for p in presences[:places]}
    open_presence = False
    paired_counted = 0
    for p in presences:
        if p.in_at is not None:
            if p.out_at is None or p.out_at <= p.in_at:
                open_presence = True
            elif p.carer_id in counted_ids:
                paired_counted += 1
    settled = now >= planned_end + timedelta(hours=rules.settle_h)
    if awaiting_approval:
        status = "unplanned"
    elif settled or (not open_presence and paired_counted >= places):
        status = "completed"
    else:
        status = "in_progress"
    final = status == "completed"
    short_below_s = (planned_min - rules.grace_min) * 60
    overrun_above_s = planned_min * 60 + OVERRUN_AFTER_S
    pays = not awaiting_approval and plan.approved

    attendances: list[Attendance] = []
    for presence in presences:
        counted = presence.carer_id in counted_ids
        in_at, out_at = presence.in_at, presence.out_at
        actual_seconds = _paired_seconds(presence)
        found: list[str] = []
        if final and in_at is None:
            found.append("no_check_in")
        if final and actual_seconds is None and in_at is not None:
            found.append("no_check_out")
        found += _how_recorded(presence, window_start, window_end)
        outside = "outside_window" in found
        # Until an unplanned visit's minutes are approved there is nothing to be short of or over.
        if actual_seconds is not None and not awaiting_approval:
            if actual_seconds < short_below_s:
                found.append("short_visit")
            if actual_seconds > overrun_above_s:
                found.append("overrun")
        if not counted:
            found.append("extra_carer")
        verified = _verified_in_home(presence)
        payable = 0
        if counted and pays:
            payable = time_and_task_payable(
                None if outside else actual_seconds, planned_min, presence.extension_min, rules
            )
        attendances.append(
            Attendance(presence.carer_id, in_at, out_at, actual_seconds, payable, verified, counted, _ordered(found))
        )

    counted_attendances = [a for a in attendances if a.counted]
    visit_exceptions = [e for a in attendances for e in a.exceptions]
    if awaiting_approval:
        visit_exceptions.append("unplanned")
    if final and len(counted_attendances) < places:
        visit_exceptions.append("single_handed")

    banked = 0
    if plan.model == "outcome_based" and plan.funding == "package" and plan.key_outcomes and final and plan.approved:
        unmet = _unmet_key_outcomes(plan.key_outcomes, [p for p in presences if p.carer_id in counted_ids])
        if unmet:
            visit_exceptions.append("outcomes_not_met")
        qualifies = (
            not unmet
            and len(counted_attendances) == places
            and all(a.paired and "outside_window" not in a.exceptions for a in counted_attendances)
        )
        if qualifies:
            # Commissioned time is the floor, not the ceiling (decision 141): a carer who stayed longer keeps
            # what time and task pays past the plan (an approved extension; any overrun when uncapped), so
            # meeting the outcomes never pays less than not meeting them.
            counted_attendances = [
                Attendance(
                    a.carer_id,
                    a.check_in,
                    a.check_out,
                    a.actual_seconds,
                    max(planned_min, a.payable_min),
                    a.verified_in_home,
                    True,
                    a.exceptions,
                )
                for a in counted_attendances
            ]
            attendances = counted_attendances + [a for a in attendances if not a.counted]
            delivered = _delivered_minutes(attendances)
            banked = max(0, planned_min - delivered)
            if banked < rules.min_bankable_min:
                banked = 0

    empty_places = places - len(counted_attendances)
    place_carers = tuple([a.carer_id for a in counted_attendances]) + (None,) * empty_places
    place_payables = tuple([a.payable_min for a in counted_attendances]) + (0,) * empty_places
    return Actual(
        status, planned_min, tuple(attendances), place_carers, place_payables, banked, _ordered(visit_exceptions)
    )


def _window(plan: Plan, planned_min: int) -> tuple[datetime, datetime]:
    """The span an attendance's times must lie in: from 60 minutes before the planned start to 120 after
    the planned end (outside it, `outside_window`)."""
    return plan.planned_start - WINDOW_BEFORE, plan.planned_start + timedelta(minutes=planned_min) + WINDOW_AFTER_END


def _paired_seconds(presence: _Presence) -> int | None:
    """Whole seconds from the chosen check-in to the chosen check-out when they pair (out after in), else None."""
    in_at, out_at = presence.in_at, presence.out_at
    return (
        int((out_at - in_at).total_seconds()) if in_at is not None and out_at is not None and out_at > in_at else None
    )


def _how_recorded(presence: _Presence, window_start: datetime, window_end: datetime) -> list[str]:
    """What the chosen events say of how an attendance was recorded (an amended time has no event), and
    whether its times lie outside the visit's window: `outside_geofence`, `outside_window`, `manual_event`."""
    check_in = None if presence.in_amended else presence.check_in
    check_out = None if presence.out_amended else presence.check_out
    found = []
    if (check_in is not None and check_in.method == "gps" and not check_in.verified) or (
        check_out is not None and check_out.method == "gps" and not check_out.verified
    ):
        found.append("outside_geofence")
    in_at, out_at = presence.in_at, presence.out_at
    if (in_at is not None and not (window_start <= in_at <= window_end)) or (
        out_at is not None and not (window_start <= out_at <= window_end)
    ):
        found.append("outside_window")
    if (check_in is not None and check_in.method == "manual") or (
        check_out is not None and check_out.method == "manual"
    ):
        found.append("manual_event")
    return found


def _verified_in_home(presence: _Presence) -> bool:
    """Both chosen events verified, and neither time replaced by an amendment."""
    return (
        presence.check_in is not None
        and presence.check_out is not None
        and not presence.in_amended
        and not presence.out_amended
        and presence.check_in.verified
        and presence.check_out.verified
    )


def _cancelled(plan: Plan, planned_min: int, presences: Sequence[_Presence], rules: PayRules) -> Actual:
    """A cancelled visit pays as its cancellation says, whoever came. A carer who came all the same (an
    event accepted after the cancellation: a phone that was offline, a carer not told) is shown, not
    dropped (decision 153): the attendance counts for no place, so it is `extra_carer` and pays 0, with
    what its events say of how they were recorded; the visit's exceptions list it for someone to look at."""
    places = plan.carers_required
    pay = 0
    # A requested visit nobody approved was never commissioned: its cancellation pays 0 too.
    if plan.cancelled_by == "person" and plan.short_notice and plan.cancellation_confirmed and plan.approved:
        pay = short_notice_pay(planned_min, rules.short_notice_pay_pct)
    window_start, window_end = _window(plan, planned_min)
    attendances = []
    for p in presences:
        found = [*_how_recorded(p, window_start, window_end), "extra_carer"]
        attendances.append(
            Attendance(
                p.carer_id, p.in_at, p.out_at, _paired_seconds(p), 0, _verified_in_home(p), False, _ordered(found)
            )
        )
    exceptions = _ordered(e for a in attendances for e in a.exceptions)
    return Actual("cancelled", planned_min, tuple(attendances), (None,) * places, (pay,) * places, 0, exceptions)


def _void(planned_min: int, places: int) -> Actual:
    """An unplanned visit left with no event and no amended time: its events were all moved to the visit
    they belonged to (`wrong_visit_selected`), or re-matched there (decision 20). Nobody planned it and
    nobody came, approved or not (decision 152): it is cancelled, paying 0 with no exception, so it is
    final (not pending on invoices, not awaiting an approval), never `missed` (no missed-visit alert or
    count) and takes no further events at ingest. A move back brings its events, and its state, back."""
    return Actual("cancelled", planned_min, (), (None,) * places, (0,) * places, 0, ())


def _unmet_key_outcomes(key_outcomes: frozenset[str], counted: Sequence[_Presence]) -> set[str]:
    """Met: at least one counted carer's check-out says met and none says not_met or refused."""
    unmet = set()
    for outcome in key_outcomes:
        statuses = [status for p in counted for (oid, status) in p.last_outcomes if oid == outcome]
        if "met" not in statuses or "not_met" in statuses or "refused" in statuses:
            unmet.add(outcome)
    return unmet


def _delivered_minutes(attendances: Sequence[Attendance]) -> int:
    """Time at least one carer was present, to the nearest minute, ties up: the union of every paired
    attendance, an extra carer's too (decision 142), but those outside the window, whose times are not
    trusted until amended."""
    intervals = sorted(
        (a.check_in, a.check_out)
        for a in attendances
        if a.check_in and a.check_out and a.paired and "outside_window" not in a.exceptions
    )
    total = timedelta()
    current: tuple[datetime, datetime] | None = None
    for start, end in intervals:
        if current is None or start > current[1]:
            if current is not None:
                total += current[1] - current[0]
            current = (start, end)
        else:
            current = (current[0], max(current[1], end))
    if current is not None:
        total += current[1] - current[0]
    # Exact to the microsecond until here, then whole seconds once (cutting each stretch lost a second each).
    seconds = total // timedelta(seconds=1)
    return (seconds + 30) // 60


def next_check_at(plan: Plan, actual: Actual, rules: PayRules) -> datetime | None:
    """When time alone could change this state (missed, settled); None once it cannot."""
    if actual.status == "planned":
        return plan.planned_start + timedelta(minutes=rules.missed_after_min)
    if actual.status == "in_progress":
        return plan.planned_start + timedelta(minutes=actual.planned_min, hours=rules.settle_h)
    return None


class Move(msgspec.Struct, frozen=True):
    """The latest approved move of a carer's events from a visit: where to, and when it was decided."""

    to_visit: UUID
    decided_at: datetime


Moves = dict[tuple[UUID, UUID], Move]


def moved_to(moves: Moves, visit_id: UUID, carer_id: UUID, since: datetime | None = None) -> UUID:
    """Where a carer's events on a visit count: each move decided after the one that brought them there
    takes them on (a chain: X to Y, then Y to Z), and a move decided before it does not (a coordinator
    who moves events back, or moves events into a visit whose own were moved out earlier, means them to
    stay where the later decision put them). Decisions only move forward, so the walk ends."""
    while (move := moves.get((visit_id, carer_id))) is not None and (since is None or move.decided_at > since):
        visit_id, since = move.to_visit, move.decided_at
    return visit_id


class Interval(msgspec.Struct, frozen=True):
    """A carer's paired attendance on a visit."""

    visit_id: UUID
    carer_id: UUID
    check_in: datetime
    check_out: datetime


def overlapping_visits(intervals: Iterable[Interval]) -> set[UUID]:
    """Visits on which a carer was present while also present on another visit."""
    by_carer: dict[UUID, list[Interval]] = {}
    for interval in intervals:
        by_carer.setdefault(interval.carer_id, []).append(interval)
    found: set[UUID] = set()
    for spans in by_carer.values():
        spans.sort(key=lambda s: (s.check_in, s.check_out, s.visit_id))
        for i, first in enumerate(spans):
            for second in spans[i + 1 :]:
                if second.check_in >= first.check_out:
                    break
                if second.visit_id != first.visit_id:
                    found.update((first.visit_id, second.visit_id))
    return found


def with_overlap(exceptions: Iterable[str], overlapping: bool) -> tuple[str, ...]:
    """A visit's exceptions with `overlapping_visits` set by the separate pass."""
    rest = [e for e in exceptions if e != "overlapping_visits"]
    return _ordered([*rest, "overlapping_visits"] if overlapping else rest)
