"""The Local API rung: the node's HTTPS API answers, its certificate pinned on first use."""

from __future__ import annotations

import httpx

from palette_provision.errors import (
    LocalApiCertificateMismatch,
    TransientError,
)
from palette_provision.readiness._model import _HTTP_TIMEOUT_S, FACT_LOCAL_API_CERT
from palette_provision.readiness._state import _Climb, _transient
from palette_provision.tls import normalize_fingerprint, pinned_context


def _climb_local_api(state: _Climb, address: str, port: int) -> None:
    target = state.target
    known: str | None = target.local_api_cert_sha256
    if known is None and state.journal is not None:
        fact = state.journal.fact(target.node, FACT_LOCAL_API_CERT)
        known = str(fact) if fact else None
    pin = normalize_fingerprint(known) if known else None
    host = f"[{address}]" if ":" in address else address
    url = f"https://{host}:{port}/v1/ping"

    def probe() -> tuple[int, str]:
        seen: list[str] = []

        def check(fingerprint: str) -> None:
            seen.append(fingerprint)
            if pin is not None and fingerprint != pin:
                raise LocalApiCertificateMismatch(
                    target.node,
                    state.last_rung,
                    f"Local API certificate is sha256:{fingerprint}, pinned is sha256:{pin}; not retried",
                    "certificate mismatch",
                )

        context = pinned_context(check, server=f"{target.node} Local API")
        try:
            # trust_env=False: proxies are never taken from the environment; through an https proxy the pinned
            # context would not reach the inner TLS (security.md).
            with httpx.Client(verify=context, timeout=state.remaining(_HTTP_TIMEOUT_S), trust_env=False) as client:
                state.connections += 1
                response = client.get(url)
        except LocalApiCertificateMismatch:
            raise
        except httpx.HTTPError as exc:
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, LocalApiCertificateMismatch):
                raise cause from None
            raise _transient("Local API", exc) from exc
        # Any answer of the API proves it is up, a 401 included (whether /v1/ping needs a token is not stated
        # by the spec); 5xx and other codes mean "starting" or "not the API yet".
        if not (200 <= response.status_code < 300 or response.status_code in (401, 403)):
            raise TransientError(f"Local API answered HTTP {response.status_code}")
        return response.status_code, seen[-1] if seen else ""

    status, fingerprint = state.wait(probe, f"the Local API at {url}")
    trust = "pinned"
    if pin is None:
        trust = "recorded on first use"
        if state.journal is not None and fingerprint:
            state.journal.set_fact(target.node, FACT_LOCAL_API_CERT, fingerprint)
    state.reached("local_api", {"url": url, "http_status": status, "cert_sha256": fingerprint, "trust": trust})
