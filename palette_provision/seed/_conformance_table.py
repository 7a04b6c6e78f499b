"""The data of the seed's conformance table: the published references and the rules written from them.

See :mod:`palette_provision.seed._conformance` for what a rule means and how a document is checked, and
``docs/seed-conformance.md`` for the readable list and how to update it. Our own table, written from the references
in :data:`SOURCES` (no file of theirs is copied).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = ["RULES", "SOURCES", "STAGE_NAMES", "KeyRule", "Kind", "SourceRef"]

Kind = Literal["string", "integer", "boolean", "list-of-strings", "mapping", "list", "any"]


@dataclass(frozen=True)
class SourceRef:
    """A published reference: the repository, the files read, and the commit they were read at."""

    repo: str
    paths: tuple[str, ...]
    commit: str
    title: str


#: The references the table follows, by the short id each rule's ``source`` uses.
SOURCES: Mapping[str, SourceRef] = {
    "palette": SourceRef(
        "spectrocloud/librarium",
        ("docs/docs-content/clusters/edge/edge-configuration/installer-reference.md",),
        "006fbe9d9c5f0c45fd82ceab3a3c54cf282b7671",
        "Spectro Cloud Edge Installer Configuration Reference (stylus.*, install.*, stages.*)",
    ),
    "palette-stages": SourceRef(
        "spectrocloud/librarium",
        ("docs/docs-content/clusters/edge/edge-configuration/cloud-init.md",),
        "06b5742dc5130fc90b85ea7a2790557386507b26",
        "Spectro Cloud Edge cloud-init stages (stage names, examples)",
    ),
    "kairos-schema": SourceRef(
        "kairos-io/kairos",
        ("sdk/schema/root_schema.go", "sdk/schema/install_schema.go", "sdk/schema/users_schema.go"),
        "ca022425bf225ba92d861547a3ddf6fac488d2ba",
        "Kairos JSON schema structs (published as kairos.io/<version>/cloud-config.json)",
    ),
    "kairos-config": SourceRef(
        "kairos-io/kairos",
        ("sdk/types/install/install.go", "sdk/types/partitions/partitions.go", "sdk/types/config/config.go"),
        "ca022425bf225ba92d861547a3ddf6fac488d2ba",
        "Kairos configuration structs the agent decodes",
    ),
    "kairos-agent": SourceRef(
        "kairos-io/kairos",
        ("agent/pkg/utils/runstage.go", "agent/pkg/action/install.go", "agent/pkg/constants/constants.go"),
        "ca022425bf225ba92d861547a3ddf6fac488d2ba",
        "Kairos agent: the stages it runs, each with .before and .after",
    ),
    "kairos-docs": SourceRef(
        "kairos-io/kairos-docs",
        ("docs/reference/configuration.md", "docs/architecture/cloud-init.md"),
        "12722ecdbc20cff2447d1dcb30468a84706148ab",
        "Kairos configuration reference and stage list",
    ),
    "yip": SourceRef(
        "mudler/yip",
        ("pkg/schema/schema.go", "pkg/plugins/file_decoder.go"),
        "62df27ab710ad25ae2111baeba5e01429d6c81aa",
        "yip stage schema (the Stage struct and its parts)",
    ),
    "yip-cloudinit": SourceRef(
        "mudler/yip",
        ("pkg/schema/loader_cloudinit.go", "pkg/schema/cloudinit/config.go"),
        "62df27ab710ad25ae2111baeba5e01429d6c81aa",
        "yip's cloud-init compatibility: top-level hostname, users, write_files... turned into stages",
    ),
}


@dataclass(frozen=True)
class KeyRule:
    """One key of the table.

    ``kind`` is one kind, or a tuple when the references disagree (``note`` says why). ``allowed`` lists the only
    string values accepted; ``pattern`` a published form (a regular expression matched in full). ``open`` marks a
    mapping that takes arbitrary keys; ``names`` lists the published names of a ``*`` key (empty: any name).
    ``deprecated`` and ``caution`` turn the key's presence into a warning carrying that text.
    """

    path: str
    kind: Kind | tuple[Kind, ...]
    source: str
    allowed: tuple[str, ...] = ()
    pattern: str | None = None
    deprecated: str | None = None
    caution: str | None = None
    open: bool = False
    names: frozenset[str] = frozenset()
    note: str = ""
    also: tuple[str, ...] = ()

    @property
    def kinds(self) -> tuple[Kind, ...]:
        """The accepted kinds, always as a tuple."""
        return self.kind if isinstance(self.kind, tuple) else (self.kind,)



# ------------------------------------------------------------------------------------------------ stage names

_BOOT_STAGES = ("rootfs", "initramfs", "boot", "fs", "network", "reconcile")
_ACTION_STAGES = (
    "kairos-install.pre", "kairos-install.after", "before-install", "after-install", "after-install-chroot",
    "kairos-uki-install.pre", "kairos-uki-install.after",
    "before-reset", "after-reset", "after-reset-chroot", "kairos-uki-reset.pre", "kairos-uki-reset.after",
    "before-upgrade", "after-upgrade", "after-upgrade-chroot", "kairos-uki-upgrade.pre", "kairos-uki-upgrade.after",
)  # fmt: skip
#: Every stage name Kairos runs by itself: the published ones, each also with ``.before`` and ``.after`` (the
#: agent's stage runner runs ``<stage>.before``, ``<stage>``, ``<stage>.after`` for every stage it runs).
STAGE_NAMES: frozenset[str] = frozenset(
    f"{stage}{suffix}" for stage in _BOOT_STAGES + _ACTION_STAGES for suffix in ("", ".before", ".after")
)

# ------------------------------------------------------------------------------------------------ the table

_S: Kind = "string"
_I: Kind = "integer"
_B: Kind = "boolean"
_LS: Kind = "list-of-strings"
_M: Kind = "mapping"
_L: Kind = "list"
_P, _K, _KC, _KD, _Y, _YC = "palette", "kairos-schema", "kairos-config", "kairos-docs", "yip", "yip-cloudinit"
_R = KeyRule


def _yip_user(base: str, source: str) -> tuple[KeyRule, ...]:
    keys = {"name": _S, "passwd": _S, "ssh_authorized_keys": _LS, "gecos": _S, "homedir": _S, "no_create_home": _B,
            "primary_group": _S, "groups": _LS, "no_user_group": _B, "system": _B, "no_log_init": _B, "shell": _S,
            "lock_passwd": _B, "uid": _S}  # fmt: skip
    return tuple(_R(f"{base}.{k}", kind, source) for k, kind in keys.items())


def _owned(base: str, *extra: tuple[str, Kind]) -> tuple[KeyRule, ...]:
    """yip's File/Download/Directory: no YAML tags, so the keys are the lowercased Go field names."""
    keys: tuple[tuple[str, Kind], ...] = (("path", _S), ("permissions", _I), ("owner", _I), ("group", _I), *extra)
    return tuple(
        _R(f"{base}.{k}", kind, _Y, note="a decimal integer (YAML 0644 is octal 420)" if k == "permissions" else "")
        for k, kind in keys
    )


