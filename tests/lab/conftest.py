"""Fixtures of the lab's own tests (tests/lab): prerequisites, keys, a seed ISO.

A missing prerequisite (not root, a Debian package, the appliance ISO) makes the
tests *fail* with the reason: a lab test that silently skips proves nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

LAB_DIR = Path(__file__).resolve().parents[2] / "lab"
if str(LAB_DIR) not in sys.path:  # works without `pip install -e lab` too
    sys.path.insert(0, str(LAB_DIR))

import pplab  # noqa: E402

TOOLS = {
    "ip": "iproute2",
    "nft": "nftables",
    "sshd": "openssh-server",
    "qemu-system-x86_64": "qemu-system-x86",
    "xorriso": "xorriso",
    "openssl": "openssl",
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "qemu: boots a real QEMU guest (slow; TCG)")
    config.addinivalue_line("markers", "lab: needs the offline lab (root, namespaces, simulators)")


@pytest.fixture(scope="session")
def lab_ready() -> None:
    """Fail (never skip) when the lab cannot run here."""
    if os.geteuid() != 0:
        pytest.fail("the lab tests need root (network namespaces, taps, nftables)", pytrace=False)
    missing = [f"{tool} (Debian package {pkg})" for tool, pkg in TOOLS.items()
               if not (shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin"))]  # fmt: skip
    if missing:
        pytest.fail(f"lab prerequisites missing: {', '.join(missing)}; run lab/install.sh", pytrace=False)


@pytest.fixture(scope="session")
def appliance_iso(lab_ready: None) -> Path:
    """The built test appliance ISO."""
    try:
        return pplab.appliance_iso()
    except pplab.LabError as exc:
        pytest.fail(str(exc), pytrace=False)


def sha512_crypt(password: str) -> str:
    """A SHA-512 crypt hash (``$6$...``) made by ``openssl passwd -6``."""
    out = subprocess.run(
        ["openssl", "passwd", "-6", "-stdin"], input=password, capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def make_iso(src: Path, iso: Path, label: str) -> Path:
    """An ISO9660 + Joliet + Rock Ridge image of directory ``src`` with volume label ``label``."""
    subprocess.run(
        ["xorriso", "-as", "mkisofs", "-quiet", "-V", label, "-J", "-R", "-o", str(iso), str(src)],
        check=True, capture_output=True,
    )  # fmt: skip
    return iso
