"""Hand-off: what happens once every node is ready.

:func:`former_for` picks the :class:`ClusterFormer` the plan asks for (``handoff.kind``):

* ``palette-local-api``: :class:`PaletteLocalApi` links the nodes and creates the Palette cluster through each
  node's Local API, and saves the kubeconfig;
* ``inventory``: :class:`Inventory` writes an Ansible inventory, a pinned ``known_hosts`` and a JSON report;
* ``none``: nothing; the result only says so.

Example::

    result = former_for(plan).form(HandoffContext(plan=plan, journal=journal, nodes=ready, output_dir=out, log=log))
"""

from __future__ import annotations

from palette_provision.handoff.base import ClusterFormer, HandoffContext, HandoffResult, ReadyNode
from palette_provision.handoff.inventory import Inventory
from palette_provision.handoff.local_api import LocalApiClient, LocalApiError, LocalApiUnavailable, PaletteLocalApi
from palette_provision.plan import DeploymentPlan

__all__ = [
    "ClusterFormer",
    "HandoffContext",
    "HandoffResult",
    "Inventory",
    "LocalApiClient",
    "LocalApiError",
    "LocalApiUnavailable",
    "NoHandoff",
    "PaletteLocalApi",
    "ReadyNode",
    "former_for",
]


class NoHandoff:
    """The ``none`` hand-off: the nodes are ready and left as they are."""

    kind = "none"

    def form(self, context: HandoffContext) -> HandoffResult:
        """Return a result that names the ready nodes and does nothing else."""
        return HandoffResult(kind=self.kind, details={"nodes": [n.name for n in context.nodes]})


def former_for(plan: DeploymentPlan) -> ClusterFormer:
    """The hand-off ``plan.handoff.kind`` names.

    >>> from types import SimpleNamespace
    >>> type(former_for(SimpleNamespace(handoff=SimpleNamespace(kind="inventory")))).__name__
    'Inventory'
    """
    kind = plan.handoff.kind
    if kind == "palette-local-api":
        return PaletteLocalApi()
    if kind == "inventory":
        return Inventory()
    return NoHandoff()
