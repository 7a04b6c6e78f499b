"""vSphere fan-out benchmark against vcsim: the provider vs a bare pyVmomi baseline.

For each N (default 3, 10, 30) a fresh vcsim (``lab/vcsim/lab.py``) gets a sparse-but-real ISO (default 1 GiB) and
N small seeds, and N VMs created, powered on and asked for their address; then the same again (the re-run). Two
halves, each in its own process so peak RSS and bytes read are its own:

* ``baseline``: bare pyVmomi + httpx doing the same API calls, no checks, no digest, no logging; its re-run only
  compares the datastore file's size and finds the VMs.
* ``provider``: ``VsphereProvider`` (preflight, content-addressed staging, create/power/address through a thread
  pool). The re-run is a new provider on the same state folder, given the ISO digest as the core's digest cache
  would. Without a journal it looks at every node again (seed, power state, guest address), so its re-run shows
  the provider's share, not what ``apply`` costs.

* ``pipeline``: the whole library, ``Deployment.apply(until="power_on")``: plan, journal, preflight, ISO staging
  (while the nodes render and stage their seeds and get their VMs), media inserted, boot order, powered on. Its
  re-run is a second ``apply`` on the same journal (the digest cache makes it read no ISO byte and upload nothing).
* ``cli``: what a user runs, ``palette-provision apply plan.yaml --until power_on --json``, as its own process (the
  console script of the virtualenv), timed from before it starts to its exit: interpreter start, plan file, CLI.
  Every half is also timed as a whole process (interpreter start included), and the CLI is compared with the
  baseline both ways: a user's bare pyVmomi script pays its interpreter's start too.
  Its RSS is the CLI process's peak (``RUSAGE_CHILDREN``); its ISO reads are not measured (another process).

Each re-run is repeated (``--reruns``, default 3) and the median is printed with the range: on two shared cores a
single sub-second figure moves by 10-20 % from one run to the next. First runs are repeated too (``--firsts``,
default 3, each on a fresh vcsim, the halves interleaved) and the simulators' datastores live in ``/dev/shm`` when
it has room: a first run is bound by vcsim writing the ISO, and this machine's disk throughput drifts by 2x.
Before the children run, the library's bytecode
is compiled: the machines here set ``PYTHONDONTWRITEBYTECODE``, so an editable install would otherwise be compiled
from source in every child, which an installed package (pip compiles at install time) never is.

Run: ``.venv/bin/python benchmarks/vsphere_fanout.py [--n 3 10 30] [--iso-gib 1] [--reruns 3] [--halves ...]``.
"""

from __future__ import annotations

import argparse
import compileall
import concurrent.futures as cf
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "lab"))
PASSWORD_ENV = "PP_BENCH_VSPHERE_PASSWORD"


