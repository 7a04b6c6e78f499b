"""The inventory hand-off: files Ansible reads back as written, with host keys pinned."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import structlog

from palette_provision.errors import HandoffError
from palette_provision.handoff import HandoffContext, Inventory, ReadyNode
from palette_provision.journal import Journal
from tests.handoff import rig

COMMENT = "palette-provision-host-key"
KEYS = {
    "node1": f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop {COMMENT}",
    "node2": f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl {COMMENT}",
}
FINGERPRINT_NODE1 = "SHA256:tAXFyTXI8xtDaujAEcwJslAYc9/6FKcUkd2Lw0xDhPo"
ANSIBLE_INVENTORY = Path(sys.executable).with_name("ansible-inventory")


def context(tmp: Path, journal: Journal, nodes: tuple[ReadyNode, ...]) -> HandoffContext:
    overrides = {"handoff.kind": "inventory", "profile": "edge"}  # edge: any node count
    plan = rig.build_plan(rig.plan_data(tmp, len(nodes), content=None, overrides=overrides))
    return HandoffContext(plan=plan, journal=journal, nodes=nodes, output_dir=tmp / "out",
                          log=structlog.get_logger("tests"))


def ready(name: str, address: str, fingerprint: str | None = None) -> ReadyNode:
    return ReadyNode(name=name, address=address, ssh_user="kairos", host_key_fingerprint=fingerprint,
                     machine_id=f"m-{name}", platform_ids={"vsphere_moref": f"vm-{name}"},
                     evidence=({"rung": "ssh_banner", "banner": "SSH-2.0-OpenSSH_9.6"},))


def test_ansible_reads_back_the_inventory_with_pinned_host_keys(tmp_path: Path, journal: Journal) -> None:
    for name, key in KEYS.items():
        journal.set_fact(name, "host_key_public", key)
    nodes = (ready("node1", "10.251.0.11", FINGERPRINT_NODE1), ready("node2", "10.251.0.12"))

    result = Inventory().form(context(tmp_path, journal, nodes))

    inventory, known_hosts, report = result.files
    # Ansible's own state kept in the test's folder, not the user's ~/.ansible.
    home = tmp_path / "ansible-home"
    env = {**os.environ, "ANSIBLE_HOME": str(home), "ANSIBLE_LOCAL_TEMP": str(home / "tmp")}
    listed = subprocess.run([str(ANSIBLE_INVENTORY), "-i", str(inventory), "--list"], capture_output=True, text=True,
                            timeout=60, check=True, env=env)
    data = json.loads(listed.stdout)
    assert sorted(data["palette_lab"]["hosts"]) == ["node1", "node2"]
    node1 = data["_meta"]["hostvars"]["node1"]
    assert node1["ansible_host"] == "10.251.0.11" and node1["ansible_user"] == "kairos"
    assert node1["palette_cluster_vip"] == rig.VIP
    assert node1["palette_cluster_leader"] == "node1", "the leader named, as the Local API hand-off would pick it"
    args = shlex.split(node1["ansible_ssh_common_args"])
    assert f"UserKnownHostsFile={known_hosts.resolve()}" in args
    assert "StrictHostKeyChecking=yes" in args
    assert "StrictHostKeyChecking=no" not in node1["ansible_ssh_common_args"]
    assert known_hosts.read_text().splitlines() == [
        f"10.251.0.11 {' '.join(KEYS['node1'].split()[:2])}", f"10.251.0.12 {' '.join(KEYS['node2'].split()[:2])}"]
    assert json.loads(report.read_text())["leader"] == "node1"
    nodes_report = {n["name"]: n for n in json.loads(report.read_text())["nodes"]}
    assert nodes_report["node1"]["host_key_fingerprint"] == FINGERPRINT_NODE1
    assert nodes_report["node2"]["host_key_fingerprint"].startswith("SHA256:")
    assert nodes_report["node2"]["platform_ids"] == {"vsphere_moref": "vm-node2"}
    assert nodes_report["node2"]["evidence"][0]["rung"] == "ssh_banner"


def test_a_host_key_that_contradicts_the_pinned_fingerprint_is_refused(tmp_path: Path, journal: Journal) -> None:
    journal.set_fact("node1", "host_key_public", KEYS["node2"])
    with pytest.raises(HandoffError, match="pinned"):
        Inventory().form(context(tmp_path, journal, (ready("node1", "10.251.0.11", FINGERPRINT_NODE1),)))


def test_a_node_without_a_recorded_key_stays_unpinned_not_unchecked(tmp_path: Path, journal: Journal) -> None:
    result = Inventory().form(context(tmp_path, journal, (ready("node1", "10.251.0.11"),)))
    inventory, known_hosts, _ = result.files
    assert result.details["unpinned"] == ["node1"]
    assert known_hosts.read_text() == ""
    assert "StrictHostKeyChecking=yes" in inventory.read_text()
