"""The seed's conformance table: the keys a Kairos/Palette user-data may hold, and a checker that walks a document.

The table (:data:`RULES`) is our own, written from the published references listed in :data:`SOURCES` (Spectro
Cloud's Edge installer reference, Kairos's schema, configuration structs and docs, and yip's stage schema); each
rule names the reference it comes from. ``docs/seed-conformance.md`` shows it as a readable list and says how to
update it.

A rule's ``path`` is a pattern of dotted segments: ``*`` stands for a map key (a NIC, a user or a stage name),
``[]`` for the items of a list, e.g. ``stages.*[].files[].path``.

:func:`check_seed_document` reports, per key: a key the references do not list (a warning: the installer may
still accept it), a likely typo of a listed sibling (an error), a wrong type, a value outside the allowed ones or
not of the published form (errors), a deprecated or misleading key (a warning). Messages name types and the
allowed values, never the value found: seeds hold secrets.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from palette_provision.seed._conformance_table import RULES, SOURCES, STAGE_NAMES, KeyRule, Kind, SourceRef

__all__ = [
    "RULES",
    "SOURCES",
    "STAGE_NAMES",
    "KeyRule",
    "Kind",
    "SeedKeyFinding",
    "SourceRef",
    "check_seed_document",
]


@dataclass(frozen=True)
class SeedKeyFinding:
    """A finding on one key: its dotted path (list items as ``[i]``), what is wrong, ``error`` or ``warning``."""

    path: str
    message: str
    severity: Literal["error", "warning"]

    def __str__(self) -> str:
        return f"{self.severity}: {self.path}: {self.message}"



# ------------------------------------------------------------------------------------------------ the checker

_UNKNOWN = (
    "is not in the published references (installer reference, Kairos schema, yip); the installer may still accept it"
)
_KIND_NAMES: Mapping[Kind, str] = {
    "string": "a string", "integer": "an integer", "boolean": "a boolean", "list-of-strings": "a list of strings",
    "mapping": "a mapping", "list": "a list", "any": "anything",
}  # fmt: skip


@dataclass
class _Node:
    rule: KeyRule | None = None
    keys: dict[str, _Node] = field(default_factory=dict)
    any_key: _Node | None = None
    item: _Node | None = None


def _segments(path: str) -> list[str]:
    out: list[str] = []
    for part in path.split("."):
        name = part.rstrip("[]")
        out.append(name)
        out.extend(["[]"] * ((len(part) - len(name)) // 2))
    return [s for s in out if s]


def _build(rules: Iterable[KeyRule]) -> _Node:
    root = _Node()
    for rule in rules:
        node = root
        for seg in _segments(rule.path):
            if seg == "[]":
                node.item = node.item or _Node()
                node = node.item
            elif seg == "*":
                node.any_key = node.any_key or _Node()
                node = node.any_key
            else:
                node = node.keys.setdefault(seg, _Node())
        if node.rule is not None:
            raise ValueError(f"two rules for {rule.path}")
        node.rule = rule
    return root


_ROOT = _build(RULES)


def _distance(a: str, b: str) -> int:
    """Optimal string alignment distance (insertions, deletions, substitutions, adjacent transpositions)."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cost = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cost = min(cost, prev2[j - 2] + 1)
            cur.append(cost)
        prev2, prev = prev, cur
    return prev[-1]


def _near(key: str, known: Iterable[str]) -> str | None:
    """The known key ``key`` most likely misspells: the same case-insensitively, or within 2 edits (1 for keys of
    four characters or fewer, where 2 edits reach unrelated words)."""
    low = key.lower()
    best: tuple[int, str] | None = None
    for cand in known:
        d = _distance(low, cand.lower())
        limit = 1 if min(len(key), len(cand)) <= 4 else 2
        if d <= limit and (best is None or (d, cand) < best):
            best = (d, cand)
    return best[1] if best else None


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _matches(value: object, kind: Kind) -> bool:
    if kind == "any":
        return True
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "mapping":
        return isinstance(value, Mapping)
    return isinstance(value, list)  # list, list-of-strings (items checked apart)


