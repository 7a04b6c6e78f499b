"""The ``user_data_extra`` escape hatch: how it is merged over the rendered user-data, and what it may not change.

Merge rules for ``plan.user_data_extra`` (deep-merged over the rendered document):

* mappings merge recursively, key by key;
* lists and scalars **replace** what the library rendered (no list concatenation: a list's meaning is whole,
  e.g. NTP servers);
* a ``null`` value replaces too (it does not delete the key);
* the result must be YAML-serialisable (plain mappings with string keys, lists, strings, numbers, booleans,
  null) and survive a YAML round trip unchanged.

The keys the library depends on (:data:`LIBRARY_KEYS`) may not be removed, and those marked pinned may not
change: a plan that does either fails with a :class:`~palette_provision.errors.PlanError` naming each key. To add
boot-time steps, use another Kairos stage (``stages.boot``, ``stages.network``...): a list under
``stages.initramfs`` would replace the library's users and host-key steps, which is refused.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from palette_provision.errors import PlanIssue

__all__ = ["LIBRARY_KEYS", "LibraryKey", "deep_merge", "legacy_issues", "library_key_issues", "override_findings"]


def deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``extra`` over ``base``: mappings recursively; lists, scalars and ``None`` replace.

    Neither input is modified; the values taken from ``extra`` are copied.

    >>> deep_merge({"a": {"b": 1, "c": [1, 2]}, "d": 1}, {"a": {"c": [3]}, "e": {"f": None}})
    {'a': {'b': 1, 'c': [3]}, 'd': 1, 'e': {'f': None}}
    """
    out: dict[str, Any] = copy.deepcopy(dict(base))
    for key, value in extra.items():
        current = out.get(key)
        if isinstance(current, Mapping) and isinstance(value, Mapping):
            out[key] = deep_merge(current, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@dataclass(frozen=True)
class LibraryKey:
    """A user-data key the library relies on: it must stay present, and ``pinned`` ones must keep their value."""

    path: tuple[str, ...]
    pinned: bool
    why: str


#: The keys ``user_data_extra`` may not remove (or, when pinned, change).
LIBRARY_KEYS: tuple[LibraryKey, ...] = (
    LibraryKey(("stylus", "site", "hostName"), True, "the node's name in the cluster; rename the node in the plan"),
    LibraryKey(("install", "device"), False, "the installer needs a target disk"),
    LibraryKey(("install", "auto"), True, "without it the installer waits for a person at the console"),
    LibraryKey(("install", "poweroff"), True, "the library detects the end of the install by the power-off"),
    LibraryKey(("install", "reboot"), True, "a reboot would hide the end of the install"),
    LibraryKey(("stylus", "managementMode"), False, "the appliance's management mode"),
    LibraryKey(("stylus", "localUI", "port"), True, "the hand-off talks to this port; set handoff.local_api_port"),
    LibraryKey(("stylus", "site", "network", "interfaces"), False, "the node's network settings"),
    LibraryKey(("stages", "initramfs"), False, "the account and the pre-seeded SSH host key"),
)

_MISSING = object()


def _get(doc: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(doc, Mapping) or key not in doc:
            return _MISSING
        doc = doc[key]
    return doc


def library_key_issues(base: Mapping[str, Any], merged: Mapping[str, Any]) -> list[PlanIssue]:
    """What ``merged`` (the user-data with ``user_data_extra``) broke of ``base``, one issue per key."""
    issues: list[PlanIssue] = []
    for rule in LIBRARY_KEYS:
        where = "user_data_extra." + ".".join(rule.path)
        old, new = _get(base, rule.path), _get(merged, rule.path)
        if old is _MISSING:
            continue
        if new is _MISSING or new is None:
            issues.append(PlanIssue(where, f"the library depends on this key ({rule.why}); it cannot be removed"))
        elif rule.pinned and new != old:
            issues.append(PlanIssue(where, f"the library depends on this key ({rule.why}); it must stay {old!r}"))
    # The library's own steps must survive unchanged: its account, the host key it will pin, the address report.
    for stage, old_steps in (_get(base, ("stages",)) or {}).items():
        new_steps = _get(merged, ("stages", stage))
        if not isinstance(old_steps, list):
            continue
        for step in old_steps:
            if not isinstance(new_steps, list) or step not in new_steps:
                issues.append(
                    PlanIssue(
                        f"user_data_extra.stages.{stage}.{step['name']}",
                        "the library's step was replaced or changed (lists replace when merged); add your steps "
                        "under a stage the library does not write, e.g. stages.boot",
                    )
                )
    # The planned static address is where the readiness ladder looks for the node.
    for name, nic in (_get(base, ("stylus", "site", "network", "interfaces")) or {}).items():
        new_nic = _get(merged, ("stylus", "site", "network", "interfaces", name))
        if (
            isinstance(nic, Mapping)
            and "ipAddress" in nic
            and (not isinstance(new_nic, Mapping) or new_nic.get("ipAddress") != nic["ipAddress"])
        ):
            issues.append(
                PlanIssue(
                    f"user_data_extra.stylus.site.network.interfaces.{name}.ipAddress",
                    f"the library reaches the node at its planned address; it must stay {nic['ipAddress']!r} "
                    "(change nodes.network.addresses instead)",
                )
            )
    return issues


def legacy_issues(extra: Mapping[str, Any]) -> list[PlanIssue]:
    """Overrides of keys earlier seeds wrote and the published references route elsewhere: a clear message each."""
    issues: list[PlanIssue] = []
    if "hostname" in extra:
        issues.append(
            PlanIssue(
                "user_data_extra.hostname",
                "the appliance names the host from stylus.site.hostName, which the seed sets to the node's name; "
                "name the node in the plan instead (nodes.names or nodes.hosts[i].name)",
            )
        )
    nics = _get(extra, ("stylus", "site", "network", "interfaces"))
    for name, nic in (nics.items() if isinstance(nics, Mapping) else ()):
        if isinstance(nic, Mapping) and "mask" in nic:
            issues.append(
                PlanIssue(
                    f"user_data_extra.stylus.site.network.interfaces.{name}.mask",
                    "the seed writes the prefix in ipAddress (10.0.10.25/24), as the installer reference's examples "
                    "do; set it in the plan's addresses (nodes.network.addresses) and remove mask",
                )
            )
    return issues


def override_findings(extra: Mapping[str, Any] | None) -> tuple[list[PlanIssue], list[PlanIssue]]:
    """``(errors, warnings)`` for a plan's ``user_data_extra``, checked against the seed's conformance table.

    Errors: typos of published keys, wrong types, values outside the allowed set, and overrides of keys the seed
    now writes elsewhere (top-level ``hostname``, a NIC's ``mask``). Warnings: keys the references do not list (the
    installer accepts more than is published) and deprecated keys. Each names its field path.
    """
    from palette_provision.seed._conformance import check_seed_document

    if not extra:
        return [], []
    errors = legacy_issues(extra)
    flagged = {issue.path for issue in errors}
    warnings: list[PlanIssue] = []
    for finding in check_seed_document(extra, prefix="user_data_extra."):
        if finding.path in flagged:
            continue
        (errors if finding.severity == "error" else warnings).append(PlanIssue(finding.path, finding.message))
    return errors, warnings
