"""Fault and timing knobs of the MAAS region simulator: set at start (``--knobs``) and at runtime
(``POST /__sim__/knobs``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from palette_provision.testing import _simhttp

__all__ = ["KnobBox", "Knobs"]


@dataclass
class Knobs(_simhttp.KnobSet):
    """Every tunable of the simulated region. Times are seconds; defaults are short (a simulator for tests)."""

    deploy_delay_s: float = 0.5
    """Time a machine spends in Deploying (with an on-deploy hook: at least this long, and until the hook exits)."""
    release_delay_s: float = 0.0
    """Time a machine spends in Releasing before Ready (release without erase)."""
    erase_delay_s: float = 0.3
    """Time a machine spends in Disk erasing before Ready (release with ``erase``)."""
    fail_deploy: bool = False
    """Every deployment ends in Failed deployment."""
    fail_deploy_ids: list[str] = field(default_factory=list)
    """Deployments of these machines (system ids or hostnames) end in Failed deployment."""
    fail_deploy_message: str = "Installation failed (refer to the installation log for more information)."
    deploy_allocates_ready: bool = False
    """Real MAAS allocates a Ready machine implicitly on deploy; by default the simulator answers 409 instead, so a
    client that skips ``allocate`` is caught."""
    latency_s: float = 0.0
    """Sleep this long before answering every request whose path starts with ``latency_prefix``."""
    latency_prefix: str = "/MAAS/"
    drop_next: dict[str, int] = field(default_factory=dict)
    """``{key: n}``: close the connection without answering the next n matching requests."""
    drop_prefix: str = ""
    """While non-empty: close the connection without answering every request under this path prefix."""
    fail_next: dict[str, int] = field(default_factory=dict)
    """``{key: n}``: answer the next n matching requests with 503 (text body)."""
    drop_upload_next: int = 0
    """Cut the next n boot-resource upload PUTs (see ``drop_upload_mode``)."""
    drop_upload_skip: int = 0
    """Let this many upload PUTs through untouched before ``drop_upload_next`` starts cutting (a later chunk)."""
    drop_upload_after_bytes: int = 65536
    """``partial`` mode: bytes of the chunk read before the connection is closed (at most the chunk size - 1)."""
    drop_upload_mode: str = "partial"
    """``partial``: read part of the chunk, keep none of it, close. ``after_append``: keep the whole chunk, then close
    without answering (the answer is lost, the data is not)."""
    timestamp_window_s: float = 300.0
    """Largest accepted difference between ``oauth_timestamp`` and the simulator's clock."""


_CHOICES = {"drop_upload_mode": ("partial", "after_append")}


class KnobBox(_simhttp.KnobBox[Knobs]):
    """Thread-safe holder of the current :class:`Knobs`; readers get a snapshot copy.

    A ``drop_next`` / ``fail_next`` key may end in ``?op=NAME`` to hit one operation only
    (``"POST /MAAS/api/2.0/machines/?op=allocate"``): the server matches keys against the path plus its ``?op=``.
    """

    nonnegative_ints: ClassVar[bool] = True

    def __init__(self, initial: Mapping[str, Any] | None = None) -> None:
        super().__init__(Knobs, initial)

    def check(self, name: str, value: Any) -> None:
        """The string knobs that take one of a few values."""
        if name in _CHOICES and value not in _CHOICES[name]:
            raise ValueError(f"knob {name!r} must be one of {list(_CHOICES[name])}")

    def take_upload_drop(self) -> Knobs | None:
        """Consume one ``drop_upload_next`` count; the knobs in force then, or ``None`` when none is left."""
        with self._lock:
            if self._knobs.drop_upload_next <= 0:
                return None
            if self._knobs.drop_upload_skip > 0:
                self._knobs.drop_upload_skip -= 1
                return None
            self._knobs.drop_upload_next -= 1
        return self.snapshot()
