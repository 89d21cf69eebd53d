"""Moving banked minutes: holds for bank-funded visits, keeping the bank equal to what
reconciliation says, transfers, allocations and expiry.

Every function runs in the caller's transaction. Accounts that can run short (people's, the
pool) are locked before they are read, providers in id order and accounts in name order, so
concurrent movements queue instead of overdrawing or deadlocking; callers that also lock visits
lock them first.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg

from services.banking import rules, store
from services.banking.rules import DELIVERED, EXPIRED, OWED, POOL
from services.billing.rules import band_of
from services.common.domain import RuleError
from services.common.ids import new_id
from services.identity.rules import holiday_calendar


def _holds_lots(account: str) -> bool:
    return account == POOL or rules.person_of(account) is not None


async def _move(
    conn: asyncpg.Connection,
    writes: store.Writes,
    tenant_id: UUID,
    provider_id: UUID,
    kind: rules.PostingKind,
    from_account: str,
    to_account: str,
    pieces: Sequence[tuple[UUID, int]],
    effective_at: datetime,
    **tags: Any,
) -> list[dict[str, Any]]:
    """Add to `writes` a posting of each (lot, minutes) piece from one account to another; an account
    that holds lots receives a new lot per piece with the source lot's contract, rate and expiry."""
    receives_lots = _holds_lots(to_account) and bool(pieces)
    sources = await store.get_lots(conn, tenant_id, [lot_id for lot_id, _ in pieces]) if receives_lots else {}
    new_lots, postings = [], []
    for lot_id, minutes in pieces:
        to_lot = None
        if receives_lots:
            source = sources[lot_id]
            to_lot = new_id()
            new_lots.append(
                {
                    "id": to_lot,
                    "provider_id": provider_id,
                    "contract_id": source["contract_id"],
                    "account": to_account,
                    "rate_pence_per_hour": source["rate_pence_per_hour"],
                    "effective_at": effective_at,
                    "expires_at": source["expires_at"],
                    "visit_id": source["visit_id"],
                    "origin_lot_id": lot_id,
                }
            )
        postings.append(
            _posting(provider_id, kind, from_account, to_account, minutes, effective_at, lot_id, to_lot, tags)
        )
    writes.lots(new_lots).postings(postings)
    return postings


def _posting(
    provider_id: UUID,
    kind: rules.PostingKind,
    from_account: str,
    to_account: str,
    minutes: int,
    effective_at: datetime,
    from_lot: UUID | None,
    to_lot: UUID | None,
    tags: dict[str, Any],
) -> dict[str, Any]:
    return {
        "id": new_id(),
        "provider_id": provider_id,
        "kind": kind,
        "from_account": from_account,
        "to_account": to_account,
        "minutes": minutes,
        "from_lot_id": from_lot,
        "to_lot_id": to_lot,
        "effective_at": effective_at,
        **tags,
    }


async def _take_exactly(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    provider_id: UUID,
    account: str,
    minutes: int,
    now: datetime,
    field: str,
) -> list[tuple[UUID, int]]:
    """(lot, minutes) pieces of the account's available lots covering `minutes`, oldest expiry first;
    422 `insufficient_bank` naming `field` when they fall short. Call with the account locked."""
    pieces = rules.take_oldest_first(
        await store.available_lots(conn, tenant_id, provider_id, account, now, minutes), minutes
    )
    if (covered := sum(m for _, m in pieces)) < minutes:
        raise RuleError("insufficient_bank", f"{covered} minutes are available, {minutes} are needed", field)
    return pieces


def _hold(
    writes: store.Writes,
    provider_id: UUID,
    account: str,
    minutes: int,
    pieces: Sequence[tuple[UUID, int]],
    now: datetime,
    **owner: UUID,
) -> None:
    """Earmark these pieces of the account's lots for a visit or a transfer (`owner`)."""
    hold = {"id": new_id(), "provider_id": provider_id, "account": account, "minutes": minutes, "held_at": now}
    writes.hold({**hold, **owner}, pieces)


