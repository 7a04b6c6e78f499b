"""Logging: structured events with context bound, routed to whatever logging the application configured.

The library only *emits* events, through :func:`get_logger`; it never configures logging. Where an event goes:

* the application configured structlog (``structlog.configure()``, as our CLI does): to structlog, with the context
  bound, through the application's processors. Put :func:`redact_secrets` in that chain, as the CLI does.
* otherwise: to the standard library's :mod:`logging`, on a logger named after the emitting module, rendered as
  ``event key=value ...`` with secrets redacted. Like any well-behaved library, that means silence by default
  except for warnings and errors (Python's last-resort handler prints those to stderr), and everything once the
  application calls ``logging.basicConfig(level=logging.INFO)`` or adds its own handlers.

Deciding per event (not per import) keeps a script that configures logging late correct. A script that never
imports structlog does not pay for importing it (structlog pulls in asyncio and, when installed, rich: about 80 ms
of a re-run's few hundred).

Example::

    log = get_logger(__name__).bind(provider="vsphere", node="node-1", phase="stage_media")
    log.info("iso_upload_finished", bytes=1_073_741_824, rate_mib_s=512.0)
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Mapping, MutableMapping
from typing import Any

from palette_provision.secrets import Secret, known_secret_values

__all__ = ["SENSITIVE_KEYS", "STRUCTURED_ATTR", "Logger", "RedactingFilter", "get_logger", "redact_secrets"]

#: The attribute of a stdlib :class:`logging.LogRecord` that holds a library event's name and redacted fields
#: (``record.palette_event``), for an application's handler that renders structure (the CLI's JSON log lines).
STRUCTURED_ATTR = "palette_event"

#: Event keys whose values are always replaced by ``***``, whatever their type.
SENSITIVE_KEYS = frozenset(
    {"password", "passwd", "token", "secret", "authorization", "private_key", "api_key", "cookie", "otp"}
)

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


class Logger:
    """A bound logger with structlog's calling convention (``log.info("event", key=value)``, ``bind``).

    Immutable: :meth:`bind` returns a new logger. Providers receive one as ``ProviderContext.log``; a structlog
    logger works there too.
    """

    __slots__ = ("_context", "_name")

    def __init__(self, name: str | None = None, context: Mapping[str, Any] | None = None) -> None:
        self._name = name or "palette_provision"
        self._context: dict[str, Any] = dict(context or {})

    def bind(self, **context: Any) -> Logger:
        """A logger with ``context`` added to every event."""
        return Logger(self._name, {**self._context, **context})

    def debug(self, event: str, **kw: Any) -> None:
        """Emit ``event`` at debug level."""
        self._emit("debug", event, kw)

    def info(self, event: str, **kw: Any) -> None:
        """Emit ``event`` at info level."""
        self._emit("info", event, kw)

    def warning(self, event: str, **kw: Any) -> None:
        """Emit ``event`` at warning level."""
        self._emit("warning", event, kw)

    warn = warning

    def error(self, event: str, **kw: Any) -> None:
        """Emit ``event`` at error level."""
        self._emit("error", event, kw)

    def critical(self, event: str, **kw: Any) -> None:
        """Emit ``event`` at critical level."""
        self._emit("critical", event, kw)

    def exception(self, event: str, **kw: Any) -> None:
        """Emit ``event`` at error level with the exception being handled."""
        kw.setdefault("exc_info", True)
        self._emit("error", event, kw)

    def _emit(self, method: str, event: str, kw: dict[str, Any]) -> None:
        structlog = sys.modules.get("structlog")  # not imported: certainly not configured
        if structlog is not None and structlog.is_configured():
            bound = structlog.get_logger(self._name)
            getattr(bound.bind(**self._context) if self._context else bound, method)(event, **kw)
            return
        target = logging.getLogger(self._name)
        level = _LEVELS[method]
        if not target.isEnabledFor(level):
            return
        exc_info = kw.pop("exc_info", None)
        error = sys.exc_info()[1] if exc_info else None
        if error is not None:
            # The traceback as text, without any frame's locals, redacted like every other field.
            kw["exception"] = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        fields = redact_secrets(None, method, {**self._context, **kw})
        shown = {k: v for k, v in fields.items() if k != "exception"}
        text = " ".join([event, *(f"{key}={value}" for key, value in shown.items())])
        if error is not None:
            text += " error=" + str(redact_secrets(None, method, {"error": error})["error"])
        # The text line carries the error, not the traceback; the event and its (redacted) fields, traceback
        # included, travel as a record attribute for handlers that render structure (the CLI's JSON lines).
        target.log(level, "%s", text, extra={STRUCTURED_ATTR: {"event": event, **fields}})


def get_logger(name: str | None = None, **context: Any) -> Logger:
    """Return a :class:`Logger` named ``name`` with ``context`` bound. Never configures any logging."""
    return Logger(name, context)


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


class RedactingFilter(logging.Filter):
    """A stdlib filter for *other* libraries' loggers (a vendor SDK that logs request bodies at debug level, as
    sushy does with a virtual-media URL holding a seed's token): every known secret value in the rendered message is
    replaced by ``***`` before any handler sees it, however the application configured logging.

    Attach it to the very logger that emits (a logger's filters do not apply to its children's records)::

        logging.getLogger("sushy.connector").addFilter(RedactingFilter())
    """

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = known_secret_values()
        if not secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: keep it as it is (logging reports it)
            return True
        scrubbed = _scrub(message, secrets)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        return True
