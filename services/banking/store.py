"""Bank SQL: account locks, lots and what is available of them, postings, holds, transfers,
shortfalls, the expiry queue, balances as of an instant, and what invoices carry."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg

from services.banking.rules import LotAvailable, is_person_account
from services.common.ids import new_id

# A lot's remainder: what entered it less what left it (postings effective by $as_of).
_REMAINING = """(SELECT coalesce(sum(minutes), 0) FROM bank_postings i
                  WHERE i.tenant_id = l.tenant_id AND i.to_lot_id = l.id AND i.effective_at <= {as_of})
              - (SELECT coalesce(sum(minutes), 0) FROM bank_postings o
                  WHERE o.tenant_id = l.tenant_id AND o.from_lot_id = l.id AND o.effective_at <= {as_of})"""
# What open holds earmark of a lot (holds placed by $as_of and not ended by then).
_HELD = """(SELECT coalesce(sum(hl.minutes), 0) FROM bank_hold_lots hl
              JOIN bank_holds h ON h.tenant_id = hl.tenant_id AND h.id = hl.hold_id
             WHERE hl.tenant_id = l.tenant_id AND hl.lot_id = l.id AND h.held_at <= {as_of}
               AND NOT EXISTS (SELECT 1 FROM bank_hold_ends e WHERE e.tenant_id = h.tenant_id AND e.hold_id = h.id
                                  AND e.ended_at <= {as_of}))"""
_FOREVER = "'infinity'::timestamptz"
# What open holds earmark of a lot now. Holds earmark people's lots only (migration 0016): the pool's
# lots skip the sum (a CASE runs its subquery only for the branch taken), which is most of an
# allocation's read, and which a plan cached while the hold tables were nearly empty makes a scan
# of every hold lot per pool lot.
_HELD_NOW = f"(CASE WHEN l.account = 'pool' THEN 0 ELSE {_HELD.format(as_of=_FOREVER)} END)"
# A hold's earmarked lots, oldest expiry first.
_HOLD_PIECES = """array(SELECT {column} FROM bank_hold_lots hl
        JOIN bank_lots l ON l.tenant_id = hl.tenant_id AND l.id = hl.lot_id
        WHERE hl.tenant_id = h.tenant_id AND hl.hold_id = h.id ORDER BY l.expires_at, l.effective_at, l.id)"""


async def lock_accounts(conn: asyncpg.Connection, tenant_id: UUID, provider_id: UUID, accounts: Sequence[str]) -> None:
    """Lock accounts of one ledger that may run short, in name order."""
    await lock_ledger_accounts(conn, tenant_id, [(provider_id, account) for account in accounts])


# A lot whose first expiry-queue entry (it carries the lot's id) is gone: the expiry job has taken it.
_EXPIRY_TAKEN = "NOT EXISTS (SELECT 1 FROM bank_expiry_queue e WHERE e.tenant_id = l.tenant_id AND e.id = l.id)"

# The ANYs let the plan probe the primary key pair by pair (a join with the pairs hashes the table).
_LOCK = """SELECT a.provider_id, a.account, a.balance FROM bank_accounts a
    WHERE a.tenant_id = $1 AND a.provider_id = ANY($2::uuid[]) AND a.account = ANY($3::text[])
      AND (a.provider_id, a.account) IN (SELECT * FROM unnest($2::uuid[], $3::text[]))
    ORDER BY a.provider_id, a.account FOR UPDATE OF a"""


async def lock_ledger_accounts(
    conn: asyncpg.Connection, tenant_id: UUID, accounts: Sequence[tuple[UUID, str]]
) -> dict[tuple[UUID, str], int | None]:
    """Lock (provider, account) pairs that may run short, providers in id order and accounts in name
    order, and return the balance each lock row keeps (a person's; None for the pool): one statement
    when every account has its row, as it does after a person's first accrual. Rows made here for new
    accounts (no lots yet: balance 0) are locked after the existing ones (a row another transaction is
    still inserting makes this one wait for it, so the order cannot close a cycle)."""
    ordered = sorted(set(accounts))
    providers, names = [p for p, _ in ordered], [a for _, a in ordered]
    rows = await conn.fetch(_LOCK, tenant_id, providers, names)
    if len(rows) < len(ordered):
        await conn.execute(
            """INSERT INTO bank_accounts (tenant_id, provider_id, account, balance)
               SELECT $1, provider_id, account, CASE WHEN account = 'pool' THEN NULL ELSE 0 END
               FROM unnest($2::uuid[], $3::text[]) AS n (provider_id, account) ON CONFLICT DO NOTHING""",
            tenant_id,
            providers,
            names,
        )
        rows = await conn.fetch(_LOCK, tenant_id, providers, names)
    return {(row["provider_id"], row["account"]): row["balance"] for row in rows}


class AccrualBatch:
    """Accruals for `lock_and_accrue`, one per visit in the order their caps are judged in, as the
    columns the statement reads: each names its person's lot and pool lot when the visit has them (else
    new ones are made, with these ids, if minutes go there) and its two postings' ids."""

    def __init__(self) -> None:
        self.columns: tuple[list[Any], ...] = tuple([] for _ in range(15))
        self.existing: list[UUID] = []

    def add(
        self,
        *,
        provider_id: UUID,
        account: str,
        minutes: int,
        cap_min: int,
        visit_id: UUID,
        contract_id: UUID,
        rate: int,
        effective_at: datetime,
        expires_at: datetime,
        person_lot: UUID | None,
        pool_lot: UUID | None,
    ) -> None:
        self.existing += [lot for lot in (person_lot, pool_lot) if lot is not None]
        values = (
            provider_id,
            account,
            minutes,
            cap_min,
            visit_id,
            contract_id,
            rate,
            effective_at,
            expires_at,
            person_lot or new_id(),
            person_lot is None,
            pool_lot or new_id(),
            pool_lot is None,
            new_id(),
            new_id(),
        )
        for column, value in zip(self.columns, values, strict=True):
            column.append(value)


