"""What each per-node phase does: observe the platform first, then act, and return an :class:`Outcome`.

Each function here is the ``act`` (or ``recheck``/``load``) of one entry of the phase table in
:mod:`palette_provision.phases`; that table, not this module, says which phases exist, in which order, with which
capabilities. A phase that produces something for later phases sets it on the :class:`NodeRun`; its ``load`` puts
it back from the journal when the phase is skipped as done.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from palette_provision import media as media_mod
from palette_provision._run import NodeRun, Outcome
from palette_provision.errors import OperatorActionNeeded, ProviderError, ReadinessError
from palette_provision.journal import Fact
from palette_provision.provider import (
    AddressDiscovery,
    AddressReporting,
    AllocatesMachines,
    BootDevice,
    BootDeviceControl,
    CreatesMachines,
    DeployState,
    DeployStatus,
    EnrollsMachines,
    ImageDeployment,
    InstallMethod,
    Lifecycle,
    Machine,
    MediaFile,
    MediaSlot,
    MediaStaging,
    Power,
    PowerHistory,
    PowerState,
    SeedDelivery,
    SeedFormat,
    SlotKind,
    StagedMedia,
    VirtualMedia,
)
from palette_provision.waiting import Backoff, wait_for

__all__ = ["StartOver", "assign_slots", "machine_record"]

#: Journal resource kinds the core records (``media`` and ``machine`` too, below).
INSERTION = "media_insertion"
BOOT_OVERRIDE = "boot_override"

_POWER_BACKOFF = Backoff(initial=1.0, maximum=15.0, jitter=0.5)


class StartOver(Exception):
    """Internal: the machine a node's done steps were about is gone; the node's chain runs again."""

    def __init__(self, gone: Machine) -> None:
        super().__init__(gone.name)
        self.gone = gone


def machine_record(machine: Machine, lifecycle: Lifecycle) -> dict[str, Any]:
    """A machine's journal record: what ``destroy`` needs, lifecycle included."""
    return {**machine.to_record(), "lifecycle": lifecycle.value}


# --------------------------------------------------------------------------------------------- stage_seed
def seed_format(run: NodeRun, method: InstallMethod) -> SeedFormat:
    """The seed's form: the provider's choice (``SeedDelivery``), else by install method."""
    if run.has(SeedDelivery):
        return run.cap(SeedDelivery).seed_format(run.node)
    return SeedFormat.USER_DATA if method is InstallMethod.DEPLOY_IMAGE else SeedFormat.CIDATA_ISO


def stage_seed(run: NodeRun) -> Outcome:
    """Render the node's seed once (reused on resume: same host key), and stage it unless it is text."""
    from palette_provision import seed as seed_mod

    fmt = seed_format(run, run.deployment.install_method)
    path = run.deployment.seed_path(run.node, fmt)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fingerprint = run.journal.fact(run.node.name, Fact.HOST_KEY_FINGERPRINT)
    if path.is_file() and fingerprint is not None:
        # An interrupted run already rendered this seed (written atomically, then its key recorded): reuse it, so
        # the host key the journal pins and the seed on the platform stay the same.
        data = path.read_bytes()
    else:
        host_key = seed_mod.HostKey.generate()
        report = None
        if run.node.address is None and run.has(AddressReporting):
            report = run.cap(AddressReporting).address_report_url(run.node)
        data = seed_mod.build_seed(run.plan, run.node, host_key, fmt, address_report_url=report)
        seed_mod.write_seed(path, data)
        fingerprint = host_key.fingerprint
        run.journal.set_fact(run.node.name, Fact.HOST_KEY_PUBLIC, host_key.public_line)
        run.journal.set_fact(run.node.name, Fact.HOST_KEY_FINGERPRINT, fingerprint)
    sha = media_mod.sha256_bytes(data)
    local = StagedMedia("seed", str(path), sha, len(data), node=run.node.name)
    if fmt is SeedFormat.USER_DATA or not run.has(MediaStaging):
        run.seed, run.seed_format = local, fmt
        return Outcome({"staged": local.to_record(), "format": fmt.value, "host_key_fingerprint": fingerprint})
    name = f"{run.node.name}-seed{path.suffix}"  # palette-1-seed.iso, palette-1-seed.img
    file = MediaFile(role="seed", local_path=path, size=len(data), name=name, sha256=sha, node=run.node.name)
    staged = run.stage(file)
    run.seed, run.seed_format = staged, fmt
    return Outcome(
        {"staged": staged.to_record(), "format": fmt.value, "host_key_fingerprint": fingerprint},
        [("media", run.provider_name, staged.locator, staged.to_record())],
    )


