"""Address reports: a DHCP node tells the media server its addresses, with a token of its own.

A node whose address comes from DHCP has no address in the plan. Its seed carries a boot stage that, once the
network is up, sends the node's addresses to ``/report/<token>`` (``POST`` or ``PUT``, the addresses as text: one
``a.b.c.d`` or ``a.b.c.d/nn`` per line or word, as ``ip -o addr`` prints them). The token is the node's own
(``secrets.token_urlsafe(24)``, registered as a secret for log redaction): it says only which node speaks, and lets
nothing be read. The report is a hint, never trust: the readiness ladder then pins the SSH host key the seed
carries, so an address someone else reported leads to a refused host key, not to a session with the wrong machine.

Tokens and the last report of each node live in ``reports.json`` (0600) in the media server's state folder, shared
by the server process (which records reports) and the deployment (which makes tokens and reads reports); an
in-process server keeps them in memory.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from palette_provision.secrets import Secret

__all__ = ["MAX_REPORT_BYTES", "REPORT_PREFIX", "AddressReport", "ReportBook", "parse_addresses"]

REPORT_PREFIX = "/report/"
MAX_REPORT_BYTES = 4096
MAX_ADDRESSES = 16
REPORTS_FILE = "reports.json"


@dataclass(frozen=True)
class AddressReport:
    """What a node said: its addresses (``a.b.c.d/nn`` when it gave a prefix), where from and when."""

    node: str
    addresses: tuple[str, ...]
    client: str
    at: float

    def best(self) -> str | None:
        """The address to reach the node at: its first global IPv4 address, else its first global one."""
        parsed = [ipaddress.ip_interface(a) for a in self.addresses]
        usable = [i for i in parsed if not (i.ip.is_loopback or i.ip.is_link_local or i.ip.is_unspecified)]
        for wanted in (4, 6):
            found = next((i for i in usable if i.version == wanted), None)
            if found is not None:
                return str(found.ip)
        return None


def parse_addresses(body: bytes) -> tuple[str, ...]:
    """The addresses in a report body; words that are not addresses are skipped (``ip`` adds interface names), and
    when any word has a prefix length (``a.b.c.d/nn``), so is every word without one (``brd``, ``peer``).

    Raises:
        ValueError: not text, or no address at all.
    """
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError("the report is not ASCII text") from None
    found: list[str] = []
    words = text.split()
    if any("/" in word for word in words):
        # ``ip addr`` output: the addresses carry their prefix; a bare one is a broadcast or a peer.
        words = [word for word in words if "/" in word]
    for word in words:
        try:
            interface = ipaddress.ip_interface(word)
        except ValueError:
            continue
        shown = str(interface) if "/" in word else str(interface.ip)
        if shown not in found:
            found.append(shown)
        if len(found) == MAX_ADDRESSES:
            break
    if not found:
        raise ValueError("the report holds no address")
    return tuple(found)


class ReportBook:
    """Per-node report tokens and the last report of each node; in ``state_dir`` (shared by processes) or memory."""

    def __init__(self, state_dir: Path | None = None) -> None:
        self.path = state_dir / REPORTS_FILE if state_dir is not None else None
        self._lock = threading.Lock()
        self._memory: dict[str, Any] = {"tokens": {}, "reports": {}}

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock:
            if self.path is None:
                yield
                return
            fd = os.open(self.path.with_name("reports.lock"), os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    def _read(self) -> dict[str, Any]:
        if self.path is None:
            return self._memory
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {"tokens": {}, "reports": {}}
        except ValueError:
            return {"tokens": {}, "reports": {}}  # a torn or foreign file: tokens are made again on demand
        if not isinstance(data, dict) or not isinstance(data.get("tokens"), dict):
            return {"tokens": {}, "reports": {}}
        data.setdefault("reports", {})
        for token in data["tokens"].values():
            Secret(str(token), source="address report token")  # registered for log redaction
        return data

    def _update(self, change: Callable[[dict[str, Any]], Any]) -> Any:
        from palette_provision.media_server._entries import write_private_json

        with self._locked():
            data = self._read()
            result = change(data)
            if self.path is not None:
                write_private_json(self.path, data)
            return result

    def token_for(self, node: str) -> str:
        """``node``'s token, made on first use and kept (a seed already rendered keeps working)."""

        def change(data: dict[str, Any]) -> str:
            token = data["tokens"].get(node)
            if not isinstance(token, str):
                token = secrets.token_urlsafe(24)
                data["tokens"][node] = token
            Secret(token, source=f"address report token of {node}")
            return token

        result: str = self._update(change)
        return result

    def node_for(self, token: str) -> str | None:
        """The node a token belongs to (compared in constant time), or None."""
        with self._locked():
            tokens = dict(self._read()["tokens"])
        for node, known in tokens.items():
            if isinstance(known, str) and secrets.compare_digest(known.encode(), token.encode()):
                return str(node)
        return None

    def record(self, node: str, addresses: tuple[str, ...], client: str) -> AddressReport:
        """Keep ``node``'s latest report."""
        report = AddressReport(node, addresses, client, time.time())

        def change(data: dict[str, Any]) -> None:
            data["reports"][node] = {"addresses": list(addresses), "client": client, "at": report.at}

        self._update(change)
        return report

    def latest(self, node: str) -> AddressReport | None:
        """``node``'s latest report, or None (a malformed record counts as none)."""
        with self._locked():
            raw = self._read()["reports"].get(node)
        if not isinstance(raw, dict):
            return None
        try:
            addresses = tuple(str(a) for a in raw["addresses"])
            for address in addresses:
                ipaddress.ip_interface(address)
            return AddressReport(node, addresses, str(raw["client"]), float(raw["at"]))
        except (KeyError, TypeError, ValueError):
            return None

    def clear_report(self, node: str) -> None:
        """Drop ``node``'s report, keeping its token (a new install: the old address may be stale)."""

        def change(data: dict[str, Any]) -> None:
            data["reports"].pop(node, None)

        self._update(change)

    def forget(self, node: str) -> None:
        """Drop ``node``'s token and report (a reinstall gets a new token)."""

        def change(data: dict[str, Any]) -> None:
            data["tokens"].pop(node, None)
            data["reports"].pop(node, None)

        self._update(change)