# Lock the accounts (_LOCK), then, only if every one of them has its lock row, split each visit's
# minutes at its person's cap in visit order, on the balance the lock row keeps (read by the lock, so
# the latest committed), and write the lots, their queue entries, the postings, the requeued lots and
# the kept balances. A person's share is what fits under the cap after the person's earlier visits of
# the batch: with one cap a person, the sequential rules.cap_split over the batch is
# max(0, min(minutes, max(0, cap - balance) - minutes of the earlier visits)).
_LOCK_AND_ACCRUE = f"""WITH locked AS MATERIALIZED ({_LOCK}),
    ready AS MATERIALIZED (SELECT count(*) = cardinality($3::text[]) AS ok FROM locked),
    split AS MATERIALIZED (
        SELECT i.*, greatest(0, least(i.minutes, greatest(0, i.cap_min - l.balance)
                   - coalesce(sum(i.minutes) OVER (PARTITION BY i.provider_id, i.account ORDER BY i.ord
                                                   ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)))::int
               AS to_person
        FROM unnest($4::uuid[], $5::text[], $6::int[], $7::int[], $8::uuid[], $9::uuid[], $10::int[],
                    $11::timestamptz[], $12::timestamptz[], $13::uuid[], $14::bool[], $15::uuid[], $16::bool[],
                    $17::uuid[], $18::uuid[])
             WITH ORDINALITY AS i (provider_id, account, minutes, cap_min, visit_id, contract_id, rate,
                                   effective_at, expires_at, person_lot, person_lot_new, pool_lot, pool_lot_new,
                                   person_posting, pool_posting, ord)
        JOIN locked l ON l.provider_id = i.provider_id AND l.account = i.account
        WHERE (SELECT ok FROM ready)),
    shares AS MATERIALIZED (
        SELECT provider_id, 'accrue' AS kind, account, to_person AS minutes, person_lot AS lot_id,
               person_lot_new AS new_lot, person_posting AS posting_id, visit_id, contract_id, rate, effective_at,
               expires_at
        FROM split WHERE to_person > 0
        UNION ALL
        SELECT provider_id, 'cap_overflow', 'pool', minutes - to_person, pool_lot, pool_lot_new, pool_posting,
               visit_id, contract_id, rate, effective_at, expires_at
        FROM split WHERE minutes > to_person),
    lots AS (
        INSERT INTO bank_lots (tenant_id, id, provider_id, contract_id, account, rate_pence_per_hour, effective_at,
                               expires_at, visit_id)
        SELECT $1, lot_id, provider_id, contract_id, account, rate, effective_at, expires_at, visit_id
        FROM shares WHERE new_lot
        RETURNING tenant_id, id, expires_at),
    queued AS (
        INSERT INTO bank_expiry_queue (tenant_id, id, lot_id, expires_at)
        SELECT tenant_id, id, id, expires_at FROM lots),
    posted AS (
        INSERT INTO bank_postings (tenant_id, id, provider_id, kind, from_account, to_account, minutes, to_lot_id,
                                   visit_id, effective_at)
        SELECT $1, posting_id, provider_id, kind, 'owed', account, minutes, lot_id, visit_id, effective_at
        FROM shares),
    requeued AS (
        INSERT INTO bank_expiry_queue (tenant_id, id, lot_id, expires_at)
        SELECT l.tenant_id, q.id, l.id, l.expires_at
        FROM unnest($19::uuid[], $20::uuid[]) AS q (lot_id, id)
        JOIN bank_lots l ON l.tenant_id = $1 AND l.id = q.lot_id
        WHERE {_EXPIRY_TAKEN} AND (SELECT ok FROM ready)),
    kept AS (
        UPDATE bank_accounts a SET balance = a.balance + d.delta
        FROM (SELECT provider_id, account, sum(to_person)::int AS delta FROM split
              GROUP BY provider_id, account HAVING sum(to_person) > 0) d
        WHERE a.tenant_id = $1 AND a.provider_id = d.provider_id AND a.account = d.account)
    SELECT (SELECT ok FROM ready) AS ok, (SELECT count(*) FROM split) AS accrued"""


async def lock_and_accrue(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    accounts: Sequence[tuple[UUID, str]],
    batch: AccrualBatch,
) -> bool:
    """Lock (provider, account) pairs (providers in id order, accounts in name order, as
    `lock_ledger_accounts`) and write the batch's accruals under those locks, in one statement: nothing
    runs between taking a person's lock and writing. Each person's accounts must be among `accounts`
    and all of a person's visits in the batch must name one cap. Returns False, having locked what
    exists and written nothing, when an account has no lock row yet (`lock_ledger_accounts` makes it).
    The visit's own lots whose expiry the job has already taken are queued again, as minutes came back
    to them (`Writes.requeue_expiry`)."""
    ordered = sorted(set(accounts))
    existing = sorted(set(batch.existing))
    row = await conn.fetchrow(
        _LOCK_AND_ACCRUE,
        tenant_id,
        [provider_id for provider_id, _ in ordered],
        [account for _, account in ordered],
        *batch.columns,
        existing,
        [new_id() for _ in existing],
    )
    assert row is not None
    if row["ok"] and row["accrued"] != len(batch.columns[0]):
        raise RuntimeError(f"{len(batch.columns[0])} accruals, {row['accrued']} of them with a locked account")
    return bool(row["ok"])


_LOTS_PAGE = 64
_BEFORE_ANY_LOT = (datetime.min.replace(tzinfo=UTC), UUID(int=0))


async def available_lots(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    provider_id: UUID,
    account: str,
    now: datetime,
    covering: int,
    *,
    excluding: Collection[UUID] = (),
    page: int = _LOTS_PAGE,
) -> list[LotAvailable]:
    """The account's unexpired lots with minutes that no hold earmarks, oldest expiry first (then
    oldest lot, then id: `rules.take_oldest_first`'s order), read a page at a time until those not
    in `excluding` cover `covering` minutes, or to the last lot when they fall short. A pool fed by
    years of cap overflows is not read whole for one allocation, only its oldest lots (decision 118)."""
    found: list[LotAvailable] = []
    covered = 0
    expires_after, (effective_after, id_after) = now, _BEFORE_ANY_LOT
    while covered < covering:
        rows = await conn.fetch(
            f"""SELECT l.id, l.expires_at, l.effective_at,
                       {_REMAINING.format(as_of=_FOREVER)} - {_HELD_NOW} AS available
                FROM bank_lots l WHERE l.tenant_id = $1 AND l.provider_id = $2 AND l.account = $3
                  AND l.expires_at > $4 AND l.expires_at >= $5
                  AND (l.expires_at, l.effective_at, l.id) > ($5, $6, $7)
                ORDER BY l.expires_at, l.effective_at, l.id LIMIT $8""",
            tenant_id,
            provider_id,
            account,
            now,
            expires_after,
            effective_after,
            id_after,
            page,
        )
        for row in rows:
            if row["available"] > 0 and row["id"] not in excluding:
                found.append(LotAvailable(row["id"], row["expires_at"], row["effective_at"], row["available"]))
                covered += row["available"]
        if len(rows) < page:
            break
        expires_after, effective_after, id_after = rows[-1]["expires_at"], rows[-1]["effective_at"], rows[-1]["id"]
    return found


