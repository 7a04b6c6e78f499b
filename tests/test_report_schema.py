"""The report's JSON Schema: shipped in the package, generated from the models, and what ``--json`` really prints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from palette_provision.report_schema import REPORT_SCHEMA_VERSION, load_report_schema, report_schema

from .conftest import base_plan


def _apply(tmp: Path, data: dict[str, Any]) -> dict[str, Any]:
    plan = tmp / "plan.yaml"
    plan.write_text(yaml.safe_dump(data))
    done = subprocess.run([sys.executable, "-m", "palette_provision", "apply", str(plan), "--json"],
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode in (0, 1), done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_the_shipped_schema_is_the_generated_one() -> None:
    assert load_report_schema() == report_schema(), "regenerate: python -m palette_provision.report_schema"
    jsonschema.Draft202012Validator.check_schema(load_report_schema())


def test_a_successful_and_a_failed_report_validate(tmp_path: Path) -> None:
    validator = jsonschema.Draft202012Validator(load_report_schema())
    (tmp_path / "ok").mkdir()
    ok = _apply(tmp_path / "ok", base_plan(tmp_path / "ok"))
    assert ok["schema_version"] == REPORT_SCHEMA_VERSION and ok["ok"] is True
    validator.validate(ok)
    (tmp_path / "bad").mkdir()
    data = base_plan(tmp_path / "bad")
    data["platform"]["fail"] = {"palette-2": "power_on"}
    failed = _apply(tmp_path / "bad", data)
    assert failed["ok"] is False and any(n["status"] == "failed" for n in failed["nodes"])
    validator.validate(failed)


def test_a_report_of_another_shape_is_refused() -> None:
    validator = jsonschema.Draft202012Validator(load_report_schema())
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({"schema_version": "1", "deployment": "x", "nodes": "not a list"})


def test_every_report_field_is_in_the_schema_and_only_those() -> None:
    """A field added to the report's dataclasses (or to what ``to_dict`` prints) that the schema misses fails here."""
    from dataclasses import fields

    from palette_provision.handoff import HandoffResult
    from palette_provision.report import NodeResult, Report

    schema = report_schema()
    documents = schema["$defs"]
    printed = Report("d", "fake", [NodeResult("n1")], handoff=HandoffResult(kind="inventory")).to_dict()
    assert set(schema["properties"]) == set(printed) == {f.name for f in fields(Report)} | {"schema_version", "ok"}
    assert set(documents["NodeDocument"]["properties"]) == {f.name for f in fields(NodeResult)}
    assert set(documents["NodeDocument"]["properties"]) == set(printed["nodes"][0])
    assert set(documents["HandoffDocument"]["properties"]) == set(printed["handoff"])
    assert set(documents["EvidenceDocument"]["properties"]) == {"check", "asked", "answered", "at", "failed"}


def test_a_failed_handoffs_evidence_reaches_the_report_and_validates() -> None:
    from palette_provision.errors import HandoffError
    from palette_provision.handoff._session import CheckFailed
    from palette_provision.report import Report

    passed = {"check": "validate.applications", "asked": "GET apps", "answered": "8 Running", "at": 1.0}
    failed = {"check": "validate.pods", "asked": "list pods", "answered": "jet-system/jet (CrashLoopBackOff)",
              "at": 2.0, "failed": True}  # fmt: skip
    report = Report("d", "fake", [])
    report.record_handoff_error(CheckFailed(HandoffError("validate.pods", "pods failing"), [passed, failed]))
    printed = report.to_dict()
    assert printed["handoff_error"] == "validate.pods: pods failing" and printed["validation"] == [passed, failed]
    jsonschema.Draft202012Validator(load_report_schema()).validate(printed)
