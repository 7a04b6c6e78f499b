"""A Redfish BMC that takes a connection and never answers the request (a hung service, a stalled lossy link).

The driver gives such a request up after the plan's ``request_timeout_s``, and only once: sushy's connector would
try it three times (with sleeps Ctrl-C cannot cut short), so one stalled request would cost three timeouts before
the provider's own retry, which is logged and interruptible, could act. No lab needed: a TLS listener that reads
each request and answers nothing.
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from bmclab.redfish import generate_certificate
from palette_provision.errors import ConfigurationError
from palette_provision.log import get_logger
from palette_provision.plan import parse_plan
from palette_provision.provider import ProviderContext
from palette_provision.registry import create_provider
from palette_provision.secrets import Secret

from palette_provision_baremetal._bmc import BmcTimedOut
from palette_provision_baremetal._redfish import RedfishDriver

#: How long the silent BMC holds a connection before closing it. A client still waiting then sees the connection
#: end, not its own timeout: so the test tells a timeout that was applied from one that was not.
HOLD_S = 20


class SilentBmc:
    """Accepts TLS connections, reads each request, answers nothing (or, with ``headers_only``, an answer's headers
    and the first byte of its body); counts the connections."""

    def __init__(self, workdir: Path, *, headers_only: bool = False) -> None:
        self.headers_only = headers_only
        self.fingerprint = generate_certificate(workdir / "cert.pem", workdir / "key.pem")
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(workdir / "cert.pem", workdir / "key.pem")
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.connections = 0
        self._done = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # closed
            self.connections += 1
            threading.Thread(target=self._hold, args=(conn,), daemon=True).start()

    def _hold(self, conn: socket.socket) -> None:
        try:
            with self._context.wrap_socket(conn, server_side=True) as tls:
                tls.recv(65536)  # the request, read and never answered (in full)
                if self.headers_only:
                    tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
                self._done.wait(HOLD_S)
        except OSError:
            pass  # the client went away

    def close(self) -> None:
        self._done.set()
        self._listener.close()


@pytest.fixture(params=["nothing", "headers only"])
def silent_bmc(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SilentBmc]:
    bmc = SilentBmc(tmp_path, headers_only=request.param == "headers only")
    yield bmc
    bmc.close()


def test_a_request_the_bmc_never_answers_is_given_up_after_the_request_timeout_once(silent_bmc: SilentBmc) -> None:
    # Whether the answer never starts or stops after its headers (requests reads the body after the adapter).
    driver = RedfishDriver(
        "127.0.0.1", silent_bmc.port, "admin", Secret("silent-bmc-password", source="test"), node="rf-silent",
        fingerprint=silent_bmc.fingerprint, request_timeout_s=1,
    )  # fmt: skip
    with pytest.raises(BmcTimedOut) as info:
        driver.open()
    where = f"node rf-silent: BMC 127.0.0.1:{silent_bmc.port}"
    assert str(info.value) == f"{where} did not answer within 1 s while connecting"
    assert "timed out" in str(info.value.__cause__), "the request's own timeout ended it, not the BMC hanging up"
    assert silent_bmc.connections == 1, "one request, not sushy's three tries"
    assert "silent-bmc-password" not in str(info.value.__cause__)


def test_preflight_tries_a_bmc_that_timed_out_again_and_then_names_it(silent_bmc: SilentBmc, tmp_path: Path) -> None:
    # A request that timed out may have stalled on a lossy link: preflight tries again (a refused connection it
    # reports at once, see test_redfish_lab), for platform.bmc_retry_s, then names the node and the BMC.
    os.environ["PP_RF_SILENT_PASSWORD"] = "silent-bmc-password"
    plan = parse_plan({
        "name": "rf-silent", "profile": "edge", "iso": {"source": "/srv/palette.iso"},
        "cluster": {"name": "c", "vip": "10.0.0.100", "dns": ["10.0.0.1"],
                    "node_account": {"password": "env:PP_RF_SILENT_PASSWORD"}},
        "nodes": {"size": "small", "install_disk": "/dev/sda", "network": {"mode": "static", "gateway": "10.0.0.1"},
                  "hosts": [{"name": "rf-silent", "address": "10.0.0.21/24",
                             "bmc": {"protocol": "redfish", "address": "127.0.0.1", "port": silent_bmc.port,
                                     "username": "admin", "password": "env:PP_RF_SILENT_PASSWORD",
                                     "fingerprint": silent_bmc.fingerprint}}]},
        "readiness": {"ssh": False},
        "platform": {"provider": "baremetal", "media_server": {"bind": "127.0.0.1:0"}, "request_timeout_s": 0.5,
                     "bmc_retry_s": 2, "min_command_interval_s": 0},
    })  # fmt: skip
    context = ProviderContext(deployment=plan.name, state_dir=tmp_path / "state", log=get_logger("test"),
                              nodes=tuple(plan.node_specs()))  # fmt: skip
    provider = create_provider("baremetal", plan.platform_settings, context)
    with pytest.raises(ConfigurationError) as info:
        provider.preflight(plan)
    assert info.value.field == "nodes.hosts[0].bmc"
    assert f"BMC 127.0.0.1:{silent_bmc.port} did not answer within 0.5 s while connecting" in str(info.value)
    assert silent_bmc.connections >= 2, "the timed-out request was tried again"
    assert "silent-bmc-password" not in str(info.value)
    opened, closed = provider.sessions
    assert opened == closed
