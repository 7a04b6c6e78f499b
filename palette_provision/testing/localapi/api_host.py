"""Routes of the host itself: identity, configuration status, settings and linking."""

from __future__ import annotations

import time
from typing import Any

from . import linking, shapes
from .hostinfo import configuration_phase, configuration_status, edge_host_info
from .server import Request, Response, Router


def host_info(request: Request) -> Response:
    """``GET /v1/edge-mgmt/edgehosts/current`` -> ``v1EdgeHostInfo``."""
    node = request.node
    with node.lock:
        return Response(200, edge_host_info(node, linking.node_role(node, node.host_id)))


def config_status(request: Request) -> Response:
    """``GET .../edgehosts/current/configurations/status`` -> ``{state, errorMessage}``."""
    return Response(200, configuration_status(request.node, time.time()))


def settings(request: Request) -> Response:
    """``GET /v1/edge-mgmt/settings`` -> ``v1Settings``."""
    return Response(200, {"installationMode": "airgap", "managementMode": "local",
                          "featureFlags": {}})


def generate_token(request: Request) -> Response:
    """``POST .../link/generate-token`` -> 200 ``v1LinkToken`` (500 on a follower)."""
    return Response(200, linking.generate_token(request.node))


def link(request: Request) -> Response:
    """``POST .../link`` with exactly ``{"token": ...}`` -> 200 ``v1LinkStatus``."""
    body = request.json()
    shapes.require(body, shapes.LINK_TOKEN)
    return Response(200, linking.link(request.node, body["token"]))


def link_status(request: Request) -> Response:
    """``GET .../link/status`` -> ``v1LinkStatus`` (404 when the host never linked nor led)."""
    return Response(200, linking.link_status(request.node))


def unlink(request: Request) -> Response:
    """``POST .../unlink?peerId=`` -> 200 ``{message}``; 400 for an unknown or missing peer."""
    peer_id = linking.raise_if_missing_peer_id(request.query.get("peerId"))
    return Response(200, linking.unlink(request.node, peer_id))


def host_conditions(request: Request) -> list[dict[str, Any]]:
    """The host's lifecycle conditions (configured, linked)."""
    node = request.node
    now = time.time()
    configured = configuration_phase(node, now) == "configured"
    with node.lock:
        role = node.state["link"]["role"]
    return [
        {"type": "HostConfigured", "status": "True" if configured else "False",
         "reason": "Configured" if configured else "Configuring", "message": ""},
        {"type": "HostLinked", "status": "True" if role != "standalone" else "False",
         "reason": role, "message": ""},
    ]


def register(router: Router) -> None:
    """Add this module's routes."""
    base = "/v1/edge-mgmt/edgehosts/current"
    router.add("GET", base, host_info)
    router.add("GET", f"{base}/configurations/status", config_status)
    router.add("GET", "/v1/edge-mgmt/settings", settings)
    router.add("POST", f"{base}/link/generate-token", generate_token)
    router.add("POST", f"{base}/link", link)
    router.add("GET", f"{base}/link/status", link_status)
    router.add("POST", f"{base}/unlink", unlink)
