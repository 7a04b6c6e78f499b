"""What the formed cluster answers beside the Local API: its applications, and at the VIP the system console's API
and the kube-apiserver stand-in (client certificates from the kubeconfig). One simulator for the module; each test
forms a fresh cluster (a fresh console with ``admin``/``admin``) on it."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from palette_provision.testing.localapi import SimulatorHandle, VipEndpoints, start_simulator

from .conftest import FAST, PASSWORD, api, upload, wait_until
from .test_cluster import body_for

KNOBS = {**FAST, "cluster_running_s": 0.2, "registry_sync_s": 0.4}
APPS = "/v1/edge-mgmt/cluster/applications"
DETAILS = "/v1/edge-mgmt/cluster/details"
NEW_PASSWORD = "Rotated-Passw0rd!x"  # noqa: S105 - a test value
PALETTE_NAMESPACES = ("cp-system", "hubble-system", "ingress-nginx", "jet-system", "ui-system")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorHandle]:
    handle = start_simulator("vip", tmp_path_factory.mktemp("vip"), password=PASSWORD, knobs=KNOBS)
    yield handle
    handle.stop()


def form(handle: SimulatorHandle, tmp_path: Path, wait: bool = True, **knobs: Any) -> VipEndpoints:
    """Factory-reset ``handle``, upload a bundle, create the cluster (and wait for Running); its VIP services."""
    handle.reset(**{**KNOBS, **knobs})
    bundle = tmp_path / "bundle.tar.zst"
    bundle.write_bytes(b"content" * 64)
    with api(handle) as client:
        assert upload(client, bundle).status_code == 201
        assert client.post("/v1/edge-mgmt/cluster", json=body_for(client, [handle])).status_code == 202
        if wait:
            wait_until(lambda: client.get(DETAILS).json()["status"]["clusterState"] == "Running")
    return handle.vip_services()


@pytest.fixture
def vip(node: SimulatorHandle, tmp_path: Path) -> VipEndpoints:
    return form(node, tmp_path)


def login(vip: VipEndpoints, password: str = "admin") -> dict[str, Any]:
    with vip.console_client(timeout=10) as client:
        response = client.post("/v1/auth/syslogin", json={"username": "admin", "password": password})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


@contextlib.contextmanager
def console(vip: VipEndpoints, password: str | None = NEW_PASSWORD) -> Iterator[httpx.Client]:
    """A console client with a token (after rotating ``admin`` to ``password`` unless it is None)."""
    token = login(vip)["Authorization"]
    with vip.console_client(timeout=10, headers={"Authorization": token}) as client:
        if password is not None:
            response = client.patch("/v1/system/admin/password/reset", json={
                "email": "ops@example.com", "oldPassword": "admin", "newPassword": password})
            assert response.status_code == 204, response.text
        yield client


def kubeconfig(handle: SimulatorHandle) -> dict[str, Any]:
    with api(handle) as client:
        text = client.get(DETAILS).json()["status"]["kubeconfig"]
    config: dict[str, Any] = yaml.safe_load(text)
    return config


def kube_context(handle: SimulatorHandle, tmp_path: Path, *, client_cert: bool = True) -> ssl.SSLContext:
    """A client context from the kubeconfig alone: its CA, and (unless told not to) its client certificate."""
    config = kubeconfig(handle)
    ca = base64.b64decode(config["clusters"][0]["cluster"]["certificate-authority-data"]).decode()
    context = ssl.create_default_context(cadata=ca)
    if client_cert:
        user = config["users"][0]["user"]
        (tmp_path / "admin.crt").write_bytes(base64.b64decode(user["client-certificate-data"]))
        (tmp_path / "admin.key").write_bytes(base64.b64decode(user["client-key-data"]))
        context.load_cert_chain(tmp_path / "admin.crt", tmp_path / "admin.key")
    return context


def served_sha256(host: str, port: int) -> str:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=5) as raw, context.wrap_socket(raw) as tls:
        return hashlib.sha256(tls.getpeercert(binary_form=True) or b"").hexdigest()


# ------------------------------------------------------------------------------------------------ Local API


def test_applications_follow_the_cluster_and_the_knob(node: SimulatorHandle, tmp_path: Path) -> None:
    node.reset(**KNOBS)
    with api(node) as client:
        assert client.get(APPS).status_code == 404
    with pytest.raises(LookupError):
        node.vip_services()
    form(node, tmp_path, wait=False, cluster_running_s=0.8)
    with api(node) as client:
        deploying = client.get(APPS).json()
        (template,) = deploying["clusterProfileTemplates"]
        assert {p["status"] for p in template["packs"]} == {"Deploying"}
        wait_until(lambda: client.get(DETAILS).json()["status"]["clusterState"] == "Running")
        packs = {p["name"]: p for p in client.get(APPS).json()["clusterProfileTemplates"][0]["packs"]}
        assert {"spectro-mgmt-plane", "spectro-ui", "nginx", "zot-registry"} <= set(packs)
        assert {p["status"] for p in packs.values()} == {"Running"}
        assert set(packs["nginx"]) >= {"name", "version", "layer", "type", "status", "startTime", "endTime",
                                       "values", "logo", "conditions", "contents"}
        node.set_knobs(app_not_running="spectro-ui")
        statuses = {p["name"]: p["status"] for p in client.get(APPS).json()["clusterProfileTemplates"][0]["packs"]}
        assert statuses.pop("spectro-ui") == "Error" and set(statuses.values()) == {"Running"}
        node.set_knobs(app_not_running_status="Deploying")
        ui = next(p for p in client.get(APPS).json()["clusterProfileTemplates"][0]["packs"] if p["name"] == "spectro-ui")
        assert ui["status"] == "Deploying" and ui["conditions"][0]["status"] == "False"
    with node.client(timeout=10) as anonymous:
        assert anonymous.get(APPS).status_code == 401


def test_the_kubeconfig_is_a_real_one_whose_key_is_the_state_s_canary(node: SimulatorHandle, vip: VipEndpoints) -> None:
    config = kubeconfig(node)
    assert config["clusters"][0]["cluster"]["server"] == f"https://{vip.vip}:6443"
    user = config["users"][0]["user"]
    assert set(user) == {"client-certificate-data", "client-key-data"}
    assert base64.b64decode(config["clusters"][0]["cluster"]["certificate-authority-data"]).decode() == vip.kube_ca_pem
    assert node.state()["cluster"]["kubeToken"] == user["client-key-data"]


# ------------------------------------------------------------------------------------------------ system console


def test_first_login_is_admin_admin_and_everything_else_waits_for_the_reset(node: SimulatorHandle,
                                                                           vip: VipEndpoints) -> None:
    first = login(vip)
    assert first["IsPasswordReset"] is False and first["IsEmailSet"] is False and first["IsMfa"] is False
    token = first["Authorization"]
    assert token.count(".") == 2
    with vip.console_client(timeout=10) as client:
        assert client.get("/v1/health/ping").json() == {"msg": "ok"}
        page = client.get("/system")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        wrong = client.post("/v1/auth/syslogin", json={"username": "admin", "password": "nope"})
        assert wrong.status_code == 401 and "nope" not in wrong.text
        assert client.get("/v1/registries/oci/summary").status_code == 401
        assert client.get("/v1/mgmt/app/health", headers={"Authorization": f"Bearer {token}"}).status_code == 401
        for path in ("/v1/registries/oci/summary", "/v1/mgmt/app/health", "/v1/system/users/me"):
            refused = client.get(path, headers={"Authorization": token})
            assert refused.status_code == 403 and refused.json()["code"] == "PasswordResetRequired", path
        by_cookie = client.get("/v1/mgmt/app/health", headers={"Cookie": f"Authorization={token}"})
        assert by_cookie.status_code == 403
    state = node.state()["console"]
    assert state["passwordChanged"] is False and state["loginFailures"] == 1


def test_password_reset_enforces_the_documented_rules(node: SimulatorHandle, vip: VipEndpoints) -> None:
    with console(vip, password=None) as client:
        def reset(old: str, new: str, email: str = "ops@example.com") -> httpx.Response:
            return client.patch("/v1/system/admin/password/reset",
                                json={"email": email, "oldPassword": old, "newPassword": new})

        for weak, rule in (("Sh0rt!", "14 characters"), ("alllowercase-123", "uppercase"),
                           ("ALLUPPERCASE-123", "lowercase"), ("No-Digits-Here-At-All", "digit"),
                           ("NoSpecials1234567", "special")):
            refused = reset("admin", weak)
            assert refused.status_code == 400 and rule in refused.json()["message"], weak
            assert weak not in refused.text
        assert reset("wrong-old", NEW_PASSWORD).status_code == 401
        assert reset("admin", NEW_PASSWORD, email="not-an-email").status_code == 400
        assert reset("admin", NEW_PASSWORD).status_code == 204
        assert reset(NEW_PASSWORD, NEW_PASSWORD).status_code == 400  # not the previous password
        assert client.get("/v1/mgmt/app/health").status_code == 200  # the same token works on
        me = client.get("/v1/system/users/me").json()
        assert me["status"]["isPasswordReset"] is True and me["spec"]["emailId"] == "ops@example.com"
    with vip.console_client(timeout=10) as client:
        assert client.post("/v1/auth/syslogin", json={"username": "admin", "password": "admin"}).status_code == 401
    after = login(vip, NEW_PASSWORD)
    assert after["IsPasswordReset"] is True and after["IsEmailSet"] is True
    state = node.state()["console"]
    assert state["passwordChanged"] is True and [c["via"] for c in state["passwordChanges"]] == ["reset"]
    assert NEW_PASSWORD not in str(node.state())


def test_five_failed_logins_lock_the_account_for_the_knob_s_time(node: SimulatorHandle, tmp_path: Path) -> None:
    vip = form(node, tmp_path, console_lockout_s=1.0)
    with vip.console_client(timeout=10) as client:
        def attempt(password: str) -> httpx.Response:
            return client.post("/v1/auth/syslogin", json={"username": "admin", "password": password})

        assert [attempt(f"bad-{i}").status_code for i in range(5)] == [401] * 5
        locked = attempt("admin")
        assert locked.status_code == 423 and locked.json()["code"] == "AccountLocked"
        assert 1 <= int(locked.headers["Retry-After"]) <= 2
        time.sleep(1.1)
        assert attempt("admin").status_code == 200
    state = node.state()["console"]
    assert (state["loginFailures"], state["locks"], state["failedStreak"]) == (5, 1, 0)


def test_health_follows_the_unhealthy_knob(node: SimulatorHandle, vip: VipEndpoints) -> None:
    with console(vip) as client:
        healthy = client.get("/v1/mgmt/app/health").json()
        assert healthy["isHealthy"] is True and healthy["messages"] == []
        assert set(healthy["namespaces"]) == set(PALETTE_NAMESPACES)
        node.set_knobs(console_unhealthy=True)
        sick = client.get("/v1/mgmt/app/health").json()
        assert sick["isHealthy"] is False and sick["messages"]
        assert client.get("/v1/system/version/installed").json()["version"]


def test_internal_registry_sync_runs_for_its_duration_and_counts_the_uploaded_packs(
    node: SimulatorHandle, vip: VipEndpoints, tmp_path: Path
) -> None:
    with api(node) as local:
        for name in ("nginx-1.12.1.zst", "spectro-ui-4.7.15.zst", "nginx-1.12.1.zst"):
            pack = tmp_path / name
            pack.write_bytes(name.encode() * 100)
            assert upload(local, pack, name=name).status_code == 201
        listed = local.get("/v1/edge-mgmt/cluster/registry/content/details").json()["status"]
        assert {(i["name"], i["version"]) for i in listed if i["contentType"] == "pack"} == {
            ("nginx", "1.12.1"), ("spectro-ui", "4.7.15")}
    with console(vip) as client:
        (registry,) = client.get("/v1/registries/oci/summary").json()["items"]
        assert registry["spec"]["providerType"] == "pack" and registry["spec"]["endpoint"] == f"https://{vip.vip}:30003"
        assert registry["status"]["sync"]["status"] == "Completed"
        uid = registry["metadata"]["uid"]
        status_path = f"/v1/registries/oci/{uid}/basic/sync/status"
        triggered = time.time()
        assert client.post(f"/v1/registries/oci/{uid}/basic/sync").status_code == 202
        running = client.get(status_path).json()
        assert running["status"] == "InProgress" and running["isSyncSupported"] is True
        assert set(running) == {"isSyncSupported", "status", "message", "lastRunTime", "lastSyncedTime"}
        done = wait_until(lambda: (s := client.get(status_path).json())["status"] != "InProgress" and s, timeout=5)
        assert done["status"] == "Completed" and done["message"] == "2 pack(s) found"
        assert time.time() - triggered >= 0.4 and done["lastSyncedTime"] > running["lastRunTime"]
        node.set_knobs(registry_sync_fails=True)
        assert client.post(f"/v1/registries/oci/{uid}/basic/sync").status_code == 202
        failed = wait_until(lambda: (s := client.get(status_path).json())["status"] != "InProgress" and s, timeout=5)
        assert failed["status"] == "Failed" and failed["message"]
        assert failed["lastSyncedTime"] == done["lastSyncedTime"]
        assert client.post("/v1/registries/oci/0000/basic/sync").status_code == 404
    runs = node.state()["console"]["registries"][0]["syncs"]
    assert [r["trigger"] for r in runs] == ["install", "sync", "sync"]
    assert runs[1]["packNames"] == ["nginx-1.12.1.zst", "spectro-ui-4.7.15.zst"]


def test_an_external_registry_is_validated_registered_listed_and_synced(node: SimulatorHandle, vip: VipEndpoints,
                                                                        ) -> None:
    spec = {"endpoint": "10.250.0.1:5443", "baseContentPath": "spectro-content", "providerType": "pack",
            "isSyncSupported": True,
            "auth": {"type": "basic", "username": "pusher", "password": "registry-Secret-1",
                     "tls": {"enabled": True, "insecureSkipVerify": False, "certificate": vip.kube_ca_pem}}}
    with console(vip) as client:
        assert client.post("/v1/registries/oci/basic/validate", json=spec).status_code == 204
        no_password = {**spec, "auth": {**spec["auth"], "password": ""}}
        refused = client.post("/v1/registries/oci/basic/validate", json=no_password)
        assert refused.status_code == 400 and refused.json()["details"]["field"] == "spec.auth.password"
        bad_ca = {**spec, "auth": {**spec["auth"], "tls": {"certificate": "not a pem"}}}
        assert client.post("/v1/registries/oci/basic/validate", json=bad_ca).status_code == 400
        body = {"metadata": {"name": "lab-registry"}, "spec": spec}
        created = client.post("/v1/registries/oci/basic", json=body)
        assert created.status_code == 201 and set(created.json()) == {"uid"} and created.headers["AuditUid"]
        assert client.post("/v1/registries/oci/basic", json=body).status_code == 409
        uid = created.json()["uid"]
        names = [i["metadata"]["name"] for i in client.get("/v1/registries/oci/summary").json()["items"]]
        assert names == ["OCI Pack Registry", "lab-registry"]
        one = client.get(f"/v1/registries/oci/{uid}/basic")
        assert one.json()["spec"]["endpoint"] == "10.250.0.1:5443" and "registry-Secret-1" not in one.text
        status = f"/v1/registries/oci/{uid}/basic/sync/status"
        assert client.get(status).json()["status"] == "InProgress"  # registering starts a sync
        assert wait_until(lambda: client.get(status).json()["status"] == "Completed", timeout=5)
    assert "registry-Secret-1" not in str(node.state())


def test_console_down_refuses_connections_and_a_changed_certificate_breaks_the_pin(
    node: SimulatorHandle, vip: VipEndpoints
) -> None:
    assert served_sha256(vip.host, vip.console_port) == vip.console_cert_sha256
    with console(vip) as client:
        assert client.get("/v1/health/ping").status_code == 200  # a kept-alive connection
        node.set_knobs(console_down=True)
        with pytest.raises(httpx.TransportError):
            client.get("/v1/health/ping")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((vip.host, vip.console_port), timeout=5).close()
        node.set_knobs(console_down=False)
        assert client.get("/v1/health/ping").status_code == 200  # same port again
        node.set_knobs(console_cert_changed=True)
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            client.get("/v1/health/ping")
    assert served_sha256(vip.host, vip.console_port) == vip.console_alt_cert_sha256
    assert node.state()["vip"]["consoleServedCertSha256"] == vip.console_alt_cert_sha256
    node.set_knobs(console_cert_changed=False)
    assert served_sha256(vip.host, vip.console_port) == vip.console_cert_sha256


# ------------------------------------------------------------------------------------------------ kube API


def test_the_kube_api_requires_the_kubeconfig_s_client_certificate(node: SimulatorHandle, vip: VipEndpoints,
                                                                   tmp_path: Path) -> None:
    anonymous = kube_context(node, tmp_path, client_cert=False)
    with pytest.raises((ssl.SSLError, OSError)), \
            socket.create_connection((vip.host, vip.kube_port), timeout=5) as raw, \
            anonymous.wrap_socket(raw, server_hostname=vip.vip) as tls:
        tls.sendall(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
        assert tls.recv(100)  # TLS 1.3 reports the missing certificate at the first read
    context = kube_context(node, tmp_path)
    with socket.create_connection((vip.host, vip.kube_port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=vip.vip) as tls:  # the kubeconfig's CA verifies the VIP name
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
    with httpx.Client(base_url=vip.kube_url, verify=context, timeout=10) as kube:
        assert kube.get("/version").json()["gitVersion"].startswith("v1.")


def test_pod_lists_per_namespace_and_the_crashloop_knob(node: SimulatorHandle, vip: VipEndpoints,
                                                         tmp_path: Path) -> None:
    with httpx.Client(base_url=vip.kube_url, verify=kube_context(node, tmp_path), timeout=10) as kube:
        for namespace in PALETTE_NAMESPACES:
            listing = kube.get(f"/api/v1/namespaces/{namespace}/pods").json()
            assert (listing["kind"], listing["apiVersion"]) == ("PodList", "v1")
            assert listing["metadata"]["resourceVersion"]
            assert 1 <= len(listing["items"]) <= 3, namespace
            for pod in listing["items"]:
                assert pod["metadata"]["namespace"] == namespace and pod["status"]["phase"] == "Running"
                (status,) = pod["status"]["containerStatuses"]
                assert status["ready"] is True and "running" in status["state"]
        assert kube.get("/api/v1/namespaces/kube-public/pods").json()["items"] == []
        everything = kube.get("/api/v1/pods").json()["items"]
        assert {p["metadata"]["namespace"] for p in everything} == set(PALETTE_NAMESPACES)
        missing = kube.get("/api/v1/namespaces/nope")
        assert missing.status_code == 404 and missing.json()["kind"] == "Status"
        assert kube.get("/api/v1/pods", params={"watch": "true"}).status_code == 400
        node.set_knobs(pod_crashloop="ui-system/spectro-ui")
        pods = kube.get("/api/v1/namespaces/ui-system/pods").json()["items"]
        assert {p["status"]["phase"] for p in pods} == {"Running"}
        for pod in pods:
            (status,) = pod["status"]["containerStatuses"]
            assert status["ready"] is False and status["state"]["waiting"]["reason"] == "CrashLoopBackOff"
        others = kube.get("/api/v1/namespaces/jet-system/pods").json()["items"]
        assert all(p["status"]["containerStatuses"][0]["ready"] for p in others)
        selected = kube.get("/api/v1/pods", params={"fieldSelector": "metadata.namespace=jet-system"}).json()
        assert {p["metadata"]["namespace"] for p in selected["items"]} == {"jet-system"}
    assert node.state()["vip"]["requests"]["kube"]["GET /api/v1/namespaces/ui-system/pods"] == 2


def test_lightkube_reads_the_pods_with_the_kubeconfig(node: SimulatorHandle, vip: VipEndpoints) -> None:
    lightkube = pytest.importorskip("lightkube")
    from lightkube.config.kubeconfig import KubeConfig
    from lightkube.resources.core_v1 import Pod

    config = kubeconfig(node)
    config["clusters"][0]["cluster"]["server"] = vip.kube_url  # the VIP is DNATed only in the lab
    client = lightkube.Client(KubeConfig.from_dict(config))
    pods = list(client.list(Pod, namespace="hubble-system"))
    assert pods and all(p.status.phase == "Running" for p in pods)  # type: ignore[union-attr]
    assert all(s.ready for p in pods for s in p.status.containerStatuses)  # type: ignore[union-attr]


# ------------------------------------------------------------------------------------------------ process


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_given_ports_are_used_and_a_restart_keeps_ports_console_and_ca(tmp_path: Path) -> None:
    ports = (free_port(), free_port())
    state_dir = tmp_path / "node"
    first = start_simulator("keep", state_dir, password=PASSWORD, knobs=KNOBS, console_port=ports[0],
                            kube_port=ports[1])
    try:
        vip = form(first, tmp_path)
        assert (vip.console_port, vip.kube_port) == ports
        with console(vip):
            pass
    finally:
        first.kill()
    second = start_simulator("keep", state_dir, password=PASSWORD, knobs=KNOBS)  # no ports given: the saved ones
    try:
        again = second.vip_services()
        assert (again.console_port, again.kube_port, again.kube_ca_pem) == (*ports, vip.kube_ca_pem)
        assert login(again, NEW_PASSWORD)["IsPasswordReset"] is True
        with api(second) as client:
            assert client.delete("/v1/edge-mgmt/cluster").status_code == 202
        wait_until(lambda: not second.state()["vip"]["kubeUp"], timeout=5)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((again.host, again.console_port), timeout=5).close()
        assert second.state()["vip"]["consolePort"] == ports[0]
    finally:
        second.stop()
