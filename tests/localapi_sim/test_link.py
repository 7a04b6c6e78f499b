"""Link tokens (lifetime, reuse, malformed), link progress, refusal and unlink."""

from __future__ import annotations

import base64
import json
import time

from palette_provision.testing.localapi import SimulatedCluster

from .conftest import HOST, api, link_all, wait_until


def test_token_carries_leader_ip_and_one_time_password(trio: SimulatedCluster) -> None:
    with api(trio.leader) as client:
        answer = client.post(f"{HOST}/link/generate-token").json()
        again = client.post(f"{HOST}/link/generate-token").json()
    assert set(answer) == {"token", "interval", "remainingTime"}
    decoded = json.loads(base64.b64decode(answer["token"]))
    assert decoded["leaderIp"] == trio.leader.node_ip and len(decoded["otp"]) >= 16
    assert answer["interval"] == 120 and 0 < answer["remainingTime"] <= 120
    assert again["token"] == answer["token"]  # the current token until used or expired


def test_link_progresses_to_completed_and_lists_peers_everywhere(trio: SimulatedCluster) -> None:
    leader, follower = trio.leader, trio.followers[0]
    with api(leader) as lead, api(follower) as client:
        token = lead.post(f"{HOST}/link/generate-token").json()["token"]
        linked = client.post(f"{HOST}/link", json={"token": token})
        assert linked.status_code == 200
        assert linked.json()["status"] == "Pending"
        seen: list[str] = []

        def completed() -> bool:
            status = client.get(f"{HOST}/link/status").json()["status"]
            if not seen or seen[-1] != status:
                seen.append(status)
            return status == "Completed"

        wait_until(completed, timeout=5, interval=0.03)
        assert seen == ["Pending", "InProgress", "Completed"]
        for view in (lead.get(f"{HOST}/link/status").json(), client.get(f"{HOST}/link/status").json()):
            assert view["status"] == "Completed"
            peers = {peer["id"]: peer for peer in view["peers"]}
            assert set(peers) == {leader.host_id, follower.host_id}
            peer = peers[follower.host_id]
            assert peer["ip"] == follower.node_ip and peer["localUIPort"] == "5080"
            assert peer["role"] == "follower" and peer["status"] == "Ready"
            assert peer["nodeRole"] == "unknown" and peer["health"] == {"status": "Healthy", "reason": ""}
            assert peer["contentSyncStatus"] == "pending"  # nothing uploaded yet
    assert leader.state()["followers"] == [follower.host_id]


def test_reused_token_is_refused(trio: SimulatedCluster) -> None:
    with api(trio.leader) as lead:
        token = lead.post(f"{HOST}/link/generate-token").json()["token"]
        with api(trio.followers[0]) as first:
            assert first.post(f"{HOST}/link", json={"token": token}).status_code == 200
        with api(trio.followers[1]) as second:
            reused = second.post(f"{HOST}/link", json={"token": token})
        fresh = lead.post(f"{HOST}/link/generate-token").json()["token"]
    assert reused.status_code == 400
    assert reused.json()["code"] == "BadRequest" and "already used" in reused.json()["message"]
    assert fresh != token
    attempts = trio.leader.state()["stats"]["linkAttempts"]
    assert [a["result"] for a in attempts] == ["accepted", "rejected"]


def test_expired_token_is_refused(trio: SimulatedCluster) -> None:
    trio.leader.set_knobs(link_token_lifetime_s=0.3)
    with api(trio.leader) as lead:
        token = lead.post(f"{HOST}/link/generate-token").json()
    assert token["interval"] == 0 or token["remainingTime"] <= 1
    time.sleep(0.4)
    with api(trio.followers[0]) as client:
        response = client.post(f"{HOST}/link", json={"token": token["token"]})
    assert response.status_code == 400 and "expired" in response.json()["message"]
    assert trio.followers[0].state()["role"] == "standalone"


def test_malformed_tokens_and_bodies_are_refused(trio: SimulatedCluster) -> None:
    not_json = base64.b64encode(b"hello").decode()
    no_otp = base64.b64encode(json.dumps({"leaderIp": "127.0.0.11"}).encode()).decode()
    with api(trio.followers[0]) as client:
        for body in ({"token": "%%%not-base64%%%"}, {"token": not_json}, {"token": no_otp}):
            response = client.post(f"{HOST}/link", json=body)
            assert response.status_code == 400, body
            assert "malformed" in response.json()["message"]
        extra = client.post(f"{HOST}/link", json={"token": "x", "interval": 120})
        assert extra.status_code == 400 and "interval" in extra.json()["message"]
        missing = client.post(f"{HOST}/link", json={})
        assert missing.status_code == 400 and "token" in missing.json()["message"]
        unknown = base64.b64encode(json.dumps({"leaderIp": trio.leader.node_ip, "otp": "f" * 32}).encode())
        response = client.post(f"{HOST}/link", json={"token": unknown.decode()})
        assert response.status_code == 400 and "not known" in response.json()["message"]


def test_refused_link_fails_with_error_message(trio: SimulatedCluster) -> None:
    trio.leader.set_knobs(refuse_links=True, refuse_reason="leader is in maintenance")
    with api(trio.leader) as lead, api(trio.followers[0]) as client:
        token = lead.post(f"{HOST}/link/generate-token").json()["token"]
        assert client.post(f"{HOST}/link", json={"token": token}).status_code == 200
        final = wait_until(lambda: (s := client.get(f"{HOST}/link/status").json())["status"] == "Failed" and s)
        assert final["errorMessage"] == "leader is in maintenance"
        wait_until(lambda: len(lead.get(f"{HOST}/link/status").json()["peers"]) == 1)


def test_status_404_before_linking_and_follower_cannot_issue_tokens(trio: SimulatedCluster) -> None:
    with api(trio.followers[1]) as client:
        assert client.get(f"{HOST}/link/status").status_code == 404
    link_all(trio)
    with api(trio.followers[0]) as client:
        response = client.post(f"{HOST}/link/generate-token")
    assert response.status_code == 500 and response.json()["code"] == "HostIsFollower"


def test_unlink_from_leader_and_from_follower(trio: SimulatedCluster) -> None:
    link_all(trio)
    first, second = trio.followers
    with api(trio.leader) as lead:
        assert lead.post(f"{HOST}/unlink").status_code == 400
        assert lead.post(f"{HOST}/unlink", params={"peerId": "edge-nope"}).status_code == 400
        assert lead.post(f"{HOST}/unlink", params={"peerId": first.host_id}).status_code == 200
        with api(second) as client:
            assert client.post(f"{HOST}/unlink", params={"peerId": trio.leader.host_id}).status_code == 200
        assert lead.get(f"{HOST}/link/status").json()["peers"][0]["id"] == trio.leader.host_id
        assert len(lead.get(f"{HOST}/link/status").json()["peers"]) == 1
    assert first.state()["role"] == "standalone" and second.state()["role"] == "standalone"
