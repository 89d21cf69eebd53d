"""Billing SQL: invoice runs' inputs, gapless numbers, invoices, lines, payments and disputes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from schemas.billing import Invoice, InvoiceLine, InvoiceSummary, Payment

_FINAL = "('completed', 'missed', 'cancelled')"


async def lock_contract_runs(conn: asyncpg.Connection, tenant_id: UUID, contract_id: UUID) -> None:
    """One run per contract at a time (transaction-scoped)."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 1))", f"{tenant_id}:{contract_id}:run")


async def invoice_id_for(
    conn: asyncpg.Connection, tenant_id: UUID, contract_id: UUID, period_start: Any
) -> UUID | None:
    value = await conn.fetchval(
        "SELECT id FROM invoices WHERE tenant_id = $1 AND contract_id = $2 AND period_start = $3",
        tenant_id,
        contract_id,
        period_start,
    )
    return value if isinstance(value, UUID) else None


async def visits_to_refresh(
    conn: asyncpg.Connection, tenant_id: UUID, contract_id: UUID, ends_at: datetime, now: datetime
) -> list[UUID]:
    """Visits of the contract whose state the clock or a queued change may have moved (two indexed reads)."""
    rows = await conn.fetch(
        """SELECT v.id FROM visits v
           WHERE v.tenant_id = $1 AND v.contract_id = $2 AND v.planned_start < $3 AND v.next_check_at <= $4
           UNION
           SELECT v.id FROM reconcile_queue q JOIN visits v ON v.tenant_id = q.tenant_id AND v.id = q.visit_id
           WHERE q.tenant_id = $1 AND v.contract_id = $2 AND v.planned_start < $3""",
        tenant_id,
        contract_id,
        ends_at,
        now,
    )
    return [row["id"] for row in rows]


async def lock_run_visits(
    conn: asyncpg.Connection, tenant_id: UUID, contract_id: UUID, ends_at: datetime, stale: Sequence[UUID]
) -> None:
    """Lock, in id order, every visit a run of the contract may bill or adjust: those planned before
    `ends_at` not yet billed, those billed whose state was written again, and `stale` (the ones the
    run reconciles first). Reconciliation locks visits in id order and then bank accounts; a run
    that locked its final visits in planned order after reconciling the stale ones (accounts
    included) could wait on the worker crosswise."""
    await conn.fetchval(
        """SELECT count(*) FROM (
           SELECT 1 FROM visits v
           WHERE v.tenant_id = $1 AND v.contract_id = $2
             AND ((v.planned_start < $3
                   AND NOT EXISTS (SELECT 1 FROM visit_billing b WHERE b.tenant_id = v.tenant_id AND b.visit_id = v.id))
                  OR EXISTS (SELECT 1 FROM visit_billing b
                             WHERE b.tenant_id = v.tenant_id AND b.visit_id = v.id AND b.rebill)
                  OR v.id = ANY($4::uuid[]))
           ORDER BY v.id
           FOR NO KEY UPDATE OF v) locked""",
        tenant_id,
        contract_id,
        ends_at,
        list(stale),
    )


_VISIT_FIELDS = """v.id, v.planned_start, v.band_start, v.planned_min, v.carers_required, v.funding, v.status,
    v.cancellation, v.actual, v.exceptions, p.reference AS person_reference"""


async def final_unbilled_visits(
    conn: asyncpg.Connection, tenant_id: UUID, contract_id: UUID, ends_at: datetime
) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"""SELECT {_VISIT_FIELDS} FROM visits v JOIN people p ON p.tenant_id = v.tenant_id AND p.id = v.person_id
            WHERE v.tenant_id = $1 AND v.contract_id = $2 AND v.planned_start < $3 AND v.status IN {_FINAL}
              AND NOT EXISTS (SELECT 1 FROM visit_billing b WHERE b.tenant_id = v.tenant_id AND b.visit_id = v.id)
            ORDER BY v.planned_start, v.id
            FOR NO KEY UPDATE OF v""",
        tenant_id,
        contract_id,
        ends_at,
    )


