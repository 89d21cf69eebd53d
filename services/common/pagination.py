"""Cursor pagination over time-ordered UUIDv7 ids: `?limit=&cursor=` → `{items, next_cursor}`."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Annotated, Protocol, TypeVar
from uuid import UUID

from litestar.params import QueryParameter

from schemas.common import Page
from services.common.errors import field_problem

T = TypeVar("T", bound="HasId")

DEFAULT_LIMIT = 50
MAX_LIMIT = 500

LimitParam = Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT, description="items per page")]
CursorParam = Annotated[str | None, QueryParameter(description="`next_cursor` of the previous page")]


def encode_cursor(last_id: UUID) -> str:
    """An opaque cursor naming the last id of a page."""
    return base64.urlsafe_b64encode(last_id.bytes).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> UUID | None:
    """The id after which the next page starts; a cursor we did not make is 422."""
    if cursor is None or cursor == "":
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return UUID(bytes=raw)
    except (binascii.Error, ValueError):
        raise field_problem("cursor", "invalid", "not a cursor this service made") from None


class HasId(Protocol):
    """A listed item: pages are ordered by its time-ordered id."""

    @property
    def id(self) -> UUID: ...


def page_of(rows: Sequence[T], limit: int) -> Page[T]:
    """Build a page from `limit + 1` fetched rows: the extra row only says there is more."""
    shown = list(rows[:limit])
    more = len(rows) > limit
    next_cursor = encode_cursor(shown[-1].id) if more and shown else None
    return Page(items=shown, next_cursor=next_cursor)


__all__ = ["CursorParam", "LimitParam", "Page", "decode_cursor", "encode_cursor", "page_of"]
