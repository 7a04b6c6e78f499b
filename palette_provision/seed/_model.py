"""The typed model of a node's user-data, its rendering, and the ``user_data_extra`` escape hatch.

The layout is the contract of ``docs/seed-format.md`` (the lab's test appliance parses it; a real appliance reads
the same keys).

The ``user_data_extra`` merge and its rules are in :mod:`._extra`.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import threading
from collections.abc import Mapping
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict

from palette_provision.errors import PlanError, PlanIssue
from palette_provision.plan import DeploymentPlan, NodeSpec, Profile
from palette_provision.secrets import Secret
from palette_provision.seed._extra import deep_merge, legacy_issues, library_key_issues
from palette_provision.seed._hostkey import HostKey
from palette_provision.seed._sha512crypt import CRYPT_ALPHABET, SEED_ROUNDS, sha512_crypt

__all__ = [
    "CLOUD_CONFIG_HEADER",
    "HOST_KEYS_STAGE",
    "USERS_STAGE",
    "SeedFile",
    "SeedInstall",
    "SeedInterface",
    "SeedModel",
    "SeedStylus",
    "SeedUser",
    "derive_salt",
    "edge_host_id",
    "render_meta_data",
    "render_user_data",
]

#: The literal first line of every Kairos cloud-config.
CLOUD_CONFIG_HEADER = "#cloud-config\n"
#: Names of the two ``stages.initramfs`` steps the library writes.
USERS_STAGE = "palette-provision-users"
HOST_KEYS_STAGE = "palette-provision-host-keys"
#: The Kairos stage run before the installer partitions the disk, and the library's wipe step in it.
WIPE_STAGE_NAME = "kairos-install.pre"
WIPE_STAGE = "palette-provision-wipe-install-disk"
#: The Kairos stage run once the network is up, and the library's address report step in it (DHCP nodes).
REPORT_STAGE_NAME = "network"
REPORT_STAGE = "palette-provision-report-address"
#: Characters the installer reference does not allow in an Edge host ID.
_ID_FORBIDDEN = set("/?#&+%,$~!@*(){}|=;:<>'.^\" \t\n")


def edge_host_id(plan_name: str, node_name: str) -> str:
    """The Edge host ID (``stylus.site.name``): ``<plan>-<node>``, characters the reference forbids as ``-``.

    >>> edge_host_id("site-1", "palette-1")
    'site-1-palette-1'
    >>> edge_host_id("lab.example", "n1")
    'lab-example-n1'
    """
    return "".join("-" if c in _ID_FORBIDDEN else c for c in f"{plan_name}-{node_name}")[:128]

_SALT_DOMAIN = b"palette-provision/sha512-crypt-salt/v2\0"


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class SeedInstall(_Part):
    """``install:``: unattended install onto ``device``, then power off (the library detects the end by it).

    ``wipe`` adds a ``kairos-install.pre`` step running ``wipefs --all`` on the device before the installer
    partitions it (the appliance's docs require an install disk without old partitions).
    """

    auto: bool = True
    device: str = "auto"
    poweroff: bool = True
    reboot: bool = False
    wipe: bool = False


class SeedInterface(_Part):
    """One NIC under ``stylus.site.network.interfaces``: DHCP, or a static address with gateway and DNS."""

    type: Literal["static", "dhcp"] = "dhcp"
    address: ipaddress.IPv4Interface | None = None
    gateway: ipaddress.IPv4Address | None = None
    nameserver: ipaddress.IPv4Address | None = None

    def to_document(self) -> dict[str, Any]:
        """The YAML mapping (``type`` only for DHCP)."""
        if self.type == "dhcp" or self.address is None:
            return {"type": "dhcp"}
        # The prefix goes in ipAddress ("10.0.10.25/24"), as every published example writes it; the reference
        # types ``mask`` as a String and no example uses it (docs/seed-format.md).
        doc: dict[str, Any] = {"type": "static", "ipAddress": self.address.with_prefixlen}
        if self.gateway is not None:
            doc["gateway"] = str(self.gateway)
        if self.nameserver is not None:
            doc["nameserver"] = str(self.nameserver)
        return doc


class SeedStylus(_Part):
    """``stylus:``: a locally managed (multi-node) appliance, no TUI, host name and ID, Local UI port, NTP, NICs."""

    management_mode: str = "local"
    enable_multi_node: bool = True
    disable_tui: bool = True
    host_name: str = ""
    edge_host_id: str = ""
    local_ui_port: int = 5080
    ntp_servers: tuple[str, ...] = ()
    interfaces: dict[str, SeedInterface] = {}

    def to_document(self) -> dict[str, Any]:
        """The YAML mapping, keys as Palette spells them."""
        return {
            "managementMode": self.management_mode,
            "enableMultiNode": self.enable_multi_node,
            "disableTui": self.disable_tui,
            "localUI": {"port": self.local_ui_port},
            "site": {
                # The Edge host's name, and so the node's name in the cluster (the installer reference); without
                # it the host would be named from site.name or a generated edge-<serial>.
                "hostName": self.host_name,
                # The Edge host ID (the device ID Palette registers).
                "name": self.edge_host_id,
                "ntpServers": list(self.ntp_servers),
                "network": {"interfaces": {name: nic.to_document() for name, nic in self.interfaces.items()}},
            },
        }


class SeedUser(_Part):
    """An OS account: its SHA-512 crypt hash (a :class:`Secret`: hashes are crackable), groups and SSH keys."""

    name: str
    passwd_hash: Secret
    groups: tuple[str, ...] = ("admin",)
    ssh_authorized_keys: tuple[str, ...] = ()


class SeedFile(_Part):
    """A file the node writes at boot; ``content`` is a :class:`Secret` for private material."""

    path: str
    content: str | Secret
    permissions: int = 0o644
    owner: int = 0
    group: int = 0

    def to_document(self) -> dict[str, Any]:
        """The YAML mapping; reveals a secret ``content`` (call it only to render the seed)."""
        content = self.content.reveal() if isinstance(self.content, Secret) else self.content
        return {
            "path": self.path,
            "permissions": self.permissions,  # Kairos takes a decimal integer (384 = 0o600)
            "owner": self.owner,
            "group": self.group,
            "content": content,
        }


def derive_salt(plan_name: str, account: str) -> str:
    """A 16-character crypt salt for ``account`` in the deployment ``plan_name``: the same on every render.

    Derived from public values only: a salt computed from the password (an HMAC keyed with it, say) would let
    anyone holding the seed test password guesses with one fast hash instead of the SHA-512 rounds. One salt per
    deployment, not per node: the nodes share the account's password, so per-node salts would add no work for an
    attacker (cracking one hash reveals them all), while the rounds (:data:`SEED_ROUNDS`) would be paid per node.

    >>> derive_salt("lab", "kairos") == derive_salt("lab", "kairos")
    True
    >>> derive_salt("lab", "kairos") != derive_salt("site-2", "kairos")
    True
    >>> len(derive_salt("lab", "kairos"))
    16
    """
    digest = hashlib.sha256(_SALT_DOMAIN + "\0".join((plan_name, account)).encode("utf-8")).digest()
    return "".join(CRYPT_ALPHABET[b & 0x3F] for b in digest[:16])


@functools.lru_cache(maxsize=8)
def _cached_hash(password: str, salt: str) -> str:
    return sha512_crypt(password, salt, rounds=SEED_ROUNDS)


_HASH_LOCK = threading.Lock()


def _password_hash(password: str, salt: str) -> str:
    # Computed once per deployment and account, kept in memory beside the Secret it came from. Under the lock: the
    # nodes render their seeds at the same moment, and without it each would pay the 100,000 rounds (the cache is
    # filled only when the first computation ends), 30 nodes costing 30 times 90 ms of CPU under the GIL.
    with _HASH_LOCK:
        return _cached_hash(password, salt)


class SeedModel(_Part):
    """A node's user-data, typed. Build it with :meth:`from_plan`, render it with :meth:`render`.

    ``repr`` shows no secret: the password hash and the private host key are :class:`Secret` values, revealed
    only by :meth:`to_document` while rendering.

    Example::

        model = SeedModel.from_plan(plan, node, HostKey.generate())
        text = model.render(plan.user_data_extra)   # "#cloud-config\\ninstall:\\n  auto: true..."
    """

    hostname: str
    install: SeedInstall = SeedInstall()
    stylus: SeedStylus = SeedStylus()
    users: tuple[SeedUser, ...] = ()
    files: tuple[SeedFile, ...] = ()
    address_report_url: Secret | None = None

    @classmethod
    def from_plan(
        cls, plan: DeploymentPlan, node: NodeSpec, host_key: HostKey, *, address_report_url: str | None = None
    ) -> SeedModel:
        """The model for ``node``: account, SSH keys, ``host_key``, hostname, NIC, DNS, NTP and install; for a DHCP
        node, ``address_report_url`` (where the node sends its addresses once its network is up, see
        :func:`address_report_command`)."""
        account = plan.cluster.node_account
        salt = derive_salt(plan.name, account.username)
        passwd_hash = Secret(_password_hash(account.password.reveal(), salt), source=f"sha512-crypt:{account.username}")
        if node.address is not None:
            nic = SeedInterface(
                type="static",
                address=node.address,
                gateway=node.gateway,
                nameserver=node.dns[0] if node.dns else None,
            )
        else:
            nic = SeedInterface(type="dhcp")
        stylus = SeedStylus(
            enable_multi_node=plan.profile is Profile.APPLIANCE or plan.node_count > 1,
            host_name=node.name,
            edge_host_id=edge_host_id(plan.name, node.name),
            local_ui_port=plan.handoff.local_api_port,
            ntp_servers=tuple(plan.cluster.ntp),
            interfaces={node.interface: nic},
        )
        user = SeedUser(
            name=account.username, passwd_hash=passwd_hash, ssh_authorized_keys=tuple(plan.cluster.ssh_public_keys)
        )
        files = (
            SeedFile(path="/etc/ssh/ssh_host_ed25519_key", content=host_key.private_openssh, permissions=0o600),
            SeedFile(path="/etc/ssh/ssh_host_ed25519_key.pub", content=host_key.public_line, permissions=0o644),
        )
        install = SeedInstall(device=node.install_disk or "auto", wipe=plan.nodes.wipe_install_disk)
        report = None
        if address_report_url is not None and node.address is None:
            report = Secret(address_report_url, source=f"address report URL of {node.name}")
        return cls(hostname=node.name, install=install, stylus=stylus, users=(user,), files=files,
                   address_report_url=report)  # fmt: skip

    def to_document(self) -> dict[str, Any]:
        """The user-data mapping per ``docs/seed-format.md``. Reveals the secrets: call it only to render."""
        users = {
            u.name: {
                "passwd": u.passwd_hash.reveal(),
                "groups": list(u.groups),
                "ssh_authorized_keys": list(u.ssh_authorized_keys),
            }
            for u in self.users
        }
        install = self.install
        stages: dict[str, Any] = {
            "initramfs": [
                {"name": USERS_STAGE, "users": users},
                {"name": HOST_KEYS_STAGE, "files": [f.to_document() for f in self.files]},
            ]
        }
        if install.wipe:
            # kairos-install.pre runs before the installer partitions the disk (before-install would be too late:
            # it runs after partitioning). See docs/seed-conformance.md.
            stages[WIPE_STAGE_NAME] = [{"name": WIPE_STAGE, "commands": [f"wipefs --all {install.device}"]}]
        if self.address_report_url is not None:
            command = address_report_command(self.address_report_url.reveal())
            stages[REPORT_STAGE_NAME] = [{"name": REPORT_STAGE, "commands": [command]}]
        return {
            "install": {
                "auto": install.auto,
                "device": install.device,
                "poweroff": install.poweroff,
                "reboot": install.reboot,
            },
            "stylus": self.stylus.to_document(),
            "stages": stages,
        }

    def render(self, extra: Mapping[str, Any] | None = None) -> str:
        """Render ``#cloud-config`` + YAML, with ``extra`` deep-merged (see the module's merge rules).

        Raises:
            PlanError: ``extra`` removes or changes a key the library depends on (each named, under
                ``user_data_extra.``), or the result is not plain YAML.
        """
        base = self.to_document()
        merged = deep_merge(base, extra or {})
        issues = legacy_issues(extra or {}) + library_key_issues(base, merged)
        if issues:
            raise PlanError(issues)
        return _dump_checked(merged)


# ----------------------------------------------------------------------------------------------- YAML


def address_report_command(url: str) -> str:
    """The shell command a DHCP node runs once its network is up: send its global addresses to ``url``.

    In the background, so the boot does not wait for it; every 5 s for up to 5 minutes until an address is there
    and the media server took it (``ip`` and ``awk`` as in busybox and iproute2; ``curl`` as in Kairos images).
    """
    if not url.startswith(("http://", "https://")) or any(c in url for c in "'\"\\ \n$`"):
        raise ValueError("an address report URL is http(s) and has no quotes, blanks or shell characters")
    return (
        "( i=0; while [ $i -lt 60 ]; do "
        "addrs=$(ip -o addr show scope global | awk '{print $4}'); "
        f"if [ -n \"$addrs\" ] && printf '%s\\n' \"$addrs\" | curl -fsS -m 10 --data-binary @- '{url}'; "
        "then break; fi; "
        "i=$((i + 1)); sleep 5; done ) >/dev/null 2>&1 &"
    )


class _SeedDumper(yaml.SafeDumper):
    """Safe YAML, with multi-line strings (the private key) as literal blocks, as docs/seed-format.md shows."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_SeedDumper.add_representer(str, _represent_str)
_CHECK_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _dump_checked(document: Mapping[str, Any]) -> str:
    try:
        body = yaml.dump(
            dict(document),
            Dumper=_SeedDumper,
            sort_keys=False,
            default_flow_style=False,
            allow_unicode=True,
            width=4096,
        )
    except yaml.YAMLError as exc:
        # Arbitrary Python objects (a tuple, a datetime, a class) in user_data_extra: name the type, not the value.
        raise PlanError(
            [PlanIssue("user_data_extra", f"is not plain YAML data ({type(exc).__name__}: {str(exc).splitlines()[0]})")]
        ) from None
    text = CLOUD_CONFIG_HEADER + body
    if not text.startswith(CLOUD_CONFIG_HEADER):
        raise PlanError([PlanIssue("user_data_extra", "the user-data must start with '#cloud-config'")])
    # Reading back may use libyaml (the same constructor, a C parser: a third of a seed's rendering time saved);
    # writing may not, since the bytes would then depend on whether libyaml is installed.
    if yaml.load(text, Loader=_CHECK_LOADER) != document:  # noqa: S506 - a safe loader
        raise PlanError(
            [PlanIssue("user_data_extra", "does not survive a YAML round trip (use string keys and plain values)")]
        )
    return text


# ----------------------------------------------------------------------------------------------- entry points


def render_user_data(
    plan: DeploymentPlan, node: NodeSpec, host_key: HostKey, *, address_report_url: str | None = None
) -> str:
    """Render ``node``'s user-data: ``#cloud-config`` + YAML per ``docs/seed-format.md``, ``plan.user_data_extra``
    deep-merged. The same plan, node and key (and report URL) give the same text. ``address_report_url``: see
    :meth:`SeedModel.from_plan` (DHCP nodes only; ignored for a node with a planned address).

    Example::

        text = render_user_data(plan, plan.node_specs()[0], HostKey.generate())
        assert text.startswith("#cloud-config\\n")

    Raises:
        PlanError: ``user_data_extra`` removes or changes a key the library depends on, or is not plain YAML.
    """
    model = SeedModel.from_plan(plan, node, host_key, address_report_url=address_report_url)
    return model.render(plan.user_data_extra)


def render_meta_data(plan: DeploymentPlan, node: NodeSpec) -> str:
    """Render NoCloud ``meta-data``: ``instance-id: <plan>-<node>`` and ``local-hostname: <node>``."""
    return yaml.safe_dump({"instance-id": f"{plan.name}-{node.name}", "local-hostname": node.name}, sort_keys=False)
