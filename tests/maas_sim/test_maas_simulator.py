"""The MAAS region simulator over real HTTP: OAuth checks, machines' lifecycle, boot-resource uploads, knobs."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import ssl
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from palette_provision.testing.maas import MaasSimulatorHandle, start_maas_simulator
from palette_provision.tls import pinned_context

FAST = {"deploy_delay_s": 0.2, "erase_delay_s": 0.2}
REDFISH = {"power_address": "https://10.252.1.2:8000", "power_user": "admin", "power_pass": "bmc-pass-1",
           "node_id": "/redfish/v1/Systems/node1"}
IPMI = {"power_address": "10.252.2.2", "power_user": "admin", "power_pass": "bmc-pass-2", "power_driver": "LAN_2_0"}
MACHINES = [
    {"hostname": "node1", "system_id": "aaa111", "cpu_count": 4, "memory": 8192, "disks": [120], "tags": ["palette"],
     "zone": "default", "pool": "palette", "mac": "52:54:00:00:00:11", "address": "10.251.0.11",
     "power_type": "redfish", "power_parameters": REDFISH},
    {"hostname": "node2", "system_id": "bbb222", "cpu_count": 8, "memory": 16384, "disks": [240, 500],
     "tags": ["palette", "big"], "zone": "lab", "pool": "palette", "mac": "52:54:00:00:00:12",
     "address": "10.251.0.12", "power_type": "ipmi", "power_parameters": IPMI},
    {"hostname": "node3", "system_id": "ccc333", "architecture": "arm64/generic", "cpu_count": 2, "memory": 4096,
     "tags": ["spare"], "mac": "52:54:00:00:00:13"},
]
CONFIG = {"zones": ["lab"], "pools": ["palette"], "tags": ["unused"], "machines": MACHINES}


def oauth(key: str, **override: str | None) -> dict[str, str]:
    """A PLAINTEXT OAuth header for ``key``; ``override`` changes (or, with None, removes) fields."""
    ck, tk, ts = key.split(":")
    params: dict[str, str | None] = {
        "oauth_version": "1.0", "oauth_signature_method": "PLAINTEXT", "oauth_consumer_key": ck,
        "oauth_token": tk, "oauth_signature": "&" + ts, "oauth_nonce": secrets.token_hex(8),
        "oauth_timestamp": str(int(time.time())),
    }
    params.update(override)
    header = ", ".join(f'{k}="{quote(v, safe="")}"' for k, v in params.items() if v is not None)
    return {"Authorization": f"OAuth {header}"}


class Api:
    """Raw httpx calls on the simulator's API with a fresh OAuth header each time."""

    def __init__(self, sim: MaasSimulatorHandle) -> None:
        self.sim = sim
        self.http = httpx.Client(base_url=sim.root_url, timeout=10, verify=sim.ssl_context() or True)

    def __call__(self, method: str, path: str, *, op: str | None = None, **kwargs: Any) -> httpx.Response:
        params = dict(kwargs.pop("params", {}) or {})
        if op:
            params["op"] = op
        headers = {**oauth(self.sim.api_key), **kwargs.pop("headers", {})}
        return self.http.request(method, "/MAAS/api/2.0/" + path, params=params, headers=headers, **kwargs)


@pytest.fixture(scope="module")
def sim_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MaasSimulatorHandle]:
    with start_maas_simulator(tmp_path_factory.mktemp("maas"), config=CONFIG, knobs=FAST) as handle:
        yield handle


@pytest.fixture
def sim(sim_process: MaasSimulatorHandle) -> MaasSimulatorHandle:
    sim_process.reset(**FAST)
    return sim_process


@pytest.fixture
def api(sim: MaasSimulatorHandle) -> Iterator[Api]:
    client = Api(sim)
    yield client
    client.http.close()


