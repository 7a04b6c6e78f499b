"""The provider interface: small capability protocols a platform composes.

A provider is a class registered under the entry-point group ``palette_provision.providers``. It declares its typed
settings (``settings_model``, the schema of the plan's ``platform`` section), is built without I/O, and implements
the capabilities its platform offers. The core asks ``isinstance(provider, Power)`` and so on; there are no
``NotImplementedError`` stubs. No vendor type crosses this line: providers take and return the plain data types
below, and translate vendor errors into :mod:`palette_provision.errors` at their boundary.

A minimal provider::

    class MyCloudSettings(BaseModel):
        endpoint: str
        password: SecretRef

    class MyCloudProvider:
        name = "mycloud"
        settings_model = MyCloudSettings

        def __init__(self, settings: MyCloudSettings, context: ProviderContext) -> None: ...
        def validate(self, plan: DeploymentPlan) -> list[PlanIssue]: return []
        def preflight(self, plan: DeploymentPlan) -> None: ...
        def close(self) -> None: ...
        # plus the capabilities: MediaStaging, Machines, Power, BootMedia, AddressDiscovery
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

from pydantic import BaseModel

from palette_provision.errors import PlanIssue
from palette_provision.plan import DeploymentPlan, NodeSpec

__all__ = [
    "AddressDiscovery",
    "BootMedia",
    "Machine",
    "Machines",
    "MediaFile",
    "MediaLocating",
    "MediaStaging",
    "Power",
    "PowerHistory",
    "PowerState",
    "ProgressCallback",
    "Provider",
    "ProviderContext",
    "StagedMedia",
]

#: Called by long operations with (bytes done, bytes total or None).
ProgressCallback = Callable[[int, "int | None"], None]


class PowerState(str, enum.Enum):
    """A machine's power state as the platform reports it."""

    ON = "on"
    OFF = "off"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class MediaFile:
    """A local file to put where the platform can boot it: the appliance ISO or a node's seed.

    ``sha256`` is the expected digest when known beforehand (from the plan, the digest cache, or because the core
    built the file); a provider computes it in the same pass as the upload when it is ``None``.
    """

    role: Literal["appliance-iso", "seed"]
    local_path: Path
    size: int
    name: str
    sha256: str | None = None
    node: str | None = None


