# Copyright: palette-provision contributors
# Apache License 2.0 (see LICENSE in the palette-provision repository)

from __future__ import annotations

DOCUMENTATION = r"""
---
name: journal
short_description: The nodes of palette-provision deployments, with pinned SSH host keys
version_added: 0.1.0
description:
  - Yields the nodes of one or more palette-provision deployments as hosts, so a play can configure them right
    after the deployment, with C(ansible_host) (the node's address), C(ansible_user) (the plan's node account) and
    C(ansible_ssh_common_args) pointing OpenSSH at a C(known_hosts) file holding each node's host key, with
    C(StrictHostKeyChecking=yes). The host keys are pinned, never trusted on first use.
  - Reads either the deployments' journals (O(plan_file), read-only, safe while an apply runs; as for
    C(palette-provision status), only the secrets the journal needs must be set, a PostgreSQL journal's password,
    the other references being checked for form only), or the C(nodes.json) that the C(inventory) hand-off writes
    (O(output_dir); no plan, no secret needed).
  - "Groups: every node in C(<group_prefix>nodes); the leader in C(<group_prefix>leader), the others in
    C(<group_prefix>followers); per provider C(<group_prefix><provider>) (for instance C(palette_vsphere)); and all
    the nodes of a deployment in a group named after the deployment (C(site-a) becomes C(site_a))."
  - The configuration file's name must end with C(palette_provision.yml) or C(palette_provision.yaml).
author:
  - palette-provision maintainers (@palette-provision)
requirements:
  - palette-provision (the library) in the controller's Python, for O(plan_file)
extends_documentation_fragment:
  - constructed
options:
  plugin:
    description: This plugin's name, to recognise its configuration files.
    required: true
    type: str
    choices: [palette_provision.appliance.journal]
  plan_file:
    description:
      - Plan files whose journals to read; shell-style patterns (C(sites/*/plan.yaml)) are expanded.
      - Relative paths are relative to this configuration file's folder.
    type: list
    elements: str
    default: []
  state_dir:
    description:
      - The journal's folder, when O(plan_file) names a single plan whose state folder is not the default
        (C(.palette-provision/<plan name>) beside the plan).
    type: path
  output_dir:
    description:
      - Hand-off output folders (the plans' C(handoff.output_dir), kind C(inventory)) whose C(nodes.json) to read;
        shell-style patterns are expanded. A folder without C(nodes.json) yet is skipped.
      - Relative paths are relative to this configuration file's folder.
    type: list
    elements: str
    default: []
  known_hosts_file:
    description:
      - With O(plan_file), where to write the pinned host keys read from the journals (one file for all).
      - Defaults to C(known_hosts) in each deployment's state folder. With O(output_dir), the hand-off's own
        C(known_hosts) is used.
    type: path
  include_unready:
    description:
      - With O(plan_file), also yield nodes whose C(await_ready) step is not done (when their address is known).
        Such hosts have C(palette_ready=false).
    type: bool
    default: false
  group_prefix:
    description: Prefix of the role and provider groups.
    type: str
    default: palette_
notes:
  - Host names are the node names; two deployments with the same node name are refused (give each site its own
    C(cluster.name), the default prefix of node names).
  - "Host variables besides the connection ones: C(palette_deployment), C(palette_node), C(palette_provider),
    C(palette_cluster_name), C(palette_cluster_vip), C(palette_host_key_fingerprint), C(palette_machine_id),
    C(palette_leader), C(palette_ready), C(palette_source) (V(journal) or V(handoff)), C(palette_known_hosts) (the
    file C(ansible_ssh_common_args) names) and C(palette_known_hosts_line) (the node's line in it, to write the
    file again where the inventory was read in another container, as in AWX)."
"""

EXAMPLES = r"""
---
# nodes.palette_provision.yml: every site's nodes, from the hand-off output of each (no secret needed)
plugin: palette_provision.appliance.journal
output_dir:
  - ../work/*/out

---
# site-a.palette_provision.yml: one deployment, read from its journal (no platform or node credentials needed)
plugin: palette_provision.appliance.journal
plan_file: /srv/palette/site-a/plan.yaml
state_dir: /srv/palette/site-a/state
include_unready: true
keyed_groups:
  - key: palette_cluster_name
    prefix: cluster
"""

import glob
import json
import os
import re
import shlex
import tempfile

from ansible.errors import AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin, Constructable

_PATTERN = re.compile(r"[*?\[]")


