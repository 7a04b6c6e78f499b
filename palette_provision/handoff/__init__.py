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

from typing import TYPE_CHECKING, Any

from palette_provision.handoff.base import ClusterFormer, HandoffContext, HandoffResult, ReadyNode

if TYPE_CHECKING:
    from palette_provision.handoff.inventory import Inventory
    from palette_provision.handoff.local_api import (
        LocalApiClient,
        LocalApiError,
        LocalApiUnavailable,
        PaletteLocalApi,
    )
    from palette_provision.plan import DeploymentPlan

# The Local API client pulls in httpx: imported on first use, so a run that never hands off over HTTP (and every
# re-run that finds the hand-off done) does not pay for it.
_LAZY = {
    "Inventory": "palette_provision.handoff.inventory",
    "LocalApiClient": "palette_provision.handoff.local_api",
    "LocalApiError": "palette_provision.handoff.local_api",
    "LocalApiUnavailable": "palette_provision.handoff.local_api",
    "PaletteLocalApi": "palette_provision.handoff.local_api",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module(module), name)

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

    def steps(self, plan: DeploymentPlan) -> list[tuple[str, str, str]]:
        """No sub-steps."""
        return []

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
        from palette_provision.handoff.local_api import PaletteLocalApi

        return PaletteLocalApi()
    if kind == "inventory":
        from palette_provision.handoff.inventory import Inventory

        return Inventory()
    return NoHandoff()
