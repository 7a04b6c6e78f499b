"""preflight(): login, TLS, every named object resolved (or listed), capacity and name clashes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import structlog
from conftest import WRONG_ENV, ProviderFactory, make_plan
from palette_provision.errors import (
    AuthenticationError,
    ConfigurationError,
    TLSVerificationError,
)
from vcsim.lab import VcsimHandle, wait_task

from palette_provision_vsphere._machines import annotation


def test_preflight_passes_on_a_correct_plan(
    vcsim: VcsimHandle, unique: str, iso: Path, make_provider: ProviderFactory
) -> None:
    plan = make_plan(vcsim, unique, iso)
    provider = make_provider()
    assert provider.validate(plan) == []
    provider.preflight(plan)


def test_a_wrong_password_is_an_authentication_error(
    vcsim: VcsimHandle, unique: str, iso: Path, make_provider: ProviderFactory
) -> None:
    with pytest.raises(AuthenticationError) as info:
        make_provider(password=f"env:{WRONG_ENV}").preflight(make_plan(vcsim, unique, iso))
    assert info.value.field == "platform.password"
    assert "not-the-password" not in str(info.value)


@pytest.mark.parametrize(
    ("setting", "value", "listed"),
    [
        ("datacenter", "DC9", ["'DC0'"]),
        ("cluster", "C9", ["'DC0_C0'"]),
        ("datastore", "nope", ["'datastore1'", "'LocalDS_0'"]),
        ("network", "Lab LAN", ["'VM Network'", "'DC0_DVPG0'"]),
        ("folder", "palette/x", ["existing: none"]),
        ("resource_pool", "pool9", ["existing: none"]),
        ("esxi_host", "esx9", ["'DC0_C0_H0'", "'DC0_C0_H1'"]),
    ],
)
def test_an_unknown_object_names_the_setting_and_lists_what_exists(
    vcsim: VcsimHandle,
    unique: str,
    iso: Path,
    make_provider: ProviderFactory,
    setting: str,
    value: str,
    listed: list[str],
) -> None:
    with pytest.raises(ConfigurationError) as info:
        make_provider(**{setting: value}).preflight(make_plan(vcsim, unique, iso))
    assert info.value.field == f"platform.{setting}"
    message = str(info.value)
    assert repr(value.split("/", maxsplit=1)[0]) in message
    for name in listed:
        assert name in message


def test_a_thumbprint_mismatch_is_refused_before_login(
    vcsim: VcsimHandle, unique: str, iso: Path, make_provider: ProviderFactory
) -> None:
    with pytest.raises(TLSVerificationError) as info:
        make_provider(thumbprint="ab" * 32).preflight(make_plan(vcsim, unique, iso))
    assert info.value.field == "platform.thumbprint"
    assert "expected the pinned sha256:" + "ab" * 32 in str(info.value)


def test_the_system_store_does_not_trust_the_simulator(
    vcsim: VcsimHandle, unique: str, iso: Path, make_provider: ProviderFactory
) -> None:
    with pytest.raises(TLSVerificationError):
        make_provider(thumbprint=None).preflight(make_plan(vcsim, unique, iso))


def test_a_ca_bundle_verifies_the_simulator(
    vcsim: VcsimHandle, unique: str, iso: Path, make_provider: ProviderFactory
) -> None:
    make_provider(thumbprint=None, ca_bundle=str(vcsim.cert_path)).preflight(make_plan(vcsim, unique, iso))


def test_turning_verification_off_is_logged_as_a_warning(
    vcsim: VcsimHandle, unique: str, iso: Path, make_provider: ProviderFactory
) -> None:
    with structlog.testing.capture_logs() as events:
        make_provider(thumbprint=None, tls="insecure").preflight(make_plan(vcsim, unique, iso))
    warnings = [e for e in events if e["event"] == "tls_verification_disabled"]
    assert warnings and warnings[0]["log_level"] == "warning"
    assert warnings[0]["setting"] == "platform.tls"


def test_a_distributed_portgroup_resolves(
    vcsim: VcsimHandle, unique: str, iso: Path, make_provider: ProviderFactory
) -> None:
    provider = make_provider(network="DC0_DVPG0")
    provider.preflight(make_plan(vcsim, unique, iso))
    placement = provider._backend().placement
    assert placement.distributed and placement.portgroup_key and placement.dvs_uuid


def test_too_little_datastore_space_for_the_iso_is_refused(
    vcsim: VcsimHandle, unique: str, tmp_path: Path, make_provider: ProviderFactory
) -> None:
    provider = make_provider()
    free = provider._backend().placement.free_space
    big = tmp_path / "huge.iso"
    with big.open("wb") as f:  # sparse: costs no disk
        f.truncate(free + 1024**3)
    with pytest.raises(ConfigurationError) as info:
        provider.preflight(make_plan(vcsim, unique, big))
    assert info.value.field == "platform.datastore"
    assert "GiB free" in str(info.value)


def _foreign_vm(si: Any, name: str, note: str = "") -> Any:
    from pyVmomi import vim

    content = si.RetrieveContent()
    dc = content.searchIndex.FindByInventoryPath("DC0")
    pool = next(c for c in dc.hostFolder.childEntity if c.name == "DC0_C0").resourcePool
    spec = vim.vm.ConfigSpec(
        name=name,
        annotation=note,
        numCPUs=1,
        memoryMB=256,
        files=vim.vm.FileInfo(vmPathName="[datastore1]"),
    )
    return wait_task(si, dc.vmFolder.CreateVM_Task(config=spec, pool=pool))


def test_a_vm_with_a_planned_name_that_is_not_ours_is_refused(
    vcsim: VcsimHandle, si: Any, unique: str, iso: Path, make_provider: ProviderFactory
) -> None:
    vm = _foreign_vm(si, f"{unique}-edge-2")
    with pytest.raises(ConfigurationError) as info:
        make_provider().preflight(make_plan(vcsim, unique, iso))
    assert info.value.field == "platform.vm_prefix"
    assert f"{unique}-edge-2 ({vm._moId})" in str(info.value)


def test_a_vm_the_journal_owns_is_not_a_clash(
    vcsim: VcsimHandle, si: Any, unique: str, iso: Path, make_provider: ProviderFactory
) -> None:
    _foreign_vm(si, f"{unique}-edge-1")
    make_provider(owned=("edge-1",)).preflight(make_plan(vcsim, unique, iso))


def test_a_vm_annotated_for_another_deployment_is_a_clash(
    vcsim: VcsimHandle, si: Any, unique: str, iso: Path, make_provider: ProviderFactory
) -> None:
    _foreign_vm(si, f"{unique}-edge-1", annotation("other", "edge-1"))
    with pytest.raises(ConfigurationError, match="deployment other"):
        make_provider().preflight(make_plan(vcsim, unique, iso))


def test_validate_flags_names_vsphere_refuses(
    vcsim: VcsimHandle, unique: str, iso: Path, make_provider: ProviderFactory
) -> None:
    issues = make_provider(vm_prefix="x" * 80).validate(make_plan(vcsim, unique, iso))
    assert [i.path for i in issues] == ["platform.vm_prefix", "platform.vm_prefix"]
