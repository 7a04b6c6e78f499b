"""Running Ansible in tests: the collection from the repository (never installed in ~/.ansible), Ansible's home and
temporary folders inside the test's tmp_path, the venv's ansible-* commands, and a small runner that plays tasks on
the implicit localhost and hands their registered results back as data."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COLLECTIONS = REPO / "ansible"
COLLECTION = COLLECTIONS / "ansible_collections" / "palette_provision" / "appliance"
BIN = Path(sys.executable).parent
NAMESPACE = "palette_provision.appliance"


def ansible_env(tmp: Path, **extra: str) -> dict[str, str]:
    """The environment of an ansible-* command: the repository's collection, everything else under ``tmp``."""
    home = tmp / "ansible-home"
    cfg = tmp / "ansible-test.cfg"
    if not cfg.exists():
        cfg.write_text("# empty: no ansible.cfg of the working folder or the user's home applies\n")
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(cfg),
        "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS),
        "ANSIBLE_HOME": str(home),
        "ANSIBLE_LOCAL_TEMP": str(home / "tmp"),
        "ANSIBLE_REMOTE_TEMP": str(home / "remote-tmp"),
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(home / "cp"),  # its default is ~/.ansible/cp, whatever ANSIBLE_HOME
        "ANSIBLE_PERSISTENT_CONTROL_PATH_DIR": str(home / "pc"),
        "ANSIBLE_GALAXY_CACHE_DIR": str(home / "galaxy-cache"),
        "ANSIBLE_GALAXY_TOKEN_PATH": str(home / "galaxy-token"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_PIPELINING": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_LOCALHOST_WARNING": "0",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
        "ANSIBLE_DEPRECATION_WARNINGS": "0",
        "PYTHONDONTWRITEBYTECODE": "1",  # no __pycache__ in the repository's collection folder
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.update(extra)
    return env


def run(argv: list[str], env: dict[str, str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """An ansible-* command of the venv (``argv[0]`` is its name), output captured."""
    return subprocess.run([str(BIN / argv[0]), *argv[1:]], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=timeout, stdin=subprocess.DEVNULL, check=False)


def recap(stdout: str) -> dict[str, dict[str, int]]:
    """The PLAY RECAP lines: host -> {ok, changed, unreachable, failed, skipped, rescued, ignored}."""
    found: dict[str, dict[str, int]] = {}
    for line in stdout.split("PLAY RECAP", 1)[-1].splitlines():
        match = re.match(r"^(\S+)\s+:\s+(.*)$", line.strip())
        if match:
            found[match.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(2))}
    return found


def unwrap(value: Any) -> Any:
    """ansible-inventory's JSON with Ansible 2.19's ``{"__ansible_unsafe": ...}`` markers removed."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


class Played:
    """One ansible-playbook run of :func:`player`: each task's registered result, and the process."""

    def __init__(self, results: list[dict[str, Any]], proc: subprocess.CompletedProcess[str]) -> None:
        self.results = results
        self.proc = proc
        self.output = proc.stdout + proc.stderr

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.results[index]


Player = Callable[..., Played]


@pytest.fixture
def player(tmp_path: Path) -> Iterator[Player]:
    """``play(tasks, *, env=None, args=())``: the tasks on the implicit localhost, each registered (errors ignored)
    and its result written to a JSON file read back here."""
    runs = iter(range(1000))

    def play(tasks: list[dict[str, Any]], *, env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> Played:
        n = next(runs)
        out = tmp_path / f"results-{n}"
        out.mkdir()
        expanded: list[dict[str, Any]] = []
        for i, task in enumerate(tasks):
            expanded.append({"name": f"task {i}", **task, "register": f"r{i}", "ignore_errors": True})
            expanded.append({"name": f"result {i}", "ansible.builtin.copy": {
                "content": "{{ r%d | to_json }}" % i, "dest": str(out / f"{i}.json"), "mode": "0600"}})
        playbook = tmp_path / f"play-{n}.yml"
        playbook.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "tasks": expanded}],
                                           sort_keys=False))
        proc = run(["ansible-playbook", str(playbook), *args], env or ansible_env(tmp_path), tmp_path)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        results = [json.loads((out / f"{i}.json").read_text()) for i in range(len(tasks))]
        return Played(results, proc)

    yield play
