"""Archive details (profile variables with the appliance defaults) and variable validation."""

from __future__ import annotations

from typing import Any

import pytest

from palette_provision.testing.localapi import SimulatorHandle

from .conftest import api

VALIDATE = "/v1/edge-mgmt/cluster/profiles/variables/validate"


def embedded(sim: SimulatorHandle) -> dict[str, Any]:
    with api(sim) as client:
        response = client.get("/v1/edge-mgmt/clusters/archive/embedded/details")
    assert response.status_code == 200
    result: dict[str, Any] = response.json()
    return result


def test_embedded_archive_lists_the_documented_defaults(sim: SimulatorHandle) -> None:
    details = embedded(sim)
    assert details["archiveUploadPath"]
    (profile,) = details["clusterProfileDetails"]
    defaults = {v["name"]: v["defaultValue"] for v in profile["variables"]}
    assert defaults == {
        "pod_cidr": "100.64.0.0/18", "service_cidr": "100.64.64.0/18", "storage_pool_drive": "/dev/sdb",
        "csi_placement_count": "3", "registry_port": "30003", "registry_base_path": "spectro-content",
        "oci_registry_username": "admin", "oci_registry_password": "", "registry_size": "100Gi",
    }
    password = next(v for v in profile["variables"] if v["name"] == "oci_registry_password")
    assert password["required"] and password["isSensitive"]
    assert {"name", "displayName", "description", "format", "regex", "defaultValue", "value", "required",
            "hidden", "immutable", "isSensitive"} == set(password)


def test_other_archives_404_until_uploaded(sim: SimulatorHandle) -> None:
    with api(sim) as client:
        assert client.get("/v1/edge-mgmt/clusters/archive/overridden/details").status_code == 404
        assert client.get("/v1/edge-mgmt/clusters/archive/update/details").status_code == 404


def validate(sim: SimulatorHandle, variables: list[dict[str, str]], **extra: Any) -> dict[str, dict[str, Any]]:
    uid = embedded(sim)["clusterProfileDetails"][0]["profileUid"]
    items = [{"profileUid": uid, **v} for v in variables]
    with api(sim) as client:
        response = client.post(VALIDATE, json={"archiveUploadPath": embedded(sim)["archiveUploadPath"],
                                               "variables": items, **extra})
    assert response.status_code == 200, response.text
    return {(r["name"]): r for r in response.json()["variables"]}


def test_valid_values_pass(sim: SimulatorHandle) -> None:
    results = validate(sim, [{"name": "oci_registry_password", "value": "Sup3r-Secret"},
                             {"name": "pod_cidr", "value": "10.10.0.0/16"}])
    assert all(r["isValid"] for r in results.values())
    assert results["pod_cidr"]["validationFailureReason"] == ""


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("pod_cidr", "100.64.0.0", "regex"),
        ("registry_port", "5000", "regex"),
        ("csi_placement_count", "three", "regex"),
        ("oci_registry_password", "short", "regex"),
        ("oci_registry_password", "", "required"),
        ("service_cidr", "100.64.0.0/16", "overlaps"),
        ("no_such_variable", "x", "unknown variable"),
    ],
)
def test_invalid_values_fail_with_a_reason(sim: SimulatorHandle, name: str, value: str, reason: str) -> None:
    results = validate(sim, [{"name": name, "value": value}])
    assert results[name]["isValid"] is False
    assert reason in results[name]["validationFailureReason"]


def test_required_variable_missing_and_unknown_profile(sim: SimulatorHandle) -> None:
    results = validate(sim, [{"name": "pod_cidr", "value": "10.0.0.0/16"}])
    assert results["pod_cidr"]["isValid"] is True
    assert results["oci_registry_password"]["validationFailureReason"] == "required variable is missing"
    with api(sim) as client:
        response = client.post(VALIDATE, json={"variables": [{"name": "pod_cidr", "profileUid": "nope",
                                                              "value": "10.0.0.0/16"}]})
    (result,) = [r for r in response.json()["variables"] if r["profileUid"] == "nope"]
    assert result["isValid"] is False and "unknown profileUid" in result["validationFailureReason"]


@pytest.mark.parametrize(
    "body",
    [{}, {"variables": "x"}, {"variables": [{"name": "a", "value": "b"}]}, {"variables": [], "extra": 1},
     {"variables": [], "archiveUploadPath": "/nowhere"}],
)
def test_validate_request_shape_is_enforced(sim: SimulatorHandle, body: dict[str, Any]) -> None:
    with api(sim) as client:
        response = client.post(VALIDATE, json=body)
    assert response.status_code == 400
    assert response.json()["details"]["field"]
