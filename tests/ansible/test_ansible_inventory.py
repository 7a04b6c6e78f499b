"""The palette_provision.appliance.journal inventory plugin, read back by ansible-inventory: hosts, groups, pinned
host keys, from the hand-off's nodes.json and from the journal (also while another run holds it)."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from palette_provision.journal import Journal
from palette_provision.pipeline import Deployment
from palette_provision.plan import load_plan

from ..conftest import merged
from .conftest import ansible_env, run, unwrap

PLUGIN = "palette_provision.appliance.journal"
NODES = ["palette-1", "palette-2", "palette-3"]


def _deploy(plan: Path, until: str | None = None) -> None:
    with Deployment(load_plan(plan)) as deployment:
        assert deployment.apply(until=until).ok


def _inventory(tmp_path: Path, config: dict[str, Any], name: str = "nodes.palette_provision.yml",
               **env: str) -> dict[str, Any]:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    # Without the node password: an inventory source needs no credential but the journal's own.
    environment = {k: v for k, v in ansible_env(tmp_path, **env).items() if k != "PP_TEST_NODE_PASSWORD"}
    proc = run(["ansible-inventory", "-i", str(path), "--list"], environment, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "[WARNING]" not in proc.stderr, proc.stderr
    data: dict[str, Any] = unwrap(json.loads(proc.stdout))
    return data


def _members(data: dict[str, Any], group: str) -> list[str]:
    return sorted(data.get(group, {}).get("hosts", []))


def _fingerprint(line: str) -> str:
    blob = base64.b64decode(line.split()[2])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _check_pinned(hostvars: dict[str, Any], known_hosts: Path) -> None:
    lines = {line.split()[0]: line for line in known_hosts.read_text().splitlines() if line.strip()}
    for name in NODES:
        host = hostvars[name]
        assert host["ansible_user"] == "kairos"
        args = host["ansible_ssh_common_args"]
        assert f"UserKnownHostsFile={known_hosts}" in args and "-o StrictHostKeyChecking=yes" in args
        assert "GlobalKnownHostsFile=/dev/null" in args
        line = lines[host["ansible_host"]]
        assert _fingerprint(line) == host["palette_host_key_fingerprint"]
        assert host["palette_known_hosts"] == str(known_hosts) and host["palette_known_hosts_line"] == line


def test_nodes_from_the_handoff_output(
    plan_dict: dict[str, Any], write_plan: Callable[..., Path], tmp_path: Path
) -> None:
    _deploy(write_plan(plan_dict))
    data = _inventory(tmp_path, {"plugin": PLUGIN, "output_dir": ["ou*"]})  # relative to the file; a pattern
    hostvars = data["_meta"]["hostvars"]
    assert sorted(hostvars) == NODES
    assert [hostvars[n]["ansible_host"] for n in NODES] == ["10.251.0.11", "10.251.0.12", "10.251.0.13"]
    assert _members(data, "palette_nodes") == NODES
    assert _members(data, "palette_leader") == ["palette-1"]
    assert _members(data, "palette_followers") == ["palette-2", "palette-3"]
    assert _members(data, "palette_fake") == NODES
    assert _members(data, "test_deploy") == NODES  # the deployment's group (test-deploy, made a valid name)
    host = hostvars["palette-1"]
    assert (host["palette_deployment"], host["palette_provider"], host["palette_source"]) == (
        "test-deploy", "fake", "handoff")
    assert host["palette_leader"] is True and hostvars["palette-2"]["palette_leader"] is False
    assert host["palette_cluster_name"] == "palette" and host["palette_cluster_vip"] == "10.251.0.100"
    assert host["palette_machine_id"] and host["palette_ready"] is True
    _check_pinned(hostvars, tmp_path / "out" / "known_hosts")
    # nodes.json names its leader: the plugin takes the name, not the order.
    nodes_json = tmp_path / "out" / "nodes.json"
    assert json.loads(nodes_json.read_text())["leader"] == "palette-1"
    nodes_json.write_text(json.dumps({**json.loads(nodes_json.read_text()), "leader": "palette-2"}))
    data = _inventory(tmp_path, {"plugin": PLUGIN, "output_dir": ["out"]})
    assert _members(data, "palette_leader") == ["palette-2"]
    assert _members(data, "palette_followers") == ["palette-1", "palette-3"]


def test_nodes_from_the_journal_also_while_it_is_held(
    plan_dict: dict[str, Any], write_plan: Callable[..., Path], tmp_path: Path
) -> None:
    plan = write_plan(merged(plan_dict, handoff__kind="none"))  # no nodes.json: the journal is all there is
    _deploy(plan)
    config = {"plugin": PLUGIN, "plan_file": [plan.name], "group_prefix": "pp_",
              "keyed_groups": [{"key": "palette_cluster_name", "prefix": "cluster"}]}
    state = tmp_path / ".palette-provision" / "test-deploy"
    with Journal.open(state / "journal.sqlite", deployment="test-deploy"):  # as a running apply holds it
        data = _inventory(tmp_path, config)
    hostvars = data["_meta"]["hostvars"]
    assert sorted(hostvars) == NODES
    assert _members(data, "pp_nodes") == NODES and _members(data, "pp_leader") == ["palette-1"]
    assert _members(data, "pp_fake") == NODES and _members(data, "cluster_palette") == NODES
    assert hostvars["palette-2"]["palette_source"] == "journal"
    with Journal.open_readonly(state / "journal.sqlite", deployment="test-deploy") as journal:
        assert hostvars["palette-3"]["palette_host_key_fingerprint"] == journal.fact("palette-3", "host_key_fingerprint")
    _check_pinned(hostvars, state / "known_hosts")


def test_unready_nodes_only_when_asked(
    plan_dict: dict[str, Any], write_plan: Callable[..., Path], tmp_path: Path
) -> None:
    plan = write_plan(plan_dict)
    _deploy(plan, until="acquire")
    assert _inventory(tmp_path, {"plugin": PLUGIN, "plan_file": [str(plan)]})["_meta"]["hostvars"] == {}
    data = _inventory(tmp_path, {"plugin": PLUGIN, "plan_file": [str(plan)], "include_unready": True})
    hostvars = data["_meta"]["hostvars"]
    assert sorted(hostvars) == NODES and {h["palette_ready"] for h in hostvars.values()} == {False}
    assert hostvars["palette-1"]["ansible_host"] == "10.251.0.11"  # the plan's static address


def test_not_deployed_yet_is_empty_and_clashing_node_names_are_refused(
    plan_dict: dict[str, Any], write_plan: Callable[..., Path], tmp_path: Path
) -> None:
    assert _inventory(tmp_path, {"plugin": PLUGIN, "output_dir": ["*/out", "sites/*"]})["_meta"]["hostvars"] == {}
    _deploy(write_plan(plan_dict))
    other = tmp_path / "other-site"
    shutil.copytree(tmp_path / "out", other)
    report = json.loads((other / "nodes.json").read_text())
    (other / "nodes.json").write_text(json.dumps({**report, "deployment": "other-site"}))
    config = tmp_path / "clash.palette_provision.yml"
    config.write_text(yaml.safe_dump({"plugin": PLUGIN, "output_dir": ["out", "other-site"]}))
    proc = run(["ansible-inventory", "-i", str(config), "--list"],
               ansible_env(tmp_path, ANSIBLE_INVENTORY_UNPARSED_FAILED="1"), tmp_path)
    assert proc.returncode != 0
    assert "node palette-1 is in deployments test-deploy and other-site" in proc.stderr


def test_configuration_files_by_name_only(tmp_path: Path) -> None:
    config = tmp_path / "nodes.yml"  # not *palette_provision.yml: the plugin does not claim it
    config.write_text(yaml.safe_dump({"plugin": PLUGIN, "output_dir": ["out"]}))
    proc = run(["ansible-inventory", "-i", str(config), "--list"],
               ansible_env(tmp_path, ANSIBLE_INVENTORY_UNPARSED_FAILED="1"), tmp_path)
    assert proc.returncode != 0 and "palette_provision.yml" not in proc.stdout
