"""Local media: digests, and fetching an ISO given by URL into the state folder (once, verified)."""

from __future__ import annotations

import hashlib
import os
import threading
import urllib.parse
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from palette_provision.errors import ConfigurationError, TransientError
from palette_provision.waiting import Backoff, Interrupted, wait_for

if TYPE_CHECKING:
    from palette_provision.journal import Journal
    from palette_provision.plan import IsoSource

__all__ = ["CHUNK", "EarlyDigest", "fetch_iso", "file_identity", "sha256_bytes", "sha256_file"]

#: Read and upload chunk size: big enough for disk and TLS throughput, small enough for a flat RSS.
CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


class _Flag(Protocol):
    def is_set(self) -> bool: ...


def sha256_file(path: Path, stop: _Flag | None = None) -> str:
    """Hex SHA-256 of a file, read in chunks; ``stop`` set ends the read early with :class:`Interrupted`."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            if stop is not None and stop.is_set():
                raise Interrupted
            digest.update(chunk)
    return digest.hexdigest()


def file_identity(path: Path) -> tuple[int, int, int, int]:
    """What says a file is still the one that was read: device, inode, size and modification time (ns)."""
    st = path.stat()
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class EarlyDigest:
    """The SHA-256 of a local file, computed on a thread of its own from the moment it is asked for.

    ``apply`` starts one for the appliance ISO when the plan gives the ISO's digest, before it imports the provider,
    logs in and checks the platform (work that leaves a core idle); preflight compares the two, so a wrong file is
    refused before anything changes, and the upload then sends the bytes without hashing them again (see
    :attr:`~palette_provision.provider.MediaFile.sha256_checked`).
    """

    def __init__(self, path: Path, stop: threading.Event) -> None:
        self.path = path
        self.identity = file_identity(path)
        self._future: Future[str] = Future()
        self._stop = stop
        self._cancelled = threading.Event()
        threading.Thread(target=self._run, name="iso-digest", daemon=True).start()

    def is_set(self) -> bool:
        """Whether the read should end: the run is stopping, or the digest was cancelled."""
        return self._stop.is_set() or self._cancelled.is_set()

    def cancel(self) -> None:
        """End the read at its next chunk (``apply`` failed or was interrupted before the digest was needed)."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def _run(self) -> None:
        try:
            self._future.set_result(sha256_file(self.path, self))
        except BaseException as exc:  # the caller gets it from result()
            self._future.set_exception(exc)

    def result(self) -> str | None:
        """The digest, or ``None`` when the file changed since it was read (or could not be read: the caller's
        own read will say why)."""
        try:
            digest = self._future.result()
        except OSError:
            return None
        return digest if file_identity(self.path) == self.identity else None


def shown_url(url: str) -> str:
    """``url`` as messages may show it: scheme, host and path, without credentials or a (possibly signed) query.

    >>> shown_url("https://user:pw@example.com/isos/palette.iso?X-Amz-Signature=abc")
    'https://example.com/isos/palette.iso'
    """
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def fetch_iso(source: IsoSource, cache_dir: Path, *, journal: Journal | None = None, timeout: float = 3600) -> Path:
    """Download ``source.source`` into ``cache_dir/<sha256>.iso`` unless it is already there; verify the digest.

    The file is written under a temporary name and renamed only once its digest matches, so an interrupted
    download never looks complete.

    Raises:
        ConfigurationError: the server refused the URL or the digest differs from the plan's.
    """
    import httpx  # only a URL-sourced ISO needs HTTP here

    if source.sha256 is None:  # the plan's rules require it for URLs; a plan built around them gets told
        raise ConfigurationError("an ISO fetched from a URL needs its SHA-256", field="iso.sha256")
    target = cache_dir / f"{source.sha256}.iso"
    if target.is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")

    def attempt() -> Path:
        digest = hashlib.sha256()
        try:
            # trust_env=False: a proxy is never taken from the environment by accident.
            with httpx.stream("GET", source.source, follow_redirects=True, timeout=60, trust_env=False) as response:
                if response.status_code >= 500:
                    raise TransientError(f"HTTP {response.status_code} from the ISO server")
                if response.status_code != 200:
                    raise ConfigurationError(f"HTTP {response.status_code} fetching the ISO", field="iso.source")
                with partial.open("wb") as fh:
                    for chunk in response.iter_bytes(CHUNK):
                        digest.update(chunk)
                        fh.write(chunk)
        except BaseException as exc:
            partial.unlink(missing_ok=True)  # a broken download never lingers
            if isinstance(exc, httpx.TransportError):
                raise TransientError(f"fetching the ISO failed: {type(exc).__name__}") from exc
            raise
        if digest.hexdigest() != source.sha256:
            partial.unlink(missing_ok=True)
            raise ConfigurationError(
                f"the downloaded ISO's SHA-256 is {digest.hexdigest()}, the plan says {source.sha256}",
                field="iso.sha256",
            )
        os.replace(partial, target)
        return target

    path: Path = wait_for(
        attempt,
        what=f"download of {shown_url(source.source)}",
        timeout=timeout,
        until=lambda _: True,
        backoff=Backoff(initial=2, maximum=30),
    )
    if journal is not None:
        journal.cache_digest(path, source.sha256)
    return path
