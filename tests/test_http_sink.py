"""The ``http`` sink against a generic JSON receiver, and the delivery
machinery every HTTP sink shares (``forwarder.sinks.http_delivery``)."""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from structlog.testing import capture_logs

from forwarder.errors import SinkAuthError, SinkError
from forwarder.secrets import Secret
from forwarder.simulator import AuditLogSimulator, SimulatorSettings
from forwarder.sinks.base import Batch
from forwarder.sinks.http import HttpSink, HttpSinkConfig
from forwarder.sinks.http_delivery import (
    BatchProgress,
    Outcome,
    Protocol,
    Reply,
    classify_reply,
    compress,
    host_of,
    make_client,
    plan_requests,
    settle_refusal,
)
from tests.doubles import HttpReceiver, audit_event, batch_of, forward_once
from tests.doubles.http_receiver import DISCONNECT, Response

API_KEY = "dd-api-key-9f8e7d6c5b4a-secret"
BEARER = "Bearer logstash-ingest-4c1a9d-secret"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def default_logging() -> None:
    """Logging is global: a test that configured it for a stream since
    closed must not break these tests' log lines."""
    structlog.reset_defaults()


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    with HttpReceiver(required_headers={"DD-API-KEY": API_KEY}) as double:
        yield double
    assert not double.errors


@asynccontextmanager
async def opened(double: HttpReceiver, **options: Any) -> AsyncIterator[HttpSink]:
    options.setdefault("headers", {"DD-API-KEY": Secret(API_KEY)})
    sink = HttpSink("http", url=f"{double.url}{double.path}", **options)
    await sink.open()
    try:
        yield sink
    finally:
        await sink.aclose()


def batch(count: int) -> Batch:
    return batch_of([audit_event(number) for number in range(count)])


def gids(documents: list[Any]) -> list[str]:
    return [document["event"]["gid"] for document in documents]


def numbered(*numbers: int) -> list[str]:
    return [audit_event(number)["gid"] for number in numbers]


def no_secret(*texts: object) -> None:
    for text in texts:
        assert API_KEY not in repr(text)
        assert BEARER not in repr(text)


# -- bodies --------------------------------------------------------------------


@pytest.mark.anyio
async def test_ndjson_is_the_default_gzipped(receiver: HttpReceiver) -> None:
    """By default each event is one line of the body, every line ends with
    a newline, and the body is gzipped as application/x-ndjson."""
    sent = batch(3)
    async with opened(receiver) as sink:
        report = await sink.deliver(sent)
    assert report.rejected == []
    [request] = receiver.received
    assert request.method == "POST"
    assert request.headers["content-type"] == "application/x-ndjson"
    assert request.headers["content-encoding"] == "gzip"
    assert gzip.decompress(request.raw_body) == b"".join(
        payload + b"\n" for payload in sent.payloads
    )
    assert gids(receiver.documents) == numbered(0, 1, 2)


@pytest.mark.anyio
async def test_json_array_with_put_and_no_compression(receiver: HttpReceiver) -> None:
    """encoding = "json_array" sends one JSON array of the events, here by
    PUT and uncompressed."""
    sent = batch(3)
    async with opened(
        receiver, encoding="json_array", method="PUT", compression="none"
    ) as sink:
        await sink.deliver(sent)
    [request] = receiver.received
    assert request.method == "PUT"
    assert request.headers["content-type"] == "application/json"
    assert "content-encoding" not in request.headers
    assert request.raw_body == b"[" + b",".join(sent.payloads) + b"]"
    assert gids(receiver.documents) == numbered(0, 1, 2)


