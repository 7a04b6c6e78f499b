"""Power, boot media and address discovery for an existing VM."""

from __future__ import annotations

import ipaddress
from typing import Any

from palette_provision.errors import ProviderError
from palette_provision.plan import NodeSpec
from palette_provision.provider import PowerState, StagedMedia

from palette_provision_vsphere._machines import cdrom_specs, with_boot_order
from palette_provision_vsphere._session import (
    PROVIDER,
    VsphereSession,
    VsphereTaskError,
    vim,
)

__all__ = ["POWER_STATES", "attach", "best_address", "cd_locators", "detach", "last_power_on", "set_boot_order",
           "set_power"]

#: vSphere's power states mapped to ours. A suspended VM is neither on nor off.
POWER_STATES: dict[str, PowerState] = {
    "poweredOn": PowerState.ON,
    "poweredOff": PowerState.OFF,
    "suspended": PowerState.UNKNOWN,
}


def power_state(session: VsphereSession, vm: Any, name: str) -> PowerState:
    """Read the VM's power state."""
    state = session.props(vm, ["runtime.powerState"], what=f"reading the power state of {name}").get(
        "runtime.powerState"
    )
    return POWER_STATES.get(str(state), PowerState.UNKNOWN)


def set_power(session: VsphereSession, vm: Any, name: str, target: PowerState) -> None:
    """Power on or (hard) off; already in ``target`` is success, also when another client won a race.

    No read first: the task itself says InvalidPowerState when there is nothing to do (the pipeline has just read
    the state anyway), and only then is the state read, to tell "already so" from a real refusal.
    """
    start = vm.PowerOnVM_Task if target is PowerState.ON else vm.PowerOffVM_Task
    try:
        session.run_task(start, f"powering {target.value} VM {name}", name)
    except VsphereTaskError as exc:
        # InvalidPowerState means someone (the installer's own power-off, say) got there first.
        if exc.fault != "InvalidPowerState" or power_state(session, vm, name) is not target:
            raise


def last_power_on(session: VsphereSession, vm: Any, name: str) -> float | None:
    """The newest VmPoweredOnEvent of ``vm`` as epoch seconds, or ``None``."""
    spec = vim.event.EventFilterSpec(
        entity=vim.event.EventFilterSpec.ByEntity(entity=vm, recursion="self"), eventTypeId=["VmPoweredOnEvent"]
    )
    manager = session.content.eventManager
    events = session.call(lambda: manager.QueryEvents(spec), f"reading the power-on events of {name}", name) or []
    times = [e.createdTime.timestamp() for e in events if getattr(e, "createdTime", None) is not None]
    return max(times) if times else None


def _config(session: VsphereSession, vm: Any) -> tuple[list[Any], Any]:
    p = session.props(vm, ["config.hardware.device", "config.bootOptions"])
    return list(p.get("config.hardware.device") or []), p.get("config.bootOptions")


def attach(session: VsphereSession, vm: Any, name: str, media: list[StagedMedia]) -> bool:
    """Make CD 1.. hold ``media`` and the boot order CD then disk; reconfigure only what differs.

    Returns True when the VM was reconfigured.
    """
    devices, options = _config(session, vm)
    ahci = next((d for d in devices if isinstance(d, vim.vm.device.VirtualAHCIController)), None)
    cds = sorted(
        (
            d
            for d in devices
            if isinstance(d, vim.vm.device.VirtualCdrom) and ahci is not None and d.controllerKey == ahci.key
        ),
        key=lambda d: d.unitNumber,
    )
    wanted = [m.locator for m in media]
    have = [getattr(d.backing, "fileName", None) for d in cds[: len(media)]]
    starts = all(d.connectable is not None and d.connectable.startConnected for d in cds[: len(media)])
    disks = sorted(
        (d for d in devices if isinstance(d, vim.vm.device.VirtualDisk)),
        key=lambda d: d.unitNumber,
    )
    order = list(getattr(options, "bootOrder", None) or [])
    cd_first = bool(order) and isinstance(order[0], vim.vm.BootOptions.BootableCdromDevice)
    if have == wanted and starts and cd_first:
        return False
    changes: list[Any] = []
    controller_key = ahci.key if ahci is not None else -300
    if ahci is None:
        changes.append(
            vim.vm.device.VirtualDeviceSpec(
                operation="add",
                device=vim.vm.device.VirtualAHCIController(key=controller_key, busNumber=0),
            )
        )
    changes.extend(cdrom_specs(media, controller_key, cds))
    spec = vim.vm.ConfigSpec(
        deviceChange=changes,
        bootOptions=with_boot_order(options, disks[0].key if disks else None),
    )
    session.run_task(lambda: vm.ReconfigVM_Task(spec=spec), f"attaching boot media to {name}", name)
    return True