async def lots_available(conn: asyncpg.Connection, tenant_id: UUID, lot_ids: Sequence[UUID]) -> dict[UUID, int]:
    """Unheld remainder of particular lots (expired or not)."""
    rows = await conn.fetch(
        f"""SELECT l.id, {_REMAINING.format(as_of=_FOREVER)} - {_HELD_NOW} AS available
            FROM bank_lots l WHERE l.tenant_id = $1 AND l.id = ANY($2::uuid[])""",
        tenant_id,
        list(lot_ids),
    )
    return {row["id"]: row["available"] for row in rows}


async def get_lots(conn: asyncpg.Connection, tenant_id: UUID, lot_ids: Sequence[UUID]) -> dict[UUID, asyncpg.Record]:
    rows = await conn.fetch(
        """SELECT id, provider_id, contract_id, account, rate_pence_per_hour, effective_at, expires_at, visit_id
           FROM bank_lots WHERE tenant_id = $1 AND id = ANY($2::uuid[])""",
        tenant_id,
        list(lot_ids),
    )
    return {row["id"]: row for row in rows}


_POSTING_COLUMNS = (
    "id, provider_id, kind, from_account, to_account, minutes, from_lot_id, to_lot_id, visit_id, transfer_id, "
    "note, recorded_by, effective_at"
)


async def insert_postings(conn: asyncpg.Connection, tenant_id: UUID, postings: Sequence[dict[str, Any]]) -> None:
    await Writes(tenant_id).postings(postings).run(conn)


class Writes:
    """What one movement writes (lots with their expiry-queue entries, postings, holds with the lots
    they earmark, hold ends, transfers, lots queued again for expiry), sent as one statement of
    data-modifying CTEs: one round trip instead of one per table. Foreign keys between the rows
    (a posting's lot, a hold's lots) are checked at the end of the statement, when all are in.
    The postings' net for each person's account is added to the balance its lock row keeps, in the
    same statement (the caller has locked those rows)."""

    def __init__(self, tenant_id: UUID) -> None:
        self._args: list[Any] = [tenant_id]
        self._parts: list[str] = []
        self._balances: defaultdict[tuple[UUID, str], int] = defaultdict(int)

    def _add(self, sql: str, *values: Any) -> None:
        """`sql` names the tenant $1 and `values` {0}, {1}, … (numbered here)."""
        refs = []
        for value in values:
            self._args.append(value)
            refs.append(f"${len(self._args)}")
        self._parts.append(sql.format(*refs))

    def lots(self, lots: Sequence[dict[str, Any]]) -> Writes:
        """New lots, each also queued for its expiry."""
        if lots:
            columns = ["id", "provider_id", "contract_id", "account", "rate_pence_per_hour", "effective_at"]
            self._add(
                """INSERT INTO bank_lots (tenant_id, id, provider_id, contract_id, account, rate_pence_per_hour,
                                          effective_at, expires_at, visit_id, origin_lot_id)
                   SELECT $1, * FROM unnest({0}::uuid[], {1}::uuid[], {2}::uuid[], {3}::text[], {4}::int[],
                                            {5}::timestamptz[], {6}::timestamptz[], {7}::uuid[], {8}::uuid[])
                   RETURNING tenant_id, id, expires_at""",
                *([lot[column] for lot in lots] for column in columns),
                [lot["expires_at"] for lot in lots],
                [lot.get("visit_id") for lot in lots],
                [lot.get("origin_lot_id") for lot in lots],
            )
            # A lot's first queue entry takes the lot's id (ids are unique; entries queued again get new ones).
            self._add(
                f"""INSERT INTO bank_expiry_queue (tenant_id, id, lot_id, expires_at)
                    SELECT tenant_id, id, id, expires_at FROM w{len(self._parts) - 1}"""
            )
        return self

    def postings(self, postings: Sequence[dict[str, Any]]) -> Writes:
        """Postings, each moving its minutes off a person's kept balance or onto it."""
        for posting in postings:
            for account, sign in ((posting["from_account"], -1), (posting["to_account"], 1)):
                if is_person_account(account):
                    self._balances[(posting["provider_id"], account)] += sign * posting["minutes"]
        if postings:
            self._add(
                f"""INSERT INTO bank_postings (tenant_id, {_POSTING_COLUMNS})
                    SELECT $1, * FROM unnest({{0}}::uuid[], {{1}}::uuid[], {{2}}::text[], {{3}}::text[], {{4}}::text[],
                                             {{5}}::int[], {{6}}::uuid[], {{7}}::uuid[], {{8}}::uuid[], {{9}}::uuid[],
                                             {{10}}::text[], {{11}}::text[], {{12}}::timestamptz[])""",
                *([posting.get(column) for posting in postings] for column in _POSTING_COLUMNS.split(", ")),
            )
        return self

    def requeue_expiry(self, lot_ids: Sequence[UUID]) -> Writes:
        """Queue again those of these (existing) lots whose expiry the job has already taken: minutes
        came back to them, or a hold on them ended, and what is unheld now must expire too. Whether
        the job has taken it is read from the queue, not from a clock: the job may run with a later
        `now` than the caller (a reconciliation batch keeps the instant it started at), and a lot it
        has taken while held must still expire once the hold lets go. The caller holds the lots'
        account lock, which the job takes before it reads what is unheld, so a job that has claimed
        the entry but not yet read sees what this writes."""
        if lot_ids:
            unique = sorted(set(lot_ids))
            self._add(
                f"""INSERT INTO bank_expiry_queue (tenant_id, id, lot_id, expires_at)
                    SELECT l.tenant_id, q.id, l.id, l.expires_at
                    FROM unnest({{0}}::uuid[], {{1}}::uuid[]) AS q (lot_id, id)
                    JOIN bank_lots l ON l.tenant_id = $1 AND l.id = q.lot_id
                    WHERE {_EXPIRY_TAKEN}""",
                unique,
                [new_id() for _ in unique],
            )
        return self

    def hold(self, hold: dict[str, Any], pieces: Sequence[tuple[UUID, int]]) -> Writes:
        self._add(
            """INSERT INTO bank_holds (tenant_id, id, provider_id, account, minutes, visit_id, transfer_id, held_at)
               VALUES ($1, {0}, {1}, {2}, {3}, {4}, {5}, {6})""",
            hold["id"],
            hold["provider_id"],
            hold["account"],
            hold["minutes"],
            hold.get("visit_id"),
            hold.get("transfer_id"),
            hold["held_at"],
        )
        self._add(
            """INSERT INTO bank_hold_lots (tenant_id, hold_id, lot_id, minutes)
               SELECT $1, {0}::uuid, * FROM unnest({1}::uuid[], {2}::int[])""",
            hold["id"],
            [lot_id for lot_id, _ in pieces],
            [minutes for _, minutes in pieces],
        )
        return self

    def end_hold(self, hold_id: UUID, outcome: str, at: datetime, by: str | None) -> Writes:
        self._add(
            """INSERT INTO bank_hold_ends (tenant_id, hold_id, outcome, ended_at, decided_by)
               VALUES ($1, {0}, {1}, {2}, {3})""",
            hold_id,
            outcome,
            at,
            by,
        )
        return self

    def transfer(self, fields: dict[str, Any]) -> Writes:
        self._add(
            """INSERT INTO bank_transfers (tenant_id, id, provider_id, from_person_id, to_person_id, minutes,
                                           review_ref, requested_by, requested_at)
               VALUES ($1, {0}, {1}, {2}, {3}, {4}, {5}, {6}, {7})""",
            *(
                fields[name]
                for name in (
                    "id",
                    "provider_id",
                    "from_person_id",
                    "to_person_id",
                    "minutes",
                    "review_ref",
                    "requested_by",
                    "requested_at",
                )
            ),
        )
        return self

    def _add_balances(self) -> int:
        """Add the people's balance changes as one UPDATE (a row changed twice in one statement would
        keep only one change); returns how many lock rows it must change."""
        changed = sorted((key, delta) for key, delta in self._balances.items() if delta)
        self._balances.clear()
        if changed:
            self._add(
                """UPDATE bank_accounts a SET balance = a.balance + d.delta
                   FROM unnest({0}::uuid[], {1}::text[], {2}::int[]) AS d (provider_id, account, delta)
                   WHERE a.tenant_id = $1 AND a.provider_id = d.provider_id AND a.account = d.account
                   RETURNING 1""",
                [provider_id for (provider_id, _), _ in changed],
                [account for (_, account), _ in changed],
                [delta for _, delta in changed],
            )
        return len(changed)

    async def run(self, conn: asyncpg.Connection) -> None:
        """Write everything added so far in one statement (none when nothing was added), and start
        empty again: a movement that reads after writing runs what it has first. A person's account
        without its lock row is a bug (every movement locks first): it fails the transaction."""
        balances = self._add_balances()
        parts, args = self._parts, self._args
        self._parts, self._args = [], args[:1]
        if not parts:
            return
        ctes = ", ".join(f"w{i} AS ({part})" for i, part in enumerate(parts))
        counted = f"(SELECT count(*) FROM w{len(parts) - 1})" if balances else "0"
        changed = await conn.fetchval(f"WITH {ctes} SELECT {counted}", *args)
        if changed != balances:
            raise RuntimeError(f"{balances} people's balances to change, {changed} lock rows found")


