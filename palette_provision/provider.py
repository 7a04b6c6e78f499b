"""The provider interface: small capability protocols that compose the way platforms do.

A provider is a class registered under the entry-point group ``palette_provision.providers``. It declares its typed
settings (``settings_model``, the schema of the plan's ``platform`` section), optionally a per-node settings model
(``node_settings_model``: a BMC, a MAC, a MAAS system id), where its machines come from (``lifecycle``) and which
install methods it supports (``install_methods``). It is built without I/O and implements the capabilities its
platform offers; the core asks ``isinstance(provider, Power)`` and so on, and before anything runs it checks that
the provider has every capability the chosen install method needs (:func:`missing_capabilities`).

The capabilities, after Ironic's hardware interfaces:

============================  ==========================================================================
where machines come from      exactly one, named by ``lifecycle``: :class:`CreatesMachines` (a VM),
                              :class:`AllocatesMachines` (from a pool, like MAAS), :class:`EnrollsMachines`
                              (a rack server that already exists)
:class:`Power`                read, on, off; :class:`PowerHistory` (optional) when it last powered on
:class:`BootDeviceControl`    boot from ``cd``, ``disk`` or ``pxe``, once or persistently; clear the override
:class:`VirtualMedia`         slots by kind (CD, removable disk): insert, verify, eject
:class:`MediaStaging`         put files where machines can boot them (+ :class:`MediaLocating`, advised)
:class:`ImageDeployment`      deploy an image with user-data and report the platform's deployment state
:class:`SeedDelivery`         optional: which form of the seed the machine reads (ISO, disk image, text)
:class:`AddressDiscovery`     optional: the node's address as the platform knows it
:class:`AddressReporting`     optional: where a DHCP node's seed sends its addresses (read back by discovery)
:class:`ConcurrencyLimits`    optional: a key per machine (its BMC, its vCenter) and a limit per key
============================  ==========================================================================

No vendor type crosses this line: providers take and return the plain data types below, and translate vendor
errors into :mod:`palette_provision.errors` at their boundary.

A minimal provider of VMs::

    class MyCloudSettings(BaseModel):
        endpoint: str
        password: SecretRef

    class MyCloudProvider:
        name = "mycloud"
        settings_model = MyCloudSettings
        node_settings_model = None                      # no per-node settings
        lifecycle = Lifecycle.CREATED
        install_methods = (InstallMethod.BOOT_FROM_MEDIA,)

        def __init__(self, settings: MyCloudSettings, context: ProviderContext) -> None: ...
        def validate(self, plan: DeploymentPlan) -> list[PlanIssue]: return []
        def preflight(self, plan: DeploymentPlan) -> None: ...
        def close(self) -> None: ...
        # plus CreatesMachines, Power, VirtualMedia, BootDeviceControl, MediaStaging (the boot-from-media needs)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel

from palette_provision.errors import PlanIssue
from palette_provision.plan import DeploymentPlan, NodeSpec

__all__ = [
    "AddressDiscovery",
    "AddressReporting",
    "AllocatesMachines",
    "BootDevice",
    "BootDeviceControl",
    "ConcurrencyLimits",
    "CreatesMachines",
    "DeployState",
    "DeployStatus",
    "DiskLayout",
    "EnrollsMachines",
    "ImageDeployment",
    "InstallMethod",
    "Lifecycle",
    "Machine",
    "MediaFile",
    "MediaLocating",
    "MediaSlot",
    "MediaStaging",
    "NodeDisks",
    "Power",
    "PowerHistory",
    "PowerState",
    "ProgressCallback",
    "Provider",
    "ProviderContext",
    "SeedDelivery",
    "SeedFormat",
    "SlotKind",
    "StagedMedia",
    "VirtualMedia",
    "capabilities_of",
    "missing_capabilities",
]

from palette_provision._provider_types import (
    BootDevice,
    DeployState,
    DeployStatus,
    InstallMethod,
    Lifecycle,
    Machine,
    MediaFile,
    MediaSlot,
    NodeDisks,
    PowerState,
    ProgressCallback,
    ProviderContext,
    SeedFormat,
    SlotKind,
    StagedMedia,
)


@runtime_checkable
class Provider(Protocol):
    """What every provider is: named, typed settings, a lifecycle, install methods, ``validate``, ``preflight``."""

    name: ClassVar[str]
    settings_model: ClassVar[type[BaseModel]]
    #: The schema of each entry of the plan's ``nodes.hosts`` beyond the core's keys, or ``None`` (none taken).
    node_settings_model: ClassVar[type[BaseModel] | None]
    #: Where this provider's machines come from (may depend on its settings: read from the instance).
    lifecycle: Lifecycle
    #: The install methods it supports, preferred first (the plan's ``install_method`` chooses among them).
    install_methods: tuple[InstallMethod, ...]

    def validate(self, plan: DeploymentPlan) -> list[PlanIssue]:
        """Check the plan against what this platform can do. Fast, no I/O, no side effects."""
        ...

    def preflight(self, plan: DeploymentPlan) -> None:
        """Live, read-only checks (log in, resolve every named object, capacity, name clashes).

        Raises:
            ConfigurationError: naming the setting or object at fault.
        """
        ...

    def close(self) -> None:
        """Release sessions and connections. Safe to call twice."""
        ...


# --------------------------------------------------------------------------------------------- machines
@runtime_checkable
class CreatesMachines(Protocol):
    """Machines made for the deployment (VMs). ``destroy`` deletes them."""

    def find_machine(self, node: NodeSpec, record: Machine | None) -> Machine | None:
        """The node's machine if it exists on the platform; ``record`` is what the journal holds, if anything.

        Its ``attributes`` may be a subset of what :meth:`create_machine` reported: for the same ``id``, the core
        keeps the attributes it recorded before unless they are reported anew.
        """
        ...

    def create_machine(self, node: NodeSpec, media: Sequence[StagedMedia]) -> Machine:
        """Create the machine for ``node``, sized per the plan, powered off.

        ``media`` are the boot media already staged for it (the ISO may still be uploading): a hint a provider may
        use to attach them at creation. :meth:`VirtualMedia.insert_media` is still called and must then change
        nothing.
        """
        ...

    def delete_machine(self, machine: Machine) -> None:
        """Delete the machine (powered off first if needed). Already gone is success."""
        ...


@runtime_checkable
class AllocatesMachines(Protocol):
    """Machines taken from a pool (MAAS). ``destroy`` releases them."""

    def find_machine(self, node: NodeSpec, record: Machine | None) -> Machine | None:
        """The machine this deployment holds for ``node``: by ``record`` (a system id) or, without one, by the
        provider's own marks (an owner tag, ``agent_name``); ``None`` if it holds none."""
        ...

    def allocate_machine(self, node: NodeSpec) -> Machine:
        """Allocate a machine for ``node`` (per its constraints), marked as this deployment's."""
        ...

    def release_machine(self, machine: Machine) -> None:
        """Give the machine back to the pool. Already released is success."""
        ...