def _io_read_bytes() -> int:
    """Bytes this process read through read(2) (``rchar``): the ISO's reads show up here, cache or not."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    return 0


def _peak_rss_mib() -> float:
    # VmHWM, not ru_maxrss: the latter carries the (larger) parent's peak across exec.
    from palette_provision.testing.metrics import peak_rss_kib

    return peak_rss_kib() / 1024


def make_iso(path: Path, size: int) -> None:
    """A sparse file with 1 MiB of random data every 64 MiB: cheap on disk, real bytes to hash and upload."""
    with path.open("wb") as f:
        f.truncate(size)
        for offset in range(0, size, 64 * 1024 * 1024):
            f.seek(offset)
            f.write(os.urandom(min(1024 * 1024, size - offset)))


def make_seeds(folder: Path, n: int) -> list[Path]:
    seeds = []
    for i in range(1, n + 1):
        p = folder / f"node-{i}-seed.iso"
        p.write_bytes(os.urandom(64 * 1024))
        seeds.append(p)
    return seeds


# ------------------------------------------------------------------------------------------------- baseline


def baseline(state: dict[str, Any], iso: Path, seeds: list[Path], rerun: bool) -> dict[str, Any]:
    """Bare pyVmomi: same calls, no checks. Timed from before its imports, like the provider half."""
    t0 = time.monotonic()
    import ssl

    import httpx
    from pyVim.connect import Disconnect, SmartConnect
    from pyVmomi import vim, vmodl

    ctx = ssl.create_default_context(cafile=state["cert_path"])
    si = SmartConnect(
        host=state["host"], port=state["port"], user="admin", pwd=os.environ[PASSWORD_ENV], sslContext=ctx
    )
    content = si.RetrieveContent()
    dc = content.searchIndex.FindByInventoryPath("DC0")
    pool = next(c for c in dc.hostFolder.childEntity if c.name == "DC0_C0").resourcePool
    ds = next(d for d in dc.datastore if d.name == "datastore1")
    net = next(n for n in dc.network if n.name == "VM Network")
    pc = content.propertyCollector
    PC = vmodl.query.PropertyCollector
    folder = "bench-baseline"

    def wait(task: Any) -> Any:
        spec = PC.FilterSpec(
            objectSet=[PC.ObjectSpec(obj=task)],
            propSet=[PC.PropertySpec(type=vim.Task, pathSet=["info.state", "info.result", "info.error"])],
        )
        while True:
            props = {p.name: p.val for p in pc.RetrieveContents([spec])[0].propSet}
            if props["info.state"] in ("success", "error"):
                if props["info.state"] == "error":
                    raise RuntimeError(props.get("info.error"))
                return props.get("info.result")
            time.sleep(0.01)

    uploaded = 0
    client = httpx.Client(verify=ctx, timeout=300)
    cookie = si._stub.cookie.split(";")[0]

    def put(path: Path) -> int:
        def body() -> Any:
            with path.open("rb") as f:
                while chunk := f.read(1024 * 1024):
                    yield chunk

        size = path.stat().st_size
        r = client.put(
            f"https://{state['host']}:{state['port']}/folder/{folder}/{path.name}",
            params={"dcPath": "DC0", "dsName": "datastore1"},
            content=body(),
            headers={"Cookie": cookie, "Content-Length": str(size)},
        )
        r.raise_for_status()
        return size

    if rerun:
        spec = vim.host.DatastoreBrowser.SearchSpec(
            matchPattern=[iso.name], details=vim.host.DatastoreBrowser.FileInfo.Details(fileSize=True)
        )
        found = wait(ds.browser.SearchDatastore_Task(datastorePath=f"[datastore1] {folder}", searchSpec=spec))
        assert found.file and found.file[0].fileSize == iso.stat().st_size
        view = content.viewManager.CreateContainerView(dc, [vim.VirtualMachine], True)
        names = {vm.name for vm in view.view}
        assert all(f"base-node-{i}" in names for i in range(1, len(seeds) + 1))
    else:
        uploaded += put(iso)
        for s in seeds:
            uploaded += put(s)

        def one(i: int) -> str | None:
            dev = vim.vm.device.VirtualDeviceSpec
            d = [
                dev(
                    operation="add",
                    device=vim.vm.device.ParaVirtualSCSIController(key=-100, busNumber=0, sharedBus="noSharing"),
                )
            ]
            for unit, gb in enumerate((32, 16)):
                disk = vim.vm.device.VirtualDisk(
                    key=-201 - unit, controllerKey=-100, unitNumber=unit, capacityInKB=gb * 1024 * 1024,
                    backing=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(diskMode="persistent", thinProvisioned=True),
                )  # fmt: skip
                d.append(dev(operation="add", fileOperation="create", device=disk))
            d.append(dev(operation="add", device=vim.vm.device.VirtualAHCIController(key=-300, busNumber=0)))
            for unit, name in enumerate((iso.name, seeds[i - 1].name)):
                cd = vim.vm.device.VirtualCdrom(
                    key=-401 - unit, controllerKey=-300, unitNumber=unit,
                    backing=vim.vm.device.VirtualCdrom.IsoBackingInfo(fileName=f"[datastore1] {folder}/{name}"),
                )  # fmt: skip
                d.append(dev(operation="add", device=cd))
            nic_backing = vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(deviceName="VM Network", network=net)
            d.append(dev(operation="add", device=vim.vm.device.VirtualVmxnet3(key=-500, backing=nic_backing)))
            spec = vim.vm.ConfigSpec(
                name=f"base-node-{i}", guestId="ubuntu64Guest", numCPUs=2, memoryMB=4096, firmware="efi",
                files=vim.vm.FileInfo(vmPathName="[datastore1]"), deviceChange=d,
            )  # fmt: skip
            vm = wait(dc.vmFolder.CreateVM_Task(config=spec, pool=pool))
            disk_key = next(x.key for x in vm.config.hardware.device if isinstance(x, vim.vm.device.VirtualDisk))
            order = [
                vim.vm.BootOptions.BootableCdromDevice(),
                vim.vm.BootOptions.BootableDiskDevice(deviceKey=disk_key),
            ]
            wait(vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(bootOptions=vim.vm.BootOptions(bootOrder=order))))
            wait(vm.PowerOnVM_Task())
            return str(vm.guest.ipAddress) if vm.guest.ipAddress else None

        with cf.ThreadPoolExecutor(max_workers=min(len(seeds), 32)) as pool_exec:
            list(pool_exec.map(one, range(1, len(seeds) + 1)))
    client.close()
    Disconnect(si)
    return {"wall_s": time.monotonic() - t0, "uploaded_bytes": uploaded}


def plan_data(state: dict[str, Any], iso: Path, n: int, *, prefix: str, folder: str) -> dict[str, Any]:
    """An edge plan of ``n`` nodes with static addresses on the bench's vcsim; each half has its prefix and folder."""
    return {
        "name": "bench",
        "profile": "edge",
        "iso": {"source": str(iso)},
        "cluster": {"name": "node", "vip": "10.251.1.250", "dns": ["10.251.0.1"],
                    "node_account": {"password": f"env:{PASSWORD_ENV}"}},
        "nodes": {"count": n, "cpus": 2, "memory_gb": 4, "install_disk_gb": 32, "storage_disk_gb": 16,
                  "network": {"mode": "static", "gateway": "10.251.0.1",
                              "addresses": [f"10.251.{1 + i // 200}.{10 + i % 200}/16" for i in range(n)]}},
        "platform": {
            "provider": "vsphere", "server": state["host"], "port": state["port"], "username": "admin",
            "password": f"env:{PASSWORD_ENV}", "thumbprint": state["thumbprint"], "datacenter": "DC0",
            "cluster": "DC0_C0", "datastore": "datastore1", "network": "VM Network", "vm_prefix": prefix,
            "media_folder": folder,
        },
        "readiness": {"ssh": False},
        "handoff": {"kind": "none"},
        "concurrency": min(n, 32),
    }  # fmt: skip