class _Walk:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.findings: list[SeedKeyFinding] = []

    def add(self, path: str, message: str, severity: Literal["error", "warning"]) -> None:
        self.findings.append(SeedKeyFinding(self.prefix + path, message, severity))

    def value(self, value: object, node: _Node, path: str) -> None:
        rule = node.rule
        if rule is not None:
            if value is None:  # YAML null: the installer's decoders read it as the type's zero value
                return
            if rule.deprecated:
                self.add(path, f"is deprecated: {rule.deprecated}", "warning")
            if rule.caution:
                self.add(path, rule.caution, "warning")
            if not self.kind(value, rule, path) or rule.open or "any" in rule.kinds:
                return
        if isinstance(value, Mapping):
            self.mapping(value, node, path)
        elif isinstance(value, list) and node.item is not None:
            for i, item in enumerate(value):
                self.value(item, node.item, f"{path}[{i}]")

    def kind(self, value: object, rule: KeyRule, path: str) -> bool:
        """Check the type, then the allowed values and form; True when the walk may go on into ``value``."""
        kinds = rule.kinds
        matched = next((k for k in kinds if _matches(value, k)), None)
        if matched is None:
            if "string" in kinds and _is_number(value):
                self.add(path, f"is typed as a string in the references, got {_type_name(value)}; quote it so the "
                         "installer reads it as text", "warning")  # fmt: skip
            else:
                expected = " or ".join(_KIND_NAMES[k] for k in kinds)
                self.add(path, f"must be {expected}, got {_type_name(value)}", "error")
            return False
        if matched == "list-of-strings" and isinstance(value, list):
            for i, item in enumerate(value):
                if _is_number(item):
                    self.add(f"{path}[{i}]", f"is typed as a string in the references, got {_type_name(item)}; "
                             "quote it so the installer reads it as text", "warning")  # fmt: skip
                elif not isinstance(item, str):
                    self.add(f"{path}[{i}]", f"must be a string, got {_type_name(item)}", "error")
        if isinstance(value, str):
            if rule.allowed and value not in rule.allowed:
                shown = ", ".join(a or '""' for a in rule.allowed)
                self.add(path, f"must be one of: {shown}", "error")
            elif rule.pattern is not None and re.fullmatch(rule.pattern, value) is None:
                self.add(path, f"does not have the published form {rule.pattern}", "error")
        return True

    def mapping(self, value: Mapping[Any, Any], node: _Node, path: str) -> None:
        for raw_key, child in value.items():
            key = str(raw_key)
            sub = f"{path}.{key}" if path else key
            if key in node.keys:
                self.value(child, node.keys[key], sub)
                continue
            wild = node.any_key
            if wild is not None:
                names = wild.rule.names if wild.rule is not None else frozenset()
                if names and key not in names:
                    self.unknown(key, names, sub, wild.rule.note if wild.rule is not None else "")
                self.value(child, wild, sub)
                continue
            self.unknown(key, node.keys, sub, "")

    def unknown(self, key: str, known: Iterable[str], path: str, note: str) -> None:
        near = _near(key, known)
        if near is not None:
            hint = " (keys are case-sensitive)" if near.lower() == key.lower() else ""
            self.add(path, f"`{key}` is not a published key here; did you mean `{near}`?{hint}", "error")
        else:
            self.add(path, f"`{key}` {_UNKNOWN}" + (f" ({note})" if note else ""), "warning")


def _cross_checks(doc: Mapping[str, Any], walk: _Walk) -> None:
    install = doc.get("install")
    if isinstance(install, Mapping) and install.get("poweroff") is True and install.get("reboot") is True:
        walk.add("install", "poweroff and reboot are both true; the Kairos schema allows at most one", "error")


def check_seed_document(doc: Mapping[str, Any], *, prefix: str = "") -> list[SeedKeyFinding]:
    """Check a user-data document (the YAML mapping after ``#cloud-config``) against :data:`RULES`.

    ``prefix`` is put before every path (e.g. ``"user_data_extra."`` when checking a plan's extra). Returns the
    findings in document order; an empty list means every key is published and well typed. Values are never
    quoted in messages.

    >>> doc = {"install": {"auto": "yes"}, "stylus": {"site": {"hostname": "n1", "ntpServers": ["pool.ntp.org"]}}}
    >>> for finding in check_seed_document(doc, prefix="user_data_extra."):  # doctest: +ELLIPSIS
    ...     print(finding.severity, finding.path, "|", finding.message)
    error user_data_extra.install.auto | must be a boolean, got a string
    error user_data_extra.stylus.site.hostname | `hostname` is not a published key here; did you mean `hostName`? ...
    """
    walk = _Walk(prefix)
    walk.mapping(doc, _ROOT, "")
    _cross_checks(doc, walk)
    return walk.findings
