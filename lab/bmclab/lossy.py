"""A lossy link to a BMC: a TCP relay inside the lab's LAN namespace, with nftables dropping a share of its packets.

``LossyLink(target_port, loss_percent)`` starts ``python -m bmclab.lossy`` in the ``pplab`` namespace, listening on
the LAN's gateway address (``10.251.0.1``) and relaying to the host's end of the lab uplink (``10.250.0.1``), where
the BMC (e.g. :class:`bmclab.redfish.RedfishLab` with ``listen_host="0.0.0.0"``) listens. A client on the host
connects to ``link.address``:``link.port``: its packets cross the uplink veth, where the nftables rules drop
``loss_percent`` % of the relay's packets in each direction (``numgen random``; the kernel here has no ``netem``).
TCP retransmits; what is measured is whether the client copes. :meth:`dropped_packets` proves the loss happened.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
from types import TracebackType

from pplab import net
from pplab._cmd import ns_argv, run

__all__ = ["LossyLink"]

_TABLE = "ppbmcloss"
_TCP_THIN_LINEAR_TIMEOUTS = 16
"""``linux/tcp.h``; the socket module does not name it."""


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy one direction until its end, then pass the end on (half-close: the other direction may still carry data).

    Never a reset towards the client: a socket shut for reading, or closed with data unread, answers with a reset,
    and the reset throws away the answer still being retransmitted to the client on the lossy leg. So what the
    client sends after the BMC has gone (its close_notify, say) is read and dropped, and the sockets are closed
    only once both directions have ended (:func:`_relay_one`).
    """
    sinking = True
    try:
        while chunk := source.recv(65536):
            if sinking:
                try:
                    sink.sendall(chunk)
                except OSError:
                    sinking = False  # the other end is gone: keep reading this side to its end
    except OSError:
        pass
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


def _relay_one(client: socket.socket, upstream: socket.socket) -> None:
    directions = ((client, upstream), (upstream, client))
    pumps = [threading.Thread(target=_pump, args=pair, daemon=True) for pair in directions]
    for t in pumps:
        t.start()
    for t in pumps:
        t.join()
    client.close()
    upstream.close()


def relay(listen_host: str, listen_port: int, target_host: str, target_port: int) -> None:
    """Accept connections and relay each to the target, both ways, until killed."""
    server = socket.create_server((listen_host, listen_port), reuse_port=False)
    while True:
        client, _ = server.accept()
        # The relay's end of the lossy leg retransmits the way our Redfish client's end does (linear timeouts for a
        # thin stream, see palette_provision_baremetal._redfish): the lab does not test a BMC's own TCP stack.
        client.setsockopt(socket.IPPROTO_TCP, _TCP_THIN_LINEAR_TIMEOUTS, 1)
        try:
            upstream = socket.create_connection((target_host, target_port), timeout=30)
            upstream.settimeout(None)
        except OSError:
            client.close()
            continue
        threading.Thread(target=_relay_one, args=(client, upstream), daemon=True).start()


class LossyLink:
    """A relay to ``target_port`` on the host, ``loss_percent`` % of its packets dropped; a context manager."""

    def __init__(self, target_port: int, loss_percent: int, *, port: int = 16623) -> None:
        if not 0 <= loss_percent <= 99:
            raise ValueError("loss_percent must be 0..99")
        self.address = net.GATEWAY
        self.port = port
        self.target_port = target_port
        self.loss_percent = loss_percent
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> LossyLink:
        """Start the relay in the LAN namespace and install the drop rules on its port."""
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.path.dirname(os.path.dirname(
            os.path.abspath(__file__))), os.environ.get("PYTHONPATH")]))}  # fmt: skip
        self._proc = net.run_in_lan(
            [sys.executable, "-m", "bmclab.lossy", self.address, str(self.port), net.HOST_ADDRESS,
             str(self.target_port)],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        match = f"numgen random mod 100 < {self.loss_percent} " if self.loss_percent else ""
        # The client's leg of the relay crosses the uplink veth on the relay's port: both directions of it lose
        # packets (the relay's own leg to the BMC is left clean, so the loss is the stated share, not compounded).
        rules = [
            f"add table inet {_TABLE}",
            f"flush table inet {_TABLE}",
            f"add chain inet {_TABLE} input {{ type filter hook input priority 0; }}",
            f"add chain inet {_TABLE} output {{ type filter hook output priority 0; }}",
            f'add rule inet {_TABLE} input iifname "{net.NS_VETH}" tcp dport {self.port} {match}counter drop',
            f'add rule inet {_TABLE} output oifname "{net.NS_VETH}" tcp sport {self.port} {match}counter drop',
        ]
        run(ns_argv(net.LAN_NAMESPACE, ["nft", "-f", "-"]), input_text="\n".join(rules) + "\n")
        self._wait_listening()
        return self

    def _wait_listening(self) -> None:
        import time

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            probe = run(ns_argv(net.LAN_NAMESPACE, ["ss", "-Hltn", f"sport = :{self.port}"]), check=False)
            if probe.stdout.strip():
                return
            time.sleep(0.1)
        raise RuntimeError(f"the relay on {self.address}:{self.port} did not start")

    def dropped_packets(self) -> int:
        """Packets the rules dropped so far."""
        return net.counted_packets(net.LAN_NAMESPACE, _TABLE)

    def stop(self) -> None:
        """Stop the relay and remove the rules (idempotent)."""
        run(ns_argv(net.LAN_NAMESPACE, ["nft", "delete", "table", "inet", _TABLE]), check=False)
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, 9)
            self._proc.wait()
            self._proc = None

    def __enter__(self) -> LossyLink:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


if __name__ == "__main__":
    relay(sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
