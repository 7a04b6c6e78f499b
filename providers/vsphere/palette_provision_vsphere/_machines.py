"""One VM per node: the creation spec, lookup by name, deletion.

The VM: UEFI (optional Secure Boot) or BIOS, the plan's CPUs and memory, a paravirtual SCSI controller with two
thin disks (install, storage pool; a storage size of 0 means no second disk), vmxnet3 on the network (standard or
distributed portgroup), an AHCI controller with CD 1 = appliance ISO and CD 2 = seed, boot order CD then disk.
"""

from __future__ import annotations

from typing import Any

from palette_provision.plan import NodeSpec
from palette_provision.provider import Machine, StagedMedia

from palette_provision_vsphere._inventory import Placement
from palette_provision_vsphere._session import VsphereSession, VsphereTaskError, vim

__all__ = [
    "MARKER",
    "boot_order",
    "cdrom_specs",
    "create_vm",
    "delete_vm",
    "disk_by_path",
    "listed_machine",
    "machine_of",
    "owner_of",
    "with_boot_order",
]

#: First line of the annotation of every VM we create; ``owner_of`` parses it back.
MARKER = "palette-provision"

_SCSI_KEY, _AHCI_KEY, _NIC_KEY = -100, -300, -500
#: The PCI slot we give the VM's one paravirtual SCSI controller. vSphere's virtual hardware places slot 160 at
#: PCI bus 3, device 0, so the guest sees the controller at :data:`PVSCSI_PCI_ADDRESS` (the address a Linux guest
#: shows for the first PVSCSI controller of a VM whose slots vSphere chose itself); pinning it makes the disks'
#: ``/dev/disk/by-path`` names known before the VM exists.
PVSCSI_PCI_SLOT = 160
PVSCSI_PCI_ADDRESS = "0000:03:00.0"


def disk_by_path(unit: int) -> str:
    """The udev ``by-path`` name of the disk at ``unit`` of the PVSCSI controller (host 0, channel 0, LUN 0).

    Stable across boots, unlike ``/dev/sdX`` (Linux probes SCSI disks asynchronously and names them in the order
    the probes finish).

    >>> disk_by_path(1)
    '/dev/disk/by-path/pci-0000:03:00.0-scsi-0:0:1:0'
    """
    return f"/dev/disk/by-path/pci-{PVSCSI_PCI_ADDRESS}-scsi-0:0:{unit}:0"
_MACHINE_PROPS = ("name", "config.uuid", "config.instanceUuid", "config.hardware.device")
_DISK_KEYS = (-201, -202)
_CD_KEYS = (-401, -402)


def annotation(deployment: str, node: str) -> str:
    """The VM's annotation: who made it, for which deployment and node."""
    return (
        f"{MARKER}: deployment={deployment} node={node}\n"
        "Created by palette-provision; it deletes this VM on destroy. Do not rename."
    )


def owner_of(note: str | None) -> str | None:
    """The deployment named in an annotation written by :func:`annotation`, else ``None``."""
    first = (note or "").split("\n", 1)[0]
    if not first.startswith(MARKER + ": "):
        return None
    fields = dict(part.split("=", 1) for part in first[len(MARKER) + 2 :].split() if "=" in part)
    return fields.get("deployment")


def cdrom_specs(media: list[StagedMedia], controller_key: int, existing: list[Any] | None = None) -> list[Any]:
    """Device specs that make the CDs on ``controller_key`` hold ``media`` (CD 1, CD 2), connected at power-on.

    ``existing`` CD devices (in unit order) are edited in place; missing ones are added.
    """
    specs = []
    current = list(existing or [])
    for unit, item in enumerate(media):
        connect = vim.vm.device.VirtualDevice.ConnectInfo(startConnected=True, connected=False, allowGuestControl=True)
        backing = vim.vm.device.VirtualCdrom.IsoBackingInfo(fileName=item.locator)
        if unit < len(current):
            device = current[unit]
            device.backing, device.connectable = backing, connect
            specs.append(vim.vm.device.VirtualDeviceSpec(operation="edit", device=device))
        else:
            device = vim.vm.device.VirtualCdrom(
                key=_CD_KEYS[unit],
                controllerKey=controller_key,
                unitNumber=unit,
                backing=backing,
                connectable=connect,
            )
            specs.append(vim.vm.device.VirtualDeviceSpec(operation="add", device=device))
    return specs


