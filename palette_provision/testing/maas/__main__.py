"""Command line: ``python -m palette_provision.testing.maas --listen 127.0.0.1:0 --state-dir DIR --config FILE``.

Prints one JSON line on stdout when listening (``{"url", "host", "port", "scheme", "api_key", "pid",
"cert_sha256", "cert_file", "state_dir"}``), serves until SIGTERM/SIGINT, saves its state and exits 0. The API key
comes from ``$MAAS_SIM_API_KEY`` (``--api-key-env``), else the configuration, else the state dir, else a new one;
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
from .config import MaasConfig

API_KEY_ENV = "MAAS_SIM_API_KEY"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(prog="python -m palette_provision.testing.maas",
                                     description="MAAS region simulator (REST API 2.0)")
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT to bind (port 0 = any)")
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--config", type=Path, help="JSON configuration (machines, hook...); see config.py")
    parser.add_argument("--knobs", default="{}", help="JSON object of knobs")
    parser.add_argument("--api-key-env", default=API_KEY_ENV, help="variable holding the API key ck:tk:ts")
    parser.add_argument("--tls", action="store_true", help="serve HTTPS with a self-signed certificate")
    parser.add_argument("--cert-file", type=Path)
    parser.add_argument("--key-file", type=Path)
    parser.add_argument("--verbose", action="store_true", help="access log on stderr")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the simulated region until terminated."""
    args = parse_args(argv)
    if (args.cert_file is None) != (args.key_file is None):
        print("error: --cert-file and --key-file go together", file=sys.stderr)
        return 2
    try:
        config = MaasConfig.from_json(json.loads(args.config.read_text())) if args.config else MaasConfig()
    except (OSError, ValueError) as exc:
        print(f"error: configuration: {exc}", file=sys.stderr)
        return 2
    simulator = Simulator(config, args.state_dir, args.listen, knobs=json.loads(args.knobs),
                          api_key=os.environ.get(args.api_key_env) or None, tls=args.tls,
                          cert_file=args.cert_file, key_file=args.key_file, verbose=args.verbose)

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
