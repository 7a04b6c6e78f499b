"""The core's provider contract suite, run against the vSphere provider on vcsim."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import structlog
from conftest import make_plan, remove_vms
from palette_provision.plan import DeploymentPlan
from palette_provision.provider import MediaFile, ProviderContext
from palette_provision.registry import create_provider
from palette_provision.testing.contract import ProviderContract
from vcsim.lab import VcsimHandle


class TestVsphereContract(ProviderContract):
    @pytest.fixture
    def plan(self, vcsim: VcsimHandle, unique: str, iso: Path) -> Iterator[DeploymentPlan]:
        yield make_plan(vcsim, unique, iso)
        remove_vms(vcsim, f"{unique}-")

    @pytest.fixture
    def make_provider(self, plan: DeploymentPlan, tmp_path: Path) -> Callable[[], object]:
        def build() -> object:
            context = ProviderContext(
                deployment=plan.name,
                state_dir=tmp_path / "state",
                log=structlog.get_logger("palette_provision_vsphere").bind(provider="vsphere"),
            )
            return create_provider("vsphere", plan.platform_settings, context)

        return build

    @pytest.fixture
    def media_file(self, tmp_path: Path) -> MediaFile:
        path = tmp_path / "contract.iso"
        path.write_bytes(os.urandom(256 * 1024))
        return MediaFile("appliance-iso", path, path.stat().st_size, "contract.iso")
