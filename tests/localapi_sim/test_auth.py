"""Login, token checks, expiry, renewal, logout, ping, unknown paths and fault knobs."""

from __future__ import annotations

import time

import httpx
import pytest

from palette_provision.testing.localapi import SimulatedCluster, SimulatorHandle

from .conftest import HOST, PASSWORD, api, login


def test_login_shape_and_first_login_flag(sim: SimulatorHandle) -> None:
    with sim.client() as client:
        first = client.post("/v1/users/default/login", json={"username": "admin", "password": PASSWORD})
        second = client.post("/v1/users/default/login", json={"username": "admin", "password": PASSWORD})
    assert first.status_code == 200
    body = first.json()
    assert set(body) == {"Token", "IsFirstLogin"}
    assert body["IsFirstLogin"] is True and second.json()["IsFirstLogin"] is False
    token = body["Token"]["Authorization"]
    assert token.count(".") == 2
    assert first.cookies.get("Authorization") == token  # setCookie defaults to true


@pytest.mark.parametrize(
    "payload",
    [{"username": "admin", "password": "wrong"}, {"username": "root", "password": PASSWORD}],
)
def test_bad_credentials_refused(sim: SimulatorHandle, payload: dict[str, str]) -> None:
    failures = sim.state()["stats"]["loginFailures"]
    with sim.client() as client:
        response = client.post("/v1/users/default/login", json=payload)
    assert response.status_code == 400
    assert response.json()["code"] == "InvalidCredentials"
    assert sim.state()["stats"]["loginFailures"] == failures + 1


def test_login_body_must_match_schema(sim: SimulatorHandle) -> None:
    with sim.client() as client:
        response = client.post("/v1/users/default/login", json={"user": "admin", "password": PASSWORD})
    assert response.status_code == 400
    assert "username" in response.json()["message"]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "garbage"}, {"Authorization": "a.b.c"}],
)
def test_protected_endpoint_needs_valid_token(sim: SimulatorHandle, headers: dict[str, str]) -> None:
    with sim.client(headers=headers) as client:
        response = client.get(HOST)
    assert response.status_code == 401
    assert response.json()["code"] == "Unauthorized"


def test_bearer_prefix_is_refused_raw_header_and_cookie_accepted(sim: SimulatorHandle) -> None:
    token = login(sim)
    with sim.client(headers={"Authorization": f"Bearer {token}"}) as client:
        refused = client.get(HOST)
    assert refused.status_code == 401 and "Bearer" in refused.json()["message"]
    with sim.client(headers={"Authorization": token}) as client:
        assert client.get(HOST).status_code == 200
    with sim.client(headers={"Cookie": f"Authorization={token}"}) as client:
        assert client.get(HOST).status_code == 200


def test_token_of_another_node_is_refused(trio: SimulatedCluster) -> None:
    one, two = trio.nodes[:2]
    with api(two, login(one)) as client:
        response = client.get(HOST)
    assert response.status_code == 401


def test_token_expires_and_renewal_gives_a_fresh_top_level_token(sim: SimulatorHandle) -> None:
    sim.set_knobs(token_lifetime_s=1.0)
    token = login(sim)
    with api(sim, token) as client:
        renewed = client.post("/v1/users/default/token/renewal")
        assert renewed.status_code == 200
        assert set(renewed.json()) == {"Authorization"}
        new_token = renewed.json()["Authorization"]
        assert new_token != token
    time.sleep(1.1)
    with api(sim, token) as client:
        expired = client.get(HOST)
        assert expired.status_code == 401 and "expired" in expired.json()["message"]
        assert client.post("/v1/users/default/token/renewal").status_code == 401


def test_extended_session_outlives_the_short_lifetime(sim: SimulatorHandle) -> None:
    sim.set_knobs(token_lifetime_s=0.5)
    token = login(sim, extendedSession="true")
    time.sleep(0.7)
    with api(sim, token) as client:
        assert client.get(HOST).status_code == 200


def test_logout_invalidates_the_token(sim: SimulatorHandle) -> None:
    token = login(sim)
    with api(sim, token) as client:
        response = client.post("/v1/users/default/logout")
        assert response.status_code == 200 and response.content == b""
        assert client.get(HOST).status_code == 401


def test_password_reset(sim: SimulatorHandle) -> None:
    with api(sim) as client:
        wrong = client.post("/v1/users/default/password/reset",
                            json={"oldPassword": "nope", "newPassword": "new-password-2"})
        assert wrong.status_code == 400
        ok = client.post("/v1/users/default/password/reset",
                         json={"oldPassword": PASSWORD, "newPassword": "new-password-2"})
        assert ok.status_code == 204
    with sim.client() as client:
        old = client.post("/v1/users/default/login", json={"username": "admin", "password": PASSWORD})
        new = client.post("/v1/users/default/login", json={"username": "admin", "password": "new-password-2"})
    assert (old.status_code, new.status_code) == (400, 200)


def test_ping_open_by_default_and_protected_by_knob(sim: SimulatorHandle) -> None:
    with sim.client() as client:
        assert client.get("/v1/ping").json() == {"msg": "pong"}
        sim.set_knobs(ping_requires_auth=True)
        assert client.get("/v1/ping").status_code == 401


def test_unknown_path_and_wrong_method(sim: SimulatorHandle) -> None:
    with api(sim) as client:
        assert client.get("/v1/edge-mgmt/nothing-here").status_code == 404
        wrong = client.delete(HOST)
    assert wrong.status_code == 405


def test_fail_next_injects_500s_per_prefix(sim: SimulatorHandle) -> None:
    with api(sim) as client:
        sim.set_knobs(fail_next={"/v1/edge-mgmt/edgehosts": 2})
        codes = [client.get(HOST).status_code for _ in range(3)]
        assert client.get("/v1/edge-mgmt/settings").status_code == 200
    assert codes == [500, 500, 200]


def test_drop_next_closes_the_connection(sim: SimulatorHandle) -> None:
    with api(sim) as client:
        sim.set_knobs(drop_next={"/v1/edge-mgmt/settings": 1})
        with pytest.raises(httpx.RemoteProtocolError):
            client.get("/v1/edge-mgmt/settings")
        assert client.get("/v1/edge-mgmt/settings").status_code == 200


def test_delay_knob_slows_requests(sim: SimulatorHandle) -> None:
    with api(sim) as client:
        sim.set_knobs(delay_s=0.4)
        started = time.monotonic()
        client.get("/v1/edge-mgmt/settings")
        assert time.monotonic() - started >= 0.4


def test_unknown_or_mistyped_knob_rejected(sim: SimulatorHandle) -> None:
    with sim.client() as client:
        assert client.post("/__sim__/knobs", json={"no_such_knob": 1}).status_code == 400
        assert client.post("/__sim__/knobs", json={"refuse_links": "yes"}).status_code == 400
        assert client.get("/__sim__/knobs").json()["refuse_links"] is False
