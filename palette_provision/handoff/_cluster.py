"""Step 4 of formation: profile variables, cluster creation on the leader, ``Running``/``Healthy``, kubeconfig.

Create answers ``202 {message}`` only (reference §5.3, §11.5): the cluster's name we send is our handle, and
``GET /cluster/details`` (``404`` = no cluster) is both the progress feed and the check that makes creation
idempotent: a cluster that exists is adopted, never created twice.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from palette_provision.errors import HandoffError
from palette_provision.handoff._client import LocalApiUnavailable, write_private
from palette_provision.handoff._session import Session, step_errors
from palette_provision.secrets import Secret, known_secret_values

ARCHIVES = (
    # §11.6: which archive a cluster is created from is not stated. A stand-alone cluster-config archive the user
    # uploaded overrides the one embedded in the ISO; an "update" archive (inside a content bundle) is meant for
    # updating a running cluster, so it is only the last resort.
    ("overridden", "/v1/edge-mgmt/clusters/archive/overridden/details"),
    ("embedded", "/v1/edge-mgmt/clusters/archive/embedded/details"),
    ("update", "/v1/edge-mgmt/clusters/archive/update/details"),
)
VALIDATE = "/v1/edge-mgmt/cluster/profiles/variables/validate"
CREATE = "/v1/edge-mgmt/cluster"
DETAILS = "/v1/edge-mgmt/cluster/details"
CLUSTER_EVENTS = "/v1/edge-mgmt/cluster/events"
LIFECYCLE_EVENTS = "/v1/edge-mgmt/events/lifecycle"

CLUSTER_STEP = "handoff.cluster"
POOL_NAME = "control-plane"
MAX_EVENTS = 20


@dataclass
class Variable:
    """One profile variable with the value we will send (a :class:`Secret` for sensitive ones)."""

    name: str
    profile_uid: str
    value: str | Secret
    immutable: bool = False
    default: str = ""

    def wire(self) -> dict[str, str]:
        """``v1ProfileVariable``; the only place a secret value is revealed (the request body)."""
        value = self.value.reveal() if isinstance(self.value, Secret) else self.value
        return {"name": self.name, "profileUid": self.profile_uid, "value": value}


@dataclass
class Archive:
    """The cluster-config archive the cluster is created from, and its variables."""

    kind: str
    upload_path: str
    variables: list[Variable] = field(default_factory=list)


def _scrub(text: str) -> str:
    for secret in known_secret_values():
        text = text.replace(secret, "***")
    return text


def find_archive(session: Session) -> Archive:
    """Read the first archive the leader has (overridden, embedded, update) with its declared variables."""
    leader = session.api(session.leader)
    for kind, path in ARCHIVES:
        try:
            details = leader.get_optional(path)
        except LocalApiUnavailable:
            # The spec lists only 200 and default for these (§5.1): a node without that archive may answer 5xx.
            continue
        if not details or not details.get("archiveUploadPath"):
            continue
        archive = Archive(kind, str(details["archiveUploadPath"]))
        for profile in details.get("clusterProfileDetails") or []:
            for var in profile.get("variables") or []:
                default = str(var.get("defaultValue") or "")
                archive.variables.append(
                    Variable(str(var["name"]), str(profile.get("profileUid") or ""),
                             str(var.get("value") or default), bool(var.get("immutable")), default)
                )
        return archive
    raise HandoffError(CLUSTER_STEP, f"{session.leader.name} has no cluster-config archive (overridden, embedded "
                       "or update); was it installed from the appliance ISO?")


def merge_variables(session: Session, archive: Archive) -> list[Variable]:
    """The archive's values with the plan's ``profile_variables`` and ``profile_secrets`` merged over them."""
    cluster = session.context.plan.cluster
    declared = {v.name for v in archive.variables}
    defaults = {k: v for k, v in session.context.profile_defaults.items() if k in declared}
    given: dict[str, str | Secret] = {**defaults, **cluster.profile_variables, **cluster.profile_secrets}
    unknown = sorted(set(given) - declared)
    if unknown:
        raise HandoffError(
            CLUSTER_STEP,
            f"profile variable(s) {', '.join(unknown)} from the plan are not declared by the {archive.kind} archive "
            f"(declared: {', '.join(sorted(declared))})",
        )
    merged = []
    for var in archive.variables:
        if var.name not in given:
            merged.append(var)
            continue
        value = given[var.name]
        if var.immutable and not isinstance(value, Secret) and value != var.value:
            raise HandoffError(CLUSTER_STEP, f"profile variable {var.name} is immutable (value {var.value!r})")
        merged.append(Variable(var.name, var.profile_uid, value, var.immutable, var.default))
    return merged


def validate_variables(session: Session, archive: Archive, variables: list[Variable]) -> None:
    """Ask the leader to validate the variables; the first invalid one becomes a :class:`HandoffError`."""
    body = {
        "archiveUploadPath": archive.upload_path,
        "variables": [v.wire() for v in variables],
        "metadata": {"name": session.context.plan.cluster.name},
    }
    answer = session.api(session.leader).call("POST", VALIDATE, json_body=body) or {}
    bad = [r for r in answer.get("variables") or [] if isinstance(r, dict) and r.get("isValid") is False]
    if bad:
        lines = [f"{r.get('name')}: {_scrub(str(r.get('validationFailureReason') or 'invalid'))}" for r in bad]
        raise HandoffError(CLUSTER_STEP, "profile variable validation failed: " + "; ".join(lines))


def cluster_body(session: Session, archive: Archive, variables: list[Variable]) -> dict[str, Any]:
    """The ``v1ClusterConfiguration`` create body (§5.3): one control-plane pool holding every node."""
    plan = session.context.plan
    hosts = []
    for node in session.context.nodes:
        facts = session.facts[node.name]
        hosts.append({"hostUid": facts.host_id, "hostName": facts.host_name, "hostAddress": facts.ip})
    arch = session.facts[session.leader.name].arch
    return {
        "metadata": {"name": plan.cluster.name},
        "spec": {
            "archiveUploadPath": archive.upload_path,
            "profileVariables": [v.wire() for v in variables],
            "cloudConfig": {
                "spec": {
                    "clusterConfig": {
                        # §11.8: type is free text; the description names "VIP" in upper case, as the Local UI.
                        "controlPlaneEndpoint": {"host": str(plan.cluster.vip), "type": "VIP"},
                        "ntpServers": list(plan.cluster.ntp),
                        "sshKeys": list(plan.cluster.ssh_public_keys),
                        "staticIp": plan.nodes.network.mode == "static",
                        # x-omitempty false in the spec: always sent; the appliance uses no overlay network.
                        "overlayNetworkConfiguration": {"enable": False},
                    },
                    "machinePoolConfig": [
                        {
                            "name": POOL_NAME,
                            "isControlPlane": True,
                            # "allow worker capability" in the Local UI: workloads may run on control-plane nodes.
                            "useControlPlaneAsWorker": True,
                            "size": len(hosts),
                            "machinePoolProperties": {"archType": arch if arch in ("amd64", "arm64") else "amd64"},
                            "hosts": hosts,
                        }
                    ],
                }
            },
        },
    }


def cluster_events(session: Session) -> list[str]:
    """What the leader says about the cluster: its cluster events and failed lifecycle conditions (newest last)."""
    leader = session.api(session.leader)
    events: list[str] = []
    try:
        for item in (leader.get(CLUSTER_EVENTS) or {}).get("items") or []:
            reason, message = item.get("reason") or "", item.get("message") or ""
            events.append(_scrub(f"{item.get('severity') or 'Event'} {reason}: {message}".strip()))
    except Exception as exc:  # events are best effort: the error being raised matters more
        events.append(f"(cluster events unavailable: {type(exc).__name__})")
    try:
        lifecycle = leader.get(LIFECYCLE_EVENTS) or {}
        for cond in lifecycle.get("clusterEvents") or []:
            if str(cond.get("status")).lower() in ("false", "failed", "error"):
                events.append(_scrub(f"{cond.get('type')} {cond.get('reason') or ''}: {cond.get('message') or ''}"))
    except Exception as exc:
        events.append(f"(lifecycle events unavailable: {type(exc).__name__})")
    return events[-MAX_EVENTS:]


def _state(details: dict[str, Any] | None) -> tuple[str, str]:
    if details is None:
        return "Absent", ""
    status = details.get("status") or {}
    return str(status.get("clusterState") or ""), str((status.get("health") or {}).get("status") or "")


def decode_kubeconfig(value: str) -> bytes:
    """The kubeconfig YAML from ``status.kubeconfig``, raw or base64 (§11.7: the encoding is not stated).

    >>> decode_kubeconfig("apiVersion: v1\\nkind: Config\\n")[:14]
    b'apiVersion: v1'
    >>> decode_kubeconfig("YXBpVmVyc2lvbjogdjEK")
    b'apiVersion: v1\\n'
    """
    text = value.strip()
    if "apiVersion" in text or "clusters:" in text:
        return value.encode()
    try:
        decoded = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return value.encode()
    return decoded if b"apiVersion" in decoded or b"clusters:" in decoded else value.encode()


def _adopt_or_create(session: Session) -> None:
    """Create the cluster unless the leader already has it (a re-run, or a create whose answer was lost)."""
    leader = session.api(session.leader)
    name = session.context.plan.cluster.name
    existing = leader.get_optional(DETAILS)
    if existing is not None:
        found = str((existing.get("metadata") or {}).get("name") or "")
        if found and found != name:
            raise HandoffError(CLUSTER_STEP, f"{session.leader.name} already runs a cluster named {found!r}, not "
                               f"{name!r}; delete it in the Local UI or use its name")
        session.emit(CLUSTER_STEP, "cluster_adopted", cluster=name, state=_state(existing)[0])
        return
    archive = find_archive(session)
    variables = merge_variables(session, archive)
    validate_variables(session, archive, variables)
    session.emit(CLUSTER_STEP, "profile_variables_valid", archive=archive.kind, count=len(variables))
    body = cluster_body(session, archive, variables)

    def create() -> bool:
        # Retried on 5xx and lost connections; observe first so a create that did land is not sent twice.
        if leader.get_optional(DETAILS) is not None:
            return True
        leader.call("POST", CREATE, json_body=body)
        return True

    session.wait(CLUSTER_STEP, create, what=f"the leader {session.leader.name} to accept the cluster {name}",
                 timeout=min(600.0, session.context.plan.timeouts.cluster), until=bool)
    session.checkpoint(f"{CLUSTER_STEP}:created")
    session.emit(CLUSTER_STEP, "cluster_create_requested", cluster=name, nodes=len(session.context.nodes))


def form_cluster(session: Session) -> tuple[dict[str, Any], Path]:
    """Create (or adopt) the cluster, wait until it is ``Running`` and ``Healthy``, save its kubeconfig (0600)."""
    journal, plan = session.context.journal, session.context.plan
    name = plan.cluster.name
    created = journal.is_done(CLUSTER_STEP)
    got: dict[str, Any] = {}

    def run() -> dict[str, Any]:
        with step_errors(CLUSTER_STEP):
            if not created:
                session.checkpoint(f"{CLUSTER_STEP}:begin")
                _adopt_or_create(session)
            got["details"] = _await_running(session)
        kubeconfig = session.context.output_dir / f"{name}.kubeconfig"
        write_private(kubeconfig, decode_kubeconfig(str(got["details"]["status"]["kubeconfig"])))
        return {"cluster": name, "state": "Running", "kubeconfig": str(kubeconfig)}

    # Always: a done cluster step still reads the cluster's state (the report needs it) and rewrites its kubeconfig.
    data = session.context.run_step(CLUSTER_STEP, run, always=True)
    kubeconfig = Path(data["kubeconfig"])
    session.emit(CLUSTER_STEP, "cluster_running", cluster=name, kubeconfig=str(kubeconfig))
    return got["details"], kubeconfig


def _await_running(session: Session) -> dict[str, Any]:
    plan = session.context.plan
    name = plan.cluster.name
    leader = session.api(session.leader)
    seen: list[str] = []

    def note(details: dict[str, Any] | None) -> None:
        state = "/".join(s for s in _state(details) if s)
        if not seen or seen[-1] != state:
            seen.append(state)
            session.emit(CLUSTER_STEP, "cluster_state", cluster=name, state=state)

    def failed(details: dict[str, Any] | None) -> str | None:
        state, _ = _state(details)
        if state == "Error":
            return str(((details or {}).get("status") or {}).get("clusterStateReason") or "cluster failed")
        if state == "Deleting":
            return "the cluster is being deleted"
        return None

    details = session.wait(
        CLUSTER_STEP, lambda: leader.get_optional(DETAILS), what=f"cluster {name} to be Running and Healthy",
        timeout=plan.timeouts.cluster, failed=failed, events=lambda: cluster_events(session), on_state=note,
        describe=lambda d: "/".join(s for s in _state(d) if s) or "no cluster yet",
        until=lambda d: _state(d) == ("Running", "Healthy") and bool((d or {}).get("status", {}).get("kubeconfig")),
    )
    if not isinstance(details, dict):
        raise HandoffError(CLUSTER_STEP, f"{session.leader.name} answered the cluster details with no object")
    return details
