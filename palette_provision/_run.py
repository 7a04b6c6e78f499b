"""One node's pass through its chain: what earlier phases produced, and the deployment's services it uses.

A phase's action is a function of a :class:`NodeRun`; it observes the platform first, then acts, and returns an
:class:`Outcome` for the step machinery to journal. What a phase produces for the later ones (the staged seed, the
machine) it sets on the run; a phase skipped because it is done puts it back from its journal data (its ``load``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from palette_provision.errors import (
    ConfigurationError,
    PaletteProvisionError,
    ProviderError,
    ReadinessError,
    WaitFailed,
    WaitTimeout,
)
from palette_provision.journal import Journal
from palette_provision.plan import DeploymentPlan, NodeSpec
from palette_provision.provider import (
    Lifecycle,
    Machine,
    MediaFile,
    Provider,
    SeedFormat,
    StagedMedia,
    capability_name,
)
from palette_provision.report import NodeResult

if TYPE_CHECKING:
    from palette_provision.pipeline import Deployment

__all__ = ["NodeRun", "Outcome", "Resource", "error_text", "last_state"]

C = TypeVar("C")

#: A resource a step created: (kind, provider, external id, data).
Resource = tuple[str, str, str, Mapping[str, Any]]


@dataclass
class Outcome:
    """What a step did: its journal data, and the resources it created (recorded in the same transaction)."""

    data: dict[str, Any] = field(default_factory=dict)
    resources: list[Resource] = field(default_factory=list)


class NodeRun:
    """The state of one node's chain in one ``apply``."""

    def __init__(self, deployment: Deployment, node: NodeSpec, result: NodeResult, iso: Future[StagedMedia] | None):
        self.deployment = deployment
        self.node = node
        self.result = result
        self._iso = iso
        self.seed: StagedMedia | None = None
        self.seed_format: SeedFormat | None = None
        self.machine_: Machine | None = None

    # ------------------------------------------------------------------------------------------ services
    @property
    def plan(self) -> DeploymentPlan:
        """The plan."""
        return self.deployment.plan

    @property
    def journal(self) -> Journal:
        """The journal."""
        return self.deployment.journal

    @property
    def provider(self) -> Provider:
        """The provider."""
        return self.deployment.provider

    @property
    def provider_name(self) -> str:
        """The provider's name, as resources record it."""
        return self.plan.platform.provider

    @property
    def lifecycle(self) -> Lifecycle:
        """Where this provider's machines come from."""
        return Lifecycle(self.provider.lifecycle)

    @property
    def log(self) -> Any:
        """The deployment's logger with this node bound."""
        return self.deployment.log.bind(node=self.node.name)

    def has(self, capability: type) -> bool:
        """Whether the provider implements ``capability``."""
        return isinstance(self.provider, capability)

    def cap(self, capability: type[C]) -> C:
        """The provider as ``capability``; the load-time check makes this a certainty for the chain's needs.

        Raises:
            ConfigurationError: the provider lacks it (a phase used a capability its table entry does not list).
        """
        provider: Any = self.provider
        if not isinstance(provider, capability):
            raise ConfigurationError(
                f"provider {self.provider_name!r} lacks the {capability_name(capability)} capability",
                field="platform.provider",
            )
        return provider

    def emit(self, phase: str, status: Any, message: str = "", **data: Any) -> None:
        """Send an event about this node."""
        self.deployment._emit(self.node.name, phase, status, message, **data)

    @property
    def machine(self) -> Machine:
        """The node's machine (set by ``acquire``).

        Raises:
            ProviderError: asked for before ``acquire`` ran (a user's step anchored too early asks ``machine_``).
        """
        if self.machine_ is None:
            raise ProviderError(f"{self.node.name} has no machine yet", resource=self.node.name)
        return self.machine_

    def iso(self) -> StagedMedia:
        """The staged appliance ISO, waiting for its upload to finish (nodes prepare in the meantime).

        Raises:
            ProviderError: staging the ISO failed (the deployment-wide error is raised by ``apply`` itself).
        """
        if self._iso is None:
            raise ProviderError("this install method stages no appliance ISO", resource=self.node.name)
        try:
            return self._iso.result()
        except Exception as exc:
            raise ProviderError(f"the appliance ISO is not staged: {exc}", provider=self.provider_name) from exc

    def iso_if_staged(self) -> StagedMedia | None:
        """The staged ISO if its upload is over and succeeded, without waiting."""
        if self._iso is None or not self._iso.done() or self._iso.exception() is not None:
            return None
        return self._iso.result()

    def stage(self, file: MediaFile, progress: Callable[[int, int | None], None] | None = None) -> StagedMedia:
        """Stage through the provider, journaling the locator first when the provider can tell it beforehand."""
        return self.deployment.stage_file(file, progress)


def error_text(exc: BaseException) -> str:
    """What the report and the journal say of a failure: our errors' own words, else the unexpected type."""
    return str(exc) if isinstance(exc, PaletteProvisionError) else f"unexpected {type(exc).__name__}: {exc}"


def last_state(exc: BaseException) -> str | None:
    """The last platform state a failure saw, for the report."""
    if isinstance(exc, WaitTimeout) and exc.last_state is not None:
        return exc.shown
    if isinstance(exc, WaitFailed):
        return exc.shown
    if isinstance(exc, ReadinessError):
        return f"rung {exc.rung}"
    return None
