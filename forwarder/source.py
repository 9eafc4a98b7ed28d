"""The source: pages of the audit log from the Asana API.

``AuditLogClient`` sends one request and translates every way it can fail
into the errors of ``forwarder.errors``. ``PageReader`` is what the pipeline
uses: it paces requests through the shared budget, retries what is
transient for as long as it takes (the forwarder is a daemon), waits slowly
when access is refused, and lets sinks reading the same position share one
request.
"""

from __future__ import annotations

import random
import ssl
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import anyio
import httpx
import orjson
import structlog

from forwarder import __version__
from forwarder.checkpoint import Cursor
from forwarder.config import ApiFilters
from forwarder.errors import (
    ApiAccessDenied,
    ApiBadRequest,
    ApiError,
    ApiRetryable,
    OffsetRejected,
)
from forwarder.health import Health
from forwarder.metrics import Metrics
from forwarder.ratelimit import RequestBudget
from forwarder.retry import Backoff, parse_retry_after
from forwarder.secrets import Secret, redact
from forwarder.timestamps import format_timestamp, utc_now

log = structlog.get_logger("forwarder.source")

ACCESS_STATUSES = frozenset({401, 402, 403, 404})

# A request's query parameters, sorted: what identifies a page.
_Query = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Page:
    """One answer of the API: its events, and the offset to ask for next."""

    events: list[Any]
    next_offset: str | None
    received_at: str
    request_id: str | None = None
    # Events rendered per format, filled by the first sink that needs them so
    # that sinks sharing a page and a format share the work.
    rendered: dict[str, list[bytes | None]] = field(
        default_factory=dict, compare=False, repr=False
    )


class AuditLogClient:
    """Sends single requests for pages of ``/workspaces/{gid}/audit_log_events``."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        base_url: str,
        workspace_gid: str,
        token: Secret,
        page_size: int = 100,
        filters: ApiFilters | None = None,
    ) -> None:
        self._http = http
        self._url = (
            f"{base_url.rstrip('/')}/workspaces/{workspace_gid}/audit_log_events"
        )
        self._headers = {
            "Authorization": f"Bearer {token.reveal()}",
            "Accept": "application/json",
            "User-Agent": f"asana-audit-forwarder/{__version__}",
        }
        self._page_size = page_size
        self._filters = (filters or ApiFilters()).as_query()

    @property
    def page_size(self) -> int:
        return self._page_size

    def query_for(self, cursor: Cursor) -> dict[str, str]:
        query = {"limit": str(self._page_size), **self._filters}
        if cursor.offset is not None:
            query["offset"] = cursor.offset
        elif cursor.start_at is not None:
            query["start_at"] = cursor.start_at
        if cursor.end_at is not None:
            query["end_at"] = cursor.end_at
        return query

    async def fetch(self, cursor: Cursor) -> Page:
        """One request; raises an ApiError subclass on any failure."""
        # The query written into the URL string: httpx merging a params dict
        # parses the URL twice, a cost paid on every page.
        url = f"{self._url}?{urlencode(self.query_for(cursor))}"
        request = self._http.build_request("GET", url, headers=self._headers)
        try:
            response = await self._http.send(request, stream=True)
            try:
                await response.aread()
            except httpx.DecodingError as error:
                raise ApiRetryable(
                    "malformed page: the body cannot be decoded "
                    f"({type(error).__name__})",
                    status=response.status_code,
                    request_id=_request_id(response),
                ) from error
            finally:
                # Shielded: a reader cancelled mid-read (a backfill slice cut
                # short, a stop) must still hand the connection back.
                with anyio.CancelScope(shield=True):
                    await response.aclose()
        except httpx.TimeoutException as error:
            raise ApiRetryable(f"request timed out ({type(error).__name__})") from error
        except httpx.ConnectError as error:
            verification = _certificate_problem(error)
            if verification is not None:
                # A certificate the trust store rejects will not fix itself:
                # a person must act (source.ca_file, or a proxy's CA).
                raise ApiAccessDenied(
                    f"TLS certificate verification failed: {verification}"
                ) from error
            raise ApiRetryable(
                f"transport error: {redact(str(error)) or type(error).__name__}"
            ) from error
        except httpx.TransportError as error:
            raise ApiRetryable(
                f"transport error: {redact(str(error)) or type(error).__name__}"
            ) from error
        return _page_from(response, sent_offset=cursor.offset is not None)


def _certificate_problem(error: BaseException) -> str | None:
    """The verification failure behind a connection error, if that is what
    it was."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return redact(cause.verify_message or str(cause))
        cause = cause.__cause__ or cause.__context__
    return None


