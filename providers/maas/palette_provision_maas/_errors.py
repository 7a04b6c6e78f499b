"""The MAAS client's errors: the project's hierarchy, with MAAS's status and text (bounded, cleaned) kept."""

from __future__ import annotations

from palette_provision.errors import ProviderError, TransientError

__all__ = ["PROVIDER", "MaasApiError", "MaasConflict", "MaasNotFound", "MaasProtocolError", "MaasUnavailable"]

PROVIDER = "maas"


class MaasApiError(ProviderError):
    """MAAS refused a request (4xx). ``text`` is MAAS's explanation as data: bounded, cleaned, key scrubbed."""

    def __init__(self, message: str, *, status: int, text: str, resource: str | None = None) -> None:
        self.status = status
        self.text = text
        super().__init__(message, provider=PROVIDER, resource=resource)


class MaasNotFound(MaasApiError):
    """404: the machine or boot resource does not exist."""


class MaasConflict(MaasApiError):
    """409: no Ready machine matches the constraints, or the machine's state forbids the operation."""


class MaasUnavailable(TransientError):
    """MAAS did not answer usefully (5xx, refused, reset, dropped, timed out). ``request_sent`` is False when the
    connection could not even be made (so nothing reached MAAS)."""

    def __init__(self, message: str, *, status: int | None = None, request_sent: bool = True) -> None:
        self.status = status
        self.request_sent = request_sent
        super().__init__(message, provider=PROVIDER)


class MaasProtocolError(ProviderError):
    """MAAS answered something of the wrong shape (not JSON, a field missing or of the wrong type)."""
