# Copyright: palette-provision contributors
# Apache License 2.0 (see LICENSE in the palette-provision repository)
"""What the ``deployment`` and ``deployment_info`` modules share: the plan's options, loading it, the library's errors
as ``fail_json`` results, the library's warnings as module warnings, and how a run's journal changes are told.

The modules call the palette-provision library in-process (``palette_provision.pipeline.Deployment``); it must be
installed in the Python that runs them (``ansible_python_interpreter`` of the host they run on, usually localhost).
"""

from __future__ import annotations

import logging
import os
import traceback
from pathlib import Path
from typing import Any

PP_IMPORT_ERROR: str | None = None
try:
    from palette_provision.errors import (
        ConfigurationError,
        JournalError,
        PaletteProvisionError,
        PlanError,
        PlanIssue,
    )
    from palette_provision.phases import DEPLOYMENT_PHASES
    from palette_provision.plan import load_plan, parse_plan
    from palette_provision.secrets import known_secret_values
except ImportError:  # reported by require_library(), with the module's own words
    PP_IMPORT_ERROR = traceback.format_exc()

#: Options every module taking a plan has (the DOCUMENTATION of each module describes them).
PLAN_OPTIONS: dict[str, dict[str, Any]] = {
    "plan_file": {"type": "path"},
    "plan": {"type": "dict"},
    "base_dir": {"type": "path"},
    "state_dir": {"type": "path"},
    "secret_env": {"type": "dict", "no_log": True, "default": {}},
}
PLAN_MUTUALLY_EXCLUSIVE = [("plan_file", "plan")]
PLAN_REQUIRED_ONE_OF = [("plan_file", "plan")]

#: The deployment-wide phases apply runs again on every run to look at the platform (preflight's read-only
#: checks, staging's content-addressed check): running again after being done is not a change by itself.
REVERIFYING_PHASES = frozenset(("preflight", "stage_media"))


def require_library(module: Any) -> None:
    """Fail with Ansible's usual words when the library is missing from the module's Python."""
    if PP_IMPORT_ERROR is not None:
        from ansible.module_utils.basic import missing_required_lib

        module.fail_json(
            msg=missing_required_lib("palette-provision", reason="to deploy the Palette appliance (the library "
                                     "runs in-process, in ansible_python_interpreter)"),
            exception=PP_IMPORT_ERROR,
        )


def reverifying_phases() -> frozenset[str]:
    """The library's ``always`` deployment phases (falls back to the two known ones)."""
    try:
        return frozenset(name for name, phase in DEPLOYMENT_PHASES.items() if getattr(phase, "always", False))
    except NameError:
        return REVERIFYING_PHASES


def _scrubbed(text: str) -> str:
    for secret in known_secret_values():
        text = text.replace(secret, "********")
    return text


class WarningCollector(logging.Handler):
    """The library's (and its providers') warnings and errors, kept to be returned as module warnings.

    The library renders them already redacted; every known secret value is scrubbed again on the way out, and
    Ansible masks the ``secret_env`` values in everything the module returns.
    """

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = record.getMessage()
        except Exception:  # a malformed record says nothing useful
            return
        self.lines.append(_scrubbed(f"{record.name}: {line}")[:2000])

    def __enter__(self) -> WarningCollector:
        root = logging.getLogger()
        root.addHandler(self)
        if root.level > logging.WARNING or root.level == logging.NOTSET:
            root.setLevel(logging.WARNING)
        return self

    def __exit__(self, *_: object) -> None:
        logging.getLogger().removeHandler(self)


def plan_issues(exc: Any) -> list[dict[str, str]]:
    """A :class:`PlanError`'s issues as data: field path and message."""
    return [{"path": issue.path, "message": issue.message} for issue in exc.issues]


def fail_with_error(module: Any, exc: BaseException, **result: Any) -> None:
    """``fail_json`` for an error raised by the library, by its kind (the CLI's exit codes, as words)."""
    if isinstance(exc, PlanError):
        module.fail_json(msg=_scrubbed(str(exc)), error="PlanError", issues=plan_issues(exc), **result)
    if isinstance(exc, ConfigurationError):
        module.fail_json(
            msg=_scrubbed(f"the platform rejected the settings in preflight (nothing was changed): {exc}"),
            error=type(exc).__name__, field=exc.field, **result,
        )
    if isinstance(exc, JournalError):
        module.fail_json(msg=_scrubbed(f"the journal is unusable: {exc}"), error="JournalError", **result)
    if isinstance(exc, PaletteProvisionError):
        module.fail_json(
            msg=_scrubbed(f"a deployment-wide step failed ({type(exc).__name__}): {exc}; run again to resume"),
            error=type(exc).__name__, **result,
        )
    module.fail_json(
        msg=_scrubbed(f"unexpected error ({type(exc).__name__}): {exc}"),
        error=type(exc).__name__,
        exception=_scrubbed(traceback.format_exc()),
        **result,
    )


