"""Loading a plan: YAML/JSON text or a mapping to a validated DeploymentPlan, every problem reported at once."""

from __future__ import annotations

import functools
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from palette_provision.errors import PlanError, PlanIssue
from palette_provision.plan._models import DeploymentPlan
from palette_provision.plan._rules import _rule_issues


def field_path(loc: Sequence[Any], prefix: str = "") -> str:
    """A field path as users read it: ``nodes.hosts[1].bmc.address`` (list indexes in brackets)."""
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def _issue_from_pydantic(err: Mapping[str, Any], prefix: str = "") -> PlanIssue:
    # Only the message: pydantic's 'input' may hold a secret typed inline by mistake.
    return PlanIssue(field_path(err.get("loc", ()), prefix), str(err.get("msg", "invalid value")))


def _platform_issues(data: Mapping[str, Any], context: dict[str, Any]) -> tuple[list[PlanIssue], Any, list[Any]]:
    """Validate the ``platform`` section and every ``nodes.hosts`` entry's provider keys with the provider's models."""
    from palette_provision.errors import ProviderNotFound
    from palette_provision.registry import load_provider_class

    plan_platform = data.get("platform")
    if not isinstance(plan_platform, Mapping) or not isinstance(plan_platform.get("provider"), str):
        return [], None, []
    name = plan_platform["provider"]
    try:
        provider_cls = load_provider_class(name)
    except ProviderNotFound as exc:
        return [PlanIssue("platform.provider", str(exc))], None, []
    issues: list[PlanIssue] = []
    options = {k: v for k, v in plan_platform.items() if k != "provider"}
    settings = None
    try:
        settings = provider_cls.settings_model.model_validate(options, context=context)
    except ValidationError as exc:
        issues.extend(_issue_from_pydantic(e, "platform") for e in exc.errors())
    nodes = data.get("nodes")
    hosts = nodes.get("hosts") if isinstance(nodes, Mapping) else None
    node_settings: list[Any] = []
    if not isinstance(hosts, list):
        return issues, settings, node_settings
    model = getattr(provider_cls, "node_settings_model", None)
    for i, host in enumerate(hosts):
        if not isinstance(host, Mapping):
            continue  # the core's model reports it
        own = {k: v for k, v in host.items() if k not in _CORE_HOST_KEYS}
        if model is None:
            issues.extend(
                PlanIssue(f"nodes.hosts[{i}].{key}", f"provider {name!r} takes no per-node settings") for key in own
            )
            node_settings.append(None)
            continue
        try:
            node_settings.append(model.model_validate(own, context=context))
        except ValidationError as exc:
            issues.extend(_issue_from_pydantic(e, f"nodes.hosts[{i}]") for e in exc.errors())
            node_settings.append(None)
    return issues, settings, node_settings


_CORE_HOST_KEYS = frozenset({"name", "address"})

#: The largest plan file read (thousands of hosts fit in a fraction of it).
MAX_PLAN_BYTES = 4 * 1024 * 1024


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model an annotation is (``Model`` or ``Model | None``), else ``None``."""
    candidates = typing.get_args(annotation) or (annotation,)
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _salvage(model: type[BaseModel], data: Any, context: dict[str, Any], depth: int = 0) -> Any:
    """``model`` built field by field from ``data``: each field validated on its own, a failed section salvaged the
    same way, a failed value left ``None``. No validator of ``model`` itself runs: only for cross-field rules."""
    if not isinstance(data, Mapping) or depth > 8:
        return None
    values: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        key = field.alias or name
        if key not in data:
            continue  # model_construct fills the default
        annotation: Any = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
        try:
            values[name] = TypeAdapter(annotation).validate_python(data[key], context=context)
        except (ValidationError, TypeError, ValueError, RecursionError):
            sub = _model_of(field.annotation)
            values[name] = _salvage(sub, data[key], context, depth + 1) if sub is not None else None
    return model.model_construct(**values)


def partial_plan(data: Mapping[str, Any], context: dict[str, Any]) -> DeploymentPlan | None:
    """A plan of whatever validated, for running the cross-field rules on a plan that has schema errors too."""
    try:
        plan = _salvage(DeploymentPlan, data, context)
    except Exception:  # best effort: the schema errors are reported either way
        return None
    return plan if isinstance(plan, DeploymentPlan) else None


def _covered(path: str, reported: set[str]) -> bool:
    """Whether a rule's ``path`` is at or under (or above) a path the schema errors already reported."""
    return any(path == p or path.startswith(p + ".") or path.startswith(p + "[") or p.startswith(path + ".")
               for p in reported)


