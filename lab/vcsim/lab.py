"""Start and stop the lab's vcsim, and talk to it with pyVmomi.

``start_vcsim`` builds the simulator if needed (``build.sh``, a no-op when up to date), starts it with a fresh
certificate and an ESXi-style ``datastore1`` on a real directory, waits until it answers, and returns a
:class:`VcsimHandle`. The password travels in the child's environment (``VCSIM_PASSWORD``), never in argv.

CLI (for the README demo; ``PYTHONPATH=lab``)::

    python -m vcsim.lab up --workdir /tmp/pplab-vc [--port 8989] [--username admin] [--watcher]
    python -m vcsim.lab status --workdir /tmp/pplab-vc
    python -m vcsim.lab down --workdir /tmp/pplab-vc

``up`` takes the password from ``VCSIM_PASSWORD`` or generates one into ``<workdir>/password`` (mode 0600), and
writes ``<workdir>/state.json`` (URL, thumbprint, certificate, datastore directory, pids; never the password).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim, vmodl

__all__ = [
    "LAB_DIR",
    "VCSIM_BINARY",
    "VcsimError",
    "VcsimHandle",
    "VcsimTaskError",
    "build_vcsim",
    "connect",
    "connect_to",
    "disconnect",
    "start_vcsim",
    "wait_task",
]

#: ``lab/`` of the repository; the binary and the GOPATH copy live under ``lab/build/`` (gitignored).
LAB_DIR = Path(__file__).resolve().parent.parent
VCSIM_BINARY = LAB_DIR / "build" / "vcsim"
BUILD_SCRIPT = Path(__file__).resolve().parent / "build.sh"
STATE_FILE = "state.json"

# pyVim's connect functions and pyVmomi's data-object constructors carry no annotations; typed aliases keep
# mypy --strict honest everywhere else instead of sprinkling ignores.
_smart_connect: Callable[..., Any] = SmartConnect
_disconnect: Callable[..., Any] = Disconnect
PC: Any = vmodl.query.PropertyCollector


class VcsimError(RuntimeError):
    """The simulator could not be built, started, reached or stopped. The message says what to fix."""


class VcsimTaskError(VcsimError):
    """A vSphere task ended in ``error``; ``fault`` is the ``vmodl.MethodFault`` it carried."""

    def __init__(self, message: str, fault: Any = None) -> None:
        super().__init__(message)
        self.fault = fault


def build_vcsim(timeout: float = 600.0) -> Path:
    """Run ``build.sh`` (idempotent, ~0.03 s when up to date, ~30 s cold) and return the binary's path."""
    try:
        proc = subprocess.run(["sh", str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise VcsimError(f"building vcsim took more than {timeout:.0f} s") from exc
    if proc.returncode != 0 or not VCSIM_BINARY.is_file():
        raise VcsimError(
            f"building vcsim failed (exit {proc.returncode}); needs apt packages golang-go "
            f"golang-github-vmware-govmomi-dev patch:\n{proc.stdout}{proc.stderr}"
        )
    return VCSIM_BINARY


@dataclass
class VcsimHandle:
    """A running vcsim. Use as a context manager, or call :meth:`stop`."""

    url: str
    """SDK endpoint, ``https://127.0.0.1:<port>/sdk``."""
    host: str
    port: int
    username: str
    password: str = field(repr=False)
    thumbprint: str
    """SHA-256 of the served certificate's DER, upper-case colon-separated hex (vSphere's notation)."""
    cert_path: Path
    """The served certificate (PEM, self-signed, valid for 127.0.0.1/localhost): a CA bundle for pinning tests."""
    datastore: str
    datastore_dir: Path
    """The directory behind ``[datastore]``: ``[datastore1] a/b.iso`` is ``datastore_dir / "a/b.iso"``."""
    workdir: Path
    log_path: Path
    pid: int
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    """Set when this process started vcsim; ``None`` for a handle rebuilt from a state file."""

    def is_running(self) -> bool:
        """True while the simulator process exists (and is not a zombie)."""
        if self.process is not None:
            return self.process.poll() is None
        return _pid_alive(self.pid)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (vcsim cleans up its temporary datastores), then SIGKILL after ``timeout``. Idempotent."""
        self._signal(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL at once, as in "the simulator died mid-upload"; leaves the datastore directory as it was."""
        self._signal(signal.SIGKILL, 10.0)

    def _signal(self, sig: signal.Signals, timeout: float) -> None:
        if not self.is_running():
            self._reap()
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)
        deadline = time.monotonic() + timeout
        while self.is_running() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.is_running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            while self.is_running():
                time.sleep(0.05)
        self._reap()

    def _reap(self) -> None:
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=5)

    def ssl_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts exactly this server's certificate."""
        return ssl.create_default_context(cafile=str(self.cert_path))

    def datastore_path(self, relative: str) -> str:
        """``"iso/a.iso"`` -> ``"[datastore1] iso/a.iso"``."""
        return f"[{self.datastore}] {relative}"

    def log_tail(self, lines: int = 30) -> str:
        """The end of vcsim's own log (stdout and stderr), for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> VcsimHandle:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            # Field 3 is the state; a zombie ("Z") has exited already.
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def start_vcsim(
    workdir: Path,
    port: int = 0,
    username: str = "admin",
    password: str = "",
    *,
    host: str = "127.0.0.1",
    datastore: str = "datastore1",
    datastore_dir: Path | None = None,
    machines: int = 0,
    delay_ms: int = 0,
    extra_args: tuple[str, ...] = (),
    build: bool = True,
    timeout: float = 30.0,
) -> VcsimHandle:
    """Start vcsim and wait until it answers TLS with the certificate it wrote.

    Args:
        workdir: holds the log, certificate and ready file; ``datastore_dir`` defaults to ``workdir/datastore``.
        port: TCP port on ``host``; 0 picks a free one (read it from the handle).
        username, password: the only accepted credentials (anything else gets ``InvalidLogin``). An empty
            password is refused: vcsim would then accept any login.
        machines: vcsim's ``-vm`` (model VMs per resource pool; vcsim's default is 2, the lab's 0).
        delay_ms: added to every SOAP method (timeout tests).
        extra_args: more vcsim flags, e.g. ``("-trace",)``.
        build: run ``build.sh`` first (a no-op when up to date).

    Raises:
        VcsimError: build failure, a process that exits early (its log tail is in the message), or no answer
            within ``timeout``.
    """
    if not password:
        raise VcsimError("start_vcsim needs a password: with none, vcsim accepts any credentials")
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    ds_dir = (datastore_dir or workdir / "datastore").resolve()
    ds_dir.mkdir(parents=True, exist_ok=True)
    binary = build_vcsim() if build else VCSIM_BINARY
    if not binary.is_file():
        raise VcsimError(f"{binary} missing: run lab/vcsim/build.sh")
    cert, ready, log_path = workdir / "vcsim.pem", workdir / "vcsim-ready.json", workdir / "vcsim.log"
    for stale in (cert, ready):
        stale.unlink(missing_ok=True)
    args = [
        str(binary), "-l", f"{host}:{port}", "-username", username,
        "-datastore-name", datastore, "-datastore-dir", str(ds_dir),
        "-cert-file", str(cert), "-ready-file", str(ready),
        "-vm", str(machines), "-delay", str(delay_ms), *extra_args,
    ]  # fmt: skip
    env = dict(os.environ, VCSIM_PASSWORD=password)  # the environment, not argv: ps shows argv to everyone
    with open(log_path, "ab") as log:
        # A new session: Ctrl-C in a terminal running the tests or the CLI must not take the simulator down
        # half-way; stop() / down do it in order.
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, start_new_session=True)
    handle: VcsimHandle | None = None
    try:
        info = _wait_ready(proc, ready, log_path, timeout)
        handle = VcsimHandle(
            url=str(info["url"]), host=host, port=int(info["port"]), username=username, password=password,
            thumbprint=str(info["thumbprint_sha256"]), cert_path=cert, datastore=datastore, datastore_dir=ds_dir,
            workdir=workdir, log_path=log_path, pid=proc.pid, process=proc,
        )  # fmt: skip
        _check_served_certificate(handle, timeout=5.0)
        return handle
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()
        raise


def _wait_ready(proc: subprocess.Popen[bytes], ready: Path, log_path: Path, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise VcsimError(f"vcsim exited with {proc.returncode} before it was ready:\n{tail}")
        if ready.exists():
            data: dict[str, Any] = json.loads(ready.read_text())
            return data
        time.sleep(0.05)
    raise VcsimError(f"vcsim wrote no ready file within {timeout:.0f} s (log: {log_path})")


def _check_served_certificate(handle: VcsimHandle, timeout: float) -> None:
    """One verified TLS handshake: proves the port answers and serves the certificate we were told about."""
    with (
        socket.create_connection((handle.host, handle.port), timeout=timeout) as raw,
        handle.ssl_context().wrap_socket(raw, server_hostname=handle.host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    digest = hashlib.sha256(der or b"").hexdigest().upper()
    served = ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))
    if served != handle.thumbprint:
        raise VcsimError(f"vcsim serves {served}, its ready file says {handle.thumbprint}")


def connect(handle: VcsimHandle, *, verify: bool = True) -> vim.ServiceInstance:
    """A pyVmomi session to ``handle`` (TLS verified against its certificate unless ``verify=False``)."""
    return connect_to(handle.host, handle.port, handle.username, handle.password, handle.cert_path if verify else None)


def connect_to(host: str, port: int, username: str, password: str, cafile: Path | None) -> vim.ServiceInstance:
    """A pyVmomi session; ``cafile`` is the certificate to trust (``None`` disables verification, lab only).

    Raises:
        vim.fault.InvalidLogin: wrong credentials.
        OSError: nothing answers, or the certificate does not verify.
    """
    kwargs: dict[str, Any] = (
        {"sslContext": ssl.create_default_context(cafile=str(cafile))}
        if cafile is not None
        else {"disableSslCertValidation": True}
    )
    si: vim.ServiceInstance = _smart_connect(host=host, port=port, user=username, pwd=password, **kwargs)
    return si


def disconnect(si: vim.ServiceInstance) -> None:
    """Log out, ignoring a simulator that is already gone."""
    with contextlib.suppress(Exception):
        _disconnect(si)


def wait_task(si: vim.ServiceInstance, task: vim.Task, timeout: float = 60.0, interval: float = 0.2) -> Any:
    """Wait for ``task`` by reading ``info.state/error/result`` through the PropertyCollector; return the result.

    Why not ``pyVim.task.WaitForTask``: against vcsim it raises ``TypeError`` on FileManager tasks (their
    ``info.entity`` is not a ManagedEntity). Reading only the three properties we need avoids that field.

    Raises:
        VcsimTaskError: the task ended in ``error`` (``.fault`` carries the vSphere fault).
        VcsimError: not finished within ``timeout``.
    """
    pc = si.content.propertyCollector
    spec = PC.FilterSpec(
        objectSet=[PC.ObjectSpec(obj=task, skip=False)],
        propSet=[PC.PropertySpec(type=vim.Task, pathSet=["info.state", "info.error", "info.result"])],
    )
    deadline = time.monotonic() + timeout
    state: str | None = None
    while True:
        result = pc.RetrievePropertiesEx([spec], PC.RetrieveOptions())
        props = {p.name: p.val for p in result.objects[0].propSet} if result and result.objects else {}
        state = props.get("info.state")
        if state == vim.TaskInfo.State.success:
            return props.get("info.result")
        if state == vim.TaskInfo.State.error:
            fault = props.get("info.error")
            raise VcsimTaskError(f"task {task._moId} failed: {getattr(fault, 'msg', None) or fault}", fault)
        if time.monotonic() >= deadline:
            raise VcsimError(f"task {task._moId} still {state} after {timeout:.0f} s")
        time.sleep(interval)


# ---------------------------------------------------------------------------------------------------------- CLI


def _write_state(workdir: Path, state: dict[str, Any]) -> None:
    tmp = workdir / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(workdir / STATE_FILE)


def _read_state(workdir: Path) -> dict[str, Any]:
    path = workdir / STATE_FILE
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise VcsimError(f"no {path}: is the lab up (python -m vcsim.lab up --workdir {workdir})?") from exc
    return data


def _is_our_process(pid: int, marker: str) -> bool:
    """Guard against a recycled pid: only signal a process whose command line names what we started."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return marker in cmdline and _pid_alive(pid)


