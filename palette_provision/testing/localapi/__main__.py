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
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from .app import Simulator
from .node import NodeConfig

PASSWORD_ENV = "PALETTE_LOCALAPI_PASSWORD"  # noqa: S105 - a variable name


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(prog="python -m palette_provision.testing.localapi",
                                     description="Palette Local Management API simulator (one node)")
    parser.add_argument("--node-name", required=True)
    parser.add_argument("--node-ip", help="IP the node reports (default: the listen host)")
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT to bind (port 0 = any)")
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--peers-file", type=Path, help="JSON {nodes: [{name,nodeIp,url,certSha256}]}")
    parser.add_argument("--knobs", default="{}", help="JSON object of knobs")
    parser.add_argument("--username", default="admin")
    parser.add_argument("--password-env", default=PASSWORD_ENV)
    parser.add_argument("--password-file", type=Path)
    parser.add_argument("--ui-port", type=int, default=5080, help="localUIPort the node reports")
    parser.add_argument("--cert-file", type=Path)
    parser.add_argument("--key-file", type=Path)
    parser.add_argument("--console-port", type=int, default=0,
                        help="port of the system console at the VIP, once a cluster exists (0: saved or free)")
    parser.add_argument("--kube-port", type=int, default=0,
                        help="port of the kube-apiserver stand-in at the VIP (0: saved or free)")
    parser.add_argument("--verbose", action="store_true", help="access log on stderr")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run one simulated node until terminated."""
    args = parse_args(argv)
    if args.password_file is not None:
        password = args.password_file.read_text().rstrip("\n")
    else:
        password = os.environ.get(args.password_env, "")
    if not password:
        print(f"error: set {args.password_env} or --password-file", file=sys.stderr)
        return 2
    if (args.cert_file is None) != (args.key_file is None):
        print("error: --cert-file and --key-file go together", file=sys.stderr)
        return 2
    knobs = json.loads(args.knobs)
    listen_host = args.listen.rpartition(":")[0].strip("[]")
    config = NodeConfig(name=args.node_name, node_ip=args.node_ip or listen_host,
                        state_dir=args.state_dir, username=args.username, password=password,
                        peers_file=args.peers_file, ui_port=args.ui_port, listen_host=listen_host)
    simulator = Simulator(config, args.listen, knobs=knobs, cert_file=args.cert_file, key_file=args.key_file,
                          verbose=args.verbose, console_port=args.console_port, kube_port=args.kube_port)

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=simulator.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sys.stdout.write(json.dumps(simulator.ready_line(os.getpid())) + "\n")
    sys.stdout.flush()
    simulator.serve_forever()
    simulator.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
