"""Identifiers: UUIDv7 made in Python, so ids sort by creation time on every PostgreSQL."""

from __future__ import annotations

from uuid import UUID

from uuid_utils.compat import uuid7


def new_id() -> UUID:
    """A fresh time-ordered UUID."""
    return uuid7()
