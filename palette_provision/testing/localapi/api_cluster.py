"""Routes of content, archives, profile variables and the cluster."""

from __future__ import annotations

import time

from . import applications, cluster, content, shapes
from .api_host import host_conditions
from .cluster_create import create, known_archives
from .errors import bad_request, not_found
from .profiles import EMBEDDED_ARCHIVE_PATH, OVERRIDDEN_ARCHIVE_DIR, archive_details, validate_variables
from .server import Request, Response, Router


def upload_content(request: Request) -> Response:
    """``POST .../actions/upload-content`` (multipart, streamed) -> 201 ``{message, uploadPath}``."""
    answer = content.receive(request.node, request.headers.get("Content-Type"), request.body,
                             "content")
    return Response(201, answer)


def upload_clusterconfig(request: Request) -> Response:
    """``POST .../actions/upload-clusterconfig`` -> 201; becomes the *overridden* archive."""
    answer = content.receive(request.node, request.headers.get("Content-Type"), request.body,
                             "clusterconfig")
    return Response(201, answer)


def uploaded_details(request: Request) -> Response:
    """``GET .../uploaded-content/details`` -> ``v1UploadedContentDetails`` (404 when none)."""
    return Response(200, content.uploaded_details(request.node))


def sync_status(request: Request) -> Response:
    """``GET /v1/edge-mgmt/cluster/registry/content/sync-status/details``."""
    return Response(200, content.sync_status_details(request.node))


def registry_content(request: Request) -> Response:
    """``GET /v1/edge-mgmt/cluster/registry/content/details``."""
    return Response(200, content.registry_details(request.node))


def registry_health(request: Request) -> Response:
    """``GET /v1/edge-mgmt/cluster/registry/health`` (capitalised keys, as published)."""
    node = request.node
    now = time.time()
    with node.lock:
        record = cluster.current(node, now)
        running = record is not None and cluster.state_of(record, now) == "Running"
    return Response(200, {"State": "Healthy" if running else "NotInstalled",
                          "Message": "" if running else "registry is deployed with the cluster",
                          "DiskCapacity": "100Gi", "DiskUsed": "0Gi", "DiskAvailable": "100Gi",
                          "UsagePercentage": "0"})


def embedded(request: Request) -> Response:
    """``GET /v1/edge-mgmt/clusters/archive/embedded/details``."""
    return Response(200, archive_details(EMBEDDED_ARCHIVE_PATH))


def overridden(request: Request) -> Response:
    """``GET .../archive/overridden/details`` (404 ``v1Error`` until upload-clusterconfig)."""
    with request.node.lock:
        record = request.node.state.get("overridden")
    if record is None:
        raise not_found("no cluster configuration archive has been uploaded")
    return Response(200, archive_details(f"{OVERRIDDEN_ARCHIVE_DIR}/{record['fileName']}"))


def update_archive(request: Request) -> Response:
    """``GET .../archive/update/details``: the simulator never has an update archive (404)."""
    raise not_found("no update archive found in the uploaded content")


def validate(request: Request) -> Response:
    """``POST .../cluster/profiles/variables/validate`` -> 200 per-variable results."""
    body = request.json()
    shapes.require(body, shapes.VALIDATE_VARIABLES)
    path = body.get("archiveUploadPath")
    with request.node.lock:
        archives = known_archives(request.node)
    if path is not None and path not in archives:
        raise bad_request(f"archiveUploadPath: unknown archive {path!r}", field="archiveUploadPath")
    return Response(200, {"variables": validate_variables(body["variables"])})


def create_cluster(request: Request) -> Response:
    """``POST /v1/edge-mgmt/cluster`` -> 202 ``{message}``; 400 shape, 500 preconditions. Starts the VIP services."""
    answer = create(request.node, request.json())
    request.node.notify()
    return Response(202, answer)


def delete_cluster(request: Request) -> Response:
    """``DELETE /v1/edge-mgmt/cluster`` -> 202; the VIP services stop once the delete completes."""
    answer = cluster.delete(request.node)
    request.node.notify()
    return Response(202, answer)


def register(router: Router) -> None:
    """Add this module's routes."""
    host = "/v1/edge-mgmt/edgehosts/current"
    router.add("POST", f"{host}/actions/upload-content", upload_content)
    router.add("POST", f"{host}/actions/upload-clusterconfig", upload_clusterconfig)
    router.add("GET", f"{host}/uploaded-content/details", uploaded_details)
    router.add("GET", "/v1/edge-mgmt/cluster/registry/content/sync-status/details", sync_status)
    router.add("GET", "/v1/edge-mgmt/cluster/registry/content/details", registry_content)
    router.add("GET", "/v1/edge-mgmt/cluster/registry/health", registry_health)
    router.add("GET", "/v1/edge-mgmt/clusters/archive/embedded/details", embedded)
    router.add("GET", "/v1/edge-mgmt/clusters/archive/overridden/details", overridden)
    router.add("GET", "/v1/edge-mgmt/clusters/archive/update/details", update_archive)
    router.add("POST", "/v1/edge-mgmt/cluster/profiles/variables/validate", validate)
    router.add("POST", "/v1/edge-mgmt/cluster", create_cluster)
    router.add("GET", "/v1/edge-mgmt/cluster", lambda r: Response(200, cluster.stored_config(r.node)))
    router.add("DELETE", "/v1/edge-mgmt/cluster", delete_cluster)
    router.add("GET", "/v1/edge-mgmt/cluster/applications",
               lambda r: Response(200, applications.cluster_applications(r.node)))
    router.add("GET", "/v1/edge-mgmt/cluster/details", lambda r: Response(200, cluster.details(r.node)))
    router.add("GET", "/v1/edge-mgmt/cluster/events", lambda r: Response(200, cluster.events(r.node)))
    router.add("GET", "/v1/edge-mgmt/clusters/current/nodes",
               lambda r: Response(200, cluster.nodes(r.node)))
    router.add("GET", "/v1/edge-mgmt/events/lifecycle",
               lambda r: Response(200, cluster.lifecycle(r.node, host_conditions(r))))
