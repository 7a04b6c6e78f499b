"""Command line of the lab, for debugging by hand (``python -m pplab --help``).

Examples::

    python -m pplab lan up
    python -m pplab disk create /tmp/n1.raw 300G
    python -m pplab boot --iso lab/build/appliance.iso --seed seed.iso --disk /tmp/n1.raw --mac 52:54:00:00:00:11
    python -m pplab disk state /tmp/n1.raw
    python -m pplab boot --disk /tmp/n1.raw --mac 52:54:00:00:00:11      # boot from disk; Ctrl-C stops it
    python -m pplab expose 10.251.0.11 18443
    python -m pplab lan down
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from pplab import appliance_iso, net
from pplab._cmd import LabError
from pplab.disk import create_disk, read_install_state
from pplab.qemu import GuestSpec, start_guest


def _boot(args: argparse.Namespace) -> int:
    cdroms: list[Path] = []
    if args.iso or args.seed:
        cdroms = [Path(args.iso) if args.iso else appliance_iso()]
        if args.seed:
            cdroms.append(Path(args.seed))
    disk = Path(args.disk)
    if args.create_disk:
        create_disk(disk, args.create_disk)
    spec = GuestSpec(
        name=args.name, disk=disk, mac=args.mac.lower(), cdroms=cdroms, memory_mb=args.memory,
        install_delay_s=args.delay, console_log=Path(args.console) if args.console else None,
    )  # fmt: skip
    guest = start_guest(spec)
    print(f"pplab: started {spec.name} pid={guest.pid} tap={spec.tap} console={spec.console_path}", file=sys.stderr)
    shown = 0
    deadline = time.monotonic() + args.timeout if args.timeout else None
    try:
        while True:
            text = guest.console()
            sys.stdout.write(text[shown:])
            sys.stdout.flush()
            shown = len(text)
            if not guest.is_running():
                print(f"\npplab: QEMU exited with status {guest.returncode}", file=sys.stderr)
                return 0 if guest.returncode == 0 else 1
            if deadline is not None and time.monotonic() > deadline:
                print(f"\npplab: timeout after {args.timeout} s, stopping", file=sys.stderr)
                return 2
            time.sleep(0.3)
    except KeyboardInterrupt:
        return 130
    finally:
        guest.stop()


def _state(args: argparse.Namespace) -> int:
    state = read_install_state(Path(args.path))
    if state is None:
        print("no installed system on this disk")
        return 1
    data = dataclasses.asdict(state)
    if not args.verbose:
        data.pop("files")
    print(json.dumps(data, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m pplab``."""
    p = argparse.ArgumentParser(prog="pplab", description="palette-provision offline lab (needs root)")
    sub = p.add_subparsers(dest="cmd", required=True)

    lan = sub.add_parser("lan", help="the QEMU lab LAN (netns pplab, br0 10.251.0.1/24)")
    lan.add_argument("action", choices=["up", "down", "status"])

    exp = sub.add_parser("expose", help="DNAT <node>:5080 to 10.251.0.1:<port> inside pplab")
    exp.add_argument("node")
    exp.add_argument("port", type=int)
    unexp = sub.add_parser("unexpose", help="remove the DNAT of <node>:5080")
    unexp.add_argument("node")

    disk = sub.add_parser("disk", help="sparse disks and the appliance's installed state")
    dsub = disk.add_subparsers(dest="disk_cmd", required=True)
    dc = dsub.add_parser("create", help="create an empty sparse raw disk")
    dc.add_argument("path")
    dc.add_argument("size", help="e.g. 300G")
    ds = dsub.add_parser("state", help="print what the test appliance installed on a disk")
    ds.add_argument("path")
    ds.add_argument("-v", "--verbose", action="store_true", help="include every installed file")

    boot = sub.add_parser("boot", help="boot a guest, show its console until it powers off (Ctrl-C stops it)")
    boot.add_argument(
        "--iso", help="CD 1 (default with --seed: lab/build/appliance.iso); without --iso/--seed: boot the disk"
    )
    boot.add_argument("--seed", help="CD 2, the cidata seed ISO")
    boot.add_argument("--disk", required=True)
    boot.add_argument("--create-disk", metavar="SIZE", help="create the disk first (sparse), e.g. 300G")
    boot.add_argument("--mac", required=True)
    boot.add_argument("--name", default="pplab-guest")
    boot.add_argument("--memory", type=int, default=384, help="MiB")
    boot.add_argument("--delay", type=int, default=3, help="install delay, s")
    boot.add_argument("--console", help="console log (default <disk>.console.log)")
    boot.add_argument("--timeout", type=float, default=0, help="stop the guest after this many s (0: never)")

    sub.add_parser("iso", help="print the path of the test appliance ISO")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        if args.cmd == "lan":
            if args.action == "up":
                net.ensure_lan()
            elif args.action == "down":
                net.teardown_lan()
            print(f"lan: {'up' if net.lan_exists() else 'down'}; exposed: {net.exposed_local_apis()}")
        elif args.cmd == "expose":
            net.expose_local_api(args.node, args.port)
        elif args.cmd == "unexpose":
            net.unexpose_local_api(args.node)
        elif args.cmd == "disk":
            if args.disk_cmd == "create":
                print(create_disk(Path(args.path), args.size))
            else:
                return _state(args)
        elif args.cmd == "boot":
            return _boot(args)
        elif args.cmd == "iso":
            print(appliance_iso())
    except LabError as exc:
        print(f"pplab: error: {exc}", file=sys.stderr)
        return 1
    return 0
