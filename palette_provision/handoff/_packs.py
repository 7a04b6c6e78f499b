"""Upload pack bundles to the appliance's internal registry, then sync its OCI pack registry (the docs' last part).

=========================  ========================================================================================
``packs.upload:<file>``    one per bundle: streamed to the leader's Local API content upload (the content bundle's
                           path); skipped (0 bytes sent) when this deployment's journal (or the leader's last upload)
                           has that file with the same size and SHA-256 *and* the registry's contents
                           (``cluster/registry/content/details``) list its pack and version with that size
``packs.push:<file>``      with ``packs.registry: external``: pushed to the OCI registry (HEAD skip, chunked blobs,
                           manifest last)
``packs.register``         the external registry registered in the system console unless it lists it
``packs.sync``             the system console's OCI pack registry synced and waited for, when a bundle was uploaded
                           or pushed (a new tag counts) in this run or the sync never completed: first the leader's
                           registry content must have nothing pending, then ``Completed`` counts only for a run
                           newer than the one the console reported before the trigger (``lastRunTime``);
                           ``Failed`` ends the wait with the console's message
=========================  ========================================================================================

The Local API's upload is not resumable: a run killed mid-upload sends that file again from its first byte, and the
files already uploaded are skipped. Each upload, skip and the sync record evidence like the validation's checks
(a skipped bundle's says it was already there, 0 bytes sent); a failed one records a failed entry and raises
:class:`~palette_provision.handoff._session.CheckFailed`.
"""

from __future__ import annotations

import re
import socket
import ssl
import time
from pathlib import Path
from typing import Any

from palette_provision.errors import HandoffError, TLSVerificationError
from palette_provision.handoff._console import DEFAULT_ADMIN, ConsoleClient, ConsoleLogin
from palette_provision.handoff._content import SYNC_DETAILS, UPLOADED_DETAILS, send_file
from palette_provision.handoff._session import Session, record_evidence, run_check, step_errors
from palette_provision.journal import GLOBAL
from palette_provision.media import sha256_file
from palette_provision.plan import DeploymentPlan, ExternalRegistry
from palette_provision.tls import insecure_context, pinned_context, verified_context

__all__ = ["PACKS_SYNC_STEP", "PACK_UPLOAD_STEP", "pack_steps", "upload_packs"]

REGISTRY_CONTENT = "/v1/edge-mgmt/cluster/registry/content/details"

PACK_UPLOAD_STEP = "packs.upload"
PACK_PUSH_STEP = "packs.push"
PACKS_REGISTER_STEP = "packs.register"
PACKS_SYNC_STEP = "packs.sync"
_NAME_VERSION = re.compile(r"(.+?)-v?([0-9]+\.[0-9]+[0-9A-Za-z.+_-]*)")


def pack_reference(path: Path) -> tuple[str, str]:
    """``(pack, version)`` from a bundle's file name (``edge-k8s-1.30.4.zst`` -> ``edge-k8s``, ``1.30.4``).

    >>> pack_reference(Path("cni-calico-v3.28.0.zst"))
    ('cni-calico', '3.28.0')
    """
    stem = path.name.removesuffix(".zst").removesuffix(".tar")
    found = _NAME_VERSION.fullmatch(stem)
    return (found.group(1), found.group(2)) if found else (stem, "latest")


def _step(path: Path, external: bool = False) -> str:
    return f"{PACK_PUSH_STEP if external else PACK_UPLOAD_STEP}:{path.name}"


def pack_steps(plan: DeploymentPlan) -> list[tuple[str, str, str]]:
    """The pack sub-steps, for the dry run (empty without ``packs`` in the plan)."""
    if plan.packs is None:
        return []
    external = plan.packs.external
    if external is not None:
        steps = [(_step(Path(b), True), "*", f"push the pack bundle {b} to {external.url} (skipped when there)")
                 for b in plan.packs.bundles]  # fmt: skip
        steps.append((PACKS_REGISTER_STEP, "*", f"register {external.url} in the system console unless listed"))
    else:
        steps = [(_step(Path(b)), "*", f"upload the pack bundle {b} to the leader (skipped when already there)")
                 for b in plan.packs.bundles]  # fmt: skip
    steps.append((PACKS_SYNC_STEP, "*", "sync the OCI pack registry through the system console and wait"))
    return steps