@pytest.mark.anyio
@pytest.mark.parametrize("encoding", ["ndjson", "json_array"])
async def test_batches_are_cut_by_bytes_and_count(
    receiver: HttpReceiver, encoding: str
) -> None:
    """Each request holds at most max_request_events events and at most
    max_request_bytes bytes, brackets and separators included."""
    # Events of 430 bytes: two fit in 1000 bytes, three would not.
    limit = 1000
    async with opened(
        receiver,
        encoding=encoding,
        max_request_bytes=limit,
        max_request_events=3,
        compression="none",
    ) as sink:
        await sink.deliver(batch(11))
    assert [len(r.documents) for r in receiver.received] == [2, 2, 2, 2, 2, 1]
    assert all(len(r.raw_body) <= limit for r in receiver.received)
    async with opened(
        receiver, encoding=encoding, max_request_events=3, compression="none"
    ) as sink:
        await sink.deliver(batch(4))
    assert [len(r.documents) for r in receiver.received[6:]] == [3, 1]
    assert gids(receiver.documents) == numbered(*range(11), *range(4))


@given(
    sizes=st.lists(st.integers(min_value=1, max_value=500), max_size=60),
    max_bytes=st.integers(min_value=1, max_value=2000),
    max_events=st.integers(min_value=1, max_value=20),
    overhead=st.integers(min_value=0, max_value=5),
)
def test_plan_requests_respects_both_limits(
    sizes: list[int], max_bytes: int, max_events: int, overhead: int
) -> None:
    """Every item is planned once, in order; no request has more than
    max_events items, nor more than max_bytes unless it is a lone item."""
    requests = plan_requests(
        enumerate(sizes), max_bytes=max_bytes, max_events=max_events, overhead=overhead
    )
    assert [i for request in requests for i in request] == list(range(len(sizes)))
    for request in requests:
        assert 1 <= len(request) <= max_events
        total = overhead + sum(sizes[i] for i in request)
        assert total <= max_bytes or len(request) == 1


def test_compress_gzip_round_trips() -> None:
    """gzip bodies decompress to the original and say so in a header."""
    body, headers = compress(b"x" * 1000, "gzip")
    assert headers == {"Content-Encoding": "gzip"}
    assert gzip.decompress(body) == b"x" * 1000
    assert compress(b"abc", "none") == (b"abc", {})


# -- headers and secrets ------------------------------------------------------------


@pytest.mark.anyio
async def test_header_secrets_from_env_and_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Header values written as env: and file: reach the receiver, and
    neither value shows in the configuration or the logs."""
    monkeypatch.setenv("DD_API_KEY_FOR_TEST", API_KEY)
    bearer_file = tmp_path / "bearer"
    bearer_file.write_text(BEARER + "\n")
    with HttpReceiver(
        required_headers={"DD-API-KEY": API_KEY, "Authorization": BEARER}
    ) as double:
        config = HttpSinkConfig.model_validate(
            {
                "type": "http",
                "name": "datadog",
                "url": f"{double.url}{double.path}",
                "headers": {
                    "DD-API-KEY": "env:DD_API_KEY_FOR_TEST",
                    "Authorization": f"file:{bearer_file}",
                    "X-Static": "literal-value",
                },
                "encoding": "json_array",
            }
        )
        with capture_logs() as logs:
            sink = HttpSink.from_config(config)
            await sink.open()
            try:
                await sink.deliver(batch(2))
            finally:
                await sink.aclose()
    assert not double.errors
    [request] = double.received
    assert request.headers["x-static"] == "literal-value"
    assert gids(double.documents) == numbered(0, 1)
    no_secret(repr(config), logs)


@pytest.mark.anyio
async def test_configured_content_type_wins(receiver: HttpReceiver) -> None:
    """A Content-Type among the configured headers replaces the sink's own."""
    headers = {
        "DD-API-KEY": Secret(API_KEY),
        "content-type": Secret("application/json"),
    }
    async with opened(receiver, headers=headers, encoding="json_array") as sink:
        await sink.deliver(batch(1))
    assert receiver.received[0].headers["content-type"] == "application/json"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"DD-API-KEY": Secret("wrong-key-value-123")}, 403)],
)
async def test_refused_credentials_raise_sink_auth_error(
    receiver: HttpReceiver, headers: dict[str, Secret], status: int
) -> None:
    """401 and 403 raise SinkAuthError, logged at ERROR, without the
    header values."""
    with capture_logs() as logs:
        async with opened(receiver, headers=headers) as sink:
            with pytest.raises(SinkAuthError) as caught:
                await sink.deliver(batch(1))
    assert f"HTTP {status}" in str(caught.value)
    assert [
        e["log_level"] for e in logs if e["event"] == "sink_credentials_refused"
    ] == ["error"]
    assert receiver.received == []
    no_secret(str(caught.value), logs)
    assert "wrong-key-value-123" not in str(caught.value) + repr(logs)


