"""``GET /v1/edge-mgmt/cluster/applications``: the cluster profile's packs and their state (leader only).

Shape of the published spec (``v1ClusterCurrentApplications``): ``{clusterProfileTemplates: [{uid, name, version,
type, description, variables, packs: [v1PackInfo]}]}``; ``v1PackInfo`` has ``name``, ``version``, ``layer``,
``type``, ``status``, ``startTime``, ``endTime``, ``values``, ``logo``, ``conditions[]`` and ``contents[]``.

Pack status follows the cluster: ``Deploying`` while it is ``Provisioning``, ``Running`` once it runs, ``Error`` when
it failed, ``Deleting`` while it is deleted. Knob ``app_not_running: <pack name>`` makes that pack report
``app_not_running_status`` (default ``Error``) with a ``Ready`` condition ``False``. 404 when there is no cluster.
"""

from __future__ import annotations

import time
from typing import Any

from . import cluster
from .errors import not_found
from .node import Node
from .profiles import PACKS, PROFILE_NAME, PROFILE_UID, PROFILE_VERSION, VARIABLES
from .timefmt import iso

STATUS_OF_CLUSTER = {"Provisioning": "Deploying", "Running": "Running", "Error": "Error", "Deleting": "Deleting"}


def _pack(pack: dict[str, str], status: str, start: str, end: str) -> dict[str, Any]:
    ready = "True" if status == "Running" else "False"
    reason = {"Running": "Deployed", "Deploying": "Deploying"}.get(status, status)
    message = "" if ready == "True" else f"pack {pack['name']} is {status.lower()}"
    return {
        "name": pack["name"], "version": pack["version"], "layer": pack["layer"], "type": pack["type"],
        "status": status, "startTime": start, "endTime": end if status == "Running" else "", "values": "",
        "logo": "",
        "conditions": [{"type": "Ready", "status": ready, "reason": reason, "message": message}],
        "contents": [{"name": pack["image"], "contentType": "image",
                      "syncStatus": "synced" if status == "Running" else "pending", "syncMsg": ""}],
    }


def cluster_applications(node: Node) -> dict[str, Any]:
    """``v1ClusterCurrentApplications`` of this node's cluster (404 before create, after delete, on a follower)."""
    now = time.time()
    knobs = node.knobs.snapshot()
    with node.lock:
        record = cluster.current(node, now)
        if record is None:
            raise not_found("no cluster exists on this host")
        state = cluster.state_of(record, now)
        start, end = iso(record["createdAt"]), iso(record["createdAt"] + record["runningAfter"])
    status = STATUS_OF_CLUSTER.get(state, state)
    packs = []
    for pack in PACKS:
        own = knobs.app_not_running_status if status == "Running" and pack["name"] == knobs.app_not_running \
            else status
        packs.append(_pack(pack, own, start, end))
    return {"clusterProfileTemplates": [{
        "uid": PROFILE_UID, "name": PROFILE_NAME, "version": PROFILE_VERSION, "type": "cluster",
        "description": "Self-hosted Palette on PXK-E, Calico, Piraeus and Zot",
        "variables": [v.to_json() for v in VARIABLES], "packs": packs,
    }]}
