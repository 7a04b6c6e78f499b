"""palette_provision.oci against a real registry: Debian's docker-registry (CNCF Distribution 2.8), TLS and auth.

Every claim is checked with a second client: the registry's own API through plain httpx (the manifest by tag, the
blobs byte for byte, an upload's ``Range``), or the registry's access log (which requests reached it).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from pplab import LabError
from pplab.registry import LabRegistry
from structlog.testing import capture_logs

from palette_provision import oci
from palette_provision.errors import AuthenticationError, TLSVerificationError
from palette_provision.oci import (
    EMPTY_MEDIA_TYPE,
    MANIFEST_MEDIA_TYPE,
    PACK_BUNDLE_ARTIFACT_TYPE,
    PACK_BUNDLE_MEDIA_TYPE,
    RegistryError,
    push_artifact,
)
from palette_provision.secrets import Secret
from palette_provision.tls import pinned_context, verified_context

MIB = 1024 * 1024
EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"  # the spec's, of b"{}"


def start(workdir: Path, auth: Literal["htpasswd", "token"] = "htpasswd") -> LabRegistry:
    try:
        return LabRegistry(workdir, auth=auth).start()
    except LabError as exc:  # a lab test that skips proves nothing: fail with the reason
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[LabRegistry]:
    reg = start(tmp_path / "registry")
    yield reg
    reg.stop()


def bundle(tmp_path: Path, size: int = 3 * MIB + 12345, name: str = "cni-calico-3.27.0.zst") -> Path:
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return path


def second_client(reg: LabRegistry) -> httpx.Client:
    """The registry's own API, without our client: basic auth, the registry's certificate as the CA."""
    return httpx.Client(base_url=reg.url, auth=(reg.username, reg.password), verify=verified_context(str(reg.ca)),
                        trust_env=False, timeout=30)  # fmt: skip


def new_requests(reg: LabRegistry, before: int) -> list[str]:
    return reg.requests()[before:]


def assert_stored(reg: LabRegistry, repository: str, tag: str, path: Path, manifest_digest: str) -> None:
    """The tag's manifest and both blobs, read back and compared byte for byte."""
    data = path.read_bytes()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with second_client(reg) as api:
        answer = api.get(f"/v2/{repository}/manifests/{tag}", headers={"Accept": MANIFEST_MEDIA_TYPE})
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == MANIFEST_MEDIA_TYPE
        assert answer.headers["docker-content-digest"] == manifest_digest
        assert "sha256:" + hashlib.sha256(answer.content).hexdigest() == manifest_digest
        manifest = json.loads(answer.content)
        assert manifest["schemaVersion"] == 2
        assert manifest["mediaType"] == MANIFEST_MEDIA_TYPE
        assert manifest["artifactType"] == PACK_BUNDLE_ARTIFACT_TYPE
        assert manifest["config"] == {"mediaType": EMPTY_MEDIA_TYPE, "digest": EMPTY_DIGEST, "size": 2}
        assert manifest["layers"] == [{"mediaType": PACK_BUNDLE_MEDIA_TYPE, "digest": digest, "size": len(data),
                                       "annotations": {"org.opencontainers.image.title": path.name}}]  # fmt: skip
        config = api.get(f"/v2/{repository}/blobs/{EMPTY_DIGEST}")
        assert (config.status_code, config.content) == (200, b"{}")
        blob = api.get(f"/v2/{repository}/blobs/{digest}")
        assert blob.status_code == 200
        assert blob.headers["docker-content-digest"] == digest
        assert blob.content == data  # byte for byte


