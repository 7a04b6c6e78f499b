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


def _form(sim: SimulatedCluster, journal: Journal, data: dict[str, Any]) -> HandoffResult:
    plan = rig.build_plan(data)
    spec = rig.sim_spec(sim)

    def vip_services(_context: Any) -> tuple[str, str | None]:
        vip = sim.vip_services()
        return vip.console_url, vip.kube_url

    return rig.former(spec, vip_services=vip_services).form(rig.context_for(plan, journal, spec, []))


def _stored(sim: SimulatedCluster) -> list[str]:
    return [u["fileName"] for u in sim.leader.state()["stats"]["uploads"] if u.get("result") == "stored"]


def test_packs_are_uploaded_once_and_the_registry_synced(
    simulate: Simulate, journal: Journal, tmp_path: Path, bundle: Path, packs: list[Path]
) -> None:
    sim = simulate(1)
    data = _plan(tmp_path, sim, bundle, packs)
    result = _form(sim, journal, data)
    checks = [e["check"] for e in result.details["validation"]]
    assert checks[-3:] == ["packs.upload:edge-k8s-1.30.4.zst", "packs.upload:cni-calico-3.28.0.zst", "packs.sync"]
    sync = result.details["validation"][-1]
    assert "Completed" in sync["answered"] and "2 pack(s) found" in sync["answered"]
    assert _stored(sim).count("edge-k8s-1.30.4.zst") == 1 and _stored(sim).count("cni-calico-3.28.0.zst") == 1
    runs = len(sim.leader.state()["console"]["registries"][0]["syncs"])

    again = _form(sim, journal, data)
    assert not any(e["check"].startswith("packs.") for e in again.details["validation"]), "nothing moved, no sync"
    assert _stored(sim).count("cni-calico-3.28.0.zst") == 1, "a re-run uploads 0 bytes"
    assert len(sim.leader.state()["console"]["registries"][0]["syncs"]) == runs


def test_a_failed_sync_names_its_step_and_the_consoles_words(
    simulate: Simulate, journal: Journal, tmp_path: Path, bundle: Path, packs: list[Path]
) -> None:
    sim = simulate(1, registry_sync_fails=True)
    with pytest.raises(HandoffError) as caught:
        _form(sim, journal, _plan(tmp_path, sim, bundle, packs))
    assert caught.value.step == "packs.sync" and "the sync failed" in str(caught.value)


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

        again = _form(sim, journal, data)
        assert not any(e["check"].startswith("packs.") for e in again.details["validation"]), "0 bytes, no sync"
