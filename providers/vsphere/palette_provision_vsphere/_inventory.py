"""Resolve the settings' names (datacenter, cluster/host, pool, folder, datastore, network) to vSphere objects.

Every miss raises :class:`ConfigurationError` naming the setting and listing what exists, so one preflight run
tells the user exactly what to type.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from palette_provision.errors import ConfigurationError

from palette_provision_vsphere._session import PROVIDER, VsphereSession, vim
from palette_provision_vsphere._settings import VsphereSettings

__all__ = ["Placement", "resolve_placement"]

_SHOWN = 25  # names listed in an error before "..."


@dataclass(frozen=True)
class Placement:
    """The resolved objects a VM is created with, plus what staging needs (datacenter path, datastore name)."""

    datacenter: Any
    datacenter_path: str
    vm_folder: Any
    pool: Any
    host: Any | None
    datastore: Any
    datastore_name: str
    free_space: int
    capacity: int
    network: Any
    network_name: str
    dvs_uuid: str | None
    portgroup_key: str | None
    datastore_browser: Any  # read with the datastore, for the media folder's searches

    @property
    def distributed(self) -> bool:
        """True when the network is a distributed portgroup."""
        return self.portgroup_key is not None


def _missing(field: str, kind: str, name: str, existing: Sequence[str], where: str = "") -> ConfigurationError:
    names = sorted(set(existing))
    listed = ", ".join(repr(n) for n in names[:_SHOWN]) + (" ..." if len(names) > _SHOWN else "")
    scope = f" in {where}" if where else ""
    return ConfigurationError(
        f"{kind} {name!r} not found{scope}; existing: {listed or 'none'}",
        field=field,
        provider=PROVIDER,
    )


def _pick(
    found: list[tuple[Any, dict[str, Any]]], name: str, *, field: str, kind: str, where: str = ""
) -> tuple[Any, dict[str, Any]]:
    """The first of ``found`` named ``name`` (object, properties), or the error naming ``field`` and what exists."""
    for obj, props in found:
        if props.get("name") == name:
            return obj, props
    raise _missing(field, kind, name, [p.get("name", "?") for _, p in found], where)


def _walk(
    session: VsphereSession,
    root: Any,
    path: str | None,
    *,
    child_prop: str,
    kind: str,
    field: str,
    label: str,
) -> Any:
    """Follow ``a/b/c`` down from ``root`` through ``child_prop`` (folders' childEntity, pools' resourcePool)."""
    node = root
    trail: list[str] = []
    for part in (path or "").split("/"):
        if not part:
            continue
        children = session.props(node, [child_prop]).get(child_prop) or []
        typed = [c for c in children if isinstance(c, getattr(vim, kind))]
        named = session.props_many(typed, ["name"])
        node, _ = _pick(named, part, field=field, kind=label, where="/".join(trail) or "the root")
        trail.append(part)
    return node


def _datacenter_path(session: VsphereSession, parent: Any, name: str) -> str:
    """The inventory path the datastore HTTP interface wants in ``dcPath`` (folders above the datacenter)."""
    root = session.content.rootFolder
    parts = [name]
    while parent is not None and parent != root:
        p = session.props(parent, ["name", "parent"])
        parts.append(str(p.get("name")))
        parent = p.get("parent")
    return "/".join(reversed(parts))


def _compute(session: VsphereSession, s: VsphereSettings, host_folder: Any) -> tuple[Any, Any | None]:
    """Return (root resource pool, host or None) for the cluster and/or host settings."""
    host = None
    pool = None
    if s.cluster is not None:
        clusters = session.list_view(host_folder, "ClusterComputeResource", ["name", "resourcePool", "host"])
        _, cprops = _pick(clusters, s.cluster, field="platform.cluster", kind="cluster", where=s.datacenter)
        pool = cprops.get("resourcePool")
        if s.esxi_host is not None:
            members = session.props_many(list(cprops.get("host") or []), ["name"])
            host, _ = _pick(members, s.esxi_host, field="platform.esxi_host", kind="host", where=s.cluster)
    else:
        if s.esxi_host is None:  # the settings model requires cluster or esxi_host
            raise ConfigurationError("give platform.cluster or platform.esxi_host", field="platform.cluster")
        hosts = session.list_view(host_folder, "HostSystem", ["name", "parent"])
        host, hprops = _pick(hosts, s.esxi_host, field="platform.esxi_host", kind="host", where=s.datacenter)
        pool = session.props(hprops["parent"], ["resourcePool"]).get("resourcePool")
    if pool is None:
        raise ConfigurationError(
            "the cluster or host has no resource pool",
            field="platform.cluster",
            provider=PROVIDER,
        )
    return pool, host


def _network(session: VsphereSession, s: VsphereSettings, networks: list[Any]) -> tuple[Any, str | None, str | None]:
    found = session.props_many(networks, ["name"]) if networks else []
    # vcsim 0.24.2 lists a distributed portgroup twice in Datacenter.network: compare by object, not by count.
    distinct = {o._moId: o for o, p in found if p.get("name") == s.network}
    if not distinct:
        raise _missing(
            "platform.network",
            "network",
            s.network,
            [p.get("name", "?") for _, p in found],
            s.datacenter,
        )
    if len(distinct) > 1:
        raise ConfigurationError(
            f"{len(distinct)} networks are named {s.network!r} ({', '.join(sorted(distinct))}); rename one",
            field="platform.network",
            provider=PROVIDER,
        )
    network = next(iter(distinct.values()))
    if not isinstance(network, vim.dvs.DistributedVirtualPortgroup):
        return network, None, None
    cfg = session.props(network, ["config.key", "config.distributedVirtualSwitch"])
    uuid = session.props(cfg["config.distributedVirtualSwitch"], ["uuid"]).get("uuid")
    return network, str(uuid), str(cfg["config.key"])


def resolve_placement(session: VsphereSession, s: VsphereSettings) -> Placement:
    """Resolve every named object in ``s``.

    Raises:
        ConfigurationError: ``field`` names the setting; the message lists what exists.
    """
    # Everything later steps need from the datacenter comes with the listing: one round trip fewer per property.
    dcs = session.list_view(
        session.content.rootFolder, "Datacenter", ["name", "parent", "vmFolder", "hostFolder", "datastore", "network"]
    )
    dc, dcp = _pick(dcs, s.datacenter, field="platform.datacenter", kind="datacenter")
    root_pool, host = _compute(session, s, dcp["hostFolder"])
    pool = _walk(
        session, root_pool, s.resource_pool,
        child_prop="resourcePool", kind="ResourcePool", field="platform.resource_pool", label="resource pool",
    )  # fmt: skip
    folder = _walk(
        session, dcp["vmFolder"], s.folder,
        child_prop="childEntity", kind="Folder", field="platform.folder", label="VM folder",
    )  # fmt: skip
    stores = session.props_many(
        list(dcp.get("datastore") or []),
        ["name", "summary.freeSpace", "summary.capacity", "summary.accessible", "browser"],
    )
    ds, dsp = _pick(stores, s.datastore, field="platform.datastore", kind="datastore", where=s.datacenter)
    if dsp.get("summary.accessible") is False:
        raise ConfigurationError(
            f"datastore {s.datastore!r} is not accessible",
            field="platform.datastore",
            provider=PROVIDER,
        )
    network, dvs_uuid, pg_key = _network(session, s, list(dcp.get("network") or []))
    return Placement(
        datacenter=dc,
        datacenter_path=_datacenter_path(session, dcp.get("parent"), s.datacenter),
        vm_folder=folder,
        pool=pool,
        host=host,
        datastore=ds,
        datastore_name=s.datastore,
        free_space=int(dsp.get("summary.freeSpace") or 0),
        capacity=int(dsp.get("summary.capacity") or 0),
        network=network,
        network_name=s.network,
        dvs_uuid=dvs_uuid,
        portgroup_key=pg_key,
        datastore_browser=dsp.get("browser"),
    )


def vms_named(session: VsphereSession, placement: Placement, names: set[str]) -> list[tuple[Any, dict[str, Any]]]:
    """Every VM in the datacenter whose name is in ``names``, with its name, annotation and UUIDs.

    vcsim 0.24.2 (unlike vCenter) accepts a second VM of an existing name, so callers check names themselves.
    """
    vms = session.list_view(
        placement.datacenter,
        "VirtualMachine",
        ["name", "config.annotation", "config.uuid", "config.instanceUuid"],
        "listing VMs",
    )
    return [(o, p) for o, p in vms if p.get("name") in names]
