"""Linking hosts: the leader's one-time tokens and followers, and each node's view of the group.

The leader keeps the authoritative group (itself plus followers). A follower validates a token by
calling the leader's simulator (``/__sim__/peer/link``), then shows the leader's view of the group
(``/__sim__/peer/group``) with its own link status. A follower's link moves ``Pending`` ->
``InProgress`` -> ``Completed`` (or ``Failed`` when refused) in steps of ``link_step_s`` (the
leader's value, fixed at link time so both sides agree).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import secrets
import time
from typing import Any

from . import peers
from .errors import ApiError, bad_request, not_found, server_error
from .hostinfo import edge_host_info
from .node import Node

PEER_STATUS = {"Pending": "Linking", "InProgress": "Linking", "Completed": "Ready", "Failed": "Failed"}


def phase(record: dict[str, Any], now: float) -> str:
    """Return the link phase of a follower record at ``now``."""
    linked_at, step = float(record["linkedAt"]), float(record["step"])
    if now < linked_at + step:
        return "Pending"
    if now < linked_at + 2 * step:
        return "InProgress"
    return "Failed" if record["refused"] else "Completed"


def completed_at(record: dict[str, Any]) -> float:
    """Return when a follower's link completes."""
    return float(record["linkedAt"]) + 2 * float(record["step"])


def node_role(node: Node, host_id: str) -> str:
    """Return the ``v1NodeRole`` of a host: ``unknown`` until a cluster includes it."""
    cluster = node.state.get("cluster")
    if not cluster:
        return "unknown"
    for host in cluster["hosts"]:
        if host["hostUid"] == host_id:
            return "controlplane" if host["isControlPlane"] else "worker"
    return "unknown"


def active_followers(node: Node, now: float) -> list[dict[str, Any]]:
    """Followers of this leader that are not (finally) refused."""
    return [f for f in node.state["link"]["followers"] if phase(f, now) != "Failed"]


def sync_status(node: Node, member_completed_at: float | None, now: float) -> str:
    """Return ``pending`` or ``synced`` for a group member (``None`` = the leader itself)."""
    content = node.state.get("content")
    if content is None:
        return "pending"
    if member_completed_at is None:
        return "synced"
    ready = max(float(content["uploadedAt"]), member_completed_at) + float(content["syncDelay"])
    return "synced" if now >= ready else "pending"


def _peer(node: Node, info: dict[str, Any], role: str, status: str, sync: str) -> dict[str, Any]:
    host_id = info["metadata"]["id"]
    return {
        "id": host_id,
        "ip": info["spec"]["networkInfo"][0]["ip"],
        "localUIPort": str(info.get("localUIPort", 5080)),
        "nodeRole": node_role(node, host_id),
        "role": role,
        "status": status,
        "contentSyncStatus": sync,
        "health": {"status": "Healthy", "reason": ""},
        "config": {k: v for k, v in info.items() if k != "localUIPort"},
    }


def own_info(node: Node) -> dict[str, Any]:
    """This node's host info plus its Local UI port (what a follower sends to the leader)."""
    info = edge_host_info(node, node_role(node, node.host_id))
    info["localUIPort"] = node.config.ui_port
    return info


def group_view(node: Node, now: float) -> dict[str, Any]:
    """The leader's view: every member as a ``v1LinkPeer`` (leader first)."""
    with node.lock:
        members = [_peer(node, own_info(node), "leader", "Ready", sync_status(node, None, now))]
        for record in active_followers(node, now):
            members.append(_peer(node, record["info"], "follower", PEER_STATUS[phase(record, now)],
                                 sync_status(node, completed_at(record), now)))
        content = node.state.get("content")
        summary = None if content is None else {
            key: content[key] for key in ("fileName", "sizeInBytes", "sha256Hash", "uploadedAt")}
        return {"leaderId": node.host_id, "peers": members, "content": summary}


def generate_token(node: Node) -> dict[str, Any]:
    """Return the current link token (``v1LinkToken``), issuing a fresh one when needed."""
    now = time.time()
    knobs = node.knobs.snapshot()
    with node.lock:
        link = node.state["link"]
        if link["role"] == "follower" and phase(link["leader"], now) != "Failed":
            raise server_error("HostIsFollower", "this host is linked to a leader; generate the"
                               " token on the leader " + link["leader"]["ip"])
        link["tokens"] = {otp: t for otp, t in link["tokens"].items()
                          if now < t["expiresAt"] + 3600}
        for token in link["tokens"].values():
            if token["usedBy"] is None and now < token["expiresAt"]:
                break
        else:
            otp = secrets.token_hex(16)
            raw = json.dumps({"leaderIp": node.config.node_ip, "otp": otp}).encode()
            token = {"token": base64.b64encode(raw).decode(), "issuedAt": now,
                     "expiresAt": now + knobs.link_token_lifetime_s,
                     "lifetime": knobs.link_token_lifetime_s, "usedBy": None}
            link["tokens"][otp] = token
            node.state["stats"]["linkTokensIssued"] += 1
        if link["role"] != "leader":
            link["role"], link["leader"] = "leader", None
        node.save()
        return {"token": token["token"], "interval": round(token["lifetime"]),
                "remainingTime": max(0, int(token["expiresAt"] - now))}


