"""The deployment plan: one typed document that says what to deploy, where and how.

Load it from YAML or JSON with :func:`load_plan` (or :func:`parse_plan` for a mapping), or build it in Python.
Every problem is reported at once, each with its field path and the rule broken::

    >>> from palette_provision.plan import parse_plan
    >>> parse_plan({"profile": "appliance", "nodes": {"count": 2}, ...})  # doctest: +SKIP
    PlanError: invalid plan (1 problem(s)):
      - nodes.count: the appliance runs on 1 or 3 nodes, got 2

The ``platform`` section belongs to the provider it names: its schema is the provider's ``settings_model`` and its
errors are reported with the ``platform.`` prefix. Loading does no I/O beyond reading the plan file and the
secret references it names, and touches no platform.
"""

from __future__ import annotations

from palette_provision.plan._base import SecretRef
from palette_provision.plan._load import load_plan, parse_plan, parse_plan_text
from palette_provision.plan._models import (
    PROFILE_MINIMUMS,
    SIZE_TIERS,
    ClusterSettings,
    ContentBundle,
    DeploymentPlan,
    HostEntry,
    IsoSource,
    NetworkSettings,
    NodeAccount,
    NodeSpec,
    NodesSettings,
    PlatformSection,
    Profile,
    SizeTier,
)
from palette_provision.plan._sections import (
    ConsoleSettings,
    ExternalRegistry,
    HandoffSettings,
    JournalSettings,
    PacksSettings,
    ReadinessSettings,
    Timeouts,
    ValidateSettings,
)

__all__ = [
    "PROFILE_MINIMUMS",
    "SIZE_TIERS",
    "ClusterSettings",
    "ConsoleSettings",
    "ContentBundle",
    "DeploymentPlan",
    "ExternalRegistry",
    "HandoffSettings",
    "HostEntry",
    "IsoSource",
    "JournalSettings",
    "NetworkSettings",
    "NodeAccount",
    "NodeSpec",
    "NodesSettings",
    "PacksSettings",
    "PlatformSection",
    "Profile",
    "ReadinessSettings",
    "SecretRef",
    "SizeTier",
    "Timeouts",
    "ValidateSettings",
    "load_plan",
    "parse_plan",
    "parse_plan_text",
]
