"""``splunk_hec``: Splunk's HTTP Event Collector, ``/services/collector/event``.

Each event travels in a HEC envelope whose ``event`` is the rendered payload,
spliced in as bytes (it is JSON already); several envelopes are concatenated
in one request, cut by count and bytes, and gzipped.

With ``acknowledgements = true`` a request counts as delivered only once the
indexers acknowledged it: every reply names an ``ackId``, polled on this
sink's channel until it reads true. A request still unacknowledged after
``ack_timeout`` is sent again (Splunk holds partial batches for about two
minutes, so the timeout is minutes, not seconds).

Refused events: HEC names the event it could not take
(``invalid-event-number``) and has indexed the events before it; that event
is set aside and the rest of the request sent again. A refusal that names no
event is narrowed down by splitting the request in halves.

``open()`` asks ``/services/collector/health``: an unhealthy collector is
logged and delivery goes ahead (the pipeline retries anyway); a collector
that cannot be reached at all fails ``open()``, which the pipeline retries.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
import httpx
import orjson
import structlog
from pydantic import BeforeValidator, Field, field_validator

from forwarder.config_types import Duration, SecretValue
from forwarder.errors import SinkAuthError, SinkError
from forwarder.secrets import Secret
from forwarder.sinks.base import Batch, DeliveryReport
from forwarder.sinks.http_delivery import (
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_MAX_REQUEST_EVENTS,
    BatchProgress,
    Compression,
    HttpSinkBaseConfig,
    Outcome,
    ReceiverUrl,
    Reply,
    RequestBytes,
    RequestEvents,
    SendRequest,
    SinkClient,
    classify_reply,
    compress,
    deliver_requests,
    host_of,
    plan_requests,
    raise_for,
    send,
    settle_refusal,
)
from forwarder.timestamps import parse_timestamp

log = structlog.get_logger("forwarder.sinks.splunk_hec")

CHANNEL_HEADER = "X-Splunk-Request-Channel"
CREDENTIAL = "HEC token"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _field_value(value: object) -> object:
    if isinstance(value, str) or (
        isinstance(value, list) and all(isinstance(v, str) for v in value)
    ):
        return value
    raise ValueError("expected a string or a list of strings")


class SplunkHecSinkConfig(HttpSinkBaseConfig):
    type: Literal["splunk_hec"]
    url: ReceiverUrl
    token: SecretValue
    index: str | None = None
    sourcetype: str = "asana:audit"
    source: str = "asana-audit-forwarder"
    # None: this machine's host name.
    host: str | None = None
    fields: dict[str, Annotated[str | list[str], BeforeValidator(_field_value)]] = {}
    acknowledgements: bool = False
    ack_timeout: Annotated[Duration, Field(gt=0)] = 300.0
    ack_poll_interval: Annotated[Duration, Field(gt=0)] = 1.0
    max_request_bytes: RequestBytes = DEFAULT_MAX_REQUEST_BYTES
    max_request_events: RequestEvents = DEFAULT_MAX_REQUEST_EVENTS

    @field_validator("fields")
    @classmethod
    def _fields(cls, value: dict[str, str | list[str]]) -> dict[str, str | list[str]]:
        for key in value:
            if not key.strip():
                raise ValueError("an indexed field needs a name")
        return value


def hec_time(created_at: object) -> bytes | None:
    """``created_at`` as HEC's ``time``: epoch seconds with milliseconds."""
    if not isinstance(created_at, str):
        return None
    try:
        moment = parse_timestamp(created_at)
    except (ValueError, OverflowError):
        return None
    since = moment - _EPOCH
    if since.days < 0:
        return None
    # Whole seconds and milliseconds from the timedelta's own integer parts:
    # exact for any year, and cheaper than dividing timedeltas (per event).
    return b"%d.%03d" % (since.days * 86400 + since.seconds, since.microseconds // 1000)


def collector_base(url: str) -> str:
    """The collector's base URL, also when the endpoint path was written out."""
    base = url.rstrip("/")
    for suffix in ("/services/collector/event", "/services/collector"):
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return base


@dataclass(frozen=True, slots=True)
class _Sent:
    request: list[int]
    at: float


class _AcksUnavailable(SinkError):
    """The ack endpoint could not answer this time; polling goes on."""


class SplunkHecSink:
    def __init__(
        self,
        name: str,
        *,
        url: str,
        token: Secret,
        index: str | None = None,
        sourcetype: str = "asana:audit",
        source: str = "asana-audit-forwarder",
        host: str | None = None,
        fields: dict[str, str | list[str]] | None = None,
        acknowledgements: bool = False,
        ack_timeout: float = 300.0,
        ack_poll_interval: float = 1.0,
        ca_file: Path | None = None,
        tls_verify: bool = True,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        max_request_events: int = DEFAULT_MAX_REQUEST_EVENTS,
        compression: Compression = "gzip",
        request_timeout: float = 30.0,
    ) -> None:
        self.name = name
        base = collector_base(url)
        self.target = host_of(base)
        self._event_url = f"{base}/services/collector/event"
        self._ack_url = f"{base}/services/collector/ack"
        self._health_url = f"{base}/services/collector/health"
        self.acknowledgements = acknowledgements
        self.channel = str(uuid.uuid4())
        self._headers = {
            "Authorization": f"Splunk {token.reveal()}",
            "Content-Type": "application/json",
        }
        if acknowledgements:
            self._headers[CHANNEL_HEADER] = self.channel
        self._meta = _metadata(
            host=host or socket.gethostname(),
            source=source,
            sourcetype=sourcetype,
            index=index,
            fields=fields or {},
        )
        self._ack_timeout = ack_timeout
        self._ack_poll_interval = ack_poll_interval
        self._max_request_bytes = max_request_bytes
        self._max_request_events = max_request_events
        self._compression: Compression = compression
        self._connection = SinkClient(
            sink=name,
            url=self._event_url,
            ca_file=ca_file,
            tls_verify=tls_verify,
            request_timeout=request_timeout,
        )
        self._progress = BatchProgress()
        self._warned_no_ack_id = False

    @classmethod
    def from_config(cls, config: SplunkHecSinkConfig) -> SplunkHecSink:
        return cls(
            config.name,
            url=config.url,
            token=config.token,
            index=config.index,
            sourcetype=config.sourcetype,
            source=config.source,
            host=config.host,
            fields=config.fields,
            acknowledgements=config.acknowledgements,
            ack_timeout=config.ack_timeout,
            ack_poll_interval=config.ack_poll_interval,
            ca_file=config.ca_file,
            tls_verify=config.tls_verify,
            max_request_bytes=config.max_request_bytes,
            max_request_events=config.max_request_events,
            compression=config.compression,
            request_timeout=config.request_timeout,
        )

    # -- open and close --------------------------------------------------------

    async def open(self) -> None:
        if self._connection.client is not None:
            return
        client = self._connection.open()
        try:
            await self._check_health(client)
        except BaseException:
            await self._connection.aclose()
            raise

    async def _check_health(self, client: httpx.AsyncClient) -> None:
        try:
            response = await send(client, "GET", self._health_url, target=self.target)
        except SinkError as error:
            log.warning(
                "hec_health",
                sink=self.name,
                host=self.target,
                state="unreachable",
                error=str(error),
            )
            raise SinkError(
                f"cannot reach the HTTP Event Collector: {error}"
            ) from error
        reply = classify_reply(response, "splunk_hec")
        if reply.outcome is Outcome.ACCEPTED:
            log.info("hec_health", sink=self.name, host=self.target, state="healthy")
            return
        # Proxies and HEC-compatible receivers may lack the endpoint (404).
        log.warning(
            "hec_health",
            sink=self.name,
            host=self.target,
            state="unknown" if response.status_code == 404 else "unhealthy",
            reply=reply.describe(),
            action="delivering anyway; failed deliveries are retried",
        )

    async def aclose(self) -> None:
        await self._connection.aclose()

    # -- delivery ----------------------------------------------------------------

    def envelope(self, event: dict[str, Any], payload: bytes) -> bytes:
        """One HEC envelope; ``payload`` is JSON already and goes in unchanged."""
        moment = hec_time(event.get("created_at"))
        if moment is None:
            return b"".join((b"{", self._meta, b',"event":', payload, b"}"))
        return b"".join(
            (b'{"time":', moment, b",", self._meta, b',"event":', payload, b"}")
        )

    async def deliver(self, batch: Batch) -> DeliveryReport:
        remaining = self._progress.begin(batch)
        envelopes = {
            index: self.envelope(batch.events[index], batch.payloads[index])
            for index in remaining
        }
        requests = plan_requests(
            ((index, len(envelopes[index]) + 1) for index in remaining),
            max_bytes=self._max_request_bytes,
            max_events=self._max_request_events,
        )

        async def post(request: list[int]) -> Reply:
            return await self._post(request, envelopes)

        if self.acknowledgements:
            await self._deliver_acknowledged(requests, post)
        else:
            await deliver_requests(
                requests,
                post,
                self._progress,
                sink=self.name,
                target=self.target,
                credential=CREDENTIAL,
            )
        return self._progress.finish()

    async def _post(self, request: list[int], envelopes: dict[int, bytes]) -> Reply:
        body, encoding = compress(
            b"\n".join(envelopes[index] for index in request), self._compression
        )
        response = await send(
            self._connection.client,
            "POST",
            self._event_url,
            target=self.target,
            content=body,
            headers={**self._headers, **encoding},
        )
        return classify_reply(response, "splunk_hec")

    # -- indexer acknowledgement ---------------------------------------------------

    async def _deliver_acknowledged(
        self, requests: list[list[int]], post: SendRequest
    ) -> None:
        queue = deque(requests)
        waiting: dict[int, _Sent] = {}
        try:
            while queue or waiting:
                if queue:
                    request = queue.popleft()
                    self._settle(request, await post(request), queue, waiting)
                    continue
                await anyio.sleep(self._ack_poll_interval)
                await self._poll(waiting, queue)
        except SinkAuthError:
            raise
        except SinkError:
            if waiting:
                await self._drain(waiting)
            raise

    def _settle(
        self,
        request: list[int],
        reply: Reply,
        queue: deque[list[int]],
        waiting: dict[int, _Sent],
    ) -> None:
        if reply.outcome is Outcome.ACCEPTED:
            if reply.ack_id is None:
                self._accepted_without_ack()
                self._progress.delivered.update(request)
            else:
                self._await_ack(reply.ack_id, request, queue, waiting)
            return
        if reply.outcome not in (Outcome.REFUSED, Outcome.TOO_LARGE):
            raise_for(reply, sink=self.name, target=self.target, credential=CREDENTIAL)
        refusal = settle_refusal(request, reply, sink=self.name, target=self.target)
        # The events HEC indexed before the refused one get no ackId: HEC
        # said it took them, and sending them again would duplicate them.
        self._progress.settle(refusal)
        queue.extendleft(reversed(refusal.resend))

    def _await_ack(
        self,
        ack_id: int,
        request: list[int],
        queue: deque[list[int]],
        waiting: dict[int, _Sent],
    ) -> None:
        earlier = waiting.pop(ack_id, None)
        if earlier is not None:
            # The collector numbers acks afresh after a restart: the earlier
            # request's ack can no longer be told apart, so it goes again.
            log.warning(
                "hec_ack_id_reused",
                sink=self.name,
                host=self.target,
                ack_id=ack_id,
                action="sending the earlier request again",
            )
            queue.append(earlier.request)
        waiting[ack_id] = _Sent(request, time.monotonic())

    def _accepted_without_ack(self) -> None:
        if not self._warned_no_ack_id:
            self._warned_no_ack_id = True
            log.warning(
                "hec_acks_disabled_for_token",
                sink=self.name,
                host=self.target,
                consequence="requests count as delivered when accepted, not indexed",
            )

    async def _poll(self, waiting: dict[int, _Sent], queue: deque[list[int]]) -> None:
        try:
            acked = await self._query_acks(sorted(waiting))
        except _AcksUnavailable as error:
            log.warning(
                "hec_ack_poll_failed",
                sink=self.name,
                host=self.target,
                error=str(error),
            )
            acked = set()
        self._collect(acked, waiting)
        now = time.monotonic()
        for ack_id, sent in list(waiting.items()):
            if now - sent.at >= self._ack_timeout:
                del waiting[ack_id]
                queue.append(sent.request)
                log.warning(
                    "hec_ack_timeout",
                    sink=self.name,
                    host=self.target,
                    ack_id=ack_id,
                    events=len(sent.request),
                    waited_seconds=round(now - sent.at, 3),
                    action="sending the request again",
                )

    def _collect(self, acked: set[int], waiting: dict[int, _Sent]) -> None:
        for ack_id in acked:
            sent = waiting.pop(ack_id, None)
            if sent is not None:
                self._progress.delivered.update(sent.request)

    async def _query_acks(self, ack_ids: list[int]) -> set[int]:
        try:
            response = await send(
                self._connection.client,
                "POST",
                self._ack_url,
                target=self.target,
                content=orjson.dumps({"acks": ack_ids}),
                headers=self._headers,
            )
        except SinkError as error:
            raise _AcksUnavailable(str(error)) from error
        reply = classify_reply(response, "splunk_hec")
        if reply.outcome is Outcome.RETRY:
            raise _AcksUnavailable(f"{self.target} answered {reply.describe()}")
        if reply.outcome is not Outcome.ACCEPTED:
            raise_for(reply, sink=self.name, target=self.target, credential=CREDENTIAL)
        return _acknowledged(response)

    async def _drain(self, waiting: dict[int, _Sent]) -> None:
        """Before the batch goes back to the pipeline, collect the acks still
        due, so that requests the indexers took are not sent again."""
        while waiting:
            now = time.monotonic()
            for ack_id, sent in list(waiting.items()):
                if now - sent.at >= self._ack_timeout:
                    del waiting[ack_id]
            if not waiting:
                return
            await anyio.sleep(self._ack_poll_interval)
            try:
                acked = await self._query_acks(sorted(waiting))
            except SinkError:
                return
            self._collect(acked, waiting)


def _acknowledged(response: httpx.Response) -> set[int]:
    try:
        acks = orjson.loads(response.content).get("acks")
    except (orjson.JSONDecodeError, AttributeError):
        return set()
    if not isinstance(acks, dict):
        return set()
    return {int(key) for key, done in acks.items() if done is True and key.isdigit()}


def _metadata(
    *,
    host: str,
    source: str,
    sourcetype: str,
    index: str | None,
    fields: dict[str, str | list[str]],
) -> bytes:
    """The envelope keys every event shares, encoded once, without braces."""
    meta: dict[str, Any] = {"host": host, "source": source, "sourcetype": sourcetype}
    if index is not None:
        meta["index"] = index
    if fields:
        meta["fields"] = fields
    return orjson.dumps(meta)[1:-1]
