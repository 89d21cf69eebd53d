"""The demo's HTTP client: carebank's API over real HTTP (httpx), as phones, providers and
commissioners call it; every unexpected answer stops the demo with the server's problem detail."""

from __future__ import annotations

from typing import Any

import httpx

Headers = dict[str, str]


class DemoError(RuntimeError):
    """The API answered something the demo did not expect."""


class Api:
    """A thin wrapper: JSON in and out, status codes checked, pages followed."""

    def __init__(self, base_url: str) -> None:
        limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
        self.http = httpx.AsyncClient(base_url=base_url, timeout=300, limits=limits)
        self.requests = 0

    async def close(self) -> None:
        await self.http.aclose()

    async def call(
        self,
        method: str,
        path: str,
        headers: Headers | None = None,
        body: Any = None,
        params: dict[str, Any] | None = None,
        expect: tuple[int, ...] = (200, 201),
    ) -> Any:
        self.requests += 1
        response = await self.http.request(method, path, json=body, params=params, headers=headers)
        if response.status_code not in expect:
            raise DemoError(f"{method} {path}: {response.status_code} {response.text[:500]}")
        return response.json() if response.content else None

    async def post(self, path: str, headers: Headers | None, body: Any, expect: tuple[int, ...] = (200, 201)) -> Any:
        return await self.call("POST", path, headers, body, expect=expect)

    async def get(self, path: str, headers: Headers, **params: Any) -> Any:
        return await self.call("GET", path, headers, params={k: v for k, v in params.items() if v is not None})

    async def pages(self, path: str, headers: Headers, **params: Any) -> list[Any]:
        """Every item of a cursor-paginated list."""
        items: list[Any] = []
        cursor = None
        while True:
            page = await self.get(path, headers, limit=500, cursor=cursor, **params)
            items += page["items"]
            cursor = page["next_cursor"]
            if not cursor:
                return items

    async def login(self, client_id: str, client_secret: str) -> Headers:
        token = await self.post("/v1/auth/token", None, {"client_id": client_id, "client_secret": client_secret})
        return {"Authorization": f"Bearer {token['access_token']}"}

    async def credential(self, headers: Headers, body: dict[str, Any]) -> Headers:
        """A new credential made by `headers`'s caller, logged in."""
        made = await self.post("/v1/credentials", headers, body)
        return await self.login(made["client_id"], made["client_secret"])