@runtime_checkable
class EnrollsMachines(Protocol):
    """Machines that exist already (rack servers behind a BMC). ``destroy`` restores them; nothing is deleted."""

    def enroll_machine(self, node: NodeSpec, record: Machine | None) -> Machine:
        """Resolve and check the node's machine (reach its BMC, find the system); idempotent.

        Raises:
            ConfigurationError: the machine cannot be reached or identified, naming the node's setting at fault.
        """
        ...


# --------------------------------------------------------------------------------------------- power and boot
@runtime_checkable
class Power(Protocol):
    """Power control."""

    def power_state(self, machine: Machine) -> PowerState:
        """Read the machine's power state."""
        ...

    def power_on(self, machine: Machine) -> None:
        """Power on, returning once the platform reports the machine on. Already on is success.

        Platforms that apply power changes asynchronously (Redfish BMCs) poll inside, with ``wait_for``; the core
        does not poll for ``ON`` afterwards, because a fast installer may already have powered the machine off.
        """
        ...

    def power_off(self, machine: Machine) -> None:
        """Power off (hard). Already off, or a machine that no longer exists, is success."""
        ...


@runtime_checkable
class PowerHistory(Protocol):
    """Optional: when the machine last powered on, so a resumed run never powers a machine on twice.

    A run killed right after ``power_on`` finds the machine off again once the installer finished; with this
    capability the core can tell that from a power-on that never happened, and does not start a second install.
    """

    def last_power_on(self, machine: Machine) -> float | None:
        """Epoch seconds of the machine's last power-on, or ``None`` if unknown or never."""
        ...


