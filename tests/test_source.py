"""The source: one request's error translation, and the reader's retries."""

from __future__ import annotations

import random
from datetime import timedelta
from email.utils import format_datetime

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from forwarder.checkpoint import Cursor
from forwarder.config import ApiFilters
from forwarder.errors import OffsetRejected
from forwarder.health import Health
from forwarder.metrics import Metrics
from forwarder.ratelimit import RequestBudget
from forwarder.retry import Backoff
from forwarder.secrets import Secret
from forwarder.source import AuditLogClient, PageReader
from forwarder.timestamps import utc_now
from tests.fake_api import FakeAuditLog

TOKEN = "secret-token-for-source-tests"

pytestmark = pytest.mark.anyio


class Harness:
    """A reader over the fake API whose sleeps are recorded, not slept."""

    def __init__(self, api: FakeAuditLog, filters: ApiFilters | None = None) -> None:
        self.api = api
        self.slept: list[float] = []
        self.clock = 1000.0
        self.metrics = Metrics(CollectorRegistry())
        self.health = Health(poll_interval=15)
        self.http = httpx.AsyncClient(transport=api.transport())
        client = AuditLogClient(
            self.http,
            base_url="https://app.asana.test/api/1.0",
            workspace_gid="1111",
            token=Secret(TOKEN),
            filters=filters,
        )

        async def no_sleep(seconds: float) -> None:
            # Time passes for the budget, but the test does not wait.
            self.slept.append(seconds)
            self.clock += seconds

        self.reader = PageReader(
            client,
            RequestBudget(1500, sleep=no_sleep, clock=lambda: self.clock),
            self.metrics,
            self.health,
            backoff=Backoff(initial=1, maximum=8),
            rng=random.Random(0),
            sleep=no_sleep,
            access_retry_interval=60,
        )

    def sample(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


def error(status: int, message: str = "boom", **headers: str) -> httpx.Response:
    body = orjson.dumps({"errors": [{"message": message, "help": "see docs"}]})
    return httpx.Response(status, content=body, headers=headers)


async def test_empty_page_keeps_offset_and_later_serves_new_events() -> None:
    """An empty page with a next_page means caught up, not the end: polling the
    returned offset later yields the events appended since."""
    api = FakeAuditLog()
    api.add(3)
    harness = Harness(api)
    async with harness.http:
        first = await harness.reader.read(Cursor())
        caught_up = await harness.reader.read(Cursor(offset=first.next_offset))
        api.add(2)
        later = await harness.reader.read(Cursor(offset=caught_up.next_offset))

    assert len(first.events) == 3
    assert caught_up.events == []
    assert caught_up.next_offset is not None
    assert [e["gid"] for e in later.events] == [e["gid"] for e in api.events[3:]]


async def test_request_carries_token_filters_and_limit() -> None:
    """Requests send the bearer token, page size and server-side filters."""
    api = FakeAuditLog()
    harness = Harness(api, ApiFilters(event_type="user_login_failed", actor_gid="7"))
    async with harness.http:
        await harness.reader.read(Cursor(start_at="2026-11-01T00:00:00.000Z"))

    request = api.requests[0]
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.url.path == "/api/1.0/workspaces/1111/audit_log_events"
    assert dict(request.url.params) == {
        "limit": "100",
        "event_type": "user_login_failed",
        "actor_gid": "7",
        "start_at": "2026-11-01T00:00:00.000Z",
    }


async def test_retry_after_seconds_is_honoured() -> None:
    """A 429 with Retry-After in seconds waits at least that long, then retries."""
    api = FakeAuditLog()
    api.add(1)
    api.faults.append(error(429, "rate limited", **{"Retry-After": "30"}))
    harness = Harness(api)
    with capture_logs() as logs:
        async with harness.http:
            page = await harness.reader.read(Cursor())

    assert len(page.events) == 1
    assert max(harness.slept) >= 30
    retry = [line for line in logs if line["event"] == "api_request_retry"]
    assert retry[0]["status"] == 429
    assert retry[0]["delay_seconds"] >= 30
    assert harness.sample("asana_forwarder_api_requests_total", status="429") == 1


async def test_retry_after_http_date_is_honoured() -> None:
    """A Retry-After given as an HTTP-date is turned into the seconds until it."""
    api = FakeAuditLog()
    api.add(1)
    later = format_datetime(utc_now() + timedelta(seconds=120), usegmt=True)
    api.faults.append(error(503, "unavailable", **{"Retry-After": later}))
    harness = Harness(api)
    async with harness.http:
        await harness.reader.read(Cursor())

    assert 110 <= harness.slept[0] <= 121
    # The pause holds the whole token: the next request waits for it too.
    assert sum(harness.slept) >= 110


async def test_transient_failures_are_retried_with_growing_backoff() -> None:
    """5xx replies, malformed pages and transport errors are retried with
    exponential backoff, logged and counted, until a page comes."""
    api = FakeAuditLog()
    api.add(2)
    api.faults += [
        error(500, "server error"),
        httpx.Response(200, content=b"<html>bad gateway</html>"),
        httpx.Response(200, content=b'{"data": {"not": "a list"}}'),
        error(502),
        error(504),
    ]
    harness = Harness(api)
    async with harness.http:
        page = await harness.reader.read(Cursor())

    assert len(page.events) == 2
    backoff = harness.slept
    assert len(backoff) == 5
    assert all(0.5 <= d <= 1 for d in backoff[:1])
    assert 4 <= backoff[4] <= 8
    assert harness.sample("asana_forwarder_api_malformed_pages_total") == 2
    assert harness.sample("asana_forwarder_api_retries_total") == 5
    assert harness.sample("asana_forwarder_api_requests_total", status="5xx") == 3


async def test_transport_errors_are_retried() -> None:
    """A dropped connection is a transient failure, not a crash."""
    api = FakeAuditLog()
    api.add(1)
    calls = 0

    def flaky(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise httpx.RemoteProtocolError("peer closed connection", request=request)
        return api.handle(request)

    harness = Harness(api)
    harness.http = httpx.AsyncClient(transport=httpx.MockTransport(flaky))
    harness.reader._client._http = harness.http
    async with harness.http:
        page = await harness.reader.read(Cursor())

    assert len(page.events) == 1
    assert calls == 3
    assert harness.sample("asana_forwarder_api_requests_total", status="error") == 2


@pytest.mark.parametrize("status", [401, 402, 403, 404])
async def test_refused_access_turns_unready_and_retries_slowly(status: int) -> None:
    """401/402/403/404 log the API's own message at ERROR, make the daemon
    unready and wait the slow interval; success makes it ready again."""
    api = FakeAuditLog()
    api.add(1)
    api.faults.append(error(status, "Not Authorized: token revoked"))
    harness = Harness(api)
    seen_unready: list[str] = []

    async def watch(seconds: float) -> None:
        harness.slept.append(seconds)
        harness.clock += seconds
        seen_unready.append(harness.health.ready()[1])

    harness.reader._sleep = watch
    with capture_logs() as logs:
        async with harness.http:
            await harness.reader.read(Cursor())

    assert harness.slept == [60]
    assert "Not Authorized: token revoked" in seen_unready[0]
    refused = [line for line in logs if line["event"] == "api_access_refused"]
    assert refused[0]["log_level"] == "error"
    assert refused[0]["error"] == "Not Authorized: token revoked"
    assert harness.health.api_problem is None


async def test_rejected_offset_is_raised_to_the_caller() -> None:
    """A 400 for a request carrying an offset means the offset is no longer
    valid; the reader raises it so the pipeline can recover by time."""
    api = FakeAuditLog()
    api.add(1)
    harness = Harness(api)
    async with harness.http:
        page = await harness.reader.read(Cursor())
        api.expire_offsets()
        with pytest.raises(OffsetRejected, match="invalid"):
            await harness.reader.read(Cursor(offset=page.next_offset))


async def test_errors_never_carry_the_token() -> None:
    """An API error that echoes the token is logged without it."""
    api = FakeAuditLog()
    api.add(1)
    api.faults.append(error(500, f"bad header Bearer {TOKEN}"))
    harness = Harness(api)
    with capture_logs() as logs:
        async with harness.http:
            await harness.reader.read(Cursor())

    assert TOKEN not in repr(logs)
    assert "***" in logs[0]["error"]


async def test_sinks_at_the_same_position_share_one_request() -> None:
    """Two readers of the same cursor cause one API request, not two."""
    api = FakeAuditLog()
    api.add(5)
    harness = Harness(api)
    async with harness.http:
        first = await harness.reader.read(Cursor())
        second = await harness.reader.read(Cursor())

    assert first is second
    assert len(api.requests) == 1
