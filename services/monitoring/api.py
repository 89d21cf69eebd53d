"""Monitoring HTTP: alerts, their acknowledgement and live stream, and the live board."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

import structlog
from litestar import Controller, Request, get, post
from litestar.channels import ChannelsPlugin
from litestar.di import NamedDependency
from litestar.params import PathParameter, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage
from redis.exceptions import RedisError

from schemas.common import Page
from schemas.monitoring import Alert, AlertKind, AlertStatus, LiveBoard
from services.common.auth import allow, provider_scope
from services.common.deps import Caller, Conn
from services.common.errors import found_or_404, not_found
from services.common.pagination import CursorParam, LimitParam, decode_cursor, page_of
from services.monitoring import store
from services.monitoring.board import LiveBoards, current, on_site_of
from services.monitoring.jobs import ON_SITE_WINDOW
from services.monitoring.live import provider_channel, tenant_channel

log = structlog.get_logger("carebank.live")


class AlertController(Controller):
    """Alerts of the caller's tenant (a provider's own)."""

    path = "/v1/alerts"
    tags = ["monitoring"]
    guards = [allow("commissioner", "provider")]

    @get("/", operation_id="listAlerts")
    async def list_alerts(
        self,
        conn: Conn,
        caller: Caller,
        status: Annotated[AlertStatus | None, QueryParameter()] = None,
        kind: Annotated[AlertKind | None, QueryParameter()] = None,
        provider_id: Annotated[UUID | None, QueryParameter()] = None,
        limit: LimitParam = 50,
        cursor: CursorParam = None,
    ) -> Page[Alert]:
        """Alerts by status and kind."""
        rows = await store.list_alerts(
            conn,
            caller.tenant,
            provider_id=provider_scope(caller, provider_id),
            status=status,
            kind=kind,
            after=decode_cursor(cursor),
            limit=limit + 1,
        )
        return page_of(rows, limit)

    @get("/stream", operation_id="alertStream")
    async def stream(
        self, request: Request[Any, Any, Any], channels: NamedDependency[ChannelsPlugin], caller: Caller
    ) -> ServerSentEvent:
        """Alerts as server-sent events (`event: alert`, JSON data) as the worker raises and resolves them."""
        namespace = request.app.state.settings.redis_namespace
        name = (
            provider_channel(namespace, caller.tenant, caller.provider_id)
            if caller.role == "provider" and caller.provider_id is not None
            else tenant_channel(namespace, caller.tenant)
        )

        async def events() -> AsyncGenerator[ServerSentEventMessage, None]:
            async with channels.start_subscription([name]) as subscriber:
                yield ServerSentEventMessage(data=None, comment="subscribed")
                async for message in subscriber.iter_events():
                    yield ServerSentEventMessage(data=message.decode(), event="alert")

        return ServerSentEvent(events())

    @post("/{alert_id:uuid}/ack", operation_id="acknowledgeAlert", status_code=200)
    async def acknowledge(self, alert_id: Annotated[UUID, PathParameter()], conn: Conn, caller: Caller) -> Alert:
        """Record who acknowledged the alert (an outside_geofence alert is closed by it)."""
        alert = await store.get_alert(conn, caller.tenant, alert_id)
        if alert is None or (caller.role == "provider" and alert.provider_id != caller.provider_id):
            raise not_found("alert")
        acknowledged = await store.acknowledge(conn, caller.tenant, alert_id, caller.client_id, datetime.now(tz=UTC))
        return found_or_404(acknowledged, "alert")


class LiveController(Controller):
    """The live board."""

    path = "/v1/live"
    tags = ["monitoring"]
    guards = [allow("commissioner", "provider")]

    @get("/", operation_id="liveBoard")
    async def live(
        self,
        request: Request[Any, Any, Any],
        conn: Conn,
        caller: Caller,
        provider_id: Annotated[UUID | None, QueryParameter()] = None,
    ) -> LiveBoard:
        """Carers on site now, by check-in (a provider sees its own), from Redis; rebuilt from PostgreSQL
        when Redis lost it, read from PostgreSQL while Redis is away."""
        now = datetime.now(tz=UTC)
        scope = provider_scope(caller, provider_id)
        boards = LiveBoards(request.app.state.redis, request.app.state.settings.redis_namespace)
        try:
            entries = await boards.read(caller.tenant)
            if entries is None:
                rows = await store.on_site(conn, caller.tenant, None, now - ON_SITE_WINDOW)
                entries = [on_site_of(row) for row in rows]
                await boards.replace({caller.tenant: entries})
        except (RedisError, OSError) as exc:
            log.warning("redis_unavailable_fail_open", op="live_board", error=type(exc).__name__)
            rows = await store.on_site(conn, caller.tenant, scope, now - ON_SITE_WINDOW)
            entries = [on_site_of(row) for row in rows]
        return LiveBoard(as_of=now, on_site=current(entries, scope, now - ON_SITE_WINDOW))
