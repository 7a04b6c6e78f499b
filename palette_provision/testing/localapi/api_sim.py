"""Test-only routes under ``/__sim__/`` (not part of the published API; no token needed).

* ``GET /__sim__/state``: what tests assert on (counters, uploads, link attempts, cluster...; ``vip`` and
  ``console``: the VIP services' ports, certificates and the system console's state).
* ``GET|POST /__sim__/knobs``: read / change knobs at runtime (400 on unknown names or types);
  ``POST /__sim__/knobs?replace=true`` resets every knob not given to its default.
* ``POST /__sim__/reset``: factory reset (links, content, cluster, stats, sessions, the password
  back to the start-time one; the host id stays) with knobs back to defaults plus the JSON body.
* ``/__sim__/peer/...``: the side channel simulator processes use between themselves.
"""

from __future__ import annotations

import os
import time
from typing import Any

from . import cluster, linking
from .errors import bad_request
from .server import Request, Response, Router


def state(request: Request) -> Response:
    """Return a summary of the node for assertions."""
    node = request.node
    now = time.time()
    with node.lock:
        record = cluster.current(node, now)
        link_state = node.state["link"]
        body: dict[str, Any] = {
            "nodeName": node.config.name,
            "nodeIp": node.config.node_ip,
            "hostId": node.host_id,
            "pid": os.getpid(),
            "role": link_state["role"],
            "leaderId": link_state["leader"]["id"] if link_state["leader"] else None,
            "followers": [f["info"]["metadata"]["id"] for f in link_state["followers"]],
            "stats": node.state["stats"],
            "content": node.state.get("content"),
            "overridden": node.state.get("overridden"),
            "cluster": None if record is None else {
                "name": record["name"], "state": cluster.state_of(record, now),
                "hosts": record["hosts"], "config": record["config"],
                # The secret the kubeconfig carries (its client-key-data): tests search every channel for it.
                "kubeToken": record.get("kubeToken")},
            "knobs": node.knobs.snapshot().to_json(),
            "requests": dict(node.requests),
        }
    for reporter in list(node.reporters.values()):
        body.update(reporter())
    return Response(200, body)


def get_knobs(request: Request) -> Response:
    """Return the current knobs."""
    return Response(200, request.node.knobs.snapshot().to_json())


def set_knobs(request: Request) -> Response:
    """Merge the JSON object body into the knobs (``?replace=true``: onto the defaults); return them."""
    body = request.json()
    if not isinstance(body, dict):
        raise bad_request("knobs must be a JSON object")
    replace = request.query_bool("replace", False)
    try:
        knobs = request.node.knobs.update(body, replace=replace).to_json()
    except ValueError as exc:
        raise bad_request(str(exc)) from exc
    request.node.notify()
    return Response(200, knobs)


def reset(request: Request) -> Response:
    """Factory-reset the node, then set the knobs to their defaults plus the JSON body."""
    body = request.json() if request.headers.get("Content-Length", "0") != "0" else {}
    if not isinstance(body, dict):
        raise bad_request("knobs must be a JSON object")
    try:
        knobs = request.node.knobs.update(body, replace=True)
    except ValueError as exc:
        raise bad_request(str(exc)) from exc
    request.node.reset()
    request.node.notify()
    return Response(200, knobs.to_json())


def peer_link(request: Request) -> Response:
    """Leader side of a follower's link (one-time password check)."""
    return Response(200, linking.accept_follower(request.node, request.json()))


def peer_group(request: Request) -> Response:
    """The leader's view of the group."""
    return Response(200, linking.group_view(request.node, time.time()))


def peer_forget(request: Request) -> Response:
    """A peer's unlink notice."""
    linking.forget(request.node, request.json())
    return Response(200, {"message": "ok"})


def register(router: Router) -> None:
    """Add this module's routes (all without session token)."""
    router.add("GET", "/__sim__/state", state, auth=False)
    router.add("GET", "/__sim__/knobs", get_knobs, auth=False)
    router.add("POST", "/__sim__/knobs", set_knobs, auth=False)
    router.add("POST", "/__sim__/reset", reset, auth=False)
    router.add("POST", "/__sim__/peer/link", peer_link, auth=False)
    router.add("GET", "/__sim__/peer/group", peer_group, auth=False)
    router.add("POST", "/__sim__/peer/unlink", peer_forget, auth=False)
    router.add("POST", "/__sim__/peer/unlinked", peer_forget, auth=False)
