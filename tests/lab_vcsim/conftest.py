"""Fixtures for the vcsim lab tests: a fresh simulator per test (it starts in ~0.15 s).

A missing prerequisite (Go toolchain, govmomi source, a failed build) makes the fixture *fail* with the reason:
a lab test that silently skips proves nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

LAB_DIR = Path(__file__).resolve().parents[2] / "lab"
if str(LAB_DIR) not in sys.path:
    sys.path.insert(0, str(LAB_DIR))

from pyVmomi import vim  # noqa: E402
from vcsim.lab import VcsimError, VcsimHandle, connect, disconnect, start_vcsim  # noqa: E402

PASSWORD = "lab-Passw0rd!"


@pytest.fixture
def vcsim(tmp_path: Path) -> Iterator[VcsimHandle]:
    """A running simulator with ``[datastore1]`` on ``tmp_path/datastore``; user ``admin``."""
    try:
        handle = start_vcsim(tmp_path / "vcsim", 0, "admin", PASSWORD)
    except VcsimError as exc:
        pytest.fail(f"the vcsim lab cannot start: {exc}", pytrace=False)
    with handle:
        yield handle


@pytest.fixture
def si(vcsim: VcsimHandle) -> Iterator[vim.ServiceInstance]:
    """A verified pyVmomi session to :func:`vcsim`."""
    service = connect(vcsim)
    yield service
    disconnect(service)
