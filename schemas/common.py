"""Shapes shared by every area: problem details and cursor pages."""

from __future__ import annotations

from typing import Generic, TypeVar

import msgspec

T = TypeVar("T")


class FieldProblem(msgspec.Struct, frozen=True):
    """One field that broke a rule: `field` is a dotted path into the body or query."""

    field: str
    code: str
    message: str


class Page(msgspec.Struct, Generic[T], frozen=True):
    """One page of a list; pass `next_cursor` back as `?cursor=` for the next one."""

    items: list[T]
    next_cursor: str | None
