"""The whole vSphere lab, for the README demo and the end-to-end tests.

:class:`VsphereLab` brings up, in order: the QEMU lab LAN (``pplab``), vcsim with the watcher that boots powered-on
VMs as QEMU guests of the test appliance, one Palette Local API simulator per node (run inside the ``pplab``
namespace and DNATed to ``<node address>:5080``, so the node's address answers as a real appliance would; the
cluster's VIP services, served by the simulator that creates the cluster on two ports chosen up front, are DNATed to
``<vip>:443`` and ``<vip>:6443``), an SSH key
pair for the node account, a content bundle, and a plan that deploys onto all of it. ``down()`` undoes it all.

``VsphereLab(..., dhcp=True)`` (CLI ``--dhcp``): the plan says ``nodes.network: {mode: dhcp}``, the stack serves DHCP
on the lab LAN (udhcpd, pool :data:`vcsim.localapis.DHCP_POOL`, log ``<workdir>/dhcp/udhcpd.log``), the watcher reports
each guest's lease to vcsim, and the simulators follow the leases (:mod:`vcsim.localapis`): nothing is DNATed at
``<address>:5080`` until a guest has its lease.

CLI (``./dev demo`` runs ``demo``)::

    python -m vcsim.stack demo [--workdir DIR] [--nodes 3] [--keep] [--dhcp]  # up, apply, print the report, down
    python -m vcsim.stack up --workdir DIR [--nodes 3] [--dhcp]               # leave the lab running; prints the plan
    python -m vcsim.stack down --workdir DIR
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from pplab import net

from vcsim import localapis
from vcsim.localapis import DHCP_POOL
from vcsim.watcher import ADDRESSES_FILE

__all__ = ["LAB_ROOT", "VsphereLab"]

LAB_ROOT = Path(__file__).resolve().parent.parent
APPLIANCE_ISO = LAB_ROOT / "build" / "appliance.iso"
NODE_PASSWORD_ENV = "PPLAB_NODE_PASSWORD"  # noqa: S105 - the variable's name, not a password
#: The pack bundles the lab's plan uploads (stand-ins: random bytes named as Artifact Studio names its bundles).
PACK_BUNDLES = ("edge-k8s-1.30.4.zst", "cni-calico-3.28.0.zst")
SIM_READY = "local-api.json"
LAB_VIP = "10.251.0.100"
CLUSTER_NAME = "palette-lab"
VM_PREFIX = "lab-"

#: Simulator timings for a lab run: fast, but every state the client must wait through still happens.
LAB_SIM_KNOBS: dict[str, Any] = {
    "configured_after_s": 2.0,
    "sync_delay_s": 2.0,
    "cluster_running_s": 4.0,
}


def _node_ips(count: int) -> list[str]:
    return [f"10.251.0.{11 + i}" for i in range(count)]


def _vm_names(count: int) -> list[str]:
    """The VMs the provider creates for the plan's nodes: ``<vm_prefix><cluster.name>-<n>``."""
    return [f"{VM_PREFIX}{CLUSTER_NAME}-{i + 1}" for i in range(count)]


