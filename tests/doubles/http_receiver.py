"""Real HTTP servers for the sinks' tests, and a generic JSON receiver.

``DoubleServer`` is an HTTP/1.1 server (keep-alive, Content-Length) on an
ephemeral port of 127.0.0.1, served from its own thread so that the sink
under test talks to it over a real socket from the test's event loop. It
can speak TLS (pass a server-side ``ssl.SSLContext``), holds a queue of
faults (the next replies to data requests, whatever they carry), and
records anything its own logic raised so that a test can fail on it.

``HttpReceiver`` is what Logstash's ``http`` input, Vector's
``http_server`` or Cribl's HTTP source do: accept a batch of JSON documents
as ndjson or a JSON array, check configured headers, refuse a body over a
size limit (413), and refuse a whole request (400) holding a document a
test marks as unacceptable.
"""

from __future__ import annotations

import contextlib
import gzip
import socket
import ssl
import threading
import zlib
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import orjson


@dataclass(frozen=True, slots=True)
class Request:
    """A request as the double received it; ``headers`` keys are lowercase."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    raw_body: bytes

    def body(self) -> bytes:
        """The body with its Content-Encoding undone; ValueError if broken."""
        encoding = self.headers.get("content-encoding", "identity").lower()
        try:
            if encoding == "gzip":
                return gzip.decompress(self.raw_body)
            if encoding == "deflate":
                # HTTP's deflate is zlib-wrapped; some clients send it raw.
                try:
                    return zlib.decompress(self.raw_body)
                except zlib.error:
                    return zlib.decompress(self.raw_body, -zlib.MAX_WBITS)
        except (OSError, EOFError, zlib.error) as error:
            raise ValueError(f"cannot decode {encoding} body: {error}") from None
        if encoding != "identity":
            raise ValueError(f"unsupported Content-Encoding {encoding}")
        return self.raw_body


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    # Close the connection without answering, as a crashing server does.
    disconnect: bool = False

    @classmethod
    def json(cls, status: int, document: Any, *headers: tuple[str, str]) -> Response:
        return cls(
            status,
            orjson.dumps(document),
            (("Content-Type", "application/json"), *headers),
        )

    @classmethod
    def text(cls, status: int, text: str, *headers: tuple[str, str]) -> Response:
        return cls(status, text.encode(), (("Content-Type", "text/plain"), *headers))


DISCONNECT = Response(0, disconnect=True)


class DoubleServer:
    """Base of the test doubles: subclasses implement ``handle``."""

    def __init__(self, *, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls
        self.lock = threading.Lock()
        self.errors: list[BaseException] = []
        self.requests_seen = 0
        self._faults: deque[Response | None] = deque()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._workers: set[threading.Thread] = set()

    # -- life cycle ------------------------------------------------------------

    def start(self) -> Self:
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{type(self).__name__}-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        assert self._thread is not None
        self._thread.join(5)
        with self.lock:
            connections = list(self._connections)
            workers = list(self._workers)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        for worker in workers:
            worker.join(5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    # -- faults ----------------------------------------------------------------

    def inject(self, *replies: Response | None) -> None:
        """The next data requests get these replies, in order, and their
        content is dropped (a busy or throttling receiver keeps nothing);
        None lets one request through to be answered normally."""
        with self.lock:
            self._faults.extend(replies)

    def take_fault(self) -> Response | None:
        """For ``handle``: the next injected reply, if any (lock held)."""
        return self._faults.popleft() if self._faults else None

    @property
    def faults_left(self) -> int:
        with self.lock:
            return len(self._faults)

    # -- requests --------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        """Answer one request; called with ``self.lock`` held."""
        raise NotImplementedError

    def _dispatch(self, request: Request) -> Response:
        with self.lock:
            self.requests_seen += 1
            try:
                return self.handle(request)
            except Exception as error:
                self.errors.append(error)
                return Response.text(500, f"double failed: {error!r}")

    def _track(self, connection: socket.socket, worker: threading.Thread) -> None:
        with self.lock:
            self._connections.add(connection)
            self._workers.add(worker)

    def _untrack(self, connection: socket.socket, worker: threading.Thread) -> None:
        with self.lock:
            self._connections.discard(connection)
            self._workers.discard(worker)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    # The forwarder opens up to max_concurrent_requests connections at once;
    # socketserver's default backlog of 5 makes the kernel drop the rest of
    # the SYNs, and each retries a second later.
    request_queue_size = 128

    def __init__(self, double: DoubleServer) -> None:
        self.double = double
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        worker = threading.Thread(
            target=self._serve_connection, args=(request, client_address), daemon=True
        )
        self.double._track(request, worker)
        worker.start()

    def _serve_connection(self, connection: socket.socket, address: Any) -> None:
        worker = threading.current_thread()
        tls = self.double.tls
        try:
            if tls is not None:
                self.double._untrack(connection, worker)
                connection = tls.wrap_socket(connection, server_side=True)
                self.double._track(connection, worker)
            self.finish_request(connection, address)
        except (OSError, ssl.SSLError):
            pass  # the client went away or refused our certificate
        finally:
            self.double._untrack(connection, worker)
            self.shutdown_request(connection)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 30
    # Headers and body go in two writes: without this, Nagle's algorithm
    # and delayed ACKs add 40 ms to every reply.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_DELETE = do_GET

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        request = Request(
            method=self.command,
            path=url.path,
            query=parse_qs(url.query),
            headers={key.lower(): value for key, value in self.headers.items()},
            raw_body=body,
        )
        response = self.server.double._dispatch(request)
        if response.disconnect:
            self.close_connection = True
            return
        self.send_response(response.status)
        for key, value in response.headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        return


# -- a generic JSON receiver --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Received:
    """One accepted request of the generic receiver."""

    method: str
    path: str
    headers: dict[str, str]
    raw_body: bytes
    documents: list[Any]


class HttpReceiver(DoubleServer):
    """Accepts JSON batches at ``path``; see the module's docstring.

    ``required_headers``: a missing one is answered 401, a wrong value 403.
    ``refuse``: a predicate on one document; a request holding one that
    matches is refused whole with 400, and nothing of it is kept.
    """

    def __init__(
        self,
        *,
        path: str = "/ingest",
        required_headers: Mapping[str, str] | None = None,
        max_body_bytes: int = 10_000_000,
        refuse: Callable[[Any], bool] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(tls=tls)
        self.path = path
        self.required_headers = dict(required_headers or {})
        self.max_body_bytes = max_body_bytes
        self.refuse = refuse
        self.received: list[Received] = []

    @property
    def documents(self) -> list[Any]:
        with self.lock:
            return [doc for request in self.received for doc in request.documents]

    def handle(self, request: Request) -> Response:
        if request.path != self.path:
            return Response.text(404, "not found")
        if request.method not in ("POST", "PUT"):
            return Response.text(405, "method not allowed")
        for name, expected in self.required_headers.items():
            value = request.headers.get(name.lower())
            if value is None:
                return Response.text(401, f"missing {name}")
            if value != expected:
                return Response.text(403, f"wrong {name}")
        fault = self.take_fault()
        if fault is not None:
            return fault
        try:
            body = request.body()
        except ValueError as error:
            return Response.text(400, str(error))
        if len(body) > self.max_body_bytes:
            return Response.text(413, "request entity too large")
        try:
            documents = _documents(request.headers.get("content-type", ""), body)
        except ValueError as error:
            return Response.text(400, f"cannot parse body: {error}")
        if self.refuse is not None and any(self.refuse(doc) for doc in documents):
            return Response.json(400, {"error": "document refused"})
        self.received.append(
            Received(
                request.method,
                request.path,
                request.headers,
                request.raw_body,
                documents,
            )
        )
        return Response.json(200, {"accepted": len(documents)})


def _documents(content_type: str, body: bytes) -> list[Any]:
    media = content_type.split(";")[0].strip().lower()
    if media == "application/json":
        documents = orjson.loads(body)
        if not isinstance(documents, list):
            raise ValueError("expected a JSON array")
        return documents
    if media in ("application/x-ndjson", "application/jsonl"):
        if body and not body.endswith(b"\n"):
            raise ValueError("ndjson must end with a newline")
        return [orjson.loads(line) for line in body.split(b"\n") if line.strip()]
    raise ValueError(f"unsupported Content-Type {content_type!r}")