def parse_plan(
    data: Any, *, base_dir: Path | None = None, source: str | None = None, defer_secrets: bool = False
) -> DeploymentPlan:
    """Validate a mapping into a :class:`DeploymentPlan`, provider settings included.

    ``defer_secrets``: check each secret reference's form but read it only when the secret is first revealed
    (:meth:`Secret.deferred <palette_provision.secrets.Secret.deferred>`), for read-only views such as ``status``.

    Raises:
        PlanError: with every problem found (field path and rule), never echoing a secret.
    """
    if not isinstance(data, Mapping):
        raise PlanError(
            [PlanIssue("", "a plan is a mapping of sections (name, iso, cluster, nodes, platform...)")], source
        )
    if any(not isinstance(k, str) for k in data):
        raise PlanError([PlanIssue("", "section names must be strings")], source)
    context = {"base_dir": base_dir, "defer_secrets": defer_secrets}
    issues: list[PlanIssue] = []
    plan: DeploymentPlan | None = None
    try:
        plan = DeploymentPlan.model_validate(data, context=context)
    except ValidationError as exc:
        issues.extend(_issue_from_pydantic(e) for e in exc.errors())
    except (TypeError, ValueError, RecursionError) as exc:
        issues.append(PlanIssue("", f"unreadable plan structure ({type(exc).__name__})"))
    platform_issues, settings, node_settings = _platform_issues(data, context)
    issues.extend(platform_issues)
    # Every problem in one round: with schema errors, the cross-field rules run on what did validate.
    checked = plan if plan is not None else partial_plan(data, context)
    if checked is not None:
        reported = {issue.path for issue in issues}
        issues.extend(i for i in _rule_issues(checked) if plan is not None or not _covered(i.path, reported))
    if issues or plan is None:
        raise PlanError(issues or [PlanIssue("", "invalid plan")], source)
    plan._settings = settings
    plan._node_settings = tuple(node_settings)
    plan._base_dir = base_dir
    return plan


@functools.cache
def _no_alias_loader() -> Any:
    """Safe YAML without aliases: a plan never needs them, and alias bombs would stall validation.

    Built on first use: a plan built in Python never pays for importing PyYAML.
    """
    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()  # type: ignore[no-untyped-call]
                raise yaml.composer.ComposerError(
                    None, None, "YAML aliases (*name) are not allowed in a plan", event.start_mark
                )
            return super().compose_node(parent, index)

    return NoAliasLoader


def load_plan(path: str | Path, *, defer_secrets: bool = False) -> DeploymentPlan:
    """Read a plan from a YAML or JSON file (JSON is YAML) and validate it with :func:`parse_plan`.

    Relative paths and ``file:`` secret references inside are resolved against the file's folder;
    ``defer_secrets`` as for :func:`parse_plan`.

    Raises:
        PlanError: unreadable file, bad YAML (with line and column), or an invalid plan.
    """
    path = Path(path)
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_PLAN_BYTES + 1)  # bounded: a plan is a few KiB
        if len(raw) > MAX_PLAN_BYTES:
            raise PlanError([PlanIssue("", f"the plan file is larger than {MAX_PLAN_BYTES // 2**20} MiB")], str(path))
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError([PlanIssue("", f"cannot read plan file: {type(exc).__name__}")], str(path)) from None
    return parse_plan_text(text, base_dir=path.resolve().parent, source=str(path), defer_secrets=defer_secrets)


def parse_plan_text(
    text: str, *, base_dir: Path | None = None, source: str | None = None, defer_secrets: bool = False
) -> DeploymentPlan:
    """Parse YAML or JSON text into a plan. See :func:`load_plan`."""
    import yaml

    try:
        data = yaml.load(text, Loader=_no_alias_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        # Only the problem, not the quoted source line, which could hold anything the user typed.
        raise PlanError([PlanIssue("", f"YAML syntax error at {where}{exc.problem or 'unreadable'}")], source) from None
    except (yaml.YAMLError, RecursionError, ValueError) as exc:
        raise PlanError([PlanIssue("", f"YAML syntax error ({type(exc).__name__})")], source) from None
    return parse_plan(data, base_dir=base_dir, source=source, defer_secrets=defer_secrets)
