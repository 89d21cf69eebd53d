"""Dependencies every controller uses: a pooled connection and the authenticated caller."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import asyncpg
from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide

from infra.db import acquire
from services.common.auth import Principal
from services.common.errors import problem


async def provide_conn(state: State) -> AsyncGenerator[asyncpg.Connection, None]:
    """A connection from the app's pool for the length of one request."""
    async with acquire(state.pool) as conn:
        yield conn


def provide_caller(request: Request[Any, Any, Any]) -> Principal:
    """The principal that the JWT middleware put on the request."""
    user = request.scope.get("user")
    if not isinstance(user, Principal):
        raise problem(401, "unauthorized", "a valid bearer token is required")
    return user


DEPENDENCIES = {
    "conn": Provide(provide_conn),
    "caller": Provide(provide_caller, sync_to_thread=False),
}

Conn = NamedDependency[asyncpg.Connection]
Caller = NamedDependency[Principal]
