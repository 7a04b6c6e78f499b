"""The bare-metal provider on the lab's Redfish BMC (sushy-tools' emulator, its machine a real QEMU guest).

One deployment, end to end: ``apply`` enrolls the server, serves the lab appliance ISO and a FAT seed from the media
server, inserts both through virtual media (read back), boots once from the CD, waits for the installer to power the
server off, ejects, boots from disk, and climbs the readiness ladder to an authenticated SSH session with the seeded
host key; a re-run changes nothing; ``destroy`` leaves the server off, its media ejected, its boot override cleared.
No BMC session is left open at any point (the gate's count), and the emulator is driven over verified TLS (pinned).
"""

from __future__ import annotations

import functools
import io
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sushy  # type: ignore[import-untyped]
import yaml
from bmclab.lossy import LossyLink
from bmclab.redfish import RedfishLab, RedfishNode
from palette_provision.errors import AuthenticationError, ConfigurationError, ProviderError, TransientError
from palette_provision.log import get_logger
from palette_provision.media_server import find_media_server, stop_media_server
from palette_provision.pipeline import Deployment
from palette_provision.plan import DeploymentPlan, parse_plan
from palette_provision.provider import BootDevice, Machine, PowerState, ProviderContext
from palette_provision.registry import create_provider
from palette_provision.report import Event
from palette_provision.secrets import Secret
from palette_provision.testing.contract import ProviderContract
from pplab import net
from pplab.disk import read_install_state
from pplab.net import LanDhcp
from structlog.testing import capture_logs
from sushy.auth import BasicAuth  # type: ignore[import-untyped]

from palette_provision_baremetal._bmc import BmcGate
from palette_provision_baremetal._redfish import RedfishDriver

REPO = Path(__file__).resolve().parents[3]
APPLIANCE_ISO = REPO / "lab" / "build" / "appliance.iso"
NODE, MAC, ADDRESS = "rf-e2e", "52:54:00:5e:02:41", "10.251.0.141"
PASSWORD_ENV, BMC_PASSWORD_ENV = "PP_BM_NODE_PASSWORD", "PP_BM_BMC_PASSWORD"

pytestmark = [pytest.mark.lab, pytest.mark.qemu]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedfishLab]:
    assert APPLIANCE_ISO.is_file(), "the lab appliance ISO is built by ./dev setup (lab/install.sh)"
    net.ensure_lan()
    # Listening on every address: the lossy-link test reaches it through a relay in the lab's LAN namespace.
    with RedfishLab([RedfishNode(NODE, MAC, ADDRESS)], install_delay_s=2, listen_host="0.0.0.0",  # noqa: S104
                    workdir=tmp_path_factory.mktemp("redfish")) as running:  # fmt: skip
        yield running


@pytest.fixture(autouse=True)
def server_as_a_passing_test_leaves_it(lab: RedfishLab) -> Iterator[None]:
    """After each test, whatever it did: no failure left to inject, no media inserted, the server off. A test that
    failed before its ``destroy`` would otherwise fail every later one (their preflight refuses a server that is on)."""
    yield
    lab.clear_faults()
    system = _system(lab)
    for member in system.virtual_media.get_members():
        if member.inserted:
            member.eject_media()
    if system.power_state != sushy.POWER_STATE_OFF:
        system.reset_system(sushy.RESET_FORCE_OFF)
        deadline = time.monotonic() + 60
        while system.power_state != sushy.POWER_STATE_OFF and time.monotonic() < deadline:
            time.sleep(0.5)
            system.refresh()


