"""The error type every handler raises, rendered as the published ``v1Error`` body."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An HTTP error answer: status code plus a ``v1Error`` JSON body.

    ``v1Error`` is ``{code, message, details, ref}`` (all optional in the spec); the simulator always
    fills ``code`` (a short machine-readable name) and ``message`` (a sentence naming the cause).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details: dict[str, Any] = dict(details or {})
        self.headers: list[tuple[str, str]] = list(headers or [])

    def body(self, ref: str = "") -> dict[str, Any]:
        """Return the ``v1Error`` JSON object for this error."""
        return {"code": self.code, "message": self.message, "details": self.details, "ref": ref}


def bad_request(message: str, field: str | None = None, **details: Any) -> ApiError:
    """Build a 400 ``BadRequest`` error; ``field`` (a dotted path) goes into ``details.field``."""
    if field is not None:
        details["field"] = field
    return ApiError(400, "BadRequest", message, details)


def not_found(message: str) -> ApiError:
    """Build a 404 ``NotFound`` error."""
    return ApiError(404, "NotFound", message)


def unauthorized(message: str) -> ApiError:
    """Build a 401 ``Unauthorized`` error."""
    return ApiError(401, "Unauthorized", message)


def server_error(code: str, message: str, **details: Any) -> ApiError:
    """Build a 500 error with a specific ``code`` (used where the spec lists only 500)."""
    return ApiError(500, code, message, details)
