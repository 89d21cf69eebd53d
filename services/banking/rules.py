"""Bank rules (pure): accounts, which lots a movement takes, the cap, what a visit says the bank
should hold for it, and when a lot expires.

DOMAIN.md "The bank ledger": minutes are integers; lots are consumed and earmarked oldest expiry
first. A lot's value, round_half_even(remaining * rate / 60), is billing's `amount_pence`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol
from uuid import UUID

POOL = "pool"
OWED = "owed"
DELIVERED = "delivered"
EXPIRED = "expired"
PostingKind = Literal[
    "accrue", "cap_overflow", "take_back", "redeploy", "redeploy_return", "transfer", "allocate", "expire"
]
FINAL_STATUSES = frozenset({"completed", "missed", "cancelled"})


def person_account(person_id: UUID) -> str:
    return f"person:{person_id}"


def is_person_account(account: str) -> bool:
    """Whether an account is a person's (the accounts whose lock row keeps their balance)."""
    return account.startswith("person:")


def person_of(account: str) -> UUID | None:
    """The person an account belongs to, or None for the pool and the ledger's own accounts."""
    return UUID(account.removeprefix("person:")) if is_person_account(account) else None


@dataclass(frozen=True)
class LotAvailable:
    """A lot's minutes that a movement may take (its remainder less what holds earmark)."""

    lot_id: UUID
    expires_at: datetime
    effective_at: datetime
    available: int


def take_oldest_first(lots: Iterable[LotAvailable], minutes: int) -> list[tuple[UUID, int]]:
    """(lot, minutes) pieces covering up to `minutes`, oldest expiry first (then oldest lot, then id,
    so the choice is deterministic); fewer minutes than asked when the lots run short."""
    ordered = sorted(lots, key=lambda lot: (lot.expires_at, lot.effective_at, lot.lot_id))
    return first_minutes([(lot.lot_id, lot.available) for lot in ordered], minutes)[0]


def cap_split(balance_min: int, accrue_min: int, cap_min: int) -> tuple[int, int]:
    """(to the person, to the pool): what would take the person's balance past the cap goes to the pool."""
    to_person = max(0, min(accrue_min, cap_min - balance_min))
    return to_person, accrue_min - to_person


@dataclass(frozen=True)
class VisitFacts:
    """What the bank needs to know of one reconciled visit."""

    funding: str
    model: str
    status: str
    banked_min: int
    planned_min: int
    place_payables: tuple[int, ...]
    short_person_cancellation: bool


@dataclass(frozen=True)
class Target:
    """What the current reconciliation says the bank should show for a visit.

    `accrue_min`: minutes this (package-funded, outcome-based) visit banks; `deliver_min`: minutes a
    bank-funded visit takes from its hold; `hold_open`: whether a bank-funded visit still holds."""

    accrue_min: int
    deliver_min: int
    hold_open: bool


class Row(Protocol):
    """A database row, as rules see it: fields by name."""

    def __getitem__(self, key: str) -> Any: ...


def facts_of(row: Row) -> VisitFacts:
    """VisitFacts from a visit row (status, funding, banked minutes, place payables, cancellation)."""
    cancellation = row["cancellation"] or {}
    return VisitFacts(
        funding=row["funding"],
        model=row["model"],
        status=row["status"],
        banked_min=row["banked_min"],
        planned_min=row["planned_min"],
        place_payables=tuple(row["place_payables"] or ()),
        short_person_cancellation=row["status"] == "cancelled"
        and cancellation.get("by") == "person"
        and bool(cancellation.get("short_notice")),
    )


def target_of(visit: VisitFacts) -> Target:
    """Bank-funded: while not final, the hold stays; once final, each place's payable up to its share
    (planned minutes) is delivered from the bank (nothing for a missed or cancelled visit: the whole
    hold is released, and short-notice pay is invoiced as a package line). Package-funded: the banked
    minutes reconciliation computed (only outcome-based contracts bank)."""
    if visit.funding == "bank":
        if visit.status not in FINAL_STATUSES:
            return Target(0, 0, hold_open=True)
        if visit.status in ("missed", "cancelled"):
            return Target(0, 0, hold_open=False)
        delivered = sum(min(payable, visit.planned_min) for payable in visit.place_payables)
        return Target(0, delivered, hold_open=False)
    banked = visit.banked_min if visit.model == "outcome_based" else 0
    return Target(banked, 0, hold_open=False)


def first_minutes(pieces: Sequence[tuple[UUID, int]], minutes: int) -> tuple[list[tuple[UUID, int]], int]:
    """The first `minutes` of (lot, minutes) pieces, in their order: (pieces taken, minutes left uncovered)."""
    taken: list[tuple[UUID, int]] = []
    left = minutes
    for lot_id, available in pieces:
        piece = min(left, available)
        if piece > 0:
            taken.append((lot_id, piece))
            left -= piece
    return taken, left


def expiry_instant(expires_at: datetime, last_movement: datetime | None) -> datetime:
    """A lot expires at its expiry instant, or, if later, when a hold that kept it ended or minutes
    last entered it (an expiry never predates what it expires)."""
    return max(expires_at, last_movement) if last_movement else expires_at
