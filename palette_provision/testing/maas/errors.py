"""Error answers shaped like MAAS's: text bodies for most 4xx, a JSON ``{field: [messages]}`` for validation."""

from __future__ import annotations

from typing import Any

from palette_provision.testing._simhttp import DropConnection  # the shared server's; listed here for the handlers

__all__ = [
    "DropConnection",
    "MaasApiError",
    "bad_request",
    "conflict",
    "forbidden",
    "not_found",
    "unauthorized",
    "validation_error",
]


class MaasApiError(Exception):
    """An HTTP error answer: a status and a body (``str`` → text/plain, anything else → JSON)."""

    def __init__(self, status: int, body: Any, headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(body if isinstance(body, str) else str(status))
        self.status = status
        self.body = body
        self.headers = list(headers or [])


def bad_request(text: str) -> MaasApiError:
    """400 with a text body (``MAASAPIBadRequest``)."""
    return MaasApiError(400, text)


def validation_error(errors: dict[str, list[str]]) -> MaasApiError:
    """400 with a JSON body ``{field: [message, ...]}`` (``MAASAPIValidationError``)."""
    return MaasApiError(400, errors)


def unauthorized(text: str) -> MaasApiError:
    """401 with a text body and ``WWW-Authenticate: OAuth realm="API"`` (piston's ``send_oauth_error``)."""
    return MaasApiError(401, text, [("WWW-Authenticate", 'OAuth realm="API"')])


def forbidden(text: str) -> MaasApiError:
    """403 with a text body."""
    return MaasApiError(403, text)


def not_found(model: str = "Machine") -> MaasApiError:
    """404 ``No <model> matches the given query.`` (Django's ``get_object_or_404`` wording)."""
    return MaasApiError(404, f"No {model} matches the given query.")


def conflict(text: str) -> MaasApiError:
    """409 with a text body (``NodeStateViolation`` / ``NodesNotAvailable``)."""
    return MaasApiError(409, text)
