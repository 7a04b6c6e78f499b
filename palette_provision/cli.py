"""The ``palette-provision`` command line.

Commands: ``validate``, ``plan``, ``apply``, ``status``, ``destroy``, ``seed``, ``validate-install``, and
``media serve`` / ``media stop``
(the media server, :mod:`palette_provision.media_server`). ``--json`` prints one JSON document on stdout (logs go to
stderr); on a terminal, ``apply`` and ``destroy`` show live progress per node and phase.

Exit codes:

===  ====================================================================================
0    success
1    the deployment ran but failed: a node failed (phase and last state in the report) or the hand-off failed
2    invalid plan or command line (every problem listed); nothing was touched
3    the platform rejected the settings in preflight (login, unknown object, name clash), or a secret ``destroy``
     or ``status`` needed is not set (they read secrets only when used); nothing was changed
4    a deployment-wide step failed on the platform (e.g. staging the ISO); re-run ``apply`` to resume
5    the journal is unusable (held by another run, or belongs to another deployment)
130  interrupted (Ctrl-C); the journal is consistent: re-run ``apply`` to resume, or ``destroy``
===  ====================================================================================
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from palette_provision._cli_output import LiveView, plain, print_json, print_report, print_validation
from palette_provision.errors import (
    ConfigurationError,
    HandoffError,
    JournalError,
    PaletteProvisionError,
    PlanError,
)
from palette_provision.log import STRUCTURED_ATTR, redact_secrets
from palette_provision.secrets import SecretReferenceError

if TYPE_CHECKING:
    from palette_provision.plan import DeploymentPlan

__all__ = ["EXIT_CODES", "main"]

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_CONFIG, EXIT_PLATFORM, EXIT_JOURNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 5, 130
EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_FAILED: "deployment failed (a node or the hand-off)",
    EXIT_INVALID: "invalid plan or command line",
    EXIT_CONFIG: "platform settings rejected in preflight, or a secret destroy or status needed is not set",
    EXIT_PLATFORM: "deployment-wide platform step failed",
    EXIT_JOURNAL: "journal unusable",
    EXIT_INTERRUPTED: "interrupted",
}


class _JsonLines(logging.Formatter):
    """One JSON object per event: ``event``, ``level``, ``timestamp`` and the event's redacted fields."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, STRUCTURED_ATTR, None) or {"event": record.getMessage()}
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        line = {**fields, "level": record.levelname.lower(), "timestamp": stamp, "logger": record.name}
        return json.dumps(redact_secrets(None, record.levelname.lower(), line), default=str)