async def delivered_by_lot(conn: asyncpg.Connection, tenant_id: UUID, visit_id: UUID) -> list[tuple[UUID, int]]:
    """What a bank-funded visit took from each lot, net of returns, in the order minutes go back: latest
    delivery first, and within one delivery the reverse of the order it took them in (latest expiry
    first), so what returns goes to the lots that live longest, not to one that may have expired."""
    rows = await conn.fetch(
        """SELECT d.lot_id, sum(d.out) AS net FROM (
               SELECT from_lot_id AS lot_id, minutes AS out, effective_at FROM bank_postings
               WHERE tenant_id = $1 AND visit_id = $2 AND kind = 'redeploy'
               UNION ALL
               SELECT to_lot_id, -minutes, effective_at FROM bank_postings
               WHERE tenant_id = $1 AND visit_id = $2 AND kind = 'redeploy_return') d
           JOIN bank_lots l ON l.tenant_id = $1 AND l.id = d.lot_id
           GROUP BY d.lot_id, l.expires_at, l.effective_at HAVING sum(d.out) > 0
           ORDER BY max(d.effective_at) DESC, l.expires_at DESC, l.effective_at DESC, d.lot_id DESC""",
        tenant_id,
        visit_id,
    )
    return [(row["lot_id"], int(row["net"])) for row in rows]


async def visit_bank_facts(
    conn: asyncpg.Connection, tenant_id: UUID, visit_ids: Sequence[UUID]
) -> list[asyncpg.Record]:
    """The visits among these that the bank may care about (bank-funded, or on an outcome-based
    contract and banking now or before), with what the bank needs of them, in one statement: what
    the ledger holds for each (minutes accrued, taken back, delivered, returned, recorded short), the
    lots its accrual made (`own_lot_ids`, `own_lot_accounts`, `own_lot_rates`, `own_lot_dates`: the
    person's and the pool's) and a bank-funded visit's open hold (`hold_id`, with the lots it earmarks
    oldest expiry first: `hold_lot_ids`, `hold_lot_minutes`). All of it changes only under the visit's
    lock, so it may be read before the accounts are locked."""
    return await conn.fetch(
        f"""WITH chosen AS MATERIALIZED (
               SELECT v.tenant_id, v.id, v.person_id, v.provider_id, v.contract_id, v.funding, v.status, v.banked_min,
                      v.planned_min, v.carers_required, v.band_start, v.planned_start, v.cancellation,
                      v.actual -> 'place_payables' AS place_payables,
                      (SELECT max((a ->> 'check_out')::timestamptz)
                       FROM jsonb_array_elements(v.actual -> 'attendances') a
                       WHERE (a ->> 'counted')::boolean) AS last_check_out,
                      c.model, c.rates, c.banking, t.zone, t.holiday_region
               FROM visits v JOIN contracts c ON c.tenant_id = v.tenant_id AND c.id = v.contract_id
               JOIN tenants t ON t.tenant_id = v.tenant_id
               WHERE v.tenant_id = $1 AND v.id = ANY($2::uuid[])
                 AND (v.funding = 'bank'
                      OR (c.model = 'outcome_based'
                          AND (v.banked_min > 0
                               OR EXISTS (SELECT 1 FROM bank_postings p
                                          WHERE p.tenant_id = v.tenant_id AND p.visit_id = v.id)
                               OR EXISTS (SELECT 1 FROM bank_shortfalls s
                                          WHERE s.tenant_id = v.tenant_id AND s.visit_id = v.id)))))
           SELECT v.*, p.accrued, p.taken_back, p.delivered, p.returned, s.accrual_short, s.delivery_short,
                  own.own_lot_ids, own.own_lot_accounts, own.own_lot_rates, own.own_lot_dates,
                  hold.hold_id, hold.hold_lot_ids, hold.hold_lot_minutes
           FROM chosen v
           CROSS JOIN LATERAL (
               SELECT coalesce(sum(minutes) FILTER (WHERE kind IN ('accrue', 'cap_overflow')), 0)::int AS accrued,
                      coalesce(sum(minutes) FILTER (WHERE kind = 'take_back'), 0)::int AS taken_back,
                      coalesce(sum(minutes) FILTER (WHERE kind = 'redeploy'), 0)::int AS delivered,
                      coalesce(sum(minutes) FILTER (WHERE kind = 'redeploy_return'), 0)::int AS returned
               FROM bank_postings WHERE tenant_id = v.tenant_id AND visit_id = v.id) p
           CROSS JOIN LATERAL (
               SELECT coalesce(sum(minutes) FILTER (WHERE kind = 'accrual'), 0)::int AS accrual_short,
                      coalesce(sum(minutes) FILTER (WHERE kind = 'delivery'), 0)::int AS delivery_short
               FROM bank_shortfalls WHERE tenant_id = v.tenant_id AND visit_id = v.id) s
           CROSS JOIN LATERAL (
               SELECT array_agg(id ORDER BY account) AS own_lot_ids,
                      array_agg(account ORDER BY account) AS own_lot_accounts,
                      array_agg(rate_pence_per_hour ORDER BY account) AS own_lot_rates,
                      array_agg(effective_at ORDER BY account) AS own_lot_dates
               FROM bank_lots WHERE tenant_id = v.tenant_id AND visit_id = v.id AND origin_lot_id IS NULL) own
           LEFT JOIN LATERAL (
               SELECT h.id AS hold_id,
                      {_HOLD_PIECES.format(column="hl.lot_id")} AS hold_lot_ids,
                      {_HOLD_PIECES.format(column="hl.minutes")} AS hold_lot_minutes
               FROM bank_holds h
               WHERE v.funding = 'bank' AND h.tenant_id = v.tenant_id AND h.visit_id = v.id
                 AND NOT EXISTS (SELECT 1 FROM bank_hold_ends e WHERE e.tenant_id = h.tenant_id AND e.hold_id = h.id)
           ) hold ON true
           ORDER BY v.provider_id, v.id""",
        tenant_id,
        list(visit_ids),
    )


