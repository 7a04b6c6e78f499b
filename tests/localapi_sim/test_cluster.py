"""Cluster create: strict shape (400), preconditions (500), Provisioning -> Running / Error, events."""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import httpx
import pytest

from palette_provision.testing.localapi import SimulatedCluster, SimulatorHandle

from .conftest import FAST, api, link_all, upload, wait_until

CLUSTER = "/v1/edge-mgmt/cluster"
DETAILS = "/v1/edge-mgmt/cluster/details"
EMBEDDED = "/v1/edge-mgmt/clusters/archive/embedded/details"


def archive(client: httpx.Client) -> tuple[str, str]:
    details = client.get(EMBEDDED).json()
    return details["archiveUploadPath"], details["clusterProfileDetails"][0]["profileUid"]


def body_for(client: httpx.Client, hosts: list[SimulatorHandle], name: str = "palette-mgmt") -> dict[str, Any]:
    path, uid = archive(client)
    return {
        "metadata": {"name": name},
        "spec": {
            "archiveUploadPath": path,
            "profileVariables": [{"name": "oci_registry_password", "profileUid": uid, "value": "Sup3r-Secret"}],
            "cloudConfig": {"spec": {
                "clusterConfig": {"controlPlaneEndpoint": {"host": "127.0.0.100", "type": "VIP"},
                                  "ntpServers": ["pool.ntp.org"], "sshKeys": ["ssh-ed25519 AAAA test"]},
                "machinePoolConfig": [{
                    "name": "control-plane", "isControlPlane": True, "useControlPlaneAsWorker": True,
                    "hosts": [{"hostUid": h.host_id, "hostName": h.node_name, "hostAddress": h.node_ip}
                              for h in hosts],
                }],
            }},
        },
    }


def ready_node(sim: SimulatorHandle, tmp_path: Path, **knobs: Any) -> SimulatorHandle:
    sim.reset(**{**FAST, **knobs})
    bundle = tmp_path / "bundle.tar.zst"
    bundle.write_bytes(b"content" * 100)
    with api(sim) as client:
        assert upload(client, bundle).status_code == 201
    return sim


def mutate(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """Set (or with value ... delete) the dotted ``path`` of a copy of ``body``."""
    result = copy.deepcopy(body)
    target: Any = result
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]
    for key in keys[:-1]:
        target = target[key]
    if value is ...:
        del target[keys[-1]]
    else:
        target[keys[-1]] = value
    return result


POOL = "spec.cloudConfig.spec.machinePoolConfig.0"
SHAPE_CASES = [
    ("metadata.name", ..., "metadata.name"),
    ("metadata.name", "Not_A_DNS_Name", "metadata.name"),
    ("clusterName", "x", "clusterName"),
    ("spec.machinePools", [], "spec.machinePools"),
    ("spec.cloudConfig.spec.clusterConfig.ntpServers", "pool.ntp.org", "ntpServers"),
    ("spec.cloudConfig.spec.clusterConfig.controlPlaneEndpoint.type", "vip", "controlPlaneEndpoint.type"),
    ("spec.cloudConfig.spec.clusterConfig.controlPlaneEndpoint.host", "not-an-ip", "controlPlaneEndpoint.host"),
    ("spec.cloudConfig.spec.clusterConfig", ..., "clusterConfig"),
    (f"{POOL}.hosts", [], "hosts"),
    (f"{POOL}.hosts", ..., "hosts"),
    (f"{POOL}.isControlPlane", "true", "isControlPlane"),
    (f"{POOL}.isControlPlane", False, "machinePoolConfig"),
    (f"{POOL}.hosts.0.hostUid", "edge-0000", "hostUid"),
    (f"{POOL}.hosts.0.hostAddress", "127.0.0.99", "hostAddress"),
    (f"{POOL}.hosts.0.IsCandidateCaption", 1, "IsCandidateCaption"),
    ("spec.archiveUploadPath", "/opt/spectrocloud/content/bundle.tar.zst", "archiveUploadPath"),
    ("spec.profileVariables", [], "profileVariables"),
    ("spec.profileVariables.0.value", "short", "profileVariables[0]"),
]


@pytest.mark.parametrize(("path", "value", "field"), SHAPE_CASES)
def test_create_refuses_requests_off_the_published_shape(sim: SimulatorHandle, path: str, value: Any,
                                                          field: str) -> None:
    with api(sim) as client:
        response = client.post(CLUSTER, json=mutate(body_for(client, [sim]), path, value))
    assert response.status_code == 400, response.text
    error = response.json()
    assert set(error) == {"code", "message", "details", "ref"}
    assert field in error["details"]["field"] and field in error["message"]
    assert sim.state()["stats"]["clustersCreated"] == 0


