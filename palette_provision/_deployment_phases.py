"""What the deployment-wide phases do: preflight, staging the appliance ISO, and the hand-off.

Their names and descriptions are in :data:`palette_provision.phases.DEPLOYMENT_PHASES`; ``Deployment.apply`` runs
them through the same step machinery as the per-node phases.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from palette_provision import media as media_mod
from palette_provision._disks import STORAGE_POOL_VARIABLE, storage_pool_drive
from palette_provision._run import Outcome
from palette_provision.errors import ConfigurationError, PlanError, PlanIssue, ProviderError
from palette_provision.handoff.base import ClusterFormer, HandoffContext, HandoffResult, ReadyNode
from palette_provision.journal import GLOBAL, Fact
from palette_provision.provider import MediaFile, MediaLocating, MediaStaging, StagedMedia

if TYPE_CHECKING:
    from palette_provision.pipeline import Deployment

__all__ = ["handoff", "handoff_result", "preflight", "progress_events", "ready_nodes", "stage_file", "stage_iso"]


def _local_iso_path(deployment: Deployment, *, check_only: bool = False) -> Path | None:
    plan = deployment.plan
    if plan.iso.is_url:
        if check_only:
            return None
        return media_mod.fetch_iso(plan.iso, deployment.state_dir / "media", journal=deployment.journal)
    return plan.resolve_path(plan.iso.source)


def preflight(deployment: Deployment) -> Outcome:
    """Local files exist, then the provider's live, read-only checks."""
    plan = deployment.plan
    iso_path = _local_iso_path(deployment, check_only=True)
    if iso_path is not None and not iso_path.is_file():
        raise ConfigurationError(f"the appliance ISO {iso_path} does not exist", field="iso.source")
    if plan.content is not None and not plan.resolve_path(plan.content.path).is_file():
        raise ConfigurationError(f"the content bundle {plan.content.path} does not exist", field="content.path")
    deployment.provider.preflight(plan)
    if plan.iso.sha256 and iso_path is not None:
        # The wrong file refused before anything is changed.
        _iso_digest_read(deployment, iso_path, deployment.journal.cached_digest(iso_path))
    if plan.nodes.wipe_install_disk:
        for spec in deployment.node_specs():
            # Asked for explicitly (nodes.wipe_install_disk), and still worth saying out loud: it destroys data.
            deployment.log.warning(
                "install_disk_wiped_before_install", node=spec.name, device=spec.install_disk or "auto"
            )
    return Outcome({"provider": plan.platform.provider, "install_method": deployment.install_method.value})


def _iso_digest_read(deployment: Deployment, path: Path, cached: str | None) -> str | None:
    """The ISO's digest as read from the file itself (``cached``, the journal's, or ``apply``'s early read), checked
    against the plan's ``iso.sha256``; ``None`` when neither has it (the provider hashes while it uploads)."""
    plan = deployment.plan
    early = deployment.early_iso_digest
    read = cached or (early.result() if early and early.path == path else None)
    if read is not None and plan.iso.sha256 and read != plan.iso.sha256:
        raise ConfigurationError(
            f"the appliance ISO {path} has SHA-256 {read}, the plan says {plan.iso.sha256}", field="iso.sha256"
        )
    return read


def stage_iso(deployment: Deployment) -> Outcome:
    """Stage the appliance ISO (content-addressed: an identical copy is not uploaded again)."""
    plan, journal = deployment.plan, deployment.journal
    path = _local_iso_path(deployment)
    if path is None:  # only a URL gives None, and only when checking
        raise ConfigurationError("the appliance ISO could not be fetched", field="iso.source")
    identity = media_mod.file_identity(path)
    cached = journal.cached_digest(path)
    read = _iso_digest_read(deployment, path, cached)
    known = plan.iso.sha256 or read
    file = MediaFile(role="appliance-iso", local_path=path, size=identity[2], name=path.name, sha256=known,
                     sha256_checked=read is not None)  # fmt: skip
    if not isinstance(deployment.provider, MediaStaging):
        staged = StagedMedia("appliance-iso", str(path), known or "", file.size)
        return Outcome({"staged": staged.to_record()})
    staged = deployment.stage_file(file, deployment.progress(GLOBAL, "stage_media"))
    if file.sha256_checked and media_mod.file_identity(path) != identity:
        # The provider may have sent the bytes unhashed (they were read before): a file changed meanwhile leaves a
        # copy whose digest nobody computed. The next run reads the file again and replaces the copy.
        raise ProviderError(
            f"the appliance ISO {path} changed while it was staged; run again",
            provider=plan.platform.provider,
            resource=staged.locator,
        )
    if plan.iso.sha256 and staged.sha256 != plan.iso.sha256:
        raise ProviderError(
            f"the appliance ISO's SHA-256 is {staged.sha256}, the plan says {plan.iso.sha256}",
            provider=plan.platform.provider,
            resource=staged.locator,
        )
    if cached is None:
        journal.cache_digest(path, staged.sha256)
    return Outcome(
        {"staged": staged.to_record(), "uploaded_bytes": staged.uploaded_bytes},
        [("media", plan.platform.provider, staged.locator, staged.to_record())],
    )


