"""The media server: HTTP behaviour over real sockets on 127.0.0.1, one open file however many clients, the fetch
log, TLS pinned by fingerprint, and a server process that outlives the run that started it."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from palette_provision.errors import ConfigurationError, TLSVerificationError
from palette_provision.media_server import (
    HEALTH_PATH,
    MediaCatalog,
    MediaServer,
    ReportBook,
    ensure_media_server,
    find_media_server,
    generate_self_signed,
    parse_addresses,
    parse_bind,
    read_stats,
    stop_media_server,
)
from palette_provision.media_server._http import UNSATISFIABLE, parse_range
from palette_provision.tls import pinned_context

SIZE = 3 * 1024 * 1024 + 17  # not a multiple of anything


@pytest.fixture
def iso(tmp_path: Path) -> Path:
    path = tmp_path / "palette-edge.iso"
    path.write_bytes(os.urandom(SIZE))
    return path


@pytest.fixture
def seed(tmp_path: Path) -> Path:
    path = tmp_path / "node-1-seed.iso"
    path.write_bytes(b"#cloud-config private host key " + os.urandom(2000))
    path.chmod(0o600)
    return path


@pytest.fixture
def server() -> Iterator[MediaServer]:
    with MediaServer("127.0.0.1:0") as srv:
        yield srv


def client(**kw: Any) -> httpx.Client:
    return httpx.Client(trust_env=False, timeout=10, **kw)


def raw(port: int, data: bytes, *, host: str = "127.0.0.1") -> bytes:
    """Send exact bytes (no client-side path normalisation) and read until the server closes or 2 s pass."""
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(data)
        sock.settimeout(2)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
    return b"".join(chunks)


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


# -- HTTP behaviour -----------------------------------------------------------------------------------------------


def test_head_and_full_get(server: MediaServer, iso: Path) -> None:
    entry = server.publish_iso(iso)
    url = server.url_for(entry)
    assert url == f"http://127.0.0.1:{server.port}/iso/palette-edge.iso"
    with client() as c:
        head = c.head(url)
        assert head.status_code == 200
        assert head.headers["content-length"] == str(SIZE) and head.content == b""
        assert head.headers["accept-ranges"] == "bytes"
        assert head.headers["etag"] and head.headers["last-modified"]
        got = c.get(url)
    assert got.status_code == 200 and got.content == iso.read_bytes()
    assert got.headers["content-type"] == "application/octet-stream"


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [
        ("bytes=0-99", 0, 99),
        ("bytes=1000-1999", 1000, 1999),
        (f"bytes={SIZE - 10}-", SIZE - 10, SIZE - 1),
        ("bytes=-4096", SIZE - 4096, SIZE - 1),
        (f"bytes=100-{SIZE * 2}", 100, SIZE - 1),  # a last position past the end is cut to the end
        (f"bytes=-{SIZE * 2}", 0, SIZE - 1),  # a suffix longer than the file is the whole file
    ],
)
def test_each_range_form(server: MediaServer, iso: Path, header: str, first: int, last: int) -> None:
    url = server.url_for(server.publish_iso(iso))
    data = iso.read_bytes()
    with client() as c:
        got = c.get(url, headers={"Range": header})
        head = c.head(url, headers={"Range": header})
    assert got.status_code == 206
    assert got.headers["content-range"] == f"bytes {first}-{last}/{SIZE}"
    assert got.headers["content-length"] == str(last - first + 1)
    assert got.content == data[first : last + 1]
    assert head.status_code == 206 and head.headers["content-length"] == str(last - first + 1)


@pytest.mark.parametrize("header", [f"bytes={SIZE}-", f"bytes={SIZE + 5}-{SIZE + 10}", "bytes=-0"])
def test_unsatisfiable_range_is_416(server: MediaServer, iso: Path, header: str) -> None:
    url = server.url_for(server.publish_iso(iso))
    with client() as c:
        got = c.get(url, headers={"Range": header})
    assert got.status_code == 416
    assert got.headers["content-range"] == f"bytes */{SIZE}"


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "items=0-1", "bytes=5-1", "bytes=abc", "bytes=1-2-3"])
def test_multi_and_invalid_ranges_get_the_whole_file(server: MediaServer, iso: Path, header: str) -> None:
    url = server.url_for(server.publish_iso(iso))
    with client() as c:
        got = c.get(url, headers={"Range": header})
    assert got.status_code == 200 and len(got.content) == SIZE


def test_if_range_of_another_version_gets_the_whole_file(server: MediaServer, iso: Path) -> None:
    url = server.url_for(server.publish_iso(iso))
    with client() as c:
        etag = c.head(url).headers["etag"]
        same = c.get(url, headers={"Range": "bytes=0-9", "If-Range": etag})
        other = c.get(url, headers={"Range": "bytes=0-9", "If-Range": '"another"'})
    assert same.status_code == 206 and other.status_code == 200


def test_parse_range_edges() -> None:
    assert parse_range(None, 10) is None
    assert parse_range("bytes=0-0", 10) == (0, 0)
    assert parse_range("BYTES = 2-3", 10) == (2, 3)
    assert parse_range("bytes=0-", 0) is UNSATISFIABLE
    assert parse_range("bytes=-5", 0) is UNSATISFIABLE
    assert parse_range("bytes=" + "9" * 30 + "-", 10) is None  # no unbounded integers


def test_unknown_paths_and_guessed_tokens_are_404(server: MediaServer, iso: Path, seed: Path) -> None:
    server.publish_iso(iso)
    entry = server.publish_seed("node-1", seed)
    assert entry.token and len(entry.token) >= 32
    guessed = "A" * len(entry.token)
    with client(base_url=server.base_url) as c:
        assert c.get(entry.url_path).status_code == 200
        for path in [
            "/",
            "/iso/",
            "/seed/",
            f"/seed/{entry.token}/",
            f"/seed/{entry.token}/other-name.iso",
            f"/seed/{guessed}/{entry.file_name}",
            f"/seed/{entry.token[:-1]}/{entry.file_name}",
            f"/iso/{seed.name}",
            f"/{iso.name}",
            f"/iso/{iso.name}.bak",
        ]:
            assert c.get(path).status_code == 404, path


@pytest.mark.parametrize(
    "target",
    [
        b"/seed/../iso/palette-edge.iso",
        b"/iso/../iso/palette-edge.iso",
        b"/iso/./palette-edge.iso",
        b"//iso/palette-edge.iso",
        b"/iso/palette-edge.iso/",
        b"/iso/%2e%2e/iso/palette-edge.iso",
        b"/iso/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
        b"/iso/palette%2Dedge.iso",
        b"/seed/%2e%2e/%2e%2e/etc/passwd",
        b"/../../../../etc/passwd",
        b"/iso/..%2f..%2fetc%2fpasswd",
        b"/iso/palette-edge.iso%00",
        b"/seed/{token}/../../iso/palette-edge.iso",
    ],
)
def test_path_traversal_is_404(server: MediaServer, iso: Path, seed: Path, target: bytes) -> None:
    server.publish_iso(iso)
    entry = server.publish_seed("node-1", seed)
    target = target.replace(b"{token}", str(entry.token).encode())
    answer = raw(server.port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(answer) == 404
    assert b"root:" not in answer and b"private host key" not in answer


def test_only_get_and_head(server: MediaServer, iso: Path) -> None:
    url = server.url_for(server.publish_iso(iso))
    with client() as c:
        for method in ("POST", "PUT", "DELETE", "OPTIONS", "PATCH"):
            answer = c.request(method, url)
            assert answer.status_code == 405, method
            assert answer.headers["allow"] == "GET, HEAD"
    trace = raw(server.port, b"TRACE / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(trace) == 405


def test_malformed_requests(server: MediaServer, iso: Path) -> None:
    server.publish_iso(iso)
    assert status_of(raw(server.port, b"GET /iso/palette-edge.iso\r\n\r\n")) == 400
    assert status_of(raw(server.port, b"GET / HTTP/2.0\r\n\r\n")) == 505
    assert status_of(raw(server.port, b"GET / HTTP/1.1\r\nBad Header\r\n\r\n")) == 400
    assert status_of(raw(server.port, b"GET / HTTP/1.1\r\nX: " + b"a" * 70000 + b"\r\n\r\n")) == 431


def test_keep_alive_and_http10(server: MediaServer, iso: Path) -> None:
    entry = server.publish_iso(iso)
    request = f"GET {entry.url_path} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\n\r\n".encode()
    answer = raw(server.port, request * 3)  # pipelined on one connection
    assert answer.count(b"HTTP/1.1 206") == 3
    old = raw(server.port, f"HEAD {entry.url_path} HTTP/1.0\r\n\r\n".encode())
    assert b"Connection: close" in old


def test_health_path(server: MediaServer) -> None:
    with client() as c:
        answer = c.head(server.base_url + HEALTH_PATH)
    assert answer.status_code == 200 and answer.headers["x-media-server"] == server.instance


def test_bind_failure_names_the_address() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigurationError, match=f"127.0.0.1:{port}.*in use"):
            MediaServer(f"127.0.0.1:{port}").start()
    with pytest.raises(ConfigurationError, match="HOST:PORT"):
        parse_bind("10.0.0.1")
    with pytest.raises(ConfigurationError, match="advertise"):
        MediaServer("0.0.0.0:0")
    assert parse_bind("[fd00::1]:8080") == ("fd00::1", 8080)


def test_connection_limit_answers_503(iso: Path) -> None:
    with MediaServer("127.0.0.1:0", max_connections=1) as srv:
        srv.publish_iso(iso)
        with socket.create_connection(("127.0.0.1", srv.port)) as held:
            time.sleep(0.2)
            assert status_of(raw(srv.port, b"GET / HTTP/1.1\r\n\r\n")) == 503
            held.sendall(b"GET /iso/palette-edge.iso HTTP/1.1\r\nRange: bytes=0-0\r\n\r\n")
            assert held.recv(100).startswith(b"HTTP/1.1 206")


# -- one open file, the fetch log, publishing -----------------------------------------------------------------------


def barrier(c: httpx.Client, server: MediaServer) -> None:
    """Returns once the server has logged and counted every earlier request of ``c``'s connection: it handles a
    connection's requests in turn, and logs each after sending it (the client may have it all before that)."""
    assert c.head(server.base_url + HEALTH_PATH).status_code == 200


