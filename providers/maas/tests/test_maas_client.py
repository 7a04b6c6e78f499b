"""The MAAS REST client against the MAAS region simulator (and, for hostile answers, a mock transport)."""

from __future__ import annotations

import hashlib
import logging
import pickle
import secrets
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from palette_provision.errors import (
    AuthenticationError,
    ConfigurationError,
    ProviderError,
    TLSVerificationError,
    TransientError,
)
from palette_provision.secrets import Secret
from palette_provision.testing.maas import MaasSimulatorHandle, start_maas_simulator
from palette_provision.testing.maas.oauth import ApiKey, NonceStore, check_authorization, parse_authorization
from palette_provision.tls import pinned_context
from palette_provision.waiting import Backoff, wait_for
from structlog.testing import capture_logs

from palette_provision_maas import _client
from palette_provision_maas._client import (
    MaasApiError,
    MaasClient,
    MaasConflict,
    MaasNotFound,
    MaasProtocolError,
    MaasUnavailable,
    Machine,
)
from palette_provision_maas._oauth import MaasApiKey

FAST = {"deploy_delay_s": 0.2, "erase_delay_s": 0.2}
BMC_PASSWORD = "bmc-password-" + secrets.token_hex(4)
MACHINES: list[dict[str, Any]] = [
    {"hostname": "node1", "system_id": "aaa111", "tags": ["palette"], "address": "10.251.0.11",
     "power_type": "redfish", "power_parameters": {"power_address": "https://10.252.1.2:8000", "power_user": "admin",
                                                   "power_pass": BMC_PASSWORD, "node_id": "/redfish/v1/Systems/1"}},
    {"hostname": "node2", "system_id": "bbb222", "tags": ["palette"], "address": "10.251.0.12", "cpu_count": 8,
     "power_type": "ipmi", "power_parameters": {"power_address": "10.252.2.2", "power_user": "admin",
                                                "power_pass": BMC_PASSWORD, "power_driver": "LAN_2_0"}},
]


def maas_client(url: str, key: Secret, **options: Any) -> MaasClient:
    """A client whose retries do not sleep (tests stay fast)."""
    return MaasClient(url, key, sleep=lambda _: None, backoff=Backoff(initial=0.01, maximum=0.05, jitter=0.0),
                      **options)


@pytest.fixture(scope="module")
def sim_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MaasSimulatorHandle]:
    with start_maas_simulator(tmp_path_factory.mktemp("maas-client"), machines=MACHINES, knobs=FAST) as handle:
        yield handle


@pytest.fixture
def sim(sim_process: MaasSimulatorHandle) -> MaasSimulatorHandle:
    sim_process.reset(**FAST)
    return sim_process


@pytest.fixture
def client(sim: MaasSimulatorHandle) -> Iterator[MaasClient]:
    with maas_client(sim.url, sim.api_key_secret()) as maas:
        yield maas


def wait_status(client: MaasClient, system_id: str, *names: str) -> Machine:
    return wait_for(lambda: client.get_machine(system_id), what=f"{system_id} to be {names}", timeout=10,
                    until=lambda m: m.status_name in names, backoff=Backoff(0.05, 0.1, 0.0))