@runtime_checkable
class BootDeviceControl(Protocol):
    """Which device the machine boots from next (once) or from now on (persistent)."""

    def set_boot_device(self, machine: Machine, device: BootDevice, *, persistent: bool) -> None:
        """Make the machine boot from ``device``: the next boot only, or every boot. Idempotent.

        A platform without one-time overrides (a VM's boot order) sets it persistently; one whose BMC is known
        to ignore one-time overrides sets it persistently too. Either way the core records the override, and
        ``destroy`` calls :meth:`clear_boot_override` on machines it did not create.
        """
        ...

    def clear_boot_override(self, machine: Machine) -> None:
        """Return to the machine's own boot order. Nothing to clear is success."""
        ...


@runtime_checkable
class VirtualMedia(Protocol):
    """Virtual-media slots (a VM's CD drives, a BMC's virtual CD and removable disk)."""

    def media_slots(self, machine: Machine) -> Sequence[MediaSlot]:
        """The slots the core may use, in order; a slot an operator filled is marked ``preinserted``."""
        ...

    def insert_media(self, machine: Machine, media: Mapping[MediaSlot, StagedMedia]) -> None:
        """Insert each staged file into its slot, replacing what is there; nothing to change is success.

        One call for every slot, so a platform that reconfigures a machine as a whole does it once.
        """
        ...

    def inserted_media(self, machine: Machine) -> Mapping[MediaSlot, str]:
        """What each non-empty slot holds, as the locator :meth:`insert_media` was given (verify)."""
        ...

    def eject_media(self, machine: Machine, slots: Sequence[MediaSlot]) -> None:
        """Empty the slots. Already empty, or a machine that no longer exists, is success."""
        ...


@runtime_checkable
class SeedDelivery(Protocol):
    """Optional: the seed's form for a node (default: a ``cidata`` ISO in a second CD; user-data text for images)."""

    def seed_format(self, node: NodeSpec) -> SeedFormat:
        """Which form of the seed this node's machine reads."""
        ...


@runtime_checkable
class ImageDeployment(Protocol):
    """Deploy an image onto the machine with the seed as user-data; the platform powers the machine itself."""

    def deploy_image(self, machine: Machine, node: NodeSpec, user_data: bytes) -> None:
        """Start the deployment, unless it already runs or is done. ``user_data`` holds secrets: never log it."""
        ...

    def deploy_status(self, machine: Machine) -> DeployStatus:
        """Where the deployment is, with the platform's own word for it."""
        ...


# --------------------------------------------------------------------------------------------- media
@runtime_checkable
class MediaStaging(Protocol):
    """Put media where machines can boot it, content-addressed and idempotent."""

    def stage_media(self, media: MediaFile, progress: ProgressCallback | None = None) -> StagedMedia:
        """Stage ``media`` unless an identical copy is already there; return where it is."""
        ...

    def unstage_media(self, staged: StagedMedia) -> None:
        """Remove staged media. Removing what is already gone is not an error."""
        ...


@runtime_checkable
class MediaLocating(Protocol):
    """Optional, and strongly advised for media staging: say where ``stage_media`` will put a file, without I/O.

    The core journals that locator *before* uploading, so a run killed mid-upload still lets ``destroy`` remove
    the file (a seed holds a private host key and a password hash: it must never be left behind).
    """

    def locate_media(self, media: MediaFile) -> str:
        """The locator ``stage_media(media)`` returns. Pure: no I/O."""
        ...