async def insert_shortfall(conn: asyncpg.Connection, tenant_id: UUID, fields: dict[str, Any]) -> None:
    await conn.execute(
        """INSERT INTO bank_shortfalls (tenant_id, id, provider_id, contract_id, visit_id, person_id, kind, minutes,
                                        rate_pence_per_hour, lot_id, effective_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)""",
        tenant_id,
        fields["id"],
        fields["provider_id"],
        fields["contract_id"],
        fields["visit_id"],
        fields["person_id"],
        fields["kind"],
        fields["minutes"],
        fields["rate_pence_per_hour"],
        fields["lot_id"],
        fields["effective_at"],
    )


async def shortfall_rate(conn: asyncpg.Connection, tenant_id: UUID, visit_id: UUID, kind: str) -> int:
    """The rate the visit's latest shortfall of this kind was recorded at."""
    rate: int = await conn.fetchval(
        """SELECT rate_pence_per_hour FROM bank_shortfalls WHERE tenant_id = $1 AND visit_id = $2 AND kind = $3
           ORDER BY recorded_at DESC, id DESC LIMIT 1""",
        tenant_id,
        visit_id,
        kind,
    )
    return rate


async def insert_hold(
    conn: asyncpg.Connection, tenant_id: UUID, hold: dict[str, Any], pieces: Sequence[tuple[UUID, int]]
) -> None:
    await Writes(tenant_id).hold(hold, pieces).run(conn)


async def open_hold(
    conn: asyncpg.Connection, tenant_id: UUID, *, visit_id: UUID | None = None, transfer_id: UUID | None = None
) -> tuple[asyncpg.Record, list[tuple[UUID, int]]] | None:
    """A visit's or transfer's hold if it has not ended, with its earmarked pieces (oldest expiry first)."""
    hold = await conn.fetchrow(
        f"""SELECT h.id, h.provider_id, h.account, h.minutes, h.held_at,
                   {_HOLD_PIECES.format(column="hl.lot_id")} AS lot_ids,
                   {_HOLD_PIECES.format(column="hl.minutes")} AS lot_minutes
            FROM bank_holds h
            WHERE h.tenant_id = $1 AND (h.visit_id = $2 OR h.transfer_id = $3)
              AND NOT EXISTS (SELECT 1 FROM bank_hold_ends e WHERE e.tenant_id = h.tenant_id AND e.hold_id = h.id)""",
        tenant_id,
        visit_id,
        transfer_id,
    )
    if hold is None:
        return None
    return hold, list(zip(hold["lot_ids"], hold["lot_minutes"], strict=True))


async def end_hold(
    conn: asyncpg.Connection, tenant_id: UUID, hold_id: UUID, outcome: str, at: datetime, by: str | None
) -> None:
    await Writes(tenant_id).end_hold(hold_id, outcome, at, by).run(conn)


async def insert_transfer(conn: asyncpg.Connection, tenant_id: UUID, fields: dict[str, Any]) -> None:
    await Writes(tenant_id).transfer(fields).run(conn)


# A transfer with its decision: the end of its hold (none while pending).
_TRANSFERS = """SELECT t.*, e.outcome, e.ended_at AS decided_at, e.decided_by FROM bank_transfers t
    JOIN bank_holds h ON h.tenant_id = t.tenant_id AND h.transfer_id = t.id
    LEFT JOIN bank_hold_ends e ON e.tenant_id = h.tenant_id AND e.hold_id = h.id"""


async def get_transfer(conn: asyncpg.Connection, tenant_id: UUID, transfer_id: UUID) -> asyncpg.Record | None:
    """A transfer with its decision (the end of its hold), if any."""
    return await conn.fetchrow(
        f"{_TRANSFERS} WHERE t.tenant_id = $1 AND t.id = $2",
        tenant_id,
        transfer_id,
    )


async def list_transfers(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    *,
    provider_id: UUID | None,
    status: str | None,
    person_id: UUID | None,
    after: UUID | None,
    limit: int,
) -> list[asyncpg.Record]:
    """Transfers with their decisions, in request order; `status` is pending, approved or rejected."""
    return await conn.fetch(
        f"""{_TRANSFERS}
           WHERE t.tenant_id = $1 AND ($2::uuid IS NULL OR t.provider_id = $2)
             AND ($3::text IS NULL OR ($3 = 'pending' AND e.outcome IS NULL)
                  OR ($3 = 'approved' AND e.outcome = 'posted') OR ($3 = 'rejected' AND e.outcome = 'released'))
             AND ($4::uuid IS NULL OR $4 IN (t.from_person_id, t.to_person_id))
             AND ($5::uuid IS NULL OR t.id > $5)
           ORDER BY t.id LIMIT $6""",
        tenant_id,
        provider_id,
        status,
        person_id,
        after,
        limit,
    )