# --------------------------------------------------------------------------------------------- the key
@pytest.mark.parametrize("bad", ["only:two", "a:b:c:d", "a::c", "ck:tk:has space", ""])
def test_key_shape_is_checked_without_showing_it(bad: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        MaasApiKey(Secret(bad, source="env:MAAS_APIKEY"), field="platform.api_key")
    message = str(caught.value)
    assert "env:MAAS_APIKEY" in message and message.startswith("platform.api_key: ")
    for part in bad.split(":"):
        assert len(part) < 3 or part not in message


def test_header_is_a_fresh_valid_plaintext_signature() -> None:
    key = MaasApiKey(Secret("consumer01:token0002:secret0003"))
    first, second = key.header(), key.header()
    for header in (first, second):
        check_authorization(header, ApiKey.parse("consumer01:token0002:secret0003"), NonceStore(), window=300)
    params_1, params_2 = parse_authorization(first), parse_authorization(second)
    assert params_1["oauth_signature"] == "&secret0003" and 'oauth_signature="%26secret0003"' in first
    assert params_1["oauth_nonce"] != params_2["oauth_nonce"]
    assert (params_1["oauth_version"], params_1["oauth_signature_method"]) == ("1.0", "PLAINTEXT")
    assert "secret0003" not in repr(key) and str(key) == "***"
    assert key.scrub("Invalid access token: token0002") == "Invalid access token: ***"
    with pytest.raises(TypeError):
        pickle.dumps(key)


def test_refused_key_names_the_url_never_the_key(sim: MaasSimulatorHandle) -> None:
    consumer, token, secret = sim.api_key.split(":")
    for wrong in (f"{consumer}:wrongtoken42:{secret}", f"{consumer}:{token}:wrongsecret42", "xxxx:yyyy:zzzz"):
        with maas_client(sim.url, Secret(wrong), key_field="platform.api_key") as maas, \
                pytest.raises(AuthenticationError) as caught:
            maas.whoami()
        message = str(caught.value)
        assert sim.url in message and "HTTP 401" in message
        for part in wrong.split(":") + [secret]:
            assert part not in message


def test_urls_are_normalized_and_checked() -> None:
    key = Secret("ck00:tk00:ts00")
    for given in ("http://maas:5240/MAAS", "http://maas:5240/MAAS/", "http://maas:5240/MAAS/api/2.0/"):
        assert MaasClient(given, key).url == "http://maas:5240/MAAS"
    for bad in ("ftp://maas/MAAS", "http://admin:hunter2pw@maas/MAAS", "maas:5240", "http://maas/MAAS?x=1"):
        with pytest.raises(ConfigurationError) as caught:
            MaasClient(bad, key)
        assert "hunter2pw" not in str(caught.value)


# --------------------------------------------------------------------------------------------- reads
def test_version_whoami_and_machines(client: MaasClient) -> None:
    assert client.version().version and client.whoami().username == "admin"
    machines = client.list_machines()
    assert [m.hostname for m in machines] == ["node1", "node2"]
    node1 = machines[0]
    assert (node1.system_id, node1.status, node1.status_name, node1.power_state) == ("aaa111", 4, "Ready", "off")
    assert node1.tag_names == ("palette",) and node1.zone == "default" and node1.mac_addresses
    assert [m.hostname for m in client.list_machines(hostname=["node2", "nodeX"])] == ["node2"]
    assert [m.hostname for m in client.list_machines(id="aaa111", tags="palette")] == ["node1"]
    assert client.get_machine("bbb222").cpu_count == 8
    with pytest.raises(MaasNotFound) as caught:
        client.get_machine("zzz999")
    assert caught.value.status == 404 and caught.value.text == "No Machine matches the given query."
    with pytest.raises(ValueError):
        client.list_machines(colour="blue")
    with pytest.raises(ValueError):
        client.get_machine("../../etc")


def test_reads_are_retried_on_transient_failures(sim: MaasSimulatorHandle, client: MaasClient) -> None:
    sim.set_knobs(drop_next={"GET /MAAS/api/2.0/machines/": 2}, fail_next={"GET /MAAS/api/2.0/users/": 2})
    assert len(client.list_machines()) == 2
    assert client.whoami().username == "admin"
    requests = sim.state()["requests"]
    assert requests["GET /MAAS/api/2.0/machines/"] == 3 and requests["GET /MAAS/api/2.0/users/?op=whoami"] == 3
    sim.set_knobs(drop_prefix="/MAAS/api/2.0/machines/")
    with pytest.raises(MaasUnavailable) as caught:
        client.get_machine("aaa111")
    assert isinstance(caught.value, TransientError) and caught.value.request_sent is True
    assert sim.state()["requests"]["GET /MAAS/api/2.0/machines/aaa111/"] == 5  # retries=5 (bounded)


# --------------------------------------------------------------------------------------------- allocation
def test_allocate_dry_run_conflict_and_agent_name(sim: MaasSimulatorHandle, client: MaasClient) -> None:
    dry = client.allocate({"tags": ["palette"], "cpu_count": 8}, agent_name="deploy-a", comment="c", dry_run=True)
    assert dry.hostname == "node2" and dry.status_name == "Ready" and sim.state()["allocations"] == {}
    taken = client.allocate({"tags": ["palette"]}, agent_name="deploy-a", comment="palette deploy-a node1")
    assert taken.status_name == "Allocated" and taken.owner == "admin"
    assert [m.system_id for m in client.list_machines(agent_name="deploy-a")] == [taken.system_id]
    client.allocate({"tags": "palette"}, agent_name="deploy-a", comment="node2")
    with pytest.raises(MaasConflict) as caught:
        client.allocate({"tags": ["palette"]}, agent_name="deploy-a", comment="node3")
    assert caught.value.status == 409 and caught.value.text.startswith("No available machine matches constraints")
    with pytest.raises(MaasApiError) as refused:
        client.allocate({"tags": ["nope"]}, agent_name="deploy-a", comment="x")
    assert refused.value.status == 400 and refused.value.text == "tags: No such tag(s): 'nope'."
    with pytest.raises(ValueError):
        client.allocate({"colour": "blue"}, agent_name="a", comment="c")


def test_allocate_is_never_sent_twice(sim: MaasSimulatorHandle, client: MaasClient) -> None:
    sim.set_knobs(drop_next={"POST /MAAS/api/2.0/machines/?op=allocate": 1})
    with pytest.raises(MaasUnavailable):
        client.allocate({"tags": ["palette"]}, agent_name="deploy-b", comment="c")
    sim.set_knobs(fail_next={"POST /MAAS/api/2.0/machines/?op=allocate": 1})
    with pytest.raises(MaasUnavailable) as caught:
        client.allocate({"tags": ["palette"]}, agent_name="deploy-b", comment="c")
    assert caught.value.status == 503
    assert sim.state()["requests"]["POST /MAAS/api/2.0/machines/?op=allocate"] == 2


def test_nothing_sent_is_retried_even_for_posts() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with maas_client(f"http://127.0.0.1:{port}/MAAS", Secret("ck00:tk00:ts00"), retries=3) as maas:
        sent: list[httpx.Request] = []
        original = maas._http.send

        def counting(request: httpx.Request, **kwargs: Any) -> httpx.Response:
            sent.append(request)
            response: httpx.Response = original(request, **kwargs)
            return response

        maas._http.send = counting  # type: ignore[method-assign]
        with pytest.raises(MaasUnavailable) as caught:
            maas.allocate({}, agent_name="a", comment="c")
    assert caught.value.request_sent is False and len(sent) == 3
    assert f"127.0.0.1:{port}" in str(caught.value)


# --------------------------------------------------------------------------------------------- lifecycle
def test_deploy_poll_release(sim: MaasSimulatorHandle, client: MaasClient) -> None:
    seed = b"#cloud-config\n# seed " + secrets.token_hex(8).encode() + b"\n"
    with pytest.raises(MaasConflict) as refused:
        client.deploy("aaa111", user_data=seed)
    assert "Ready" in refused.value.text
    client.allocate({"system_id": "aaa111"}, agent_name="deploy-c", comment="c")
    started = client.deploy("aaa111", user_data=seed, osystem="ubuntu", distro_series="noble", comment="go")
    assert started.status_name == "Deploying"
    deployed = wait_status(client, "aaa111", "Deployed", "Failed deployment")
    assert deployed.status == 6 and deployed.ip_addresses == ("10.251.0.11",) and deployed.power_state == "on"
    assert sim.machine("aaa111")["user_data"] == seed.decode()
    released = client.release("aaa111", erase=True, quick_erase=True, comment="destroy deploy-c")
    assert released.status_name == "Disk erasing"
    assert wait_status(client, "aaa111", "Ready").owner is None
    assert client.release("aaa111").status_name == "Ready"  # again: nothing to do, success
    (record,) = sim.state()["releases"]
    assert record["erase"] and record["quick_erase"] and record["comment"] == "destroy deploy-c"
    assert client.list_machines(agent_name="deploy-c") == []


def test_failed_deployment_message_and_event(sim: MaasSimulatorHandle, client: MaasClient) -> None:
    sim.set_knobs(fail_deploy_ids=["bbb222"], fail_deploy_message="Installation failed: no boot disk\x1b[31m")
    client.allocate({"system_id": "bbb222"}, agent_name="deploy-d", comment="c")
    client.deploy("bbb222", user_data=b"#cloud-config\n")
    failed = wait_status(client, "bbb222", "Deployed", "Failed deployment")
    assert failed.status == 11 and failed.status_message == "Installation failed: no boot disk [31m"
    events = client.events("bbb222", limit=5)
    assert events[0].level == "ERROR" and events[0].description.startswith("Installation failed")
    assert len(events) <= 5 and all(e.node == "bbb222" for e in events)


def test_power_and_power_parameters(client: MaasClient) -> None:
    with pytest.raises(MaasConflict):
        client.power_on("aaa111")
    client.allocate({"system_id": "aaa111"}, agent_name="deploy-e", comment="c")
    assert client.power_on("aaa111").power_state == "on"
    assert client.query_power_state("aaa111") == "on"
    assert client.power_off("aaa111", stop_mode="soft").power_state == "off"
    assert client.query_power_state("aaa111") == "off"
    params = client.power_parameters("aaa111")
    assert params["power_address"] == "https://10.252.1.2:8000" and params["power_user"] == "admin"
    assert isinstance(params["power_pass"], Secret) and params["power_pass"].reveal() == BMC_PASSWORD
    assert BMC_PASSWORD not in repr(params) and BMC_PASSWORD not in str(params)
    assert client.power_parameters("bbb222")["power_driver"] == "LAN_2_0"


# --------------------------------------------------------------------------------------------- images
def _image(tmp_path: Path, size: int = 300_000) -> tuple[Path, bytes, str]:
    data = secrets.token_bytes(size)
    path = tmp_path / "palette.raw"
    path.write_bytes(data)
    return path, data, hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("mode", ["partial", "after_append"])
def test_upload_resumes_after_dropped_connections(sim: MaasSimulatorHandle, client: MaasClient, tmp_path: Path,
                                                  mode: str) -> None:
    path, data, sha = _image(tmp_path)
    resource = client.create_boot_resource("custom/palette", "amd64/generic", filetype="ddraw", sha256=sha,
                                           size=len(data), title="Palette")
    assert not resource.complete and resource.files[0].upload_uri and resource.files[0].received == 0
    sim.set_knobs(drop_upload_next=2, drop_upload_after_bytes=10_000, drop_upload_mode=mode)
    seen: list[tuple[int, int]] = []
    stored = client.upload_chunks(resource.files[0].upload_uri, path, chunk_size=64 * 1024,
                                  progress=lambda done, total: seen.append((done, total)))
    assert stored == len(data) and seen[-1] == (len(data), len(data))
    assert client.boot_resource(resource.id).complete
    assert client.upload_status(resource.files[0].upload_uri).complete
    uploads = sim.state()["uploads"]
    assert uploads["dropped"] == 2 and uploads["completed"] == 1 and uploads["bytes"] == len(data)


def test_upload_from_an_offset_then_deploy_custom(sim: MaasSimulatorHandle, client: MaasClient,
                                                  tmp_path: Path) -> None:
    path, data, sha = _image(tmp_path)
    resource = client.create_boot_resource("custom/palette", "amd64/generic", filetype="ddraw", sha256=sha,
                                           size=len(data))
    uri = resource.files[0].upload_uri
    assert uri is not None
    first = tmp_path / "first-part"
    first.write_bytes(data[:100_000])
    assert client.upload_chunks(uri, first, chunk_size=30_000) == 100_000
    status = client.upload_status(uri)
    assert (status.received, status.size, status.complete) == (100_000, len(data), False)
    client.allocate({"system_id": "aaa111"}, agent_name="deploy-f", comment="c")
    with pytest.raises(MaasApiError) as early:
        client.deploy("aaa111", user_data=b"seed", osystem="custom", distro_series="palette")
    assert early.value.status == 400 and "distro_series" in early.value.text
    assert client.upload_chunks(uri, path, offset=status.received) == len(data)
    assert [r.name for r in client.boot_resources() if r.type == "Uploaded"] == ["custom/palette"]
    assert client.is_importing() is False
    client.deploy("aaa111", user_data=b"seed", osystem="custom", distro_series="palette")
    deployed = wait_status(client, "aaa111", "Deployed", "Failed deployment")
    assert (deployed.osystem, deployed.distro_series) == ("custom", "palette")
    assert client.delete_boot_resource(resource.id) is True
    assert client.delete_boot_resource(resource.id) is False


def test_sha_mismatch_is_final(client: MaasClient, tmp_path: Path) -> None:
    path, data, _ = _image(tmp_path, 50_000)
    resource = client.create_boot_resource("custom/broken", "amd64/generic", filetype="ddraw", sha256="0" * 64,
                                           size=len(data))
    uri = resource.files[0].upload_uri
    assert uri is not None
    with pytest.raises(MaasApiError) as caught:
        client.upload_chunks(uri, path, chunk_size=20_000)
    assert caught.value.status == 400 and caught.value.text == "Saved content does not match given SHA256 value."
    assert client.upload_status(uri).received == 0


# --------------------------------------------------------------------------------------------- TLS
def test_tls_verification_modes(tmp_path: Path) -> None:
    with start_maas_simulator(tmp_path, machines=MACHINES[:1], knobs=FAST, tls=True) as sim:
        assert sim.cert_sha256 and sim.cert_file
        key = sim.api_key_secret()
        with MaasClient(sim.url, key, verify=pinned_context(sim.cert_sha256)) as pinned:
            assert pinned.whoami().username == "admin"
        with MaasClient(sim.url, key, verify=str(sim.cert_file)) as bundle:
            assert bundle.whoami().username == "admin"
        for verify in (pinned_context("ab" * 32), True):
            with maas_client(sim.url, key, verify=verify) as refused, \
                    pytest.raises(TLSVerificationError) as caught:
                refused.whoami()
            assert sim.url in str(caught.value)
        assert sim.state()["requests"].get("GET /MAAS/api/2.0/users/?op=whoami") == 2


# --------------------------------------------------------------------------------------------- hostile answers
def _mock(handler: Callable[[httpx.Request], httpx.Response]) -> MaasClient:
    return maas_client("http://maas.test/MAAS", Secret("consumer99:token0099:secret0099"), retries=1,
                       transport=httpx.MockTransport(handler))


@pytest.mark.parametrize(("answer", "message"), [
    (httpx.Response(200, text="<html>proxy login</html>"), "not JSON"),
    (httpx.Response(200, json={"system_id": "x", "hostname": "h", "status_name": "Ready"}), "'status'"),
    (httpx.Response(200, json={"system_id": "x", "hostname": "h", "status": "4", "status_name": "R"}), "'status'"),
    (httpx.Response(200, json=["not", "a", "machine"]), "not a JSON object"),
    (httpx.Response(200, json={"system_id": "x", "hostname": "h", "status": 4, "status_name": "R",
                               "interface_set": [{"mac_address": 7}]}), "'mac_address'"),
    (httpx.Response(200, json={"system_id": "x", "hostname": "h", "status": 4, "status_name": "R",
                               "ip_addresses": "10.0.0.1"}), "'ip_addresses'"),
])
def test_broken_answers_are_protocol_errors(answer: httpx.Response, message: str) -> None:
    with _mock(lambda request: answer) as maas, pytest.raises(MaasProtocolError) as caught:
        maas.get_machine("abc123")
    assert message in str(caught.value) and isinstance(caught.value, ProviderError)


def test_error_texts_are_data() -> None:
    hostile = "No machine \x1b[2J\x00matches token0099 secret0099 " + "A" * 5000 + "\r\nInjected: header"
    with _mock(lambda request: httpx.Response(409, text=hostile)) as maas, pytest.raises(MaasConflict) as caught:
        maas.allocate({}, agent_name="a", comment="c")
    text = caught.value.text
    assert len(text) <= 300 and text.endswith("...") and "\x1b" not in text and "\x00" not in text
    assert "token0099" not in str(caught.value) and "secret0099" not in str(caught.value) and "\n" not in text
    with _mock(lambda request: httpx.Response(500, text="boom")) as maas, pytest.raises(MaasUnavailable) as failed:
        maas.whoami()
    assert failed.value.status == 500


def test_upload_uri_must_stay_on_the_region(tmp_path: Path) -> None:
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200, text="OK")

    path = tmp_path / "img"
    path.write_bytes(b"x" * 10)
    with _mock(handler) as maas:
        for uri in ("http://evil.test/MAAS/api/2.0/boot-resources/1/upload/2/", "/elsewhere/upload/2/",
                    "/MAAS/api/2.0/machines/"):
            with pytest.raises(MaasProtocolError):
                maas.upload_chunks(uri, path)
        assert maas.upload_chunks("http://maas.test/MAAS/api/2.0/boot-resources/1/upload/2/", path) == 10
    assert [r.url.host for r in requests] == ["maas.test"]
    assert requests[0].headers["content-type"] == "application/octet-stream"


