"""A real OCI registry for the lab: Debian's ``docker-registry`` (CNCF Distribution 2.8), TLS and authentication.

:class:`LabRegistry` starts ``/usr/bin/docker-registry serve <config.yml>`` with a configuration of its own (never
the package's ``/etc/docker/registry/config.yml``, whose service may hold port 5000): storage in a temporary
directory, ``127.0.0.1:<free port>``, a self-signed certificate from the project's one certificate maker, and
either

* ``auth="htpasswd"``: basic auth against a bcrypt htpasswd file (Distribution accepts only bcrypt), or
* ``auth="token"``: the Docker/OCI token flow. The registry answers ``401 Bearer realm=...`` and trusts JWTs signed
  by a key whose certificate is in its ``rootcertbundle``; :class:`_TokenServer` (a small HTTPS server in a thread)
  checks the basic credentials and issues such tokens (ES256, the certificate in the ``x5c`` header).

Example::

    with LabRegistry(tmp_path) as reg:
        push_artifact(reg.url, "packs/demo", "1.0", bundle, username=reg.username,
                      password=Secret(reg.password), verify=pinned_context(reg.fingerprint))
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import secrets
import socket
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Literal
from urllib.parse import parse_qs, urlsplit

import httpx
import yaml

from palette_provision.errors import TransientError
from palette_provision.media_server._tls import TlsFiles, generate_self_signed
from palette_provision.tls import verified_context
from palette_provision.waiting import Backoff, wait_for
from pplab._cmd import LabError, kill_group, require_tool

__all__ = ["LabRegistry"]

BINARY = "docker-registry"  # /usr/bin/docker-registry, Debian package docker-registry
SERVICE = "pplab-registry"
ISSUER = "pplab-token-issuer"


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class _TokenServer:
    """The token service of ``auth="token"``: ``GET /token?service=..&scope=..`` with basic credentials -> a JWT."""

    def __init__(self, tls: TlsFiles, signing: TlsFiles, username: str, password: str) -> None:
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        self.port = free_port()
        self.issued: list[str] = []  # the tokens given out (tests look for them where they must not be)
        self.refused = 0
        self._key = load_pem_private_key(signing.key.read_bytes(), password=None)
        self._x5c = base64.b64encode(ssl.PEM_cert_to_DER_cert(signing.cert.read_text())).decode("ascii")
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                given = self.headers.get("Authorization", "")
                expected = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
                if url.path != "/token" or not hmac.compare_digest(given.encode(), expected.encode()):
                    outer.refused += 1
                    self._answer(401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]})
                    return
                query = parse_qs(url.query)
                token = outer.sign(query.get("service", [""])[0], query.get("scope", []))
                outer.issued.append(token)
                self._answer(200, {"token": token, "access_token": token, "expires_in": 300})

            def _answer(self, status: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.socket = tls.server_context().wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, name="pplab-token", daemon=True)

    def sign(self, service: str, scopes: list[str]) -> str:
        """A JWT granting what ``scopes`` ask (``repository:<name>:<actions>``), as Distribution 2.8 verifies it."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": [a for a in actions.split(",") if a]})
        now = int(time.time())
        header = {"alg": "ES256", "typ": "JWT", "x5c": [self._x5c]}
        claims = {"iss": ISSUER, "sub": "pplab", "aud": service, "iat": now, "nbf": now - 5, "exp": now + 300,
                  "jti": secrets.token_hex(8), "access": access}  # fmt: skip
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        assert isinstance(self._key, ec.EllipticCurvePrivateKey)
        r, s = decode_dss_signature(self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()


class LabRegistry:
    """A Distribution registry with TLS and authentication, in ``workdir`` (see the module docstring)."""

    def __init__(self, workdir: Path, *, auth: Literal["htpasswd", "token"] = "htpasswd",
                 username: str = "pplab", password: str | None = None) -> None:  # fmt: skip
        self.workdir = Path(workdir)
        self.auth = auth
        self.username = username
        self.password = password or secrets.token_urlsafe(18)
        self.port = 0
        self.tls: TlsFiles | None = None
        self.token_server: _TokenServer | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------------------------------ addresses
    @property
    def url(self) -> str:
        """``https://127.0.0.1:<port>``."""
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca(self) -> Path:
        """The registry's (self-signed) certificate: a CA bundle for ``verified_context``."""
        assert self.tls is not None, "the registry is not started"
        return self.tls.cert

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the registry's certificate, for ``pinned_context``."""
        assert self.tls is not None, "the registry is not started"
        return self.tls.fingerprint

    @property
    def access_log(self) -> Path:
        """The registry's access log (one line per HTTP request it answered)."""
        return self.workdir / "access.log"

    @property
    def log(self) -> Path:
        """The registry's own log."""
        return self.workdir / "registry.log"

    def requests(self) -> list[str]:
        """The access log's lines so far."""
        return self.access_log.read_text(errors="replace").splitlines() if self.access_log.exists() else []

    # ------------------------------------------------------------------------------------------ lifecycle
    def _config(self) -> dict[str, object]:
        assert self.tls is not None
        if self.auth == "token":
            signing = generate_self_signed(self.workdir / "token-signing.crt", self.workdir / "token-signing.key",
                                           ["pplab-token-issuer"], key_type="ec", common_name=ISSUER)  # fmt: skip
            self.token_server = _TokenServer(self.tls, signing, self.username, self.password)
            auth: dict[str, object] = {"token": {
                "realm": f"https://127.0.0.1:{self.token_server.port}/token", "service": SERVICE, "issuer": ISSUER,
                "rootcertbundle": str(signing.cert)}}  # fmt: skip
        else:
            import bcrypt

            hashed = bcrypt.hashpw(self.password.encode(), bcrypt.gensalt(rounds=6)).decode("ascii")
            htpasswd = self.workdir / "htpasswd"
            htpasswd.write_text(f"{self.username}:{hashed}\n")
            htpasswd.chmod(0o600)
            auth = {"htpasswd": {"realm": SERVICE, "path": str(htpasswd)}}
        return {
            "version": 0.1,
            "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
            "storage": {"filesystem": {"rootdirectory": str(self.workdir / "storage")}, "delete": {"enabled": True}},
            "http": {"addr": f"127.0.0.1:{self.port}", "secret": secrets.token_hex(16),
                     "tls": {"certificate": str(self.tls.cert), "key": str(self.tls.key)}},
            "auth": auth,
        }

    def start(self, timeout: float = 30.0) -> LabRegistry:
        """Write the configuration, start the registry and wait until ``/v2/`` answers 401."""
        binary = require_tool(BINARY, "docker-registry")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.tls = generate_self_signed(self.workdir / "registry.crt", self.workdir / "registry.key",
                                        ["127.0.0.1", "localhost"], common_name="pplab registry")  # fmt: skip
        self.port = free_port()
        config = self.workdir / "config.yml"
        config.write_text(yaml.safe_dump(self._config()))
        if self.token_server is not None:
            self.token_server.start()
        # A clean environment: REGISTRY_* variables would override the configuration.
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.workdir)}
        with self.access_log.open("ab") as out, self.log.open("ab") as err:
            self._proc = subprocess.Popen([binary, "serve", str(config)], stdout=out, stderr=err, env=env,
                                          stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        context = verified_context(str(self.tls.cert))

        def probe() -> int:
            if self._proc is not None and self._proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-800:]
                raise LabError(f"docker-registry exited ({self._proc.returncode}): {tail}")
            try:
                return httpx.get(f"{self.url}/v2/", verify=context, trust_env=False, timeout=2.0).status_code
            except httpx.TransportError as exc:
                raise TransientError(f"registry not answering yet: {type(exc).__name__}") from exc

        try:
            wait_for(probe, what=f"the lab registry at {self.url} to answer 401", until=lambda s: s == 401,
                     timeout=timeout, backoff=Backoff(initial=0.05, maximum=0.5, jitter=0.05))  # fmt: skip
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the registry (and the token server)."""
        kill_group(self._proc)
        self._proc = None
        if self.token_server is not None:
            self.token_server.stop()
            self.token_server = None

    def __enter__(self) -> LabRegistry:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self.stop()