def fds_on(path: Path) -> int:
    count = 0
    for fd in Path("/proc/self/fd").iterdir():
        with suppress(OSError):  # closed since listed
            count += os.readlink(fd) == str(path)
    return count


def test_one_open_file_however_many_clients(tmp_path: Path) -> None:
    big = tmp_path / "big.iso"
    with big.open("wb") as handle:
        handle.truncate(256 * 1024 * 1024)  # sparse: every client's transfer stays in progress
    with MediaServer("127.0.0.1:0") as srv:
        entry = srv.publish_iso(big)
        request = f"GET {entry.url_path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        socks = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(20)]
        try:
            for s in socks:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
                s.sendall(request)
            for s in socks:
                assert s.recv(65536).startswith(b"HTTP/1.1 200")  # each response has started
            assert srv.stats()[entry.key].requests == 20
            assert fds_on(big) == 1
            assert srv.open_files() == 1
        finally:
            for s in socks:
                s.close()
        # Unpublished: the next request is a 404, and the descriptor closes once no transfer uses it.
        assert srv.unpublish(entry.key)
        with client() as c:
            assert c.get(srv.base_url + entry.url_path).status_code == 404
        deadline = time.time() + 10
        while fds_on(big) and time.time() < deadline:
            time.sleep(0.05)
        assert fds_on(big) == 0