def decode_token(token: str) -> tuple[str, str]:
    """Return ``(leader_ip, otp)`` from a link token or raise a 400 saying why it is malformed."""
    try:
        data = json.loads(base64.b64decode(token.strip(), validate=True))
    except (binascii.Error, ValueError) as exc:
        raise bad_request(f"malformed link token: not base64-encoded JSON ({exc})",
                          field="token") from exc
    if not isinstance(data, dict) or not isinstance(data.get("leaderIp"), str) \
            or not isinstance(data.get("otp"), str):
        raise bad_request("malformed link token: leader IP or one-time password missing",
                          field="token")
    return data["leaderIp"], data["otp"]


def accept_follower(node: Node, request: dict[str, Any]) -> dict[str, Any]:
    """Leader side of a link: check the one-time password and record the follower."""
    now = time.time()
    knobs = node.knobs.snapshot()
    info = request["follower"]
    follower_id = info["metadata"]["id"]
    with node.lock:
        link = node.state["link"]
        token = link["tokens"].get(request["otp"])
        reason = ""
        if link["role"] == "follower" and phase(link["leader"], now) != "Failed":
            reason = "the token's host is not a leader (it is linked to another leader)"
        elif node.state.get("cluster"):
            reason = "the leader already runs a cluster"
        elif token is None:
            reason = "link token is not known to the leader (never issued or replaced)"
        elif token["usedBy"] is not None:
            reason = "link token was already used"
        elif now >= token["expiresAt"]:
            reason = "link token expired"
        elif follower_id == node.host_id:
            reason = "a host cannot link to itself"
        if reason:
            node.state["stats"]["linkAttempts"].append(
                {"at": now, "side": "leader", "follower": follower_id, "result": "rejected",
                 "reason": reason})
            node.save()
            raise bad_request(reason, field="token")
        assert token is not None
        token["usedBy"] = follower_id
        refused = knobs.refuse_links or bool(request.get("refuse"))
        record = {"info": info, "linkedAt": now, "step": knobs.link_step_s, "refused": refused,
                  "reason": knobs.refuse_reason if refused else ""}
        link["followers"] = [f for f in link["followers"]
                             if f["info"]["metadata"]["id"] != follower_id] + [record]
        link["role"] = "leader"
        node.state["stats"]["linkAttempts"].append(
            {"at": now, "side": "leader", "follower": follower_id, "result": "accepted",
             "reason": ""})
        node.save()
        return {"leader": own_info(node), "linkedAt": now, "step": record["step"],
                "refused": refused, "reason": record["reason"]}


def link(node: Node, token: str) -> dict[str, Any]:
    """Follower side of ``POST .../link``: validate through the leader, then start linking."""
    now = time.time()
    leader_ip, otp = decode_token(token)
    with node.lock:
        link_state = node.state["link"]
        if link_state["role"] == "leader" and active_followers(node, now):
            raise bad_request("this host is the leader of a link group; unlink its followers first")
        if link_state["role"] == "follower" and phase(link_state["leader"], now) != "Failed":
            raise bad_request("this host is already linked to " + link_state["leader"]["ip"])
        if node.state.get("cluster"):
            raise bad_request("this host belongs to a cluster")
        if leader_ip == node.config.node_ip:
            raise bad_request("a host cannot link to itself", field="token")
        request = {"otp": otp, "follower": own_info(node),
                   "refuse": node.knobs.snapshot().refuse_links}
    address = peers.lookup(node.config.peers_file, leader_ip)
    try:
        status, answer = peers.call(address, "POST", "/__sim__/peer/link", request)
    except peers.PeerUnreachable as exc:
        node.record("linkAttempts", {"side": "follower", "leaderIp": leader_ip,
                                     "result": "unreachable", "reason": str(exc)})
        raise server_error("LeaderUnreachable", f"cannot reach the leader {leader_ip}") from exc
    if status != 200 or not isinstance(answer, dict):
        message = answer.get("message", "") if isinstance(answer, dict) else ""
        node.record("linkAttempts", {"side": "follower", "leaderIp": leader_ip,
                                     "result": "rejected", "reason": message})
        if status == 400:
            raise bad_request(message or "the leader rejected the link token", field="token")
        raise server_error("LinkFailed", f"the leader answered {status}: {message}")
    with node.lock:
        leader_info = answer["leader"]
        node.state["link"] = {
            "role": "follower", "tokens": {}, "followers": [],
            "leader": {"id": leader_info["metadata"]["id"], "ip": leader_ip, "info": leader_info,
                       "linkedAt": answer["linkedAt"], "step": answer["step"],
                       "refused": answer["refused"], "reason": answer["reason"]},
        }
        node.state["stats"]["linkAttempts"].append(
            {"at": now, "side": "follower", "leaderIp": leader_ip, "result": "accepted",
             "reason": ""})
        node.save()
    return link_status(node)


