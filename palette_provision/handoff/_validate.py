"""Validate the installed Palette as its documentation does, as journaled hand-off steps with evidence.

=============================  ====================================================================================
``validate.cluster``           evidence only: the cluster ``Running`` and ``Healthy`` as ``handoff.cluster`` read it
``validate.applications``      the leader's Local API: every application of the cluster ``Running``
``validate.pods``              with the kubeconfig: every pod of the documented namespaces ``Running`` and ready
``validate.console_password``  the system console's first-login ``admin`` password rotated to the plan's (once)
``validate.console_health``    the system console logs in with the plan's password and reports itself healthy
=============================  ====================================================================================

Each check records evidence (what was asked, what answered, when) in the journal and the report, like the readiness
ladder's rungs; a failed check records it too (``failed: True``, our error's words as the answer), keeps the evidence
so far in the journal's failed step, and raises a :class:`CheckFailed` naming its step and carrying that evidence.

The password step is done once: a re-run logs in with the plan's password and never sends ``admin``
again after a rotation; the plan's password is tried first, so a console rotated by hand is not locked out by
guesses. Kubernetes is read with lightkube (see ``docs/validation.md`` for why), with the kubeconfig's own CA and
client certificate; waits use :func:`palette_provision.waiting.wait_for` through the session.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from palette_provision.errors import AuthenticationError, HandoffError, TransientError
from palette_provision.handoff._console import DEFAULT_ADMIN, ConsoleClient, ConsoleLogin
from palette_provision.handoff._session import Session, record_evidence, run_check, step_errors
from palette_provision.journal import GLOBAL, Fact
from palette_provision.plan import DeploymentPlan, ValidateSettings
from palette_provision.secrets import Secret
from palette_provision.tls import certificate_refusal

__all__ = [
    "APPS_STEP",
    "CLUSTER_CHECK",
    "HEALTH_STEP",
    "PASSWORD_STEP",
    "PODS_STEP",
    "PodProbe",
    "validate_palette",
    "validation_steps",
]

CLUSTER_CHECK = "validate.cluster"
APPS_STEP = "validate.applications"
PODS_STEP = "validate.pods"
PASSWORD_STEP = "validate.console_password"  # noqa: S105 - a step's name
HEALTH_STEP = "validate.console_health"
APPLICATIONS = "/v1/edge-mgmt/cluster/applications"

#: Lists a namespace's pods as ``(name, phase, ready, waiting reason)``: lightkube by default, tests may replace it.
PodProbe = Callable[[str], list[tuple[str, str, bool, str]]]


def validation_steps(plan: DeploymentPlan) -> list[tuple[str, str, str]]:
    """The validation's sub-steps, for the dry run (empty without ``validate`` in the plan)."""
    if plan.validation is None:
        return []
    namespaces = ", ".join(plan.validation.namespaces)
    return [
        (APPS_STEP, "*", "wait until every application of the cluster is Running (leader's Local API)"),
        (PODS_STEP, "*", f"wait until every pod of {namespaces} is Running and ready (kubeconfig)"),
        (PASSWORD_STEP, "*", "rotate the system console's first-login admin password to validate.console.password"),
        (HEALTH_STEP, "*", "log in to the system console and check it reports itself healthy"),
    ]


def _applications(body: Any) -> list[tuple[str, str]]:
    """``(pack, status)`` of every application: the packs of each ``clusterProfileTemplates`` entry (edge-v1's
    ``v1ClusterProfileTemplates``)."""
    templates = body.get("clusterProfileTemplates") if isinstance(body, Mapping) else None
    if not isinstance(templates, list):
        raise TypeError("clusterProfileTemplates is not a list")
    found = []
    for template in templates:
        packs = template.get("packs") if isinstance(template, Mapping) else None
        if not isinstance(packs, list):
            raise TypeError("a profile's packs are not a list")
        for pack in packs:
            if not isinstance(pack, Mapping):
                raise TypeError("a pack is not an object")
            found.append((str(pack.get("name") or "?")[:80], str(pack.get("status") or "")[:40]))
    return found


