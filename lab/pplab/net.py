"""The lab's networks (docs/CONVENTIONS.md): the QEMU lab LAN and the sshd nodes.

QEMU lab LAN::

    host pplab0 10.250.0.1/30 <-> uplink 10.250.0.2/30 [netns pplab] br0 10.251.0.1/24 <- guest taps
    host route 10.251.0.0/24 via 10.250.0.2; ip_forward=1 inside pplab;
    nftables table ``ip pplab`` inside pplab: <node>:5080 -> 10.251.0.1:<port> (DNAT)
    nftables table ``ip pplab_vip``: <vip>:443 and <vip>:6443 -> 10.251.0.1:<console port>, :<kube port> (DNAT)

sshd nodes (readiness tests): netns ``ppssh-<i>``, host veth ``ppssh<i>`` 10.252.<i>.1/30,
namespace veth ``eth0`` 10.252.<i>.2/30, a private OpenSSH sshd on 10.252.<i>.2:22, faults
(loss, blackout) by nftables inside the namespace: this kernel has no netem.

Everything here needs root.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from pplab._cmd import LabError, kill_group, link_exists, namespace_exists, ns_argv, require_tool, run

LAN_NAMESPACE = "pplab"
HOST_VETH = "pplab0"
NS_VETH = "uplink"
HOST_ADDRESS = "10.250.0.1"
UPLINK_ADDRESS = "10.250.0.2"
BRIDGE = "br0"
GATEWAY = "10.251.0.1"
LAN_NETWORK = "10.251.0.0/24"
LOCAL_API_PORT = 5080
VIP_PORTS = (443, 6443)  # the system console (https://<vip>/...) and the Kubernetes API
_NFT_TABLE = "pplab"
_NFT_VIP_TABLE = "pplab_vip"

# One fixed rule per NAT hook and a map holding the exposures: exposing or
# unexposing a node is one map element, so it is atomic and idempotent, and the
# map lists exactly what is exposed. "prerouting" catches traffic from the host
# (arrives on uplink); "output" catches processes inside the namespace.
_NFT_LAN = f"""
table ip {_NFT_TABLE} {{
    map api {{ type ipv4_addr : ipv4_addr . inet_service; }}
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
        tcp dport {LOCAL_API_PORT} dnat ip to ip daddr map @api
    }}
    chain output {{
        type nat hook output priority -100; policy accept;
        tcp dport {LOCAL_API_PORT} dnat ip to ip daddr map @api
    }}
}}
"""
# The VIP's services: one map keyed by address and port, so the VIP's two ports go to two simulator ports.
_NFT_VIP = f"""
table ip {_NFT_VIP_TABLE} {{
    map vip {{ type ipv4_addr . inet_service : ipv4_addr . inet_service; }}
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
        dnat ip to ip daddr . tcp dport map @vip
    }}
    chain output {{
        type nat hook output priority -100; policy accept;
        dnat ip to ip daddr . tcp dport map @vip
    }}
}}
"""


def _require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, taps, nftables)")
    require_tool("ip", "iproute2")
    require_tool("nft", "nftables")


def lan_exists() -> bool:
    """True if the ``pplab`` namespace exists (it may still be incomplete; see :func:`ensure_lan`)."""
    return namespace_exists(LAN_NAMESPACE)


def in_lan_namespace() -> bool:
    """True if this process runs inside the ``pplab`` namespace (started with :func:`run_in_lan`)."""
    try:
        mine, lan = os.stat("/proc/self/ns/net"), os.stat(f"/run/netns/{LAN_NAMESPACE}")
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (lan.st_dev, lan.st_ino)


def ensure_lan() -> None:
    """Create the QEMU lab LAN, or complete it; a no-op when it is already complete."""
    _require_root()
    if not namespace_exists(LAN_NAMESPACE):
        run(["ip", "netns", "add", LAN_NAMESPACE])
    n = ["ip", "-n", LAN_NAMESPACE]
    if not link_exists(HOST_VETH):
        if link_exists(NS_VETH, LAN_NAMESPACE):
            # Half of an old pair (host end deleted by hand): start over.
            run([*n, "link", "del", NS_VETH])
        run(["ip", "link", "add", HOST_VETH, "type", "veth", "peer", "name", NS_VETH, "netns", LAN_NAMESPACE])
    run(["ip", "addr", "replace", f"{HOST_ADDRESS}/30", "dev", HOST_VETH])
    run(["ip", "link", "set", HOST_VETH, "up"])
    run([*n, "link", "set", "lo", "up"])
    run([*n, "addr", "replace", f"{UPLINK_ADDRESS}/30", "dev", NS_VETH])
    run([*n, "link", "set", NS_VETH, "up"])
    if not link_exists(BRIDGE, LAN_NAMESPACE):
        run([*n, "link", "add", BRIDGE, "type", "bridge"])
    run([*n, "addr", "replace", f"{GATEWAY}/24", "dev", BRIDGE])
    run([*n, "link", "set", BRIDGE, "up"])
    run(["ip", "route", "replace", LAN_NETWORK, "via", UPLINK_ADDRESS, "dev", HOST_VETH])
    run(ns_argv(LAN_NAMESPACE, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]))
    for table, text in ((_NFT_TABLE, _NFT_LAN), (_NFT_VIP_TABLE, _NFT_VIP)):
        if run(ns_argv(LAN_NAMESPACE, ["nft", "list", "table", "ip", table]), check=False).returncode != 0:
            run(ns_argv(LAN_NAMESPACE, ["nft", "-f", "-"]), input_text=text)


def teardown_lan() -> None:
    """Remove the QEMU lab LAN (namespace, veth pair, route). Stop the guests first.

    Deleting the namespace name does not kill processes still inside it; their
    interfaces live on until they exit.
    """
    _require_root()
    if link_exists(HOST_VETH):
        run(["ip", "link", "del", HOST_VETH])  # also deletes the peer and the host route
    if namespace_exists(LAN_NAMESPACE):
        run(["ip", "netns", "del", LAN_NAMESPACE])


def _check_node_address(node_address: str) -> str:
    addr = ipaddress.IPv4Address(node_address)
    if addr not in ipaddress.IPv4Network(LAN_NETWORK) or str(addr) == GATEWAY:
        raise LabError(f"{node_address} is not a node address of the lab LAN {LAN_NETWORK}")
    return str(addr)


def expose_local_api(node_address: str, target_port: int) -> None:
    """DNAT ``<node_address>:5080`` to ``10.251.0.1:<target_port>`` (a simulator run with :func:`run_in_lan`).

    Applies to connections from the host and from processes inside ``pplab``;
    replaces an earlier exposure of the same node. Creates the LAN if needed. Callable from the host or from a
    process inside ``pplab`` (e.g. the vCenter lab's Local API supervisor, which binds DHCP leases as they appear).
    """
    addr = _check_node_address(node_address)
    if not 0 < target_port < 65536:
        raise LabError(f"bad port {target_port}")
    if not in_lan_namespace():  # from inside (a process run with run_in_lan) the LAN exists, and the host's half
        ensure_lan()  # of it is out of reach: ensure_lan() there would build a second veth pair
    unexpose_local_api(addr)
    element = f"{{ {addr} : {GATEWAY} . {target_port} }}"
    run(ns_argv(LAN_NAMESPACE, ["nft", "add", "element", "ip", _NFT_TABLE, "api", element]))


def unexpose_local_api(node_address: str) -> None:
    """Remove the DNAT of ``<node_address>:5080``; a no-op if it is not exposed."""
    addr = _check_node_address(node_address)
    if addr in exposed_local_apis():
        run(ns_argv(LAN_NAMESPACE, ["nft", "delete", "element", "ip", _NFT_TABLE, "api", f"{{ {addr} }}"]))


def exposed_local_apis() -> dict[str, int]:
    """The current exposures: node address -> target port on 10.251.0.1."""
    if not lan_exists():
        return {}
    proc = run(ns_argv(LAN_NAMESPACE, ["nft", "-j", "list", "map", "ip", _NFT_TABLE, "api"]), check=False)
    if proc.returncode != 0:
        return {}
    result: dict[str, int] = {}
    for item in json.loads(proc.stdout).get("nftables", []):
        for key, value in item.get("map", {}).get("elem", []):
            result[str(key)] = int(value["concat"][1])
    return result


def expose_vip(vip: str, console_port: int, kube_port: int) -> None:
    """DNAT ``<vip>:443`` to ``10.251.0.1:<console_port>`` and ``<vip>:6443`` to ``10.251.0.1:<kube_port>``: the leader
    simulator's system console and kube-apiserver stand-in. Like :func:`expose_local_api` otherwise."""
    addr = _check_node_address(vip)
    if not all(0 < port < 65536 for port in (console_port, kube_port)):
        raise LabError(f"bad ports {console_port}, {kube_port}")
    ensure_lan()
    unexpose_vip(addr)
    pairs = zip(VIP_PORTS, (console_port, kube_port), strict=True)
    elements = ", ".join(f"{addr} . {port} : {GATEWAY} . {target}" for port, target in pairs)
    run(ns_argv(LAN_NAMESPACE, ["nft", "add", "element", "ip", _NFT_VIP_TABLE, "vip", f"{{ {elements} }}"]))


def unexpose_vip(vip: str) -> None:
    """Remove the DNAT of ``<vip>:443`` and ``<vip>:6443``; a no-op if they are not exposed."""
    addr = _check_node_address(vip)
    keys = [f"{addr} . {port}" for port in exposed_vips().get(addr, {})]
    if keys:
        element = f"{{ {', '.join(keys)} }}"
        run(ns_argv(LAN_NAMESPACE, ["nft", "delete", "element", "ip", _NFT_VIP_TABLE, "vip", element]))


def exposed_vips() -> dict[str, dict[int, int]]:
    """The current VIP exposures: address -> {443: console target port, 6443: kube target port} on 10.251.0.1."""
    if not lan_exists():
        return {}
    proc = run(ns_argv(LAN_NAMESPACE, ["nft", "-j", "list", "map", "ip", _NFT_VIP_TABLE, "vip"]), check=False)
    result: dict[str, dict[int, int]] = {}
    for item in json.loads(proc.stdout).get("nftables", []) if proc.returncode == 0 else []:
        for key, value in item.get("map", {}).get("elem", []):
            address, port = key["concat"]
            result.setdefault(str(address), {})[int(port)] = int(value["concat"][1])
    return result


def counted_packets(namespace: str, table: str) -> int:
    """The packets counted by every ``counter`` of the ``inet`` table ``table`` in ``namespace`` (fault rules)."""
    proc = run(ns_argv(namespace, ["nft", "-j", "list", "table", "inet", table]))
    total = 0
    for item in json.loads(proc.stdout).get("nftables", []):
        for expr in item.get("rule", {}).get("expr", []):
            if "counter" in expr:
                total += int(expr["counter"]["packets"])
    return total


def run_in_lan(argv: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen[bytes]:
    """Start ``argv`` inside the ``pplab`` namespace (creating the LAN if needed).

    ``popen_kwargs`` go to :class:`subprocess.Popen` (e.g. ``stdout``,
    ``start_new_session``); the returned process's pid is the command's own.
    """
    ensure_lan()
    proc: subprocess.Popen[bytes] = subprocess.Popen(ns_argv(LAN_NAMESPACE, argv), **popen_kwargs)
    return proc


class LanDhcp:
    """A DHCP server on the lab LAN (busybox ``udhcpd`` on ``br0``): fixed leases by MAC and a dynamic pool.

    ``with LanDhcp({"52:54:00:5e:00:61": "10.251.0.61"}) as dhcp:`` serves those leases, with the LAN's gateway as
    router and DNS server, until the block ends. Only guests whose seed asks for DHCP send requests, so guests with
    static addresses on the same LAN are unaffected. By default the dynamic pool is two addresses (.250-.251) never
    meant to be used: a guest that gets one of those was not in ``leases``. ``pool=(first, last)`` gives a real
    pool for guests whose MAC is not known up front (the vCenter lab: vcsim picks the MACs): udhcpd picks an
    address from a hash of the MAC, and the same MAC gets the same address again while the server runs.
    :attr:`log_path` is udhcpd's output (``sending ACK to <address>`` for every lease granted). Files go to
    ``workdir`` if given (kept after :meth:`stop`), else to a temporary directory removed on exit.
    """

    DEFAULT_POOL = ("10.251.0.250", "10.251.0.251")

    def __init__(
        self, leases: dict[str, str], *, pool: tuple[str, str] | None = None, workdir: Path | None = None
    ) -> None:
        """Describe the server; nothing runs until :meth:`start` / ``__enter__``."""
        for address in leases.values():
            _check_node_address(address)
        first, last = (_check_node_address(a) for a in (pool or self.DEFAULT_POOL))
        if ipaddress.IPv4Address(first) > ipaddress.IPv4Address(last):
            raise LabError(f"empty DHCP pool {first}-{last}")
        self.leases = {mac.lower(): address for mac, address in leases.items()}
        self.pool = (first, last)
        self._given_workdir = workdir
        self._workdir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path | None:
        """udhcpd's log (stdout and stderr), once started."""
        return self._workdir / "udhcpd.log" if self._workdir else None

    @property
    def pid(self) -> int | None:
        """udhcpd's pid (also its process group: it runs in a session of its own), while it runs."""
        return self._proc.pid if self.is_running() and self._proc is not None else None

    def start(self) -> LanDhcp:
        """Start udhcpd in the LAN namespace (creating the LAN if needed)."""
        _require_root()
        busybox = require_tool("busybox", "busybox-static")
        ensure_lan()
        self.stop()
        if self._given_workdir is not None:
            self._workdir = self._given_workdir
            self._workdir.mkdir(parents=True, exist_ok=True)
        else:
            self._workdir = Path(tempfile.mkdtemp(prefix="pplab-dhcp-"))
        conf = self._workdir / "udhcpd.conf"
        lines = [
            f"interface {BRIDGE}",
            f"start {self.pool[0]}",
            f"end {self.pool[1]}",
            f"lease_file {self._workdir / 'udhcpd.leases'}",
            f"pidfile {self._workdir / 'udhcpd.pid'}",
            "opt subnet 255.255.255.0",
            f"opt router {GATEWAY}",
            f"opt dns {GATEWAY}",
            "opt lease 3600",
            *(f"static_lease {mac} {address}" for mac, address in self.leases.items()),
        ]
        conf.write_text("\n".join(lines) + "\n")
        (self._workdir / "udhcpd.leases").write_bytes(b"")
        with (self._workdir / "udhcpd.log").open("wb") as log:
            self._proc = run_in_lan(
                [busybox, "udhcpd", "-f", str(conf)], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True,
            )  # fmt: skip
        return self

    def is_running(self) -> bool:
        """True while udhcpd runs."""
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        """Stop udhcpd; a no-op if not running."""
        kill_group(self._proc)
        self._proc = None

    def __enter__(self) -> LanDhcp:
        return self.start()

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.stop()
        if self._workdir is not None and self._given_workdir is None:
            shutil.rmtree(self._workdir, ignore_errors=True)


class SshdNode:
    """A "node" with its own address running a private OpenSSH sshd, for readiness tests.

    ``with SshdNode(3, host_key=..., authorized_keys=...) as node:`` creates the
    namespace ``ppssh-3`` and its veth (10.252.3.1 host side, ``node.address`` =
    10.252.3.2 inside); leaving the block destroys everything, also when the test
    failed. sshd is not started until :meth:`start`.

    ``host_key`` is an OpenSSH private key file (copied, mode 0600, since sshd
    refuses readable host keys); ``authorized_keys`` is a file path or the file's
    text. Any existing host account can log in with those keys; use
    :attr:`login_user` (root) since the node accounts do not exist on the host.
    """

    login_user = "root"

    def __init__(self, index: int, host_key: Path, authorized_keys: Path | str, *, port: int = 22) -> None:
        """Describe node ``index`` (1..254); nothing is created until :meth:`create` / ``__enter__``."""
        if not 1 <= index <= 254:
            raise LabError(f"sshd node index {index} not in 1..254")
        self.index = index
        self.namespace = f"ppssh-{index}"
        self.host_veth = f"ppssh{index}"
        self.host_address = f"10.252.{index}.1"
        self.address = f"10.252.{index}.2"
        self.port = port
        self._host_key = Path(host_key)
        self._authorized_keys = authorized_keys
        self._workdir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._sshd = ""
        self._loss = 0
        self._blackout = False

    @property
    def log_path(self) -> Path | None:
        """sshd's log file (``-E``), once created."""
        return self._workdir / "sshd.log" if self._workdir else None

    def create(self) -> SshdNode:
        """Create the namespace, veth and sshd config; removes leftovers of an earlier run first."""
        _require_root()
        sshd = require_tool("sshd", "openssh-server")
        self.destroy()
        self._workdir = Path(tempfile.mkdtemp(prefix=f"pplab-{self.namespace}-"))
        key = self._workdir / "ssh_host_ed25519_key"
        shutil.copyfile(self._host_key, key)
        key.chmod(0o600)
        if isinstance(self._authorized_keys, Path):
            auth = self._authorized_keys.resolve()
        else:
            auth = self._workdir / "authorized_keys"
            auth.write_text(self._authorized_keys)
        (self._workdir / "sshd_config").write_text(
            f"ListenAddress {self.address}:{self.port}\n"
            f"HostKey {key}\n"
            f"PidFile {self._workdir / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {auth}\n"
            "UsePAM no\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\nPubkeyAuthentication yes\nLogLevel VERBOSE\n"
        )
        self._sshd = sshd
        run(["ip", "netns", "add", self.namespace])
        run(["ip", "link", "add", self.host_veth, "type", "veth", "peer", "name", "eth0", "netns", self.namespace])
        run(["ip", "addr", "add", f"{self.host_address}/30", "dev", self.host_veth])
        run(["ip", "link", "set", self.host_veth, "up"])
        n = ["ip", "-n", self.namespace]
        run([*n, "link", "set", "lo", "up"])
        run([*n, "addr", "add", f"{self.address}/30", "dev", "eth0"])
        run([*n, "link", "set", "eth0", "up"])
        run(
            ns_argv(self.namespace, ["nft", "-f", "-"]),
            input_text=(
                "table inet ppfault {\n"
                "  chain input { type filter hook input priority 0; policy accept; }\n"
                "  chain output { type filter hook output priority 0; policy accept; }\n"
                "}\n"
            ),
        )
        # Privilege separation directory of OpenSSH; normally made by systemd.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        return self

    def start(self, delay_s: float = 0) -> None:
        """Start sshd, after ``delay_s`` seconds (the port refuses connections until then); returns at once."""
        if self._workdir is None:
            raise LabError("SshdNode.start() before create()")
        self.stop()
        argv = [self._sshd, "-D", "-f", str(self._workdir / "sshd_config"), "-E", str(self._workdir / "sshd.log")]
        if delay_s > 0:
            argv = ["sh", "-c", 'sleep "$0" && exec "$@"', str(delay_s), *argv]
        self._proc = subprocess.Popen(ns_argv(self.namespace, argv), stdin=subprocess.DEVNULL, start_new_session=True)

    def is_running(self) -> bool:
        """True while sshd (or its delayed start) is running."""
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        """Stop sshd (new connections are refused); a no-op if not running."""
        kill_group(self._proc)
        self._proc = None

    def _apply_faults(self) -> None:
        rules = [f"flush chain inet ppfault {c}" for c in ("input", "output")]
        if self._blackout or self._loss >= 100:
            # nft rejects "numgen random mod 100 < 100" (value out of range 0-99).
            match = ""
        elif self._loss > 0:
            match = f"numgen random mod 100 < {self._loss} "
        else:
            match = None
        if match is not None:
            rules.append(f'add rule inet ppfault input iifname "eth0" {match}counter drop')
            rules.append(f'add rule inet ppfault output oifname "eth0" {match}counter drop')
        run(ns_argv(self.namespace, ["nft", "-f", "-"]), input_text="\n".join(rules) + "\n")

    def set_loss(self, percent: int) -> None:
        """Drop ``percent`` % of the node's packets in each direction (0 = none)."""
        if not 0 <= percent <= 100:
            raise LabError(f"loss {percent} not in 0..100")
        self._loss = percent
        self._apply_faults()

    def blackout(self, on: bool) -> None:
        """Drop every packet to and from the node while ``on`` (connections time out, nothing is refused)."""
        self._blackout = on
        self._apply_faults()

    def dropped_packets(self) -> int:
        """Packets dropped by the current fault rules (counters reset when the faults change)."""
        return counted_packets(self.namespace, "ppfault")

    def destroy(self) -> None:
        """Stop sshd and remove the namespace, veth and files; safe to call more than once."""
        self.stop()
        if link_exists(self.host_veth):
            run(["ip", "link", "del", self.host_veth], check=False)
        if namespace_exists(self.namespace):
            run(["ip", "netns", "del", self.namespace], check=False)
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        self._loss, self._blackout = 0, False

    def __enter__(self) -> SshdNode:
        """Create the node."""
        return self.create()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Destroy the node, whatever happened in the block."""
        self.destroy()
