"""Fixtures: simulated appliance nodes (real HTTPS processes) and a journal per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from palette_provision.journal import Journal
from palette_provision.testing.localapi import SimulatedCluster
from tests.handoff import rig

#: The ``simulate`` fixture: ``simulate(size, **knobs)``.
Simulate = Callable[..., SimulatedCluster]


@pytest.fixture
def simulate(tmp_path: Path) -> Iterator[Callable[..., SimulatedCluster]]:
    """Factory: ``simulate(size, **knobs)`` starts ``size`` simulator processes (stopped at teardown)."""
    started: list[SimulatedCluster] = []

    def _start(size: int = 1, **knobs: Any) -> SimulatedCluster:
        sim = SimulatedCluster(
            tmp_path / f"sim{len(started)}", size, password=rig.NODE_PASSWORD, username=rig.USERNAME,
            knobs={**rig.FAST_KNOBS, **knobs},
        )
        started.append(sim)
        return sim.start()

    yield _start
    for sim in started:
        sim.stop()


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    """The deployment's journal (closed at teardown)."""
    with Journal.open(tmp_path / "journal.sqlite", deployment="handoff-test") as j:
        yield j


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    """A small content bundle."""
    path = tmp_path / "content-bundle.tar.zst"
    path.write_bytes(b"palette content bundle\n" * 4096)
    return path