# ------------------------------------------------------------------------------------------------- provider


def provider_half(
    state: dict[str, Any], iso: Path, seeds: list[Path], rerun: bool, iso_digest: str | None, state_dir: Path
) -> dict[str, Any]:
    t0 = time.monotonic()
    from palette_provision.log import get_logger
    from palette_provision.plan import parse_plan
    from palette_provision.provider import MediaFile, PowerState, ProviderContext
    from palette_provision.registry import create_provider, load_provider_class

    load_provider_class("vsphere")  # pyVmomi stays unimported until the first call that needs vCenter
    import_s = time.monotonic() - t0
    n = len(seeds)
    plan = parse_plan(plan_data(state, iso, n, prefix="prov-", folder="bench-provider"))
    names = [s.name for s in plan.node_specs()]
    context = ProviderContext(
        deployment="bench", state_dir=state_dir, log=get_logger("bench").bind(provider="vsphere"),
        owned_machines=dict.fromkeys(names) if rerun else {},
    )  # fmt: skip
    provider = create_provider("vsphere", plan.platform_settings, context)
    provider.preflight(plan)
    size = iso.stat().st_size
    staged_iso = provider.stage_media(MediaFile("appliance-iso", iso, size, iso.name, iso_digest))
    uploaded = staged_iso.uploaded_bytes

    def one(i: int) -> tuple[int, str | None]:
        node = plan.node_specs()[i]
        seed = seeds[i]
        # The core builds the seeds, so it knows their digests, as it does the ISO's from its cache.
        digest = hashlib.sha256(seed.read_bytes()).hexdigest()
        staged_seed = provider.stage_media(MediaFile("seed", seed, seed.stat().st_size, seed.name, digest, node.name))
        machine = provider.find_machine(node, None) or provider.create_machine(node, [staged_iso, staged_seed])
        if provider.power_state(machine) is not PowerState.ON:  # as the pipeline does: look, then act
            provider.power_on(machine)
        return staged_seed.uploaded_bytes, provider.discover_address(machine, node) or node.static_ip

    with cf.ThreadPoolExecutor(max_workers=plan.concurrency) as pool_exec:
        results = list(pool_exec.map(one, range(n)))
    uploaded += sum(r[0] for r in results)
    provider.close()
    return {"wall_s": time.monotonic() - t0, "uploaded_bytes": uploaded, "iso_sha256": staged_iso.sha256,
            "import_s": import_s}  # fmt: skip


