"""The lab's vcsim behaves as the vSphere provider's tests need (each test names the user-visible property)."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pyVmomi import vim, vmodl
from vcsim.lab import LAB_DIR, VcsimHandle, VcsimTaskError, connect, disconnect, start_vcsim, wait_task

from .conftest import PASSWORD
from .inventory import V, create_vm, find

pytestmark = pytest.mark.lab


def test_unset_properties_read_without_dropping_the_connection(vcsim: VcsimHandle, si: Any) -> None:
    """pyVmomi 9 reads one property with PropertyCollector.Fetch; unpatched vcsim 0.24.2 panics on unset ones."""
    vm = create_vm(si, "node-1", [])
    # Each read is a Fetch of a property vcsim leaves unset: the patch answers empty instead of crashing.
    assert vm.snapshot is None
    assert vm.parentVApp is None
    assert vm.guest.ipAddress is None
    # Same session, still alive: the connection was not closed by a server-side panic.
    assert vm.name == "node-1"
    assert vm.runtime.powerState == "poweredOff"
    assert "panic" not in vcsim.log_tail(200)


def test_wrong_password_is_invalid_login(vcsim: VcsimHandle) -> None:
    wrong = VcsimHandle(**{**vcsim.__dict__, "password": "not-" + PASSWORD, "process": None})
    with pytest.raises(vim.fault.InvalidLogin):
        connect(wrong)
    other_user = VcsimHandle(**{**vcsim.__dict__, "username": "root", "process": None})
    with pytest.raises(vim.fault.InvalidLogin):
        connect(other_user)


def test_upload_lands_as_a_real_file_in_the_datastore_directory(vcsim: VcsimHandle, si: Any) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 7)
    conn = http.client.HTTPSConnection(vcsim.host, vcsim.port, context=vcsim.ssl_context(), timeout=30)
    cookie = si._stub.cookie  # the SOAP session cookie, as the library's uploader sends it
    conn.request(
        "PUT",
        "/folder/iso/palette.iso?dcPath=DC0&dsName=datastore1",
        body=payload,
        headers={"Cookie": cookie, "Content-Length": str(len(payload)), "Content-Type": "application/octet-stream"},
    )
    response = conn.getresponse()
    response.read()
    conn.close()
    assert response.status in (200, 201)

    on_disk = vcsim.datastore_dir / "iso" / "palette.iso"
    assert on_disk.read_bytes() == payload

    # The vSphere API sees the same file with its exact size.
    ds = find(si, vim.Datastore, "datastore1")
    spec: Any = V.host.DatastoreBrowser.SearchSpec(matchPattern=["palette.iso"], details=_file_details())
    result = wait_task(si, ds.browser.SearchDatastore_Task(datastorePath="[datastore1] iso", searchSpec=spec))
    assert [(f.path, f.fileSize) for f in result.file] == [("palette.iso", len(payload))]


def _file_details() -> Any:
    return V.host.DatastoreBrowser.FileInfo.Details(fileSize=True, fileType=True, modification=True)


def test_thumbprint_matches_the_served_certificate(vcsim: VcsimHandle) -> None:
    with (
        socket.create_connection((vcsim.host, vcsim.port), timeout=5) as raw,
        vcsim.ssl_context().wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    digest = hashlib.sha256(der).hexdigest().upper()
    assert vcsim.thumbprint == ":".join(digest[i : i + 2] for i in range(0, 64, 2))
    assert ssl.DER_cert_to_PEM_cert(der).strip() == vcsim.cert_path.read_text().strip()

    # A client trusting only the system CAs must refuse it: the certificate is fresh and self-signed.
    with (
        pytest.raises(ssl.SSLCertVerificationError),
        socket.create_connection((vcsim.host, vcsim.port), timeout=5) as raw,
        ssl.create_default_context().wrap_socket(raw, server_hostname="127.0.0.1"),
    ):
        pass


def test_guest_ip_set_through_extra_config_shows_in_guest_and_guest_net(si: Any) -> None:
    """What the watcher does once a guest answers SSH, and what the library then reads."""
    vm = create_vm(si, "node-1", [])
    mac = next(d.macAddress for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualEthernetCard))
    spec: Any = V.vm.ConfigSpec(
        extraConfig=[
            V.option.OptionValue(key="SET.guest.ipAddress", value="10.251.0.11"),
            V.option.OptionValue(key="SET.guest.hostName", value="node-1"),
        ]
    )
    wait_task(si, vm.ReconfigVM_Task(spec=spec))
    assert vm.guest.ipAddress == "10.251.0.11"
    assert vm.guest.hostName == "node-1"
    assert vm.summary.guest.ipAddress == "10.251.0.11"
    assert [(n.macAddress, list(n.ipAddress)) for n in vm.guest.net] == [(mac, ["10.251.0.11"])]


def test_failed_task_raises_with_its_fault(si: Any) -> None:
    vm = create_vm(si, "node-1", [])
    with pytest.raises(VcsimTaskError) as caught:
        wait_task(si, vm.PowerOffVM_Task())  # already off
    assert isinstance(caught.value.fault, vim.fault.InvalidPowerState)


def test_filemanager_task_is_awaited_where_wait_for_task_breaks(vcsim: VcsimHandle, si: Any) -> None:
    (vcsim.datastore_dir / "iso").mkdir()
    (vcsim.datastore_dir / "iso" / "old.iso").write_bytes(b"x")
    dc = find(si, vim.Datacenter)
    task = si.content.fileManager.DeleteDatastoreFile_Task(name="[datastore1] iso/old.iso", datacenter=dc)
    wait_task(si, task)
    assert not (vcsim.datastore_dir / "iso" / "old.iso").exists()


def test_killed_simulator_drops_clients_and_leaves_the_datastore(vcsim: VcsimHandle, si: Any) -> None:
    (vcsim.datastore_dir / "partial.iso").write_bytes(b"half")
    vcsim.kill()
    assert not vcsim.is_running()
    with pytest.raises((OSError, http.client.HTTPException, vmodl.fault.HostCommunication)):
        si.content.rootFolder.childEntity  # noqa: B018 - the read is the test
    assert (vcsim.datastore_dir / "partial.iso").read_bytes() == b"half"


def test_cli_up_status_down(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(LAB_DIR), VCSIM_PASSWORD=PASSWORD)
    workdir = tmp_path / "demo"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "vcsim.lab", *args, "--workdir", str(workdir)],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    up = cli("up", "--port", "0")
    assert up.returncode == 0, up.stderr
    state = json.loads((workdir / "state.json").read_text())
    assert PASSWORD not in (workdir / "state.json").read_text()
    try:
        assert cli("status").returncode == 0
        handle = VcsimHandle(
            url=state["url"], host=state["host"], port=state["port"], username=state["username"], password=PASSWORD,
            thumbprint=state["thumbprint"], cert_path=Path(state["cert_path"]), datastore=state["datastore"],
            datastore_dir=Path(state["datastore_dir"]), workdir=workdir, log_path=Path(state["log"]),
            pid=state["vcsim_pid"],
        )  # fmt: skip
        disconnect(connect(handle))
    finally:
        down = cli("down")
    assert down.returncode == 0, down.stderr
    assert not (workdir / "state.json").exists()
    assert (
        not Path(f"/proc/{state['vcsim_pid']}").exists()
        or b"vcsim" not in Path(f"/proc/{state['vcsim_pid']}/cmdline").read_bytes()
    )


def test_delay_slows_every_call(tmp_path: Path) -> None:
    """``-delay`` is how timeout tests get a slow vCenter; startup stays fast (the delay is set after it)."""
    start = time.monotonic()
    with start_vcsim(tmp_path / "slow", 0, "admin", PASSWORD, delay_ms=400) as slow:
        assert time.monotonic() - start < 10
        si = connect(slow)
        try:
            before = time.monotonic()
            si.content.rootFolder.childEntity  # noqa: B018 - one property read is one SOAP call
            assert time.monotonic() - before >= 0.4
        finally:
            disconnect(si)