def test_null_fields_and_missing_ca_bundle(tmp_path: Path) -> None:
    sparse = {"system_id": "x", "hostname": "h", "status": 4, "status_name": "Ready", "cpu_count": None,
              "memory": None, "storage": None, "tag_names": None, "interface_set": None, "owner": None,
              "status_message": None, "zone": None}
    with _mock(lambda request: httpx.Response(200, json=sparse)) as maas:
        machine = maas.get_machine("x")
    assert (machine.cpu_count, machine.tag_names, machine.owner, machine.zone) == (0, (), None, "")
    with pytest.raises(ConfigurationError, match="CA bundle"):
        MaasClient("https://maas.test/MAAS", Secret("ck00:tk00:ts00"), verify=str(tmp_path / "missing.pem"))


def test_oversized_answers_and_odd_power_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_client, "MAX_ANSWER_BYTES", 1000)
    with _mock(lambda request: httpx.Response(200, json=["x" * 2000])) as maas, pytest.raises(MaasProtocolError):
        maas.list_machines()
    nested = {"power_address": "10.0.0.1", "extra": {"power_pass": "x"}}
    with _mock(lambda request: httpx.Response(200, json=nested)) as maas, pytest.raises(MaasProtocolError):
        maas.power_parameters("abc123")
    with _mock(lambda request: httpx.Response(200, json={"power_pass": "p" * 8, "k_g": "kg-key-1"})) as maas:
        params = maas.power_parameters("abc123")
    assert all(isinstance(v, Secret) for v in params.values())


