"""The seed: each node's Kairos/Palette user-data, packed as a NoCloud ``cidata`` ISO.

The seed carries the node account (password as a SHA-512 crypt hash only), its SSH authorized keys, an ed25519 SSH
host key generated here (so the fingerprint is known before first contact), the hostname, the NIC (static or
DHCP), DNS, NTP, the ``stylus`` settings of a locally managed appliance, and an unattended install that powers the
node off when done. Layout: ``docs/seed-format.md``. Seeds are deterministic: the same plan and host key give the
same bytes, so staging can skip a seed that is already in place.

A seed holds secrets (a password hash, a private host key): it is written with mode 0600 and never logged.

Example::

    from palette_provision.seed import HostKey, build_seed_iso, write_seed

    node = plan.node_specs()[0]
    key = HostKey.generate()
    write_seed(Path(f"{node.name}.iso"), build_seed_iso(plan, node, key))
    journal.set_fact(node.name, "host_key_public", key.public_line)   # pinned by the readiness ladder
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from palette_provision.journal import Fact, Journal
from palette_provision.log import get_logger
from palette_provision.plan import DeploymentPlan, NodeSpec
from palette_provision.provider import SeedFormat
from palette_provision.seed._extra import override_findings
from palette_provision.seed._fat import build_cidata_disk
from palette_provision.seed._hostkey import HostKey
from palette_provision.seed._iso import SEED_VOLUME_LABEL, build_cidata_iso, write_seed
from palette_provision.seed._model import SeedModel, render_meta_data, render_user_data
from palette_provision.seed._sha512crypt import SEED_ROUNDS, sha512_crypt

__all__ = [
    "SEED_ROUNDS",
    "SEED_VOLUME_LABEL",
    "HostKey",
    "SeedModel",
    "WrittenSeed",
    "build_cidata_disk",
    "build_cidata_iso",
    "build_seed",
    "build_seed_iso",
    "override_findings",
    "render_meta_data",
    "render_user_data",
    "sha512_crypt",
    "write_seed",
    "write_seeds",
]

_log = get_logger(__name__)


def build_seed(
    plan: DeploymentPlan, node: NodeSpec, host_key: HostKey, fmt: SeedFormat, *, address_report_url: str | None = None
) -> bytes:
    """``node``'s seed in the form ``fmt``: a NoCloud ``cidata`` ISO, a ``cidata`` FAT disk image, or the user-data.

    One seed model, three packings; each reproducible (the same plan, node and key give the same bytes). A DHCP
    node given ``address_report_url`` sends its addresses there once its network is up (a ``network`` stage).

    Raises:
        PlanError: ``plan.user_data_extra`` removes or changes a key the library depends on.
    """
    user_data = render_user_data(plan, node, host_key, address_report_url=address_report_url).encode("utf-8")
    if fmt is SeedFormat.USER_DATA:
        return user_data
    files = {"user-data": user_data, "meta-data": render_meta_data(plan, node).encode("utf-8")}
    if fmt is SeedFormat.CIDATA_DISK:
        return build_cidata_disk(files, SEED_VOLUME_LABEL)
    return build_cidata_iso(files)


def build_seed_iso(plan: DeploymentPlan, node: NodeSpec, host_key: HostKey) -> bytes:
    """Return ``node``'s NoCloud seed ISO: label ``cidata``, files ``user-data`` and ``meta-data``.

    Pure Python (pycdlib); every timestamp is fixed, so the same plan, node and key give identical bytes.

    Example::

        iso = build_seed_iso(plan, plan.node_specs()[0], HostKey.generate())
        write_seed(Path("node-1.iso"), iso)

    Raises:
        PlanError: ``plan.user_data_extra`` removes or changes a key the library depends on.
    """
    user_data = render_user_data(plan, node, host_key)
    meta_data = render_meta_data(plan, node)
    return build_cidata_iso({"user-data": user_data.encode("utf-8"), "meta-data": meta_data.encode("utf-8")})


@dataclass(frozen=True)
class WrittenSeed:
    """One node's seed files written by :func:`write_seeds`, with its host key's public half."""

    node: str
    host_key_fingerprint: str
    host_key_public: str
    paths: tuple[Path, ...]


def write_seeds(
    plan: DeploymentPlan,
    out_dir: Path,
    *,
    host_keys: Mapping[str, HostKey] | None = None,
    journal: Journal | None = None,
) -> list[WrittenSeed]:
    """Write every node's seed into ``out_dir``: ``<node>.iso`` and ``<node>.user-data``, both mode 0600.

    The ``palette-provision seed`` command (which prints what this returns). A host key is generated per node unless
    ``host_keys`` gives one (the same keys give the same bytes). With a ``journal``, each node's public host key and
    fingerprint are recorded as the facts ``host_key_public`` and ``host_key_fingerprint``.

    Example::

        for seed in write_seeds(plan, Path("seeds")):
            print(seed.node, seed.host_key_fingerprint, *seed.paths)

    Raises:
        PlanError: ``plan.user_data_extra`` is not acceptable (nothing is written then).
        OSError: ``out_dir`` cannot be created or written.
    """
    rendered: list[tuple[NodeSpec, HostKey, str, bytes]] = []
    for node in plan.node_specs():
        key = (host_keys or {}).get(node.name) or HostKey.generate()
        user_data = render_user_data(plan, node, key)  # validate every node before writing any file
        rendered.append((node, key, user_data, build_seed_iso(plan, node, key)))
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[WrittenSeed] = []
    for node, key, user_data, iso in rendered:
        iso_path, ud_path = out_dir / f"{node.name}.iso", out_dir / f"{node.name}.user-data"
        write_seed(iso_path, iso)
        write_seed(ud_path, user_data.encode("utf-8"))
        if journal is not None:
            journal.set_fact(node.name, Fact.HOST_KEY_PUBLIC, key.public_line)
            journal.set_fact(node.name, Fact.HOST_KEY_FINGERPRINT, key.fingerprint)
        _log.info("seed_written", node=node.name, path=str(iso_path), host_key_fingerprint=key.fingerprint)
        written.append(WrittenSeed(node.name, key.fingerprint, key.public_line, (iso_path, ud_path)))
    return written
