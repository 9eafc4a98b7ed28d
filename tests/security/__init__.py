"""Security tests (issue 6): secrets never exposed, transport security, state
file permissions. docs/threat-model.md points at these tests.

Shared here: ``FakeAuditApi``, an audit-log endpoint that can speak TLS and
can refuse the token while echoing it back (as a hostile or careless server
would), and ``TcpCollector``, a TCP or TLS listener that keeps every byte,
enough of a syslog receiver to see what a sink sent or whether it connected.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import trustme

from tests.doubles.http_receiver import DoubleServer, Request, Response

WORKSPACE_GID = "1111"
API_PREFIX = "/api/1.0"
LAST_OFFSET = "offset-at-the-end"


def api_event(number: int) -> dict[str, Any]:
    """An audit-log event as the API serves it."""
    return {
        "gid": f"{7_000_000 + number}",
        "created_at": f"2026-01-01T00:00:{number % 60:02d}.000Z",
        "event_type": "user_login_succeeded",
        "event_category": "logins",
        "actor": {"actor_type": "user", "gid": "42", "email": "ada@example.com"},
        "resource": {"resource_type": "user", "gid": "42"},
        "context": {"context_type": "web", "client_ip_address": "192.0.2.1"},
        "details": {},
    }


class FakeAuditApi(DoubleServer):
    """``GET /api/1.0/workspaces/1111/audit_log_events``: the first request
    gets ``events`` and an offset; the offset gets an empty page (caught up).

    With ``echo_refusal`` every request is refused 401 with the request's
    Authorization header in the error message (after ``echo_padding``
    characters of other text), to prove that whatever a server echoes is
    blanked out before it reaches a log line or a probe.
    """

    def __init__(
        self,
        events: list[dict[str, Any]],
        *,
        echo_refusal: bool = False,
        echo_padding: int = 0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(tls=tls)
        self.events = events
        self.echo_refusal = echo_refusal
        self.echo_padding = echo_padding

    @property
    def base_url(self) -> str:
        return f"{self.url}{API_PREFIX}"

    def handle(self, request: Request) -> Response:
        path = request.path
        if not (path.startswith(API_PREFIX) and path.endswith("/audit_log_events")):
            return Response.json(404, {"errors": [{"message": "Not Found"}]})
        if self.echo_refusal:
            received = request.headers.get("authorization", "")
            padding = "p" * self.echo_padding
            message = f"{padding}Not Authorized: {received} is not a valid token"
            return Response.json(401, {"errors": [{"message": message}]})
        offset = request.query.get("offset", [""])[0]
        start_at = request.query.get("start_at", [""])[0]
        end_at = request.query.get("end_at", [None])[0]
        data = [
            event
            for event in ([] if offset == LAST_OFFSET else self.events)
            if start_at <= event["created_at"]
            and (end_at is None or event["created_at"] < end_at)
        ]
        return Response.json(200, {"data": data, "next_page": {"offset": LAST_OFFSET}})


def server_context(authority: trustme.CA) -> ssl.SSLContext:
    """A server-side TLS context with a certificate for 127.0.0.1 from
    ``authority``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


def write_ca(authority: trustme.CA, path: Path) -> Path:
    authority.cert_pem.write_to_path(str(path))
    return path


class TcpCollector:
    """A TCP listener on 127.0.0.1 (TLS with ``tls``) that keeps every byte
    each connection sends, and the TLS handshake failures it saw."""

    def __init__(self, *, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls
        self.lock = threading.Lock()
        self.received = bytearray()
        self.handshake_failures: list[str] = []
        self.connections = 0
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []

    @property
    def port(self) -> int:
        assert self._listener is not None, "not started"
        port: int = self._listener.getsockname()[1]
        return port

    @property
    def data(self) -> bytes:
        with self.lock:
            return bytes(self.received)

    def start(self) -> Self:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        # accept() wakes up this often to see whether stop() was called.
        listener.settimeout(0.05)
        self._listener = listener
        self._spawn(self._accept_loop)
        return self

    def stop(self) -> None:
        self._stopping.set()
        with self.lock:
            sockets = list(self._sockets)
        for connection in sockets:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        for thread in list(self._threads):
            thread.join(5)
        for connection in sockets:
            connection.close()
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _spawn(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            connection.settimeout(None)
            with self.lock:
                self.connections += 1
                self._sockets.append(connection)
            self._spawn(self._serve, connection)

    def _serve(self, connection: socket.socket) -> None:
        stream: socket.socket = connection
        if self.tls is not None:
            try:
                stream = self.tls.wrap_socket(connection, server_side=True)
            except (ssl.SSLError, OSError) as error:
                with self.lock:
                    self.handshake_failures.append(str(error))
                return
            with self.lock:
                self._sockets.append(stream)
        while True:
            try:
                chunk = stream.recv(65536)
            except (ssl.SSLError, OSError):
                return
            if not chunk:
                return
            with self.lock:
                self.received.extend(chunk)
