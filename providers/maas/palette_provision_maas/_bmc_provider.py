"""The bmc mode's provider: allocated through MAAS, driven through each machine's BMC as on bare metal.

Everything but the machine's source (allocate, find, release: :class:`~._provider.MaasProvider`) goes through the
bare-metal provider (:class:`~._bmc.BmcBridge`), fed the BMC MAAS names for the machine: power, the boot override,
virtual media from the media server, the seed's form, a DHCP node's address report. ``destroy`` ejects what was
inserted and clears the boot override through the BMC before the machine is released (the core undoes resources
newest first).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from palette_provision.plan import DeploymentPlan, NodeSpec
from palette_provision.provider import (
    BootDevice,
    InstallMethod,
    Machine,
    MediaFile,
    MediaSlot,
    PowerState,
    ProgressCallback,
    SeedFormat,
    StagedMedia,
)

from palette_provision_maas._provider import MaasProvider

__all__ = ["MaasBmcProvider"]


class MaasBmcProvider(MaasProvider):
    """``mode: bmc`` (built by :class:`MaasProvider` from the settings)."""

    install_methods = (InstallMethod.BOOT_FROM_MEDIA,)
    #: A DHCP node's address is its own report to the media server, as on bare metal.
    address_source: ClassVar[str] = "node"
    #: MAAS never deploys in this mode: the image mode's inherited methods are blocked (``None``: a runtime-checkable
    #: protocol then finds no ``ImageDeployment``). The contract suite showed it: claimed, it failed for want of an
    #: image.
    deploy_image = None  # type: ignore[assignment]
    deploy_status = None  # type: ignore[assignment]

    def preflight(self, plan: DeploymentPlan) -> None:
        """MAAS's checks, then the media server answering at the URL the BMCs will be given."""
        super().preflight(plan)
        self.bmc.provider.check_media_server()

    def seed_format(self, node: NodeSpec) -> SeedFormat:
        """The bare-metal provider's choice for the machine's BMC (acquired first: see ``ACQUIRE_FIRST``)."""
        return self.bmc.for_node(node.name).seed_format(node)

    def discover_address(self, machine: Machine, node: NodeSpec) -> str | None:
        """The plan's address, else what the node reported to the media server."""
        return self.bmc.for_machine(machine).discover_address(machine, node)

    def address_report_url(self, node: NodeSpec) -> str | None:
        """The media server takes a DHCP node's report, as on bare metal."""
        return self.bmc.for_node(node.name).address_report_url(node)

    def power_state(self, machine: Machine) -> PowerState:
        """As the machine's BMC reports it."""
        return self.bmc.for_machine(machine).power_state(machine)

    def power_on(self, machine: Machine) -> None:
        """Through the BMC (MAAS is not asked: it would not know about the installer's boot)."""
        self.bmc.for_machine(machine).power_on(machine)

    def power_off(self, machine: Machine) -> None:
        """Through the BMC."""
        self.bmc.for_machine(machine).power_off(machine)

    def set_boot_device(self, machine: Machine, device: BootDevice, *, persistent: bool) -> None:
        """The BMC's boot override."""
        self.bmc.for_machine(machine).set_boot_device(machine, device, persistent=persistent)

    def clear_boot_override(self, machine: Machine) -> None:
        """Back to the machine's own boot order (before it is released)."""
        self.bmc.for_machine(machine).clear_boot_override(machine)

    def media_slots(self, machine: Machine) -> list[MediaSlot]:
        """The BMC's virtual-media slots."""
        return self.bmc.for_machine(machine).media_slots(machine)

    def insert_media(self, machine: Machine, media: Mapping[MediaSlot, StagedMedia]) -> None:
        """Insert by media-server URL."""
        self.bmc.for_machine(machine).insert_media(machine, media)

    def inserted_media(self, machine: Machine) -> dict[MediaSlot, str]:
        """What each slot holds."""
        return self.bmc.for_machine(machine).inserted_media(machine)

    def eject_media(self, machine: Machine, slots: Sequence[MediaSlot]) -> None:
        """Empty the slots (before the machine is released)."""
        self.bmc.for_machine(machine).eject_media(machine, slots)

    def stage_media(self, media: MediaFile, progress: ProgressCallback | None = None) -> StagedMedia:
        """Publish on the media server."""
        return self.bmc.provider.stage_media(media, progress)

    def unstage_media(self, staged: StagedMedia) -> None:
        """Stop serving the file."""
        self.bmc.provider.unstage_media(staged)
