"""``./dev demo maas``: an appliance deployed by MAAS (the region simulator) onto a QEMU guest, then ``destroy``.

``python -m bmclab.maas_demo [--workdir DIR] [--keep]``: starts the MAAS region simulator
(``palette_provision.testing.maas``, a separate HTTP process that follows MAAS's REST API 2.0; no real MAAS can run
here) with one Ready machine whose deployment boots a QEMU guest on the lab LAN (``bmclab.maas_hook``), writes a
plan for the ``maas`` provider in image mode (the lab appliance as a disk image, uploaded on the first run; the API
key in a file) and runs ``palette-provision apply`` and ``destroy`` on it, as a user would.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from pplab.disk import write_image

from bmclab._demo import parse_demo_args, run_as_user
from palette_provision.testing.maas import MaasSimulatorHandle, start_maas_simulator

REPO = Path(__file__).resolve().parents[2]
APPLIANCE_ISO = REPO / "lab" / "build" / "appliance.iso"
NODE_HOST, MAC, ADDRESS = "rack-m1", "52:54:00:5e:04:71", "10.251.0.171"


def plan(sim: MaasSimulatorHandle, workdir: Path) -> dict[str, Any]:
    """A one-node appliance on a machine MAAS allocates and deploys."""
    return {
        "name": "maas-demo",
        "profile": "appliance",
        "iso": {"source": str(APPLIANCE_ISO)},
        "cluster": {
            "name": "palette-maas", "vip": "10.251.0.170", "dns": ["10.251.0.1"],
            "ssh_public_keys": [(workdir / "id_ed25519.pub").read_text().strip()],
            "node_account": {"username": "kairos", "password": f"file:{workdir / 'node-password'}",
                             "ssh_private_key": f"file:{workdir / 'id_ed25519'}"},
        },
        "nodes": {"count": 1, "size": "small", "install_disk": "/dev/sda",
                  "network": {"mode": "static", "addresses": [f"{ADDRESS}/24"], "gateway": "10.251.0.1"}},
        "readiness": {"ssh": True, "local_api": False},
        "handoff": {"kind": "inventory", "output_dir": str(workdir / "out")},
        "timeouts": {"install": 900, "ready": 600},
        "platform": {"provider": "maas", "url": sim.url, "api_key": f"file:{workdir / 'maas-api-key'}",
                     "mode": "image", "image": {"name": "palette-lab", "file": str(workdir / "palette-lab.raw")},
                     "constraints": {"tags": ["palette"]}},
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run the demo (see the module docstring)."""
    args = parse_demo_args("python -m bmclab.maas_demo", "palette-provision-maas-demo", argv,
                           what_keeps="the simulator")  # fmt: skip
    write_image(args.workdir / "palette-lab.raw")
    hook = [sys.executable, "-m", "bmclab.maas_hook"]
    env = {"PPLAB_MAAS_ISO": str(APPLIANCE_ISO), "PPLAB_MAAS_WORK": str(args.workdir / "guests")}
    config = {
        "machines": [{"hostname": NODE_HOST, "mac": MAC, "address": ADDRESS, "tags": ["palette"], "cpu_count": 8,
                      "memory": 16384}],
        "on_deploy": {"argv": [*hook, "deploy"], "timeout_s": 600, "env": env},
        "on_release": {"argv": [*hook, "release"], "timeout_s": 30, "env": env},
    }  # fmt: skip
    print(f"==> lab: the MAAS region simulator, whose deployments boot in QEMU, in {args.workdir}", file=sys.stderr)
    sim = start_maas_simulator(args.workdir / "maas", config=config, knobs={"deploy_delay_s": 0})
    try:
        secrets = {"node-password": os.urandom(12).hex(), "maas-api-key": sim.api_key}
        return run_as_user(args, secrets, lambda: plan(sim, args.workdir))
    finally:
        if not args.keep:
            sim.stop()


if __name__ == "__main__":
    sys.exit(main())
