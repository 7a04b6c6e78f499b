"""Step 3 of formation: stream the content bundle to the leader, verify it, wait until every peer has it.

The upload is ``multipart/form-data`` with the one required field ``uploadFile`` (reference §4.1). The file is
read in 1 MiB pieces while it is sent; the same pass computes its SHA-256, which must equal the digest the leader
records (``uploaded-content/details``, §4.2), and the plan's ``content.sha256`` when given.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from palette_provision.errors import HandoffError
from palette_provision.handoff._client import LocalApiUnavailable
from palette_provision.handoff._session import LINK_STATUS, Session, step_errors
from palette_provision.media import sha256_file
from palette_provision.waiting import Backoff, wait_for

UPLOAD = "/v1/edge-mgmt/edgehosts/current/actions/upload-content"
UPLOADED_DETAILS = "/v1/edge-mgmt/edgehosts/current/uploaded-content/details"
SYNC_DETAILS = "/v1/edge-mgmt/cluster/registry/content/sync-status/details"

CONTENT_STEP = "handoff.content"
SYNC_STEP = "handoff.content_sync"

#: Bytes read from the bundle per piece sent. httpx asks for 64 KiB; larger pieces halve the per-chunk Python
#: overhead on multi-gigabyte bundles while keeping memory flat.
READ_SIZE = 1 << 20
PROGRESS_EVERY_S = 1.0


class ProgressReader:
    """A read-only file wrapper that hashes and counts what is read, and reports progress.

    httpx sizes the multipart body with ``fileno()``/``fstat`` and rewinds with ``seek(0)`` before sending, so
    both are forwarded; a rewind restarts the digest.

    >>> import io
    >>> r = ProgressReader(io.BytesIO(b"abc"), 3, lambda done, total: None)
    >>> r.read(10), r.sha256
    (b'abc', 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad')
    """

    def __init__(self, handle: IO[bytes], size: int, on_progress: Callable[[int, int], None]) -> None:
        self._handle = handle
        self._size = size
        self._on_progress = on_progress
        self._hash = hashlib.sha256()
        self._last_report = 0.0
        self.sent = 0

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the bytes read since the last rewind."""
        return self._hash.hexdigest()

    def read(self, size: int = -1) -> bytes:
        """Return the next piece (at least ``READ_SIZE`` bytes when available)."""
        data = self._handle.read(max(size, READ_SIZE) if size >= 0 else -1)
        self._hash.update(data)
        self.sent += len(data)
        now = time.monotonic()
        finished = bool(data) and self.sent == self._size
        if finished or (data and now - self._last_report >= PROGRESS_EVERY_S):
            self._last_report = now
            self._on_progress(self.sent, self._size)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Forward a seek; rewinding to the start restarts the digest and the count."""
        position = self._handle.seek(offset, whence)
        if position == 0:
            self._hash, self.sent = hashlib.sha256(), 0
        return position

    def tell(self) -> int:
        """Forward ``tell``."""
        return self._handle.tell()

    def fileno(self) -> int:
        """Forward ``fileno`` (httpx reads the body length from ``fstat``)."""
        return self._handle.fileno()


def _already_uploaded(session: Session, path: Path, size: int, expected: str | None) -> dict[str, Any] | None:
    """The leader's record of the last upload when it is this bundle (same name, size and digest)."""
    details = session.api(session.leader).get_optional(UPLOADED_DETAILS)
    if not details or details.get("fileName") != path.name or int(details.get("sizeInBytes") or -1) != size:
        return None
    digest = expected or session.context.journal.cached_digest(path) or sha256_file(path)
    return dict(details) if str(details.get("sha256Hash", "")).lower() == digest else None


def upload_content(session: Session) -> None:
    """Upload ``plan.content`` to the leader once (an identical earlier upload is adopted), then verify it."""
    if session.context.plan.content is not None:
        session.context.run_step(CONTENT_STEP, lambda: _upload(session))


def _upload(session: Session) -> dict[str, Any]:
    plan, journal = session.context.plan, session.context.journal
    content = plan.content
    if content is None:
        return {}
    session.checkpoint(f"{CONTENT_STEP}:begin")
    path = plan.resolve_path(content.path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise HandoffError(CONTENT_STEP, f"cannot read the content bundle {path}: {exc.strerror}") from exc
    expected = content.sha256.lower() if content.sha256 else None
    with step_errors(CONTENT_STEP):
        details = _already_uploaded(session, path, size, expected)
        if details is not None:
            session.emit(CONTENT_STEP, "content_already_uploaded", file=path.name, bytes=size)
            digest, upload_path = str(details["sha256Hash"]).lower(), None
        else:
            digest, upload_path = send_file(session, path, size)
            session.checkpoint(f"{CONTENT_STEP}:uploaded")
            details = session.api(session.leader).get(UPLOADED_DETAILS)
        recorded = str(details.get("sha256Hash", "")).lower()
        recorded_size = int(details.get("sizeInBytes") or -1)
        if recorded != digest or recorded_size != size:
            raise HandoffError(
                CONTENT_STEP,
                f"{session.leader.name} recorded {recorded_size} bytes with sha256 {recorded or '?'} for "
                f"{path.name}, but {size} bytes with sha256 {digest} were sent",
            )
        if expected is not None and digest != expected:
            raise HandoffError(
                CONTENT_STEP, f"{path} has sha256 {digest}, but the plan's content.sha256 is {expected}"
            )
    journal.cache_digest(path, digest)
    return {"file": path.name, "bytes": size, "sha256": digest, "upload_path": upload_path}


def send_file(session: Session, path: Path, size: int, step: str = CONTENT_STEP) -> tuple[str, str | None]:
    """Stream ``path`` to the leader's content upload (retried from its first byte on a transient failure); its
    SHA-256 as sent and the leader's upload path. The content bundle's and the pack bundles' one way up."""
    started = time.monotonic()

    def progress(done: int, total: int) -> None:
        elapsed = max(time.monotonic() - started, 1e-6)
        session.emit(
            step, "content_upload_progress", file=path.name, bytes_sent=done, bytes_total=total,
            percent=round(100.0 * done / total, 1) if total else 100.0, rate_mib_s=round(done / elapsed / 2**20, 1),
        )

    timeout = max(600.0, session.context.plan.timeouts.content_sync)

    def attempt() -> tuple[Any, str]:
        # Every attempt streams the file again from its first byte, with a fresh digest: a 5xx or a dropped
        # connection mid-transfer leaves nothing half-sent that a later attempt could build on.
        with path.open("rb") as handle:
            reader = ProgressReader(handle, size, progress)
            sent = session.api(session.leader).upload(UPLOAD, "uploadFile", reader, path.name, timeout=timeout)  # type: ignore[arg-type]
            return sent, reader.sha256

    answer, digest = wait_for(
        attempt,
        what=f"the content upload to {session.leader.name}",
        timeout=timeout,
        until=lambda _: True,
        retry_on=(LocalApiUnavailable,),
        backoff=Backoff(initial=2.0, maximum=30.0, jitter=1.0),
    )
    elapsed = time.monotonic() - started
    session.emit(step, "content_uploaded", file=path.name, bytes=size, seconds=round(elapsed, 1),
                 rate_mib_s=round(size / max(elapsed, 1e-6) / 2**20, 1))
    upload_path = (answer or {}).get("uploadPath") if isinstance(answer, dict) else None
    return digest, upload_path


def _synced(text: Any) -> bool:
    # contentSyncStatus is free text (§11.9): the simulator says "synced"; accept the obvious synonyms.
    return str(text).strip().lower() in ("synced", "completed", "complete", "success", "succeeded", "done")


def wait_content_synced(session: Session) -> None:
    """Wait until every peer reports the content synced (link status) and the leader lists nothing pending."""
    if session.context.plan.content is not None:
        session.context.run_step(SYNC_STEP, lambda: _await_synced(session))


def _await_synced(session: Session) -> dict[str, Any]:
    plan = session.context.plan
    leader = session.api(session.leader)

    def probe() -> dict[str, Any]:
        link = leader.get_optional(LINK_STATUS) if session.followers else None
        sync = leader.get(SYNC_DETAILS) or {}
        peers = {str(p.get("id")): p.get("contentSyncStatus") for p in (link or {}).get("peers") or []}
        pending = [i for i in sync.get("pendingItems") or [] if isinstance(i, dict)]
        return {"peers": peers, "pending": pending, "errors": dict(sync.get("errors") or {})}

    want = {session.facts[n.name].host_id for n in session.context.nodes} if session.followers else set()

    def done(state: dict[str, Any]) -> bool:
        peers = state["peers"]
        return not state["pending"] and all(_synced(peers.get(host)) for host in want)

    def failed(state: dict[str, Any]) -> str | None:
        failures = [f"{i.get('target')}: {i.get('msg')}" for i in state["pending"] if i.get("status") == "failed"]
        failures += [f"{k}: {v}" for k, v in state["errors"].items()]
        return "; ".join(failures) or None

    with step_errors(SYNC_STEP):
        session.wait(SYNC_STEP, probe, what="the content to sync to every node", timeout=plan.timeouts.content_sync,
                     until=done, failed=failed)
    session.emit(SYNC_STEP, "content_synced", nodes=[n.name for n in session.context.nodes])
    return {}