# --------------------------------------------------------------------------------------------- authentication
def test_version_is_anonymous_whoami_is_not(sim: MaasSimulatorHandle, api: Api) -> None:
    version = httpx.get(sim.api_url + "version/").json()
    assert set(version) == {"capabilities", "version", "subversion"}
    anonymous = httpx.get(sim.api_url + "users/", params={"op": "whoami"})
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"].startswith("text/plain")
    me = api("GET", "users/", op="whoami")
    assert me.status_code == 200 and me.json()["username"] == "admin" and me.json()["is_superuser"] is True


@pytest.mark.parametrize("change", [
    {"oauth_version": None}, {"oauth_signature_method": None}, {"oauth_consumer_key": None}, {"oauth_token": None},
    {"oauth_signature": None}, {"oauth_nonce": None}, {"oauth_timestamp": None},
    {"oauth_version": "2.0"}, {"oauth_signature_method": "HMAC-SHA1"}, {"oauth_consumer_key": "nobody"},
    {"oauth_token": "not-the-token"}, {"oauth_signature": "&wrong"}, {"oauth_signature": "consumer&"},
    {"oauth_timestamp": str(int(time.time()) - 3600)}, {"oauth_timestamp": "soon"},
], ids=lambda change: ",".join(f"{k}={v}" for k, v in change.items()))
def test_every_oauth_field_is_checked(sim: MaasSimulatorHandle, change: dict[str, str | None]) -> None:
    response = httpx.get(sim.api_url + "machines/", headers=oauth(sim.api_key, **change))
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("text/plain")
    assert response.headers["www-authenticate"] == 'OAuth realm="API"'
    assert response.text.startswith("Authorization Error")


def test_wrong_scheme_and_reused_nonce_are_refused(sim: MaasSimulatorHandle) -> None:
    ck, tk, ts = sim.api_key.split(":")
    assert httpx.get(sim.api_url + "machines/", headers={"Authorization": f"Bearer {tk}"}).status_code == 401
    header = oauth(sim.api_key)
    assert httpx.get(sim.api_url + "machines/", headers=header).status_code == 200
    replay = httpx.get(sim.api_url + "machines/", headers=header)
    assert replay.status_code == 401 and "Nonce already used" in replay.text
    # The signature may arrive percent-encoded (RFC 5849, as oauthlib sends it) or raw.
    raw = oauth(sim.api_key)["Authorization"].replace(f'oauth_signature="%26{ts}"', f'oauth_signature="&{ts}"')
    assert httpx.get(sim.api_url + "machines/", headers={"Authorization": raw}).status_code == 200
    assert sum(sim.state()["auth_failures"].values()) == 2


# --------------------------------------------------------------------------------------------- machines
def test_machines_list_filters_and_read(api: Api) -> None:
    def hostnames(**params: Any) -> list[str]:
        response = api("GET", "machines/", params=params)
        assert response.status_code == 200
        return [m["hostname"] for m in response.json()]

    assert hostnames() == ["node1", "node2", "node3"]
    assert hostnames(hostname=["node1", "node3"]) == ["node1", "node3"]
    assert hostnames(id="bbb222") == ["node2"]
    assert hostnames(mac_address="52:54:00:00:00:13") == ["node3"]
    assert hostnames(zone="lab") == ["node2"]
    assert hostnames(pool="palette") == ["node1", "node2"]
    assert hostnames(agent_name="nobody") == []
    machine = api("GET", "machines/aaa111/").json()
    assert machine["status"] == 4 and machine["status_name"] == "Ready" and machine["power_state"] == "off"
    assert machine["zone"]["name"] == "default" and machine["pool"]["name"] == "palette"
    assert machine["interface_set"][0]["mac_address"] == "52:54:00:00:00:11"
    assert machine["memory"] == 8192 and machine["storage"] == 120000.0 and machine["tag_names"] == ["palette"]
    assert "agent_name" not in machine  # MAAS does not show it; the list filter finds it
    missing = api("GET", "machines/zzz999/")
    assert missing.status_code == 404 and missing.text == "No Machine matches the given query."