def pipeline_half(state: dict[str, Any], iso: Path, n: int, state_dir: Path) -> dict[str, Any]:
    """The whole library: plan, journal, preflight, staging, seeds rendered and staged, VMs, power on.

    The re-run reuses ``state_dir`` (the journal with its digest cache), exactly as a user's second ``apply`` does.
    Addresses are the plan's static ones: without a guest, that is what the pipeline would report.
    """
    t0 = time.monotonic()
    from palette_provision.pipeline import Deployment
    from palette_provision.plan import parse_plan

    import_s = time.monotonic() - t0
    plan = parse_plan(plan_data(state, iso, n, prefix="pipe-", folder="bench-pipeline"))
    with Deployment(plan, state_dir=state_dir) as deployment:
        report = deployment.apply(until="power_on")
        staged = deployment.journal.step("stage_media")
    if not report.ok:
        raise SystemExit("pipeline failed: " + "; ".join(report.failures()))
    uploaded = int(staged.data.get("uploaded_bytes", 0)) if staged else 0
    known = sum(1 for node in plan.node_specs() if node.static_ip)
    return {"wall_s": time.monotonic() - t0, "uploaded_bytes": uploaded, "import_s": import_s, "addresses": known}


def cli_half(state: dict[str, Any], iso: Path, n: int, state_dir: Path) -> dict[str, Any]:
    """``palette-provision apply --until power_on`` in its own process, as a user runs it."""
    import resource

    import yaml

    plan_path = state_dir.with_suffix(".yaml")
    plan_path.write_text(yaml.safe_dump(plan_data(state, iso, n, prefix="cli-", folder="bench-cli")))
    console = Path(sys.executable).with_name("palette-provision")
    cmd = [str(console), "apply", str(plan_path), "--until", "power_on", "--json", "--state-dir", str(state_dir)]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"cli failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    from palette_provision.journal import Journal

    with Journal.open_readonly(state_dir / "journal.sqlite", deployment="bench") as journal:
        staged = journal.step("stage_media")
    uploaded = int(staged.data.get("uploaded_bytes", 0)) if staged else 0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"wall_s": wall, "uploaded_bytes": uploaded, "import_s": 0.0, "cli_peak_rss_mib": round(peak, 1)}


# ------------------------------------------------------------------------------------------------ orchestration


def _child(args: argparse.Namespace) -> None:
    state = json.loads(Path(args.state).read_text())
    seeds = sorted(Path(args.seeds).glob("*.iso"), key=lambda p: int(p.name.split("-")[1]))
    read0 = _io_read_bytes()
    if args.half == "baseline":
        out = baseline(state, Path(args.iso), seeds, args.rerun)
    elif args.half == "pipeline":
        out = pipeline_half(state, Path(args.iso), len(seeds), Path(args.state).with_suffix(".pipeline"))
    elif args.half == "cli":
        out = cli_half(state, Path(args.iso), len(seeds), Path(args.state).with_suffix(".cli"))
    else:
        out = provider_half(
            state, Path(args.iso), seeds, args.rerun, args.digest, Path(args.state).with_suffix(".provider")
        )
    out["peak_rss_mib"] = out.pop("cli_peak_rss_mib", None) or round(_peak_rss_mib(), 1)
    out["iso_reads"] = round((_io_read_bytes() - read0) / Path(args.iso).stat().st_size, 2)
    if args.half == "cli":
        out["iso_reads"] = float("nan")  # read by the CLI process, which /proc/self/io here does not see
    print(json.dumps(out))


