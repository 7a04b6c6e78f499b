"""OAuth 1.0a PLAINTEXT signatures for MAAS's REST API, from an API key ``consumer_key:token_key:token_secret``.

MAAS keys have an empty consumer secret, so the PLAINTEXT signature is ``&<token_secret>``. Every request carries a
fresh nonce and the current timestamp (MAAS refuses a nonce seen before and a timestamp far from its clock). Values
are percent-encoded as RFC 5849 asks (``oauth_signature="%26<secret>"``), which MAAS decodes.

The key's parts are held as :class:`~palette_provision.secrets.Secret` values: they print as ``***``, and the log
redaction knows them, since a MAAS error text can quote the token key.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from palette_provision.errors import ConfigurationError
from palette_provision.secrets import Secret

__all__ = ["MaasApiKey"]

_PART = re.compile(r"^[A-Za-z0-9._~+/=-]+$")


def _encode(value: str) -> str:
    """RFC 5849 §3.6 percent-encoding (only unreserved characters stay)."""
    return quote(value, safe="~-._")


class MaasApiKey:
    """A parsed MAAS API key that signs requests. ``repr``/``str`` show ``***``.

    Raises:
        ConfigurationError: the key is not three non-empty parts separated by ``:`` (the message never shows it).
    """

    __slots__ = ("_consumer_key", "_token_key", "_token_secret", "source")

    def __init__(self, key: Secret, *, field: str | None = None) -> None:
        self.source = key.source
        parts = key.reveal().strip().split(":")
        if len(parts) != 3 or not all(parts) or not all(_PART.match(p) for p in parts):
            raise ConfigurationError(
                f"the MAAS API key from {key.source} must be consumer_key:token_key:token_secret (three non-empty "
                f"parts separated by ':', as 'maas apikey' prints it)",
                field=field,
                provider="maas",
            )
        self._consumer_key = Secret(parts[0], source=f"{key.source} (consumer key)")
        self._token_key = Secret(parts[1], source=f"{key.source} (token key)")
        self._token_secret = Secret(parts[2], source=f"{key.source} (token secret)")

    def header(
        self,
        *,
        nonce: Callable[[], str] = lambda: secrets.token_hex(16),
        clock: Callable[[], float] = time.time,
    ) -> str:
        """The ``Authorization`` header value for one request (a fresh nonce and timestamp each call)."""
        params = {
            "oauth_version": "1.0",
            "oauth_signature_method": "PLAINTEXT",
            "oauth_consumer_key": self._consumer_key.reveal(),
            "oauth_token": self._token_key.reveal(),
            # consumer secret (empty) & token secret, each encoded, then the whole encoded again for the header.
            "oauth_signature": "&" + _encode(self._token_secret.reveal()),
            "oauth_nonce": nonce(),
            "oauth_timestamp": str(int(clock())),
        }
        return 'OAuth realm="", ' + ", ".join(f'{name}="{_encode(value)}"' for name, value in params.items())

    def scrub(self, text: str) -> str:
        """``text`` with every part of the key replaced by ``***`` (for quoting a server's error text)."""
        for part in (self._token_secret, self._token_key, self._consumer_key):
            value = part.reveal()
            if len(value) >= 4:  # as the log redaction: scrubbing "a" everywhere would only garble the text
                text = text.replace(value, "***")
        return text

    def __repr__(self) -> str:
        return f"MaasApiKey('***', source={self.source!r})"

    def __str__(self) -> str:
        return "***"

    def __reduce__(self) -> str | tuple[Any, ...]:
        raise TypeError("MAAS API keys cannot be pickled")
