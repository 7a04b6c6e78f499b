"""Push a file to an OCI registry as an artifact: our small client of the OCI distribution spec, on httpx.

:func:`push_artifact`: ``GET /v2/`` (the registry's ``401`` names ``Basic`` or the ``Bearer`` token flow; the
credentials go only where and when it asks, never in clear); the file's SHA-256, streamed; ``HEAD`` of the blob
(present: 0 bytes) else ``POST`` an upload, ``PATCH`` chunks with ``Content-Range`` following each ``Location``,
``PUT ?digest=`` to close; the upload's location kept in ``state_dir`` after every chunk, so a killed push asks
the registry how much it holds (``GET``, ``Range``) and sends the rest; the OCI empty config ``{}``; the
manifest last, skipped when the tag already has its digest. ``docs/oci-push.md`` has the details and sources.

Errors: :class:`~palette_provision.errors.AuthenticationError`, :class:`~palette_provision.errors.TLSVerificationError`,
:class:`~palette_provision.errors.TransientError` (no answer, 5xx, 429) and :class:`RegistryError` (other 4xx;
names the registry and repository). The registry's words appear bounded and printable; secrets never.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from palette_provision.errors import (
    AuthenticationError,
    ConfigurationError,
    ProviderError,
    TLSVerificationError,
    TransientError,
)
from palette_provision.log import get_logger
from palette_provision.secrets import Secret, known_secret_values
from palette_provision.tls import certificate_refusal
from palette_provision.waiting import interruptible_sleep

__all__ = ["DEFAULT_CHUNK_BYTES", "EMPTY_MEDIA_TYPE", "MANIFEST_MEDIA_TYPE", "PACK_BUNDLE_ARTIFACT_TYPE",
           "PACK_BUNDLE_MEDIA_TYPE", "PushResult", "RegistryError", "push_artifact"]  # fmt: skip

#: The manifest type (image-spec 1.1 carries artifacts in the image manifest; the artifact manifest was dropped).
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
#: The empty descriptor's type: config of an artifact that has none (image-spec, "Guidance for an empty descriptor").
EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_CONFIG = b"{}"
#: The layer's type for a Spectro Cloud pack bundle (a zstd-compressed archive). Ours: Spectro Cloud publishes none.
PACK_BUNDLE_MEDIA_TYPE = "application/vnd.spectrocloud.pack.bundle.v1.tar+zstd"
#: The manifest's ``artifactType`` for a pack bundle (what a client filters on, e.g. the referrers API).
PACK_BUNDLE_ARTIFACT_TYPE = "application/vnd.spectrocloud.pack.bundle.v1"
DEFAULT_CHUNK_BYTES = 8 * 1024 * 1024
#: The largest answer read (manifests, errors and tokens are a few KiB).
MAX_ANSWER_BYTES = 1024 * 1024
_PROVIDER = "oci-registry"
_REPOSITORY = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*")
_TAG = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
_PARAM = re.compile(r'([a-zA-Z]+)="([^"]*)"')

#: ``progress(bytes_the_registry_has, total)``, called after each acknowledged chunk; raising aborts the push
#: (resumable with ``state_dir``).
Progress = Callable[[int, int], None]


class RegistryError(ProviderError):
    """The registry refused an operation (a 4xx other than 401). ``status`` and ``code`` are its answer."""

    def __init__(self, message: str, *, registry: str, repository: str, status: int | None = None,
                 code: str | None = None) -> None:  # fmt: skip
        self.registry, self.repository, self.status, self.code = registry, repository, status, code
        super().__init__(message, provider=_PROVIDER, resource=f"{registry}/{repository}")


@dataclass(frozen=True)
class PushResult:
    """What a push did. ``digest``/``size``: the file's blob; ``uploaded_bytes``: blob bytes sent by this call
    (the bundle's and the config's); ``skipped``: nothing was written (blob and tag already there)."""

    digest: str
    size: int
    uploaded_bytes: int
    skipped: bool
    manifest_digest: str
    reference: str


def _shown(text: str, limit: int = 200) -> str:
    for secret in known_secret_values():
        text = text.replace(secret, "***")
    return "".join(c if c.isprintable() else "?" for c in text[:limit])


@dataclass(frozen=True)
class _Answer:
    status: int
    headers: httpx.Headers
    body: bytes


def _errors_of(answer: _Answer) -> tuple[str | None, str]:
    """The registry's first error code and a bounded text of its errors (distribution spec's ``errors`` body)."""
    try:
        errors = json.loads(answer.body).get("errors") or []
        parts = [f"{e.get('code', '?')}: {e.get('message', '')}" for e in errors[:3] if isinstance(e, dict)]
        code = errors[0].get("code") if errors and isinstance(errors[0], dict) else None
        return (str(code) if code else None), _shown("; ".join(parts))
    except (ValueError, AttributeError, TypeError):
        return None, _shown(answer.body.decode("utf-8", "replace"), 120)


class _Session:
    """One registry and repository: the HTTP client, the credentials and the authorization they led to."""

    def __init__(self, registry: str, repository: str, *, username: str | None, password: Secret | None,
                 verify: ssl.SSLContext, timeout: float) -> None:  # fmt: skip
        self.base = registry.rstrip("/")
        self.origin = httpx.URL(self.base)
        self.repository, self._username, self._password = repository, username, password
        self._authorization: Secret | None = None  # "Basic ..." or "Bearer ..."; never logged
        self._bearer: dict[str, str] | None = None
        self.http = httpx.Client(verify=verify, trust_env=False, follow_redirects=False, cookies=None,
                                 timeout=httpx.Timeout(timeout, connect=10.0))  # fmt: skip

    def _same_origin(self, url: str) -> bool:
        u = httpx.URL(url)
        return (u.scheme, u.host, u.port) == (self.origin.scheme, self.origin.host, self.origin.port)

    def _raw(self, method: str, url: str, headers: dict[str, str], content: bytes | None) -> _Answer:
        try:
            with self.http.stream(method, url, headers=headers, content=content) as response:
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > MAX_ANSWER_BYTES:
                        raise self.error(f"its answer to {method} is larger than {MAX_ANSWER_BYTES // 1024} KiB")
                return _Answer(response.status_code, response.headers, bytes(body))
        except TLSVerificationError:
            raise
        except httpx.TransportError as exc:
            cause: BaseException | None = exc
            while cause is not None:  # the pin's own error inside httpx's
                if isinstance(cause, TLSVerificationError):
                    raise cause from None
                cause = cause.__cause__ or cause.__context__
            refused = certificate_refusal(exc)  # the verified context's
            if refused is not None:
                raise TLSVerificationError(f"the certificate of {self.base} did not verify: {_shown(refused)}",
                                           provider=_PROVIDER) from None
            raise TransientError(f"the registry {self.base} did not answer {method} ({type(exc).__name__})",
                                 provider=_PROVIDER, resource=self.repository) from exc  # fmt: skip

    def send(self, method: str, location: str, *, headers: dict[str, str] | None = None,
             content: bytes | None = None) -> _Answer:  # fmt: skip
        """One request, authorized as the registry asks (at most one new authorization per request)."""
        url = str(self.origin.join(location))  # upload locations may be paths or absolute URLs
        authorized_now = False
        while True:
            sent = dict(headers or {})
            if self._authorization is not None and self._same_origin(url):
                sent["Authorization"] = self._authorization.reveal()
            answer = self._raw(method, url, sent, content)
            if answer.status != 401 or not self._same_origin(url):
                return answer
            basic_refused = self._authorization is not None and self._bearer is None
            if authorized_now or basic_refused:
                raise self._refused(answer)
            self._authorize(answer)
            authorized_now = True

    def _refused(self, answer: _Answer) -> AuthenticationError:
        _, text = _errors_of(answer)
        who = f"the credentials of {self._username!r}" if self._username else "access without credentials"
        return AuthenticationError(f"the registry {self.base} refused {who} for {self.repository} "
                                   f"({answer.status}{': ' + text if text else ''})", provider=_PROVIDER)  # fmt: skip

    def _basic(self) -> str:
        assert self._username is not None and self._password is not None
        raw = f"{self._username}:{self._password.reveal()}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")

    def _authorize(self, answer: _Answer) -> None:
        challenge = answer.headers.get("www-authenticate", "")
        scheme = challenge.split(" ", 1)[0].lower()
        params = dict(_PARAM.findall(challenge))
        if scheme == "basic":
            if self._username is None:
                raise self._refused(answer)
            self._authorization = Secret(self._basic(), source="oci basic auth")
        elif scheme == "bearer" and params.get("realm"):
            self._bearer = params
            self._authorization = Secret("Bearer " + self._token(params), source="oci bearer token")
        else:
            raise self._refused(answer)

    def _token(self, challenge: dict[str, str]) -> str:
        realm = challenge["realm"]
        if httpx.URL(realm).scheme != "https":
            raise self.error(f"its token realm {_shown(realm, 100)} is not HTTPS: credentials are not sent there")
        scopes = [s for s in challenge.get("scope", "").split(" ") if s]
        scopes.append(f"repository:{self.repository}:pull,push")
        query: list[tuple[str, str | int | float | bool | None]] = [("scope", s) for s in dict.fromkeys(scopes)]
        if challenge.get("service"):
            query.insert(0, ("service", challenge["service"]))
        headers = {"Authorization": self._basic()} if self._username is not None else {}
        answer = self._raw("GET", str(httpx.URL(realm).copy_merge_params(query)), headers, None)
        if answer.status in (401, 403):
            raise self._refused(answer)
        self.check(answer, "get a token", 200)
        try:
            body = json.loads(answer.body)
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise self.error("its token service answered without a token")
        Secret(token)  # known to the log redaction from now on
        return token

    def error(self, what: str, status: int | None = None, code: str | None = None) -> RegistryError:
        return RegistryError(f"the registry {self.base} (repository {self.repository}): {what}",
                             registry=self.base, repository=self.repository, status=status, code=code)  # fmt: skip

    def check(self, answer: _Answer, doing: str, *ok: int) -> _Answer:
        """``answer`` if its status is one of ``ok``; else the error it means."""
        if answer.status in ok:
            return answer
        code, text = _errors_of(answer)
        detail = f"could not {doing}: HTTP {answer.status}{' ' + text if text else ''}"
        if answer.status >= 500 or answer.status == 429:
            raise TransientError(f"the registry {self.base} (repository {self.repository}) {detail}",
                                 provider=_PROVIDER, resource=self.repository)  # fmt: skip
        if answer.status == 401:
            raise self._refused(answer)
        raise self.error(detail, answer.status, code)


def _sha256(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as fh:
        while chunk := fh.read(1024 * 1024):
            digest.update(chunk)
            size += len(chunk)
    return "sha256:" + digest.hexdigest(), size


def _received(answer: _Answer, just_sent_to: int = 0) -> int | None:
    """How many bytes an upload holds, from its ``Range: 0-<last>`` (inclusive).

    ``0-0`` is ambiguous: Distribution 2.8 answers it for an empty upload too (the lab test of a 416 showed it), so it
    means one byte only when the client has just sent exactly that (``just_sent_to == 1``). A wrong guess the other
    way cannot go unnoticed: the registry checks the digest when the upload is closed.
    """
    match = re.fullmatch(r"(?:bytes=)?0-(-?\d+)", answer.headers.get("range", "").strip())
    if match is None:
        return None
    last = int(match.group(1))
    return (1 if just_sent_to == 1 else 0) if last == 0 else max(0, last + 1)


class _UploadState:
    """The upload location of one blob, kept in ``state_dir`` between runs (no credential in it)."""

    def __init__(self, state_dir: Path | None, registry: str, repository: str, digest: str) -> None:
        key = hashlib.sha256(f"{registry}\n{repository}\n{digest}".encode()).hexdigest()[:24]
        self.path = state_dir / f"oci-upload-{key}.json" if state_dir is not None else None
        self.record = {"registry": registry, "repository": repository, "digest": digest}

    def load(self) -> str | None:
        try:
            data = json.loads(self.path.read_text()) if self.path is not None else {}
            location = data.get("location") if all(data.get(k) == v for k, v in self.record.items()) else None
        except (OSError, ValueError, AttributeError):
            location = None
        return location if isinstance(location, str) else None

    def save(self, location: str, offset: int) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({**self.record, "location": location, "offset": offset}))
        os.replace(tmp, self.path)  # whole or absent, even under SIGKILL

    def clear(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def _blob_present(session: _Session, digest: str) -> bool:
    answer = session.send("HEAD", f"/v2/{session.repository}/blobs/{digest}")
    return session.check(answer, "look for a blob", 200, 404).status == 200


def _status(session: _Session, location: str, size: int) -> tuple[int, str, int | None]:
    """Where an upload stands: the answer's status, the location to go on with, the bytes held (``None``: lost)."""
    answer = session.send("GET", location)
    if answer.status >= 500 or answer.status == 429:  # the registry is unwell, not the upload: keep the state
        session.check(answer, "report an upload's progress", 204)
    have = _received(answer) if answer.status == 204 else None
    have = have if have is not None and have <= size else None
    return answer.status, answer.headers.get("location", location), have