def test_allocate_dry_run_then_allocate_then_conflict(sim: MaasSimulatorHandle, api: Api) -> None:
    dry = api("POST", "machines/", op="allocate", data={"tags": "palette", "dry_run": "true"})
    assert dry.status_code == 200 and dry.json()["status_name"] == "Ready"
    assert sim.state()["allocations"] == {} and sim.state()["dry_runs"] == 1
    first = api("POST", "machines/", op="allocate", data={"tags": "palette", "agent_name": "deploy-a",
                                                           "comment": "palette deployment a"})
    assert first.status_code == 200
    assert first.json()["status"] == 10 and first.json()["status_name"] == "Allocated"
    assert first.json()["owner"] == "admin"
    assert [m["hostname"] for m in api("GET", "machines/", params={"agent_name": "deploy-a"}).json()] == ["node1"]
    second = api("POST", "machines/", op="allocate", data={"tags": "palette"})
    assert second.json()["hostname"] == "node2"
    none_left = api("POST", "machines/", op="allocate", data={"tags": "palette"})
    assert none_left.status_code == 409
    assert none_left.headers["content-type"].startswith("text/plain")
    assert none_left.text.startswith("No available machine matches constraints")
    assert sim.state()["allocations"] == {"aaa111": 1, "bbb222": 1}


@pytest.mark.parametrize(("constraints", "expected"), [
    ({"cpu_count": "6"}, "node2"),
    ({"mem": "10000"}, "node2"),
    ({"tags": "palette,big"}, "node2"),
    ({"tags": ["palette", "big"]}, "node2"),
    ({"tags": "palette", "not_tags": "palette"}, None),
    ({"not_tags": ["palette"]}, "node3"),
    ({"zone": "lab"}, "node2"),
    ({"pool": "palette", "zone": "default"}, "node1"),
    ({"arch": "arm64"}, "node3"),
    ({"arch": "amd64/generic", "cpu_count": "5"}, "node2"),
    ({"storage": "200"}, "node2"),
    ({"storage": "root:100,400"}, "node2"),
    ({"name": "node3"}, "node3"),
    ({"system_id": "bbb222"}, "node2"),
    ({"system_id": "zzz999"}, None),
])
def test_allocate_constraints(api: Api, constraints: dict[str, Any], expected: str | None) -> None:
    response = api("POST", "machines/", op="allocate", data={**constraints, "dry_run": "true"})
    if expected is None:
        assert response.status_code == 409, response.text
    else:
        assert response.status_code == 200, response.text
        assert response.json()["hostname"] == expected


def test_allocate_rejects_unknown_names(api: Api) -> None:
    unknown_tag = api("POST", "machines/", op="allocate", data={"tags": "nope"})
    assert unknown_tag.status_code == 400 and unknown_tag.json() == {"tags": ["No such tag(s): 'nope'."]}
    assert api("POST", "machines/", op="allocate", data={"zone": "moon"}).status_code == 400
    bogus = api("POST", "machines/", op="allocate", data={"colour": "blue"})
    assert bogus.status_code == 400 and bogus.json() == {"colour": ["No such constraint."]}
    assert api("POST", "machines/", op="allocate", data={"tags": "unused"}).status_code == 409
    assert api("POST", "machines/", op="frobnicate").status_code == 400


def _allocate(api: Api, system_id: str, agent: str = "agent") -> None:
    response = api("POST", "machines/", op="allocate", data={"system_id": system_id, "agent_name": agent})
    assert response.status_code == 200, response.text


