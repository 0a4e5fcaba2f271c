"""Errors callers can act on, each carrying its HTTP status, rendered in docs/api.md's shape.

`{"error": {"code": "...", "message": "..."}}`, plus `field` when one input is to blame.
Domain code raises these; only the edge (shared.app) turns them into responses.
"""

from __future__ import annotations

from typing import Any, ClassVar


class AppError(Exception):
    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.error_code = code or self.code

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.error_code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return {"error": error}


class BadRequest(AppError):
    status = 400
    code = "bad_request"


class ValidationFailed(AppError):
    status = 422
    code = "validation_error"


class Unauthorized(AppError):
    status = 401
    code = "unauthorized"


class Forbidden(AppError):
    status = 403
    code = "forbidden"


class NotFound(AppError):
    status = 404
    code = "not_found"


class NotAcceptable(AppError):
    """The caller's `Accept` allows none of the media types the route answers in."""

    status = 406
    code = "not_acceptable"


class Conflict(AppError):
    status = 409
    code = "conflict"


class PayloadTooLarge(AppError):
    status = 413
    code = "payload_too_large"


class Unavailable(AppError):
    """A dependency is down: the caller may retry (503, never a 500)."""

    status = 503
    code = "unavailable"
