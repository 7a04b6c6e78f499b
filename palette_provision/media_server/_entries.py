"""What the media server publishes: entries, the catalog that lists them (in memory or as a manifest file).

An entry maps one URL path to one file: ``/iso/<file name>`` for the appliance ISO, ``/seed/<token>/<file name>``
for a node's seed. URLs are looked up in the catalog, never mapped onto the filesystem. The token is
``secrets.token_urlsafe(24)`` (192 bits): it is the only thing keeping a seed's private host key from anyone who
can reach the server, so it is registered as a :class:`~palette_provision.secrets.Secret` value (the log
redaction scrubs it from any event) and entries show only its first characters.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import stat
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from palette_provision.errors import ConfigurationError
from palette_provision.secrets import Secret

__all__ = ["Entry", "MediaCatalog"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9:._-]{0,127}\Z")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{32,128}\Z")
MANIFEST = "media.json"
_VERSION = 1


def _check(pattern: re.Pattern[str], value: str, what: str) -> str:
    if not pattern.match(value):
        raise ConfigurationError(f"{what} {value[:40]!r} is not allowed (letters, digits, '.', '_', '-'; no '/')")
    return value


@dataclass(frozen=True)
class Entry:
    """A published file. ``key`` names it in the API and the fetch log (``iso:<name>``, ``seed:<node>``)."""

    key: str
    path: Path
    file_name: str
    token: str | None = field(default=None, repr=False)
    node: str | None = None
    sha256: str | None = None

    @property
    def url_path(self) -> str:
        """The path part of the entry's URL."""
        return f"/seed/{self.token}/{self.file_name}" if self.token else f"/iso/{self.file_name}"

    @property
    def shown_path(self) -> str:
        """The URL path as logs and messages may show it: the token cut to its first 6 characters."""
        return f"/seed/{self.token[:6]}.../{self.file_name}" if self.token else self.url_path

    def to_json(self) -> dict[str, Any]:
        """The manifest form."""
        data = asdict(self)
        data["path"] = str(self.path)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Entry:
        """Read an entry back from the manifest, checking every field as :meth:`MediaCatalog.publish_iso` does."""
        token = data.get("token")
        entry = cls(
            key=_check(_KEY, str(data["key"]), "entry key"),
            path=Path(str(data["path"])),
            file_name=_check(_NAME, str(data["file_name"]), "file name"),
            token=_check(_TOKEN, str(token), "token") if token is not None else None,
            node=str(data["node"]) if data.get("node") is not None else None,
            sha256=str(data["sha256"]) if data.get("sha256") is not None else None,
        )
        if entry.token:
            Secret(entry.token, source=f"media token of {entry.key}")  # registered for log redaction
        return entry


def printable(text: str, limit: int) -> str:
    """Client-sent text as logs may show it: at most ``limit`` characters, control characters (escape sequences)
    replaced by ``?``."""
    return "".join(c if c.isprintable() else "?" for c in text[:limit])


def shown_request_path(path: str) -> str:
    """A requested path as the fetch log shows it: printable, at most 120 characters, a would-be token cut short."""
    text = printable(path, 120)
    for prefix in ("/seed/", "/report/"):
        if text.startswith(prefix):
            token, slash, rest = text[len(prefix) :].partition("/")
            text = f"{prefix}{token[:6]}{'...' if len(token) > 6 else ''}{slash}{rest}"
    return text


def _regular_file(path: Path) -> Path:
    path = Path(path).absolute()
    try:
        info = path.stat()
    except OSError as exc:
        raise ConfigurationError(f"cannot publish {path}: {exc.strerror}") from exc
    if not stat.S_ISREG(info.st_mode):
        raise ConfigurationError(f"cannot publish {path}: not a regular file")
    return path


