"""The core's provider contract suite, run against the vSphere provider on vcsim."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from conftest import make_plan, remove_vms
from palette_provision.plan import DeploymentPlan
from palette_provision.provider import Machine, ProviderContext
from palette_provision.registry import create_provider
from palette_provision.testing.contract import ProviderContract
from pyVmomi import vim
from test_machines import read_vm
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
    def boot_device_of(self, si: Any) -> Callable[[Machine], str | None]:
        """What vCenter says the VM boots first: its boot order's first entry."""

        def read(machine: Machine) -> str | None:
            order = read_vm(si, machine.id).config.bootOptions.bootOrder or []
            if not order:
                return None
            return "cd" if isinstance(order[0], vim.vm.BootOptions.BootableCdromDevice) else "disk"

        return read
