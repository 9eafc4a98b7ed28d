"""What the HTTP sinks (``splunk_hec``, ``sumo_logic``, ``http``) share.

- the common configuration keys and the httpx client with its TLS options;
- cutting a batch into requests by bytes and by count, and gzip;
- ``classify_reply``: the one place where a receiver's answer becomes an
  ``Outcome`` (accepted, retry later, credentials refused, content refused,
  too large, misconfigured), ``Retry-After`` included;
- ``settle_refusal``: what to do with a request whose content was refused
  (set the named event aside and re-send the rest, or split it in halves to
  find the bad events), so that one bad event never blocks the stream;
- ``BatchProgress``: what an earlier, failed attempt at the same batch
  already delivered, so that the pipeline's retry does not send it again.

Error messages name the receiver by host only and every text a receiver
or the network library produced goes through ``forwarder.secrets.redact``:
a token or a Sumo Logic source URL never reaches a log line or an exception.
"""

from __future__ import annotations

import gzip
import ssl
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn
from urllib.parse import urlsplit

import httpx
import orjson
import structlog
from pydantic import AfterValidator, Field

from forwarder import __version__
from forwarder.config_types import Duration, NonEmptyPath, SinkBaseConfig
from forwarder.errors import SinkAuthError, SinkError
from forwarder.retry import parse_retry_after
from forwarder.secrets import REDACTED, redact
from forwarder.sinks.base import Batch, DeliveryReport
from forwarder.timestamps import utc_now

log = structlog.get_logger("forwarder.sinks.http_delivery")

# What shippers default to, and what every receiver named in the docs takes.
DEFAULT_MAX_REQUEST_BYTES = 1_000_000
DEFAULT_MAX_REQUEST_EVENTS = 1000
# Level 3 of zlib's fast strategy: about 2.5 times less CPU per event than
# the default 6, for bodies about a quarter larger (audit events compress
# ten to one either way).
GZIP_LEVEL = 3
USER_AGENT = f"asana-audit-forwarder/{__version__}"

Protocol = Literal["splunk_hec", "sumo_logic", "http"]
Compression = Literal["gzip", "none"]

# HEC codes that describe one event of the request (the reply names it).
HEC_EVENT_CODES = frozenset({5, 6, 12, 13})
# HEC codes that no event can cause: the sink's settings (index, indexed
# fields, channel, token) are wrong for this receiver, for every event alike.
HEC_SETTING_CODES = frozenset({7, 10, 11, 14, 15, 16})
HEC_RETRY_CODES = frozenset({8, 9, 18, 19, 20})


class HttpSinkBaseConfig(SinkBaseConfig):
    """Keys every HTTP sink has: TLS, compression and the request timeout."""

    ca_file: NonEmptyPath | None = None
    tls_verify: bool = True
    compression: Compression = "gzip"
    request_timeout: Annotated[Duration, Field(gt=0)] = 30.0


def check_url(value: str) -> str:
    """Accept an http(s) URL with a host; the message never repeats the URL,
    which may be a secret (Sumo Logic)."""
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("expected an https:// URL with a host")
    return value


# The keys of the sinks that batch by size: a receiver URL (not a secret) and
# the limits of one request.
ReceiverUrl = Annotated[str, AfterValidator(check_url)]
RequestBytes = Annotated[int, Field(ge=1024, le=800_000_000)]
RequestEvents = Annotated[int, Field(ge=1, le=100_000)]


def host_of(url: str) -> str:
    """``host`` or ``host:port``: how messages name a receiver."""
    parts = urlsplit(url)
    host = parts.hostname or "receiver"
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{parts.port}" if parts.port else host


def scrub(text: str, *extra: str) -> str:
    """``redact`` and also blank ``extra`` (parts of a secret, such as the
    path of a Sumo Logic source URL)."""
    text = redact(text)
    for part in extra:
        if part and part in text:
            text = text.replace(part, REDACTED)
    return text


# -- the client ---------------------------------------------------------------


