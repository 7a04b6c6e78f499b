"""Logging: structlog events with context bound, and the redaction processor.

The library only *emits* events, through :func:`get_logger`; it never calls ``structlog.configure()``. Applications
(and our CLI) configure structlog and should put :func:`redact_secrets` in their processor chain, as the CLI does.

Example::

    log = get_logger(__name__).bind(provider="vsphere", node="node-1", phase="stage_media")
    log.info("iso_upload_finished", bytes=1_073_741_824, rate_mib_s=512.0)
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import structlog

from palette_provision.secrets import Secret, known_secret_values

__all__ = ["SENSITIVE_KEYS", "get_logger", "redact_secrets"]

#: Event keys whose values are always replaced by ``***``, whatever their type.
SENSITIVE_KEYS = frozenset(
    {"password", "passwd", "token", "secret", "authorization", "private_key", "api_key", "cookie", "otp"}
)


def get_logger(name: str | None = None, **context: Any) -> Any:
    """Return a structlog logger with ``context`` bound. Binding never configures structlog."""
    return structlog.get_logger(name).bind(**context) if context else structlog.get_logger(name)


def _scrub(value: Any, secrets: frozenset[str]) -> Any:
    if isinstance(value, Secret):
        return "***"
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, "***")
        return value
    if isinstance(value, dict):
        return {k: ("***" if str(k).lower() in SENSITIVE_KEYS else _scrub(v, secrets)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_scrub(v, secrets) for v in value)
    if isinstance(value, BaseException):
        return _scrub(f"{type(value).__name__}: {value}", secrets)
    return value


def redact_secrets(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask sensitive keys, :class:`Secret` values and any known secret value in text."""
    secrets = known_secret_values()
    for key in list(event_dict):
        if key.lower() in SENSITIVE_KEYS:
            event_dict[key] = "***"
        else:
            event_dict[key] = _scrub(event_dict[key], secrets)
    return event_dict
