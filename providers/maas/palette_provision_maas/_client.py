"""MAAS REST API 2.0 client on httpx (sync), signed with OAuth 1.0a PLAINTEXT (see ``_oauth.py``).

Our own client, not python-libmaas (see the issue 12 decision: unmaintained, AGPL, does not import on 3.12+).
Every answer is shape-checked before use; every failure is one of the project's errors::

    AuthenticationError (final)        401: MAAS refused the API key (the message names the URL, never the key)
    TLSVerificationError (final)       the certificate did not verify / is not the pinned one
    MaasConflict (MaasApiError)        409: no machine matches the constraints, or the transition is not allowed
    MaasNotFound (MaasApiError)        404: no such machine / boot resource
    MaasApiError (ProviderError)       any other 4xx; .status, .text (MAAS's text: bounded, cleaned, key scrubbed)
    MaasUnavailable (TransientError)   5xx, connection refused/reset/dropped, timeout
    MaasProtocolError (ProviderError)  an answer of the wrong shape (not JSON, a field missing or mistyped)

Reads (``GET``) are retried on transient failures (``retries`` attempts within ``retry_window_s``). Calls that change
state are not retried once the request may have left: a retried ``allocate`` whose first answer was lost would take a
second machine; only a failure to connect at all (nothing was sent) is retried for them.
"""

from __future__ import annotations

import base64
import re
import ssl
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
from palette_provision.errors import (
    AuthenticationError,
    ConfigurationError,
    TLSVerificationError,
    TransientError,
    WaitTimeout,
)
from palette_provision.log import get_logger
from palette_provision.secrets import Secret
from palette_provision.tls import certificate_refusal, insecure_context, verified_context
from palette_provision.waiting import Backoff, interruptible_sleep, wait_for

from palette_provision_maas._errors import (
    PROVIDER,
    MaasApiError,
    MaasConflict,
    MaasNotFound,
    MaasProtocolError,
    MaasUnavailable,
)
from palette_provision_maas._oauth import MaasApiKey
from palette_provision_maas._shapes import (
    BootFile,
    BootResource,
    MaasEvent,
    MaasUser,
    MaasVersion,
    Machine,
    UploadStatus,
    clean_text,
    parse_json,
    power_parameters_of,
)

__all__ = [
    "BootFile",
    "BootResource",
    "MaasApiError",
    "MaasClient",
    "MaasConflict",
    "MaasEvent",
    "MaasNotFound",
    "MaasProtocolError",
    "MaasUnavailable",
    "MaasUser",
    "MaasVersion",
    "Machine",
    "UploadStatus",
]

T = TypeVar("T")
#: The largest answer read (a region with thousands of machines answers a few MiB for ``machines/``).
MAX_ANSWER_BYTES = 64 * 1024 * 1024
LIST_FILTERS = frozenset({"hostname", "id", "mac_address", "zone", "pool", "agent_name", "domain", "arch", "tags"})
CONSTRAINTS = frozenset({"name", "system_id", "arch", "cpu_count", "mem", "tags", "not_tags", "zone", "not_in_zone",
                         "pool", "not_in_pool", "storage", "interfaces"})
_UPLOAD = re.compile(r"boot-resources/(\d+)/upload/(\d+)/$")
_RETRY_BACKOFF = Backoff(initial=0.25, maximum=5.0, jitter=0.25)


