"""Inventory helpers for the lab tests: find objects, create the kind of VM palette-provision creates."""

from __future__ import annotations

from typing import Any

from pyVmomi import vim
from vcsim.lab import wait_task

# pyVmomi's stubs leave data-object constructors unannotated and mark every property Optional; tests go through
# these Any aliases rather than asserting non-None on every step of a property path.
V: Any = vim
dev: Any = vim.vm.device


def find(si: Any, kind: type[Any], name: str | None = None) -> Any:
    """The first managed object of ``kind`` (named ``name`` if given)."""
    content = si.content
    view = content.viewManager.CreateContainerView(content.rootFolder, [kind], True)
    try:
        for obj in view.view:
            if name is None or obj.name == name:
                return obj
    finally:
        view.DestroyView()
    raise LookupError(f"no {kind.__name__} {name or ''} in the simulator")


def create_vm(si: Any, name: str, isos: list[str], *, datastore: str = "datastore1", memory_mb: int = 512) -> Any:
    """A VM like the library builds: EFI, one vmxnet3 NIC on ``VM Network``, a thin disk, CDs on SATA."""
    dc = find(si, vim.Datacenter)
    cluster = find(si, vim.ClusterComputeResource)
    network = find(si, vim.Network, "VM Network")
    changes: list[Any] = [
        _add(dev.ParaVirtualSCSIController(key=-200, busNumber=0, sharedBus="noSharing")),
        _add(
            dev.VirtualDisk(
                key=-201,
                controllerKey=-200,
                unitNumber=0,
                capacityInKB=4 * 1024 * 1024,
                backing=dev.VirtualDisk.FlatVer2BackingInfo(diskMode="persistent", thinProvisioned=True),
            ),
            file_op="create",
        ),
        _add(
            dev.VirtualVmxnet3(
                key=-300,
                backing=dev.VirtualEthernetCard.NetworkBackingInfo(deviceName="VM Network", network=network),
                connectable=dev.VirtualDevice.ConnectInfo(startConnected=True, connected=True),
            )
        ),
    ]
    if isos:
        changes.append(_add(dev.VirtualAHCIController(key=-100, busNumber=0)))
        for unit, iso in enumerate(isos):
            changes.append(
                _add(
                    dev.VirtualCdrom(
                        key=-1 - unit,
                        controllerKey=-100,
                        unitNumber=unit,
                        backing=dev.VirtualCdrom.IsoBackingInfo(fileName=iso),
                        connectable=dev.VirtualDevice.ConnectInfo(startConnected=True, connected=True),
                    )
                )
            )
    spec: Any = V.vm.ConfigSpec(
        name=name,
        memoryMB=memory_mb,
        numCPUs=1,
        guestId="otherLinux64Guest",
        firmware="efi",
        files=V.vm.FileInfo(vmPathName=f"[{datastore}]"),
        deviceChange=changes,
    )
    task = dc.vmFolder.CreateVM_Task(config=spec, pool=cluster.resourcePool)
    return wait_task(si, task)


def _add(device: Any, file_op: str | None = None) -> Any:
    return dev.VirtualDeviceSpec(operation="add", fileOperation=file_op, device=device)
