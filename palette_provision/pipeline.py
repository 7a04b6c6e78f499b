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
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

from palette_provision._phases import ACTIONS, Outcome, PhaseActions, StartOver, _handoff_from_data, _last_state
from palette_provision.errors import (
    PaletteProvisionError,
    PlanError,
    PlanIssue,
)
from palette_provision.handoff.base import ClusterFormer
from palette_provision.journal import GLOBAL, Journal
from palette_provision.log import get_logger
from palette_provision.plan import DeploymentPlan, NodeSpec
from palette_provision.provider import (
    Machine,
    Machines,
    MediaStaging,
    Power,
    ProviderContext,
    StagedMedia,
)
from palette_provision.registry import create_provider
from palette_provision.report import Event, EventSink, NodeResult, PlannedAction, Report
from palette_provision.steps import NODE_PHASES, NodeStep, NodeStepContext, check_node_steps

__all__ = ["GLOBAL_PHASES", "NODE_PHASES", "Deployment", "NodeStep", "NodeStepContext", "default_state_dir"]

GLOBAL_PHASES = ("preflight", "stage_media", "handoff")


def default_state_dir(plan: DeploymentPlan) -> Path:
    """``<plan folder>/.palette-provision/<plan name>``: journal, seeds and provider caches live here."""
    return plan.base_dir / ".palette-provision" / plan.name


class Deployment(PhaseActions):
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

    def _step(
        self,
        phase: str,
        node: str,
        action: Callable[[], Outcome],
        *,
        always: bool = False,
        recheck: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None,
    ) -> dict[str, Any]:
        """Run one journaled step: skip it when done, else begin/act/finish.

        ``always``: run it again even when done. ``recheck``: for a done step, look at the platform; it returns the
        step's data when the recorded outcome still holds (nothing is written), or ``None`` to run the step again.
        """
        journal = self.journal
        rec = journal.step(phase, node)
        if rec is not None and rec.status == "done" and not always:
            if recheck is None:
                self._emit(node, phase, "skipped", "done in an earlier run")
                return rec.data
            data = recheck(rec.data)
            if data is not None:
                self._emit(node, phase, "skipped", "done in an earlier run, and still so on the platform")
                return data
        journal.begin(phase, node)
        self._emit(node, phase, "started", ACTIONS.get(phase, phase))
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
            planned.append(PlannedAction(phase, GLOBAL, ACTIONS[phase], state(phase, GLOBAL)))
        for node in self.plan.node_specs():
            for phase, action in self._node_phase_names():
                planned.append(PlannedAction(phase, node.name, action, state(phase, node.name)))
        if self.plan.handoff.kind != "none":
            action = f"{ACTIONS['handoff']} ({self.plan.handoff.kind})"
            planned.append(PlannedAction("handoff", GLOBAL, action, state("handoff", GLOBAL)))
        return planned

    def _node_phase_names(self) -> list[tuple[str, str]]:
        """Every per-node phase in order, built-in and the user's, with what it does."""
        names = [(phase, ACTIONS[phase]) for phase in NODE_PHASES]
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

    # ----------------------------------------------------------------------------------------- per node
    def _run_node(self, node: NodeSpec, iso: StagedMedia, result: NodeResult, until: str | None = None) -> None:
        journal = self.journal
        got: dict[str, Any] = {}  # what earlier steps produced: the staged seed, the machine

        def machine() -> Machine:
            return got["machine"]  # type: ignore[no-any-return]

        Recheck = Callable[[dict[str, Any]], dict[str, Any] | None]
        chain: list[tuple[str, Callable[[], Outcome], Recheck | None]] = [
            ("stage_seed", lambda: self._stage_seed(node), None),
            # Looked at again: the machine may have been deleted since the journal recorded it.
            ("provision", lambda: self._provision(node, iso, got["seed"]), lambda data: self._recheck(node, data)),
            ("attach_media", lambda: self._attach(machine(), iso, got["seed"]), None),
            ("power_on", lambda: self._power_on(machine()), None),
            ("await_install", lambda: self._await_install(machine()), None),
            ("boot_from_disk", lambda: self._boot_from_disk(node, machine(), got["seed"]), None),
            ("await_ready", lambda: self._await_ready(node, machine()), None),
        ]
        for user_step in reversed(self._node_steps):
            at = next(i for i, (name, _, _) in enumerate(chain) if name == user_step.after) + 1
            chain.insert(at, (user_step.name, self._user_action(user_step, node, machine), None))
        current = chain[0][0]

        def run_chain() -> None:
            nonlocal current
            for phase, action, recheck in chain:
                current = phase
                data = self._step(phase, node.name, action, recheck=recheck)
                if phase == "stage_seed":
                    got["seed"] = StagedMedia.from_record(data["staged"])
                elif phase == "provision":
                    got["machine"] = Machine.from_record(data["machine"])
                    result.machine_id = got["machine"].id
                result.timings[phase] = float(data.get("seconds", 0.0))
                result.phase = phase
                if phase == until:
                    return

        try:
            try:
                run_chain()
            except StartOver as over:
                # Once: the reset provision step runs again instead of being re-checked, so this cannot recur.
                self._start_over(node, over.gone)
                run_chain()
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