async def take_due_lots(conn: asyncpg.Connection, now: datetime, limit: int) -> list[asyncpg.Record]:
    """Claim queue entries whose expiry has come (skipping those another worker holds), each with its
    lot's tenant, id, provider, account and expiry (a lot queued twice comes twice); call in a
    transaction."""
    return await conn.fetch(
        """WITH picked AS (
               DELETE FROM bank_expiry_queue q USING (
                   SELECT tenant_id, id FROM bank_expiry_queue WHERE expires_at <= $1
                   ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED) due
               WHERE q.tenant_id = due.tenant_id AND q.id = due.id
               RETURNING q.tenant_id, q.lot_id)
           SELECT l.tenant_id, l.id, l.provider_id, l.account, l.expires_at
           FROM picked p JOIN bank_lots l ON l.tenant_id = p.tenant_id AND l.id = p.lot_id""",
        now,
        limit,
    )


async def expiring(
    conn: asyncpg.Connection, tenant_id: UUID, lot_ids: Sequence[UUID]
) -> list[tuple[UUID, int, datetime | None]]:
    """(lot, unheld remainder, last movement) of each lot: when minutes last entered it or a hold on it
    last ended (an expiry is never dated earlier). Call with the lots' accounts locked."""
    rows = await conn.fetch(
        f"""SELECT l.id, {_REMAINING.format(as_of=_FOREVER)} - {_HELD_NOW} AS available,
                   greatest((SELECT max(i.effective_at) FROM bank_postings i
                             WHERE i.tenant_id = l.tenant_id AND i.to_lot_id = l.id),
                            (SELECT max(e.ended_at) FROM bank_hold_lots hl
                             JOIN bank_hold_ends e ON e.tenant_id = hl.tenant_id AND e.hold_id = hl.hold_id
                             WHERE hl.tenant_id = l.tenant_id AND hl.lot_id = l.id)) AS since
            FROM bank_lots l WHERE l.tenant_id = $1 AND l.id = ANY($2::uuid[])""",
        tenant_id,
        list(lot_ids),
    )
    return [(row["id"], row["available"], row["since"]) for row in rows]


# --- reading the bank --------------------------------------------------------------------------


# Every posting that touches a person's or the pool's account moves minutes out of or into one of
# that account's lots, so an account's balance as of T is the sum of its lots' remainders as of T:
# one statement gives a person's lots, balance and holds.
ACCOUNT_LOTS = f"""SELECT * FROM (
        SELECT l.id, l.provider_id, l.contract_id, l.account, l.rate_pence_per_hour, l.effective_at,
               l.expires_at, l.visit_id,
               {_REMAINING.format(as_of="$4")} AS remaining, {_HELD.format(as_of="$4")} AS held
        FROM bank_lots l WHERE l.tenant_id = $1 AND ($2::uuid IS NULL OR l.provider_id = $2)
          AND ($3::text[] IS NULL OR l.account = ANY($3::text[]))) lots
    WHERE remaining <> 0 OR held <> 0 ORDER BY expires_at, effective_at, id"""


async def account_lots(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    provider_id: UUID | None,
    accounts: Sequence[str] | None,
    as_of: datetime,
) -> list[asyncpg.Record]:
    """Lots of these accounts (or of every person and pool), at one provider or all, with their
    remainder and held minutes as of an instant (lots with neither are left out)."""
    return await conn.fetch(
        ACCOUNT_LOTS, tenant_id, provider_id, list(accounts) if accounts is not None else None, as_of
    )


async def bank_providers(conn: asyncpg.Connection, tenant_id: UUID) -> list[UUID]:
    rows = await conn.fetch("SELECT DISTINCT provider_id FROM bank_lots WHERE tenant_id = $1 ORDER BY 1", tenant_id)
    return [row["provider_id"] for row in rows]


async def list_postings(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    *,
    provider_id: UUID | None,
    account: str | None,
    kind: str | None,
    start: datetime | None,
    end: datetime | None,
    after: UUID | None,
    limit: int,
) -> list[asyncpg.Record]:
    """Postings in id order; an account's (a person's or the pool's) are those into or out of its
    lots, found through the lots' indexes (`carebank check` verifies every such posting has its lot)."""
    of_account = (
        """AND p.id IN (
               SELECT i.id FROM bank_lots l JOIN bank_postings i ON i.tenant_id = l.tenant_id AND i.to_lot_id = l.id
               WHERE l.tenant_id = $1 AND l.account = $3 AND ($2::uuid IS NULL OR l.provider_id = $2)
               UNION ALL
               SELECT o.id FROM bank_lots l JOIN bank_postings o ON o.tenant_id = l.tenant_id AND o.from_lot_id = l.id
               WHERE l.tenant_id = $1 AND l.account = $3 AND ($2::uuid IS NULL OR l.provider_id = $2))"""
        if account is not None
        else "AND $3::text IS NULL"
    )
    return await conn.fetch(
        f"""SELECT {_POSTING_COLUMNS}, recorded_at FROM bank_postings p
            WHERE tenant_id = $1 AND ($2::uuid IS NULL OR provider_id = $2) {of_account}
              AND ($4::text IS NULL OR kind = $4)
              AND ($5::timestamptz IS NULL OR effective_at >= $5) AND ($6::timestamptz IS NULL OR effective_at < $6)
              AND ($7::uuid IS NULL OR id > $7)
            ORDER BY id LIMIT $8""",
        tenant_id,
        provider_id,
        account,
        kind,
        start,
        end,
        after,
        limit,
    )


async def postings_by_id(conn: asyncpg.Connection, tenant_id: UUID, ids: Sequence[UUID]) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"""SELECT {_POSTING_COLUMNS}, recorded_at FROM bank_postings
            WHERE tenant_id = $1 AND id = ANY($2::uuid[]) ORDER BY id""",
        tenant_id,
        list(ids),
    )


async def totals_by_kind(
    conn: asyncpg.Connection, tenant_id: UUID, provider_id: UUID | None, start: datetime | None, as_of: datetime
) -> dict[str, int]:
    rows = await conn.fetch(
        """SELECT kind, sum(minutes)::int AS minutes FROM bank_postings
           WHERE tenant_id = $1 AND ($2::uuid IS NULL OR provider_id = $2)
             AND ($3::timestamptz IS NULL OR effective_at >= $3) AND effective_at <= $4
           GROUP BY kind""",
        tenant_id,
        provider_id,
        start,
        as_of,
    )
    return {row["kind"]: row["minutes"] for row in rows}