# -- refusals --------------------------------------------------------------------


@pytest.mark.anyio
async def test_bad_request_is_bisected_to_the_refused_events(
    receiver: HttpReceiver,
) -> None:
    """A 400 on a request of several events splits it until each refused
    event is alone; those are set aside with their batch index, every other
    event is delivered exactly once."""
    poison = set(numbered(3, 4, 9))
    receiver.refuse = lambda document: document["event"]["gid"] in poison
    async with opened(receiver) as sink:
        report = await sink.deliver(batch(12))
    assert [index for index, _ in report.rejected] == [3, 4, 9]
    assert all("HTTP 400" in reason for _, reason in report.rejected)
    assert sorted(gids(receiver.documents)) == sorted(
        numbered(0, 1, 2, 5, 6, 7, 8, 10, 11)
    )


@pytest.mark.anyio
async def test_too_large_is_split_in_halves(receiver: HttpReceiver) -> None:
    """413 splits the request in halves until the receiver takes the parts;
    an event too large on its own is set aside."""
    receiver.max_body_bytes = 1200
    sent = batch_of(
        [audit_event(n) for n in range(5)]
        + [audit_event(5, details={"blob": "y" * 1500})]
    )
    async with opened(receiver, compression="none") as sink:
        report = await sink.deliver(sent)
    assert [index for index, _ in report.rejected] == [5]
    assert "HTTP 413" in report.rejected[0][1]
    assert sorted(gids(receiver.documents)) == sorted(numbered(*range(5)))
    assert len(receiver.received) > 1


def http_date(seconds_ahead: int) -> str:
    moment = datetime.now(UTC) + timedelta(seconds=seconds_ahead)
    return format_datetime(moment, usegmt=True)


FAULTS: dict[str, Callable[[], Response]] = {
    "408": lambda: Response.text(408, "Request Timeout"),
    "429 seconds": lambda: Response.text(429, "slow down", ("Retry-After", "12")),
    "429 date": lambda: Response.text(429, "slow", ("Retry-After", http_date(40))),
    "500": lambda: Response.text(500, "boom"),
    "502": lambda: Response.text(502, "Bad Gateway"),
    "503 seconds": lambda: Response.text(503, "busy", ("Retry-After", "2")),
}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("name", "low", "high"),
    [
        ("408", None, None),
        ("429 seconds", 12.0, 12.0),
        ("429 date", 38.0, 40.0),
        ("500", None, None),
        ("502", None, None),
        ("503 seconds", 2.0, 2.0),
    ],
)
async def test_transient_replies_raise_sink_error_with_retry_after(
    receiver: HttpReceiver, name: str, low: float | None, high: float | None
) -> None:
    """408, 429 and 5xx raise a retryable SinkError with Retry-After read in
    both forms; the retry delivers."""
    receiver.inject(FAULTS[name]())
    async with opened(receiver) as sink:
        with pytest.raises(SinkError) as caught:
            await sink.deliver(batch(2))
        assert not isinstance(caught.value, SinkAuthError)
        retry_after = caught.value.retry_after
        if low is None:
            assert retry_after is None
        else:
            assert retry_after is not None
            assert low <= retry_after <= (high or low)
        await sink.deliver(batch(2))
    assert gids(receiver.documents) == numbered(0, 1)


