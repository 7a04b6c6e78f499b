"""Pack bundles uploaded to the appliance's internal registry through the leader's Local API, then the OCI pack
registry synced through the system console: against the Local API simulator's cluster and its VIP services."""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from palette_provision.errors import HandoffError
from palette_provision.handoff import HandoffResult
from palette_provision.handoff.local_api import Scope
from palette_provision.journal import Journal
from palette_provision.testing.localapi import SimulatedCluster
from tests.handoff import rig
from tests.handoff.conftest import Simulate
from tests.handoff.test_validation import VALIDATE

RUNNER = Path(__file__).with_name("runner.py")


@pytest.fixture
def packs(tmp_path: Path) -> list[Path]:
    made = []
    for name, size in (("edge-k8s-1.30.4.zst", 200_000), ("cni-calico-3.28.0.zst", 3 << 20)):
        path = tmp_path / name
        path.write_bytes(name.encode() * (size // len(name)))
        made.append(path)
    return made


def _plan(tmp: Path, sim: SimulatedCluster, bundle: Path, packs: list[Path]) -> dict[str, Any]:
    return rig.plan_data(tmp, sim.size, content=bundle,
                         overrides={"validate": VALIDATE, "packs": {"bundles": [str(p) for p in packs],
                                                                    "sync_timeout": 20}})  # fmt: skip


def _form(sim: SimulatedCluster, journal: Journal, data: dict[str, Any], scope: Scope = "all") -> HandoffResult:
    plan = rig.build_plan(data)
    spec = rig.sim_spec(sim)

    def vip_services(_context: Any) -> tuple[str, str | None]:
        vip = sim.vip_services()
        return vip.console_url, vip.kube_url

    return rig.former(spec, vip_services=vip_services, scope=scope).form(rig.context_for(plan, journal, spec, []))


def _stored(sim: SimulatedCluster) -> list[str]:
    return [u["fileName"] for u in sim.leader.state()["stats"]["uploads"] if u.get("result") == "stored"]


def test_packs_are_uploaded_once_and_the_registry_synced(
    simulate: Simulate, journal: Journal, tmp_path: Path, bundle: Path, packs: list[Path]
) -> None:
    # The console's sync status lags its trigger: for a while it still shows the install's Completed run (0 packs),
    # so only a run newer than the one seen before the trigger may end the wait.
    sim = simulate(1, registry_sync_s=0.3, registry_sync_stale_s=0.8)
    data = _plan(tmp_path, sim, bundle, packs)
    result = _form(sim, journal, data)
    checks = [e["check"] for e in result.details["validation"]]
    assert checks[-3:] == ["packs.upload:edge-k8s-1.30.4.zst", "packs.upload:cni-calico-3.28.0.zst", "packs.sync"]
    sync = result.details["validation"][-1]
    assert "Completed" in sync["answered"] and "2 pack(s) found" in sync["answered"], sync["answered"]
    assert _stored(sim).count("edge-k8s-1.30.4.zst") == 1 and _stored(sim).count("cni-calico-3.28.0.zst") == 1
    runs = len(sim.leader.state()["console"]["registries"][0]["syncs"])
    uploads = len(sim.leader.state()["stats"]["uploads"])

    # A re-run moves 0 bytes, measured: the journal says so for every pack, the leader received no upload, no sync
    # ran, and the report says each pack was already there.
    again = _form(sim, journal, data)
    assert _pack_records(journal, packs, "packs.upload") == [0, 0]
    assert len(sim.leader.state()["stats"]["uploads"]) == uploads, "a re-run uploads 0 bytes"
    assert len(sim.leader.state()["console"]["registries"][0]["syncs"]) == runs
    said = [e for e in again.details["validation"] if e["check"].startswith("packs.")]
    assert [e["check"] for e in said] == checks[-3:-1], "no sync when nothing changed"
    assert all("already there" in e["answered"] and "0 bytes sent" in e["answered"] for e in said)

    # validate-install's scope runs no packs.* step, push-packs' no validate.* step (each still journaled).
    def attempts(prefix: str) -> dict[str, int]:
        return {s.phase: s.attempts for s in journal.steps() if s.phase.startswith(prefix)}

    packs_before = attempts("packs.")
    validated = _form(sim, journal, data, scope="validate")
    assert attempts("packs.") == packs_before
    assert {e["check"].split(".")[0] for e in validated.details["validation"]} == {"validate"}
    checks_before = attempts("validate.")
    pushed = _form(sim, journal, data, scope="packs")
    assert attempts("validate.") == checks_before
    assert [e["check"] for e in pushed.details["validation"]] == checks[-3:-1]
    assert {k: v - 1 for k, v in attempts("packs.upload").items()} == {k: v for k, v in packs_before.items()
                                                                       if k.startswith("packs.upload")}


def test_push_packs_on_its_own_first_replaces_the_consoles_first_login_password(
    simulate: Simulate, journal: Journal, tmp_path: Path, bundle: Path, packs: list[Path]
) -> None:
    # push-packs before any check ran: the sync logs in with the plan's password, so the first-login one is replaced
    # first (the same journaled step, once), and no other check runs.
    sim = simulate(1, registry_sync_s=0.1)
    pushed = _form(sim, journal, _plan(tmp_path, sim, bundle, packs), scope="packs")
    assert [e["check"] for e in pushed.details["validation"]] == [
        "validate.console_password", "packs.upload:edge-k8s-1.30.4.zst", "packs.upload:cni-calico-3.28.0.zst",
        "packs.sync"]
    assert [s.phase for s in journal.steps() if s.phase.startswith("validate.")] == ["validate.console_password"]
    assert len(sim.leader.state()["console"]["passwordChanges"]) == 1
    again = _form(sim, journal, _plan(tmp_path, sim, bundle, packs), scope="packs")
    assert not any(e["check"].startswith("validate.") for e in again.details["validation"]), "rotated once"
    assert len(sim.leader.state()["console"]["passwordChanges"]) == 1


def _pack_records(journal: Journal, packs: list[Path], kind: str) -> list[int]:
    """``uploaded_bytes`` of each pack's last done step, as the journal has it."""
    records = [journal.step(f"{kind}:{p.name}") for p in packs]
    assert all(r is not None and r.status == "done" for r in records)
    return [int(r.data["uploaded_bytes"]) for r in records if r is not None]


def test_a_failed_sync_names_its_step_and_the_consoles_words(
    simulate: Simulate, journal: Journal, tmp_path: Path, bundle: Path, packs: list[Path]
) -> None:
    sim = simulate(1, registry_sync_fails=True)
    with pytest.raises(HandoffError) as caught:
        _form(sim, journal, _plan(tmp_path, sim, bundle, packs))
    assert caught.value.step == "packs.sync" and "the sync failed" in str(caught.value)
    evidence = caught.value.evidence  # type: ignore[attr-defined]
    assert [e["check"] for e in evidence][-3:] == ["packs.upload:edge-k8s-1.30.4.zst",
                                                   "packs.upload:cni-calico-3.28.0.zst", "packs.sync"]
    assert evidence[0]["check"] == "validate.cluster", "the validation's evidence comes first"
    assert evidence[-1]["failed"] is True and "the sync failed" in evidence[-1]["answered"]
    record = journal.step("packs.sync")
    assert record is not None and record.status == "failed" and record.data["evidence"][-1]["failed"] is True


def test_a_run_killed_mid_upload_resumes_without_sending_the_first_pack_again(
    simulate: Simulate, tmp_path: Path, bundle: Path, packs: list[Path]
) -> None:
    sim = simulate(1)
    journal_path = tmp_path / "journal.sqlite"
    with Journal.open(journal_path, deployment="handoff-test") as journal:
        _form(sim, journal, rig.plan_data(tmp_path, 1, content=bundle, overrides={"validate": VALIDATE}))
    vip = sim.vip_services()
    spec = {"plan": _plan(tmp_path, sim, bundle, packs), "journal": str(journal_path), "sims": rig.sim_spec(sim),
            "vip": [vip.console_url, vip.kube_url]}  # fmt: skip
    killed = subprocess.run(
        [sys.executable, str(RUNNER), str(rig.write_spec(tmp_path / "spec.json", **spec,
                                                         kill_on_event="packs.upload:cni-calico-3.28.0.zst:"
                                                                       "content_upload_progress"))],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr[-2000:]
    assert "cni-calico-3.28.0.zst" not in _stored(sim), "killed before the second pack was stored"
    final = subprocess.run([sys.executable, str(RUNNER), str(rig.write_spec(tmp_path / "spec.json", **spec))],
                           capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert final.returncode == 0, final.stdout + final.stderr[-3000:]
    assert json.loads(final.stdout.splitlines()[-1])["details"]["validation"][-1]["check"] == "packs.sync"
    assert _stored(sim).count("edge-k8s-1.30.4.zst") == 1, "the first pack was not sent again"
    assert _stored(sim).count("cni-calico-3.28.0.zst") == 1


@pytest.mark.lab
def test_packs_pushed_to_an_external_registry_are_there_byte_for_byte_and_the_registry_registered(
    simulate: Simulate, journal: Journal, tmp_path: Path, bundle: Path, packs: list[Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import httpx
    from pplab.registry import LabRegistry

    sim = simulate(1)
    with LabRegistry(tmp_path / "registry") as registry:
        monkeypatch.setenv("PP_PACKS_REGISTRY_PASSWORD", registry.password)
        external = {"url": registry.url, "username": registry.username, "password": "env:PP_PACKS_REGISTRY_PASSWORD",
                    "tls": "pin", "fingerprint": registry.fingerprint}  # fmt: skip
        data = rig.plan_data(tmp_path, 1, content=bundle, overrides={"validate": VALIDATE, "packs": {
            "bundles": [str(p) for p in packs], "registry": "external", "external": external, "sync_timeout": 20}})
        result = _form(sim, journal, data)
        checks = [e["check"] for e in result.details["validation"]]
        assert checks[-3:] == ["packs.push:edge-k8s-1.30.4.zst", "packs.push:cni-calico-3.28.0.zst", "packs.sync"]
        assert _stored(sim) == ["content-bundle.tar.zst"], "no pack went through the Local API"
        registered = [r for r in sim.leader.state()["console"]["registries"] if r["name"] == "palette-provision-packs"]
        assert registered and registered[0]["spec"]["endpoint"] == registry.url.removeprefix("https://")

        # A second client, the registry's own API: the manifest by tag, then the layer, byte for byte.
        auth = (registry.username, registry.password)
        with httpx.Client(verify=ssl.create_default_context(cafile=str(registry.ca)), auth=auth, trust_env=False) as client:
            manifest = client.get(f"{registry.url}/v2/spectro-content/cni-calico/manifests/3.28.0",
                                  headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}).json()
            [layer] = manifest["layers"]
            blob = client.get(f"{registry.url}/v2/spectro-content/cni-calico/blobs/{layer['digest']}")
        assert blob.content == packs[1].read_bytes()

        tls = registered[0]["spec"]["auth"]["tls"]
        assert tls["insecureSkipVerify"] is False, "tls: pin gives the console the pinned certificate to verify with"
        assert ssl.PEM_cert_to_DER_cert(tls["certificate"]) == ssl.PEM_cert_to_DER_cert(registry.ca.read_text())

        def syncs() -> int:
            return len(next(r for r in sim.leader.state()["console"]["registries"] if r is registered[0]
                            or r["name"] == "palette-provision-packs")["syncs"])  # fmt: skip

        # A re-run moves 0 bytes, measured: the journal, and the registry saw no write at all.
        seen, synced = len(registry.requests()), syncs()
        assert any('"PUT ' in line for line in registry.requests()), "the access log shows the first run's writes"
        again = _form(sim, journal, data)
        assert _pack_records(journal, packs, "packs.push") == [0, 0]
        writes = [line for line in registry.requests()[seen:]
                  if any(f'"{method} ' in line for method in ("POST", "PATCH", "PUT"))]
        assert writes == [], writes
        said = [e for e in again.details["validation"] if e["check"].startswith("packs.")]
        assert len(said) == 2 and all("already there: 0 bytes sent" in e["answered"] for e in said)
        assert syncs() == synced, "nothing changed, no sync"

        # The same bytes under a new tag: only a manifest moves (0 blob bytes), and that is a change to sync.
        retagged = tmp_path / "cni-calico-3.28.1.zst"
        retagged.write_bytes(packs[1].read_bytes())
        data["packs"]["bundles"] = [*data["packs"]["bundles"], str(retagged)]
        third = _form(sim, journal, data)
        assert third.details["validation"][-1]["check"] == "packs.sync" and syncs() == synced + 1
