"""The vSphere provider: composes the session, inventory, staging, machine and power modules.

pyVmomi and httpx are imported on first use (:meth:`VsphereProvider._backend`), not at import time.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from palette_provision.errors import (
    PlanIssue,
    ProviderError,
    TLSVerificationError,
)
from palette_provision.log import get_logger
from palette_provision.plan import DeploymentPlan, NodeSpec
from palette_provision.provider import (
    BootDevice,
    InstallMethod,
    Lifecycle,
    Machine,
    MediaFile,
    MediaSlot,
    NodeDisks,
    PowerState,
    ProgressCallback,
    ProviderContext,
    SlotKind,
    StagedMedia,
)
from pydantic import BaseModel

from palette_provision_vsphere._settings import VsphereSettings

if TYPE_CHECKING:
    from palette_provision_vsphere._inventory import Placement
    from palette_provision_vsphere._session import VsphereSession
    from palette_provision_vsphere._staging import Stager

__all__ = ["VsphereProvider"]

_MAX_NAME = 80  # vSphere's limit on a VM name
_MAX_CPUS = 768
#: A VM's two CD drives on its AHCI controller: unit 0 for the appliance ISO, unit 1 for the seed.
_SLOTS = (MediaSlot(SlotKind.CD, 0), MediaSlot(SlotKind.CD, 1))


@dataclass(frozen=True)
class _Backend:
    session: VsphereSession
    placement: Placement
    stager: Stager


class VsphereProvider:
    """Deploys onto vCenter or a standalone ESXi host. Registered as ``vsphere``; see the package docstring.

    Building it does no I/O; the first call that needs vCenter logs in, once, and :meth:`close` logs out.
    """

    name: ClassVar[str] = "vsphere"
    settings_model: ClassVar[type[BaseModel]] = VsphereSettings
    node_settings_model: ClassVar[type[BaseModel] | None] = None
    lifecycle = Lifecycle.CREATED
    install_methods = (InstallMethod.BOOT_FROM_MEDIA,)

    def __init__(self, settings: VsphereSettings, context: ProviderContext) -> None:
        self.settings = settings
        self.context = context
        self._log = context.log if context.log is not None else get_logger(__name__, provider=self.name)
        self._lock = threading.Lock()
        self._state: _Backend | None = None
        self._created: set[str] = set()
        # VM name -> moref id of the VMs we know are ours (seen by preflight or created here): a re-run finds each
        # node's VM with one property read instead of listing the datacenter's VMs once per node.
        self._known: dict[str, str] = {}
        # Names find_machine has just seen absent, so create_machine need not list every VM a second time.
        self._absent: set[str] = set()
        # Our VMs as preflight listed them, for find_machine's first look at each node.
        self._observed: dict[str, Machine] = {}
        # VM id -> the media it was created with in this process (create_machine), for insert_media's first call.
        self._fresh_media: dict[str, list[str]] = {}
        # VM id -> the boot order this process last set or saw ("cd" first, or "disk"), so set_boot_device right
        # after insert_media or eject_media (which set it in the same reconfigure) needs no read.
        self._boot: dict[str, str] = {}

    # ------------------------------------------------------------------------------------------ lifecycle

    def _backend(self) -> _Backend:
        with self._lock:
            if self._state is None:
                from palette_provision_vsphere._inventory import resolve_placement
                from palette_provision_vsphere._session import VsphereSession
                from palette_provision_vsphere._staging import Stager
                from palette_provision_vsphere._verified import VerifiedMedia

                session = VsphereSession(self.settings, self._log)
                try:
                    session.connect()
                except TLSVerificationError as exc:
                    if exc.field is not None:
                        raise
                    field = "platform.thumbprint" if self.settings.tls_mode == "pin" else "platform.tls"
                    raise TLSVerificationError(str(exc), field=field, provider=self.name) from exc
                placement = resolve_placement(session, self.settings)
                digests = VerifiedMedia(self.context.state_dir / "verified-media.json")
                self._state = _Backend(session, placement, Stager(session, placement, self._log, digests))
            return self._state

    def close(self) -> None:
        """Close the datastore HTTP client and log out. Safe to call twice."""
        with self._lock:
            state, self._state = self._state, None
        if state is not None:
            try:
                state.stager.close()
            finally:
                state.session.close()  # the vCenter logout happens even when closing the HTTP client failed

    def __enter__(self) -> VsphereProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def concurrency_key(self, node: NodeSpec) -> tuple[str, int]:
        """Every node shares the vCenter: ``max_concurrent_operations`` of them act on it at once."""
        return f"vcenter:{self.settings.server}", self.settings.max_concurrent_operations

    def disk_layout(self, node: NodeSpec) -> NodeDisks:
        """The install disk (unit 0 of the VM's one paravirtual SCSI controller) and the storage disk (unit 1), by
        their ``/dev/disk/by-path`` names: the controller's PCI slot is pinned at creation, so the names are known
        now. Not ``/dev/sda``: Linux names SCSI disks in the order their asynchronous probes finish."""
        from palette_provision_vsphere._machines import disk_by_path

        return NodeDisks(disk_by_path(0), disk_by_path(1) if node.storage_disk_gb > 0 else None)

    def vm_name(self, node: NodeSpec | str) -> str:
        """The VM name of a node: ``<vm_prefix><node name>``."""
        return self.settings.vm_prefix + (node if isinstance(node, str) else node.name)

    # ------------------------------------------------------------------------------------------ validate

    def validate(self, plan: DeploymentPlan) -> list[PlanIssue]:
        """Offline checks of the plan against what vSphere accepts (name length, memory granularity, CPUs)."""
        issues: list[PlanIssue] = []
        iso_name = plan.iso.source.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0]
        if any(c in iso_name for c in "*?[]"):
            # Datastore searches take the file name as a pattern: these characters would match other files.
            issues.append(PlanIssue("iso.source", "the ISO's file name may not contain * ? [ or ] on vSphere"))
        for node in plan.node_specs():
            name = self.vm_name(node)
            if len(name) > _MAX_NAME:
                issues.append(
                    PlanIssue(
                        "platform.vm_prefix",
                        f"VM name {name!r} is longer than {_MAX_NAME} characters",
                    )
                )
            if node.memory_mb % 4:
                issues.append(PlanIssue("nodes.memory_gb", "vSphere needs memory in multiples of 4 MB"))
            if node.cpus > _MAX_CPUS:
                issues.append(PlanIssue("nodes.cpus", f"vSphere VMs have at most {_MAX_CPUS} CPUs"))
        return list(dict.fromkeys(issues))

    def preflight(self, plan: DeploymentPlan) -> None:
        """Log in, resolve every named object, check datastore room and VM name clashes. Read-only.

        Raises:
            AuthenticationError: ``platform.password`` refused.
            TLSVerificationError: the certificate or pinned thumbprint did not verify.
            ConfigurationError: an unknown datacenter, cluster, host, pool, folder, datastore or network (the
                message lists what exists), too little datastore space, or a VM name taken by someone else.
        """
        from palette_provision_vsphere._machines import listed_machine
        from palette_provision_vsphere._preflight import check_capacity, check_names

        backend = self._backend()
        planned = {self.vm_name(n): n for n in plan.node_specs()}
        existing = check_names(backend.session, backend.placement, planned, self._is_ours)
        self._known.update({name: moid for name, (moid, _) in existing.items()})
        # A re-run: the listing already says which VMs exist and are ours, so each node's first find_machine
        # needs no further round trip (and no read of every device just for the MAC the journal already has).
        self._observed = {
            name: listed_machine(planned[name].name, moid, props) for name, (moid, props) in existing.items()
        }
        new = [node for name, node in planned.items() if name not in existing]
        with self._lock:
            # Seen absent a moment ago, like find_machine's own misses: a first run's find_machine and
            # create_machine need not list every VM in the datacenter again, once per node.
            self._absent.update(self.vm_name(node) for node in new)
        check_capacity(plan, backend.placement, backend.stager, new, self._log)
        self._log.info(
            "preflight_passed",
            datastore=self.settings.datastore,
            network=self.settings.network,
        )

    def _is_ours(self, name: str, note: str | None) -> bool:
        from palette_provision_vsphere._machines import owner_of

        owned = {self.vm_name(node) for node in self.context.owned_machines}
        return (
            name in owned
            or name in self._created
            or owner_of(note) == self.context.deployment
        )

    # ------------------------------------------------------------------------------------------- staging

    def stage_media(self, media: MediaFile, progress: ProgressCallback | None = None) -> StagedMedia:
        """Upload ``media`` to ``[datastore] <media_folder>/<name>`` unless an identical copy is there.

        Raises:
            ProviderError: the digest differs from ``media.sha256`` (the upload is removed), or every attempt failed.
        """
        return self._backend().stager.stage(media, progress)

    def locate_media(self, media: MediaFile) -> str:
        """Where :meth:`stage_media` puts ``media``: ``[datastore] <media_folder>/<name>``. No I/O."""
        return f"[{self.settings.datastore}] {self.settings.media_folder}/{media.name}"

    def unstage_media(self, staged: StagedMedia) -> None:
        """Delete the staged file and its sidecar; already gone is fine."""
        self._backend().stager.unstage(staged)

    # ------------------------------------------------------------------------------------------ machines

    def _vm(self, machine: Machine) -> Any:
        return self._backend().session.ref("VirtualMachine", machine.id)

    def find_machine(self, node: NodeSpec, record: Machine | None = None) -> Machine | None:
        """The VM ``<vm_prefix><node>`` if it exists and is ours (journal, this run, or its annotation).

        VMs are found by name (``record``, the journal's, is not needed: a name is unique in our folder).

        Raises:
            ProviderError: several VMs carry the name (vcsim allows it), or the one that does is not ours.
        """
        from palette_provision_vsphere._inventory import vms_named
        from palette_provision_vsphere._machines import machine_of
        from palette_provision_vsphere._session import VsphereTaskError

        backend = self._backend()
        name = self.vm_name(node)
        with self._lock:
            observed = self._observed.pop(name, None)
        if observed is not None:
            # Read by this run's preflight a moment ago; only the first look uses it, later ones read vCenter.
            return observed
        if name in self._absent:
            return None
        known = self._known.get(name)
        if known is not None:
            vm = backend.session.ref("VirtualMachine", known)
            try:
                machine = machine_of(backend.session, vm, node.name)
            except VsphereTaskError as exc:
                if exc.fault != "ManagedObjectNotFound":
                    raise
                self._known.pop(name, None)
            else:
                if machine.name == name:
                    return machine
                self._known.pop(name, None)  # renamed behind our back: look it up by name
        found = vms_named(backend.session, backend.placement, {name})
        if not found:
            self._absent.add(name)
            return None
        self._absent.discard(name)
        if len(found) > 1:
            raise ProviderError(
                f"{len(found)} VMs are named {name!r} ({', '.join(vm._moId for vm, _ in found)}); remove the extras",
                provider=self.name,
                resource=name,
            )
        vm, props = found[0]
        if not self._is_ours(name, props.get("config.annotation")):
            raise ProviderError(
                f"a VM named {name!r} exists and is not deployment {self.context.deployment!r}'s",
                provider=self.name,
                resource=name,
            )
        self._known[name] = str(vm._moId)
        return machine_of(backend.session, vm, node.name)

    def create_machine(self, node: NodeSpec, media: Sequence[StagedMedia]) -> Machine:
        """Create the node's VM (or return it if this deployment already made it).

        With the appliance ISO among ``media`` (staged already), the VM is built with both CDs and boots CD first;
        without it (still uploading), with no CD: ``insert_media`` adds them and the boot order in one reconfigure.
        """
        from palette_provision_vsphere._machines import create_vm

        backend = self._backend()
        media = sorted(media, key=lambda m: m.role != "appliance-iso")
        if not any(m.role == "appliance-iso" for m in media):
            media = []
        if media:
            self._check_media(backend, media)
        name = self.vm_name(node)
        if name in self._absent:
            # find_machine saw no such VM an instant ago (the pipeline always asks first): listing every VM
            # again would only repeat that answer.
            self._absent.discard(name)
        else:
            existing = self.find_machine(node)
            if existing is not None:
                return existing
            self._absent.discard(name)
        self._created.add(name)
        machine = create_vm(
            backend.session,
            backend.placement,
            node,
            name=name,
            media=media,
            deployment=self.context.deployment,
        )
        self._known[name] = machine.id
        if media:
            # Built with exactly these media and CD-first boot order a moment ago: insert_media and set_boot_device
            # have nothing to check.
            self._fresh_media[machine.id] = [m.locator for m in media]
            self._boot[machine.id] = "cd"
        self._log.info(
            "vm_created",
            node=node.name,
            vm=name,
            id=machine.id,
            mac=machine.attributes.get("mac"),
        )
        return machine

    def _check_media(self, backend: _Backend, media: Sequence[StagedMedia]) -> None:
        if not 1 <= len(media) <= 2:
            raise ProviderError(
                f"1 or 2 media (ISO, seed) can be attached, got {len(media)}",
                provider=self.name,
            )
        for item in media:
            # vcsim 0.24.2 (quirk 3) creates and powers on VMs whose ISO does not exist: look before attaching.
            if not backend.stager.exists(item.locator):
                raise ProviderError(
                    f"{item.locator} is not staged",
                    provider=self.name,
                    resource=item.locator,
                )

    def delete_machine(self, machine: Machine) -> None:
        """Power the VM off if needed and destroy it with its disks. Already gone is fine."""
        from palette_provision_vsphere._machines import delete_vm

        backend = self._backend()
        self.power_off(machine)
        delete_vm(backend.session, self._vm(machine), machine.name)
        self._known.pop(machine.name, None)
        self._log.info("vm_deleted", node=machine.node, vm=machine.name, id=machine.id)

    # --------------------------------------------------------------------------------------------- power

    def power_state(self, machine: Machine) -> PowerState:
        """The VM's power state (suspended reads as UNKNOWN)."""
        from palette_provision_vsphere._power import power_state

        return power_state(self._backend().session, self._vm(machine), machine.name)

    def power_on(self, machine: Machine) -> None:
        """Power on; already on is success."""
        from palette_provision_vsphere._power import set_power

        set_power(self._backend().session, self._vm(machine), machine.name, PowerState.ON)

    def power_off(self, machine: Machine) -> None:
        """Power off (hard); already off, or deleted, is success."""
        from palette_provision_vsphere._power import set_power
        from palette_provision_vsphere._session import VsphereTaskError

        try:
            set_power(self._backend().session, self._vm(machine), machine.name, PowerState.OFF)
        except VsphereTaskError as exc:
            # A deleted VM is as off as it gets (destroy after a crash between delete and the journal write).
            if exc.fault != "ManagedObjectNotFound":
                raise

    def last_power_on(self, machine: Machine) -> float | None:
        """Epoch seconds of the VM's last power-on, from vCenter's event log; ``None`` if it never powered on.

        Not ``runtime.bootTime``: vCenter clears it at power-off (exactly when a resumed run asks, after the
        installer's power-off), and vcsim 0.24.2 never sets it. VmPoweredOnEvent is kept by both.
        """
        from palette_provision_vsphere._power import last_power_on

        return last_power_on(self._backend().session, self._vm(machine), machine.name)

    # ---------------------------------------------------------------------------------------- boot media

    def media_slots(self, machine: Machine) -> list[MediaSlot]:
        """Two CD drives on the VM's AHCI controller (no I/O: the provider builds every VM that way)."""
        return list(_SLOTS)

    def insert_media(self, machine: Machine, media: Mapping[MediaSlot, StagedMedia]) -> None:
        """Make CD 1 = ISO, CD 2 = seed, in one reconfigure that also boots CD first; no change when already so."""
        from palette_provision_vsphere._power import attach

        ordered = [media[slot] for slot in sorted(media)]
        if sorted(media) != list(_SLOTS)[: len(ordered)]:
            raise ProviderError(f"vSphere CDs are filled in order from cd0, got {sorted(map(str, media))}",
                                provider=self.name, resource=machine.name)
        backend = self._backend()
        self._check_media(backend, ordered)
        with self._lock:
            fresh = self._fresh_media.pop(machine.id, None)
        if fresh == [m.locator for m in ordered]:
            return
        if attach(backend.session, self._vm(machine), machine.name, ordered):
            self._log.info("media_attached", node=machine.node, vm=machine.name, media=[m.locator for m in ordered])
        self._boot[machine.id] = "cd"

    def inserted_media(self, machine: Machine) -> dict[MediaSlot, str]:
        """What the VM's CDs hold, by unit."""
        from palette_provision_vsphere._power import cd_locators

        held = cd_locators(self._backend().session, self._vm(machine))
        return {slot: held[slot.index] for slot in _SLOTS if slot.index in held}

    def eject_media(self, machine: Machine, slots: Sequence[MediaSlot]) -> None:
        """Remove the CD drives (the VM must be off) and boot from disk; no change when none are left.

        Every CD goes, whatever ``slots`` names: the VM is ours and nothing but our media were in its drives.
        """
        from palette_provision_vsphere._power import detach
        from palette_provision_vsphere._session import VsphereTaskError

        try:
            if detach(self._backend().session, self._vm(machine), machine.name):
                self._log.info("media_detached", node=machine.node, vm=machine.name)
        except VsphereTaskError as exc:
            if exc.fault != "ManagedObjectNotFound":  # a deleted VM holds no media
                raise
        self._boot[machine.id] = "disk"

    def set_boot_device(self, machine: Machine, device: BootDevice, *, persistent: bool) -> None:
        """Set the VM's boot order: CD then disk, or the disk alone. vSphere has no one-time boot device, so this
        is always persistent (the core records it either way)."""
        from palette_provision_vsphere._power import set_boot_order

        if device is BootDevice.PXE:
            raise ProviderError("network boot is not offered by this provider", provider=self.name,
                                resource=machine.name)
        want = "cd" if device is BootDevice.CD else "disk"
        if self._boot.get(machine.id) == want:
            return
        if set_boot_order(self._backend().session, self._vm(machine), machine.name, cd_first=want == "cd"):
            self._log.info("boot_order_set", node=machine.node, vm=machine.name, first=want)
        self._boot[machine.id] = want

    def clear_boot_override(self, machine: Machine) -> None:
        """Boot from disk (the VM's own order once installed)."""
        self.set_boot_device(machine, BootDevice.DISK, persistent=True)

    # ------------------------------------------------------------------------------------------- address

    def discover_address(self, machine: Machine, node: NodeSpec) -> str | None:
        """The address VMware Tools reports for the node's NIC (by MAC), else ``guest.ipAddress``, else None."""
        from palette_provision_vsphere._power import best_address
        from palette_provision_vsphere._session import vim

        session = self._backend().session
        paths = ["guest.net", "guest.ipAddress"]
        mac = machine.attributes.get("mac")
        if mac is None:
            paths.append("config.hardware.device")
        props = session.props(
            self._vm(machine),
            paths,
            what=f"reading the guest address of {machine.name}",
        )
        if mac is None:
            nics = [
                d for d in props.get("config.hardware.device") or [] if isinstance(d, vim.vm.device.VirtualEthernetCard)
            ]
            mac = str(nics[0].macAddress) if nics else None
        return best_address(list(props.get("guest.net") or []), props.get("guest.ipAddress"), mac, node)
