"""A Sumo Logic HTTP Logs source that runs in the test process.

- The source lives at ``/receiver/v1/http/<code>``; the whole URL is the
  credential. An unknown code is answered 401 (the source is deleted or the
  URL mistyped); a path outside ``/receiver/v1/http/`` is 404.
- ``POST`` only (405 otherwise). ``Content-Encoding: gzip`` or ``deflate``.
- A body over ``max_bytes`` uncompressed (1 MB by default) is refused with
  413 and nothing of it is kept. Sumo Logic documents 1 MB as the most a
  request may carry; a proxy in front of a receiver answers such a request
  413, which is the clearest signal the double can give that the sink broke
  the rule.
- Messages are the body's lines (newline-separated, UTF-8); empty lines are
  not messages.
- ``X-Sumo-Category``, ``X-Sumo-Name``, ``X-Sumo-Host`` and
  ``X-Sumo-Fields`` (``k=v,k2=v2``) are recorded with each request.
- Faults: ``inject(SumoDouble.throttled("3"), SumoDouble.unavailable())``:
  the next requests get those answers and, as Sumo Logic does with
  throttled data, their messages are dropped, not recorded.
"""

from __future__ import annotations

import secrets
import ssl
from collections.abc import Iterable
from dataclasses import dataclass

from tests.doubles.http_receiver import DoubleServer, Request, Response

PREFIX = "/receiver/v1/http/"
ONE_MB = 1_000_000


@dataclass(frozen=True, slots=True)
class SumoRequest:
    """One accepted request and the messages it carried."""

    code: str
    headers: dict[str, str]
    raw_body: bytes
    size: int
    messages: list[bytes]

    @property
    def category(self) -> str | None:
        return self.headers.get("x-sumo-category")

    @property
    def name(self) -> str | None:
        return self.headers.get("x-sumo-name")

    @property
    def host(self) -> str | None:
        return self.headers.get("x-sumo-host")

    @property
    def fields(self) -> dict[str, str]:
        text = self.headers.get("x-sumo-fields", "")
        pairs = (item.split("=", 1) for item in text.split(",") if "=" in item)
        return {key.strip(): value.strip() for key, value in pairs}


class SumoDouble(DoubleServer):
    def __init__(
        self,
        codes: Iterable[str] = (),
        *,
        max_bytes: int = ONE_MB,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(tls=tls)
        self.codes = set(codes) or {secrets.token_urlsafe(48)}
        self.max_bytes = max_bytes
        self.accepted: list[SumoRequest] = []
        self.refused: list[tuple[int, int]] = []  # (status, body size)

    @property
    def source_url(self) -> str:
        """The URL of the (first) source: the secret a sink is given."""
        return f"{self.url}{PREFIX}{sorted(self.codes)[0]}"

    @staticmethod
    def throttled(retry_after: str | None = None) -> Response:
        headers = (("Retry-After", retry_after),) if retry_after else ()
        return Response.text(429, "Too Many Requests", *headers)

    @staticmethod
    def unavailable() -> Response:
        return Response.text(503, "Service Unavailable")

    def messages(self) -> list[bytes]:
        with self.lock:
            return [message for item in self.accepted for message in item.messages]

    def handle(self, request: Request) -> Response:
        if not request.path.startswith(PREFIX):
            return Response.text(404, "Not Found")
        code = request.path[len(PREFIX) :]
        if code not in self.codes:
            return Response.text(401, "Unauthorized")
        if request.method != "POST":
            return Response.text(405, "Method Not Allowed")
        fault = self.take_fault()
        if fault is not None:
            return fault
        try:
            body = request.body()
        except ValueError as error:
            return Response.text(400, str(error))
        if len(body) > self.max_bytes:
            self.refused.append((413, len(body)))
            return Response.text(413, "Request Entity Too Large")
        messages = [line for line in body.split(b"\n") if line.strip()]
        self.accepted.append(
            SumoRequest(code, request.headers, request.raw_body, len(body), messages)
        )
        return Response(200)
