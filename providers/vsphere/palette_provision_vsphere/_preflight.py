"""Preflight checks that need vCenter: VM name clashes and datastore room."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from palette_provision.errors import ConfigurationError
from palette_provision.plan import DeploymentPlan, NodeSpec

from palette_provision_vsphere._inventory import Placement, vms_named
from palette_provision_vsphere._machines import owner_of
from palette_provision_vsphere._session import PROVIDER, VsphereSession
from palette_provision_vsphere._staging import Stager

__all__ = ["check_capacity", "check_names"]

_SEED_ALLOWANCE = 8 * 1024 * 1024  # bytes reserved per node seed (a cidata ISO is < 1 MiB)
_GIB = 1024**3


def check_names(
    session: VsphereSession,
    placement: Placement,
    planned: dict[str, NodeSpec],
    is_ours: Callable[[str, str | None], bool],
) -> dict[str, tuple[str, dict[str, Any]]]:
    """Refuse planned VM names taken by VMs that are not ours.

    vcsim 0.24.2 accepts duplicate VM names (vCenter refuses them), so this is checked here for both.

    Returns:
        The planned names that exist (all ours), with their moref ids and the properties listed
        (:func:`~palette_provision_vsphere._inventory.vms_named`).

    Raises:
        ConfigurationError: listing every clash, with its moref and the deployment its annotation names.
    """
    clashes = []
    existing: dict[str, tuple[str, dict[str, Any]]] = {}
    for vm, props in vms_named(session, placement, set(planned)):
        name, note = str(props.get("name")), props.get("config.annotation")
        if is_ours(name, note):
            existing[name] = (str(vm._moId), props)
        else:
            who = owner_of(note)
            clashes.append(f"{name} ({vm._moId}{', deployment ' + who if who else ''})")
    if clashes:
        raise ConfigurationError(
            "VMs with planned names already exist and are not this deployment's: "
            + ", ".join(sorted(clashes))
            + "; rename or remove them, or change platform.vm_prefix",
            field="platform.vm_prefix",
            provider=PROVIDER,
        )
    return existing


def check_capacity(plan: DeploymentPlan, placement: Placement, stager: Stager, new: list[NodeSpec], log: Any) -> None:
    """Room for what this run still has to put on the datastore (a re-run needs none).

    Media must fit now. Thin disks only take space as guests write, so a shortfall there is a warning.
    vcsim 0.24.2 subtracts every VM's full disk capacity from ``freeSpace`` (thin or not) and lets it go
    negative: counting only what is still missing keeps a re-run against it meaningful.

    Raises:
        ConfigurationError: the ISO and seeds do not fit.
    """
    iso = 0
    if not plan.iso.is_url:
        path = plan.resolve_path(plan.iso.source)
        iso = path.stat().st_size if path.is_file() else 0
    staged = stager.listing()
    # The ISO counts as staged when a file of its size with a digest sidecar is in the media folder.
    if iso and any(size == iso and f"{name}.sha256" in staged for name, size in staged.items()):
        iso = 0
    media = iso + _SEED_ALLOWANCE * len(new)
    disks = sum((n.install_disk_gb + n.storage_disk_gb) * _GIB for n in new)
    free = placement.free_space
    if media and free < media:
        raise ConfigurationError(
            f"datastore {placement.datastore_name!r} has {free / _GIB:.1f} GiB free; the ISO and seeds need "
            f"{media / _GIB:.1f} GiB",
            field="platform.datastore",
            provider=PROVIDER,
        )
    if (media or disks) and free < media + disks:
        log.warning(
            "datastore_thin_overcommit",
            datastore=placement.datastore_name,
            free_gib=round(free / _GIB, 1),
            provisioned_gib=round((media + disks) / _GIB, 1),
        )