@pytest.mark.lab
@pytest.mark.timeout(120)
def test_push_is_stored_byte_for_byte_and_a_repush_moves_nothing(registry: LabRegistry, tmp_path: Path) -> None:
    path = bundle(tmp_path)
    seen: list[tuple[int, int]] = []
    result = push_artifact(registry.url, "spectro-packs/cni-calico", "3.27.0", path, username=registry.username,
                           password=Secret(registry.password), verify=verified_context(str(registry.ca)),
                           chunk_size=MIB, progress=lambda done, total: seen.append((done, total)))  # fmt: skip
    size = path.stat().st_size
    assert result.size == size and not result.skipped
    assert result.digest == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert result.uploaded_bytes == size + 2  # the bundle and the empty config, nothing more
    assert seen == [(MIB, size), (2 * MIB, size), (3 * MIB, size), (size, size)]  # 1 MiB chunks, the registry's Range
    assert_stored(registry, "spectro-packs/cni-calico", "3.27.0", path, result.manifest_digest)

    before = len(registry.requests())
    again = push_artifact(registry.url, "spectro-packs/cni-calico", "3.27.0", path, username=registry.username,
                          password=Secret(registry.password), verify=pinned_context(registry.fingerprint))  # fmt: skip
    assert (again.uploaded_bytes, again.skipped) == (0, True)
    assert (again.digest, again.manifest_digest) == (result.digest, result.manifest_digest)
    methods = [line.split('"')[1].split()[0] for line in new_requests(registry, before)]
    assert methods and set(methods) <= {"GET", "HEAD"}, methods  # the registry saw no write at all

    # A new tag for the same bundle: no blob byte moves, only the manifest is written.
    other = push_artifact(registry.url, "spectro-packs/cni-calico", "latest", path, username=registry.username,
                          password=Secret(registry.password), verify=pinned_context(registry.fingerprint))  # fmt: skip
    assert (other.uploaded_bytes, other.skipped, other.manifest_digest) == (0, False, result.manifest_digest)
    assert_stored(registry, "spectro-packs/cni-calico", "latest", path, result.manifest_digest)


KILLED_PUSH = textwrap.dedent("""
    import os, signal, sys, time
    from pathlib import Path
    import palette_provision.oci as oci
    from palette_provision.secrets import Secret
    from palette_provision.tls import pinned_context

    url, fingerprint, user, path, state, repository, where = sys.argv[1:8]

    def die(*_):
        os.kill(os.getpid(), signal.SIGKILL)  # no finally, no atexit: as a killed run

    if where == "mid-chunk":  # the second PATCH sends half its body, then the process dies
        real, patches = oci._Session._raw, []

        def raw(self, method, url, headers, content):
            if method == "PATCH":
                patches.append(method)
                if len(patches) == 2:
                    half = content[: len(content) // 2]

                    def body():
                        yield half
                        time.sleep(0.5)  # the registry writes what it received
                        die()

                    headers, content = {**headers, "Content-Length": str(len(content))}, body()
            return real(self, method, url, headers, content)

        oci._Session._raw = raw
    oci.push_artifact(url, repository, "1.0", Path(path), username=user,
                      password=Secret(os.environ["PPLAB_REGISTRY_PASSWORD"]), verify=pinned_context(fingerprint),
                      state_dir=Path(state), chunk_size=1024 * 1024,
                      progress=die if where == "between-chunks" else None)
""")


def killed_push(registry: LabRegistry, path: Path, state_dir: Path, repository: str, where: str) -> None:
    env = {**os.environ, "PPLAB_REGISTRY_PASSWORD": registry.password}  # never on the command line
    proc = subprocess.run([sys.executable, "-c", KILLED_PUSH, registry.url, registry.fingerprint, registry.username,
                           str(path), str(state_dir), repository, where], env=env, capture_output=True, timeout=60)  # fmt: skip
    assert proc.returncode == -9, proc.stderr.decode()


