"""The secret canary through the hand-off: the node password, a profile secret and the cluster's kubeconfig.

Each awkward secret shape (``tests/test_secret_canary.py``) becomes the node account's password (the simulated node
accepts only it), beside a profile secret (of the shape the profile's regex admits). Two hand-offs run in a subprocess with logging configured as the CLI does,
alternating a terminal (a pty, structlog's console renderer) and JSON lines, at every log level:

1. a wrong password: the Local API refuses the login;
2. the right one, and a cluster that is Running but never Healthy: the wait runs out on an answer that carries the
   admin kubeconfig.

Then every channel is searched for every form of the secrets and the kubeconfig's token: the runner's output
(stdout and stderr, or the pty), the journal as raw bytes (WAL included) and every file written beside it.
"""

from __future__ import annotations

import hashlib
import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from palette_provision.testing.localapi import SimulatedCluster
from tests.handoff import rig
from tests.test_secret_canary import SHAPES, _forms

RUNNER = Path(__file__).with_name("runner.py")
LEVELS = ["debug", "info", "warning", "error"]


def _run(spec: Path, env: dict[str, str], *, terminal: bool) -> tuple[int, bytes, bytes]:
    """Run the hand-off runner: exit code, its answer (the last line of stdout) and all it wrote.

    On a terminal its stdout and stderr are one pty, read to the end (the answer is printed last)."""
    argv = [sys.executable, str(RUNNER), str(spec)]
    if not terminal:
        proc = subprocess.run(argv, capture_output=True, env=env, timeout=120, stdin=subprocess.DEVNULL)
        return proc.returncode, proc.stdout.strip().splitlines()[-1], proc.stdout + proc.stderr
    leader, follower = pty.openpty()
    try:
        proc2 = subprocess.Popen(argv, stdout=follower, stderr=follower, stdin=subprocess.DEVNULL, env=env)
        os.close(follower)
        follower = -1
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        output = b"".join(chunks)
        return proc2.wait(timeout=120), output.strip().splitlines()[-1], output
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)


@pytest.mark.parametrize("index,shape", list(enumerate(SHAPES)))
def test_no_secret_of_the_handoff_in_any_channel(tmp_path: Path, index: int, shape: str) -> None:
    secret = SHAPES[shape]
    # The profile takes this one only as ^\S{8,64}$ (the simulated profile's regex): a canary of that shape.
    oci_secret = f"oci-canary-{hashlib.sha256(secret.encode()).hexdigest()[:24]}"
    terminal, level = index % 2 == 0, LEVELS[index % len(LEVELS)]
    sim = SimulatedCluster(
        tmp_path / "sim",
        1,
        password=secret,
        username=rig.USERNAME,
        knobs={**rig.FAST_KNOBS, "cluster_unhealthy": True, "cluster_running_s": 0.2},
    ).start()
    bundle = tmp_path / "content.tar.zst"
    bundle.write_bytes(b"bundle\n" * 512)
    journal = tmp_path / "journal.sqlite"
    outputs: list[bytes] = []
    try:
        for password, expect in ((f"wrong-{secret}", "handoff.configured"), (secret, "handoff.cluster")):
            data = rig.plan_data(tmp_path, 1, content=bundle, overrides={"timeouts.cluster": 3})
            spec = rig.write_spec(
                tmp_path / "spec.json",
                plan=data,
                journal=str(journal),
                sims=rig.sim_spec(sim),
                log={"level": level, "json": not terminal},
            )
            env = {**os.environ, "PP_HANDOFF_NODE_PASSWORD": password, "PP_HANDOFF_OCI_PASSWORD": oci_secret}
            code, last, output = _run(spec, env, terminal=terminal)
            outputs.append(output)
            assert code == 3, output[-3000:]
            answer = json.loads(last)
            assert answer["step"] == expect, answer
        cluster = sim.leader.state()["cluster"]
    finally:
        sim.stop()
    assert cluster is not None and cluster["state"] == "Running", "the second hand-off reached the cluster wait"
    assert b"refused the login" in outputs[0] and b"Running/Unhealthy" in outputs[1], "the failures are reported"
    token = cluster["kubeToken"]
    assert isinstance(token, str) and len(token) >= 32
    written = [p for p in tmp_path.rglob("*") if p.is_file() and "sim" not in p.relative_to(tmp_path).parts[0]]
    assert any(p.name == "journal.sqlite" for p in written)
    blobs = {f"output of run {i + 1}": o for i, o in enumerate(outputs)}
    blobs.update({str(p.relative_to(tmp_path)): p.read_bytes() for p in written if p.name != "spec.json"})
    values = [secret, f"wrong-{secret}", oci_secret, token]
    for value in values:
        if len(value) == 1:
            continue  # a one-character secret is masked in logs, but the letter itself occurs in any text
        for form in _forms(value):
            leaks = [name for name, blob in blobs.items() if form in blob]
            assert not leaks, f"{shape}: a form of a secret found in {leaks}"
