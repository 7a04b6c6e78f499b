"""A node that answers anything: every endpoint the Local API client calls serves arbitrary JSON shapes, sizes,
nesting, status codes and content types. The hand-off must end in a ``HandoffError`` naming its step, with that step
``failed`` in the journal: never a traceback, never a step left ``started``."""

from __future__ import annotations

import http.server
import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from palette_provision.errors import HandoffError, PaletteProvisionError
from palette_provision.handoff.base import HandoffContext, ReadyNode
from palette_provision.handoff.local_api import PaletteLocalApi, default_client
from palette_provision.journal import Journal
from palette_provision.log import get_logger
from palette_provision.testing._simhttp import generate_self_signed
from palette_provision.waiting import Backoff
from tests.handoff import rig

_STEPS = {"handoff.configured", "handoff.link", "handoff.content", "handoff.content_sync", "handoff.cluster"}

_ANSWER: dict[str, Any] = {"status": 200, "type": "application/json", "body": b"{}"}


class _Hostile(http.server.BaseHTTPRequestHandler):
    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = _ANSWER["body"]
        self.send_response(_ANSWER["status"])
        self.send_header("Content-Type", _ANSWER["type"])
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _answer  # noqa: N815 - http.server's names

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture(scope="module")
def hostile_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    folder = tmp_path_factory.mktemp("hostile")
    generate_self_signed(folder / "cert.pem", folder / "key.pem", "node1", ["127.0.0.1"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=25,
)


def _published_keys() -> Any:
    # Answers shaped partly like the published ones, so the client gets past login and reads deeper.
    return st.fixed_dictionaries({}, optional={
        "Token": st.fixed_dictionaries({"Authorization": st.text(max_size=40)}) | json_values,
        "status": json_values, "metadata": json_values, "spec": json_values, "token": json_values,
        "peers": json_values, "sizeInBytes": json_values, "sha256Hash": json_values,
    })


bodies = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    _published_keys().map(lambda v: json.dumps(v).encode()),
    st.integers(min_value=1500, max_value=3000).map(lambda depth: b"[" * depth + b"]" * depth),  # past recursion
    st.binary(max_size=64),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(
    status=st.sampled_from([200, 200, 200, 201, 204, 400, 401, 404, 409, 500, 503]),
    content_type=st.sampled_from(["application/json", "text/html", "application/octet-stream"]),
    body=bodies,
)
def test_any_answer_ends_in_a_handoff_error_naming_its_step_and_a_failed_step(
    hostile_node: int, tmp_path: Path, status: int, content_type: str, body: bytes
) -> None:
    _ANSWER.update(status=status, type=content_type, body=body)
    plan = rig.build_plan(rig.plan_data(tmp_path, 1, content=None, overrides={
        "profile": "edge",
        "timeouts": {"configured": 0.6, "link": 0.6, "content_sync": 0.6, "cluster": 0.6},
    }))
    with Journal.open(tmp_path / f"journal-{id(body)}.sqlite", deployment=plan.name) as journal:
        context = HandoffContext(plan=plan, journal=journal, nodes=(ReadyNode("node1", "127.0.0.1", rig.USERNAME),),
                                 output_dir=tmp_path / "out", log=get_logger("hostile"))

        def client(ctx: HandoffContext, node: ReadyNode) -> Any:
            made = default_client(ctx, node, port=hostile_node)
            made._retry_window = 0.3  # keep each example short: retries of transient answers end quickly
            return made

        former = PaletteLocalApi(backoff=Backoff(0.05, 0.1, 0.0), client_factory=client)
        try:
            former.form(context)
        except HandoffError as exc:
            assert exc.step in _STEPS, exc.step
            step = journal.step(exc.step, "node1") or journal.step(exc.step)
            assert step is not None and step.status == "failed", (exc.step, step)
        except PaletteProvisionError as exc:  # pragma: no cover - the assertion below says what escaped
            pytest.fail(f"{type(exc).__name__} escaped the hand-off instead of a HandoffError: {exc}")
        else:
            pytest.fail("a hostile node formed a cluster")
        assert not [s for s in journal.steps() if s.status == "started"], "a step left started"
