"""Shared test set-up of the bare-metal provider: the markers, and the lab's packages importable.

The root pyproject registers the ``lab`` and ``qemu`` markers; they are registered again here so these tests also
collect when pytest is pointed at this folder with another configuration.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
LAB_DIR = REPO / "lab"
if str(LAB_DIR) not in sys.path:  # bmclab and pplab, also without `pip install -e lab`
    sys.path.insert(0, str(LAB_DIR))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "lab: needs the offline lab (root, namespaces, simulators)")
    config.addinivalue_line("markers", "qemu: boots a real QEMU guest (slow; TCG)")