def test_deploy_needs_an_allocated_machine_then_deploys(sim: MaasSimulatorHandle, api: Api) -> None:
    user_data = b"#cloud-config\nhostname: node1\n"
    fields = {"user_data": base64.b64encode(user_data).decode(), "distro_series": "noble", "comment": "go"}
    refused = api("POST", "machines/aaa111/", op="deploy", data=fields)
    assert refused.status_code == 409 and "Ready" in refused.text
    _allocate(api, "aaa111")
    started = api("POST", "machines/aaa111/", op="deploy", data=fields)
    assert started.status_code == 200 and started.json()["status_name"] == "Deploying"
    assert started.json()["status"] == 9
    again = api("POST", "machines/aaa111/", op="deploy", data=fields)
    assert again.status_code == 409
    view = sim.wait_status("aaa111", "Deployed")
    assert view["user_data"] == user_data.decode() and view["osystem"] == "ubuntu"
    machine = api("GET", "machines/aaa111/").json()
    assert machine["status"] == 6 and machine["power_state"] == "on" and machine["ip_addresses"] == ["10.251.0.11"]
    assert machine["osystem"] == "ubuntu" and machine["distro_series"] == "noble"
    events = api("GET", "events/", op="query", params={"id": "aaa111"}).json()
    assert events["count"] == len(events["events"]) > 0
    assert events["events"][0]["description"] == "From 'Deploying' to 'Deployed'"
    assert {"type", "description", "created", "node", "level", "id", "hostname"} <= set(events["events"][0])


def test_deploy_of_a_ready_machine_allocates_it_when_asked(sim: MaasSimulatorHandle, api: Api) -> None:
    sim.set_knobs(deploy_allocates_ready=True)  # what real MAAS does
    started = api("POST", "machines/ccc333/", op="deploy", data={"agent_name": "implicit"})
    assert started.status_code == 200 and started.json()["status_name"] == "Deploying"
    assert sim.state()["allocations"] == {"ccc333": 1}
    assert sim.machine("ccc333")["agent_name"] == "implicit"


@pytest.mark.parametrize("knobs", [{"fail_deploy": True}, {"fail_deploy_ids": ["bbb222"]},
                                   {"fail_deploy_ids": ["node2"]}])
def test_failed_deployment(sim: MaasSimulatorHandle, api: Api, knobs: dict[str, Any]) -> None:
    sim.set_knobs(**knobs, fail_deploy_message="Installation failed: disk not found")
    _allocate(api, "bbb222")
    assert api("POST", "machines/bbb222/", op="deploy").status_code == 200
    view = sim.wait_status("bbb222", "Failed deployment")
    assert view["status"] == 11 and view["status_message"] == "Installation failed: disk not found"
    events = api("GET", "events/", op="query", params={"id": "bbb222", "level": "ERROR"}).json()["events"]
    assert [e["description"] for e in events] == ["Installation failed: disk not found"]


def test_release_with_and_without_erase(sim: MaasSimulatorHandle, api: Api) -> None:
    _allocate(api, "aaa111", agent="deploy-a")
    api("POST", "machines/aaa111/", op="deploy")
    sim.wait_status("aaa111", "Deployed")
    erasing = api("POST", "machines/aaa111/", op="release", data={"erase": "true", "quick_erase": "true",
                                                                  "comment": "destroy"})
    assert erasing.status_code == 200 and erasing.json()["status_name"] == "Disk erasing"
    view = sim.wait_status("aaa111", "Ready")
    assert view["owner"] is None and view["agent_name"] == "" and view["power_state"] == "off"
    assert view["ip_addresses"] == [] and view["user_data"] is None
    assert api("GET", "machines/", params={"agent_name": "deploy-a"}).json() == []
    # A released machine can be released again (MAAS: nothing to do) and allocated again.
    assert api("POST", "machines/aaa111/", op="release").json()["status_name"] == "Ready"
    _allocate(api, "aaa111")
    plain = api("POST", "machines/aaa111/", op="release")
    assert plain.json()["status_name"] == "Ready"
    releases = sim.state()["releases"]
    assert [(r["erase"], r["quick_erase"], r["comment"]) for r in releases] == [(True, True, "destroy"),
                                                                                (False, False, "")]
    assert sim.state()["allocations"] == {"aaa111": 2}
    sim.set_machine("ccc333", status=0)
    assert api("POST", "machines/ccc333/", op="release").status_code == 409


