"""Wire contracts of outcome banking: balances and lots, postings, transfers, allocations, summaries."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

import msgspec

PostingKind = Literal[
    "accrue", "cap_overflow", "take_back", "redeploy", "redeploy_return", "transfer", "allocate", "expire"
]
Minutes = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=500)]


class Lot(msgspec.Struct, frozen=True):
    """Minutes held for a person (or the pool) at the rate of the visit that earned them."""

    lot_id: UUID
    provider_id: UUID
    contract_id: UUID
    remaining_min: int
    held_min: int
    rate_pence_per_hour: int
    value_pence: int
    effective_at: datetime
    expires_at: datetime
    visit_id: UUID | None


class ProviderBank(msgspec.Struct, frozen=True):
    """A person's bank at one provider."""

    provider_id: UUID
    balance_min: int
    held_min: int
    available_min: int
    value_pence: int


class PersonBank(msgspec.Struct, frozen=True):
    """A person's bank as of an instant: totals over their providers (or the one asked for)."""

    person_id: UUID
    as_of: datetime
    balance_min: int
    held_min: int
    available_min: int
    value_pence: int
    lots: list[Lot]
    by_provider: list[ProviderBank]


class Posting(msgspec.Struct, frozen=True):
    """One ledger posting: `minutes` move from `from_account` (debited) to `to_account` (credited)."""

    id: UUID
    provider_id: UUID
    kind: PostingKind
    from_account: str
    to_account: str
    minutes: int
    person_id: UUID | None
    from_lot_id: UUID | None
    to_lot_id: UUID | None
    visit_id: UUID | None
    transfer_id: UUID | None
    note: str | None
    recorded_by: str | None
    effective_at: datetime
    recorded_at: datetime


class TransferCreate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Move a person's banked minutes to another person of the same provider, after a review."""

    from_person_id: UUID
    to_person_id: UUID
    minutes: Minutes
    review_ref: Text
    provider_id: UUID | None = None


class Transfer(msgspec.Struct, frozen=True):
    """A transfer and its decision: `pending` holds the minutes until a commissioner decides."""

    id: UUID
    provider_id: UUID
    from_person_id: UUID
    to_person_id: UUID
    minutes: int
    review_ref: str
    status: Literal["pending", "approved", "rejected"]
    requested_by: str
    requested_at: datetime
    decided_by: str | None
    decided_at: datetime | None


class AllocationCreate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Give a person minutes from the provider's pool."""

    provider_id: UUID
    person_id: UUID
    minutes: Minutes
    note: Text


class Allocation(msgspec.Struct, frozen=True):
    """An allocation as posted: one posting per lot moved."""

    provider_id: UUID
    person_id: UUID
    minutes: int
    note: str
    postings: list[Posting]


class ExpiringSoon(msgspec.Struct, frozen=True):
    """Lots whose unexpired remainder runs out within the window."""

    within_days: int
    minutes: int
    value_pence: int
    lots: list[Lot]


class BankSummary(msgspec.Struct, frozen=True):
    """A tenant's (or one provider's) banks as of an instant."""

    as_of: datetime
    provider_id: UUID | None
    totals_by_kind: dict[str, int]
    balances: dict[str, int]
    value_pence: int
    expiring_soon: ExpiringSoon
