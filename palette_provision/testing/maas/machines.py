"""Machines as MAAS shows them (``GET machines/``), the list filters, and ``allocate``'s constraint matching."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from .errors import conflict, validation_error
from .forms import Form
from .region import STATUS_NAMES, Region, Status

__all__ = ["filter_machines", "find_allocatable", "render_machine"]

API = "/MAAS/api/2.0"
KNOWN_ARCHES = ("amd64/generic", "arm64/generic", "i386/generic", "ppc64el/generic", "s390x/generic")
IGNORED = {"comment", "bridge_all", "bridge_type", "bridge_stp", "bridge_fd", "dry_run", "verbose", "op", "agent_name"}
CONSTRAINTS = {"name", "system_id", "arch", "cpu_count", "mem", "tags", "not_tags", "zone", "not_in_zone", "pool",
               "not_in_pool", "storage", "interfaces"}
STORAGE_ITEM = re.compile(r"^(?:[\w-]+:)?(\d+(?:\.\d+)?)(?:\([\w,-]*\))?$")


def _named(kind: str, name: str, index: int) -> dict[str, Any]:
    return {"name": name, "description": "", "id": index, "resource_uri": f"{API}/{kind}/{name}/"}


def _disks(machine: dict[str, Any]) -> list[dict[str, Any]]:
    sid = machine["system_id"]
    return [
        {"id": 10 + i, "name": f"sd{chr(97 + i)}", "path": f"/dev/disk/by-dname/sd{chr(97 + i)}", "type": "physical",
         "size": int(gb * 1_000_000_000), "block_size": 512, "tags": ["ssd"] if i == 0 else [],
         "model": "QEMU HARDDISK",
         "serial": f"{sid}-{i}", "system_id": sid, "resource_uri": f"{API}/nodes/{sid}/blockdevices/{10 + i}/"}
        for i, gb in enumerate(machine["disks"])
    ]


def _interfaces(machine: dict[str, Any]) -> list[dict[str, Any]]:
    sid = machine["system_id"]
    result = []
    for i, mac in enumerate(machine["macs"]):
        links = []
        if i == 0:
            links = [{"id": 500 + n, "mode": "auto", "ip_address": ip} for n, ip in enumerate(machine["ip_addresses"])]
        result.append({
            "id": 100 + i, "name": f"eth{i}", "type": "physical", "mac_address": mac, "enabled": True, "links": links,
            "vlan": {"vid": 0, "mtu": 1500, "name": "untagged", "fabric": "fabric-0", "dhcp_on": True},
            "tags": [], "params": "", "parents": [], "children": [], "system_id": sid,
            "resource_uri": f"{API}/nodes/{sid}/interfaces/{100 + i}/",
        })
    return result


def render_machine(machine: dict[str, Any], region: Region) -> dict[str, Any]:
    """The machine's JSON as MAAS answers it (a subset of ``DISPLAYED_MACHINE_FIELDS``; no ``agent_name``)."""
    disks, interfaces = _disks(machine), _interfaces(machine)
    status = machine["status"]
    return {
        "system_id": machine["system_id"], "hostname": machine["hostname"], "description": "",
        "domain": {"name": machine["domain"], "id": 0, "authoritative": True, "ttl": None, "is_default": True,
                   "resource_uri": f"{API}/domains/0/"},
        "fqdn": f"{machine['hostname']}.{machine['domain']}", "owner": machine["owner"], "owner_data": {},
        "locked": False, "architecture": machine["architecture"], "min_hwe_kernel": "", "hwe_kernel": None,
        "cpu_count": machine["cpu_count"], "cpu_speed": 2400, "memory": machine["memory"], "swap_size": None,
        "storage": round(sum(machine["disks"]) * 1000.0, 3), "status": status,
        "status_name": STATUS_NAMES.get(status, str(status)), "status_message": machine["status_message"],
        "status_action": "", "error_description": "", "osystem": machine["osystem"],
        "distro_series": machine["distro_series"], "ephemeral_deploy": False,
        "netboot": status not in (Status.DEPLOYED,), "power_type": machine["power_type"],
        "power_state": machine["power_state"], "tag_names": list(machine["tags"]), "address_ttl": None,
        "ip_addresses": list(machine["ip_addresses"]), "interface_set": interfaces, "boot_interface": interfaces[0],
        "zone": _named("zones", machine["zone"], region.config.zones.index(machine["zone"])
                       if machine["zone"] in region.config.zones else 1),
        "pool": _named("resourcepool", machine["pool"], region.config.pools.index(machine["pool"])
                       if machine["pool"] in region.config.pools else 1),
        "disable_ipv4": False, "boot_disk": disks[0] if disks else None, "blockdevice_set": disks,
        "physicalblockdevice_set": disks, "virtualblockdevice_set": [], "volume_groups": [], "raids": [],
        "cache_sets": [], "bcaches": [], "special_filesystems": [], "node_type": 0, "node_type_name": "Machine",
        "hardware_info": {"system_vendor": "QEMU", "system_product": "Standard PC (Q35 + ICH9, 2009)"},
        "resource_uri": f"{API}/machines/{machine['system_id']}/",
    }