class VsphereLab:
    """The vSphere lab stack in ``workdir``. Use as a context manager, or ``up()`` / ``down()``."""

    def __init__(
        self,
        workdir: Path,
        *,
        nodes: int = 3,
        sim_knobs: dict[str, Any] | None = None,
        name: str = "lab-demo",
        dhcp: bool = False,
    ) -> None:
        self.workdir = workdir.resolve()
        self.nodes = nodes
        self.name = name
        self.dhcp = dhcp
        self.sim_knobs = {**LAB_SIM_KNOBS, **(sim_knobs or {})}
        self.vcsim_dir = self.workdir / "vcsim"
        self.node_password = ""
        self.state: dict[str, Any] = {}
        self._sim_process: subprocess.Popen[bytes] | None = None
        self._dhcp_server: net.LanDhcp | None = None

    # ----------------------------------------------------------------------------------------- up
    def up(self) -> VsphereLab:
        """Bring the lab up and write the plan (``self.plan_path``)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not APPLIANCE_ISO.is_file():
            raise RuntimeError(f"{APPLIANCE_ISO} is missing: run lab/install.sh (./dev does)")
        self.node_password = self._secret_file("node-password")
        self._secret_file("console-password")
        net.ensure_lan()
        try:
            if self.dhcp:
                self._start_dhcp()
            self._start_vcsim()
            self._start_local_apis()
            self._write_keys()
            self._write_content_bundle()
            self.plan_path.write_text(yaml.safe_dump(self.plan(), sort_keys=False))
        except BaseException:
            # Whatever started stops: a DHCP server left behind by a failed `up` answers every later guest on the
            # LAN with its pool's addresses (seen: a QEMU test's guest leased 10.251.0.209, not its static lease).
            with contextlib.suppress(Exception):
                self.down()
            raise
        return self

    def _secret_file(self, name: str) -> str:
        path = self.workdir / name
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                # Upper, lower, digit and special whatever the random part holds: the system console's password
                # rules (14+ characters, every class) take it too.
                fh.write("Pp7#" + secrets.token_urlsafe(18) + "\n")
        return path.read_text().strip()

    @property
    def dhcp_log(self) -> Path:
        """udhcpd's log (``sending ACK to <address>`` per lease granted), in DHCP mode."""
        return self.workdir / "dhcp" / "udhcpd.log"

    def _start_dhcp(self) -> None:
        self._stop_pid_file(self.workdir / "dhcp.pid", "udhcpd")  # left by an earlier `up` of this workdir
        self._dhcp_server = net.LanDhcp({}, pool=DHCP_POOL, workdir=self.workdir / "dhcp").start()
        (self.workdir / "dhcp.pid").write_text(str(self._dhcp_server.pid))

    def _start_vcsim(self) -> None:
        env = dict(os.environ, VCSIM_PASSWORD=self._secret_file("vcsim-password"))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(LAB_ROOT), env.get("PYTHONPATH")]))
        if (self.vcsim_dir / "state.json").exists():
            self._run([sys.executable, "-m", "vcsim.lab", "down", "--workdir", str(self.vcsim_dir)], env)
        out = self._run(
            [sys.executable, "-m", "vcsim.lab", "up", "--workdir", str(self.vcsim_dir), "--watcher"], env
        )
        self.state = json.loads(out)

    @staticmethod
    def _run(argv: list[str], env: dict[str, str]) -> str:
        proc = subprocess.run(
            argv, capture_output=True, text=True, env=env, timeout=600, stdin=subprocess.DEVNULL, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[2:4])} failed: {proc.stderr.strip()[-2000:]}")
        return proc.stdout

    def _start_local_apis(self) -> None:
        sim_dir = self.workdir / "local-api"
        ready = sim_dir / SIM_READY
        ready.unlink(missing_ok=True)
        sim_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, **{NODE_PASSWORD_ENV: self.node_password})
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(LAB_ROOT), env.get("PYTHONPATH")]))
        argv = [sys.executable, "-m", "vcsim.stack", "serve-local-api", "--dir", str(sim_dir),
                "--nodes", str(self.nodes), "--knobs", json.dumps(self.sim_knobs)]  # fmt: skip
        if self.dhcp:
            argv += ["--addresses", str(self.vcsim_dir / "watcher" / ADDRESSES_FILE)]
        with open(sim_dir / "serve.log", "ab") as log:
            # Inside the lab namespace: the DNAT target 10.251.0.1 exists only there.
            self._sim_process = net.run_in_lan(argv, env=env, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 60
        while not ready.exists():
            if self._sim_process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Local API simulators did not start; see {sim_dir / 'serve.log'}")
            time.sleep(0.2)
        info = json.loads(ready.read_text())
        (self.workdir / "local-api.pid").write_text(str(self._sim_process.pid))
        if not self.dhcp:  # with DHCP the simulator process DNATs each lease when the watcher reports it
            for node in info["nodes"]:
                net.expose_local_api(node["ip"], int(node["port"]))
        net.expose_vip(LAB_VIP, int(info["vip"]["console_port"]), int(info["vip"]["kube_port"]))

    def _write_keys(self) -> None:
        key = self.workdir / "id_ed25519"
        if not key.exists():
            argv = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pplab-demo", "-f", str(key)]
            subprocess.run(argv, check=True, stdin=subprocess.DEVNULL)

    def _write_content_bundle(self) -> None:
        bundle = self.workdir / "content-bundle.tar.zst"
        if not bundle.exists():
            with open(bundle, "wb") as fh:
                for _ in range(8):
                    fh.write(os.urandom(1 << 20))
        # Two stand-ins for Artifact Studio's pack bundles (the plan uploads them after the validation).
        for name in PACK_BUNDLES:
            pack = self.workdir / name
            if not pack.exists():
                pack.write_bytes(os.urandom(256 << 10))

    def local_api_nodes(self) -> list[dict[str, Any]]:
        """The simulators as they are now: ``name``, ``ip`` (the address they answer at and report; ``None`` for a
        DHCP node without a lease yet), ``port``, ``cert_sha256``."""
        try:
            nodes: list[dict[str, Any]] = json.loads((self.workdir / "local-api" / SIM_READY).read_text())["nodes"]
        except (OSError, ValueError, KeyError):
            return []
        return nodes

    @property
    def plan_path(self) -> Path:
        """The plan that deploys onto this lab."""
        return self.workdir / "plan.yaml"

    def plan(self) -> dict[str, Any]:
        """The plan: an appliance (1 or 3 nodes) or edge hosts on vcsim, formed through the Local API."""
        ips = _node_ips(self.nodes)
        network: dict[str, Any] = (
            {"mode": "dhcp"} if self.dhcp
            else {"mode": "static", "addresses": [f"{ip}/24" for ip in ips], "gateway": "10.251.0.1"}
        )  # fmt: skip
        return {
            "name": self.name,
            "profile": "appliance" if self.nodes in (1, 3) else "edge",
            "iso": {"source": str(APPLIANCE_ISO)},
            "content": {"path": str(self.workdir / "content-bundle.tar.zst")},
            "cluster": {
                "name": CLUSTER_NAME,
                "vip": LAB_VIP,
                "dns": ["10.251.0.1"],
                "ntp": ["10.251.0.1"],
                "ssh_public_keys": [(self.workdir / "id_ed25519.pub").read_text().strip()],
                "node_account": {
                    "username": "kairos",
                    "password": f"file:{self.workdir / 'node-password'}",
                    "ssh_private_key": f"file:{self.workdir / 'id_ed25519'}",
                },
                "profile_secrets": {"oci_registry_password": f"file:{self.workdir / 'node-password'}"},
            },
            "nodes": {
                "count": self.nodes,
                "size": "small",
                "install_disk_gb": 300,
                "storage_disk_gb": 500,
                "network": network,
            },
            "readiness": {"ssh": True},
            "handoff": {"kind": "palette-local-api", "output_dir": str(self.workdir / "out")},
            # The appliance documentation's validation: applications, pods, the system console (DNATed at the VIP).
            "validate": {"console": {"password": f"file:{self.workdir / 'console-password'}"}, "timeout": 300},
            "packs": {"bundles": [str(self.workdir / name) for name in PACK_BUNDLES], "sync_timeout": 120},
            # TCG guests on two cores: an "install" plus a boot takes ~30-90 s per node under load.
            "timeouts": {
                "install": 900, "ready": 600, "configured": 300, "link": 300,
                "content_sync": 300, "cluster": 300,
            },
            "concurrency": 8,
            "platform": {
                "provider": "vsphere",
                "server": self.state["host"],
                "port": self.state["port"],
                "username": self.state["username"],
                "password": f"file:{self.workdir / 'vcsim-password'}",
                "thumbprint": self.state["thumbprint"],
                "datacenter": "DC0",
                "cluster": "DC0_C0",
                "datastore": self.state["datastore"],
                "network": "VM Network",
                "vm_prefix": VM_PREFIX,
            },
        }

    # ----------------------------------------------------------------------------------------- down
    def down(self) -> None:
        """Stop everything the lab started (idempotent)."""
        pid_file = self.workdir / "local-api.pid"
        if self._sim_process is not None:
            self._stop(self._sim_process.pid)
            self._sim_process.wait(timeout=30)
        else:
            self._stop_pid_file(pid_file, "serve-local-api")
        pid_file.unlink(missing_ok=True)
        # After the simulator process: in DHCP mode it adds DNATs as leases appear.
        addresses = {str(n["ip"]) for n in self.local_api_nodes() if n.get("ip")} | set(_node_ips(self.nodes))
        for ip in sorted(addresses):
            # Best effort: the namespace (and its DNAT rules) may be gone already.
            with contextlib.suppress(Exception):
                net.unexpose_local_api(ip)
        with contextlib.suppress(Exception):
            net.unexpose_vip(LAB_VIP)
        if self._dhcp_server is not None:
            self._dhcp_server.stop()
            self._dhcp_server = None
        self._stop_pid_file(self.workdir / "dhcp.pid", "udhcpd")
        (self.workdir / "dhcp.pid").unlink(missing_ok=True)
        if (self.vcsim_dir / "state.json").exists():
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(LAB_ROOT), env.get("PYTHONPATH")]))
            self._run([sys.executable, "-m", "vcsim.lab", "down", "--workdir", str(self.vcsim_dir)], env)

    @staticmethod
    def _stop(pid: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)

    @classmethod
    def _stop_pid_file(cls, pid_file: Path, marker: str) -> None:
        """Stop the process group recorded in ``pid_file`` by an earlier ``up`` (the CLI's ``down`` has no handle),
        if that pid still runs a command line naming ``marker`` (not a recycled pid)."""
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text())
            if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                cls._stop(pid)

    def __enter__(self) -> VsphereLab:
        return self.up()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.down()