def _terminate(pid: int, marker: str, timeout: float = 15.0) -> bool:
    if not _is_our_process(pid, marker):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _is_our_process(pid, marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _is_our_process(pid, marker):
        os.kill(pid, signal.SIGKILL)
    return True


def _cmd_up(ns: argparse.Namespace) -> int:
    workdir: Path = ns.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    state_path = workdir / STATE_FILE
    if state_path.exists() and _is_our_process(int(_read_state(workdir)["vcsim_pid"]), str(VCSIM_BINARY)):
        print(f"already up: {state_path}", file=sys.stderr)
        return 1
    password = os.environ.get("VCSIM_PASSWORD", "")
    password_file = workdir / "password"
    if not password:
        password = secrets.token_urlsafe(18)
        password_file.touch(mode=0o600)
        password_file.chmod(0o600)
        password_file.write_text(password + "\n")
    handle = start_vcsim(workdir, ns.port, ns.username, password, machines=ns.vm, delay_ms=ns.delay)
    state: dict[str, Any] = {
        "url": handle.url, "host": handle.host, "port": handle.port, "username": handle.username,
        "password_file": str(password_file) if password_file.exists() else None,
        "thumbprint": handle.thumbprint, "cert_path": str(handle.cert_path), "datastore": handle.datastore,
        "datastore_dir": str(handle.datastore_dir), "vcsim_pid": handle.pid, "log": str(handle.log_path),
        "watcher_pid": None,
    }  # fmt: skip
    if ns.watcher:
        # A fresh vcsim reuses managed-object ids (vm-61...): a previous run's disks must not boot for new VMs.
        shutil.rmtree(workdir / "watcher", ignore_errors=True)
        state["watcher_pid"] = _spawn_watcher(workdir, password)
    _write_state(workdir, state)
    print(json.dumps(state, indent=2))
    return 0


def _spawn_watcher(workdir: Path, password: str) -> int:
    log = open(workdir / "watcher.log", "ab")  # noqa: SIM115 - handed to the detached child
    with log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vcsim.watcher", "--lab-state", str(workdir / STATE_FILE),
             "--state-dir", str(workdir / "watcher")],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            env=dict(os.environ, VCSIM_PASSWORD=password, PYTHONPATH=_pythonpath()),
        )  # fmt: skip
    return proc.pid