@pytest.mark.lab
@pytest.mark.timeout(120)
def test_a_push_killed_between_chunks_resumes_where_the_registry_stopped(registry: LabRegistry, tmp_path: Path) -> None:
    path, state_dir = bundle(tmp_path), tmp_path / "state"
    size = path.stat().st_size
    killed_push(registry, path, state_dir, "spectro-packs/killed", "between-chunks")

    # The state file names the upload; the registry itself says how much it holds.
    (state_file,) = state_dir.glob("oci-upload-*.json")
    location = json.loads(state_file.read_text())["location"]
    assert registry.password not in state_file.read_text()
    with second_client(registry) as api:
        status = api.get(location)
    assert status.status_code == 204
    assert status.headers["range"] == f"0-{MIB - 1}"
    held = MIB

    resumed = push_artifact(registry.url, "spectro-packs/killed", "1.0", path, username=registry.username,
                            password=Secret(registry.password), verify=pinned_context(registry.fingerprint),
                            state_dir=state_dir, chunk_size=MIB)  # fmt: skip
    assert resumed.uploaded_bytes == (size - held) + 2 < size  # the rest of the bundle, and the config
    assert not list(state_dir.glob("oci-upload-*.json"))  # done: nothing left to resume
    assert_stored(registry, "spectro-packs/killed", "1.0", path, resumed.manifest_digest)


@pytest.mark.lab
@pytest.mark.timeout(120)
def test_a_push_killed_mid_chunk_starts_anew_and_stores_the_exact_bytes(registry: LabRegistry, tmp_path: Path) -> None:
    """Distribution 2.8 keeps the cut chunk's bytes but then refuses the upload's last acknowledged state
    ("upload resumed at wrong offset") and deletes it: the client must notice and upload from zero, correctly."""
    path, state_dir = bundle(tmp_path), tmp_path / "state"
    size = path.stat().st_size
    killed_push(registry, path, state_dir, "spectro-packs/cut", "mid-chunk")
    (state_file,) = state_dir.glob("oci-upload-*.json")
    assert json.loads(state_file.read_text())["offset"] == MIB
    # Read on the registry's disk (a GET would make it drop the upload): more than the acknowledged MiB arrived.
    (data,) = (registry.workdir / "storage").rglob("_uploads/*/data")
    assert MIB < data.stat().st_size < 2 * MIB

    with capture_logs() as events:
        fresh = push_artifact(registry.url, "spectro-packs/cut", "1.0", path, username=registry.username,
                              password=Secret(registry.password), verify=pinned_context(registry.fingerprint),
                              state_dir=state_dir, chunk_size=MIB)  # fmt: skip
    forgotten = [e for e in events if e["event"] == "oci_upload_forgotten"]
    assert len(forgotten) == 1 and forgotten[0]["status"] == 404, events
    assert fresh.uploaded_bytes == size + 2
    assert not list(state_dir.glob("oci-upload-*.json"))
    assert_stored(registry, "spectro-packs/cut", "1.0", path, fresh.manifest_digest)


class Stop(Exception):
    pass


@pytest.mark.lab
@pytest.mark.timeout(120)
def test_an_interrupted_push_resumes_and_an_upload_the_registry_forgot_starts_anew(
    registry: LabRegistry, tmp_path: Path
) -> None:
    path, state_dir = bundle(tmp_path), tmp_path / "state"
    size = path.stat().st_size

    def stop_after_two_chunks(done: int, total: int) -> None:
        if done >= 2 * MIB:
            raise Stop

    kwargs = dict(username=registry.username, password=Secret(registry.password),
                  verify=pinned_context(registry.fingerprint), state_dir=state_dir, chunk_size=MIB)  # fmt: skip
    with pytest.raises(Stop):
        push_artifact(registry.url, "spectro-packs/stopped", "1.0", path, progress=stop_after_two_chunks,
                      **kwargs)  # type: ignore[arg-type]
    resumed = push_artifact(registry.url, "spectro-packs/stopped", "1.0", path, **kwargs)  # type: ignore[arg-type]
    assert resumed.uploaded_bytes == size - 2 * MIB + 2

    # A state file naming an upload the registry does not know (expired, or another registry's): start anew.
    other = bundle(tmp_path, name="other.zst")
    with pytest.raises(Stop):
        push_artifact(registry.url, "spectro-packs/stopped", "2.0", other, progress=stop_after_two_chunks,
                      **kwargs)  # type: ignore[arg-type]
    (state_file,) = state_dir.glob("oci-upload-*.json")
    state = json.loads(state_file.read_text())
    uuid = state["location"].split("/uploads/")[1].split("?")[0]
    state["location"] = state["location"].replace(uuid, "00000000-0000-0000-0000-000000000000")
    state_file.write_text(json.dumps(state))
    fresh = push_artifact(registry.url, "spectro-packs/stopped", "2.0", other, **kwargs)  # type: ignore[arg-type]
    assert fresh.uploaded_bytes == other.stat().st_size  # the config blob is in this repository already
    assert_stored(registry, "spectro-packs/stopped", "2.0", other, fresh.manifest_digest)