class _GiveUp(Exception):
    """Internal: stop retrying and raise ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _normalize_url(url: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.query or parts.fragment:
        raise ConfigurationError("the MAAS URL must look like http(s)://host[:port]/MAAS", provider=PROVIDER)
    path = parts.path.rstrip("/")
    if path.endswith("/api/2.0"):
        path = path[: -len("/api/2.0")]
    return f"{parts.scheme}://{parts.netloc}{path}"


def _context(verify: ssl.SSLContext | bool | str) -> ssl.SSLContext:
    if isinstance(verify, ssl.SSLContext):
        return verify
    if isinstance(verify, str):
        try:
            return verified_context(verify)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(f"cannot load the CA bundle {verify}: {type(exc).__name__}",
                                     provider=PROVIDER) from exc
    return verified_context() if verify else insecure_context()


def _fields(values: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Form fields: a list or tuple value repeats the field; booleans as ``true``/``false``; ``None`` left out."""
    result: list[tuple[str, str]] = []
    for name, value in values.items():
        if value is None:
            continue
        items = value if isinstance(value, (list, tuple, set, frozenset)) else [value]
        for item in items:
            result.append((name, str(item).lower() if isinstance(item, bool) else str(item)))
    return result


class MaasClient:
    """A session with one MAAS region. Use as a context manager, or call :meth:`close`.

    Args:
        url: the MAAS URL as ``maas login`` takes it, e.g. ``http://maas:5240/MAAS`` (``/api/2.0`` appended).
        api_key: ``consumer_key:token_key:token_secret``.
        verify: an ``ssl.SSLContext`` (e.g. :func:`palette_provision.tls.pinned_context`), a CA bundle path, True
            (system trust store) or False (no verification: the caller logs that choice).
        timeout: per-request timeout in seconds (uploads: ``upload_timeout``).
        retries, retry_window_s: reads are tried up to ``retries`` times within ``retry_window_s`` seconds.
        key_field: the settings field the key came from (named by AuthenticationError / ConfigurationError).
        sleep, transport: injectable for tests.
    """

    def __init__(self, url: str, api_key: Secret, *, verify: ssl.SSLContext | bool | str = True,
                 timeout: float = 30.0, upload_timeout: float = 600.0, retries: int = 5,
                 retry_window_s: float = 60.0, backoff: Backoff = _RETRY_BACKOFF,
                 sleep: Callable[[float], None] = interruptible_sleep, key_field: str | None = None,
                 log: Any = None, transport: httpx.BaseTransport | None = None) -> None:
        self.url = _normalize_url(url)
        self.api_path = urlsplit(self.url).path + "/api/2.0/"
        self._key = MaasApiKey(api_key, field=key_field)
        self._key_field = key_field
        self._timeout, self._upload_timeout = timeout, upload_timeout
        self._retries, self._retry_window, self._backoff, self._sleep = max(1, retries), retry_window_s, backoff, sleep
        self._log = (log or get_logger(__name__)).bind(provider=PROVIDER)
        parts = urlsplit(self.url)
        if parts.scheme == "https" and verify is False:
            self._log.warning("maas_tls_insecure", url=self.url, detail="the MAAS certificate is not checked")
        self._http = httpx.Client(
            base_url=f"{parts.scheme}://{parts.netloc}", verify=_context(verify) if parts.scheme == "https" else True,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)), trust_env=False, follow_redirects=False,
            transport=transport,
        )

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def __enter__(self) -> MaasClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MaasClient({self.url!r})"

    # ------------------------------------------------------------------------------------------- transport
    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One signed request; the answer read with a size cap. Transport failures become :class:`MaasUnavailable`."""
        target = path if path.startswith("/") else self.api_path + path
        op = next((v for k, v in kwargs.get("params") or [] if k == "op"), None)
        what = f"{method} {target}" + (f"?op={op}" if op else "")
        headers = {**kwargs.pop("headers", {}), "Authorization": self._key.header(), "Accept": "application/json"}
        try:
            request = self._http.build_request(method, target, headers=headers, **kwargs)
            streamed = self._http.send(request, stream=True)
            try:
                body = bytearray()
                for chunk in streamed.iter_bytes():
                    body += chunk
                    if len(body) > MAX_ANSWER_BYTES:
                        raise MaasProtocolError(f"MAAS at {self.url}: {what} answered more than "
                                                f"{MAX_ANSWER_BYTES // 2**20} MiB", provider=PROVIDER)
            finally:
                streamed.close()
        except TLSVerificationError as exc:
            raise TLSVerificationError(f"MAAS at {self.url}: {exc}", field=exc.field, provider=PROVIDER) from exc
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            if certificate_refusal(exc) is not None:
                raise TLSVerificationError(f"the certificate of MAAS at {self.url} did not verify: {exc}",
                                           provider=PROVIDER) from exc
            raise MaasUnavailable(f"MAAS at {self.url} could not be reached ({what}): {type(exc).__name__}: {exc}",
                                  request_sent=False) from exc
        except httpx.TransportError as exc:
            raise MaasUnavailable(f"MAAS at {self.url}: {what} failed: {type(exc).__name__}: {exc}") from exc
        headers_out = [(k, v) for k, v in streamed.headers.items() if k.lower() != "content-encoding"]
        response = httpx.Response(streamed.status_code, headers=headers_out, content=bytes(body), request=request)
        self._raise_for(what, response)
        return response

    def _raise_for(self, what: str, response: httpx.Response) -> None:
        status = response.status_code
        if status < 400:
            return
        text = self._key.scrub(clean_text(response))
        if status == 401:
            raise AuthenticationError(f"MAAS at {self.url} refused the API key (HTTP 401: {text})",
                                      field=self._key_field, provider=PROVIDER)
        if status >= 500:
            raise MaasUnavailable(f"MAAS at {self.url}: {what} answered {status}: {text}", status=status)
        kind = {404: MaasNotFound, 409: MaasConflict}.get(status, MaasApiError)
        hint = " (the MAAS user may need admin rights)" if status == 403 else ""
        raise kind(f"MAAS at {self.url}: {what} answered {status}: {text}{hint}", status=status, text=text)

    def _call(self, what: str, attempt: Callable[[], T], *, idempotent: bool) -> T:
        """Run ``attempt``, retrying :class:`MaasUnavailable` (for a non-idempotent call: only if nothing was sent)."""
        tries = 0

        def once() -> T:
            nonlocal tries
            tries += 1
            try:
                return attempt()
            except MaasUnavailable as exc:
                if tries >= self._retries or (not idempotent and exc.request_sent):
                    raise _GiveUp(exc) from exc
                self._log.info("maas_request_retry", what=what, attempt=tries, error=type(exc).__name__)
                raise

        try:
            return wait_for(once, what=what, timeout=self._retry_window, until=lambda _: True,
                            retry_on=(TransientError,), backoff=self._backoff, sleep=self._sleep)
        except _GiveUp as stop:
            raise stop.error from stop.error.__cause__
        except WaitTimeout as exc:
            if isinstance(exc.last_error, TransientError):
                raise exc.last_error from exc
            raise

    def _get(self, path: str, params: list[tuple[str, str]] | None = None) -> Any:
        what = f"GET {path}"
        return self._call(what, lambda: parse_json(self._send("GET", path, params=params), what, self.url),
                          idempotent=True)

    def _post(self, path: str, op: str | None, fields: list[tuple[str, str]], *, multipart: bool = False) -> Any:
        what = f"POST {path}" + (f"?op={op}" if op else "")
        params = [("op", op)] if op else None
        body: dict[str, Any] = ({"files": [(k, (None, v)) for k, v in fields]} if multipart
                                else {"data": dict(_group(fields))})
        return self._call(what, lambda: parse_json(self._send("POST", path, params=params, **body), what, self.url),
                          idempotent=False)

    # ------------------------------------------------------------------------------------------- region
    def version(self) -> MaasVersion:
        """``GET version/``."""
        return MaasVersion.parse(self._get("version/"))

    def whoami(self) -> MaasUser:
        """``GET users/?op=whoami``: proves the key works. Raises AuthenticationError when MAAS refuses it."""
        return MaasUser.parse(self._get("users/", [("op", "whoami")]))

    # ------------------------------------------------------------------------------------------- machines
    def list_machines(self, **filters: str | Iterable[str]) -> list[Machine]:
        """``GET machines/`` filtered by ``hostname``, ``id``, ``mac_address``, ``zone``, ``pool``, ``agent_name``,
        ``domain``, ``arch``, ``tags`` (a list value repeats the filter: any of them matches)."""
        unknown = sorted(set(filters) - LIST_FILTERS)
        if unknown:
            raise ValueError(f"unknown machine filters {unknown}; known: {sorted(LIST_FILTERS)}")
        answer = self._get("machines/", _fields({k: v if isinstance(v, str) else list(v) for k, v in filters.items()}))
        if not isinstance(answer, list):
            raise MaasProtocolError(f"MAAS at {self.url}: GET machines/ did not answer a list", provider=PROVIDER)
        return [Machine.parse(item) for item in answer]

    def get_machine(self, system_id: str) -> Machine:
        """``GET machines/{system_id}/``. Raises MaasNotFound."""
        return Machine.parse(self._get(f"machines/{_segment(system_id)}/"))

    def allocate(self, constraints: Mapping[str, Any], *, agent_name: str, comment: str,
                 dry_run: bool = False) -> Machine:
        """``POST machines/?op=allocate``: a Ready machine matching ``constraints`` (``name``, ``system_id``,
        ``arch``, ``cpu_count``, ``mem`` MiB, ``tags``, ``not_tags``, ``zone``, ``pool``, ``storage``...), now
        Allocated to us and labelled ``agent_name`` (``dry_run``: only which machine would be taken).

        Never retried once sent: if the answer is lost, find the machine by ``agent_name`` before allocating again.

        Raises:
            MaasConflict: no Ready machine matches. MaasApiError: MAAS refused a constraint (an unknown tag, zone...).
        """
        unknown = sorted(set(constraints) - CONSTRAINTS)
        if unknown:
            raise ValueError(f"unknown allocation constraints {unknown}; known: {sorted(CONSTRAINTS)}")
        fields = _fields({**constraints, "agent_name": agent_name, "comment": comment, "dry_run": dry_run or None})
        self._log.info("maas_allocate", agent_name=agent_name, dry_run=dry_run, constraints=sorted(constraints))
        return Machine.parse(self._post("machines/", "allocate", fields))

    def deploy(self, system_id: str, *, user_data: bytes, osystem: str | None = None,
               distro_series: str | None = None, agent_name: str | None = None, comment: str | None = None,
               hwe_kernel: str | None = None) -> Machine:
        """``POST machines/{id}/?op=deploy`` with ``user_data`` (sent base64-encoded; never logged).

        Raises:
            MaasConflict: the machine is not Allocated. MaasApiError: MAAS refused the OS / series (e.g. a custom
            image that is missing or not complete).
        """
        fields = _fields({"user_data": base64.b64encode(user_data).decode("ascii"), "osystem": osystem,
                          "distro_series": distro_series, "agent_name": agent_name, "comment": comment,
                          "hwe_kernel": hwe_kernel})
        self._log.info("maas_deploy", system_id=system_id, osystem=osystem, distro_series=distro_series,
                       user_data_bytes=len(user_data))
        return Machine.parse(self._post(f"machines/{_segment(system_id)}/", "deploy", fields))

    def release(self, system_id: str, *, erase: bool = False, quick_erase: bool = False,
                secure_erase: bool = False, force: bool = False, comment: str | None = None) -> Machine:
        """``POST machines/{id}/?op=release``. MAAS answers success for a machine already Ready or Releasing.

        Raises:
            MaasConflict: the machine's state forbids a release (e.g. it is Disk erasing).
        """
        fields = _fields({"erase": erase or None, "quick_erase": quick_erase or None,
                          "secure_erase": secure_erase or None, "force": force or None, "comment": comment})
        self._log.info("maas_release", system_id=system_id, erase=erase)
        return Machine.parse(self._post(f"machines/{_segment(system_id)}/", "release", fields))

    def power_on(self, system_id: str, *, comment: str | None = None) -> Machine:
        """``POST machines/{id}/?op=power_on``. Raises MaasConflict when the machine is not allocated."""
        return self._power(system_id, "power_on", _fields({"comment": comment}))

    def power_off(self, system_id: str, *, stop_mode: str = "hard", comment: str | None = None) -> Machine:
        """``POST machines/{id}/?op=power_off`` (``stop_mode`` ``hard`` or ``soft``)."""
        return self._power(system_id, "power_off", _fields({"stop_mode": stop_mode, "comment": comment}))

    def _power(self, system_id: str, op: str, fields: list[tuple[str, str]]) -> Machine:
        answer = self._post(f"machines/{_segment(system_id)}/", op, fields)
        # MAAS answers null when no power action was needed.
        return self.get_machine(system_id) if answer is None else Machine.parse(answer)

    def query_power_state(self, system_id: str) -> str:
        """``GET machines/{id}/?op=query_power_state``: ``on``, ``off``, ``unknown`` or ``error``."""
        answer = self._get(f"machines/{_segment(system_id)}/", [("op", "query_power_state")])
        if not isinstance(answer, dict) or not isinstance(answer.get("state"), str):
            raise MaasProtocolError(f"MAAS at {self.url}: query_power_state answered no 'state'", provider=PROVIDER)
        return clean_text(answer["state"], limit=20)

    def power_parameters(self, system_id: str) -> dict[str, Any]:
        """``GET machines/{id}/?op=power_parameters``: the BMC's parameters (``power_address``, ``power_user``...);
        passwords, keys and tokens come wrapped as :class:`~palette_provision.secrets.Secret`."""
        answer = self._get(f"machines/{_segment(system_id)}/", [("op", "power_parameters")])
        return power_parameters_of(answer, system_id, self.url)

    def events(self, system_id: str, limit: int = 20) -> list[MaasEvent]:
        """``GET events/?op=query&id=<system_id>``: the machine's latest events, newest first."""
        answer = self._get("events/", [("op", "query"), ("id", system_id), ("limit", str(max(1, min(limit, 1000))))])
        if not isinstance(answer, dict) or not isinstance(answer.get("events"), list):
            raise MaasProtocolError(f"MAAS at {self.url}: events/?op=query answered no 'events' list",
                                    provider=PROVIDER)
        return [MaasEvent.parse(item) for item in answer["events"]]

    # ------------------------------------------------------------------------------------------- boot resources
    def boot_resources(self) -> list[BootResource]:
        """``GET boot-resources/`` (without their sets; :meth:`boot_resource` has them)."""
        answer = self._get("boot-resources/")
        if not isinstance(answer, list):
            raise MaasProtocolError(f"MAAS at {self.url}: GET boot-resources/ did not answer a list",
                                    provider=PROVIDER)
        return [BootResource.parse(item) for item in answer]

    def boot_resource(self, resource_id: int) -> BootResource:
        """``GET boot-resources/{id}/`` with its sets and files. Raises MaasNotFound."""
        return BootResource.parse(self._get(f"boot-resources/{int(resource_id)}/"))

    def is_importing(self) -> bool:
        """``GET boot-resources/?op=is_importing``."""
        return self._get("boot-resources/", [("op", "is_importing")]) is True

    def create_boot_resource(self, name: str, architecture: str, *, filetype: str, sha256: str, size: int,
                             title: str = "", base_image: str | None = None) -> BootResource:
        """``POST boot-resources/`` (multipart): a resource with an empty file to upload (its ``upload_uri``).

        Creating it again for the same name and architecture starts a new set and drops the old file (MAAS).
        """
        fields = _fields({"name": name, "architecture": architecture, "filetype": filetype, "sha256": sha256,
                          "size": int(size), "title": title, "base_image": base_image})
        self._log.info("maas_boot_resource_create", name=name, architecture=architecture, size=size)
        return BootResource.parse(self._post("boot-resources/", None, fields, multipart=True))

    def delete_boot_resource(self, resource_id: int) -> bool:
        """``DELETE boot-resources/{id}/``; False when it did not exist (also after a retry whose first try
        deleted it)."""
        path = f"boot-resources/{int(resource_id)}/"
        try:
            self._call(f"DELETE {path}", lambda: self._send("DELETE", path), idempotent=True)
        except MaasNotFound:
            return False
        return True

    def _upload_path(self, upload_uri: str) -> tuple[str, int]:
        """Check that ``upload_uri`` is an upload path of this region (never send the key elsewhere)."""
        parts = urlsplit(upload_uri)
        origin = urlsplit(self.url)
        found = _UPLOAD.search(parts.path)
        foreign = bool(parts.scheme) and (parts.scheme, parts.netloc) != (origin.scheme, origin.netloc)
        if foreign or found is None or not parts.path.startswith(self.api_path):
            raise MaasProtocolError(f"MAAS at {self.url} gave an upload URI outside its API", provider=PROVIDER)
        return parts.path, int(found.group(1))

    def upload_status(self, upload_uri: str) -> UploadStatus:
        """How much of the file behind ``upload_uri`` MAAS holds (from its ``progress``), and whether it is complete.

        Raises:
            MaasNotFound: the resource, or the file, is gone (e.g. replaced by a newer upload).
        """
        path, resource_id = self._upload_path(upload_uri)
        return self.boot_resource(resource_id).upload_status(path)

    def upload_chunks(self, upload_uri: str, path: Path, *, offset: int = 0, chunk_size: int = 4 << 20,
                      progress: Callable[[int, int], None] | None = None, resume_attempts: int = 5) -> int:
        """``PUT`` the file from ``offset`` in chunks of ``chunk_size`` bytes; the bytes MAAS holds at the end.

        A chunk whose answer is lost (connection dropped) is never re-sent blindly: the client asks MAAS how much it
        holds (:meth:`upload_status`) and resumes from there, up to ``resume_attempts`` times in a row. MAAS checks
        the SHA-256 when the last byte arrives.

        Raises:
            MaasApiError: MAAS refused a chunk (e.g. ``Saved content does not match given SHA256 value.``: the file
            is emptied, start again from 0). MaasUnavailable: still failing after ``resume_attempts``.
        """
        target, _ = self._upload_path(upload_uri)
        size = path.stat().st_size
        position, failures = offset, 0
        timeout = httpx.Timeout(self._upload_timeout, connect=min(self._timeout, 10.0))
        with path.open("rb") as handle:
            while position < size:
                handle.seek(position)
                chunk = handle.read(chunk_size)
                try:
                    self._send("PUT", target, content=chunk, timeout=timeout,
                               headers={"Content-Type": "application/octet-stream"})
                except MaasUnavailable as exc:
                    failures += 1
                    if failures > resume_attempts:
                        raise
                    self._log.info("maas_upload_resume", at=position, attempt=failures, error=type(exc).__name__)
                    self._sleep(min(self._backoff.maximum, self._backoff.initial * 2 ** (failures - 1)))
                    status = self.upload_status(upload_uri)
                    position = size if status.complete else status.received
                    continue
                position += len(chunk)
                failures = 0
                if progress is not None:
                    progress(position, size)
        return position


def _segment(value: str) -> str:
    """A path segment from an identifier (system ids are short alphanumerics)."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", value):
        raise ValueError("a MAAS system id is 1-64 letters, digits, '.', '_' or '-'")
    return value


def _group(fields: list[tuple[str, str]]) -> Iterable[tuple[str, str | list[str]]]:
    grouped: dict[str, list[str]] = {}
    for name, value in fields:
        grouped.setdefault(name, []).append(value)
    for name, values in grouped.items():
        yield name, values[0] if len(values) == 1 else values