@dataclass(frozen=True)
class StagedMedia:
    """Media placed on the platform. ``locator`` is the provider's address for it (a datastore path, a URL)."""

    role: Literal["appliance-iso", "seed"]
    locator: str
    sha256: str
    size: int
    uploaded_bytes: int = 0
    node: str | None = None

    def to_record(self) -> dict[str, Any]:
        """A JSON-able record for the journal."""
        return {
            "role": self.role,
            "locator": self.locator,
            "sha256": self.sha256,
            "size": self.size,
            "uploaded_bytes": self.uploaded_bytes,
            "node": self.node,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> StagedMedia:
        """Rebuild from :meth:`to_record` output (extra journal keys are ignored)."""
        fields = ("role", "locator", "sha256", "size", "uploaded_bytes", "node")
        return cls(**{k: record[k] for k in fields if k in record})


@dataclass(frozen=True)
class Machine:
    """A machine the provider created or allocated for a node. ``id`` is the platform's identifier."""

    node: str
    id: str
    name: str
    attributes: Mapping[str, str] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        """A JSON-able record for the journal."""
        return {"node": self.node, "id": self.id, "name": self.name, "attributes": dict(self.attributes)}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Machine:
        """Rebuild from :meth:`to_record` output."""
        return cls(
            node=record["node"], id=record["id"], name=record["name"], attributes=dict(record.get("attributes", {}))
        )


@dataclass(frozen=True)
class ProviderContext:
    """What the core hands a provider when building it.

    ``owned_machine_names``: names the journal says this deployment created or started creating, so a provider's
    duplicate-name check can tell ours from someone else's. ``state_dir``: a folder the provider may use for its
    own cache (kept between runs; the vSphere provider records verified media there). ``log``: a logger with
    ``provider`` bound, called like structlog's (:class:`palette_provision.log.Logger`; a structlog logger works too).
    """

    deployment: str
    state_dir: Path
    log: Any
    owned_machine_names: frozenset[str] = frozenset()


@runtime_checkable
class Provider(Protocol):
    """What every provider is: named, typed settings, a fast ``validate``, a live ``preflight``, ``close``."""

    name: ClassVar[str]
    settings_model: ClassVar[type[BaseModel]]

    def validate(self, plan: DeploymentPlan) -> list[PlanIssue]:
        """Check the plan against what this platform can do. Fast, no I/O, no side effects."""
        ...

    def preflight(self, plan: DeploymentPlan) -> None:
        """Live, read-only checks (log in, resolve every named object, capacity, name clashes).

        Raises:
            ConfigurationError: naming the setting or object at fault.
        """
        ...

    def close(self) -> None:
        """Release sessions and connections. Safe to call twice."""
        ...


@runtime_checkable
class MediaStaging(Protocol):
    """Put media where machines can boot it, content-addressed and idempotent."""

    def stage_media(self, media: MediaFile, progress: ProgressCallback | None = None) -> StagedMedia:
        """Stage ``media`` unless an identical copy is already there; return where it is."""
        ...

    def unstage_media(self, staged: StagedMedia) -> None:
        """Remove staged media. Removing what is already gone is not an error."""
        ...


@runtime_checkable
class MediaLocating(Protocol):
    """Optional, and strongly advised for media staging: say where ``stage_media`` will put a file, without I/O.

    The core journals that locator *before* uploading, so a run killed mid-upload still lets ``destroy`` remove
    the file (a seed holds a private host key and a password hash: it must never be left behind).
    """

    def locate_media(self, media: MediaFile) -> str:
        """The locator ``stage_media(media)`` returns. Pure: no I/O."""
        ...


@runtime_checkable
class Machines(Protocol):
    """Create (or allocate), find and delete the machines."""

    def find_machine(self, node: NodeSpec) -> Machine | None:
        """Return the machine for ``node`` if it exists on the platform.

        Its ``attributes`` may be a subset of what :meth:`create_machine` reported: for the same ``id``, the core
        keeps the attributes it recorded before unless they are reported anew.
        """
        ...

    def create_machine(self, node: NodeSpec, media: list[StagedMedia]) -> Machine:
        """Create the machine for ``node`` sized per the plan; ``media`` is what it should boot from (CD order)."""
        ...

    def delete_machine(self, machine: Machine) -> None:
        """Delete (or release) the machine; powering it off first is the provider's job."""
        ...


@runtime_checkable
class Power(Protocol):
    """Power control."""

    def power_state(self, machine: Machine) -> PowerState:
        """Read the machine's power state."""
        ...

    def power_on(self, machine: Machine) -> None:
        """Power on, returning once the platform reports the machine on. Already on is success.

        Platforms that apply power changes asynchronously (Redfish BMCs) poll inside, with ``wait_for``; the core
        does not poll for ``ON`` afterwards, because a fast installer may already have powered the machine off.
        """
        ...

    def power_off(self, machine: Machine) -> None:
        """Power off (hard). Already off, or a machine that no longer exists, is success."""
        ...


@runtime_checkable
class PowerHistory(Protocol):
    """Optional: when the machine last powered on, so a resumed run never powers a machine on twice.

    A run killed right after ``power_on`` finds the machine off again once the installer finished; with this
    capability the core can tell that from a power-on that never happened, and does not start a second install.
    """

    def last_power_on(self, machine: Machine) -> float | None:
        """Epoch seconds of the machine's last power-on, or ``None`` if unknown or never."""
        ...


@runtime_checkable
class BootMedia(Protocol):
    """Attach boot media and boot once from it; detach after install."""

    def attach_media(self, machine: Machine, media: list[StagedMedia]) -> None:
        """Attach ``media`` (CD 1 = appliance ISO, CD 2 = seed) and make the next boot use it. Idempotent."""
        ...

    def detach_media(self, machine: Machine) -> None:
        """Detach all boot media so the machine boots from its disk. Idempotent."""
        ...


@runtime_checkable
class AddressDiscovery(Protocol):
    """Learn a node's address from the platform (VMware Tools, BMC, MAAS)."""

    def discover_address(self, machine: Machine, node: NodeSpec) -> str | None:
        """Return the node's address if the platform knows it, else ``None``."""
        ...


CAPABILITIES: dict[str, type] = {
    "media_staging": MediaStaging,
    "media_locating": MediaLocating,
    "machines": Machines,
    "power": Power,
    "boot_media": BootMedia,
    "address_discovery": AddressDiscovery,
    "power_history": PowerHistory,
}


def capabilities_of(provider: object) -> list[str]:
    """Names of the capability protocols ``provider`` implements."""
    return [name for name, proto in CAPABILITIES.items() if isinstance(provider, proto)]