# --------------------------------------------------------------------------------------------- secrets
def test_secrets_stay_out_of_logs_and_errors(sim: MaasSimulatorHandle, client: MaasClient,
                                             caplog: pytest.LogCaptureFixture) -> None:
    # Both routes an event may take: structlog when the application configured it (capture_logs does, and so may
    # an earlier test in the same process), the standard library otherwise (caplog, every third-party logger).
    caplog.set_level(logging.DEBUG)
    seed_marker = "seed-" + secrets.token_hex(8)
    messages = []
    with capture_logs() as events:
        client.allocate({"system_id": "aaa111"}, agent_name="deploy-g", comment="c")
        client.deploy("aaa111", user_data=f"#cloud-config\n# {seed_marker}\n".encode())
        client.power_parameters("aaa111")
        sim.set_knobs(drop_next={"GET /MAAS/api/2.0/machines/aaa111/": 1})
        client.get_machine("aaa111")
        consumer, token, secret = sim.api_key.split(":")
        with maas_client(sim.url, Secret(f"{consumer}:{token}x:{secret}")) as wrong, \
                pytest.raises(AuthenticationError) as caught:
            wrong.whoami()
    messages.append(str(caught.value))
    logged = caplog.text + repr(events) + "\n".join(messages)
    names = {e["event"] for e in events}
    assert {"maas_deploy", "maas_request_retry"} <= names, names
    for value in (consumer, token, secret, seed_marker, BMC_PASSWORD):
        assert value not in logged
