"""SSH keys for tests: an ed25519 pair in OpenSSH formats (a node's host key, a user's key)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


@dataclass(frozen=True)
class Ed25519:
    """An ed25519 key pair in OpenSSH formats."""

    private_openssh: str
    public_openssh: str

    @classmethod
    def generate(cls, comment: str) -> Ed25519:
        key = Ed25519PrivateKey.generate()
        priv = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        ).decode()
        pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        return cls(priv, f"{pub.decode()} {comment}")

    def write_private(self, path: Path) -> Path:
        path.write_text(self.private_openssh)
        path.chmod(0o600)
        return path
