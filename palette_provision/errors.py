"""The one error hierarchy of palette-provision.

Every error the library raises derives from :class:`PaletteProvisionError`. Vendor errors (pyVmomi faults,
paramiko exceptions, HTTP errors) are translated at the boundary where they occur, with ``raise ... from exc``,
into the most specific class below. Errors keep their context as attributes, never secrets.

::

    PaletteProvisionError
    ├── PlanError                   the plan is invalid; .issues lists every problem (field path + rule)
    ├── ProviderNotFound            no provider registered under that name; .available lists the installed ones
    ├── ConfigurationError          settings that only a live check can reject (unknown datastore, bad login)
    │   ├── AuthenticationError     credentials refused (final, never retried)
    │   └── TLSVerificationError    certificate or thumbprint did not verify (final)
    ├── ProviderError               a platform call failed; .provider, .resource
    │   ├── TransientError          a failure worth retrying (connection reset, 5xx, busy BMC)
    │   └── OperatorActionNeeded    a person must attach media first; the message says what, then re-run
    │       └── LocalApiUnavailable (handoff) a node's Local API did not answer
    ├── LocalApiError               (handoff) a node's Local API answered with an error: not the platform's
    ├── WaitTimeout                 a wait ran out; .what, .waited_s, .last_state
    ├── WaitFailed                  a wait saw a failure state; .what, .state
    ├── ReadinessError              a node did not become ready; .rung, .last_error
    │   ├── HostKeyMismatch         the SSH host key differs from the pinned one (final)
    │   ├── SessionAuthenticationFailed   the node refused the account's key (also an AuthenticationError)
    │   └── LocalApiCertificateMismatch   the Local API's certificate is not the pinned one (a TLSVerificationError)
    ├── HandoffError                cluster formation failed; .step, .events
    ├── SecretReferenceError        a secret reference could not be resolved (also a ValueError)
    └── JournalError                the journal is unreadable or belongs to another plan
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "AuthenticationError",
    "ConfigurationError",
    "HandoffError",
    "HostKeyMismatch",
    "JournalError",
    "LocalApiCertificateMismatch",
    "OperatorActionNeeded",
    "PaletteProvisionError",
    "PlanError",
    "PlanIssue",
    "ProviderError",
    "ProviderNotFound",
    "ReadinessError",
    "SessionAuthenticationFailed",
    "TLSVerificationError",
    "TransientError",
    "WaitFailed",
    "WaitTimeout",
    "describe_state",
]


class PaletteProvisionError(Exception):
    """Base class of every error raised by palette-provision."""


def describe_state(state: Any) -> str:
    """A state as an error message may show it: an enum's value, a short scalar, or a type that says what it was.

    Never a ``repr``: a wait's state may be a whole API answer (a cluster's details hold its kubeconfig).

    >>> describe_state({"status": {"kubeconfig": "..."}})
    'a dict (not shown)'
    """
    value = getattr(state, "value", state)
    if value is None or isinstance(value, (bool, int, float)):
        return str(value)
    if isinstance(value, str):
        text = "".join(c if c.isprintable() else "?" for c in value[:80])
        return text + ("..." if len(value) > 80 else "")
    own_str = getattr(type(value), "__str__", None) is not getattr(object, "__str__", None)
    if own_str and not isinstance(value, (dict, list, tuple, set)):
        return describe_state(str(value))
    return f"a {type(value).__name__} (not shown)"


@dataclass(frozen=True)
class PlanIssue:
    """One problem found in a plan: where (a dotted field path) and which rule it breaks."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class PlanError(PaletteProvisionError):
    """The plan is invalid. ``issues`` holds every problem found, not just the first."""

    def __init__(self, issues: Sequence[PlanIssue], source: str | None = None) -> None:
        self.issues = list(issues)
        self.source = source
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  - {issue}" for issue in self.issues)
        super().__init__(f"invalid plan{where} ({len(self.issues)} problem(s)):\n{lines}")


class ProviderNotFound(PaletteProvisionError):
    """No provider is registered under ``name``; ``available`` names the installed ones."""

    def __init__(self, name: str, available: Sequence[str]) -> None:
        self.name = name
        self.available = list(available)
        listed = ", ".join(self.available) or "none"
        super().__init__(
            f"no provider named {name!r} is installed (installed providers: {listed}); "
            f"providers register under the entry-point group 'palette_provision.providers'"
        )


