"""The vCenter lab's Local API simulators: one per node, run inside the ``pplab`` namespace, answering at the nodes'
addresses; in DHCP mode at the leases the guests get at run time.

:func:`serve` is the supervisor process (``python -m vcsim.stack serve-local-api``, started by the stack with
``pplab.net.run_in_lan``): it starts the simulators (``palette_provision.testing.localapi.SimulatedCluster``, on
10.251.0.1, with the VIP services' two ports chosen up front) and writes the ready file ``local-api.json``
(``{"nodes": [{"name", "ip", "port", "cert_sha256"}], "vip": {"console_port", "kube_port"}}``).

With a static plan the stack knows every node's address up front and DNATs ``<address>:5080`` to that node's
simulator before any VM exists. With ``nodes.network: {mode: dhcp}`` nobody knows the addresses until the guests
boot: the stack serves DHCP on the lab LAN (``pplab.net.LanDhcp`` with the pool :data:`DHCP_POOL`), the watcher
reports each guest's lease to vcsim as VMware Tools would and lists it in its ``addresses.json``, and
:class:`LeaseBinder`, run by :func:`serve`, follows that file: for the VM ``<vm prefix><node name>`` it

1. restarts that node's simulator with the lease as the IP it reports (``v1EdgeHostInfo.spec.networkInfo``, link
   tokens, cluster members carry it), unless it reports it already, and rewrites the peers file;
2. DNATs ``<lease>:5080`` to the simulator (``pplab.net.expose_local_api``, from inside the namespace), dropping an
   older lease's DNAT; the ready file then lists the lease as the node's ``ip`` (``None`` until then).

The restart happens when the lease appears, before the library can reach the node's port 5080 (the DNAT comes
after it), so no client ever saw the simulator it replaces.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pplab import net

__all__ = ["DHCP_POOL", "LeaseBinder", "read_addresses", "serve"]

log = logging.getLogger("vcsim.localapis")

#: The lab's dynamic DHCP pool: away from the static node addresses (.11...), the VIP (.100) and pplab's tests.
DHCP_POOL = ("10.251.0.200", "10.251.0.239")


def read_addresses(path: Path) -> dict[str, dict[str, Any]]:
    """The watcher's ``addresses.json``: VM name -> ``{"ip", "source", "mac", "moref"}``; empty if absent."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    vms = data.get("vms") if isinstance(data, dict) else None
    return {str(k): v for k, v in vms.items() if isinstance(v, dict)} if isinstance(vms, dict) else {}


class LeaseBinder:
    """Binds each node's simulator to the address the watcher reported for the node's VM.

    ``vm_names[i]`` is the VM of node ``i`` (the simulator ``cluster.nodes[i]``); ``restart(i, ip)`` replaces that
    simulator with one reporting ``ip`` and returns its handle (anything with ``node_ip`` and ``port``).
    """

    def __init__(
        self,
        addresses: Path,
        vm_names: Sequence[str],
        nodes: list[Any],
        restart: Callable[[int, str], Any],
        *,
        expose: Callable[[str, int], None] = net.expose_local_api,
        unexpose: Callable[[str], None] = net.unexpose_local_api,
    ) -> None:
        self.addresses = addresses
        self.vm_names = list(vm_names)
        self.nodes = nodes
        self._restart = restart
        self._expose = expose
        self._unexpose = unexpose
        self.bound: dict[int, str] = {}
        """Node index -> the lease its simulator answers at (DNATed)."""

    def poll_once(self) -> bool:
        """Bind every new or moved lease; True if anything changed. One node's failure does not stop the others."""
        reported = read_addresses(self.addresses)
        changed = False
        for index, vm_name in enumerate(self.vm_names):
            ip = (reported.get(vm_name) or {}).get("ip")
            if not isinstance(ip, str) or self.bound.get(index) == ip:
                continue
            try:
                self._bind(index, vm_name, ip)
            except Exception:
                log.exception("lease_bind_failed vm=%s ip=%s", vm_name, ip)
                continue
            changed = True
        return changed

    def _bind(self, index: int, vm_name: str, ip: str) -> None:
        handle = self.nodes[index]
        if handle.node_ip != ip:
            handle = self.nodes[index] = self._restart(index, ip)
        old = self.bound.get(index)
        if old is not None and old != ip and list(self.bound.values()).count(old) == 1:
            self._unexpose(old)  # the node moved (a new lease); no other node answers there
        self._expose(ip, int(handle.port))
        self.bound[index] = ip
        log.info("lease_bound vm=%s ip=%s simulator_port=%s", vm_name, ip, handle.port)


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def serve(
    directory: Path,
    node_ips: Sequence[str],
    *,
    password: str,
    username: str,
    knobs: dict[str, Any],
    ready_file: Path,
    addresses: Path | None = None,
    vm_names: Sequence[str] = (),
) -> int:
    """Run one simulator per node (``node_ips``: the addresses they report) in this, the lab's, namespace until
    SIGTERM; keep ``ready_file`` current. With ``addresses`` (DHCP mode), bind node ``i``'s simulator to the lease
    the watcher reports for the VM ``vm_names[i]`` (``node_ips`` are then placeholders nobody sees)."""
    from palette_provision.testing.localapi import SimulatedCluster, start_simulator

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    # The VIP services' ports, chosen now so that the DNAT is in place before any cluster exists.
    vip_ports = (_free_port(net.GATEWAY), _free_port(net.GATEWAY))
    cluster = SimulatedCluster(
        directory, len(node_ips), password=password, username=username,
        knobs=knobs, node_ips=list(node_ips), listen_host=net.GATEWAY, vip_ports=vip_ports,
    )  # fmt: skip
    cluster.start()

    def restart(index: int, ip: str) -> Any:
        """Node ``index``'s simulator again, reporting ``ip`` (its DHCP lease); same name, state and VIP ports."""
        old = cluster.nodes[index]
        old.stop()
        new = start_simulator(
            old.node_name, old.state_dir, password=password, username=username, node_ip=ip,
            listen=f"{net.GATEWAY}:0", peers_file=cluster.peers_file, knobs=knobs,
            console_port=vip_ports[0], kube_port=vip_ports[1],
        )  # fmt: skip
        cluster.nodes[index], cluster.node_ips[index] = new, ip
        cluster.write_peers_file()
        return new

    binder = LeaseBinder(addresses, vm_names, cluster.nodes, restart) if addresses else None

    def write_ready() -> None:
        nodes = [
            {"name": h.node_name, "ip": h.node_ip if binder is None or i in binder.bound else None,
             "port": h.address[1], "cert_sha256": h.cert_sha256}
            for i, h in enumerate(cluster.nodes)
        ]  # fmt: skip
        tmp = ready_file.with_name(ready_file.name + ".tmp")
        tmp.write_text(json.dumps({"nodes": nodes, "vip": {"console_port": vip_ports[0], "kube_port": vip_ports[1]}}))
        os.replace(tmp, ready_file)

    try:
        write_ready()
        while not stop["now"]:
            if binder is not None and binder.poll_once():
                write_ready()
            time.sleep(0.5)
    finally:
        cluster.stop()
    return 0
