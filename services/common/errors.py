"""RFC 9457 problem details: how every error leaves the service.

Handlers raise `problem(...)`; Litestar's own exceptions (validation, auth, size, routing) are
mapped here too, so a client always gets `application/problem+json` with a stable `code`.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec
import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.plugins.problem_details import ProblemDetailsException
from litestar.status_codes import (
    HTTP_400_BAD_REQUEST,
    HTTP_422_UNPROCESSABLE_ENTITY,
    HTTP_500_INTERNAL_SERVER_ERROR,
)

from schemas.common import FieldProblem
from services.common.domain import RuleError

log = structlog.get_logger("carebank.errors")
T = TypeVar("T")

PROBLEM_TYPE = "urn:carebank:problem:{code}"
_TITLES = {
    400: "Bad request",
    401: "Not authenticated",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}
_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}
# msgspec messages that mean "not the right shape" (400) rather than "a value breaks a
# constraint" (422): a wrong JSON type, a missing or an unknown field.
_SHAPE_MESSAGE = re.compile(
    r"^(Expected `[^`]+`, got `[^`]+`|Object missing required field|Object contains unknown field)"
)
_FIELD_IN_MESSAGE = re.compile(r"field `([^`]+)`")


def problem(
    status: int,
    code: str,
    detail: str,
    errors: list[FieldProblem] | None = None,
    headers: dict[str, str] | None = None,
) -> ProblemDetailsException:
    """An exception that leaves the service as a problem+json body."""
    extra: dict[str, Any] = {"code": code}
    if errors:
        extra["errors"] = [{"field": e.field, "code": e.code, "message": e.message} for e in errors]
    return ProblemDetailsException(
        status_code=status,
        detail=detail,
        title=_TITLES.get(status, "Error"),
        type_=PROBLEM_TYPE.format(code=code),
        extra=extra,
        headers=headers,
    )


def field_problem(field: str, code: str, message: str, status: int = 422) -> ProblemDetailsException:
    """A single-field rule violation (422 unless told otherwise)."""
    return problem(status, "validation_failed", message, [FieldProblem(field, code, message)])


def not_found(what: str, field: str | None = None) -> ProblemDetailsException:
    """404: the row does not exist or is outside the caller's reach (the same answer)."""
    errors = [FieldProblem(field, "not_found", f"no such {what}")] if field else None
    return problem(404, "not_found", f"no such {what}", errors)


def found_or_404(row: T | None, what: str) -> T:
    """The row, or 404 when it does not exist or is outside the caller's reach."""
    if row is None:
        raise not_found(what)
    return row


_AT_PATH = re.compile(r" - at `\$\.?([^`]*)`$")


def split_msgspec_message(message: str) -> tuple[str, str]:
    """msgspec's "Expected `int` - at `$.a.b`" → ("a.b", "Expected `int`")."""
    at = _AT_PATH.search(message)
    return (at.group(1) if at else ""), _AT_PATH.sub("", message)


def _field_problem(path: str, message: str) -> tuple[FieldProblem, bool]:
    """A msgspec complaint as a field problem, and whether it is about shape (400) rather than value (422).

    A missing or unknown field's own name is appended to the path, so the client sees which one."""
    named = _FIELD_IN_MESSAGE.search(message)
    if named and message.startswith("Object"):
        path = f"{path}.{named.group(1)}" if path else named.group(1)
    shape = bool(_SHAPE_MESSAGE.match(message))
    code = ("wrong_type" if message.startswith("Expected") else "wrong_shape") if shape else "invalid"
    return FieldProblem(path or "body", code, message), shape


def _fields_problem(found: list[tuple[FieldProblem, bool]], fallback: str) -> ProblemDetailsException:
    shape = any(is_shape for _, is_shape in found) or not found
    errors = [field for field, _ in found]
    detail = "; ".join(f"{e.field}: {e.message}" for e in errors) or fallback
    status = HTTP_400_BAD_REQUEST if shape else HTTP_422_UNPROCESSABLE_ENTITY
    return problem(status, "validation_failed", detail, errors)


def field_problems_of(exc: msgspec.ValidationError) -> list[FieldProblem]:
    """What msgspec refused, as field problems (for answers that are not whole-request problems)."""
    return [_field_problem(*split_msgspec_message(str(exc)))[0]]


def decode_problem(exc: msgspec.MsgspecError) -> ProblemDetailsException:
    """A body we decoded ourselves: malformed JSON is 400, a wrong shape 400, a broken constraint 422."""
    if not isinstance(exc, msgspec.ValidationError):
        return problem(HTTP_400_BAD_REQUEST, "malformed_body", f"the body is not valid JSON: {exc}")
    return _fields_problem([_field_problem(*split_msgspec_message(str(exc)))], str(exc))


def _validation_to_problem(exc: ValidationException) -> ProblemDetailsException:
    items = [item for item in (exc.extra if isinstance(exc.extra, list) else []) if isinstance(item, dict)]
    found = [
        _field_problem("" if item.get("key") == "data" else str(item.get("key", "")), str(item.get("message", "")))
        for item in items
    ]
    return _fields_problem(found, str(exc.detail))


def _http_to_problem(exc: HTTPException) -> ProblemDetailsException:
    if isinstance(exc, ProblemDetailsException):
        return exc
    if isinstance(exc, ValidationException):
        return _validation_to_problem(exc)
    status = exc.status_code
    detail = str(exc.detail) if exc.detail else _TITLES.get(status, "Error")
    if status == HTTP_400_BAD_REQUEST:
        return problem(status, "malformed_body", f"the body is not valid JSON: {detail}")
    return problem(status, _CODES.get(status, "error"), detail, headers=exc.headers)


def http_exception_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """Every Litestar HTTP exception, as problem+json."""
    return _http_to_problem(exc).to_response(request)


def internal_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Anything unexpected: logged with its trace, answered without one."""
    log.exception("unhandled_error", path=request.url.path, error_type=type(exc).__name__)
    return problem(
        HTTP_500_INTERNAL_SERVER_ERROR, "internal_error", "an unexpected error; it has been logged"
    ).to_response(request)


# Rules API.md names as problem codes of their own: the top-level `code` says which, not just
# `validation_failed`, so a client can branch on it without reading `errors`.
NAMED_RULES = frozenset({"clock_ahead", "too_old", "insufficient_bank", "period_not_settled", "already_decided"})


def rule_error_handler(request: Request[Any, Any, Any], exc: RuleError) -> Response[Any]:
    """A broken domain rule, as problem+json naming the field."""
    errors = [FieldProblem(exc.field, exc.code, exc.message)] if exc.field else None
    code = exc.code if exc.status != 422 or not exc.field or exc.code in NAMED_RULES else "validation_failed"
    return problem(exc.status, code, exc.message, errors).to_response(request)


def text_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Text PostgreSQL cannot store (a NUL character): the statement failed, so nothing was written."""
    return problem(
        422,
        "validation_failed",
        "text may not contain NUL characters",
        [FieldProblem("body", "nul_character", "text may not contain NUL characters")],
    ).to_response(request)
