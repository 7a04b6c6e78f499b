"""Run a program as the child of a subreaper that reaps whatever the program orphans: ``python -m bmclab.reaper
PROGRAM [ARG...]``; exits with the program's status.

Why ipmi_sim runs under it: the chassis program starts QEMU detached and exits, so the guest is orphaned and goes to
the nearest subreaper among its ancestors. When that was ipmi_sim itself, the guest's exit (the installer's power-off)
sent ipmi_sim a SIGCHLD, and ipmi_sim's handler is installed without ``SA_RESTART``: a SIGCHLD landing while ipmi_sim
was reading a chassis program's answer (``popen`` then ``fread``) cut the read short. ipmi_sim then closed the pipe,
the program died writing to it (``BrokenPipeError``), and the client got completion code 0xFF, "Unspecified error",
for a power-state read made at the moment the guest powered off (seen once in CI). With this process as the
subreaper, the guests' exits signal it, not ipmi_sim.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from types import FrameType

__all__ = ["main"]

_PR_SET_CHILD_SUBREAPER = 36


def main(argv: Sequence[str] | None = None) -> int:
    """Become a subreaper, run ``argv`` as a child, reap every child until that one exits; return its status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print("usage: python -m bmclab.reaper PROGRAM [ARG...]", file=sys.stderr)
        return 2
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print(f"bmclab.reaper: prctl failed: {os.strerror(ctypes.get_errno())}", file=sys.stderr)
        return 1
    child = subprocess.Popen(args)  # stdio inherited: the program logs where this process does

    def forward(signum: int, _frame: FrameType | None) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    while True:
        pid, status = os.wait()  # any child: the program, or a guest it orphaned
        if pid == child.pid:
            child.returncode = code = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it
            return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
