"""The caller: who a JWT says it is, and guards that enforce DOMAIN.md's role table.

The principal is rebuilt from the token's claims alone (no database round trip per request);
tokens live 15 minutes, which bounds how long a deleted credential keeps working.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Self, cast
from uuid import UUID

import msgspec
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler
from litestar.security.jwt import Token

from schemas.identity import Role
from services.common.errors import problem


class Principal(msgspec.Struct, frozen=True):
    """One credential: its role and what it is bound to."""

    client_id: str
    role: Role
    tenant_id: UUID | None = None
    provider_id: UUID | None = None
    carer_id: UUID | None = None

    @property
    def tenant(self) -> UUID:
        """The caller's tenant; only tenant roles reach handlers that ask for it."""
        if self.tenant_id is None:
            raise problem(403, "forbidden", "this credential is not bound to a tenant")
        return self.tenant_id

    def claims(self) -> dict[str, Any]:
        """What goes into the token besides `sub`."""
        return {
            "role": self.role,
            "tenant_id": str(self.tenant_id) if self.tenant_id else None,
            "provider_id": str(self.provider_id) if self.provider_id else None,
            "carer_id": str(self.carer_id) if self.carer_id else None,
        }


class RememberedToken(Token):
    """Litestar's JWT, whose verified decoding is remembered per encoded token (signature included):
    decoding and checking the signature is about an eighth of a small request's CPU, and a carer's
    phone sends the same token for its whole life. Expiry is checked again at every use; a token
    that fails to decode is not remembered, so it fails every time."""

    @classmethod
    def decode(
        cls,
        encoded_token: str,
        secret: str,
        algorithm: str,
        audience: str | Sequence[str] | None = None,
        issuer: str | Sequence[str] | None = None,
        require_claims: Sequence[str] | None = None,
        verify_exp: bool = True,
        verify_nbf: bool = True,
        strict_audience: bool = False,
    ) -> Self:
        token = _verified(
            encoded_token,
            secret,
            algorithm,
            _hashable(audience),
            _hashable(issuer),
            _hashable(require_claims),
            verify_exp,
            verify_nbf,
            strict_audience,
        )
        if verify_exp and token.exp <= datetime.now(tz=UTC):
            raise NotAuthorizedException("Invalid token")
        return cast(Self, token)  # a Token as Litestar decodes it; nothing of this class is added


def _hashable(value: str | Sequence[str] | None) -> str | tuple[str, ...] | None:
    return value if value is None or isinstance(value, str) else tuple(value)


@functools.lru_cache(maxsize=10_000)
def _verified(
    encoded_token: str,
    secret: str,
    algorithm: str,
    audience: str | tuple[str, ...] | None,
    issuer: str | tuple[str, ...] | None,
    require_claims: tuple[str, ...] | None,
    verify_exp: bool,
    verify_nbf: bool,
    strict_audience: bool,
) -> Token:
    return Token.decode(
        encoded_token, secret, algorithm, audience, issuer, require_claims, verify_exp, verify_nbf, strict_audience
    )


async def principal_from_token(token: Token, connection: ASGIConnection[Any, Any, Any, Any]) -> Principal | None:
    """Litestar's `retrieve_user_handler`: a token whose claims do not parse is no principal."""
    try:
        # convert() validates: a role outside the four, or an id that is not a UUID, is refused.
        return msgspec.convert({**token.extras, "client_id": token.sub}, Principal)
    except msgspec.ValidationError:
        return None


Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]


def allow(*roles: Role) -> Guard:
    """A guard that lets only these roles through (403 for the others)."""
    allowed = frozenset(roles)

    # async, so Litestar calls it in the loop rather than handing it to a thread pool per request
    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        user = connection.user
        if not isinstance(user, Principal) or user.role not in allowed:
            raise problem(403, "forbidden", "your role may not do this")

    guard.__name__ = "allow_" + "_".join(sorted(allowed))
    return guard


def provider_scope(caller: Principal, requested: UUID | None) -> UUID | None:
    """The provider a query is limited to: a provider's (or carer's) own, whatever it asked for;
    naming another provider is 404 (out of reach). Commissioners get what they asked for."""
    if caller.role not in ("provider", "carer"):
        return requested
    if requested is not None and requested != caller.provider_id:
        raise problem(404, "not_found", "no such provider")
    return caller.provider_id