async def shortfalls(
    conn: asyncpg.Connection, tenant_id: UUID, provider_id: UUID | None, start: datetime | None, as_of: datetime
) -> list[tuple[int, int]]:
    """(minutes, rate) of each shortfall effective in the range."""
    rows = await conn.fetch(
        """SELECT minutes, rate_pence_per_hour FROM bank_shortfalls
           WHERE tenant_id = $1 AND ($2::uuid IS NULL OR provider_id = $2)
             AND ($3::timestamptz IS NULL OR effective_at >= $3) AND effective_at <= $4""",
        tenant_id,
        provider_id,
        start,
        as_of,
    )
    return [(row["minutes"], row["rate_pence_per_hour"]) for row in rows]


async def ledger_accounts(
    conn: asyncpg.Connection, tenant_id: UUID, provider_id: UUID | None, as_of: datetime
) -> list[asyncpg.Record]:
    """Every account's balance as of the instant (people's grouped as `people`)."""
    return await conn.fetch(
        """SELECT CASE WHEN account LIKE 'person:%' THEN 'people' ELSE account END AS account,
                  sum(amount)::int AS balance FROM (
               SELECT to_account AS account, minutes AS amount FROM bank_postings
               WHERE tenant_id = $1 AND ($2::uuid IS NULL OR provider_id = $2) AND effective_at <= $3
               UNION ALL
               SELECT from_account, -minutes FROM bank_postings
               WHERE tenant_id = $1 AND ($2::uuid IS NULL OR provider_id = $2) AND effective_at <= $3) m
           GROUP BY 1""",
        tenant_id,
        provider_id,
        as_of,
    )


# --- what invoices carry ------------------------------------------------------------------------


async def unbilled_expiries(conn: asyncpg.Connection, tenant_id: UUID, contract_id: UUID) -> list[asyncpg.Record]:
    """Expiry postings of this contract's lots that no invoice has credited, if the contract credits them."""
    return await conn.fetch(
        """SELECT p.id, p.minutes, p.effective_at, p.visit_id AS posting_visit, l.visit_id, l.rate_pence_per_hour,
                  l.account, pe.reference AS person_reference
           FROM bank_postings p JOIN bank_lots l ON l.tenant_id = p.tenant_id AND l.id = p.from_lot_id
           JOIN contracts c ON c.tenant_id = l.tenant_id AND c.id = l.contract_id
           LEFT JOIN people pe ON pe.tenant_id = l.tenant_id AND l.account = 'person:' || pe.id::text
           WHERE p.tenant_id = $1 AND l.contract_id = $2 AND p.kind = 'expire'
             AND c.banking ->> 'expiry_action' = 'credit_note'
             AND NOT EXISTS (SELECT 1 FROM bank_billed b WHERE b.tenant_id = p.tenant_id AND b.item_id = p.id)
           ORDER BY p.effective_at, p.id""",
        tenant_id,
        contract_id,
    )


async def unbilled_shortfalls(conn: asyncpg.Connection, tenant_id: UUID, contract_id: UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        """SELECT s.id, s.minutes, s.effective_at, s.visit_id, s.rate_pence_per_hour, pe.reference AS person_reference
           FROM bank_shortfalls s JOIN people pe ON pe.tenant_id = s.tenant_id AND pe.id = s.person_id
           WHERE s.tenant_id = $1 AND s.contract_id = $2
             AND NOT EXISTS (SELECT 1 FROM bank_billed b WHERE b.tenant_id = s.tenant_id AND b.item_id = s.id)
           ORDER BY s.effective_at, s.id""",
        tenant_id,
        contract_id,
    )


async def has_bank_to_bill(conn: asyncpg.Connection, tenant_id: UUID, contract_id: UUID, now: datetime) -> bool:
    """Whether the contract has lots still to expire, or expiries or shortfalls no invoice carried yet."""
    return bool(
        await conn.fetchval(
            """SELECT EXISTS (SELECT 1 FROM bank_lots WHERE tenant_id = $1 AND contract_id = $2 AND expires_at > $3)
                   OR EXISTS (SELECT 1 FROM bank_postings p JOIN bank_lots l ON l.tenant_id = p.tenant_id
                                                                       AND l.id = p.from_lot_id
                              WHERE p.tenant_id = $1 AND l.contract_id = $2 AND p.kind = 'expire'
                                AND NOT EXISTS (SELECT 1 FROM bank_billed b
                                                WHERE b.tenant_id = p.tenant_id AND b.item_id = p.id))
                   OR EXISTS (SELECT 1 FROM bank_shortfalls s WHERE s.tenant_id = $1 AND s.contract_id = $2
                                AND NOT EXISTS (SELECT 1 FROM bank_billed b
                                                WHERE b.tenant_id = s.tenant_id AND b.item_id = s.id))""",
            tenant_id,
            contract_id,
            now,
        )
    )


async def mark_bank_billed(
    conn: asyncpg.Connection, tenant_id: UUID, invoice_id: UUID, item_ids: Sequence[UUID]
) -> None:
    if item_ids:
        await conn.execute(
            "INSERT INTO bank_billed (tenant_id, item_id, invoice_id) SELECT $1, unnest($2::uuid[]), $3",
            tenant_id,
            list(item_ids),
            invoice_id,
        )


# --- invariants (`carebank check`) ---------------------------------------------------------------


