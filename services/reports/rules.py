"""Report rules (pure): the date range, weeks of tenant time, and how one visit's reconciled state
and invoice lines add up to the delivery and outcome figures (docs/decisions.md 70-79)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from schemas.reports import DeliveryFigures, DomainOutcomes
from services.billing import rules as billing_rules
from services.common.domain import RuleError

MAX_RANGE_DAYS = 3 * 366
FINAL = frozenset({"completed", "missed", "cancelled"})
DOMAINS = (
    "personal_care",
    "food_and_drink",
    "safety",
    "accommodation",
    "occupation",
    "social_participation",
    "control",
    "dignity",
)


@dataclass(frozen=True)
class Range:
    """Local dates first..last inclusive and their instants [starts_at, ends_at)."""

    first: date
    last: date
    starts_at: datetime
    ends_at: datetime


def report_range(first: date, last: date, zone: ZoneInfo) -> Range:
    """`to` before `from`, or more than three years, is 422."""
    if last < first:
        raise RuleError("invalid_range", "`to` is before `from`", "to")
    if (last - first).days + 1 > MAX_RANGE_DAYS:
        raise RuleError("range_too_long", f"a report covers at most {MAX_RANGE_DAYS} days", "to")
    return Range(
        first,
        last,
        datetime.combine(first, time(), tzinfo=zone),
        datetime.combine(last + timedelta(days=1), time(), tzinfo=zone),
    )


def week_of(instant: datetime, zone: ZoneInfo) -> date:
    """The Monday (tenant time) of the week an instant falls in."""
    local = instant.astimezone(zone).date()
    return local - timedelta(days=local.weekday())


def _instant(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


@dataclass(frozen=True)
class Costs:
    """A visit's cost as invoices count it: planned (package lines of visits not cancelled with
    notice), paid (visit and adjustment lines), and the paid part of the lines in the planned total."""

    planned: int
    paid: int
    paid_in_planned: int
    invoiced: bool


def invoiced_costs(lines: Sequence[Any], cancelled_with_notice: bool) -> Costs:
    """From a visit's invoice lines (kind, funding, rate, planned minutes, amount): as on the invoices."""

    def in_planned(line: Any) -> bool:
        return line["funding"] == "package" and not cancelled_with_notice

    planned = sum(
        billing_rules.amount_pence(line["rate_pence_per_hour"], line["planned_min"])
        for line in lines
        if line["kind"] == "visit" and in_planned(line)
    )
    paid_lines = [line for line in lines if line["kind"] in ("visit", "adjustment")]
    paid = sum(int(line["amount_pence"]) for line in paid_lines)
    paid_in_planned = sum(int(line["amount_pence"]) for line in paid_lines if in_planned(line))
    return Costs(planned, paid, paid_in_planned, True)


def uninvoiced_costs(lines: Sequence[billing_rules.Line]) -> Costs:
    """From the lines the next invoice run would write for a final visit (billing's own rules)."""
    planned = sum(line.planned_amount for line in lines if line.counts_in_planned_total)
    paid = sum(line.amount for line in lines)
    paid_in_planned = sum(line.amount for line in lines if line.counts_in_planned_total)
    return Costs(planned, paid, paid_in_planned, False)


@dataclass(frozen=True)
class VisitFacts:
    """What the reports need of one visit: plan, reconciled state, costs and outcomes."""

    provider_id: UUID
    week: date
    planned_start: datetime
    status: str
    planned_min: int
    carers_required: int
    cancelled_with_notice: bool
    actual: dict[str, Any] | None
    payable_min: int
    late_after_min: int
    costs: Costs | None
    outcome_domains: tuple[str, ...] = ()
    outcome_statuses: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def counted(self) -> list[dict[str, Any]]:
        return [a for a in (self.actual or {}).get("attendances", []) if a.get("counted")]

    @property
    def delivered(self) -> bool:
        """Completed with at least one counted carer's paired attendance (check-out after check-in)."""
        return self.status == "completed" and any(a.get("actual_seconds") is not None for a in self.counted())

    def first_check_in(self) -> datetime | None:
        ins = [_instant(a.get("check_in")) for a in (self.actual or {}).get("attendances", [])]
        present = [i for i in ins if i is not None]
        return min(present) if present else None

    @property
    def delivered_seconds(self) -> int:
        return sum(int(a["actual_seconds"]) for a in self.counted() if a.get("actual_seconds") is not None)

    @property
    def verified_in_home(self) -> bool:
        return bool((self.actual or {}).get("verified_in_home"))