def filter_machines(machines: Iterable[dict[str, Any]], query: dict[str, list[str]]) -> list[dict[str, Any]]:
    """``GET machines/`` filters: each given filter must match one of its (repeatable) values."""

    def accept(m: dict[str, Any]) -> bool:
        checks: dict[str, Callable[[str], bool]] = {
            "hostname": lambda v: v in (m["hostname"], f"{m['hostname']}.{m['domain']}"),
            "id": lambda v: v == m["system_id"],
            "mac_address": lambda v: v.lower() in m["macs"],
            "zone": lambda v: v == m["zone"],
            "pool": lambda v: v == m["pool"],
            "agent_name": lambda v: v == m["agent_name"],
            "domain": lambda v: v == m["domain"],
            "arch": lambda v: v in (m["architecture"], m["architecture"].partition("/")[0]),
        }
        for name, check in checks.items():
            values = query.get(name)
            if values and not any(check(v) for v in values):
                return False
        wanted = _split(query.get("tags", []))
        return set(wanted) <= set(m["tags"])

    return [m for m in machines if accept(m)]


def _split(values: Iterable[str]) -> list[str]:
    return [part for value in values for part in re.split(r"[,\s]+", value) if part]


def _number(form: Form, name: str, message: str) -> float | None:
    value = form.get(name)
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        raise validation_error({name: [message]}) from None


def _storage(form: Form) -> list[float]:
    value = form.get("storage")
    if not value:
        return []
    sizes = []
    for item in re.split(r",(?![^(]*\))", value):
        found = STORAGE_ITEM.match(item.strip())
        if not found:
            raise validation_error({"storage": [f'Malformed storage constraint, "{value[:80]}".']})
        sizes.append(float(found.group(1)))
    return sizes


def _disks_fit(disks: list[float], wanted: list[float]) -> bool:
    if not wanted:
        return True
    if not disks or disks[0] < wanted[0]:  # MAAS gives the first storage constraint to the boot disk
        return False
    free = sorted(disks[1:])
    for size in sorted(wanted[1:]):
        fit = next((d for d in free if d >= size), None)
        if fit is None:
            return False
        free.remove(fit)
    return True


def find_allocatable(region: Region, form: Form) -> dict[str, Any]:
    """The first Ready machine matching ``allocate``'s constraints (hold ``region.lock``); 400/409 otherwise."""
    unknown = sorted(set(form.fields) - CONSTRAINTS - IGNORED)
    if unknown:
        raise validation_error({name: ["No such constraint."] for name in unknown})
    machines = list(region.machines.values())
    arches = set(KNOWN_ARCHES) | {m["architecture"] for m in machines}
    for arch in form.get_list("arch"):
        if arch not in arches and not any(a.split("/")[0] == arch for a in arches):
            raise validation_error({"arch": ["Architecture not recognised."]})
    cpu = _number(form, "cpu_count", "Invalid CPU count: number required.")
    mem = _number(form, "mem", "Invalid memory: number of MiB required.")
    tags, not_tags = _split(form.get_list("tags")), _split(form.get_list("not_tags"))
    known_tags = set(region.config.tags) | {t for m in machines for t in m["tags"]}
    missing = [t for t in dict.fromkeys(tags) if t not in known_tags]
    if missing:
        raise validation_error({"tags": ["No such tag(s): " + ", ".join(f"'{t}'" for t in missing) + "."]})
    for field, known in (("zone", region.config.zones), ("pool", region.config.pools)):
        for name in form.get_list(field) + form.get_list(f"not_in_{field}"):
            if name not in known:
                raise validation_error({field: [f"No such {field}: '{name[:60]}'."]})
    storage = _storage(form)

    def fits(m: dict[str, Any]) -> bool:
        name, sid = form.get("name"), form.get("system_id")
        return (
            m["status"] == Status.READY and m["owner"] is None
            and (not name or name in (m["hostname"], f"{m['hostname']}.{m['domain']}"))
            and (not sid or sid == m["system_id"])
            and (not form.get_list("arch") or any(a in (m["architecture"], m["architecture"].split("/")[0])
                                                  for a in form.get_list("arch")))
            and (cpu is None or m["cpu_count"] >= cpu) and (mem is None or m["memory"] >= mem)
            and set(tags) <= set(m["tags"]) and not set(not_tags) & set(m["tags"])
            and (not form.get("zone") or form.get("zone") == m["zone"])
            and m["zone"] not in form.get_list("not_in_zone")
            and (not form.get("pool") or form.get("pool") == m["pool"])
            and m["pool"] not in form.get_list("not_in_pool")
            and _disks_fit(m["disks"], storage)
        )

    for machine in machines:
        if fits(machine):
            return machine
    given = [(k, v) for k, v in form.fields.items() if k in CONSTRAINTS]
    if not given:
        raise conflict("No machine available.")
    if form.get("system_id"):
        raise conflict(f"No machine with system ID {form.get('system_id')} available.")
    resolved = " ".join(f"{k}={','.join(v)}" for k, v in given)
    raise conflict(f'No available machine matches constraints: {given!s} (resolved to "{resolved}")')
