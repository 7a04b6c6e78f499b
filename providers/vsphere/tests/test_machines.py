"""create/find/delete_machine: the VM spec read back field by field, idempotency, ownership."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import ProviderFactory, make_plan
from palette_provision.errors import ProviderError
from palette_provision.plan import NodeSpec
from palette_provision.provider import StagedMedia
from pyVmomi import vim
from test_staging import media_for
from vcsim.lab import VcsimHandle

from palette_provision_vsphere import VsphereProvider


def staged_pair(provider: VsphereProvider, iso: Path, tmp_path: Path, node: str = "edge-1") -> list[StagedMedia]:
    seed = tmp_path / f"{node}-seed.iso"
    seed.write_bytes(b"#cloud-config\n" * 100)
    return [
        provider.stage_media(media_for(iso)),
        provider.stage_media(media_for(seed, name=f"{node}-seed.iso", role="seed")),
    ]


def read_vm(si: Any, moid: str) -> Any:
    return vim.VirtualMachine(moid, si._stub)


def node_of(vcsim: VcsimHandle, unique: str, iso: Path, index: int = 0, **nodes: Any) -> NodeSpec:
    return make_plan(vcsim, unique, iso, **nodes).node_specs()[index]


def test_the_vm_is_built_as_the_plan_says(
    vcsim: VcsimHandle,
    si: Any,
    unique: str,
    iso: Path,
    tmp_path: Path,
    make_provider: ProviderFactory,
) -> None:
    provider = make_provider()
    media = staged_pair(provider, iso, tmp_path)
    node = node_of(vcsim, unique, iso, secure_boot=True)
    machine = provider.create_machine(node, media)

    vm = read_vm(si, machine.id)
    config = vm.config
    assert machine.name == vm.name == f"{unique}-edge-1"
    assert machine.node == "edge-1"
    assert config.firmware == "efi" and config.bootOptions.efiSecureBootEnabled is True
    assert (config.hardware.numCPU, config.hardware.memoryMB) == (2, 4096)
    assert config.guestId == "ubuntu64Guest"
    assert "palette-provision: deployment=demo node=edge-1" in config.annotation
    assert {o.key: o.value for o in config.extraConfig}["disk.EnableUUID"] == "TRUE"

    devices = config.hardware.device
    pvscsi = [d for d in devices if isinstance(d, vim.vm.device.ParaVirtualSCSIController)]
    assert len(pvscsi) == 1
    # The slot the disks' by-path names (the seed's install.device) depend on.
    assert pvscsi[0].slotInfo is not None and pvscsi[0].slotInfo.pciSlotNumber == 160
    disks = sorted(
        (d for d in devices if isinstance(d, vim.vm.device.VirtualDisk)),
        key=lambda d: d.unitNumber,
    )
    assert [d.capacityInKB // (1024 * 1024) for d in disks] == [32, 16]
    assert all(d.backing.thinProvisioned for d in disks)
    assert all(d.controllerKey == pvscsi[0].key for d in disks)
    assert all(d.backing.fileName.startswith("[datastore1] ") for d in disks)

    nics = [d for d in devices if isinstance(d, vim.vm.device.VirtualEthernetCard)]
    assert len(nics) == 1 and isinstance(nics[0], vim.vm.device.VirtualVmxnet3)
    assert nics[0].backing.deviceName == "VM Network"
    assert nics[0].connectable.startConnected
    assert machine.attributes["mac"] == nics[0].macAddress.lower()
    assert machine.attributes["uuid"] == config.uuid

    ahci = [d for d in devices if isinstance(d, vim.vm.device.VirtualAHCIController)]
    cds = sorted(
        (d for d in devices if isinstance(d, vim.vm.device.VirtualCdrom)),
        key=lambda d: d.unitNumber,
    )
    assert len(ahci) == 1 and all(cd.controllerKey == ahci[0].key for cd in cds)
    assert [cd.backing.fileName for cd in cds] == [m.locator for m in media]
    assert all(cd.connectable.startConnected for cd in cds)

    order = config.bootOptions.bootOrder
    assert isinstance(order[0], vim.vm.BootOptions.BootableCdromDevice)
    assert isinstance(order[1], vim.vm.BootOptions.BootableDiskDevice) and order[1].deviceKey == disks[0].key


def test_no_storage_disk_when_its_size_is_zero_and_bios_when_asked(
    vcsim: VcsimHandle,
    si: Any,
    unique: str,
    iso: Path,
    tmp_path: Path,
    make_provider: ProviderFactory,
) -> None:
    provider = make_provider()
    machine = provider.create_machine(
        node_of(vcsim, unique, iso, storage_disk_gb=0, firmware="bios"),
        staged_pair(provider, iso, tmp_path),
    )
    config = read_vm(si, machine.id).config
    assert len([d for d in config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)]) == 1
    assert config.firmware == "bios"


def test_a_distributed_portgroup_backs_the_nic(
    vcsim: VcsimHandle,
    si: Any,
    unique: str,
    iso: Path,
    tmp_path: Path,
    make_provider: ProviderFactory,
) -> None:
    provider = make_provider(network="DC0_DVPG0")
    machine = provider.create_machine(node_of(vcsim, unique, iso), staged_pair(provider, iso, tmp_path))
    nic = next(
        d for d in read_vm(si, machine.id).config.hardware.device if isinstance(d, vim.vm.device.VirtualEthernetCard)
    )
    placement = provider._backend().placement
    assert isinstance(nic.backing, vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo)
    assert (nic.backing.port.portgroupKey, nic.backing.port.switchUuid) == (
        placement.portgroup_key,
        placement.dvs_uuid,
    )


def test_create_is_idempotent_and_find_returns_the_same_vm(
    vcsim: VcsimHandle,
    si: Any,
    unique: str,
    iso: Path,
    tmp_path: Path,
    make_provider: ProviderFactory,
) -> None:
    provider = make_provider()
    node = node_of(vcsim, unique, iso)
    assert provider.find_machine(node) is None
    media = staged_pair(provider, iso, tmp_path)
    first = provider.create_machine(node, media)
    again = make_provider().create_machine(node, media)  # a re-run: found by its annotation, not created twice
    assert again.id == first.id
    assert make_provider().find_machine(node) == first


def test_find_refuses_a_vm_that_is_someone_elses(
    vcsim: VcsimHandle,
    si: Any,
    unique: str,
    iso: Path,
    tmp_path: Path,
    make_provider: ProviderFactory,
) -> None:
    provider = make_provider()
    node = node_of(vcsim, unique, iso)
    provider.create_machine(node, staged_pair(provider, iso, tmp_path))
    with pytest.raises(ProviderError, match="not deployment 'other'"):
        make_provider(deployment="other").find_machine(node)


def test_media_that_is_not_staged_is_refused(
    vcsim: VcsimHandle, unique: str, iso: Path, make_provider: ProviderFactory
) -> None:
    # vcsim would happily create (and power on) a VM whose ISO does not exist: our own check must catch it.
    ghost = StagedMedia("appliance-iso", f"[datastore1] media-{unique}/ghost.iso", "0" * 64, 1)
    with pytest.raises(ProviderError, match="ghost.iso is not staged"):
        make_provider().create_machine(node_of(vcsim, unique, iso), [ghost])


def test_delete_powers_off_destroys_and_tolerates_gone(
    vcsim: VcsimHandle,
    si: Any,
    unique: str,
    iso: Path,
    tmp_path: Path,
    make_provider: ProviderFactory,
) -> None:
    provider = make_provider()
    node = node_of(vcsim, unique, iso)
    machine = provider.create_machine(node, staged_pair(provider, iso, tmp_path))
    provider.power_on(machine)
    provider.delete_machine(machine)
    assert provider.find_machine(node) is None
    assert not (vcsim.datastore_dir / machine.name).exists()
    provider.delete_machine(machine)


def test_a_rerun_preflight_needs_no_datastore_room(
    vcsim: VcsimHandle, unique: str, iso: Path, tmp_path: Path, make_provider: ProviderFactory
) -> None:
    # vcsim 0.24.2 charges thin disks in full and lets free space go negative: 2 x 4 TB leaves it below zero.
    plan = make_plan(vcsim, unique, iso, install_disk_gb=4000)
    provider = make_provider()
    provider.preflight(plan)
    iso_media = provider.stage_media(media_for(iso))
    for i, node in enumerate(plan.node_specs()):
        seed = tmp_path / f"seed-{i}.iso"
        seed.write_bytes(b"seed")
        provider.create_machine(node, [iso_media, provider.stage_media(media_for(seed, name=seed.name, role="seed"))])
    rerun = make_provider()
    rerun.preflight(plan)
    assert rerun._backend().placement.free_space < 0
