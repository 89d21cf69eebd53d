"""The carers' phones (pure, deterministic for a seed): what happened at each visit, as the field
reports describe it, turned into the events phones send and the syncs that carry them.

Most calls start on time, with a spread of lateness; some are short, a few run over; ~1.5% are
missed; some carers forget to check out (fixed later by an amendment); GPS fixes are noisy and
a few land outside the geofence; phones are offline-first and upload their queue every few days
(`sync_days`) when back on wifi, a phone without signal then at its next chance; a few post each
event as it happens; some uploads are retried after a lost answer, so the server sees their
events twice.
"""

from __future__ import annotations

import math
import random
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from services.demo.county import County

MISSED = 0.015
FORGOT_CHECK_OUT = 0.02
SECOND_CARER_ABSENT = 0.03
OFFLINE_DAY = 0.08
RETRIED_SYNC = 0.04
SINGLE_POSTS = 0.01
FAR_GPS = 0.04


@dataclass(frozen=True)
class PlannedVisit:
    """A visit as the API lists it, with the person's index in the county."""

    id: str
    person: int
    planned_start: datetime
    planned_min: int
    carers_required: int
    outcome_ids: tuple[str, ...]
    call: str
    provider: int


@dataclass
class Sync:
    """One upload from one phone: its events, and whether the answer was lost (so it is sent again)."""

    provider: int
    carer: int
    events: list[dict[str, Any]]
    retried: bool = False
    one_by_one: bool = False


@dataclass
class Fix:
    """A forgotten check-out, fixed by the provider's amendment (approved by a commissioner)."""

    visit_id: str
    provider: int
    carer: int
    check_out_at: datetime


@dataclass
class Played:
    """What the phones did over the whole demo."""

    syncs: list[Sync] = field(default_factory=list)
    fixes: list[Fix] = field(default_factory=list)
    missed: int = 0
    events: int = 0


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _lateness(rng: random.Random) -> float:
    """Minutes after planned start: most on time, a tail of late calls, a few early."""
    roll = rng.random()
    if roll < 0.03:
        return rng.uniform(-15, -5)
    if roll < 0.75:
        return rng.uniform(-5, 10)
    if roll < 0.94:
        return rng.uniform(10, 25)
    return rng.uniform(25, 55)


def _duration(rng: random.Random, planned: int) -> float:
    roll = rng.random()
    if roll < 0.72:
        return planned + rng.uniform(-3, 3)
    if roll < 0.95:
        return planned * rng.uniform(0.5, 0.88)  # a short call
    return planned + rng.uniform(5, 20)


def _fix(rng: random.Random, lat: float, lon: float) -> dict[str, Any]:
    accuracy = rng.uniform(4, 35)
    distance = rng.uniform(150, 450) if rng.random() < FAR_GPS else abs(rng.gauss(0, accuracy))
    bearing = rng.uniform(0, 2 * math.pi)
    dlat = distance * math.cos(bearing) / 111_320
    dlon = distance * math.sin(bearing) / (111_320 * math.cos(math.radians(lat)))
    return {"lat": round(lat + dlat, 6), "lon": round(lon + dlon, 6), "accuracy_m": round(accuracy, 1)}


def _method(rng: random.Random) -> str:
    return rng.choices(("gps", "nfc", "telephony", "manual"), weights=(85, 9, 3, 3))[0]


def _event(
    rng: random.Random, county: County, visit: PlannedVisit, carer: int, kind: str, at: datetime, method: str
) -> dict[str, Any]:
    person = county.people[visit.person]
    body: dict[str, Any] = {
        "event_id": _uuid(rng),
        "visit_id": visit.id,
        "kind": kind,
        "occurred_at": at.replace(microsecond=0).isoformat(),
        "method": method,
        "device_id": f"{county.providers[visit.provider].code.lower()}-phone-{carer + 1}",
    }
    if method == "gps":
        body["location"] = _fix(rng, person.lat, person.lon)
    elif method == "nfc":
        body["tag"] = person.tag
    elif method == "telephony":
        body["phone"] = person.phone
    if kind == "check_out" and visit.outcome_ids:
        statuses = ("met", "not_met", "refused")
        body["outcomes"] = [
            {"outcome_id": o, "status": rng.choices(statuses, weights=(92, 5, 3))[0]} for o in visit.outcome_ids
        ]
    return body


def play(
    county: County,
    visits: list[PlannedVisit],
    seed: int,
    assigned: dict[str, list[int]] | None = None,
    sync_days: int = 1,
) -> Played:
    """Every visit's events, grouped into the phones' syncs. `assigned` names the carers of visits
    outside the weekly rota (bank-funded ones): visit id → carer indexes within the provider."""
    rng = random.Random(seed * 7919 + 17)  # noqa: S311 - a simulation, not secrets
    played = Played()
    by_day: dict[tuple[int, int, int], list[dict[str, Any]]] = defaultdict(list)
    for visit in sorted(visits, key=lambda v: (v.planned_start, county.people[v.person].reference, v.call)):
        weekday = visit.planned_start.isoweekday()
        if assigned and visit.id in assigned:
            carers = assigned[visit.id]
        else:
            carers = [
                county.rota.get((visit.person, weekday, visit.call, place), place)
                for place in range(visit.carers_required)
            ]
        if visit.call != "bank" and rng.random() < MISSED:
            played.missed += 1
            continue
        start = visit.planned_start + timedelta(minutes=_lateness(rng))
        length = _duration(rng, visit.planned_min)
        for place, carer in enumerate(carers):
            if place > 0 and rng.random() < SECOND_CARER_ABSENT:
                continue
            check_in = start + timedelta(minutes=rng.uniform(-2, 3) if place else 0)
            check_out = check_in + timedelta(minutes=length + (rng.uniform(-2, 2) if place else 0))
            method = _method(rng)
            # Upload rounds count from the demo's first day, so the same seed plays the same in any week.
            day = (visit.provider, carer, (visit.planned_start.date() - county.start).days // sync_days)
            by_day[day].append(_event(rng, county, visit, carer, "check_in", check_in, method))
            if rng.random() < FORGOT_CHECK_OUT:
                played.fixes.append(Fix(visit.id, visit.provider, carer, check_out.replace(microsecond=0)))
            else:
                by_day[day].append(_event(rng, county, visit, carer, "check_out", check_out, method))
    carry: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    for (provider, carer, _day), events in sorted(by_day.items(), key=lambda item: (item[0][2], item[0][:2])):
        pending = carry.pop((provider, carer), []) + events
        if rng.random() < OFFLINE_DAY:
            carry[(provider, carer)] = pending  # no signal: the phone uploads at its next chance
            continue
        rng.shuffle(pending)  # a phone's queue is not in time order after a day offline
        played.syncs.append(
            Sync(provider, carer, pending, rng.random() < RETRIED_SYNC, one_by_one=rng.random() < SINGLE_POSTS)
        )
        played.events += len(pending)
    for (provider, carer), events in sorted(carry.items()):
        played.syncs.append(Sync(provider, carer, events))
        played.events += len(events)
    return played
