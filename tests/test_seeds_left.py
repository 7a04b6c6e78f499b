"""Seeds on shared storage: a failed node's seed is reported, and ``destroy --seeds-only`` removes it safely.

A seed holds the node's private SSH host key and the account's password hash. It is removed as soon as the node
has installed; a node that fails before leaves it on the platform's storage, which the report says, and which
``destroy --seeds-only`` removes without touching the nodes that are done. The next ``apply`` reinstalls that node
from a new seed, so no pin outlives the seed it came from.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from palette_provision.journal import Journal
from palette_provision.pipeline import Deployment
from palette_provision.plan import parse_plan
from palette_provision.testing.fake import read_state

from .conftest import NODE_PASSWORD, base_plan


def _apply(tmp: Path, data: dict[str, Any]) -> Any:
    with Deployment(parse_plan(data, base_dir=tmp), state_dir=tmp / "state") as deployment:
        return deployment.apply()


def _actions(tmp: Path, op: str, node: str) -> list[dict[str, Any]]:
    return [a for a in read_state(tmp / "platform.json")["actions"] if a["op"] == op and a["node"] == node]


def test_a_failed_nodes_seed_is_reported_removed_by_seeds_only_and_the_node_reinstalls(tmp_path: Path) -> None:
    data = base_plan(tmp_path)
    data["platform"]["fail"] = {"palette-2": "power_on"}
    report = _apply(tmp_path, data)
    assert not report.ok
    failed = next(n for n in report.nodes if n.name == "palette-2")
    assert failed.seed_left == "fake://media/palette-2-seed.iso"
    assert any("palette-2: its seed (private SSH host key" in line for line in report.failures())
    assert all(n.seed_left is None for n in report.nodes if n.name != "palette-2")
    first_key = failed.host_key_fingerprint
    seed_file = tmp_path / "state" / "seeds" / "palette-2.iso"
    assert seed_file.is_file()

    # The CLI: the report names the seed; destroy --seeds-only removes it (and nothing of the other nodes).
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(yaml.safe_dump(data))
    env = {"PP_TEST_NODE_PASSWORD": NODE_PASSWORD, "PATH": "/usr/bin:/bin"}
    state_dir = ["--state-dir", str(tmp_path / "state")]
    cli = [sys.executable, "-m", "palette_provision"]
    status = subprocess.run(
        [*cli, "status", *state_dir, str(plan_file)], capture_output=True, text=True, env=env, check=True
    )
    assert "fake://media/palette-2-seed.iso" in status.stdout
    out = subprocess.run(
        [*cli, "destroy", "--seeds-only", "--json", *state_dir, str(plan_file)], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr
    entries = json.loads(out.stdout)["resources"]
    assert entries == [
        {"kind": "seed", "id": "fake://media/palette-2-seed.iso", "node": "palette-2", "result": "deleted"}
    ]
    state = read_state(tmp_path / "platform.json")
    assert "fake://media/palette-2-seed.iso" not in state["media"]
    assert _actions(tmp_path, "eject_media", "palette-2"), "the seed was ejected from its machine first"
    assert state["machines"]["palette-2"]["power"] == "off"
    assert state["machines"]["palette-1"]["power"] == "on", "done nodes are left alone"
    assert not seed_file.exists()
    with Journal.open_readonly(tmp_path / "state" / "journal.sqlite", deployment="test-deploy") as journal:
        assert journal.facts("palette-2") == {}, "no pin outlives the seed it came from"
        assert not [s for s in journal.steps() if s.node == "palette-2"]
        assert {s.node for s in journal.steps() if s.status == "done"} >= {"palette-1", "palette-3"}
        machines = [r for r in journal.resources(live_only=True) if r.kind == "machine" and r.node == "palette-2"]
        assert machines, "the machine itself stays: the next apply reinstalls on it"

    # The next apply reinstalls palette-2 on the same machine with a new seed and host key.
    del data["platform"]["fail"]
    palette_1_before = [a["op"] for a in read_state(tmp_path / "platform.json")["actions"] if a["node"] == "palette-1"]
    report = _apply(tmp_path, data)
    assert report.ok, report.failures()
    again = next(n for n in report.nodes if n.name == "palette-2")
    assert again.host_key_fingerprint not in (None, first_key)
    assert len(_actions(tmp_path, "create_machine", "palette-2")) == 1
    assert len(_actions(tmp_path, "create_machine", "palette-1")) == 1
    palette_1_after = [a["op"] for a in read_state(tmp_path / "platform.json")["actions"] if a["node"] == "palette-1"]
    assert palette_1_after == palette_1_before, "done nodes were not touched again"


def test_seeds_only_with_nothing_left_changes_nothing(tmp_path: Path) -> None:
    data = base_plan(tmp_path, count=1)
    assert _apply(tmp_path, data).ok
    before = read_state(tmp_path / "platform.json")["actions"]
    with Deployment(parse_plan(data, base_dir=tmp_path), state_dir=tmp_path / "state") as deployment:
        assert deployment.destroy(seeds_only=True) == []
    assert read_state(tmp_path / "platform.json")["actions"] == before