def check_applications(session: Session, settings: ValidateSettings) -> dict[str, Any]:
    """Every application of the cluster ``Running`` on the leader's Local API."""
    leader = session.api(session.leader)

    def not_running(apps: list[tuple[str, str]]) -> list[str]:
        return [f"{name}: {status or 'no status'}" for name, status in apps if status != "Running"]

    with step_errors(APPS_STEP):
        apps = session.wait(
            APPS_STEP, lambda: _applications(leader.get(APPLICATIONS)), what="every application to be Running",
            timeout=settings.timeout, until=lambda a: bool(a) and not not_running(a),
            failed=lambda a: "; ".join(x for x in not_running(a) if x.endswith(("Error", "Failed", "Deleting")))
            or None,
            describe=lambda a: ", ".join(not_running(a)) or "none listed",
        )  # fmt: skip
    entry = record_evidence(session, APPS_STEP, f"GET {APPLICATIONS} on {session.leader.name}",
                      f"{len(apps)} application(s) Running", applications=[n for n, _ in apps])  # fmt: skip
    return {"applications": [n for n, _ in apps], "evidence": entry}


def lightkube_probe(kubeconfig: Path, server: str | None = None) -> PodProbe:
    """List pods with lightkube from ``kubeconfig`` (its CA and client certificate); ``server`` overrides its URL."""
    import httpx
    from lightkube import ApiError, Client, KubeConfig
    from lightkube.resources.core_v1 import Pod

    config = KubeConfig.from_file(str(kubeconfig)).get()
    if config is None:
        raise HandoffError(PODS_STEP, f"{kubeconfig} names no current context")
    if server is not None:
        config = config._replace(cluster=dataclasses.replace(config.cluster, server=server))
    client = Client(config=config, trust_env=False, timeout=httpx.Timeout(20.0))

    def probe(namespace: str) -> list[tuple[str, str, bool, str]]:
        try:
            pods = list(client.list(Pod, namespace=namespace))
        except ApiError as exc:
            raise HandoffError(PODS_STEP, f"the Kubernetes API refused listing the pods of {namespace} "
                               f"({exc.status.code})") from None  # fmt: skip
        except httpx.HTTPError as exc:
            if certificate_refusal(exc) is not None:
                # Retrying cannot fix a certificate: fail at once, naming the step (seen with a wrong CA in the
                # kubeconfig: httpx.ConnectError around ssl.SSLCertVerificationError).
                raise HandoffError(PODS_STEP, f"the Kubernetes API's certificate did not verify against the "
                                   f"kubeconfig's CA ({kubeconfig.name})") from None  # fmt: skip
            raise TransientError(f"the Kubernetes API did not answer ({type(exc).__name__})") from None
        found = []
        for pod in pods:
            status = pod.status
            statuses = (status.containerStatuses or []) if status else []
            waiting = next((c.state.waiting.reason or "" for c in statuses if c.state and c.state.waiting), "")
            ready = bool(statuses) and all(c.ready for c in statuses)
            name = pod.metadata.name if pod.metadata and pod.metadata.name else "?"
            found.append((name[:120], (status.phase if status else "") or "", ready, waiting[:60]))
        return found

    return probe


