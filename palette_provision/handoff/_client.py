"""One node's Local API session: TLS pin, login, token renewal, JSON calls, streamed uploads.

Why ``httpx`` (the project's one HTTP client, see ``docs/CONVENTIONS.md``): it is synchronous like the rest of the
code base, takes an ``ssl.SSLContext`` (so :func:`palette_provision.tls.pinned_context` checks the node's certificate
inside the handshake, before the login body leaves the process), keeps connections alive between the many polling
calls, and streams ``multipart/form-data`` from a file object chunk by chunk with a ``Content-Length`` computed from
``fstat``, so a multi-gigabyte content bundle is never read into memory.

Errors::

    LocalApiError (our base error)        the node answered 4xx; .status, .code, .message, .node
    LocalApiUnavailable (TransientError)   5xx, connection refused/reset, timeout; worth retrying
    AuthenticationError                    the node refused the node account (final)
    TLSVerificationError                   the node's certificate is not the pinned one (final)
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx

from palette_provision.errors import (
    AuthenticationError,
    PaletteProvisionError,
    TLSVerificationError,
    TransientError,
    WaitTimeout,
)
from palette_provision.journal import Fact, Journal
from palette_provision.log import get_logger
from palette_provision.secrets import Secret, known_secret_values
from palette_provision.tls import insecure_context, normalize_fingerprint, pinned_context
from palette_provision.waiting import Backoff, wait_for

__all__ = ["CERT_FACT", "LocalApiClient", "LocalApiError", "LocalApiUnavailable", "token_expiry", "write_private"]

#: Journal fact (per node) holding the pinned SHA-256 of the node's Local API certificate. The readiness ladder
#: may already have written it; whoever sees the certificate first records it.
CERT_FACT = Fact.LOCAL_API_CERT

#: The largest Local API answer read (the biggest published answers, a cluster's details, are tens of KiB).
MAX_ANSWER_BYTES = 16 * 1024 * 1024

#: Session length the Local API gives without ``extendedSession`` (reference §1.7), used when the token's own
#: ``exp`` claim cannot be read.
DEFAULT_TOKEN_LIFETIME_S = 7200.0

T = TypeVar("T")

#: Cadence of retried reads (a node busy or restarting answers 5xx or resets for a few seconds).
_RETRY_BACKOFF = Backoff(initial=0.25, maximum=5.0, jitter=0.25)

_LOGIN = "/v1/users/default/login"
_RENEWAL = "/v1/users/default/token/renewal"


class LocalApiError(PaletteProvisionError):
    """The node's Local API refused a request (4xx). ``message`` is the node's explanation, scrubbed of secrets."""

    def __init__(self, node: str, method: str, path: str, *, status: int, code: str, message: str) -> None:
        self.node = node
        self.status = status
        self.code = code
        self.message = message
        super().__init__(f"{node}: {method} {path} answered {status} {code}: {message}".rstrip(": "))


class LocalApiUnavailable(TransientError):
    """The node did not answer usefully (5xx, refused, reset, timed out): worth retrying."""

    def __init__(self, node: str, message: str, status: int | None = None) -> None:
        self.node = node
        self.status = status
        super().__init__(f"{node}: {message}", provider="palette-local-api", resource=node)


def _scrub(text: str) -> str:
    for secret in known_secret_values():
        text = text.replace(secret, "***")
    return text


def _error_text(response: httpx.Response) -> tuple[str, str]:
    """Return ``(code, message)`` of an error body: ``v1Error`` JSON, a bare JSON string, or nothing (§7)."""
    try:
        body = response.json()
    except ValueError:
        return "", _scrub(response.text[:300].strip())
    if isinstance(body, dict):
        return str(body.get("code") or ""), _scrub(str(body.get("message") or ""))
    if isinstance(body, str):
        return "", _scrub(body)
    return "", ""


def token_expiry(token: str, issued_at: float, default_lifetime: float = DEFAULT_TOKEN_LIFETIME_S) -> float:
    """Return when a session token expires: its JWT ``exp`` claim, else ``issued_at + default_lifetime``.

    The Local API's login answer carries no lifetime (§1.2); the token is a JWT, so its payload says. The signature
    is not checked: the node checks it, we only read when to renew.

    >>> token_expiry("not-a-jwt", issued_at=100.0)
    7300.0
    """
    parts = token.split(".")
    if len(parts) == 3:
        try:
            payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
            return float(payload["exp"])
        except (ValueError, KeyError, TypeError):
            pass
    return issued_at + default_lifetime


class LocalApiClient:
    """An authenticated session with one node's Local API (``https://<address>:<port>``).

    Construction does no I/O; the first call connects, checks the certificate pin and logs in. The token is sent raw
    in the ``Authorization`` header (no ``Bearer``; reference §1.1, §11.2), renewed when 80 % of its life has passed
    (renewal answers ``{"Authorization": ...}`` where login answers ``{"Token": {"Authorization": ...}}``, §11.3),
    and a ``401`` on any call (even where the spec lists none, §11.1) triggers one fresh login and a retry.

    TLS: ``tls="pin-on-first-use"`` records the certificate's SHA-256 in the journal fact ``local_api_cert_sha256``
    at first contact (or uses the one the readiness ladder recorded) and refuses any other certificate afterwards,
    inside the handshake. ``tls="insecure"`` verifies nothing and logs ``local_api_tls_insecure``.

    Example::

        with LocalApiClient("node-1", "10.0.0.11", username="kairos", password=secret, journal=journal) as api:
            info = api.get("/v1/edge-mgmt/edgehosts/current")
            print(info["status"]["configurationStatus"])

    Raises (from any call):
        TLSVerificationError, AuthenticationError, LocalApiError, LocalApiUnavailable.
    """

    def __init__(
        self,
        node: str,
        address: str,
        *,
        username: str,
        password: Secret,
        journal: Journal,
        port: int = 5080,
        tls: str = "pin-on-first-use",
        timeout: float = 30.0,
        retry_window: float = 60.0,
        log: Any = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.node = node
        self.address = address
        self.port = port
        self._username = username
        self._password = password
        self._journal = journal
        self._tls = tls
        self._timeout = timeout
        self._retry_window = retry_window
        self._log = (log or get_logger(__name__)).bind(node=node)
        self._clock = clock
        self._http: httpx.Client | None = None
        self._token: str | None = None
        self._issued_at = 0.0
        self._expires_at = 0.0
        self.logins = 0
        self.renewals = 0

    # ------------------------------------------------------------------------------------------- lifecycle
    @property
    def base_url(self) -> str:
        """``https://<address>:<port>``."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"https://{host}:{self.port}"

    def _check_pin(self, seen: str) -> None:
        # Runs inside every TLS handshake with this node (also for new pooled connections).
        pinned = self._journal.fact(self.node, CERT_FACT)
        if pinned is None:
            self._journal.set_fact(self.node, CERT_FACT, seen)
            self._log.info("local_api_certificate_pinned", sha256=seen)
            return
        want = normalize_fingerprint(str(pinned))
        if seen != want:
            raise TLSVerificationError(
                f"the Local API certificate of {self.node} ({self.address}:{self.port}) is sha256:{seen}, but "
                f"sha256:{want} was pinned at first contact; if the node was reinstalled on purpose, remove the "
                f"journal fact {CERT_FACT!r} of {self.node}"
            )

    def _client(self) -> httpx.Client:
        if self._http is None:
            if self._tls == "insecure":
                self._log.warning("local_api_tls_insecure", detail="handoff.tls is 'insecure': certificate not checked")
                context = insecure_context()
            else:
                context = pinned_context(self._check_pin, server=f"{self.node} ({self.address}:{self.port})")
            self._http = httpx.Client(
                base_url=self.base_url,
                verify=context,
                timeout=httpx.Timeout(self._timeout, connect=10.0),
                # Cookies off: the token travels in the header only, never in a jar that outlives the session.
                cookies=None,
                trust_env=False,
            )
        return self._http

    def close(self) -> None:
        """Close the connections. The session token is forgotten (the node expires it on its own)."""
        if self._http is not None:
            self._http.close()
            self._http = None
        self._token = None

    def __enter__(self) -> LocalApiClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------- transport
    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        client = self._client()
        try:
            request = client.build_request(method, path, **kwargs)
            streamed = client.send(request, stream=True)
            try:
                # Read with a cap: an answer is a few KiB; a node (or whatever answers in its place) sending without
                # end must not fill the memory.
                body = bytearray()
                for chunk in streamed.iter_bytes():
                    body += chunk
                    if len(body) > MAX_ANSWER_BYTES:
                        raise LocalApiUnavailable(
                            self.node, f"{method} {path} answered more than {MAX_ANSWER_BYTES // 2**20} MiB"
                        )
            finally:
                streamed.close()
            # The body is decoded already: the rebuilt response must not decode it again.
            headers = [(k, v) for k, v in streamed.headers.items() if k.lower() != "content-encoding"]
            response = httpx.Response(streamed.status_code, headers=headers, content=bytes(body), request=request)
        except TLSVerificationError:
            raise
        except httpx.TimeoutException as exc:
            raise LocalApiUnavailable(self.node, f"{method} {path} timed out ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise LocalApiUnavailable(self.node, f"{method} {path} failed: {type(exc).__name__}: {exc}") from exc
        finally:
            # A response may set the Authorization cookie despite setCookie=false; never keep it.
            if self._http is not None:
                self._http.cookies.clear()
        return response

    def _raise_for(self, method: str, path: str, response: httpx.Response) -> None:
        if response.is_success:
            return
        code, message = _error_text(response)
        if response.status_code >= 500:
            raise LocalApiUnavailable(
                self.node, f"{method} {path} answered {response.status_code} {code}: {message}", response.status_code
            )
        raise LocalApiError(self.node, method, path, status=response.status_code, code=code, message=message)

    # ------------------------------------------------------------------------------------------- auth
    def login(self) -> None:
        """Log in with the node account (a fresh token), whatever the current token's state.

        Raises:
            AuthenticationError: the node refused the account (400 or 401); final.
        """
        self._token = None
        body = {"username": self._username, "password": self._password.reveal()}
        # setCookie=false: the token goes in the header (§1.1); a cookie copy would only linger in a jar.
        response = self._send("POST", _LOGIN, params={"setCookie": "false"}, json=body)
        if response.status_code in (400, 401, 403):
            _, message = _error_text(response)
            raise AuthenticationError(
                f"{self.node} refused the login of {self._username!r}: {message or response.status_code}",
                field="cluster.node_account",
                provider="palette-local-api",
            )
        self._raise_for("POST", _LOGIN, response)
        try:
            token = str(response.json()["Token"]["Authorization"])  # §11.3: capital T and A
        except (ValueError, KeyError, TypeError) as exc:
            raise LocalApiUnavailable(self.node, "login answer has no Token.Authorization") from exc
        self._set_token(token)
        self.logins += 1
        self._log.info("local_api_logged_in", user=self._username)

    def _set_token(self, token: str) -> None:
        now = self._clock()
        self._token, self._issued_at = token, now
        self._expires_at = token_expiry(token, now)

    def _renew(self) -> None:
        if self._token is None:
            self.login()
            return
        response = self._send("POST", _RENEWAL, headers={"Authorization": self._token})
        if response.status_code == 401:
            # Too late to renew (the process slept past the expiry, or the node restarted): log in afresh.
            self._log.info("local_api_token_expired", expired_s_ago=round(self._clock() - self._expires_at, 1))
            self.login()
            return
        self._raise_for("POST", _RENEWAL, response)
        try:
            token = str(response.json()["Authorization"])  # §11.3: top level here, not under "Token"
        except (ValueError, KeyError, TypeError):
            self.login()
            return
        self._set_token(token)
        self.renewals += 1
        self._log.info("local_api_token_renewed")

    def _auth_header(self) -> dict[str, str]:
        if self._token is None:
            self.login()
        else:
            lifetime = max(self._expires_at - self._issued_at, 1.0)
            if self._clock() >= self._issued_at + 0.8 * lifetime:
                self._renew()
        if self._token is None:
            raise LocalApiUnavailable(self.node, "the login gave no token")
        return {"Authorization": self._token}

    # ------------------------------------------------------------------------------------------- calls
    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send an authenticated request; re-login once on 401. Returns the response (any status)."""
        extra = dict(kwargs.pop("headers", {}) or {})
        response = self._send(method, path, headers={**extra, **self._auth_header()}, **kwargs)
        if response.status_code == 401:
            self._log.info("local_api_token_refused", path=path)
            self.login()
            response = self._send(method, path, headers={**extra, **self._auth_header()}, **kwargs)
        return response

    def call(self, method: str, path: str, *, json_body: Any = None, params: Mapping[str, str] | None = None) -> Any:
        """Send a JSON request and return the decoded JSON answer (``None`` for an empty body).

        Raises:
            LocalApiError: a 4xx answer. LocalApiUnavailable: 5xx or transport failure.
        """
        response = self.request(method, path, json=json_body, params=params)
        self._raise_for(method, path, response)
        if not response.content:
            return None
        return self._json(method, path, response)

    def _json(self, method: str, path: str, response: httpx.Response) -> Any:
        try:
            return response.json()
        except (ValueError, RecursionError) as exc:
            what = f"{method} {path} answered non-JSON (or JSON nested too deep)"
            raise LocalApiUnavailable(self.node, what) from exc

    def _idempotent(self, what: str, action: Callable[[], T]) -> T:
        """Run a read, retrying transient failures (5xx, resets) for up to ``retry_window`` seconds."""
        try:
            return wait_for(action, what=what, timeout=self._retry_window, until=lambda _: True,
                            retry_on=(TransientError,), backoff=_RETRY_BACKOFF)
        except WaitTimeout as exc:
            # Still transient for the caller: an outer wait (a poll) may keep trying.
            if isinstance(exc.last_error, TransientError):
                raise exc.last_error from exc
            raise

    def get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """``GET`` a JSON resource, retrying transient failures. See :meth:`call`."""
        return self._idempotent(f"GET {path} on {self.node}", lambda: self.call("GET", path, params=params))

    def get_optional(self, path: str) -> Any:
        """``GET`` a JSON resource; ``None`` when the node answers 404 (e.g. no cluster yet)."""

        def once() -> Any:
            response = self.request("GET", path)
            if response.status_code == 404:
                return None
            self._raise_for("GET", path, response)
            return self._json("GET", path, response) if response.content else None

        return self._idempotent(f"GET {path} on {self.node}", once)

    def upload(self, path: str, field: str, file: IO[bytes], filename: str, *, timeout: float = 600.0) -> Any:
        """Stream ``file`` as the multipart form field ``field`` and return the decoded JSON answer.

        httpx reads ``file`` in 64 KiB pieces while sending and sizes the body with ``fstat``: memory use does not
        grow with the file. The token is renewed *before* the upload starts, so it cannot expire mid-transfer.
        """
        headers = self._auth_header()
        files = {field: (filename, file, "application/octet-stream")}
        timeouts = httpx.Timeout(timeout, connect=10.0)
        response = self._send("POST", path, headers=headers, files=files, timeout=timeouts)
        if response.status_code == 401:
            self.login()
            file.seek(0)
            response = self._send("POST", path, headers=self._auth_header(), files=files, timeout=timeouts)
        self._raise_for("POST", path, response)
        return response.json() if response.content else None


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600 from the first byte (kubeconfigs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