def load_seed(run: NodeRun, data: Mapping[str, Any]) -> None:
    """Put a done ``stage_seed``'s result back on the run."""
    run.seed = StagedMedia.from_record(data["staged"])
    run.seed_format = SeedFormat(data.get("format", SeedFormat.CIDATA_ISO.value))


# --------------------------------------------------------------------------------------------- acquire
def _recorded_machine(run: NodeRun) -> Machine | None:
    previous = run.journal.step("acquire", run.node.name)
    if previous is not None and "machine" in previous.data:
        return Machine.from_record(previous.data["machine"])
    for res in reversed(run.journal.resources(live_only=True)):
        if res.kind == "machine" and res.node == run.node.name:
            return Machine.from_record(res.data)
    return None


def acquire(run: NodeRun) -> Outcome:
    """Find the node's machine (given the journal's record), else create, allocate or enroll it."""
    record = _recorded_machine(run)
    lifecycle = run.lifecycle
    if lifecycle is Lifecycle.ENROLLED:
        machine = run.cap(EnrollsMachines).enroll_machine(run.node, record)
        run.machine_ = _same_machine(record, machine)
        return _acquired(run, "enrolled", new=record is None or record.id != machine.id)
    source: CreatesMachines | AllocatesMachines = (
        run.cap(CreatesMachines) if lifecycle is Lifecycle.CREATED else run.cap(AllocatesMachines)
    )
    found = source.find_machine(run.node, record)
    if found is not None:
        run.machine_ = _same_machine(record, found)
        # Adopted: found on the platform without a journal record of it (the run that made it died first).
        return _acquired(run, "found", new=record is None, adopted=record is None)
    if isinstance(source, AllocatesMachines) and lifecycle is Lifecycle.ALLOCATED:
        run.machine_ = source.allocate_machine(run.node)
        return _acquired(run, "allocated", new=True)
    # The media staged so far (the ISO may still be uploading): a provider may attach them at creation.
    hint = [m for m in (run.iso_if_staged(), run.seed) if m is not None]
    run.machine_ = run.cap(CreatesMachines).create_machine(run.node, hint)
    return _acquired(run, "created", new=True)


def _acquired(run: NodeRun, how: str, *, new: bool, adopted: bool = False) -> Outcome:
    record = machine_record(run.machine, run.lifecycle)
    data: dict[str, Any] = {"machine": run.machine.to_record(), "how": how, "lifecycle": run.lifecycle.value}
    if adopted:
        data["adopted"] = True
    resources = [("machine", run.provider_name, run.machine.id, record)] if new else []
    return Outcome(data, resources)  # type: ignore[arg-type]


def recheck_machine(run: NodeRun, data: dict[str, Any]) -> dict[str, Any] | None:
    """A done ``acquire``: its data if the recorded machine is still there.

    Raises:
        StartOver: a created or allocated machine is gone (or another one carries its name): every later step
            was about it.
    """
    recorded = Machine.from_record(data["machine"])
    if run.lifecycle is Lifecycle.ENROLLED:
        return data  # it exists by definition; the BMC is looked at by the steps that use it
    source: Any = run.cap(CreatesMachines) if run.lifecycle is Lifecycle.CREATED else run.cap(AllocatesMachines)
    found = source.find_machine(run.node, recorded)
    if found is None or found.id != recorded.id:
        raise StartOver(recorded)
    return {**data, "machine": _same_machine(recorded, found).to_record()}


def load_machine(run: NodeRun, data: Mapping[str, Any]) -> None:
    """Put a done ``acquire``'s machine back on the run."""
    run.machine_ = Machine.from_record(data["machine"])
    run.result.machine_id = run.machine_.id


def _same_machine(recorded: Machine | None, found: Machine) -> Machine:
    """``found``, keeping attributes recorded for this very machine unless observed anew.

    A provider may answer a re-run from a cheap listing: the vSphere one leaves out the MAC, which it would have to
    read every device for.
    """
    if recorded is None or recorded.id != found.id:
        return found
    return Machine(found.node, found.id, found.name, {**recorded.attributes, **found.attributes})


