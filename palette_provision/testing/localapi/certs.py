"""Self-signed TLS certificate for a simulated node (the appliance serves a self-signed one too)."""

from __future__ import annotations

import hashlib
import ssl
from pathlib import Path

from palette_provision.media_server._tls import generate_self_signed as make_certificate


def generate_self_signed(
    cert_path: Path, key_path: Path, common_name: str, names: list[str]
) -> None:
    """Write a fresh P-256 key (mode 0600) and a 1-year self-signed certificate (SANs from ``names``: IP SANs for
    what parses as an address, DNS SANs otherwise), through the project's one certificate maker."""
    make_certificate(cert_path, key_path, names, days=365, reuse=False, common_name=common_name, key_type="ec")


def cert_sha256(cert_path: Path) -> str:
    """Return the lowercase hex SHA-256 of the certificate's DER encoding."""
    der = ssl.PEM_cert_to_DER_cert(cert_path.read_text())
    return hashlib.sha256(der).hexdigest()


def server_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    """Build the server-side TLS context (TLS 1.2+)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_path, key_path)
    return context
