"""Power, boot media and address discovery on a created VM."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import structlog
from conftest import ProviderFactory
from palette_provision.errors import ProviderError
from palette_provision.provider import Machine, MediaSlot, PowerState, SlotKind
from pyVmomi import vim
from test_machines import node_of, read_vm, staged_pair
from vcsim.lab import VcsimHandle, wait_task

from palette_provision_vsphere import VsphereProvider
from palette_provision_vsphere._power import best_address


@pytest.fixture
def built(
    vcsim: VcsimHandle,
    unique: str,
    iso: Path,
    tmp_path: Path,
    make_provider: ProviderFactory,
) -> tuple[VsphereProvider, Machine, list[Any]]:
    provider = make_provider()
    media = staged_pair(provider, iso, tmp_path)
    return provider, provider.create_machine(node_of(vcsim, unique, iso), media), media


def test_power_on_and_off_are_idempotent(
    built: tuple[VsphereProvider, Machine, list[Any]],
) -> None:
    provider, machine, _ = built
    assert provider.power_state(machine) is PowerState.OFF
    provider.power_on(machine)
    provider.power_on(machine)
    assert provider.power_state(machine) is PowerState.ON
    provider.power_off(machine)
    provider.power_off(machine)
    assert provider.power_state(machine) is PowerState.OFF


SLOTS = [MediaSlot(SlotKind.CD, 0), MediaSlot(SlotKind.CD, 1)]


def cds(si: Any, machine: Machine) -> list[Any]:
    devices = read_vm(si, machine.id).config.hardware.device
    return sorted(
        (d for d in devices if isinstance(d, vim.vm.device.VirtualCdrom)),
        key=lambda d: d.unitNumber,
    )


def test_detach_refuses_a_running_vm(
    built: tuple[VsphereProvider, Machine, list[Any]],
) -> None:
    provider, machine, _ = built
    provider.power_on(machine)
    with pytest.raises(ProviderError, match="must be powered off"):
        provider.eject_media(machine, SLOTS)


def test_detach_removes_both_cds_and_boots_from_disk(
    built: tuple[VsphereProvider, Machine, list[Any]], si: Any
) -> None:
    provider, machine, _ = built
    provider.eject_media(machine, SLOTS)
    provider.eject_media(machine, SLOTS)
    assert cds(si, machine) == []
    order = read_vm(si, machine.id).config.bootOptions.bootOrder
    assert len(order) == 1 and isinstance(order[0], vim.vm.BootOptions.BootableDiskDevice)


def test_attach_restores_the_media_and_changes_nothing_when_already_right(
    built: tuple[VsphereProvider, Machine, list[Any]], si: Any
) -> None:
    provider, machine, media = built
    with structlog.testing.capture_logs() as events:
        provider.insert_media(machine, dict(zip(SLOTS, media, strict=True)))
    assert not [e for e in events if e["event"] == "media_attached"]
    provider.eject_media(machine, SLOTS)
    provider.insert_media(machine, dict(zip(SLOTS, media, strict=True)))
    assert [cd.backing.fileName for cd in cds(si, machine)] == [m.locator for m in media]
    order = read_vm(si, machine.id).config.bootOptions.bootOrder
    assert isinstance(order[0], vim.vm.BootOptions.BootableCdromDevice)


def test_the_address_comes_from_vmware_tools(
    built: tuple[VsphereProvider, Machine, list[Any]],
    si: Any,
    vcsim: VcsimHandle,
    unique: str,
    iso: Path,
) -> None:
    provider, machine, _ = built
    node = node_of(vcsim, unique, iso)
    assert provider.discover_address(machine, node) is None
    provider.power_on(machine)
    vm = read_vm(si, machine.id)
    # vcsim 0.24.2 runs no guest: its SET.guest.* extraConfig keys stand in for VMware Tools' report.
    wait_task(
        si,
        vm.ReconfigVM_Task(
            vim.vm.ConfigSpec(extraConfig=[vim.option.OptionValue(key="SET.guest.ipAddress", value="10.251.0.11")])
        ),
    )
    assert provider.discover_address(machine, node) == "10.251.0.11"


def nic(mac: str, *ips: str) -> Any:
    return SimpleNamespace(macAddress=mac, ipAddress=list(ips), ipConfig=None)


def test_address_choice_matches_the_mac_and_skips_link_local(vcsim: VcsimHandle, unique: str, iso: Path) -> None:
    node = node_of(vcsim, unique, iso)
    net = [
        nic("00:50:56:00:00:02", "172.17.0.1"),
        nic("00:50:56:00:00:01", "fe80::1", "169.254.3.4", "10.0.0.7", "2001:db8::7"),
    ]
    assert best_address(net, "172.17.0.1", "00:50:56:00:00:01", node) == "10.0.0.7"
    assert best_address([nic("00:50:56:00:00:01", "fe80::1")], "10.0.0.9", "00:50:56:00:00:01", node) == "10.0.0.9"
    assert best_address([], "169.254.1.1", "00:50:56:00:00:01", node) is None
    assert best_address([], None, None, node) is None


def test_an_expired_session_is_renewed_transparently(built: tuple[VsphereProvider, Machine, list[Any]]) -> None:
    provider, machine, _ = built
    session = provider._backend().session
    session.content.sessionManager.Logout()  # what vCenter does to a session idle for 30 minutes
    provider.power_on(machine)
    assert provider.power_state(machine) is PowerState.ON


def test_last_power_on_comes_from_the_event_log_and_survives_power_off(
    built: tuple[VsphereProvider, Machine, list[Any]],
) -> None:
    provider, machine, _ = built
    assert provider.last_power_on(machine) is None
    before = time.time()
    provider.power_on(machine)
    provider.power_off(machine)  # the installer's power-off: vCenter clears runtime.bootTime here
    stamp = provider.last_power_on(machine)
    assert stamp is not None and before - 5 <= stamp <= time.time() + 5