# --------------------------------------------------------------------------------------------- media and boot
def assign_slots(
    slots: Sequence[MediaSlot], seed_format: SeedFormat, machine: str
) -> tuple[MediaSlot | None, MediaSlot | None, MediaSlot]:
    """Where the ISO and the seed go: ``(iso slot or None when preinserted, preinserted ISO slot or None, seed
    slot)``; the seed slot may itself be an operator's (``preinserted == "seed"``).

    The ISO takes the slot an operator filled with it, else the first CD; a ``cidata`` ISO seed the slot an
    operator fills with it, else the next CD; a ``cidata`` disk image the first removable disk.

    Raises:
        ProviderError: the machine has no slot for one of them, naming what is missing.
    """
    pre = next((s for s in slots if s.preinserted == "appliance-iso"), None)
    operator_seed = next((s for s in slots if s.preinserted == "seed"), None)
    free_cds = [s for s in slots if s.kind is SlotKind.CD and s.preinserted is None]
    disks = [s for s in slots if s.kind is SlotKind.REMOVABLE_DISK and s.preinserted is None]
    iso_slot = None
    if pre is None:
        if not free_cds:
            raise ProviderError(f"{machine} has no free CD slot for the appliance ISO", resource=machine)
        iso_slot = free_cds.pop(0)
    if operator_seed is not None:
        return iso_slot, pre, operator_seed
    pool = free_cds if seed_format is SeedFormat.CIDATA_ISO else disks
    if not pool:
        kind = "CD" if seed_format is SeedFormat.CIDATA_ISO else "removable-disk"
        raise ProviderError(f"{machine} has no free {kind} slot for the {seed_format.value} seed", resource=machine)
    return iso_slot, pre, pool[0]


def _insertion_id(machine: Machine, slot: MediaSlot) -> str:
    return f"{machine.id}/{slot}"


def insert_media(run: NodeRun) -> Outcome:
    """Insert the ISO (unless an operator did) and the seed (unless an operator must); each insertion journaled
    before it is made."""
    vm, machine = run.cap(VirtualMedia), run.machine
    if run.seed is None or run.seed_format is None:
        raise ProviderError(f"{run.node.name} has no staged seed", resource=run.node.name)
    iso_slot, pre, seed_slot = assign_slots(vm.media_slots(machine), run.seed_format, machine.name)
    if seed_slot.preinserted == "seed":
        _hand_seed_to_operator(run, iso_slot is None)
    wanted: dict[MediaSlot, StagedMedia] = {} if seed_slot.preinserted else {seed_slot: run.seed}
    if iso_slot is not None:
        wanted[iso_slot] = run.iso()
    resources = []
    for slot, staged in sorted(wanted.items()):
        record = {"machine": machine_record(machine, run.lifecycle), "slot": str(slot), "kind": slot.kind.value,
                  "index": slot.index, "locator": staged.locator}
        run.journal.add_resource(INSERTION, run.provider_name, run.node.name, _insertion_id(machine, slot),
                                 {**record, "pending": True})
        resources.append((INSERTION, run.provider_name, _insertion_id(machine, slot), record))
    if wanted:
        vm.insert_media(machine, dict(sorted(wanted.items())))
    readable = [s for s in (pre, seed_slot if seed_slot.preinserted else None) if s is not None and s.readable]
    if readable:
        held = vm.inserted_media(machine)
        for slot in readable:
            if not held.get(slot):
                raise ProviderError(f"{machine.name}: slot {slot} should hold the {slot.preinserted} an operator "
                                    "inserted, and is empty", resource=machine.name)
    data: dict[str, Any] = {"slots": {str(s): m.locator for s, m in sorted(wanted.items())}}
    operator = [str(s) for s in (pre, seed_slot) if s is not None and s.preinserted]
    if operator:
        data["operator_attached"] = operator
    return Outcome(data, resources)  # type: ignore[arg-type]


