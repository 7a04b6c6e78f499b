"""How simulator processes find and call each other (the simulator's own side channel).

A follower learns the leader's IP from the link token. It maps that IP to a simulator URL with the
peers file (JSON ``{"nodes": [{"name", "nodeIp", "url", "certSha256"}]}``, re-read at every call so
it may be written after the processes started); an IP missing from the file falls back to
``https://<ip>:5080`` (the lab's DNAT). Calls go to ``/__sim__/peer/...`` over HTTPS, pinned to
``certSha256`` when the file gives it.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

CALL_TIMEOUT_S = 5.0


class PeerUnreachable(Exception):
    """The peer simulator could not be reached or answered garbage."""


@dataclass(frozen=True)
class PeerAddress:
    """Where a node's simulator answers."""

    url: str
    cert_sha256: str | None


def read_peers(peers_file: Path | None) -> list[dict[str, Any]]:
    """Return the entries of the peers file (empty when absent or unreadable)."""
    if peers_file is None:
        return []
    try:
        data = json.loads(peers_file.read_text())
    except (OSError, ValueError):
        return []
    nodes = data.get("nodes", []) if isinstance(data, dict) else []
    return [node for node in nodes if isinstance(node, dict)]


def lookup(peers_file: Path | None, node_ip: str) -> PeerAddress:
    """Return the simulator address of the node whose reported IP is ``node_ip``."""
    for node in read_peers(peers_file):
        if node.get("nodeIp") == node_ip and isinstance(node.get("url"), str):
            sha = node.get("certSha256")
            return PeerAddress(node["url"], sha if isinstance(sha, str) else None)
    host = f"[{node_ip}]" if ":" in node_ip else node_ip
    return PeerAddress(f"https://{host}:5080", None)


def call(address: PeerAddress, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """Send one JSON request to a peer simulator; return ``(status, decoded JSON or None)``."""
    parts = urlsplit(address.url)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # pinned by fingerprint below when known
    connection = http.client.HTTPSConnection(
        parts.hostname or "", parts.port or 443, timeout=CALL_TIMEOUT_S, context=context
    )
    try:
        connection.connect()
        if address.cert_sha256:
            sock = connection.sock
            assert isinstance(sock, ssl.SSLSocket)
            der = sock.getpeercert(binary_form=True) or b""
            if hashlib.sha256(der).hexdigest() != address.cert_sha256.lower():
                raise PeerUnreachable(f"certificate of {address.url} does not match the peers file")
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        connection.request(method, path, body=payload, headers=headers)
        response = connection.getresponse()
        raw = response.read()
        try:
            decoded = json.loads(raw) if raw else None
        except ValueError:
            decoded = None
        return response.status, decoded
    except (OSError, http.client.HTTPException) as exc:
        raise PeerUnreachable(f"{address.url}: {exc}") from exc
    finally:
        connection.close()