class Catalog(ABC):
    """The published entries, and the publishing API shared by the in-memory and the file catalog."""

    @abstractmethod
    def entries(self) -> list[Entry]:
        """Every published entry."""

    @abstractmethod
    def version(self) -> Hashable:
        """Changes whenever the entries may have changed (cheap: called on every request)."""

    @abstractmethod
    def _update(self, change: Callable[[dict[str, Entry]], Entry | None]) -> Entry | None:
        """Apply ``change`` to the entries by key, atomically, and persist them."""

    def get(self, key: str) -> Entry | None:
        """The entry published under ``key``, if any."""
        return next((e for e in self.entries() if e.key == key), None)

    def publish_iso(self, path: Path, *, file_name: str | None = None, sha256: str | None = None) -> Entry:
        """Publish ``path`` at ``/iso/<file_name>`` (default: its own name); key ``iso:<file_name>``."""
        path = _regular_file(path)
        name = _check(_NAME, file_name or path.name, "file name")
        entry = Entry(key=f"iso:{name}", path=path, file_name=name, sha256=sha256)

        def change(entries: dict[str, Entry]) -> Entry:
            entries[entry.key] = entry
            return entry

        return self._update(change) or entry

    def publish_seed(self, node: str, path: Path, *, file_name: str | None = None) -> Entry:
        """Publish ``node``'s seed at ``/seed/<token>/<file_name>``; key ``seed:<node>``.

        Publishing the same node again with the same file keeps its token, so a URL already given to a BMC (before
        a run was killed, say) stays valid; a different file gets a new token.
        """
        path = _regular_file(path)
        key = _check(_KEY, f"seed:{node}", "node name")
        name = _check(_NAME, file_name or path.name, "file name")

        def change(entries: dict[str, Entry]) -> Entry:
            old = entries.get(key)
            if old is not None and old.token and old.path == path:
                entries[key] = replace(old, file_name=name)
            else:
                token = secrets.token_urlsafe(24)
                Secret(token, source=f"media token of {key}")  # registered for log redaction
                entries[key] = Entry(key=key, path=path, file_name=name, token=token, node=node)
            return entries[key]

        published = self._update(change)
        assert published is not None
        return published

    def unpublish(self, key: str) -> bool:
        """Remove the entry ``key``; its URL answers 404 from the next request on. False if it was not published."""
        found: list[bool] = []

        def change(entries: dict[str, Entry]) -> None:
            found.append(entries.pop(key, None) is not None)

        self._update(change)
        return found[0]


class MemoryCatalog(Catalog):
    """Entries held in this process (a :class:`MediaServer` without a state folder)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, Entry] = {}
        self._version = 0

    def entries(self) -> list[Entry]:
        with self._lock:
            return list(self._entries.values())

    def version(self) -> Hashable:
        return self._version

    def _update(self, change: Callable[[dict[str, Entry]], Entry | None]) -> Entry | None:
        with self._lock:
            entries = dict(self._entries)
            result = change(entries)
            self._entries = entries
            self._version += 1
            return result


class MediaCatalog(Catalog):
    """The entries of a state folder's manifest (``media.json``), shared by processes.

    ``apply`` publishes by writing the manifest; a ``palette-provision media serve`` process serving the same folder
    sees the change at its next request (it compares the manifest's inode, size and modification time on every
    request: one ``stat``). Writes take an exclusive lock on ``media.lock`` and replace the manifest atomically,
    mode 0600, in a folder created 0700: the manifest holds the seed tokens.
    """

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir).absolute()
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        self.manifest = self.state_dir / MANIFEST
        self._manifest_text = str(self.manifest)  # os.stat on a str: a third of the cost on a Path (every request)
        self._lock = threading.Lock()

    def version(self) -> Hashable:
        try:
            info = os.stat(self._manifest_text)
        except FileNotFoundError:
            return None
        return (info.st_ino, info.st_size, info.st_mtime_ns)

    def entries(self) -> list[Entry]:
        return list(self._read().values())

    def _read(self) -> dict[str, Entry]:
        try:
            text = self.manifest.read_text()
        except FileNotFoundError:
            return {}
        try:
            data = json.loads(text)
            if data.get("version") != _VERSION:
                raise ValueError(f"manifest version {data.get('version')!r}, expected {_VERSION}")
            entries = [Entry.from_json(item) for item in data["entries"]]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigurationError(f"the media manifest {self.manifest} is unreadable: {exc}") from exc
        return {e.key: e for e in entries}

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the folder's lock (this process's threads and other processes)."""
        with self._lock:
            fd = os.open(self.state_dir / "media.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    def _update(self, change: Callable[[dict[str, Entry]], Entry | None]) -> Entry | None:
        with self.locked():
            entries = self._read()
            result = change(entries)
            document = {"version": _VERSION, "entries": [e.to_json() for e in entries.values()]}
            # Each version's modification time is later than the last one's, even within the kernel's timestamp
            # granularity (a few ms): with inode numbers reused, (inode, size, mtime) could otherwise repeat and a
            # server miss an unpublish.
            previous = self.version()
            after = previous[2] if isinstance(previous, tuple) else 0
            write_private_json(self.manifest, document, mtime_ns=max(time.time_ns(), after + 1))
            return result


def write_private_json(path: Path, data: Any, *, mtime_ns: int | None = None) -> None:
    """Write ``data`` as JSON to ``path`` atomically, mode 0600 from the first byte."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:  # mkstemp creates the file 0600
            json.dump(data, handle, indent=1, sort_keys=True)
        if mtime_ns is not None:
            os.utime(tmp, ns=(mtime_ns, mtime_ns))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