def _upload(session: _Session, digest: str, size: int, read: Callable[[int, int], bytes], *, state: _UploadState,
            chunk_size: int, progress: Progress | None) -> int:  # fmt: skip
    """Upload one blob in chunks (resuming the upload ``state`` names); return the bytes sent."""
    log = get_logger(__name__).bind(phase="oci_push", registry=session.base, repository=session.repository)
    location, offset, sent, out_of_order = state.load(), 0, 0, 0
    if location is not None:
        status, location, have = _status(session, location, size)
        if have is None:
            log.info("oci_upload_forgotten", status=status)
            state.clear()
            location = None
        else:
            offset = have
            log.info("oci_upload_resumed", offset=offset)
    if location is None:
        answer = session.check(session.send("POST", f"/v2/{session.repository}/blobs/uploads/"), "start an upload", 202)
        location = answer.headers.get("location")
        if not location:
            raise session.error("it started an upload without a Location")
        minimum = answer.headers.get("oci-chunk-min-length", "")
        chunk_size = max(chunk_size, int(minimum) if minimum.isdigit() else 0)
    while offset < size:
        chunk = read(offset, min(chunk_size, size - offset))
        headers = {"Content-Type": "application/octet-stream", "Content-Range": f"{offset}-{offset + len(chunk) - 1}"}
        answer = session.send("PATCH", location, headers=headers, content=chunk)
        if answer.status == 416 and out_of_order < 3:  # the registry holds another offset: ask it, go on from there
            out_of_order += 1
            _, location, have = _status(session, location, size)
            if have is None:
                raise session.error("it refused a chunk as out of order (416), then forgot the upload", 416)
            offset = have
            continue
        session.check(answer, "upload a chunk", 202)
        location = answer.headers.get("location", location)
        sent += len(chunk)
        have = _received(answer, offset + len(chunk))
        if have is not None and have <= offset:
            raise session.error(f"it acknowledged a chunk but holds {have} bytes of the upload, not more than {offset}")
        offset = have if have is not None else offset + len(chunk)
        state.save(location, offset)
        if progress is not None:
            progress(offset, size)
        # A stop request (Ctrl-C, see palette_provision.waiting.stop_on) ends the push here, between chunks: a chunk
        # cut mid-way makes Distribution drop the whole upload (docs/oci-push.md), a stop here keeps it resumable.
        interruptible_sleep(0)
    closing = session.send("PUT", location + ("&" if "?" in location else "?") + "digest=" + digest.replace(":", "%3A"),
                           headers={"Content-Type": "application/octet-stream"}, content=b"")  # fmt: skip
    if closing.status < 500 and closing.status != 429:
        state.clear()  # closed, or refused (the file changed since its digest): this upload is over either way
    session.check(closing, "close the upload", 201)
    return sent