def boot_order(disk_key: int | None) -> Any:
    """CD first, then the install disk. Needs the disk's real key (see :func:`create_vm`)."""
    order = [vim.vm.BootOptions.BootableCdromDevice()]
    if disk_key is not None:
        order.append(vim.vm.BootOptions.BootableDiskDevice(deviceKey=disk_key))
    return order


def with_boot_order(current: Any, disk_key: int | None, *, cd_first: bool = True) -> Any:
    """The VM's boot options with the boot order replaced: CD then disk, or the disk alone.

    The whole object goes back, not just ``bootOrder``: vcsim 0.24.2 replaces BootOptions wholesale on reconfigure
    and would drop ``efiSecureBootEnabled`` otherwise (vCenter merges; sending the current values is right for both).
    """
    options = current if current is not None else vim.vm.BootOptions()
    if cd_first:
        options.bootOrder = boot_order(disk_key)
    else:
        options.bootOrder = [vim.vm.BootOptions.BootableDiskDevice(deviceKey=disk_key)] if disk_key is not None else []
    return options


def _nic(placement: Placement) -> Any:
    if placement.distributed:
        backing = vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo(
            port=vim.dvs.PortConnection(switchUuid=placement.dvs_uuid, portgroupKey=placement.portgroup_key)
        )
    else:
        backing = vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(
            deviceName=placement.network_name, network=placement.network
        )
    return vim.vm.device.VirtualVmxnet3(
        key=_NIC_KEY,
        backing=backing,
        addressType="generated",
        connectable=vim.vm.device.VirtualDevice.ConnectInfo(startConnected=True, allowGuestControl=True),
    )


def _config_spec(
    node: NodeSpec,
    *,
    name: str,
    media: list[StagedMedia],
    placement: Placement,
    guest_id: str,
    note: str,
) -> Any:
    add = vim.vm.device.VirtualDeviceSpec
    devices = [
        add(
            operation="add",
            device=vim.vm.device.ParaVirtualSCSIController(
                key=_SCSI_KEY,
                busNumber=0,
                sharedBus="noSharing",
                slotInfo=vim.vm.device.VirtualDevice.PciBusSlotInfo(pciSlotNumber=PVSCSI_PCI_SLOT),
            ),
        )
    ]
    sizes = [node.install_disk_gb] + ([node.storage_disk_gb] if node.storage_disk_gb > 0 else [])
    for unit, gb in enumerate(sizes):
        disk = vim.vm.device.VirtualDisk(
            key=_DISK_KEYS[unit],
            controllerKey=_SCSI_KEY,
            unitNumber=unit,
            capacityInKB=gb * 1024 * 1024,
            backing=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
                fileName="", diskMode="persistent", thinProvisioned=True
            ),
        )
        devices.append(add(operation="add", fileOperation="create", device=disk))
    devices.append(
        add(
            operation="add",
            device=vim.vm.device.VirtualAHCIController(key=_AHCI_KEY, busNumber=0),
        )
    )
    devices.extend(cdrom_specs(media, _AHCI_KEY))
    devices.append(add(operation="add", device=_nic(placement)))
    uefi = node.firmware == "uefi"
    return vim.vm.ConfigSpec(
        name=name,
        guestId=guest_id,
        numCPUs=node.cpus,
        memoryMB=node.memory_mb,
        firmware="efi" if uefi else "bios",
        annotation=note,
        files=vim.vm.FileInfo(vmPathName=f"[{placement.datastore_name}]"),
        deviceChange=devices,
        bootOptions=vim.vm.BootOptions(efiSecureBootEnabled=node.secure_boot if uefi else None),
        # Kubernetes' vSphere CSI driver needs stable disk UUIDs inside the guest.
        extraConfig=[vim.option.OptionValue(key="disk.EnableUUID", value="TRUE")],
    )


