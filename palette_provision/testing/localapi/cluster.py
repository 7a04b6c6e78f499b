"""The cluster's life after create: state, health, events, nodes, kubeconfig and delete.

State is computed from timestamps: ``Provisioning`` for ``cluster_running_s`` (knob at create
time), then ``Running``/Healthy or ``Error``/Unhealthy (``cluster_error`` knob at create time);
``Deleting`` for ``cluster_delete_s`` after a delete, then gone (details answer 404 again).
"""

from __future__ import annotations

import base64
import time
from typing import Any

from .errors import not_found, server_error
from .node import Node
from .timefmt import iso

K8S_VERSION = "1.32.3"


def current(node: Node, now: float) -> dict[str, Any] | None:
    """Return the cluster record, dropping it once a delete has completed (lock held by caller)."""
    cluster = node.state.get("cluster")
    if cluster and cluster["deleteRequestedAt"] is not None \
            and now >= cluster["deleteRequestedAt"] + cluster["deleteAfter"]:
        node.state["cluster"] = None
        node.save()
        return None
    return cluster


def state_of(cluster: dict[str, Any], now: float) -> str:
    """Return ``Provisioning``, ``Running``, ``Error`` or ``Deleting``."""
    if cluster["deleteRequestedAt"] is not None:
        return "Deleting"
    if now < cluster["createdAt"] + cluster["runningAfter"]:
        return "Provisioning"
    return str(cluster["outcome"])


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def kubeconfig(cluster: dict[str, Any], encoding: str) -> str:
    """Return the admin kubeconfig (YAML, or base64 of it when ``encoding`` is ``base64``).

    A real one: the cluster CA (``certificate-authority-data``) and the admin client certificate and key that the
    kube-apiserver stand-in at the VIP (``kubeapi.py``) checks; the server is ``https://<vip>:6443``."""
    name, kube = cluster["name"], cluster["kube"]
    text = (
        "apiVersion: v1\nkind: Config\nclusters:\n"
        f"- name: {name}\n  cluster:\n    server: https://{cluster['vip']}:6443\n"
        f"    certificate-authority-data: {_b64(kube['caPem'])}\n"
        f"contexts:\n- name: {name}-admin@{name}\n  context:\n    cluster: {name}\n"
        f"    user: {name}-admin\ncurrent-context: {name}-admin@{name}\n"
        f"users:\n- name: {name}-admin\n  user:\n"
        f"    client-certificate-data: {_b64(kube['clientCertPem'])}\n"
        f"    client-key-data: {_b64(kube['clientKeyPem'])}\n"
    )
    return base64.b64encode(text.encode()).decode() if encoding == "base64" else text


def _health(state: str, cluster: dict[str, Any], unhealthy: bool = False) -> dict[str, str]:
    if state == "Running":
        if unhealthy:
            return {"status": "Unhealthy", "reason": "node not ready (simulated: the cluster_unhealthy knob)"}
        return {"status": "Healthy", "reason": ""}
    if state == "Error":
        return {"status": "Unhealthy", "reason": cluster["errorMessage"]}
    return {"status": "Unhealthy", "reason": f"cluster is {state.lower()}"}


