"""Server side of MAAS's OAuth 1.0a PLAINTEXT check: every field of the ``Authorization`` header is verified.

The header is ``OAuth oauth_version="1.0", oauth_signature_method="PLAINTEXT", oauth_consumer_key="ck",
oauth_token="tk", oauth_signature="&ts", oauth_nonce="...", oauth_timestamp="..."`` (values percent-encoded, so
``%26ts`` is the same signature). The consumer secret of a MAAS key is empty. Every problem is a 401 with a text
body worded as MAAS/piston words it.
"""

from __future__ import annotations

import hmac
import threading
import time
from dataclasses import dataclass
from urllib.parse import unquote

from .errors import unauthorized

__all__ = ["ApiKey", "NonceStore", "check_authorization", "parse_authorization"]

REQUIRED = (
    "oauth_version",
    "oauth_signature_method",
    "oauth_consumer_key",
    "oauth_token",
    "oauth_signature",
    "oauth_nonce",
    "oauth_timestamp",
)


@dataclass(frozen=True)
class ApiKey:
    """A MAAS API key ``consumer_key:token_key:token_secret``."""

    consumer_key: str
    token_key: str
    token_secret: str

    @classmethod
    def parse(cls, text: str) -> ApiKey:
        """Split ``ck:tk:ts`` (``ValueError`` otherwise; the message does not show the key)."""
        parts = text.strip().split(":")
        if len(parts) != 3 or not all(parts):
            raise ValueError("an API key is three non-empty parts consumer_key:token_key:token_secret")
        return cls(*parts)

    def __str__(self) -> str:
        return f"{self.consumer_key}:{self.token_key}:{self.token_secret}"


class NonceStore:
    """Remembers the nonces seen (per consumer and token) within the timestamp window."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str, str], float] = {}

    def use(self, consumer: str, token: str, nonce: str, now: float, window: float) -> bool:
        """Record ``nonce``; False if it was used already."""
        with self._lock:
            if len(self._seen) > 10000:
                horizon = now - 2 * window
                self._seen = {k: t for k, t in self._seen.items() if t >= horizon}
            key = (consumer, token, nonce)
            if key in self._seen:
                return False
            self._seen[key] = now
            return True


def parse_authorization(header: str | None) -> dict[str, str]:
    """Parse an ``OAuth k="v", ...`` header into its (percent-decoded) parameters; 401 when it is not one."""
    if not header:
        raise unauthorized("Authorization Required")
    scheme, _, rest = header.strip().partition(" ")
    if scheme != "OAuth":
        raise unauthorized("Authorization Error: missing starting 'OAuth' from 'Authorization' header")
    params: dict[str, str] = {}
    for raw in rest.split(","):
        item = raw.strip()
        if not item:
            continue
        name, sep, value = item.partition("=")
        if not sep or len(value) < 2 or not (value.startswith('"') and value.endswith('"')):
            raise unauthorized("Authorization Error: malformed OAuth header parameter")
        name = name.strip()
        if name in params:
            raise unauthorized(f"Authorization Error: duplicate OAuth parameter {name}")
        params[name] = unquote(value[1:-1])
    return params


def check_authorization(
    header: str | None, key: ApiKey, nonces: NonceStore, *, window: float, now: float | None = None
) -> None:
    """Raise a 401 :class:`MaasApiError` unless ``header`` is a valid PLAINTEXT signature made with ``key``."""
    params = parse_authorization(header)
    missing = [name for name in REQUIRED if not params.get(name)]
    if missing:
        raise unauthorized(f"Authorization Error: Missing OAuth parameter(s): {', '.join(missing)}")
    if params["oauth_version"] != "1.0":
        raise unauthorized(f"Authorization Error: 'OAuth version {params['oauth_version'][:20]} not supported.'")
    if params["oauth_signature_method"] != "PLAINTEXT":
        raise unauthorized(
            "Authorization Error: 'Signature method "
            f"{params['oauth_signature_method'][:20]} not supported try one of the following: PLAINTEXT'"
        )
    if not hmac.compare_digest(params["oauth_consumer_key"], key.consumer_key):
        raise unauthorized("Authorization Error: Invalid API key.")
    if not hmac.compare_digest(params["oauth_token"], key.token_key):
        # MAAS quotes the token key it did not know: a client must not copy such a text into its own errors.
        raise unauthorized(f"Authorization Error: 'Invalid access token: {params['oauth_token'][:64]}'")
    if not hmac.compare_digest(params["oauth_signature"], "&" + key.token_secret):
        raise unauthorized("Authorization Error: 'Invalid signature.'")
    _check_time(params["oauth_timestamp"], params["oauth_nonce"], key, nonces, window=window, now=now)


def _check_time(stamp: str, nonce: str, key: ApiKey, nonces: NonceStore, *, window: float, now: float | None) -> None:
    current = time.time() if now is None else now
    try:
        timestamp = int(stamp)
    except ValueError:
        raise unauthorized("Authorization Error: 'Invalid timestamp.'") from None
    if abs(current - timestamp) > window:
        raise unauthorized(
            f"Authorization Error: 'Expired timestamp: given {timestamp} and now {int(current)} has a greater "
            f"difference than threshold {int(window)}'"
        )
    if not nonces.use(key.consumer_key, key.token_key, nonce, current, window):
        raise unauthorized(f"Authorization Error: 'Nonce already used: {nonce[:64]}'")