def test_fetch_log_and_summary_count_bytes(server: MediaServer, iso: Path, seed: Path) -> None:
    iso_entry = server.publish_iso(iso)
    seed_entry = server.publish_seed("node-1", seed)
    with capture_logs() as events, client() as c:
        c.get(server.url_for(iso_entry), headers={"Range": "bytes=0-999"})
        c.get(server.url_for(iso_entry), headers={"Range": "bytes=-24"})
        c.head(server.url_for(iso_entry))
        c.get(server.url_for(seed_entry))
        barrier(c, server)
    stats = server.stats()
    assert stats[iso_entry.key].requests == 3
    assert stats[iso_entry.key].bytes == 1024
    assert stats[iso_entry.key].clients["127.0.0.1"].bytes == 1024
    assert stats[iso_entry.key].clients["127.0.0.1"].highest_offset == SIZE
    assert stats[seed_entry.key].bytes == seed.stat().st_size
    fetches = [e for e in events if e["event"] == "media_fetch"]
    assert [(e["method"], e["status"], e["range"], e["bytes"]) for e in fetches] == [
        ("GET", 206, "0-999", 1000),
        ("GET", 206, f"{SIZE - 24}-{SIZE - 1}", 24),
        ("HEAD", 200, None, 0),
        ("GET", 200, None, seed.stat().st_size),
    ]
    assert fetches[0]["client"] == "127.0.0.1" and fetches[0]["entry"] == "iso:palette-edge.iso"
    assert fetches[3]["entry"] == "seed:node-1" and fetches[3]["node"] == "node-1"
    assert all(e["seconds"] >= 0 for e in fetches)


