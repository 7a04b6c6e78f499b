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
import sys
from pathlib import Path

from palette_provision.testing import _simhttp

from .app import Simulator
from .config import MaasConfig

API_KEY_ENV = "MAAS_SIM_API_KEY"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(prog="python -m palette_provision.testing.maas",
                                     description="MAAS region simulator (REST API 2.0)")
    _simhttp.add_server_arguments(parser)  # --listen, --state-dir, --knobs, --cert-file, --key-file, --verbose
    parser.add_argument("--config", type=Path, help="JSON configuration (machines, hook...); see config.py")
    parser.add_argument("--api-key-env", default=API_KEY_ENV, help="variable holding the API key ck:tk:ts")
    parser.add_argument("--tls", action="store_true", help="serve HTTPS with a self-signed certificate")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the simulated region until terminated."""
    args = parse_args(argv)
    if error := _simhttp.server_arguments_error(args):
        return _simhttp.exit_error(error)
    try:
        config = MaasConfig.from_json(json.loads(args.config.read_text())) if args.config else MaasConfig()
    except (OSError, ValueError) as exc:
        return _simhttp.exit_error(f"configuration: {exc}")
    simulator = Simulator(config, args.state_dir, args.listen, knobs=json.loads(args.knobs),
                          api_key=os.environ.get(args.api_key_env) or None, tls=args.tls,
                          cert_file=args.cert_file, key_file=args.key_file, verbose=args.verbose)
    return _simhttp.serve(simulator)


if __name__ == "__main__":
    sys.exit(main())