# --------------------------------------------------------------------------------------------- the rest
@runtime_checkable
class AddressDiscovery(Protocol):
    """Learn a node's address from the platform (VMware Tools, BMC, MAAS).

    The report says where each address came from: ``platform`` for what this returns, unless the provider sets a
    class attribute ``address_source = "node"`` (its discovery relays the node's own report, as the bare-metal
    provider's media server does); ``plan`` when the plan's static address was used.
    """

    def discover_address(self, machine: Machine, node: NodeSpec) -> str | None:
        """Return the node's address if the platform knows it, else ``None``."""
        ...


@runtime_checkable
class AddressReporting(Protocol):
    """Optional: a URL a DHCP node reports its addresses to once its network is up (the media server's
    ``/report/<token>``). The core renders that step into the seed of every node without a planned address; the
    provider's :class:`AddressDiscovery` then answers from what arrived. The URL holds the node's token: it is
    rendered into the seed (a secret file) and never logged."""

    def address_report_url(self, node: NodeSpec) -> str | None:
        """Where ``node`` reports, or ``None`` when it cannot (no server its network reaches)."""
        ...


@runtime_checkable
class ConcurrencyLimits(Protocol):
    """Optional: how many nodes may act on the platform at once, per key.

    The core runs every acting step of a node (not its waits) while holding one of ``limit`` slots of the node's
    key, across the whole fan-out: one BMC per machine with limit 1 means one command at a time per BMC; one
    vCenter for every node with limit 8 means 8 concurrent reconfigurations.
    """

    def concurrency_key(self, node: NodeSpec) -> tuple[str, int]:
        """The node's key (its BMC's address, the vCenter's host) and the limit for that key (>= 1)."""
        ...


@runtime_checkable
class DiskLayout(Protocol):
    """Optional: the names the machine's disks will have inside the node, for machines the provider builds.

    No I/O: the provider knows where it attaches each disk (a controller and unit). Without this capability the
    plan names the disks (``nodes.install_disk``, ``nodes.hosts[i].install_disk``); a plan value always wins.
    """

    def disk_layout(self, node: NodeSpec) -> NodeDisks | None:
        """``node``'s install disk and storage-pool disk (``storage`` ``None`` when the machine has none), or
        ``None`` when the provider does not know (a machine it does not build)."""
        ...


#: Every capability, by the name errors and ``capabilities_of`` use.
CAPABILITIES: dict[str, type] = {
    "creates_machines": CreatesMachines,
    "allocates_machines": AllocatesMachines,
    "enrolls_machines": EnrollsMachines,
    "power": Power,
    "power_history": PowerHistory,
    "boot_device": BootDeviceControl,
    "virtual_media": VirtualMedia,
    "media_staging": MediaStaging,
    "media_locating": MediaLocating,
    "image_deployment": ImageDeployment,
    "seed_delivery": SeedDelivery,
    "address_discovery": AddressDiscovery,
    "address_reporting": AddressReporting,
    "concurrency_limits": ConcurrencyLimits,
    "disk_layout": DiskLayout,
}

#: The machine-source capability each lifecycle needs.
LIFECYCLE_CAPABILITY: dict[Lifecycle, type] = {
    Lifecycle.CREATED: CreatesMachines,
    Lifecycle.ALLOCATED: AllocatesMachines,
    Lifecycle.ENROLLED: EnrollsMachines,
}


def capability_name(capability: type) -> str:
    """The name of a capability protocol (``VirtualMedia`` -> ``virtual_media``)."""
    return next((name for name, proto in CAPABILITIES.items() if proto is capability), capability.__name__)


def capabilities_of(provider: object) -> list[str]:
    """Names of the capability protocols ``provider`` implements."""
    return [name for name, proto in CAPABILITIES.items() if isinstance(provider, proto)]


def missing_capabilities(provider: object, needed: Sequence[type]) -> list[str]:
    """Names of the capabilities in ``needed`` that ``provider`` lacks (empty: it has them all)."""
    return [capability_name(proto) for proto in needed if not isinstance(provider, proto)]