def push_artifact(
    registry: str,
    repository: str,
    tag: str,
    path: Path,
    *,
    username: str | None = None,
    password: Secret | None = None,
    verify: ssl.SSLContext,
    media_type: str = PACK_BUNDLE_MEDIA_TYPE,
    artifact_type: str = PACK_BUNDLE_ARTIFACT_TYPE,
    state_dir: Path | None = None,
    chunk_size: int = DEFAULT_CHUNK_BYTES,
    progress: Progress | None = None,
    timeout: float = 60.0,
) -> PushResult:
    """Push the file ``path`` to ``registry`` as the artifact ``<repository>:<tag>`` (see the module docstring).

    ``verify`` is a context of :mod:`palette_provision.tls` (verified, pinned or insecure). With ``state_dir``, an
    interrupted upload resumes where the registry stopped. Safe to repeat: a second push sends 0 bytes.

    Example::

        from palette_provision.tls import pinned_context
        result = push_artifact("https://registry.example:5000", "spectro-packs/cni-calico", "3.27.0",
                               Path("cni-calico-3.27.0.zst"), username="ci", password=resolve_secret("env:REG_PW"),
                               verify=pinned_context("ab12..."), state_dir=Path("~/.palette-provision/state"))
        print(result.digest, result.uploaded_bytes, result.skipped)

    Raises:
        AuthenticationError: the credentials were refused (or needed and not given).
        TLSVerificationError: the registry's certificate did not verify (nothing was sent).
        TransientError: the registry did not answer, or answered 5xx/429 (worth retrying: the push resumes).
        RegistryError: any other refusal (a 4xx: name invalid, denied, digest invalid...).
        ConfigurationError: the arguments are invalid (a non-HTTPS registry, a bad name or tag).
    """
    url = httpx.URL(registry)
    if url.scheme != "https" or not url.host or url.path not in ("", "/"):
        raise ConfigurationError("the registry must be https://host[:port] (credentials never travel in clear)",
                                 field="registry")  # fmt: skip
    if not _REPOSITORY.fullmatch(repository) or not _TAG.fullmatch(tag):
        raise ConfigurationError(f"invalid repository {_shown(repository, 80)!r} or tag {_shown(tag, 80)!r} "
                                 "(OCI distribution spec names)", field="repository")  # fmt: skip
    if (username is None) != (password is None):
        raise ConfigurationError("give both a username and a password, or neither", field="username")
    if chunk_size < 1:
        raise ConfigurationError("chunk_size must be positive", field="chunk_size")
    path = Path(path)
    digest, size = _sha256(path)
    log = get_logger(__name__).bind(phase="oci_push")
    session = _Session(registry, repository, username=username, password=password, verify=verify, timeout=timeout)
    try:
        session.check(session.send("GET", "/v2/"), "answer the API version check", 200)
        uploaded, blob_written = 0, False
        with path.open("rb") as fh:

            def read(offset: int, length: int) -> bytes:
                fh.seek(offset)
                return fh.read(length)

            if _blob_present(session, digest):
                log.info("oci_blob_present", registry=session.base, repository=repository, digest=digest)
            else:
                state = _UploadState(state_dir, session.base, repository, digest)
                uploaded += _upload(session, digest, size, read, state=state, chunk_size=chunk_size, progress=progress)
                blob_written = True
                log.info("oci_blob_uploaded", registry=session.base, repository=repository, digest=digest,
                         bytes=uploaded)  # fmt: skip
        config_digest = "sha256:" + hashlib.sha256(EMPTY_CONFIG).hexdigest()
        if not _blob_present(session, config_digest):
            nowhere = _UploadState(None, session.base, repository, config_digest)
            uploaded += _upload(session, config_digest, len(EMPTY_CONFIG), lambda o, n: EMPTY_CONFIG[o : o + n],
                                state=nowhere, chunk_size=chunk_size, progress=None)  # fmt: skip
            blob_written = True
        # Deterministic bytes (no timestamp): the same push gives the same digest, so an unchanged tag is recognised.
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE, "artifactType": artifact_type,
            "config": {"mediaType": EMPTY_MEDIA_TYPE, "digest": config_digest, "size": len(EMPTY_CONFIG)},
            "layers": [{"mediaType": media_type, "digest": digest, "size": size,
                        "annotations": {"org.opencontainers.image.title": path.name}}],
        }, separators=(",", ":")).encode()  # fmt: skip
        manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        reference = f"/v2/{repository}/manifests/{tag}"
        head = session.send("HEAD", reference, headers={"Accept": MANIFEST_MEDIA_TYPE})
        unchanged = session.check(head, "look for the tag", 200, 404).status == 200 and \
            head.headers.get("docker-content-digest") == manifest_digest  # fmt: skip
        if unchanged:
            log.info("oci_manifest_unchanged", registry=session.base, repository=repository, tag=tag)
        else:
            put = session.send("PUT", reference, headers={"Content-Type": MANIFEST_MEDIA_TYPE}, content=manifest)
            stored = session.check(put, "store the manifest", 201).headers.get("docker-content-digest")
            if stored and stored != manifest_digest:
                log.warning("oci_manifest_digest_differs", registry=session.base, sent=manifest_digest, stored=stored)
            log.info("oci_manifest_pushed", registry=session.base, repository=repository, tag=tag,
                     digest=manifest_digest)  # fmt: skip
    finally:
        session.http.close()
    return PushResult(digest=digest, size=size, uploaded_bytes=uploaded, skipped=unchanged and not blob_written,
                      manifest_digest=manifest_digest, reference=f"{url.host}:{url.port or 443}/{repository}:{tag}")

