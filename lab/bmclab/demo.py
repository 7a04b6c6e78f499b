"""``./dev demo baremetal``: a bare-metal appliance deployment on the lab's Redfish BMC, then ``destroy``.

``python -m bmclab.demo [--workdir DIR] [--keep]``: starts sushy-tools' Redfish emulator with one server (a QEMU
guest on the lab LAN), writes a plan for the ``baremetal`` provider (the BMC pinned by its certificate's
fingerprint, secrets in files), and runs ``palette-provision apply`` and ``destroy`` on it, as a user would.
The hand-off writes an inventory (no Local API behind a Redfish lab node).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from bmclab.redfish import RedfishLab, RedfishNode

REPO = Path(__file__).resolve().parents[2]
APPLIANCE_ISO = REPO / "lab" / "build" / "appliance.iso"
NODE, MAC, ADDRESS = "rack-1", "52:54:00:5e:03:11", "10.251.0.151"


def plan(lab: RedfishLab, workdir: Path) -> dict[str, Any]:
    """A one-node appliance on the lab's Redfish BMC."""
    bmc = lab.bmc(NODE)
    return {
        "name": "baremetal-demo",
        "profile": "appliance",
        "iso": {"source": str(APPLIANCE_ISO)},
        "cluster": {
            "name": "palette-bm", "vip": "10.251.0.150", "dns": ["10.251.0.1"],
            "ssh_public_keys": [(workdir / "id_ed25519.pub").read_text().strip()],
            "node_account": {"username": "kairos", "password": f"file:{workdir / 'node-password'}",
                             "ssh_private_key": f"file:{workdir / 'id_ed25519'}"},
        },
        "nodes": {
            "size": "small", "install_disk": "/dev/sda",
            "network": {"mode": "static", "gateway": "10.251.0.1"},
            "hosts": [{
                "name": NODE, "address": f"{ADDRESS}/24",
                "bmc": {"protocol": "redfish", "address": "127.0.0.1", "port": int(bmc.url.rsplit(":", 1)[1]),
                        "username": lab.username, "password": f"file:{workdir / 'bmc-password'}",
                        "fingerprint": lab.fingerprint, "system_id": bmc.system_id},
            }],
        },
        "readiness": {"ssh": True, "local_api": False},
        "handoff": {"kind": "inventory", "output_dir": str(workdir / "out")},
        "timeouts": {"install": 900, "ready": 600},
        "platform": {"provider": "baremetal", "media_server": {"bind": "127.0.0.1:0"}},
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run the demo (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m bmclab.demo")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--keep", action="store_true", help="leave the deployment and the lab running")
    ns = parser.parse_args(argv)
    workdir: Path = ns.workdir or Path(os.environ.get("TMPDIR", "/tmp")) / "palette-provision-baremetal-demo"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True, mode=0o700)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(workdir / "id_ed25519")], check=True)
    lab = RedfishLab([RedfishNode(NODE, MAC, ADDRESS)], workdir=workdir / "lab", install_delay_s=3)
    print(f"==> lab: a Redfish BMC (sushy-tools' emulator) whose server boots in QEMU, in {workdir}", file=sys.stderr)
    lab.start()
    try:
        for name, secret in (("node-password", os.urandom(12).hex()), ("bmc-password", lab.password)):
            path = workdir / name
            path.write_text(secret)
            path.chmod(0o600)
        plan_path = workdir / "plan.yaml"
        plan_path.write_text(yaml.safe_dump(plan(lab, workdir), sort_keys=False))
        cli = [sys.executable, "-m", "palette_provision"]
        print(f"==> palette-provision apply {plan_path}", file=sys.stderr)
        code = subprocess.call([*cli, "apply", str(plan_path)])
        if ns.keep:
            print(f"left running; destroy with: palette-provision destroy {plan_path}", file=sys.stderr)
            return code
        print(f"==> palette-provision destroy {plan_path}", file=sys.stderr)
        subprocess.call([*cli, "destroy", str(plan_path), "--purge-media"])
        return code
    finally:
        if not ns.keep:
            lab.stop()


if __name__ == "__main__":
    sys.exit(main())
