"""``POST /v1/edge-mgmt/cluster``: strict validation of ``v1ClusterConfiguration`` and creation.

Order of checks: request shape (400); host is a follower (500 ``HostIsNotLeader``); meaning of
the fields against this node's group (400); then the other preconditions of the appliance (500, the
only error code the spec lists for create: host not configured, a cluster already exists, peers
still linking, content missing or not synced).
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import time
from typing import Any

from . import linking, shapes
from .errors import ApiError, bad_request, server_error
from .hostinfo import configuration_phase
from .node import Node
from .profiles import EMBEDDED_ARCHIVE_PATH, OVERRIDDEN_ARCHIVE_DIR, validate_variables
from .vip import prepare_cluster

NAME_REGEX = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
ENDPOINT_TYPES = ("VIP", "DDNS")


def known_archives(node: Node) -> list[str]:
    """Archive paths create/validate accept (``archiveUploadPath`` of the archive-details calls)."""
    paths = [EMBEDDED_ARCHIVE_PATH]
    overridden = node.state.get("overridden")
    if overridden:
        paths.append(f"{OVERRIDDEN_ARCHIVE_DIR}/{overridden['fileName']}")
    return paths


def _require(value: Any, field: str) -> Any:
    if value in (None, "", [], {}):
        raise bad_request(f"{field}: is required", field=field)
    return value


def _check_fields(node: Node, body: dict[str, Any], members: dict[str, str]) -> list[dict[str, Any]]:
    """Semantic checks (400); return the hosts as ``{hostUid, hostName, ip, pool, isControlPlane}``."""
    name = _require(body["metadata"].get("name"), "metadata.name")
    if not re.fullmatch(NAME_REGEX, name):
        raise bad_request(f"metadata.name: {name!r} must match {NAME_REGEX}", field="metadata.name")
    spec = body["spec"]
    archive = _require(spec.get("archiveUploadPath"), "spec.archiveUploadPath")
    if archive not in known_archives(node):
        raise bad_request(f"spec.archiveUploadPath: unknown archive {archive!r}; use the"
                          " archiveUploadPath of clusters/archive/*/details",
                          field="spec.archiveUploadPath")
    cloud = _require(spec.get("cloudConfig"), "spec.cloudConfig")
    base = "spec.cloudConfig.spec"
    cloud_spec = _require(cloud.get("spec"), base)
    endpoint = _require(cloud_spec["clusterConfig"].get("controlPlaneEndpoint"),
                        f"{base}.clusterConfig.controlPlaneEndpoint")
    where = f"{base}.clusterConfig.controlPlaneEndpoint"
    host = _require(endpoint.get("host"), f"{where}.host")
    kind = _require(endpoint.get("type"), f"{where}.type")
    if kind not in ENDPOINT_TYPES:
        raise bad_request(f"{where}.type: must be one of {list(ENDPOINT_TYPES)}, got {kind!r}",
                          field=f"{where}.type")
    if kind == "VIP":
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise bad_request(f"{where}.host: VIP {host!r} is not an IPv4 address",
                              field=f"{where}.host") from None
        if host in members.values():
            raise bad_request(f"{where}.host: VIP {host} is the address of a host",
                              field=f"{where}.host")
    pools = _require(cloud_spec["machinePoolConfig"], f"{base}.machinePoolConfig")
    hosts: list[dict[str, Any]] = []
    seen_pools: set[str] = set()
    for index, pool in enumerate(pools):
        where = f"{base}.machinePoolConfig[{index}]"
        pool_name = _require(pool.get("name"), f"{where}.name")
        if pool_name in seen_pools:
            raise bad_request(f"{where}.name: duplicate pool name {pool_name!r}", field=f"{where}.name")
        seen_pools.add(pool_name)
        _require(pool["hosts"], f"{where}.hosts")
        for position, entry in enumerate(pool["hosts"]):
            field = f"{where}.hosts[{position}]"
            uid = _require(entry.get("hostUid"), f"{field}.hostUid")
            if uid not in members:
                raise bad_request(f"{field}.hostUid: host {uid!r} is not linked to this leader",
                                  field=f"{field}.hostUid")
            if any(h["hostUid"] == uid for h in hosts):
                raise bad_request(f"{field}.hostUid: host {uid!r} is in more than one pool",
                                  field=f"{field}.hostUid")
            address = entry.get("hostAddress")
            if address and address != members[uid]:
                raise bad_request(f"{field}.hostAddress: {address} is not the address of host"
                                  f" {uid} ({members[uid]})", field=f"{field}.hostAddress")
            hosts.append({"hostUid": uid, "hostName": entry.get("hostName") or uid,
                          "ip": members[uid], "pool": pool_name,
                          "isControlPlane": bool(pool.get("isControlPlane"))})
    control = [h for h in hosts if h["isControlPlane"]]
    if not control:
        raise bad_request(f"{base}.machinePoolConfig: no pool has isControlPlane true",
                          field=f"{base}.machinePoolConfig")
    if len(control) % 2 == 0:
        raise bad_request(f"{base}.machinePoolConfig: the control plane needs an odd number of"
                          f" hosts (1 or 3), got {len(control)}", field=f"{base}.machinePoolConfig")
    _check_variables(spec.get("profileVariables", []))
    return hosts


def _check_variables(items: list[dict[str, str]]) -> None:
    for position, result in enumerate(validate_variables(items)):
        if not result["isValid"]:
            field = (f"spec.profileVariables[{position}]" if position < len(items)
                     else "spec.profileVariables")
            raise bad_request(f"{field}: variable {result['name']!r}:"
                              f" {result['validationFailureReason']}", field=field)


def _check_preconditions(node: Node, now: float) -> None:
    """Raise the 500 errors of an appliance that cannot create the cluster yet."""
    if configuration_phase(node, now) != "configured":
        raise server_error("HostNotConfigured", "this host has not finished its configuration")
    if node.state.get("cluster"):
        raise server_error("ClusterAlreadyExists",
                           f"cluster {node.state['cluster']['name']!r} already exists")
    followers = linking.active_followers(node, now)
    linking_ids = [f["info"]["metadata"]["id"] for f in followers
                   if linking.phase(f, now) != "Completed"]
    if linking_ids:
        raise server_error("PeersNotLinked", f"hosts still linking: {linking_ids}")
    if node.state.get("content") is None:
        raise server_error("ContentNotUploaded", "no content bundle has been uploaded")
    unsynced = [f["info"]["metadata"]["id"] for f in followers
                if linking.sync_status(node, linking.completed_at(f), now) != "synced"]
    if unsynced:
        raise server_error("ContentNotSynced", f"content not yet synced to hosts: {unsynced}")


def create(node: Node, body: Any) -> dict[str, Any]:
    """Validate and create the cluster; return the 202 ``{message}``.

    The record gets its VIP material (:func:`vip.prepare_cluster`); the caller then calls ``node.notify()`` so the
    VIP listeners start."""
    node.bump("clusterCreateAttempts")
    shapes.require(body, shapes.CLUSTER_CONFIGURATION)
    now = time.time()
    knobs = node.knobs.snapshot()
    with node.lock:
        members = {node.host_id: node.config.node_ip}
        for follower in linking.active_followers(node, now):
            members[follower["info"]["metadata"]["id"]] = \
                follower["info"]["spec"]["networkInfo"][0]["ip"]
        try:
            link_state = node.state["link"]
            if link_state["role"] == "follower":
                raise server_error("HostIsNotLeader", "create the cluster on the leader host "
                                   + link_state["leader"]["ip"])
            hosts = _check_fields(node, body, members)
            _check_preconditions(node, now)
        except ApiError as exc:
            rejections = node.state["stats"].setdefault("clusterCreateRejections", [])
            rejections.append({"at": now, "status": exc.status, "code": exc.code, "message": exc.message})
            node.save()
            raise
        cluster_config = body["spec"]["cloudConfig"]["spec"]["clusterConfig"]
        node.state["cluster"] = {
            "uid": secrets.token_hex(12),
            "name": body["metadata"]["name"],
            "config": body,
            "vip": cluster_config["controlPlaneEndpoint"]["host"],
            "hosts": hosts,
            "createdAt": now,
            "runningAfter": knobs.cluster_running_s,
            "outcome": "Error" if knobs.cluster_error else "Running",
            "errorMessage": knobs.cluster_error_message if knobs.cluster_error else "",
            "deleteRequestedAt": None,
            "deleteAfter": knobs.cluster_delete_s,
        }
        prepare_cluster(node, node.state["cluster"])
        node.state["stats"]["clustersCreated"] += 1
        node.save()
    return {"message": f"cluster {body['metadata']['name']} creation accepted"}