_ST = "stages.*[]"
#: The encodings yip decodes (pkg/plugins/file_decoder.go).
_ENCODINGS = ("b64", "base64", "gz", "gzip", "gz+base64", "gzip+base64", "gz+b64", "gzip+b64")
RULES: tuple[KeyRule, ...] = (
    # --- top level (Kairos) ---------------------------------------------------------------------------------------
    _R("hostname", _S, _KD, also=(_YC,), note="cloud-init syntax: yip turns it into stages.initramfs[].hostname; "
      "not in the Kairos JSON schema"),
    _R("name", _S, _Y, note="the yip config's name"),
    _R("users", _L, _K, also=(_KD, _YC), note="a list of users (yip turns it into a boot-stage step)"),
    _R("users[]", _M, _K),
    *_yip_user("users[]", _YC),
    _R("users[].lockPasswd", _B, _K, caution="the Kairos JSON schema spells it so, but yip, which creates the "
      "users, reads lock_passwd"),
    _R("users[].coreos_ssh_import_github", _S, _YC, deprecated="yip marks it deprecated"),
    _R("users[].coreos_ssh_import_github_users", _LS, _YC, deprecated="yip marks it deprecated"),
    _R("users[].coreos_ssh_import_url", _S, _YC, deprecated="yip marks it deprecated"),
    _R("ssh_authorized_keys", _LS, _YC), _R("runcmd", _LS, _YC, also=(_KD,)),
    _R("write_files", _L, _YC, also=(_KD,)), _R("write_files[]", _M, _YC),
    _R("write_files[].path", _S, _YC), _R("write_files[].content", _S, _YC), _R("write_files[].owner", _S, _YC),
    _R("write_files[].permissions", _S, _YC, pattern=r"0?[0-7]{3,4}", note="an octal string, e.g. \"0644\""),
    _R("write_files[].encoding", _S, _YC, allowed=_ENCODINGS),
    _R("growpart", _M, _YC, also=(_KD,)), _R("growpart.mode", _S, _YC), _R("growpart.devices", _LS, _YC),
    _R("config_url", _S, _K), _R("env", _LS, _K), _R("fail_on_bundles_errors", _B, _K),
    _R("grub_options", _M, _K, open=True), _R("options", (_L, _M), _K, open=True,
      note="a list in the JSON schema, a map of strings in the agent's config"),
    _R("p2p", _M, _K, open=True, note="Kairos p2p: not used by Palette"), _R("debug", _B, _K), _R("strict", _B, _K),
    _R("cloud-init-paths", _LS, _K), _R("eject-cd", _B, _K), _R("fullcloudconfig", _S, _K), _R("cosign", _B, _K),
    _R("verify", _B, _K), _R("cosign-key", _S, _K), _R("arch", _S, _K), _R("platform", _M, _K, open=True),
    _R("squash-compression", _LS, _K), _R("squash-no-compression", _B, _K), _R("uki-max-entries", _I, _K),
    _R("bind-pcrs", _LS, _KC, also=(_KD,)), _R("bind-public-pcrs", _LS, _KC, also=(_KD,)),
    _R("logs", _M, _KD), _R("logs.journal", _LS, _KD), _R("logs.files", _LS, _KD),
    _R("k3s", _M, _KD, open=True), _R("k3s-agent", _M, _KD, open=True), _R("kubevip", _M, _KD, open=True),
    _R("reset", _M, _KD, open=True), _R("upgrade", _M, _KD, open=True),
    # --- install ----------------------------------------------------------------------------------------------------
    _R("install", _M, _P, also=(_K,)),
    _R("install.auto", _B, _K), _R("install.poweroff", _B, _P, also=(_K,)), _R("install.reboot", _B, _P, also=(_K,)),
    _R("install.device", _S, _K, pattern=r"auto|/dev/.+|script://.+"),
    _R("install.bind_mounts", _LS, _P, also=(_K,)), _R("install.extra-dirs-rootfs", _LS, _P, also=(_K,)),
    _R("install.ephemeral_mounts", _LS, _K), _R("install.encrypted_partitions", _LS, _K), _R("install.env", _L, _K),
    _R("install.no-format", _B, _KC, also=(_KD,)),
    _R("install.no_format", _B, _K, caution="the JSON schema spells it so, but the agent reads no-format"),
    _R("install.force", _B, _K), _R("install.image", _S, _K, caution="in the JSON schema only: the agent's install "
      "settings have no image field (they read source)"),
    _R("install.source", _S, _KC), _R("install.skip_copy_kcrypt_plugin", _B, _K), _R("install.grub-entry-name", _S, _K),
    _R("install.ssh_hardening", _B, _K), _R("install.nousers", _B, _KC),
    # bundles, at the top level and under install
    *(r for base in ("bundles", "install.bundles") for r in (_R(base, _L, _K), _R(f"{base}[]", _M, _K),
      *(_R(f"{base}[].{k}", kind, _K) for k, kind in
        (("db_path", _S), ("local_file", _B), ("repository", _S), ("rootfs_path", _S), ("targets", _LS))))),
    _R("install.grub_options", _M, _P, also=(_K,)),
    _R("install.grub_options.extra_cmdline", (_S, _M), _P, also=(_K,), open=True,
      note="a map of strings in the installer reference, a string in the Kairos schema"),
    *(_R(f"install.grub_options.{k}", _S, _K) for k in ("default_fallback", "default_menu_entry",
      "extra_active_cmdline", "extra_passive_cmdline", "extra_recovery_cmdline", "next_entry", "saved_entry")),
    _R("install.partitions", _M, _P, also=(_K,)),
    *(r for part in ("oem", "recovery", "state", "persistent") for r in (
        _R(f"install.partitions.{part}", _M, _P if part == "persistent" else _K),
        _R(f"install.partitions.{part}.size", _I, _P if part == "persistent" else _K, note="MiB"),
        _R(f"install.partitions.{part}.fs", _S, _P if part == "persistent" else _K),
        _R(f"install.partitions.{part}.name", _S, _K), _R(f"install.partitions.{part}.label", _S, _KC),
        _R(f"install.partitions.{part}.partition_label", _S, _KC))),
    _R("install.extra-partitions", _L, _P, also=(_K,)), _R("install.extra-partitions[]", _M, _P),
    _R("install.extra-partitions[].name", _S, _P), _R("install.extra-partitions[].size", _I, _P, note="MiB"),
    _R("install.extra-partitions[].fs", _S, _P), _R("install.extra-partitions[].label", _S, _P),
    *(r for img in ("system", "recovery-system", "passive") for r in (
        _R(f"install.{img}", _M, _K), _R(f"install.{img}.size", _I, _K, note="MiB"), _R(f"install.{img}.uri", _S, _K),
        _R(f"install.{img}.source", _S, _KC, also=(_KD,)), _R(f"install.{img}.label", _S, _KC),
        _R(f"install.{img}.fs", _S, _KC))),
    # --- stylus (Palette agent) -------------------------------------------------------------------------------------
    _R("stylus", _M, _P), _R("stylus.debug", _B, _P), _R("stylus.trace", _B, _P),
    _R("stylus.disablePasswordUpdate", _B, _P),
    _R("stylus.disableTui", _B, _P), _R("stylus.enableMultiNode", _B, _P),
    _R("stylus.featureGate", _S, _P, note="comma-separated: UserDataForm, DisableWorkerNodeCapReconcile"),
    _R("stylus.includeTui", _B, _P, deprecated="the TUI is always enabled whatever its value; drop the key"),
    _R("stylus.managementMode", _S, _P, allowed=("local", "central")), _R("stylus.path", _S, _P),
    _R("stylus.localUI", _M, _P), _R("stylus.localUI.port", _I, _P), _R("stylus.localUI.login", _M, _P),
    _R("stylus.localUI.login.attemptsBeforeExponentialDelayStarts", _I, _P),
    _R("stylus.localUI.login.disableRateLimiting", _B, _P), _R("stylus.localUI.login.lockoutDurationInMinutes", _I, _P),
    _R("stylus.localUI.login.maxFailedAttemptsBeforeLockout", _I, _P),
    _R("stylus.vip", _M, _P), _R("stylus.vip.skip", _B, _P),
    _R("stylus.imageRedirectWebhook", _M, _P), _R("stylus.imageRedirectWebhook.enable", _B, _P),
    _R("stylus.imageRedirectWebhook.port", _I, _P),
    _R("stylus.externalRegistries", _M, _P), _R("stylus.externalRegistries.registries", _L, _P),
    _R("stylus.externalRegistries.registries[]", _M, _P),
    *(_R(f"stylus.externalRegistries.registries[].{k}", kind, _P) for k, kind in (("domain", _S), ("username", _S),
      ("password", _S), ("repositoryName", _S), ("certificates", _LS), ("insecure", _B), ("encodedPassword", _B))),
    _R("stylus.externalRegistries.registryMappingRules", _M, _P, open=True),
    _R("stylus.registryCredentials", _M, _P),
    *(_R(f"stylus.registryCredentials.{k}", kind, _P) for k, kind in
      (("domain", _S), ("username", _S), ("password", _S), ("encodedPassword", _B))),
    _R("stylus.registryCredentials.insecure", _B, _P, note="in the reference's example, not its table"),
    _R("stylus.site", _M, _P), _R("stylus.site.caCerts", _LS, _P, note="base64-encoded"),
    *(_R(f"stylus.site.{k}", _S, _P) for k in ("clusterId", "clusterName", "edgeHostToken", "hostName", "name",
      "paletteEndpoint", "projectName", "projectUid", "registrationURL")),
    _R("stylus.site.prefix", _S, _P, pattern=r"[A-Za-z0-9-]*"), _R("stylus.site.insecureSkipVerify", _B, _P),
    _R("stylus.site.ntpServers", (_S, _LS), _P, note="typed String in the reference's table; a list of servers is the "
      "usual form"),
    _R("stylus.site.deviceUIDPaths", _L, _P), _R("stylus.site.deviceUIDPaths[]", _M, _P),
    _R("stylus.site.deviceUIDPaths[].name", _S, _P), _R("stylus.site.deviceUIDPaths[].regex", _S, _P),
    _R("stylus.site.remoteShell", _M, _P), _R("stylus.site.remoteShell.disable", _B, _P),
    _R("stylus.site.tags", _M, _P, open=True),
    _R("stylus.site.tagsFromFile", _M, _P), _R("stylus.site.tagsFromFile.fileName", _S, _P),
    _R("stylus.site.tagsFromFile.delimiter", _S, _P), _R("stylus.site.tagsFromFile.separator", _S, _P),
    _R("stylus.site.tagsFromScript", _M, _P), _R("stylus.site.tagsFromScript.scriptName", _S, _P),
    _R("stylus.site.tagsFromScript.timeout", _I, _P, note="seconds"),
    _R("stylus.site.users", (_M, _L), _P, note="called a list, but keyed by user name in the reference"),
    _R("stylus.site.users.*", _M, _P), _R("stylus.site.users[]", _M, _P),
    *(_R(f"stylus.site.users{sep}.{k}", kind, _P) for sep in (".*", "[]") for k, kind in (("groups", _LS),
      ("passwd", _S), ("passwordExpiry", _S), ("lock_passwd", _B), ("ssh_authorized_keys", _LS))),
    _R("stylus.site.network", _M, _P),
    *(_R(f"stylus.site.network.{k}", _S, _P) for k in ("httpProxy", "httpsProxy", "noProxy", "nameserver")),
    _R("stylus.site.network.interfaces", _M, _P), _R("stylus.site.network.interfaces.*", _M, _P, note="a NIC name"),
    _R("stylus.site.network.interfaces.*.type", _S, _P, allowed=("dhcp", "static")),
    _R("stylus.site.network.interfaces.*.ipAddress", _S, _P, also=("palette-stages",),
      note="the examples give address/prefix, e.g. 10.0.10.25/24"),
    _R("stylus.site.network.interfaces.*.mask", _S, _P),
    _R("stylus.site.network.interfaces.*.gateway", _S, _P), _R("stylus.site.network.interfaces.*.nameserver", _S, _P),
    # --- stages (yip) -----------------------------------------------------------------------------------------------
    _R("stages", _M, _Y, also=(_P, _K)),
    _R("stages.*", _L, _Y, also=("palette-stages", "kairos-agent", _KD), names=STAGE_NAMES,
      note="Kairos runs by itself only the published stage names, each also with .before and .after"),
    _R(_ST, _M, _Y),
    _R(f"{_ST}.name", _S, _Y), _R(f"{_ST}.commands", _LS, _Y, also=(_K,)), _R(f"{_ST}.if", _S, _Y),
    _R(f"{_ST}.hostname", _S, _Y), _R(f"{_ST}.node", _S, _Y), _R(f"{_ST}.modules", _LS, _Y),
    _R(f"{_ST}.environment_file", _S, _Y),
    *(_R(f"{_ST}.{k}", _S, _Y) for k in ("only_os", "only_os_version", "only_arch", "only_service_manager")),
    *(_R(f"{_ST}.{k}", _M, _Y, open=True) for k in ("sysctl", "authorized_keys", "environment", "package_pins",
      "systemd_firstboot", "timesyncd")),
    _R(f"{_ST}.if_files", _M, _Y), *(_R(f"{_ST}.if_files.{k}", _LS, _Y) for k in ("any", "all", "none")),
    _R(f"{_ST}.users", _M, _Y, also=(_P,), note="keyed by user name"), _R(f"{_ST}.users.*", _M, _Y),
    *_yip_user(f"{_ST}.users.*", _Y),
    _R(f"{_ST}.files", _L, _Y), _R(f"{_ST}.files[]", _M, _Y),
    *_owned(f"{_ST}.files[]", ("content", _S), ("ownerstring", _S)),
    _R(f"{_ST}.files[].encoding", _S, _Y, allowed=("", *_ENCODINGS), note="other values are written verbatim"),
    _R(f"{_ST}.downloads", _L, _Y), _R(f"{_ST}.downloads[]", _M, _Y),
    *_owned(f"{_ST}.downloads[]", ("url", _S), ("timeout", _I), ("ownerstring", _S)),
    _R(f"{_ST}.directories", _L, _Y), _R(f"{_ST}.directories[]", _M, _Y), *_owned(f"{_ST}.directories[]"),
    *(r for k in ("ensure_entities", "delete_entities") for r in (_R(f"{_ST}.{k}", _L, _Y),
      _R(f"{_ST}.{k}[]", _M, _Y), _R(f"{_ST}.{k}[].path", _S, _Y), _R(f"{_ST}.{k}[].entity", _S, _Y))),
    _R(f"{_ST}.dns", _M, _Y), _R(f"{_ST}.dns.nameservers", _LS, _Y), _R(f"{_ST}.dns.search", _LS, _Y),
    _R(f"{_ST}.dns.options", _LS, _Y), _R(f"{_ST}.dns.path", _S, _Y),
    _R(f"{_ST}.systemctl", _M, _Y),
    *(_R(f"{_ST}.systemctl.{k}", _LS, _Y) for k in ("enable", "disable", "start", "mask")),
    _R(f"{_ST}.systemctl.overrides", _L, _Y), _R(f"{_ST}.systemctl.overrides[]", _M, _Y),
    *(_R(f"{_ST}.systemctl.overrides[].{k}", _S, _Y) for k in ("service", "content", "name")),
    _R(f"{_ST}.packages", _M, _Y), _R(f"{_ST}.packages.install", _LS, _Y), _R(f"{_ST}.packages.remove", _LS, _Y),
    _R(f"{_ST}.packages.refresh", _B, _Y), _R(f"{_ST}.packages.upgrade", _B, _Y),
    _R(f"{_ST}.unpack_images", _L, _Y), _R(f"{_ST}.unpack_images[]", _M, _Y),
    *(_R(f"{_ST}.unpack_images[].{k}", _S, _Y) for k in ("source", "target", "platform")),
    _R(f"{_ST}.after", _L, _Y), _R(f"{_ST}.after[]", _M, _Y), _R(f"{_ST}.after[].name", _S, _Y),
    _R(f"{_ST}.datasource", _M, _Y), _R(f"{_ST}.datasource.providers", _LS, _Y), _R(f"{_ST}.datasource.path", _S, _Y),
    _R(f"{_ST}.datasource.userdata_name", _S, _Y),
    _R(f"{_ST}.layout", _M, _Y), _R(f"{_ST}.layout.device", _M, _Y), _R(f"{_ST}.layout.device.init_disk", _B, _Y),
    *(_R(f"{_ST}.layout.device.{k}", _S, _Y) for k in ("disk_name", "label", "path")),
    _R(f"{_ST}.layout.expand_partition", _M, _Y), _R(f"{_ST}.layout.expand_partition.size", _I, _Y),
    _R(f"{_ST}.layout.add_partitions", _L, _Y), _R(f"{_ST}.layout.add_partitions[]", _M, _Y),
    *(_R(f"{_ST}.layout.add_partitions[].{k}", kind, _Y) for k, kind in (("fsLabel", _S), ("size", _I),
      ("pLabel", _S), ("filesystem", _S), ("bootable", _B))),
    _R(f"{_ST}.git", _M, _Y), *(_R(f"{_ST}.git.{k}", _S, _Y) for k in ("url", "path", "branch")),
    _R(f"{_ST}.git.branch_only", _B, _Y), _R(f"{_ST}.git.auth", _M, _Y),
    *(_R(f"{_ST}.git.auth.{k}", kind, _Y) for k, kind in (("username", _S), ("password", _S), ("private_key", _S),
      ("insecure", _B), ("public_key", _S))),
)  # fmt: skip
