"""The ``inventory`` hand-off: an Ansible inventory and a JSON report, for users who form clusters themselves.

Three files in ``handoff.output_dir``:

* ``inventory.yaml``: one group named after the cluster, one host per node with ``ansible_host``, ``ansible_user``
  and ``ansible_ssh_common_args`` pointing OpenSSH at the ``known_hosts`` file beside it with
  ``StrictHostKeyChecking=yes``: the host keys are pinned, never trusted blindly.
* ``known_hosts``: each node's SSH host key (the public line the seed generated, journal fact ``host_key_public``).
* ``nodes.json``: the leader (``plan.handoff.leader``, else the first node), and every node's address, SSH user,
  host key fingerprint, platform ids and readiness evidence.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import shlex
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from palette_provision.errors import HandoffError
from palette_provision.handoff.base import HandoffContext, HandoffResult, ReadyNode
from palette_provision.journal import Fact
from palette_provision.plan import DeploymentPlan

__all__ = ["HOST_KEY_PUBLIC_FACT", "Inventory", "ansible_group_name"]

#: Journal fact (per node) holding the node's SSH host public key line, written when its seed is rendered.
HOST_KEY_PUBLIC_FACT = Fact.HOST_KEY_PUBLIC
INVENTORY_STEP = "handoff.inventory"


def ansible_group_name(cluster: str) -> str:
    """An Ansible-safe group name for ``cluster`` (Ansible warns about ``-`` and other non-identifier characters).

    >>> ansible_group_name("palette-lab")
    'palette_lab'
    >>> ansible_group_name("3nodes")
    '_3nodes'
    """
    name = re.sub(r"[^A-Za-z0-9_]", "_", cluster)
    return f"_{name}" if name[:1].isdigit() else name


def _fingerprint(public_line: str) -> str:
    """OpenSSH ``SHA256:...`` fingerprint of a public key line."""
    blob = base64.b64decode(public_line.split()[1], validate=True)
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")


def _write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Inventory:
    """Write an Ansible inventory, a pinned ``known_hosts`` and a JSON report of the ready nodes.

    Example::

        result = Inventory().form(context)
        # ansible-inventory -i out/inventory.yaml --list ; ansible -i out/inventory.yaml all -m ping
        print(result.files)

    Raises:
        HandoffError: a node's recorded host key does not match the fingerprint the readiness ladder pinned.
    """

    kind = "inventory"

    def steps(self, plan: DeploymentPlan) -> list[tuple[str, str, str]]:
        """The one sub-step, for the dry run."""
        return [(INVENTORY_STEP, "*", f"write the Ansible inventory, known_hosts and nodes.json to "
                 f"{plan.handoff.output_dir}")]

    def form(self, context: HandoffContext) -> HandoffResult:
        """Write the three files (idempotent: a re-run rewrites them from the same facts)."""
        data = context.run_step(INVENTORY_STEP, lambda: self._write_files(context), always=True)
        files = tuple(Path(f) for f in data["files"])
        context.emit(INVENTORY_STEP, "inventory_written", {"files": [str(f) for f in files]})
        details = {"group": data["group"], "unpinned": data["unpinned"]}
        return HandoffResult(kind=self.kind, files=files, details=details)

    def _write_files(self, context: HandoffContext) -> dict[str, Any]:
        journal, plan = context.journal, context.plan
        out = context.output_dir
        out.mkdir(parents=True, exist_ok=True)
        inventory_path, known_hosts_path, report_path = out / "inventory.yaml", out / "known_hosts", out / "nodes.json"
        ssh_args = " ".join(
            [
                "-o", shlex.quote(f"UserKnownHostsFile={known_hosts_path.resolve()}"),
                "-o", "StrictHostKeyChecking=yes",
                "-o", "GlobalKnownHostsFile=/dev/null",
            ]
        )
        hosts: dict[str, dict[str, Any]] = {}
        known_lines: list[str] = []
        report: list[dict[str, Any]] = []
        unpinned: list[str] = []
        for node in context.nodes:
            public = journal.fact(node.name, HOST_KEY_PUBLIC_FACT)
            fingerprint = node.host_key_fingerprint
            if public:
                fingerprint = self._check_key(node, str(public))
                known_lines.append(f"{node.address} {' '.join(str(public).split()[:2])}")
            else:
                unpinned.append(node.name)
            hosts[node.name] = {
                "ansible_host": node.address,
                "ansible_user": node.ssh_user,
                "ansible_ssh_common_args": ssh_args,
                "palette_host_key_fingerprint": fingerprint or "",
            }
            report.append(self._node_report(context, node, fingerprint, bool(public)))
        group = ansible_group_name(plan.cluster.name)
        # The node that creates the cluster and links the others, as the Local API hand-off would pick it.
        leader = plan.handoff.leader or (context.nodes[0].name if context.nodes else None)
        document = {
            "all": {
                "children": {
                    group: {
                        "hosts": hosts,
                        "vars": {
                            "palette_cluster_name": plan.cluster.name,
                            "palette_cluster_vip": str(plan.cluster.vip),
                            "palette_local_api_port": plan.handoff.local_api_port,
                            "palette_cluster_leader": leader,
                        },
                    }
                }
            }
        }
        header = f"# Ansible inventory of {plan.cluster.name}, written by palette-provision (deployment {plan.name}).\n"
        _write(inventory_path, header + yaml.safe_dump(document, sort_keys=False))
        _write(known_hosts_path, "".join(line + "\n" for line in known_lines))
        summary = {
            "deployment": plan.name,
            "cluster": plan.cluster.name,
            "vip": str(plan.cluster.vip),
            "leader": leader,
            "inventory": str(inventory_path),
            "known_hosts": str(known_hosts_path),
            "nodes": report,
        }
        _write(report_path, json.dumps(summary, indent=2, default=str) + "\n")
        if unpinned:
            context.log.warning("inventory_host_key_unknown", nodes=unpinned,
                                detail="no host key recorded: OpenSSH will refuse these hosts until one is added")
        files = (inventory_path, known_hosts_path, report_path)
        return {"files": [str(f) for f in files], "group": group, "unpinned": unpinned}

    @staticmethod
    def _check_key(node: ReadyNode, public: str) -> str:
        try:
            fingerprint = _fingerprint(public)
        except (IndexError, binascii.Error, ValueError) as exc:
            raise HandoffError(INVENTORY_STEP, f"{node.name}: the recorded host key is not an OpenSSH public key "
                               "line") from exc
        if node.host_key_fingerprint and node.host_key_fingerprint != fingerprint:
            raise HandoffError(
                INVENTORY_STEP,
                f"{node.name}: the recorded host key is {fingerprint}, but the readiness ladder pinned "
                f"{node.host_key_fingerprint}",
            )
        return fingerprint

    @staticmethod
    def _node_report(context: HandoffContext, node: ReadyNode, fingerprint: str | None, pinned: bool) -> dict[str, Any]:
        evidence: list[Mapping[str, Any]] = list(node.evidence) or list(context.journal.evidence(node.name))
        return {
            "name": node.name,
            "address": node.address,
            "ssh_user": node.ssh_user,
            "host_key_fingerprint": fingerprint,
            "host_key_pinned": pinned,
            "machine_id": node.machine_id,
            "platform_ids": dict(node.platform_ids),
            "evidence": [dict(e) for e in evidence],
        }