async def pending_count(conn: asyncpg.Connection, tenant_id: UUID, contract_id: UUID, ends_at: datetime) -> int:
    return int(
        await conn.fetchval(
            f"""SELECT count(*) FROM visits v
                WHERE v.tenant_id = $1 AND v.contract_id = $2 AND v.planned_start < $3 AND v.status NOT IN {_FINAL}
                  AND NOT EXISTS (SELECT 1 FROM visit_billing b WHERE b.tenant_id = v.tenant_id AND b.visit_id = v.id)
                  AND NOT (v.origin = 'unplanned' AND NOT EXISTS (
                        SELECT 1 FROM visit_events e WHERE e.tenant_id = v.tenant_id AND e.visit_id = v.id))
""",
            tenant_id,
            contract_id,
            ends_at,
        )
    )


async def changed_billed_visits(conn: asyncpg.Connection, tenant_id: UUID, contract_id: UUID) -> list[asyncpg.Record]:
    """Invoiced visits whose state was written again since a run last looked (locked until the run
    commits): candidates for adjustments. Those the run locked first (`lock_run_visits`) come back as
    they are; one written again only since, and held right now by another transaction, is skipped, not
    waited for (decision 156): the run holds its other visits and accounts, and the holder (a drainer's
    batch, in id order) may be waiting for one of them. Its `rebill` stays set, so the next run adjusts
    it, once whatever holds it has committed."""
    return await conn.fetch(
        f"""SELECT {_VISIT_FIELDS} FROM visits v JOIN people p ON p.tenant_id = v.tenant_id AND p.id = v.person_id
            JOIN visit_billing b ON b.tenant_id = v.tenant_id AND b.visit_id = v.id AND b.rebill
            WHERE v.tenant_id = $1 AND v.contract_id = $2
            ORDER BY v.planned_start, v.id
            FOR NO KEY UPDATE OF v SKIP LOCKED""",
        tenant_id,
        contract_id,
    )


async def mark_billed(conn: asyncpg.Connection, tenant_id: UUID, visit_ids: Sequence[UUID]) -> None:
    """The run has billed (or checked) these visits' current state."""
    await conn.execute(
        """INSERT INTO visit_billing (tenant_id, visit_id) SELECT $1, unnest($2::uuid[])
           ON CONFLICT (tenant_id, visit_id) DO UPDATE SET rebill = false""",
        tenant_id,
        list(visit_ids),
    )


async def billed_places(conn: asyncpg.Connection, tenant_id: UUID, visit_ids: Sequence[UUID]) -> list[asyncpg.Record]:
    """Per visit place: its original visit line (id, rate) and everything invoiced for it so far."""
    return await conn.fetch(
        """SELECT visit_id, place, sum(amount_pence) AS invoiced,
                  (array_agg(line_id) FILTER (WHERE kind = 'visit'))[1] AS original_line,
                  max(rate_pence_per_hour) FILTER (WHERE kind = 'visit') AS rate,
                  max(band) FILTER (WHERE kind = 'visit') AS band,
                  max(date) FILTER (WHERE kind = 'visit') AS date
           FROM invoice_lines WHERE tenant_id = $1 AND visit_id = ANY($2::uuid[])
           GROUP BY visit_id, place""",
        tenant_id,
        list(visit_ids),
    )


async def next_number(conn: asyncpg.Connection, tenant_id: UUID, provider_id: UUID, year: int) -> int:
    """The next invoice number of the provider this year; the counter row stays locked until commit,
    so concurrent runs take turns and a rolled-back run gives its number back."""
    value = await conn.fetchval(
        """INSERT INTO invoice_counters (tenant_id, provider_id, year, last_number) VALUES ($1, $2, $3, 1)
           ON CONFLICT (tenant_id, provider_id, year) DO UPDATE SET last_number = invoice_counters.last_number + 1
           RETURNING last_number""",
        tenant_id,
        provider_id,
        year,
    )
    return int(value)


