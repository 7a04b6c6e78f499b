"""Your own per-node phases: run after their anchor, journaled, skipped on re-run, failures reported by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from palette_provision.errors import PlanError
from palette_provision.pipeline import Deployment
from palette_provision.plan import parse_plan
from palette_provision.report import Event
from palette_provision.steps import NodeStep, NodeStepContext
from palette_provision.testing.fake import read_state

from .conftest import base_plan


def _deploy(tmp: Path, steps: list[NodeStep], **apply: Any) -> tuple[Any, list[Event]]:
    events: list[Event] = []
    plan = parse_plan(base_plan(tmp), base_dir=tmp)
    with Deployment(plan, state_dir=tmp / "state", on_event=events.append, node_steps=steps) as d:
        return d.apply(**apply), events


def test_a_step_runs_once_per_node_after_its_anchor_with_context(tmp_path: Path) -> None:
    calls: list[tuple[str, str, str]] = []

    def register(ctx: NodeStepContext) -> dict[str, str]:
        calls.append((ctx.node.name, ctx.facts["address"], ctx.machine.id))
        return {"cmdb": "registered"}

    steps = [NodeStep("register_cmdb", after="await_ready", run=register)]
    report, events = _deploy(tmp_path, steps)
    assert report.ok
    assert sorted(c[:2] for c in calls) == [("palette-1", "10.251.0.11"), ("palette-2", "10.251.0.12"),
                                            ("palette-3", "10.251.0.13")]
    order = [e.phase for e in events if e.node == "palette-1" and e.status == "done"]
    assert order[-2:] == ["await_ready", "register_cmdb"]
    again, _ = _deploy(tmp_path, steps)
    assert again.ok and len(calls) == 3, "a finished step ran again on re-run"


def test_a_failing_step_fails_only_its_node_and_names_the_step(tmp_path: Path) -> None:
    def picky(ctx: NodeStepContext) -> None:
        if ctx.node.name == "palette-2":
            raise RuntimeError("CMDB said no")

    report, _ = _deploy(tmp_path, [NodeStep("register_cmdb", after="power_on", run=picky)])
    by_name = {n.name: n for n in report.nodes}
    assert (by_name["palette-2"].status, by_name["palette-2"].phase) == ("failed", "register_cmdb")
    assert "CMDB said no" in (by_name["palette-2"].error or "")
    assert by_name["palette-1"].status == by_name["palette-3"].status == "ready"
    # The failed node never went on to install: the step sits between power_on and await_install.
    assert read_state(tmp_path / "platform.json")["machines"]["palette-2"]["installs"] in (0, 1)


def test_steps_appear_in_the_dry_run_and_until_accepts_them(tmp_path: Path) -> None:
    steps = [NodeStep("tag_vm", after="acquire", run=lambda ctx: None, description="tag the VM for billing")]
    plan = parse_plan(base_plan(tmp_path), base_dir=tmp_path)
    with Deployment(plan, state_dir=tmp_path / "state", node_steps=steps) as d:
        phases = [(a.phase, a.action) for a in d.actions() if a.node == "palette-1"]
    assert phases[1:3] == [("acquire", phases[1][1]), ("tag_vm", "tag the VM for billing")]
    report, _ = _deploy(tmp_path, steps, until="tag_vm")
    assert [n.phase for n in report.nodes] == ["tag_vm"] * 3
    assert all(m["power"] == "off" for m in read_state(tmp_path / "platform.json")["machines"].values())


def test_until_the_first_phase_stops_before_provisioning(tmp_path: Path) -> None:
    report, _ = _deploy(tmp_path, [], until="stage_seed")
    assert [n.phase for n in report.nodes] == ["stage_seed"] * 3
    assert read_state(tmp_path / "platform.json")["machines"] == {}


@pytest.mark.parametrize(("step", "path"), [
    (NodeStep("Bad Name", after="acquire", run=lambda c: None), "node_steps[0].name"),
    (NodeStep("power_on", after="acquire", run=lambda c: None), "node_steps[0].name"),
    (NodeStep("fine", after="handoff", run=lambda c: None), "node_steps[0].after"),
])
def test_bad_steps_are_refused_before_anything_runs(tmp_path: Path, step: NodeStep, path: str) -> None:
    plan = parse_plan(base_plan(tmp_path), base_dir=tmp_path)
    with pytest.raises(PlanError) as info:
        Deployment(plan, node_steps=[step])
    assert info.value.issues[0].path == path
