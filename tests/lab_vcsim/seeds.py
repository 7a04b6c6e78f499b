"""Build NoCloud seed ISOs as ``docs/seed-format.md`` describes (the test appliance reads exactly these keys)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pycdlib
import yaml

from tests.keys import Ed25519


def user_data(hostname: str, ip: str, user_key: Ed25519, host_key: Ed25519, *, device: str = "auto") -> dict[str, Any]:
    """The library's user-data for one static node on the lab LAN."""
    return {
        "hostname": hostname,
        "install": {"auto": True, "device": device, "poweroff": True, "reboot": False},
        "stylus": {
            "managementMode": "local",
            "enableMultiNode": True,
            "disableTui": True,
            "includeTui": False,
            "localUI": {"port": 5080},
            "site": {
                "network": {
                    "interfaces": {
                        "eth0": {
                            "type": "static",
                            "ipAddress": ip,
                            "mask": 24,
                            "gateway": "10.251.0.1",
                            "nameserver": "10.251.0.1",
                        }
                    }
                }
            },
        },
        "stages": {
            "initramfs": [
                {
                    "name": "palette-provision-users",
                    "users": {"kairos": {"groups": ["admin"], "ssh_authorized_keys": [user_key.public_openssh]}},
                },
                {
                    "name": "palette-provision-host-keys",
                    "files": [
                        {
                            "path": "/etc/ssh/ssh_host_ed25519_key",
                            "permissions": 0o600,
                            "owner": 0,
                            "group": 0,
                            "content": host_key.private_openssh,
                        },
                        {
                            "path": "/etc/ssh/ssh_host_ed25519_key.pub",
                            "permissions": 0o644,
                            "owner": 0,
                            "group": 0,
                            "content": host_key.public_openssh,
                        },
                    ],
                },
            ]
        },
    }


def write_seed_iso(path: Path, data: dict[str, Any], instance_id: str) -> Path:
    """Write a ``cidata`` ISO (ISO 9660 + Joliet + Rock Ridge) with ``user-data`` and ``meta-data``."""
    files = {
        "user-data": ("#cloud-config\n" + yaml.safe_dump(data, sort_keys=False)).encode(),
        "meta-data": yaml.safe_dump({"instance-id": instance_id, "local-hostname": data["hostname"]}).encode(),
    }
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident="cidata")
    for name, content in files.items():
        iso.add_fp(
            io.BytesIO(content),
            len(content),
            iso_path="/" + name.replace("-", "").upper()[:8] + ".;1",
            rr_name=name,
            joliet_path=f"/{name}",
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    iso.write(str(path))
    iso.close()
    # busybox's volume_id (the test appliance's findfs) reads a 0x11000-byte superblock buffer at once and gives
    # up on a smaller device: a two-file pycdlib ISO is 67,584 bytes and its label is never found. Zero padding
    # after the volume (xorriso pads 300 KiB by default) is invisible to every reader.
    with open(path, "r+b") as f:
        f.truncate(max(f.seek(0, 2), _MIN_SEED_BYTES))
    return path


_MIN_SEED_BYTES = 256 * 1024
