"""Session tokens: JWT-shaped (HS256), signed with a per-node secret, with expiry and logout.

Tokens are per node, as on the appliance (``share-auth.md``): a token from one node is rejected by
another because each node signs with its own secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Claims:
    """The verified content of a session token."""

    subject: str
    issued_at: float
    expires_at: float
    token_id: str


class TokenService:
    """Issues and verifies this node's session tokens."""

    def __init__(self, secret: bytes, issuer: str) -> None:
        self._secret = secret
        self._issuer = issuer
        self._revoked: set[str] = set()
        self._lock = threading.Lock()

    def issue(self, subject: str, lifetime_s: float) -> str:
        """Return a new token for ``subject`` valid for ``lifetime_s`` seconds."""
        now = time.time()
        header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
        payload = _b64url(
            json.dumps(
                {
                    "sub": subject,
                    "iss": self._issuer,
                    "iat": now,
                    "exp": now + lifetime_s,
                    "jti": secrets.token_hex(8),
                },
                separators=(",", ":"),
            ).encode()
        )
        return f"{header}.{payload}.{self._sign(header, payload)}"

    def _sign(self, header: str, payload: str) -> str:
        digest = hmac.new(self._secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        return _b64url(digest)

    def verify(self, token: str) -> tuple[Claims | None, str]:
        """Return ``(claims, "")`` for a valid token, else ``(None, reason)``."""
        parts = token.split(".")
        if len(parts) != 3:
            return None, "token is not a JWT"
        header, payload, signature = parts
        if not hmac.compare_digest(signature, self._sign(header, payload)):
            return None, "token signature is not valid for this node"
        try:
            data = json.loads(_unb64url(payload))
            claims = Claims(str(data["sub"]), float(data["iat"]), float(data["exp"]), str(data["jti"]))
        except (ValueError, KeyError, TypeError):
            return None, "token payload is malformed"
        with self._lock:
            if claims.token_id in self._revoked:
                return None, "token was logged out"
        if time.time() >= claims.expires_at:
            return None, "token expired"
        return claims, ""

    def revoke(self, claims: Claims) -> None:
        """Invalidate a token (logout)."""
        with self._lock:
            self._revoked.add(claims.token_id)


def token_from_request(authorization: str | None, cookie_header: str | None) -> tuple[str | None, str]:
    """Pick the session token from the ``Authorization`` header or the ``Authorization`` cookie.

    The header must carry the raw token (the docs' form); a ``Bearer`` prefix is refused with a reason
    so a client that adds one notices. Returns ``(token, "")`` or ``(None, reason)``.
    """
    if authorization:
        value = authorization.strip()
        if value.lower().startswith("bearer "):
            return None, "the Authorization header must carry the raw token, without 'Bearer'"
        return value, ""
    if cookie_header:
        try:
            jar: SimpleCookie = SimpleCookie(cookie_header)
        except CookieError:
            return None, "Cookie header is malformed"
        morsel = jar.get("Authorization")
        if morsel is not None and morsel.value:
            return morsel.value, ""
    return None, "no Authorization header or cookie"


def password_digest(password: str) -> str:
    """Return the stored form of a password (salted-free SHA-256 is enough for a simulator)."""
    return hashlib.sha256(password.encode()).hexdigest()
