"""Secrets: values that never print.

A plan names a secret by reference (``env:NAME`` or ``file:PATH``); :func:`resolve_secret` turns the reference into
a :class:`Secret`, whose ``repr`` and ``str`` are ``***``. Only :meth:`Secret.reveal` gives the value, at the point
of use (an HTTP body, an SSH login). Secrets never reach logs, exceptions, the journal or a command line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from palette_provision.errors import PaletteProvisionError

__all__ = ["Secret", "SecretReferenceError", "known_secret_values", "resolve_secret"]

# Every secret value created in this process, so the log redaction processor can scrub one that slipped into a
# free-text message (a vendor exception quoting a request body, say). Short values are skipped: scrubbing "a"
# everywhere would destroy logs without protecting anything.
_KNOWN_VALUES: set[str] = set()
_MIN_SCRUB_LEN = 4


#: The largest secret file read (a private key is a few KiB; a kubeconfig or a CA bundle well under this).
MAX_SECRET_FILE_BYTES = 1024 * 1024


def known_secret_values() -> frozenset[str]:
    """Return the secret values created in this process (for redaction only)."""
    return frozenset(_KNOWN_VALUES)


class SecretReferenceError(PaletteProvisionError, ValueError):
    """A secret reference could not be resolved. The message names the reference, never a value."""


class Secret:
    """A value that prints as ``***``.

    >>> s = Secret("hunter2", source="env:VC_PASSWORD")
    >>> s
    Secret('***', source='env:VC_PASSWORD')
    >>> s.reveal()
    'hunter2'

    A *deferred* secret (:meth:`deferred`) is read from its reference only when first revealed.
    """

    __slots__ = ("_base_dir", "_value", "source")

    def __init__(self, value: str, source: str = "inline") -> None:
        self._value: str | None = value
        self.source = source
        self._base_dir: Path | None = None
        if len(value) >= _MIN_SCRUB_LEN:
            _KNOWN_VALUES.add(value)

    @classmethod
    def deferred(cls, reference: str, *, base_dir: Path | None = None) -> Secret:
        """A secret read from ``reference`` when first revealed, not now.

        For read-only views (``status``, the Ansible status module and inventory plugin): they load a whole plan
        but use few of its secrets (a PostgreSQL journal's password at most), and a secret nothing uses need not
        be there. The reference's form is checked now; an unset variable or unreadable file raises
        :class:`SecretReferenceError` from :meth:`reveal`, naming the reference.

        >>> s = Secret.deferred("env:PP_DOC_UNSET_VARIABLE")
        >>> str(s), s.source
        ('***', 'env:PP_DOC_UNSET_VARIABLE')
        """
        _check_reference(reference)
        secret = cls.__new__(cls)
        secret._value, secret.source, secret._base_dir = None, reference, base_dir
        return secret

    def reveal(self) -> str:
        """Return the clear value. Call it only where the value is used, never to log or format it.

        Raises:
            SecretReferenceError: a deferred secret whose reference does not resolve (now).
        """
        if self._value is None:
            self._value = resolve_secret(self.source, base_dir=self._base_dir).reveal()
        return self._value

    def __repr__(self) -> str:
        return f"Secret('***', source={self.source!r})"

    def __str__(self) -> str:
        return "***"

    def __format__(self, spec: str) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return False
        if self._value is None or other._value is None:  # deferred, unread: the same reference or not
            return (self._value, self.source, self._base_dir) == (other._value, other.source, other._base_dir)
        return other._value == self._value

    def __hash__(self) -> int:
        return hash("Secret")  # equal secrets may be deferred or read: nothing finer is consistent with __eq__

    def __reduce__(self) -> Any:
        # Pickling would carry the clear value into wherever the pickle goes (logs, process pools): refuse.
        raise TypeError("Secret values cannot be pickled")


def _check_reference(reference: str) -> tuple[str, str]:
    scheme, sep, rest = reference.partition(":")
    if not sep or not rest or scheme not in ("env", "file"):
        raise SecretReferenceError("a secret must be a reference 'env:NAME' or 'file:PATH', not an inline value")
    return scheme, rest


def resolve_secret(reference: str, *, base_dir: Path | None = None) -> Secret:
    """Resolve ``env:NAME`` or ``file:PATH`` into a :class:`Secret`.

    A ``file:`` path is relative to ``base_dir`` (the plan file's folder) when not absolute; one trailing newline
    is stripped.

    Raises:
        SecretReferenceError: the reference is malformed, the variable unset or the file unreadable.
    """
    scheme, rest = _check_reference(reference)
    if scheme == "env":
        value = os.environ.get(rest)
        if value is None:
            raise SecretReferenceError(f"environment variable {rest} is not set")
        return Secret(value, source=reference)
    path = Path(rest).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_SECRET_FILE_BYTES + 1)  # bounded: file:/dev/zero must not fill the memory
        if len(raw) > MAX_SECRET_FILE_BYTES:
            raise SecretReferenceError(f"secret file {path} is larger than {MAX_SECRET_FILE_BYTES // 1024} KiB")
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretReferenceError(f"cannot read secret file {path}: {type(exc).__name__}") from None
    return Secret(text[:-1] if text.endswith("\n") else text, source=reference)