async def unbalanced_ledgers(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Ledgers whose accounts do not sum to 0."""
    return await conn.fetch(
        """SELECT tenant_id, provider_id, sum(amount) AS total FROM (
               SELECT tenant_id, provider_id, minutes AS amount FROM bank_postings
               UNION ALL SELECT tenant_id, provider_id, -minutes FROM bank_postings) m
           GROUP BY tenant_id, provider_id HAVING sum(amount) <> 0"""
    )


async def account_breaches(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """People's and pool accounts below 0 counting holds, or whose balance is not the sum of their lots,
    people's whose lock row keeps another balance (`kept`; none without a lock row), lots with a
    negative remainder or more held than remains (`bad_lot`), and lots past expiry with unheld minutes
    that nothing queues to expire (`stuck_lot`; set-wise: one pass per table)."""
    return await conn.fetch(
        """WITH moved AS (
                SELECT tenant_id, to_lot_id AS lot_id, minutes FROM bank_postings WHERE to_lot_id IS NOT NULL
                UNION ALL
                SELECT tenant_id, from_lot_id, -minutes FROM bank_postings WHERE from_lot_id IS NOT NULL),
            remaining AS (SELECT tenant_id, lot_id, sum(minutes) AS remaining FROM moved GROUP BY tenant_id, lot_id),
            held AS (
                SELECT hl.tenant_id, hl.lot_id, sum(hl.minutes) AS held FROM bank_hold_lots hl
                WHERE NOT EXISTS (SELECT 1 FROM bank_hold_ends e WHERE e.tenant_id = hl.tenant_id
                                    AND e.hold_id = hl.hold_id)
                GROUP BY hl.tenant_id, hl.lot_id),
            queued AS (SELECT DISTINCT tenant_id, lot_id FROM bank_expiry_queue),
            lots AS (
                SELECT l.tenant_id, l.provider_id, l.account, coalesce(r.remaining, 0) AS remaining,
                       coalesce(h.held, 0) AS held,
                       l.expires_at <= now() AND q.lot_id IS NULL
                       AND coalesce(r.remaining, 0) > coalesce(h.held, 0) AS stuck
                FROM bank_lots l
                LEFT JOIN remaining r ON r.tenant_id = l.tenant_id AND r.lot_id = l.id
                LEFT JOIN held h ON h.tenant_id = l.tenant_id AND h.lot_id = l.id
                LEFT JOIN queued q ON q.tenant_id = l.tenant_id AND q.lot_id = l.id),
            balances AS (
                SELECT tenant_id, provider_id, account, sum(amount) AS balance FROM (
                    SELECT tenant_id, provider_id, to_account AS account, minutes AS amount FROM bank_postings
                    UNION ALL SELECT tenant_id, provider_id, from_account, -minutes FROM bank_postings) m
                WHERE account = 'pool' OR account LIKE 'person:%'
                GROUP BY tenant_id, provider_id, account),
            by_account AS (
                SELECT tenant_id, provider_id, account, sum(remaining) AS in_lots, sum(held) AS held,
                       bool_or(remaining < 0 OR held > remaining) AS bad_lot, bool_or(stuck) AS stuck_lot
                FROM lots GROUP BY tenant_id, provider_id, account)
            SELECT coalesce(b.tenant_id, a.tenant_id, k.tenant_id) AS tenant_id,
                   coalesce(b.provider_id, a.provider_id, k.provider_id) AS provider_id,
                   coalesce(b.account, a.account, k.account) AS account, coalesce(b.balance, 0) AS balance,
                   coalesce(a.in_lots, 0) AS in_lots, coalesce(a.held, 0) AS held,
                   coalesce(a.bad_lot, false) AS bad_lot, coalesce(a.stuck_lot, false) AS stuck_lot, k.kept
            FROM balances b FULL JOIN by_account a
              ON a.tenant_id = b.tenant_id AND a.provider_id = b.provider_id AND a.account = b.account
            FULL JOIN (SELECT tenant_id, provider_id, account, balance AS kept FROM bank_accounts
                       WHERE account <> 'pool') k
              ON k.tenant_id = coalesce(b.tenant_id, a.tenant_id)
             AND k.provider_id = coalesce(b.provider_id, a.provider_id) AND k.account = coalesce(b.account, a.account)
            WHERE coalesce(b.balance, 0) <> coalesce(a.in_lots, 0)
               OR coalesce(b.balance, 0) - coalesce(a.held, 0) < 0 OR coalesce(a.bad_lot, false)
               OR coalesce(a.stuck_lot, false)
               OR (coalesce(b.account, a.account, k.account) LIKE 'person:%'
                   AND k.kept IS DISTINCT FROM coalesce(b.balance, 0))"""
    )


async def reference_breaches(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Postings and lots whose references do not hold (their foreign keys to providers, contracts and
    visits were dropped for speed, migration 0011): a provider, contract or visit that does not exist,
    a posting's lot of another ledger or account, a lot's contract of another provider."""
    return await conn.fetch(
        """SELECT 'posting' AS what, p.tenant_id, p.id FROM bank_postings p
           LEFT JOIN providers pr ON pr.tenant_id = p.tenant_id AND pr.id = p.provider_id
           LEFT JOIN visits v ON v.tenant_id = p.tenant_id AND v.id = p.visit_id
           LEFT JOIN bank_lots fl ON fl.tenant_id = p.tenant_id AND fl.id = p.from_lot_id
           LEFT JOIN bank_lots tl ON tl.tenant_id = p.tenant_id AND tl.id = p.to_lot_id
           WHERE pr.id IS NULL OR (p.visit_id IS NOT NULL AND v.id IS NULL)
              OR fl.provider_id <> p.provider_id OR fl.account <> p.from_account
              OR tl.provider_id <> p.provider_id OR tl.account <> p.to_account
           UNION ALL
           SELECT 'lot', l.tenant_id, l.id FROM bank_lots l
           LEFT JOIN contracts c ON c.tenant_id = l.tenant_id AND c.id = l.contract_id
           LEFT JOIN visits v ON v.tenant_id = l.tenant_id AND v.id = l.visit_id
           WHERE c.id IS NULL OR c.provider_id <> l.provider_id OR (l.visit_id IS NOT NULL AND v.id IS NULL)"""
    )


async def hold_breaches(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Holds whose earmarked lots do not add up to the hold, or that earmark another account's or
    another provider's lots."""
    return await conn.fetch(
        """SELECT * FROM (
               SELECT h.tenant_id, h.id, h.minutes, coalesce(sum(hl.minutes), 0) AS earmarked,
                      coalesce(bool_or(l.account <> h.account OR l.provider_id <> h.provider_id), false)
                          AS foreign_lot
               FROM bank_holds h LEFT JOIN bank_hold_lots hl ON hl.tenant_id = h.tenant_id AND hl.hold_id = h.id
               LEFT JOIN bank_lots l ON l.tenant_id = hl.tenant_id AND l.id = hl.lot_id
               GROUP BY h.tenant_id, h.id, h.minutes) holds
           WHERE minutes <> earmarked OR foreign_lot"""
    )


async def banking_visit_ids(conn: asyncpg.Connection) -> list[tuple[UUID, UUID]]:
    """Every visit the bank may care about, or has postings for."""
    rows = await conn.fetch(
        """SELECT v.tenant_id, v.id FROM visits v JOIN contracts c ON c.tenant_id = v.tenant_id AND c.id = v.contract_id
           WHERE v.funding = 'bank' OR c.model = 'outcome_based'
           UNION SELECT tenant_id, visit_id FROM bank_postings WHERE visit_id IS NOT NULL"""
    )
    return [(row["tenant_id"], row["id"]) for row in rows]


async def append_only_tables(conn: asyncpg.Connection) -> set[str]:
    """Bank tables that carry the append-only trigger."""
    rows = await conn.fetch(
        """SELECT DISTINCT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
           JOIN pg_proc p ON p.oid = t.tgfoid WHERE p.proname = 'bank_append_only' AND NOT t.tgisinternal"""
    )
    return {row["relname"] for row in rows}