def link_status(node: Node) -> dict[str, Any]:
    """``v1LinkStatus`` as seen from this node (404 when it never linked nor led)."""
    now = time.time()
    with node.lock:
        link_state = node.state["link"]
        role = link_state["role"]
        leader = link_state["leader"]
    if role == "standalone":
        raise not_found("this host is not linked to any other host")
    if role == "leader":
        view = group_view(node, now)
        followers = view["peers"][1:]
        if not followers:
            status = "Pending"
        elif all(p["status"] == "Ready" for p in followers):
            status = "Completed"
        else:
            status = "InProgress"
        return {"status": status, "errorMessage": "", "peers": view["peers"]}
    status = phase(leader, now)
    if status == "Failed":
        return {"status": status, "errorMessage": leader["reason"], "peers": []}
    fetched = fetch_group(node, leader["ip"])
    if fetched is None:
        with node.lock:
            own = _peer(node, own_info(node), "follower", PEER_STATUS[status], "pending")
            members = [_peer(node, leader["info"], "leader", "Ready", "pending"), own]
    else:
        members = fetched["peers"]
    return {"status": status, "errorMessage": "", "peers": members}


def fetch_group(node: Node, leader_ip: str) -> dict[str, Any] | None:
    """Ask the leader's simulator for the group view (None when it cannot be reached)."""
    try:
        status, answer = peers.call(peers.lookup(node.config.peers_file, leader_ip), "GET",
                                    "/__sim__/peer/group")
    except peers.PeerUnreachable:
        return None
    return answer if status == 200 and isinstance(answer, dict) else None


def unlink(node: Node, peer_id: str) -> dict[str, Any]:
    """``POST .../unlink?peerId=``: a leader drops a follower; a follower leaves its leader."""
    with node.lock:
        if node.state.get("cluster"):
            raise bad_request("cannot unlink while a cluster exists; delete the cluster first")
        link_state = node.state["link"]
        if link_state["role"] == "leader":
            match = [f for f in link_state["followers"] if f["info"]["metadata"]["id"] == peer_id]
            if not match:
                raise bad_request(f"peer {peer_id!r} is not linked to this host", field="peerId")
            link_state["followers"].remove(match[0])
            node.save()
            target, notice = match[0]["info"]["spec"]["networkInfo"][0]["ip"], "unlinked"
            body = {"leaderId": node.host_id}
        elif link_state["role"] == "follower" and peer_id in (link_state["leader"]["id"],
                                                               node.host_id):
            target, notice = link_state["leader"]["ip"], "unlink"
            body = {"followerId": node.host_id}
            node.state["link"] = {"role": "standalone", "tokens": {}, "followers": [],
                                  "leader": None}
            node.save()
        else:
            raise bad_request(f"peer {peer_id!r} is not linked to this host", field="peerId")
    # Best effort, as a real host that is down would simply miss the notice.
    with contextlib.suppress(peers.PeerUnreachable):
        peers.call(peers.lookup(node.config.peers_file, target), "POST", f"/__sim__/peer/{notice}", body)
    return {"message": f"host {peer_id} unlinked"}


def forget(node: Node, request: dict[str, Any]) -> None:
    """Apply a peer's unlink notice (``followerId`` on a leader, ``leaderId`` on a follower)."""
    with node.lock:
        link_state = node.state["link"]
        if "followerId" in request:
            link_state["followers"] = [f for f in link_state["followers"]
                                       if f["info"]["metadata"]["id"] != request["followerId"]]
        elif link_state["role"] == "follower" and link_state["leader"]["id"] == request.get(
                "leaderId"):
            node.state["link"] = {"role": "standalone", "tokens": {}, "followers": [],
                                  "leader": None}
        node.save()


def raise_if_missing_peer_id(peer_id: str | None) -> str:
    """Return ``peerId`` or raise the 400 for a missing required query parameter."""
    if not peer_id:
        raise ApiError(400, "BadRequest", "query parameter peerId is required", {"field": "peerId"})
    return peer_id
