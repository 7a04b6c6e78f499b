"""What this deployment last verified on the datastore, so a re-run need not read an untouched sidecar again.

A staged file counts as complete when its size matches and its ``.sha256`` sidecar holds the expected digest.
Reading the sidecar is an HTTP GET (and, in a fresh process, importing an HTTP client: together about a tenth of a
re-run). Instead, each time we write or read a sidecar we record both files' size and datastore modification time
with the digest; when a later listing shows exactly those four values, nothing has written either file since, and
the recorded digest is still what the sidecar says. Any write (a corrupted sidecar, a replaced file) changes a
modification time, and then the sidecar is read again. The record is a cache: unreadable or lost, it only costs a
GET.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FileStat", "VerifiedMedia"]


@dataclass(frozen=True)
class FileStat:
    """A datastore file's size and modification time (ISO 8601 text, ``None`` when not reported)."""

    size: int
    modified: str | None


class VerifiedMedia:
    """The verified-digest record, one JSON file in the provider's state folder. Thread-safe."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._entries: dict[str, dict[str, object]] = {}
        if path is not None:
            with contextlib.suppress(OSError, ValueError):
                loaded = json.loads(path.read_text(encoding="utf-8"))
                if isinstance(loaded, dict):
                    self._entries = {k: v for k, v in loaded.items() if isinstance(v, dict)}

    def digest(self, key: str, file: FileStat, sidecar: FileStat) -> str | None:
        """The digest recorded for ``key`` if both files are exactly as recorded, else ``None``."""
        if file.modified is None or sidecar.modified is None:
            return None  # a datastore that reports no times: nothing to compare, read the sidecar
        with self._lock:
            entry = self._entries.get(key)
        if entry is None or entry.get("stats") != _stats(file, sidecar):
            return None
        digest = entry.get("sha256")
        return digest if isinstance(digest, str) else None

    def record(self, key: str, file: FileStat, sidecar: FileStat, sha256: str) -> None:
        """Remember that ``key`` with these stats was verified to hold ``sha256``."""
        if file.modified is None or sidecar.modified is None:
            return
        with self._lock:
            self._entries[key] = {"sha256": sha256, "stats": _stats(file, sidecar)}
            self._save()

    def forget(self, key: str) -> None:
        """Drop ``key`` (the file was deleted)."""
        with self._lock:
            if self._entries.pop(key, None) is not None:
                self._save()

    def _save(self) -> None:
        if self._path is None:
            return
        with contextlib.suppress(OSError):
            self._path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._path.with_name(f".{self._path.name}.{os.getpid()}.{threading.get_ident()}")
            tmp.write_text(json.dumps(self._entries, sort_keys=True), encoding="utf-8")
            tmp.replace(self._path)


def _stats(file: FileStat, sidecar: FileStat) -> list[object]:
    return [file.size, file.modified, sidecar.size, sidecar.modified]
