"""Read-only views of a deployment: the dry run (what ``apply`` would do) and ``status`` (what the journal says).

Both read the plan and the journal only, through :meth:`Deployment._reader`: no platform I/O, no lock, no write,
no state folder created; they work while another process applies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from palette_provision.journal import GLOBAL
from palette_provision.phases import DEPLOYMENT_PHASES, stages_iso
from palette_provision.report import PlannedAction

if TYPE_CHECKING:
    from palette_provision.pipeline import Deployment

__all__ = ["journal_status", "planned_actions"]


def planned_actions(deployment: Deployment) -> list[PlannedAction]:
    """Every step ``apply`` would run, in order, with the journal's state of each (``pending`` when never run)."""
    deployment.check()
    plan = deployment.plan
    planned: list[PlannedAction] = []
    with deployment._reader() as journal:

        def add(phase: str, node: str, action: str) -> None:
            rec = journal.step(phase, node)
            state: Any = "pending" if rec is None else rec.status
            planned.append(PlannedAction(phase, node, action, state))

        add("preflight", GLOBAL, DEPLOYMENT_PHASES["preflight"].description)
        if stages_iso(deployment.install_method):
            add("stage_media", GLOBAL, DEPLOYMENT_PHASES["stage_media"].description)
        for spec in plan.node_specs():
            for entry in deployment.chain():
                add(entry.name, spec.name, entry.description or f"your step {entry.name}")
        if plan.handoff.kind != "none":
            add("handoff", GLOBAL, f"{DEPLOYMENT_PHASES['handoff'].description} ({plan.handoff.kind})")
            for step, where, description in deployment._former_or_default().steps(plan):
                add(step, where, description)
    return planned


def journal_status(deployment: Deployment) -> dict[str, Any]:
    """Each step's state, the resources (live or destroyed) and each node's facts, as the journal has them."""
    with deployment._reader() as journal:
        return {
            "deployment": deployment.plan.name,
            "journal": deployment.journal_location,
            "steps": [
                {"phase": s.phase, "node": s.node, "status": s.status, "attempts": s.attempts, "error": s.error}
                for s in journal.steps()
            ],
            "resources": [
                {"kind": r.kind, "id": r.external_id, "node": r.node, "destroyed": r.destroyed_at is not None}
                for r in journal.resources()
            ],
            "nodes": {spec.name: journal.facts(spec.name) for spec in deployment.plan.node_specs()},
        }
