"""The node's own description (``v1EdgeHostInfo``) and its configuration progress."""

from __future__ import annotations

import hashlib
import time
from typing import Any

from .node import Node
from .timefmt import iso


def configuration_phase(node: Node, now: float) -> str:
    """Return ``pending``, ``inprogress`` or ``configured`` (timed from process start)."""
    knobs = node.knobs.snapshot()
    elapsed = now - node.started_at
    if elapsed >= knobs.configured_after_s:
        return "configured"
    if elapsed >= min(knobs.inprogress_after_s, knobs.configured_after_s):
        return "inprogress"
    return "pending"


def configuration_status(node: Node, now: float) -> dict[str, Any]:
    """Return the body of ``GET .../edgehosts/current/configurations/status``."""
    state = {"pending": "Not Configured", "inprogress": "In Progress", "configured": "Configured"}
    return {"state": state[configuration_phase(node, now)], "errorMessage": ""}


def mac_address(name: str) -> str:
    """Return a stable locally-administered MAC address for a node name."""
    digest = hashlib.sha256(name.encode()).digest()
    return "52:54:00:" + ":".join(f"{byte:02x}" for byte in digest[:3])


def edge_host_info(node: Node, node_role: str = "unknown", now: float | None = None) -> dict[str, Any]:
    """Return ``v1EdgeHostInfo`` for this node."""
    now = time.time() if now is None else now
    config = node.config
    created = iso(node.started_at)
    return {
        "metadata": {
            "id": node.host_id,
            "name": node.host_id,
            "creationTimestamp": created,
            "lastModifiedTimestamp": created,
            "labels": {},
            "tags": {},
        },
        "spec": {
            "connectionMode": "airgap",
            "managementMode": "local",
            "nodeRole": node_role,
            "paletteEndpointURL": "",
            "hostInfo": {"hostState": "ready", "hostType": "edge-native", "secureBoot": False},
            "networkInfo": [
                {
                    "nicName": "eth0",
                    "macAddr": mac_address(config.name),
                    "ip": config.node_ip,
                    "subnet": "255.255.255.0",
                    "gateway": "",
                    "dns": [],
                    "isDefault": True,
                }
            ],
            "hardwareSpec": {
                "archType": "amd64",
                "cpu": {"cores": 8},
                "memory": {"sizeInMB": 16384},
                "os": {"family": "ubuntu", "kernel": "Linux", "kernelVersion": "6.8.0",
                       "version": "22.04"},
                "disks": [
                    {"controller": "scsi", "vendor": "QEMU", "size": 500, "partitions": []},
                    {"controller": "scsi", "vendor": "QEMU", "size": 500, "partitions": []},
                ],
                "gpus": [],
            },
        },
        "status": {
            "configurationStatus": configuration_phase(node, now),
            "agentVersion": "v4.7.0-sim",
            "hostName": config.name,
            "isClusterPhase": node.state.get("cluster") is not None,
            "dns": {"nameservers": [], "options": [], "searchDomains": []},
            "ntp": {"ntpServers": [], "fallbackNtpServers": []},
        },
    }
