"""TLS verification with certificate pinning, for every HTTPS client in the project.

Three modes, chosen explicitly by the user:

* ``verify`` (default): the system trust store, or a CA bundle.
* ``pin``: the server certificate's SHA-256 fingerprint must equal a known value. Self-signed appliance and vcsim
  certificates are handled this way. The check runs inside the TLS handshake, before any request byte (a login
  body, say) is sent.
* ``insecure``: no verification; the caller logs that choice.

:func:`pinned_context` works with any library that takes an ``ssl.SSLContext`` (httpx, pyVmomi, http.client),
because it swaps the context's socket class: one mechanism for every client.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
from collections.abc import Callable
from typing import Any

from palette_provision.errors import TLSVerificationError

__all__ = [
    "certificate_refusal",
    "fetch_fingerprint",
    "insecure_context",
    "normalize_fingerprint",
    "pinned_context",
    "verified_context",
]


def normalize_fingerprint(value: str) -> str:
    """Return a fingerprint as lower-case hex without separators (accepts ``AB:CD:..`` and ``sha256:...``)."""
    text = value.strip().lower()
    if text.startswith("sha256:"):
        text = text[len("sha256:") :]
    text = text.replace(":", "").replace(" ", "")
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError("a SHA-256 fingerprint is 64 hex digits (optionally colon-separated)")
    return text


def _fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def pinned_context(expected: str | Callable[[str], None], *, server: str = "server") -> ssl.SSLContext:
    """Return a client context that accepts exactly the certificate whose SHA-256 is ``expected``.

    ``expected`` may instead be a callable receiving the fingerprint seen; it raises to refuse (used for
    trust-on-first-use: record on first contact, then pin).

    Raises (during the handshake):
        TLSVerificationError: the certificate's fingerprint differs; the message shows both fingerprints.
    """
    check: Callable[[str], None]
    if isinstance(expected, str):
        want = normalize_fingerprint(expected)

        def check(seen: str) -> None:
            if seen != want:
                raise TLSVerificationError(
                    f"certificate fingerprint of {server} is sha256:{seen}, expected the pinned sha256:{want}"
                )

    else:
        check = expected

    class _PinnedSocket(ssl.SSLSocket):
        def do_handshake(self, block: bool = False) -> None:
            super().do_handshake(block)
            der = self.getpeercert(binary_form=True)
            if der is None:
                raise TLSVerificationError(f"{server} presented no certificate")
            try:
                check(_fingerprint(der))
            except BaseException:
                # Close before the caller can send anything over this connection.
                self.close()
                raise

    context = _unverified_context()
    context.sslsocket_class = _PinnedSocket
    return context


def _unverified_context() -> ssl.SSLContext:
    # PROTOCOL_TLS_CLIENT has the same protocol floor and options as create_default_context() but loads no CA
    # store: parsing the system's ~150 CA certificates costs ~20 ms that a context verifying no chain never uses.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # The pin replaces chain and host-name checks: appliance and simulator certificates are self-signed.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def verified_context(ca_bundle: str | None = None) -> ssl.SSLContext:
    """Return a context verifying against the system store, or against ``ca_bundle`` when given."""
    return ssl.create_default_context(cafile=ca_bundle)


def insecure_context() -> ssl.SSLContext:
    """Return a context that verifies nothing. Only for an explicit, logged user opt-out."""
    return _unverified_context()


def fetch_fingerprint(host: str, port: int, timeout: float = 10.0) -> str:
    """Connect once and return the SHA-256 fingerprint of the certificate ``host:port`` presents."""
    seen: dict[str, Any] = {}

    def record(fp: str) -> None:
        seen["fp"] = fp

    context = pinned_context(record, server=f"{host}:{port}")
    with socket.create_connection((host, port), timeout=timeout) as raw, context.wrap_socket(raw, server_hostname=host):
        pass
    return str(seen["fp"])


def certificate_refusal(exc: BaseException) -> str | None:
    """Why a TLS handshake refused the peer's certificate, when that is where ``exc`` comes from (anywhere in its
    cause or context chain: httpx wraps httpcore's error around the ssl module's); else ``None``. A refusal is final:
    callers raise :class:`~palette_provision.errors.TLSVerificationError` instead of retrying.

    >>> certificate_refusal(ConnectionError("x")) is None
    True
    """
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            break
        if isinstance(seen, ssl.SSLCertVerificationError):
            return str(seen.verify_message or "certificate verify failed")
        if isinstance(seen, ssl.SSLError) and "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return "certificate verify failed"
        seen = seen.__cause__ or seen.__context__
    return None