def _digest(session: Session, path: Path) -> str:
    journal = session.context.journal
    digest = journal.cached_digest(path) or sha256_file(path)
    journal.cache_digest(path, digest)
    return digest


def _listed(session: Session, path: Path, size: int) -> bool:
    """Whether the leader's registry contents list this bundle's pack and version with its size."""
    pack, version = pack_reference(path)
    answer = session.api(session.leader).get_optional(REGISTRY_CONTENT) or {}
    items = answer.get("status") if isinstance(answer, dict) else None
    listed = items if isinstance(items, list) else []
    return any(isinstance(i, dict) and i.get("name") == pack and str(i.get("version") or "") == version
               and str(i.get("size") or "") == str(size) for i in listed)  # fmt: skip


def _upload_one(session: Session, path: Path, known: dict[str, Any]) -> dict[str, Any]:
    """Upload ``path`` unless the journal's last done record (``known``) or the leader's last upload is this file
    and the registry's contents list it (docs/palette-system-console-api.md §4)."""
    name = _step(path)
    size = path.stat().st_size
    digest = _digest(session, path)
    last = session.api(session.leader).get_optional(UPLOADED_DETAILS) or {}
    sent_before = (known.get("sha256"), known.get("bytes")) == (digest, size) or (
        last.get("fileName") == path.name and int(last.get("sizeInBytes") or -1) == size
        and str(last.get("sha256Hash", "")).lower() == digest
    )  # fmt: skip
    if sent_before and _listed(session, path, size):
        session.emit(name, "pack_already_uploaded", file=path.name, bytes=size)
        evidence = record_evidence(session, name, f"is {path.name} in {session.leader.name}'s registry",
                                   f"already there ({size} bytes, sha256 {digest}): 0 bytes sent", uploaded_bytes=0)
        return {"file": path.name, "bytes": size, "sha256": digest, "uploaded_bytes": 0, "evidence": evidence}
    sent_digest, _ = send_file(session, path, size, step=name)
    if sent_digest != digest:
        raise HandoffError(name, f"{path} changed while it was uploaded (sha256 {sent_digest}, then {digest})")
    after = session.api(session.leader).get(UPLOADED_DETAILS)
    if str(after.get("sha256Hash", "")).lower() != digest or int(after.get("sizeInBytes") or -1) != size:
        raise HandoffError(name, f"{session.leader.name} did not record {path.name} as sent ({size} bytes, sha256 "
                                 f"{digest})")  # fmt: skip
    evidence = record_evidence(session, name, f"upload {path.name} to {session.leader.name}",
                               f"{size} bytes recorded with sha256 {digest}", uploaded_bytes=size)
    return {"file": path.name, "bytes": size, "sha256": digest, "uploaded_bytes": size, "evidence": evidence}


def _verify(external: ExternalRegistry, log: Any) -> ssl.SSLContext:
    if external.tls == "insecure":
        log.warning("registry_tls_insecure", registry=external.url)
        return insecure_context()
    if external.tls == "pin" and external.fingerprint:
        return pinned_context(external.fingerprint, server=f"the registry {external.url}")
    return verified_context(external.ca_bundle)


def _push_one(session: Session, path: Path, external: ExternalRegistry) -> dict[str, Any]:
    from palette_provision.oci import push_artifact

    name = _step(path, True)
    pack, version = pack_reference(path)
    repository = f"{external.base_content_path}/{pack}"
    state = session.context.output_dir / ".oci-uploads"
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    result = push_artifact(
        external.url, repository, version, path, username=external.username, password=external.password,
        verify=_verify(external, session.context.log), state_dir=state,
        progress=lambda done, total: session.emit(name, "pack_push_progress", file=path.name, bytes_sent=done,
                                                  bytes_total=total),
    )  # fmt: skip
    sent = "already there: 0 bytes sent" if result.skipped else (
        f"{result.uploaded_bytes} bytes sent, manifest {result.manifest_digest}")
    evidence = record_evidence(session, name, f"push {path.name} to {external.url}/{repository}:{version}", sent,
                               uploaded_bytes=result.uploaded_bytes)
    return {"file": path.name, "reference": f"{repository}:{version}", "uploaded_bytes": result.uploaded_bytes,
            "changed": not result.skipped, "evidence": evidence}


