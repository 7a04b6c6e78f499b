"""Virtual disks: sparse raw images, and the test appliance's "installed system" on them.

The test appliance's installer writes, at byte 0 of the install disk, a header
line ``PPLAB-DISK 1 <n>`` padded to 512 bytes, followed by an ``n``-byte tar
archive of ``pplab/`` (``installed``, ``config.env``, ``users``, ``keys/``,
``files/``, ``files.list``, ``user-data``). See lab/appliance/init.
"""

from __future__ import annotations

import io
import re
import shlex
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from pplab._cmd import LabError

DISK_MAGIC = b"PPLAB-DISK 1"
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(i?B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(size: int | str) -> int:
    """Bytes from an int or a string such as ``"300G"``, ``"512M"``, ``"1GiB"`` (binary units)."""
    if isinstance(size, int):
        return size
    m = _SIZE_RE.match(size)
    if not m:
        raise LabError(f"cannot parse disk size {size!r}")
    return int(m.group(1)) * _UNITS[m.group(2).upper()]


def create_disk(path: Path, size: int | str) -> Path:
    """Create a fresh, empty, sparse raw disk image (replacing ``path`` if it exists); return ``path``.

    Sparse: a 300 GiB disk takes no space until the guest writes to it.
    """
    nbytes = parse_size(size)
    if nbytes <= 0 or nbytes % 512:
        raise LabError(f"disk size {nbytes} must be a positive multiple of 512")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    with path.open("wb") as f:
        f.truncate(nbytes)
    return path


@dataclass(frozen=True)
class InstallState:
    """What the test appliance's installer left on a disk."""

    count: int
    """How many times the ISO installed onto this disk (2 and more: re-installs)."""
    hostname: str
    instance_id: str
    device: str
    """The install device as the guest saw it (``/dev/sda``)."""
    config: dict[str, str] = field(default_factory=dict)
    """The installed configuration (``config.env``: HOSTNAME, ACCOUNT, NET_*, INSTALL_*...)."""
    user_data: str = ""
    """The seed's user-data as installed."""
    files: dict[str, str] = field(default_factory=dict)
    """Every member of the archive (path -> text), for debugging."""


def _parse_env(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            parts = shlex.split(value)
            out[key] = parts[0] if parts else ""
    return out


def write_image(path: Path) -> Path:
    """Write a deployable disk image of the test appliance (what MAAS's image mode deploys; raw, ``ddraw``).

    It holds the header and an archive with ``pplab/installed`` (``image=generic``) and ``pplab/image`` but no
    configuration: the appliance's disk boot then configures itself from a ``cidata`` seed, as cloud-init does a
    deployed image. Copy it onto a machine's disk to "deploy" it. Returns ``path``.
    """
    members = {
        "pplab/installed": b"count=1\nimage=generic\n",
        "pplab/image": b"a generic image: configured at boot from its cidata seed\n",
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        folder = tarfile.TarInfo("pplab")
        folder.type, folder.mode, folder.mtime = tarfile.DIRTYPE, 0o755, 0
        tar.addfile(folder)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    blob = buffer.getvalue()
    header = f"{DISK_MAGIC.decode()} {len(blob)}\n".encode().ljust(512, b"\0")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + blob + b"\0" * (-len(blob) % 512))
    return path


def read_install_state(disk: Path) -> InstallState | None:
    """The installed system on ``disk``, or None if the appliance never installed onto it."""
    with Path(disk).open("rb") as f:
        header = f.read(512)
        if not header.startswith(DISK_MAGIC):
            return None
        fields = header.split(b"\n", 1)[0].split()
        try:
            length = int(fields[2])
        except (IndexError, ValueError) as exc:
            raise LabError(f"{disk}: corrupt install header {header[:40]!r}") from exc
        blob = f.read(length)
    files: dict[str, str] = {}
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:") as tar:
        for member in tar.getmembers():
            if member.isfile():
                data = tar.extractfile(member)
                if data is not None:
                    files[member.name.removeprefix("./")] = data.read().decode("utf-8", "replace")
    marker = _parse_env(files.get("pplab/installed", ""))
    return InstallState(
        count=int(marker.get("count", "0") or 0),
        hostname=marker.get("hostname", ""),
        instance_id=marker.get("instance_id", ""),
        device=marker.get("device", ""),
        config=_parse_env(files.get("pplab/config.env", "")),
        user_data=files.get("pplab/user-data", ""),
        files=files,
    )