async def insert_invoice(
    conn: asyncpg.Connection, tenant_id: UUID, fields: dict[str, Any], lines: list[dict[str, Any]]
) -> None:
    await conn.execute(
        """INSERT INTO invoices (tenant_id, id, contract_id, provider_id, period_start, period_end, number, currency,
                                 issued_at, total_pence, planned_total_pence, saving_pence, pending)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)""",
        tenant_id,
        *(
            fields[k]
            for k in (
                "id",
                "contract_id",
                "provider_id",
                "period_start",
                "period_end",
                "number",
                "currency",
                "issued_at",
                "total_pence",
                "planned_total_pence",
                "saving_pence",
                "pending",
            )
        ),
    )
    if not lines:
        return
    names = [
        "line_id",
        "position",
        "kind",
        "adjusts_line_id",
        "visit_id",
        "place",
        "person_reference",
        "carer_id",
        "date",
        "band",
        "planned_min",
        "check_in",
        "check_out",
        "payable_min",
        "rate_pence_per_hour",
        "amount_pence",
        "funding",
        "exceptions",
    ]
    records = [(tenant_id, fields["id"], *(line[n] for n in names)) for line in lines]
    await conn.copy_records_to_table("invoice_lines", records=records, columns=["tenant_id", "invoice_id", *names])


_SUMMARY = """i.id, i.number, i.contract_id, i.provider_id, i.period_start, i.period_end, i.issued_at, i.total_pence,
    i.planned_total_pence, i.saving_pence, i.pending, i.currency,
    coalesce((SELECT sum(amount_pence) FROM payments p
              WHERE p.tenant_id = i.tenant_id AND p.invoice_id = i.id), 0)::bigint AS paid_pence,
    EXISTS (SELECT 1 FROM disputes d WHERE d.tenant_id = i.tenant_id AND d.invoice_id = i.id) AS disputed"""


def _status(row: asyncpg.Record) -> str:
    if row["paid_pence"] >= row["total_pence"] and (row["paid_pence"] > 0 or row["total_pence"] == 0):
        return "paid"
    return "disputed" if row["disputed"] else "issued"


async def get_invoice(conn: asyncpg.Connection, tenant_id: UUID, invoice_id: UUID) -> Invoice | None:
    row = await conn.fetchrow(
        f"SELECT {_SUMMARY} FROM invoices i WHERE i.tenant_id = $1 AND i.id = $2", tenant_id, invoice_id
    )
    if row is None:
        return None
    lines = await conn.fetch(
        """SELECT line_id, kind, adjusts_line_id, visit_id, person_reference, carer_id, date, band, planned_min,
                  check_in, check_out, payable_min, rate_pence_per_hour, amount_pence, funding, exceptions
           FROM invoice_lines WHERE tenant_id = $1 AND invoice_id = $2 ORDER BY position""",
        tenant_id,
        invoice_id,
    )
    return Invoice(
        id=row["id"],
        number=row["number"],
        contract_id=row["contract_id"],
        provider_id=row["provider_id"],
        period_start=row["period_start"],
        period_end=row["period_end"],
        status=_status(row),  # type: ignore[arg-type]
        currency=row["currency"],
        issued_at=row["issued_at"],
        lines=[InvoiceLine(**{**dict(line), "exceptions": list(line["exceptions"])}) for line in lines],
        total_pence=row["total_pence"],
        planned_total_pence=row["planned_total_pence"],
        saving_pence=row["saving_pence"],
        pending=row["pending"],
        paid_pence=row["paid_pence"],
    )