def _pinned_pem(external: ExternalRegistry) -> str:
    """With ``tls: pin``: the registry's certificate (PEM), read over a connection the pin verified, for the console
    to trust (a pinned registry is one with a self-signed certificate: that certificate is its own CA)."""
    from urllib.parse import urlsplit

    where = urlsplit(external.url)
    host, port = where.hostname or "", where.port or 443
    context = pinned_context(external.fingerprint or "", server=external.url)
    try:
        with (socket.create_connection((host, port), timeout=10) as raw,
              context.wrap_socket(raw, server_hostname=host) as tls):
            der = tls.getpeercert(binary_form=True)
    except TLSVerificationError as exc:
        raise HandoffError(PACKS_REGISTER_STEP, str(exc)) from None
    except OSError as exc:
        raise HandoffError(PACKS_REGISTER_STEP, f"cannot read the certificate of {external.url} "
                           f"({type(exc).__name__})") from None  # fmt: skip
    if der is None:
        raise HandoffError(PACKS_REGISTER_STEP, f"{external.url} presented no certificate")
    return ssl.DER_cert_to_PEM_cert(der)


def _registry_body(external: ExternalRegistry) -> dict[str, Any]:
    auth: dict[str, Any] = {"type": "basic" if external.username else "noAuth"}
    if external.username and external.password is not None:
        auth.update(username=external.username, password=external.password.reveal())
    # The console verifies the registry itself: with a CA bundle (verify) or the pinned certificate as its own CA
    # (pin). Only tls: insecure registers it with insecureSkipVerify (the plan's logged opt-out).
    if external.tls == "pin" and external.fingerprint:
        ca = _pinned_pem(external)
    else:
        ca = Path(external.ca_bundle).read_text() if external.ca_bundle else ""
    auth["tls"] = {"enabled": True, "insecureSkipVerify": external.tls == "insecure", "certificate": ca}
    return {"metadata": {"name": external.name},
            "spec": {"endpoint": external.url.removeprefix("https://"), "baseContentPath": external.base_content_path,
                     "providerType": "pack", "isSyncSupported": True, "auth": auth}}  # fmt: skip


def _target(session: Session, console: ConsoleClient, login: ConsoleLogin) -> dict[str, Any]:
    """The registry to sync: the external one (registered unless the console lists it), else the internal one."""
    plan = session.context.plan
    registries = [r for r in console.registries(login) if r["providerType"] == "pack"]
    external = plan.packs.external if plan.packs is not None else None
    if external is not None:
        endpoint = external.url.removeprefix("https://")
        found = next((r for r in registries if endpoint in r["endpoint"] or r["name"] == external.name), None)
        if found is not None:
            return found
        uid = console.register_registry(login, _registry_body(external))
        evidence = {"check": PACKS_REGISTER_STEP, "asked": f"register {external.url} as {external.name}",
                    "answered": "registered", "at": time.time()}  # fmt: skip
        session.context.journal.add_evidence(GLOBAL, PACKS_REGISTER_STEP, evidence)
        return {"uid": uid, "name": external.name, "endpoint": endpoint, "providerType": "pack"}
    vip = str(plan.cluster.vip)
    internal = next((r for r in registries if vip in r["endpoint"]), registries[0] if registries else None)
    if internal is None:
        raise HandoffError(PACKS_SYNC_STEP, "the system console lists no OCI pack registry to sync")
    return internal


