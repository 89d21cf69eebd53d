"""The one exception pure rules raise: a named rule broken by a request.

Rules stay free of HTTP; the app turns a RuleError into problem+json with the same fields.
"""

from __future__ import annotations


class RuleError(Exception):
    """A request breaks a domain rule: `status` 422 by default, 404/403/409 where the rule says."""

    def __init__(self, code: str, message: str, field: str | None = None, status: int = 422) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.status = status