def create_vm(
    session: VsphereSession,
    placement: Placement,
    node: NodeSpec,
    *,
    name: str,
    media: list[StagedMedia],
    deployment: str,
) -> Machine:
    """Create the VM and set its boot order; return it as a :class:`Machine` for ``node``."""
    spec = _config_spec(
        node, name=name, media=media, placement=placement, guest_id=session.settings.guest_id,
        note=annotation(deployment, node.name),
    )  # fmt: skip
    folder, pool, host = placement.vm_folder, placement.pool, placement.host
    vm = session.run_task(
        lambda: folder.CreateVM_Task(config=spec, pool=pool, host=host),
        f"creating VM {name}",
        name,
    )
    # The disk's key is only known now: vCenter renumbers devices, and vcsim 0.24.2 would keep a temporary
    # (negative) key in bootOrder verbatim. So the boot order is a second, small reconfigure. The same read gives
    # the Machine: the reconfigure changes no device. Without media (the ISO still uploading), insert_media sets the
    # boot order together with the CDs, in its one reconfigure.
    p = session.props(vm, [*_MACHINE_PROPS, "config.bootOptions"])
    if not media:
        return _machine(vm, node.name, p)
    disks = sorted(
        (d for d in p["config.hardware.device"] if isinstance(d, vim.vm.device.VirtualDisk)),
        key=lambda d: d.unitNumber,
    )
    order = vim.vm.ConfigSpec(bootOptions=with_boot_order(p.get("config.bootOptions"), disks[0].key if disks else None))
    session.run_task(
        lambda: vm.ReconfigVM_Task(spec=order),
        f"setting the boot order of {name}",
        name,
    )
    return _machine(vm, node.name, p)


def machine_of(session: VsphereSession, vm: Any, node: str) -> Machine:
    """A :class:`Machine` for ``vm``: id = moref value, MAC and BIOS UUID as attributes."""
    return _machine(vm, node, session.props(vm, _MACHINE_PROPS))


def listed_machine(node: str, moid: str, props: dict[str, Any]) -> Machine:
    """A :class:`Machine` from a VM listing (name and UUIDs, no devices): ``mac`` is left out.

    The core keeps attributes it recorded earlier for the same machine id, so the MAC read when the VM was created
    survives a re-run that only listed it; :meth:`discover_address` reads the devices itself when it has no MAC.
    """
    attributes = {
        "uuid": str(props.get("config.uuid") or ""),
        "instance_uuid": str(props.get("config.instanceUuid") or ""),
    }
    return Machine(node=node, id=moid, name=str(props["name"]), attributes=attributes)


def _machine(vm: Any, node: str, p: dict[str, Any]) -> Machine:
    mac = next(
        (
            d.macAddress
            for d in p.get("config.hardware.device") or []
            if isinstance(d, vim.vm.device.VirtualEthernetCard)
        ),
        None,
    )
    attributes = {
        "uuid": str(p.get("config.uuid") or ""),
        "instance_uuid": str(p.get("config.instanceUuid") or ""),
    }
    if mac:
        attributes["mac"] = str(mac).lower()
    return Machine(node=node, id=str(vm._moId), name=str(p["name"]), attributes=attributes)


def delete_vm(session: VsphereSession, vm: Any, name: str) -> None:
    """Destroy ``vm`` (its disks too). Gone already is success. The caller powers it off first."""
    try:
        session.run_task(vm.Destroy_Task, f"deleting VM {name}", name)
    except VsphereTaskError as exc:
        if exc.fault != "ManagedObjectNotFound":
            raise