# --- bank-funded visits ---------------------------------------------------------------------


async def place_visit_hold(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    *,
    visit_id: UUID,
    provider_id: UUID,
    person_id: UUID,
    minutes: int,
    now: datetime,
) -> None:
    """Earmark a bank-funded visit's planned minutes x carers (422 `insufficient_bank` if short)."""
    account = rules.person_account(person_id)
    await store.lock_accounts(conn, tenant_id, provider_id, [account])
    pieces = await _take_exactly(conn, tenant_id, provider_id, account, minutes, now, "funding")
    writes = store.Writes(tenant_id)
    _hold(writes, provider_id, account, minutes, pieces, now, visit_id=visit_id)
    await writes.run(conn)


# --- keeping the bank equal to reconciliation ------------------------------------------------


class _Holidays:
    """A region's bank holidays, each date looked up once: building a calendar and asking it about a
    date are slow in the holidays library (about 0.5 ms a batch of 20 accruals, a tenth of its Python)."""

    def __init__(self, region: str) -> None:
        self._calendar = holiday_calendar(region)
        self._known: dict[date, bool] = {}

    def __contains__(self, day: object) -> bool:
        if not isinstance(day, date):
            return False
        known = self._known.get(day)
        if known is None:
            known = self._known[day] = day in self._calendar
        return known


_HOLIDAYS: dict[str, _Holidays] = {}


def _rate_of(row: asyncpg.Record) -> int:
    """The rate of a visit's band (each region's holidays kept for the life of the process)."""
    region = row["holiday_region"]
    calendar = _HOLIDAYS.get(region) or _HOLIDAYS.setdefault(region, _Holidays(region))
    return int(row["rates"][band_of(row["band_start"], ZoneInfo(row["zone"]), calendar)])


async def sync_visits(conn: asyncpg.Connection, tenant_id: UUID, visit_ids: Sequence[UUID], now: datetime) -> int:
    """Post whatever makes the bank show what these visits' current reconciliation says (accruals,
    their corrections, bank-funded deliveries and releases); returns how many visits needed postings.
    Call with the visits locked and their state saved."""
    facts = await store.visit_bank_facts(conn, tenant_id, visit_ids) if visit_ids else []
    work: list[tuple[asyncpg.Record, rules.Target, int, int]] = []
    for row in facts:
        target = rules.target_of(rules.facts_of(row))
        accrual_now = row["accrued"] - row["taken_back"] - row["accrual_short"]
        delivery_now = row["delivered"] - row["returned"] + row["delivery_short"]
        settled = target.hold_open or (row["hold_id"] is None and delivery_now == target.deliver_min)
        if accrual_now != target.accrue_min or not settled:
            work.append((row, target, accrual_now, delivery_now))
    if not work:
        return 0
    # Every provider's accounts in one go, providers in id order and accounts in name order: the
    # people's, and the pool where a take-back starts from the visit's pool lot (crediting the pool
    # cannot overdraw it, so accruals alone leave it unlocked).
    accounts = {(row["provider_id"], rules.person_account(row["person_id"])) for row, _, _, _ in work}
    accounts |= {
        (row["provider_id"], POOL)
        for row, target, accrual_now, _ in work
        if target.accrue_min < accrual_now and POOL in _own_lots(row)
    }
    accruals = [(row, target.accrue_min - accrual_now) for row, target, accrual_now, _ in work]
    # What grows is first what was recorded short of it (undone below), and only the rest accrues.
    growing = [(row, diff - _short_to_undo(row, "accrual", diff)) for row, diff in accruals if diff > 0]
    await _lock_and_accrue(conn, tenant_id, sorted(accounts), [(row, diff) for row, diff in growing if diff > 0], now)
    for row, diff in accruals:
        if diff > 0:
            await _undo_shortfall(conn, tenant_id, row, "accrual", diff)
    for row, diff in accruals:
        if diff < 0:
            await _take_back(conn, tenant_id, row, -diff, now)
    for row, target, _, delivery_now in work:
        if row["funding"] == "bank" and not target.hold_open:
            await _deliver(conn, tenant_id, row, target.deliver_min, delivery_now, now)
    return len(work)


