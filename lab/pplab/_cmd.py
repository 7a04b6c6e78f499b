"""Running the host tools the lab drives (ip, nft, xorriso, qemu)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Sequence


class LabError(RuntimeError):
    """A lab operation failed; the message names the command and its stderr."""


def require_tool(name: str, package: str) -> str:
    """Return the path of ``name`` or raise :class:`LabError` naming the Debian package."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if path is None:
        raise LabError(f"{name} not found: install the Debian package {package} (lab/install.sh does)")
    return path


def run(argv: Sequence[str], *, check: bool = True, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``argv``, capture its output as text, and raise :class:`LabError` on failure when ``check``."""
    try:
        proc = subprocess.run(list(argv), input=input_text, capture_output=True, text=True, check=False, timeout=60)
    except FileNotFoundError as exc:
        raise LabError(f"{argv[0]} not found") from exc
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{' '.join(argv)} did not finish within 60 s") from exc
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def ns_argv(namespace: str, argv: Sequence[str]) -> list[str]:
    """``argv`` prefixed so that it runs inside network namespace ``namespace``.

    ``ip netns exec`` execs the command itself (no fork), so the pid of the
    resulting process is the command's pid.
    """
    return ["ip", "netns", "exec", namespace, *argv]


def namespace_exists(namespace: str) -> bool:
    """True if the named network namespace exists (``ip netns list``)."""
    out = run(["ip", "netns", "list"]).stdout
    return any(line.split()[0] == namespace for line in out.splitlines() if line.strip())


def link_exists(name: str, namespace: str | None = None) -> bool:
    """True if network interface ``name`` exists (in ``namespace`` if given)."""
    argv = ["ip", "-n", namespace, "link", "show", name] if namespace else ["ip", "link", "show", name]
    return run(argv, check=False).returncode == 0


def kill_group(proc: subprocess.Popen[bytes] | None, grace_s: float = 5.0) -> None:
    """Terminate a process started with ``start_new_session=True`` and its whole group."""
    if proc is None:
        return
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(grace_s)
