"""`Idempotency-Key` on creating calls: a retried POST gets the first answer, not a second row.

Kept in PostgreSQL per (tenant, credential, key) for 7 days with a hash of the request. A
placeholder row is written before the handler runs, so two concurrent requests with one key
cannot both create: the second gets 409 `request_in_progress`. Only 2xx answers are kept;
after any other answer the key is free again, since the request changed nothing.
"""

from __future__ import annotations

import hashlib
from typing import Any
from uuid import UUID

import asyncpg
import msgspec
from litestar.types import (
    ASGIApp,
    HTTPRequestEvent,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Message,
    Receive,
    ReceiveMessage,
    Scope,
    Send,
)

from services.common.auth import Principal
from services.common.errors import problem

HEADER = b"idempotency-key"
KEEP_DAYS = 7
MAX_KEY_LENGTH = 255
_NO_TENANT = UUID(int=0)
_IN_PROGRESS = 0
PLACEHOLDER_LEASE_S = 60.0


async def purge_expired(pool: asyncpg.Pool) -> int:
    """Forget keys older than 7 days (a worker job); returns how many went."""
    result = await pool.execute(
        "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(days => $1)", KEEP_DAYS
    )
    return int(result.split()[-1])


def idempotency_middleware(app: ASGIApp) -> ASGIApp:
    """Replay the stored answer for a repeated (credential, key, request)."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope["headers"])
        key_raw = headers.get(HEADER)
        user = scope.get("user")
        max_body = scope["app"].state.settings.max_body_bytes if key_raw is not None else 0
        too_big = int(headers.get(b"content-length", b"0") or 0) > max_body
        if key_raw is None or scope.get("method") != "POST" or not isinstance(user, Principal) or too_big:
            await app(scope, receive, send)
            return
        key = key_raw.decode("latin-1")
        if not 0 < len(key) <= MAX_KEY_LENGTH:
            await _send_problem(
                send,
                422,
                "invalid_idempotency_key",
                f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters",
            )
            return
        body = await _read_body(receive)
        request_hash = hashlib.sha256(scope["path"].encode() + b"\n" + body).hexdigest()
        pool: asyncpg.Pool = scope["app"].state.pool
        tenant_id = user.tenant_id or _NO_TENANT
        ident = (tenant_id, user.client_id, key)

        # A placeholder older than the lease was left by a process that died mid-request: take it over.
        claimed = await pool.fetchrow(
            """INSERT INTO idempotency_keys (tenant_id, client_id, key, request_hash, status_code, body)
               VALUES ($1, $2, $3, $4, $5, '')
               ON CONFLICT (tenant_id, client_id, key) DO UPDATE
                   SET request_hash = EXCLUDED.request_hash, created_at = now()
                   WHERE idempotency_keys.status_code = 0
                     AND idempotency_keys.created_at < now() - make_interval(secs => $6)
               RETURNING key""",
            *ident,
            request_hash,
            _IN_PROGRESS,
            PLACEHOLDER_LEASE_S,
        )
        if claimed is None:
            await _answer_repeat(scope, receive, send, pool, ident, request_hash)
            return

        captured: dict[str, Any] = {"status": 500, "headers": [], "body": bytearray()}

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                captured["status"] = message["status"]
                captured["headers"] = list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                captured["body"].extend(message.get("body", b""))
            await send(message)

        try:
            await app(scope, _replay(body, receive), capture)
        finally:
            if 200 <= captured["status"] < 300:
                await pool.execute(
                    """UPDATE idempotency_keys SET status_code = $4, body = $5
                       WHERE tenant_id = $1 AND client_id = $2 AND key = $3""",
                    *ident,
                    captured["status"],
                    bytes(captured["body"]),
                )
            else:
                await pool.execute(
                    "DELETE FROM idempotency_keys WHERE tenant_id = $1 AND client_id = $2 AND key = $3",
                    *ident,
                )

    return middleware


async def _answer_repeat(
    scope: Scope,
    receive: Receive,
    send: Send,
    pool: asyncpg.Pool,
    ident: tuple[UUID, str, str],
    request_hash: str,
) -> None:
    row = await pool.fetchrow(
        """SELECT request_hash, status_code, body FROM idempotency_keys
           WHERE tenant_id = $1 AND client_id = $2 AND key = $3""",
        *ident,
    )
    if row is None:  # expired and purged between the two statements: treat as in progress
        await _send_problem(send, 409, "request_in_progress", "retry in a moment")
    elif row["request_hash"] != request_hash:
        await _send_problem(
            send, 409, "idempotency_key_reused", "this Idempotency-Key was used with a different request"
        )
    elif row["status_code"] == _IN_PROGRESS:
        await _send_problem(
            send,
            409,
            "request_in_progress",
            "a request with this Idempotency-Key is still running; retry in a moment",
        )
    else:
        replayed = (b"idempotent-replayed", b"true")
        await _respond(send, row["status_code"], b"application/json", bytes(row["body"]), replayed)


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive() that hands the handler the body this middleware already read."""
    sent = False

    async def replay() -> ReceiveMessage:
        nonlocal sent
        if not sent:
            sent = True
            return HTTPRequestEvent(type="http.request", body=body, more_body=False)
        return await receive()

    return replay


async def _respond(send: Send, status: int, content_type: bytes, body: bytes, *extra: tuple[bytes, bytes]) -> None:
    headers = [(b"content-type", content_type), *extra]
    await send(HTTPResponseStartEvent(type="http.response.start", status=status, headers=headers))
    await send(HTTPResponseBodyEvent(type="http.response.body", body=body, more_body=False))


async def _send_problem(send: Send, status: int, code: str, detail: str) -> None:
    exc = problem(status, code, detail)
    body = msgspec.json.encode(
        {"type": exc.type_, "title": exc.title, "status": status, "detail": detail, "code": code}
    )
    await _respond(send, status, b"application/problem+json", body)