@dataclass
class _Tally:
    visits_planned: int = 0
    visits_delivered: int = 0
    visits_missed: int = 0
    visits_cancelled: int = 0
    planned_min: int = 0
    delivered_seconds: int = 0
    paid_min: int = 0
    cost_planned: int = 0
    cost_paid: int = 0
    paid_in_planned: int = 0
    invoiced: int = 0
    not_invoiced: int = 0
    with_check_in: int = 0
    punctual: int = 0
    verified: int = 0

    def add(self, visit: VisitFacts) -> None:
        self.visits_planned += 1
        if visit.delivered:
            self.visits_delivered += 1
            self.delivered_seconds += visit.delivered_seconds
            self.verified += visit.verified_in_home
        self.visits_missed += visit.status == "missed"
        self.visits_cancelled += visit.status == "cancelled"
        if not visit.cancelled_with_notice:
            self.planned_min += visit.planned_min * visit.carers_required
        if visit.status in FINAL:
            self.paid_min += visit.payable_min
        if visit.costs is not None:
            self.cost_planned += visit.costs.planned
            self.cost_paid += visit.costs.paid
            self.paid_in_planned += visit.costs.paid_in_planned
            if visit.costs.invoiced:
                self.invoiced += visit.costs.paid
            else:
                self.not_invoiced += visit.costs.paid
        first_in = visit.first_check_in()
        if first_in is not None:
            self.with_check_in += 1
            self.punctual += first_in <= visit.planned_start + timedelta(minutes=visit.late_after_min)

    def figures(self) -> DeliveryFigures:
        saving = self.cost_planned - self.paid_in_planned
        return DeliveryFigures(
            visits_planned=self.visits_planned,
            visits_delivered=self.visits_delivered,
            visits_missed=self.visits_missed,
            visits_cancelled=self.visits_cancelled,
            visits_open=self.visits_planned - self.visits_delivered - self.visits_missed - self.visits_cancelled,
            planned_min=self.planned_min,
            delivered_min=round(self.delivered_seconds / 60, 2),
            paid_min=self.paid_min,
            cost_planned_pence=self.cost_planned,
            cost_paid_pence=self.cost_paid,
            saving_pence=saving,
            saving_pct=share(saving * 100, self.cost_planned),
            invoiced_pence=self.invoiced,
            not_invoiced_pence=self.not_invoiced,
            visits_with_check_in=self.with_check_in,
            visits_punctual=self.punctual,
            punctuality=share(self.punctual, self.with_check_in),
            visits_verified_in_home=self.verified,
            verified_in_home_share=share(self.verified, self.visits_delivered),
        )


def share(part: int, whole: int) -> float | None:
    """part / whole to four decimals; None when there is nothing to divide by."""
    return round(part / whole, 4) if whole else None


def delivery(visits: Iterable[VisitFacts]) -> tuple[dict[tuple[UUID, date], DeliveryFigures], DeliveryFigures]:
    """Figures per (provider, week) and over all the visits."""
    groups: dict[tuple[UUID, date], _Tally] = defaultdict(_Tally)
    total = _Tally()
    for visit in visits:
        groups[(visit.provider_id, visit.week)].add(visit)
        total.add(visit)
    return {key: tally.figures() for key, tally in groups.items()}, total.figures()


def outcome_status(statuses: Sequence[str]) -> str:
    """One outcome of one visit, from what its counted carers' latest check-outs recorded: met when at
    least one says met and none says not_met or refused (as reconciliation decides key outcomes)."""
    if not statuses:
        return "not_recorded"
    if "refused" in statuses:
        return "refused"
    if "not_met" in statuses:
        return "not_met"
    return "met"


@dataclass
class _DomainTally:
    counts: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    delivered: int = 0

    def add(self, visit: VisitFacts) -> None:
        if not visit.delivered:
            return
        self.delivered += 1
        for domain, (_, statuses) in zip(visit.outcome_domains, visit.outcome_statuses, strict=True):
            counts = self.counts[domain]
            counts["expected"] += 1
            counts[outcome_status(statuses)] += 1

    def domains(self) -> list[DomainOutcomes]:
        return [
            DomainOutcomes(
                domain=domain,
                expected=counts["expected"],
                met=counts["met"],
                not_met=counts["not_met"],
                refused=counts["refused"],
                not_recorded=counts["not_recorded"],
                met_share=share(counts["met"], counts["expected"]),
            )
            for domain in DOMAINS
            if (counts := self.counts.get(domain))
        ]


def outcomes(
    visits: Iterable[VisitFacts],
) -> tuple[dict[tuple[UUID, date], tuple[int, list[DomainOutcomes]]], list[DomainOutcomes]]:
    """(delivered visits, domains) per (provider, week), and the domains over all the visits."""
    groups: dict[tuple[UUID, date], _DomainTally] = defaultdict(_DomainTally)
    total = _DomainTally()
    for visit in visits:
        groups[(visit.provider_id, visit.week)].add(visit)
        total.add(visit)
    return {key: (tally.delivered, tally.domains()) for key, tally in groups.items()}, total.domains()


def latest_check_out_outcomes(events: Iterable[Any], counted: set[UUID]) -> dict[str, list[str]]:
    """Outcome id → statuses recorded on each counted carer's latest check-out (reconciliation's
    choice of check-out: the last by occurred_at)."""
    latest: dict[UUID, Any] = {}
    for event in events:
        if event["kind"] != "check_out" or event["carer_id"] not in counted:
            continue
        current = latest.get(event["carer_id"])
        if current is None or _event_key(event) > _event_key(current):
            latest[event["carer_id"]] = event
    recorded: dict[str, list[str]] = defaultdict(list)
    for event in latest.values():
        for outcome in event["outcomes"]:
            recorded[outcome["outcome_id"]].append(outcome["status"])
    return recorded


def _event_key(event: Any) -> tuple[Any, ...]:
    outcomes = tuple((o["outcome_id"], o["status"]) for o in event["outcomes"])
    return (event["occurred_at"], event["kind"], event["method"], event["verified"], outcomes)
