"""IPMI BMCs for the lab: one OpenIPMI ``ipmi_sim`` per node, whose chassis really boots a QEMU guest.

:class:`IpmiBmc` writes ``lan.conf`` and ``node.emu`` into a fresh state dir of its own, writes the node's
:class:`~bmclab.chassis.NodeConfig`, and starts ``ipmi_sim`` on a UDP port (127.0.0.1 and a free port by default)
with one admin user and :mod:`bmclab.chassis` as its ``chassis_control`` program. IPMI power on/off, reset and the
boot device then drive a pplab guest; tests read what reached the chassis with :meth:`IpmiBmc.chassis_state`, and
count open sessions with :meth:`IpmiBmc.active_sessions` (``ipmitool``). :class:`IpmiLab` runs one BMC per node.

By hand (root; ``PYTHONPATH=lab``; ``BMC_PASSWORD`` sets the password, default ``password``)::

    python -m bmclab.ipmi --disk /tmp/n1.raw --create-disk 300G --mac 52:54:00:00:01:01 \\
        --iso lab/build/appliance.iso --seed seed.iso --port 9001
    ipmitool -I lanplus -C 3 -H 127.0.0.1 -p 9001 -U admin -P password chassis bootdev cdrom
    ipmitool -I lanplus -C 3 -H 127.0.0.1 -p 9001 -U admin -P password power on
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from types import TracebackType
from typing import Any

from pplab._cmd import LabError, kill_group, require_tool
from pplab.disk import create_disk

from bmclab import chassis
from bmclab.chassis import NodeConfig

__all__ = ["IpmiBmc", "IpmiLab", "LabError", "NodeConfig", "main"]

LAB_DIR = Path(__file__).resolve().parent.parent
# lan.conf's tokenizer splits on blanks before it looks at quotes ("ASCII password or username doesn't end in '"'").
# IPMI allows 16-byte user names and (2.0) 20-byte passwords, but ipmi_sim accepts a 16-character name or a
# 20-character password without error and then never matches it (a terminating NUL kept in the field, it seems).
_CREDENTIAL_RE = re.compile(r"^[!#-\[\]-~]{1,15}$")  # printable ASCII but blank, '"' and '\\'
_PASSWORD_RE = re.compile(r"^[!#-\[\]-~]{1,19}$")
_SAFE_PATH_RE = re.compile(r"^[\w./+-]+$")
_RMCP_PING = bytes([0x06, 0x00, 0xFF, 0x06, 0x00, 0x00, 0x11, 0xBE, 0x80, 0x01, 0x00, 0x00])
_START_TIMEOUT_S = 10.0

_NODE_EMU = """\
mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
sel_enable 0x20 1000 0x0a
mc_enable 0x20
"""


def free_udp_port(address: str = "127.0.0.1") -> int:
    """A UDP port that is free on ``address`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((address, 0))
        port: int = sock.getsockname()[1]
        return port


def rmcp_ping(address: str, port: int, timeout: float = 0.5) -> bool:
    """True if an RMCP/ASF presence ping gets a pong (the BMC listens; no session, no credentials)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(_RMCP_PING, (address, port))
            data = sock.recv(512)
        except OSError:
            return False
    return len(data) > 8 and data[3] == 0x06 and data[8] == 0x40


class IpmiBmc:
    """One IPMI BMC (``ipmi_sim``) for one node; a context manager (enter starts it, exit stops BMC and guest).

    ``address``/``port``: where it listens on UDP (default 127.0.0.1 and a free port). ``workdir``: where its fresh
    state dir is made (default the system temp dir); the state dir is kept after :meth:`stop` (console logs).
    """

    def __init__(
        self,
        node: NodeConfig,
        *,
        address: str = "127.0.0.1",
        port: int | None = None,
        username: str = "admin",
        password: str,
        workdir: Path | None = None,
    ) -> None:
        """Check the settings; nothing runs until :meth:`start`."""
        if not _CREDENTIAL_RE.match(username):
            raise LabError("BMC user name: 1-15 printable ASCII characters, no blank, '\"' or backslash")
        if not _PASSWORD_RE.match(password):
            raise LabError("BMC password: 1-19 printable ASCII characters, no blank, '\"' or backslash")
        self.node = node
        self.address = address
        self.port = port or 0
        self.username = username
        self.password = password
        self.workdir = workdir
        self.state_dir: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None

    # ---------------------------------------------------------------------------------------------- lifecycle

    @property
    def node_dir(self) -> Path:
        """The chassis program's node state dir (``node.json``, ``chassis.json``, console logs by default)."""
        if self.state_dir is None:
            raise LabError("the BMC was never started")
        return self.state_dir / "node"

    def start(self) -> IpmiBmc:
        """Write the configuration into a fresh state dir and start ipmi_sim; return once it answers a ping."""
        if self.process is not None:
            raise LabError(f"BMC of {self.node.name} already started")
        ipmi_sim = require_tool("ipmi_sim", "openipmi")
        if self.workdir is not None:
            self.workdir.mkdir(parents=True, exist_ok=True)
        # Fresh every time: ipmi_sim reads the users of lan.conf only when its state dir holds none yet.
        self.state_dir = Path(tempfile.mkdtemp(prefix=f"bmc-{self.node.name}-", dir=self.workdir))
        chassis.write_node_config(self.node_dir, self.node)
        program = f"{sys.executable} -m bmclab.chassis {self.node_dir}"
        if not all(_SAFE_PATH_RE.match(part) for part in program.split()):
            # ipmi_sim hands the line to sh -c, and lan.conf quoting has no escapes.
            raise LabError(f"chassis program line {program!r} needs plain paths (no blanks or quotes)")
        self.port = self.port or free_udp_port(self.address)
        (self.state_dir / "lan.conf").write_text(self._lan_conf(program))
        (self.state_dir / "node.emu").write_text(_NODE_EMU)
        (self.state_dir / "sim").mkdir()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(LAB_DIR), env.get("PYTHONPATH")) if p)
        env["PATH"] = os.pathsep.join(p for p in (env.get("PATH"), "/usr/sbin", "/sbin") if p)
        # Under bmclab.reaper, the subreaper of the guests the chassis program starts: they must not be ipmi_sim's
        # (a guest's exit would interrupt ipmi_sim reading the chassis program's answer: see bmclab.reaper).
        argv = [sys.executable, "-m", "bmclab.reaper", ipmi_sim, "-c", "lan.conf", "-f", "node.emu", "-s", "sim", "-n"]
        with (self.state_dir / "ipmi_sim.log").open("wb") as log:
            self.process = subprocess.Popen(
                argv, cwd=self.state_dir, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not rmcp_ping(self.address, self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise LabError(f"ipmi_sim for {self.node.name} did not come up on {self.address}:{self.port}: "
                               f"{self.log()[-2000:]}")  # fmt: skip
        return self

    def _lan_conf(self, program: str) -> str:
        auths = "md5 straight"
        return f"""\
name "{self.node.name}"
set_working_mc 0x20
  startlan 1
    addr {self.address} {self.port}
    priv_limit admin
    allowed_auths_callback {auths}
    allowed_auths_user {auths}
    allowed_auths_operator {auths}
    allowed_auths_admin {auths}
    guid {uuid.uuid4().hex}
  endlan
  chassis_control "{program}"
user 2 true "{self.username}" "{self.password}" admin 10 {auths}
"""

    def running(self) -> bool:
        """True while ipmi_sim runs."""
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """Stop the guest, then ipmi_sim; idempotent."""
        if self.state_dir is None or not (self.node_dir / chassis.NODE_FILE).exists():
            kill_group(self.process)
            return
        pid = chassis.load_state(self.node_dir).pid
        chassis.power_off(self.node_dir, "BMC stopped")
        if pid is not None and self.running():
            # Let the reaper reap the killed guest before it goes (an orphan of a dead reaper stays a zombie).
            deadline = time.monotonic() + 2
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        kill_group(self.process)
        chassis.power_off(self.node_dir, "BMC stopped")  # a power-on that raced the stop

    def __enter__(self) -> IpmiBmc:
        """Start the BMC."""
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop the BMC and its guest."""
        self.stop()

    # ---------------------------------------------------------------------------------------------- the node

    def chassis_state(self) -> dict[str, Any]:
        """The chassis program's state (``chassis.json``): ``boot``, ``power_on_count``, ``boots``, ``pid``,
        ``boot_mode``, ``cdroms``, ``console_log``, ``events`` (``{"time", "what"}``)..."""
        return asdict(chassis.load_state(self.node_dir))

    def boot_devices_set(self) -> list[str]:
        """Every boot device that reached the chassis, in order (``set boot <dev>`` events)."""
        return [e["what"].split()[-1] for e in chassis.load_state(self.node_dir).events
                if e["what"].startswith("set boot ")]  # fmt: skip

    def fail_next_reads(self, count: int) -> None:
        """Make the chassis program fail its next ``count`` reads: the BMC answers them with completion code 0xFF."""
        chassis.inject_faults(self.node_dir, gets=count)

    def reads_left_to_fail(self) -> int:
        """How many of the failures :meth:`fail_next_reads` asked for are still to come."""
        return chassis.faults_left(self.node_dir)

    def guest_running(self) -> bool:
        """True while the node's QEMU guest runs (what IPMI ``get power`` reads)."""
        return chassis.guest_running(self.node_dir)

    def wait_guest_stopped(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the guest to end (e.g. the installer's power-off); True if it did."""
        deadline = time.monotonic() + timeout
        while self.guest_running():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)
        return True

    def console_log(self) -> Path | None:
        """The serial console log of the current (or last) boot."""
        path = chassis.load_state(self.node_dir).console_log
        return Path(path) if path else None

    def console(self) -> str:
        """The text of :meth:`console_log` (empty before the first boot)."""
        path = self.console_log()
        return path.read_text(errors="replace") if path and path.exists() else ""

    def insert_media(self, iso: Path | None, seed: Path | None = None) -> None:
        """Change the media the operator inserted (takes effect at the next CD boot); ``None`` ejects."""
        self.node.iso, self.node.seed = iso, seed
        chassis.write_node_config(self.node_dir, self.node)

    def log(self) -> str:
        """ipmi_sim's own output (errors of the chassis program land here too)."""
        if self.state_dir is None:
            return ""
        with contextlib.suppress(FileNotFoundError):
            return (self.state_dir / "ipmi_sim.log").read_text(errors="replace")
        return ""

    # ---------------------------------------------------------------------------------------------- ipmitool

    def ipmitool(self, *args: str, timeout: float = 30) -> str:
        """Run ``ipmitool -I lanplus -C 3`` against this BMC (password through the environment); return stdout.

        ``-C 3``: without a cipher suite, ipmitool probes several and spends ~10 s a command here.
        """
        tool = require_tool("ipmitool", "ipmitool")
        argv = [tool, "-I", "lanplus", "-C", "3", "-H", self.address, "-p", str(self.port), "-U", self.username,
                "-E", *args]  # fmt: skip
        env = {**os.environ, "IPMI_PASSWORD": self.password}
        try:
            proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise LabError(f"ipmitool {' '.join(args)} did not finish within {timeout} s") from exc
        if proc.returncode != 0:
            raise LabError(f"ipmitool {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout

    def active_sessions(self) -> int:
        """Sessions open on the BMC, not counting the one ipmitool opens to ask.

        ipmi_sim has 63 slots and ignores lan.conf's per-user limit, so a client that leaks sessions is never
        locked out as it would be by a real BMC: count them instead.
        """
        out = self.ipmitool("session", "info", "active")
        m = re.search(r"^active sessions\s*:\s*(\d+)", out, re.MULTILINE)
        if not m:
            raise LabError(f"no session count in ipmitool's answer: {out!r}")
        return int(m.group(1)) - 1


class IpmiLab:
    """One :class:`IpmiBmc` per node (same address and credentials, a free port each); a context manager."""

    def __init__(
        self,
        nodes: Sequence[NodeConfig],
        *,
        address: str = "127.0.0.1",
        username: str = "admin",
        password: str,
        workdir: Path | None = None,
    ) -> None:
        """Prepare the BMCs; nothing runs until :meth:`start`."""
        names = [n.name for n in nodes]
        macs = [n.mac.lower() for n in nodes]
        if len(set(names)) != len(names) or len(set(macs)) != len(macs):
            raise LabError("node names and MACs must be unique")
        self.bmcs = [IpmiBmc(n, address=address, username=username, password=password, workdir=workdir)
                     for n in nodes]  # fmt: skip

    def start(self) -> IpmiLab:
        """Start every BMC (stopping those already started if one fails)."""
        try:
            for bmc in self.bmcs:
                bmc.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every BMC and guest; idempotent."""
        for bmc in self.bmcs:
            bmc.stop()

    def __getitem__(self, index: int) -> IpmiBmc:
        """The BMC of the ``index``-th node."""
        return self.bmcs[index]

    def __iter__(self) -> Iterator[IpmiBmc]:
        """The BMCs in node order."""
        return iter(self.bmcs)

    def __len__(self) -> int:
        """Number of nodes."""
        return len(self.bmcs)

    def __enter__(self) -> IpmiLab:
        """Start every BMC."""
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop every BMC and guest."""
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Run one BMC until SIGINT/SIGTERM (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m bmclab.ipmi", description="One lab IPMI BMC (ipmi_sim + QEMU).")
    parser.add_argument("--name", default="node1")
    parser.add_argument("--disk", type=Path, required=True)
    parser.add_argument("--create-disk", metavar="SIZE", help="create a fresh sparse disk of this size first")
    parser.add_argument("--storage-disk", type=Path)
    parser.add_argument("--mac", required=True)
    parser.add_argument("--iso", type=Path)
    parser.add_argument("--seed", type=Path)
    parser.add_argument("--delay", type=int, default=3, help="install delay (s)")
    parser.add_argument("--memory", type=int, default=384, help="guest memory (MiB)")
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="UDP port (default: a free one)")
    parser.add_argument("--user", default="admin")
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args(argv)
    if args.create_disk:
        create_disk(args.disk, args.create_disk)
    node = NodeConfig(
        name=args.name, mac=args.mac.lower(), disk=args.disk.resolve(), memory_mb=args.memory,
        install_delay_s=args.delay, storage_disk=args.storage_disk.resolve() if args.storage_disk else None,
        iso=args.iso.resolve() if args.iso else None, seed=args.seed.resolve() if args.seed else None,
    )  # fmt: skip
    stop = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    bmc = IpmiBmc(node, address=args.address, port=args.port or None, username=args.user,
                  password=os.environ.get("BMC_PASSWORD", "password"), workdir=args.workdir)  # fmt: skip
    with bmc:
        print(f"BMC of {node.name} on {bmc.address}:{bmc.port} (user {bmc.username}); state {bmc.state_dir}",
              flush=True)  # fmt: skip
        while not stop and bmc.running():
            time.sleep(0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