def _hand_seed_to_operator(run: NodeRun, iso_too: bool) -> None:
    """The platform cannot insert the seed: stop the node once, saying where its seed is; go on when told before.

    The fact is written before the error is raised, so a run killed in between tells the operator again rather than
    booting a machine whose seed nobody was shown.
    """
    node = run.node.name
    if run.journal.fact(node, Fact.SEED_HANDED_OVER_AT) is not None:
        run.log.info("seed_attached_by_operator", node=node)
        return
    fmt = run.seed_format or SeedFormat.CIDATA_ISO
    path = run.deployment.seed_path(run.node, fmt)
    what = "the appliance ISO and this node's seed" if iso_too else "this node's seed"
    shape = "a cidata ISO" if fmt is SeedFormat.CIDATA_ISO else "a cidata disk image"
    sha = run.seed.sha256 if run.seed is not None else media_mod.sha256_file(path)
    run.journal.set_fact(node, Fact.SEED_HANDED_OVER_AT, time.time())
    raise OperatorActionNeeded(
        f"{node}: attach {what} to the machine (the seed is {shape}, SHA-256 {sha}, at {path}: a second virtual CD "
        "or a USB stick written with it), then run apply again. The seed holds the node's private SSH host key: "
        "detach it once the node is installed",
        provider=run.provider_name, resource=node,
    )  # fmt: skip


def _override_record(run: NodeRun, device: BootDevice) -> dict[str, Any]:
    return {"machine": machine_record(run.machine, run.lifecycle), "device": device.value}


def _override(run: NodeRun, device: BootDevice) -> Outcome:
    machine = run.machine
    data = _override_record(run, device)
    run.journal.add_resource(BOOT_OVERRIDE, run.provider_name, run.node.name, f"{machine.id}/boot",
                             {**data, "pending": True})
    run.cap(BootDeviceControl).set_boot_device(machine, device, persistent=False)
    return Outcome({"device": device.value}, [(BOOT_OVERRIDE, run.provider_name, f"{machine.id}/boot", data)])


def boot_once_from_cd(run: NodeRun) -> Outcome:
    """Make the next boot use the CD (one-time where the platform has it); recorded for ``destroy``."""
    return _override(run, BootDevice.CD)


# --------------------------------------------------------------------------------------------- power and install
def power_on(run: NodeRun) -> Outcome:
    """Power on, unless on already or the platform's history says an interrupted run already did (installed)."""
    power, machine, node = run.cap(Power), run.machine, run.node.name
    if power.power_state(machine) == PowerState.ON:
        return Outcome({"already_on": True})
    requested = run.journal.fact(node, Fact.POWER_ON_REQUESTED_AT)
    if requested is not None and run.has(PowerHistory):
        last = run.cap(PowerHistory).last_power_on(machine)
        if last is not None and last >= float(requested) - 1.0:
            # Powered on by an earlier, interrupted run and already off again: the install ran. Powering on now
            # would start a second install.
            return Outcome({"powered_on_at": last, "resumed": True})
    run.journal.set_fact(node, Fact.POWER_ON_REQUESTED_AT, time.time())
    power.power_on(machine)
    return Outcome({"powered_on_at": time.time()})


def await_install(run: NodeRun) -> Outcome:
    """The seed asks the installer to power the machine off when done: that power-off is the signal."""
    power, machine = run.cap(Power), run.machine
    wait_for(
        lambda: power.power_state(machine),
        what=f"the installer on {machine.name} to finish and power it off",
        until=lambda s: s == PowerState.OFF,
        timeout=run.plan.timeouts.install,
        backoff=_POWER_BACKOFF,
        errors_for=run.plan.timeouts.unreachable,
        log=run.log,
    )
    return Outcome({"installed_at": time.time()})


def _forget_seed(run: NodeRun) -> None:
    """The seed holds the node's private host key: once installed, it is kept nowhere else."""
    seed = run.seed
    if seed is not None and run.has(MediaStaging) and run.seed_format is not SeedFormat.USER_DATA:
        run.cap(MediaStaging).unstage_media(seed)
        run.journal.mark_destroyed("media", seed.locator)
    for fmt in SeedFormat:
        run.deployment.seed_path(run.node, fmt).unlink(missing_ok=True)


