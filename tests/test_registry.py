"""The registry: providers are found through entry points, a third party's exactly like ours."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from palette_provision.errors import PlanError, ProviderNotFound
from palette_provision.log import get_logger
from palette_provision.plan import DeploymentPlan, parse_plan
from palette_provision.provider import InstallMethod, Lifecycle, MediaFile, ProviderContext, capabilities_of
from palette_provision.registry import available_providers, create_provider, load_provider_class
from palette_provision.testing.contract import ProviderContract

from .conftest import base_plan


def test_out_of_tree_provider_is_found_through_its_entry_point() -> None:
    # Installed by ./dev from tests/fixtures/oot-provider, a separate distribution.
    assert "oot-example" in available_providers()
    cls = load_provider_class("oot-example")
    assert cls.__module__ == "oot_provider"


def test_unknown_provider_names_the_installed_ones() -> None:
    with pytest.raises(ProviderNotFound) as info:
        load_provider_class("openstack")
    assert "fake" in info.value.available and "oot-example" in info.value.available


def test_out_of_tree_settings_are_validated_with_the_platform_prefix(tmp_path: Path) -> None:
    data = base_plan(tmp_path)
    data["platform"] = {"provider": "oot-example", "zone": "a"}
    with pytest.raises(PlanError) as info:
        parse_plan(data)
    paths = {i.path for i in info.value.issues}
    assert {"platform.region", "platform.zone"} <= paths


def test_capabilities_are_protocols_not_stubs(tmp_path: Path) -> None:
    data = base_plan(tmp_path)
    data["platform"] = {"provider": "oot-example", "region": "eu"}
    plan = parse_plan(data)
    provider = create_provider("oot-example", plan.platform_settings, ProviderContext("d", tmp_path, get_logger()))
    assert capabilities_of(provider) == ["creates_machines", "power", "boot_device", "virtual_media"]
    fake = create_provider(
        "fake", parse_plan(base_plan(tmp_path)).platform_settings, ProviderContext("d", tmp_path, get_logger())
    )
    assert {"media_staging", "creates_machines", "allocates_machines", "enrolls_machines", "power", "boot_device",
            "virtual_media", "image_deployment", "address_discovery", "power_history"} <= set(capabilities_of(fake))


class _PowerOnly:
    """A provider of VMs with power and nothing else: it cannot boot media."""

    name = "power-only"
    settings_model = BaseModel
    node_settings_model = None
    lifecycle = Lifecycle.CREATED
    install_methods = (InstallMethod.BOOT_FROM_MEDIA,)

    def validate(self, plan: DeploymentPlan) -> list[Any]:
        return []

    def preflight(self, plan: DeploymentPlan) -> None: ...
    def close(self) -> None: ...
    def find_machine(self, node: Any, record: Any) -> None: ...
    def create_machine(self, node: Any, media: Any) -> Any: ...
    def delete_machine(self, machine: Any) -> None: ...
    def power_state(self, machine: Any) -> Any: ...
    def power_on(self, machine: Any) -> None: ...
    def power_off(self, machine: Any) -> None: ...


def test_a_provider_lacking_what_its_install_method_needs_is_refused_by_name(tmp_path: Path) -> None:
    from palette_provision.pipeline import Deployment

    data = base_plan(tmp_path)
    data["nodes"]["install_disk"] = "/dev/sda"  # a provider without DiskLayout: the plan names the disk
    plan = parse_plan(data, base_dir=tmp_path)
    with pytest.raises(PlanError) as info, Deployment(plan, provider=_PowerOnly(), state_dir=tmp_path / "s") as d:  # type: ignore[arg-type]
        d.check()
    assert [i.path for i in info.value.issues] == ["platform.provider"]
    message = info.value.issues[0].message
    assert "boot-from-media" in message and "virtual_media" in message and "boot_device" in message
    assert not (tmp_path / "s").exists(), "check() touches nothing"


class TestThirdPartyProviderContract(ProviderContract):
    """A third-party provider runs the same contract suite as ours."""

    @pytest.fixture
    def plan(self, tmp_path: Path) -> DeploymentPlan:
        data = base_plan(tmp_path)
        data["platform"] = {"provider": "oot-example", "region": "eu"}
        return parse_plan(data, base_dir=tmp_path)

    @pytest.fixture
    def make_provider(self, plan: DeploymentPlan, tmp_path: Path) -> Callable[[], Any]:
        return lambda: create_provider(
            "oot-example", plan.platform_settings, ProviderContext(plan.name, tmp_path, get_logger())
        )

    @pytest.fixture
    def media_file(self, tmp_path: Path) -> MediaFile:
        path = tmp_path / "m.iso"
        path.write_bytes(b"m")
        return MediaFile(role="appliance-iso", local_path=path, size=1, name="m.iso")