def cd_locators(session: VsphereSession, vm: Any) -> dict[int, str]:
    """CD unit number -> the ISO it holds, for every CD with an ISO backing."""
    devices, _ = _config(session, vm)
    return {
        int(d.unitNumber): str(d.backing.fileName)
        for d in devices
        if isinstance(d, vim.vm.device.VirtualCdrom) and getattr(d.backing, "fileName", None)
    }


def set_boot_order(session: VsphereSession, vm: Any, name: str, *, cd_first: bool) -> bool:
    """CD then disk, or the disk alone; reconfigure only when it differs. Returns True when reconfigured.

    vSphere has no one-time boot device: the boot order is the VM's setting until changed again.
    """
    devices, options = _config(session, vm)
    order = list(getattr(options, "bootOrder", None) or [])
    is_cd_first = bool(order) and isinstance(order[0], vim.vm.BootOptions.BootableCdromDevice)
    if is_cd_first == cd_first and order:
        return False
    disks = sorted((d for d in devices if isinstance(d, vim.vm.device.VirtualDisk)), key=lambda d: d.unitNumber)
    spec = vim.vm.ConfigSpec(bootOptions=with_boot_order(options, disks[0].key if disks else None, cd_first=cd_first))
    session.run_task(lambda: vm.ReconfigVM_Task(spec=spec), f"setting the boot order of {name}", name)
    return True


def detach(session: VsphereSession, vm: Any, name: str) -> bool:
    """Remove every CD drive (and so every ISO backing) and boot from disk. Needs the VM powered off.

    Returns True when the VM was reconfigured.

    Raises:
        ProviderError: the VM is powered on (detaching from a running VM fails on some vSphere versions, so we
            never try; the installer's own power-off is the moment to detach).
    """
    devices, options = _config(session, vm)
    cds = [d for d in devices if isinstance(d, vim.vm.device.VirtualCdrom)]
    if not cds:
        return False
    if power_state(session, vm, name) is not PowerState.OFF:
        raise ProviderError(
            f"VM {name} must be powered off to detach its media",
            provider=PROVIDER,
            resource=name,
        )
    disks = sorted(
        (d for d in devices if isinstance(d, vim.vm.device.VirtualDisk)),
        key=lambda d: d.unitNumber,
    )
    spec = vim.vm.ConfigSpec(
        deviceChange=[vim.vm.device.VirtualDeviceSpec(operation="remove", device=d) for d in cds],
        bootOptions=with_boot_order(options, disks[0].key if disks else None, cd_first=False),
    )
    session.run_task(lambda: vm.ReconfigVM_Task(spec=spec), f"detaching boot media from {name}", name)
    return True


def _usable(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if ip.is_link_local or ip.is_loopback or ip.is_unspecified or ip.is_multicast:
        return None
    return ip


def best_address(guest_net: list[Any], guest_ip: str | None, mac: str | None, node: NodeSpec) -> str | None:
    """Pick the node's address from VMware Tools' report.

    The NIC matched by ``mac`` first (a guest may also report docker or CNI bridges), ignoring link-local and
    loopback; the planned static address wins when reported, then IPv4 over IPv6. Else ``guest.ipAddress``.
    """
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for nic in guest_net:
        if mac is None or str(getattr(nic, "macAddress", "") or "").lower() != mac.lower():
            continue
        texts = list(getattr(nic, "ipAddress", None) or [])
        ip_config = getattr(nic, "ipConfig", None)
        texts += [a.ipAddress for a in (getattr(ip_config, "ipAddress", None) or [])]
        candidates += [ip for ip in map(_usable, texts) if ip is not None]
    if candidates:
        planned = node.static_ip
        for ip in candidates:
            if planned is not None and str(ip) == planned:
                return planned
        return str(sorted(candidates, key=lambda ip: ip.version)[0])
    fallback = _usable(guest_ip) if guest_ip else None
    return str(fallback) if fallback is not None else None
