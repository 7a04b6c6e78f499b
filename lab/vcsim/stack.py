"""The whole vSphere lab, for the README demo and the end-to-end tests.

:class:`VsphereLab` brings up, in order: the QEMU lab LAN (``pplab``), vcsim with the watcher that boots powered-on
VMs as QEMU guests of the test appliance, one Palette Local API simulator per node (run inside the ``pplab``
namespace and DNATed to ``<node address>:5080``, so the node's address answers as a real appliance would; the
cluster's VIP services, served by the simulator that creates the cluster on two ports chosen up front, are DNATed to
``<vip>:443`` and ``<vip>:6443``), an SSH key
pair for the node account, a content bundle, and a plan that deploys onto all of it. ``down()`` undoes it all.

CLI (``./dev demo`` runs ``demo``)::

    python -m vcsim.stack demo [--workdir DIR] [--nodes 3] [--keep]   # up, apply, print the report, down
    python -m vcsim.stack up --workdir DIR [--nodes 3]                 # leave the lab running; prints the plan path
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
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from pplab import net

__all__ = ["LAB_ROOT", "VsphereLab"]

LAB_ROOT = Path(__file__).resolve().parent.parent
APPLIANCE_ISO = LAB_ROOT / "build" / "appliance.iso"
NODE_PASSWORD_ENV = "PPLAB_NODE_PASSWORD"  # noqa: S105 - the variable's name, not a password
SIM_READY = "local-api.json"
LAB_VIP = "10.251.0.100"

#: Simulator timings for a lab run: fast, but every state the client must wait through still happens.
LAB_SIM_KNOBS: dict[str, Any] = {
    "configured_after_s": 2.0,
    "sync_delay_s": 2.0,
    "cluster_running_s": 4.0,
}


def _node_ips(count: int) -> list[str]:
    return [f"10.251.0.{11 + i}" for i in range(count)]


class VsphereLab:
    """The vSphere lab stack in ``workdir``. Use as a context manager, or ``up()`` / ``down()``."""

    def __init__(
        self,
        workdir: Path,
        *,
        nodes: int = 3,
        sim_knobs: dict[str, Any] | None = None,
        name: str = "lab-demo",
    ) -> None:
        self.workdir = workdir.resolve()
        self.nodes = nodes
        self.name = name
        self.sim_knobs = {**LAB_SIM_KNOBS, **(sim_knobs or {})}
        self.vcsim_dir = self.workdir / "vcsim"
        self.node_password = ""
        self.state: dict[str, Any] = {}
        self._sim_process: subprocess.Popen[bytes] | None = None

    # ----------------------------------------------------------------------------------------- up
    def up(self) -> VsphereLab:
        """Bring the lab up and write the plan (``self.plan_path``)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not APPLIANCE_ISO.is_file():
            raise RuntimeError(f"{APPLIANCE_ISO} is missing: run lab/install.sh (./dev does)")
        self.node_password = self._secret_file("node-password")
        self._secret_file("console-password")
        net.ensure_lan()
        self._start_vcsim()
        self._start_local_apis()
        self._write_keys()
        self._write_content_bundle()
        self.plan_path.write_text(yaml.safe_dump(self.plan(), sort_keys=False))
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

    @property
    def plan_path(self) -> Path:
        """The plan that deploys onto this lab."""
        return self.workdir / "plan.yaml"

    def plan(self) -> dict[str, Any]:
        """The plan: an appliance (1 or 3 nodes) or edge hosts on vcsim, formed through the Local API."""
        ips = _node_ips(self.nodes)
        return {
            "name": self.name,
            "profile": "appliance" if self.nodes in (1, 3) else "edge",
            "iso": {"source": str(APPLIANCE_ISO)},
            "content": {"path": str(self.workdir / "content-bundle.tar.zst")},
            "cluster": {
                "name": "palette-lab",
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
                "network": {"mode": "static", "addresses": [f"{ip}/24" for ip in ips], "gateway": "10.251.0.1"},
            },
            "readiness": {"ssh": True},
            "handoff": {"kind": "palette-local-api", "output_dir": str(self.workdir / "out")},
            # The appliance documentation's validation: applications, pods, the system console (DNATed at the VIP).
            "validate": {"console": {"password": f"file:{self.workdir / 'console-password'}"}, "timeout": 300},
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
                "vm_prefix": "lab-",
            },
        }

    # ----------------------------------------------------------------------------------------- down
    def down(self) -> None:
        """Stop everything the lab started (idempotent)."""
        for ip in _node_ips(self.nodes):
            # Best effort: the namespace (and its DNAT rules) may be gone already.
            with contextlib.suppress(Exception):
                net.unexpose_local_api(ip)
        with contextlib.suppress(Exception):
            net.unexpose_vip(LAB_VIP)
        pid_file = self.workdir / "local-api.pid"
        if self._sim_process is not None:
            self._stop(self._sim_process.pid)
            self._sim_process.wait(timeout=30)
        elif pid_file.exists():
            self._stop(int(pid_file.read_text()))
        pid_file.unlink(missing_ok=True)
        if (self.vcsim_dir / "state.json").exists():
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(LAB_ROOT), env.get("PYTHONPATH")]))
            self._run([sys.executable, "-m", "vcsim.lab", "down", "--workdir", str(self.vcsim_dir)], env)

    @staticmethod
    def _stop(pid: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)

    def __enter__(self) -> VsphereLab:
        return self.up()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.down()


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _serve_local_api(ns: argparse.Namespace) -> int:
    """Run N node simulators in this (the lab) namespace until SIGTERM; write their ports to the ready file."""
    from palette_provision.testing.localapi import SimulatedCluster

    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    # The VIP services' ports, chosen now so that the DNAT is in place before any cluster exists.
    vip_ports = (_free_port(net.GATEWAY), _free_port(net.GATEWAY))
    cluster = SimulatedCluster(
        ns.dir, ns.nodes, password=os.environ[NODE_PASSWORD_ENV], username="kairos",
        knobs=json.loads(ns.knobs), node_ips=_node_ips(ns.nodes), listen_host=net.GATEWAY, vip_ports=vip_ports,
    )  # fmt: skip
    cluster.start()
    try:
        nodes = [{"ip": h.node_ip, "port": h.address[1], "cert_sha256": h.cert_sha256} for h in cluster.nodes]
        vip = {"console_port": vip_ports[0], "kube_port": vip_ports[1]}
        tmp = ns.dir / (SIM_READY + ".tmp")
        tmp.write_text(json.dumps({"nodes": nodes, "vip": vip}))
        os.replace(tmp, ns.dir / SIM_READY)
        while not stop["now"]:
            time.sleep(0.5)
    finally:
        cluster.stop()
    return 0