@pytest.mark.anyio
@pytest.mark.parametrize("status", [301, 404, 405, 422])
async def test_other_replies_are_retried_as_misconfiguration(
    receiver: HttpReceiver, status: int
) -> None:
    """Redirects (never followed) and 4xx other than 400/401/403/408/413/429
    raise a retryable SinkError, logged at ERROR; nothing is set aside."""
    receiver.inject(Response.text(status, "nope", ("Location", "https://elsewhere/")))
    with capture_logs() as logs:
        async with opened(receiver) as sink:
            with pytest.raises(SinkError) as caught:
                await sink.deliver(batch(2))
    assert not isinstance(caught.value, SinkAuthError)
    assert f"HTTP {status}" in str(caught.value)
    assert [e["log_level"] for e in logs if e["event"] == "sink_request_refused"] == [
        "error"
    ]


@pytest.mark.anyio
async def test_timeouts_and_dropped_connections_raise_sink_error(
    receiver: HttpReceiver,
) -> None:
    """A dropped connection raises SinkError naming the host only."""
    receiver.inject(DISCONNECT)
    async with opened(receiver) as sink:
        with pytest.raises(SinkError) as caught:
            await sink.deliver(batch(1))
    assert str(caught.value).startswith(f"127.0.0.1:{receiver.port}: ")
    no_secret(str(caught.value))


@pytest.mark.anyio
async def test_sending_before_open_is_a_sink_error() -> None:
    """deliver before open() fails as a retryable SinkError, not a crash."""
    sink = HttpSink("http", url="https://receiver.example/ingest")
    with pytest.raises(SinkError, match="not open"):
        await sink.deliver(batch(1))


# -- classification, shared by every HTTP sink ----------------------------------------


def response(status: int, body: Any = b"", **headers: str) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.Response(status, content=content, headers=headers)


@pytest.mark.parametrize(
    ("protocol", "status", "body", "outcome"),
    [
        ("splunk_hec", 200, {"text": "Success", "code": 0}, Outcome.ACCEPTED),
        ("splunk_hec", 400, {"code": 5, "text": "No data"}, Outcome.REFUSED),
        ("splunk_hec", 400, {"code": 6, "invalid-event-number": 2}, Outcome.REFUSED),
        ("splunk_hec", 400, {"code": 12}, Outcome.REFUSED),
        ("splunk_hec", 400, {"code": 13}, Outcome.REFUSED),
        ("splunk_hec", 400, {"code": 7}, Outcome.MISCONFIGURED),
        ("splunk_hec", 400, {"code": 10}, Outcome.MISCONFIGURED),
        ("splunk_hec", 400, {"code": 11}, Outcome.MISCONFIGURED),
        ("splunk_hec", 400, {"code": 14}, Outcome.MISCONFIGURED),
        ("splunk_hec", 400, {"code": 15}, Outcome.MISCONFIGURED),
        ("splunk_hec", 400, b"<html>proxy</html>", Outcome.REFUSED),
        ("splunk_hec", 401, {"code": 2}, Outcome.AUTH),
        ("splunk_hec", 401, {"code": 3}, Outcome.AUTH),
        ("splunk_hec", 403, {"code": 1}, Outcome.AUTH),
        ("splunk_hec", 403, {"code": 4}, Outcome.AUTH),
        ("splunk_hec", 404, {"code": 404}, Outcome.MISCONFIGURED),
        ("splunk_hec", 408, b"", Outcome.RETRY),
        ("splunk_hec", 413, b"", Outcome.TOO_LARGE),
        ("splunk_hec", 429, b"", Outcome.RETRY),
        ("splunk_hec", 500, {"code": 8}, Outcome.RETRY),
        ("splunk_hec", 503, {"code": 9}, Outcome.RETRY),
        ("splunk_hec", 503, {"code": 18}, Outcome.RETRY),
        ("splunk_hec", 503, {"code": 19}, Outcome.RETRY),
        ("splunk_hec", 503, {"code": 20}, Outcome.RETRY),
        ("sumo_logic", 200, b"", Outcome.ACCEPTED),
        ("sumo_logic", 400, b"", Outcome.MISCONFIGURED),
        ("sumo_logic", 401, b"", Outcome.AUTH),
        ("sumo_logic", 403, b"", Outcome.AUTH),
        ("sumo_logic", 404, b"", Outcome.AUTH),
        ("sumo_logic", 408, b"", Outcome.RETRY),
        ("sumo_logic", 413, b"", Outcome.TOO_LARGE),
        ("sumo_logic", 429, b"", Outcome.RETRY),
        ("sumo_logic", 503, b"", Outcome.RETRY),
        ("sumo_logic", 504, b"", Outcome.RETRY),
        ("http", 202, b"", Outcome.ACCEPTED),
        ("http", 204, b"", Outcome.ACCEPTED),
        ("http", 302, b"", Outcome.MISCONFIGURED),
        ("http", 400, {"code": 7}, Outcome.REFUSED),
        ("http", 401, b"", Outcome.AUTH),
        ("http", 403, b"", Outcome.AUTH),
        ("http", 404, b"", Outcome.MISCONFIGURED),
        ("http", 413, b"", Outcome.TOO_LARGE),
        ("http", 422, b"", Outcome.MISCONFIGURED),
        ("http", 599, b"", Outcome.RETRY),
    ],
)
def test_classify_reply(
    protocol: Protocol, status: int, body: Any, outcome: Outcome
) -> None:
    """Each status (and HEC code) maps to its documented outcome."""
    assert classify_reply(response(status, body), protocol).outcome is outcome