@contextmanager
def stdlib_logging_only() -> Iterator[None]:
    """Events go to stdlib logging within the block (structlog unconfigured), as they were before it after."""
    import structlog

    was, saved = structlog.is_configured(), structlog.get_config()
    structlog.reset_defaults()
    try:
        yield
    finally:
        if was:
            structlog.configure(**saved)


def test_the_token_never_appears_whole_in_logs(
    server: MediaServer, seed: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with capture_logs() as events, client(base_url=server.base_url) as c:
        entry = server.publish_seed("node-1", seed)
        token = str(entry.token)
        c.get(entry.url_path)
        c.get(f"/seed/{token}x/{entry.file_name}")  # the real token as a prefix of a wrong one
        c.get(f"/seed/{token}/wrong.iso")
        c.post(entry.url_path)
        barrier(c, server)
    assert token not in repr(entry) and token not in entry.shown_path
    text = json.dumps(events, default=str)
    assert events and token not in text
    assert token[:6] in text  # a prefix is shown, to tell attempts apart
    # The stdlib path (no structlog): rendered text and the structured record attribute.
    with stdlib_logging_only(), caplog.at_level(logging.DEBUG), client(base_url=server.base_url) as c:
        c.get(f"/seed/{token}/wrong.iso")
        c.get(entry.url_path)
        barrier(c, server)
    ours = [r for r in caplog.records if r.name.startswith("palette_provision")]  # httpx logs its own URLs
    assert len(ours) == 2 and all(token not in r.getMessage() for r in ours)
    assert all(token not in json.dumps(r.__dict__, default=str) for r in ours)


def test_seed_token_kept_for_the_same_file_and_new_for_another(server: MediaServer, seed: Path, tmp_path: Path) -> None:
    first = server.publish_seed("node-1", seed)
    again = server.publish_seed("node-1", seed)
    other_file = tmp_path / "other-seed.iso"
    other_file.write_bytes(b"x")
    other = server.publish_seed("node-1", other_file)
    assert again.token == first.token and other.token != first.token
    assert server.publish_seed("node-2", seed).token != first.token
    with client() as c:
        assert c.get(server.url_for(first)).status_code == 404  # replaced
        assert c.get(server.url_for("seed:node-1")).content == b"x"
    with pytest.raises(ConfigurationError, match="nothing is published"):
        server.url_for("seed:node-9")
    with pytest.raises(ConfigurationError, match="not allowed"):
        server.publish_seed("../node", seed)
    with pytest.raises(ConfigurationError, match="not a regular file"):
        server.publish_iso(tmp_path)


def test_the_manifest_is_private_and_picked_up_without_restart(tmp_path: Path, iso: Path, seed: Path) -> None:
    state = tmp_path / "media"
    catalog = MediaCatalog(state)
    with MediaServer("127.0.0.1:0", catalog=MediaCatalog(state), stats_file=state / "stats.json") as srv, client() as c:
        assert c.get(srv.base_url + "/iso/palette-edge.iso").status_code == 404
        entry = catalog.publish_seed("node-1", seed)  # another writer (apply) publishes
        assert c.get(srv.url_for(entry)).status_code == 200
        catalog.unpublish(entry.key)
        assert c.get(srv.url_for(entry)).status_code == 404
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "media.json").stat().st_mode) == 0o600
    assert stat.S_IMODE((state / "stats.json").stat().st_mode) == 0o600
    assert read_stats(state)["seed:node-1"].bytes == seed.stat().st_size


