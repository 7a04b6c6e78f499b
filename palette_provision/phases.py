"""The phase table: every phase defined once, and the install methods as chains of them.

A per-node :class:`Phase` says what it is called, what the dry run prints for it, which provider capabilities it
needs, whether a re-run looks at the platform again when it is done (``recheck``), how its recorded result comes
back when it is skipped (``load``), whether it acts on the platform (and so takes one of the node's concurrency
slots) or only waits, whether it needs the staged ISO (waited for before a slot is taken, so nodes that wait for
the upload never hold slots that others need to create their machines), and its action. An install method is an
ordered tuple of phase names (:data:`CHAINS`).

Adding a phase means one entry in :data:`NODE_PHASES` (and its name in the chains that use it); its action goes
in ``palette_provision/_phases.py``. ``docs/architecture.md`` shows the flow.

    >>> [p for p in CHAINS[InstallMethod.DEPLOY_IMAGE]]
    ['stage_seed', 'acquire', 'deploy_image', 'await_deployed', 'await_ready']
    >>> sorted(capability_name(c) for c in required_capabilities(InstallMethod.DEPLOY_IMAGE, Lifecycle.ALLOCATED))
    ['allocates_machines', 'image_deployment']
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from palette_provision import _phases as act
from palette_provision._run import NodeRun, Outcome
from palette_provision.provider import (
    LIFECYCLE_CAPABILITY,
    BootDeviceControl,
    ImageDeployment,
    InstallMethod,
    Lifecycle,
    Power,
    VirtualMedia,
    capability_name,
)

__all__ = [
    "ACQUIRE_FIRST",
    "ALL_NODE_PHASES",
    "CHAINS",
    "DEPLOYMENT_PHASES",
    "NODE_PHASES",
    "DeploymentPhase",
    "Phase",
    "capability_name",
    "chain_for",
    "required_capabilities",
]


@dataclass(frozen=True)
class Phase:
    """One per-node phase (see the module docstring)."""

    name: str
    description: str
    act: Callable[[NodeRun], Outcome]
    needs: tuple[type, ...] = ()
    recheck: Callable[[NodeRun, dict[str, Any]], dict[str, Any] | None] | None = None
    load: Callable[[NodeRun, Mapping[str, Any]], None] | None = None
    acts: bool = True
    needs_iso: bool = False  # waits for the ISO's upload first, before taking a concurrency slot


@dataclass(frozen=True)
class DeploymentPhase:
    """A deployment-wide phase: run once, before or after the nodes' chains. Its action lives on ``Deployment``."""

    name: str
    description: str
    always: bool = False  # observed again on every run (the platform may have changed since)


_TABLE = (
    Phase("stage_seed", "render the node's seed (host key, account, network) in the form its machine reads, and "
          "stage it", act.stage_seed, load=act.load_seed),
    # ``needs`` of acquire depends on the provider's lifecycle: see required_capabilities.
    Phase("acquire", "create, allocate or enroll the node's machine (or find the one the journal recorded)",
          act.acquire, recheck=act.recheck_machine, load=act.load_machine),
    Phase("insert_media", "insert the appliance ISO (unless an operator did) and the seed into virtual-media slots",
          act.insert_media, needs=(VirtualMedia,), needs_iso=True),
    Phase("boot_once_from_cd", "make the next boot use the CD", act.boot_once_from_cd, needs=(BootDeviceControl,)),
    Phase("power_on", "power the machine on", act.power_on, needs=(Power,)),
    Phase("await_install", "wait for the installer to finish and power the machine off", act.await_install,
          needs=(Power,), acts=False),
    Phase("boot_from_disk", "eject the media, remove the seed, boot from disk and power on", act.boot_from_disk,
          needs=(VirtualMedia, BootDeviceControl, Power)),
    Phase("deploy_image", "deploy the image with the seed as user-data", act.deploy_image, needs=(ImageDeployment,)),
    Phase("await_deployed", "wait for the platform to report the machine deployed (or its failure state)",
          act.await_deployed, needs=(ImageDeployment,), acts=False),
    Phase("await_ready", "climb the readiness ladder (address, SSH banner, host key, session, Local API)",
          act.await_ready, acts=False),
)

#: Every per-node phase, by name.
NODE_PHASES: dict[str, Phase] = {phase.name: phase for phase in _TABLE}

#: The install methods: ordered phase names.
CHAINS: dict[InstallMethod, tuple[str, ...]] = {
    InstallMethod.BOOT_FROM_MEDIA: (
        "stage_seed", "acquire", "insert_media", "boot_once_from_cd", "power_on", "await_install", "boot_from_disk",
        "await_ready",
    ),
    InstallMethod.DEPLOY_IMAGE: ("stage_seed", "acquire", "deploy_image", "await_deployed", "await_ready"),
}

#: Every per-node phase name of any chain, in table order (what a ``NodeStep`` may anchor to, per chain).
ALL_NODE_PHASES: tuple[str, ...] = tuple(NODE_PHASES)

#: The deployment-wide phases; ``stage_media`` only for methods that boot the ISO.
DEPLOYMENT_PHASES: dict[str, DeploymentPhase] = {
    p.name: p
    for p in (
        DeploymentPhase("preflight", "check the plan against the platform (log in, resolve objects, capacity, name "
                        "clashes)", always=True),
        DeploymentPhase("stage_media", "stage the appliance ISO (skipped when an identical copy is already there; "
                        "nodes prepare meanwhile)", always=True),
        DeploymentPhase("handoff", "hand off to cluster formation"),
    )
}


#: Lifecycles whose machine is known only once acquired: a pool's machine (MAAS) is chosen by the platform, and the
#: seed's form follows it (its BMC's virtual-media slots), so ``acquire`` comes before ``stage_seed``.
ACQUIRE_FIRST = frozenset({Lifecycle.ALLOCATED})


def chain_for(method: InstallMethod, lifecycle: Lifecycle | None = None) -> tuple[Phase, ...]:
    """The per-node phases of ``method``, in order (for ``lifecycle``: see :data:`ACQUIRE_FIRST`).

    >>> [p.name for p in chain_for(InstallMethod.DEPLOY_IMAGE, Lifecycle.ALLOCATED)][:2]
    ['acquire', 'stage_seed']
    """
    names = CHAINS[method]
    if lifecycle in ACQUIRE_FIRST and names[:2] == ("stage_seed", "acquire"):
        names = ("acquire", "stage_seed", *names[2:])
    return tuple(NODE_PHASES[name] for name in names)


def stages_iso(method: InstallMethod) -> bool:
    """Whether ``method`` boots the appliance ISO (and so has a ``stage_media`` phase)."""
    return "insert_media" in CHAINS[method]


def required_capabilities(method: InstallMethod, lifecycle: Lifecycle) -> tuple[type, ...]:
    """Every capability the chain of ``method`` needs from a provider whose machines come from ``lifecycle``."""
    needed: list[type] = [LIFECYCLE_CAPABILITY[lifecycle]]
    for phase in chain_for(method):
        needed.extend(c for c in phase.needs if c not in needed)
    return tuple(needed)
