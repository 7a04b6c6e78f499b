"""The package surface: registered, lazy about vendor SDKs, honest ``__all__``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import structlog
from palette_provision.provider import CAPABILITIES, Provider, ProviderContext, capabilities_of
from palette_provision.registry import available_providers, load_provider_class

import palette_provision_vsphere


def test_registered_under_the_providers_entry_point() -> None:
    assert "vsphere" in available_providers()
    assert load_provider_class("vsphere") is palette_provision_vsphere.VsphereProvider


def test_importing_the_package_does_not_import_pyvmomi_or_httpx() -> None:
    code = "import sys, palette_provision_vsphere; print(sorted(m for m in ('pyVmomi', 'httpx') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_all_names_exist_and_every_capability_is_implemented(tmp_path: Path) -> None:
    for name in palette_provision_vsphere.__all__:
        assert hasattr(palette_provision_vsphere, name)
    settings = palette_provision_vsphere.VsphereSettings.model_validate(
        {"server": "vc", "username": "u", "password": "env:PP_TEST_VSPHERE_PASSWORD", "datacenter": "d",
         "cluster": "c", "datastore": "ds", "network": "n"}
    )  # fmt: skip
    context = ProviderContext(deployment="d", state_dir=tmp_path, log=structlog.get_logger())
    provider = palette_provision_vsphere.VsphereProvider(settings, context)
    assert isinstance(provider, Provider)
    assert capabilities_of(provider) == [
        "creates_machines", "power", "power_history", "boot_device", "virtual_media", "media_staging",
        "media_locating", "address_discovery", "concurrency_limits", "disk_layout",
    ]
    assert set(capabilities_of(provider)) <= set(CAPABILITIES)