def _run_child(half: str, state: Path, iso: Path, seeds: Path, rerun: bool, digest: str | None) -> dict[str, Any]:
    os.sync()  # every child starts with no dirty pages of an earlier one to write back (untimed)
    cmd = [sys.executable, __file__, "--child", half, "--state", str(state), "--iso", str(iso), "--seeds", str(seeds)]
    if rerun:
        cmd.append("--rerun")
    if digest:
        cmd += ["--digest", digest]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    process_s = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{half} failed:\n{proc.stdout}\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    # The whole process, interpreter start included, as a user's script pays it. The CLI half's own wall is
    # already that (it times the palette-provision process it starts).
    result["process_s"] = result["wall_s"] if half == "cli" else process_s
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[3, 10, 30])
    parser.add_argument("--iso-gib", type=float, default=1.0)
    parser.add_argument("--reruns", type=int, default=3, help="re-runs per half; the median is reported")
    parser.add_argument("--firsts", type=int, default=3, help="first runs per half (fresh vcsim each); the median")
    parser.add_argument("--halves", nargs="+", default=["baseline", "provider", "pipeline", "cli"],
                        choices=["baseline", "provider", "pipeline", "cli"], help="which halves to run")
    parser.add_argument("--child", choices=["baseline", "provider", "pipeline", "cli"])
    parser.add_argument("--state")
    parser.add_argument("--iso")
    parser.add_argument("--seeds")
    parser.add_argument("--digest")
    parser.add_argument("--rerun", action="store_true")
    args = parser.parse_args()
    if args.child:
        args.half = args.child
        _child(args)
        return

    import secrets

    from vcsim.lab import start_vcsim

    os.environ[PASSWORD_ENV] = secrets.token_urlsafe(12)
    for package in (REPO / "palette_provision", REPO / "providers" / "vsphere" / "palette_provision_vsphere"):
        compileall.compile_dir(package, quiet=1)
    work = Path(tempfile.mkdtemp(prefix="pp-bench-"))
    iso = work / "appliance.iso"
    make_iso(iso, int(args.iso_gib * 1024**3))
    # vcsim writes every uploaded byte to its datastore folder; on this machine's disk that write's throughput drifts
    # by 2x from one minute to the next and swamps what is measured. In memory when there is room for two ISOs.
    shm = Path("/dev/shm")
    room = shutil.disk_usage(shm).free if shm.is_dir() else 0
    datastore_root = Path(tempfile.mkdtemp(prefix="pp-bench-ds-", dir=shm)) if room > 3 * iso.stat().st_size else work
    print(f"ISO {args.iso_gib:g} GiB (sparse, real bytes), vcsim from lab/vcsim; workdir {work}; "
          f"datastores in {datastore_root}; first runs x{args.firsts} (median), re-runs x{args.reruns} (median)")
    firsts: dict[int, float] = {}
    header = (
        f"{'N':>3} {'half':<9} {'first s':>8} {'(range)':>10} {'rerun s':>8} {'(range)':>10} {'rerun up B':>10} "
        f"{'RSS MiB':>8} {'ISO reads':>9}"
    )
    print(header)
    for n in args.n:
        seeds_dir = work / f"seeds-{n}"
        seeds_dir.mkdir()
        make_seeds(seeds_dir, n)
        firsts_by: dict[str, list[dict[str, Any]]] = {half: [] for half in args.halves}
        agains_by: dict[str, list[dict[str, Any]]] = {}
        # First runs are repeated with the halves interleaved (baseline, provider, pipeline, cli, baseline, ...): a
        # first run is bound by vcsim writing the ISO, and the disk's throughput drifts from one minute to the next.
        for rep in range(args.firsts):
            for half in args.halves:
                # A fresh simulator per run: vcsim 0.24.2 charges every VM's full (thin) disk size to the datastore's
                # free space, so one run's 30 VMs would leave the next a negative free space.
                tag = f"{n}-{half}-{rep}"
                handle = start_vcsim(work / f"vcsim-{tag}", 0, "admin", os.environ[PASSWORD_ENV],
                                     datastore_dir=datastore_root / tag)  # fmt: skip
                try:
                    state = work / f"state-{tag}.json"
                    state.write_text(json.dumps({"host": handle.host, "port": handle.port,
                                                 "thumbprint": handle.thumbprint,
                                                 "cert_path": str(handle.cert_path)}))  # fmt: skip
                    first = _run_child(half, state, iso, seeds_dir, False, None)
                    firsts_by[half].append(first)
                    if rep == args.firsts - 1:
                        agains_by[half] = [
                            _run_child(half, state, iso, seeds_dir, True, first.get("iso_sha256"))
                            for _ in range(args.reruns)
                        ]
                finally:
                    handle.stop()
                    shutil.rmtree(datastore_root / tag, ignore_errors=True)
        rows = {}
        for half in args.halves:
            runs, agains = firsts_by[half], agains_by[half]
            first_walls = sorted(r["wall_s"] for r in runs)
            walls = sorted(a["wall_s"] for a in agains)
            first = {**runs[0], "wall_s": statistics.median(first_walls),
                     "process_s": statistics.median(r["process_s"] for r in runs),
                     "peak_rss_mib": max(r["peak_rss_mib"] for r in runs)}  # fmt: skip
            again = {
                **agains[0],
                "wall_s": statistics.median(walls),
                "process_s": statistics.median(a["process_s"] for a in agains),
                "uploaded_bytes": max(a["uploaded_bytes"] for a in agains),
                "import_s": statistics.median(a.get("import_s", 0.0) for a in agains),
                "peak_rss_mib": max(a["peak_rss_mib"] for a in agains),
            }
            rows[half] = (first, again)
            first_spread = f"{first_walls[0]:.2f}-{first_walls[-1]:.2f}"
            spread = f"{walls[0]:.2f}-{walls[-1]:.2f}"
            print(f"{n:>3} {half:<9} {first['wall_s']:>8.2f} {first_spread:>10} {again['wall_s']:>8.2f} {spread:>10} "
                  f"{again['uploaded_bytes']:>10} {max(first['peak_rss_mib'], again['peak_rss_mib']):>8.1f} "
                  f"{first['iso_reads']:>9.2f}")  # fmt: skip
        if "baseline" not in rows or len(rows) < 4:
            continue
        (bf, br), (pf, pr), (lf, lr), (cf_, cr) = rows["baseline"], rows["provider"], rows["pipeline"], rows["cli"]
        print(f"    ratio provider/baseline: first run {pf['wall_s'] / bf['wall_s']:.2f}x, "
              f"re-run {pr['wall_s'] / br['wall_s']:.2f}x (re-run imports: {pr['import_s']:.2f} s)")  # fmt: skip
        print(f"    ratio pipeline/baseline: first run {lf['wall_s'] / bf['wall_s']:.2f}x, "
              f"re-run {lr['wall_s'] / br['wall_s']:.2f}x (re-run imports: {lr['import_s']:.2f} s)")  # fmt: skip
        print(f"    ratio cli/baseline: first run {cf_['wall_s'] / bf['wall_s']:.2f}x (target 1.3x at N = 30), "
              f"re-run {cr['wall_s'] / br['wall_s']:.2f}x (target 3x); the baseline timed from its script's start "
              f"(its process: first {bf['process_s']:.2f} s, re-run {br['process_s']:.2f} s)")  # fmt: skip
        first_x, rerun_x = cf_["process_s"] / bf["process_s"], cr["process_s"] / br["process_s"]
        print(f"    ratio cli/baseline, both timed as whole processes: first run {first_x:.2f}x, re-run {rerun_x:.2f}x")
        firsts[n] = lf["wall_s"]
    if len(firsts) > 1:
        small, large = min(firsts), max(firsts)
        print(f"pipeline first run N={large} / N={small}: {firsts[large] / firsts[small]:.2f}x")
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(datastore_root, ignore_errors=True)


if __name__ == "__main__":
    main()
