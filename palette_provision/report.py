"""What a run tells its caller: events while it runs, a :class:`Report` when it ends."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from palette_provision.handoff.base import HandoffResult

__all__ = ["Event", "EventSink", "NodeResult", "PlannedAction", "Report"]

EventStatus = Literal["started", "done", "skipped", "failed", "progress"]


@dataclass(frozen=True)
class Event:
    """A progress event: ``node`` (``*`` for deployment-wide phases), ``phase``, ``status`` and details."""

    node: str
    phase: str
    status: EventStatus
    message: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)


#: A callable receiving every :class:`Event` (the CLI's live view, a runbook's logger).
EventSink = Callable[[Event], None]


@dataclass
class NodeResult:
    """One node's outcome: where it got to, what it is, and, when it failed, why and the last state seen."""

    name: str
    status: Literal["pending", "ready", "failed"] = "pending"
    phase: str | None = None
    error: str | None = None
    last_state: str | None = None
    machine_id: str | None = None
    address: str | None = None
    #: Where ``address`` came from: ``plan`` (static), ``platform`` (the provider's discovery: VMware Tools, MAAS)
    #: or ``node`` (the node's own report, a DHCP node on bare metal).
    address_source: str | None = None
    host_key_fingerprint: str | None = None
    #: For a failed node: where its seed (private host key, password hash) is still staged, until
    #: ``destroy --seeds-only`` or ``destroy`` removes it.
    seed_left: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    evidence: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Report:
    """The result of ``apply``: every node's result and the hand-off's outcome."""

    deployment: str
    provider: str
    nodes: list[NodeResult]
    handoff: HandoffResult | None = None
    handoff_error: str | None = None
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    #: The validation and pack checks' evidence (what was asked, what answered, when), also when the hand-off failed:
    #: then the failed check's entry (``failed: True``) is last. Empty: the hand-off's own (``handoff.details``).
    validation: list[dict[str, Any]] = field(default_factory=list)

    def record_handoff_error(self, exc: BaseException) -> None:
        """Record a failed hand-off: its message, and the evidence its checks gathered until then (if any)."""
        self.handoff_error = str(exc)
        self.validation = [dict(entry) for entry in getattr(exc, "evidence", None) or []]

    @property
    def ok(self) -> bool:
        """True when every node is ready and the hand-off (if any) succeeded."""
        return all(n.status == "ready" for n in self.nodes) and self.handoff_error is None

    def failures(self) -> list[str]:
        """One line per failed node (and the hand-off), naming phase and error."""
        lines = []
        for n in self.nodes:
            if n.status == "failed":
                lines.append(f"{n.name} failed in {n.phase}: {n.error}")
                if n.seed_left:
                    lines.append(
                        f"{n.name}: its seed (private SSH host key, password hash) stays at {n.seed_left} until "
                        "'destroy --seeds-only' or 'destroy'"
                    )
        if self.handoff_error:
            lines.append(f"hand-off failed: {self.handoff_error}")
        return lines

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (what ``--json`` prints)."""
        from palette_provision.report_schema import REPORT_SCHEMA_VERSION

        return {
            "schema_version": REPORT_SCHEMA_VERSION,
            "deployment": self.deployment,
            "provider": self.provider,
            "ok": self.ok,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "nodes": [asdict(n) for n in self.nodes],
            "handoff": self.handoff.to_dict() if self.handoff else None,
            "handoff_error": self.handoff_error,
            "validation": self.validation or list((self.handoff.details.get("validation") if self.handoff else None)
                                                  or []),
        }


@dataclass(frozen=True)
class PlannedAction:
    """One action ``apply`` would take (dry run): phase, node, what, and whether the journal says it is done."""

    phase: str
    node: str
    action: str
    state: Literal["pending", "done", "started", "failed"] = "pending"

    def to_dict(self) -> dict[str, str]:
        """JSON-able form."""
        return {"phase": self.phase, "node": self.node, "action": self.action, "state": self.state}
