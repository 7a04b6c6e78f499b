"""A secret canary through the CLI: awkward secrets as the node password and the platform's, failures in several
phases and an unexpected crash, every log level, then every channel searched for a byte of them.

Channels: stdout (the report), stderr (logs), ``status --json``, ``destroy`` output, the journal as raw bytes (its
WAL included) and every other file the run wrote, except the seeds (mode 0600, holding the password hash by design).
The hand-off's own channel (a cluster's kubeconfig) is covered in ``tests/handoff/test_local_api.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import base_plan

SHAPES = {
    "multi-line key": "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEA\n-----END OPENSSH PRIVATE KEY-----",
    "quotes": "pa\"ss'wo\"rd-canary",
    "backslash": "back\\slash\\canary",
    "non-ascii": "pässwörd-ćanary-✓",
    "one character": "Q",
    "4 KiB": "canary-" + "k" * 4089,
}


def _forms(secret: str) -> list[bytes]:
    """The secret as bytes, and the escaped forms a JSON or Python repr would write."""
    import json

    forms = {secret, json.dumps(secret)[1:-1], repr(secret)[1:-1], secret.encode("unicode_escape").decode()}
    return [f.encode() for f in forms if len(f) > 1]


@pytest.mark.parametrize("shape", list(SHAPES))
def test_no_secret_byte_in_any_channel_whatever_fails(tmp_path: Path, shape: str) -> None:
    secret = SHAPES[shape]
    platform_secret = f"platform-{secret}" if len(secret) > 1 else "platform-canary-Q"
    data = base_plan(tmp_path)
    data["cluster"]["node_account"]["password"] = "env:PP_CANARY_NODE_PW"
    data["platform"].update(
        password="env:PP_CANARY_PLATFORM_PW",
        expected_password="env:PP_CANARY_PLATFORM_PW",
        fail={"palette-1": "insert_media", "palette-2": "power_on"},
        crash={"palette-3": "eject_media"},
    )
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump(data))
    env = {**os.environ, "PP_CANARY_NODE_PW": secret, "PP_CANARY_PLATFORM_PW": platform_secret}

    def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([sys.executable, "-m", "palette_provision", *args], capture_output=True, env=env,
                              timeout=120, stdin=subprocess.DEVNULL)

    outputs = [
        cli("--log-level", "debug", "apply", str(plan), "--json"),
        cli("--log-level", "debug", "apply", str(plan)),  # the re-run, in text form
        cli("status", str(plan), "--json"),
        cli("status", str(plan)),
        cli("--log-level", "debug", "destroy", str(plan), "--json"),
    ]
    assert outputs[0].returncode == 1, outputs[0].stderr[-2000:]
    assert b"fault knob" in outputs[0].stdout, "the failures happened (and are reported)"
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "plan.yaml" and "/seeds/" not in str(p)]
    assert any(p.name == "journal.sqlite" for p in written)
    blobs = [o.stdout + o.stderr for o in outputs] + [p.read_bytes() for p in written]
    for value in (secret, platform_secret):
        if len(value) == 1:
            continue  # a one-character secret is masked in logs, but the letter itself occurs in any text
        for form in _forms(value):
            leaks = [str(p) for p, blob in zip(["outputs"] * 5 + written, blobs, strict=True) if form in blob]
            assert not leaks, f"{shape}: found in {leaks}"
