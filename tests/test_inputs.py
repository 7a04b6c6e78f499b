"""What the library reads from the user's side is bounded and checked: secret files, plan files, digests, ISO URLs."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from palette_provision.errors import ConfigurationError, PlanError
from palette_provision.media import fetch_iso, shown_url
from palette_provision.plan import IsoSource, load_plan, parse_plan
from palette_provision.secrets import MAX_SECRET_FILE_BYTES, SecretReferenceError, resolve_secret

from .conftest import base_plan


def test_secret_files_are_read_with_a_size_limit(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"x" * (MAX_SECRET_FILE_BYTES + 1))
    with pytest.raises(SecretReferenceError, match="larger than"):
        resolve_secret(f"file:{big}")
    with pytest.raises(SecretReferenceError, match="larger than"):
        resolve_secret("file:/dev/zero")  # bounded: returns at once instead of filling the memory
    ok = tmp_path / "key"
    ok.write_text("-----BEGIN KEY-----\nabc\n-----END KEY-----\n")
    assert resolve_secret(f"file:{ok}").reveal().endswith("-----END KEY-----")


def test_plan_files_are_read_with_a_size_limit(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_bytes(b"# padding\n" * (500 * 1024))
    with pytest.raises(PlanError, match="larger than"):
        load_plan(path)


def test_the_content_bundles_digest_is_checked_like_the_isos(tmp_path: Path) -> None:
    data = base_plan(tmp_path)
    data["content"] = {"path": str(tmp_path / "bundle.tar.zst"), "sha256": "not-a-digest"}
    with pytest.raises(PlanError) as info:
        parse_plan(data, base_dir=tmp_path)
    assert "content.sha256" in {i.path for i in info.value.issues}


class _Iso(http.server.BaseHTTPRequestHandler):
    body = b"iso bytes " * 1000
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def iso_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Iso)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_an_iso_download_ignores_proxy_settings_in_the_environment(
    iso_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens there: a proxied request would fail
    digest = hashlib.sha256(_Iso.body).hexdigest()
    path = fetch_iso(IsoSource(source=f"{iso_server}/palette.iso", sha256=digest), tmp_path / "cache", timeout=20)
    assert path.read_bytes() == _Iso.body


def test_a_failed_iso_download_leaves_no_partial_file_and_shows_no_credentials(iso_server: str, tmp_path: Path) -> None:
    url = iso_server.replace("http://", "http://user:s3cr3t-pw@") + "/palette.iso?X-Amz-Signature=deadbeef"
    with pytest.raises(ConfigurationError) as info:
        fetch_iso(IsoSource(source=url, sha256="0" * 64), tmp_path / "cache", timeout=20)
    assert "SHA-256" in str(info.value)
    assert not list((tmp_path / "cache").iterdir()), "nothing left behind"
    assert shown_url(url) == f"{iso_server}/palette.iso"
    assert "s3cr3t-pw" not in shown_url(url) and "deadbeef" not in shown_url(url)
