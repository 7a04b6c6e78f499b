"""Palette Local Management API simulator (one HTTPS process per node) for tests and the lab.

Start nodes with :func:`start_simulator` or :class:`SimulatedCluster`, or from the command line with
``python -m palette_provision.testing.localapi``. See ``README.md`` beside this file.
"""

from __future__ import annotations

from .launcher import SimulatedCluster, SimulatorHandle, SimulatorStartError, start_simulator

__all__ = ["SimulatedCluster", "SimulatorHandle", "SimulatorStartError", "start_simulator"]
