"""The deployment pipeline: ordered, observable, resumable phases with per-node fan-out.

::

    preflight ─▶ stage_media (boot-from-media only, on its own thread) ─────────────┐ the ISO, when a node needs it
              └▶ per node (thread pool, bounded by plan.concurrency and the provider's per-key limits):
                   boot-from-media: stage_seed ─▶ acquire ─▶ insert_media ─▶ boot_once_from_cd ─▶ power_on
                                    ─▶ await_install ─▶ boot_from_disk ─▶ await_ready
                   deploy-image:    stage_seed ─▶ acquire ─▶ deploy_image ─▶ await_deployed ─▶ await_ready
              ─▶ handoff (once every node is ready; its sub-steps run through the same step machinery)

The phases and the install methods are one table, :mod:`palette_provision.phases`. Every phase observes before it
acts, and every step is journaled (see :mod:`palette_provision.journal`), so ``apply`` after any failure, Ctrl-C
or SIGKILL resumes without repeating side effects. One node's failure is reported with its phase and last state
while the other nodes finish. ``destroy`` reads the journal and undoes what it recorded, by the machine's
lifecycle: created machines are deleted, allocated ones released, enrolled ones restored.

Example::

    plan = load_plan("plan.yaml")
    with Deployment(plan) as deployment:
        report = deployment.apply()
    print(report.to_dict())
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from palette_provision import _deployment_phases as global_act
from palette_provision._disks import disk_issues, resolve_disks
from palette_provision._phases import StartOver
from palette_provision._run import NodeRun, Outcome, error_text, last_state
from palette_provision.errors import (
    HandoffError,
    PaletteProvisionError,
    PlanError,
    PlanIssue,
)
from palette_provision.handoff.base import ClusterFormer, HandoffResult
from palette_provision.journal import GLOBAL, Fact, Journal
from palette_provision.log import get_logger
from palette_provision.media import EarlyDigest
from palette_provision.phases import DEPLOYMENT_PHASES, Phase, chain_for, required_capabilities, stages_iso
from palette_provision.plan import DeploymentPlan, JournalSettings, NodeSpec
from palette_provision.provider import (
    ConcurrencyLimits,
    InstallMethod,
    Lifecycle,
    Machine,
    MediaFile,
    Provider,
    ProviderContext,
    SeedFormat,
    StagedMedia,
    missing_capabilities,
)
from palette_provision.registry import create_provider
from palette_provision.report import Event, EventSink, NodeResult, PlannedAction, Report
from palette_provision.steps import NodeStep, NodeStepContext, check_node_steps
from palette_provision.waiting import Interrupted, stop_on

__all__ = ["Deployment", "NodeStep", "NodeStepContext", "default_state_dir"]

_SEED_SUFFIX = {SeedFormat.CIDATA_ISO: "iso", SeedFormat.CIDATA_DISK: "img", SeedFormat.USER_DATA: "user-data"}


def default_state_dir(plan: DeploymentPlan) -> Path:
    """``<plan folder>/.palette-provision/<plan name>``: journal, seeds and provider caches live here."""
    return plan.base_dir / ".palette-provision" / plan.name


#: One entry of a node's chain: a built-in phase or a user's step.
ChainEntry = Phase | NodeStep


class Deployment:
    """One plan being applied (or destroyed) against its platform, with its journal.

    Construction does no platform I/O; the provider connects on first use and :meth:`close` releases it.
    ``validate``-like uses (:meth:`check`, :meth:`actions`, :meth:`status`) never create, lock or write the journal
    or the state folder: they read the journal read-only, also while another process applies.

    Args:
        plan: a validated plan (its ``platform_settings`` set by :func:`~palette_provision.plan.parse_plan`).
        state_dir: where the journal and seeds live (default :func:`default_state_dir`).
        on_event: receives every progress :class:`~palette_provision.report.Event`.
        provider: an already-built provider (default: built from the registry).
        former: the hand-off (default: chosen from ``plan.handoff.kind``).
        node_steps: your own per-node phases (:class:`~palette_provision.steps.NodeStep`), journaled like ours.

    Raises:
        PlanError: a node step with a bad name.
    """

    def __init__(
        self,
        plan: DeploymentPlan,
        *,
        state_dir: Path | None = None,
        on_event: EventSink | None = None,
        provider: Provider | None = None,
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
        self._specs: list[NodeSpec] | None = None
        self._emit_lock = threading.Lock()
        self._limits: dict[str, threading.BoundedSemaphore] = {}
        # Set on Ctrl-C (any BaseException in apply's fan-out): no step begins after it, and waits end at once.
        self._stopping = threading.Event()
        self._limits_lock = threading.Lock()
        self.early_iso_digest: EarlyDigest | None = None
        """The appliance ISO's digest being computed while ``apply`` starts (see :class:`~.media.EarlyDigest`)."""
        self.log = get_logger("palette_provision.pipeline", deployment=plan.name, provider=plan.platform.provider)

    # ----------------------------------------------------------------------------------------- plumbing
    @property
    def journal_path(self) -> Path:
        """Where the journal is (or will be)."""
        return self.state_dir / "journal.sqlite"

    @property
    def journal_location(self) -> str:
        """Where the journal is, as ``status`` shows it: the SQLite file, or the PostgreSQL URL (no secrets) and
        schema."""
        settings = self.plan.journal
        if settings is None:
            return str(self.journal_path)
        from palette_provision._journal_pg import default_schema, shown_url

        return f"{shown_url(settings.url)} (schema {settings.schema_name or default_schema(self.plan.name)})"

    def _pg(self, settings: JournalSettings) -> dict[str, Any]:
        from palette_provision._journal_pg import default_schema

        return {"password": settings.password, "schema": settings.schema_name or default_schema(self.plan.name),
                "deployment": self.plan.name}  # fmt: skip

    @property
    def journal(self) -> Journal:
        """The journal, opened for writing (and locked) on first use: by ``apply`` and ``destroy`` only."""
        if self._journal is None:
            if self.plan.journal is not None:
                self._journal = Journal.open_postgres(
                    self.plan.journal.url, **self._pg(self.plan.journal), fingerprint=self.plan.fingerprint()
                )
            else:
                self._journal = Journal.open(
                    self.journal_path, deployment=self.plan.name, fingerprint=self.plan.fingerprint()
                )
            self._journal.set_meta("provider", self.plan.platform.provider)
        return self._journal

    @contextlib.contextmanager
    def _reader(self) -> Iterator[Journal]:
        """The open journal, or a read-only view of the file (empty when there is none): no lock, no write."""
        if self._journal is not None:
            yield self._journal
            return
        if self.plan.journal is not None:
            view = Journal.open_postgres_readonly(self.plan.journal.url, **self._pg(self.plan.journal))
        else:
            view = Journal.open_readonly(self.journal_path, deployment=self.plan.name)
        try:
            yield view
        finally:
            view.close()

    @property
    def provider(self) -> Provider:
        """The provider, built on first use (construction does no I/O)."""
        if self._provider is None:
            context = ProviderContext(
                deployment=self.plan.name,
                state_dir=self.state_dir / "providers" / self.plan.platform.provider,
                log=get_logger("palette_provision.provider", provider=self.plan.platform.provider),
                owned_machines=self._owned_machines(),
                nodes=tuple(self.plan.node_specs()),
            )
            self._provider = create_provider(self.plan.platform.provider, self.plan.platform_settings, context)
        return self._provider

    def _owned_machines(self) -> dict[str, Machine | None]:
        # A node whose acquire step ever started is ours, even without a machine record: the run may have died
        # between the create call and the journal write.
        with self._reader() as journal:
            owned: dict[str, Machine | None] = {rec.node: None for rec in journal.steps() if rec.phase == "acquire"}
            for res in journal.resources(live_only=True):
                if res.kind == "machine":
                    owned[res.node] = Machine.from_record(res.data)
        return owned

    def close(self) -> None:
        """Release the provider's sessions and the journal lock. Safe to call twice; one failing does not skip the
        other."""
        try:
            if self._provider is not None:
                self._provider.close()
        finally:
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

    # ----------------------------------------------------------------------------------------- the shape
    @property
    def install_method(self) -> InstallMethod:
        """The plan's ``install_method``, else the provider's preferred one."""
        if self.plan.install_method is not None:
            return InstallMethod(self.plan.install_method)
        return InstallMethod(self.provider.install_methods[0])

    def chain(self) -> list[ChainEntry]:
        """The per-node chain of the install method, with the user's steps after their anchors."""
        entries: list[ChainEntry] = list(chain_for(self.install_method, Lifecycle(self.provider.lifecycle)))
        for step in reversed(self._node_steps):
            at = next((i for i, e in enumerate(entries) if e.name == step.after), None)
            if at is not None:
                entries.insert(at + 1, step)
        return entries

    def check(self) -> None:
        """Everything that can be checked without the platform: the provider's ``validate``, the install method,
        the capabilities its chain needs, the user's step anchors. Reads nothing but the plan.

        Raises:
            PlanError: every problem at once, with its field path.
        """
        provider = self.provider
        issues = list(provider.validate(self.plan))
        for field, local in (("iso.source", None if self.plan.iso.is_url else self.plan.iso.source),
                             ("content.path", self.plan.content.path if self.plan.content else None)):
            if local is not None and not self.plan.resolve_path(local).is_file():
                issues.append(PlanIssue(field, f"no such file: {self.plan.resolve_path(local)}"))
        methods = [InstallMethod(m) for m in provider.install_methods]
        name = self.plan.platform.provider
        if self.plan.install_method is not None and InstallMethod(self.plan.install_method) not in methods:
            supported = ", ".join(m.value for m in methods)
            issues.append(PlanIssue("install_method", f"provider {name} supports {supported}"))
        else:
            missing = missing_capabilities(provider, required_capabilities(self.install_method, provider.lifecycle))
            if missing:
                issues.append(PlanIssue(
                    "platform.provider",
                    f"provider {name} ({Lifecycle(provider.lifecycle).value} machines) lacks what the "
                    f"{self.install_method.value} install method needs: {', '.join(missing)}",
                ))
            try:
                chain = chain_for(self.install_method, Lifecycle(provider.lifecycle))
                check_node_steps(self._node_steps, [p.name for p in chain])
            except PlanError as exc:
                issues.extend(exc.issues)
        issues.extend(disk_issues(self.plan, self.node_specs()))
        if issues:
            raise PlanError(issues, source=f"provider {name}")

    def node_specs(self) -> list[NodeSpec]:
        """The plan's nodes with their disks resolved: the plan's names, else the provider's (``DiskLayout``)."""
        if self._specs is None:
            self._specs = resolve_disks(self.plan.node_specs(), self.provider)
        return self._specs

    # ----------------------------------------------------------------------------------------- dry run
    def actions(self) -> list[PlannedAction]:
        """What ``apply`` would do, phase by phase, read from the plan and the journal only (no platform I/O, no
        write, no lock). See :func:`palette_provision._views.planned_actions`."""
        from palette_provision._views import planned_actions

        return planned_actions(self)

    def _former_or_default(self) -> ClusterFormer:
        if self._former is None:
            from palette_provision.handoff import former_for

            self._former = former_for(self.plan)
        return self._former

    # ----------------------------------------------------------------------------------------- apply
    def apply(self, *, until: str | None = None) -> Report:
        """Run every phase (or the per-node phases up to and including ``until``); return the report.

        Per-node failures are in the report, not raised. With ``until``, nodes that got there are ``ready`` in the
        report's sense of "done as asked", and there is no hand-off; a later ``apply`` continues from there.

        Raises:
            PlanError: the plan does not fit the provider (nothing touched).
            ConfigurationError: preflight rejected the platform settings (nothing changed).
            ProviderError, WaitTimeout: a deployment-wide phase (ISO staging) failed.
        """
        self.early_iso_digest = early = self._start_iso_digest()
        try:
            self.check()
            names = [e.name for e in self.chain()]
            if until is not None and until not in names:
                raise PlanError([PlanIssue("until", f"not a per-node phase: {until} (phases: {', '.join(names)})")])
            specs = self.node_specs()
            report = Report(self.plan.name, self.plan.platform.provider, [NodeResult(n.name) for n in specs])
            self._step("preflight", GLOBAL, lambda: global_act.preflight(self), always=True)
        except BaseException:
            # Refused or interrupted (Ctrl-C) before anything changed: the ISO's read ends too, not at the process's.
            if early is not None:
                early.cancel()
            raise
        iso: Future[StagedMedia] | None = None
        iso_pool = None
        if stages_iso(self.install_method):
            iso_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="iso")
            # Nodes render and stage their seeds and get their machines while the ISO uploads; only insert_media
            # waits for it.
            iso = iso_pool.submit(self._staged_iso)
        workers = max(1, min(self.plan.concurrency, len(specs)))
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="node")
        try:
            runs = [NodeRun(self, spec, result, iso) for spec, result in zip(specs, report.nodes, strict=True)]
            for future in [pool.submit(self._run_node, run, until) for run in runs]:
                future.result()
            if iso is not None:
                iso.result()  # a failed upload is the deployment's failure (exit 4), once every node stopped
        except BaseException:
            # Ctrl-C (or a failure above): stop now. Queued nodes never start, running ones begin no further step
            # and leave their waits; a platform call in flight finishes (or is abandoned by a process that exits).
            self._stopping.set()
            pool.shutdown(wait=False, cancel_futures=True)
            if iso_pool is not None:
                iso_pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        if iso_pool is not None:
            iso_pool.shutdown(wait=True)
        if until is None and all(n.status == "ready" for n in report.nodes) and self.plan.handoff.kind != "none":
            try:
                report.handoff = global_act.handoff_result(self._step("handoff", GLOBAL, lambda: global_act.handoff(
                    self, self._former_or_default())))
            except PaletteProvisionError as exc:
                report.record_handoff_error(exc)
        report.finished_at = time.time()
        return report

    def validate_install(self) -> HandoffResult:
        """Validate the installed Palette of a deployment whose cluster was formed: the hand-off again (its
        formation steps, done, are skipped; the cluster is read again), then only the plan's ``validate`` checks
        (no pack step).

        Raises:
            PlanError: the plan has no ``validate`` section.
            HandoffError: no cluster was formed yet, or a check failed (naming its step).
        """
        if self.plan.validation is None:
            raise PlanError([PlanIssue("validate", "add a validate section (validate.console.password at least)")])
        return self._post_install("validate")

    def push_packs(self) -> HandoffResult:
        """Upload the plan's pack bundles to a deployment whose cluster was formed, then sync the registry: the
        hand-off again, as :meth:`validate_install`, running only the ``packs.*`` steps (and the console's password
        rotation first if no check ever ran: the sync logs in with the plan's password).

        Raises:
            PlanError: the plan has no ``packs`` section.
            HandoffError: no cluster was formed yet, or an upload or the sync failed (naming its step).
        """
        if self.plan.packs is None:
            raise PlanError([PlanIssue("packs", "add a packs section (packs.bundles)")])
        return self._post_install("packs")

    def _post_install(self, scope: Literal["validate", "packs"]) -> HandoffResult:
        from palette_provision.handoff.local_api import CLUSTER_STEP, PaletteLocalApi

        self.check()
        if not self.journal.is_done(CLUSTER_STEP):
            raise HandoffError(CLUSTER_STEP, "no cluster was formed by this deployment yet: run apply first")
        former = self._former_or_default()
        if isinstance(former, PaletteLocalApi):  # only this command's own steps, after the formation's (done)
            former = former.scoped(scope)
        data = self._step("handoff", GLOBAL, lambda: global_act.handoff(self, former), always=True)
        return global_act.handoff_result(data)

    def _start_iso_digest(self) -> EarlyDigest | None:
        """Start hashing the local appliance ISO when the plan gives its digest (checked at preflight, before
        anything changes), unless nothing will stage it or the journal knows its digest already.

        Without a digest in the plan the provider hashes while it uploads: on a CPU-bound host a read ahead of the
        upload measured no faster (docs/benchmarks.md), so the file is read once.
        """
        if self.plan.iso.sha256 is None or self.plan.iso.is_url or not stages_iso(self.install_method):
            return None
        path = self.plan.resolve_path(self.plan.iso.source)
        if not path.is_file() or self.journal.cached_digest(path) is not None:
            return None  # a missing file is preflight's to report, with its field
        return EarlyDigest(path, self._stopping)

    def _staged_iso(self) -> StagedMedia:
        with stop_on(self._stopping):
            data = self._step("stage_media", GLOBAL, lambda: global_act.stage_iso(self), always=True)
        return StagedMedia.from_record(data["staged"])

    # ----------------------------------------------------------------------------------------- steps
    def _step(
        self,
        phase: str,
        node: str,
        action: Callable[[], Outcome],
        *,
        always: bool = False,
        recheck: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None,
    ) -> dict[str, Any]:
        """Run one journaled step: skip it when done, else begin, act, finish (or fail, and re-raise).

        ``always``: run it again even when done. ``recheck``: for a done step, look at the platform; it returns the
        step's data when the recorded outcome still holds (nothing is written), or ``None`` to run the step again.
        """
        if self._stopping.is_set():
            raise Interrupted  # no step begins once the run is stopping
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
        self._emit(node, phase, "started", self._describe(phase))
        t0 = time.monotonic()
        try:
            outcome = action()
        except Exception as exc:
            message = error_text(exc)
            state = last_state(exc)
            journal.fail(phase, node, message, {"last_state": state})
            self._emit(node, phase, "failed", message, last_state=state)
            if not isinstance(exc, PaletteProvisionError):
                self.log.exception("step_unexpected_error", node=node, phase=phase)
            raise
        outcome.data.setdefault("seconds", round(time.monotonic() - t0, 3))
        journal.finish(phase, node, outcome.data, outcome.resources)
        # An outcome's keys become the event's data; the event's own fields (and the machine record) are left out.
        reserved = ("machine", "node", "phase", "status", "message")
        self._emit(node, phase, "done", **{k: v for k, v in outcome.data.items() if k not in reserved})
        return outcome.data

    def _describe(self, phase: str) -> str:
        if phase in DEPLOYMENT_PHASES:
            return DEPLOYMENT_PHASES[phase].description
        entry = next((e for e in self.chain() if e.name == phase), None)
        return (entry.description or f"your step {phase}") if entry is not None else phase

    @contextlib.contextmanager
    def _slot(self, node: NodeSpec) -> Iterator[None]:
        """One of the node's key's slots (``ConcurrencyLimits``), held while a step acts on the platform."""
        provider: Any = self.provider
        if not isinstance(provider, ConcurrencyLimits):
            yield
            return
        key, limit = provider.concurrency_key(node)
        with self._limits_lock:
            semaphore = self._limits.setdefault(key, threading.BoundedSemaphore(max(1, int(limit))))
        with semaphore:
            yield

    # ----------------------------------------------------------------------------------------- per node
    def _run_entry(self, run: NodeRun, entry: ChainEntry) -> dict[str, Any]:
        if isinstance(entry, NodeStep):
            return self._step(entry.name, run.node.name, lambda: self._user_action(entry, run))
        phase = entry

        def action() -> Outcome:
            if phase.needs_iso:
                run.iso()  # wait for the upload outside the slot: holding one while waiting starves other nodes
            if not phase.acts:
                return phase.act(run)
            with self._slot(run.node):
                return phase.act(run)

        recheck = None if phase.recheck is None else (lambda data: phase.recheck(run, data))  # type: ignore[misc]
        data = self._step(phase.name, run.node.name, action, recheck=recheck)
        if phase.load is not None:
            phase.load(run, data)
        return data

    def _run_node(self, run: NodeRun, until: str | None = None) -> None:
        result, node = run.result, run.node
        current = ""

        def run_chain() -> None:
            nonlocal current
            for entry in self.chain():
                current = entry.name
                data = self._run_entry(run, entry)
                result.timings[entry.name] = float(data.get("seconds", 0.0))
                result.phase = entry.name
                if entry.name == until:
                    return

        try:
            with stop_on(self._stopping):
                try:
                    run_chain()
                except StartOver as over:
                    # Once: the reset acquire step runs again instead of being re-checked, so this cannot recur.
                    self._start_over(node, over.gone)
                    run_chain()
            result.status = "ready"
        except Exception as exc:  # a failed step was journaled and emitted by _step; a bug is reported here only
            result.status, result.phase = "failed", current
            result.error = error_text(exc)
            result.last_state = last_state(exc)
        facts = self.journal.facts(node.name)
        result.address = facts.get(Fact.ADDRESS)
        result.address_source = facts.get(Fact.ADDRESS_SOURCE)
        if result.status == "failed":
            left = [
                r.external_id
                for r in self.journal.resources(live_only=True)
                if r.kind == "media" and r.node == node.name and r.data.get("role") == "seed"
            ]
            result.seed_left = left[0] if left else None
        result.host_key_fingerprint = facts.get(Fact.HOST_KEY_FINGERPRINT)
        result.evidence = self.journal.evidence(node.name)

    def _start_over(self, node: NodeSpec, gone: Machine) -> None:
        """Forget every per-node step of ``node`` (and the gone machine) so its chain runs again from the seed.

        From the seed, not from the machine: once the node had installed, its seed was deleted from the platform
        and locally, and a new machine needs one (with a new host key, recorded as the seed is rendered).
        """
        self._emit(node.name, "acquire", "progress", f"the recorded machine {gone.name} is gone; starting over")
        for entry in self.chain():
            self.journal.reset_step(entry.name, node.name)
        for res in self.journal.resources(live_only=True):
            about = res.external_id if res.kind == "machine" else res.data.get("machine", {}).get("id")
            if res.node == node.name and about == gone.id:
                self.journal.mark_destroyed(res.kind, res.external_id)
        # What was known of the gone machine; the host key stays with the seed, which is reused if it still exists.
        self.journal.forget_facts(
            node.name,
            (Fact.POWER_ON_REQUESTED_AT, Fact.LOCAL_API_CERT, Fact.EDGE_HOST_ID, Fact.ADDRESS, Fact.ADDRESS_SOURCE),
        )

    def _user_action(self, step: NodeStep, run: NodeRun) -> Outcome:
        context = NodeStepContext(
            plan=self.plan,
            node=run.node,
            machine=run.machine_,
            facts=self.journal.facts(run.node.name),
            log=self.log.bind(node=run.node.name, phase=step.name),
        )
        return Outcome(dict(step.run(context) or {}))

    # ----------------------------------------------------------------------------------------- media
    def seed_path(self, node: NodeSpec, fmt: SeedFormat = SeedFormat.CIDATA_ISO) -> Path:
        """Where ``node``'s rendered seed of form ``fmt`` lives until the node has installed (mode 0600)."""
        return self.state_dir / "seeds" / f"{node.name}.{_SEED_SUFFIX[fmt]}"

    def stage_file(self, file: MediaFile, progress: Callable[[int, int | None], None] | None = None) -> StagedMedia:
        """Stage through the provider, journaling the locator first when the provider can tell it beforehand."""
        return global_act.stage_file(self, file, progress)

    def progress(self, node: str, phase: str) -> Callable[[int, int | None], None]:
        """A progress callback emitting ``progress`` events (bytes, total, MiB/s) at most twice a second."""
        return global_act.progress_events(self, node, phase)

    # ----------------------------------------------------------------------------------------- destroy, status
    def destroy(self, *, purge_media: bool = False, seeds_only: bool = False) -> list[dict[str, Any]]:
        """Undo what the journal recorded, newest first, by lifecycle; resumable. Keeps the staged ISO unless
        ``purge_media``. See :func:`palette_provision._destroy.destroy`.

        With ``seeds_only``, remove only the seeds of nodes that have not installed (they hold private host keys
        and password hashes); those nodes are reinstalled by the next ``apply``. See
        :func:`palette_provision._destroy.destroy_seeds`.

        A plan loaded with ``load_plan(path, defer_secrets=True)`` is enough: destroy reads the platform's
        credentials when the provider logs in, and no other secret (what ``palette-provision destroy`` does).
        """
        from palette_provision._destroy import destroy, destroy_seeds

        if seeds_only:
            return destroy_seeds(self)
        return destroy(self, purge_media=purge_media)

    def status(self) -> dict[str, Any]:
        """What the journal says: each step's state, the live resources and each node's facts.

        No platform I/O, no lock, no write: safe while another process applies.
        """
        from palette_provision._views import journal_status

        return journal_status(self)