def _serve_local_api(ns: argparse.Namespace) -> int:
    """The simulators' supervisor (:func:`vcsim.localapis.serve`), run inside the lab namespace by ``up()``."""
    return localapis.serve(
        ns.dir, _node_ips(ns.nodes), password=os.environ[NODE_PASSWORD_ENV], username="kairos",
        knobs=json.loads(ns.knobs), ready_file=ns.dir / SIM_READY, addresses=ns.addresses,
        vm_names=_vm_names(ns.nodes),
    )  # fmt: skip


def _demo(ns: argparse.Namespace) -> int:
    workdir = ns.workdir or Path(os.environ.get("TMPDIR", "/tmp")) / "palette-provision-demo"
    if workdir.exists() and not ns.keep_workdir:
        shutil.rmtree(workdir / "out", ignore_errors=True)
        shutil.rmtree(workdir / ".palette-provision", ignore_errors=True)
    lab = VsphereLab(workdir, nodes=ns.nodes, dhcp=ns.dhcp)
    print(f"==> lab: vcsim + watcher + {ns.nodes} Local API simulators in {workdir}", file=sys.stderr)
    lab.up()
    try:
        print(f"==> palette-provision apply {lab.plan_path}", file=sys.stderr)
        code = subprocess.call([sys.executable, "-m", "palette_provision", "apply", str(lab.plan_path)])
        if ns.keep:
            print(f"lab left running; stop it with: python -m vcsim.stack down --workdir {workdir}", file=sys.stderr)
            return code
        print(f"==> palette-provision destroy {lab.plan_path}", file=sys.stderr)
        subprocess.call([sys.executable, "-m", "palette_provision", "destroy", str(lab.plan_path), "--purge-media"])
        return code
    finally:
        if not ns.keep:
            lab.down()


