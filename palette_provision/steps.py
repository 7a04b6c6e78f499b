"""Your own per-node phases, run by the pipeline like its own: journaled, resumable, reported.

A :class:`NodeStep` runs for every node right after the built-in phase it names in ``after``. Its function gets a
:class:`NodeStepContext` and returns a JSON-able mapping (recorded in the journal, never secrets) or ``None``. Once
a step has finished for a node, a re-run skips it; a step interrupted by a crash runs again, so make it idempotent
(observe, then act), like the built-in phases. Raising fails that node in that step, with the message in the
report; the other nodes carry on.

Example: register every node in a CMDB once it is ready::

    def register(ctx: NodeStepContext) -> dict[str, str]:
        cmdb.upsert(ctx.node.name, address=ctx.facts["address"], vm=ctx.machine.id)
        return {"cmdb": "registered"}

    steps = [NodeStep("register_cmdb", after="await_ready", run=register)]
    with Deployment(plan, node_steps=steps) as deployment:
        report = deployment.apply()
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from palette_provision.errors import PlanError, PlanIssue
from palette_provision.plan import DeploymentPlan, NodeSpec
from palette_provision.provider import Machine

__all__ = ["NODE_PHASES", "NodeStep", "NodeStepContext", "check_node_steps"]

#: The built-in per-node phases, in order.
NODE_PHASES = (
    "stage_seed",
    "provision",
    "attach_media",
    "power_on",
    "await_install",
    "boot_from_disk",
    "await_ready",
)

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class NodeStepContext:
    """What a :class:`NodeStep` gets: the plan, the node, its machine, the journal's facts about it, a logger."""

    plan: DeploymentPlan
    node: NodeSpec
    machine: Machine
    facts: Mapping[str, Any]
    log: Any


@dataclass(frozen=True)
class NodeStep:
    """A per-node phase of your own, run right after the built-in phase ``after`` (see the module docstring)."""

    name: str
    after: str
    run: Callable[[NodeStepContext], Mapping[str, Any] | None]
    description: str = ""


def check_node_steps(steps: Sequence[NodeStep]) -> None:
    """Check names and anchors.

    Raises:
        PlanError: a name that is not snake_case, clashes with a built-in phase or another step, or an ``after``
            that is not a built-in per-node phase.
    """
    issues = []
    seen: set[str] = set()
    for i, step in enumerate(steps):
        if not _NAME.match(step.name):
            issues.append(PlanIssue(f"node_steps.{i}.name", "must be snake_case (a-z, 0-9, _), at most 63 characters"))
        elif step.name in NODE_PHASES or step.name in ("preflight", "stage_media", "handoff"):
            issues.append(PlanIssue(f"node_steps.{i}.name", f"{step.name!r} is a built-in phase"))
        elif step.name in seen:
            issues.append(PlanIssue(f"node_steps.{i}.name", f"{step.name!r} is used twice"))
        seen.add(step.name)
        if step.after not in NODE_PHASES:
            issues.append(
                PlanIssue(f"node_steps.{i}.after", f"not a per-node phase: {step.after!r} ({', '.join(NODE_PHASES)})")
            )
    if issues:
        raise PlanError(issues, source="node_steps")
