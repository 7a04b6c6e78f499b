"""What the lab's demos share: the command line, a fresh work folder with an SSH key, and the user's two commands.

A demo starts its platform (a lab, a simulator), then hands :func:`run_as_user` the plan and its secrets: they are
written to files (mode 0600, referenced as ``file:`` by the plan), and ``palette-provision apply`` then ``destroy``
run in their own processes, as a user runs them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

__all__ = ["DemoArgs", "parse_demo_args", "run_as_user"]


class DemoArgs(argparse.Namespace):
    """``--workdir`` (fresh: emptied, an SSH key made in it) and ``--keep`` (leave everything running)."""

    workdir: Path
    keep: bool


def parse_demo_args(prog: str, folder: str, argv: Sequence[str] | None, *, what_keeps: str) -> DemoArgs:
    """Parse a demo's arguments and prepare its work folder (``$TMPDIR/<folder>`` by default)."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--keep", action="store_true", help=f"leave the deployment and {what_keeps} running")
    ns = parser.parse_args(argv, namespace=DemoArgs())
    ns.workdir = ns.workdir or Path(os.environ.get("TMPDIR", "/tmp")) / folder
    shutil.rmtree(ns.workdir, ignore_errors=True)
    ns.workdir.mkdir(parents=True, mode=0o700)
    key = ns.workdir / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return ns


def run_as_user(args: DemoArgs, secrets: Mapping[str, str], plan: Callable[[], dict[str, Any]],
                destroy_flags: Sequence[str] = ()) -> int:  # fmt: skip
    """Write ``secrets`` (file name -> value) and the plan, then ``apply``, then (unless ``--keep``) ``destroy``.

    Returns ``apply``'s exit code.
    """
    for name, secret in secrets.items():
        path = args.workdir / name
        path.write_text(secret)
        path.chmod(0o600)
    plan_path = args.workdir / "plan.yaml"
    plan_path.write_text(yaml.safe_dump(plan(), sort_keys=False))
    cli = [sys.executable, "-m", "palette_provision"]
    print(f"==> palette-provision apply {plan_path}", file=sys.stderr)
    code = subprocess.call([*cli, "apply", str(plan_path)])
    if args.keep:
        print(f"left running; destroy with: palette-provision destroy {plan_path}", file=sys.stderr)
        return code
    print(f"==> palette-provision destroy {plan_path}", file=sys.stderr)
    subprocess.call([*cli, "destroy", str(plan_path), *destroy_flags])
    return code