def _pythonpath() -> str:
    current = os.environ.get("PYTHONPATH", "")
    return f"{LAB_DIR}{os.pathsep}{current}" if current else str(LAB_DIR)


def _cmd_down(ns: argparse.Namespace) -> int:
    workdir: Path = ns.workdir.resolve()
    state = _read_state(workdir)
    if state.get("watcher_pid"):
        _terminate(int(state["watcher_pid"]), "vcsim.watcher", timeout=60.0)  # it stops its guests first
    stopped = _terminate(int(state["vcsim_pid"]), str(VCSIM_BINARY))
    (workdir / STATE_FILE).unlink(missing_ok=True)
    print("stopped" if stopped else "was not running")
    return 0


def _cmd_status(ns: argparse.Namespace) -> int:
    state = _read_state(ns.workdir.resolve())
    up = _is_our_process(int(state["vcsim_pid"]), str(VCSIM_BINARY))
    watcher = bool(state.get("watcher_pid")) and _is_our_process(int(state["watcher_pid"]), "vcsim.watcher")
    print(json.dumps({"vcsim_running": up, "watcher_running": watcher, **state}, indent=2))
    return 0 if up else 1


def main(argv: list[str] | None = None) -> int:
    """``python -m vcsim.lab up|down|status --workdir DIR``."""
    parser = argparse.ArgumentParser(prog="python -m vcsim.lab", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("up", "down", "status"):
        p = sub.add_parser(name)
        p.add_argument("--workdir", type=Path, required=True)
        if name == "up":
            p.add_argument("--port", type=int, default=8989)
            p.add_argument("--username", default="admin")
            p.add_argument("--vm", type=int, default=0, help="vcsim model VMs per resource pool")
            p.add_argument("--delay", type=int, default=0, help="ms added to every SOAP call")
            p.add_argument("--watcher", action="store_true", help="also start the watcher (boots VMs in QEMU)")
    ns = parser.parse_args(argv)
    try:
        result: int = {"up": _cmd_up, "down": _cmd_down, "status": _cmd_status}[ns.command](ns)
    except VcsimError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return result


if __name__ == "__main__":
    sys.exit(main())
