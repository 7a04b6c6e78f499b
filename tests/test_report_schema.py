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