@dataclass(frozen=True)
class _OwnLot:
    """A lot a visit's accrual made (the person's, or the pool's for a cap overflow)."""

    id: UUID
    rate_pence_per_hour: int
    effective_at: datetime


def _own_lots(row: asyncpg.Record) -> dict[str, _OwnLot]:
    """The visit's own lots by account, from `store.visit_bank_facts`."""
    columns = ("own_lot_accounts", "own_lot_ids", "own_lot_rates", "own_lot_dates")
    accounts, ids, rates, dates = (row[column] or () for column in columns)
    return {
        account: _OwnLot(lot_id, rate, date)
        for account, lot_id, rate, date in zip(accounts, ids, rates, dates, strict=True)
    }


def _visit_end(row: asyncpg.Record) -> datetime:
    """The latest counted check-out (the instant DOMAIN.md dates bank movements of a visit by)."""
    last: datetime | None = row["last_check_out"]
    return last or row["planned_start"] + timedelta(minutes=row["planned_min"])


def _accrual_date(row: asyncpg.Record, lots: dict[str, _OwnLot]) -> datetime:
    """When a visit's accrual (and every correction of it) is dated: its lots' date once it has
    accrued, else its latest counted check-out."""
    first = next(iter(lots.values()), None)
    return first.effective_at if first else _visit_end(row)


async def _lock_and_accrue(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    accounts: Sequence[tuple[UUID, str]],
    accruals: Sequence[tuple[asyncpg.Record, int]],
    now: datetime,
) -> None:
    """Lock the (provider, account) pairs, in order, and accrue: owed -> person into each visit's lot, and
    what passes the cap owed -> pool into the visit's pool lot. One statement locks and writes
    (`store.lock_and_accrue`, decision 107), so nothing runs between taking a person's lock and writing
    under it; everything it needs but the balances is worked out here first. A person whose visits in
    the batch name different caps (two contracts) is accrued as before: locked first, then written."""
    if not accruals:
        await store.lock_ledger_accounts(conn, tenant_id, accounts)
        return
    batch = store.AccrualBatch()
    caps: dict[tuple[UUID, str], int] = {}
    for row, minutes in accruals:
        person, cap = rules.person_account(row["person_id"]), row["banking"]["cap_min"]
        if caps.setdefault((row["provider_id"], person), cap) != cap:
            await _accrue(conn, tenant_id, accruals, await store.lock_ledger_accounts(conn, tenant_id, accounts), now)
            return
        lots = _own_lots(row)
        effective_at, mine, pool = _accrual_date(row, lots), lots.get(person), lots.get(POOL)
        batch.add(
            provider_id=row["provider_id"],
            account=person,
            minutes=minutes,
            cap_min=cap,
            visit_id=row["id"],
            contract_id=row["contract_id"],
            rate=_rate_of(row) if mine is None or pool is None else 0,
            effective_at=effective_at,
            expires_at=effective_at + timedelta(weeks=row["banking"]["expiry_weeks"]),
            person_lot=mine.id if mine else None,
            pool_lot=pool.id if pool else None,
        )
    if not await store.lock_and_accrue(conn, tenant_id, accounts, batch):
        # An account's first movement: its lock row is made (and locked) first, then all of it again.
        await store.lock_ledger_accounts(conn, tenant_id, accounts)
        if not await store.lock_and_accrue(conn, tenant_id, accounts, batch):
            raise RuntimeError("an account's lock row is missing after it was made")