# -- HTTPS --------------------------------------------------------------------------------------------------------


def test_https_with_a_generated_certificate_pinned_by_fingerprint(tmp_path: Path, iso: Path) -> None:
    tls = generate_self_signed(tmp_path / "cert.pem", tmp_path / "key.pem", ["127.0.0.1"])
    assert stat.S_IMODE((tmp_path / "key.pem").stat().st_mode) == 0o600
    assert generate_self_signed(tmp_path / "cert.pem", tmp_path / "key.pem", ["x"]).fingerprint == tls.fingerprint
    with MediaServer("127.0.0.1:0", tls=tls) as srv:
        url = srv.url_for(srv.publish_iso(iso))
        assert url.startswith("https://") and srv.fingerprint == tls.fingerprint
        data = iso.read_bytes()
        with client(verify=pinned_context(tls.fingerprint)) as c:
            part = c.get(url, headers={"Range": "bytes=100-200099"})
            whole = c.get(url)
            barrier(c, srv)
        assert part.status_code == 206 and part.content == data[100:200100]
        assert whole.content == data
        assert srv.stats()[f"iso:{iso.name}"].bytes == 200000 + SIZE
        with pytest.raises(TLSVerificationError), client(verify=pinned_context("ab" * 32)) as c:
            c.get(url)


# -- the server process ---------------------------------------------------------------------------------------------

STARTER = r"""
import sys, time
from pathlib import Path
from palette_provision.media_server import ensure_media_server
handle = ensure_media_server(Path(sys.argv[1]), "127.0.0.1:0")
entry = handle.publish_seed("node-1", Path(sys.argv[2]))
print(handle.url_for(entry), handle.pid, flush=True)
time.sleep(3600)
"""


