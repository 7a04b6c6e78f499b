"""Content-addressed media staging on a datastore, through the ``/folder`` HTTP interface.

Layout in ``[<datastore>] <media_folder>/``: ``<name>`` (the file), ``<name>.sha256`` (its digest, written in
``sha256sum`` format only after a verified complete upload) and, while uploading, ``<name>.partial``.

The upload streams the local file (1 MiB chunks, never the whole file in memory) with a Content-Length, hashes
it in the same pass, checks the size the datastore reports, moves ``.partial`` over ``<name>`` and only then
writes the sidecar. A run that dies anywhere before that leaves no sidecar (it is deleted before a replacement
starts), so the next run uploads again: a broken upload never looks complete.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
from palette_provision.errors import ProviderError, TransientError
from palette_provision.media import sha256_file
from palette_provision.provider import MediaFile, ProgressCallback, StagedMedia
from palette_provision.waiting import Backoff, wait_for

from palette_provision_vsphere._inventory import Placement
from palette_provision_vsphere._session import (
    PROVIDER,
    VsphereSession,
    VsphereTaskError,
    translate,
    vim,
)

__all__ = ["Stager"]

_CHUNK = 1024 * 1024
_SIDECAR = ".sha256"
_PARTIAL = ".partial"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
# Upload retries: pauses of 1, 2, 4 ... up to 30 s between attempts.
_UPLOAD_BACKOFF = Backoff(initial=1.0, maximum=30.0, jitter=0.5)
_TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
_PROGRESS_EVERY = 5.0  # seconds between upload progress log events


@dataclass(frozen=True)
class _Remote:
    size: int | None
    sidecar_digest: str | None
    sidecar_present: bool = False


class Stager:
    """Stages and unstages files in one datastore folder. Thread-safe; one upload per file name at a time."""

    def __init__(self, session: VsphereSession, placement: Placement, log: Any) -> None:
        self._session = session
        self._placement = placement
        self._log = log
        self._folder = session.settings.media_folder
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()
        self._name_locks: dict[str, threading.Lock] = {}
        self._folder_ready = False
        self._browser: Any = None
        self._listing: dict[str, int] | None = None
        #: Locators verified present in this process: creating a VM need not look again.
        self.verified: set[str] = set()

    # ----------------------------------------------------------------------------------------------- paths

    def locator(self, name: str) -> str:
        """``[ds] folder/name``."""
        return f"[{self._placement.datastore_name}] {self._folder}/{name}"

    def _url(self, name: str) -> str:
        s = self._session.settings
        path = urllib.parse.quote(f"{self._folder}/{name}")
        return f"https://{s.server}:{s.port}/folder/{path}"

    def _params(self) -> dict[str, str]:
        return {
            "dcPath": self._placement.datacenter_path,
            "dsName": self._placement.datastore_name,
        }

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                t = self._session.settings.http_timeout
                self._client = httpx.Client(
                    verify=self._session.ssl_context(),
                    timeout=httpx.Timeout(t, connect=min(t, 30.0)),
                )
            return self._client

    def close(self) -> None:
        """Close the HTTP client."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # ------------------------------------------------------------------------------------------ datastore

    def _file_manager_task(self, method: str, what: str, **kwargs: Any) -> Any:
        fm = self._session.content.fileManager
        return self._session.run_task(lambda: getattr(fm, method)(**kwargs), what)

    def _delete(self, name: str) -> None:
        self._forget(name)
        try:
            self._file_manager_task(
                "DeleteDatastoreFile_Task",
                f"deleting {self.locator(name)}",
                name=self.locator(name),
                datacenter=self._placement.datacenter,
            )
        except VsphereTaskError as exc:
            # vcsim 0.24.2 and vCenter both say FileNotFound for a missing file: already gone is success.
            if exc.fault != "FileNotFound":
                raise

    def _ensure_folder(self) -> None:
        if self._folder_ready:
            return
        fm = self._session.content.fileManager
        try:
            with translate(f"creating {self.locator('')}"):
                fm.MakeDirectory(
                    name=f"[{self._placement.datastore_name}] {self._folder}",
                    datacenter=self._placement.datacenter,
                    createParentDirectories=True,
                )
        except VsphereTaskError as exc:
            if exc.fault != "FileAlreadyExists":
                raise
        self._folder_ready = True

    def _search(self, patterns: list[str]) -> dict[str, int] | None:
        """Sizes of the files in our folder matching ``patterns``; ``None`` when the folder does not exist."""
        if self._browser is None:
            self._browser = self._session.props(self._placement.datastore, ["browser"])["browser"]
        browser = self._browser
        spec = vim.host.DatastoreBrowser.SearchSpec(
            matchPattern=patterns,
            details=vim.host.DatastoreBrowser.FileInfo.Details(fileSize=True),
        )
        folder = f"[{self._placement.datastore_name}] {self._folder}"
        try:
            result = self._session.run_task(
                lambda: browser.SearchDatastore_Task(datastorePath=folder, searchSpec=spec),
                f"searching {folder}",
            )
        except VsphereTaskError as exc:
            if exc.fault == "FileNotFound":
                return None
            raise
        self._folder_ready = True
        return {str(f.path): int(f.fileSize or 0) for f in (result.file or [])}

    def listing(self) -> dict[str, int]:
        """Every file in our datastore folder with its size (empty when the folder does not exist).

        Kept as a hint for :meth:`_remote`: one search at preflight instead of one per file on a re-run.
        """
        found = self._search(["*"]) or {}
        with self._lock:
            self._listing = dict(found)
        return found

    def _remote(self, name: str) -> _Remote:
        """The datastore's size of ``name`` and the digest in its sidecar (``None`` when absent or unreadable)."""
        with self._lock:
            hint = dict(self._listing) if self._listing is not None else None
        if hint is not None and name in hint and name + _SIDECAR in hint:
            # The listing's size plus a live read of the sidecar: both files were there a moment ago and the
            # sidecar (written last, deleted first) still is.
            digest = self._read_sidecar(name)
            if digest is not None:
                return _Remote(hint[name], digest, sidecar_present=True)
        sizes = self._search([name, name + _SIDECAR]) or {}
        present = name + _SIDECAR in sizes
        digest = self._read_sidecar(name) if present else None
        return _Remote(sizes.get(name), digest, sidecar_present=present)

    def _forget(self, name: str) -> None:
        with self._lock:
            if self._listing is not None:
                self._listing.pop(name, None)

    def _read_sidecar(self, name: str) -> str | None:
        try:
            r = self._http().get(
                self._url(name + _SIDECAR),
                params=self._params(),
                headers=self._headers(),
            )
        except httpx.TransportError as exc:
            raise TransientError(f"reading {self.locator(name + _SIDECAR)}: {exc}", provider=PROVIDER) from exc
        if r.status_code != 200:
            return None
        token = r.text.split(maxsplit=1)[0].lower() if r.text.strip() else ""
        return token if _HEX64.match(token) else None

    def _headers(self) -> dict[str, str]:
        # vcsim 0.24.2 accepts /folder requests without a session; vCenter does not: always send the cookie.
        return {"Cookie": self._session.cookie()}

    # --------------------------------------------------------------------------------------------- upload

    def stage(self, media: MediaFile, progress: ProgressCallback | None) -> StagedMedia:
        """Stage ``media`` unless the datastore holds it already (same size, sidecar with the same digest)."""
        with self._lock:
            name_lock = self._name_locks.setdefault(media.name, threading.Lock())
        with name_lock:
            return self._stage(media, progress)

    def _stage(self, media: MediaFile, progress: ProgressCallback | None) -> StagedMedia:
        log = self._log.bind(media=media.name, role=media.role, node=media.node)
        locator = self.locator(media.name)
        remote = self._remote(media.name)
        expected = media.sha256.lower() if media.sha256 else None
        if remote.size == media.size and remote.sidecar_digest is not None:
            # Without a digest from the core, hashing locally is the only way to know the content is the same
            # (seeds keep their size when their content changes); a read, still no upload.
            local = expected or sha256_file(media.local_path)
            if local == remote.sidecar_digest:
                log.info(
                    "media_upload_skipped",
                    locator=locator,
                    bytes=media.size,
                    reason="sidecar and size match",
                )
                if progress is not None:
                    progress(media.size, media.size)
                self.verified.add(locator)
                return StagedMedia(media.role, locator, local, media.size, 0, media.node)
        if remote.sidecar_digest is not None or remote.size is not None:
            log.info(
                "media_replace",
                locator=locator,
                remote_size=remote.size,
                local_size=media.size,
            )
        # The sidecar goes first: from here until the new sidecar is written, nothing looks complete. (A delete
        # for a sidecar that is not there would be one more datastore task per upload, for nothing.)
        if remote.sidecar_present:
            self._delete(media.name + _SIDECAR)
        if remote.size is None:
            self._ensure_folder()
        digest = self._upload_with_retries(media, progress, log)
        if expected is not None and digest != expected:
            self._delete(media.name + _PARTIAL)
            raise ProviderError(
                f"{media.local_path} has SHA-256 {digest}, expected {expected}; the upload was removed",
                provider=PROVIDER,
                resource=locator,
            )
        size = self._remote_size(media.name + _PARTIAL)
        if size != media.size:
            self._delete(media.name + _PARTIAL)
            raise TransientError(
                f"the datastore holds {size} bytes of {media.name}, {media.size} were sent",
                provider=PROVIDER,
            )
        self._forget(media.name)
        self._file_manager_task(
            "MoveDatastoreFile_Task",
            f"moving the upload to {locator}",
            sourceName=self.locator(media.name + _PARTIAL),
            sourceDatacenter=self._placement.datacenter,
            destinationName=locator,
            destinationDatacenter=self._placement.datacenter,
            force=True,
        )
        self._put_bytes(media.name + _SIDECAR, f"{digest}  {media.name}\n".encode())
        self.verified.add(locator)
        return StagedMedia(media.role, locator, digest, media.size, media.size, media.node)

    def _remote_size(self, name: str) -> int | None:
        return (self._search([name]) or {}).get(name)

    def _upload_with_retries(self, media: MediaFile, progress: ProgressCallback | None, log: Any) -> str:
        attempts = 0
        limit = self._session.settings.upload_attempts

        def attempt() -> str:
            nonlocal attempts
            attempts += 1
            try:
                return self._upload_once(media, progress, log, attempts)
            except TransientError as exc:
                log.warning("media_upload_retry", attempt=attempts, of=limit, error=str(exc))
                if attempts >= limit:
                    raise ProviderError(
                        f"uploading {media.name} failed {attempts} times; last error: {exc}",
                        provider=PROVIDER,
                        resource=self.locator(media.name),
                    ) from exc
                raise

        return wait_for(
            attempt,
            what=f"the upload of {media.name}",
            timeout=self._session.settings.upload_timeout,
            backoff=_UPLOAD_BACKOFF,
        )

    def _upload_once(
        self,
        media: MediaFile,
        progress: ProgressCallback | None,
        log: Any,
        attempt: int,
    ) -> str:
        hasher = hashlib.sha256()
        sent = 0
        started = time.monotonic()
        last_log = started

        def body() -> Iterator[bytes]:
            nonlocal sent, last_log
            # Hashing runs on a second thread, one chunk behind the send: hashlib and the socket both release the
            # GIL on large buffers, so against a real vCenter (a network-bound upload) the digest costs no wall time.
            # Against the lab's vcsim on two cores it competes with the simulator for CPU. Two chunks in memory.
            with media.local_path.open("rb") as f, ThreadPoolExecutor(1, thread_name_prefix="sha256") as pool:
                hashing: Future[None] | None = None
                while chunk := f.read(_CHUNK):
                    if hashing is not None:
                        hashing.result()
                    hashing = pool.submit(hasher.update, chunk)
                    sent += len(chunk)
                    if progress is not None:
                        progress(sent, media.size)
                    now = time.monotonic()
                    if now - last_log >= _PROGRESS_EVERY:
                        last_log = now
                        log.info(
                            "media_upload_progress",
                            bytes=sent,
                            total=media.size,
                            rate_mib_s=_rate(sent, now - started),
                        )
                    yield chunk
                if hashing is not None:
                    hashing.result()

        log.info(
            "media_upload_started",
            locator=self.locator(media.name),
            bytes=media.size,
            attempt=attempt,
        )
        headers = {
            **self._headers(),
            "Content-Length": str(media.size),
            "Content-Type": "application/octet-stream",
        }
        self._send("PUT", media.name + _PARTIAL, body(), headers)
        if sent != media.size:
            raise ProviderError(
                f"{media.local_path} changed size during the upload ({sent} bytes read, {media.size} expected)",
                provider=PROVIDER,
            )
        elapsed = time.monotonic() - started
        log.info(
            "media_upload_finished",
            bytes=sent,
            seconds=round(elapsed, 2),
            rate_mib_s=_rate(sent, elapsed),
        )
        return hasher.hexdigest()

    def _put_bytes(self, name: str, data: bytes) -> None:
        self._send("PUT", name, data, {**self._headers(), "Content-Type": "text/plain"})

    def _send(self, method: str, name: str, content: Any, headers: dict[str, str]) -> None:
        where = self.locator(name)
        try:
            r = self._http().request(
                method,
                self._url(name),
                params=self._params(),
                content=content,
                headers=headers,
            )
        except httpx.TransportError as exc:
            raise TransientError(f"{method} {where}: {type(exc).__name__}: {exc}", provider=PROVIDER) from exc
        if r.status_code == 401:
            # The session expired mid-run (peers report 401s mid-upload): log in again, then retry.
            self._session.relogin()
            raise TransientError(f"{method} {where}: HTTP 401, logged in again", provider=PROVIDER)
        if r.status_code in _TRANSIENT_STATUS:
            raise TransientError(f"{method} {where}: HTTP {r.status_code}", provider=PROVIDER)
        if r.status_code >= 300:
            raise ProviderError(
                f"{method} {where}: HTTP {r.status_code} {r.text[:200]}",
                provider=PROVIDER,
                resource=where,
            )

    # ------------------------------------------------------------------------------------------- unstage

    def unstage(self, staged: StagedMedia) -> None:
        """Delete the file, its sidecar and any leftover partial upload. Missing files are fine."""
        prefix = f"[{self._placement.datastore_name}] "
        if not staged.locator.startswith(prefix):
            raise ProviderError(
                f"{staged.locator} is not on datastore {self._placement.datastore_name}",
                provider=PROVIDER,
            )
        relative = staged.locator[len(prefix) :]
        folder, _, name = relative.rpartition("/")
        if folder != self._folder:
            raise ProviderError(f"{staged.locator} is not in {self._folder}/", provider=PROVIDER)
        for leftover in (name + _SIDECAR, name, name + _PARTIAL):
            self._delete(leftover)
        self.verified.discard(staged.locator)
        self._log.info("media_unstaged", locator=staged.locator)

    def exists(self, locator: str) -> bool:
        """True when ``locator`` (in our media folder) is on the datastore with its sidecar."""
        if locator in self.verified:
            return True
        name = locator.rpartition("/")[2]
        remote = self._remote(name)
        ok = remote.size is not None and remote.sidecar_digest is not None
        if ok:
            self.verified.add(locator)
        return ok


def _rate(done: int, seconds: float) -> float:
    return round(done / (1024 * 1024) / seconds, 1) if seconds > 0 else 0.0
