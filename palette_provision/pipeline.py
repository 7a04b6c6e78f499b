"""The deployment pipeline: ordered, observable, resumable phases with per-node fan-out.

::

    preflight ─▶ stage_media ─┬─▶ per node (thread pool, bounded by plan.concurrency):
                              │     stage_seed ─▶ provision ─▶ attach_media ─▶ power_on ─▶ await_install
                              │     ─▶ boot_from_disk ─▶ await_ready
                              └─▶ handoff (once every node is ready)

Every phase observes before it acts, and every step is journaled (see :mod:`palette_provision.journal`), so
``apply`` after any failure, Ctrl-C or SIGKILL resumes without repeating side effects. One node's failure is
reported with its phase and last state while the other nodes finish.

Example::

    plan = load_plan("plan.yaml")
    with Deployment(plan) as deployment:
        report = deployment.apply()
    print(report.to_dict())
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from palette_provision import media as media_mod
from palette_provision.errors import (
    ConfigurationError,
    PaletteProvisionError,
    PlanError,
    PlanIssue,
    ProviderError,
    ReadinessError,
    WaitFailed,
    WaitTimeout,
)
from palette_provision.handoff.base import ClusterFormer, HandoffContext, HandoffResult, ReadyNode
from palette_provision.journal import GLOBAL, Journal
from palette_provision.log import get_logger
from palette_provision.plan import DeploymentPlan, NodeSpec
from palette_provision.provider import (
    AddressDiscovery,
    BootMedia,
    Machine,
    Machines,
    MediaFile,
    MediaLocating,
    MediaStaging,
    Power,
    PowerHistory,
    PowerState,
    ProviderContext,
    StagedMedia,
)
from palette_provision.registry import create_provider
from palette_provision.report import Event, EventSink, NodeResult, PlannedAction, Report
from palette_provision.steps import NODE_PHASES, NodeStep, NodeStepContext, check_node_steps
from palette_provision.waiting import Backoff, wait_for

__all__ = ["GLOBAL_PHASES", "NODE_PHASES", "Deployment", "NodeStep", "NodeStepContext", "default_state_dir"]

GLOBAL_PHASES = ("preflight", "stage_media", "handoff")

_ACTIONS = {
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


def default_state_dir(plan: DeploymentPlan) -> Path:
    """``<plan folder>/.palette-provision/<plan name>``: journal, seeds and provider caches live here."""
    return plan.base_dir / ".palette-provision" / plan.name


@dataclass
class _Outcome:
    data: dict[str, Any] = field(default_factory=dict)
    resources: list[tuple[str, str, str, Mapping[str, Any]]] = field(default_factory=list)


class Deployment:
    """One plan being applied (or destroyed) against its platform, with its journal.

    Construction does no platform I/O; the provider connects on first use and :meth:`close` releases it.

    Args:
        plan: a validated plan (its ``platform_settings`` set by :func:`~palette_provision.plan.parse_plan`).
        state_dir: where the journal and seeds live (default :func:`default_state_dir`).
        on_event: receives every progress :class:`~palette_provision.report.Event`.
        provider: an already-built provider (default: built from the registry).
        former: the hand-off (default: chosen from ``plan.handoff.kind``).
        node_steps: your own per-node phases (:class:`~palette_provision.steps.NodeStep`), journaled like ours.

    Raises:
        PlanError: a node step with a bad name or anchor.
    """

    def __init__(
        self,
        plan: DeploymentPlan,
        *,
        state_dir: Path | None = None,
        on_event: EventSink | None = None,
        provider: Any = None,
        former: ClusterFormer | None = None,
        node_steps: Sequence[NodeStep] = (),
    ) -> None:
        check_node_steps(node_steps)
        self.plan = plan
        self._node_steps = tuple(node_steps)
        self.state_dir = (state_dir or default_state_dir(plan)).resolve()
        self._on_event = on_event
        self._provider = provider
        self._former = former
        self._journal: Journal | None = None
        self._emit_lock = threading.Lock()
        self.log = get_logger("palette_provision.pipeline", deployment=plan.name, provider=plan.platform.provider)

    # ----------------------------------------------------------------------------------------- plumbing
    @property
    def journal(self) -> Journal:
        """The journal, opened on first use."""
        if self._journal is None:
            self._journal = Journal.open(
                self.state_dir / "journal.sqlite", deployment=self.plan.name, fingerprint=self.plan.fingerprint()
            )
            self._journal.set_meta("provider", self.plan.platform.provider)
        return self._journal

    @property
    def provider(self) -> Any:
        """The provider, built on first use (construction does no I/O)."""
        if self._provider is None:
            owned = self._owned_machine_names()
            context = ProviderContext(
                deployment=self.plan.name,
                state_dir=self.state_dir / "providers" / self.plan.platform.provider,
                log=get_logger("palette_provision.provider", provider=self.plan.platform.provider),
                owned_machine_names=frozenset(owned),
            )
            self._provider = create_provider(self.plan.platform.provider, self.plan.platform_settings, context)
        return self._provider

    def _owned_machine_names(self) -> set[str]:
        # A node whose provision step ever started is ours: the machine may exist without a journal record if
        # the process died between the create call and the journal write.
        names: set[str] = set()
        for rec in self.journal.steps():
            if rec.phase == "provision":
                names.add(rec.node)
        for res in self.journal.resources():
            if res.kind == "machine":
                names.add(str(res.data.get("name", res.node)))
        return names

    def close(self) -> None:
        """Release the provider's sessions and the journal lock. Safe to call twice."""
        if self._provider is not None:
            self._provider.close()
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    def __enter__(self) -> Deployment:
        return self

    def __exit__(self, *_: object | TracebackType) -> None:
        self.close()

    def _emit(self, node: str, phase: str, status: Any, message: str = "", **data: Any) -> None:
        event = Event(node=node, phase=phase, status=status, message=message, data=data)
        log = self.log.bind(node=node, phase=phase)
        if status == "failed":
            log.error(f"phase_{status}", message=message, **data)
        elif status != "progress":
            log.info(f"phase_{status}", message=message, **data)
        if self._on_event is not None:
            with self._emit_lock:
                self._on_event(event)

    def _step(self, phase: str, node: str, action: Callable[[], _Outcome], *, always: bool = False) -> dict[str, Any]:
        """Run one journaled step: skip it when done (unless ``always``: observe again), else begin/act/finish."""
        journal = self.journal
        rec = journal.step(phase, node)
        if rec is not None and rec.status == "done" and not always:
            self._emit(node, phase, "skipped", "done in an earlier run")
            return rec.data
        journal.begin(phase, node)
        self._emit(node, phase, "started", _ACTIONS.get(phase, phase))
        t0 = time.monotonic()
        outcome = action()
        outcome.data.setdefault("seconds", round(time.monotonic() - t0, 3))
        journal.finish(phase, node, outcome.data, outcome.resources)
        self._emit(node, phase, "done", **{k: v for k, v in outcome.data.items() if k != "machine"})
        return outcome.data

    def _has(self, capability: type) -> bool:
        return isinstance(self.provider, capability)

    # ----------------------------------------------------------------------------------------- dry run
    def actions(self) -> list[PlannedAction]:
        """What ``apply`` would do, phase by phase, read from the plan and the journal only (no platform I/O)."""
        planned: list[PlannedAction] = []
        journal = self.journal

        def state(phase: str, node: str) -> Any:
            rec = journal.step(phase, node)
            return "pending" if rec is None else rec.status

        for phase in ("preflight", "stage_media"):
            planned.append(PlannedAction(phase, GLOBAL, _ACTIONS[phase], state(phase, GLOBAL)))
        for node in self.plan.node_specs():
            for phase, action in self._node_phase_names():
                planned.append(PlannedAction(phase, node.name, action, state(phase, node.name)))
        if self.plan.handoff.kind != "none":
            action = f"{_ACTIONS['handoff']} ({self.plan.handoff.kind})"
            planned.append(PlannedAction("handoff", GLOBAL, action, state("handoff", GLOBAL)))
        return planned

    def _node_phase_names(self) -> list[tuple[str, str]]:
        """Every per-node phase in order, built-in and the user's, with what it does."""
        names = [(phase, _ACTIONS[phase]) for phase in NODE_PHASES]
        for step in reversed(self._node_steps):
            at = next(i for i, (name, _) in enumerate(names) if name == step.after) + 1
            names.insert(at, (step.name, step.description or f"your step {step.name}"))
        return names

    # ----------------------------------------------------------------------------------------- apply
    def apply(self, *, until: str | None = None) -> Report:
        """Run every phase (or the per-node phases up to and including ``until``); return the report.

        Per-node failures are in the report, not raised. With ``until``, nodes that got there are ``ready`` in the
        report's sense of "done as asked", and there is no hand-off; a later ``apply`` continues from there.

        Raises:
            PlanError: the provider's ``validate`` rejected the plan (nothing touched).
            ConfigurationError: preflight rejected the platform settings (nothing changed).
            ProviderError, WaitTimeout: a deployment-wide phase (ISO staging) failed.
        """
        phases = [name for name, _ in self._node_phase_names()]
        if until is not None and until not in phases:
            raise PlanError([PlanIssue("until", f"not a per-node phase: {until!r} (phases: {', '.join(phases)})")])
        specs = self.plan.node_specs()
        report = Report(self.plan.name, self.plan.platform.provider, [NodeResult(n.name) for n in specs])
        issues = self.provider.validate(self.plan)
        if issues:
            raise PlanError(issues, source=f"provider {self.plan.platform.provider}")
        self._step("preflight", GLOBAL, self._preflight, always=True)
        iso = StagedMedia.from_record(self._step("stage_media", GLOBAL, self._stage_iso, always=True)["staged"])
        workers = max(1, min(self.plan.concurrency, len(specs), getattr(self.provider, "max_parallel", 1 << 16)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="node") as pool:
            pairs = zip(specs, report.nodes, strict=True)
            futures = [pool.submit(self._run_node, spec, iso, result, until) for spec, result in pairs]
            for future in futures:
                future.result()
        if until is None and all(n.status == "ready" for n in report.nodes) and self.plan.handoff.kind != "none":
            try:
                result_data = self._step("handoff", GLOBAL, lambda: self._handoff(report))
                report.handoff = _handoff_from_data(result_data)
            except PaletteProvisionError as exc:
                self.journal.fail("handoff", GLOBAL, str(exc))
                self._emit(GLOBAL, "handoff", "failed", str(exc))
                report.handoff_error = str(exc)
        report.finished_at = time.time()
        return report

    def _preflight(self) -> _Outcome:
        iso_path = self._local_iso_path(check_only=True)
        if iso_path is not None and not iso_path.is_file():
            raise ConfigurationError(f"the appliance ISO {iso_path} does not exist", field="iso.source")
        if self.plan.content is not None and not self.plan.resolve_path(self.plan.content.path).is_file():
            raise ConfigurationError(
                f"the content bundle {self.plan.content.path} does not exist", field="content.path"
            )
        self.provider.preflight(self.plan)
        return _Outcome({"provider": self.plan.platform.provider})

    def _local_iso_path(self, *, check_only: bool = False) -> Path | None:
        if self.plan.iso.is_url:
            if check_only:
                return None
            return media_mod.fetch_iso(self.plan.iso, self.state_dir / "media", journal=self.journal)
        return self.plan.resolve_path(self.plan.iso.source)

    def _stage_iso(self) -> _Outcome:
        path = self._local_iso_path()
        assert path is not None
        known = self.plan.iso.sha256 or self.journal.cached_digest(path)
        file = MediaFile(role="appliance-iso", local_path=path, size=path.stat().st_size, name=path.name, sha256=known)
        if not self._has(MediaStaging):
            staged = StagedMedia("appliance-iso", str(path), known or "", file.size)
            return _Outcome({"staged": staged.to_record()})
        staged = self._stage(file, self._progress(GLOBAL, "stage_media"))
        if self.plan.iso.sha256 and staged.sha256 != self.plan.iso.sha256:
            raise ProviderError(
                f"the appliance ISO's SHA-256 is {staged.sha256}, the plan says {self.plan.iso.sha256}",
                provider=self.plan.platform.provider,
                resource=staged.locator,
            )
        if known is None:
            self.journal.cache_digest(path, staged.sha256)
        return _Outcome(
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

    # ----------------------------------------------------------------------------------------- per node
    def _run_node(self, node: NodeSpec, iso: StagedMedia, result: NodeResult, until: str | None = None) -> None:
        journal = self.journal
        got: dict[str, Any] = {}  # what earlier steps produced: the staged seed, the machine

        def machine() -> Machine:
            return got["machine"]  # type: ignore[no-any-return]

        chain: list[tuple[str, Callable[[], _Outcome], bool]] = [
            ("stage_seed", lambda: self._stage_seed(node), False),
            # Always observed again: the machine may have been deleted since the journal recorded it.
            ("provision", lambda: self._provision(node, iso, got["seed"]), True),
            ("attach_media", lambda: self._attach(machine(), iso, got["seed"]), False),
            ("power_on", lambda: self._power_on(machine()), False),
            ("await_install", lambda: self._await_install(machine()), False),
            ("boot_from_disk", lambda: self._boot_from_disk(node, machine(), got["seed"]), False),
            ("await_ready", lambda: self._await_ready(node, machine()), False),
        ]
        for user_step in reversed(self._node_steps):
            at = next(i for i, (name, _, _) in enumerate(chain) if name == user_step.after) + 1
            chain.insert(at, (user_step.name, self._user_action(user_step, node, machine), False))
        current = chain[0][0]
        try:
            for phase, action, always in chain:
                current = phase
                data = self._step(phase, node.name, action, always=always)
                if phase == "stage_seed":
                    got["seed"] = StagedMedia.from_record(data["staged"])
                elif phase == "provision":
                    got["machine"] = Machine.from_record(data["machine"])
                    result.machine_id = got["machine"].id
                result.timings[phase] = float(data.get("seconds", 0.0))
                result.phase = phase
                if phase == until:
                    break
            result.status = "ready"
        except PaletteProvisionError as exc:
            result.status, result.phase, result.error = "failed", current, str(exc)
            result.last_state = _last_state(exc)
            journal.fail(current, node.name, str(exc), {"last_state": result.last_state})
            self._emit(node.name, current, "failed", str(exc), last_state=result.last_state)
        except Exception as exc:  # a bug or an untranslated vendor error: report it on this node only
            result.status, result.phase = "failed", current
            result.error = f"unexpected {type(exc).__name__}: {exc}"
            journal.fail(current, node.name, result.error)
            self._emit(node.name, current, "failed", result.error)
            self.log.exception("node_unexpected_error", node=node.name, phase=current)
        facts = journal.facts(node.name)
        result.address = facts.get("address")
        result.host_key_fingerprint = facts.get("host_key_fingerprint")
        result.evidence = journal.evidence(node.name)

    def _user_action(
        self, step: NodeStep, node: NodeSpec, machine: Callable[[], Machine]
    ) -> Callable[[], _Outcome]:
        def action() -> _Outcome:
            context = NodeStepContext(
                plan=self.plan,
                node=node,
                machine=machine(),
                facts=self.journal.facts(node.name),
                log=self.log.bind(node=node.name, phase=step.name),
            )
            return _Outcome(dict(step.run(context) or {}))

        return action

    def _seed_path(self, node: NodeSpec) -> Path:
        return self.state_dir / "seeds" / f"{node.name}.iso"

    def _stage_seed(self, node: NodeSpec) -> _Outcome:
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
            return _Outcome({"staged": staged.to_record()})
        staged = self._stage(file, None)
        return _Outcome(
            {"staged": staged.to_record(), "host_key_fingerprint": fingerprint},
            [("media", self.plan.platform.provider, staged.locator, staged.to_record())],
        )

    def _provision(self, node: NodeSpec, iso: StagedMedia, seed: StagedMedia) -> _Outcome:
        existing = self.provider.find_machine(node)
        if existing is not None:
            recorded = self.journal.step("provision", node.name)
            return _Outcome(
                {"machine": existing.to_record(), "adopted": recorded is not None and recorded.status != "done"}
            )
        previous = self.journal.step("provision", node.name)
        if previous is not None and previous.status == "done":
            # The machine we created is gone (deleted outside palette-provision): rebuild it from scratch.
            for phase, _ in self._node_phase_names()[2:]:
                self.journal.reset_step(phase, node.name)
            self._emit(node.name, "provision", "progress", "the recorded machine is gone; creating it again")
        machine = self.provider.create_machine(node, [iso, seed])
        return _Outcome(
            {"machine": machine.to_record(), "created": True},
            [("machine", self.plan.platform.provider, machine.id, machine.to_record())],
        )

    def _attach(self, machine: Machine, iso: StagedMedia, seed: StagedMedia) -> _Outcome:
        if self._has(BootMedia):
            self.provider.attach_media(machine, [iso, seed])
        return _Outcome()

    def _wait_power(self, machine: Machine, want: PowerState, what: str, timeout: float) -> PowerState:
        state: PowerState = wait_for(
            lambda: self.provider.power_state(machine),
            what=what,
            until=lambda s: s == want,
            timeout=timeout,
            backoff=Backoff(initial=1.0, maximum=15.0, jitter=0.5),
        )
        return state

    def _power_on(self, machine: Machine) -> _Outcome:
        node = machine.node
        state = self.provider.power_state(machine)
        if state == PowerState.ON:
            return _Outcome({"already_on": True})
        requested = self.journal.fact(node, "power_on_requested_at")
        if requested is not None and self._has(PowerHistory):
            last = self.provider.last_power_on(machine)
            if last is not None and last >= float(requested) - 1.0:
                # Powered on by an earlier, interrupted run and already off again: the install ran. Powering on
                # now would start a second install.
                return _Outcome({"powered_on_at": last, "resumed": True})
        self.journal.set_fact(node, "power_on_requested_at", time.time())
        self.provider.power_on(machine)
        return _Outcome({"powered_on_at": time.time()})

    def _await_install(self, machine: Machine) -> _Outcome:
        # The seed asks the installer to power the machine off when done: that power-off is the signal.
        self._wait_power(
            machine,
            PowerState.OFF,
            f"the installer on {machine.name} to finish and power it off",
            self.plan.timeouts.install,
        )
        return _Outcome({"installed_at": time.time()})

    def _boot_from_disk(self, node: NodeSpec, machine: Machine, seed: StagedMedia) -> _Outcome:
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
        return _Outcome({"booted_from_disk_at": time.time()})

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

    def _await_ready(self, node: NodeSpec, machine: Machine) -> _Outcome:
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
        return _Outcome({"rungs": [r.name for r in result.rungs], "address": result.address})

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

    def _handoff(self, report: Report) -> _Outcome:
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
        return _Outcome({"result": result.to_dict()})

    # ----------------------------------------------------------------------------------------- destroy
    def destroy(self, *, purge_media: bool = False) -> list[dict[str, Any]]:
        """Undo what the journal recorded, newest first; resumable. Keeps the staged ISO unless ``purge_media``.

        Returns one entry per resource: kind, id, node and what happened (``deleted``, ``kept``).

        Raises:
            ProviderError: a deletion failed; what was deleted before it stays recorded, so a re-run continues.
        """
        journal = self.journal
        done: list[dict[str, Any]] = []
        self._adopt_unrecorded_machines()
        for res in reversed(journal.resources(live_only=True)):
            entry = {"kind": res.kind, "id": res.external_id, "node": res.node}
            if res.kind == "machine":
                machine = Machine.from_record(res.data)
                self._emit(res.node, "destroy", "started", f"delete machine {machine.name}")
                if self._has(Power):
                    self.provider.power_off(machine)
                if self._has(Machines):
                    self.provider.delete_machine(machine)
                entry["result"] = "deleted"
            elif res.kind == "media":
                staged = StagedMedia.from_record(res.data)
                if staged.role == "appliance-iso" and not purge_media:
                    entry["result"] = "kept"
                    done.append(entry)
                    continue
                self._emit(res.node, "destroy", "started", f"remove {staged.locator}")
                if self._has(MediaStaging):
                    self.provider.unstage_media(staged)
                entry["result"] = "deleted"
            else:
                entry["result"] = "unknown kind, left alone"
                done.append(entry)
                continue
            journal.mark_destroyed(res.kind, res.external_id)
            self._emit(res.node, "destroy", "done", entry["result"])
            done.append(entry)
        for spec in self.plan.node_specs():
            self._seed_path(spec).unlink(missing_ok=True)
        for rec in journal.steps():
            journal.reset_step(rec.phase, rec.node)
        return done

    def _adopt_unrecorded_machines(self) -> None:
        # A provision step that started but never finished may have created a machine the journal does not
        # list (killed between the create call and the journal write): find it so destroy removes it too.
        recorded = {res.node for res in self.journal.resources() if res.kind == "machine"}
        for spec in self.plan.node_specs():
            rec = self.journal.step("provision", spec.name)
            if rec is None or spec.name in recorded or not self._has(Machines):
                continue
            machine = self.provider.find_machine(spec)
            if machine is not None:
                self.journal.add_resource(
                    "machine", self.plan.platform.provider, spec.name, machine.id, machine.to_record()
                )

    # ----------------------------------------------------------------------------------------- status
    def status(self) -> dict[str, Any]:
        """What the journal says: each step's state, the live resources and each node's facts. No platform I/O."""
        journal = self.journal
        return {
            "deployment": self.plan.name,
            "journal": str(journal.path),
            "steps": [
                {"phase": s.phase, "node": s.node, "status": s.status, "attempts": s.attempts, "error": s.error}
                for s in journal.steps()
            ],
            "resources": [
                {"kind": r.kind, "id": r.external_id, "node": r.node, "destroyed": r.destroyed_at is not None}
                for r in journal.resources()
            ],
            "nodes": {spec.name: journal.facts(spec.name) for spec in self.plan.node_specs()},
        }


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
