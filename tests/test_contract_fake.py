"""The fake provider passes the provider contract suite in each of its three lifecycles, as every provider must."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from palette_provision.log import get_logger
from palette_provision.plan import DeploymentPlan, parse_plan
from palette_provision.provider import Machine, MediaFile, ProviderContext
from palette_provision.registry import create_provider
from palette_provision.testing.contract import ProviderContract
from palette_provision.testing.fake import read_state

from .conftest import base_plan


def lifecycle_plan(tmp_path: Path, lifecycle: str) -> dict[str, Any]:
    data = base_plan(tmp_path)
    data["platform"]["lifecycle"] = lifecycle
    if lifecycle == "enrolled":
        data["nodes"]["hosts"] = [
            {"name": f"palette-{i + 1}", "bmc": f"10.252.{i}.2", "bmc_password": "env:PP_TEST_NODE_PASSWORD"}
            for i in range(3)
        ]
    return data


class _FakeContract(ProviderContract):
    lifecycle = "created"

    @pytest.fixture
    def plan(self, tmp_path: Path) -> DeploymentPlan:
        return parse_plan(lifecycle_plan(tmp_path, self.lifecycle), base_dir=tmp_path)

    @pytest.fixture
    def make_provider(self, plan: DeploymentPlan, tmp_path: Path) -> Callable[[], Any]:
        context = ProviderContext(deployment=plan.name, state_dir=tmp_path / "state", log=get_logger("test"))
        return lambda: create_provider("fake", plan.platform_settings, context)

    @pytest.fixture
    def media_file(self, tmp_path: Path) -> MediaFile:
        path = tmp_path / "media.iso"
        path.write_bytes(b"x" * 10000)
        return MediaFile(role="appliance-iso", local_path=path, size=10000, name="media.iso")

    @pytest.fixture
    def boot_device_of(self, tmp_path: Path) -> Callable[[Machine], str | None]:
        def read(machine: Machine) -> str | None:
            state = read_state(tmp_path / "platform.json")
            where = {"created": state["machines"].get(machine.node), "enrolled": state["servers"].get(machine.id),
                     "allocated": state["pool"].get(machine.id)}[self.lifecycle]
            return None if where is None else str(where["boot"])

        return read


class TestFakeCreatedContract(_FakeContract):
    lifecycle = "created"


class TestFakeEnrolledContract(_FakeContract):
    lifecycle = "enrolled"


class TestFakeAllocatedContract(_FakeContract):
    lifecycle = "allocated"
