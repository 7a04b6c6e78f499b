"""A read-only kube-apiserver stand-in at the VIP (port 6443 in the lab): the pod lists the documented check reads.

TLS with the cluster's own CA and **client certificates required** (the kubeconfig's admin certificate): a client
without one fails the handshake. Standard Kubernetes JSON, as ``lightkube`` or the official client read it:

* ``GET /version``; ``GET /api`` (``APIVersions``); ``GET /apis`` (empty ``APIGroupList``); ``/healthz``, ``/livez``,
  ``/readyz`` (``ok``);
* ``GET /api/v1/namespaces`` (``NamespaceList``), ``GET /api/v1/namespaces/{ns}`` (404 ``Status`` if unknown);
* ``GET /api/v1/namespaces/{ns}/pods`` and ``GET /api/v1/pods`` (``PodList``): 2-3 Running, ready pods in each of
  ``cp-system``, ``hubble-system``, ``jet-system``, ``ui-system`` and one ``ingress-nginx-controller`` per node in
  ``ingress-nginx``; other namespaces have none. ``fieldSelector`` and ``labelSelector`` take ``k=v``, ``k==v`` and
  ``k!=v`` terms (fields: ``metadata.name``, ``metadata.namespace``, ``status.phase``, ``spec.nodeName``);
  ``watch`` is refused (400).
* Knob ``pod_crashloop: "<ns>/<prefix>"``: every pod of ``<ns>`` whose name starts with ``<prefix>`` stays in phase
  ``Running`` with its container ``ready: false``, waiting in ``CrashLoopBackOff``.
* Until the cluster is ``Running`` every call answers 503. Errors are ``Status`` objects.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from . import cluster
from .errors import ApiError, bad_request, not_found
from .node import Node
from .server import Request, Response, Router
from .timefmt import iso

#: namespace -> [(workload, container image, replicas)]; ``None`` replicas = one per node (a DaemonSet).
WORKLOADS: dict[str, list[tuple[str, str, int | None]]] = {
    "cp-system": [("spectro-cp-ui", "gcr.io/spectro-images-public/release/spectro-cp-ui:4.7.15", 2)],
    "hubble-system": [("auth", "gcr.io/spectro-images-public/release/hubble-auth:4.7.15", 1),
                      ("mgmt", "gcr.io/spectro-images-public/release/hubble-mgmt:4.7.15", 1),
                      ("mongo", "gcr.io/spectro-images-public/release/mongo:6.0.19", 1)],
    "ingress-nginx": [("ingress-nginx-controller", "registry.k8s.io/ingress-nginx/controller:v1.12.1", None)],
    "jet-system": [("jet", "gcr.io/spectro-images-public/release/jet:4.7.15", 2)],
    "ui-system": [("spectro-ui", "gcr.io/spectro-images-public/release/spectro-ui:4.7.15", 2)],
}
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease", "piraeus-system", "zot-system")
FIELDS = {"metadata.name": ("metadata", "name"), "metadata.namespace": ("metadata", "namespace"),
          "status.phase": ("status", "phase"), "spec.nodeName": ("spec", "nodeName")}


def status_body(error: ApiError) -> dict[str, Any]:
    """Render an error as a Kubernetes ``Status``."""
    reason = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
              503: "ServiceUnavailable"}.get(error.status, "InternalError")
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": error.message,
            "reason": reason, "code": error.status}


def _running_cluster(node: Node) -> dict[str, Any]:
    now = time.time()
    with node.lock:
        record = cluster.current(node, now)
        if record is None or cluster.state_of(record, now) != "Running":
            raise ApiError(503, "ServiceUnavailable", "the API server is not available (cluster not running)")
        return dict(record)


def _hex(*parts: str, size: int = 10) -> str:
    return hashlib.sha256(":".join(parts).encode()).hexdigest()[:size]


def _suffix(*parts: str) -> str:
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    return "".join(alphabet[int(c, 16) % len(alphabet)] for c in _hex(*parts, size=5))


def pods(record: dict[str, Any], namespace: str, crashloop: str) -> list[dict[str, Any]]:
    """The pods of ``namespace`` in the cluster ``record`` (deterministic names per cluster)."""
    hosts = record["hosts"]
    started = record["createdAt"] + record["runningAfter"]
    bad_ns, _, bad_prefix = crashloop.partition("/")
    items = []
    for workload, image, replicas in WORKLOADS.get(namespace, []):
        stateful = workload == "mongo"
        count = len(hosts) if replicas is None else replicas
        template = _hex(record["uid"], namespace, workload)
        for index in range(count):
            if stateful:
                name, owner = f"{workload}-{index}", ("StatefulSet", workload)
            elif replicas is None:
                name, owner = f"{workload}-{_suffix(template, str(index))}", ("DaemonSet", workload)
            else:
                name = f"{workload}-{template[:9]}-{_suffix(template, str(index))}"
                owner = ("ReplicaSet", f"{workload}-{template[:9]}")
            host = hosts[index % len(hosts)]
            crash = namespace == bad_ns and name.startswith(bad_prefix)
            items.append(_pod(record, namespace=namespace, name=name, owner=owner, app=workload, image=image,
                              host=host, started=started, crash=crash))
    return items


def _pod(record: dict[str, Any], *, namespace: str, name: str, owner: tuple[str, str], app: str, image: str,
         host: dict[str, Any], started: float, crash: bool) -> dict[str, Any]:
    uid = _hex(record["uid"], namespace, name, size=32)
    uid = f"{uid[:8]}-{uid[8:12]}-{uid[12:16]}-{uid[16:20]}-{uid[20:]}"
    since = iso(started)
    container: dict[str, Any] = {
        "name": app, "image": image, "imageID": f"{image.partition(':')[0]}@sha256:{_hex(image, size=64)}",
        "containerID": f"containerd://{_hex(uid, 'c', size=64)}", "ready": not crash, "started": not crash,
        "restartCount": 7 if crash else 0,
        "state": {"running": {"startedAt": since}},
    }
    if crash:
        container["state"] = {"waiting": {"reason": "CrashLoopBackOff", "message":
                                          f"back-off 5m0s restarting failed container={app} pod={name}"}}
        container["lastState"] = {"terminated": {"exitCode": 1, "reason": "Error", "startedAt": since,
                                                 "finishedAt": since, "containerID": container["containerID"]}}
    ready = "False" if crash else "True"
    conditions = [{"type": kind, "status": status, "lastProbeTime": None, "lastTransitionTime": since}
                  for kind, status in (("PodReadyToStartContainers", "True"), ("Initialized", "True"),
                                       ("Ready", ready), ("ContainersReady", ready), ("PodScheduled", "True"))]
    if crash:
        for condition in conditions[2:4]:
            condition.update(reason="ContainersNotReady", message=f"containers with unready status: [{app}]")
    octets = int(_hex(uid, size=4), 16)
    pod_ip = f"100.64.{octets % 64}.{octets // 64 % 254 + 1}"
    return {
        "metadata": {"name": name, "namespace": namespace, "uid": uid, "resourceVersion": str(int(started)),
                     "creationTimestamp": iso(record["createdAt"]), "labels": {"app": app},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner[0], "name": owner[1],
                                          "uid": _hex(record["uid"], owner[1], size=32), "controller": True,
                                          "blockOwnerDeletion": True}]},
        "spec": {"containers": [{"name": app, "image": image, "imagePullPolicy": "IfNotPresent", "resources": {}}],
                 "nodeName": host["hostName"], "restartPolicy": "Always", "dnsPolicy": "ClusterFirst",
                 "serviceAccountName": "default", "schedulerName": "default-scheduler"},
        "status": {"phase": "Running", "conditions": conditions, "hostIP": host["ip"], "hostIPs": [{"ip": host["ip"]}],
                   "podIP": pod_ip, "podIPs": [{"ip": pod_ip}], "startTime": since, "qosClass": "BestEffort",
                   "containerStatuses": [container]},
    }


def _selector(request: Request) -> list[tuple[tuple[str, ...], str, bool]]:
    """``(path, value, equal)`` terms of ``fieldSelector`` and ``labelSelector`` (400 for what is not simulated)."""
    if request.query.get("watch", "").lower() in ("true", "1"):
        raise bad_request("watch is not simulated")
    terms: list[tuple[tuple[str, ...], str, bool]] = []
    for param in ("fieldSelector", "labelSelector"):
        for term in filter(None, request.query.get(param, "").split(",")):
            key, op, value = term.partition("!=") if "!=" in term else term.replace("==", "=").partition("=")
            if not op:
                raise bad_request(f"{param} term {term!r} is not simulated (use k=v, k==v or k!=v)")
            if param == "fieldSelector" and key not in FIELDS:
                raise bad_request(f"field label not supported: {key}")
            path: tuple[str, ...] = FIELDS[key] if param == "fieldSelector" else ("metadata", "labels", key)
            terms.append((path, value, op != "!="))
    return terms


def _matches(item: dict[str, Any], terms: list[tuple[tuple[str, ...], str, bool]]) -> bool:
    for path, value, equal in terms:
        found: Any = item
        for key in path:
            found = found.get(key) if isinstance(found, dict) else None
        if (found == value) != equal:
            return False
    return True


def _pod_list(request: Request, namespaces: list[str]) -> Response:
    terms = _selector(request)
    record = _running_cluster(request.node)
    crashloop = request.node.knobs.snapshot().pod_crashloop
    items = [p for ns in namespaces for p in pods(record, ns, crashloop) if _matches(p, terms)]
    return Response(200, {"kind": "PodList", "apiVersion": "v1",
                          "metadata": {"resourceVersion": str(int(time.time()))}, "items": items})


def _namespace(record: dict[str, Any], name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "uid": _hex(record["uid"], "ns", name, size=32),
                         "resourceVersion": "1", "creationTimestamp": iso(record["createdAt"]),
                         "labels": {"kubernetes.io/metadata.name": name}},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}


def _all_namespaces() -> list[str]:
    return sorted({*SYSTEM_NAMESPACES, *WORKLOADS})


def list_namespaces(request: Request) -> Response:
    """``GET /api/v1/namespaces``."""
    record = _running_cluster(request.node)
    return Response(200, {"kind": "NamespaceList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"},
                          "items": [_namespace(record, n) for n in _all_namespaces()]})


def get_namespace(request: Request) -> Response:
    """``GET /api/v1/namespaces/{ns}``."""
    record = _running_cluster(request.node)
    name = request.params["ns"]
    if name not in _all_namespaces():
        raise not_found(f'namespaces "{name}" not found')
    return Response(200, {"kind": "Namespace", "apiVersion": "v1", **_namespace(record, name)})


def version(request: Request) -> Response:
    """``GET /version``."""
    _running_cluster(request.node)
    major, minor, _ = cluster.K8S_VERSION.split(".")
    return Response(200, {"major": major, "minor": minor, "gitVersion": f"v{cluster.K8S_VERSION}",
                          "gitCommit": _hex(cluster.K8S_VERSION, size=40), "gitTreeState": "clean",
                          "buildDate": "2025-03-11T19:52:21Z", "goVersion": "go1.23.6", "compiler": "gc",
                          "platform": "linux/amd64"})


def register(router: Router) -> None:
    """Add the kube-apiserver stand-in's routes (the TLS layer authenticates)."""
    router.add("GET", "/version", version, auth=False)
    router.add("GET", "/api", lambda r: Response(200, {"kind": "APIVersions", "versions": ["v1"],
                                                       "serverAddressByClientCIDRs": []}), auth=False)
    router.add("GET", "/apis", lambda r: Response(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": []}),
               auth=False)
    for probe in ("/healthz", "/livez", "/readyz"):
        router.add("GET", probe, lambda r: Response(200, b"ok", content_type="text/plain"), auth=False)
    router.add("GET", "/api/v1/namespaces", list_namespaces, auth=False)
    router.add("GET", "/api/v1/namespaces/{ns}", get_namespace, auth=False)
    router.add("GET", "/api/v1/namespaces/{ns}/pods", lambda r: _pod_list(r, [r.params["ns"]]), auth=False)
    router.add("GET", "/api/v1/pods", lambda r: _pod_list(r, _all_namespaces()), auth=False)