def _demo(ns: argparse.Namespace) -> int:
    workdir = ns.workdir or Path(os.environ.get("TMPDIR", "/tmp")) / "palette-provision-demo"
    if workdir.exists() and not ns.keep_workdir:
        shutil.rmtree(workdir / "out", ignore_errors=True)
        shutil.rmtree(workdir / ".palette-provision", ignore_errors=True)
    lab = VsphereLab(workdir, nodes=ns.nodes)
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
    up = sub.add_parser("up")
    up.add_argument("--workdir", type=Path, required=True)
    up.add_argument("--nodes", type=int, default=3)
    down = sub.add_parser("down")
    down.add_argument("--workdir", type=Path, required=True)
    down.add_argument("--nodes", type=int, default=3)
    serve = sub.add_parser("serve-local-api", help=argparse.SUPPRESS)
    serve.add_argument("--dir", type=Path, required=True)
    serve.add_argument("--nodes", type=int, required=True)
    serve.add_argument("--knobs", default="{}")
    ns = parser.parse_args(argv)
    if ns.command == "demo":
        return _demo(ns)
    if ns.command == "serve-local-api":
        return _serve_local_api(ns)
    lab = VsphereLab(ns.workdir, nodes=ns.nodes)
    if ns.command == "up":
        lab.up()
        print(lab.plan_path)
        return 0
    lab.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