def _await_pending(session: Session) -> None:
    """Wait until the leader's registry content has nothing pending (§4: our ordering, before the console's Sync)."""
    leader = session.api(session.leader)

    def pending() -> list[dict[str, Any]]:
        answer = leader.get_optional(SYNC_DETAILS) or {}
        items = answer.get("pendingItems") if isinstance(answer, dict) else None
        return [i for i in (items if isinstance(items, list) else []) if isinstance(i, dict)
                and str(i.get("status") or "").lower() in ("pending", "failed")]  # fmt: skip

    session.wait(
        PACKS_SYNC_STEP, pending, what="the leader's registry content to have nothing pending",
        timeout=session.context.plan.timeouts.content_sync, until=lambda p: not p,
        failed=lambda p: "; ".join(f"{str(i.get('name'))[:80]}: {str(i.get('msg'))[:120]}" for i in p
                                   if str(i.get("status")).lower() == "failed") or None,
        describe=lambda p: f"{len(p)} item(s) pending",
    )  # fmt: skip


def _sync(session: Session, console: ConsoleClient) -> dict[str, Any]:
    plan = session.context.plan
    settings, packs = plan.validation, plan.packs
    if settings is None or packs is None:
        return {}
    with step_errors(PACKS_SYNC_STEP):
        if packs.external is None:
            _await_pending(session)
        login = console.login(DEFAULT_ADMIN[0], settings.console.password)
        if login is None:
            raise HandoffError(PACKS_SYNC_STEP, "the system console refuses validate.console.password")
        target = _target(session, console, login)
        # A poll right after the trigger can still show the previous run's Completed (a lagging status): only a
        # run newer than the one reported before the trigger counts (compared with the console's own clock).
        before_status, _, before_run = console.sync_status(login, target["uid"])
        console.sync_registry(login, target["uid"])

        def ours(run: float | None) -> bool:
            if before_run is None:
                return True  # no earlier run (or a console that gives no lastRunTime): the status alone
            return run is not None and (run > before_run or (run == before_run and before_status == "InProgress"))

        status, message, _ = session.wait(
            PACKS_SYNC_STEP, lambda: console.sync_status(login, target["uid"]),
            what=f"the {target['name']} registry's sync", timeout=packs.sync_timeout,
            until=lambda s: s[0].lower() in ("completed", "success", "succeeded") and ours(s[2]),
            failed=lambda s: f"the sync failed: {s[1] or s[0]}" if s[0].lower() in ("failed", "error") and ours(s[2])
            else None,
            describe=lambda s: (s[0] or "no status") + ("" if ours(s[2]) else " (the previous run)"),
        )  # fmt: skip
    evidence = record_evidence(session, PACKS_SYNC_STEP, f"sync of the OCI pack registry {target['name']}",
                               f"{status}{': ' + message if message else ''}")
    return {"registry": target["name"], "sync_status": status, "sync_message": message, "evidence": evidence}


def upload_packs(session: Session, console: ConsoleClient) -> list[dict[str, Any]]:
    """Upload (or push) every bundle, each its own step checked again on every run, then sync when anything changed.

    Raises:
        CheckFailed: a step failed; ``.step`` names it, ``.evidence`` holds this run's pack evidence (its own last).
    """
    plan = session.context.plan
    if plan.packs is None:
        return []
    journal, changed = session.context.journal, 0
    evidence: list[dict[str, Any]] = []
    external = plan.packs.external
    for bundle in plan.packs.bundles:
        path = plan.resolve_path(bundle)
        name = _step(path, external is not None)
        if external is not None:

            def push(path: Path = path, external: ExternalRegistry = external) -> dict[str, Any]:
                with step_errors(_step(path, True)):
                    return _push_one(session, path, external)

            data = run_check(session, name, f"push {path.name} to {external.url}", push, evidence)
            changed += bool(data.get("changed") or data.get("uploaded_bytes"))
            continue

        before = journal.step(name)  # read before run_step records this run's start
        known = dict(before.data) if before is not None and before.status == "done" else {}

        def upload(path: Path = path, known: dict[str, Any] = known) -> dict[str, Any]:
            with step_errors(_step(path)):
                return _upload_one(session, path, known)

        data = run_check(session, name, f"upload {path.name} to {session.leader.name}", upload, evidence)
        changed += bool(data.get("uploaded_bytes"))
    synced = journal.step(PACKS_SYNC_STEP)
    console.step = PACKS_SYNC_STEP
    if changed or synced is None or synced.status != "done":
        run_check(session, PACKS_SYNC_STEP, "sync of the OCI pack registry", lambda: _sync(session, console), evidence)
    return evidence
