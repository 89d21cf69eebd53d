"""The console's way into the areas: the same API handlers, called in-process with the caller's token.

Every page reads and writes through the JSON API of this very app (an ASGI call, no socket), with
the signed-in user's JWT as a bearer header. So a page can show a provider exactly what the API
would show it, and a form can do exactly what the API allows, because the API's own guards, reach
checks and rules answer (docs/decisions.md 80).
"""

from __future__ import annotations

from typing import Any, TypeVar

import httpx
import msgspec
import structlog
from litestar import Request

from schemas.common import Page

T = TypeVar("T")
_BASE = "http://console.internal"


class ApiError(Exception):
    """The API refused: its status and problem detail, shown on the page."""

    def __init__(self, status: int, detail: str, code: str = "") -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.code = code


def _problem(response: httpx.Response) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    detail = str(body.get("detail") or response.reason_phrase or "the request failed")
    errors = body.get("errors") or []
    if errors:
        detail = "; ".join(f"{e.get('field')}: {e.get('message')}" for e in errors if isinstance(e, dict)) or detail
    return ApiError(response.status_code, detail, str(body.get("code", "")))


class Api:
    """One page's calls into the app, as the caller whose token is given (or anonymously)."""

    def __init__(self, request: Request[Any, Any, Any], token: str | None) -> None:
        client = request.client
        self._transport = httpx.ASGITransport(
            app=request.app,  # type: ignore[arg-type]  # an ASGI app; Litestar types its scope more narrowly
            # The API's per-address limits (the token endpoint) see the browser's address, not ours.
            client=(client.host, client.port) if client else ("127.0.0.1", 0),
        )
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # The page's own request id, so the API's access lines for its calls can be told apart.
        request_id = structlog.contextvars.get_contextvars().get("request_id")
        if isinstance(request_id, str):
            headers["X-Request-ID"] = request_id
        self._headers = headers

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        accept: str = "application/json",
        key: str | None = None,
    ) -> httpx.Response:
        """The raw answer; a status of 400 or more raises ApiError. `key` is sent as Idempotency-Key."""
        query = {k: str(v) for k, v in (params or {}).items() if v is not None and v != ""}
        extra = {"Accept": accept}
        if json is not None:
            extra["Content-Type"] = "application/json"
        if key:
            extra["Idempotency-Key"] = key[:255]
        async with httpx.AsyncClient(transport=self._transport, base_url=_BASE, headers=self._headers) as http:
            response = await http.request(
                method,
                path,
                params=query,
                content=msgspec.json.encode(json) if json is not None else None,
                headers=extra,
            )
        if response.status_code >= 400:
            raise _problem(response)
        return response

    async def get(self, path: str, into: type[T], **params: Any) -> T:
        """GET path?params decoded into a wire struct."""
        # strict=False: read a number the API sent as a string (see docs/console.md, known issues).
        return msgspec.json.decode((await self.call("GET", path, params=params)).content, type=into, strict=False)

    async def post(self, path: str, into: type[T], body: Any = None, key: str | None = None) -> T:
        """POST a JSON body (once per `key`: a repeat gets the first answer); the answer decoded."""
        answer = await self.call("POST", path, json=body or {}, key=key)
        return msgspec.json.decode(answer.content, type=into, strict=False)

    async def every(self, path: str, into: type[T], cap: int = 5_000, **params: Any) -> list[T]:
        """Every item of a paged list, oldest first, following `next_cursor` (at most `cap` items)."""
        items: list[T] = []
        cursor: str | None = None
        while True:
            page: Page[T] = await self.get(path, Page[into], limit=500, cursor=cursor, **params)  # type: ignore[valid-type]
            items.extend(page.items)
            if page.next_cursor is None or len(items) >= cap:
                return items[:cap]
            cursor = page.next_cursor
