"""Content-addressed media staging on a datastore: what is there, what to upload, and when it counts as complete.

Layout in ``[<datastore>] <media_folder>/``: ``<name>`` (the file), ``<name>.sha256`` (its digest, written in
``sha256sum`` format only after a verified complete upload) and, while the appliance ISO uploads,
``<name>.partial``. The bytes travel over the ``/folder`` HTTP interface (:mod:`._folder`).

The upload streams the local file with a Content-Length, hashes it in the same pass, moves ``.partial`` over
``<name>`` (a seed, small and private to one node, is written in place), writes the sidecar and then checks the
size the datastore reports. A file looks complete only when its size matches *and* its sidecar holds the digest:
a run that dies anywhere before the sidecar is written leaves none (it is deleted before a replacement starts),
and a short file fails the size test, so the next run uploads again: a broken upload never looks complete.

A re-run compares sizes from one folder listing and takes digests from :mod:`._verified` when neither file changed
since this deployment last wrote or read them; only otherwise does it read the sidecar over HTTP.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from palette_provision.errors import ProviderError, TransientError
from palette_provision.media import sha256_file
from palette_provision.provider import MediaFile, ProgressCallback, StagedMedia

from palette_provision_vsphere._folder import FolderClient
from palette_provision_vsphere._inventory import Placement
from palette_provision_vsphere._session import (
    PROVIDER,
    VsphereSession,
    VsphereTaskError,
    translate,
    vim,
)
from palette_provision_vsphere._verified import FileStat, VerifiedMedia

__all__ = ["Stager"]

_SIDECAR = ".sha256"
_PARTIAL = ".partial"


@dataclass(frozen=True)
class _Remote:
    size: int | None
    sidecar_digest: str | None
    sidecar_present: bool = False


class Stager:
    """Stages and unstages files in one datastore folder. Thread-safe; one upload per file name at a time."""

    def __init__(
        self, session: VsphereSession, placement: Placement, log: Any, verified: VerifiedMedia | None = None
    ) -> None:
        self._session = session
        self._placement = placement
        self._log = log
        self._folder = session.settings.media_folder
        self._files = FolderClient(session, placement, self._folder)
        self._lock = threading.Lock()
        self._name_locks: dict[str, threading.Lock] = {}
        self._folder_ready = False
        self._listing: dict[str, FileStat] | None = None
        self._digests = verified or VerifiedMedia(None)
        #: Locators verified present in this process: creating a VM need not look again.
        self.verified: set[str] = set()

    # ----------------------------------------------------------------------------------------------- paths

    def locator(self, name: str) -> str:
        """``[ds] folder/name``."""
        return self._files.locator(name)

    def close(self) -> None:
        """Close the HTTP client."""
        self._files.close()

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

    def _key(self, name: str) -> str:
        # Where the file is, fully: the same folder name on another vCenter or datacenter is another file.
        s = self._session.settings
        return f"{s.server}:{s.port}/{self._placement.datacenter_path}/{self.locator(name)}"

    def _search(self, patterns: list[str]) -> dict[str, FileStat] | None:
        """Size and modification time of the files in our folder matching ``patterns``; ``None`` without folder."""
        browser = self._placement.datastore_browser
        spec = vim.host.DatastoreBrowser.SearchSpec(
            matchPattern=patterns,
            details=vim.host.DatastoreBrowser.FileInfo.Details(fileSize=True, modification=True),
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
        return {
            str(f.path): FileStat(int(f.fileSize or 0), f.modification.isoformat() if f.modification else None)
            for f in (result.file or [])
        }

    def listing(self) -> dict[str, int]:
        """Every file in our datastore folder with its size (empty when the folder does not exist).

        Kept as a hint for :meth:`_remote`: one search at preflight instead of one per file on a re-run, and none
        for a file it did not show (a seed about to be uploaded for the first time). Our own uploads and deletions
        keep it current.
        """
        found = self._search(["*"]) or {}
        with self._lock:
            self._listing = dict(found)
        return {name: stat.size for name, stat in found.items()}

    def _remote(self, name: str) -> _Remote:
        """The datastore's size of ``name`` and the digest in its sidecar (``None`` when absent or unreadable)."""
        with self._lock:
            hint = dict(self._listing) if self._listing is not None else None
        if hint is not None and name in hint and name + _SIDECAR in hint:
            # Both files were in this run's listing a moment ago (the sidecar is written last, deleted first).
            digest = self._sidecar_digest(name, hint)
            if digest is not None:
                return _Remote(hint[name].size, digest, sidecar_present=True)
        elif hint is not None and not {name, name + _SIDECAR, name + _PARTIAL} & hint.keys():
            return _Remote(None, None)  # not there a moment ago: nothing to compare, nothing to delete
        stats = self._search([name, name + _SIDECAR]) or {}
        present = name + _SIDECAR in stats
        digest = self._sidecar_digest(name, stats) if present else None
        return _Remote(stats[name].size if name in stats else None, digest, sidecar_present=present)

    def _sidecar_digest(self, name: str, stats: dict[str, FileStat]) -> str | None:
        """The sidecar's digest: recorded, when neither file changed since we last saw it, else read over HTTP."""
        file, sidecar = stats.get(name), stats[name + _SIDECAR]
        if file is not None:
            known = self._digests.digest(self._key(name), file, sidecar)
            if known is not None:
                return known
        digest = self._read_sidecar(name)
        if digest is not None and file is not None:
            self._digests.record(self._key(name), file, sidecar, digest)
        return digest

    def _forget(self, name: str) -> None:
        with self._lock:
            if self._listing is not None:
                self._listing.pop(name, None)

    def _read_sidecar(self, name: str) -> str | None:
        """The digest in ``name``'s sidecar, read over HTTP (``None`` when absent or not a digest)."""
        return self._files.read_digest(name + _SIDECAR)

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
        # The appliance ISO lands as .partial and is moved into place, so a broken upload never sits under its name
        # for a person or another tool to pick up. A seed (small, private to one node, deleted once installed) is
        # written in place, one datastore task fewer per node: for both, the sidecar, written last, says complete.
        target = media.name if media.role == "seed" else media.name + _PARTIAL
        digest = self._files.upload(media, target, progress, log)
        if expected is not None and digest != expected:
            self._delete(target)
            raise ProviderError(
                f"{media.local_path} has SHA-256 {digest}, expected {expected}; the upload was removed",
                provider=PROVIDER,
                resource=locator,
            )
        self._forget(media.name)
        if target != media.name:
            self._file_manager_task(
                "MoveDatastoreFile_Task",
                f"moving the upload to {locator}",
                sourceName=self.locator(target),
                sourceDatacenter=self._placement.datacenter,
                destinationName=locator,
                destinationDatacenter=self._placement.datacenter,
                force=True,
            )
        self._files.put_bytes(media.name + _SIDECAR, f"{digest}  {media.name}\n".encode())
        # Checked after the sidecar is written, in the same search that records both files for the next run: a
        # short file with a sidecar still fails the size test, and is removed here.
        stats = self._search([media.name, media.name + _SIDECAR]) or {}
        stored, sidecar = stats.get(media.name), stats.get(media.name + _SIDECAR)
        if stored is None or stored.size != media.size or sidecar is None:
            self._delete(media.name + _SIDECAR)
            self._delete(media.name)
            raise TransientError(
                f"the datastore holds {stored.size if stored else 0} bytes of {media.name}, {media.size} were sent",
                provider=PROVIDER,
            )
        self._digests.record(self._key(media.name), stored, sidecar, digest)
        with self._lock:
            if self._listing is not None:
                self._listing.update(stats)
        self.verified.add(locator)
        return StagedMedia(media.role, locator, digest, media.size, media.size, media.node)

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
        self._digests.forget(self._key(name))
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