def test_create_needs_content_then_runs_and_refuses_a_second(sim: SimulatorHandle, tmp_path: Path) -> None:
    with api(sim) as client:
        assert client.get(DETAILS).status_code == 404
        no_content = client.post(CLUSTER, json=body_for(client, [sim]))
        assert no_content.status_code == 500 and no_content.json()["code"] == "ContentNotUploaded"
        bundle = tmp_path / "b.tar.zst"
        bundle.write_bytes(b"x" * 1000)
        assert upload(client, bundle).status_code == 201
        accepted = client.post(CLUSTER, json=body_for(client, [sim]))
        assert accepted.status_code == 202 and set(accepted.json()) == {"message"}
        first = client.get(DETAILS).json()
        assert first["status"]["clusterState"] == "Provisioning"
        assert first["status"]["kubeconfig"] == ""
        assert first["spec"]["vip"] == "127.0.0.100" and first["spec"]["hostIDs"] == [sim.host_id]
        again = client.post(CLUSTER, json=body_for(client, [sim], name="other"))
        assert again.status_code == 500 and again.json()["code"] == "ClusterAlreadyExists"
        running = wait_until(lambda: (d := client.get(DETAILS).json())["status"]["clusterState"] == "Running" and d)
        assert running["status"]["health"] == {"status": "Healthy", "reason": ""}
        kubeconfig = running["status"]["kubeconfig"]
        assert "server: https://127.0.0.100:6443" in kubeconfig and "kind: Config" in kubeconfig
        reasons = [e["reason"] for e in client.get("/v1/edge-mgmt/cluster/events").json()["items"]]
        assert reasons == ["ClusterCreateRequested", "Provisioning", "ClusterRunning"]
        lifecycle = client.get("/v1/edge-mgmt/events/lifecycle").json()
        assert {c["type"]: c["status"] for c in lifecycle["clusterEvents"]}["ControlPlaneReady"] == "True"
        assert client.get(CLUSTER).json()["metadata"]["name"] == "palette-mgmt"
        assert [n["edgeHostID"] for n in client.get("/v1/edge-mgmt/clusters/current/nodes").json()["nodes"]] == [
            sim.host_id]
        assert client.get("/v1/edge-mgmt/edgehosts/current").json()["spec"]["nodeRole"] == "controlplane"
    assert sim.state()["stats"]["clustersCreated"] == 1


def test_cluster_error_knob_gives_error_state_and_warning_event(sim: SimulatorHandle, tmp_path: Path) -> None:
    ready_node(sim, tmp_path, cluster_error=True, cluster_error_message="etcd quorum lost")
    with api(sim) as client:
        assert client.post(CLUSTER, json=body_for(client, [sim])).status_code == 202
        failed = wait_until(lambda: (d := client.get(DETAILS).json())["status"]["clusterState"] != "Provisioning"
                            and d)
        assert failed["status"]["clusterState"] == "Error"
        assert failed["status"]["health"]["status"] == "Unhealthy"
        assert failed["status"]["clusterStateReason"] == "etcd quorum lost"
        last = client.get("/v1/edge-mgmt/cluster/events").json()["items"][-1]
        assert (last["reason"], last["severity"], last["message"]) == ("ProvisioningFailed", "Warning",
                                                                       "etcd quorum lost")


def test_kubeconfig_base64_knob_and_delete(sim: SimulatorHandle, tmp_path: Path) -> None:
    ready_node(sim, tmp_path, kubeconfig_encoding="base64")
    with api(sim) as client:
        assert client.post(CLUSTER, json=body_for(client, [sim])).status_code == 202
        running = wait_until(lambda: (d := client.get(DETAILS).json())["status"]["clusterState"] == "Running" and d)
        assert base64.b64decode(running["status"]["kubeconfig"]).startswith(b"apiVersion: v1")
        assert client.delete(CLUSTER).status_code == 202
        assert client.get(DETAILS).json()["status"]["clusterState"] == "Deleting"
        wait_until(lambda: client.get(DETAILS).status_code == 404)
        assert client.delete(CLUSTER).status_code == 500


def test_host_not_yet_configured_is_refused(sim: SimulatorHandle) -> None:
    sim.reset(**{**FAST, "configured_after_s": 30.0})
    with api(sim) as client:
        response = client.post(CLUSTER, json=body_for(client, [sim]))
    assert response.status_code == 500 and response.json()["code"] == "HostNotConfigured"


def test_three_nodes_wait_for_links_and_sync_then_run(trio: SimulatedCluster, tmp_path: Path) -> None:
    leader = trio.leader
    leader.set_knobs(sync_delay_s=0.8, link_step_s=0.3)
    bundle = tmp_path / "b.tar.zst"
    bundle.write_bytes(b"y" * 4096)
    with api(leader) as lead:
        assert upload(lead, bundle).status_code == 201
        token = lead.post("/v1/edge-mgmt/edgehosts/current/link/generate-token").json()["token"]
        with api(trio.followers[0]) as follower:
            assert follower.post("/v1/edge-mgmt/edgehosts/current/link", json={"token": token}).status_code == 200
        partial = lead.post(CLUSTER, json=body_for(lead, trio.nodes))
        assert partial.status_code == 400 and "not linked" in partial.json()["message"]
        linking = lead.post(CLUSTER, json=body_for(lead, trio.nodes[:1]))
        assert linking.status_code == 500 and linking.json()["code"] == "PeersNotLinked"
        link_all(trio)
        unsynced = lead.post(CLUSTER, json=body_for(lead, trio.nodes))
        assert unsynced.status_code == 500 and unsynced.json()["code"] == "ContentNotSynced"
        wait_until(lambda: lead.post(CLUSTER, json=body_for(lead, trio.nodes)).status_code == 202, timeout=5)
        with api(trio.followers[1]) as follower:
            refused = follower.post(CLUSTER, json=body_for(follower, trio.nodes))
            assert refused.status_code == 500 and refused.json()["code"] == "HostIsNotLeader"
        running = wait_until(lambda: (d := lead.get(DETAILS).json())["status"]["clusterState"] == "Running" and d)
        assert sorted(running["spec"]["hostIDs"]) == sorted(n.host_id for n in trio.nodes)
        peers = lead.get("/v1/edge-mgmt/edgehosts/current/link/status").json()["peers"]
        roles = {p["id"]: p["nodeRole"] for p in peers}
        assert set(roles.values()) == {"controlplane"}
    assert leader.state()["stats"]["clustersCreated"] == 1
