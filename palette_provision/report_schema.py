"""The report's JSON form (what ``apply --json`` prints), as a versioned JSON Schema runbooks can rely on.

The schema is generated from the models below and shipped in the package (``palette_provision/schemas/
report.schema.json``; a test keeps the file and the models in step). ``schema_version`` changes when a field is
removed or changes meaning; new fields may appear within a version (the schema allows them), so a consumer should
ignore what it does not know.

Example::

    import json
    from palette_provision.report_schema import load_report_schema
    import jsonschema
    jsonschema.validate(json.loads(completed.stdout), load_report_schema())
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["REPORT_SCHEMA_PATH", "REPORT_SCHEMA_VERSION", "ReportDocument", "load_report_schema", "report_schema"]

#: The report's schema version (``schema_version`` in every ``--json`` report).
REPORT_SCHEMA_VERSION = "1"
#: The shipped schema file.
REPORT_SCHEMA_PATH = Path(__file__).with_name("schemas") / "report.schema.json"


class _Doc(BaseModel):
    model_config = ConfigDict(extra="allow")


class NodeDocument(_Doc):
    """One node's outcome."""

    name: str
    status: Literal["pending", "ready", "failed"]
    phase: str | None = Field(description="The phase it reached (or failed in).")
    error: str | None = None
    last_state: str | None = Field(default=None, description="The platform's last state seen, when it failed.")
    machine_id: str | None = None
    address: str | None = None
    address_source: Literal["plan", "platform", "node"] | None = Field(
        default=None, description="plan (static), platform (the provider's discovery) or node (its own report)."
    )
    host_key_fingerprint: str | None = None
    seed_left: str | None = Field(default=None, description="Where a failed node's seed is still staged.")
    timings: dict[str, float] = Field(description="Seconds per phase.")
    evidence: list[dict[str, Any]] = Field(description="The readiness ladder's rungs, each with what was seen.")


class HandoffDocument(_Doc):
    """The hand-off's outcome."""

    kind: str
    cluster_state: str | None = None
    cluster_health: str | None = None
    endpoint: str | None = None
    kubeconfig: str | None = Field(default=None, description="The kubeconfig's path (mode 0600), never its content.")
    files: list[str]
    details: dict[str, Any] = Field(description="Cluster, leader, console URL, hosts, and validation evidence.")


class EvidenceDocument(_Doc):
    """One validation or pack check's evidence (more keys may say more: pods per namespace, bytes sent...)."""

    check: str = Field(description="The check's step (validate.pods, packs.upload:<file>...).")
    asked: str = Field(description="What was asked (a request, a listing).")
    answered: str = Field(description="A safe summary of what answered (never a remote answer verbatim).")
    at: float = Field(description="When (Unix time).")
    failed: bool = Field(default=False, description="The check failed (the last entry of a failed hand-off).")


class ReportDocument(_Doc):
    """A deployment's report: ``apply --json``."""

    schema_version: Literal["1"]
    deployment: str
    provider: str
    ok: bool
    started_at: float
    finished_at: float | None
    nodes: list[NodeDocument]
    handoff: HandoffDocument | None
    handoff_error: str | None
    validation: list[EvidenceDocument] = Field(
        default_factory=list, description="The validation and pack checks' evidence, also when the hand-off failed."
    )


def report_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of :class:`ReportDocument`, generated."""
    schema = ReportDocument.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://palette-provision.dev/schemas/report-v{REPORT_SCHEMA_VERSION}.json", **schema}  # fmt: skip


def load_report_schema() -> dict[str, Any]:
    """The shipped schema file."""
    data: dict[str, Any] = json.loads(REPORT_SCHEMA_PATH.read_text())
    return data


if __name__ == "__main__":  # regenerate the shipped file: python -m palette_provision.report_schema
    REPORT_SCHEMA_PATH.write_text(json.dumps(report_schema(), indent=2, sort_keys=True) + "\n")