def _request_id(response: httpx.Response) -> str | None:
    value: str | None = response.headers.get("x-request-id")
    return value


def _api_message(response: httpx.Response) -> str:
    """The API's own words from an error body, or a short description."""
    try:
        body = orjson.loads(response.content)
        messages = [str(e.get("message", "")) for e in body["errors"]]
        text = "; ".join(m for m in messages if m)
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        text = ""
    # Redact before cutting: a secret straddling the cut would keep its start.
    return redact(text)[:500] or f"HTTP {response.status_code} without an error body"


def _page_from(response: httpx.Response, *, sent_offset: bool) -> Page:
    status = response.status_code
    request_id = _request_id(response)
    if status == 200:
        return _decode_page(response, request_id)
    message = _api_message(response)
    if status == 429 or status >= 500 or status == 408:
        retry_after = parse_retry_after(response.headers.get("retry-after"), utc_now())
        raise ApiRetryable(
            message, status=status, request_id=request_id, retry_after=retry_after
        )
    if status in ACCESS_STATUSES:
        raise ApiAccessDenied(message, status=status, request_id=request_id)
    if status == 400 and sent_offset:
        raise OffsetRejected(message, status=status, request_id=request_id)
    raise ApiBadRequest(message, status=status, request_id=request_id)


def _decode_page(response: httpx.Response, request_id: str | None) -> Page:
    def malformed(problem: str) -> ApiRetryable:
        return ApiRetryable(
            f"malformed page: {problem}", status=200, request_id=request_id
        )

    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        raise malformed("the body is not JSON") from None
    if not isinstance(body, dict):
        raise malformed("the body is not a JSON object")
    events = body.get("data")
    if not isinstance(events, list):
        raise malformed("'data' is not a list")
    next_page = body.get("next_page")
    next_offset: str | None = None
    if next_page is not None:
        if not isinstance(next_page, dict) or not isinstance(
            next_page.get("offset"), str
        ):
            raise malformed("'next_page' has no string 'offset'")
        next_offset = next_page["offset"]
    if events and next_offset is None:
        raise malformed("a page with events has no 'next_page' offset")
    return Page(
        events=events,
        next_offset=next_offset,
        received_at=format_timestamp(utc_now()),
        request_id=request_id,
    )


def _status_label(error: ApiError | None) -> str:
    if error is None:
        return "200"
    if error.status is None:
        return "error"
    if error.status >= 500:
        return "5xx"
    return str(error.status)


