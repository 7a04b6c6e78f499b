"""Command line: ``python -m palette_provision.testing.localapi --node-name n1 --state-dir DIR ...``.

Prints one JSON line on stdout when listening (``{"port", "cert_sha256", "pid", ...}``), serves
until SIGTERM/SIGINT, then saves its state and exits 0. The password comes from the environment
variable named by ``--password-env`` (default ``PALETTE_LOCALAPI_PASSWORD``) or ``--password-file``,
never from argv.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from palette_provision.testing import _simhttp

from .app import Simulator
from .node import NodeConfig

PASSWORD_ENV = "PALETTE_LOCALAPI_PASSWORD"  # noqa: S105 - a variable name


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(prog="python -m palette_provision.testing.localapi",
                                     description="Palette Local Management API simulator (one node)")
    parser.add_argument("--node-name", required=True)
    parser.add_argument("--node-ip", help="IP the node reports (default: the listen host)")
    _simhttp.add_server_arguments(parser)  # --listen, --state-dir, --knobs, --cert-file, --key-file, --verbose
    parser.add_argument("--peers-file", type=Path, help="JSON {nodes: [{name,nodeIp,url,certSha256}]}")
    parser.add_argument("--username", default="admin")
    parser.add_argument("--password-env", default=PASSWORD_ENV)
    parser.add_argument("--password-file", type=Path)
    parser.add_argument("--ui-port", type=int, default=5080, help="localUIPort the node reports")
    parser.add_argument("--console-port", type=int, default=0,
                        help="port of the system console at the VIP, once a cluster exists (0: saved or free)")
    parser.add_argument("--kube-port", type=int, default=0,
                        help="port of the kube-apiserver stand-in at the VIP (0: saved or free)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run one simulated node until terminated."""
    args = parse_args(argv)
    if args.password_file is not None:
        password = args.password_file.read_text().rstrip("\n")
    else:
        password = os.environ.get(args.password_env, "")
    if not password:
        return _simhttp.exit_error(f"set {args.password_env} or --password-file")
    if error := _simhttp.server_arguments_error(args):
        return _simhttp.exit_error(error)
    knobs = json.loads(args.knobs)
    listen_host = args.listen.rpartition(":")[0].strip("[]")
    config = NodeConfig(name=args.node_name, node_ip=args.node_ip or listen_host,
                        state_dir=args.state_dir, username=args.username, password=password,
                        peers_file=args.peers_file, ui_port=args.ui_port, listen_host=listen_host)
    simulator = Simulator(config, args.listen, knobs=knobs, cert_file=args.cert_file, key_file=args.key_file,
                          verbose=args.verbose, console_port=args.console_port, kube_port=args.kube_port)
    return _simhttp.serve(simulator)


if __name__ == "__main__":
    sys.exit(main())
