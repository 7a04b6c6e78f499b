"""MAAS region simulator (REST API 2.0, one HTTP(S) process) for tests and the lab.

Start it with :func:`start_maas_simulator` or ``python -m palette_provision.testing.maas``. See ``README.md`` beside
this file. The launcher (which needs ``httpx``) is imported lazily so the server process stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .launcher import MaasSimulatorHandle, SimulatorStartError, start_maas_simulator

__all__ = ["MaasSimulatorHandle", "SimulatorStartError", "start_maas_simulator"]


def __getattr__(name: str) -> Any:
    """Load the launcher on first use of one of its names."""
    if name in __all__:
        from . import launcher

        return getattr(launcher, name)
    raise AttributeError(name)
