"""The NoCloud ``cidata`` seed as a small FAT12 disk image, for a BMC's removable-disk (USB) virtual-media slot.

NoCloud reads its files from any filesystem labelled ``cidata``, vfat included (cloud-init's and Kairos's NoCloud
datasource both look the label up with blkid). Redfish BMCs usually offer one CD slot and one removable-disk slot:
the appliance ISO takes the CD, this image the disk. Pure Python, reproducible bytes (fixed timestamps, fixed
volume serial), checked in the tests with dosfstools' ``fsck.fat`` and mtools.

The layout is a 1.44 MB floppy's (2880 sectors of 512 bytes, 1 sector per cluster, 224 root entries), which every
FAT driver knows; file names are kept with VFAT long-name entries (``user-data`` is not an 8.3 name).
"""

from __future__ import annotations

import struct

__all__ = ["build_cidata_disk"]

_SECTOR = 512
_TOTAL_SECTORS = 2880
_RESERVED = 1
_FATS = 2
_FAT_SECTORS = 9
_ROOT_ENTRIES = 224
_ROOT_SECTORS = _ROOT_ENTRIES * 32 // _SECTOR
_DATA_START = _RESERVED + _FATS * _FAT_SECTORS + _ROOT_SECTORS
_CLUSTERS = _TOTAL_SECTORS - _DATA_START
_SERIAL = 0x5EED0001  # fixed: the same files give the same bytes
_DATE_1980_01_01 = (0 << 9) | (1 << 5) | 1
_LFN_CHARS = 13


def _boot_sector(label: str) -> bytes:
    bpb = struct.pack(
        "<3s8sHBHBHHBHHHII",
        b"\xeb\x3c\x90",
        b"PPROV1.0",
        _SECTOR,
        1,  # sectors per cluster
        _RESERVED,
        _FATS,
        _ROOT_ENTRIES,
        _TOTAL_SECTORS,
        0xF0,  # media descriptor: removable
        _FAT_SECTORS,
        18,  # sectors per track
        2,  # heads
        0,  # hidden sectors
        0,  # large sector count (unused: the small count fits)
    )
    ebpb = struct.pack("<BBBI11s8s", 0x00, 0, 0x29, _SERIAL, label.upper().ljust(11).encode("ascii"), b"FAT12   ")
    sector = bytearray(_SECTOR)
    sector[: len(bpb)] = bpb
    sector[len(bpb) : len(bpb) + len(ebpb)] = ebpb
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)


def _short_name(index: int) -> bytes:
    # Every file gets a numbered 8.3 alias (FILE0001...); drivers show the long name beside it.
    return f"FILE{index:04d}".encode("ascii").ljust(8) + b"   "


def _checksum(short: bytes) -> int:
    total = 0
    for byte in short:
        total = (((total & 1) << 7) + (total >> 1) + byte) & 0xFF
    return total


def _long_name_entries(name: str, short: bytes) -> list[bytes]:
    chars = [ord(c) for c in name]
    if len(chars) % _LFN_CHARS:
        chars += [0x0000] + [0xFFFF] * (_LFN_CHARS - len(chars) % _LFN_CHARS - 1)
    parts = [chars[i : i + _LFN_CHARS] for i in range(0, len(chars), _LFN_CHARS)]
    checksum = _checksum(short)
    entries = []
    for seq, part in enumerate(parts, start=1):
        order = seq | (0x40 if seq == len(parts) else 0)
        entries.append(
            struct.pack("<B5HBBB6HH2H", order, *part[:5], 0x0F, 0, checksum, *part[5:11], 0, *part[11:13])
        )
    return list(reversed(entries))  # the last part is stored first


def _dir_entry(short: bytes, attr: int, cluster: int, size: int) -> bytes:
    return struct.pack(
        "<11sBBBHHHHHHHI", short, attr, 0, 0, 0, _DATE_1980_01_01, _DATE_1980_01_01, 0, 0, _DATE_1980_01_01,
        cluster, size,
    )


def _set_fat12(fat: bytearray, cluster: int, value: int) -> None:
    offset = cluster * 3 // 2
    if cluster % 2 == 0:
        fat[offset] = value & 0xFF
        fat[offset + 1] = (fat[offset + 1] & 0xF0) | ((value >> 8) & 0x0F)
    else:
        fat[offset] = (fat[offset] & 0x0F) | ((value << 4) & 0xF0)
        fat[offset + 1] = (value >> 4) & 0xFF


def build_cidata_disk(files: dict[str, bytes], label: str = "cidata") -> bytes:
    """A FAT12 image labelled ``label`` holding ``files`` (name -> bytes) in its root folder.

    >>> image = build_cidata_disk({"meta-data": b"instance-id: a\\n", "user-data": b"#cloud-config\\n"})
    >>> len(image), image[510:512], image[43:54]
    (1474560, b'U\\xaa', b'CIDATA     ')

    Raises:
        ValueError: the files do not fit (1.4 MB), a name is longer than 255 characters or not ASCII.
    """
    fat = bytearray(_FAT_SECTORS * _SECTOR)
    _set_fat12(fat, 0, 0xFF0)
    _set_fat12(fat, 1, 0xFFF)
    root = bytearray()
    root += _dir_entry(label.upper().ljust(11).encode("ascii"), 0x08, 0, 0)  # the volume label entry
    data = bytearray()
    next_cluster = 2
    for index, (name, content) in enumerate(sorted(files.items()), start=1):
        if len(name) > 255 or not name.isascii():
            raise ValueError(f"file name {name!r} is not a short ASCII name")
        clusters = max(1, -(-len(content) // _SECTOR))
        if next_cluster - 2 + clusters > _CLUSTERS:
            raise ValueError("the seed files do not fit in a 1.44 MB FAT image")
        first = next_cluster if content else 0
        for offset in range(clusters if content else 0):
            cluster = next_cluster + offset
            _set_fat12(fat, cluster, 0xFFF if offset == clusters - 1 else cluster + 1)
        if content:
            data += content.ljust(clusters * _SECTOR, b"\0")
            next_cluster += clusters
        short = _short_name(index)
        for entry in _long_name_entries(name, short):
            root += entry
        root += _dir_entry(short, 0x20, first, len(content))
    if len(root) > _ROOT_SECTORS * _SECTOR:
        raise ValueError("too many seed files for the root folder")
    image = bytearray(_TOTAL_SECTORS * _SECTOR)
    image[:_SECTOR] = _boot_sector(label)
    for copy in range(_FATS):
        start = (_RESERVED + copy * _FAT_SECTORS) * _SECTOR
        image[start : start + len(fat)] = fat
    root_start = (_RESERVED + _FATS * _FAT_SECTORS) * _SECTOR
    image[root_start : root_start + len(root)] = root
    data_start = _DATA_START * _SECTOR
    image[data_start : data_start + len(data)] = data
    return bytes(image)
