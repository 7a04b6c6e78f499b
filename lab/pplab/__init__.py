"""pplab: the offline test lab of palette-provision (QEMU runner, lab LAN, sshd nodes).

Modules: :mod:`pplab.net` (namespaces, DNAT of the Local API port, sshd nodes),
:mod:`pplab.qemu` (guests), :mod:`pplab.disk` (sparse disks, the test
appliance's installed state). Linux only; everything that touches the network
needs root. See lab/README.md.
"""

from __future__ import annotations

import os
from pathlib import Path

from pplab._cmd import LabError

__all__ = ["LabError", "appliance_iso", "lab_dir"]
__version__ = "0.1.0"


def lab_dir() -> Path:
    """The ``lab/`` directory of the source tree this package was installed from (editable install)."""
    return Path(__file__).resolve().parent.parent


def appliance_iso() -> Path:
    """The test appliance ISO: ``$PPLAB_APPLIANCE_ISO``, else ``lab/build/appliance.iso``; raises if missing."""
    path = Path(os.environ.get("PPLAB_APPLIANCE_ISO") or lab_dir() / "build" / "appliance.iso")
    if not path.is_file():
        raise LabError(f"test appliance ISO {path} not found: run lab/install.sh (or lab/appliance/build.sh)")
    return path
