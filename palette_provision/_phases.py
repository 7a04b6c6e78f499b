"""How each phase observes and acts: the pipeline's phase implementations.

:class:`PhaseActions` is mixed into :class:`~palette_provision.pipeline.Deployment`, which owns the orchestration
(fan-out, journaled steps, dry run, destroy); here each phase first observes the platform and only then acts, and
returns an outcome (journal data and created resources) for the step machinery to record.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from palette_provision import media as media_mod
from palette_provision.errors import ConfigurationError, ProviderError, ReadinessError, WaitFailed, WaitTimeout
from palette_provision.handoff.base import ClusterFormer, HandoffContext, HandoffResult, ReadyNode
from palette_provision.journal import GLOBAL, Journal
from palette_provision.plan import DeploymentPlan, NodeSpec
from palette_provision.provider import (
    AddressDiscovery,
    BootMedia,
    Machine,
    MediaFile,
    MediaLocating,
    MediaStaging,
    PowerHistory,
    PowerState,
    StagedMedia,
)
from palette_provision.report import Report
from palette_provision.steps import NodeStep, NodeStepContext
from palette_provision.waiting import Backoff, wait_for

__all__ = ["ACTIONS", "Outcome", "PhaseActions", "StartOver"]

ACTIONS = {
    "preflight": "check the plan against the platform (log in, resolve objects, capacity, name clashes)",
    "stage_media": "stage the appliance ISO (skipped when an identical copy is already there)",
    "stage_seed": "render the node's seed (host key, account, network) and stage it",
    "provision": "create the machine (or adopt the one the journal recorded)",
    "attach_media": "attach CD 1 = appliance ISO, CD 2 = seed; boot once from CD",
    "power_on": "power the machine on",
    "await_install": "wait for the installer to finish and power the machine off",
    "boot_from_disk": "detach the media, remove the seed, power on from disk",
    "await_ready": "climb the readiness ladder (address, SSH banner, host key, session, Local API)",
    "handoff": "hand off to cluster formation",
}


@dataclass
class Outcome:
    data: dict[str, Any] = field(default_factory=dict)
    resources: list[tuple[str, str, str, Mapping[str, Any]]] = field(default_factory=list)


class PhaseActions:
    """The phases' observe-then-act implementations (a mixin of ``Deployment``)."""

    plan: DeploymentPlan
    state_dir: Path
    log: Any
    _former: ClusterFormer | None

    if TYPE_CHECKING:  # provided by Deployment

        @property
        def journal(self) -> Journal: ...

        @property
        def provider(self) -> Any: ...

        def _emit(self, node: str, phase: str, status: Any, message: str = "", **data: Any) -> None: ...

        def _has(self, capability: type) -> bool: ...

        def _node_phase_names(self) -> list[tuple[str, str]]: ...

    def _preflight(self) -> Outcome:
        iso_path = self._local_iso_path(check_only=True)
        if iso_path is not None and not iso_path.is_file():
            raise ConfigurationError(f"the appliance ISO {iso_path} does not exist", field="iso.source")
        if self.plan.content is not None and not self.plan.resolve_path(self.plan.content.path).is_file():
            raise ConfigurationError(
                f"the content bundle {self.plan.content.path} does not exist", field="content.path"
            )
        self.provider.preflight(self.plan)
        return Outcome({"provider": self.plan.platform.provider})

    def _local_iso_path(self, *, check_only: bool = False) -> Path | None:
        if self.plan.iso.is_url:
            if check_only:
                return None
            return media_mod.fetch_iso(self.plan.iso, self.state_dir / "media", journal=self.journal)
        return self.plan.resolve_path(self.plan.iso.source)

    def _stage_iso(self) -> Outcome:
        path = self._local_iso_path()
        assert path is not None
        known = self.plan.iso.sha256 or self.journal.cached_digest(path)
        file = MediaFile(role="appliance-iso", local_path=path, size=path.stat().st_size, name=path.name, sha256=known)
        if not self._has(MediaStaging):
            staged = StagedMedia("appliance-iso", str(path), known or "", file.size)
            return Outcome({"staged": staged.to_record()})
        staged = self._stage(file, self._progress(GLOBAL, "stage_media"))
        if self.plan.iso.sha256 and staged.sha256 != self.plan.iso.sha256:
            raise ProviderError(
                f"the appliance ISO's SHA-256 is {staged.sha256}, the plan says {self.plan.iso.sha256}",
                provider=self.plan.platform.provider,
                resource=staged.locator,
            )
        if known is None:
            self.journal.cache_digest(path, staged.sha256)
        return Outcome(
            {"staged": staged.to_record(), "uploaded_bytes": staged.uploaded_bytes},
            [("media", self.plan.platform.provider, staged.locator, staged.to_record())],
        )

    def _stage(self, file: MediaFile, progress: Callable[[int, int | None], None] | None) -> StagedMedia:
        """Stage through the provider, journaling the locator first when the provider can tell it beforehand."""
        if self._has(MediaLocating):
            locator = self.provider.locate_media(file)
            intent = StagedMedia(file.role, locator, file.sha256 or "", file.size, 0, file.node)
            self.journal.add_resource(
                "media",
                self.plan.platform.provider,
                file.node or GLOBAL,
                locator,
                {**intent.to_record(), "pending": True},
            )
        staged: StagedMedia = self.provider.stage_media(file, progress)
        return staged

    def _progress(self, node: str, phase: str) -> Callable[[int, int | None], None]:
        """A progress callback emitting ``progress`` events (bytes, total, MiB/s) at most twice a second."""
        started = time.monotonic()
        last = [0.0]

        def progress(done: int, total: int | None) -> None:
            now = time.monotonic()
            if now - last[0] >= 0.5 or (total is not None and done >= total):
                last[0] = now
                rate = done / 2**20 / max(now - started, 1e-6)
                self._emit(node, phase, "progress", bytes=done, total=total, rate_mib_s=round(rate, 1))

        return progress

    def _user_action(self, step: NodeStep, node: NodeSpec, machine: Callable[[], Machine]) -> Callable[[], Outcome]:
        def action() -> Outcome:
            context = NodeStepContext(
                plan=self.plan,
                node=node,
                machine=machine(),
                facts=self.journal.facts(node.name),
                log=self.log.bind(node=node.name, phase=step.name),
            )
            return Outcome(dict(step.run(context) or {}))

        return action

    def _seed_path(self, node: NodeSpec) -> Path:
        return self.state_dir / "seeds" / f"{node.name}.iso"

    def _stage_seed(self, node: NodeSpec) -> Outcome:
        from palette_provision import seed as seed_mod

        path = self._seed_path(node)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fingerprint = self.journal.fact(node.name, "host_key_fingerprint")
        if path.is_file() and fingerprint is not None:
            # An interrupted run already rendered this seed (written atomically, then its key recorded): reuse
            # it, so the host key the journal pins and the seed on the platform stay the same.
            data = path.read_bytes()
        else:
            host_key = seed_mod.HostKey.generate()
            data = seed_mod.build_seed_iso(self.plan, node, host_key)
            seed_mod.write_seed(path, data)
            fingerprint = host_key.fingerprint
            self.journal.set_fact(node.name, "host_key_public", host_key.public_line)
            self.journal.set_fact(node.name, "host_key_fingerprint", fingerprint)
        sha = media_mod.sha256_bytes(data)
        file = MediaFile(
            role="seed", local_path=path, size=len(data), name=f"{node.name}-seed.iso", sha256=sha, node=node.name
        )
        if not self._has(MediaStaging):
            staged = StagedMedia("seed", str(path), sha, len(data), node=node.name)
            return Outcome({"staged": staged.to_record()})
        staged = self._stage(file, None)
        return Outcome(
            {"staged": staged.to_record(), "host_key_fingerprint": fingerprint},
            [("media", self.plan.platform.provider, staged.locator, staged.to_record())],
        )

    def _provision(self, node: NodeSpec, iso: StagedMedia, seed: StagedMedia) -> Outcome:
        existing = self.provider.find_machine(node)
        previous = self.journal.step("provision", node.name)
        if existing is not None:
            before = Machine.from_record(previous.data["machine"]) if previous and "machine" in previous.data else None
            # Adopted: found on the platform without a journal record of it (the run that made it died first).
            return Outcome({"machine": _same_machine(before, existing).to_record(), "adopted": before is None})
        machine = self.provider.create_machine(node, [iso, seed])
        return Outcome(
            {"machine": machine.to_record(), "created": True},
            [("machine", self.plan.platform.provider, machine.id, machine.to_record())],
        )

    def _recheck(self, node: NodeSpec, data: dict[str, Any]) -> dict[str, Any] | None:
        """A done ``provision``: its data if the recorded machine is still there.

        Raises:
            StartOver: the machine is gone (or another one carries its name): every later step was about it.
        """
        recorded = Machine.from_record(data["machine"])
        found = self.provider.find_machine(node)
        if found is None or found.id != recorded.id:
            raise StartOver(recorded)
        return {**data, "machine": _same_machine(recorded, found).to_record()}

    def _start_over(self, node: NodeSpec, gone: Machine) -> None:
        """Forget every per-node step of ``node`` (and the gone machine) so its chain runs again from the seed.

        From the seed, not from the machine: once the node had installed, its seed was deleted from the platform
        and locally, and a new machine needs one (with a new host key, recorded as the seed is rendered).
        """
        self._emit(node.name, "provision", "progress", f"the recorded machine {gone.name} is gone; starting over")
        for phase, _ in self._node_phase_names():
            self.journal.reset_step(phase, node.name)
        self.journal.mark_destroyed("machine", gone.id)
        self.journal.set_fact(node.name, "power_on_requested_at", None)

    def _attach(self, machine: Machine, iso: StagedMedia, seed: StagedMedia) -> Outcome:
        if self._has(BootMedia):
            self.provider.attach_media(machine, [iso, seed])
        return Outcome()

    def _wait_power(self, machine: Machine, want: PowerState, what: str, timeout: float) -> PowerState:
        state: PowerState = wait_for(
            lambda: self.provider.power_state(machine),
            what=what,
            until=lambda s: s == want,
            timeout=timeout,
            backoff=Backoff(initial=1.0, maximum=15.0, jitter=0.5),
        )
        return state

    def _power_on(self, machine: Machine) -> Outcome:
        node = machine.node
        state = self.provider.power_state(machine)
        if state == PowerState.ON:
            return Outcome({"already_on": True})
        requested = self.journal.fact(node, "power_on_requested_at")
        if requested is not None and self._has(PowerHistory):
            last = self.provider.last_power_on(machine)
            if last is not None and last >= float(requested) - 1.0:
                # Powered on by an earlier, interrupted run and already off again: the install ran. Powering on
                # now would start a second install.
                return Outcome({"powered_on_at": last, "resumed": True})
        self.journal.set_fact(node, "power_on_requested_at", time.time())
        self.provider.power_on(machine)
        return Outcome({"powered_on_at": time.time()})

    def _await_install(self, machine: Machine) -> Outcome:
        # The seed asks the installer to power the machine off when done: that power-off is the signal.
        self._wait_power(
            machine,
            PowerState.OFF,
            f"the installer on {machine.name} to finish and power it off",
            self.plan.timeouts.install,
        )
        return Outcome({"installed_at": time.time()})

    def _boot_from_disk(self, node: NodeSpec, machine: Machine, seed: StagedMedia) -> Outcome:
        # Detach while powered off: detaching from a running VM fails on some vSphere versions (peer lessons).
        if self._has(BootMedia):
            self.provider.detach_media(machine)
        if self._has(MediaStaging) and seed.locator != str(self._seed_path(node)):
            self.provider.unstage_media(seed)
            self.journal.mark_destroyed("media", seed.locator)
        # The seed holds the node's private host key: once installed, it is kept nowhere else.
        self._seed_path(node).unlink(missing_ok=True)
        if self.provider.power_state(machine) != PowerState.ON:
            self.provider.power_on(machine)
        return Outcome({"booted_from_disk_at": time.time()})

    def _address_probe(self, node: NodeSpec, machine: Machine) -> Callable[[], str | None]:
        def probe() -> str | None:
            address = None
            if self._has(AddressDiscovery):
                address = self.provider.discover_address(machine, node)
            if self.provider.power_state(machine) == PowerState.OFF:
                # Powered off again after booting from disk: the installer ran a second time (media still
                # attached, or a BMC that ignored the one-time boot). That is a failure, not progress.
                raise ReadinessError(node.name, "address", "the node powered off again: a second install ran")
            address = address or node.static_ip
            if address:
                self.journal.set_fact(node.name, "address", address)
            return address

        return probe

    def _await_ready(self, node: NodeSpec, machine: Machine) -> Outcome:
        plan = self.plan
        account = plan.cluster.node_account
        needs_api = plan.readiness.local_api
        if needs_api is None:
            needs_api = plan.handoff.kind == "palette-local-api"
        from palette_provision import readiness

        target = readiness.ReadinessTarget(
            node=node.name,
            address=self._address_probe(node, machine),
            username=account.username,
            private_key=account.ssh_private_key,
            pinned_host_key=self.journal.fact(node.name, "host_key_public"),
            trust_on_first_use=plan.readiness.host_key == "trust-on-first-use",
            local_api_port=plan.handoff.local_api_port if needs_api else None,
            deadline_s=plan.timeouts.ready,
            ssh=plan.readiness.ssh,
        )
        result = readiness.climb(
            target,
            journal=self.journal,
            on_rung=lambda rung: self._emit(node.name, "await_ready", "progress", f"rung {rung.name} reached"),
        )
        return Outcome({"rungs": [r.name for r in result.rungs], "address": result.address})

    # ----------------------------------------------------------------------------------------- hand-off
    def _ready_nodes(self) -> tuple[ReadyNode, ...]:
        nodes = []
        for spec in self.plan.node_specs():
            facts = self.journal.facts(spec.name)
            prov = self.journal.step("provision", spec.name)
            machine = (prov.data.get("machine") or {}) if prov else {}
            nodes.append(
                ReadyNode(
                    name=spec.name,
                    address=str(facts.get("address") or spec.static_ip or ""),
                    ssh_user=self.plan.cluster.node_account.username,
                    host_key_fingerprint=facts.get("host_key_fingerprint"),
                    machine_id=machine.get("id"),
                    platform_ids={"provider": self.plan.platform.provider, **dict(machine.get("attributes", {}))},
                    evidence=tuple(self.journal.evidence(spec.name)),
                )
            )
        leader = self.plan.handoff.leader
        nodes.sort(key=lambda n: n.name != leader) if leader else None
        return tuple(nodes)

    def _handoff(self, report: Report) -> Outcome:
        former = self._former
        if former is None:
            from palette_provision.handoff import former_for

            former = former_for(self.plan)
        output_dir = self.plan.resolve_path(self.plan.handoff.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        context = HandoffContext(
            plan=self.plan,
            journal=self.journal,
            nodes=self._ready_nodes(),
            output_dir=output_dir,
            log=self.log.bind(phase="handoff"),
            emit=lambda step, msg, data: self._emit(GLOBAL, "handoff", "progress", f"{step}: {msg}", **dict(data)),
        )
        result = former.form(context)
        return Outcome({"result": result.to_dict()})


class StartOver(Exception):
    """Internal: the machine a node's done steps were about is gone; the node's chain runs again."""

    def __init__(self, gone: Machine) -> None:
        super().__init__(gone.name)
        self.gone = gone


def _same_machine(recorded: Machine | None, found: Machine) -> Machine:
    """``found``, keeping attributes recorded for this very machine unless observed anew.

    A provider may answer a re-run from a cheap listing: the vSphere one leaves out the MAC, which it would have to
    read every device for.
    """
    if recorded is None or recorded.id != found.id:
        return found
    return Machine(found.node, found.id, found.name, {**recorded.attributes, **found.attributes})


def _last_state(exc: BaseException) -> str | None:
    if isinstance(exc, WaitTimeout) and exc.last_state is not None:
        return str(getattr(exc.last_state, "value", exc.last_state))
    if isinstance(exc, WaitFailed):
        return str(getattr(exc.state, "value", exc.state))
    if isinstance(exc, ReadinessError):
        return f"rung {exc.rung}"
    return None


def _handoff_from_data(data: Mapping[str, Any]) -> HandoffResult:
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
