"""The plan's typed models: the plan, its sections about the machines (ISO, cluster, nodes, platform), and the nodes
they resolve to. The sections about the run are in :mod:`._sections`, the shared base in :mod:`._base`."""

from __future__ import annotations

import enum
import hashlib
import ipaddress
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, field_validator
from pydantic_core import PydanticCustomError

from palette_provision.plan._base import SecretRef, _Model
from palette_provision.plan._sections import (
    HandoffSettings,
    JournalSettings,
    PacksSettings,
    ReadinessSettings,
    Timeouts,
    ValidateSettings,
)


class Profile(str, enum.Enum):
    """What the nodes run: the Palette Management Appliance (1 or 3 nodes) or Palette Edge hosts (any count)."""

    APPLIANCE = "appliance"
    EDGE = "edge"


class SizeTier(str, enum.Enum):
    """The appliance's documented size tiers."""

    SMALL = "small"
    MEDIUM = "medium"
    LARGE = "large"


#: CPU count and memory (GiB) per size tier, from the appliance documentation.
SIZE_TIERS: dict[SizeTier, tuple[int, int]] = {
    SizeTier.SMALL: (8, 16),
    SizeTier.MEDIUM: (16, 32),
    SizeTier.LARGE: (32, 64),
}

#: Minimums per profile: cpus, memory GiB, install disk GiB, storage disk GiB.
PROFILE_MINIMUMS: dict[Profile, tuple[int, int, int, int]] = {
    Profile.APPLIANCE: (8, 16, 300, 500),
    Profile.EDGE: (2, 4, 32, 0),
}

_HOSTNAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SSH_KEY = re.compile(r"^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp\d+|sk-[a-z0-9@.-]+) [A-Za-z0-9+/=]+( .*)?$")


def _sha256_hex(value: str) -> str:
    if not _SHA256.match(value.lower()):
        raise PydanticCustomError("sha256", "must be 64 hexadecimal digits")
    return value.lower()


#: A SHA-256 digest: 64 hexadecimal digits, kept lower-case (the ISO's and the content bundle's).
Sha256 = Annotated[str, AfterValidator(_sha256_hex)]

_DISK_PATH = re.compile(r"^/dev/[A-Za-z0-9._:/+@-]+$")


def _disk_path(value: str) -> str:
    if value == "auto":
        raise PydanticCustomError(
            "disk_auto",
            "must name the disk: with 'auto' the installer picks the largest drive, which may be the storage-pool "
            "disk",
        )
    if not _DISK_PATH.match(value) or "/../" in value or value.endswith("/.."):
        raise PydanticCustomError(
            "disk_path", "must be a device path under /dev/, e.g. /dev/disk/by-path/... or /dev/sda"
        )
    return value


#: A block device as the node sees it (``/dev/...``); never ``auto``.
DiskPath = Annotated[str, AfterValidator(_disk_path)]


class IsoSource(_Model):
    """The appliance (or Edge installer) ISO: a local path or an http(s) URL, and its SHA-256."""

    source: str = Field(description="Local path or http(s) URL of the ISO.")
    sha256: Sha256 | None = Field(
        default=None, description="Expected SHA-256 (hex). Required for URLs; computed for local files if omitted."
    )

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        if not v.strip():
            raise PydanticCustomError("iso_source", "must be a local path or an http(s) URL")
        if "://" in v and not v.startswith(("http://", "https://")):
            raise PydanticCustomError("iso_source", "only local paths and http(s) URLs are supported")
        return v

    @property
    def is_url(self) -> bool:
        """True when the ISO is fetched over HTTP(S)."""
        return self.source.startswith(("http://", "https://"))


class ContentBundle(_Model):
    """The optional content bundle (``.tar.zst``) uploaded to the leader during hand-off."""

    path: str = Field(description="Local path of the content bundle.")
    sha256: Sha256 | None = Field(default=None, description="Expected SHA-256 (hex), checked while uploading.")


