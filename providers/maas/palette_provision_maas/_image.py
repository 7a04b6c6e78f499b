"""The image mode's image: ``custom/<name>`` in MAAS, uploaded once from the user's file when MAAS lacks it.

MAAS cannot boot an ISO: image mode deploys the appliance as a disk image the user supplies (built with Packer, or
by installing the ISO into a VM and taking its disk). The upload is MAAS's own protocol: ``POST boot-resources/``
declares the name, architecture, file type, size and SHA-256, then the bytes go by ``PUT`` in chunks to the file's
``upload_uri``; MAAS checks the digest when the last byte arrives and marks the resource complete.

* **Skipped when already there**: a complete resource of that name and architecture whose file has the local
  file's SHA-256 (or any complete one, when the plan gives no file).
* **Resumed**: an incomplete resource of the same digest and size continues from the bytes MAAS holds (a run killed
  mid-upload sends the rest, not the whole file again).
* **Started again when MAAS refuses a chunk** (a killed run's last chunk landing late): from 0 in the same resource
  when MAAS emptied the file, else in a new one; at most twice.
* **Never replaced silently**: a complete resource with another digest is someone's image; the run stops and says
  so (rename ``image.name``, or delete it in MAAS).

The local file's digest is cached in the provider's state folder by (path, size, modification time), so a re-run
reads the file again only when it changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from palette_provision.errors import ConfigurationError, ProviderError
from palette_provision.plan import DeploymentPlan
from palette_provision.provider import ProviderContext
from palette_provision.waiting import Backoff, wait_for

from palette_provision_maas._client import MaasClient
from palette_provision_maas._errors import PROVIDER, MaasApiError, MaasNotFound
from palette_provision_maas._settings import MaasImage
from palette_provision_maas._shapes import BootResource

__all__ = ["ImageUploader"]

_READ = 4 << 20
_DIGESTS = "image-digests.json"
_RESTARTS = 2  # uploads started again after MAAS refused a chunk (see ImageUploader._upload)


class ImageUploader:
    """Makes sure MAAS holds ``custom/<image.name>``; once per process, under a lock."""

    def __init__(self, image: MaasImage, context: ProviderContext, client: Callable[[], MaasClient]) -> None:
        self.image = image
        self.context = context
        self._client = client
        self._lock = threading.Lock()
        self._ready = False
        self._path: Path | None = None
        self._log = context.log.bind(phase="image")

    def _find(self) -> BootResource | None:
        client = self._client()
        for listed in client.boot_resources():
            if listed.name == self.image.resource_name and listed.architecture == self.image.architecture:
                return client.boot_resource(listed.id)
        return None

    def check(self, plan: DeploymentPlan) -> None:
        """Preflight: MAAS has the image complete, or the plan's file exists to upload it."""
        if self.image.file is not None:
            self._path = plan.resolve_path(self.image.file)
        found = self._find()
        if found is not None and found.complete and self._path is None:
            return
        if self._path is None:
            raise ConfigurationError(
                f"MAAS has no complete {self.image.resource_name} ({self.image.architecture}) and the plan gives no "
                "file to upload", field="platform.image.file", provider=PROVIDER,
            )  # fmt: skip
        if not self._path.is_file():
            raise ConfigurationError(f"no such file: {self._path}", field="platform.image.file", provider=PROVIDER)
        if found is not None and found.complete:
            # Found here, not after machines were allocated: the file's digest is read once (and cached) either way.
            theirs = found.files[0] if found.files else None
            digest = self._digest(self._path)
            if theirs is None or theirs.sha256 != digest or theirs.size != self._path.stat().st_size:
                raise ConfigurationError(self._another(theirs.sha256 if theirs else None, digest),
                                         field="platform.image.name", provider=PROVIDER)  # fmt: skip

    def _another(self, theirs: str | None, digest: str) -> str:
        return (f"MAAS's {self.image.resource_name} is another image (SHA-256 {theirs or '?'}, the plan's file has "
                f"{digest}): rename platform.image.name, or delete it in MAAS")

    def ensure(self) -> str:
        """The image's name once MAAS holds it complete (uploading or resuming first if needed)."""
        with self._lock:
            if not self._ready:
                self._ensure()
                self._ready = True
            return self.image.name

    def _ensure(self) -> None:
        found = self._find()
        path = self._path
        if path is None:
            if found is not None and found.complete:
                return
            raise ProviderError(f"MAAS has no complete {self.image.resource_name} and there is no file to upload",
                                provider=PROVIDER, resource=self.image.resource_name)  # fmt: skip
        size = path.stat().st_size
        digest = self._digest(path)
        theirs = found.files[0] if found is not None and found.files else None
        if found is not None and theirs is not None and theirs.sha256 == digest and theirs.size == size:
            if found.complete:
                self._log.info("maas_image_present", image=self.image.resource_name, bytes=size, uploaded_bytes=0)
                return
        elif found is not None and found.complete:
            raise ProviderError(self._another(theirs.sha256 if theirs else None, digest), provider=PROVIDER,
                                resource=self.image.resource_name)  # fmt: skip
        else:
            found = self._create(found, digest, size)  # an incomplete upload of another file: start again
        self._upload(found, path, size, digest)

    def _create(self, stale: BootResource | None, digest: str, size: int) -> BootResource:
        """A new resource with an empty file to upload, ``stale`` (ours, incomplete) deleted first."""
        client = self._client()
        if stale is not None:
            client.delete_boot_resource(stale.id)
        return client.create_boot_resource(
            self.image.resource_name, self.image.architecture, filetype=self.image.effective_filetype(),
            sha256=digest, size=size, title=self.image.title or f"palette-provision {self.image.name}",
        )  # fmt: skip

    def _upload(self, resource: BootResource, path: Path, size: int, digest: str) -> None:
        client = self._client()
        last = [0.0]

        def progress(done: int, total: int) -> None:
            if done - last[0] >= 64 << 20 or done == total:
                last[0] = done
                self._log.info("maas_image_upload_progress", bytes=done, total=total)

        for restart in range(_RESTARTS + 1):
            pending = [f for f in resource.files if not f.complete and f.upload_uri]
            if not pending:
                break
            uri = str(pending[0].upload_uri)
            start = last[0] = pending[0].received
            self._log.info("maas_image_upload", image=self.image.resource_name, bytes=size, resume_at=start)
            try:
                client.upload_chunks(uri, path, offset=start, chunk_size=self.image.chunk_size, progress=progress)
                break
            except MaasApiError as exc:
                # A PUT appends at the end of what MAAS holds; it names no offset. A chunk a killed run had in
                # flight can land after this run read where to resume, and the file then holds bytes twice: MAAS
                # answers "Too much data received." or, at the last byte, "Saved content does not match given
                # SHA256 value." (and empties the file). Start again, from what MAAS holds if it emptied the file,
                # else from a new resource: appended bytes of unknown origin cannot be trusted.
                if exc.status != 400 or restart == _RESTARTS:
                    raise
                resource = self._after_refused_chunk(resource, uri, digest, size, exc)

        # MAAS marks the resource complete once it has checked the file (asynchronously on a real region).
        wait_for(
            lambda: client.boot_resource(resource.id),
            what=f"MAAS to mark {self.image.resource_name} complete",
            until=lambda r: r.complete,
            timeout=600,
            backoff=Backoff(initial=0.5, maximum=5.0),
            describe=lambda r: "complete" if r.complete else "incomplete",
        )
        self._log.info("maas_image_uploaded", image=self.image.resource_name, bytes=size)

    def _after_refused_chunk(self, resource: BootResource, uri: str, digest: str, size: int,
                             exc: MaasApiError) -> BootResource:  # fmt: skip
        """The resource to upload into after MAAS refused a chunk: as it is when complete or emptied, else anew."""
        try:
            fresh: BootResource | None = self._client().boot_resource(resource.id)
        except MaasNotFound:
            fresh = None
        status = None
        if fresh is not None:
            with contextlib.suppress(MaasNotFound):  # the file is gone (replaced by a newer upload)
                status = fresh.upload_status(urlsplit(uri).path)
        if fresh is not None and status is not None and (status.complete or status.received == 0):
            self._log.warning("maas_image_upload_restart", image=self.image.resource_name, refused=exc.text,
                              file="complete" if status.complete else "emptied")  # fmt: skip
            return fresh
        self._log.warning("maas_image_upload_restart", image=self.image.resource_name, refused=exc.text,
                          file="replaced")  # fmt: skip
        return self._create(fresh if status is not None else None, digest, size)

    def _digest(self, path: Path) -> str:
        """The file's SHA-256, cached by (path, size, mtime) in the state folder."""
        info = path.stat()
        key = f"{path.resolve()}|{info.st_size}|{info.st_mtime_ns}"
        cache = self.context.state_dir / _DIGESTS
        known: dict[str, Any] = {}
        try:
            loaded = json.loads(cache.read_text())
            known = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            pass
        value = known.get(key)
        if isinstance(value, str) and len(value) == 64:
            return value
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(_READ):
                digest.update(chunk)
        result = digest.hexdigest()
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({key: result}))
        return result