def main(argv: list[str] | None = None) -> int:
    """CLI entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m vcsim.stack")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="bring the lab up, deploy a 3-node appliance onto it, destroy, tear down")
    demo.add_argument("--workdir", type=Path)
    demo.add_argument("--nodes", type=int, default=3)
    demo.add_argument("--keep", action="store_true", help="leave the deployment and the lab running")
    demo.add_argument("--keep-workdir", action="store_true", help=argparse.SUPPRESS)
    demo.add_argument("--dhcp", action="store_true", help="nodes.network: {mode: dhcp}; the lab serves DHCP")
    up = sub.add_parser("up")
    up.add_argument("--workdir", type=Path, required=True)
    up.add_argument("--nodes", type=int, default=3)
    up.add_argument("--dhcp", action="store_true", help="nodes.network: {mode: dhcp}; the lab serves DHCP")
    down = sub.add_parser("down")
    down.add_argument("--workdir", type=Path, required=True)
    down.add_argument("--nodes", type=int, default=3)
    serve = sub.add_parser("serve-local-api", help=argparse.SUPPRESS)
    serve.add_argument("--dir", type=Path, required=True)
    serve.add_argument("--nodes", type=int, required=True)
    serve.add_argument("--knobs", default="{}")
    serve.add_argument("--addresses", type=Path, help="the watcher's addresses.json: follow the DHCP leases")
    ns = parser.parse_args(argv)
    if ns.command == "demo":
        return _demo(ns)
    if ns.command == "serve-local-api":
        return _serve_local_api(ns)
    lab = VsphereLab(ns.workdir, nodes=ns.nodes, dhcp=getattr(ns, "dhcp", False))
    if ns.command == "up":
        lab.up()
        print(lab.plan_path)
        return 0
    lab.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
