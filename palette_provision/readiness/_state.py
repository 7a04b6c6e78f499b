"""One node's climb in progress: its deadline, its evidence, its one way to connect and to wait."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from palette_provision.errors import (
    ReadinessError,
    TransientError,
    WaitTimeout,
)
from palette_provision.journal import Journal
from palette_provision.readiness._model import _CONNECT_TIMEOUT_S, POLL_BACKOFF, ReadinessTarget, Rung, T
from palette_provision.waiting import wait_for


def _open_tcp(address: str, port: int, timeout: float) -> socket.socket:
    """Open one TCP connection (the one place the ladder connects: benchmarks count here)."""
    return socket.create_connection((address, port), timeout=timeout)


def _transient(what: str, exc: BaseException) -> TransientError:
    # Type and message only: vendor messages here carry addresses and protocol text, never our secrets.
    return TransientError(f"{what}: {type(exc).__name__}: {exc}".rstrip(": "))


@dataclass
class _Climb:
    target: ReadinessTarget
    journal: Journal | None
    on_rung: Callable[[Rung], None] | None
    clock: Callable[[], float]
    sleep: Callable[[float], None]
    start: float
    deadline: float
    log: Any
    rungs: list[Rung] = field(default_factory=list)
    connections: int = 0
    attempts: int = 0

    @property
    def last_rung(self) -> str:
        return self.rungs[-1].name if self.rungs else "none"

    def remaining(self, cap: float) -> float:
        """A per-attempt timeout: ``cap``, bounded by the time left (never below 0.5 s)."""
        return max(0.5, min(cap, self.deadline - self.clock()))

    def connect(self, address: str, port: int, timeout: float) -> socket.socket:
        self.connections += 1
        return _open_tcp(address, port, timeout)

    def connect_or_transient(self, address: str, port: int) -> socket.socket:
        try:
            return self.connect(address, port, self.remaining(_CONNECT_TIMEOUT_S))
        except OSError as exc:
            raise _transient("TCP connect", exc) from exc

    def reached(self, name: str, detail: dict[str, Any]) -> None:
        rung = Rung(name, time.time(), self.clock() - self.start, self.attempts, detail)
        self.rungs.append(rung)
        if self.journal is not None:
            self.journal.add_evidence(self.target.node, name, {**detail, "elapsed_s": round(rung.elapsed_s, 3)})
        self.log.info("readiness_rung_reached", rung=name, elapsed_s=round(rung.elapsed_s, 3), **detail)
        if self.on_rung is not None:
            self.on_rung(rung)

    def wait(self, probe: Callable[[], T], what: str) -> T:
        """Poll ``probe`` until it returns, retrying :class:`TransientError`, under the node's deadline."""
        self.attempts = 0

        def counted() -> T:
            self.attempts += 1
            try:
                return probe()
            except TransientError as exc:
                self.log.debug("readiness_retry", waiting_for=what, attempt=self.attempts, error=str(exc))
                raise

        try:
            return wait_for(
                counted,
                what=what,
                timeout=max(0.0, self.deadline - self.clock()),
                until=lambda _: True,
                retry_on=(TransientError,),
                backoff=POLL_BACKOFF,
                clock=self.clock,
                sleep=self.sleep,
            )
        except WaitTimeout as exc:
            last = exc.last_error
            last_text = f"{last}" if last is not None else None
            self.log.warning("readiness_timed_out", waiting_for=what, last_rung=self.last_rung, last_error=last_text)
            raise ReadinessError(
                self.target.node,
                self.last_rung,
                f"not ready after {exc.waited_s:.1f}s: still waiting for {what}"
                + (f"; last error: {last_text}" if last_text else ""),
                last_error=last_text,
            ) from exc