async def _accrue(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    accruals: Sequence[tuple[asyncpg.Record, int]],
    locked: dict[tuple[UUID, str], int | None],
    now: datetime,
) -> None:
    """As `_lock_and_accrue`, with the accounts already locked (`locked`: the balances their lock rows
    keep), each visit's cap judged in Python on the balance the ones before it left: for a person whose
    visits in one batch name different caps."""
    balances = {key: balance or 0 for key, balance in locked.items()}
    new_lots, postings, existing = [], [], []
    for row, minutes in accruals:
        provider_id, person, lots = row["provider_id"], rules.person_account(row["person_id"]), _own_lots(row)
        existing += [lot.id for lot in lots.values()]
        effective_at = _accrual_date(row, lots)
        to_person, to_pool = rules.cap_split(balances[(provider_id, person)], minutes, row["banking"]["cap_min"])
        balances[(provider_id, person)] += to_person
        shares: tuple[tuple[str, rules.PostingKind, int], ...] = (
            (person, "accrue", to_person),
            (POOL, "cap_overflow", to_pool),
        )
        for account, kind, share in shares:
            if share <= 0:
                continue
            lot = lots.get(account)
            lot_id = lot.id if lot else new_id()
            if lot is None:
                new_lots.append(
                    {
                        "id": lot_id,
                        "provider_id": provider_id,
                        "contract_id": row["contract_id"],
                        "account": account,
                        "rate_pence_per_hour": _rate_of(row),
                        "effective_at": effective_at,
                        "expires_at": effective_at + timedelta(weeks=row["banking"]["expiry_weeks"]),
                        "visit_id": row["id"],
                    }
                )
            tags = {"visit_id": row["id"]}
            postings.append(_posting(provider_id, kind, OWED, account, share, effective_at, None, lot_id, tags))
    # New lots are queued for expiry as they are made; minutes added to an expired lot expire again.
    await store.Writes(tenant_id).lots(new_lots).postings(postings).requeue_expiry(existing).run(conn)


async def _take_back(
    conn: asyncpg.Connection, tenant_id: UUID, row: asyncpg.Record, minutes: int, now: datetime
) -> None:
    """A reduced accrual: taken back from the visit's own lots first, then the person's other unheld
    lots (oldest expiry first); what cannot be taken back is a shortfall at the lot's rate."""
    provider_id, person = row["provider_id"], rules.person_account(row["person_id"])
    own = _own_lots(row)
    account_of = {own[account].id: account for account in (person, POOL) if account in own}
    own_ids = list(account_of)
    available = await store.lots_available(conn, tenant_id, own_ids) if own_ids else {}
    pieces, left = rules.first_minutes([(lot_id, available.get(lot_id, 0)) for lot_id in own_ids], minutes)
    if left > 0:
        others = await store.available_lots(conn, tenant_id, provider_id, person, now, left, excluding=account_of)
        more = rules.take_oldest_first(others, left)
        pieces += more
        left -= sum(m for _, m in more)
    effective_at = _accrual_date(row, own)
    postings = [
        _posting(
            provider_id,
            "take_back",
            account_of.get(lot_id, person),
            OWED,
            m,
            effective_at,
            lot_id,
            None,
            {"visit_id": row["id"]},
        )
        for lot_id, m in pieces
    ]
    await store.insert_postings(conn, tenant_id, postings)
    if left > 0:
        first = next(iter(own.values()), None)
        rate = first.rate_pence_per_hour if first else _rate_of(row)
        await _shortfall(conn, tenant_id, row, "accrual", left, rate, first.id if first else None, effective_at)


def _short_to_undo(row: asyncpg.Record, kind: Literal["accrual", "delivery"], minutes: int) -> int:
    """How much of `minutes` first cancels what the visit has on record short of this kind."""
    return min(minutes, int(row[f"{kind}_short"]))


