"""`laer serve` registering its ops flows on a Prefect API that answers 503 (a SQLite-backed
server busy with a burst) keeps trying: it does not exit, and the flows end up registered.

A proxy in front of the real Prefect server refuses the first deployment writes with 503."""

from __future__ import annotations

import os
import select
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from laer.local.ports import free_port
from laer.local.prefect_server import prefect_env
from laer.local.processes import ManagedProcess
from laer.ops_flows import OPS_FLOWS
from tests.playbooks.conftest import HarnessFactory
from tests.playbooks.test_outages import wait_for

REFUSED = 4  # more than one deployment's worth, with the client's own retries turned off


class BusyPrefect:
    """Forwards to the real API; answers 503 to the first `refuse` deployment writes (a
    new deployment is a POST, one the server has is a PATCH)."""

    def __init__(self, upstream: str, refuse: int) -> None:
        self.upstream = upstream.rstrip("/")
        self.left = refuse
        self.refused = 0
        self.registered = 0  # deployment writes the real server accepted
        self.tunnels = 0  # websockets opened: the runner's event stream, once it has started
        self.lock = threading.Lock()
        self.http = httpx.Client(timeout=30)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def deployment_write(self) -> bool:
                """A new deployment (POST) or an existing one updated (PATCH of its id)."""
                path = self.path.split("?")[0].rstrip("/")
                return ((self.command == "POST" and path.endswith("/deployments"))
                        or (self.command == "PATCH" and "/deployments/" in path))

            def tunnel(self) -> None:
                """A websocket (the runner's event stream) goes through untouched."""
                url = httpx.URL(proxy.upstream)
                up = socket.create_connection((url.host, url.port or 80))
                head = f"{self.command} {self.path} HTTP/1.1\r\n" + "".join(
                    f"{k}: {v}\r\n" for k, v in self.headers.items()) + "\r\n"
                up.sendall(head.encode("latin-1"))
                with proxy.lock:
                    proxy.tunnels += 1
                ends = [self.connection, up]
                try:
                    while True:
                        ready, _, _ = select.select(ends, [], [], 60)
                        for end in ready:
                            data = end.recv(65536)
                            if not data:
                                return
                            (up if end is self.connection else self.connection).sendall(data)
                finally:
                    up.close()
                    self.close_connection = True

            def forward(self) -> None:
                if self.headers.get("Upgrade", "").lower() == "websocket":
                    self.tunnel()
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.deployment_write():
                    with proxy.lock:
                        busy = proxy.left > 0
                        if busy:
                            proxy.left -= 1
                            proxy.refused += 1
                    if busy:  # what the server answers when its database is locked
                        answer = b'{"exception_message": "Service Unavailable"}'
                        self.send_response(503)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(answer)))
                        self.end_headers()
                        self.wfile.write(answer)
                        return
                base = proxy.upstream.removesuffix("/api")
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "content-length", "connection")}
                r = proxy.http.request(self.command, base + self.path, content=body,
                                       headers=headers)
                if self.deployment_write():
                    with proxy.lock:
                        proxy.registered += r.is_success
                self.send_response(r.status_code)
                for k, v in r.headers.items():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection",
                                         "content-encoding"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(r.content)))
                self.end_headers()
                self.wfile.write(r.content)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = forward

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/api"


@pytest.fixture
def busy_prefect(prefect_api: str) -> Iterator[BusyPrefect]:
    proxy = BusyPrefect(prefect_api, REFUSED)
    proxy.thread.start()
    yield proxy
    proxy.server.shutdown()
    proxy.http.close()


def test_serve_keeps_registering_its_ops_flows_through_503s(
        harness: HarnessFactory, busy_prefect: BusyPrefect, tmp_path: Path) -> None:
    h = harness()
    env = prefect_env(tmp_path / "serve-prefect", api_url=busy_prefect.api_url)
    env.update(h.env)
    env.update({"PYTHONPATH": os.getcwd(), "PREFECT_CLIENT_MAX_RETRIES": "0",
                "LAER_SERVE_REGISTER_RETRY_S": "0.2"})
    serve = ManagedProcess("serve", ["serve", "--threads", "1"], env, tmp_path / "logs").start()
    try:
        wait_for(lambda: busy_prefect.registered >= len(OPS_FLOWS),
                 "the ops flows to be registered", timeout=180, alive=serve)
        assert busy_prefect.refused == REFUSED  # the faults did happen
        wait_for(lambda: busy_prefect.tunnels >= 1, "the runner to start serving",
                 timeout=120, alive=serve)
    finally:
        serve.stop()


def apply_error(status: int) -> Exception:
    """What `prefect.serve` raises when the API answers `status` to a deployment write."""
    from prefect.deployments.runner import DeploymentApplyError

    request = httpx.Request("POST", "http://prefect/api/deployments/")
    cause = httpx.HTTPStatusError("refused", request=request,
                                  response=httpx.Response(status, request=request))
    try:
        raise DeploymentApplyError(f"Error while applying deployment: {status}") from cause
    except DeploymentApplyError as exc:
        return exc


@pytest.mark.parametrize(("status", "calls"), [(503, 3), (429, 3), (422, 1), (404, 1)])
def test_only_transient_answers_are_tried_again(status: int, calls: int) -> None:
    from flows.kit.serve_ops import serve_ops

    made: list[int] = []

    def serve(*_: object, **__: object) -> None:
        made.append(1)
        if len(made) < 3:
            raise apply_error(status)

    if calls == 1:
        with pytest.raises(Exception, match=str(status)):
            serve_ops(["deployment"], retry_s=0.01, serve=serve)
    else:
        serve_ops(["deployment"], retry_s=0.01, serve=serve)
    assert len(made) == calls
