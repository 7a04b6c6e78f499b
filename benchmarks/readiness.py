"""Readiness benchmark: how soon the ladder notices a node's sshd, and how hard it knocks while waiting.

Each run starts the ladder against a real sshd node (pplab.net.SshdNode: namespace ``ppssh-<i>``, 10.252.<i>.2)
whose sshd is started 2-4 s later (random, so the start falls anywhere in the poll cycle). An observer polls the
port every 5 ms to time the moment sshd really listens; its connections are not the ladder's and are not counted.
The ladder's TCP connections are counted where it opens them (``palette_provision.readiness._state._open_tcp``).

Figures printed (no assertion; targets: p95 < 1.5 s, <= 2 polls/s, < 60 connections/min per node):

* notice latency = banner rung reached - sshd listening (and - ``start()`` called, sshd's own start-up included);
* polls per second: the shortest gap between two connection attempts;
* connections per minute while waiting: one node whose sshd never starts, for ``--idle-seconds``.

Run as root: ``.venv/bin/python benchmarks/readiness.py [--runs 20] [--idle-seconds 60]``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import itertools
import logging
import os
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from palette_provision.errors import ReadinessError
from palette_provision.readiness import ReadinessTarget, Rung, climb
from palette_provision.readiness import _state as readiness_state
from palette_provision.seed import HostKey

NODE_INDEX = 250


class ConnectionLog:
    """Monotonic timestamps of every TCP connection the ladder opens."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._real = readiness_state._open_tcp

    def install(self) -> None:
        def counting(address: str, port: int, timeout: float) -> socket.socket:
            self.times.append(time.monotonic())
            return self._real(address, port, timeout)

        readiness_state._open_tcp = counting

    def between(self, start: float, end: float) -> list[float]:
        return [t for t in self.times if start <= t < end]


def wait_listening(address: str, port: int, stop: threading.Event) -> float | None:
    """Poll every 5 ms until ``address:port`` accepts; return that monotonic instant."""
    while not stop.is_set():
        try:
            with socket.create_connection((address, port), timeout=0.2):
                return time.monotonic()
        except OSError:
            time.sleep(0.005)
    return None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def target_for(node: Any, keys: dict[str, HostKey], deadline_s: float) -> ReadinessTarget:
    return ReadinessTarget(
        node=node.namespace,
        address=lambda: node.address,
        username=node.login_user,
        private_key=keys["user"].private_openssh,
        pinned_host_key=keys["host"].public_line,
        deadline_s=deadline_s,
    )


def one_run(node: Any, keys: dict[str, HostKey], log: ConnectionLog) -> dict[str, float]:
    node.stop()
    delay = random.uniform(2.0, 4.0)
    marks: dict[str, float] = {}
    stop = threading.Event()

    def start_sshd() -> None:
        marks["start_called"] = time.monotonic()
        node.start()
        listening = wait_listening(node.address, node.port, stop)
        if listening is not None:
            marks["listening"] = listening

    def on_rung(rung: Rung) -> None:
        if rung.name == "ssh_banner":
            marks["noticed"] = time.monotonic()

    timer = threading.Timer(delay, start_sshd)
    began = time.monotonic()
    timer.start()
    try:
        climb(target_for(node, keys, 30.0), on_rung=on_rung)
    finally:
        stop.set()
        timer.join()
    waiting = log.between(began, marks["noticed"])
    gaps = [b - a for a, b in itertools.pairwise(waiting)]
    return {
        "latency_listening": marks["noticed"] - marks["listening"],
        "latency_start": marks["noticed"] - marks["start_called"],
        "min_gap": min(gaps) if gaps else float("inf"),
        "waited": marks["noticed"] - began,
        "connections": len(waiting),
    }


def idle_rate(node: Any, keys: dict[str, HostKey], log: ConnectionLog, seconds: float) -> tuple[int, float]:
    node.stop()
    began = time.monotonic()
    with contextlib.suppress(ReadinessError):
        climb(target_for(node, keys, seconds))
    elapsed = time.monotonic() - began
    return len(log.between(began, began + elapsed + 1)), elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=20, help="late-sshd runs (default 20)")
    parser.add_argument("--idle-seconds", type=float, default=60.0, help="length of the never-up wait (default 60)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("the readiness benchmark needs root (network namespaces, sshd nodes)", file=sys.stderr)
        return 2
    import structlog

    sshd_node = importlib.import_module("pplab.net").SshdNode  # the lab is its own distribution (lab/)

    # An application may configure structlog (the library never does): keep the figures readable.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))

    keys = {"host": HostKey.generate(), "user": HostKey.generate()}
    log = ConnectionLog()
    log.install()
    with tempfile.TemporaryDirectory(prefix="pp-bench-") as tmp:
        key_file = Path(tmp) / "host_ed25519"
        key_file.write_text(keys["host"].private_openssh.reveal())
        with sshd_node(NODE_INDEX, key_file, keys["user"].public_line + "\n") as node:
            runs = []
            for i in range(args.runs):
                result = one_run(node, keys, log)
                runs.append(result)
                print(
                    f"run {i + 1:2}: waited {result['waited']:5.2f}s, noticed {result['latency_listening']:.3f}s "
                    f"after sshd listened ({result['latency_start']:.3f}s after start()), "
                    f"{result['connections']} connections",
                    flush=True,
                )
            idle_connections, idle_elapsed = idle_rate(node, keys, log, args.idle_seconds)

    listening = [r["latency_listening"] for r in runs]
    started = [r["latency_start"] for r in runs]
    min_gap = min(r["min_gap"] for r in runs)
    print()
    print(
        f"notice latency after sshd listens  ({len(runs)} runs): p50 {statistics.median(listening):.3f}s  "
        f"p95 {percentile(listening, 0.95):.3f}s  max {max(listening):.3f}s   (target p95 < 1.5 s)"
    )
    print(
        f"notice latency after sshd start()  ({len(runs)} runs): p50 {statistics.median(started):.3f}s  "
        f"p95 {percentile(started, 0.95):.3f}s  max {max(started):.3f}s"
    )
    print(
        f"fastest polling: shortest gap between two connections {min_gap:.3f}s "
        f"= {1 / min_gap:.2f} polls/s at most   (target <= 2 polls/s)"
    )
    print(
        f"connections while waiting for a node that never comes up: {idle_connections} in {idle_elapsed:.1f}s "
        f"= {idle_connections * 60 / idle_elapsed:.1f} per minute   (target < 60)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