async def list_invoices(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    *,
    provider_id: UUID | None,
    contract_id: UUID | None,
    after: UUID | None,
    limit: int,
) -> list[InvoiceSummary]:
    rows = await conn.fetch(
        f"""SELECT {_SUMMARY} FROM invoices i
            WHERE i.tenant_id = $1 AND ($2::uuid IS NULL OR i.provider_id = $2)
              AND ($3::uuid IS NULL OR i.contract_id = $3)
              AND ($4::uuid IS NULL OR i.id > $4)
            ORDER BY i.id LIMIT $5""",
        tenant_id,
        provider_id,
        contract_id,
        after,
        limit,
    )
    return [
        InvoiceSummary(
            id=r["id"],
            number=r["number"],
            contract_id=r["contract_id"],
            provider_id=r["provider_id"],
            period_start=r["period_start"],
            period_end=r["period_end"],
            status=_status(r),  # type: ignore[arg-type]
            issued_at=r["issued_at"],
            total_pence=r["total_pence"],
            paid_pence=r["paid_pence"],
        )
        for r in rows
    ]


async def insert_payment(conn: asyncpg.Connection, tenant_id: UUID, fields: dict[str, Any]) -> Payment:
    row = await conn.fetchrow(
        """INSERT INTO payments (tenant_id, id, invoice_id, paid_on, amount_pence, reference, recorded_by)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           RETURNING id, invoice_id, paid_on, amount_pence, reference, recorded_at""",
        tenant_id,
        *(fields[k] for k in ("id", "invoice_id", "paid_on", "amount_pence", "reference", "recorded_by")),
    )
    assert row is not None
    return Payment(**dict(row))


async def line_ids_of(conn: asyncpg.Connection, tenant_id: UUID, invoice_id: UUID) -> set[UUID]:
    rows = await conn.fetch(
        "SELECT line_id FROM invoice_lines WHERE tenant_id = $1 AND invoice_id = $2", tenant_id, invoice_id
    )
    return {row["line_id"] for row in rows}


async def insert_disputes(
    conn: asyncpg.Connection, tenant_id: UUID, rows: list[tuple[UUID, UUID, UUID, str, str]]
) -> None:
    """(id, invoice, line, note, raised_by) each."""
    await conn.executemany(
        "INSERT INTO disputes (tenant_id, id, invoice_id, line_id, note, raised_by) VALUES ($1, $2, $3, $4, $5, $6)",
        [(tenant_id, *row) for row in rows],
    )


async def contracts_to_invoice(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Every contract of every tenant, with what a run needs to know about its tenant and provider."""
    return await conn.fetch(
        """SELECT c.tenant_id, c.id AS contract_id, p.code AS provider_code FROM contracts c
           JOIN providers p ON p.tenant_id = c.tenant_id AND p.id = c.provider_id ORDER BY c.tenant_id, c.id"""
    )


async def invoiced_periods(conn: asyncpg.Connection, tenant_id: UUID, contract_id: UUID) -> set[Any]:
    rows = await conn.fetch(
        "SELECT period_start FROM invoices WHERE tenant_id = $1 AND contract_id = $2", tenant_id, contract_id
    )
    return {row["period_start"] for row in rows}


async def visit_invoiced(conn: asyncpg.Connection, tenant_id: UUID, visit_id: UUID) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM visit_billing WHERE tenant_id = $1 AND visit_id = $2)", tenant_id, visit_id
        )
    )


async def has_unbilled_visits(conn: asyncpg.Connection, tenant_id: UUID, contract_id: UUID) -> bool:
    """Whether any visit of the contract is not invoiced yet or changed since it was."""
    return bool(
        await conn.fetchval(
            """SELECT EXISTS (
                   SELECT 1 FROM visits v WHERE v.tenant_id = $1 AND v.contract_id = $2
                     AND NOT EXISTS (SELECT 1 FROM visit_billing b
                                     WHERE b.tenant_id = v.tenant_id AND b.visit_id = v.id AND NOT b.rebill))""",
            tenant_id,
            contract_id,
        )
    )
