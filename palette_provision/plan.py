"""The deployment plan: one typed document that says what to deploy, where and how.

Load it from YAML or JSON with :func:`load_plan` (or :func:`parse_plan` for a mapping), or build it in Python.
Every problem is reported at once, each with its field path and the rule broken::

    >>> from palette_provision.plan import parse_plan
    >>> parse_plan({"profile": "appliance", "nodes": {"count": 2}, ...})  # doctest: +SKIP
    PlanError: invalid plan (1 problem(s)):
      - nodes.count: the appliance runs on 1 or 3 nodes, got 2

The ``platform`` section belongs to the provider it names: its schema is the provider's ``settings_model`` and its
errors are reported with the ``platform.`` prefix. Loading does no I/O beyond reading the plan file and the
secret references it names, and touches no platform.
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from pydantic_core import PydanticCustomError

from palette_provision.errors import PlanError, PlanIssue
from palette_provision.secrets import Secret, SecretReferenceError, resolve_secret

__all__ = [
    "ClusterSettings",
    "ContentBundle",
    "DeploymentPlan",
    "HandoffSettings",
    "IsoSource",
    "NetworkSettings",
    "NodeAccount",
    "NodeSpec",
    "NodesSettings",
    "PlatformSection",
    "Profile",
    "ReadinessSettings",
    "SecretRef",
    "SizeTier",
    "Timeouts",
    "load_plan",
    "parse_plan",
    "parse_plan_text",
]


def _to_secret(value: Any, info: ValidationInfo) -> Secret:
    if isinstance(value, Secret):
        return value
    if not isinstance(value, str):
        raise PydanticCustomError("secret_reference", "a secret must be a reference 'env:NAME' or 'file:PATH'")
    base_dir = (info.context or {}).get("base_dir")
    try:
        return resolve_secret(value, base_dir=base_dir)
    except SecretReferenceError as exc:
        # The message names the reference (env var or file), never a value.
        raise PydanticCustomError("secret_reference", str(exc)) from None


#: A secret given by reference (``env:NAME`` or ``file:PATH``); serialises back to the reference, never the value.
SecretRef = Annotated[
    Secret,
    PlainValidator(_to_secret),
    PlainSerializer(lambda s: s.source, return_type=str),
    WithJsonSchema({"type": "string", "pattern": "^(env|file):.+$"}),
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


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


class IsoSource(_Model):
    """The appliance (or Edge installer) ISO: a local path or an http(s) URL, and its SHA-256."""

    source: str = Field(description="Local path or http(s) URL of the ISO.")
    sha256: str | None = Field(
        default=None, description="Expected SHA-256 (hex). Required for URLs; computed for local files if omitted."
    )

    @field_validator("sha256")
    @classmethod
    def _hex(cls, v: str | None) -> str | None:
        if v is not None and not _SHA256.match(v.lower()):
            raise PydanticCustomError("sha256", "must be 64 hexadecimal digits")
        return v.lower() if v else v

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
    sha256: str | None = Field(default=None, description="Expected SHA-256 (hex), checked while uploading.")


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


class NodesSettings(_Model):
    """The machines: how many, how big, their disks, firmware and network."""

    count: int = Field(description="Number of nodes: 1 or 3 for the appliance, >= 1 for edge.")
    names: list[str] | None = Field(default=None, description="Node names; default <cluster.name>-<n>.")
    size: SizeTier | None = Field(default=None, description="Size tier; or give cpus and memory_gb.")
    cpus: int | None = Field(default=None, ge=1)
    memory_gb: int | None = Field(default=None, ge=1)
    install_disk_gb: int = Field(default=500, ge=1, description="Install disk (>= 300 GB for the appliance).")
    storage_disk_gb: int = Field(default=500, ge=0, description="Storage-pool disk (>= 500 GB for the appliance).")
    firmware: Literal["uefi", "bios"] = "uefi"
    secure_boot: bool = False
    network: NetworkSettings = Field(default_factory=NetworkSettings)


class PlatformSection(BaseModel):
    """The platform section: ``provider`` names the provider; every other key is that provider's setting."""

    model_config = ConfigDict(extra="allow", frozen=True)

    provider: str = Field(description="Registered provider name, e.g. 'vsphere'.")

    @property
    def options(self) -> dict[str, Any]:
        """The provider's own settings (everything but ``provider``), unvalidated."""
        return dict(self.model_extra or {})