def _configure_logging(level: str, json_logs: bool) -> None:
    """The application (not the library) configures logging; redaction happens on both paths.

    Off a terminal: JSON lines on stderr through the standard library, which the library's events reach with their
    fields (structlog, rich and asyncio are not even imported: about 80 ms of a short run). On a terminal:
    structlog's console renderer.
    """
    numeric = getattr(logging, level.upper())
    if json_logs:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_JsonLines())
        # The root logger: providers log under their own package names (palette_provision_vsphere...).
        root = logging.getLogger()
        root.handlers[:] = [handler]
        root.setLevel(numeric)
        return
    import structlog

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            # Tracebacks become text *before* redaction, and without frames' locals: structlog's default console
            # formatter (rich, show_locals=True) ran after redaction and printed revealed values held in frames.
            structlog.processors.format_exc_info,
            redact_secrets,
            structlog.dev.ConsoleRenderer(colors=True, exception_formatter=structlog.dev.plain_traceback),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def _version() -> str:
    """The installed distribution's version (the package's own when run from a source tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("palette-provision")
    except PackageNotFoundError:
        from palette_provision import __version__

        return __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="palette-provision",
        description="Deploy the Palette Management Appliance onto vSphere, MAAS and bare metal.",
        epilog="Exit codes: " + "; ".join(f"{k} {v}" for k, v in EXIT_CODES.items()),
    )
    parser.add_argument(
        "--log-level", type=str.lower, default=os.environ.get("PALETTE_PROVISION_LOG_LEVEL", "warning").lower(),
        choices=["debug", "info", "warning", "error", "critical"],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("plan", type=Path, help="the plan file (YAML or JSON)")
        p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
        p.add_argument("--state-dir", type=Path, help="journal and seeds (default: beside the plan)")
        return p

    add("validate", "check a plan offline and list every problem")
    add("plan", "list the actions apply would take (dry run, no side effects)")
    apply = add("apply", "deploy: stage media, acquire machines, install, wait until ready, hand off; resumable")
    apply.add_argument(
        "--until",
        metavar="PHASE",
        help="stop every node after this per-node phase (e.g. power_on); a later apply continues",
    )
    add("status", "show what the journal recorded")
    add("validate-install", "validate an installed Palette as its documentation does (the plan's validate section): "
        "applications, pods, the system console's password rotated and its health")
    add("push-packs", "upload the plan's pack bundles to an installed Palette (after validating it) and sync the "
        "registry; skips what is already there")
    destroy = add("destroy", "undo what apply created, newest first; resumable")
    what = destroy.add_mutually_exclusive_group()
    what.add_argument("--purge-media", action="store_true", help="also delete the staged appliance ISO")
    what.add_argument(
        "--seeds-only",
        action="store_true",
        help="remove only the seeds of nodes that have not installed (they hold private host keys); "
        "the next apply reinstalls those nodes",
    )
    seed = add("seed", "write each node's seed ISO (mode 0600) without deploying")
    seed.add_argument("--out", type=Path, required=True, help="folder for <node>.iso and <node>.user-data")
    media = sub.add_parser("media", help="the media server BMCs fetch the ISO and seeds from")
    media_sub = media.add_subparsers(dest="media_command", required=True)
    serve = media_sub.add_parser("serve", help="serve a state folder's published media until SIGTERM")
    serve.add_argument("--bind", required=True, metavar="ADDR:PORT", help="address to listen on (port 0: any)")
    serve.add_argument("--state-dir", type=Path, required=True, help="the folder of media.json and server.json")
    serve.add_argument("--advertise", metavar="HOST", help="host in URLs (default: the bind address)")
    serve.add_argument("--tls-cert", type=Path, help="serve HTTPS with this PEM certificate (with --tls-key)")
    serve.add_argument("--tls-key", type=Path, help="the certificate's PEM private key")
    serve.add_argument("--detach", action="store_true", help="return once serving; keep serving in a new session")
    media_stop = media_sub.add_parser("stop", help="stop the media server recorded in a state folder")
    media_stop.add_argument("--state-dir", type=Path, required=True)
    return parser


def _load(args: argparse.Namespace, *, defer_secrets: bool = False) -> DeploymentPlan:
    from palette_provision.plan import load_plan  # pydantic and the models: not for --version or --help

    return load_plan(args.plan, defer_secrets=defer_secrets)


def _cmd_validate(args: argparse.Namespace) -> int:
    from palette_provision.pipeline import Deployment

    plan = _load(args)
    with Deployment(plan, state_dir=args.state_dir) as deployment:
        try:
            deployment.check()  # the provider's validate, install method, capabilities: reads nothing else
        except PlanError as exc:
            raise PlanError(exc.issues, source=str(args.plan)) from None
        method = deployment.install_method.value
    from palette_provision.seed import override_findings

    # Keys of user_data_extra the published references do not list: the installer may accept them; say so.
    warnings = [str(w) for w in override_findings(plan.user_data_extra)[1]]
    if args.json:
        print_json({"valid": True, "plan": plan.name, "nodes": plan.node_names(), "provider": plan.platform.provider,
                     "install_method": method, "warnings": warnings})
    else:
        for warning in warnings:
            sys.stderr.write(f"warning: {warning}\n")
        print(f"{args.plan}: valid ({plan.node_count} node(s) on {plan.platform.provider}, {method})")
    return EXIT_OK


def _cmd_plan(args: argparse.Namespace) -> int:
    from palette_provision.pipeline import Deployment

    plan = _load(args)
    with Deployment(plan, state_dir=args.state_dir) as deployment:
        actions = deployment.actions()
    if args.json:
        print_json({"plan": plan.name, "actions": [a.to_dict() for a in actions]})
    else:
        for a in actions:
            mark = {"done": "= ", "pending": "+ ", "started": "~ ", "failed": "! "}[a.state]
            print(f"{mark}{a.phase:<15} {a.node:<20} {a.action}" + ("" if a.state == "pending" else f" [{a.state}]"))
    return EXIT_OK


def _cmd_validate_install(args: argparse.Namespace) -> int:
    from palette_provision.pipeline import Deployment

    plan = _load(args)
    packs = args.command == "push-packs"
    try:
        # Each command runs only its own steps (validate.* or packs.*), after the formation's (done, skipped).
        with Deployment(plan, state_dir=args.state_dir) as deployment:
            result = deployment.push_packs() if packs else deployment.validate_install()
    except HandoffError as exc:
        if not args.json:
            print_validation(getattr(exc, "evidence", []))
        raise
    evidence = result.details.get("validation") or []
    if args.json:
        print_json({"deployment": plan.name, "validation": evidence, "cluster_state": result.cluster_state,
                     "cluster_health": result.cluster_health})  # fmt: skip
    else:
        print_validation(evidence)
        print("OK")
    return EXIT_OK


def _cmd_apply(args: argparse.Namespace) -> int:
    from palette_provision.pipeline import Deployment

    plan = _load(args)
    live = LiveView(enabled=sys.stderr.isatty() and not args.json)
    deployment = Deployment(plan, state_dir=args.state_dir, on_event=live)
    try:
        with live:
            report = deployment.apply(until=args.until)
    except KeyboardInterrupt:
        # Stop now, like a SIGKILL would: the journal is consistent at every instant, so a re-run resumes.
        # Provider sessions (BMC sessions above all) are closed first.
        try:
            deployment.close()
        finally:
            sys.stderr.write("interrupted: re-run 'apply' to resume, or 'destroy' to clean up\n")
            sys.stderr.flush()
            os._exit(EXIT_INTERRUPTED)
    finally:
        deployment.close()
    if args.json:
        print_json(report.to_dict())
    else:
        print_report(report)
    return EXIT_OK if report.ok else EXIT_FAILED


def _cmd_status(args: argparse.Namespace) -> int:
    from palette_provision.pipeline import Deployment

    plan = _load(args, defer_secrets=True)  # read-only: a secret nothing here uses need not be set
    with Deployment(plan, state_dir=args.state_dir) as deployment:
        status = deployment.status()
    if args.json:
        print_json(status)
    else:
        print(f"journal: {status['journal']}")
        for node, facts in status["nodes"].items():
            # Per node: the latest step the journal has for it, and what is known about the node.
            steps = [s for s in status["steps"] if s["node"] == node]
            last = steps[-1] if steps else None
            where = f"{last['phase']} {last['status']}" if last else "not started"
            line = f"  {node:<20} {where:<25} address={facts.get('address') or '-'}"
            if facts.get("host_key_fingerprint"):
                line += f" host_key={facts['host_key_fingerprint']}"
            print(line)
            if last and last["error"]:
                print(f"      {plain(last['error'])}")
        for s in status["steps"]:
            if s["node"] == "*":
                error = f": {plain(s['error'])}" if s["error"] else ""
                print(f"  {'(deployment)':<20} {s['phase']} {s['status']}{error}")
        live = [r for r in status["resources"] if not r["destroyed"]]
        print(f"resources: {len(live)} live, {len(status['resources']) - len(live)} destroyed")
        for r in live:
            print(f"  {r['kind']:<8} {r['node']:<20} {r['id']}")
    return EXIT_OK


def _cmd_destroy(args: argparse.Namespace) -> int:
    from palette_provision.pipeline import Deployment

    # Deferred: only what destroy uses is read (the platform's credentials, when the provider logs in); a node
    # account's password or a Palette admin password need not be set to take a deployment down.
    plan = _load(args, defer_secrets=True)
    live = LiveView(enabled=sys.stderr.isatty() and not args.json)
    with Deployment(plan, state_dir=args.state_dir, on_event=live) as deployment, live:
        done = deployment.destroy(purge_media=args.purge_media, seeds_only=args.seeds_only)
    if args.json:
        print_json({"deployment": plan.name, "resources": done})
    else:
        width = max([8, *(len(e["result"]) for e in done)])
        for entry in done:
            print(f"{entry['result']:<{width}} {entry['kind']:<8} {entry['node']:<20} {entry['id']}")
        # Deleted, released, restored, ejected, cleared...: everything but what was deliberately kept.
        undone = sum(1 for e in done if e["result"] not in ("kept", "unknown kind, left alone"))
        print(f"destroyed {undone} resource(s)")
    return EXIT_OK


def _cmd_seed(args: argparse.Namespace) -> int:
    from palette_provision.seed import write_seeds

    plan = _load(args)
    written = write_seeds(plan, args.out)
    paths = [p for seed in written for p in seed.paths]
    # With --json, stdout carries only the JSON document: the fingerprints go to stderr.
    keys = sys.stderr if args.json else sys.stdout
    for seed in written:
        print(f"{seed.node}  {seed.host_key_fingerprint}  {seed.host_key_public}", file=keys)
    if args.json:
        print_json({"seeds": [str(p) for p in paths]})
    else:
        for p in paths:
            print(f"wrote {p}")
    return EXIT_OK


def _cmd_media(args: argparse.Namespace) -> int:
    from palette_provision import media_server

    if args.media_command == "stop":
        stopped = media_server.stop_media_server(args.state_dir)
        print("stopped" if stopped else "no media server was running")
        return EXIT_OK
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ConfigurationError("--tls-cert and --tls-key go together")
    tls = media_server.TlsFiles(args.tls_cert, args.tls_key) if args.tls_cert else None
    return media_server.serve(args.state_dir, args.bind, advertise_host=args.advertise, tls=tls, detach=args.detach)


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "validate": _cmd_validate,
    "plan": _cmd_plan,
    "apply": _cmd_apply,
    "status": _cmd_status,
    "destroy": _cmd_destroy,
    "seed": _cmd_seed,
    "media": _cmd_media,
    "validate-install": _cmd_validate_install,
    "push-packs": _cmd_validate_install,
}


def _error(args: argparse.Namespace, code: int, exc: BaseException) -> int:
    if getattr(args, "json", False):
        payload: dict[str, Any] = {"error": type(exc).__name__, "message": str(exc), "exit_code": code}
        if isinstance(exc, PlanError):
            payload["issues"] = [{"path": i.path, "message": i.message} for i in exc.issues]
        if isinstance(exc, ConfigurationError) and exc.field:
            payload["field"] = exc.field
        if isinstance(exc, HandoffError):
            payload["step"] = exc.step
            if hasattr(exc, "evidence"):  # a failed check: the evidence so far, the failed entry last
                payload["validation"] = exc.evidence
        print_json(payload)
    else:
        sys.stderr.write(f"error: {plain(str(exc), lines=True)}\n")
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (see the module docstring)."""
    args = _parser().parse_args(argv)
    # A detached media server logs to a file: JSON lines, whatever its starting terminal.
    _configure_logging(args.log_level, json_logs=not sys.stderr.isatty() or getattr(args, "detach", False))
    try:
        return _COMMANDS[args.command](args)
    except PlanError as exc:
        return _error(args, EXIT_INVALID, exc)
    except (ConfigurationError, SecretReferenceError) as exc:
        return _error(args, EXIT_CONFIG, exc)
    except JournalError as exc:
        return _error(args, EXIT_JOURNAL, exc)
    except PaletteProvisionError as exc:
        return _error(args, EXIT_PLATFORM, exc)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