def details(node: Node) -> dict[str, Any]:
    """``v1Cluster`` (404 before create and after a completed delete)."""
    now = time.time()
    knobs = node.knobs.snapshot()
    encoding, unhealthy = knobs.kubeconfig_encoding, knobs.cluster_unhealthy
    with node.lock:
        cluster = current(node, now)
        if cluster is None:
            raise not_found("no cluster exists on this host")
        state = state_of(cluster, now)
        cluster_config = cluster["config"]["spec"]["cloudConfig"]["spec"]["clusterConfig"]
        pools: dict[str, list[dict[str, Any]]] = {}
        for host in cluster["hosts"]:
            pools.setdefault(host["pool"], []).append(host)
        node_state = {"Running": "Running", "Error": "Error"}.get(state, state)
        return {
            "metadata": {"id": cluster["uid"], "name": cluster["name"],
                         "creationTimestamp": iso(cluster["createdAt"]),
                         "lastModifiedTimestamp": iso(cluster["createdAt"]), "labels": {},
                         "tags": {}},
            "spec": {
                "hostIDs": [h["hostUid"] for h in cluster["hosts"]],
                "vip": cluster["vip"],
                "overlayCIDR": cluster_config.get("overlayNetworkConfiguration", {}).get("cidr", ""),
                "ntpServers": cluster_config.get("ntpServers", []),
                "sshKeys": cluster_config.get("sshKeys", []),
                "nodePools": [
                    {"pool": {"name": name, "isControlPlane": hosts[0]["isControlPlane"],
                              "archType": "amd64"},
                     "hosts": [{"hostID": h["hostUid"], "hostName": h["hostName"],
                                "hostAddress": h["ip"], "nic": []} for h in hosts]}
                    for name, hosts in pools.items()
                ],
            },
            "status": {
                "clusterState": state,
                "clusterStateReason": cluster["errorMessage"] if state == "Error" else "",
                "health": _health(state, cluster, unhealthy),
                "kubeconfig": kubeconfig(cluster, encoding) if state == "Running" else "",
                "k8sVersion": K8S_VERSION,
                "agentVersion": "v4.7.0-sim",
                "clusterConditions": conditions(cluster, now),
                "nodePools": [
                    {"pool": {"name": name, "isControlPlane": hosts[0]["isControlPlane"],
                              "archType": "amd64"},
                     "nodes": [{"nodeName": h["hostName"], "ipv4": h["ip"],
                                "age": f"{int(now - cluster['createdAt'])}s",
                                "architecture": "amd64", "k8sVersion": K8S_VERSION,
                                "health": _health(state, cluster, unhealthy), "nodeState": node_state}
                               for h in hosts]}
                    for name, hosts in pools.items()
                ],
                "services": [],
                "isRebootPending": False,
                "ntpServersApplied": state == "Running",
                "sshKeysApplied": state == "Running",
            },
        }


def conditions(cluster: dict[str, Any], now: float) -> list[dict[str, Any]]:
    """``v1Condition`` list of the cluster's progress."""
    created = iso(cluster["createdAt"])
    state = state_of(cluster, now)
    done = iso(cluster["createdAt"] + cluster["runningAfter"])
    ready = {"Running": "True", "Error": "False"}.get(state, "Unknown")
    return [
        {"type": "ClusterCreated", "status": "True", "reason": "CreateAccepted",
         "message": "cluster creation accepted", "lastProbeTime": created,
         "lastTransitionTime": created},
        {"type": "ControlPlaneReady", "status": ready,
         "reason": {"True": "Ready", "False": "ProvisioningFailed"}.get(ready, "Provisioning"),
         "message": cluster["errorMessage"] if ready == "False" else "",
         "lastProbeTime": iso(now), "lastTransitionTime": done if ready != "Unknown" else created},
    ]


def _event(cluster: dict[str, Any], index: int, at: float, *, reason: str, severity: str,
           message: str, host: str) -> dict[str, Any]:
    return {
        "metadata": {"name": f"{cluster['name']}.{index}", "namespace": "default",
                     "uid": f"{cluster['uid']}-{index}", "creationTimestamp": iso(at)},
        "message": message, "reason": reason, "severity": severity,
        "involvedObject": {"kind": "Cluster", "name": cluster["name"], "namespace": "default",
                           "uid": cluster["uid"]},
        "relatedObject": {"kind": "spectrocluster", "name": cluster["name"], "uid": cluster["uid"]},
        "source": {"component": "stylus-agent", "host": host},
    }


