"""What every hand-off gets and gives back.

The pipeline calls a :class:`ClusterFormer` once every node is ready. Two ship with the library:
``PaletteLocalApi`` (link the nodes and create the cluster through each node's Local API) and ``Inventory``
(write an Ansible inventory and a JSON report for the user's own tooling).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from palette_provision.errors import HandoffError
from palette_provision.journal import GLOBAL, Journal

if TYPE_CHECKING:
    from palette_provision.plan import DeploymentPlan

__all__ = ["ClusterFormer", "HandoffContext", "HandoffResult", "ReadyNode", "StepRunner"]

#: What reading an answer of an unexpected shape raises (a list where an object was expected, a string where a
#: number was, JSON nested too deep): translated into a :class:`HandoffError` naming the step.
SHAPE_ERRORS = (AttributeError, TypeError, KeyError, IndexError, ValueError, RecursionError)

#: Runs one journaled sub-step: ``step(name, action, node="*", always=False)`` returns the step's recorded data.
#: ``action`` returns a JSON-able mapping (or ``None``); a done step is skipped unless ``always``.
StepRunner = Callable[..., dict[str, Any]]


@dataclass(frozen=True)
class ReadyNode:
    """A node that climbed the readiness ladder: where it is and what proves it."""

    name: str
    address: str
    ssh_user: str
    host_key_fingerprint: str | None = None
    machine_id: str | None = None
    platform_ids: Mapping[str, str] = field(default_factory=dict)
    evidence: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class HandoffContext:
    """Everything a hand-off needs: the plan, the journal (for resumable steps), the ready nodes (leader first)."""

    plan: DeploymentPlan
    journal: Journal
    nodes: tuple[ReadyNode, ...]
    output_dir: Path
    log: Any
    emit: Callable[[str, str, Mapping[str, Any]], None] = lambda _step, _msg, _data: None
    step: StepRunner | None = None
    #: Profile variables the deployment knows (the storage-pool disk the provider attached), applied when the
    #: archive declares them and the plan's ``cluster.profile_variables`` does not set them.
    profile_defaults: Mapping[str, str] = field(default_factory=dict)

    def run_step(
        self, name: str, action: Callable[[], Mapping[str, Any] | None], *, node: str = GLOBAL, always: bool = False
    ) -> dict[str, Any]:
        """Run a sub-step through the deployment's step machinery (events, dry run, journal), or, for a hand-off
        run on its own, straight on the journal: skipped when done (unless ``always``), failed when it raises."""
        def guarded() -> Mapping[str, Any] | None:
            try:
                return action()
            except SHAPE_ERRORS as exc:
                # A node's answer of another shape than published (a list for an object, text for a number, JSON
                # nested past the recursion limit): a hand-off error naming the step, never a traceback.
                raise HandoffError(name, f"a node answered in an unexpected shape ({type(exc).__name__})") from exc

        if self.step is not None:
            return self.step(name, guarded, node=node, always=always)
        rec = self.journal.step(name, node)
        if rec is not None and rec.status == "done" and not always:
            return rec.data
        self.journal.begin(name, node)
        try:
            data = dict(guarded() or {})
        except Exception as exc:
            self.journal.fail(name, node, str(exc))
            raise
        self.journal.finish(name, node, data)
        return data


@dataclass(frozen=True)
class HandoffResult:
    """The outcome: the cluster's state and endpoint with its kubeconfig, or the inventory files."""

    kind: str
    cluster_state: str | None = None
    cluster_health: str | None = None
    endpoint: str | None = None
    kubeconfig: Path | None = None
    files: tuple[Path, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "kind": self.kind,
            "cluster_state": self.cluster_state,
            "cluster_health": self.cluster_health,
            "endpoint": self.endpoint,
            "kubeconfig": str(self.kubeconfig) if self.kubeconfig else None,
            "files": [str(p) for p in self.files],
            "details": dict(self.details),
        }


@runtime_checkable
class ClusterFormer(Protocol):
    """A hand-off: given ready nodes, form the cluster (or hand the nodes over)."""

    def steps(self, plan: DeploymentPlan) -> list[tuple[str, str, str]]:
        """The journaled sub-steps :meth:`form` runs, as (step, node or ``*``, description), for the dry run."""
        ...

    def form(self, context: HandoffContext) -> HandoffResult:
        """Run the hand-off; resumable through ``context.journal``.

        Raises:
            HandoffError: naming the step that failed and the platform's explanation.
        """
        ...
