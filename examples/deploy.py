"""Deploy from a plan file and print the report: the library without the CLI.

PALETTE_NODE_PASSWORD=... python examples/deploy.py examples/fake-appliance.yaml
"""

from __future__ import annotations

import json
import logging
import sys

import structlog

from palette_provision.errors import PaletteProvisionError
from palette_provision.log import redact_secrets
from palette_provision.pipeline import Deployment
from palette_provision.plan import load_plan
from palette_provision.report import Event


def show(event: Event) -> None:
    if event.status in ("done", "failed"):
        print(f"{event.node:>12} {event.phase:<15} {event.status} {event.message}", file=sys.stderr)


def configure_logging() -> None:
    """The library only emits events; the application decides where they go (here: warnings, to stderr).

    Without this, the same warnings reach stderr through the standard library's ``logging``; configuring structlog
    is how an application gets them rendered (and redacted) its own way.
    """
    structlog.configure(
        processors=[structlog.processors.add_log_level, redact_secrets, structlog.dev.ConsoleRenderer(colors=False)],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
    )


def main(path: str) -> int:
    configure_logging()
    try:
        plan = load_plan(path)
        with Deployment(plan, on_event=show) as deployment:
            report = deployment.apply()
    except PaletteProvisionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict(), indent=2, default=str))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
