"""Your own per-node phases, run by the pipeline like its own: journaled, resumable, reported.

A :class:`NodeStep` runs for every node right after the built-in phase it names in ``after``, which may be any
phase of the node's install method (:data:`palette_provision.phases.CHAINS`); before ``acquire`` the context's
``machine`` is ``None``. Its function gets a
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

__all__ = ["NodeStep", "NodeStepContext", "check_node_steps"]

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class NodeStepContext:
    """What a :class:`NodeStep` gets: the plan, the node, its machine (``None`` before ``acquire``), the journal's
    facts about it, a logger."""

    plan: DeploymentPlan
    node: NodeSpec
    machine: Machine | None
    facts: Mapping[str, Any]
    log: Any


@dataclass(frozen=True)
class NodeStep:
    """A per-node phase of your own, run right after the built-in phase ``after`` (see the module docstring)."""

    name: str
    after: str
    run: Callable[[NodeStepContext], Mapping[str, Any] | None]
    description: str = ""


def check_node_steps(steps: Sequence[NodeStep], chain: Sequence[str] | None = None) -> None:
    """Check names and anchors (against ``chain``, the chosen install method's phases, when given).

    Raises:
        PlanError: a name that is not snake_case, clashes with a built-in phase or another step, or an ``after``
            that is not a per-node phase (of ``chain``).
    """
    from palette_provision.phases import ALL_NODE_PHASES, DEPLOYMENT_PHASES

    anchors = tuple(chain) if chain is not None else ALL_NODE_PHASES
    issues = []
    seen: set[str] = set()
    for i, step in enumerate(steps):
        if not _NAME.match(step.name):
            issues.append(PlanIssue(f"node_steps[{i}].name", "must be snake_case (a-z, 0-9, _), at most 63 characters"))
        elif step.name in ALL_NODE_PHASES or step.name in DEPLOYMENT_PHASES:
            issues.append(PlanIssue(f"node_steps[{i}].name", f"{step.name} is a built-in phase"))
        elif step.name in seen:
            issues.append(PlanIssue(f"node_steps[{i}].name", f"{step.name} is used twice"))
        seen.add(step.name)
        if step.after not in anchors:
            issues.append(PlanIssue(f"node_steps[{i}].after", f"not a per-node phase of this install method: "
                                    f"{step.after} (phases: {', '.join(anchors)})"))
    if issues:
        raise PlanError(issues, source="node_steps")
