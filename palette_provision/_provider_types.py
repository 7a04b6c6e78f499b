"""The plain data types that cross the provider boundary (re-exported by :mod:`palette_provision.provider`).

Enums for lifecycles, install methods, power states, boot devices, slot kinds, seed forms and deployment states;
frozen dataclasses for media, staged media, slots, machines, deployment status and the provider's context. No
vendor type ever appears here.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "BootDevice",
    "DeployState",
    "DeployStatus",
    "InstallMethod",
    "Lifecycle",
    "Machine",
    "MediaFile",
    "MediaSlot",
    "NodeDisks",
    "PowerState",
    "ProgressCallback",
    "ProviderContext",
    "SeedFormat",
    "SlotKind",
    "StagedMedia",
]

#: Called by long operations with (bytes done, bytes total or None).
ProgressCallback = Callable[[int, "int | None"], None]


class Lifecycle(str, enum.Enum):
    """Where a provider's machines come from, and so what ``destroy`` does to them."""

    CREATED = "created"  # made for the deployment (a VM): destroy deletes it
    ALLOCATED = "allocated"  # taken from a pool (MAAS): destroy releases it
    ENROLLED = "enrolled"  # existed before (a rack server): destroy powers it off, ejects, clears boot overrides


class InstallMethod(str, enum.Enum):
    """How a machine gets the appliance installed (each is a chain of phases; see :mod:`palette_provision.phases`)."""

    BOOT_FROM_MEDIA = "boot-from-media"  # boot the appliance ISO with the seed beside it; the installer powers off
    DEPLOY_IMAGE = "deploy-image"  # the platform writes an image and passes the seed as user-data (MAAS)


class PowerState(str, enum.Enum):
    """A machine's power state as the platform reports it."""

    ON = "on"
    OFF = "off"
    UNKNOWN = "unknown"


class BootDevice(str, enum.Enum):
    """A boot device override."""

    CD = "cd"
    DISK = "disk"
    PXE = "pxe"


class SlotKind(str, enum.Enum):
    """A virtual-media slot: a CD/DVD drive or a removable disk (USB stick, floppy)."""

    CD = "cd"
    REMOVABLE_DISK = "removable-disk"


class SeedFormat(str, enum.Enum):
    """The forms of one seed: a NoCloud ``cidata`` ISO, a ``cidata`` FAT disk image, or the user-data as text."""

    CIDATA_ISO = "cidata-iso"
    CIDATA_DISK = "cidata-disk"
    USER_DATA = "user-data"


class DeployState(str, enum.Enum):
    """Where an image deployment is, in the core's words (a provider maps its platform's states)."""

    DEPLOYING = "deploying"
    DEPLOYED = "deployed"
    FAILED = "failed"


@dataclass(frozen=True)
class DeployStatus:
    """An image deployment's state, with the platform's own word for it (``Failed deployment``...)."""

    state: DeployState
    platform_state: str = ""

    def __str__(self) -> str:
        return self.platform_state or self.state.value


@dataclass(frozen=True, order=True)
class MediaSlot:
    """One virtual-media slot of a machine.

    ``preinserted`` names what an operator puts there (``"appliance-iso"``, or ``"seed"`` where the platform has no
    way to insert it, e.g. behind an IPMI BMC): the core never inserts into or ejects such a slot. It checks the
    slot with :meth:`VirtualMedia.inserted_media` when ``readable``; a slot the platform cannot read (``readable``
    false) is taken on the operator's word. For an operator's seed the core first stops the node once with
    :class:`~palette_provision.errors.OperatorActionNeeded`, saying where the rendered seed is.
    """

    kind: SlotKind
    index: int = 0
    preinserted: Literal["appliance-iso", "seed"] | None = None
    readable: bool = field(default=True, compare=False)

    def __str__(self) -> str:
        return f"{self.kind.value}{self.index}"


@dataclass(frozen=True)
class MediaFile:
    """A local file to put where the platform can boot it: the appliance ISO or a node's seed.

    ``sha256`` is the expected digest when known beforehand (from the plan, the digest cache, or because the core
    built the file); a provider computes it in the same pass as the upload when it is ``None``.
    ``sha256_checked``: the core itself read this very file (same device, inode, size and modification time) and
    got ``sha256``, so a provider may send the bytes without hashing them again; the core checks after the upload
    that the file did not change meanwhile. A provider may always hash anyway.
    """

    role: Literal["appliance-iso", "seed"]
    local_path: Path
    size: int
    name: str
    sha256: str | None = None
    node: str | None = None
    sha256_checked: bool = False


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
class NodeDisks:
    """A machine's disks as its operating system will name them: the install disk and the storage-pool disk.

    Given by a provider that builds the machine (``DiskLayout``); the seed installs onto ``install`` and the
    hand-off passes ``storage`` as the cluster profile's ``storage_pool_drive``.
    """

    install: str
    storage: str | None = None


@dataclass(frozen=True)
class Machine:
    """A machine the provider created, allocated or enrolled for a node. ``id`` is the platform's identifier."""

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

    ``owned_machines``: node name -> the machine the journal recorded for it (or ``None`` when the node's
    acquisition started but no machine was recorded: the run died in between), so a provider's clash check can
    tell ours from someone else's. ``state_dir``: a folder the provider may use for its own cache (kept between
    runs). ``log``: a logger with ``provider`` bound, called like structlog's (:class:`palette_provision.log.Logger`).
    ``nodes``: the plan's nodes with their per-node settings, so a provider whose machines are reached through
    per-node credentials (a BMC each) can act on a machine the journal recorded, in ``destroy`` too.
    """

    deployment: str
    state_dir: Path
    log: Any
    owned_machines: Mapping[str, Machine | None] = field(default_factory=dict)
    nodes: tuple[Any, ...] = ()