@pytest.fixture(scope="module")
def plan_data(lab: RedfishLab, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("plan")
    key = work / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    os.environ[PASSWORD_ENV] = "bm-node-password-1"
    os.environ[BMC_PASSWORD_ENV] = lab.password
    bmc = lab.bmc(NODE)
    return {
        "name": "bm-e2e",
        "profile": "appliance",
        "iso": {"source": str(APPLIANCE_ISO)},
        "cluster": {
            "name": "bm", "vip": "10.251.0.140", "dns": ["10.251.0.1"],
            "ssh_public_keys": [key.with_suffix(".pub").read_text().strip()],
            "node_account": {"username": "kairos", "password": f"env:{PASSWORD_ENV}",
                             "ssh_private_key": f"file:{key}"},
        },
        "nodes": {
            "size": "small", "install_disk": "/dev/sda",
            "network": {"mode": "static", "gateway": "10.251.0.1"},
            "hosts": [{
                "name": NODE, "address": f"{ADDRESS}/24",
                "bmc": {"protocol": "redfish", "address": "127.0.0.1", "port": int(bmc.url.rsplit(":", 1)[1]),
                        "username": lab.username, "password": f"env:{BMC_PASSWORD_ENV}",
                        "fingerprint": lab.fingerprint, "system_id": bmc.system_id},
            }],
        },
        "readiness": {"ssh": True, "local_api": False},
        "handoff": {"kind": "inventory", "output_dir": str(work / "out")},
        "timeouts": {"install": 600, "ready": 300},
        "platform": {"provider": "baremetal", "media_server": {"bind": "127.0.0.1:0"}, "min_command_interval_s": 0.1},
    }  # fmt: skip


def _system(lab: RedfishLab) -> Any:
    bmc = lab.bmc(NODE)
    root = sushy.Sushy(bmc.url, auth=BasicAuth(bmc.username, bmc.password), verify=str(bmc.cert_path))
    system = root.get_system(bmc.system_path)
    return system


def test_apply_installs_through_virtual_media_and_destroy_restores_the_server(
    lab: RedfishLab, plan_data: dict[str, Any], tmp_path: Path
) -> None:
    state = tmp_path / "state"
    plan = parse_plan(plan_data)
    mark, requests_mark = len(lab.events()), len(lab.requests())

    # While the installer runs, the BMC answers two reads with HTTP 500 (busy for a moment): the provider retries
    # them, says so, and the install goes on. Armed as the wait for the install starts, so the failures land in
    # that wait's reads, whatever the machine's speed.
    def fail_reads_during_the_install(event: Event) -> None:
        if (event.phase, event.node, event.status) == ("await_install", NODE, "started"):
            lab.fail_next_requests("GET", 2, status=500)

    with Deployment(plan, state_dir=state, on_event=fail_reads_during_the_install) as deployment, \
            capture_logs() as logged:  # fmt: skip
        report = deployment.apply()
        provider: Any = deployment.provider
        assert report.ok, report.failures()
        assert lab.requests_left_to_fail("GET") == 0, "the BMC's failing reads came while the apply ran"
        waits = [(e["event"], e.get("node")) for e in logged if e["event"].startswith("wait_")]
        assert ("wait_failing", NODE) in waits and ("wait_answering_again", NODE) in waits, waits
        [node] = report.nodes
        assert (node.status, node.address) == ("ready", ADDRESS)
        assert [e["rung"] for e in node.evidence][-4:] == ["address", "ssh_banner", "host_key", "ssh_session"]
        opened, closed = provider.sessions
        assert opened == closed > 0, "every BMC session was closed"
        # Each request is a handshake of its own on a management network: the plan names the system, so the
        # service root is never read, and the slots are listed once (preflight), then read one by one.
        asked = [(r.method, r.path) for r in lab.requests()[requests_mark:]]
        system_path = f"/redfish/v1/Systems/{lab.bmc(NODE).system_id}"
        assert ("GET", "/redfish/v1/") not in asked
        assert asked.count(("GET", f"{system_path}/VirtualMedia")) == 1, asked

        # The install ran once, onto the named disk, from the ISO and the FAT seed the media server served.
        installed = read_install_state(lab.disk(NODE))
        assert installed is not None and (installed.count, installed.hostname) == (1, NODE)
        assert installed.device == "/dev/sda"
        # What the machine did (the lab's own checks, folded in here: one boot pair proves both). Boot 1: from the
        # CD holding the very ISO the emulator downloaded from the media server, the seed on the removable slot
        # (the guest's /dev/vda); the install ended in the guest's own power-off, which the lab turned into the
        # BMC's Off. Boot 2: from the disk, no media.
        seen = lab.events()[mark:]
        boots = [e for e in seen if e.kind == "boot"]
        assert [b.boot for b in boots] == ["cd", "disk"], boots
        assert Path(boots[0].cd).is_relative_to(lab.workdir / "media") and Path(boots[0].cd).suffix == ".iso"
        assert boots[0].removable and (boots[1].cd, boots[1].removable) == ("", "")
        assert [e.status for e in seen if e.kind == "guest_exited"][:1] == [0]
        assert any(e.kind == "forced_off" for e in seen), "the guest's own power-off became a ForceOff"
        install = Path(boots[0].console).read_text(errors="replace")
        assert "seed found on /dev/vda" in install and "install: complete #1" in install, install[-3000:]
        assert "install: powering off" in install and "RE-INSTALL" not in install
        system = _system(lab)
        assert system.power_state == sushy.POWER_STATE_ON
        media = {m.identity: (m.inserted, m.image) for m in system.virtual_media.get_members()}
        assert all(not inserted for inserted, _ in media.values()), f"media left inserted: {media}"

        again = deployment.apply()
        assert again.ok
        assert read_install_state(lab.disk(NODE)).count == 1, "a re-run installs nothing"  # type: ignore[union-attr]

        destroyed = deployment.destroy()
        assert {e["result"] for e in destroyed} >= {"restored"}
        opened, closed = provider.sessions
        assert opened == closed
    # Closed with no seed left to serve, the media server stopped (it would have kept serving a seed).
    assert find_media_server(state / "providers" / "baremetal" / "media-server") is None
    system = _system(lab)
    system.refresh()
    assert system.power_state == sushy.POWER_STATE_OFF
    assert system.boot.enabled in (sushy.BOOT_SOURCE_ENABLED_DISABLED, sushy.BOOT_SOURCE_ENABLED_CONTINUOUS)


def test_a_dhcp_node_reports_its_address_to_the_media_server(
    lab: RedfishLab, plan_data: dict[str, Any], tmp_path: Path
) -> None:
    # No address in the plan: the seed's network stage sends the node's addresses to the media server with the
    # node's token, and the readiness ladder climbs from there (to the host key the seed pinned). The lease is not
    # the address the other tests plan, so only the report can have told it.
    leased = "10.251.0.143"
    host = {k: v for k, v in plan_data["nodes"]["hosts"][0].items() if k != "address"}
    nodes = {**plan_data["nodes"], "network": {"mode": "dhcp"}, "hosts": [host]}
    # The node reaches the host at its lab uplink address (the BMC emulator, on the host, too).
    platform = {**plan_data["platform"], "media_server": {"bind": "0.0.0.0:0", "advertise_host": "10.250.0.1"}}
    data = {**plan_data, "name": "bm-dhcp", "nodes": nodes, "platform": platform}
    before = read_install_state(lab.disk(NODE))
    media_dir = tmp_path / "state" / "providers" / "baremetal" / "media-server"
    with LanDhcp({MAC: leased}), Deployment(parse_plan(data), state_dir=tmp_path / "state") as deployment:
        report = deployment.apply()
        assert report.ok, report.failures()
        [node] = report.nodes
        assert (node.address, node.address_source) == (leased, "node"), "the node reported it"
        assert [e["rung"] for e in node.evidence][-4:] == ["address", "ssh_banner", "host_key", "ssh_session"]
        server = find_media_server(media_dir)
        assert server is not None, "the media server still runs (it holds the node's report)"
        reported = server.reported(NODE)
        assert reported is not None and reported.client == leased and f"{leased}/24" in reported.addresses
        log = (media_dir / "server.log").read_text()
        assert "address_reported" in log and server.reports.token_for(NODE) not in log, "the token is never logged"
        deployment.destroy(purge_media=True)
    installed = read_install_state(lab.disk(NODE))
    assert installed is not None and installed.count == (before.count if before else 0) + 1


def test_a_media_server_the_bmcs_could_not_reach_is_refused_at_preflight(
    lab: RedfishLab, plan_data: dict[str, Any], tmp_path: Path
) -> None:
    platform = {**plan_data["platform"], "media_server": {"bind": "127.0.0.1:0", "advertise_host": "127.0.0.2"}}
    data = {**plan_data, "name": "bm-unreachable", "platform": platform}
    with Deployment(parse_plan(data), state_dir=tmp_path / "state") as deployment:
        with pytest.raises(ConfigurationError) as info:
            deployment.apply()
        assert info.value.field == "platform.media_server"
        assert "127.0.0.2" in str(info.value) and "BMCs would fetch from" in str(info.value)
        assert deployment.journal.resources() == [], "nothing was changed before the refusal"
    stop_media_server(tmp_path / "state" / "providers" / "baremetal" / "media-server")


def _with_bmc(plan_data: dict[str, Any], name: str, **bmc: Any) -> dict[str, Any]:
    host = plan_data["nodes"]["hosts"][0]
    hosts = [{**host, "bmc": {**host["bmc"], **bmc}}]
    return {**plan_data, "name": name, "nodes": {**plan_data["nodes"], "hosts": hosts}}


def test_a_wrong_bmc_password_is_refused_at_preflight_naming_node_and_bmc(
    lab: RedfishLab, plan_data: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PP_BM_WRONG_PASSWORD", "not-the-bmc-password")
    data = _with_bmc(plan_data, "bm-wrong-pw", password="env:PP_BM_WRONG_PASSWORD")
    with Deployment(parse_plan(data), state_dir=tmp_path / "state") as deployment:
        with pytest.raises(AuthenticationError) as info:
            deployment.apply()
        assert deployment.journal.resources() == []
    message = str(info.value)
    assert f"node {NODE}: BMC 127.0.0.1:" in message and "refused the login" in message
    assert "not-the-bmc-password" not in message


def test_an_unreachable_bmc_is_a_configuration_error_naming_it(plan_data: dict[str, Any], tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    data = _with_bmc(plan_data, "bm-unreachable-bmc", port=closed_port)
    deployment = Deployment(parse_plan(data), state_dir=tmp_path / "state")
    with deployment, pytest.raises(ConfigurationError) as info:
        deployment.apply()
    assert info.value.field == "nodes.hosts[0].bmc"
    assert f"BMC 127.0.0.1:{closed_port} did not answer" in str(info.value)


def _driver(lab: RedfishLab, *, named: bool = True) -> RedfishDriver:
    """A driver for the lab's server, as the provider builds one (TLS pinned to the emulator's certificate).
    ``named=False``: no ``system_id``, so the driver finds the BMC's only system itself."""
    bmc = lab.bmc(NODE)
    return RedfishDriver(
        "127.0.0.1", int(bmc.url.rsplit(":", 1)[1]), bmc.username, Secret(bmc.password, source="test"), node=NODE,
        fingerprint=lab.fingerprint, system_id=bmc.system_id if named else None,
    )  # fmt: skip


def test_an_image_url_the_bmc_cannot_fetch_is_a_provider_error(lab: RedfishLab, tmp_path: Path) -> None:
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    files = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=files.serve_forever, daemon=True).start()
    missing = f"http://127.0.0.1:{files.server_address[1]}/missing.iso"  # a 404
    driver = _driver(lab)
    gate = BmcGate(0.0)
    try:
        with gate.session(driver) as session:
            cd = next(slot for slot in session.media_slots() if slot.kind.value == "cd")
            with pytest.raises(ProviderError, match=r"rejected inserting media in cd0 \(HTTP 400\)"):
                session.insert_media(cd, missing)
            assert cd not in session.inserted_media()
    finally:
        files.shutdown()
        files.server_close()
    assert gate.opened == gate.closed == 1


def test_a_read_answered_5xx_is_transient_and_a_command_fails_unless_answered_503(lab: RedfishLab) -> None:
    driver = _driver(lab)
    port = int(lab.bmc(NODE).url.rsplit(":", 1)[1])
    gate = BmcGate(0.0)
    where = f"node {NODE}: BMC 127.0.0.1:{port}"
    with gate.session(driver) as session:
        session.power_state()  # read when the session opened: the next one asks the BMC
        lab.fail_next_requests("GET", 1, status=500)
        with pytest.raises(TransientError) as read:
            session.power_state()
        assert str(read.value) == f"{where} answered HTTP 500 while reading the power state"
        assert session.power_state() is PowerState.OFF, "the next read answers"
        lab.fail_next_requests("PATCH", 1, status=500)
        with pytest.raises(ProviderError) as command:
            session.set_boot_device(BootDevice.CD, persistent=True)
        assert not isinstance(command.value, TransientError)
        assert str(command.value) == f"{where}: setting the boot device to cd failed (HTTP 500)"
        lab.fail_next_requests("PATCH", 1, status=503)
        with pytest.raises(TransientError, match=r"answered HTTP 503 while setting the boot device"):
            session.set_boot_device(BootDevice.CD, persistent=True)
        assert lab.requests_left_to_fail("PATCH") == 0 and lab.requests_left_to_fail("GET") == 0
    assert gate.opened == gate.closed == 1


def test_a_power_change_polled_through_a_failing_read_is_logged_with_node_and_bmc(lab: RedfishLab) -> None:
    driver = _driver(lab)
    with BmcGate(0.0).session(driver) as session, capture_logs() as logged:
        # set_power's own first read is the one the session opened with: the poll after the command asks next.
        lab.fail_next_requests("GET", 1, status=500)
        session.set_power(True)
        assert session.power_state() is PowerState.ON
        session.set_power(False)
    waits = [(e["event"], e.get("node"), e.get("bmc")) for e in logged if e["event"].startswith("wait_")]
    assert waits == [("wait_failing", NODE, driver.key), ("wait_answering_again", NODE, driver.key)], waits
    assert lab.requests_left_to_fail("GET") == 0


def test_after_the_first_session_a_command_asks_the_bmc_only_for_what_it_reads(lab: RedfishLab) -> None:
    # Each request is a TCP and TLS handshake of its own (seconds on a slow or lossy management network): where the
    # system and its slots are is learnt once, by the first session, from the service root and the collections.
    driver = _driver(lab, named=False)  # no system_id: the BMC's only system is found through the service root
    gate = BmcGate(0.0)

    def asked(command: Any) -> list[tuple[str, str]]:
        before = len(lab.requests())
        with gate.session(driver) as session:
            command(session)
        return [(r.method, r.path) for r in lab.requests()[before:]]

    system = f"/redfish/v1/Systems/{lab.bmc(NODE).system_id}"
    slots = [("GET", f"{system}/VirtualMedia/Cd"), ("GET", f"{system}/VirtualMedia/Floppy")]
    first = asked(lambda s: s.media_slots())
    assert first == [("GET", "/redfish/v1/"), ("GET", "/redfish/v1/Systems"), ("GET", system),
                     ("GET", f"{system}/VirtualMedia"), *slots], first  # fmt: skip
    assert asked(lambda s: s.power_state()) == [("GET", system)]
    assert asked(lambda s: s.media_slots()) == [("GET", system), *slots]
    assert gate.opened == gate.closed == 3


def test_a_seed_token_in_an_insert_request_never_reaches_the_applications_debug_log(lab: RedfishLab) -> None:
    # sushy logs each request's body at debug level, the InsertMedia URL included; an application that logs
    # everything at debug (its own handler on the root logger) must still not see the seed's token.
    token = "tok" + "E" * 40
    Secret(token, source="test seed token")  # registered, as the media server registers its tokens
    driver = _driver(lab)
    captured = io.StringIO()
    handler = logging.StreamHandler(captured)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        with BmcGate(0.0).session(driver) as session:
            cd = next(slot for slot in session.media_slots() if slot.kind.value == "cd")
            with pytest.raises(ProviderError):  # nothing answers there: the emulator refuses the URL
                session.insert_media(cd, f"http://127.0.0.1:9/seed/{token}/node-seed.img")
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    output = captured.getvalue()
    assert "sushy.connector DEBUG HTTP request: POST" in output, "sushy logged the request (the test sees it)"
    assert "/seed/***/node-seed.img" in output
    assert token not in output and lab.bmc(NODE).password not in output


def test_bmc_connections_retransmit_at_linear_intervals(lab: RedfishLab) -> None:
    # On a lossy management network the kernel's doubling retransmission timeout stalls a request for a minute;
    # the driver's connections ask Linux for linear timeouts (the thin-stream option), checked on the live socket.
    driver = _driver(lab)
    with BmcGate(0.0).session(driver) as session:
        assert session.power_state().value in ("on", "off")
        # A new connection from the session's own pool (the emulator closes each connection after its answer).
        url = lab.bmc(NODE).url
        pool = session.connector._session.get_adapter(url).poolmanager.connection_from_url(url)
        conn = pool._new_conn()
        conn.connect()
        try:
            thin_linear_timeouts = 16  # linux/tcp.h
            assert conn.sock.getsockopt(socket.IPPROTO_TCP, thin_linear_timeouts) == 1
            assert conn.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), "urllib3's defaults kept"
        finally:
            conn.close()


def test_a_deployment_completes_over_a_bmc_link_losing_30_percent_of_its_packets(
    plan_data: dict[str, Any], tmp_path: Path
) -> None:
    # A server of its own, whose install lasts long enough (a real one lasts many minutes) for a power-on poll
    # slowed by the lossy link to see it on: polling for "on" cannot tell a power-on still pending from an install
    # that already ended. At 30 % loss each way a request now and then stalls (seven losses in a row end the
    # kernel's linear retransmissions), so the plan gives each request 5 s (request_timeout_s) before it is tried
    # again, and the install outlasts a few such stalls. (With sushy's 60 s, tried three times inside sushy, the
    # install had to last 75 s.)
    name, mac, address = "rf-lossy", "52:54:00:5e:02:42", "10.251.0.142"
    with RedfishLab([RedfishNode(name, mac, address)], install_delay_s=30, listen_host="0.0.0.0",  # noqa: S104
                    workdir=tmp_path / "lab") as lossy_lab:  # fmt: skip
        emulator_port = int(lossy_lab.bmc(name).url.rsplit(":", 1)[1])
        with LossyLink(emulator_port, 30) as link:
            host = {**plan_data["nodes"]["hosts"][0], "name": name, "address": f"{address}/24"}
            host["bmc"] = {**host["bmc"], "address": link.address, "port": link.port,
                           "fingerprint": lossy_lab.fingerprint, "system_id": lossy_lab.bmc(name).system_id,
                           "password": "env:PP_BM_LOSSY_BMC_PASSWORD", "username": lossy_lab.username}  # fmt: skip
            os.environ["PP_BM_LOSSY_BMC_PASSWORD"] = lossy_lab.password
            platform = {**plan_data["platform"], "request_timeout_s": 5}
            data = {**plan_data, "name": "bm-lossy", "nodes": {**plan_data["nodes"], "hosts": [host]},
                    "platform": platform}  # fmt: skip
            with Deployment(parse_plan(data), state_dir=tmp_path / "state") as deployment:
                report = deployment.apply()
                provider: Any = deployment.provider
                assert report.ok, report.failures()
                opened, closed = provider.sessions
                assert opened == closed, "every session closed, retried ones included"
            assert link.dropped_packets() > 0, "the link really lost packets"
        # Cleaned up over a clean link (the lossy one proved the deployment; destroy's commands are the same kind).
        host["bmc"] = {**host["bmc"], "address": "127.0.0.1", "port": emulator_port}
        direct = {**data, "nodes": {**plan_data["nodes"], "hosts": [host]}}
        with Deployment(parse_plan(direct), state_dir=tmp_path / "state") as deployment:
            deployment.destroy(purge_media=True)
        installed = read_install_state(lossy_lab.disk(name))
        assert installed is not None and installed.count == 1


# ------------------------------------------------------------------------------------------------ SIGKILL

#: Every phase of the bare-metal chain, and the deployment-wide ones: the run is killed right after each.
PHASES = [("preflight", "*"), ("stage_media", "*"), ("stage_seed", "n"), ("acquire", "n"),
          ("insert_media", "n"), ("boot_once_from_cd", "n"), ("power_on", "n"), ("await_install", "n"),
          ("boot_from_disk", "n"), ("await_ready", "n")]  # fmt: skip

KILL_AFTER_PHASE = r"""
import os, signal, sys
from palette_provision.plan import load_plan
from palette_provision.pipeline import Deployment
phase, node = sys.argv[2], sys.argv[3]
def on_event(event):
    if event.status in ("done", "skipped") and event.phase == phase and event.node == node:
        os.kill(os.getpid(), signal.SIGKILL)
with Deployment(load_plan(sys.argv[1]), on_event=on_event) as d:
    d.apply()
"""


def test_killed_after_every_phase_resumes_with_one_install_and_the_media_server_outlives_the_kill(
    lab: RedfishLab, plan_data: dict[str, Any], tmp_path: Path
) -> None:
    plan_path = tmp_path / "plan.yaml"
    plan_path.write_text(yaml.safe_dump({**plan_data, "name": "bm-kill"}))
    media_dir = tmp_path / ".palette-provision" / "bm-kill" / "providers" / "baremetal" / "media-server"
    before = read_install_state(lab.disk(NODE))
    installs_before = before.count if before is not None else 0
    cd_boots_before = len([e for e in lab.events(kind="boot") if e.boot == "cd"])
    for phase, who in PHASES:
        killed = subprocess.run(
            [sys.executable, "-c", KILL_AFTER_PHASE, str(plan_path), phase, NODE if who == "n" else "*"],
            capture_output=True, text=True, timeout=900, check=False,
        )  # fmt: skip
        assert killed.returncode == -signal.SIGKILL, f"not killed after {phase}: {killed.stderr[-3000:]}"
        if phase == "power_on":
            # Killed with the install under way: the media server, a process of its own, still serves.
            assert find_media_server(media_dir) is not None, "the media server died with the run"
    applied = subprocess.run(
        [sys.executable, "-m", "palette_provision", "apply", str(plan_path), "--json"],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert applied.returncode == 0, applied.stdout[-3000:] + applied.stderr[-3000:]
    installed = read_install_state(lab.disk(NODE))
    assert installed is not None and installed.count == installs_before + 1, "one install across eleven runs"
    cd_boots = len([e for e in lab.events(kind="boot") if e.boot == "cd"])
    assert cd_boots == cd_boots_before + 1, "the server booted the installer once"
    destroyed = subprocess.run(
        [sys.executable, "-m", "palette_provision", "destroy", str(plan_path), "--purge-media"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert destroyed.returncode == 0, destroyed.stderr[-3000:]
    assert find_media_server(media_dir) is None


# ------------------------------------------------------------------------------------------------ the contract


class TestBaremetalContract(ProviderContract):
    """The core's provider contract (enrolled lifecycle), on the lab's Redfish BMC."""

    @pytest.fixture
    def plan(self, lab: RedfishLab, plan_data: dict[str, Any]) -> DeploymentPlan:
        return parse_plan(plan_data)

    @pytest.fixture
    def make_provider(self, plan: DeploymentPlan, tmp_path: Path) -> Callable[[], object]:
        def build() -> object:
            context = ProviderContext(
                deployment=plan.name,
                state_dir=tmp_path / "state",
                log=get_logger("palette_provision_baremetal"),
                nodes=tuple(plan.node_specs()),
            )
            return create_provider("baremetal", plan.platform_settings, context)

        return build

    @pytest.fixture
    def boot_device_of(self, lab: RedfishLab) -> Callable[[Machine], str | None]:
        """What the BMC says the next boot uses."""
        bmc = lab.bmc(NODE)
        return lambda machine: bmc.next_boot()
