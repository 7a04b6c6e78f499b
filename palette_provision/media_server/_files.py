"""Published files, each open once: one read-only descriptor shared by every connection, with offsets.

``os.sendfile`` and ``os.preadv`` take an offset and never move the file position, so one descriptor serves any
number of concurrent readers. A descriptor is closed only when no request holds it any more (a reference count):
closing it under a request still sending would let the number be reused by the next ``open``, and that request
would go on sending another file's bytes (a seed's private key to the wrong BMC).
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path

from palette_provision.media_server._entries import Catalog, Entry
from palette_provision.media_server._http import http_date

__all__ = ["FileTable", "Lease", "OpenFile"]


class OpenFile:
    """One open published file: its descriptor and the validators its responses carry."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            info = os.fstat(self.fd)
            if not stat.S_ISREG(info.st_mode):
                raise OSError(f"{path} is not a regular file")
        except BaseException:
            os.close(self.fd)
            raise
        self.identity = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
        self.size = info.st_size
        self.etag = f'"{info.st_ino:x}-{info.st_size:x}-{info.st_mtime_ns:x}"'
        self.last_modified = http_date(info.st_mtime)
        self._refs = 1  # the table's own reference
        self._lock = threading.Lock()
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)  # larger read-ahead for BMCs' sequential reads

    def acquire(self) -> bool:
        """Take a reference; False when the file is already closed."""
        with self._lock:
            if self._refs == 0:
                return False
            self._refs += 1
            return True

    def release(self) -> None:
        """Drop a reference; the last one closes the descriptor."""
        with self._lock:
            self._refs -= 1
            last = self._refs == 0
        if last:
            os.close(self.fd)


@dataclass(frozen=True)
class Lease:
    """A request's hold on a published entry and its open file; :meth:`release` it when the response is sent."""

    entry: Entry
    file: OpenFile

    def release(self) -> None:
        """Give the file back."""
        self.file.release()


class FileTable:
    """URL path -> (entry, open file), rebuilt from the catalog whenever its version changes."""

    def __init__(self, catalog: Catalog, on_problem: Callable[[str, Entry, str], None]) -> None:
        self.catalog = catalog
        self._on_problem = on_problem
        self._lock = threading.Lock()
        self._version: Hashable = object()  # matches no catalog version: the first lookup loads
        self._by_path: dict[str, tuple[Entry, OpenFile]] = {}
        self._by_identity: dict[tuple[int, int, int, int], OpenFile] = {}

    def refresh(self) -> None:
        """Reload the catalog if it changed; open new files, close the ones no entry uses any more."""
        version = self.catalog.version()
        if version == self._version:
            return
        with self._lock:
            if version == self._version:
                return
            try:
                entries = self.catalog.entries()
            except Exception as exc:  # a bad manifest: keep serving what was published (a BMC may be mid-install)
                self._on_problem("media_catalog_unreadable", Entry("-", Path("-"), "-"), str(exc))
                self._version = version
                return
            by_path: dict[str, tuple[Entry, OpenFile]] = {}
            by_identity: dict[tuple[int, int, int, int], OpenFile] = {}
            for entry in entries:
                opened = self._open(entry)
                if opened is not None:
                    by_identity[opened.identity] = opened
                    by_path[entry.url_path] = (entry, opened)
            for identity, old in self._by_identity.items():
                if identity not in by_identity:
                    old.release()  # closes once the last request using it is done
            self._by_path, self._by_identity, self._version = by_path, by_identity, version

    def _open(self, entry: Entry) -> OpenFile | None:
        try:
            info = os.stat(entry.path)
            identity = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
            known = self._by_identity.get(identity)
            return known if known is not None else OpenFile(str(entry.path))
        except OSError as exc:
            self._on_problem("media_file_unavailable", entry, exc.strerror or str(exc))
            return None

    def lookup(self, path: str) -> Lease | None:
        """The entry published at ``path`` with a reference on its file, or None."""
        for _ in range(2):  # a file closed between the look-up and the acquire was just replaced: look again
            self.refresh()
            found = self._by_path.get(path)
            if found is None:
                return None
            if found[1].acquire():
                return Lease(found[0], found[1])
        return None

    def open_files(self) -> int:
        """How many published files are open."""
        return len(self._by_identity)

    def close(self) -> None:
        """Drop every entry; each descriptor closes when its last request ends."""
        with self._lock:
            for old in self._by_identity.values():
                old.release()
            self._by_path, self._by_identity, self._version = {}, {}, object()
