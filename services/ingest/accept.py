"""Accepting visit events: check, de-duplicate, match, verify and commit a group in one transaction.

Both endpoints end here: a batch from one phone is one group; single events from many phones
are gathered into groups by `GroupCommitter`. Nothing is answered 2xx before the transaction
that stored it has committed.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import NamedTuple
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg
import msgspec
import structlog

from infra.db import acquire
from schemas.common import FieldProblem
from schemas.identity import Tenant
from schemas.ingest import EventAnswer, VisitEventIn
from schemas.planning import Visit
from services.catalog import rules as catalog_rules
from services.catalog import store as catalog_store
from services.common.domain import RuleError
from services.common.ids import new_id
from services.identity import store as identity_store
from services.ingest import rules, store
from services.planning import store as planning_store
from services.reconcile import store as reconcile_store


class Poster(NamedTuple):
    """The carer behind an event, from its credential."""

    carer_id: UUID
    provider_id: UUID


class Submission(NamedTuple):
    """One event as posted, with who posted it."""

    poster: Poster
    event: VisitEventIn


Outcome = EventAnswer | rules.EventProblem
log = structlog.get_logger("carebank.ingest")


def _not_found(what: str, field: str) -> rules.EventProblem:
    return rules.EventProblem(404, "not_found", [FieldProblem(field, "not_found", f"no such {what}")])


def _conflict(event_id: UUID) -> rules.EventProblem:
    message = f"event {event_id} was already accepted with different content"
    return rules.EventProblem(409, "conflict", [FieldProblem("event_id", "conflict", message)])


class _Group:
    """The working state of one group of submissions of one tenant."""

    def __init__(self, conn: asyncpg.Connection, tenant: Tenant, submissions: list[Submission]) -> None:
        self.conn = conn
        self.tenant = tenant
        self.tenant_id = tenant.id
        self.subs = submissions
        self.hashes: list[str] = []
        self.results: list[Outcome | None] = [None] * len(submissions)
        self.visits: dict[UUID, planning_store.VisitOwnership] = {}
        self.allowed_outcomes: dict[tuple[UUID, UUID], set[str]] = {}

    def pending(self) -> list[int]:
        return [i for i, result in enumerate(self.results) if result is None]

    async def check_outcomes(self, event: VisitEventIn, person_id: UUID, contract_id: UUID, extra: list[str]) -> None:
        """The event's outcome ids must be the plan's (looked up once per person and contract)."""
        if event.outcomes:
            rules.check_outcomes(event, await self._outcomes_for(person_id, contract_id, extra))

    async def _outcomes_for(self, person_id: UUID, contract_id: UUID, extra: list[str]) -> set[str]:
        key = (person_id, contract_id)
        if key not in self.allowed_outcomes:
            self.allowed_outcomes[key] = await planning_store.plan_outcome_ids(
                self.conn, self.tenant_id, person_id, contract_id
            )
        return self.allowed_outcomes[key] | set(extra)


# A group PostgreSQL picked as a deadlock's victim was rolled back whole, so it is run again.
DEADLOCK_TRIES = 3


async def accept_committed(pool: asyncpg.Pool, tenant_id: UUID, submissions: list[Submission]) -> list[Outcome]:
    """`accept` in a transaction of its own, committed when this returns; run again from the start
    (up to DEADLOCK_TRIES times) when PostgreSQL breaks a deadlock by rolling it back."""
    for tries_left in range(DEADLOCK_TRIES - 1, -1, -1):
        try:
            async with acquire(pool) as conn, conn.transaction():
                return await accept(conn, tenant_id, submissions, datetime.now(tz=UTC))
        except asyncpg.DeadlockDetectedError:
            if not tries_left:
                raise
            log.warning("ingest_deadlock_retried", tenant_id=str(tenant_id), size=len(submissions))
    raise AssertionError("unreachable")


async def accept(
    conn: asyncpg.Connection, tenant_id: UUID, submissions: list[Submission], now: datetime
) -> list[Outcome]:
    """Decide and store a group; one answer per submission, in order. Call inside a transaction."""
    tenant = await identity_store.get_tenant(conn, tenant_id)
    assert tenant is not None
    group = _Group(conn, tenant, submissions)
    for i, sub in enumerate(submissions):
        try:
            rules.check_event(sub.event, now, tenant.max_event_age_days)
        except rules.EventProblem as refused:
            group.results[i] = refused
    # Hashed only once checked: an instant far out of range cannot be converted to UTC.
    group.hashes = [
        rules.content_hash(sub.event, sub.poster.carer_id) if group.results[i] is None else ""
        for i, sub in enumerate(submissions)
    ]
    twins = _set_aside_twins(group)
    await _answer_known(group)
    await _check_reach(group)
    matched = await _match(group)
    await _store(group, matched)
    for i, first in twins.items():
        group.results[i] = _twin_answer(group, i, first)
    return [result for result in group.results if result is not None]


def _set_aside_twins(group: _Group) -> dict[int, int]:
    """A repeated event id within the group is answered like its first occurrence (or conflicts)."""
    first: dict[UUID, int] = {}
    twins: dict[int, int] = {}
    for i in range(len(group.subs)):
        event_id = group.subs[i].event.event_id
        if event_id in first:
            twins[i] = first[event_id]
            group.results[i] = _conflict(event_id)  # placeholder until the first is decided
        else:
            first[event_id] = i
    return twins


def _twin_answer(group: _Group, i: int, first: int) -> Outcome:
    answer = group.results[first]
    if group.hashes[i] != group.hashes[first]:
        return _conflict(group.subs[i].event.event_id)
    if isinstance(answer, EventAnswer) and answer.status in ("accepted", "duplicate"):
        return msgspec.structs.replace(answer, status="duplicate")
    assert answer is not None
    return answer


async def _answer_known(group: _Group) -> None:
    """Events already stored: the same content is a duplicate, other content a conflict."""
    pending = group.pending()
    known = await store.existing_events(group.conn, group.tenant_id, [group.subs[i].event.event_id for i in pending])
    for i in pending:
        row = known.get(group.subs[i].event.event_id)
        if row is not None:
            group.results[i] = _known_answer(group, i, row)


def _known_answer(group: _Group, i: int, row: asyncpg.Record) -> Outcome:
    event_id = group.subs[i].event.event_id
    if row["content_hash"] != group.hashes[i]:
        return _conflict(event_id)
    return EventAnswer(event_id=event_id, status="duplicate", visit_id=row["visit_id"], verified=row["verified"])


async def _check_reach(group: _Group) -> None:
    """Visits of another provider or tenant are 404, like missing ones; so are people not with the provider."""
    pending = group.pending()
    # Each visit once: a phone's batch names most of its visits twice (check-in and check-out).
    wanted = list(dict.fromkeys(v for v in (group.subs[i].event.visit_id for i in pending) if v is not None))
    group.visits.update(await planning_store.visit_ownerships(group.conn, group.tenant_id, wanted))
    with_provider: dict[tuple[UUID, UUID], bool] = {}
    for i in pending:
        sub = group.subs[i]
        event = sub.event
        if event.visit_id is not None:
            visit = group.visits.get(event.visit_id)
            if visit is None or visit.provider_id != sub.poster.provider_id:
                group.results[i] = _not_found("visit", "visit_id")
            elif event.person_id is not None and event.person_id != visit.person_id:
                group.results[i] = rules.EventProblem(
                    422,
                    "person_mismatch",
                    [FieldProblem("person_id", "person_mismatch", "person_id is not the visit's person")],
                )
            continue
        assert event.person_id is not None
        key = (event.person_id, sub.poster.provider_id)
        if key not in with_provider:
            with_provider[key] = await planning_store.person_is_with_provider(group.conn, group.tenant_id, *key)
        if not with_provider[key]:
            group.results[i] = _not_found("person", "person_id")


class _Matched(NamedTuple):
    visit_id: UUID
    person_id: UUID


async def _match(group: _Group) -> dict[int, _Matched]:
    """Give every pending event its visit (creating unplanned visits) and check its outcomes."""
    pending = group.pending()
    # Every person touched (not only person-only events'), so a check-in with a visit id and a
    # person-only check-out of the same person in two groups see each other.
    people = [
        group.visits[e.visit_id].person_id if e.visit_id is not None else e.person_id
        for e in (group.subs[i].event for i in pending)
    ]
    await store.lock_people(group.conn, group.tenant_id, [p for p in people if p])
    check_ins: dict[tuple[UUID, UUID], list[rules.CheckIn]] = defaultdict(list)
    unplanned: dict[tuple[UUID, UUID], list[rules.Candidate]] = defaultdict(list)
    matched: dict[int, _Matched] = {}
    # Earlier events first, and a check-in before a check-out at the same instant, so a batch
    # from an offline phone pairs within itself.
    for i in sorted(pending, key=lambda i: (group.subs[i].event.occurred_at, group.subs[i].event.kind != "check_in")):
        sub = group.subs[i]
        event = sub.event
        if event.visit_id is not None and not event.outcomes:  # the usual case: reach checked, nothing to decide
            visit = group.visits[event.visit_id]
        else:
            try:
                visit = await _visit_for(group, sub, check_ins, unplanned)
            except rules.EventProblem as refused:
                group.results[i] = refused
                continue
        if event.kind == "check_in":
            check_ins[(visit.person_id, sub.poster.carer_id)].append(rules.CheckIn(visit.id, event.occurred_at))
        matched[i] = _Matched(visit.id, visit.person_id)
    return matched


async def _visit_for(
    group: _Group,
    sub: Submission,
    check_ins: dict[tuple[UUID, UUID], list[rules.CheckIn]],
    unplanned: dict[tuple[UUID, UUID], list[rules.Candidate]],
) -> planning_store.VisitOwnership:
    event, carer, provider = sub.event, sub.poster.carer_id, sub.poster.provider_id
    if event.visit_id is not None:
        visit = group.visits[event.visit_id]
        await group.check_outcomes(event, visit.person_id, visit.contract_id, visit.outcome_ids)
        return visit
    person = event.person_id
    assert person is not None
    visit_id: UUID | None = None
    if event.kind == "check_out":
        candidates = list(check_ins[(person, carer)])
        stored = await store.latest_check_in(group.conn, group.tenant_id, person, carer, event.occurred_at)
        if stored is not None:
            candidates.append(rules.CheckIn(*stored))
        visit_id = rules.match_check_out(event.occurred_at, candidates)
    if visit_id is None:
        rows = await planning_store.candidate_visits(
            group.conn,
            group.tenant_id,
            person,
            provider,
            event.occurred_at - rules.MATCH_AFTER,
            event.occurred_at + rules.MATCH_BEFORE,
        )
        nearby = [rules.Candidate(v, start) for v, start in rows] + unplanned[(person, provider)]
        visit_id = rules.match_by_time(event.occurred_at, nearby)
    if visit_id is not None:
        if visit_id not in group.visits:
            group.visits.update(await planning_store.visit_ownerships(group.conn, group.tenant_id, [visit_id]))
        visit = group.visits[visit_id]
        await group.check_outcomes(event, person, visit.contract_id, visit.outcome_ids)
        return visit
    local_day = event.occurred_at.astimezone(ZoneInfo(group.tenant.zone)).date()
    contract_id = await planning_store.contract_for_unplanned(group.conn, group.tenant_id, person, provider, local_day)
    if contract_id is None:
        raise _not_found("person", "person_id")
    await group.check_outcomes(event, person, contract_id, [])
    created = await planning_store.insert_visit(
        group.conn, group.tenant_id, _unplanned_visit(person, provider, contract_id, event)
    )
    owned = group.visits[created.id] = planning_store.VisitOwnership.of(created)
    unplanned[(person, provider)].append(rules.Candidate(created.id, created.planned_start))
    return owned


def _unplanned_visit(person_id: UUID, provider_id: UUID, contract_id: UUID, event: VisitEventIn) -> Visit:
    """A visit nobody planned: priced from its first check-in, 0 planned minutes until approved."""
    return Visit(
        id=new_id(),
        person_id=person_id,
        provider_id=provider_id,
        contract_id=contract_id,
        plan_id=None,
        status="unplanned",
        planned_start=event.occurred_at,
        planned_min=0,
        carers_required=1,
        carer_ids=[],
        outcome_ids=[],
        funding="package",
        origin="unplanned",
        approval="pending",
        band_start=event.occurred_at,
        cancellation=None,
        actual=None,
        exceptions=[],
        created_at=event.occurred_at,
    )


async def _store(group: _Group, matched: dict[int, _Matched]) -> None:
    """Insert the matched events in one statement, then re-match earlier person-only check-outs."""
    people = await catalog_store.get_people(group.conn, group.tenant_id, list({m.person_id for m in matched.values()}))
    homes = {
        pid: rules.Home(p.location.lat, p.location.lon, p.geofence_m, frozenset(p.tags), frozenset(p.phones))
        for pid, p in people.items()
    }
    rows: list[store.EventRow] = []
    verified: dict[int, bool] = {}
    for i, match in matched.items():
        sub = group.subs[i]
        event = sub.event
        phone = _e164(event.phone, group.tenant.holiday_region)
        verified[i] = rules.is_verified(event, homes[match.person_id], phone)
        location = event.location
        rows.append(
            store.EventRow(
                event_id=event.event_id,
                carer_id=sub.poster.carer_id,
                provider_id=sub.poster.provider_id,
                person_id=match.person_id,
                posted_visit_id=event.visit_id,
                visit_id=match.visit_id,
                kind=event.kind,
                occurred_at=event.occurred_at,
                method=event.method,
                lat=location.lat if location else None,
                lon=location.lon if location else None,
                accuracy_m=location.accuracy_m if location else None,
                tag=event.tag,
                phone=phone or event.phone,
                device_id=event.device_id,
                outcomes=msgspec.json.encode(event.outcomes).decode() if event.outcomes else "[]",
                note=event.note,
                verified=verified[i],
                content_hash=group.hashes[i],
            )
        )
    inserted = await store.insert_events(group.conn, group.tenant_id, rows)
    lost = [i for i in matched if group.subs[i].event.event_id not in inserted]
    if lost:  # a concurrent request stored the same event id first
        known = await store.existing_events(group.conn, group.tenant_id, [group.subs[i].event.event_id for i in lost])
        for i in lost:
            group.results[i] = _known_answer(group, i, known[group.subs[i].event.event_id])
    for i, match in matched.items():
        if i not in lost:
            event = group.subs[i].event
            group.results[i] = EventAnswer(
                event_id=event.event_id, status="accepted", visit_id=match.visit_id, verified=verified[i]
            )
    left = await _rematch(group, matched, lost)
    touched = [match.visit_id for i, match in matched.items() if i not in lost]
    # The queue rows before the visit rows: the drainer claims queue rows, then locks their visits, so
    # taking them in the other order could close a cycle with it (an unplanned visit's start moved,
    # then its queue row awaited while the drainer, holding that row, waited for the visit).
    await reconcile_store.enqueue(group.conn, group.tenant_id, touched + left)
    unplanned = [v for v in touched if group.visits[v].origin == "unplanned"]
    if unplanned:
        await planning_store.start_unplanned_at_first_check_in(group.conn, group.tenant_id, unplanned)


async def _rematch(group: _Group, matched: dict[int, _Matched], lost: list[int]) -> list[UUID]:
    """A check-in that arrives after person-only check-outs it precedes takes them over; returns the
    visits they left."""
    check_ins = sorted(
        (group.subs[i].event.occurred_at, i)
        for i in matched
        if i not in lost and group.subs[i].event.kind == "check_in"
    )
    if not check_ins:
        return []
    candidates = await store.with_person_only_check_outs(
        group.conn, group.tenant_id, list({matched[i].person_id for _, i in check_ins})
    )
    left: list[UUID] = []
    for occurred_at, i in check_ins:
        match = matched[i]
        if (match.person_id, group.subs[i].poster.carer_id) not in candidates:
            continue
        left += await store.rematch_check_outs(
            group.conn, group.tenant_id, match.person_id, group.subs[i].poster.carer_id, occurred_at, match.visit_id
        )
    return left


def _e164(phone: str | None, holiday_region: str) -> str | None:
    if phone is None:
        return None
    try:
        return catalog_rules.normalise_phone(phone, holiday_region.partition("-")[0], "phone")
    except RuleError:
        return None
