"""One simulated node: its fixed configuration, its persisted state and the lock guarding both.

State is a JSON document saved atomically to ``<state-dir>/state.json`` after every change, so a
simulator that is killed and restarted keeps its identity, links, content and cluster (as an
appliance keeps them across a reboot). Timed transitions are stored as wall-clock timestamps.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .auth import TokenService, password_digest
from .knobs import KnobBox

STATE_FILE = "state.json"


@dataclass(frozen=True)
class NodeConfig:
    """What a node is told at start."""

    name: str
    node_ip: str
    state_dir: Path
    username: str
    password: str
    peers_file: Path | None = None
    ui_port: int = 5080
    listen_host: str = ""
    """Address the simulator binds (its VIP services bind it too; it goes in their certificates' names)."""


def host_id_for(name: str) -> str:
    """Return the stable edge host id (``edge-<32 hex>``) of a node name."""
    return "edge-" + hashlib.sha256(f"palette-localapi-sim:{name}".encode()).hexdigest()[:32]


def _fresh_state(config: NodeConfig) -> dict[str, Any]:
    return {
        "hostId": host_id_for(config.name),
        "secret": secrets.token_hex(32),
        "passwordDigest": password_digest(config.password),
        "firstLoginDone": False,
        "link": {"role": "standalone", "tokens": {}, "followers": [], "leader": None},
        "content": None,
        "overridden": None,
        "cluster": None,
        "stats": {
            "clustersCreated": 0,
            "clusterCreateAttempts": 0,
            "logins": 0,
            "loginFailures": 0,
            "linkTokensIssued": 0,
            "uploads": [],
            "linkAttempts": [],
        },
    }


class Node:
    """A simulated appliance node. Hold :attr:`lock` while reading or changing :attr:`state`."""

    def __init__(self, config: NodeConfig, knobs: KnobBox) -> None:
        self.config = config
        self.knobs = knobs
        self.lock = threading.RLock()
        self.started_at = time.time()
        self.requests: Counter[str] = Counter()
        config.state_dir.mkdir(parents=True, exist_ok=True)
        (config.state_dir / "content").mkdir(exist_ok=True)
        path = config.state_dir / STATE_FILE
        if path.exists():
            self.state: dict[str, Any] = json.loads(path.read_text())
        else:
            self.state = _fresh_state(config)
            self.save()
        self.tokens = TokenService(bytes.fromhex(self.state["secret"]), self.host_id)
        self.hooks: list[Callable[[], None]] = []
        self.reporters: dict[str, Callable[[], dict[str, Any]]] = {}
        """Extra parts of ``/__sim__/state`` (the VIP services' report), merged into its answer."""

    @property
    def host_id(self) -> str:
        """The edge host id (``metadata.id``)."""
        return str(self.state["hostId"])

    @property
    def content_dir(self) -> Path:
        """Where uploaded files are written."""
        return self.config.state_dir / "content"

    def save(self) -> None:
        """Write the state atomically (call with :attr:`lock` held)."""
        path = self.config.state_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=1, sort_keys=True))
        os.replace(tmp, path)

    def reset(self) -> None:
        """Forget everything but identity: links, content, cluster, stats, sessions, password change.

        The signing secret is replaced (earlier session tokens stop working) and the configuration
        clock restarts, as after a factory reset. Uploaded files are deleted.
        """
        with self.lock:
            fresh = _fresh_state(self.config)
            fresh["hostId"] = self.state["hostId"]
            if "vipPorts" in self.state:  # the VIP listeners keep their ports (the lab's DNAT points at them)
                fresh["vipPorts"] = self.state["vipPorts"]
            self.state = fresh
            for path in self.content_dir.iterdir():
                path.unlink()
            self.tokens = TokenService(bytes.fromhex(fresh["secret"]), self.host_id)
            self.requests.clear()
            self.started_at = time.time()
            self.save()

    def notify(self) -> None:
        """Tell the hooks (the VIP services) that the cluster or the knobs changed; call without the lock."""
        for hook in list(self.hooks):
            hook()

    def record(self, list_name: str, entry: dict[str, Any], keep: int = 200) -> None:
        """Append ``entry`` (timestamped) to ``stats[list_name]`` and save."""
        with self.lock:
            items: list[dict[str, Any]] = self.state["stats"][list_name]
            items.append({"at": time.time(), **entry})
            del items[:-keep]
            self.save()

    def bump(self, counter: str) -> None:
        """Increment ``stats[counter]`` and save."""
        with self.lock:
            self.state["stats"][counter] += 1
            self.save()
