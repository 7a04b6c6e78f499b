"""Benchmark: N concurrent range-request clients fetching a 1 GiB ISO from the media server, against nginx and
``python -m http.server``, on loopback, in the same run.

Each client fetches the whole ISO over one keep-alive connection as consecutive ``Range: bytes=a-b`` requests of
``--range-kib`` (default 1 MiB, a BMC's read size is of that order), starting at its own offset (client i at
i/N of the file) and wrapping around, and checks the offset stamped at the start of every range it receives. The
body's other bytes are spliced from the socket to ``/dev/null`` through a pipe (``--client splice``, the default):
the pages move, nothing is copied into the client, so the two shared cores are spent on the servers, as they are
in a deployment, where the clients are BMCs on other machines. ``--client discard`` goes further: ``recv`` with
``MSG_TRUNC``, which on TCP drops the bytes in the kernel (tcp(7)), so a client costs one system call per read and
copies nothing. ``--client copy`` takes bodies with ``recv_into``.
``http.server`` does not implement ranges: it answers the first request 200 with the whole file (HTTP/1.0, so the
connection closes), which the client counts as the whole ISO fetched. Clients are threads spread over two client
processes, started at one agreed instant; aggregate throughput is all bytes over the time from that instant to the
last client's end.

Our server runs as ``palette-provision --log-level info media serve`` (the deployment shape; one ``media_fetch``
JSON line per request to a file, as nginx writes its access log), fresh for every N so its peak RSS (``VmHWM``) is
that N's. Its open descriptors are sampled during each run (all, and those on the ISO). A last run serves a sparse
4 GiB ISO at the largest N (each client fetching 256 MiB spread over it) to show peak RSS does not follow the size.

    nice -n 10 .venv/bin/python benchmarks/media_server.py [--n 1,10,50] [--iso-gib 1] [--range-kib 1024]

Set-up: installs ``nginx-light`` (else ``nginx``) with apt-get when no nginx is on the machine; the ISO lives in
``/dev/shm`` so every server reads the same page cache.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from palette_provision.media_server import MediaCatalog
from palette_provision.testing.metrics import peak_rss_kib

BLOCK = 4096  # every 4 KiB block starts with its own offset (8 bytes, big-endian)

# A client process: THREADS clients over keep-alive connections; prints its bytes, errors and end time.
CLIENT = r"""
import fcntl, json, os, socket, struct, sys, threading, time
spec = json.loads(sys.argv[1])
null = os.open(os.devnull, os.O_WRONLY)
host, port, path, size, rng = spec["host"], spec["port"], spec["path"], spec["size"], spec["range"]
results = []
def connect():
    s = socket.create_connection((host, port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    return s
def client(start, todo):
    sock, buf = connect(), bytearray(1 << 20)
    view, got, bad, pos, pending = memoryview(buf), 0, 0, start, b""
    pipe_r, pipe_w = os.pipe()
    fcntl.fcntl(pipe_w, 1031, 1 << 20)  # F_SETPIPE_SZ
    while todo > 0:
        length = min(rng or size, todo, size - pos)
        wanted = f"Range: bytes={pos}-{pos + length - 1}\r\n" if rng else ""
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{wanted}\r\n".encode())
        head = pending
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(65536)
            if not chunk:
                raise SystemExit("connection closed mid-head")
            head += chunk
        head, _, body = head.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        fields = {k.lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
        remaining, first = int(fields["content-length"]), body[:8]
        if status == 200:
            expect = 0
        elif status == 206:
            expect = pos
        else:
            raise SystemExit(f"status {status}")
        take = body[:remaining]
        pending, remaining = body[len(take):], remaining - len(take)
        received = len(take)
        while remaining and len(first) < 8:
            n = sock.recv_into(view, min(remaining, 8 - len(first)))
            if not n:
                raise SystemExit("connection closed mid-body")
            first += bytes(view[:n])
            remaining -= n
            received += n
        while remaining:
            if spec["mode"] == "discard":  # MSG_TRUNC on TCP: the kernel drops the bytes, nothing is copied
                n = sock.recv_into(view, min(remaining, len(buf)), socket.MSG_TRUNC)
            elif spec["mode"] == "splice":  # socket -> pipe -> /dev/null: pages moved, never copied into the client
                n = os.splice(sock.fileno(), pipe_w, min(remaining, 1 << 20))
                left = n
                while left:
                    left -= os.splice(pipe_r, null, left)
            else:
                n = sock.recv_into(view, min(remaining, len(buf)))
            if not n:
                raise SystemExit("connection closed mid-body")
            remaining -= n
            received += n
        if spec["check"] and struct.unpack(">Q", first[:8])[0] != expect:
            bad += 1
        got += received
        if status == 200:
            break  # the server ignored the range: that was the whole file
        todo -= length
        pos = (pos + length) % size
        if fields.get("connection", "").lower() == "close":
            sock.close()
            sock, pending = connect(), b""
    sock.close()
    os.close(pipe_r)
    os.close(pipe_w)
    results.append((got, bad))
while time.time() < spec["at"]:
    time.sleep(0.001)
threads = [threading.Thread(target=client, args=(s, spec["each"])) for s in spec["starts"]]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps({"bytes": sum(r[0] for r in results), "bad": sum(r[1] for r in results),
                  "clients": len(results), "end": time.time()}))
"""


def make_iso(path: Path, size: int, sparse: bool = False) -> None:
    """``size`` bytes, each 4 KiB block stamped with its offset (clients check it); sparse: all holes, no check."""
    with path.open("wb") as handle:
        if sparse:
            handle.truncate(size)  # tmpfs holes: read as zeros, no memory
            return
        base = bytearray(os.urandom(1 << 20))
        for start in range(0, size, 1 << 20):
            for block in range(0, 1 << 20, BLOCK):
                struct.pack_into(">Q", base, block, start + block)
            handle.write(base[: min(1 << 20, size - start)])


def ensure_nginx() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if found:
        return found
    print("set-up: installing nginx-light with apt-get", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "-y", "-q", "update"], check=True, env=env, stdout=subprocess.DEVNULL)
    for package in ("nginx-light", "nginx"):
        command = ["apt-get", "-y", "-q", "install", "--no-install-recommends", package]
        done = subprocess.run(command, check=False, env=env, stdout=subprocess.DEVNULL)
        if done.returncode == 0:
            break
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    # The package may have started its own service (port 80): stop it the way its tools do; the benchmark runs
    # its own instance.
    if Path("/run/nginx.pid").exists():
        subprocess.run([binary, "-s", "quit"], check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return binary


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, timeout: float = 20.0) -> None:
    import socket

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


class Server:
    def __init__(self, kind: str, work: Path, iso: Path, nginx: str) -> None:
        self.kind, self.iso = kind, iso
        self.log = (work / f"{kind}.log").open("ab")
        self.path = f"/{iso.name}"
        self.proc: subprocess.Popen[Any]
        if kind == "ours":
            state = work / "media-state"
            shutil.rmtree(state, ignore_errors=True)
            entry = MediaCatalog(state).publish_iso(iso)
            self.path = entry.url_path
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "palette_provision", "--log-level", "info", "media", "serve",
                 "--bind", "127.0.0.1:0", "--state-dir", str(state)],
                stdout=subprocess.PIPE, stderr=self.log, text=True)
            assert self.proc.stdout is not None
            self.port = int(json.loads(self.proc.stdout.readline())["url"].rsplit(":", 1)[1])
        elif kind == "http.server":
            self.port = free_port()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(iso.parent),
                 str(self.port)], stdout=self.log, stderr=self.log)
        else:
            self.port = free_port()
            prefix = work / "nginx"
            prefix.mkdir(exist_ok=True)
            conf = prefix / "nginx.conf"
            temp = " ".join(f"{k}_temp_path {prefix}/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi",
                                                                        "scgi"))
            conf.write_text(
                f"user root; worker_processes auto; daemon off; pid {prefix}/nginx.pid; error_log {prefix}/error.log;"
                f"events {{ worker_connections 1024; }}"
                f"http {{ sendfile on; tcp_nopush on; keepalive_requests 100000; access_log {prefix}/access.log;"
                f" {temp} server {{ listen 127.0.0.1:{self.port}; root {iso.parent}; location / {{ }} }} }}\n")
            self.proc = subprocess.Popen([nginx, "-p", str(prefix), "-c", str(conf)], stdout=self.log,
                                         stderr=self.log)
        wait_listening(self.port)

    def fds(self) -> tuple[int, int]:
        """(open descriptors, descriptors on the ISO) of the server process."""
        total = on_iso = 0
        for fd in Path(f"/proc/{self.proc.pid}/fd").iterdir():
            total += 1
            with contextlib.suppress(OSError):  # closed since listed
                on_iso += os.readlink(fd) == str(self.iso)
        return total, on_iso

    def stop(self) -> int:
        rss = peak_rss_kib(self.proc.pid)
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()
        return rss


def run_clients(
    server: Server, n: int, size: int, each: int, range_bytes: int, *, mode: str, check: bool = True
) -> dict[str, float]:
    procs = min(n, 2)
    at = time.time() + 1.0
    starts = [(i * size // n) // BLOCK * BLOCK for i in range(n)]
    children = []
    for p in range(procs):
        spec = {"host": "127.0.0.1", "port": server.port, "path": server.path, "size": size, "range": range_bytes,
                "each": each, "starts": starts[p::procs], "at": at, "check": check, "mode": mode}
        children.append(subprocess.Popen([sys.executable, "-c", CLIENT, json.dumps(spec)], stdout=subprocess.PIPE,
                                         text=True))
    peak_fds = peak_iso = 0
    while any(c.poll() is None for c in children):
        if server.kind == "ours":
            fds, on_iso = server.fds()
            peak_fds, peak_iso = max(peak_fds, fds), max(peak_iso, on_iso)
        time.sleep(0.2)
    outs = []
    for child in children:
        out, _ = child.communicate()
        if child.returncode != 0:
            raise RuntimeError(f"client failed against {server.kind}")
        outs.append(json.loads(out.strip().splitlines()[-1]))
    if sum(o["clients"] for o in outs) != n:
        raise RuntimeError(f"only {sum(o['clients'] for o in outs)} of {n} clients finished against {server.kind}")
    total = sum(o["bytes"] for o in outs)
    seconds = max(o["end"] for o in outs) - at
    return {"bytes": total, "seconds": seconds, "mib_s": total / 2**20 / seconds, "bad": sum(o["bad"] for o in outs),
            "fds": peak_fds, "iso_fds": peak_iso}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", default="1,10,50")
    parser.add_argument("--iso-gib", type=float, default=1.0)
    parser.add_argument("--range-kib", type=int, default=1024, help="0: one whole-file GET per client, no Range")
    parser.add_argument("--servers", default="ours,nginx,http.server")
    parser.add_argument("--client", choices=["discard", "splice", "copy"], default="splice",
                        help="how clients take bodies: splice to /dev/null (default), discard in the kernel "
                             "(MSG_TRUNC: nothing copied) or recv_into a buffer")
    parser.add_argument("--big-gib", type=float, default=4.0, help="sparse ISO for the RSS-against-size run (0: skip)")
    args = parser.parse_args()
    ns = [int(x) for x in args.n.split(",")]
    size = int(args.iso_gib * 2**30)
    nginx = ensure_nginx() if "nginx" in args.servers else ""
    with tempfile.TemporaryDirectory(prefix="pp-media-bench-", dir="/dev/shm") as tmp:
        work = Path(tmp)
        (work / "iso").mkdir()
        iso = work / "iso" / "palette.iso"
        make_iso(iso, size)
        rows: dict[tuple[str, int], dict[str, float]] = {}
        for n in ns:
            for kind in args.servers.split(","):
                server = Server(kind, work, iso, nginx)
                try:
                    row = run_clients(server, n, size, size, args.range_kib * 1024, mode=args.client)
                finally:
                    row_rss = server.stop()
                row["rss_mib"] = row_rss / 1024
                rows[(kind, n)] = row
                print(f"N={n:<3} {kind:<12} {row['mib_s']:8.0f} MiB/s  {row['seconds']:6.2f} s  "
                      f"{row['bytes'] / 2**30:5.1f} GiB  bad={row['bad']}"
                      + (f"  peak RSS {row['rss_mib']:.1f} MiB  fds {row['fds']:.0f} (ISO {row['iso_fds']:.0f})"
                         if kind == "ours" else ""), flush=True)
        big_rss = None
        if args.big_gib and "ours" in args.servers:
            big = work / "iso" / "big.iso"
            make_iso(big, int(args.big_gib * 2**30), sparse=True)
            server = Server("ours", work, big, nginx)
            try:
                big_row = run_clients(server, ns[-1], big.stat().st_size, 256 << 20, args.range_kib * 1024,
                                      mode=args.client, check=False)
            finally:
                big_rss = server.stop() / 1024
            print(f"N={ns[-1]:<3} ours, {args.big_gib:g} GiB sparse ISO, 256 MiB per client: "
                  f"{big_row['mib_s']:.0f} MiB/s, peak RSS {big_rss:.1f} MiB")
    print(f"\nISO {args.iso_gib:g} GiB in /dev/shm, {args.range_kib} KiB ranges, {args.client} clients, loopback, "
          f"{os.cpu_count()} cores")
    print("| N | ours MiB/s | nginx MiB/s | http.server MiB/s | ours/nginx | ours/http.server | ours peak RSS MiB "
          "| ours fds (on the ISO) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    ok = True
    for n in ns:
        ours = rows.get(("ours", n))
        ngx = rows.get(("nginx", n))
        std = rows.get(("http.server", n))
        if ours is None:
            continue
        r_ngx = ours["mib_s"] / ngx["mib_s"] if ngx else float("nan")
        r_std = ours["mib_s"] / std["mib_s"] if std else float("nan")
        ok &= (ngx is None or r_ngx >= 0.5) and (std is None or r_std >= 2.0) and ours["bad"] == 0
        print(f"| {n} | {ours['mib_s']:.0f} | {ngx['mib_s'] if ngx else float('nan'):.0f} | "
              f"{std['mib_s'] if std else float('nan'):.0f} | {r_ngx:.2f}x | {r_std:.2f}x | {ours['rss_mib']:.1f} | "
              f"{ours['fds']:.0f} ({ours['iso_fds']:.0f}) |")
    last = rows.get(("ours", ns[-1]))
    if last is not None:
        ok &= last["rss_mib"] < 100
        print(f"targets: ours >= 0.5x nginx and >= 2x http.server at every N; RSS < 100 MiB at N={ns[-1]} "
              f"({last['rss_mib']:.1f} MiB; {big_rss or float('nan'):.1f} MiB with the {args.big_gib:g} GiB ISO) "
              f"-> {'OK' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
