"""Benchmark: stream a 2 GiB content bundle to a local Local API simulator, our client against ``curl -F``.

Both upload the same sparse file to the same simulator in the same run, alternately, ``--rounds`` times each; the
best time of each is compared (target: ours >= 0.8x curl's throughput). Our client runs in a child process so its
peak RSS (``VmHWM``, see palette_provision.testing.metrics) is the upload's alone (target: < 100 MiB).

    .venv/bin/python benchmarks/content_upload.py [--size-gib 2] [--rounds 3]

The session token reaches curl through a 0600 header file (``-H @file``), never its command line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from palette_provision.testing.localapi import SimulatorHandle, start_simulator

PASSWORD = "benchmark-node-password"
USER = "kairos"
UPLOAD = "/v1/edge-mgmt/edgehosts/current/actions/upload-content"

# The child: our LocalApiClient + the hand-off's ProgressReader, exactly as PaletteLocalApi uploads.
OURS = r"""
import json, sys, time
from pathlib import Path
from palette_provision.handoff._content import ProgressReader
from palette_provision.testing.metrics import peak_rss_kib
from palette_provision.handoff.local_api import LocalApiClient
from palette_provision.journal import Journal
from palette_provision.secrets import Secret
spec = json.loads(sys.argv[1])
path = Path(spec["file"])
size = path.stat().st_size
with Journal.open(Path(spec["journal"]), deployment="bench") as journal:
    journal.set_fact("bench", "local_api_cert_sha256", spec["cert_sha256"])
    api = LocalApiClient("bench", spec["host"], port=spec["port"], username=spec["user"],
                         password=Secret(spec["password"]), journal=journal)
    api.login()
    before = peak_rss_kib()
    start = time.perf_counter()
    with path.open("rb") as handle:
        reader = ProgressReader(handle, size, lambda done, total: None)
        api.upload(spec["path"], "uploadFile", reader, path.name, timeout=3600)
    elapsed = time.perf_counter() - start
    api.close()
print(json.dumps({"seconds": elapsed, "sha256": reader.sha256, "rss_before_kib": before,
                  "rss_peak_kib": peak_rss_kib()}))
"""


def login(sim: SimulatorHandle) -> str:
    with sim.client(timeout=30) as client:
        answer = client.post("/v1/users/default/login", params={"setCookie": "false"},
                             json={"username": USER, "password": PASSWORD})
    answer.raise_for_status()
    return str(answer.json()["Token"]["Authorization"])


def run_ours(sim: SimulatorHandle, bundle: Path, work: Path) -> dict[str, float]:
    spec = {"file": str(bundle), "host": sim.host, "port": sim.port, "user": USER, "password": PASSWORD,
            "cert_sha256": sim.cert_sha256, "journal": str(work / "bench-journal.sqlite"), "path": UPLOAD}
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", OURS, json.dumps(spec)], capture_output=True, text=True,
                          check=True, env=env)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run_curl(sim: SimulatorHandle, bundle: Path, work: Path) -> dict[str, float]:
    headers = work / "curl-headers"
    fd = os.open(headers, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(f"Authorization: {login(sim)}\n")
    start = time.perf_counter()
    subprocess.run(
        ["curl", "-sS", "--fail", "-o", "/dev/null", "--cacert", str(sim.cert_file), "-H", f"@{headers}",
         "-F", f"uploadFile=@{bundle}", f"{sim.url}{UPLOAD}"],
        check=True,
    )
    return {"seconds": time.perf_counter() - start}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gib", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    size = int(args.size_gib * 2**30)
    # The simulator stores what it receives; on tmpfs (when it has room) disk writeback does not blur the figures.
    shm = Path("/dev/shm")
    root = shm if shm.is_dir() and shutil.disk_usage(shm).free > 1.5 * size else None
    with tempfile.TemporaryDirectory(prefix="pp-bench-", dir=root) as tmp:
        work = Path(tmp)
        bundle = work / "bundle.tar.zst"
        with bundle.open("wb") as handle:
            handle.truncate(size)  # sparse: the client side reads zeros from no disk blocks
        sim = start_simulator("bench", work / "sim", password=PASSWORD, username=USER)
        try:
            ours: list[dict[str, float]] = []
            curl: list[dict[str, float]] = []
            for index in range(args.rounds):
                # Alternate who goes first, and flush the simulator's previous 2 GiB of dirty pages before each
                # run: otherwise the later run pays for the earlier one's disk writeback.
                order = [("curl", run_curl), ("ours", run_ours)]
                for name, runner in order if index % 2 == 0 else order[::-1]:
                    os.sync()
                    (curl if name == "curl" else ours).append(runner(sim, bundle, work))
            stored = sim.state()["content"]
            server_rss = sim.peak_rss_kib()
        finally:
            sim.stop()
    best_ours = min(r["seconds"] for r in ours)
    best_curl = min(r["seconds"] for r in curl)
    mib = size / 2**20
    peak = max(r["rss_peak_kib"] for r in ours) / 1024
    ratio = best_curl / best_ours
    print(f"bundle: {mib:.0f} MiB (sparse), {args.rounds} round(s) each, best of each; simulator storage: "
          f"{'tmpfs' if root else 'disk'}")
    print(f"ours : {best_ours:6.2f} s  {mib / best_ours:7.1f} MiB/s  (all: {[round(r['seconds'], 2) for r in ours]})")
    print(f"curl : {best_curl:6.2f} s  {mib / best_curl:7.1f} MiB/s  (all: {[round(r['seconds'], 2) for r in curl]})")
    print(f"throughput ratio ours/curl: {ratio:.2f}x (target >= 0.8x) -> {'OK' if ratio >= 0.8 else 'MISSED'}")
    print(f"client peak RSS: {peak:.1f} MiB (before upload {ours[0]['rss_before_kib'] / 1024:.1f} MiB; "
          f"target < 100 MiB) -> {'OK' if peak < 100 else 'MISSED'}")
    print(f"simulator: stored {stored['sizeInBytes']} bytes, sha256 {stored['sha256Hash'][:16]}..., "
          f"server peak RSS {server_rss / 1024:.1f} MiB; digest match: {stored['sha256Hash'] == ours[-1]['sha256']}")
    return 0 if ratio >= 0.8 and peak < 100 else 1


if __name__ == "__main__":
    sys.exit(main())