def check_pods(session: Session, settings: ValidateSettings, probe: PodProbe) -> dict[str, Any]:
    """Every pod of the documented namespaces ``Running`` and ready; a crash-looping one fails at once."""
    namespaces = settings.namespaces

    def read() -> dict[str, list[tuple[str, str, bool, str]]]:
        return {ns: probe(ns) for ns in namespaces}

    def bad(state: dict[str, list[tuple[str, str, bool, str]]]) -> list[str]:
        out = [f"{ns} has no pod" for ns, pods in state.items() if not pods]
        out += [f"{ns}/{name}: {reason or phase}{'' if ready else ' (not ready)'}"
                for ns, pods in state.items() for name, phase, ready, reason in pods
                if phase != "Running" or not ready]  # fmt: skip
        return out

    def crashing(state: dict[str, list[tuple[str, str, bool, str]]]) -> str | None:
        found = [f"{ns}/{name} ({reason})" for ns, pods in state.items() for name, _, _, reason in pods
                 if reason in ("CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull")]  # fmt: skip
        return f"pods failing: {', '.join(found)}" if found else None

    state = session.wait(PODS_STEP, read, what="every pod to be Running and ready", timeout=settings.timeout,
                         until=lambda s: not bad(s), failed=crashing,
                         describe=lambda s: "; ".join(bad(s)[:5]) or "all ready")  # fmt: skip
    counts = {ns: len(pods) for ns, pods in state.items()}
    entry = record_evidence(session, PODS_STEP, f"GET /api/v1/namespaces/<ns>/pods for {', '.join(namespaces)}",
                      f"{sum(counts.values())} pod(s) Running and ready", pods=counts)  # fmt: skip
    return {"pods": counts, "evidence": entry}


def rotate_password(session: Session, settings: ValidateSettings, console: ConsoleClient) -> dict[str, Any]:
    """Log in with the plan's password; only if the console refuses it, with ``admin``, then change it."""
    journal = session.context.journal
    wanted: Secret = settings.console.password
    with step_errors(PASSWORD_STEP):
        # The first contact waits through the session (a console still starting, a dropped connection: retried);
        # a refusal (401) is an answer, and a TLS or lockout error is final.
        login = session.wait(PASSWORD_STEP, lambda: console.login(DEFAULT_ADMIN[0], wanted),
                             what="the system console to answer a login", timeout=settings.timeout,
                             until=lambda _: True, describe=lambda answer: "refused" if answer is None else "accepted")
        if login is not None and login.password_reset:
            entry = record_evidence(session, PASSWORD_STEP, "POST /v1/auth/syslogin (the plan's password)",
                              "accepted: the default password is already replaced")  # fmt: skip
            return {"rotated": False, "evidence": entry}
        if login is None and journal.fact(GLOBAL, Fact.CONSOLE_PASSWORD_ROTATED_AT) is not None:
            raise AuthenticationError(
                "the system console refuses the plan's password although this deployment rotated it: it was changed "
                "since; set validate.console.password to the current one", field="validate.console.password",
            )  # fmt: skip
        default = DEFAULT_ADMIN[1]  # public knowledge, not a secret: see ConsoleClient.login
        first = login or console.login(DEFAULT_ADMIN[0], default)
        if first is None:
            raise AuthenticationError("the system console refuses both the plan's password and the default one",
                                      field="validate.console.password")  # fmt: skip
        old: Secret | str = wanted if login is not None else default
        console.reset_password(first, email=settings.console.email, old=old, new=wanted)
        journal.set_fact(GLOBAL, Fact.CONSOLE_PASSWORD_ROTATED_AT, time.time())
        if console.login(DEFAULT_ADMIN[0], wanted) is None:
            raise HandoffError(PASSWORD_STEP, "the system console took the new password but refuses it at login")
    entry = record_evidence(session, PASSWORD_STEP, f"PATCH {console.base_url}/v1/system/admin/password/reset",
                      "the first-login password replaced by validate.console.password")  # fmt: skip
    return {"rotated": True, "evidence": entry}


def check_console_health(session: Session, settings: ValidateSettings, console: ConsoleClient) -> dict[str, Any]:
    """Log in with the plan's password; the console must report itself healthy (waited for)."""
    session_holder: list[ConsoleLogin] = []

    def probe() -> tuple[bool, str, str]:
        if not session_holder:
            login = console.login(DEFAULT_ADMIN[0], settings.console.password)
            if login is None:
                raise AuthenticationError("the system console refuses validate.console.password",
                                          field="validate.console.password")  # fmt: skip
            session_holder.append(login)
        return console.health(session_holder[0])

    with step_errors(HEALTH_STEP):
        healthy, asked, detail = session.wait(
            HEALTH_STEP, probe, what="the system console to report itself healthy", timeout=settings.timeout,
            until=lambda r: r[0], describe=lambda r: r[2] or ("healthy" if r[0] else "not healthy"),
        )  # fmt: skip
    entry = record_evidence(session, HEALTH_STEP, asked, "healthy" + (f" ({detail})" if detail else ""))
    return {"healthy": healthy, "evidence": entry}


