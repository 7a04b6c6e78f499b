"""The media server's certificate: given by the caller, or generated self-signed here, pinned by its SHA-256."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from palette_provision.errors import ConfigurationError

__all__ = ["TlsFiles", "generate_self_signed"]


@dataclass(frozen=True)
class TlsFiles:
    """A PEM certificate (chain) and its private key, for serving HTTPS."""

    cert: Path
    key: Path

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the (first) certificate's DER form, lower-case hex: what a BMC or client pins."""
        try:
            der = ssl.PEM_cert_to_DER_cert(self.cert.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"cannot read the certificate {self.cert}: {exc}") from exc
        return hashlib.sha256(der).hexdigest()

    def server_context(self) -> ssl.SSLContext:
        """A TLS 1.2+ server context with this pair loaded.

        Raises:
            ConfigurationError: the files are unreadable or do not match.
        """
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(f"cannot load the certificate {self.cert} with key {self.key}: {exc}") from exc
        return context


def generate_self_signed(
    cert_path: Path,
    key_path: Path,
    names: Sequence[str],
    *,
    days: int = 825,
    reuse: bool = True,
    common_name: str = "palette-provision media server",
    key_type: str = "rsa",
) -> TlsFiles:
    """Write a self-signed certificate for ``names`` (IP addresses or DNS names) and its key (mode 0600): the one
    certificate maker of the project (the media server's, and the simulators' in ``palette_provision.testing``).

    With ``reuse`` (default), an existing pair is kept: the fingerprint a BMC was given stays valid when the server
    is restarted. ``key_type`` ``rsa`` (2048, the default: some BMCs' TLS stacks offer no ECDSA cipher suite) or
    ``ec`` (P-256, as the appliance's own certificate).

    Returns the pair; its :attr:`TlsFiles.fingerprint` is what to pin.
    """
    cert_path, key_path = Path(cert_path), Path(key_path)
    files = TlsFiles(cert_path, key_path)
    if reuse and cert_path.exists() and key_path.exists():
        return files
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = (
        ec.generate_private_key(ec.SECP256R1()) if key_type == "ec" else rsa.generate_private_key(65537, 2048)
    )
    sans: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(key, hashes.SHA256())
    key_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return files