class Timeouts(_Model):
    """Deadlines in seconds, sized for the appliance (install >= 15 min, cluster creation 20-30 min)."""

    power: float = Field(default=300, gt=0, description="A power operation to take effect.")
    install: float = Field(default=3600, gt=0, description="The installer to finish and power the node off.")
    ready: float = Field(default=1200, gt=0, description="A node to climb the readiness ladder after boot.")
    configured: float = Field(default=1800, gt=0, description="Local API: host configured.")
    link: float = Field(default=900, gt=0, description="Local API: every follower linked.")
    content_sync: float = Field(default=3600, gt=0, description="Local API: content synced to every peer.")
    cluster: float = Field(default=5400, gt=0, description="Local API: cluster Running and Healthy.")


class ReadinessSettings(_Model):
    """Which rungs of the readiness ladder to climb and how to trust the SSH host key."""

    ssh: bool = Field(default=True, description="Check the SSH banner, host key and an authenticated session.")
    local_api: bool | None = Field(
        default=None, description="Check the Local API on 5080 (default: when the hand-off needs it)."
    )
    host_key: Literal["seeded", "trust-on-first-use"] = Field(
        default="seeded", description="Pin the seeded host key, or record the first one seen and pin it after."
    )


class HandoffSettings(_Model):
    """What happens once every node is ready."""

    kind: Literal["palette-local-api", "inventory", "none"] = "palette-local-api"
    leader: str | None = Field(default=None, description="Leader node name (default: the first node).")
    output_dir: str = Field(default="palette-provision-out", description="Where kubeconfig/inventory are written.")
    local_api_port: int = Field(default=5080, ge=1, le=65535)
    tls: Literal["pin-on-first-use", "insecure"] = Field(
        default="pin-on-first-use",
        description="Node certificates are self-signed: pin each on first contact, or (logged) verify nothing.",
    )


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
    concurrency: int = Field(default=8, ge=1, le=256, description="Nodes worked on at once.")

    _settings: Any = PrivateAttr(default=None)
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

    def node_names(self) -> list[str]:
        """The node names, in order."""
        if self.nodes.names:
            return list(self.nodes.names)
        return [f"{self.cluster.name}-{i + 1}" for i in range(self.nodes.count)]

    def node_specs(self) -> list[NodeSpec]:
        """One :class:`NodeSpec` per node, with sizes and addresses resolved."""
        cpus, memory_gb = _sizing(self.nodes)
        net = self.nodes.network
        specs = []
        for i, name in enumerate(self.node_names()):
            address = net.addresses[i] if net.mode == "static" and i < len(net.addresses) else None
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


# --------------------------------------------------------------------------------------------------- rules