def test_power_operations_and_parameters(api: Api) -> None:
    refused = api("POST", "machines/aaa111/", op="power_on")
    assert refused.status_code == 409 and refused.text == "Can't start node: it hasn't been allocated."
    _allocate(api, "aaa111")
    assert api("POST", "machines/aaa111/", op="power_on").json()["power_state"] == "on"
    assert api("GET", "machines/aaa111/", op="query_power_state").json() == {"state": "on"}
    assert api("POST", "machines/aaa111/", op="power_off", data={"stop_mode": "soft"}).json()["power_state"] == "off"
    assert api("GET", "machines/aaa111/", op="query_power_state").json() == {"state": "off"}
    assert api("GET", "machines/aaa111/", op="power_parameters").json() == REDFISH
    assert api("GET", "machines/bbb222/", op="power_parameters").json() == IPMI
    assert api("POST", "machines/aaa111/", op="power_cycle").status_code == 400


# --------------------------------------------------------------------------------------------- boot resources
def _create(api: Api, data: bytes, name: str = "custom/palette", **extra: str) -> dict[str, Any]:
    fields = {"name": name, "architecture": "amd64/generic", "filetype": "ddraw", "title": "Palette",
              "sha256": hashlib.sha256(data).hexdigest(), "size": str(len(data)), **extra}
    response = api("POST", "boot-resources/", files={k: (None, v) for k, v in fields.items()})
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def _file(resource: dict[str, Any]) -> dict[str, Any]:
    (rset,) = resource["sets"].values()
    (rfile,) = rset["files"].values()
    return dict(rfile)


def _put(api: Api, uri: str, chunk: bytes) -> httpx.Response:
    return api.http.put(uri, content=chunk, headers={**oauth(api.sim.api_key),
                                                       "Content-Type": "application/octet-stream"})


def test_chunked_upload_completes_and_deploys_custom(sim: MaasSimulatorHandle, api: Api) -> None:
    data = secrets.token_bytes(300_000)
    resource = _create(api, data)
    rfile = _file(resource)
    assert rfile["complete"] is False and rfile["progress"] == 0.0 and rfile["filetype"] == "root-dd.raw"
    assert re.fullmatch(rf"/MAAS/api/2\.0/boot-resources/{resource['id']}/upload/\d+/", rfile["upload_uri"])
    listed = api("GET", "boot-resources/").json()
    assert {"id", "type", "name", "architecture", "resource_uri"} <= set(listed[-1]) and "sets" not in listed[-1]
    _allocate(api, "aaa111")
    early = api("POST", "machines/aaa111/", op="deploy", data={"osystem": "custom", "distro_series": "palette"})
    assert early.status_code == 400 and "distro_series" in early.json()
    for start in range(0, len(data), 100_000):
        assert _put(api, rfile["upload_uri"], data[start:start + 100_000]).status_code == 200
        if start == 0:
            progress = _file(api("GET", f"boot-resources/{resource['id']}/").json())["progress"]
            assert round(progress * len(data) / 100) == 100_000
    done = _file(api("GET", f"boot-resources/{resource['id']}/").json())
    assert done["complete"] is True and "upload_uri" not in done and "progress" not in done
    assert api("GET", "boot-resources/", op="is_importing").json() is False
    deploying = api("POST", "machines/aaa111/", op="deploy", data={"osystem": "custom", "distro_series": "palette"})
    assert deploying.status_code == 200, deploying.text
    view = sim.wait_status("aaa111", "Deployed")
    assert (view["osystem"], view["distro_series"]) == ("custom", "palette")
    assert Path(view["image_path"]).read_bytes() == data
    assert sim.state()["uploads"]["completed"] == 1


