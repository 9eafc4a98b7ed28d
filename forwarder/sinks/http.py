"""``http``: JSON over HTTP for Cribl, Logstash, Vector, Elastic, Datadog and
other receivers that take a batch of JSON documents in a POST or PUT.

The body is newline-delimited JSON (``ndjson``, each line ending in a
newline) or a JSON array (``json_array``), gzipped unless told otherwise.
Headers come from the configuration, each value a secret (a literal,
``env:NAME`` or ``file:PATH``), so API keys never sit in the file.

Replies: 2xx delivered; 408, 429 and 5xx retried after ``Retry-After``;
401 and 403 credentials refused; 413 the request is split in halves; 400
on a lone event sets it aside, on several events splits the request until
the refused ones are alone.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import structlog
from pydantic import field_validator

from forwarder.config_types import SecretValue
from forwarder.secrets import Secret
from forwarder.sinks.base import Batch, DeliveryReport
from forwarder.sinks.http_delivery import (
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_MAX_REQUEST_EVENTS,
    BatchProgress,
    Compression,
    HttpSinkBaseConfig,
    ReceiverUrl,
    Reply,
    RequestBytes,
    RequestEvents,
    SinkClient,
    classify_reply,
    compress,
    deliver_requests,
    host_of,
    plan_requests,
    send,
)

log = structlog.get_logger("forwarder.sinks.http")

Encoding = Literal["ndjson", "json_array"]
CREDENTIAL = "credentials in the configured headers"
CONTENT_TYPES: dict[str, str] = {
    "ndjson": "application/x-ndjson",
    "json_array": "application/json",
}
# Headers the sink sets from the body it sends, or that would break HTTP.
RESERVED_HEADERS = frozenset(
    {"content-length", "content-encoding", "transfer-encoding", "host", "connection"}
)
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


class HttpSinkConfig(HttpSinkBaseConfig):
    type: Literal["http"]
    url: ReceiverUrl
    method: Literal["POST", "PUT"] = "POST"
    headers: dict[str, SecretValue] = {}
    encoding: Encoding = "ndjson"
    max_request_bytes: RequestBytes = DEFAULT_MAX_REQUEST_BYTES
    max_request_events: RequestEvents = DEFAULT_MAX_REQUEST_EVENTS

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, Secret]) -> dict[str, Secret]:
        for header, secret in value.items():
            if not _TOKEN.match(header):
                raise ValueError(f"{header!r} is not a valid header name")
            if header.lower() in RESERVED_HEADERS:
                raise ValueError(
                    f"{header} is set by the sink and cannot be configured"
                )
            if any(ch in secret.reveal() for ch in "\r\n\0"):
                raise ValueError(f"the value of {header} holds a line break")
        return value


class HttpSink:
    def __init__(
        self,
        name: str,
        *,
        url: str,
        method: Literal["POST", "PUT"] = "POST",
        headers: dict[str, Secret] | None = None,
        encoding: Encoding = "ndjson",
        ca_file: Path | None = None,
        tls_verify: bool = True,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        max_request_events: int = DEFAULT_MAX_REQUEST_EVENTS,
        compression: Compression = "gzip",
        request_timeout: float = 30.0,
    ) -> None:
        self.name = name
        self.url = url
        self.target = host_of(url)
        self._method = method
        self._encoding: Encoding = encoding
        self._headers = {"Content-Type": CONTENT_TYPES[encoding]}
        # Configured headers win, Content-Type included (some receivers want
        # their own media type).
        configured = {k: v.reveal() for k, v in (headers or {}).items()}
        for value in configured.values():
            # "Bearer <token>": a receiver may echo the token alone.
            credential = value.partition(" ")[2].strip()
            if credential:
                Secret(credential)
        for header in list(self._headers):
            if any(header.lower() == key.lower() for key in configured):
                del self._headers[header]
        self._headers.update(configured)
        self._max_request_bytes = max_request_bytes
        self._max_request_events = max_request_events
        self._compression: Compression = compression
        self._connection = SinkClient(
            sink=name,
            url=url,
            ca_file=ca_file,
            tls_verify=tls_verify,
            request_timeout=request_timeout,
        )
        self._progress = BatchProgress()

    @classmethod
    def from_config(cls, config: HttpSinkConfig) -> HttpSink:
        return cls(
            config.name,
            url=config.url,
            method=config.method,
            headers=config.headers,
            encoding=config.encoding,
            ca_file=config.ca_file,
            tls_verify=config.tls_verify,
            max_request_bytes=config.max_request_bytes,
            max_request_events=config.max_request_events,
            compression=config.compression,
            request_timeout=config.request_timeout,
        )

    async def open(self) -> None:
        self._connection.open()

    async def aclose(self) -> None:
        await self._connection.aclose()

    async def deliver(self, batch: Batch) -> DeliveryReport:
        remaining = self._progress.begin(batch)
        # One separator byte per event either way; json_array adds "[]".
        overhead = 2 if self._encoding == "json_array" else 0
        requests = plan_requests(
            ((index, len(batch.payloads[index]) + 1) for index in remaining),
            max_bytes=self._max_request_bytes,
            max_events=self._max_request_events,
            overhead=overhead,
        )

        async def post(request: list[int]) -> Reply:
            return await self._post(request, batch.payloads)

        await deliver_requests(
            requests,
            post,
            self._progress,
            sink=self.name,
            target=self.target,
            credential=CREDENTIAL,
        )
        return self._progress.finish()

    def body(self, payloads: list[bytes]) -> bytes:
        """The request body for these rendered events, before compression."""
        if self._encoding == "json_array":
            return b"[" + b",".join(payloads) + b"]"
        return b"".join(payload + b"\n" for payload in payloads)

    async def _post(self, request: list[int], payloads: list[bytes]) -> Reply:
        body, encoding = compress(
            self.body([payloads[index] for index in request]), self._compression
        )
        response = await send(
            self._connection.client,
            self._method,
            self.url,
            target=self.target,
            content=body,
            headers={**self._headers, **encoding},
        )
        return classify_reply(response, "http")
