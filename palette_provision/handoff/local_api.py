"""Form the Palette cluster through each node's Local API (``https://<node>:5080``).

:class:`PaletteLocalApi` runs the documented appliance steps 4-6 (``palette-appliance.md``) as journaled steps:

=========================  ==================================================================================
``handoff.configured``     every node's host info says ``configurationStatus: configured`` (per node)
``handoff.link``           the leader's link token submitted on each follower, every follower ``Completed``
``handoff.content``        the content bundle streamed to the leader, its SHA-256 and size verified
``handoff.content_sync``   every peer reports the content synced
``handoff.cluster``        variables merged and validated, the cluster created (or adopted), ``Running`` and
                           ``Healthy``, the kubeconfig saved with mode 0600
=========================  ==================================================================================

Each step observes before it acts, so a re-run after a crash continues: a follower already linking is not sent a
token again, an identical upload is not repeated, a cluster that exists is adopted instead of created. Nothing
secret reaches the journal: tokens live only in memory.

The HTTP side is :class:`LocalApiClient` (one per node; see its docstring for the TLS pin and the token handling).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from palette_provision.errors import HandoffError
from palette_provision.handoff._client import (
    CERT_FACT,
    LocalApiClient,
    LocalApiError,
    LocalApiUnavailable,
    token_expiry,
)
from palette_provision.handoff._cluster import CLUSTER_STEP, decode_kubeconfig, form_cluster
from palette_provision.handoff._content import CONTENT_STEP, SYNC_STEP, upload_content, wait_content_synced
from palette_provision.handoff._link import CONFIGURED_STEP, LINK_STEP, link_followers, wait_configured
from palette_provision.handoff._packs import pack_steps, upload_packs
from palette_provision.handoff._session import CheckFailed, Session
from palette_provision.handoff._validate import (
    console_client,
    ensure_console_password,
    validate_palette,
    validation_steps,
)
from palette_provision.handoff.base import SHAPE_ERRORS, HandoffContext, HandoffResult, ReadyNode
from palette_provision.plan import DeploymentPlan
from palette_provision.waiting import Backoff

__all__ = [
    "CERT_FACT",
    "CLUSTER_STEP",
    "CONFIGURED_STEP",
    "CONTENT_STEP",
    "LINK_STEP",
    "SYNC_STEP",
    "LocalApiClient",
    "LocalApiError",
    "LocalApiUnavailable",
    "PaletteLocalApi",
    "decode_kubeconfig",
    "default_client",
    "token_expiry",
]

#: Which post-install steps a hand-off runs (see :class:`PaletteLocalApi`).
Scope = Literal["all", "validate", "packs"]
SCOPES: tuple[Scope, ...] = ("all", "validate", "packs")

#: Polling cadence of every Local API wait: starts at 1 s, caps at 10 s (cluster creation takes 20-30 minutes).
DEFAULT_BACKOFF = Backoff(initial=1.0, maximum=10.0, jitter=0.5)


def _no_checkpoint(_name: str) -> None:
    return None


class PaletteLocalApi:
    """The ``palette-local-api`` hand-off: link the ready nodes and create the Palette cluster on the leader.

    The leader is ``plan.handoff.leader`` or, without it, the first node. Timeouts come from ``plan.timeouts``
    (``configured``, ``link``, ``content_sync``, ``cluster``).

    Args:
        backoff: polling cadence of the waits (tests shorten it).
        checkpoint: called with a name at each step boundary (``handoff.link:begin``,
            ``handoff.link:<node>:submitted``, ``handoff.content:uploaded``, ``handoff.cluster:created``...); a test
            hook to crash the hand-off at a precise point.
        client_factory: builds the :class:`LocalApiClient` of a node (tests may wrap it).
        scope: after the (resumed) formation, which post-install steps run: ``all`` (``apply``), ``validate`` (only
            the ``validate.*`` checks: ``validate-install``) or ``packs`` (only the ``packs.*`` steps:
            ``push-packs``). The formation's steps, done, are skipped either way; the cluster is read again.

    Example::

        context = HandoffContext(plan=plan, journal=journal, nodes=ready_nodes, output_dir=Path("out"), log=log)
        result = PaletteLocalApi().form(context)
        print(result.cluster_state, result.endpoint, result.kubeconfig)

    Raises:
        HandoffError: ``.step`` names the step (``handoff.link``...), the message the node's explanation, and
        ``.events`` the cluster's events when it went to ``Error``. The cause (``__cause__``) keeps the original
        error: :class:`~palette_provision.errors.TLSVerificationError` for a changed certificate,
        :class:`~palette_provision.errors.AuthenticationError` for a refused login, a wait timeout...
    """

    kind = "palette-local-api"

    def __init__(
        self,
        *,
        backoff: Backoff = DEFAULT_BACKOFF,
        checkpoint: Callable[[str], None] = _no_checkpoint,
        client_factory: Callable[[HandoffContext, ReadyNode], LocalApiClient] | None = None,
        vip_services: Callable[[HandoffContext], tuple[str, str | None]] | None = None,
        scope: Scope = "all",
    ) -> None:
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
        self.scope: Scope = scope
        self._backoff = backoff
        self._checkpoint = checkpoint
        self._client_factory = client_factory or default_client
        self._vip_services = vip_services or default_vip_services

    def steps(self, plan: DeploymentPlan) -> list[tuple[str, str, str]]:
        """The journaled sub-steps, for the dry run."""
        names = plan.node_names()
        leader = plan.handoff.leader or names[0]
        steps = [(CONFIGURED_STEP, name, "wait until the node's Local API reports it configured") for name in names]
        followers = [n for n in names if n != leader]
        steps.append((LINK_STEP, "*", f"link {len(followers)} follower(s) to the leader {leader}"))
        steps += [(LINK_STEP, name, f"wait until {name} is linked to {leader}") for name in followers]
        if plan.content is not None:
            steps.append((CONTENT_STEP, "*", f"upload the content bundle {plan.content.path} to the leader"))
            steps.append((SYNC_STEP, "*", "wait until the content is synced to every node"))
        steps.append((CLUSTER_STEP, "*", f"create the cluster {plan.cluster.name}, wait for Running and Healthy, "
                      "save its kubeconfig"))
        return steps + validation_steps(plan) + pack_steps(plan)

    def scoped(self, scope: Scope) -> PaletteLocalApi:
        """The same hand-off limited to ``scope`` (``validate-install``: ``validate``; ``push-packs``: ``packs``)."""
        return PaletteLocalApi(backoff=self._backoff, checkpoint=self._checkpoint, client_factory=self._client_factory,
                               vip_services=self._vip_services, scope=scope)  # fmt: skip

    def form(self, context: HandoffContext) -> HandoffResult:
        """Run (or resume) the formation and return the cluster's state, endpoint and kubeconfig path."""
        if not context.nodes:
            raise HandoffError(CONFIGURED_STEP, "no ready node to form a cluster with")
        wanted = context.plan.handoff.leader
        leader = next((n for n in context.nodes if n.name == wanted), None) if wanted else context.nodes[0]
        if leader is None:
            raise HandoffError(CONFIGURED_STEP, f"the leader {wanted!r} is not among the ready nodes")
        clients = {node.name: self._client_factory(context, node) for node in context.nodes}
        session = Session(context, clients, leader, self._backoff, self._checkpoint)
        try:
            wait_configured(session)
            link_followers(session)
            upload_content(session)
            wait_content_synced(session)
            details, kubeconfig = form_cluster(session)
            console_url, kube_server = self._vip_services(context)
            evidence: list[dict[str, Any]] = []
            if self.scope in ("all", "validate"):
                evidence = validate_palette(session, kubeconfig, console_url=console_url, kube_server=kube_server,
                                            details=details)  # fmt: skip
            if self.scope in ("all", "packs") and context.plan.packs is not None:
                console = console_client(session, console_url)
                try:
                    if self.scope == "packs":
                        evidence += ensure_console_password(session, console)
                    evidence += upload_packs(session, console)
                except CheckFailed as exc:
                    raise CheckFailed(exc, evidence + exc.evidence) from (exc.__cause__ or exc)
                finally:
                    console.close()
        finally:
            for client in clients.values():
                client.close()
        try:
            return self._result(context, details, kubeconfig, leader, session, validation=evidence)
        except SHAPE_ERRORS as exc:
            raise HandoffError(CLUSTER_STEP, f"the cluster's details have an unexpected shape ({type(exc).__name__})"
                               ) from exc

    def _result(
        self, context: HandoffContext, details: dict[str, Any], kubeconfig: Any, leader: ReadyNode, session: Session,
        *, validation: list[dict[str, Any]] | None = None,
    ) -> HandoffResult:
        status: dict[str, Any] = details.get("status") or {}
        vip = str(context.plan.cluster.vip)
        return HandoffResult(
            kind=self.kind,
            cluster_state=str(status.get("clusterState") or ""),
            cluster_health=str((status.get("health") or {}).get("status") or ""),
            endpoint=f"https://{vip}:6443",
            kubeconfig=kubeconfig,
            files=(kubeconfig,),
            details={
                "cluster": context.plan.cluster.name,
                "leader": leader.name,
                "console": f"https://{vip}/system",
                "k8s_version": status.get("k8sVersion"),
                "hosts": {name: f.host_id for name, f in session.facts.items()},
                **({"validation": validation} if validation else {}),
            },
        )


def default_vip_services(context: HandoffContext) -> tuple[str, str | None]:
    """The system console at ``https://<vip>``, and the kubeconfig's own Kubernetes server (``None``)."""
    return f"https://{context.plan.cluster.vip}", None


def default_client(
    context: HandoffContext, node: ReadyNode, *, address: str | None = None, port: int | None = None
) -> LocalApiClient:
    """The :class:`LocalApiClient` of ``node`` built from the plan (node account, port, TLS mode).

    ``address`` and ``port`` override ``node.address`` and ``plan.handoff.local_api_port`` (simulators on one host).
    """
    plan = context.plan
    account = plan.cluster.node_account
    return LocalApiClient(
        node.name,
        address or node.address,
        username=account.username,
        password=account.password,
        journal=context.journal,
        port=port or plan.handoff.local_api_port,
        tls=plan.handoff.tls,
        log=context.log,
    )