def group_name(name: str) -> str:
    """An Ansible-safe group name (the hand-off's own rule: non-identifier characters become ``_``)."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return f"_{name}" if name[:1].isdigit() else name


def ssh_args(known_hosts: str) -> str:
    """OpenSSH options pinning the host keys of ``known_hosts`` (and nothing else)."""
    return " ".join([
        "-o", shlex.quote(f"UserKnownHostsFile={known_hosts}"),
        "-o", "StrictHostKeyChecking=yes",
        "-o", "GlobalKnownHostsFile=/dev/null",
    ])


def write_if_changed(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically (mode 0644), unless it already holds it."""
    try:
        with open(path, encoding="utf-8") as handle:
            if handle.read() == text:
                return
    except OSError:
        pass
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".known_hosts.")
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class InventoryModule(BaseInventoryPlugin, Constructable):
    """The ``palette_provision.appliance.journal`` inventory plugin."""

    NAME = "palette_provision.appliance.journal"

    def verify_file(self, path):
        return super().verify_file(path) and path.endswith(("palette_provision.yml", "palette_provision.yaml"))

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        self._known_lines = {}
        base = os.path.dirname(os.path.abspath(path))
        if not (self.get_option("plan_file") or self.get_option("output_dir")):
            raise AnsibleParserError(f"{path}: give plan_file or output_dir")
        # A pattern may match nothing yet (no site deployed); a plan named plainly must exist.
        plans = self._expand(self.get_option("plan_file"), base)
        outputs = self._expand(self.get_option("output_dir"), base)
        state_dir = self.get_option("state_dir")
        if state_dir and len(plans) != 1:
            raise AnsibleParserError(f"{path}: state_dir goes with exactly one plan_file, not {len(plans)}")
        deployments = [self._from_journal(p, state_dir) for p in plans]
        deployments += [d for d in (self._from_output(o) for o in outputs) if d is not None]
        self._check_unique(deployments)
        for deployment in deployments:
            self._add(deployment)

    # ------------------------------------------------------------------------------------------ sources
    @staticmethod
    def _expand(entries, base):
        found = []
        for given in entries or []:
            entry = os.path.expanduser(os.path.expandvars(str(given)))
            full = entry if os.path.isabs(entry) else os.path.join(base, entry)
            if _PATTERN.search(entry):
                found.extend(sorted(glob.glob(full)))
            else:
                found.append(os.path.normpath(full))
        return found

    def _from_journal(self, plan_file, state_dir):
        try:
            from pathlib import Path

            from palette_provision.errors import PaletteProvisionError
            from palette_provision.pipeline import Deployment
            from palette_provision.plan import load_plan
        except ImportError as exc:
            raise AnsibleParserError(
                f"plan_file needs the palette-provision library in the controller's Python ({exc}); output_dir does "
                "not") from exc
        try:
            plan = load_plan(plan_file, defer_secrets=True)  # only what the journal's view uses must be set
            with Deployment(plan, state_dir=Path(state_dir) if state_dir else None) as deployment:
                status = deployment.status()
                folder = str(deployment.state_dir)
            leader = plan.handoff.leader or (plan.node_names() or [None])[0]
            specs = {spec.name: spec for spec in plan.node_specs()}
        except PaletteProvisionError as exc:
            # The library's messages name fields and references, never secret values.
            raise AnsibleParserError(f"{plan_file}: {exc}") from None
        ready = {s["node"] for s in status["steps"] if s["phase"] == "await_ready" and s["status"] == "done"}
        machines = {r["node"]: r["id"] for r in status["resources"] if r["kind"] == "machine" and not r["destroyed"]}
        nodes = []
        for name, facts in status["nodes"].items():
            address = facts.get("address") or (specs[name].static_ip if name in specs else None)
            if not address or (name not in ready and not self.get_option("include_unready")):
                continue
            public = facts.get("host_key_public")
            nodes.append({
                "name": name,
                "address": str(address),
                "ssh_user": plan.cluster.node_account.username,
                "host_key_fingerprint": facts.get("host_key_fingerprint"),
                "known_hosts_line": f"{address} {' '.join(str(public).split()[:2])}" if public else None,
                "machine_id": machines.get(name),
                "ready": name in ready,
            })
        return {
            "deployment": plan.name,
            "provider": plan.platform.provider,
            "cluster": plan.cluster.name,
            "vip": str(plan.cluster.vip),
            "leader": leader,
            "nodes": nodes,
            "known_hosts": self.get_option("known_hosts_file") or os.path.join(folder, "known_hosts"),
            "write_known_hosts": True,
            "source": "journal",
        }

    @staticmethod
    def _from_output(folder):
        report_path = os.path.join(folder, "nodes.json")
        try:
            with open(report_path, encoding="utf-8") as handle:
                report = json.load(handle)
        except FileNotFoundError:
            return None  # not deployed yet (or the hand-off has not run)
        except (OSError, ValueError) as exc:
            raise AnsibleParserError(f"{report_path}: unreadable ({type(exc).__name__})") from None
        if not isinstance(report, dict) or not isinstance(report.get("nodes"), list):
            raise AnsibleParserError(f"{report_path}: not a palette-provision nodes.json")
        known_hosts = os.path.join(folder, "known_hosts")  # the hand-off writes it beside nodes.json
        lines = {}
        try:
            with open(known_hosts, encoding="utf-8") as handle:
                for line in handle:
                    if line.strip() and not line.startswith("#"):
                        lines.setdefault(line.split()[0], line.strip())
        except OSError:
            pass  # nodes without a pinned key: OpenSSH refuses them, as it should
        nodes = []
        for node in report["nodes"]:
            nodes.append({
                "name": str(node["name"]),
                "address": str(node["address"]),
                "known_hosts_line": lines.get(str(node["address"])),
                "ssh_user": node.get("ssh_user"),
                "host_key_fingerprint": node.get("host_key_fingerprint"),
                "machine_id": node.get("machine_id"),
                "provider": (node.get("platform_ids") or {}).get("provider"),
                "ready": True,  # the hand-off runs once every node is ready
            })
        providers = {n["provider"] for n in nodes if n.get("provider")}
        return {
            "deployment": str(report.get("deployment")),
            "provider": providers.pop() if len(providers) == 1 else None,
            "cluster": report.get("cluster"),
            "vip": report.get("vip"),
            # Named by the hand-off since it says so; an older nodes.json listed the leader first.
            "leader": str(report["leader"]) if report.get("leader") else (nodes[0]["name"] if nodes else None),
            "nodes": nodes,
            "known_hosts": known_hosts,
            "write_known_hosts": False,
            "source": "handoff",
        }

    @staticmethod
    def _check_unique(deployments):
        seen = {}
        for deployment in deployments:
            for node in deployment["nodes"]:
                other = seen.setdefault(node["name"], deployment["deployment"])
                if other != deployment["deployment"]:
                    raise AnsibleParserError(
                        f"node {node['name']} is in deployments {other} and {deployment['deployment']}: give each "
                        "deployment its own cluster.name (the default prefix of node names) or nodes.names")

    # ------------------------------------------------------------------------------------------ hosts
    def _add(self, deployment):
        prefix = self.get_option("group_prefix")
        known_hosts = os.path.abspath(deployment["known_hosts"])
        if deployment["write_known_hosts"]:
            lines = [n["known_hosts_line"] for n in deployment["nodes"] if n.get("known_hosts_line")]
            if lines:
                self._known_lines.setdefault(known_hosts, []).extend(lines)
                write_if_changed(known_hosts, "".join(line + "\n" for line in self._known_lines[known_hosts]))
        groups = {f"{prefix}nodes", group_name(deployment["deployment"])}
        for group in groups:
            self.inventory.add_group(group)
        deployment_group = group_name(deployment["deployment"])
        self.inventory.set_variable(deployment_group, "palette_deployment", deployment["deployment"])
        strict = self.get_option("strict")
        for node in deployment["nodes"]:
            name = node["name"]
            provider = node.get("provider") or deployment["provider"]
            leader = name == deployment["leader"]
            host = self.inventory.add_host(name, group=f"{prefix}nodes")
            self.inventory.add_child(deployment_group, host)
            role = self.inventory.add_group(f"{prefix}leader" if leader else f"{prefix}followers")
            self.inventory.add_child(role, host)
            if provider:
                self.inventory.add_child(self.inventory.add_group(group_name(f"{prefix}{provider}")), host)
            variables = {
                "ansible_host": node["address"],
                "ansible_user": node.get("ssh_user"),
                "ansible_ssh_common_args": ssh_args(known_hosts),
                "palette_deployment": deployment["deployment"],
                "palette_node": name,
                "palette_provider": provider,
                "palette_cluster_name": deployment["cluster"],
                "palette_cluster_vip": deployment["vip"],
                "palette_host_key_fingerprint": node.get("host_key_fingerprint") or "",
                "palette_known_hosts": known_hosts,
                "palette_known_hosts_line": node.get("known_hosts_line"),
                "palette_machine_id": node.get("machine_id"),
                "palette_leader": leader,
                "palette_ready": bool(node.get("ready")),
                "palette_source": deployment["source"],
            }
            for key, value in variables.items():
                if value is not None:
                    self.inventory.set_variable(host, key, value)
            hostvars = self.inventory.get_host(host).get_vars()
            self._set_composite_vars(self.get_option("compose"), hostvars, host, strict=strict)
            self._add_host_to_composed_groups(self.get_option("groups"), hostvars, host, strict=strict)
            self._add_host_to_keyed_groups(self.get_option("keyed_groups"), hostvars, host, strict=strict)