@pytest.mark.lab
@pytest.mark.timeout(120)
def test_a_chunk_refused_as_out_of_order_is_sent_again_from_the_registrys_offset(
    registry: LabRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """416 (the registry holds another offset): the client asks it (GET, Range) and goes on from there.

    Distribution 2.8 does not check ``Content-Range`` (it appends what arrives), so the 416 of the first chunk is
    simulated in the client's transport; everything after it, the status GET included, is the real registry's.
    """
    path = bundle(tmp_path, size=2 * MIB + 99)
    real_raw, refused = oci._Session._raw, list[str]()

    def raw(self: oci._Session, method: str, url: str, headers: dict[str, str], content: bytes | None) -> Any:
        if method == "PATCH" and not refused:
            refused.append(headers["Content-Range"])
            return oci._Answer(416, httpx.Headers({"Content-Type": "application/json"}),
                               b'{"errors":[{"code":"RANGE_INVALID","message":"invalid content range"}]}')  # fmt: skip
        return real_raw(self, method, url, headers, content)

    monkeypatch.setattr(oci._Session, "_raw", raw)
    before = len(registry.requests())
    result = push_artifact(registry.url, "spectro-packs/shifted", "1.0", path, username=registry.username,
                           password=Secret(registry.password), verify=pinned_context(registry.fingerprint),
                           chunk_size=MIB)  # fmt: skip
    assert refused == [f"0-{MIB - 1}"]
    assert result.uploaded_bytes == path.stat().st_size + 2  # the refused chunk is not counted as sent
    methods = [line.split('"')[1].split()[0] for line in new_requests(registry, before)]
    assert methods[methods.index("POST"):][:3] == ["POST", "GET", "PATCH"]  # where do you stand? then the chunk
    assert_stored(registry, "spectro-packs/shifted", "1.0", path, result.manifest_digest)


@pytest.mark.lab
@pytest.mark.timeout(120)
def test_a_refusal_names_the_registry_and_repository(registry: LabRegistry, tmp_path: Path) -> None:
    """The file changes after its digest was taken: the registry refuses to close the upload (DIGEST_INVALID)."""
    path = bundle(tmp_path, size=2 * MIB)

    def tamper(done: int, total: int) -> None:
        if done == MIB:  # after the first chunk, the last byte changes
            with path.open("r+b") as fh:
                fh.seek(total - 1)
                last = fh.read(1)
                fh.seek(total - 1)
                fh.write(bytes([last[0] ^ 0xFF]))

    with pytest.raises(RegistryError) as refused:
        push_artifact(registry.url, "spectro-packs/changed", "1.0", path, username=registry.username,
                      password=Secret(registry.password), verify=pinned_context(registry.fingerprint),
                      chunk_size=MIB, progress=tamper, state_dir=tmp_path / "state")  # fmt: skip
    error = refused.value
    assert (error.registry, error.repository, error.status, error.code) == (
        registry.url, "spectro-packs/changed", 400, "DIGEST_INVALID")
    assert registry.url in str(error) and "spectro-packs/changed" in str(error) and "DIGEST_INVALID" in str(error)
    assert str(error).isprintable() and len(str(error)) < 400
    assert not list((tmp_path / "state").glob("oci-upload-*.json"))  # that upload is over: a re-run starts anew


@pytest.mark.lab
@pytest.mark.timeout(120)
def test_wrong_password_and_wrong_certificate(
    registry: LabRegistry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = bundle(tmp_path, size=4096)
    wrong = "not-the-password-" + registry.password[:6]
    # Both routes an event may take: structlog (when configured, as capture_logs and maybe an earlier test do) and
    # the standard library (caplog: httpx's own request log).
    caplog.set_level(logging.DEBUG)
    with capture_logs() as events, pytest.raises(AuthenticationError) as refused:
        push_artifact(registry.url, "spectro-packs/denied", "1.0", path, username=registry.username,
                      password=Secret(wrong), verify=pinned_context(registry.fingerprint))  # fmt: skip
    text = f"{refused.value} {refused.value!r} {refused.value.__cause__!r} {refused.value.__context__!r} {events!r}"
    assert "401 Unauthorized" in caplog.text  # the standard-library route did see the requests
    assert registry.username in str(refused.value) and registry.url in str(refused.value)
    basic = base64.b64encode(f"{registry.username}:{wrong}".encode()).decode()
    for leaked in (wrong, registry.password, basic):
        assert leaked not in text
        assert leaked not in caplog.text
    assert "401" in str(refused.value)

    # A wrong pin: refused inside the TLS handshake, so not one request (let alone a credential) reaches the registry.
    before = len(registry.requests())
    with pytest.raises(TLSVerificationError, match="expected the pinned"):
        push_artifact(registry.url, "spectro-packs/denied", "1.0", path, username=registry.username,
                      password=Secret(registry.password), verify=pinned_context("ab" * 32))  # fmt: skip
    # The system trust store does not know the lab's self-signed certificate either.
    with pytest.raises(TLSVerificationError, match="did not verify"):
        push_artifact(registry.url, "spectro-packs/denied", "1.0", path, username=registry.username,
                      password=Secret(registry.password), verify=verified_context())  # fmt: skip
    assert new_requests(registry, before) == []


@pytest.mark.lab
@pytest.mark.timeout(120)
def test_the_token_flow_of_a_bearer_registry(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    reg = start(tmp_path / "registry", auth="token")
    try:
        assert reg.token_server is not None
        path = bundle(tmp_path, size=MIB + 7)
        with httpx.Client(verify=verified_context(str(reg.ca)), trust_env=False) as plain:
            challenge = plain.get(f"{reg.url}/v2/").headers["www-authenticate"]
        assert challenge.startswith("Bearer realm=")  # a token registry, not a basic one

        caplog.set_level(logging.DEBUG)
        with capture_logs() as events:
            result = push_artifact(reg.url, "spectro-packs/tokened", "1.0", path, username=reg.username,
                                   password=Secret(reg.password), verify=pinned_context(reg.fingerprint))  # fmt: skip
        assert result.uploaded_bytes == path.stat().st_size + 2
        (token,) = reg.token_server.issued  # one token for the whole push
        assert "oci_manifest_pushed" in repr(events)
        assert token not in caplog.text + repr(events) and reg.password not in caplog.text + repr(events)
        again = push_artifact(reg.url, "spectro-packs/tokened", "1.0", path, username=reg.username,
                              password=Secret(reg.password), verify=pinned_context(reg.fingerprint))  # fmt: skip
        assert (again.uploaded_bytes, again.skipped) == (0, True)

        # The second client, with a token of its own: the manifest and the blob, byte for byte.
        own = reg.token_server.sign("pplab-registry", ["repository:spectro-packs/tokened:pull"])
        with httpx.Client(base_url=reg.url, verify=verified_context(str(reg.ca)), trust_env=False,
                          headers={"Authorization": f"Bearer {own}"}) as api:  # fmt: skip
            manifest = api.get("/v2/spectro-packs/tokened/manifests/1.0", headers={"Accept": MANIFEST_MEDIA_TYPE})
            assert manifest.headers["docker-content-digest"] == result.manifest_digest
            assert api.get(f"/v2/spectro-packs/tokened/blobs/{result.digest}").content == path.read_bytes()

        with pytest.raises(AuthenticationError) as refused:
            push_artifact(reg.url, "spectro-packs/tokened", "1.0", path, username=reg.username,
                          password=Secret("wrong-" + reg.password), verify=pinned_context(reg.fingerprint))  # fmt: skip
        assert reg.token_server.refused == 1
        assert reg.password not in str(refused.value) and token not in str(refused.value)
    finally:
        reg.stop()
