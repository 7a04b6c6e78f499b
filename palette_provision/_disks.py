"""Which disk each node installs onto, and which one the cluster's storage pool takes.

The appliance needs two disks: the install disk and the storage-pool disk (wiped by the cluster). With
``install.device: auto`` the installer picks the largest drive, which with the documented minimums (300 + 500 GB) is
the storage disk, and with the recommended sizes a coin toss. So every appliance node names its install disk: the
plan's value (``nodes.hosts[i].install_disk``, else ``nodes.install_disk``) or, for machines the provider builds,
the provider's (:class:`~palette_provision.provider.DiskLayout`).
"""

from __future__ import annotations

from palette_provision.errors import PlanIssue
from palette_provision.plan import DeploymentPlan, NodeSpec, Profile
from palette_provision.provider import DiskLayout

__all__ = ["STORAGE_POOL_VARIABLE", "disk_issues", "resolve_disks", "storage_pool_drive"]

#: The appliance profile's variable naming the storage-pool disk (default ``/dev/sdb`` in the profile).
STORAGE_POOL_VARIABLE = "storage_pool_drive"


def resolve_disks(specs: list[NodeSpec], provider: object) -> list[NodeSpec]:
    """``specs`` with each disk the plan left unnamed taken from the provider's layout, when it has one."""
    if not isinstance(provider, DiskLayout):
        return specs
    resolved = []
    for spec in specs:
        layout = provider.disk_layout(spec)
        if layout is None:
            resolved.append(spec)
            continue
        resolved.append(
            spec.model_copy(
                update={
                    "install_disk": spec.install_disk or layout.install,
                    "storage_disk": spec.storage_disk or layout.storage,
                }
            )
        )
    return resolved


def _field(plan: DeploymentPlan, spec: NodeSpec, key: str) -> str:
    return f"nodes.hosts[{spec.index}].{key}" if plan.nodes.hosts else f"nodes.{key}"


def disk_issues(plan: DeploymentPlan, specs: list[NodeSpec]) -> list[PlanIssue]:
    """An appliance node without a named install disk; nodes whose storage disks the one profile variable cannot
    describe; an install disk that is also the storage disk."""
    issues: list[PlanIssue] = []
    if plan.profile is not Profile.APPLIANCE:
        return issues
    for spec in specs:
        if spec.install_disk is None:
            issues.append(
                PlanIssue(
                    _field(plan, spec, "install_disk"),
                    f"{spec.name} needs a named install disk: with 'auto' the installer picks the largest drive, "
                    "which may be the storage-pool disk (name it, e.g. /dev/disk/by-path/...)",
                )
            )
        elif spec.storage_disk is not None and spec.storage_disk == spec.install_disk:
            issues.append(
                PlanIssue(_field(plan, spec, "storage_disk"), f"{spec.name}'s storage disk is its install disk")
            )
    drives = {spec.storage_disk for spec in specs if spec.storage_disk is not None}
    if len(drives) > 1 and STORAGE_POOL_VARIABLE not in plan.cluster.profile_variables:
        issues.append(
            PlanIssue(
                "nodes.storage_disk",
                "the cluster profile takes one storage_pool_drive for every node, and the nodes name "
                f"{len(drives)} different storage disks",
            )
        )
    return issues


def storage_pool_drive(specs: list[NodeSpec]) -> str | None:
    """The one storage-pool disk every node names, or ``None`` (none named, or they differ)."""
    drives = {spec.storage_disk for spec in specs if spec.storage_disk is not None}
    return drives.pop() if len(drives) == 1 else None