def ready_nodes(deployment: Deployment) -> tuple[ReadyNode, ...]:
    """The nodes as the hand-off sees them, leader first."""
    plan, journal = deployment.plan, deployment.journal
    nodes = []
    for spec in plan.node_specs():
        facts = journal.facts(spec.name)
        acquired = journal.step("acquire", spec.name)
        machine = (acquired.data.get("machine") or {}) if acquired else {}
        nodes.append(
            ReadyNode(
                name=spec.name,
                address=str(facts.get(Fact.ADDRESS) or spec.static_ip or ""),
                ssh_user=plan.cluster.node_account.username,
                host_key_fingerprint=facts.get(Fact.HOST_KEY_FINGERPRINT),
                machine_id=machine.get("id"),
                platform_ids={"provider": plan.platform.provider, **dict(machine.get("attributes", {}))},
                evidence=tuple(journal.evidence(spec.name)),
            )
        )
    leader = plan.handoff.leader
    if leader:
        nodes.sort(key=lambda n: n.name != leader)
    return tuple(nodes)


def handoff(deployment: Deployment, former: ClusterFormer) -> Outcome:
    """Run the hand-off; its sub-steps go through the deployment's step machinery (events, journal)."""
    plan = deployment.plan
    output_dir = plan.resolve_path(plan.handoff.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    def step(name: str, action: Any, node: str = GLOBAL, always: bool = False) -> dict[str, Any]:
        return deployment._step(name, node, lambda: Outcome(dict(action() or {})), always=always)

    context = HandoffContext(
        plan=plan,
        journal=deployment.journal,
        nodes=ready_nodes(deployment),
        output_dir=output_dir,
        log=deployment.log.bind(phase="handoff"),
        emit=lambda name, msg, data: deployment._emit(GLOBAL, "handoff", "progress", f"{name}: {msg}", **dict(data)),
        step=step,
        profile_defaults=_profile_defaults(deployment),
    )
    return Outcome({"result": former.form(context).to_dict()})


def _profile_defaults(deployment: Deployment) -> dict[str, str]:
    """Profile variables the deployment knows: the storage-pool disk every node names."""
    drive = storage_pool_drive(deployment.node_specs())
    return {STORAGE_POOL_VARIABLE: drive} if drive else {}


def handoff_result(data: Mapping[str, Any]) -> HandoffResult:
    """The hand-off's result back from its journal data."""
    result = dict(data.get("result", {}))
    return HandoffResult(
        kind=result.get("kind", "none"),
        cluster_state=result.get("cluster_state"),
        cluster_health=result.get("cluster_health"),
        endpoint=result.get("endpoint"),
        kubeconfig=Path(result["kubeconfig"]) if result.get("kubeconfig") else None,
        files=tuple(Path(p) for p in result.get("files", [])),
        details=result.get("details", {}),
    )


def stage_file(
    deployment: Deployment, file: MediaFile, progress: Callable[[int, int | None], None] | None = None
) -> StagedMedia:
    """Stage through the provider, journaling the locator first when the provider can tell it beforehand.

    Raises:
        PlanError: the provider stages nothing (the phase table's needs make this a bug, named plainly).
    """
    provider: Any = deployment.provider
    if isinstance(provider, MediaLocating):
        locator = provider.locate_media(file)
        intent = StagedMedia(file.role, locator, file.sha256 or "", file.size, 0, file.node)
        record = {**intent.to_record(), "pending": True}
        where = file.node or GLOBAL
        deployment.journal.add_resource("media", deployment.plan.platform.provider, where, locator, record)
    if not isinstance(provider, MediaStaging):
        raise PlanError([PlanIssue("platform.provider", "this provider cannot stage media")])
    staged: StagedMedia = provider.stage_media(file, progress)
    return staged


def progress_events(deployment: Deployment, node: str, phase: str) -> Callable[[int, int | None], None]:
    """A progress callback emitting ``progress`` events (bytes, total, MiB/s) at most twice a second."""
    started = time.monotonic()
    last = [0.0]

    def progress(done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.5 or (total is not None and done >= total):
            last[0] = now
            rate = done / 2**20 / max(now - started, 1e-6)
            deployment._emit(node, phase, "progress", bytes=done, total=total, rate_mib_s=round(rate, 1))

    return progress
