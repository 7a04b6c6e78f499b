"""The NoCloud ``cidata`` ISO, built in pure Python with reproducible bytes, and atomic 0600 writes."""

from __future__ import annotations

import io
import os
import secrets as _random
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pycdlib
from pycdlib.dates import DirectoryRecordDate, VolumeDescriptorDate

__all__ = ["SEED_VOLUME_LABEL", "build_cidata_iso", "write_seed"]

#: The volume label NoCloud (cloud-init, Kairos, the lab's test appliance) looks for.
SEED_VOLUME_LABEL = "cidata"

# Every timestamp in the image is set to this instant (1980-01-01T00:00:00Z, the reproducible-builds
# convention's floor), so two builds of the same files are byte-identical whatever the clock and time zone.
_FIXED = (1980, 1, 1, 0, 0, 0)

# user-data holds a password hash and a private host key: readable by root only when the CD is mounted with
# Rock Ridge. meta-data is harmless.
_ROCK_RIDGE_MODES = {"user-data": 0o100400, "meta-data": 0o100444}


def _reachable(root: object) -> Iterator[object]:
    """Yield every pycdlib object reachable from ``root`` (attributes, slots, lists, dicts), once each."""
    seen: set[int] = set()
    stack: list[object] = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, (list, tuple, set)):
            stack.extend(obj)
            continue
        if isinstance(obj, dict):
            stack.extend(obj.values())
            continue
        if not type(obj).__module__.startswith("pycdlib"):
            continue
        yield obj
        values: list[Any] = list(getattr(obj, "__dict__", {}).values())
        for cls in type(obj).__mro__:
            for slot in getattr(cls, "__slots__", ()):
                if hasattr(obj, slot):
                    values.append(getattr(obj, slot))
        stack.extend(values)


def _freeze_dates(iso: pycdlib.PyCdlib) -> None:
    # pycdlib stamps time.time() in local time into the volume descriptors, every directory record and every
    # Rock Ridge TF entry, with no option to choose the instant: rewrite each initialised date before mastering.
    year, month, day, hour, minute, second = _FIXED
    for obj in _reachable(iso):
        if isinstance(obj, DirectoryRecordDate) and getattr(obj, "_initialized", False):
            obj.years_since_1900, obj.month, obj.day_of_month = year - 1900, month, day
            obj.hour, obj.minute, obj.second, obj.gmtoffset = hour, minute, second, 0
        elif isinstance(obj, VolumeDescriptorDate) and getattr(obj, "_initialized", False):
            if obj.date_str == VolumeDescriptorDate.EMPTY_STRING:
                continue  # "not specified" (e.g. the expiration date) stays empty
            obj.year, obj.month, obj.dayofmonth = year, month, day
            obj.hour, obj.minute, obj.second, obj.hundredthsofsecond, obj.gmtoffset = hour, minute, second, 0, 0
            stamp = f"{year:04}{month:02}{day:02}{hour:02}{minute:02}{second:02}00"
            obj.date_str = stamp.encode("ascii") + struct.pack("=b", 0)


#: Seeds are zero-padded to this size (see build_cidata_iso).
MIN_IMAGE_BYTES = 256 * 1024


def build_cidata_iso(files: dict[str, bytes]) -> bytes:
    """Return a NoCloud ISO (label ``cidata``; ISO9660 + Joliet + Rock Ridge) holding ``files`` at its root.

    ``files`` maps a lower-case name (``user-data``, ``meta-data``) to its bytes. The ISO9660 8.3 names are
    derived (``USERDATA.;1``); readers use the Rock Ridge or Joliet names. The bytes depend only on ``files``.

    >>> iso = build_cidata_iso({"meta-data": b"instance-id: x\\n", "user-data": b"#cloud-config\\n"})
    >>> len(iso) % 2048, iso[0x8001:0x8006]
    (0, b'CD001')
    """
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident=SEED_VOLUME_LABEL, joliet=3, rock_ridge="1.09")
    try:
        for name in sorted(files):
            data = files[name]
            base = "".join(c for c in name.upper() if c.isalnum())[:8] or "FILE"
            iso.add_fp(
                io.BytesIO(data),
                len(data),
                f"/{base}.;1",
                rr_name=name,
                joliet_path=f"/{name}",
                file_mode=_ROCK_RIDGE_MODES.get(name, 0o100444),
            )
        _freeze_dates(iso)
        out = io.BytesIO()
        iso.write_fp(out)
        image = _fix_modification_dates(out.getvalue())
        # Pad with zeros to at least MIN_IMAGE_BYTES: busybox's blkid/findfs (the lab's test appliance) ignores
        # block devices smaller than 69,632 bytes, and a seed with a short user-data is 67,584. Trailing zeros
        # after the volume are ignored by every ISO9660 reader; xorriso pads the same way by default.
        return image + b"\0" * max(0, MIN_IMAGE_BYTES - len(image))
    finally:
        iso.close()


def _fix_modification_dates(image: bytes) -> bytes:
    # pycdlib writes time.time() as the volume modification date while mastering (headervd.record(), pycdlib
    # 1.22), after any object could be edited: copy each descriptor's (frozen) creation date over it instead.
    # ECMA-119 8.4: descriptors from sector 16, type 1 primary / 2 supplementary (Joliet), 255 ends the set;
    # creation date at bytes 813-829, modification at 830-846.
    buf = bytearray(image)
    sector = 16
    while (sector + 1) * 2048 <= len(buf):
        start = sector * 2048
        kind = buf[start]
        if buf[start + 1 : start + 6] != b"CD001" or kind == 255:
            break
        if kind in (1, 2):
            buf[start + 830 : start + 847] = buf[start + 813 : start + 830]
        sector += 1
    return bytes(buf)


def write_seed(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, the file created with mode 0600 from its first byte.

    The bytes go to a fresh temporary file in the same folder (``O_CREAT | O_EXCL``, mode 0600: never a moment
    with wider permissions, no chmod afterwards), are flushed to disk, then renamed over ``path``.

    >>> import tempfile, stat
    >>> target = Path(tempfile.mkdtemp()) / "node-1.iso"
    >>> write_seed(target, b"seed")
    >>> oct(stat.S_IMODE(target.stat().st_mode)), target.read_bytes()
    ('0o600', b'seed')

    Raises:
        OSError: the folder is missing or not writable (the temporary file is removed).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{_random.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a crash
    finally:
        os.close(dir_fd)
