"""Webhook fixtures: two tenants and their people on the real OpenBao, and a real local HTTP receiver."""
from __future__ import annotations

import pytest

from tests.support import people
from tests.support.people import api_client, make_tenant, make_user  # noqa: F401  (re-exported)
from tests.web.conftest import web_client  # noqa: F401

# The shared two-tenant fixtures (tests/support/people.py), made visible to this folder's tests.
acme = people.acme
globex = people.globex
admin = people.admin
second_admin = people.second_admin
operator = people.operator
auditor = people.auditor
other_admin = people.other_admin


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