class NodeAccount(_Model):
    """The one account used for SSH and the Local UI on every node."""

    username: str = Field(default="kairos", description="OS user name created by the seed.")
    password: SecretRef = Field(description="Reference to the account password (stored hashed in the seed).")
    ssh_private_key: SecretRef | None = Field(
        default=None,
        description="Reference to the private key matching one of cluster.ssh_public_keys; used by the readiness "
        "ladder for the authenticated session.",
    )

    @field_validator("username")
    @classmethod
    def _user(cls, v: str) -> str:
        if not re.match(r"^[a-z_][a-z0-9_-]{0,31}$", v):
            raise PydanticCustomError("username", "must be a POSIX user name (lower case, at most 32 characters)")
        return v


class ClusterSettings(_Model):
    """Cluster-wide settings: name, VIP, DNS, NTP, SSH keys, the node account and profile variables."""

    name: str = Field(description="Cluster name; also the default prefix of node names.")
    vip: ipaddress.IPv4Address = Field(description="Free virtual IP reachable by all nodes (control-plane endpoint).")
    dns: list[ipaddress.IPv4Address] = Field(min_length=1, description="DNS servers.")
    ntp: list[str] = Field(default_factory=list, description="NTP servers (optional).")
    ssh_public_keys: list[str] = Field(default_factory=list, description="Authorized SSH public keys.")
    node_account: NodeAccount
    profile_variables: dict[str, str] = Field(
        default_factory=dict, description="Profile variable values merged over the archive's defaults."
    )
    profile_secrets: dict[str, SecretRef] = Field(
        default_factory=dict, description="Sensitive profile variables, as secret references."
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _HOSTNAME.match(v):
            raise PydanticCustomError("hostname", "must be lower-case letters, digits and '-', at most 63 characters")
        return v

    @field_validator("ssh_public_keys")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        for i, key in enumerate(v):
            if not _SSH_KEY.match(key.strip()):
                raise PydanticCustomError("ssh_key", "entry {index} is not an OpenSSH public key line", {"index": i})
        return [k.strip() for k in v]


class NetworkSettings(_Model):
    """How nodes get their address: DHCP, or one static address per node."""

    mode: Literal["dhcp", "static"] = "dhcp"
    addresses: list[ipaddress.IPv4Interface] = Field(
        default_factory=list, description="Static only: one address with prefix per node, e.g. 10.0.0.11/24."
    )
    gateway: ipaddress.IPv4Address | None = Field(default=None, description="Static only: default gateway.")
    interface: str = Field(default="eth0", description="NIC name on the node the settings apply to.")


class HostEntry(BaseModel):
    """One node listed by itself in ``nodes.hosts``: its name, its static address, and the provider's settings.

    Every key besides ``name`` and ``address`` belongs to the provider's ``node_settings_model`` (a BMC, a MAC, a
    MAAS system id...) and is validated by it, with the field path ``nodes.hosts[i].<key>``.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str | None = Field(default=None, description="Node name (default <cluster.name>-<n>).")
    address: ipaddress.IPv4Interface | None = Field(
        default=None, description="Static mode: this node's address with prefix (instead of network.addresses)."
    )
    install_disk: DiskPath | None = Field(
        default=None, description="This node's install disk (see nodes.install_disk)."
    )
    storage_disk: DiskPath | None = Field(
        default=None, description="This node's storage-pool disk (see nodes.storage_disk)."
    )

    @property
    def provider_settings(self) -> dict[str, Any]:
        """The keys that belong to the provider's per-node settings, unvalidated."""
        return dict(self.model_extra or {})


#: The most nodes one plan deploys (a bound, so a typo such as 10000000 is a plan error, not a hung validate).
MAX_NODES = 1000


class NodesSettings(_Model):
    """The machines: how many (or which), how big, their disks, firmware and network."""

    count: int | None = Field(
        default=None,
        ge=1,
        le=MAX_NODES,
        description="Number of nodes: 1 or 3 for the appliance, >= 1 for edge (default: len(hosts)).",
    )
    names: list[str] | None = Field(default=None, description="Node names; default <cluster.name>-<n>.")
    hosts: list[HostEntry] | None = Field(
        default=None, description="The nodes one by one, each with its name, address and platform settings."
    )
    size: SizeTier | None = Field(default=None, description="Size tier; or give cpus and memory_gb.")
    cpus: int | None = Field(default=None, ge=1)
    memory_gb: int | None = Field(default=None, ge=1)
    install_disk_gb: int = Field(default=500, ge=1, description="Install disk (>= 300 GB for the appliance).")
    storage_disk_gb: int = Field(default=500, ge=0, description="Storage-pool disk (>= 500 GB for the appliance).")
    install_disk: DiskPath | None = Field(
        default=None,
        description="The disk the appliance installs onto, as the node sees it: a stable name such as "
        "/dev/disk/by-path/... or /dev/disk/by-id/... is better than /dev/sda. Default: the provider names it for "
        "machines it builds; required for machines it does not.",
    )
    storage_disk: DiskPath | None = Field(
        default=None,
        description="The storage-pool disk (wiped by the cluster), as the node sees it; becomes the profile variable "
        "storage_pool_drive unless cluster.profile_variables sets it. Default: the provider names it, else /dev/sdb.",
    )
    wipe_install_disk: bool = Field(
        default=False,
        description="Erase old partition signatures on the install disk before installing (wipefs --all, run by the "
        "seed; logged as a warning). Off by default: it destroys whatever the disk held.",
    )
    firmware: Literal["uefi", "bios"] = "uefi"
    secure_boot: bool = False
    network: NetworkSettings = Field(default_factory=NetworkSettings)


class PlatformSection(BaseModel):
    """The platform section: ``provider`` names the provider; every other key is that provider's setting."""

    model_config = ConfigDict(extra="allow", frozen=True)

    provider: str = Field(description="Registered provider name, e.g. 'vsphere'.")


class NodeSpec(_Model):
    """One concrete node, derived from the plan: everything a provider needs to build it."""

    index: int
    name: str
    cpus: int
    memory_mb: int
    install_disk_gb: int
    storage_disk_gb: int
    firmware: Literal["uefi", "bios"]
    secure_boot: bool
    interface: str
    address: ipaddress.IPv4Interface | None = None
    gateway: ipaddress.IPv4Address | None = None
    dns: tuple[ipaddress.IPv4Address, ...] = ()
    install_disk: str | None = Field(
        default=None, description="The install device, or None (the provider's, else auto)."
    )
    storage_disk: str | None = Field(default=None, description="The storage-pool device, or None (not named).")
    settings: Any = Field(
        default=None, description="The provider's per-node settings (its node_settings_model), or None.", exclude=True
    )

    @property
    def static_ip(self) -> str | None:
        """The planned static address without prefix, or ``None`` with DHCP."""
        return str(self.address.ip) if self.address else None


class DeploymentPlan(_Model):
    """A whole deployment: the ISO, the cluster, the nodes, the platform, and how to finish.

    Build it from a file with :func:`load_plan`, from a mapping with :func:`parse_plan`, or directly::

        plan = parse_plan(yaml.safe_load(Path("plan.yaml").read_text()))
        for node in plan.node_specs():
            print(node.name, node.cpus, node.static_ip)
    """

    name: str = Field(description="Deployment name; identifies the journal.")
    profile: Profile = Profile.APPLIANCE
    iso: IsoSource
    content: ContentBundle | None = None
    cluster: ClusterSettings
    nodes: NodesSettings
    platform: PlatformSection
    user_data_extra: dict[str, Any] = Field(
        default_factory=dict, description="Escape hatch: deep-merged into every node's seed user-data."
    )
    readiness: ReadinessSettings = Field(default_factory=ReadinessSettings)
    handoff: HandoffSettings = Field(default_factory=HandoffSettings)
    timeouts: Timeouts = Field(default_factory=Timeouts)
    validation: ValidateSettings | None = Field(
        alias="validate",
        default=None,
        description="Validate Palette after the cluster forms (palette-local-api hand-off): applications, pods, the "
        "system console's password rotated and its health.",
    )
    packs: PacksSettings | None = Field(
        default=None, description="Pack bundles uploaded after validation (needs validate.console to sync them)."
    )
    journal: JournalSettings | None = Field(
        default=None, description="A PostgreSQL journal (default: SQLite in the state folder)."
    )
    concurrency: int = Field(default=8, ge=1, le=256, description="Nodes worked on at once.")
    install_method: Literal["boot-from-media", "deploy-image"] | None = Field(
        default=None, description="How nodes are installed (default: the provider's preferred method)."
    )

    _settings: Any = PrivateAttr(default=None)
    _node_settings: tuple[Any, ...] = PrivateAttr(default=())
    _base_dir: Path | None = PrivateAttr(default=None)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _HOSTNAME.match(v):
            raise PydanticCustomError("name", "must be lower-case letters, digits and '-', at most 63 characters")
        return v

    @property
    def platform_settings(self) -> Any:
        """The provider's validated settings model (set by :func:`parse_plan`)."""
        return self._settings

    @property
    def base_dir(self) -> Path:
        """The folder relative paths in the plan are resolved against."""
        return self._base_dir or Path.cwd()

    def resolve_path(self, value: str) -> Path:
        """Resolve a path from the plan against the plan file's folder."""
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.base_dir / path

    @property
    def node_count(self) -> int:
        """How many nodes: ``nodes.count``, else the number of ``nodes.hosts``."""
        if self.nodes.count is not None:
            return self.nodes.count
        return len(self.nodes.hosts or ())

    def node_names(self) -> list[str]:
        """The node names, in order: from ``nodes.hosts``, else ``nodes.names``, else ``<cluster.name>-<n>``."""
        hosts = self.nodes.hosts or []
        names = list(self.nodes.names or [])
        out = []
        for i in range(self.node_count):
            host_name = hosts[i].name if i < len(hosts) else None
            out.append(host_name or (names[i] if i < len(names) else f"{self.cluster.name}-{i + 1}"))
        return out

    def node_specs(self) -> list[NodeSpec]:
        """One :class:`NodeSpec` per node, with sizes and addresses resolved."""
        cpus, memory_gb = _sizing(self.nodes)
        net = self.nodes.network
        hosts = self.nodes.hosts or []
        specs = []
        for i, name in enumerate(self.node_names()):
            address = net.addresses[i] if net.mode == "static" and i < len(net.addresses) else None
            if net.mode == "static" and i < len(hosts) and hosts[i].address is not None:
                address = hosts[i].address
            specs.append(
                NodeSpec(
                    index=i,
                    name=name,
                    cpus=cpus or 0,
                    memory_mb=(memory_gb or 0) * 1024,
                    install_disk_gb=self.nodes.install_disk_gb,
                    storage_disk_gb=self.nodes.storage_disk_gb,
                    firmware=self.nodes.firmware,
                    secure_boot=self.nodes.secure_boot,
                    interface=net.interface,
                    address=address,
                    gateway=net.gateway if address else None,
                    dns=tuple(self.cluster.dns),
                    install_disk=(hosts[i].install_disk if i < len(hosts) else None) or self.nodes.install_disk,
                    storage_disk=(hosts[i].storage_disk if i < len(hosts) else None) or self.nodes.storage_disk,
                    settings=self._node_settings[i] if i < len(self._node_settings) else None,
                )
            )
        return specs

    def fingerprint(self) -> str:
        """A digest of the plan's content (secrets as their references), for the journal."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


def _sizing(nodes: NodesSettings) -> tuple[int | None, int | None]:
    if nodes.size is not None:
        cpus, mem = SIZE_TIERS[nodes.size]
        return nodes.cpus or cpus, nodes.memory_gb or mem
    return nodes.cpus, nodes.memory_gb