def _rule_issues(plan: DeploymentPlan) -> list[PlanIssue]:
    """Cross-field rules that pydantic's per-field checks cannot express."""
    issues: list[PlanIssue] = []
    add = issues.append
    nodes, profile = plan.nodes, plan.profile
    min_cpu, min_mem, min_install, min_storage = PROFILE_MINIMUMS[profile]
    if profile is Profile.APPLIANCE and nodes.count not in (1, 3):
        add(PlanIssue("nodes.count", f"the appliance runs on 1 or 3 nodes, got {nodes.count}"))
    elif nodes.count < 1:
        add(PlanIssue("nodes.count", f"at least 1 node is needed, got {nodes.count}"))
    if nodes.size is None and (nodes.cpus is None or nodes.memory_gb is None):
        add(PlanIssue("nodes.size", "give a size tier (small, medium, large) or both nodes.cpus and nodes.memory_gb"))
    cpus, mem = _sizing(nodes)
    if cpus is not None and cpus < min_cpu:
        add(PlanIssue("nodes.cpus", f"the {profile.value} profile needs at least {min_cpu} CPUs per node, got {cpus}"))
    if mem is not None and mem < min_mem:
        add(PlanIssue("nodes.memory_gb", f"the {profile.value} profile needs at least {min_mem} GB, got {mem}"))
    if nodes.install_disk_gb < min_install:
        add(
            PlanIssue(
                "nodes.install_disk_gb",
                f"the {profile.value} profile needs an install disk of at least {min_install} GB, "
                f"got {nodes.install_disk_gb}",
            )
        )
    if nodes.storage_disk_gb < min_storage:
        add(
            PlanIssue(
                "nodes.storage_disk_gb",
                f"the {profile.value} profile needs a storage disk of at least {min_storage} GB, "
                f"got {nodes.storage_disk_gb}",
            )
        )
    if profile is Profile.APPLIANCE and nodes.firmware != "uefi":
        add(PlanIssue("nodes.firmware", "the appliance boots with UEFI only"))
    if nodes.secure_boot and nodes.firmware != "uefi":
        add(PlanIssue("nodes.secure_boot", "Secure Boot needs UEFI firmware"))
    names = plan.node_names()
    if nodes.names is not None:
        if len(nodes.names) != nodes.count:
            add(PlanIssue("nodes.names", f"{len(nodes.names)} names given for {nodes.count} nodes"))
        for i, name in enumerate(nodes.names):
            if not _HOSTNAME.match(name):
                add(PlanIssue(f"nodes.names.{i}", "must be lower-case letters, digits and '-', at most 63 characters"))
        if len(set(nodes.names)) != len(nodes.names):
            add(PlanIssue("nodes.names", "node names must be unique"))
    issues.extend(_network_issues(plan, len(names)))
    if plan.handoff.leader is not None and plan.handoff.leader not in names:
        add(PlanIssue("handoff.leader", f"no node is named {plan.handoff.leader!r} (nodes: {', '.join(names)})"))
    if plan.readiness.ssh and plan.cluster.node_account.ssh_private_key is None:
        add(
            PlanIssue(
                "cluster.node_account.ssh_private_key",
                "the readiness ladder logs in over SSH: give the private key matching cluster.ssh_public_keys "
                "(or set readiness.ssh: false)",
            )
        )
    if plan.readiness.ssh and not plan.cluster.ssh_public_keys:
        add(PlanIssue("cluster.ssh_public_keys", "at least one key is needed for the SSH readiness check"))
    if plan.iso.is_url and plan.iso.sha256 is None:
        add(PlanIssue("iso.sha256", "an ISO fetched from a URL needs its SHA-256"))
    if plan.handoff.kind == "palette-local-api" and plan.profile is Profile.APPLIANCE and plan.content is None:
        # The appliance forms its cluster from the uploaded content bundle (its install flow, step 5): without
        # one, cluster creation can only fail, after the whole deployment.
        add(PlanIssue("content", "the appliance's palette-local-api hand-off needs the content bundle (content.path)"))
    if plan.handoff.kind == "palette-local-api" and plan.readiness.local_api is False:
        add(PlanIssue("readiness.local_api", "the palette-local-api hand-off needs the Local API rung"))
    return issues


def _network_issues(plan: DeploymentPlan, count: int) -> list[PlanIssue]:
    net = plan.nodes.network
    issues: list[PlanIssue] = []
    if net.mode == "dhcp":
        if net.addresses:
            issues.append(PlanIssue("nodes.network.addresses", "static addresses given with mode: dhcp"))
        return issues
    if len(net.addresses) != count:
        issues.append(
            PlanIssue(
                "nodes.network.addresses", f"static mode needs one address per node: {count}, got {len(net.addresses)}"
            )
        )
    if net.gateway is None:
        issues.append(PlanIssue("nodes.network.gateway", "static mode needs a gateway"))
    seen: set[ipaddress.IPv4Address] = set()
    for i, iface in enumerate(net.addresses):
        if iface.ip in seen:
            issues.append(PlanIssue(f"nodes.network.addresses.{i}", f"{iface.ip} is used twice"))
        seen.add(iface.ip)
        if iface.ip == plan.cluster.vip:
            issues.append(PlanIssue(f"nodes.network.addresses.{i}", "a node address cannot be the cluster VIP"))
        if iface.network.prefixlen == 32:
            issues.append(PlanIssue(f"nodes.network.addresses.{i}", "give the prefix length, e.g. 10.0.0.11/24"))
        elif net.gateway is not None and net.gateway not in iface.network:
            issues.append(
                PlanIssue(f"nodes.network.addresses.{i}", f"gateway {net.gateway} is outside {iface.network}")
            )
    return issues


