"""The one exception pure rules raise: a named rule broken by a request.

Rules stay free of HTTP; the app turns a RuleError into problem+json with the same fields.
"""

from __future__ import annotations

from datetime import UTC, datetime


class RuleError(Exception):
    """A request breaks a domain rule: `status` 422 by default, 404/403/409 where the rule says."""

    def __init__(self, code: str, message: str, field: str | None = None, status: int = 422) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.status = status


EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)


def check_instant(value: datetime, field: str) -> None:
    """Instants outside 2000-2100 are mistakes, and would overflow date arithmetic downstream."""
    if not EARLIEST <= value < LATEST:
        raise RuleError("out_of_range", "instants must lie between 2000 and 2100", field)
