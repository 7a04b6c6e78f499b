"""Certificates of a simulated cluster's VIP services, made once per cluster and kept in the state dir.

* The system console: self-signed for the VIP (and the addresses a test connects to) through the project's one
  certificate maker (``media_server._tls.generate_self_signed``), plus a second one with the same names and a new key
  that the ``console_cert_changed`` knob serves.
* The kube-apiserver stand-in: a per-cluster CA, a server certificate it signs (VIP, loopback, the listen host and
  the ``kubernetes.default`` names) and the admin client certificate (``CN=kubernetes-admin``,
  ``O=system:masters``, as kubeadm writes it). ``generate_self_signed`` makes only self-signed leaves, so the CA and
  the two certificates it signs are made here with ``cryptography``.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from palette_provision.media_server._tls import generate_self_signed
from palette_provision.testing._simhttp import cert_sha256

DAYS = 365


@dataclass(frozen=True)
class VipCertFiles:
    """Where one cluster's VIP certificates and keys are (PEM; keys mode 0600)."""

    directory: Path

    def path(self, name: str) -> Path:
        """``<directory>/<name>`` (e.g. ``kube-ca.crt``)."""
        return self.directory / name

    @property
    def console(self) -> tuple[Path, Path]:
        """The console's certificate and key."""
        return self.path("console.crt"), self.path("console.key")

    @property
    def console_alt(self) -> tuple[Path, Path]:
        """The console's second certificate and key (``console_cert_changed``)."""
        return self.path("console-alt.crt"), self.path("console-alt.key")

    @property
    def kube_server(self) -> tuple[Path, Path]:
        """The kube-apiserver stand-in's certificate (signed by the cluster CA) and key."""
        return self.path("kube-server.crt"), self.path("kube-server.key")

    @property
    def kube_ca(self) -> Path:
        """The cluster CA's certificate (what the kubeconfig's ``certificate-authority-data`` holds)."""
        return self.path("kube-ca.crt")

    @property
    def kube_admin(self) -> tuple[Path, Path]:
        """The admin client certificate and key (the kubeconfig's ``client-*-data``)."""
        return self.path("kube-admin.crt"), self.path("kube-admin.key")

    def fingerprints(self) -> dict[str, str]:
        """SHA-256 (DER, lower-case hex) of the console's two certificates, the CA and the kube server certificate."""
        return {"console": cert_sha256(self.console[0]), "consoleAlt": cert_sha256(self.console_alt[0]),
                "kubeCa": cert_sha256(self.kube_ca), "kubeServer": cert_sha256(self.kube_server[0])}


def _write_key(path: Path, pem: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)


def _sans(names: Sequence[str]) -> list[object]:
    from cryptography import x509

    sans: list[object] = []
    for name in dict.fromkeys(n for n in names if n):
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    return sans


def _make_kube_pki(files: VipCertFiles, cluster_name: str, server_names: Sequence[str]) -> None:
    """Write the cluster CA, the server certificate and the admin client certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(days=1), now + datetime.timedelta(days=DAYS)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes"),
                         x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, cluster_name)])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files.kube_ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    _write_key(files.path("kube-ca.key"), ca_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski)
    leaves: list[tuple[tuple[Path, Path], x509.Name, object, list[object]]] = [
        (files.kube_server, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]),
         ExtendedKeyUsageOID.SERVER_AUTH, _sans(server_names)),
        (files.kube_admin, x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                                      x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes-admin")]),
         ExtendedKeyUsageOID.CLIENT_AUTH, []),
    ]
    for (cert_path, key_path), subject, usage, sans in leaves:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)  # type: ignore[list-item]
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(aki, critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)  # type: ignore[arg-type]
        cert = builder.sign(ca_key, hashes.SHA256())
        _write_key(key_path, key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def ensure(directory: Path, *, cluster_name: str, vip: str, extra_names: Sequence[str]) -> VipCertFiles:
    """Return the cluster's certificate files in ``directory``, making those missing (kept across restarts).

    ``extra_names`` are added to the VIP in the server certificates' names (the listen host and loopback, so a
    test connecting to the listener directly can verify them too).
    """
    directory.mkdir(parents=True, exist_ok=True)
    files = VipCertFiles(directory)
    names = [vip, *extra_names]
    for cert, key in (files.console, files.console_alt):
        generate_self_signed(cert, key, names, days=DAYS, reuse=True, common_name=vip, key_type="ec")
    if not all(p.exists() for p in (files.kube_ca, *files.kube_server, *files.kube_admin)):
        _make_kube_pki(files, cluster_name, [*names, "kubernetes", "kubernetes.default",
                                             "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"])
    return files