def events(node: Node) -> dict[str, Any]:
    """``v1Events`` of the cluster (empty ``items`` before create)."""
    now = time.time()
    with node.lock:
        cluster = current(node, now)
        if cluster is None:
            return {"items": []}
        host = node.config.name
        names = ", ".join(h["hostName"] for h in cluster["hosts"])
        created, finished = cluster["createdAt"], cluster["createdAt"] + cluster["runningAfter"]
        items = [
            _event(cluster, 1, created, reason="ClusterCreateRequested", severity="Normal",
                   message=f"cluster {cluster['name']} requested with {len(cluster['hosts'])} host(s)", host=host),
            _event(cluster, 2, created, reason="Provisioning", severity="Normal",
                   message=f"provisioning Kubernetes {K8S_VERSION} on {names}", host=host),
        ]
        if now >= finished:
            if cluster["outcome"] == "Running":
                items.append(_event(cluster, 3, finished, reason="ClusterRunning", severity="Normal",
                                    message="control plane ready; cluster is running and healthy", host=host))
            else:
                items.append(_event(cluster, 3, finished, reason="ProvisioningFailed", severity="Warning",
                                    message=cluster["errorMessage"], host=host))
        if cluster["deleteRequestedAt"] is not None:
            items.append(_event(cluster, 4, cluster["deleteRequestedAt"], reason="Deleting", severity="Normal",
                                message="cluster deletion requested", host=host))
        return {"items": items}


def lifecycle(node: Node, host_conditions: list[dict[str, Any]]) -> dict[str, Any]:
    """``v1LifecycleEvents``: cluster conditions, host conditions and their expected order."""
    now = time.time()
    with node.lock:
        cluster = current(node, now)
        cluster_events = conditions(cluster, now) if cluster else []
    order = [
        {"category": "edgeHost", "order": 1, "conditionsOrder": [
            {"type": c["type"], "typeLabel": c["type"], "reason": "", "reasonLabel": "", "order": i}
            for i, c in enumerate(host_conditions, 1)]},
        {"category": "cluster", "order": 2, "conditionsOrder": [
            {"type": t, "typeLabel": t, "reason": "", "reasonLabel": "", "order": i}
            for i, t in enumerate(("ClusterCreated", "ControlPlaneReady"), 1)]},
    ]
    return {"clusterEvents": cluster_events, "edgeHostEvents": host_conditions,
            "expectedOrder": order}


def nodes(node: Node) -> dict[str, Any]:
    """``{nodes: [v1ClusterNode]}`` (empty before create)."""
    now = time.time()
    with node.lock:
        cluster = current(node, now)
        if cluster is None:
            return {"nodes": []}
        ready = "True" if state_of(cluster, now) == "Running" else "False"
        return {"nodes": [
            {"nodeName": h["hostName"], "edgeHostID": h["hostUid"], "ipv4": h["ip"],
             "age": f"{int(now - cluster['createdAt'])}s", "architecture": "amd64",
             "kernelVersion": "6.8.0", "kubeletVersion": f"v{K8S_VERSION}",
             "operatingSystem": "linux", "osImage": "Ubuntu 22.04 (Kairos)",
             "nodeStatus": {"conditionType": "Ready", "status": ready, "reason": "", "message": ""},
             "nodeHealth": []}
            for h in cluster["hosts"]]}


def stored_config(node: Node) -> dict[str, Any]:
    """``GET /v1/edge-mgmt/cluster``: the create payload as stored (404 before create)."""
    with node.lock:
        cluster = current(node, time.time())
        if cluster is None:
            raise not_found("no cluster exists on this host")
        return dict(cluster["config"])


def delete(node: Node) -> dict[str, Any]:
    """``DELETE /v1/edge-mgmt/cluster``: start deleting (500 ``ClusterNotFound`` when none)."""
    now = time.time()
    with node.lock:
        cluster = current(node, now)
        if cluster is None:
            raise server_error("ClusterNotFound", "no cluster exists on this host")
        if cluster["deleteRequestedAt"] is None:
            cluster["deleteRequestedAt"] = now
            cluster["deleteAfter"] = node.knobs.snapshot().cluster_delete_s
            node.save()
        return {"message": f"cluster {cluster['name']} deletion accepted"}