# --------------------------------------------------------------------------------------------------- loading


def _issue_from_pydantic(err: Mapping[str, Any], prefix: str = "") -> PlanIssue:
    loc = ".".join(str(p) for p in err.get("loc", ()))
    path = f"{prefix}.{loc}" if prefix and loc else (prefix or loc)
    # Only the message: pydantic's 'input' may hold a secret typed inline by mistake.
    return PlanIssue(path, str(err.get("msg", "invalid value")))


def _platform_issues(plan_platform: Any, context: dict[str, Any]) -> tuple[list[PlanIssue], Any]:
    from palette_provision.errors import ProviderNotFound
    from palette_provision.registry import load_provider_class

    if not isinstance(plan_platform, Mapping) or not isinstance(plan_platform.get("provider"), str):
        return [], None
    name = plan_platform["provider"]
    try:
        provider_cls = load_provider_class(name)
    except ProviderNotFound as exc:
        return [PlanIssue("platform.provider", str(exc))], None
    options = {k: v for k, v in plan_platform.items() if k != "provider"}
    try:
        return [], provider_cls.settings_model.model_validate(options, context=context)
    except ValidationError as exc:
        return [_issue_from_pydantic(e, "platform") for e in exc.errors()], None


def parse_plan(data: Any, *, base_dir: Path | None = None, source: str | None = None) -> DeploymentPlan:
    """Validate a mapping into a :class:`DeploymentPlan`, provider settings included.

    Raises:
        PlanError: with every problem found (field path and rule), never echoing a secret.
    """
    if not isinstance(data, Mapping):
        raise PlanError(
            [PlanIssue("", "a plan is a mapping of sections (name, iso, cluster, nodes, platform...)")], source
        )
    if any(not isinstance(k, str) for k in data):
        raise PlanError([PlanIssue("", "section names must be strings")], source)
    context = {"base_dir": base_dir}
    issues: list[PlanIssue] = []
    plan: DeploymentPlan | None = None
    try:
        plan = DeploymentPlan.model_validate(data, context=context)
    except ValidationError as exc:
        issues.extend(_issue_from_pydantic(e) for e in exc.errors())
    except (TypeError, ValueError, RecursionError) as exc:
        issues.append(PlanIssue("", f"unreadable plan structure ({type(exc).__name__})"))
    platform_issues, settings = _platform_issues(data.get("platform"), context)
    issues.extend(platform_issues)
    if plan is not None:
        issues.extend(_rule_issues(plan))
    if issues or plan is None:
        raise PlanError(issues or [PlanIssue("", "invalid plan")], source)
    plan._settings = settings
    plan._base_dir = base_dir
    return plan


class _NoAliasLoader(yaml.SafeLoader):
    """Safe YAML without aliases: a plan never needs them, and alias bombs would stall validation."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None, None, "YAML aliases (*name) are not allowed in a plan", event.start_mark
            )
        return super().compose_node(parent, index)


def load_plan(path: str | Path) -> DeploymentPlan:
    """Read a plan from a YAML or JSON file (JSON is YAML) and validate it with :func:`parse_plan`.

    Relative paths and ``file:`` secret references inside are resolved against the file's folder.

    Raises:
        PlanError: unreadable file, bad YAML (with line and column), or an invalid plan.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError([PlanIssue("", f"cannot read plan file: {type(exc).__name__}")], str(path)) from None
    return parse_plan_text(text, base_dir=path.resolve().parent, source=str(path))


def parse_plan_text(text: str, *, base_dir: Path | None = None, source: str | None = None) -> DeploymentPlan:
    """Parse YAML or JSON text into a plan. See :func:`load_plan`."""
    try:
        data = yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        # Only the problem, not the quoted source line, which could hold anything the user typed.
        raise PlanError([PlanIssue("", f"YAML syntax error at {where}{exc.problem or 'unreadable'}")], source) from None
    except (yaml.YAMLError, RecursionError, ValueError) as exc:
        raise PlanError([PlanIssue("", f"YAML syntax error ({type(exc).__name__})")], source) from None
    return parse_plan(data, base_dir=base_dir, source=source)