def test_classify_reply_reads_hec_details() -> None:
    """The HEC reply's ackId, invalid-event-number and text are kept, and the
    receiver's text is redacted of known secrets and of hidden parts."""
    Secret("a-known-secret-value")
    accepted = classify_reply(response(200, {"code": 0, "ackId": 7}), "splunk_hec")
    assert accepted.ack_id == 7
    refused = classify_reply(
        response(
            400,
            {
                "text": "bad a-known-secret-value /p/x",
                "code": 6,
                "invalid-event-number": 3,
            },
        ),
        "splunk_hec",
        hide=("/p/x",),
    )
    assert refused.invalid_event == 3
    assert refused.text == "bad *** ***"
    assert refused.describe() == "HTTP 400, code 6: bad *** ***"


def test_classify_reply_reads_retry_after_in_both_forms() -> None:
    """Retry-After as delta-seconds or HTTP-date becomes seconds to wait."""
    seconds = classify_reply(response(429, b"", **{"Retry-After": "5"}), "http")
    assert seconds.retry_after == 5.0
    dated = classify_reply(response(503, b"", **{"Retry-After": http_date(60)}), "http")
    assert dated.retry_after is not None
    assert 57.0 <= dated.retry_after <= 60.0
    assert classify_reply(response(503), "http").retry_after is None


def test_settle_refusal_paths() -> None:
    """A named event is set aside and what follows re-sent; a lone event is
    set aside; otherwise the request is halved; a number out of range is
    treated as no number."""
    named = Reply(Outcome.REFUSED, 400, "bad", 6, invalid_event=2)
    settled = settle_refusal([10, 11, 12, 13], named, sink="s", target="h")
    assert settled.delivered == [10, 11]
    assert [index for index, _ in settled.rejected] == [12]
    assert settled.resend == [[13]]
    last = settle_refusal([10, 11, 12], named, sink="s", target="h")
    assert last.resend == []
    beyond = Reply(Outcome.REFUSED, 400, "bad", 6, invalid_event=9)
    assert settle_refusal([1, 2, 3], beyond, sink="s", target="h").resend == [
        [1],
        [2, 3],
    ]
    lone = settle_refusal([5], Reply(Outcome.TOO_LARGE, 413), sink="s", target="h")
    assert lone.rejected == [(5, "refused by h: HTTP 413")]


