"""CSRF protection for cookie-authenticated requests only (API.md).

A browser carries the JWT in an HttpOnly, SameSite=Strict cookie; an unsafe request it sends must
also carry the CSRF token (the `_csrf_token` form field or the `X-CSRF-Token` header) matching the
signed `carebank_csrf` cookie (Litestar's double-submit check). A request that brings its token in
the `Authorization` header cannot be forged cross-site (a page cannot set that header without a
CORS preflight we never grant), so API clients are left exactly as they were.
"""

from __future__ import annotations

import hashlib
import hmac

from litestar.config.csrf import CSRFConfig
from litestar.enums import ScopeType
from litestar.middleware.csrf import CSRFMiddleware
from litestar.types import Receive, Scope, Send

AUTH_COOKIE = "carebank_token"
CSRF_COOKIE = "carebank_csrf"
CSRF_HEADER = "x-csrf-token"
CONSOLE_PREFIX = "/console"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


def csrf_config(jwt_secret: str, *, secure: bool) -> CSRFConfig:
    """Litestar's double-submit config, signed with a key derived from (not equal to) the JWT secret."""
    secret = hmac.new(jwt_secret.encode(), b"carebank-csrf", hashlib.sha256).hexdigest()
    return CSRFConfig(
        secret=secret,
        cookie_name=CSRF_COOKIE,
        header_name=CSRF_HEADER,
        cookie_secure=secure,
        cookie_httponly=True,
        cookie_samesite="strict",
    )


def _header_token(scope: Scope) -> bool:
    """Whether the request authenticates by header (the JWT middleware prefers it to the cookie)."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            return bool(value.decode("latin-1").partition(" ")[-1])
    return False


def _has_auth_cookie(scope: Scope) -> bool:
    needle = AUTH_COOKIE.encode() + b"="
    return any(name == b"cookie" and needle in value for name, value in scope["headers"])


def needs_check(scope: Scope) -> bool:
    """Whether Litestar's CSRF middleware should see this request.

    Console pages (safe methods) get the token cookie and a token for their forms; unsafe requests
    are checked when the cookie would authenticate them, and on the console's own forms (sign-in
    has no session yet)."""
    path: str = scope["path"]
    console = path == CONSOLE_PREFIX or path.startswith(CONSOLE_PREFIX + "/")
    if scope.get("method", "GET") in SAFE_METHODS:
        return console
    if _header_token(scope):
        return False
    return console or _has_auth_cookie(scope)


class CookieCSRFMiddleware(CSRFMiddleware):
    """Litestar's CSRF middleware, applied only where `needs_check` says."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP and not needs_check(scope):
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)
