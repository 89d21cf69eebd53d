"""Reports HTTP: the commissioner's delivery and outcomes reports for a date range."""

from __future__ import annotations

from datetime import date
from typing import Annotated
from uuid import UUID

import asyncpg
from litestar import Controller, get
from litestar.params import QueryParameter

from schemas.reports import DeliveryReport, OutcomesReport
from services.common.auth import allow
from services.common.deps import Caller, Conn
from services.common.errors import not_found
from services.identity import store as identity_store
from services.reports import build, store

FromParam = Annotated[date, QueryParameter(name="from", description="first local date of planned start")]
ToParam = Annotated[date, QueryParameter(name="to", description="last local date of planned start (inclusive)")]
ProviderParam = Annotated[UUID | None, QueryParameter(description="only this provider")]


class ReportController(Controller):
    """Commissioners' reports: per provider and week (Monday, tenant time) of the visit's planned start."""

    tags = ["reports"]
    guards = [allow("commissioner")]

    @get("/v1/reports/delivery", operation_id="deliveryReport")
    async def delivery(
        self, conn: Conn, caller: Caller, date_from: FromParam, date_to: ToParam, provider_id: ProviderParam = None
    ) -> DeliveryReport:
        """Visits, minutes, cost planned vs paid and the saving, punctuality, verified in the home."""
        tenant = await identity_store.get_tenant(conn, caller.tenant)
        assert tenant is not None
        await _provider_in_reach(conn, caller.tenant, provider_id)
        return await build.delivery_report(conn, tenant, date_from, date_to, provider_id)

    @get("/v1/reports/outcomes", operation_id="outcomesReport")
    async def outcomes(
        self, conn: Conn, caller: Caller, date_from: FromParam, date_to: ToParam, provider_id: ProviderParam = None
    ) -> OutcomesReport:
        """Outcomes met by ASCOT domain on delivered visits; the bank figures per provider."""
        tenant = await identity_store.get_tenant(conn, caller.tenant)
        assert tenant is not None
        await _provider_in_reach(conn, caller.tenant, provider_id)
        return await build.outcomes_report(conn, tenant, date_from, date_to, provider_id)


async def _provider_in_reach(conn: asyncpg.Connection, tenant_id: UUID, provider_id: UUID | None) -> None:
    if provider_id is not None and not await store.provider_exists(conn, tenant_id, provider_id):
        raise not_found("provider", "provider_id")
