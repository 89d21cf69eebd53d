"""Identifiers: UUIDv7 made in Python, so ids sort by creation time on every PostgreSQL; (tenant, id)
pairs grouped by tenant."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from uuid import UUID

from uuid_utils.compat import uuid7


def new_id() -> UUID:
    """A fresh time-ordered UUID."""
    return uuid7()


def by_tenant(pairs: Iterable[tuple[UUID, UUID]]) -> list[tuple[UUID, list[UUID]]]:
    """(tenant, id) pairs grouped by tenant, tenants in id order (as the jobs take ledgers and visits:
    two transactions never lock them crosswise), ids in the order given."""
    grouped: dict[UUID, list[UUID]] = defaultdict(list)
    for tenant_id, item_id in pairs:
        grouped[tenant_id].append(item_id)
    return sorted(grouped.items())
