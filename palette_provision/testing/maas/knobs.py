"""Fault and timing knobs of the MAAS region simulator: set at start (``--knobs``) and at runtime
(``POST /__sim__/knobs``)."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["KnobBox", "Knobs"]


@dataclass
class Knobs:
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
    drop_upload_after_bytes: int = 65536
    """``partial`` mode: bytes of the chunk read before the connection is closed (at most the chunk size - 1)."""
    drop_upload_mode: str = "partial"
    """``partial``: read part of the chunk, keep none of it, close. ``after_append``: keep the whole chunk, then close
    without answering (the answer is lost, the data is not)."""
    timestamp_window_s: float = 300.0
    """Largest accepted difference between ``oauth_timestamp`` and the simulator's clock."""

    def to_json(self) -> dict[str, Any]:
        """Return the knobs as a JSON-ready dict."""
        return dataclasses.asdict(self)


_COUNTERS = ("drop_next", "fail_next")
_CHOICES = {"drop_upload_mode": ("partial", "after_append")}


def _coerce(name: str, current: object, value: object) -> object:
    """Check ``value`` against the type of the knob's current value (an int is accepted for a float)."""
    if name in _COUNTERS:
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0 for k, v in value.items()
        ):
            raise ValueError(f"knob {name!r} must map path prefixes to non-negative integers")
        return dict(value)
    if isinstance(current, list):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"knob {name!r} must be a list of strings")
        return list(value)
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise ValueError(f"knob {name!r} must be a boolean")
        return value
    if isinstance(current, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"knob {name!r} must be a non-negative number")
        return float(value)
    if isinstance(current, int):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"knob {name!r} must be a non-negative integer")
        return value
    if not isinstance(value, str):
        raise ValueError(f"knob {name!r} must be a string")
    if name in _CHOICES and value not in _CHOICES[name]:
        raise ValueError(f"knob {name!r} must be one of {list(_CHOICES[name])}")
    return value


class KnobBox:
    """Thread-safe holder of the current :class:`Knobs`; readers get a snapshot copy."""

    def __init__(self, initial: Mapping[str, Any] | None = None) -> None:
        self._lock = threading.Lock()
        self._knobs = Knobs()
        if initial:
            self.update(initial)

    def snapshot(self) -> Knobs:
        """Return a copy of the current knobs."""
        with self._lock:
            return dataclasses.replace(
                self._knobs,
                fail_deploy_ids=list(self._knobs.fail_deploy_ids),
                drop_next=dict(self._knobs.drop_next),
                fail_next=dict(self._knobs.fail_next),
            )

    def update(self, changes: Mapping[str, Any], replace: bool = False) -> Knobs:
        """Apply ``changes`` (unknown names or wrong types raise ``ValueError``; nothing is applied then).

        ``drop_next`` / ``fail_next`` merge per key (a count of 0 removes the key). With ``replace``, every knob not in
        ``changes`` returns to its default first.
        """
        names = {f.name for f in dataclasses.fields(Knobs)}
        with self._lock:
            staged: dict[str, object] = {}
            for name, value in changes.items():
                if name not in names:
                    raise ValueError(f"unknown knob {name!r}; known: {sorted(names)}")
                staged[name] = _coerce(name, getattr(Knobs(), name), value)
            if replace:
                self._knobs = Knobs()
            for name, value in staged.items():
                if name in _COUNTERS and isinstance(value, dict):
                    counters: dict[str, int] = getattr(self._knobs, name)
                    for key, count in value.items():
                        if count == 0:
                            counters.pop(key, None)
                        else:
                            counters[key] = count
                else:
                    setattr(self._knobs, name, value)
        return self.snapshot()

    def take(self, kind: str, path: str, method: str) -> bool:
        """Consume one ``drop_next`` / ``fail_next`` count matching the request; True if one applied.

        A key is a path prefix (any method) or ``"METHOD /path/prefix"``; ``?op=NAME`` may end the key to hit one
        operation only (``"POST /MAAS/api/2.0/machines/?op=allocate"``). ``path`` is the request's path plus its
        ``?op=`` when it has one. The longest matching key wins.
        """
        with self._lock:
            counters: dict[str, int] = getattr(self._knobs, kind)
            for key in sorted(counters, key=len, reverse=True):
                want_method, _, prefix = key.rpartition(" ")
                if want_method and want_method.upper() != method.upper():
                    continue
                if path.startswith(prefix):
                    counters[key] -= 1
                    if counters[key] <= 0:
                        del counters[key]
                    return True
        return False

    def take_upload_drop(self) -> Knobs | None:
        """Consume one ``drop_upload_next`` count; the knobs in force then, or ``None`` when none is left."""
        with self._lock:
            if self._knobs.drop_upload_next <= 0:
                return None
            self._knobs.drop_upload_next -= 1
        return self.snapshot()
