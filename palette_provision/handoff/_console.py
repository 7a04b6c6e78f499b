"""The system console's API at ``https://<vip>``: login, the forced first-login password change, health, registries.

Facts and their sources: ``docs/palette-system-console-api.md``. What this client relies on:

* ``POST /v1/auth/syslogin`` ``{username, password}`` answers ``{Authorization: <token>, IsPasswordReset: bool}``;
  the token goes back as the raw ``Authorization`` header. Five failed logins lock the account for 15 minutes, so
  the client never guesses: it tries the plan's password, then (only if refused and never rotated) ``admin``.
* ``PATCH /v1/system/admin/password/reset`` ``{email, oldPassword, newPassword}`` is the first-login change (204).
* ``GET /v1/mgmt/app/health`` ``{isHealthy, messages}``, falling back to ``GET /v1/health/ping`` where it is absent.
* ``GET /v1/registries/oci/summary``; ``POST /v1/registries/oci/{uid}/basic/sync``; ``GET .../basic/sync/status``.

TLS: ``verify`` (the system store or a CA bundle), ``pin-on-first-use`` (the certificate's SHA-256 recorded in the
journal at first contact, required afterwards, checked inside the handshake before the password leaves), or
``insecure`` (logged). Every answer is read with a size cap and its shape checked; the console's words reach our
errors as bounded, printable data, passwords and tokens never.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from typing import Any

import httpx

from palette_provision.errors import AuthenticationError, HandoffError, TLSVerificationError, TransientError
from palette_provision.journal import GLOBAL, Fact, Journal
from palette_provision.secrets import Secret, known_secret_values
from palette_provision.tls import (
    certificate_refusal,
    insecure_context,
    normalize_fingerprint,
    pinned_context,
    verified_context,
)

__all__ = ["DEFAULT_ADMIN", "ConsoleClient", "ConsoleLogin"]

#: The system console's first-login account (the appliance's documentation).
DEFAULT_ADMIN = ("admin", "admin")
MAX_ANSWER_BYTES = 4 * 1024 * 1024
_LOGIN = "/v1/auth/syslogin"
_RESET = "/v1/system/admin/password/reset"


def _shown(value: Any, limit: int = 200) -> str:
    text = str(value)[:limit]
    for secret in known_secret_values():
        text = text.replace(secret, "***")
    return "".join(c if c.isprintable() else "?" for c in text)


def _unix(value: Any) -> float | None:
    """An RFC 3339 time (``2026-01-02T03:04:05.678Z``) as a Unix time; ``None`` when absent or not one.

    >>> _unix("1970-01-01T00:00:01.500Z"), _unix(""), _unix(7)
    (1.5, None, None)
    """
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


@dataclass(frozen=True)
class _Answer:
    status: int
    body: bytes
    path: str

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@dataclass(frozen=True)
class ConsoleLogin:
    """A session: its token (a secret) and whether the first-login password change is done."""

    token: Secret
    password_reset: bool


class ConsoleClient:
    """One system console (see the module docstring). ``step`` names the hand-off step in errors."""

    def __init__(
        self, base_url: str, *, tls: str, ca_bundle: str | None, journal: Journal, log: Any, step: str,
        timeout: float = 20.0,
    ) -> None:  # fmt: skip
        self.base_url = base_url.rstrip("/")
        self._tls, self._ca_bundle = tls, ca_bundle
        self._journal, self._log, self.step = journal, log, step
        self._timeout = timeout
        self._http: httpx.Client | None = None

    # ------------------------------------------------------------------------------------------- transport
    def _check_pin(self, seen: str) -> None:
        pinned = self._journal.fact(GLOBAL, Fact.CONSOLE_CERT)
        if pinned is None:
            self._journal.set_fact(GLOBAL, Fact.CONSOLE_CERT, seen)
            self._log.info("console_certificate_pinned", sha256=seen)
            return
        want = normalize_fingerprint(str(pinned))
        if seen != want:
            raise TLSVerificationError(
                f"the system console's certificate ({self.base_url}) is sha256:{seen}, but sha256:{want} was pinned "
                "at first contact; if Palette was reinstalled on purpose, remove the journal fact "
                f"{Fact.CONSOLE_CERT!r}"
            )

    def _client(self) -> httpx.Client:
        if self._http is None:
            if self._tls == "insecure":
                self._log.warning("console_tls_insecure", detail="validate.console.tls is 'insecure'")
                context = insecure_context()
            elif self._tls == "verify":
                context = verified_context(self._ca_bundle)
            else:
                context = pinned_context(self._check_pin, server=f"the system console ({self.base_url})")
            self._http = httpx.Client(base_url=self.base_url, verify=context, trust_env=False, cookies=None,
                                      timeout=httpx.Timeout(self._timeout, connect=10.0))  # fmt: skip
        return self._http

    def close(self) -> None:
        """Close the connections."""
        if self._http is not None:
            self._http.close()
            self._http = None

    def _send(self, method: str, path: str, *, token: Secret | None = None, body: Any = None) -> _Answer:
        headers = {"Authorization": token.reveal()} if token is not None else {}
        try:
            with self._client().stream(method, path, json=body, headers=headers) as response:
                data = bytearray()
                for chunk in response.iter_bytes():
                    data += chunk
                    if len(data) > MAX_ANSWER_BYTES:
                        raise HandoffError(self.step, f"the system console's answer to {path} is too large")
                return _Answer(response.status_code, bytes(data), path)
        except httpx.TransportError as exc:
            cause = exc.__context__ or exc.__cause__
            if isinstance(cause, TLSVerificationError):
                raise cause from None
            refused = certificate_refusal(exc)
            if refused is not None:
                # tls: verify against a CA that did not sign the console's certificate: final, not worth a retry.
                raise TLSVerificationError(
                    f"the system console's certificate ({self.base_url}) did not verify against "
                    f"{'validate.console.ca_bundle' if self._ca_bundle else 'the system CA store'}: "
                    f"{_shown(refused, 120)}") from None  # fmt: skip
            raise TransientError(f"the system console at {self.base_url} did not answer ({type(exc).__name__})",
                                 provider="palette-console") from None  # fmt: skip

    def _json(self, answer: _Answer) -> Any:
        try:
            return json.loads(answer.body)
        except ValueError:
            raise HandoffError(self.step, f"the system console answered {answer.path} with something else than JSON"
                               ) from None

    def _refused(self, answer: _Answer, doing: str) -> Exception:
        detail = ""
        try:
            body = json.loads(answer.body)
            detail = _shown(body.get("message") or body.get("code") or "") if isinstance(body, dict) else ""
        except ValueError:
            detail = _shown(answer.body.decode("utf-8", "replace"))
        if answer.status >= 500:
            return TransientError(f"the system console failed {doing} ({answer.status})", provider="palette-console")
        return HandoffError(self.step, f"the system console refused {doing} ({answer.status}"
                                       f"{': ' + detail if detail else ''})")  # fmt: skip

    # ------------------------------------------------------------------------------------------- calls
    def login(self, username: str, password: Secret | str) -> ConsoleLogin | None:
        """A session, or ``None`` when the console refused these credentials (401). ``password`` is a plain
        string only for the documented first-login default (a :class:`Secret` would register ``admin`` for
        redaction, and scrub that word from every log)."""
        clear = password.reveal() if isinstance(password, Secret) else password
        response = self._send("POST", _LOGIN, body={"username": username, "password": clear})
        if response.status == 401:
            return None
        if response.status == 423 or (response.status == 403 and "lock" in response.text().lower()):
            raise AuthenticationError(f"the system console locked the {username} account after failed logins; it "
                                      "unlocks on its own (15 minutes)", field="validate.console.password")  # fmt: skip
        if response.status != 200:
            raise self._refused(response, "the login")
        body = self._json(response)
        token = body.get("Authorization") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise HandoffError(self.step, "the system console's login answer holds no token")
        reset = body.get("IsPasswordReset")
        return ConsoleLogin(Secret(token, source="console session"), bool(reset) if isinstance(reset, bool) else True)

    def reset_password(self, session: ConsoleLogin, *, email: str, old: Secret | str, new: Secret) -> None:
        """The first-login change from ``old`` (the documented default: a plain string) to ``new``."""
        body = {"email": email, "oldPassword": old.reveal() if isinstance(old, Secret) else old,
                "newPassword": new.reveal()}  # fmt: skip
        response = self._send("PATCH", _RESET, token=session.token, body=body)
        if response.status not in (200, 204):
            raise self._refused(response, "the password change")

    def registries(self, session: ConsoleLogin) -> list[dict[str, Any]]:
        """``GET /v1/registries/oci/summary``: each registry's uid, name, endpoint and provider type (checked)."""
        answer = self._send("GET", "/v1/registries/oci/summary", token=session.token)
        if answer.status != 200:
            raise self._refused(answer, "listing the OCI registries")
        body = self._json(answer)
        items = body.get("items") if isinstance(body, dict) else body
        if not isinstance(items, list):
            raise HandoffError(self.step, "the system console's registry list is not a list")
        found = []
        for item in items:
            # v1OciRegistry: metadata {name, uid}, spec {endpoint, providerType...}, status.sync.
            meta = item.get("metadata") if isinstance(item, dict) else None
            spec = item.get("spec") if isinstance(item, dict) else None
            if not isinstance(meta, dict) or not isinstance(meta.get("uid"), str) or not isinstance(spec, dict):
                raise HandoffError(self.step, "a registry of the system console's list has no metadata.uid or spec")
            found.append({
                "uid": meta["uid"], "name": _shown(meta.get("name") or "", 80),
                "endpoint": _shown(spec.get("endpoint") or "", 200),
                "providerType": _shown(spec.get("providerType") or "", 20),
            })
        return found

    def register_registry(self, session: ConsoleLogin, body: dict[str, Any]) -> str:
        """Validate, then create an OCI registry (``skipPackSync``: we sync it ourselves); its uid."""
        # validate takes the spec alone (v1BasicOciRegistrySpec), create the whole registry (metadata and spec).
        answer = self._send("POST", "/v1/registries/oci/basic/validate", token=session.token, body=body.get("spec"))
        if answer.status not in (200, 204):
            raise self._refused(answer, "the registry's validation")
        answer = self._send("POST", "/v1/registries/oci/basic?skipPackSync=true", token=session.token, body=body)
        if answer.status not in (200, 201):
            raise self._refused(answer, "registering the registry")
        created = self._json(answer)
        uid = created.get("uid") if isinstance(created, dict) else None
        if not isinstance(uid, str):
            raise HandoffError(self.step, "the system console registered the registry but gave no uid")
        return uid

    def sync_registry(self, session: ConsoleLogin, uid: str) -> None:
        """``POST /v1/registries/oci/{uid}/basic/sync``: start the registry's sync."""
        answer = self._send("POST", f"/v1/registries/oci/{uid}/basic/sync", token=session.token)
        if answer.status not in (200, 202, 204):
            raise self._refused(answer, "starting the registry's sync")

    def sync_status(self, session: ConsoleLogin, uid: str) -> tuple[str, str, float | None]:
        """``(status, message, lastRunTime)`` of the registry's last sync (``InProgress``, ``Completed``,
        ``Failed``...); the run time as a Unix time, ``None`` when absent or unreadable."""
        answer = self._send("GET", f"/v1/registries/oci/{uid}/basic/sync/status", token=session.token)
        if answer.status != 200:
            raise self._refused(answer, "reading the registry's sync status")
        body = self._json(answer)
        if not isinstance(body, dict) or not isinstance(body.get("status"), str):
            raise HandoffError(self.step, "the registry's sync status has no status")
        return _shown(body["status"], 40), _shown(body.get("message") or "", 200), _unix(body.get("lastRunTime"))

    def health(self, session: ConsoleLogin) -> tuple[bool, str, str]:
        """``(healthy, what answered, detail)``: the management health, else the ping."""
        response = self._send("GET", "/v1/mgmt/app/health", token=session.token)
        if response.status == 404:
            ping = self._send("GET", "/v1/health/ping")
            return ping.status == 200, "GET /v1/health/ping", f"HTTP {ping.status}"
        if response.status != 200:
            raise self._refused(response, "the health request")
        body = self._json(response)
        if not isinstance(body, dict) or not isinstance(body.get("isHealthy"), bool):
            raise HandoffError(self.step, "the system console's health answer has no isHealthy flag")
        raw = body.get("messages")
        messages: list[Any] = raw if isinstance(raw, list) else []
        detail = "; ".join(_shown(m, 120) for m in messages[:5])
        return bool(body["isHealthy"]), "GET /v1/mgmt/app/health", detail