def load(module: Any, *, defer_secrets: bool = False) -> Any:
    """The plan of ``plan_file`` or of the inline ``plan``, validated; fails the module with every issue.

    ``secret_env`` values go into this process's environment (never a command line, never a file) before the plan's
    ``env:`` references are resolved; every resolved secret value is then masked by Ansible in the module's output.
    ``defer_secrets`` (read-only modules): references are checked for form and read only when used; such a module
    masks what it read again before it exits (:func:`mask_secrets`).
    """
    params = module.params
    for name, value in (params.get("secret_env") or {}).items():
        if not isinstance(name, str) or not name or "=" in name or "\0" in name:
            module.fail_json(msg="secret_env: variable names are non-empty strings without '=' (values not shown)")
        os.environ[name] = "" if value is None else str(value)
    try:
        if params.get("plan_file"):
            plan = load_plan(params["plan_file"], defer_secrets=defer_secrets)
        else:
            base = params.get("base_dir") or params.get("state_dir") or os.getcwd()
            plan = parse_plan(params["plan"], base_dir=Path(base).resolve(), source="the plan option",
                              defer_secrets=defer_secrets)  # fmt: skip
    except PlanError as exc:
        module.fail_json(msg=_scrubbed(str(exc)), error="PlanError", issues=plan_issues(exc))
    mask_secrets(module)
    return plan


def mask_secrets(module: Any) -> None:
    """Have Ansible mask every secret value this process has read so far in the module's output."""
    module.no_log_values.update(known_secret_values())


def state_dir(module: Any) -> Path | None:
    """The ``state_dir`` option as a path, or ``None`` for the library's default (beside the plan)."""
    value = module.params.get("state_dir")
    return Path(value) if value else None


def until_issue(until: str, chain: list[str]) -> Any:
    """The plan issue of an ``until`` that names no per-node phase (the library's own words)."""
    return PlanIssue("until", f"not a per-node phase: {until} (phases: {', '.join(chain)})")


# ---------------------------------------------------------------------------------------------- changes
def _steps(status: dict[str, Any]) -> dict[tuple[str, str], tuple[str, int]]:
    return {(s["phase"], s["node"]): (s["status"], int(s["attempts"] or 0)) for s in status.get("steps", [])}


def _resources(status: dict[str, Any]) -> dict[tuple[str, str], tuple[str, bool]]:
    return {(r["kind"], r["id"]): (r["node"], bool(r["destroyed"])) for r in status.get("resources", [])}


def journal_changes(
    before: dict[str, Any], after: dict[str, Any], uploaded: set[tuple[str, str]] | frozenset[tuple[str, str]] = ()
) -> list[str]:
    """What a run changed, read from the journal's view before and after it (``Deployment.status()``).

    A change is: a resource recorded, destroyed or recorded again; a step that appeared, was reset, or whose status
    changed; a step that ran again (its attempts grew). The deployment phases apply runs on every run to look at
    the platform (preflight: read-only checks; stage_media: a content-addressed check that uploads only what is
    missing) count only when they uploaded something (``uploaded``: the steps whose ``done`` event reported
    uploaded bytes; an upload also records its medium as a resource): a preflight the platform rejected changed
    nothing.
    """
    changes: list[str] = []
    reverify = reverifying_phases()
    old_steps, new_steps = _steps(before), _steps(after)
    for key, (status, attempts) in new_steps.items():
        phase, node = key
        where = f"{phase} on {node}" if node != "*" else phase
        if phase in reverify and key not in uploaded:
            continue  # looked at the platform, found it as recorded (or refused it): no side effect
        if key not in old_steps:
            changes.append(f"step {where}: ran ({status})")
            continue
        old_status, old_attempts = old_steps[key]
        if old_status != status:
            changes.append(f"step {where}: {old_status} -> {status}")
        elif attempts != old_attempts:
            changes.append(f"step {where}: ran again ({status})")
    for key in old_steps.keys() - new_steps.keys():
        phase, node = key
        changes.append(f"step {phase if node == '*' else f'{phase} on {node}'}: reset")
    old_res, new_res = _resources(before), _resources(after)
    for key, (node, destroyed) in new_res.items():
        kind, ident = key
        if key not in old_res:
            changes.append(f"resource {kind} {ident} ({node}): recorded" + (" and destroyed" if destroyed else ""))
        elif old_res[key][1] != destroyed:
            changes.append(f"resource {kind} {ident} ({node}): " + ("destroyed" if destroyed else "recorded again"))
    for key in old_res.keys() - new_res.keys():
        changes.append(f"resource {key[0]} {key[1]}: no longer in the journal")
    return changes


def changes_after_error(deployment: Any, before: dict[str, Any], uploaded: Any = ()) -> dict[str, Any]:
    """``changed`` and ``journal_changes`` of a run that raised: what it did before the error still counts."""
    try:
        changes = journal_changes(before, deployment.status(), uploaded)
    except Exception:  # the journal itself is what failed: nothing it could tell
        changes = []
    return {"changed": bool(changes), "journal_changes": changes}


def action_lines(actions: list[dict[str, str]], *, as_done: bool = False) -> str:
    """The dry run as text, one action a line (``state phase node action``), for Ansible's ``diff``."""
    lines = []
    for action in actions:
        state = "done" if as_done else action["state"]
        lines.append(f"[{state}] {action['phase']} {action['node']}: {action['action']}")
    return "".join(line + "\n" for line in lines)


def resource_lines(resources: list[dict[str, Any]]) -> str:
    """Live resources as text, one a line, for Ansible's ``diff``."""
    return "".join(f"{r['kind']} {r['id']} ({r['node']})\n" for r in resources)
