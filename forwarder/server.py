"""The HTTP listener for Prometheus and probes: /metrics, /healthz, /readyz.

It runs in a thread of its own, so a scrape is answered even while the event
loop is busy, and a stuck event loop shows as a failing /healthz instead of
a listener that hangs.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from forwarder.health import Health
from forwarder.metrics import Metrics


class ProbeServer:
    def __init__(self, host: str, port: int, metrics: Metrics, health: Health) -> None:
        handler = _handler_for(metrics, health)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="probe-server", daemon=True
        )

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    def start(self) -> ProbeServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def _handler_for(metrics: Metrics, health: Health) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "asana-audit-forwarder"
        # No Python version in the Server header, and no connection held open
        # for ever by a peer that never finishes its request.
        sys_version = ""
        timeout = 10

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._answer(
                    200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST
                )
            elif path == "/healthz":
                self._probe(*health.alive())
            elif path == "/readyz":
                self._probe(*health.ready())
            else:
                self._answer(404, b"not found\n", "text/plain")

        def _probe(self, ok: bool, reason: str) -> None:
            self._answer(200 if ok else 503, f"{reason}\n".encode(), "text/plain")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            # Scrapes every few seconds would drown the forwarder's own logs.
            return

    return Handler
