"""The settings model and validate(): offline, no simulator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from palette_provision.errors import PlanError
from palette_provision.plan import parse_plan
from pydantic import ValidationError

from palette_provision_vsphere import VsphereSettings

BASE: dict[str, Any] = {
    "server": "vc.example.com",
    "username": "administrator@vsphere.local",
    "password": "env:PP_TEST_VSPHERE_PASSWORD",
    "datacenter": "DC0",
    "cluster": "C0",
    "datastore": "ds1",
    "network": "VM Network",
}


def settings(**changes: Any) -> VsphereSettings:
    data = {**BASE, **changes}
    return VsphereSettings.model_validate({k: v for k, v in data.items() if v is not None})


def test_verification_is_the_default() -> None:
    assert settings().tls_mode == "verify"


def test_a_thumbprint_means_pinning_and_is_normalised() -> None:
    s = settings(thumbprint="AB:" * 31 + "CD")
    assert s.tls_mode == "pin"
    assert s.thumbprint == "ab" * 31 + "cd"


def test_the_password_never_prints() -> None:
    s = settings()
    assert "lab-Passw0rd" not in repr(s) and "lab-Passw0rd" not in str(s.model_dump())
    assert s.model_dump(mode="json")["password"] == "env:PP_TEST_VSPHERE_PASSWORD"


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"tls": "pin"}, "needs the server certificate's thumbprint"),
        ({"tls": "insecure", "thumbprint": "00" * 32}, "only used with tls: pin"),
        (
            {"tls": "pin", "thumbprint": "00" * 32, "ca_bundle": "/x.pem"},
            "only used with tls: verify",
        ),
        ({"cluster": None}, "give cluster, esxi_host or both"),
        ({"thumbprint": "xyz"}, "64 hex digits"),
        ({"media_folder": "a b"}, "letters, digits"),
        ({"password": "hunter2"}, "secret must be a reference"),
        ({"datacentre": "DC0"}, "Extra inputs are not permitted"),
    ],
)
def test_bad_settings_are_refused_with_the_reason(changes: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError) as info:
        settings(**changes)
    assert needle in str(info.value)
    assert "hunter2" not in str(info.value)


def test_plan_errors_carry_the_platform_prefix(tmp_path: Path) -> None:
    data = {
        "name": "demo",
        "profile": "edge",
        "iso": {"source": str(tmp_path / "a.iso")},
        "cluster": {
            "name": "e",
            "vip": "10.0.0.9",
            "dns": ["10.0.0.1"],
            "node_account": {"password": "env:X_PW"},
        },
        "nodes": {
            "count": 1,
            "cpus": 2,
            "memory_gb": 4,
            "install_disk_gb": 32,
            "storage_disk_gb": 0,
        },
        "platform": {
            "provider": "vsphere",
            **{k: v for k, v in BASE.items() if k != "datastore"},
        },
        "readiness": {"ssh": False},
        "handoff": {"kind": "none"},
    }
    with pytest.raises(PlanError) as info:
        parse_plan(data)
    assert any(issue.path == "platform.datastore" for issue in info.value.issues)


def test_an_iso_name_with_search_pattern_characters_is_a_plan_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from palette_provision.log import get_logger
    from palette_provision.provider import ProviderContext

    from palette_provision_vsphere import VsphereProvider

    monkeypatch.setenv("X_PW", "pw-for-the-test")
    data = {
        "name": "demo", "profile": "edge", "iso": {"source": str(tmp_path / "palette[1].iso")},
        "cluster": {"name": "e", "vip": "10.0.0.9", "dns": ["10.0.0.1"], "node_account": {"password": "env:X_PW"}},
        "nodes": {"count": 1, "cpus": 2, "memory_gb": 4, "install_disk_gb": 32, "storage_disk_gb": 0},
        "platform": {"provider": "vsphere", **BASE},
        "readiness": {"ssh": False}, "handoff": {"kind": "none"},
    }
    plan = parse_plan(data)
    provider = VsphereProvider(plan.platform_settings, ProviderContext("demo", tmp_path, get_logger("t")))
    issues = provider.validate(plan)
    assert [i.path for i in issues] == ["iso.source"] and "* ? [" in issues[0].message
