"""A hand-off rig over the Local API simulator: plan, journal, ready nodes and a former wired to the simulators.

Used in-process by the tests and by ``runner.py`` (a subprocess the tests SIGKILL). Everything a run needs is in a
JSON-able ``spec`` (simulator addresses, paths, plan overrides), so both sides build the same context.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from palette_provision.handoff import HandoffContext, PaletteLocalApi, ReadyNode
from palette_provision.handoff.local_api import LocalApiClient, default_client
from palette_provision.journal import Journal
from palette_provision.log import get_logger
from palette_provision.plan import DeploymentPlan, parse_plan
from palette_provision.testing.localapi import SimulatedCluster
from palette_provision.waiting import Backoff

NODE_PASSWORD = "node-account-pw-7f3a"
OCI_PASSWORD = "oci-registry-pw-91c2"
USERNAME = "kairos"
VIP = "10.251.0.100"
FAST_BACKOFF = Backoff(initial=0.05, maximum=0.3, jitter=0.05)

#: Simulator timings short enough for a suite under two minutes.
FAST_KNOBS = {
    "inprogress_after_s": 0.0,
    "configured_after_s": 0.3,
    "link_step_s": 0.2,
    "sync_delay_s": 0.3,
    "cluster_running_s": 0.6,
    "cluster_delete_s": 0.3,
}


def set_secret_env() -> None:
    """Secrets reach the plan by reference only (``env:``), as in real plans."""
    os.environ.setdefault("PP_HANDOFF_NODE_PASSWORD", NODE_PASSWORD)
    os.environ.setdefault("PP_HANDOFF_OCI_PASSWORD", OCI_PASSWORD)


def plan_data(
    tmp: Path, count: int, *, content: Path | None, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A valid appliance plan whose nodes are named like the simulator's (node1, node2...)."""
    iso = tmp / "appliance.iso"
    if not iso.exists():
        iso.write_bytes(b"\0" * 4096)
    data: dict[str, Any] = {
        "name": "handoff-test",
        "profile": "appliance",
        "iso": {"source": str(iso)},
        "content": {"path": str(content)} if content else None,
        "cluster": {
            "name": "palette-lab",
            "vip": VIP,
            "dns": ["10.251.0.1"],
            "ntp": ["0.pool.ntp.org"],
            "ssh_public_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl t@x"],
            "node_account": {"username": USERNAME, "password": "env:PP_HANDOFF_NODE_PASSWORD"},
            "profile_variables": {"registry_size": "200Gi"},
            "profile_secrets": {"oci_registry_password": "env:PP_HANDOFF_OCI_PASSWORD"},
        },
        "nodes": {"count": count, "names": [f"node{i + 1}" for i in range(count)], "size": "medium"},
        "readiness": {"ssh": False},
        "handoff": {"kind": "palette-local-api", "output_dir": str(tmp / "out")},
        "platform": {"provider": "fake", "state_file": str(tmp / "platform.json")},
        "timeouts": {"configured": 20, "link": 20, "content_sync": 30, "cluster": 30},
    }
    if content is None:
        del data["content"]
    for dotted, value in (overrides or {}).items():
        target = data
        *parents, last = dotted.split(".")
        for key in parents:
            target = target.setdefault(key, {})
        target[last] = copy.deepcopy(value)
    return data


def build_plan(data: dict[str, Any]) -> DeploymentPlan:
    """``parse_plan`` (the fake provider validates the platform section)."""
    set_secret_env()
    return parse_plan(data)


def sim_spec(sim: SimulatedCluster) -> dict[str, Any]:
    """Where each simulated node answers (JSON-able)."""
    return {n.node_name: {"host": n.host, "port": n.port, "node_ip": n.node_ip} for n in sim.nodes}


def ready_nodes(spec: Mapping[str, Any]) -> tuple[ReadyNode, ...]:
    """The ready nodes the readiness ladder would hand over (address = the node's own IP)."""
    return tuple(
        ReadyNode(name=name, address=where["node_ip"], ssh_user=USERNAME, platform_ids={"fake": f"vm-{name}"})
        for name, where in spec.items()
    )


def client_factory(
    spec: Mapping[str, Any], made: list[LocalApiClient] | None = None, **client_kwargs: Any
) -> Callable[[HandoffContext, ReadyNode], LocalApiClient]:
    """Connect each node's client to its simulator's listening address (they share 127.0.0.1)."""

    def factory(context: HandoffContext, node: ReadyNode) -> LocalApiClient:
        where = spec[node.name]
        if client_kwargs:
            plan = context.plan
            client = LocalApiClient(
                node.name, where["host"], port=where["port"], username=plan.cluster.node_account.username,
                password=plan.cluster.node_account.password, journal=context.journal, tls=plan.handoff.tls,
                log=context.log, **client_kwargs,
            )
        else:
            client = default_client(context, node, address=where["host"], port=where["port"])
        if made is not None:
            made.append(client)
        return client

    return factory


def context_for(
    plan: DeploymentPlan, journal: Journal, spec: Mapping[str, Any], events: list[tuple[str, str, dict[str, Any]]]
) -> HandoffContext:
    """A hand-off context on the simulators, recording every emitted event."""
    return HandoffContext(
        plan=plan,
        journal=journal,
        nodes=ready_nodes(spec),
        output_dir=Path(plan.handoff.output_dir),
        log=get_logger("tests.handoff"),  # the library's logger, redacting, as the pipeline's
        emit=lambda step, msg, data: events.append((step, msg, dict(data))),
    )


def former(spec: Mapping[str, Any], **kwargs: Any) -> PaletteLocalApi:
    """A :class:`PaletteLocalApi` polling fast and wired to the simulators."""
    factory = kwargs.pop("client_factory", None) or client_factory(spec)
    return PaletteLocalApi(backoff=FAST_BACKOFF, client_factory=factory, **kwargs)


def write_spec(path: Path, **spec: Any) -> Path:
    """Write a runner spec."""
    path.write_text(json.dumps(spec, default=str))
    return path
