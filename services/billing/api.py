"""Billing HTTP: invoice runs, invoices as JSON or CSV, payments and disputes."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any
from uuid import UUID

import asyncpg
from litestar import Controller, Request, get, post
from litestar.params import JSONBody, PathParameter, QueryParameter
from litestar.response import Response

from schemas.billing import DisputeIn, Invoice, InvoiceRunIn, InvoiceSummary, Payment, PaymentIn
from schemas.common import Page
from services.billing import run, store
from services.catalog import store as catalog_store
from services.common.auth import Principal, allow, provider_scope
from services.common.deps import Caller, Conn
from services.common.errors import found_or_404, not_found
from services.common.ids import new_id
from services.common.pagination import CursorParam, LimitParam, decode_cursor, page_of
from services.identity import store as identity_store

CSV_COLUMNS = [
    "invoice_number",
    "line_id",
    "kind",
    "adjusts_line_id",
    "visit_id",
    "person_reference",
    "carer_id",
    "date",
    "band",
    "planned_min",
    "check_in",
    "check_out",
    "payable_min",
    "rate_per_hour",
    "amount",
    "funding",
    "exceptions",
]


def _pounds(pence: int) -> str:
    return str((Decimal(pence) / 100).quantize(Decimal("0.01")))


def invoice_csv(invoice: Invoice) -> str:
    """One row per line, money in decimal pounds; the columns are documented in docs/api.md."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for line in invoice.lines:
        writer.writerow(
            [
                invoice.number,
                line.line_id,
                line.kind,
                line.adjusts_line_id or "",
                line.visit_id or "",
                line.person_reference or "",
                line.carer_id or "",
                line.date or "",
                line.band or "",
                "" if line.planned_min is None else line.planned_min,
                line.check_in.isoformat() if line.check_in else "",
                line.check_out.isoformat() if line.check_out else "",
                line.payable_min,
                _pounds(line.rate_pence_per_hour),
                _pounds(line.amount_pence),
                line.funding or "",
                ";".join(line.exceptions),
            ]
        )
    return out.getvalue()


class InvoiceController(Controller):
    """Invoices: run by a commissioner, pulled by providers, paid and disputed as separate records."""

    tags = ["billing"]

    @post("/v1/invoice-runs", operation_id="runInvoice", guards=[allow("commissioner")])
    async def run_invoice(self, data: JSONBody[InvoiceRunIn], conn: Conn, caller: Caller) -> Response[Invoice]:
        """201 with the invoice the first time, 200 with the same invoice after; 422 before it is settled."""
        tenant = await identity_store.get_tenant(conn, caller.tenant)
        assert tenant is not None
        contract = await catalog_store.get_contract(conn, caller.tenant, data.contract_id)
        if contract is None:
            raise not_found("contract", "contract_id")
        provider = await catalog_store.get_provider(conn, caller.tenant, contract.provider_id)
        assert provider is not None
        async with conn.transaction():
            invoice_id, created = await run.run_invoice(
                conn, tenant, contract, provider.code, data.period_start, datetime.now(tz=UTC)
            )
        invoice = found_or_404(await store.get_invoice(conn, caller.tenant, invoice_id), "invoice")
        return Response(invoice, status_code=201 if created else 200)

    @get("/v1/invoices", operation_id="listInvoices", guards=[allow("commissioner", "provider")])
    async def list_invoices(
        self,
        conn: Conn,
        caller: Caller,
        provider_id: Annotated[UUID | None, QueryParameter()] = None,
        contract_id: Annotated[UUID | None, QueryParameter()] = None,
        limit: LimitParam = 50,
        cursor: CursorParam = None,
    ) -> Page[InvoiceSummary]:
        """Invoices (a provider sees its own)."""
        rows = await store.list_invoices(
            conn,
            caller.tenant,
            provider_id=provider_scope(caller, provider_id),
            contract_id=contract_id,
            after=decode_cursor(cursor),
            limit=limit + 1,
        )
        return page_of(rows, limit)

    @get("/v1/invoices/{invoice_id:uuid}", operation_id="getInvoice", guards=[allow("commissioner", "provider")])
    async def get_invoice(
        self, request: Request[Any, Any, Any], invoice_id: Annotated[UUID, PathParameter()], conn: Conn, caller: Caller
    ) -> Response[Any]:
        """One invoice as JSON, or its lines as CSV with `Accept: text/csv`."""
        invoice = await _invoice_in_reach(conn, caller, invoice_id)
        if "text/csv" in request.headers.get("accept", ""):
            return Response(
                invoice_csv(invoice),
                media_type="text/csv",
                headers={"Content-Disposition": f'attachment; filename="{invoice.number}.csv"'},
            )
        return Response(invoice)

    @post("/v1/invoices/{invoice_id:uuid}/payments", operation_id="recordPayment", guards=[allow("commissioner")])
    async def record_payment(
        self, invoice_id: Annotated[UUID, PathParameter()], data: JSONBody[PaymentIn], conn: Conn, caller: Caller
    ) -> Payment:
        """Record a payment (append-only); the invoice is `paid` once payments cover its total."""
        await _invoice_in_reach(conn, caller, invoice_id)
        return await store.insert_payment(
            conn,
            caller.tenant,
            {
                "id": new_id(),
                "invoice_id": invoice_id,
                "paid_on": data.paid_on,
                "amount_pence": data.amount_pence,
                "reference": data.reference,
                "recorded_by": caller.client_id,
            },
        )

    @post("/v1/invoices/{invoice_id:uuid}/disputes", operation_id="disputeLines", guards=[allow("provider")])
    async def dispute(
        self, invoice_id: Annotated[UUID, PathParameter()], data: JSONBody[DisputeIn], conn: Conn, caller: Caller
    ) -> Invoice:
        """Dispute lines of the provider's own invoice, each with a note."""
        await _invoice_in_reach(conn, caller, invoice_id)
        known = await store.line_ids_of(conn, caller.tenant, invoice_id)
        for index, line in enumerate(data.lines):
            if line.line_id not in known:
                raise not_found("line on this invoice", f"lines[{index}].line_id")
        await store.insert_disputes(
            conn,
            caller.tenant,
            [(new_id(), invoice_id, line.line_id, line.note, caller.client_id) for line in data.lines],
        )
        return await _invoice_in_reach(conn, caller, invoice_id)


async def _invoice_in_reach(conn: asyncpg.Connection, caller: Principal, invoice_id: UUID) -> Invoice:
    invoice = await store.get_invoice(conn, caller.tenant, invoice_id)
    if invoice is None or (caller.role == "provider" and invoice.provider_id != caller.provider_id):
        raise not_found("invoice")
    return invoice
