"""The datastore's ``/folder`` HTTP interface for one media folder: read a small file, write bytes, stream a file.

Every request carries the session cookie (vcsim 0.24.2 accepts /folder requests without one; vCenter does not) and
the datacenter and datastore as query parameters. httpx is imported on the first request, so a run that neither
uploads nor reads a sidecar never loads it.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from palette_provision.errors import ProviderError, TransientError
from palette_provision.provider import MediaFile, ProgressCallback
from palette_provision.waiting import Backoff, wait_for

from palette_provision_vsphere._inventory import Placement
from palette_provision_vsphere._session import PROVIDER, VsphereSession

if TYPE_CHECKING:
    import httpx

__all__ = ["FolderClient"]

# 4 MiB: with the digest computed on a second thread, 1 MiB chunks spent more on handing each chunk over than the
# overlap saved (a 1 GiB upload to the lab's vcsim: 1.9-2.0 s with 1 MiB, 1.6-1.7 s with 4 MiB, like hashing inline).
_CHUNK = 4 * 1024 * 1024
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
# Upload retries: pauses of 1, 2, 4 ... up to 30 s between attempts.
_UPLOAD_BACKOFF = Backoff(initial=1.0, maximum=30.0, jitter=0.5)
_TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
_PROGRESS_EVERY = 5.0  # seconds between upload progress log events


class FolderClient:
    """HTTP access to ``[<datastore>] <folder>/``. Thread-safe (one pooled client)."""

    def __init__(self, session: VsphereSession, placement: Placement, folder: str) -> None:
        self._session = session
        self._placement = placement
        self._folder = folder
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    def locator(self, name: str) -> str:
        """``[ds] folder/name``."""
        return f"[{self._placement.datastore_name}] {self._folder}/{name}"

    def close(self) -> None:
        """Close the HTTP client."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # ------------------------------------------------------------------------------------------- plumbing

    def _url(self, name: str) -> str:
        s = self._session.settings
        path = urllib.parse.quote(f"{self._folder}/{name}")
        return f"https://{s.server}:{s.port}/folder/{path}"

    def _params(self) -> dict[str, str]:
        return {"dcPath": self._placement.datacenter_path, "dsName": self._placement.datastore_name}

    def _headers(self) -> dict[str, str]:
        return {"Cookie": self._session.cookie()}

    def _http(self) -> httpx.Client:
        import httpx

        with self._lock:
            if self._client is None:
                t = self._session.settings.http_timeout
                # trust_env=False: no proxy from the environment. The session cookie must reach vCenter through
                # a pinned TLS session, and through an https proxy the pin would not apply to the inner TLS.
                self._client = httpx.Client(
                    trust_env=False,
                    verify=self._session.ssl_context(),
                    timeout=httpx.Timeout(t, connect=min(t, 30.0)),
                )
            return self._client

    def _send(self, method: str, name: str, content: Any, headers: dict[str, str]) -> None:
        import httpx

        where = self.locator(name)
        try:
            r = self._http().request(method, self._url(name), params=self._params(), content=content, headers=headers)
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

    # ------------------------------------------------------------------------------------------ reads, writes

    def read_digest(self, name: str) -> str | None:
        """The SHA-256 a ``sha256sum``-format file ``name`` starts with; ``None`` when absent or not a digest."""
        import httpx

        try:
            r = self._http().get(self._url(name), params=self._params(), headers=self._headers())
        except httpx.TransportError as exc:
            raise TransientError(f"reading {self.locator(name)}: {exc}", provider=PROVIDER) from exc
        if r.status_code != 200:
            return None
        token = r.text.split(maxsplit=1)[0].lower() if r.text.strip() else ""
        return token if _HEX64.match(token) else None

    def put_bytes(self, name: str, data: bytes) -> None:
        """Write a small file in one request."""
        self._send("PUT", name, data, {**self._headers(), "Content-Type": "text/plain"})

    def upload(self, media: MediaFile, target: str, progress: ProgressCallback | None, log: Any) -> str:
        """Stream ``media`` to ``target`` in this folder, retrying transient failures; return its SHA-256.

        Raises:
            ProviderError: every attempt failed, or the local file changed size while being read.
        """
        attempts = 0
        limit = self._session.settings.upload_attempts

        def attempt() -> str:
            nonlocal attempts
            attempts += 1
            try:
                return self._upload_once(media, target, progress, log, attempts)
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
        self, media: MediaFile, target: str, progress: ProgressCallback | None, log: Any, attempt: int
    ) -> str:
        hasher = hashlib.sha256()
        # The core read this very file and vouches for its digest (it checks the file is unchanged afterwards):
        # the bytes go out unhashed, which on a CPU-bound host is most of the upload's cost beside the sending.
        vouched = media.sha256 if media.sha256_checked else None
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
                    if vouched is None:
                        hashing = pool.submit(hasher.update, chunk)
                    sent += len(chunk)
                    if progress is not None:
                        progress(sent, media.size)
                    now = time.monotonic()
                    if now - last_log >= _PROGRESS_EVERY:
                        last_log = now
                        log.info(
                            "media_upload_progress", bytes=sent, total=media.size, rate_mib_s=_rate(sent, now - started)
                        )
                    yield chunk
                if hashing is not None:
                    hashing.result()

        log.info("media_upload_started", locator=self.locator(media.name), bytes=media.size, attempt=attempt)
        headers = {**self._headers(), "Content-Length": str(media.size), "Content-Type": "application/octet-stream"}
        self._send("PUT", target, body(), headers)
        if sent != media.size:
            raise ProviderError(
                f"{media.local_path} changed size during the upload ({sent} bytes read, {media.size} expected)",
                provider=PROVIDER,
            )
        elapsed = time.monotonic() - started
        log.info("media_upload_finished", bytes=sent, seconds=round(elapsed, 2), rate_mib_s=_rate(sent, elapsed))
        return vouched or hasher.hexdigest()


def _rate(done: int, seconds: float) -> float:
    return round(done / (1024 * 1024) / seconds, 1) if seconds > 0 else 0.0
