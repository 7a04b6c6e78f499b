"""``destroy``: undo what the journal recorded, newest first, by what each resource is.

=====================  =========================================================================================
resource               undone by
=====================  =========================================================================================
machine, created       power off, ``delete_machine`` (its media insertions and boot overrides go with it)
machine, allocated     power off (if the provider has ``Power``), ``release_machine``
machine, enrolled      power off: the machine is the owner's again once its media and boot override are undone
media insertion        ``eject_media`` on a machine we did not create (never what an operator inserted)
boot override          ``clear_boot_override`` on a machine we did not create
media                  ``unstage_media`` (the appliance ISO only with ``purge_media``)
=====================  =========================================================================================

A machine is powered off once, before the first of its resources is undone. Each resource is marked destroyed as
soon as it is undone, so a destroy that fails half way continues where it stopped when run again.

``destroy --seeds-only`` (:func:`destroy_seeds`) removes only the seeds a node has not yet consumed: a seed holds
the node's private SSH host key and its account's password hash, and it stays on shared storage (a datastore, the
media server) until the node installs. Those nodes then start again from a new seed on the next ``apply`` (a new
host key, a reinstall): keeping their later steps would pin a host key no seed carries any more.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from palette_provision._phases import BOOT_OVERRIDE, INSERTION
from palette_provision.journal import ResourceRecord
from palette_provision.provider import (
    AllocatesMachines,
    BootDeviceControl,
    CreatesMachines,
    Lifecycle,
    Machine,
    MediaSlot,
    MediaStaging,
    Power,
    SeedFormat,
    SlotKind,
    StagedMedia,
    VirtualMedia,
)

if TYPE_CHECKING:
    from palette_provision.pipeline import Deployment

__all__ = ["destroy", "destroy_seeds"]


def destroy(deployment: Deployment, *, purge_media: bool = False) -> list[dict[str, Any]]:
    """Undo the journal's live resources (see the module docstring); return one entry per resource.

    Raises:
        ProviderError: an undo failed; what was undone before it stays recorded, so a re-run continues.
    """
    journal = deployment.journal
    _adopt_unrecorded_machines(deployment)
    undo = _Undo(deployment)
    done: list[dict[str, Any]] = []
    for res in reversed(journal.resources(live_only=True)):
        entry: dict[str, Any] = {"kind": res.kind, "id": res.external_id, "node": res.node}
        entry["result"] = undo.resource(res, purge_media=purge_media)
        done.append(entry)
        if entry["result"] in ("kept", "unknown kind, left alone"):
            continue
        journal.mark_destroyed(res.kind, res.external_id)
        deployment._emit(res.node, "destroy", "done", entry["result"])
    for spec in deployment.plan.node_specs():
        for fmt in SeedFormat:
            deployment.seed_path(spec, fmt).unlink(missing_ok=True)
        # Everything known of the node was about the machine just undone: a reinstalled node has a new host key, a
        # new Local API certificate and may get a new address. A kept pin would fail the next apply.
        journal.forget_facts(spec.name)
    for rec in journal.steps():
        journal.reset_step(rec.phase, rec.node)
    return done


def destroy_seeds(deployment: Deployment) -> list[dict[str, Any]]:
    """Remove every seed still staged or on disk, of nodes that have not installed from it; reset those nodes.

    A node whose seed is inserted in its machine is powered off and the media we inserted ejected first (a
    platform may refuse to delete a file a running machine has open, and the node's install cannot go on without
    its seed anyway). Each node's steps and facts are then forgotten, so the next ``apply`` renders a new seed (a
    new host key) and reinstalls the node on the machine it already has.

    Returns one entry per node (``kind`` ``seed``, the locator as ``id``, ``result``).
    """
    journal = deployment.journal
    undo = _Undo(deployment)
    staged = [r for r in journal.resources(live_only=True) if r.kind == "media" and r.data.get("role") == "seed"]
    done: list[dict[str, Any]] = []
    for spec in deployment.plan.node_specs():
        node = spec.name
        seeds = [r for r in staged if r.node == node]
        local = [p for p in (deployment.seed_path(spec, fmt) for fmt in SeedFormat) if p.is_file()]
        if not seeds and not local:
            continue
        inserted = [r for r in journal.resources(live_only=True) if r.kind == INSERTION and r.node == node]
        if inserted and isinstance(undo.provider, VirtualMedia):
            machine = Machine.from_record(inserted[0].data.get("machine") or {})
            deployment._emit(node, "destroy", "started", f"power off {machine.name} and eject its media")
            undo.power_off(machine)
            slots = [MediaSlot(SlotKind(r.data["kind"]), int(r.data["index"])) for r in inserted]
            undo.provider.eject_media(machine, slots)
            for res in inserted:
                journal.mark_destroyed(INSERTION, res.external_id)
        for res in seeds:
            deployment._emit(node, "destroy", "started", f"remove the seed {res.external_id}")
            if isinstance(undo.provider, MediaStaging):
                undo.provider.unstage_media(StagedMedia.from_record(res.data))
            journal.mark_destroyed("media", res.external_id)
        for path in local:
            path.unlink(missing_ok=True)
        for rec in journal.steps():
            if rec.node == node:
                journal.reset_step(rec.phase, node)
        journal.forget_facts(node)
        where = seeds[0].external_id if seeds else "(local copy only)"
        done.append({"kind": "seed", "id": where, "node": node, "result": "deleted"})
        deployment._emit(node, "destroy", "done", "seed removed; the next apply reinstalls this node")
    return done


class _Undo:
    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment
        self.provider: Any = deployment.provider
        self.off: set[str] = set()

    def power_off(self, machine: Machine) -> None:
        if machine.id not in self.off and isinstance(self.provider, Power):
            self.provider.power_off(machine)
        self.off.add(machine.id)

    def resource(self, res: ResourceRecord, *, purge_media: bool) -> str:
        emit = self.deployment._emit
        if res.kind == "machine":
            machine = Machine.from_record(res.data)
            lifecycle = Lifecycle(res.data.get("lifecycle", Lifecycle.CREATED.value))
            emit(res.node, "destroy", "started", f"{_VERB[lifecycle]} machine {machine.name}")
            self.power_off(machine)
            if lifecycle is Lifecycle.CREATED and isinstance(self.provider, CreatesMachines):
                self.provider.delete_machine(machine)
            elif lifecycle is Lifecycle.ALLOCATED and isinstance(self.provider, AllocatesMachines):
                self.provider.release_machine(machine)
            return {Lifecycle.CREATED: "deleted", Lifecycle.ALLOCATED: "released", Lifecycle.ENROLLED: "restored"}[
                lifecycle
            ]
        if res.kind in (INSERTION, BOOT_OVERRIDE):
            record = res.data.get("machine") or {}
            if Lifecycle(record.get("lifecycle", Lifecycle.CREATED.value)) is Lifecycle.CREATED:
                return "removed with the machine"
            machine = Machine.from_record(record)
            self.power_off(machine)
            if res.kind == INSERTION and isinstance(self.provider, VirtualMedia):
                emit(res.node, "destroy", "started", f"eject slot {res.data.get('slot')} of {machine.name}")
                slot = MediaSlot(SlotKind(res.data["kind"]), int(res.data["index"]))
                self.provider.eject_media(machine, [slot])
                return "ejected"
            if res.kind == BOOT_OVERRIDE and isinstance(self.provider, BootDeviceControl):
                emit(res.node, "destroy", "started", f"clear the boot override of {machine.name}")
                self.provider.clear_boot_override(machine)
                return "cleared"
            return "left alone (the provider cannot undo it)"
        if res.kind == "media":
            staged = StagedMedia.from_record(res.data)
            if staged.role == "appliance-iso" and not purge_media:
                return "kept"
            emit(res.node, "destroy", "started", f"remove {staged.locator}")
            if isinstance(self.provider, MediaStaging):
                self.provider.unstage_media(staged)
            return "deleted"
        return "unknown kind, left alone"


_VERB = {Lifecycle.CREATED: "delete", Lifecycle.ALLOCATED: "release", Lifecycle.ENROLLED: "restore"}


def _adopt_unrecorded_machines(deployment: Deployment) -> None:
    """Record machines an acquire step made but did not live to record (killed between the call and the write).

    The one platform lookup of ``destroy``, and only for nodes whose ``acquire`` started without a machine record.
    """
    from palette_provision._phases import machine_record

    journal, provider = deployment.journal, deployment.provider
    recorded = {res.node for res in journal.resources() if res.kind == "machine"}
    lifecycle = Lifecycle(provider.lifecycle)
    source: Any = provider
    if lifecycle is Lifecycle.ENROLLED or not isinstance(source, (CreatesMachines, AllocatesMachines)):
        return
    for spec in deployment.plan.node_specs():
        if journal.step("acquire", spec.name) is None or spec.name in recorded:
            continue
        machine = source.find_machine(spec, None)
        if machine is not None:
            journal.add_resource(
                "machine", deployment.plan.platform.provider, spec.name, machine.id, machine_record(machine, lifecycle)
            )
