"""The state one hand-off run shares between its steps: clients per node, host facts, the leader, waiting."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from palette_provision.errors import (
    AuthenticationError,
    HandoffError,
    PaletteProvisionError,
    TLSVerificationError,
    TransientError,
    WaitFailed,
    WaitTimeout,
)
from palette_provision.handoff._client import LocalApiClient
from palette_provision.handoff.base import HandoffContext, ReadyNode
from palette_provision.journal import GLOBAL, Fact
from palette_provision.waiting import Backoff, wait_for

T = TypeVar("T")

HOST_INFO = "/v1/edge-mgmt/edgehosts/current"
LINK_STATUS = "/v1/edge-mgmt/edgehosts/current/link/status"

#: Journal fact (per node) with the node's edge host id (``metadata.id``): not a secret, useful to reports.
HOST_ID_FACT = Fact.EDGE_HOST_ID


@dataclass
class HostFacts:
    """What a node says about itself (``v1EdgeHostInfo``), reduced to what formation needs."""

    host_id: str
    host_name: str
    ip: str
    arch: str
    configuration: str

    @classmethod
    def from_info(cls, info: dict[str, Any], fallback_ip: str, fallback_name: str) -> HostFacts:
        """Read ``metadata.id``, ``status.hostName``, the default NIC's ``ip`` and ``archType`` (§2.2)."""
        spec = info.get("spec") or {}
        status = info.get("status") or {}
        nics = [n for n in spec.get("networkInfo") or [] if isinstance(n, dict)]
        default = [n for n in nics if n.get("isDefault")] or nics
        ip = str(default[0].get("ip") or fallback_ip) if default else fallback_ip
        arch = str(((spec.get("hardwareSpec") or {}).get("archType")) or "amd64")
        return cls(
            host_id=str((info.get("metadata") or {}).get("id") or ""),
            host_name=str(status.get("hostName") or fallback_name),
            ip=ip,
            arch=arch,
            configuration=str(status.get("configurationStatus") or ""),
        )


@dataclass
class Session:
    """One run of :class:`~palette_provision.handoff.PaletteLocalApi` over a :class:`HandoffContext`."""

    context: HandoffContext
    clients: dict[str, LocalApiClient]
    leader: ReadyNode
    backoff: Backoff
    checkpoint: Callable[[str], None]
    facts: dict[str, HostFacts] = field(default_factory=dict)

    @property
    def followers(self) -> list[ReadyNode]:
        """Every node but the leader, in plan order."""
        return [n for n in self.context.nodes if n.name != self.leader.name]

    def api(self, node: ReadyNode | str) -> LocalApiClient:
        """The client of ``node``."""
        return self.clients[node if isinstance(node, str) else node.name]

    @property
    def log(self) -> Any:
        """The hand-off's logger."""
        return self.context.log

    def emit(self, step: str, message: str, **data: Any) -> None:
        """Report progress to the caller (CLI) and the log."""
        self.context.emit(step, message, data)
        self.log.info(message, phase=step, **data)

    def wait(
        self,
        step: str,
        probe: Callable[[], T],
        *,
        what: str,
        timeout: float,
        until: Callable[[T], bool],
        failed: Callable[[T], str | None] | None = None,
        events: Callable[[], list[str]] | None = None,
        on_state: Callable[[T], None] | None = None,
        describe: Callable[[T], str] | None = None,
    ) -> T:
        """:func:`wait_for` with the session's cadence; a timeout or failure state becomes a :class:`HandoffError`."""
        try:
            return wait_for(
                probe, what=what, timeout=timeout, until=until, failed=failed,
                retry_on=(TransientError,), backoff=self.backoff, on_state=on_state, describe=describe,
            )
        except WaitFailed as exc:
            raise HandoffError(step, str(exc), events() if events else ()) from exc
        except WaitTimeout as exc:
            raise HandoffError(step, str(exc), events() if events else ()) from exc


@contextmanager
def step_errors(step: str) -> Iterator[None]:
    """Translate the client's errors raised inside ``step`` into :class:`HandoffError` (keeping the cause)."""
    try:
        yield
    except HandoffError:
        raise
    except (TLSVerificationError, AuthenticationError) as exc:
        raise HandoffError(step, str(exc)) from exc
    except PaletteProvisionError as exc:
        raise HandoffError(step, str(exc)) from exc


class CheckFailed(HandoffError):
    """A validation or pack check failed: a :class:`HandoffError` naming the check's step (``.step``), whose
    ``.evidence`` holds the evidence gathered so far in this run, the failed check's entry (``failed: True``) last."""

    def __init__(self, error: HandoffError, evidence: Sequence[dict[str, Any]]) -> None:
        self.step, self.events, self.evidence = error.step, list(error.events), list(evidence)
        PaletteProvisionError.__init__(self, str(error))


def record_evidence(session: Session, check: str, asked: str, answered: str, **detail: Any) -> dict[str, Any]:
    """Record a check's evidence (what was asked, what answered, when) in the journal; return the entry."""
    entry = {"check": check, "asked": asked, "answered": answered, "at": time.time(), **detail}
    session.context.journal.add_evidence(GLOBAL, check, entry)
    return entry


def run_check(
    session: Session, name: str, asked: str, action: Callable[[], dict[str, Any]], evidence: list[dict[str, Any]],
    *, always: bool = True,
) -> dict[str, Any]:
    """Run the journaled check ``name``; its evidence joins ``evidence``. When it fails, a failed entry (what was
    asked, our error's words as the answer, when) is recorded too, the journal's failed step keeps the evidence so
    far, and a :class:`CheckFailed` naming ``name`` is raised (its cause the original error's)."""
    try:
        data = session.context.run_step(name, action, always=always)
    except PaletteProvisionError as exc:
        said = str(exc).removeprefix(f"{exc.step}: ") if isinstance(exc, HandoffError) else str(exc)
        error = exc if isinstance(exc, HandoffError) and exc.step == name else HandoffError(name, said)
        entry = record_evidence(session, name, asked, said[:400], failed=True)
        evidence.append(entry)
        journal = session.context.journal
        record = journal.step(name, GLOBAL)
        journal.fail(name, GLOBAL, str(error), {**(record.data if record is not None else {}), "evidence": evidence})
        raise CheckFailed(error, evidence) from (exc.__cause__ if isinstance(exc, HandoffError) and exc.__cause__
                                                 else exc)  # fmt: skip
    if "evidence" in data:
        evidence.append(data["evidence"])
    return data
