"""The media server: the appliance ISO and each node's seed, served to BMCs over HTTP or HTTPS.

BMCs (Redfish/IPMI virtual media, MAAS's BMC mode) mount an ISO from a URL and read it with range requests for the
whole install. This server gives them:

* **URLs that map to published entries, never to the filesystem**: ``/iso/<file name>`` for the ISO,
  ``/seed/<token>/<file name>`` for a node's seed, where the token is ``secrets.token_urlsafe(24)`` (a seed holds
  the node's private SSH host key). Anything else, ``..`` and ``%2e%2e`` included, is 404: request paths are
  compared byte for byte with published ones. No listing. Tokens are never logged (a 6-character prefix at most).
* **GET and HEAD** (405 otherwise), ``Range: bytes=a-b``, ``bytes=a-``, ``bytes=-n`` (206 with ``Content-Range``;
  416 when unsatisfiable; a multi-range request gets the whole file, 200), ``If-Range``, ``Accept-Ranges``,
  ``Content-Length``, ``ETag``, ``Last-Modified``; HTTP/1.1 keep-alive.
* **One open file per published file**, however many clients: bodies go by ``os.sendfile`` from one shared
  descriptor with offsets (zero-copy; memory flat in the number of clients and the file's size); under TLS, by
  ``os.preadv`` into a 256 KiB buffer per connection.
* **A fetch log**: one ``media_fetch`` event per request (client, entry key, method, status, range, bytes, seconds)
  through :func:`palette_provision.log.get_logger`, and counters per entry and client (:meth:`MediaServer.stats`;
  ``stats.json`` for a server process) that show install progress.
* **Address reports** from DHCP nodes: ``POST /report/<token>`` with the node's addresses as text, a token per
  node (:meth:`MediaServer.report_url`, :meth:`MediaServer.reported`; see :mod:`._reports`).
* **HTTPS** with a given certificate, or one from :func:`generate_self_signed` (its SHA-256 to pin).

Two ways to run it. In process, for tests and short jobs::

    from palette_provision.media_server import MediaServer

    with MediaServer("10.0.0.5:8080") as server:
        iso = server.publish_iso(Path("palette-edge.iso"))
        seed = server.publish_seed("node-1", Path("state/seeds/node-1.iso"))
        bmc.insert_media(server.url_for(iso)); bmc.insert_media(server.url_for(seed))
        ...
        server.unpublish(seed.key)

As a process of its own, which outlives the run that started it (how ``apply`` uses it; see docs/media-server.md
for why)::

    handle = ensure_media_server(state_dir / "media", "10.0.0.5:8080")   # finds it running, or starts it
    # (find_media_server(state_dir / "media") when a systemd unit runs it: None if it does not answer)
    entry = handle.publish_iso(iso_path)                  # written to the manifest; served from the next request
    url = handle.url_for(entry)
    handle.stats()[entry.key].clients                     # who fetched how much, a second old at most
    stop_media_server(state_dir / "media")                # when every node has installed

The same ``publish_*``/``unpublish``/``url_for``/``stats`` calls work on both (:class:`MediaPublisher`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from palette_provision.media_server._entries import Entry, MediaCatalog
from palette_provision.media_server._process import (
    ServerHandle,
    ensure_media_server,
    find_media_server,
    serve,
    stop_media_server,
)
from palette_provision.media_server._reports import AddressReport, ReportBook, parse_addresses
from palette_provision.media_server._server import HEALTH_PATH, MediaServer, parse_bind
from palette_provision.media_server._stats import ClientStats, EntryStats, read_stats
from palette_provision.media_server._tls import TlsFiles, generate_self_signed

__all__ = [
    "HEALTH_PATH",
    "AddressReport",
    "ClientStats",
    "Entry",
    "EntryStats",
    "MediaCatalog",
    "MediaPublisher",
    "MediaServer",
    "ReportBook",
    "ServerHandle",
    "TlsFiles",
    "ensure_media_server",
    "find_media_server",
    "generate_self_signed",
    "parse_addresses",
    "parse_bind",
    "read_stats",
    "serve",
    "stop_media_server",
]


class MediaPublisher(Protocol):
    """What :class:`MediaServer` (in process) and :class:`ServerHandle` (a server process) both offer."""

    def publish_iso(self, path: Path, *, file_name: str | None = None, sha256: str | None = None) -> Entry:
        """Publish a file at ``/iso/<file_name>``."""

    def publish_seed(self, node: str, path: Path, *, file_name: str | None = None) -> Entry:
        """Publish a node's seed at ``/seed/<token>/<file_name>``."""

    def unpublish(self, key: str) -> bool:
        """Stop serving an entry."""

    def url_for(self, entry: Entry | str) -> str:
        """An entry's full URL."""

    def stats(self) -> dict[str, EntryStats]:
        """Fetch counters per entry key."""
