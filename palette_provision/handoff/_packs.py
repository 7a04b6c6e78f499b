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

import time
from pathlib import Path
from typing import Any

from palette_provision.errors import HandoffError
from palette_provision.handoff._console import DEFAULT_ADMIN, ConsoleClient
from palette_provision.handoff._content import UPLOADED_DETAILS, send_file
from palette_provision.handoff._session import Session, step_errors
from palette_provision.journal import GLOBAL
from palette_provision.media import sha256_file
from palette_provision.plan import DeploymentPlan

__all__ = ["PACKS_SYNC_STEP", "PACK_UPLOAD_STEP", "pack_steps", "upload_packs"]

PACK_UPLOAD_STEP = "packs.upload"
PACKS_SYNC_STEP = "packs.sync"


def _step(path: Path) -> str:
    return f"{PACK_UPLOAD_STEP}:{path.name}"


def pack_steps(plan: DeploymentPlan) -> list[tuple[str, str, str]]:
    """The pack sub-steps, for the dry run (empty without ``packs`` in the plan)."""
    if plan.packs is None:
        return []
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


def _sync(session: Session, console: ConsoleClient) -> dict[str, Any]:
    plan = session.context.plan
    settings, packs = plan.validation, plan.packs
    if settings is None or packs is None:
        return {}
    with step_errors(PACKS_SYNC_STEP):
        login = console.login(DEFAULT_ADMIN[0], settings.console.password)
        if login is None:
            raise HandoffError(PACKS_SYNC_STEP, "the system console refuses validate.console.password")
        registries = [r for r in console.registries(login) if r["providerType"] == "pack"]
        vip = str(plan.cluster.vip)
        internal = next((r for r in registries if vip in r["endpoint"]), registries[0] if registries else None)
        if internal is None:
            raise HandoffError(PACKS_SYNC_STEP, "the system console lists no OCI pack registry to sync")
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
    for bundle in plan.packs.bundles:
        path = plan.resolve_path(bundle)

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