class PageReader:
    """Fetches pages for the pipeline's sink readers.

    Transient failures are retried forever with backoff (honouring
    Retry-After); refused access is logged at ERROR and retried slowly;
    a rejected offset is raised for the caller to recover from.

    Sinks that read the same position share one request: a page with events
    is kept for a short while, so a sink a few pages behind another does not
    ask the API again. Empty pages are never kept: they mean "caught up", and
    the next poll must ask afresh.
    """

    CACHE_PAGES = 64
    CACHE_SECONDS = 120.0

    def __init__(
        self,
        client: AuditLogClient,
        budget: RequestBudget,
        metrics: Metrics,
        health: Health,
        *,
        backoff: Backoff | None = None,
        access_retry_interval: float = 60.0,
        max_concurrent: int = 20,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self._client = client
        self._budget = budget
        self._metrics = metrics
        self._health = health
        self._backoff = backoff or Backoff(initial=1.0, maximum=60.0)
        self._access_retry_interval = access_retry_interval
        self._rng = rng or random.Random()
        self._sleep = sleep
        # Asana limits the requests of a token in flight at once.
        self._in_flight_limit = anyio.CapacityLimiter(max_concurrent)
        self._cache: OrderedDict[_Query, tuple[float, Page]] = OrderedDict()
        self._in_flight: dict[_Query, anyio.Event] = {}

    @property
    def page_size(self) -> int:
        """Events a page holds at most: a full page says more may follow."""
        return self._client.page_size

    async def read(self, cursor: Cursor) -> Page:
        """The page at ``cursor``; only OffsetRejected escapes."""
        # Keyed by what is sent: cursors that differ only in what is kept for
        # recovery ask for the same page.
        query = tuple(sorted(self._client.query_for(cursor).items()))
        while True:
            cached = self._cached(query)
            if cached is not None:
                return cached
            waiting = self._in_flight.get(query)
            if waiting is None:
                break
            await waiting.wait()
        done = anyio.Event()
        self._in_flight[query] = done
        try:
            page = await self._read_with_retries(cursor)
            if page.events:
                self._remember(query, page)
            return page
        finally:
            del self._in_flight[query]
            done.set()

    def _cached(self, query: _Query) -> Page | None:
        entry = self._cache.get(query)
        if entry is None:
            return None
        stored_at, page = entry
        if time.monotonic() - stored_at > self.CACHE_SECONDS:
            del self._cache[query]
            return None
        return page

    def _remember(self, query: _Query, page: Page) -> None:
        self._cache[query] = (time.monotonic(), page)
        while len(self._cache) > self.CACHE_PAGES:
            self._cache.popitem(last=False)

    async def _read_with_retries(self, cursor: Cursor) -> Page:
        attempt = 0
        while True:
            waited = await self._budget.acquire()
            if waited > 0:
                self._metrics.rate_limit_waits.inc()
                self._metrics.rate_limit_wait_seconds.inc(waited)
            started = time.monotonic()
            try:
                async with self._in_flight_limit:
                    page = await self._client.fetch(cursor)
            except ApiRetryable as error:
                self._observe(started, error)
                delay = self._retry_delay(error, attempt)
                attempt += 1
                await self._sleep(delay)
                continue
            except (ApiAccessDenied, ApiBadRequest) as error:
                self._observe(started, error)
                self._refused(error)
                await self._sleep(self._access_retry_interval)
                continue
            except OffsetRejected as error:
                self._observe(started, error)
                raise
            self._observe(started, None)
            self._succeeded(page)
            return page

    def _observe(self, started: float, error: ApiError | None) -> None:
        self._metrics.api_seconds.observe(time.monotonic() - started)
        self._metrics.api_requests.labels(_status_label(error)).inc()

    def _retry_delay(self, error: ApiRetryable, attempt: int) -> float:
        delay = self._backoff.delay(attempt, self._rng)
        if error.retry_after is not None:
            # Retry-After speaks for the whole token: hold every reader.
            self._budget.pause_for(error.retry_after)
            self._metrics.rate_limit_waits.inc()
            delay = max(delay, error.retry_after)
        if error.status == 200:
            self._metrics.malformed_pages.inc()
        self._metrics.api_retries.inc()
        log.warning(
            "api_request_retry",
            status=error.status,
            error=str(error),
            request_id=error.request_id,
            delay_seconds=round(delay, 3),
            attempt=attempt + 1,
        )
        return delay

    def _refused(self, error: ApiError) -> None:
        self._health.api_refused(f"HTTP {error.status}: {error}")
        self._metrics.up.set(0)
        log.error(
            "api_access_refused",
            status=error.status,
            error=str(error),
            request_id=error.request_id,
            retry_in_seconds=self._access_retry_interval,
        )

    def _succeeded(self, page: Page) -> None:
        self._health.polled()
        self._metrics.up.set(1)
        self._metrics.last_poll.set_to_current_time()
        self._metrics.pages_fetched.inc()
        self._metrics.events_fetched.inc(len(page.events))
        malformed = sum(1 for event in page.events if not isinstance(event, dict))
        if malformed:
            self._metrics.malformed_events.inc(malformed)
            log.warning(
                "api_malformed_events",
                count=malformed,
                request_id=page.request_id,
                action="set aside in each sink's dead-letter file",
            )
        log.debug(
            "page_fetched",
            events=len(page.events),
            request_id=page.request_id,
        )