def test_upload_sha_mismatch_resets_the_file(sim: MaasSimulatorHandle, api: Api) -> None:
    data = b"a" * 5000
    rfile = _file(_create(api, data))
    assert _put(api, rfile["upload_uri"], data[:3000]).status_code == 200
    wrong = _put(api, rfile["upload_uri"], b"b" * 2000)
    assert wrong.status_code == 400 and wrong.text == "Saved content does not match given SHA256 value."
    (state_file,) = sim.state()["boot_resources"][-1]["files"]
    assert state_file["received"] == 0 and state_file["complete"] is False
    assert _put(api, rfile["upload_uri"], data).status_code == 200
    assert sim.state()["uploads"]["sha_mismatches"] == 1


def test_upload_refusals_and_delete(api: Api) -> None:
    data = b"c" * 1000
    resource = _create(api, data)
    uri = _file(resource)["upload_uri"]
    assert _put(api, uri, b"").text == "Missing data."
    assert _put(api, uri, data + b"x").text == "Too much data received."
    assert _put(api, uri.replace("/upload/", "/upload/9"), data).status_code == 404
    assert _put(api, uri, data).status_code == 200
    assert _put(api, uri, data).text == "Cannot upload to a complete file."
    invalid = api("POST", "boot-resources/", data={"name": "custom/x", "architecture": "mips/generic",
                                                   "sha256": "0" * 10, "size": "x"})
    assert invalid.status_code == 400 and {"architecture", "sha256", "size"} <= set(invalid.json())
    assert api("DELETE", f"boot-resources/{resource['id']}/").status_code == 204
    assert api("GET", f"boot-resources/{resource['id']}/").status_code == 404


@pytest.mark.parametrize(("mode", "kept"), [("partial", 0), ("after_append", 4096)])
def test_upload_dropped_mid_chunk(sim: MaasSimulatorHandle, api: Api, mode: str, kept: int) -> None:
    data = secrets.token_bytes(8192)
    resource = _create(api, data)
    uri = _file(resource)["upload_uri"]
    sim.set_knobs(drop_upload_next=1, drop_upload_after_bytes=1000, drop_upload_mode=mode)
    with pytest.raises(httpx.TransportError):
        _put(api, uri, data[:4096])
    held = _file(api("GET", f"boot-resources/{resource['id']}/").json())
    assert round(held["progress"] * len(data) / 100) == kept
    assert _put(api, uri, data[kept:]).status_code == 200
    assert _file(api("GET", f"boot-resources/{resource['id']}/").json())["complete"] is True
    assert sim.state()["uploads"]["dropped"] == 1


# --------------------------------------------------------------------------------------------- knobs
def test_latency_drop_and_fail_knobs(sim: MaasSimulatorHandle, api: Api) -> None:
    sim.set_knobs(latency_s=0.3)
    started = time.monotonic()
    assert api("GET", "machines/").status_code == 200
    assert time.monotonic() - started >= 0.3
    sim.set_knobs(latency_s=0.0, drop_next={"GET /MAAS/api/2.0/machines/": 1},
                  fail_next={"POST /MAAS/api/2.0/machines/?op=allocate": 1})
    with pytest.raises(httpx.TransportError):
        api("GET", "machines/")
    assert api("GET", "machines/").status_code == 200
    failed = api("POST", "machines/", op="allocate")
    assert failed.status_code == 503 and failed.headers["content-type"].startswith("text/plain")
    assert sim.state()["allocations"] == {}
    sim.set_knobs(drop_prefix="/MAAS/api/2.0/events/")
    with pytest.raises(httpx.TransportError):
        api("GET", "events/", op="query")
    assert sim.knobs()["drop_prefix"] == "/MAAS/api/2.0/events/"
    with pytest.raises(RuntimeError, match="unknown knob"):
        sim.set_knobs(no_such_knob=1)
    requests = sim.state()["requests"]
    assert requests["POST /MAAS/api/2.0/machines/?op=allocate"] == 1


