"""Read what the watcher needs from a NoCloud seed ISO (``docs/seed-format.md``): the node's address and name.

A real vCenter learns a guest's address from VMware Tools; the lab's appliance runs no Tools, so the watcher reads
the address the seed told the appliance to take, and reports it once the guest answers SSH on it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pycdlib
import yaml
from pycdlib.pycdlibexception import PyCdlibException

__all__ = ["SeedInfo", "is_seed_iso", "read_seed"]

_SECTOR = 2048
_PVD_OFFSET = 16 * _SECTOR  # ISO 9660: the primary volume descriptor is sector 16
_MAX_SEED_FILE = 1024 * 1024


@dataclass(frozen=True)
class SeedInfo:
    """The parts of a seed the watcher uses. ``ip`` is ``None`` for a DHCP seed (no address to predict)."""

    ip: str | None
    hostname: str | None
    interface: str | None


def volume_label(path: Path) -> str | None:
    """The ISO 9660 volume identifier, read straight from the descriptor (cheap even for a multi-GiB ISO)."""
    try:
        with open(path, "rb") as f:
            f.seek(_PVD_OFFSET)
            pvd = f.read(72)
    except OSError:
        return None
    if len(pvd) < 72 or pvd[0] != 1 or pvd[1:6] != b"CD001":
        return None
    return pvd[40:72].decode("ascii", errors="replace").strip()


def is_seed_iso(path: Path) -> bool:
    """True for a NoCloud seed: volume label ``cidata`` (case-insensitive, as cloud-init and Kairos accept)."""
    label = volume_label(path)
    return label is not None and label.lower() == "cidata"


def _read_file(iso: pycdlib.PyCdlib, name: str) -> bytes | None:
    # Joliet and Rock Ridge keep the real name; plain ISO 9660 level 1 mangles "user-data" into 8.3 upper case.
    candidates: list[dict[str, str]] = [
        {"joliet_path": f"/{name}"},
        {"rr_path": f"/{name}"},
        {"iso_path": "/" + name.replace("-", "_").upper()[:8] + ".;1"},
        {"iso_path": "/" + name.replace("-", "").upper()[:8] + ".;1"},
    ]
    for where in candidates:
        buf = io.BytesIO()
        try:
            iso.get_file_from_iso_fp(buf, **where)
        except PyCdlibException:
            continue
        data = buf.getvalue()
        return data[:_MAX_SEED_FILE]
    return None


def read_seed(path: Path) -> SeedInfo:
    """Parse ``user-data`` (and ``meta-data`` for the hostname) from the seed ISO at ``path``.

    Raises:
        ValueError: not a readable seed (no ``user-data``, or YAML that is not a mapping).
    """
    iso = pycdlib.PyCdlib()
    try:
        iso.open(str(path))
    except (PyCdlibException, OSError) as exc:
        raise ValueError(f"{path}: not a readable ISO: {exc}") from exc
    try:
        user_data = _read_file(iso, "user-data")
        meta_data = _read_file(iso, "meta-data")
    finally:
        iso.close()
    if user_data is None:
        raise ValueError(f"{path}: no user-data file")
    doc = yaml.safe_load(user_data.decode("utf-8", errors="replace"))
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: user-data is not a YAML mapping")
    meta = yaml.safe_load(meta_data.decode("utf-8", errors="replace")) if meta_data else None

    interface, ip = _first_interface(doc)
    # As the appliance names itself: stylus.site.hostName, else stylus.site.name (the top-level cloud-init hostname
    # is ignored, as the test appliance ignores it).
    site = (doc.get("stylus") or {}).get("site") if isinstance(doc.get("stylus"), dict) else None
    site = site if isinstance(site, dict) else {}
    hostname = site.get("hostName") or site.get("name")
    if not isinstance(hostname, str) and isinstance(meta, dict):
        hostname = meta.get("local-hostname")
    return SeedInfo(ip=ip, hostname=hostname if isinstance(hostname, str) else None, interface=interface)


def _first_interface(doc: dict[str, Any]) -> tuple[str | None, str | None]:
    """``stylus.site.network.interfaces.<first>``: the test appliance applies the first entry to its first NIC."""
    node: Any = doc
    for key in ("stylus", "site", "network", "interfaces"):
        node = node.get(key) if isinstance(node, dict) else None
    if not isinstance(node, dict) or not node:
        return None, None
    name, conf = next(iter(node.items()))
    if not isinstance(conf, dict) or str(conf.get("type", "static")) != "static":
        return str(name), None
    ip = conf.get("ipAddress")
    return str(name), str(ip).split("/")[0] if ip else None
