"""Cross-field rules of a plan that per-field checks cannot express (profile minimums, networks, leaders...)."""

from __future__ import annotations

import ipaddress

from palette_provision.errors import PlanIssue
from palette_provision.plan._models import (
    _HOSTNAME,
    PROFILE_MINIMUMS,
    DeploymentPlan,
    Profile,
    _sizing,
)


def _rule_issues(plan: DeploymentPlan) -> list[PlanIssue]:
    """Cross-field rules that pydantic's per-field checks cannot express.

    ``plan`` may be partial (:func:`palette_provision.plan._load.partial_plan`): a section or field that failed its
    own validation is ``None``, and each group of rules that needs it is skipped, so a plan with schema errors still
    gets every other cross-field problem reported in the same round.
    """
    issues: list[PlanIssue] = []
    for group in (_count_and_size, _firmware, _names, _network, _leader, _ssh, _iso, _handoff, _seed_overrides):
        try:
            issues.extend(group(plan))
        except (AttributeError, TypeError, KeyError, ValueError):
            continue  # it needs a part of the plan that did not validate (already reported)
    return issues


def _count_and_size(plan: DeploymentPlan) -> list[PlanIssue]:
    issues: list[PlanIssue] = []
    add = issues.append
    nodes, profile = plan.nodes, plan.profile
    count = plan.node_count
    min_cpu, min_mem, min_install, min_storage = PROFILE_MINIMUMS[profile]
    if nodes.count is None and nodes.hosts is None:
        add(PlanIssue("nodes.count", "give the number of nodes (nodes.count) or list them (nodes.hosts)"))
    elif nodes.count is not None and nodes.hosts is not None and nodes.count != len(nodes.hosts):
        add(PlanIssue("nodes.hosts", f"{len(nodes.hosts)} hosts listed for nodes.count {nodes.count}"))
    elif profile is Profile.APPLIANCE and count not in (1, 3):
        add(PlanIssue("nodes.count", f"the appliance runs on 1 or 3 nodes, got {count}"))
    elif count < 1:
        add(PlanIssue("nodes.count", f"at least 1 node is needed, got {count}"))
    if nodes.size is None and (nodes.cpus is None or nodes.memory_gb is None):
        add(PlanIssue("nodes.size", "give a size tier (small, medium, large) or both nodes.cpus and nodes.memory_gb"))
    cpus, mem = _sizing(nodes)
    if cpus is not None and cpus < min_cpu:
        add(PlanIssue("nodes.cpus", f"the {profile.value} profile needs at least {min_cpu} CPUs per node, got {cpus}"))
    if mem is not None and mem < min_mem:
        add(PlanIssue("nodes.memory_gb", f"the {profile.value} profile needs at least {min_mem} GB, got {mem}"))
    if nodes.install_disk_gb < min_install:
        add(
            PlanIssue(
                "nodes.install_disk_gb",
                f"the {profile.value} profile needs an install disk of at least {min_install} GB, "
                f"got {nodes.install_disk_gb}",
            )
        )
    if nodes.storage_disk_gb < min_storage:
        add(
            PlanIssue(
                "nodes.storage_disk_gb",
                f"the {profile.value} profile needs a storage disk of at least {min_storage} GB, "
                f"got {nodes.storage_disk_gb}",
            )
        )
    return issues


def _firmware(plan: DeploymentPlan) -> list[PlanIssue]:
    issues: list[PlanIssue] = []
    nodes = plan.nodes
    if plan.profile is Profile.APPLIANCE and nodes.firmware != "uefi":
        issues.append(PlanIssue("nodes.firmware", "the appliance boots with UEFI only"))
    if nodes.secure_boot and nodes.firmware != "uefi":
        issues.append(PlanIssue("nodes.secure_boot", "Secure Boot needs UEFI firmware"))
    return issues


def _names(plan: DeploymentPlan) -> list[PlanIssue]:
    issues: list[PlanIssue] = []
    add = issues.append
    nodes, count = plan.nodes, plan.node_count
    names = plan.node_names()
    if nodes.names is not None:
        if nodes.hosts is not None:
            add(PlanIssue("nodes.names", "name the nodes in nodes.hosts or in nodes.names, not both"))
        if len(nodes.names) != count:
            add(PlanIssue("nodes.names", f"{len(nodes.names)} names given for {count} nodes"))
        for i, name in enumerate(nodes.names):
            if not _HOSTNAME.match(name):
                add(PlanIssue(f"nodes.names[{i}]", "must be lower-case letters, digits and '-', at most 63 characters"))
    for i, host in enumerate(nodes.hosts or []):
        if host.name is not None and not _HOSTNAME.match(host.name):
            add(PlanIssue(f"nodes.hosts[{i}].name", "must be lower-case letters, digits and '-', at most 63 chars"))
    if len(set(names)) != len(names):
        add(PlanIssue("nodes.hosts" if nodes.hosts is not None else "nodes.names", "node names must be unique"))
    return issues


def _network(plan: DeploymentPlan) -> list[PlanIssue]:
    return _network_issues(plan, len(plan.node_names()))


