"""The readiness ladder: prove, rung by rung, that a freshly installed node is really up.

Rungs, climbed in order under one deadline per node::

    address      the provider's discovered address (falling back to the plan's static one)
    ssh_banner   the node sends ``SSH-2.0-...``: an open port proves nothing (port forwarders accept at once)
    host_key     the node's host key is the pinned one (seeded; or recorded on first use, then pinned)
    ssh_session  public-key login with paramiko (RejectPolicy, the pinned key only) and ``echo ok`` exits 0
    local_api    ``GET https://<address>:<port>/v1/ping`` answers (a 401 counts), certificate pinned on first use

Each rung records evidence (when it was reached, what was seen) in the journal and in the returned
:class:`ReadinessReport`. Polling goes through :func:`palette_provision.waiting.wait_for`: at most two polls a
second, backing off to about one a second (under 60 TCP connections a minute per node). Transient failures
(connection refused or reset, timeouts, banner timeout, paramiko's ``Authentication timeout.`` on a lossy link) are
retried; final ones stop the node at once:

* a different host key: :class:`~palette_provision.errors.HostKeyMismatch`;
* the key refused (``Authentication failed.``): :class:`SessionAuthenticationFailed`;
* a different Local API certificate: :class:`LocalApiCertificateMismatch`.

Running out of time raises :class:`~palette_provision.errors.ReadinessError` naming the last rung reached and the
last error seen. Secrets (the private key) never reach logs, errors or the journal.

Example::

    target = ReadinessTarget(
        node="node-1", address=lambda: provider.discover_address(machine, spec) or "10.0.0.11",
        username="kairos", private_key=plan.cluster.node_account.ssh_private_key,
        pinned_host_key=journal.fact("node-1", "host_key_public"), local_api_port=5080, deadline_s=1200,
    )
    report = climb(target, journal=journal)
    print([rung.name for rung in report.rungs])   # ['address', 'ssh_banner', 'host_key', 'ssh_session', 'local_api']
"""

from __future__ import annotations

import time
from collections.abc import Callable

from palette_provision.errors import LocalApiCertificateMismatch, SessionAuthenticationFailed, TransientError
from palette_provision.journal import Journal
from palette_provision.readiness._local_api import _climb_local_api
from palette_provision.readiness._model import (
    FACT_HOST_KEY_FINGERPRINT,
    FACT_HOST_KEY_PUBLIC,
    FACT_LOCAL_API_CERT,
    POLL_BACKOFF,
    RUNGS,
    ReadinessReport,
    ReadinessTarget,
    Rung,
    _log,
)
from palette_provision.readiness._ssh import _climb_banner, _climb_host_key, _climb_session
from palette_provision.readiness._state import _Climb

__all__ = [
    "FACT_HOST_KEY_FINGERPRINT",
    "FACT_HOST_KEY_PUBLIC",
    "FACT_LOCAL_API_CERT",
    "POLL_BACKOFF",
    "RUNGS",
    "LocalApiCertificateMismatch",
    "ReadinessReport",
    "ReadinessTarget",
    "Rung",
    "SessionAuthenticationFailed",
    "climb",
]


def climb(
    target: ReadinessTarget,
    *,
    journal: Journal | None = None,
    on_rung: Callable[[Rung], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> ReadinessReport:
    """Climb ``target``'s readiness ladder and return the evidence of every rung.

    With a ``journal``: evidence goes to ``journal.add_evidence(node, rung, detail)``; the pinned host key is read
    from (and, on first use, written to) the fact ``host_key_public`` (and ``host_key_fingerprint``), the Local API
    certificate pin from/to ``local_api_cert_sha256``. ``on_rung`` is called as each rung is reached.

    Example::

        report = climb(target, journal=journal, on_rung=lambda r: print("reached", r.name))

    Raises:
        ReadinessError: the deadline passed; names the last rung reached and the last error (wraps the
            :class:`~palette_provision.errors.WaitTimeout`); or no host key is pinned and trust on first use is off.
        HostKeyMismatch: the node's host key is not the pinned one (at once, no retries).
        SessionAuthenticationFailed: the account's key was refused (at once, no retries).
        LocalApiCertificateMismatch: the Local API certificate is not the pinned one (at once, no retries).
        PaletteProvisionError: whatever non-transient error ``target.address()`` raised (e.g. a ProviderError).
    """
    start = clock()
    state = _Climb(
        target=target,
        journal=journal,
        on_rung=on_rung,
        clock=clock,
        sleep=sleep,
        start=start,
        deadline=start + target.deadline_s,
        log=_log.bind(node=target.node, phase="await_ready"),
    )
    address = _climb_address(state)
    if target.ssh:
        _climb_banner(state, address)
        host_key = _climb_host_key(state, address)
        _climb_session(state, address, host_key)
    if target.local_api_port is not None:
        _climb_local_api(state, address, target.local_api_port)
    return ReadinessReport(
        node=target.node,
        address=address,
        rungs=tuple(state.rungs),
        elapsed_s=clock() - start,
        connections=state.connections,
    )


def _climb_address(state: _Climb) -> str:
    def probe() -> str:
        found = state.target.address()
        if not found:
            raise TransientError("no address known yet")
        return found

    address = state.wait(probe, f"an address for node {state.target.node}")
    state.reached("address", {"address": address})
    return address
