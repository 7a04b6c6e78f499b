"""The fake provider passes the provider contract suite, as every provider must."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from palette_provision.log import get_logger
from palette_provision.plan import DeploymentPlan, parse_plan
from palette_provision.provider import MediaFile, ProviderContext
from palette_provision.registry import create_provider
from palette_provision.testing.contract import ProviderContract

from .conftest import base_plan


class TestFakeProviderContract(ProviderContract):
    @pytest.fixture
    def plan(self, tmp_path: Path) -> DeploymentPlan:
        return parse_plan(base_plan(tmp_path), base_dir=tmp_path)

    @pytest.fixture
    def make_provider(self, plan: DeploymentPlan, tmp_path: Path) -> Callable[[], Any]:
        context = ProviderContext(deployment=plan.name, state_dir=tmp_path / "state", log=get_logger("test"))
        return lambda: create_provider("fake", plan.platform_settings, context)

    @pytest.fixture
    def media_file(self, tmp_path: Path) -> MediaFile:
        path = tmp_path / "media.iso"
        path.write_bytes(b"x" * 10000)
        return MediaFile(role="appliance-iso", local_path=path, size=10000, name="media.iso")
