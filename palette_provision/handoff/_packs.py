"""Upload pack bundles to the appliance's internal registry, then sync its OCI pack registry (the docs' last part).

=========================  ========================================================================================
``packs.upload:<file>``    one per bundle: streamed to the leader's Local API content upload (the content bundle's
                           path), skipped when this deployment already uploaded that file with the same size and
                           SHA-256 (0 bytes sent), or when the leader's last upload is that very file
``packs.sync``             the system console's OCI pack registry (``providerType: pack``, at the VIP) synced and
                           waited for (``Completed``; ``Failed`` ends the wait with the console's message), when a
                           bundle was uploaded in this run or the sync never completed
=========================  ========================================================================================

The Local API's upload is not resumable: a run killed mid-upload sends that file again from its first byte, and the
files already uploaded are skipped. Each upload and the sync record evidence like the validation's checks.
"""

from __future__ import annotations

import re
import ssl
import time
from pathlib import Path
from typing import Any

from palette_provision.errors import HandoffError
from palette_provision.handoff._console import DEFAULT_ADMIN, ConsoleClient, ConsoleLogin
from palette_provision.handoff._content import UPLOADED_DETAILS, send_file
from palette_provision.handoff._session import Session, step_errors
from palette_provision.journal import GLOBAL
from palette_provision.media import sha256_file
from palette_provision.plan import DeploymentPlan, ExternalRegistry
from palette_provision.tls import insecure_context, pinned_context, verified_context

__all__ = ["PACKS_SYNC_STEP", "PACK_UPLOAD_STEP", "pack_steps", "upload_packs"]

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


def _upload_one(session: Session, path: Path, known: dict[str, Any]) -> dict[str, Any]:
    """Upload ``path`` unless ``known`` (the step's last done record) or the leader's last upload is this file."""
    journal, name = session.context.journal, _step(path)
    size = path.stat().st_size
    digest = _digest(session, path)
    last = session.api(session.leader).get_optional(UPLOADED_DETAILS) or {}
    if (known.get("sha256"), known.get("bytes")) == (digest, size) or (
        last.get("fileName") == path.name and int(last.get("sizeInBytes") or -1) == size
        and str(last.get("sha256Hash", "")).lower() == digest
    ):  # fmt: skip
        session.emit(name, "pack_already_uploaded", file=path.name, bytes=size)
        return {"file": path.name, "bytes": size, "sha256": digest, "uploaded_bytes": 0}
    sent_digest, _ = send_file(session, path, size, step=name)
    if sent_digest != digest:
        raise HandoffError(name, f"{path} changed while it was uploaded (sha256 {sent_digest}, then {digest})")
    after = session.api(session.leader).get(UPLOADED_DETAILS)
    if str(after.get("sha256Hash", "")).lower() != digest or int(after.get("sizeInBytes") or -1) != size:
        raise HandoffError(name, f"{session.leader.name} did not record {path.name} as sent ({size} bytes, sha256 "
                                 f"{digest})")  # fmt: skip
    evidence = {"check": name, "asked": f"upload {path.name} to {session.leader.name}",
                "answered": f"{size} bytes recorded with sha256 {digest}", "at": time.time()}  # fmt: skip
    journal.add_evidence(GLOBAL, name, evidence)
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
    evidence = {"check": name, "asked": f"push {path.name} to {external.url}/{repository}:{version}",
                "answered": f"{result.uploaded_bytes} bytes sent, manifest {result.manifest_digest}",
                "at": time.time()}  # fmt: skip
    session.context.journal.add_evidence(GLOBAL, name, evidence)
    return {"file": path.name, "reference": f"{repository}:{version}", "uploaded_bytes": result.uploaded_bytes,
            "evidence": evidence}  # fmt: skip


def _registry_body(external: ExternalRegistry) -> dict[str, Any]:
    auth: dict[str, Any] = {"type": "basic" if external.username else "noAuth"}
    if external.username and external.password is not None:
        auth.update(username=external.username, password=external.password.reveal())
    ca = Path(external.ca_bundle).read_text() if external.ca_bundle else ""
    auth["tls"] = {"enabled": True, "insecureSkipVerify": external.tls != "verify", "certificate": ca}
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


def _sync(session: Session, console: ConsoleClient) -> dict[str, Any]:
    plan = session.context.plan
    settings, packs = plan.validation, plan.packs
    if settings is None or packs is None:
        return {}
    with step_errors(PACKS_SYNC_STEP):
        login = console.login(DEFAULT_ADMIN[0], settings.console.password)
        if login is None:
            raise HandoffError(PACKS_SYNC_STEP, "the system console refuses validate.console.password")
        internal = _target(session, console, login)
        console.sync_registry(login, internal["uid"])
        status, message = session.wait(
            PACKS_SYNC_STEP, lambda: console.sync_status(login, internal["uid"]),
            what=f"the {internal['name']} registry's sync", timeout=packs.sync_timeout,
            until=lambda s: s[0].lower() in ("completed", "success", "succeeded"),
            failed=lambda s: f"the sync failed: {s[1] or s[0]}" if s[0].lower() in ("failed", "error") else None,
            describe=lambda s: s[0] or "no status",
        )  # fmt: skip
    evidence = {"check": PACKS_SYNC_STEP, "asked": f"sync of the OCI pack registry {internal['name']}",
                "answered": f"{status}{': ' + message if message else ''}", "at": time.time()}  # fmt: skip
    session.context.journal.add_evidence(GLOBAL, PACKS_SYNC_STEP, evidence)
    return {"registry": internal["name"], "sync_status": status, "sync_message": message, "evidence": evidence}


def upload_packs(session: Session, console: ConsoleClient) -> list[dict[str, Any]]:
    """Upload every bundle (each its own step, checked again on every run), then sync when anything changed."""
    plan = session.context.plan
    if plan.packs is None:
        return []
    journal, evidence, moved = session.context.journal, [], 0
    external = plan.packs.external
    for bundle in plan.packs.bundles:
        path = plan.resolve_path(bundle)
        if external is not None:

            def push(path: Path = path, external: ExternalRegistry = external) -> dict[str, Any]:
                return _push_one(session, path, external)

            with step_errors(_step(path, True)):
                data = session.context.run_step(_step(path, True), push, always=True)
            moved += int(data.get("uploaded_bytes") or 0)
            if data.get("uploaded_bytes") and "evidence" in data:
                evidence.append(data["evidence"])
            continue

        before = journal.step(_step(path))  # read before run_step records this run's start
        known = dict(before.data) if before is not None and before.status == "done" else {}

        def upload(path: Path = path, known: dict[str, Any] = known) -> dict[str, Any]:
            return _upload_one(session, path, known)

        with step_errors(_step(path)):
            data = session.context.run_step(_step(path), upload, always=True)
        moved += int(data.get("uploaded_bytes") or 0)
        if "evidence" in data and data.get("uploaded_bytes"):
            evidence.append(data["evidence"])
    synced = journal.step(PACKS_SYNC_STEP)
    console.step = PACKS_SYNC_STEP
    if moved or synced is None or synced.status != "done":
        data = session.context.run_step(PACKS_SYNC_STEP, lambda: _sync(session, console), always=True)
        if "evidence" in data:
            evidence.append(data["evidence"])
    return evidence
