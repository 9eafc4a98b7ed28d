"""``sumo_logic``: a Sumo Logic HTTP Logs and Metrics source.

Events go as newline-separated messages, gzipped, in requests of at most
1 MB uncompressed: Sumo Logic's hard limit. An event that alone is larger
cannot be sent at all and is set aside with that reason.

The source URL is the credential (anyone holding it can write to the
source), so it is a secret: messages and logs name its host only, and its
path is blanked out of any text that goes into them.

Sumo Logic drops the data of a request it answers with 429 (throttled),
503 or 504; those requests are sent again after ``Retry-After``. A 401, 403
or 404 means the URL is wrong or the source is gone.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import structlog
from pydantic import field_validator

from forwarder.config_types import SecretValue
from forwarder.secrets import Secret
from forwarder.sinks.base import Batch, DeliveryReport
from forwarder.sinks.http_delivery import (
    BatchProgress,
    Compression,
    HttpSinkBaseConfig,
    Reply,
    SinkClient,
    check_url,
    classify_reply,
    compress,
    deliver_requests,
    host_of,
    log_rejected,
    plan_requests,
    send,
)

log = structlog.get_logger("forwarder.sinks.sumo_logic")

# Sumo Logic's limit on one request, uncompressed; "1 MB" read as the
# smaller, decimal megabyte so that no request is ever over it.
MAX_REQUEST_BYTES = 1_000_000
CREDENTIAL = "source URL"
_FIELD_TEXT = re.compile(r"^[^,=\r\n]+$")


class SumoLogicSinkConfig(HttpSinkBaseConfig):
    type: Literal["sumo_logic"]
    url: SecretValue
    category: str | None = None
    # X-Sumo-Name; ``name`` is the sink's own name.
    source_name: str | None = None
    host: str | None = None
    fields: dict[str, str] = {}

    @field_validator("url")
    @classmethod
    def _url(cls, value: Secret) -> Secret:
        check_url(value.reveal())
        return value

    @field_validator("fields")
    @classmethod
    def _fields(cls, value: dict[str, str]) -> dict[str, str]:
        for key, text in value.items():
            if not _FIELD_TEXT.match(key) or not _FIELD_TEXT.match(text):
                raise ValueError(
                    f"field {key!r}: names and values cannot be empty or hold "
                    "',', '=' or line breaks"
                )
        return value


def fields_header(fields: dict[str, str]) -> str:
    """``X-Sumo-Fields``: ``k=v,k2=v2``."""
    return ",".join(f"{key.strip()}={value.strip()}" for key, value in fields.items())


class SumoLogicSink:
    def __init__(
        self,
        name: str,
        *,
        url: Secret,
        category: str | None = None,
        source_name: str | None = None,
        host: str | None = None,
        fields: dict[str, str] | None = None,
        ca_file: Path | None = None,
        tls_verify: bool = True,
        compression: Compression = "gzip",
        request_timeout: float = 30.0,
        max_request_bytes: int = MAX_REQUEST_BYTES,
    ) -> None:
        self.name = name
        self._url = url
        revealed = url.reveal()
        self.target = host_of(revealed)
        # The path holds the source's code. Making it a Secret too has the
        # log pipeline blank it even where the full URL does not appear.
        self._path = urlsplit(revealed).path
        Secret(self._path)
        self._headers = {"Content-Type": "text/plain; charset=utf-8"}
        for header, value in (
            ("X-Sumo-Category", category),
            ("X-Sumo-Name", source_name),
            ("X-Sumo-Host", host),
            ("X-Sumo-Fields", fields_header(fields or {})),
        ):
            if value:
                self._headers[header] = value
        self._compression: Compression = compression
        self._max_request_bytes = min(max_request_bytes, MAX_REQUEST_BYTES)
        self._connection = SinkClient(
            sink=name,
            url=revealed,
            ca_file=ca_file,
            tls_verify=tls_verify,
            request_timeout=request_timeout,
        )
        self._progress = BatchProgress()

    @classmethod
    def from_config(cls, config: SumoLogicSinkConfig) -> SumoLogicSink:
        return cls(
            config.name,
            url=config.url,
            category=config.category,
            source_name=config.source_name,
            host=config.host,
            fields=config.fields,
            ca_file=config.ca_file,
            tls_verify=config.tls_verify,
            compression=config.compression,
            request_timeout=config.request_timeout,
        )

    async def open(self) -> None:
        self._connection.open()

    async def aclose(self) -> None:
        await self._connection.aclose()

    async def deliver(self, batch: Batch) -> DeliveryReport:
        remaining = self._progress.begin(batch)
        fitting = [i for i in remaining if self._fits(i, batch.payloads[i])]
        requests = plan_requests(
            ((index, len(batch.payloads[index]) + 1) for index in fitting),
            max_bytes=self._max_request_bytes,
            max_events=len(batch) or 1,
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

    def _fits(self, index: int, payload: bytes) -> bool:
        size = len(payload) + 1
        if size <= self._max_request_bytes:
            return True
        reason = (
            f"event is {size} bytes with its newline, over Sumo Logic's limit of "
            f"{self._max_request_bytes} bytes per request"
        )
        self._progress.rejected[index] = reason
        log_rejected(self.name, self.target, reason)
        return False

    async def _post(self, request: list[int], payloads: list[bytes]) -> Reply:
        body, encoding = compress(
            b"".join(payloads[index] + b"\n" for index in request), self._compression
        )
        response = await send(
            self._connection.client,
            "POST",
            self._url.reveal(),
            target=self.target,
            content=body,
            headers={**self._headers, **encoding},
            hide=(self._path,),
        )
        return classify_reply(response, "sumo_logic", hide=(self._path,))