def _leader(plan: DeploymentPlan) -> list[PlanIssue]:
    names = plan.node_names()
    leader = plan.handoff.leader
    if leader is not None and leader not in names:
        return [PlanIssue("handoff.leader", f"no node is named {leader} (nodes: {', '.join(names)})")]
    return []


def _ssh(plan: DeploymentPlan) -> list[PlanIssue]:
    issues: list[PlanIssue] = []
    if plan.readiness.ssh and plan.cluster.node_account.ssh_private_key is None:
        issues.append(
            PlanIssue(
                "cluster.node_account.ssh_private_key",
                "the readiness ladder logs in over SSH: give the private key matching cluster.ssh_public_keys "
                "(or set readiness.ssh: false)",
            )
        )
    if plan.readiness.ssh and not plan.cluster.ssh_public_keys:
        issues.append(PlanIssue("cluster.ssh_public_keys", "at least one key is needed for the SSH readiness check"))
    return issues


def _iso(plan: DeploymentPlan) -> list[PlanIssue]:
    if plan.iso.is_url and plan.iso.sha256 is None:
        return [PlanIssue("iso.sha256", "an ISO fetched from a URL needs its SHA-256")]
    return []


def _handoff(plan: DeploymentPlan) -> list[PlanIssue]:
    issues: list[PlanIssue] = []
    if plan.handoff.kind == "palette-local-api" and plan.profile is Profile.APPLIANCE and plan.content is None:
        # The appliance forms its cluster from the uploaded content bundle (its install flow, step 5): without
        # one, cluster creation can only fail, after the whole deployment.
        issues.append(
            PlanIssue("content", "the appliance's palette-local-api hand-off needs the content bundle (content.path)")
        )
    if plan.handoff.kind == "palette-local-api" and plan.readiness.local_api is False:
        issues.append(PlanIssue("readiness.local_api", "the palette-local-api hand-off needs the Local API rung"))
    if plan.packs is not None and plan.validation is None:
        issues.append(PlanIssue("packs", "uploading packs needs validate.console (the registry's sync is asked of the "
                                "system console, logged in with that password)"))
    if plan.packs is not None:
        for i, bundle in enumerate(plan.packs.bundles):
            if not plan.resolve_path(bundle).is_file():
                issues.append(PlanIssue(f"packs.bundles[{i}]", f"no such file: {plan.resolve_path(bundle)}"))
            elif not bundle.endswith(".zst"):
                issues.append(PlanIssue(f"packs.bundles[{i}]", "a pack bundle is a .zst file (Artifact Studio's)"))
    if plan.validation is not None and plan.handoff.kind != "palette-local-api":
        issues.append(PlanIssue("validate", "validating Palette needs the cluster that the palette-local-api hand-off"
                                " forms"))
    return issues


def _network_issues(plan: DeploymentPlan, count: int) -> list[PlanIssue]:
    net = plan.nodes.network
    hosts = plan.nodes.hosts or []
    issues: list[PlanIssue] = []
    host_addresses: list[tuple[str, ipaddress.IPv4Interface]] = []
    for i, host in enumerate(hosts):
        if host.address is not None:
            host_addresses.append((f"nodes.hosts[{i}].address", host.address))
    if net.mode == "dhcp":
        if net.addresses:
            issues.append(PlanIssue("nodes.network.addresses", "static addresses given with mode: dhcp"))
        issues.extend(PlanIssue(path, "a static address given with mode: dhcp") for path, _ in host_addresses)
        return issues
    if host_addresses and net.addresses:
        issues.append(PlanIssue("nodes.network.addresses", "give addresses here or per host, not both"))
    given = host_addresses or [(f"nodes.network.addresses[{i}]", a) for i, a in enumerate(net.addresses)]
    if len(given) != count:
        where = "nodes.hosts" if host_addresses else "nodes.network.addresses"
        issues.append(PlanIssue(where, f"static mode needs one address per node: {count}, got {len(given)}"))
    if net.gateway is None:
        issues.append(PlanIssue("nodes.network.gateway", "static mode needs a gateway"))
    seen: set[ipaddress.IPv4Address] = set()
    for path, iface in given:
        if iface.ip in seen:
            issues.append(PlanIssue(path, f"{iface.ip} is used twice"))
        seen.add(iface.ip)
        if iface.ip == plan.cluster.vip:
            issues.append(PlanIssue(path, "a node address cannot be the cluster VIP"))
        if iface.network.prefixlen == 32:
            issues.append(PlanIssue(path, "give the prefix length, e.g. 10.0.0.11/24"))
        elif net.gateway is not None and net.gateway not in iface.network:
            issues.append(PlanIssue(path, f"gateway {net.gateway} is outside {iface.network}"))
    return issues


def _seed_overrides(plan: DeploymentPlan) -> list[PlanIssue]:
    """``user_data_extra`` against the seed's conformance table: typos, types, allowed values (errors only; the
    warnings are for ``validate`` to show, see :func:`palette_provision.seed.override_findings`)."""
    if not plan.user_data_extra:
        return []  # and the seed module (PyYAML with it) stays unimported: a re-run does not need it
    from palette_provision.seed._extra import override_findings

    return override_findings(plan.user_data_extra)[0]