async def _undo_shortfall(
    conn: asyncpg.Connection, tenant_id: UUID, row: asyncpg.Record, kind: Literal["accrual", "delivery"], minutes: int
) -> int:
    """Cancel up to `minutes` of what this visit has on record short of this kind (a row of negative
    minutes at the rate it was recorded at: a credit on the next invoice); returns the minutes undone.
    A visit whose reconciliation comes back first undoes what it was charged, then moves minutes.
    Dated as the movement it stands for: an accrual's date, or the visit's end for a delivery."""
    undone = _short_to_undo(row, kind, minutes)
    if undone <= 0:
        return 0
    effective_at = _accrual_date(row, _own_lots(row)) if kind == "accrual" else _visit_end(row)
    rate = await store.shortfall_rate(conn, tenant_id, row["id"], kind)
    await _shortfall(conn, tenant_id, row, kind, -undone, rate, None, effective_at)
    return undone


async def _shortfall(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    row: asyncpg.Record,
    kind: str,
    minutes: int,
    rate: int,
    lot_id: UUID | None,
    effective_at: datetime,
) -> None:
    await store.insert_shortfall(
        conn,
        tenant_id,
        {
            "id": new_id(),
            "provider_id": row["provider_id"],
            "contract_id": row["contract_id"],
            "visit_id": row["id"],
            "person_id": row["person_id"],
            "kind": kind,
            "minutes": minutes,
            "rate_pence_per_hour": rate,
            "lot_id": lot_id,
            "effective_at": effective_at,
        },
    )


async def _deliver(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    row: asyncpg.Record,
    target: int,
    delivered: int,
    now: datetime,
) -> None:
    """A final bank-funded visit: post its delivery from the hold and release the rest; a later
    change posts the difference (more from the person's lots, or returns into the lots it came from)."""
    provider_id, person = row["provider_id"], rules.person_account(row["person_id"])
    effective_at = _visit_end(row)
    tags = {"visit_id": row["id"]}
    writes = store.Writes(tenant_id)
    if row["hold_id"] is not None:
        pieces = list(zip(row["hold_lot_ids"], row["hold_lot_minutes"], strict=True))
        taken, _ = rules.first_minutes(pieces, max(0, target - delivered))
        await _move(conn, writes, tenant_id, provider_id, "redeploy", person, DELIVERED, taken, effective_at, **tags)
        writes.end_hold(row["hold_id"], "posted" if taken else "released", now, None)
        writes.requeue_expiry([lot_id for lot_id, _ in pieces])
        delivered += sum(m for _, m in taken)
    if target > delivered:
        await writes.run(conn)  # the hold's end first: what it released is available again
        short = target - delivered
        pieces = rules.take_oldest_first(
            await store.available_lots(conn, tenant_id, provider_id, person, now, short), short
        )
        await _move(conn, writes, tenant_id, provider_id, "redeploy", person, DELIVERED, pieces, effective_at, **tags)
        if left := short - sum(m for _, m in pieces):
            await _shortfall(conn, tenant_id, row, "delivery", left, _rate_of(row), None, effective_at)
    elif target < delivered:
        await writes.run(conn)
        undone = await _undo_shortfall(conn, tenant_id, row, "delivery", delivered - target)
        returned, _ = rules.first_minutes(
            await store.delivered_by_lot(conn, tenant_id, row["id"]), delivered - target - undone
        )
        writes.postings(
            [
                _posting(provider_id, "redeploy_return", DELIVERED, person, m, effective_at, None, lot_id, tags)
                for lot_id, m in returned
            ]
        )
        writes.requeue_expiry([lot_id for lot_id, _ in returned])
    await writes.run(conn)


# --- transfers and allocations ----------------------------------------------------------------


