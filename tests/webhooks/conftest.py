"""Webhook fixtures: two tenants and their people on the real OpenBao, and a real local HTTP receiver."""
from __future__ import annotations

import pytest

from tests.web.conftest import make_tenant, make_user, web_client  # noqa: F401


@pytest.fixture
def acme(db, vault):
    return make_tenant("acme", "A00000061700CAFE0001", 0xF0A000)


@pytest.fixture
def globex(db, vault):
    return make_tenant("globex", "A00000061700BEEF0001", 0xF0B000)


@pytest.fixture
def admin(acme):
    return make_user("alice", [(acme, "admin")])


@pytest.fixture
def auditor(acme):
    return make_user("audrey", [(acme, "auditor")])


@pytest.fixture
def operator(acme):
    return make_user("oscar", [(acme, "operator")])


@pytest.fixture
def other_admin(globex):
    return make_user("bob", [(globex, "admin")])


def api_client(user=None):
    from rest_framework.test import APIClient

    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


class Receiver:
    """A real HTTP server on 127.0.0.1 (http.server in a thread) that answers with scripted statuses."""

    def __init__(self):
        import threading
        import time
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests: list[dict] = []
        self.statuses: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body,
                                          "at": time.monotonic()})
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/cms-events"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    server = Receiver()
    try:
        yield server
    finally:
        server.close()