def test_batch_progress_forgets_other_batches() -> None:
    """Progress carries over only to the same Batch object."""
    progress = BatchProgress()
    first = batch(3)
    assert progress.begin(first) == [0, 1, 2]
    progress.delivered.update([0, 1])
    assert progress.begin(first) == [2]
    assert progress.begin(batch(3)) == [0, 1, 2]
    progress.rejected[1] = "bad"
    assert progress.finish().rejected == [(1, "bad")]
    assert progress.begin(first) == [0, 1, 2]


def test_host_of_names_host_and_port_only() -> None:
    """Messages name a receiver by host[:port], never path or query."""
    assert host_of("https://h.example:8088/services?token=x") == "h.example:8088"
    assert host_of("https://user:pw@h.example/p") == "h.example"
    assert host_of("http://[::1]:9/x") == "[::1]:9"


@pytest.mark.anyio
async def test_plain_http_to_another_host_warns() -> None:
    """An http:// URL to anything but loopback logs a WARNING: credentials
    and events would travel in clear."""
    with capture_logs() as logs:
        for url in ("http://logstash.internal:8080/", "http://127.0.0.1:8080/"):
            client = make_client(
                sink="s", url=url, ca_file=None, tls_verify=True, request_timeout=5
            )
            await client.aclose()
    warnings = [e["host"] for e in logs if e["event"] == "sink_insecure_http"]
    assert warnings == ["logstash.internal:8080"]


# -- configuration ---------------------------------------------------------------


def test_config_defaults() -> None:
    """The section's defaults: POST, ndjson, gzip, 1 MB and 1000 events."""
    config = HttpSinkConfig.model_validate(
        {"type": "http", "name": "vector", "url": "https://vector:8080/"}
    )
    assert (config.method, config.encoding, config.compression) == (
        "POST",
        "ndjson",
        "gzip",
    )
    assert (config.max_request_bytes, config.max_request_events) == (1_000_000, 1000)
    assert config.request_timeout == 30.0


@pytest.mark.parametrize(
    "change",
    [
        {"headers": {"Content-Length": "3"}},
        {"headers": {"Host": "x"}},
        {"headers": {"Bad Header": "x"}},
        {"headers": {"X-Key": "env:SURELY_NOT_SET_ANYWHERE_42"}},
        {"method": "GET"},
        {"encoding": "xml"},
        {"url": "file:///etc/passwd"},
    ],
)
def test_config_rejects_bad_values(change: dict[str, Any]) -> None:
    """Headers the sink sets itself, malformed header names, unset env:
    secrets, unknown methods and encodings, and non-HTTP URLs are refused."""
    document = {"type": "http", "name": "h", "url": "https://r:8080/", **change}
    with pytest.raises(ValidationError):
        HttpSinkConfig.model_validate(document)


# -- end to end --------------------------------------------------------------------


@pytest.fixture
def simulator() -> Iterator[AuditLogSimulator]:
    settings = SimulatorSettings(backlog=350, backlog_span=600, seed=9)
    with AuditLogSimulator(settings) as running:
        yield running


@pytest.mark.anyio
async def test_daemon_delivers_every_simulated_event_once(
    simulator: AuditLogSimulator, receiver: HttpReceiver, tmp_path: Path
) -> None:
    """The real daemon reads the simulated audit log and every event reaches
    the receiver exactly once, although it fails for a while."""
    receiver.inject(
        Response.text(503, "down", ("Retry-After", "0")),
        DISCONNECT,
        Response.text(429, "slow"),
    )
    sink = HttpSink(
        "http",
        url=f"{receiver.url}{receiver.path}",
        headers={"DD-API-KEY": Secret(API_KEY)},
        encoding="json_array",
        max_request_events=30,
    )
    await forward_once(simulator, sink, tmp_path)
    expected = [event["gid"] for event in simulator.events()]
    assert len(expected) == 350
    assert sorted(gids(receiver.documents)) == sorted(expected)
    assert receiver.faults_left == 0
