"""Preflight's capacity check: enough distinct Ready machines for the nodes that still need one.

An allocate ``dry_run`` answers one machine per node, each node checked alone: nodes with the same constraints all
get the same answer, so three nodes on a region with two matching machines pass it and the third allocation fails
mid-run, after two machines were taken. This check lists the region's machines once, matches each node's
constraints against the Ready ones, and assigns distinct machines to nodes (a maximum bipartite matching); a node
left without one is a configuration error before anything is allocated.

The match here is looser than MAAS's (``storage`` is not checked; MAAS's own dry run did that, node by node), and
the machine MAAS's dry run chose always counts for its node: the check only fails when MAAS cannot serve every node
at once, never where MAAS would.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from palette_provision_maas._shapes import Machine

__all__ = ["could_match", "left_without"]

READY = 4


def _listed(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]


def could_match(machine: Machine, form: Mapping[str, Any]) -> bool:
    """Whether MAAS could allocate ``machine`` for the allocate ``form`` (all but ``storage`` checked)."""
    if machine.status != READY:
        return False
    tags = set(machine.tag_names)
    checks: dict[str, Callable[[str], bool]] = {
        "system_id": lambda v: v == machine.system_id,
        "name": lambda v: v in (machine.hostname, machine.fqdn),
        "arch": lambda v: v in (machine.architecture, machine.architecture.split("/")[0]),
        "cpu_count": lambda v: machine.cpu_count >= int(v),
        "mem": lambda v: machine.memory >= int(v),
        "zone": lambda v: v == machine.zone,
        "pool": lambda v: v == machine.pool,
    }
    for key, check in checks.items():
        if key in form and not all(check(v) for v in _listed(form[key])):
            return False
    return set(_listed(form.get("tags", []))) <= tags and not set(_listed(form.get("not_tags", []))) & tags


def left_without(candidates: Mapping[str, Sequence[str]]) -> list[str]:
    """The nodes (keys) a maximum matching of nodes to distinct machines (system ids) leaves without one."""
    holder: dict[str, str] = {}

    def place(node: str, seen: set[str]) -> bool:
        for machine in candidates[node]:
            if machine in seen:
                continue
            seen.add(machine)
            if machine not in holder or place(holder[machine], seen):
                holder[machine] = node
                return True
        return False

    return [node for node in candidates if not place(node, set())]