def servers_for(state: Path) -> list[int]:
    """Pids of `media serve` processes for ``state``, by their command lines."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
                status = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if b"serve" in argv and str(state).encode() in argv and status != "Z":
                found.append(int(proc.name))
    return found


def test_the_server_process_outlives_a_killed_run(tmp_path: Path, seed: Path) -> None:
    state = tmp_path / "media"
    run = subprocess.Popen(
        [sys.executable, "-c", STARTER, str(state), str(seed)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert run.stdout is not None
        url, pid_text = run.stdout.readline().split()
        pid = int(pid_text)
        assert pid != run.pid and os.getsid(pid) == pid  # its own session: no signal to the run's group reaches it
        os.killpg(run.pid, signal.SIGKILL)  # the whole run, as a closed terminal or `kill -9 -PGID` would
        run.wait(10)
        with client() as c:
            answer = c.get(url, headers={"Range": "bytes=0-9"})
        assert answer.status_code == 206 and answer.content == seed.read_bytes()[:10]
        # A new run finds it alive and starts no second one.
        found = find_media_server(state)
        assert found is not None and found.pid == pid
        handle = ensure_media_server(state, "127.0.0.1:0")
        assert handle.pid == pid and handle.url_for("seed:node-1") == url
        assert servers_for(state) == [pid]
        deadline = time.time() + 10  # the counters are written at most once a second

        def seed_bytes() -> int:
            stats = handle.stats().get("seed:node-1")
            return stats.bytes if stats else 0

        while seed_bytes() < 10 and time.time() < deadline:
            time.sleep(0.1)
        assert seed_bytes() == 10
        # Another bind for the same folder is refused while it runs.
        with pytest.raises(ConfigurationError, match="already serves"):
            ensure_media_server(state, "127.0.0.2:0")
        # Crashed: restarted at the same URL, the seed's token included.
        os.kill(pid, signal.SIGKILL)
        restarted = ensure_media_server(state, "127.0.0.1:0")
        assert restarted.pid != pid and restarted.url_for("seed:node-1") == url
        with client() as c:
            assert c.get(url).content == seed.read_bytes()
        log = (state / "server.log").read_text()
        assert "media_fetch" in log and str(handle.catalog.get("seed:node-1").token) not in log  # type: ignore[union-attr]
        # Stopped.
        assert stop_media_server(state)
        assert servers_for(state) == [] and find_media_server(state) is None
        with pytest.raises(httpx.ConnectError), client() as c:
            c.get(url)
        assert not stop_media_server(state)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait(10)
        assert run.stdout is not None
        run.stdout.close()
        stop_media_server(state)
        for pid in servers_for(state):
            os.kill(pid, signal.SIGKILL)


def test_ensure_reports_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigurationError, match=f"did not start: cannot bind .*127.0.0.1:{port}"):
            ensure_media_server(tmp_path / "media", f"127.0.0.1:{port}")


def test_media_serve_in_the_foreground_stops_on_sigterm(tmp_path: Path, iso: Path) -> None:
    state = tmp_path / "media"
    MediaCatalog(state).publish_iso(iso)
    proc = subprocess.Popen(
        [sys.executable, "-m", "palette_provision", "media", "serve", "--bind", "127.0.0.1:0", "--state-dir",
         str(state)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        with client() as c:
            assert c.head(ready["url"] + "/iso/palette-edge.iso").status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)  # reaps it and closes its pipes
    half = subprocess.run(
        [sys.executable, "-m", "palette_provision", "media", "serve", "--bind", "127.0.0.1:0", "--state-dir",
         str(state), "--tls-cert", str(tmp_path / "c.pem")],
        capture_output=True, text=True, timeout=60,
    )
    assert half.returncode == 3 and "--tls-key" in half.stderr


def test_stop_leaves_a_stranger_alone(tmp_path: Path) -> None:
    state = tmp_path / "media"
    MediaCatalog(state)
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (state / "server.json").write_text(json.dumps({
            "pid": stranger.pid, "instance": "x", "url": "http://127.0.0.1:9", "bind_host": "127.0.0.1", "port": 9,
            "advertise_host": "127.0.0.1", "scheme": "http", "cert_sha256": None,
        }))
        assert not stop_media_server(state)
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_stop_under_load_ends_every_thread(iso: Path) -> None:
    before = threading.active_count()
    srv = MediaServer("127.0.0.1:0").start()
    entry = srv.publish_iso(iso)
    socks = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(5)]
    for s in socks:
        s.sendall(f"GET {entry.url_path} HTTP/1.1\r\n\r\n".encode())
    time.sleep(0.2)
    srv.stop()
    for s in socks:
        s.close()
    assert threading.active_count() == before
    assert fds_on(iso) == 0


def test_a_file_that_shrinks_ends_the_connection_and_a_replaced_one_is_served_after_publishing(
    server: MediaServer, tmp_path: Path
) -> None:
    path = tmp_path / "changing.iso"
    path.write_bytes(b"a" * 1_000_000)
    entry = server.publish_iso(path)
    with client() as c:
        assert c.head(server.url_for(entry)).headers["content-length"] == "1000000"  # opened at this size
    os.truncate(path, 100)
    answer = raw(server.port, f"GET {entry.url_path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"Content-Length: 1000000" in head and body == b"a" * 100  # cut short, then closed: no hang
    replacement = tmp_path / "new.iso"
    replacement.write_bytes(b"b" * 10)
    os.replace(replacement, path)
    server.publish_iso(path)  # published again: the new file is opened
    with client() as c:
        assert c.get(server.url_for(entry)).content == b"b" * 10
    assert fds_on(path) == 1


# ------------------------------------------------------------------------------------------------ address reports

IP_OUTPUT = (
    b"2: eth0    inet 10.251.0.61/24 brd 10.251.0.255 scope global dynamic eth0\\       valid_lft 3599sec\n"
    b"2: eth0    inet6 fe80::5054:ff:fe5e:61/64 scope link \\       valid_lft forever\n"
)


def test_a_node_reports_its_addresses_with_its_own_token(server: MediaServer) -> None:
    url = server.report_url("node-1")
    assert url.startswith(server.base_url + "/report/") and server.report_url("node-1") == url, "one token, kept"
    assert server.reported("node-1") is None
    with capture_logs() as events, client() as c:
        answer = c.post(url, content=IP_OUTPUT)
        barrier(c, server)
    assert answer.status_code == 200
    report = server.reported("node-1")
    assert report is not None and report.client == "127.0.0.1"
    # The broadcast is not an address of the node; the link-local one is not a way to reach it.
    assert report.addresses == ("10.251.0.61/24", "fe80::5054:ff:fe5e:61/64") and report.best() == "10.251.0.61"
    token = url.rsplit("/", 1)[1]
    assert [e["node"] for e in events if e["event"] == "address_reported"] == ["node-1"]
    assert token not in repr(events)


def test_reports_that_are_not_a_nodes_are_refused(server: MediaServer) -> None:
    url = server.report_url("node-1")
    token = url.rsplit("/", 1)[1]
    with capture_logs() as events, client() as c:
        assert c.post(server.base_url + "/report/" + "x" * 32, content=b"10.0.0.9/24").status_code == 404
        assert c.post(url, content=b"hello \x1b[31m world").status_code == 400
        assert c.post(url, content="10.0.0.9/24 é".encode()).status_code == 400  # not ASCII
        assert c.get(url).status_code == 405
        assert c.post(url, content=b"1" * 5000).status_code == 413
        assert c.post(url, content=iter([b"10.0.0.9/24"])).status_code == 411  # chunked: no length
    assert server.reported("node-1") is None, "nothing was recorded"
    assert token not in repr(events) and "\x1b" not in repr(events)


def test_reports_reach_the_deployment_through_the_state_folder(tmp_path: Path) -> None:
    # The server process records; the deployment, another process, makes tokens and reads what arrived.
    book = ReportBook(tmp_path)
    with MediaServer("127.0.0.1:0", reports=ReportBook(tmp_path)) as srv, client() as c:
        url = srv.base_url + "/report/" + book.token_for("node-2")
        assert c.put(url, content=b"10.251.0.62").status_code == 200
    latest = book.latest("node-2")
    assert latest is not None and latest.best() == "10.251.0.62"
    assert stat.S_IMODE((tmp_path / "reports.json").stat().st_mode) == 0o600
    book.clear_report("node-2")
    assert book.latest("node-2") is None and book.token_for("node-2") == url.rsplit("/", 1)[1]


def test_parse_addresses_keeps_prefixed_words_and_refuses_nothing() -> None:
    assert parse_addresses(b"10.0.0.5/24 brd 10.0.0.255\n") == ("10.0.0.5/24",)
    assert parse_addresses(b"10.0.0.5 10.0.0.6") == ("10.0.0.5", "10.0.0.6")
    with pytest.raises(ValueError, match="no address"):
        parse_addresses(b"eth0 up")
