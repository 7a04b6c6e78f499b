"""Palette Local Management API simulator (one HTTPS process per node) for tests and the lab.

Start nodes with :func:`start_simulator` or :class:`SimulatedCluster`, or from the command line with
``python -m palette_provision.testing.localapi``. See ``README.md`` beside this file.

The launcher (which needs ``httpx``) is imported lazily so the server process stays stdlib-only
(plus ``cryptography`` for its certificate).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .launcher import SimulatedCluster, SimulatorHandle, SimulatorStartError, VipEndpoints, start_simulator

__all__ = ["SimulatedCluster", "SimulatorHandle", "SimulatorStartError", "VipEndpoints", "start_simulator"]


def __getattr__(name: str) -> Any:
    """Load the launcher on first use of one of its names."""
    if name in __all__:
        from . import launcher

        return getattr(launcher, name)
    raise AttributeError(name)