def test_added_and_overridden_machines(sim: MaasSimulatorHandle, api: Api) -> None:
    added = sim.add_machine(hostname="node9", tags=["palette"], address="10.251.0.19")
    assert added["status_name"] == "Ready"
    assert api("GET", f"machines/{added['system_id']}/").json()["hostname"] == "node9"
    sim.set_machine("aaa111", status=8, status_message="broken on purpose")
    assert api("GET", "machines/aaa111/").json()["status_name"] == "Broken"


# --------------------------------------------------------------------------------------------- separate processes
HOOK = """
import json, os, pathlib, sys
record = {k: v for k, v in os.environ.items() if k.startswith("MAAS_SIM_")}
record["user_data"] = pathlib.Path(os.environ["MAAS_SIM_USER_DATA_FILE"]).read_text()
pathlib.Path(sys.argv[1]).write_text(json.dumps(record))
if os.environ["MAAS_SIM_HOSTNAME"] == "node2":
    sys.exit(3)
pathlib.Path(os.environ["MAAS_SIM_RESULT_FILE"]).write_text(json.dumps({"ip_addresses": ["10.251.0.99"]}))
"""


def test_on_deploy_hook(tmp_path: Path) -> None:
    hook = tmp_path / "hook.py"
    hook.write_text(HOOK)
    record = tmp_path / "record.json"
    config = {**CONFIG, "on_deploy": {"argv": [sys.executable, str(hook), str(record)], "timeout_s": 30}}
    with start_maas_simulator(tmp_path / "state", config=config, knobs=FAST) as sim:
        api = Api(sim)
        data = b"image-bytes" * 100
        rfile = _file(_create(api, data))
        assert _put(api, rfile["upload_uri"], data).status_code == 200
        _allocate(api, "aaa111")
        user_data = base64.b64encode(b"#cloud-config\n").decode()
        api("POST", "machines/aaa111/", op="deploy", data={"user_data": user_data, "distro_series": "custom/palette"})
        view = sim.wait_status("aaa111", "Deployed")
        assert view["ip_addresses"] == ["10.251.0.99"]
        seen = json.loads(record.read_text())
        assert seen["MAAS_SIM_SYSTEM_ID"] == "aaa111" and seen["MAAS_SIM_HOSTNAME"] == "node1"
        assert (seen["MAAS_SIM_OSYSTEM"], seen["MAAS_SIM_DISTRO_SERIES"]) == ("custom", "palette")
        assert seen["user_data"] == "#cloud-config\n" and seen["MAAS_SIM_ADDRESS"] == "10.251.0.11"
        assert Path(seen["MAAS_SIM_IMAGE_FILE"]).read_bytes() == data
        _allocate(api, "bbb222")
        api("POST", "machines/bbb222/", op="deploy")
        failed = sim.wait_status("bbb222", "Failed deployment")
        assert "exited 3" in failed["status_message"]


def test_state_survives_a_restart_and_https_pins(tmp_path: Path) -> None:
    with start_maas_simulator(tmp_path, config=CONFIG, knobs=FAST, tls=True) as sim:
        assert sim.scheme == "https" and sim.cert_sha256
        api = Api(sim)
        _allocate(api, "aaa111", agent="deploy-z")
        sim.set_knobs(deploy_delay_s=60)
        api("POST", "machines/aaa111/", op="deploy")
        key, fingerprint = sim.api_key, sim.cert_sha256
        sim.restart()  # knobs back to the start-time FAST: the resumed deployment ends at once
        assert sim.wait_status("aaa111", "Deployed")["agent_name"] == "deploy-z"
        assert (sim.api_key, sim.cert_sha256) == (key, fingerprint)
        pinned = httpx.Client(base_url=sim.root_url, verify=pinned_context(fingerprint))
        found = pinned.get("/MAAS/api/2.0/machines/", params={"agent_name": "deploy-z"}, headers=oauth(key))
        assert [m["system_id"] for m in found.json()] == ["aaa111"]
        assert sim.state()["allocations"] == {"aaa111": 1}
        with pytest.raises(httpx.ConnectError) as caught:
            httpx.get(sim.api_url + "version/", verify=ssl.create_default_context())
        assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
