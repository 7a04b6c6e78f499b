"""A plan's ISO digest is checked while ``apply`` starts; a digest read from the file is vouched for to the provider.

What a user notices: a wrong ISO (its digest not the plan's) is refused before anything is changed; the provider is
told when the digest was read from this very file (``MediaFile.sha256_checked``) and may upload without hashing; a
file changed while it was staged is an error, and a later run stages it again.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from palette_provision.errors import ConfigurationError, PlanError, ProviderError
from palette_provision.journal import GLOBAL, Journal
from palette_provision.log import get_logger
from palette_provision.media import EarlyDigest, sha256_file
from palette_provision.pipeline import Deployment
from palette_provision.plan import DeploymentPlan, parse_plan
from palette_provision.provider import MediaFile, ProgressCallback, ProviderContext, StagedMedia
from palette_provision.testing.fake import FakeProvider, read_state
from palette_provision.waiting import Interrupted

from .conftest import base_plan


class RecordingProvider(FakeProvider):
    """The fake provider, keeping every MediaFile it was asked to stage; ``touch_iso`` changes the ISO meanwhile."""

    touch_iso = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.asked: list[MediaFile] = []

    def stage_media(self, media: MediaFile, progress: ProgressCallback | None = None) -> StagedMedia:
        self.asked.append(media)
        if media.role == "appliance-iso" and self.touch_iso:
            with media.local_path.open("ab") as fh:
                fh.write(b"appended by someone else")
        return super().stage_media(media, progress)


def _provider(plan: DeploymentPlan, state: Path) -> RecordingProvider:
    context = ProviderContext(plan.name, state / "providers" / "fake", get_logger("tests"),
                              dict.fromkeys(plan.node_names()))  # fmt: skip
    return RecordingProvider(plan.platform_settings, context)


def _with_plan_digest(tmp_path: Path, digest: str | None = None) -> tuple[dict[str, Any], DeploymentPlan]:
    """The base plan with ``iso.sha256`` set (default: the ISO's real digest): its data and the parsed plan."""
    data = base_plan(tmp_path)  # writes the ISO
    data["iso"]["sha256"] = digest or sha256_file(tmp_path / "appliance.iso")
    return data, parse_plan(data, base_dir=tmp_path)


def _isos(provider: RecordingProvider) -> list[MediaFile]:
    return [m for m in provider.asked if m.role == "appliance-iso"]


def test_the_digest_of_an_unchanged_file_and_none_for_a_changed_one(tmp_path: Path) -> None:
    path = tmp_path / "a.iso"
    path.write_bytes(os.urandom(3 << 20))
    early = EarlyDigest(path, threading.Event())
    assert early.result() == hashlib.sha256(path.read_bytes()).hexdigest() == sha256_file(path)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # same bytes, but not provably
    assert early.result() is None


def test_a_stopping_run_stops_the_digest(tmp_path: Path) -> None:
    path = tmp_path / "a.iso"
    path.write_bytes(b"x" * (2 << 20))
    stop = threading.Event()
    stop.set()
    with pytest.raises(Interrupted):
        EarlyDigest(path, stop).result()


def test_an_apply_refused_before_anything_changed_ends_the_iso_read(tmp_path: Path) -> None:
    # A refusal (here a bad ``until``; a Ctrl-C or a preflight error alike) must not leave the ISO being read.
    _, plan = _with_plan_digest(tmp_path)
    state = tmp_path / "state"
    with Deployment(plan, state_dir=state, provider=_provider(plan, state)) as deployment:
        with pytest.raises(PlanError, match="until"):
            deployment.apply(until="no-such-phase")
        early = deployment.early_iso_digest
        assert early is not None and early.cancelled


def test_a_plans_digest_is_checked_and_handed_to_the_provider_as_read_from_the_file(tmp_path: Path) -> None:
    data, plan = _with_plan_digest(tmp_path)
    state = tmp_path / "state"
    provider = _provider(plan, state)
    with Deployment(plan, state_dir=state, provider=provider) as deployment:
        assert deployment.apply(until="acquire").ok
    (iso,) = _isos(provider)
    assert iso.sha256_checked and iso.sha256 == data["iso"]["sha256"]


def test_without_a_plan_digest_the_provider_hashes_then_the_cache_vouches(tmp_path: Path) -> None:
    plan = parse_plan(base_plan(tmp_path), base_dir=tmp_path)
    state = tmp_path / "state"
    first = _provider(plan, state)
    with Deployment(plan, state_dir=state, provider=first) as deployment:
        assert deployment.apply(until="acquire").ok
    (iso,) = _isos(first)
    assert (iso.sha256, iso.sha256_checked) == (None, False), "read once: by the provider, while it uploads"
    # The platform lost its copy: the next run uploads again, with the digest the journal cached for the file.
    platform_path = tmp_path / "platform.json"
    platform = read_state(platform_path)
    platform["media"] = {k: v for k, v in platform["media"].items() if v["role"] != "appliance-iso"}
    platform_path.write_text(json.dumps(platform))
    again = _provider(plan, state)
    with Deployment(plan, state_dir=state, provider=again) as deployment:
        assert deployment.apply(until="acquire").ok
    (iso,) = _isos(again)
    assert iso.sha256_checked and iso.sha256 == sha256_file(tmp_path / "appliance.iso")


def test_an_iso_that_is_not_the_plans_is_refused_before_anything_is_staged(tmp_path: Path) -> None:
    data, plan = _with_plan_digest(tmp_path, "ab" * 32)
    state = tmp_path / "state"
    provider = _provider(plan, state)
    with Deployment(plan, state_dir=state, provider=provider) as deployment, \
            pytest.raises(ConfigurationError) as caught:  # fmt: skip
        deployment.apply(until="acquire")
    assert caught.value.field == "iso.sha256"
    assert "ab" * 32 in str(caught.value) and sha256_file(tmp_path / "appliance.iso") in str(caught.value)
    assert _isos(provider) == [], "nothing was sent to the platform"
    assert not read_state(tmp_path / "platform.json")["media"]


def test_an_iso_changed_while_it_was_staged_is_an_error_and_the_next_run_stages_it_again(tmp_path: Path) -> None:
    data, plan = _with_plan_digest(tmp_path)
    state = tmp_path / "state"
    provider = _provider(plan, state)
    provider.touch_iso = True
    with Deployment(plan, state_dir=state, provider=provider) as deployment, \
            pytest.raises(ProviderError, match="changed while it was staged; run again"):  # fmt: skip
        deployment.apply(until="acquire")
    with Journal.open(state / "journal.sqlite", deployment=plan.name, create=False) as journal:
        step = journal.step("stage_media", GLOBAL)
        assert step is not None and step.status == "failed"
        assert journal.cached_digest(tmp_path / "appliance.iso") is None, "no digest cached for a file never read"

    # The operator gives the new file's digest (the old one no longer matches: refused at preflight).
    now = sha256_file(tmp_path / "appliance.iso")
    with Deployment(plan, state_dir=state, provider=_provider(plan, state)) as deployment, \
            pytest.raises(ConfigurationError, match="the plan says"):  # fmt: skip
        deployment.apply(until="acquire")
    data["iso"]["sha256"] = now
    plan = parse_plan(data, base_dir=tmp_path)
    again = _provider(plan, state)
    with Deployment(plan, state_dir=state, provider=again) as deployment:
        assert deployment.apply(until="acquire").ok
    (iso,) = _isos(again)
    assert iso.sha256 == now and iso.sha256_checked
    staged = read_state(tmp_path / "platform.json")["media"]
    assert [m["sha256"] for m in staged.values() if m["role"] == "appliance-iso"] == [now]
