"""Shared fixtures: plans for the fake provider, and a CLI runner in a subprocess."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

NODE_PASSWORD = "correct-horse-battery-staple"
# Module-scoped fixtures run before function-scoped ones: the variable must exist from import time.
os.environ["PP_TEST_NODE_PASSWORD"] = NODE_PASSWORD
PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl test@example"


def pytest_configure(config: pytest.Config) -> None:
    """Give the suite's child processes Ctrl-C back when the suite was started with SIGINT ignored.

    A shell without job control starts background commands with SIGINT ignored, children inherit that, and a Python
    whose SIGINT is ignored at start installs no KeyboardInterrupt handler: the Ctrl-C tests would then see their
    ``apply`` run on to the end. A handled signal is reset to the default at ``exec``, so installing Python's own
    handler here gives every child the default back.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def base_plan(tmp: Path, count: int = 3) -> dict[str, Any]:
    """A valid appliance plan on the fake provider, with its ISO created in ``tmp``."""
    iso = tmp / "appliance.iso"
    if not iso.exists():
        iso.write_bytes(b"\x00" * 4096 + b"palette-appliance-test-iso")
    return {
        "name": "test-deploy",
        "profile": "appliance",
        "iso": {"source": str(iso)},
        "cluster": {
            "name": "palette",
            "vip": "10.251.0.100",
            "dns": ["10.251.0.1"],
            "ntp": ["pool.ntp.org"],
            "ssh_public_keys": [PUBLIC_KEY],
            "node_account": {"username": "kairos", "password": "env:PP_TEST_NODE_PASSWORD"},
        },
        "nodes": {
            "count": count,
            "size": "medium",
            "network": {
                "mode": "static",
                "addresses": [f"10.251.0.{11 + i}/24" for i in range(count)],
                "gateway": "10.251.0.1",
            },
        },
        "readiness": {"ssh": False},
        "handoff": {"kind": "inventory", "output_dir": str(tmp / "out")},
        "platform": {
            "provider": "fake",
            "state_file": str(tmp / "platform.json"),
            "install_seconds": 0.3,
        },
        "timeouts": {"install": 20, "ready": 20},
    }


PG_PASSWORD_ENV = "PP_TEST_PG_JOURNAL_PASSWORD"


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Any]:
    """A throw-away PostgreSQL server (tests/pgcluster.py), its password in ``PP_TEST_PG_JOURNAL_PASSWORD``."""
    from .pgcluster import PgCluster

    with PgCluster() as cluster:
        os.environ[PG_PASSWORD_ENV] = cluster.password
        yield cluster


def pg_journal(cluster: Any) -> dict[str, Any]:
    """A plan's ``journal`` section on ``cluster``, in a schema of its own (each test its own journal)."""
    import uuid

    return {"url": cluster.url, "password": f"env:{PG_PASSWORD_ENV}", "schema": f"t_{uuid.uuid4().hex[:16]}"}


@pytest.fixture(autouse=True)
def _node_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PP_TEST_NODE_PASSWORD", NODE_PASSWORD)


@pytest.fixture
def plan_dict(tmp_path: Path) -> dict[str, Any]:
    return base_plan(tmp_path)


@pytest.fixture
def write_plan(tmp_path: Path) -> Callable[[dict[str, Any]], Path]:
    def write(data: dict[str, Any], name: str = "plan.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data))
        return path

    return write


def merged(data: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A deep copy of ``data`` with dotted-path changes applied (``None`` deletes)."""
    out = copy.deepcopy(data)
    for dotted, value in changes.items():
        keys = dotted.split("__")
        target = out
        for key in keys[:-1]:
            target = target.setdefault(key, {})
        if value is None:
            target.pop(keys[-1], None)
        else:
            target[keys[-1]] = value
    return out


class CliResult:
    def __init__(self, proc: subprocess.CompletedProcess[str]) -> None:
        self.code = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr

    def json(self) -> Any:
        return json.loads(self.stdout)


@pytest.fixture
def cli() -> Iterator[Callable[..., CliResult]]:
    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> CliResult:
        full_env = {**os.environ, **(env or {})}
        proc = subprocess.run(
            [sys.executable, "-m", "palette_provision", *args],
            capture_output=True,
            text=True,
            env=full_env,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        return CliResult(proc)

    yield run
