"""The demo's county (pure, deterministic for a seed): one council, four providers on different
contracts, people with one to four calls a day, carers and a weekly rota for each provider."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

CENTRE = (53.7632, -2.7031)  # Preston, Lancashire
WEEKDAYS = range(1, 8)


@dataclass(frozen=True)
class ProviderSpec:
    """A provider and its contract: model, rounding rules, rates and banking settings."""

    code: str
    name: str
    model: str
    rates: dict[str, int]
    pay_rules: dict[str, Any]
    banking: dict[str, Any]


PROVIDERS = (
    ProviderSpec(
        "ACORN",
        "Acorn Home Care",
        "time_and_task",
        {"day": 2430, "evening": 2700, "night": 3000, "weekend": 2900, "bank_holiday": 4860},
        {"rounding_unit_min": 1, "rounding_mode": "nearest", "grace_min": 5, "settle_h": 0},
        {"expiry_weeks": 1},
    ),
    ProviderSpec(
        "BROOK",
        "Brookside Care",
        "time_and_task",
        {"day": 2380, "evening": 2650, "night": 2950, "weekend": 2860, "bank_holiday": 4760},
        {"rounding_unit_min": 15, "rounding_mode": "up", "grace_min": 2, "minimum_min": 15, "settle_h": 0},
        {"expiry_weeks": 1},
    ),
    ProviderSpec(
        "CEDAR",
        "Cedar Outcomes Ltd",
        "outcome_based",
        {"day": 2500, "evening": 2780, "night": 3080, "weekend": 2990, "bank_holiday": 5000},
        {"rounding_unit_min": 5, "rounding_mode": "nearest", "grace_min": 5, "settle_h": 0},
        {"expiry_weeks": 1, "cap_min": 600, "expiry_action": "credit_note"},
    ),
    ProviderSpec(
        "DALES",
        "Dales Community Care",
        "outcome_based",
        {"day": 2460, "evening": 2720, "night": 3020, "weekend": 2930, "bank_holiday": 4920},
        {"rounding_unit_min": 1, "rounding_mode": "down", "grace_min": 3, "settle_h": 0},
        {"expiry_weeks": 2, "cap_min": 900, "expiry_action": "forfeit"},
    ),
)

# (name, earliest start, latest start, minutes choices, outcomes: (id, domain, text, key))
CALLS = (
    (
        "morning",
        (7, 0),
        (9, 30),
        (30, 45, 45, 60),
        (("wash", "personal_care", "washed and dressed", True), ("meds_am", "safety", "morning medication", False)),
    ),
    (
        "lunch",
        (11, 30),
        (13, 30),
        (30, 30, 45),
        (("lunch", "food_and_drink", "a hot lunch", True), ("chat", "social_participation", "a chat", False)),
    ),
    (
        "tea",
        (16, 0),
        (18, 0),
        (30, 30, 45),
        (("tea", "food_and_drink", "tea and a drink left", True), ("tidy", "accommodation", "kitchen tidy", False)),
    ),
    (
        "bed",
        (19, 0),
        (21, 45),
        (30, 30, 45),
        (("bed", "safety", "safe in bed", True), ("choice", "control", "chose when to go to bed", False)),
    ),
)
# Which calls a person with n calls a day has.
CALLS_FOR = {
    1: ("morning",),
    2: ("morning", "bed"),
    3: ("morning", "lunch", "bed"),
    4: ("morning", "lunch", "tea", "bed"),
}


@dataclass(frozen=True)
class Slot:
    """One weekly call of a person."""

    call: str
    weekday: int
    start: str
    minutes: int
    carers_required: int
    outcome_ids: tuple[str, ...]


@dataclass
class PersonSpec:
    """A service user, the provider they are with and their weekly schedule."""

    reference: str
    display_name: str
    lat: float
    lon: float
    tag: str
    phone: str
    provider: int
    slots: list[Slot]
    outcomes: list[tuple[str, str, str, bool]]

    @property
    def weekly_min(self) -> int:
        return sum(s.minutes * s.carers_required for s in self.slots)


@dataclass
class County:
    """Everything the demo creates before the phones start."""

    start: date
    weeks: int
    providers: tuple[ProviderSpec, ...]
    people: list[PersonSpec]
    carers: list[list[str]]  # carer names per provider
    rota: dict[tuple[int, int, str, int], int] = field(default_factory=dict)
    # (person index, weekday, call, place) -> carer index within the provider, built by `rota_for`

    @property
    def end(self) -> date:
        return self.start + timedelta(days=7 * self.weeks - 1)


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def build_county(seed: int, start: date, weeks: int, people: int, carers: int) -> County:
    """A county of `people` people and `carers` carers shared over the four providers."""
    rng = random.Random(seed)  # noqa: S311 - a simulation, not secrets
    shares = [0.3, 0.25, 0.25, 0.2]
    persons: list[PersonSpec] = []
    for index in range(people):
        provider = rng.choices(range(len(PROVIDERS)), weights=shares)[0]
        calls = rng.choices((1, 2, 3, 4), weights=(2, 3, 3, 2))[0]
        double = rng.random() < 0.08
        slots: list[Slot] = []
        outcomes: dict[str, tuple[str, str, str, bool]] = {}
        for name, earliest, latest, lengths, call_outcomes in CALLS:
            if name not in CALLS_FOR[calls]:
                continue
            lo, hi = earliest[0] * 60 + earliest[1], latest[0] * 60 + latest[1]
            start_min = lo + 15 * rng.randrange((hi - lo) // 15 + 1)
            minutes = rng.choice(lengths)
            two = 2 if double and name in ("morning", "bed") else 1
            for outcome in call_outcomes:
                outcomes[outcome[0]] = outcome
            ids = tuple(o[0] for o in call_outcomes)
            skip_weekend = name == "lunch" and rng.random() < 0.3  # family covers weekend lunches
            for weekday in WEEKDAYS:
                if skip_weekend and weekday >= 6:
                    continue
                slots.append(Slot(name, weekday, _hhmm(start_min), minutes, two, ids))
        lat = CENTRE[0] + rng.uniform(-0.12, 0.12)
        lon = CENTRE[1] + rng.uniform(-0.2, 0.2)
        persons.append(
            PersonSpec(
                reference=f"LCC-{100001 + index}",
                display_name=f"Person {index + 1}",
                lat=round(lat, 6),
                lon=round(lon, 6),
                tag=f"TAG-{100001 + index}",
                phone=f"+4417720{index:05d}",
                provider=provider,
                slots=slots,
                outcomes=list(outcomes.values()),
            )
        )
    load = [sum(p.weekly_min for p in persons if p.provider == i) for i in range(len(PROVIDERS))]
    total = sum(load) or 1
    per_provider = [max(2, round(carers * x / total)) for x in load]
    names = [
        [f"{spec.code.title()} carer {n + 1}" for n in range(count)]
        for spec, count in zip(PROVIDERS, per_provider, strict=True)
    ]
    county = County(start=start, weeks=weeks, providers=PROVIDERS, people=persons, carers=names)
    rota_for(county)
    return county


def rota_for(county: County) -> None:
    """A weekly rota per provider: each call goes to a carer who is free by then (10 minutes' travel),
    the least busy first; with nobody free, the one free soonest (who will then run late)."""
    for provider in range(len(county.providers)):
        count = len(county.carers[provider])
        for weekday in WEEKDAYS:
            calls = sorted(
                (
                    (int(slot.start[:2]) * 60 + int(slot.start[3:]), person, slot)
                    for person, spec in enumerate(county.people)
                    if spec.provider == provider
                    for slot in spec.slots
                    if slot.weekday == weekday
                ),
                key=lambda c: (c[0], c[1], c[2].call),
            )
            free_at = [0] * count
            busy = [0] * count
            for start, person, slot in calls:
                chosen: list[int] = []
                for _ in range(slot.carers_required):
                    candidates = [c for c in range(count) if c not in chosen]
                    ready = [c for c in candidates if free_at[c] <= start]
                    pick = (
                        min(ready, key=lambda c: (busy[c], c))
                        if ready
                        else min(candidates, key=lambda c: (free_at[c], c))
                    )
                    chosen.append(pick)
                    free_at[pick] = max(free_at[pick], start) + slot.minutes + 10
                    busy[pick] += 1
                for place, carer in enumerate(chosen):
                    county.rota[(person, weekday, slot.call, place)] = carer