class ConfigurationError(PaletteProvisionError):
    """Provider settings that a live check rejected (an unknown object, a refused login)."""

    def __init__(self, message: str, *, field: str | None = None, provider: str | None = None) -> None:
        self.field = field
        self.provider = provider
        prefix = f"{field}: " if field else ""
        super().__init__(prefix + message)


class AuthenticationError(ConfigurationError):
    """Credentials were refused. Final: never retried."""


class TLSVerificationError(ConfigurationError):
    """A TLS certificate or pinned thumbprint did not verify. Final: never retried."""


class ProviderError(PaletteProvisionError):
    """A platform operation failed."""

    def __init__(self, message: str, *, provider: str | None = None, resource: str | None = None) -> None:
        self.provider = provider
        self.resource = resource
        super().__init__(message)


class TransientError(ProviderError):
    """A failure that is worth retrying (connection reset, HTTP 5xx, a busy BMC)."""


class OperatorActionNeeded(ProviderError):
    """A person must act on the machine before its chain can go on (attach media the platform cannot attach); the
    message says what. Nothing was left half-done: run ``apply`` again once it is done."""


class WaitTimeout(PaletteProvisionError):
    """A wait ran out of time, or gave up early because every look at the state failed for too long.

    ``what`` says what was awaited, ``waited_s`` for how long, ``last_state`` the last state observed,
    ``last_error`` the last error seen while polling (if any) and ``why`` why it gave up before its deadline (``None``
    when the deadline passed).
    """

    def __init__(
        self,
        what: str,
        waited_s: float,
        last_state: Any = None,
        last_error: BaseException | None = None,
        *,
        shown: str | None = None,
        why: str | None = None,
    ) -> None:
        self.what = what
        self.waited_s = waited_s
        self.last_state = last_state
        self.last_error = last_error
        self.why = why
        #: The last state as the message shows it: a summary, never the state's repr (an API answer can hold a
        #: kubeconfig or a token).
        self.shown = shown if shown is not None else describe_state(last_state)
        detail = f"; last state: {self.shown}" if last_state is not None else ""
        if last_error is not None:
            detail += f"; last error: {type(last_error).__name__}: {last_error}"
        if why is not None:
            super().__init__(f"gave up after {waited_s:.1f}s waiting for {what}: {why}{detail}")
        else:
            super().__init__(f"timed out after {waited_s:.1f}s waiting for {what}{detail}")


class WaitFailed(PaletteProvisionError):
    """A wait observed a failure state and stopped early instead of running out the clock."""

    def __init__(self, what: str, state: Any, detail: str = "", *, shown: str | None = None) -> None:
        self.what = what
        self.state = state
        self.shown = shown if shown is not None else describe_state(state)
        extra = f": {detail}" if detail else ""
        super().__init__(f"{what} reached failure state {self.shown}{extra}")


class ReadinessError(PaletteProvisionError):
    """A node did not become ready. ``rung`` is the last rung reached, ``last_error`` what stopped it."""

    def __init__(self, node: str, rung: str, message: str, last_error: str | None = None) -> None:
        self.node = node
        self.rung = rung
        self.last_error = last_error
        super().__init__(f"node {node}: {message} (last rung reached: {rung})")


class HostKeyMismatch(ReadinessError):
    """The node's SSH host key is not the pinned one. Final: never retried."""


class SessionAuthenticationFailed(ReadinessError, AuthenticationError):
    """The node refused the account's key (``Authentication failed.``). Final: never retried.

    Both a :class:`ReadinessError` (``.node``, ``.rung``) and an :class:`AuthenticationError`.
    """


class LocalApiCertificateMismatch(ReadinessError, TLSVerificationError):
    """The Local API presented a certificate other than the pinned one. Final: never retried."""


class HandoffError(PaletteProvisionError):
    """Cluster formation failed at ``step``; ``events`` holds what the platform reported."""

    def __init__(self, step: str, message: str, events: Sequence[str] = ()) -> None:
        self.step = step
        self.events = list(events)
        tail = ("; events: " + " | ".join(self.events)) if self.events else ""
        super().__init__(f"{step}: {message}{tail}")


class JournalError(PaletteProvisionError):
    """The journal cannot be used (unreadable, or it belongs to another plan)."""
