"""The state one hand-off run shares between its steps: clients per node, host facts, the leader, waiting."""

from __future__ import annotations

from collections.abc import Callable, Iterator
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
from palette_provision.journal import Fact
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
