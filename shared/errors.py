"""Errors callers can act on, each carrying its HTTP status, rendered in docs/api.md's shape.

`{"error": {"code": "...", "message": "..."}}`, plus `field` when one input is to blame.
Domain code raises these; only the edge (shared.app) turns them into responses.
"""

from __future__ import annotations

from typing import Any, ClassVar


class AppError(Exception):
    """Each kind names its HTTP status and default code in its class line; a raise may give
    a more precise code (`Conflict(..., code="not_active")`)."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"

    def __init_subclass__(cls, *, status: int | None = None, code: str | None = None,
                          **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.status = cls.status if status is None else status
        cls.code = cls.code if code is None else code

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


class BadRequest(AppError, status=400, code="bad_request"):
    """The request cannot be read as one this API takes."""


class ValidationFailed(AppError, status=422, code="validation_error"):
    """A value breaks a rule; `field` names it."""


class Unauthorized(AppError, status=401, code="unauthorized"):
    """No API key, or one that is unknown or revoked."""


class Forbidden(AppError, status=403, code="forbidden"):
    """The key's role (or the actor's) may not do this."""


class NotFound(AppError, status=404, code="not_found"):
    """No such resource, or one of a tenant the key may not see."""


class NotAcceptable(AppError, status=406, code="not_acceptable"):
    """The caller's `Accept` allows none of the media types the route answers in."""


class Conflict(AppError, status=409, code="conflict"):
    """The resource's state refuses the change now; the code says which state."""


class PayloadTooLarge(AppError, status=413, code="payload_too_large"):
    """More items, or a larger body, than a call may carry."""


class Unavailable(AppError, status=503, code="unavailable"):
    """A dependency is down: the caller may retry (503, never a 500)."""