def make_client(
    *,
    sink: str,
    url: str,
    ca_file: Path | None,
    tls_verify: bool,
    request_timeout: float,
) -> httpx.AsyncClient:
    """An httpx client for one sink; raises SinkError if ``ca_file`` is unusable."""
    target = host_of(url)
    verify: ssl.SSLContext | bool = True
    if not tls_verify:
        verify = False
        log.warning(
            "sink_tls_verify_disabled",
            sink=sink,
            host=target,
            consequence="anyone on the path can read and change what is sent",
        )
    elif ca_file is not None:
        try:
            verify = ssl.create_default_context(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as error:
            raise SinkError(
                f"cannot load ca_file {ca_file}: {scrub(str(error))}"
            ) from error
    if urlsplit(url).scheme == "http" and not _loopback(urlsplit(url).hostname):
        log.warning(
            "sink_insecure_http",
            sink=sink,
            host=target,
            consequence="credentials and events travel in clear",
        )
    return httpx.AsyncClient(
        verify=verify,
        timeout=httpx.Timeout(request_timeout, connect=min(request_timeout, 10.0)),
        # A redirect could carry credentials to another host: never follow.
        follow_redirects=False,
        headers={"User-Agent": USER_AGENT},
    )


class SinkClient:
    """The httpx client of one HTTP sink: made by ``open`` (again only after
    ``aclose``), released by ``aclose``; ``client`` is None while closed."""

    def __init__(
        self,
        *,
        sink: str,
        url: str,
        ca_file: Path | None,
        tls_verify: bool,
        request_timeout: float,
    ) -> None:
        self._sink = sink
        self._url = url
        self._ca_file = ca_file
        self._tls_verify = tls_verify
        self._request_timeout = request_timeout
        self.client: httpx.AsyncClient | None = None

    def open(self) -> httpx.AsyncClient:
        if self.client is None:
            self.client = make_client(
                sink=self._sink,
                url=self._url,
                ca_file=self._ca_file,
                tls_verify=self._tls_verify,
                request_timeout=self._request_timeout,
            )
        return self.client

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None


def _loopback(host: str | None) -> bool:
    return host in ("localhost", "::1") or (host or "").startswith("127.")


async def send(
    client: httpx.AsyncClient | None,
    method: str,
    url: str,
    *,
    target: str,
    content: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    hide: Sequence[str] = (),
) -> httpx.Response:
    """One request; network failures become SinkError naming ``target`` only."""
    if client is None:
        raise SinkError(f"{target}: the sink is not open")
    try:
        return await client.request(method, url, content=content, headers=headers)
    except httpx.TimeoutException as error:
        raise SinkError(
            f"{target}: request timed out ({type(error).__name__})"
        ) from error
    except httpx.RequestError as error:
        detail = scrub(str(error), *hide) or type(error).__name__
        raise SinkError(f"{target}: {detail}") from error


# -- request bodies -------------------------------------------------------------


def plan_requests(
    sizes: Iterable[tuple[int, int]],
    *,
    max_bytes: int,
    max_events: int,
    overhead: int = 0,
) -> list[list[int]]:
    """Group ``(index, encoded size)`` pairs, in order, into requests of at
    most ``max_events`` items and ``max_bytes`` bytes (``overhead`` included).

    An item larger than ``max_bytes`` on its own gets a request of its own:
    whether to send it anyway is the sink's decision.
    """
    requests: list[list[int]] = []
    current: list[int] = []
    used = overhead
    for index, size in sizes:
        if current and (len(current) >= max_events or used + size > max_bytes):
            requests.append(current)
            current = []
            used = overhead
        current.append(index)
        used += size
    if current:
        requests.append(current)
    return requests


def compress(body: bytes, compression: Compression) -> tuple[bytes, dict[str, str]]:
    """The body as sent, and the header that says how it is encoded."""
    if compression == "gzip":
        # mtime=0: the same body always compresses to the same bytes.
        return gzip.compress(body, GZIP_LEVEL, mtime=0), {"Content-Encoding": "gzip"}
    return body, {}


# -- replies ----------------------------------------------------------------------


class Outcome(Enum):
    ACCEPTED = "accepted"
    RETRY = "retry"  # 408, 429, 5xx: the receiver may take it later
    AUTH = "auth"  # the receiver refused our credentials
    REFUSED = "refused"  # the receiver refused the content of this request
    TOO_LARGE = "too_large"  # 413
    MISCONFIGURED = "misconfigured"  # a setting is wrong: retried, never set aside


@dataclass(frozen=True, slots=True)
class Reply:
    """A receiver's answer to one request, classified."""

    outcome: Outcome
    status: int
    text: str = ""
    code: int | None = None
    retry_after: float | None = None
    invalid_event: int | None = None
    ack_id: int | None = None

    def describe(self) -> str:
        code = f", code {self.code}" if self.code is not None else ""
        text = f": {self.text}" if self.text else ""
        return f"HTTP {self.status}{code}{text}"


def classify_reply(
    response: httpx.Response, protocol: Protocol, *, hide: Sequence[str] = ()
) -> Reply:
    """Turn a response into a Reply; the one classification every HTTP sink uses.

    408, 429 and 5xx (HEC codes 8, 9, 18-20) are retried, honouring
    ``Retry-After`` in both its forms. 401 and 403 (and 404 for Sumo Logic,
    whose URL is the credential) are credential refusals. 413 means split.
    A 400 refuses content, except HEC codes that only settings can cause
    (7 index, 10/11 channel, 14 acks, 15 indexed fields, 16) and any 400
    from Sumo Logic, which takes any text: those are retried as
    misconfiguration, since setting events aside would empty the stream
    into the dead-letter file for a mistake an operator can fix.
    """
    status = response.status_code
    body = _hec_body(response) if protocol == "splunk_hec" else {}
    code = body.get("code") if isinstance(body.get("code"), int) else None
    text = _reply_text(response, body, hide)
    if 200 <= status < 300:
        ack = body.get("ackId")
        return Reply(
            Outcome.ACCEPTED,
            status,
            text,
            code,
            ack_id=ack if isinstance(ack, int) and not isinstance(ack, bool) else None,
        )
    outcome = _outcome(status, code, protocol)
    retry_after = None
    if outcome is Outcome.RETRY:
        retry_after = parse_retry_after(response.headers.get("retry-after"), utc_now())
    number = body.get("invalid-event-number")
    invalid_event = number if isinstance(number, int) and number >= 0 else None
    return Reply(outcome, status, text, code, retry_after, invalid_event)


def _outcome(status: int, code: int | None, protocol: Protocol) -> Outcome:
    if status in (408, 429) or status >= 500 or code in HEC_RETRY_CODES:
        return Outcome.RETRY
    if status in (401, 403) or (protocol == "sumo_logic" and status == 404):
        return Outcome.AUTH
    if status == 413:
        return Outcome.TOO_LARGE
    if status != 400 or protocol == "sumo_logic" or code in HEC_SETTING_CODES:
        return Outcome.MISCONFIGURED
    return Outcome.REFUSED


def _hec_body(response: httpx.Response) -> dict[str, Any]:
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return {}
    return body if isinstance(body, dict) else {}


def _reply_text(
    response: httpx.Response, body: dict[str, Any], hide: Sequence[str]
) -> str:
    text = body.get("text")
    if not isinstance(text, str):
        text = response.content[:65536].decode("utf-8", "replace")
    # Redact before cutting: a secret straddling the cut would keep its start.
    return scrub(" ".join(text.split()), *hide)[:200]


def raise_for(reply: Reply, *, sink: str, target: str, credential: str) -> NoReturn:
    """Raise the SinkError a RETRY, AUTH or MISCONFIGURED reply calls for."""
    if reply.outcome is Outcome.AUTH:
        log.error(
            "sink_credentials_refused",
            sink=sink,
            host=target,
            status=reply.status,
            code=reply.code,
            reply=reply.text,
            action=f"check the sink's {credential}; deliveries are retried",
        )
        raise SinkAuthError(f"{target} refused the {credential} ({reply.describe()})")
    if reply.outcome is Outcome.MISCONFIGURED:
        log.error(
            "sink_request_refused",
            sink=sink,
            host=target,
            status=reply.status,
            code=reply.code,
            reply=reply.text,
            action="check the sink's settings; deliveries are retried",
        )
        raise SinkError(f"{target} refused the request ({reply.describe()})")
    raise SinkError(
        f"{target} answered {reply.describe()}", retry_after=reply.retry_after
    )


# -- refused content ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Refusal:
    """What follows from a request whose content was refused."""

    delivered: list[int]
    rejected: list[tuple[int, str]]
    resend: list[list[int]]


def settle_refusal(
    request: list[int], reply: Reply, *, sink: str, target: str
) -> Refusal:
    """A REFUSED or TOO_LARGE request: set aside the event the reply names
    and re-send what follows it (HEC indexes the events before it), or set
    aside a lone event, or split the request in halves to find the bad ones.
    """
    reason = f"refused by {target}: {reply.describe()}"
    number = reply.invalid_event if reply.outcome is Outcome.REFUSED else None
    if number is not None and number < len(request):
        log_rejected(sink, target, reason)
        rest = request[number + 1 :]
        return Refusal(
            request[:number], [(request[number], reason)], [rest] if rest else []
        )
    if len(request) == 1:
        log_rejected(sink, target, reason)
        return Refusal([], [(request[0], reason)], [])
    half = len(request) // 2
    log.info(
        "sink_request_split",
        sink=sink,
        host=target,
        events=len(request),
        reply=reply.describe(),
    )
    return Refusal([], [], [request[:half], request[half:]])


def log_rejected(sink: str, target: str, reason: str) -> None:
    """One event refused for good, on its way to the dead-letter file."""
    log.warning(
        "sink_event_refused",
        sink=sink,
        host=target,
        reason=reason,
        action="set aside in the dead-letter file",
    )


# -- progress across attempts ---------------------------------------------------


class BatchProgress:
    """What earlier attempts at the batch being delivered have settled.

    The pipeline retries a failed batch by calling ``deliver`` again with the
    same Batch object. Requests that were accepted (and acknowledged) before
    the failure are not sent again, so a receiver that is busy for a while
    gets each event once instead of the head of the batch at every retry.
    """

    __slots__ = ("_batch", "_size", "delivered", "rejected")

    def __init__(self) -> None:
        self._batch: Batch | None = None
        self._size = 0
        self.delivered: set[int] = set()
        self.rejected: dict[int, str] = {}

    def begin(self, batch: Batch) -> list[int]:
        """The indexes of ``batch`` still to deliver."""
        if batch is not self._batch or len(batch) != self._size:
            self._batch = batch
            self._size = len(batch)
            self.delivered = set()
            self.rejected = {}
        settled = self.delivered | self.rejected.keys()
        return [index for index in range(len(batch)) if index not in settled]

    def settle(self, refusal: Refusal) -> None:
        self.delivered.update(refusal.delivered)
        self.rejected.update(refusal.rejected)

    def finish(self) -> DeliveryReport:
        report = DeliveryReport(rejected=sorted(self.rejected.items()))
        self._batch = None
        self._size = 0
        self.delivered = set()
        self.rejected = {}
        return report


SendRequest = Callable[[list[int]], Awaitable[Reply]]


async def deliver_requests(
    requests: list[list[int]],
    send_request: SendRequest,
    progress: BatchProgress,
    *,
    sink: str,
    target: str,
    credential: str,
) -> None:
    """Send requests one after another until each is accepted or settled;
    raise SinkError for what must be retried later."""
    queue = list(reversed(requests))
    while queue:
        request = queue.pop()
        reply = await send_request(request)
        if reply.outcome is Outcome.ACCEPTED:
            progress.delivered.update(request)
            continue
        if reply.outcome not in (Outcome.REFUSED, Outcome.TOO_LARGE):
            raise_for(reply, sink=sink, target=target, credential=credential)
        refusal = settle_refusal(request, reply, sink=sink, target=target)
        progress.settle(refusal)
        queue.extend(reversed(refusal.resend))
