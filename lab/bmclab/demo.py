"""``./dev demo baremetal``: a bare-metal appliance deployment on the lab's Redfish BMC, then ``destroy``.

``python -m bmclab.demo [--workdir DIR] [--keep]``: starts sushy-tools' Redfish emulator with one server (a QEMU
guest on the lab LAN), writes a plan for the ``baremetal`` provider (the BMC pinned by its certificate's
fingerprint, secrets in files), and runs ``palette-provision apply`` and ``destroy`` on it, as a user would.
The hand-off writes an inventory (no Local API behind a Redfish lab node).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from bmclab._demo import parse_demo_args, run_as_user
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
    args = parse_demo_args("python -m bmclab.demo", "palette-provision-baremetal-demo", argv, what_keeps="the lab")
    lab = RedfishLab([RedfishNode(NODE, MAC, ADDRESS)], workdir=args.workdir / "lab", install_delay_s=3)
    print(f"==> lab: a Redfish BMC (sushy-tools' emulator) whose server boots in QEMU, in {args.workdir}",
          file=sys.stderr)  # fmt: skip
    lab.start()
    try:
        secrets = {"node-password": os.urandom(12).hex(), "bmc-password": lab.password}
        return run_as_user(args, secrets, lambda: plan(lab, args.workdir), destroy_flags=["--purge-media"])
    finally:
        if not args.keep:
            lab.stop()


if __name__ == "__main__":
    sys.exit(main())