async def request_transfer(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    *,
    provider_id: UUID,
    from_person_id: UUID,
    to_person_id: UUID,
    minutes: int,
    review_ref: str,
    by: str,
    now: datetime,
) -> UUID:
    """Hold the minutes on the giver's account until a commissioner decides (422 if short)."""
    account = rules.person_account(from_person_id)
    await store.lock_accounts(conn, tenant_id, provider_id, [account, rules.person_account(to_person_id)])
    pieces = await _take_exactly(conn, tenant_id, provider_id, account, minutes, now, "minutes")
    transfer_id = new_id()
    writes = store.Writes(tenant_id).transfer(
        {
            "id": transfer_id,
            "provider_id": provider_id,
            "from_person_id": from_person_id,
            "to_person_id": to_person_id,
            "minutes": minutes,
            "review_ref": review_ref,
            "requested_by": by,
            "requested_at": now,
        }
    )
    _hold(writes, provider_id, account, minutes, pieces, now, transfer_id=transfer_id)
    await writes.run(conn)
    return transfer_id


async def decide_transfer(
    conn: asyncpg.Connection, tenant_id: UUID, transfer: asyncpg.Record, *, approve: bool, by: str, now: datetime
) -> None:
    """Approve (post the held lots to the receiver, keeping rate and expiry) or reject (release).
    The caller has checked who decides; a second decision is 409."""
    giver, receiver = rules.person_account(transfer["from_person_id"]), rules.person_account(transfer["to_person_id"])
    provider_id = transfer["provider_id"]
    await store.lock_accounts(conn, tenant_id, provider_id, [giver, receiver])
    held = await store.open_hold(conn, tenant_id, transfer_id=transfer["id"])
    if held is None:
        raise RuleError("already_decided", "this transfer was already decided", status=409)
    hold, pieces = held
    writes = store.Writes(tenant_id)
    if approve:
        tags = {"transfer_id": transfer["id"], "recorded_by": by, "note": transfer["review_ref"]}
        await _move(conn, writes, tenant_id, provider_id, "transfer", giver, receiver, pieces, now, **tags)
    writes.end_hold(hold["id"], "posted" if approve else "released", now, by)
    writes.requeue_expiry([lot_id for lot_id, _ in pieces])
    await writes.run(conn)


async def allocate(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    *,
    provider_id: UUID,
    person_id: UUID,
    minutes: int,
    note: str,
    by: str,
    now: datetime,
) -> list[dict[str, Any]]:
    """pool -> person: the pool's lots move with their rate and expiry, oldest expiry first."""
    person = rules.person_account(person_id)
    await store.lock_accounts(conn, tenant_id, provider_id, [person, POOL])
    pieces = await _take_exactly(conn, tenant_id, provider_id, POOL, minutes, now, "minutes")
    writes = store.Writes(tenant_id)
    postings = await _move(
        conn, writes, tenant_id, provider_id, "allocate", POOL, person, pieces, now, note=note, recorded_by=by
    )
    await writes.run(conn)
    return postings


# --- expiry ------------------------------------------------------------------------------------


async def expire_due(conn: asyncpg.Connection, now: datetime, limit: int = 500) -> int:
    """Post the unheld remainder of lots whose expiry has come to `expired` (a held part expires when
    its hold ends); returns how many queue entries were taken. Call in a transaction. Per ledger: the
    accounts locked, then one read of each lot's unheld remainder and last movement, and one write."""
    claimed = await store.take_due_lots(conn, now, limit)
    by_ledger: dict[tuple[UUID, UUID], dict[UUID, asyncpg.Record]] = defaultdict(dict)
    for lot in claimed:
        by_ledger[(lot["tenant_id"], lot["provider_id"])][lot["id"]] = lot  # a lot queued twice comes twice
    for (tenant_id, provider_id), lots in sorted(by_ledger.items()):
        await store.lock_accounts(conn, tenant_id, provider_id, [lot["account"] for lot in lots.values()])
        postings = [
            _posting(
                provider_id,
                "expire",
                lots[lot_id]["account"],
                EXPIRED,
                available,
                rules.expiry_instant(lots[lot_id]["expires_at"], since),
                lot_id,
                None,
                {},
            )
            for lot_id, available, since in await store.expiring(conn, tenant_id, sorted(lots))
            if available > 0
        ]
        await store.Writes(tenant_id).postings(postings).run(conn)
    return len(claimed)