def console_client(session: Session, console_url: str) -> ConsoleClient:
    """The system console's client with the plan's TLS mode (``validate.console``)."""
    settings = session.context.plan.validation
    tls, ca_bundle = (settings.console.tls, settings.console.ca_bundle) if settings else ("pin-on-first-use", None)
    context = session.context
    return ConsoleClient(console_url, tls=tls, ca_bundle=ca_bundle, journal=context.journal, log=context.log,
                         step=HEALTH_STEP)  # fmt: skip


def cluster_evidence(session: Session, details: Mapping[str, Any]) -> dict[str, Any]:
    """The ``validate.cluster`` entry: the cluster ``Running`` and ``Healthy`` as ``handoff.cluster`` just read it."""
    raw = details.get("status") if isinstance(details, Mapping) else None
    status: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    raw = status.get("health")
    health: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    state, healthy = str(status.get("clusterState") or "?")[:40], str(health.get("status") or "?")[:40]
    return record_evidence(session, CLUSTER_CHECK, f"GET /v1/edge-mgmt/cluster/details on {session.leader.name}",
                     f"cluster {state} and {healthy}", failed=(state, healthy) != ("Running", "Healthy"))  # fmt: skip


def _password_asked(console: ConsoleClient) -> str:
    return f"POST {console.base_url}/v1/auth/syslogin, then the first-login password change"


def ensure_console_password(session: Session, console: ConsoleClient) -> list[dict[str, Any]]:
    """``push-packs`` on a deployment whose checks never ran: the first-login password is replaced first (the same
    journaled step, once), since the pack registry's sync logs in with the plan's password; nothing when done."""
    settings = session.context.plan.validation
    if settings is None or session.context.journal.is_done(PASSWORD_STEP):
        return []
    evidence: list[dict[str, Any]] = []
    console.step = PASSWORD_STEP
    run_check(session, PASSWORD_STEP, _password_asked(console), lambda: rotate_password(session, settings, console),
              evidence, always=False)
    return evidence


def validate_palette(
    session: Session, kubeconfig: Path, *, console_url: str, kube_server: str | None = None,
    probe: PodProbe | None = None, details: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Run the four checks as journaled sub-steps (password once, the others on every run); their evidence.

    ``console_url`` is ``https://<vip>``; ``kube_server`` overrides the kubeconfig's server (simulators on one
    host); ``probe`` replaces the lightkube pod listing; ``details`` (the cluster's, as ``handoff.cluster`` read
    them) gives the first entry, ``validate.cluster``.

    Raises:
        CheckFailed: a check failed; ``.step`` names it, ``.evidence`` holds the evidence so far (its own last).
    """
    settings = session.context.plan.validation
    if settings is None:
        return []
    console = console_client(session, console_url)
    pods = probe or lightkube_probe(kubeconfig, kube_server)
    evidence = [cluster_evidence(session, details)] if details is not None else []
    try:
        for name, asked, action, always in (
            (APPS_STEP, f"GET {APPLICATIONS} on {session.leader.name}",
             lambda: check_applications(session, settings), True),
            (PODS_STEP, f"list the pods of {', '.join(settings.namespaces)} (kubeconfig)",
             lambda: check_pods(session, settings, pods), True),
            (PASSWORD_STEP, _password_asked(console), lambda: rotate_password(session, settings, console), False),
            (HEALTH_STEP, f"POST {console.base_url}/v1/auth/syslogin and GET /v1/mgmt/app/health",
             lambda: check_console_health(session, settings, console), True),
        ):  # fmt: skip
            console.step = name
            run_check(session, name, asked, action, evidence, always=always)
    finally:
        console.close()
    return evidence