def boot_from_disk(run: NodeRun) -> Outcome:
    """Eject what we inserted (while powered off), remove the seed, boot from disk, power on."""
    machine = run.machine
    ours = [r for r in run.journal.resources(live_only=True)
            if r.kind == INSERTION and r.data.get("machine", {}).get("id") == machine.id]
    slots = [MediaSlot(SlotKind(r.data["kind"]), int(r.data["index"])) for r in ours]
    power = run.cap(Power)
    if not ours and power.power_state(machine) == PowerState.ON:
        # An interrupted run got this far: everything ejected, then powered on (await_install left the machine off).
        # Setting the boot device again would be a second override on a running machine.
        _forget_seed(run)
        disk = _override_record(run, BootDevice.DISK)
        return Outcome({"booted_from_disk_at": time.time(), "ejected": [], "resumed": True},
                       [(BOOT_OVERRIDE, run.provider_name, f"{machine.id}/boot", disk)])
    # Ejected while powered off: detaching from a running VM fails on some vSphere versions (peer lessons).
    run.cap(VirtualMedia).eject_media(machine, slots)
    for res in ours:
        run.journal.mark_destroyed(INSERTION, res.external_id)
    _forget_seed(run)
    outcome = _override(run, BootDevice.DISK)
    if power.power_state(machine) != PowerState.ON:
        power.power_on(machine)
    outcome.data = {"booted_from_disk_at": time.time(), "ejected": [str(s) for s in slots]}
    return outcome


# --------------------------------------------------------------------------------------------- image deployment
def deploy_image(run: NodeRun) -> Outcome:
    """Start the image deployment with the seed as user-data (the provider skips one that runs or is done)."""
    if run.seed is None:
        raise ProviderError(f"{run.node.name} has no rendered seed", resource=run.node.name)
    path = run.deployment.seed_path(run.node, SeedFormat.USER_DATA)
    run.cap(ImageDeployment).deploy_image(run.machine, run.node, path.read_bytes())
    return Outcome({"deploy_requested_at": time.time()})


def await_deployed(run: NodeRun) -> Outcome:
    """Wait for the platform to report the deployment done; its failure states end the wait at once."""
    images, machine = run.cap(ImageDeployment), run.machine
    status: DeployStatus = wait_for(
        lambda: images.deploy_status(machine),
        what=f"{machine.name} to be deployed",
        until=lambda s: s.state is DeployState.DEPLOYED,
        failed=lambda s: f"the platform reports {s}" if s.state is DeployState.FAILED else None,
        timeout=run.plan.timeouts.install,
        backoff=_POWER_BACKOFF,
        errors_for=run.plan.timeouts.unreachable,
        log=run.log,
    )
    _forget_seed(run)
    return Outcome({"deployed_at": time.time(), "platform_state": str(status)})


# --------------------------------------------------------------------------------------------- readiness
def _address_probe(run: NodeRun) -> Any:
    node, machine = run.node, run.machine

    def probe() -> str | None:
        address = None
        if run.has(AddressDiscovery):
            address = run.cap(AddressDiscovery).discover_address(machine, node)
        # Where it came from, for the report: the provider's discovery ("platform", or "node" for a provider whose
        # discovery is the node's own report, see AddressDiscovery), else the plan.
        source = str(getattr(run.provider, "address_source", "platform")) if address else "plan"
        if run.has(Power) and run.cap(Power).power_state(machine) == PowerState.OFF:
            # Powered off again after booting from disk: the installer ran a second time (media still inserted,
            # or a BMC that ignored the one-time boot). That is a failure, not progress.
            raise ReadinessError(node.name, "address", "the node powered off again: a second install ran")
        address = address or node.static_ip
        if address:
            run.journal.set_fact(node.name, Fact.ADDRESS, address)
            run.journal.set_fact(node.name, Fact.ADDRESS_SOURCE, source)
        return address

    return probe


def await_ready(run: NodeRun) -> Outcome:
    """Climb the readiness ladder: address, SSH banner, pinned host key, session, Local API."""
    from palette_provision import readiness

    plan, node = run.plan, run.node
    account = plan.cluster.node_account
    needs_api = plan.readiness.local_api
    if needs_api is None:
        needs_api = plan.handoff.kind == "palette-local-api"
    target = readiness.ReadinessTarget(
        node=node.name,
        address=_address_probe(run),
        username=account.username,
        private_key=account.ssh_private_key,
        pinned_host_key=run.journal.fact(node.name, Fact.HOST_KEY_PUBLIC),
        trust_on_first_use=plan.readiness.host_key == "trust-on-first-use",
        local_api_port=plan.handoff.local_api_port if needs_api else None,
        deadline_s=plan.timeouts.ready,
        ssh=plan.readiness.ssh,
    )
    result = readiness.climb(
        target,
        journal=run.journal,
        on_rung=lambda rung: run.emit("await_ready", "progress", f"rung {rung.name} reached"),
    )
    return Outcome({"rungs": [r.name for r in result.rungs], "address": result.address})
