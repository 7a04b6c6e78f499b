"""Measurements for tests and benchmarks.

Peak memory is read from ``VmHWM`` in ``/proc/<pid>/status``, not from ``getrusage().ru_maxrss``: Linux keeps
``ru_maxrss`` across ``execve``, so a child started by a large process (a pytest run that loaded pyVmomi, say)
reports its parent's peak, not its own. ``VmHWM`` belongs to the process's own address space and starts afresh at
exec. Standard library only.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["peak_rss_kib"]


def peak_rss_kib(pid: int | str = "self") -> int:
    """Peak resident set size of process ``pid`` (default: this one), in KiB.

    Raises:
        RuntimeError: ``/proc`` has no ``VmHWM`` for it (not Linux, or a kernel thread).
    """
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")
