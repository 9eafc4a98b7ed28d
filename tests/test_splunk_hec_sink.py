"""The ``splunk_hec`` sink against the HEC double over loopback HTTP."""

from __future__ import annotations

import gzip
import json
import ssl
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog
import trustme
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from structlog.testing import capture_logs

from forwarder.errors import SinkAuthError, SinkError
from forwarder.secrets import Secret
from forwarder.simulator import AuditLogSimulator, SimulatorSettings
from forwarder.sinks.base import Batch
from forwarder.sinks.splunk_hec import (
    CHANNEL_HEADER,
    SplunkHecSink,
    SplunkHecSinkConfig,
    collector_base,
    hec_time,
)
from forwarder.timestamps import format_timestamp
from tests.doubles import HecDouble, HecToken, audit_event, batch_of, forward_once
from tests.doubles.http_receiver import DISCONNECT, Response

TOKEN = "hec-token-0b4f5c1e-secret"
ACK_TOKEN = "hec-ack-token-77d2a9-secret"
DISABLED_TOKEN = "hec-disabled-token-secret"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def default_logging() -> None:
    """Logging is global: a test that configured it for a stream since
    closed must not break these tests' log lines."""
    structlog.reset_defaults()


def tokens() -> list[HecToken]:
    return [
        HecToken(TOKEN, indexes=frozenset({"main", "asana"})),
        HecToken(ACK_TOKEN, ack=True),
        HecToken(DISABLED_TOKEN, disabled=True),
    ]


@pytest.fixture
def hec() -> Iterator[HecDouble]:
    with HecDouble(tokens()) as double:
        yield double
    assert not double.errors


@pytest.fixture
def hec_ack() -> Iterator[HecDouble]:
    with HecDouble(tokens(), ack_delay=0.15) as double:
        yield double
    assert not double.errors


@asynccontextmanager
async def opened(double: HecDouble, **options: Any) -> AsyncIterator[SplunkHecSink]:
    options.setdefault("token", Secret(TOKEN))
    options.setdefault("host", "forwarder-1")
    sink = SplunkHecSink("hec", url=double.url, **options)
    await sink.open()
    try:
        yield sink
    finally:
        await sink.aclose()


def ack_options(**options: Any) -> dict[str, Any]:
    return {
        "token": Secret(ACK_TOKEN),
        "acknowledgements": True,
        "ack_poll_interval": 0.02,
        **options,
    }


def gids(events: list[Any]) -> list[str]:
    return [event["event"]["gid"] for event in events]


def numbered(*numbers: int) -> list[str]:
    return [audit_event(number)["gid"] for number in numbers]


def batch(count: int) -> Batch:
    return batch_of([audit_event(number) for number in range(count)])


def with_payload(sent: Batch, index: int, payload: bytes) -> Batch:
    sent.payloads[index] = payload
    return sent


def no_secret(*texts: object) -> None:
    for text in texts:
        for secret in (TOKEN, ACK_TOKEN, DISABLED_TOKEN):
            assert secret not in repr(text)


# -- envelopes ---------------------------------------------------------------


@pytest.mark.anyio
async def test_envelope_carries_time_metadata_and_the_payload_unchanged(
    hec: HecDouble,
) -> None:
    """Each event is indexed with time from created_at (epoch s.ms), host,
    source, sourcetype, index, indexed fields, and the rendered payload
    spliced in byte for byte."""
    sent = batch_of([audit_event(1, created_at="2026-01-01T00:00:00.123Z")])
    async with opened(
        hec,
        index="asana",
        source="asana-prod",
        fields={"workspace": "1111", "tags": ["audit", "asana"]},
        compression="none",
    ) as sink:
        report = await sink.deliver(sent)
    assert report.rejected == []
    [indexed] = hec.events
    assert indexed.time == 1767225600.123
    assert (indexed.host, indexed.source, indexed.sourcetype, indexed.index) == (
        "forwarder-1",
        "asana-prod",
        "asana:audit",
        "asana",
    )
    assert indexed.fields == {"workspace": "1111", "tags": ["audit", "asana"]}
    assert indexed.event == json.loads(sent.payloads[0])
    body = hec.requests[0].raw_body
    assert body.startswith(b'{"time":1767225600.123,')
    assert body.endswith(b',"event":' + sent.payloads[0] + b"}")


@pytest.mark.anyio
async def test_index_defaults_to_the_tokens_and_host_to_this_machine(
    hec: HecDouble,
) -> None:
    """Without index the envelope names none (HEC uses the token's default);
    without host the machine's host name is sent."""
    sink = SplunkHecSink("hec", url=hec.url, token=Secret(TOKEN))
    await sink.open()
    try:
        await sink.deliver(batch(1))
    finally:
        await sink.aclose()
    [indexed] = hec.events
    assert indexed.index == "main"
    assert indexed.host
    assert b'"index"' not in gzip.decompress(hec.requests[0].raw_body)


def test_hec_time_is_epoch_seconds_with_milliseconds() -> None:
    """created_at becomes "<seconds>.<milliseconds>"; unreadable times give
    None (HEC then uses the time of arrival)."""
    assert hec_time("2026-01-01T00:00:00.123Z") == b"1767225600.123"
    assert hec_time("2026-01-01T00:00:05Z") == b"1767225605.000"
    assert hec_time("yesterday") is None
    assert hec_time(None) is None


@given(
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1)).map(
        lambda moment: moment.replace(tzinfo=UTC)
    )
)
def test_hec_time_matches_the_timestamp_to_the_millisecond(moment: datetime) -> None:
    """Whatever the instant, HEC receives exactly its epoch value truncated
    to milliseconds, as the API writes it, with three decimals."""
    text = format_timestamp(moment)
    truncated = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    expected = (truncated - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(
        milliseconds=1
    )
    seconds, _, millis = (hec_time(text) or b"").decode().partition(".")
    assert int(seconds) * 1000 + int(millis) == expected
    assert len(millis) == 3


def test_collector_base_accepts_the_endpoint_written_out() -> None:
    """A URL ending in the endpoint path is reduced to the collector's base."""
    for url in (
        "https://splunk:8088",
        "https://splunk:8088/",
        "https://splunk:8088/services/collector",
        "https://splunk:8088/services/collector/event",
    ):
        assert collector_base(url) == "https://splunk:8088"


# -- the wire ----------------------------------------------------------------


@pytest.mark.anyio
async def test_requests_are_gzipped_by_default(hec: HecDouble) -> None:
    """The body goes gzipped with Content-Encoding: gzip, and decodes to the
    concatenated envelopes."""
    async with opened(hec) as sink:
        await sink.deliver(batch(5))
    [request] = hec.requests
    assert request.headers["content-encoding"] == "gzip"
    assert request.raw_body[:2] == b"\x1f\x8b"
    assert len(gzip.decompress(request.raw_body).split(b"\n")) == 5
    assert gids(hec.indexed()) == numbered(*range(5))


@pytest.mark.anyio
async def test_batches_are_cut_by_count(hec: HecDouble) -> None:
    """max_request_events bounds the envelopes of each request; every event
    arrives once, in order."""
    async with opened(hec, max_request_events=4) as sink:
        await sink.deliver(batch(10))
    sizes = [len(gzip.decompress(r.raw_body).split(b"\n")) for r in hec.requests]
    assert sizes == [4, 4, 2]
    assert gids(hec.indexed()) == numbered(*range(10))


@pytest.mark.anyio
async def test_batches_are_cut_by_bytes(hec: HecDouble) -> None:
    """max_request_bytes bounds each request's uncompressed body."""
    limit = 2048
    async with opened(hec, max_request_bytes=limit) as sink:
        await sink.deliver(batch(12))
    sizes = [len(gzip.decompress(r.raw_body)) for r in hec.requests]
    assert len(sizes) > 1
    assert all(size <= limit for size in sizes)
    assert gids(hec.indexed()) == numbered(*range(12))


# -- indexer acknowledgement -----------------------------------------------------


@pytest.mark.anyio
async def test_deliver_returns_only_once_every_request_is_acknowledged(
    hec_ack: HecDouble,
) -> None:
    """With acks, every request carries the sink's channel (a uuid4), and
    deliver polls /ack until each request's ackId reads true."""
    async with opened(hec_ack, **ack_options(max_request_events=3)) as sink:
        await sink.deliver(batch(7))
        channel = sink.channel
    assert uuid.UUID(channel).version == 4
    assert {r.headers[CHANNEL_HEADER.lower()] for r in hec_ack.requests} == {channel}
    assert {q["channel"] for q in hec_ack.ack_queries} == {channel}
    assert [r.reply["ackId"] for r in hec_ack.requests] == [0, 1, 2]
    assert hec_ack.pending_acks() == 0
    answers = [a for query in hec_ack.ack_queries for a in query["acks"].values()]
    assert False in answers
    assert answers.count(True) == 3
    assert gids(hec_ack.indexed()) == numbered(*range(7))


def test_each_sink_instance_has_its_own_channel() -> None:
    """Two sinks never share a channel, so their ackIds never mix."""
    first = SplunkHecSink(
        "a", url="https://s:8088", token=Secret(ACK_TOKEN), acknowledgements=True
    )
    second = SplunkHecSink(
        "b", url="https://s:8088", token=Secret(ACK_TOKEN), acknowledgements=True
    )
    assert first.channel != second.channel


@pytest.mark.anyio
async def test_lost_ack_is_resent_after_ack_timeout(hec_ack: HecDouble) -> None:
    """A request whose ack never comes is sent again after ack_timeout, with
    a WARNING; deliver returns once the re-sent request is acknowledged."""
    hec_ack.lose_acks(1)
    with capture_logs() as logs:
        async with opened(
            hec_ack, **ack_options(ack_timeout=0.5, max_request_events=2)
        ) as sink:
            await sink.deliver(batch(4))
    timeouts = [entry for entry in logs if entry["event"] == "hec_ack_timeout"]
    assert [(e["log_level"], e["ack_id"]) for e in timeouts] == [("warning", 0)]
    # The first request went twice (at least once is the promise), the other once.
    assert sorted(gids(hec_ack.indexed())) == sorted(numbered(0, 1, 0, 1, 2, 3))
    assert hec_ack.requests[-1].reply["ackId"] == 2
    no_secret(logs)


@pytest.mark.anyio
async def test_acks_lost_forever_keep_the_batch_undelivered(
    hec_ack: HecDouble,
) -> None:
    """When no ack ever comes, deliver keeps re-sending after each
    ack_timeout and never reports the batch delivered."""
    hec_ack.lose_acks(None)
    async with opened(hec_ack, **ack_options(ack_timeout=0.1)) as sink:
        with anyio.move_on_after(1.0) as scope:
            await sink.deliver(batch(2))
    assert scope.cancelled_caught
    assert len(hec_ack.requests) >= 3


@pytest.mark.anyio
async def test_acks_due_are_collected_before_a_failure_is_raised(
    hec_ack: HecDouble,
) -> None:
    """When the collector turns busy after accepting a request, deliver
    first collects that request's ack, then raises; the pipeline's retry
    sends only the refused request, so each event is indexed once."""
    sent = batch(4)
    async with opened(hec_ack, **ack_options(max_request_events=2)) as sink:
        hec_ack.inject(None, HecDouble.busy())
        with pytest.raises(SinkError):
            await sink.deliver(sent)
        assert hec_ack.pending_acks() == 0
        await sink.deliver(sent)
    assert [r.status for r in hec_ack.requests] == [200, 503, 200]
    assert sorted(gids(hec_ack.indexed())) == sorted(numbered(*range(4)))


def test_reused_ack_id_sends_the_earlier_request_again() -> None:
    """A collector that restarted numbers acks from 0 again: when a new
    request gets the ackId of one still waiting, the earlier request is sent
    again (its ack can no longer be told apart), with a WARNING."""
    sink = SplunkHecSink(
        "hec", url="https://s:8088", token=Secret(ACK_TOKEN), acknowledgements=True
    )
    queue: deque[list[int]] = deque()
    waiting: dict[int, Any] = {}
    with capture_logs() as logs:
        sink._await_ack(0, [0, 1], queue, waiting)
        sink._await_ack(0, [2, 3], queue, waiting)
    assert list(queue) == [[0, 1]]
    assert waiting[0].request == [2, 3]
    assert [e["event"] for e in logs] == ["hec_ack_id_reused"]


@pytest.mark.anyio
async def test_token_without_acks_is_taken_as_accepted_with_a_warning(
    hec: HecDouble,
) -> None:
    """acknowledgements = true against a token without indexer acks: the
    replies carry no ackId, so requests count as delivered when accepted,
    and a WARNING says so once."""
    with capture_logs() as logs:
        async with opened(hec, acknowledgements=True, max_request_events=1) as sink:
            await sink.deliver(batch(3))
    assert gids(hec.indexed()) == numbered(0, 1, 2)
    warnings = [e for e in logs if e["event"] == "hec_acks_disabled_for_token"]
    assert len(warnings) == 1


@pytest.mark.anyio
async def test_ack_token_without_channel_is_a_misconfiguration(
    hec: HecDouble,
) -> None:
    """A token with acks enabled needs the channel: HEC's code 10 raises a
    retryable SinkError (nothing set aside) and is logged at ERROR."""
    with capture_logs() as logs:
        async with opened(hec, token=Secret(ACK_TOKEN)) as sink:
            with pytest.raises(SinkError) as caught:
                await sink.deliver(batch(2))
    assert not isinstance(caught.value, SinkAuthError)
    assert "code 10" in str(caught.value)
    refused = [e["log_level"] for e in logs if e["event"] == "sink_request_refused"]
    assert refused == ["error"]
    assert hec.indexed() == []
    no_secret(str(caught.value), logs)


# -- refused events ----------------------------------------------------------


@pytest.mark.anyio
async def test_poison_event_is_dead_lettered_and_its_neighbours_delivered(
    hec: HecDouble,
) -> None:
    """A bad event in the middle of a request (code 6 naming it) is set aside
    with its batch index; the events before it (indexed by HEC) and after it
    (sent again) are each delivered exactly once."""
    sent = with_payload(batch(7), 4, b'{"broken": }')
    async with opened(hec, max_request_events=3) as sink:
        report = await sink.deliver(sent)
    [(index, reason)] = report.rejected
    assert index == 4
    assert "HTTP 400, code 6" in reason
    assert gids(hec.indexed()) == numbered(0, 1, 2, 3, 5, 6)
    numbers = [r.reply.get("invalid-event-number") for r in hec.requests]
    assert numbers == [None, 1, None, None]


@pytest.mark.anyio
async def test_blank_lone_event_is_dead_lettered(hec: HecDouble) -> None:
    """A request of one blank event (code 13) sets that event aside."""
    sent = with_payload(batch(1), 0, b'"  "')
    async with opened(hec) as sink:
        report = await sink.deliver(sent)
    [(index, reason)] = report.rejected
    assert index == 0
    assert "code 13" in reason


@pytest.mark.anyio
async def test_refusal_naming_no_event_is_narrowed_down_by_halves() -> None:
    """When the receiver refuses a request without naming the event, the
    request is split until the bad events are alone; they are set aside,
    every other event is delivered exactly once."""
    with HecDouble(tokens(), event_numbers=False) as double:
        sent = with_payload(with_payload(batch(9), 2, b'""'), 7, b"null")
        with capture_logs() as logs:
            async with opened(double) as sink:
                report = await sink.deliver(sent)
    assert not double.errors
    assert [index for index, _ in report.rejected] == [2, 7]
    assert all("code 13" in reason for _, reason in report.rejected)
    assert gids(double.indexed()) == numbered(0, 1, 3, 4, 5, 6, 8)
    assert any(entry["event"] == "sink_request_split" for entry in logs)


@pytest.mark.anyio
async def test_request_too_large_is_split_and_a_lone_giant_set_aside() -> None:
    """413 splits the request in halves; an event too large even alone is
    set aside."""
    with HecDouble(tokens(), max_content_length=1500) as double:
        sent = with_payload(batch(6), 3, json.dumps({"blob": "x" * 2000}).encode())
        async with opened(double) as sink:
            report = await sink.deliver(sent)
    assert not double.errors
    assert [index for index, _ in report.rejected] == [3]
    assert "HTTP 413" in report.rejected[0][1]
    assert gids(double.indexed()) == numbered(0, 1, 2, 4, 5)


@pytest.mark.anyio
async def test_index_not_allowed_is_a_misconfiguration(hec: HecDouble) -> None:
    """Code 7 (index not allowed for the token) comes from the sink's
    setting, not from an event: a retryable SinkError, nothing set aside."""
    async with opened(hec, index="secret_index") as sink:
        with pytest.raises(SinkError) as caught:
            await sink.deliver(batch(3))
    assert not isinstance(caught.value, SinkAuthError)
    assert "code 7" in str(caught.value)
    assert hec.indexed() == []


# -- retries and credentials -----------------------------------------------------


def http_date(seconds_ahead: int) -> str:
    moment = datetime.now(UTC) + timedelta(seconds=seconds_ahead)
    return format_datetime(moment, usegmt=True)


FAULTS: dict[str, Callable[[], Response]] = {
    "busy": HecDouble.busy,
    "internal error": lambda: Response.json(
        500, {"text": "Internal server error", "code": 8}
    ),
    "throttled, seconds": lambda: HecDouble.throttled("7"),
    "throttled, HTTP-date": lambda: HecDouble.throttled(http_date(30)),
}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("name", "low", "high"),
    [
        ("busy", None, None),
        ("internal error", None, None),
        ("throttled, seconds", 7.0, 7.0),
        ("throttled, HTTP-date", 28.0, 30.0),
    ],
)
async def test_busy_and_throttled_raise_sink_error_with_retry_after(
    hec: HecDouble, name: str, low: float | None, high: float | None
) -> None:
    """503 code 9, 500 code 8 and 429 raise a retryable SinkError carrying
    Retry-After (delta-seconds or HTTP-date); nothing of the request is
    indexed, and the next attempt delivers."""
    fault = FAULTS[name]()
    hec.inject(fault)
    async with opened(hec) as sink:
        with pytest.raises(SinkError) as caught:
            await sink.deliver(batch(2))
        assert not isinstance(caught.value, SinkAuthError)
        retry_after = caught.value.retry_after
        if low is None:
            assert retry_after is None
        else:
            assert retry_after is not None
            assert low <= retry_after <= (high or low)
        assert hec.indexed() == []
        await sink.deliver(batch(2))
    assert gids(hec.indexed()) == numbered(0, 1)


@pytest.mark.anyio
async def test_retry_of_the_same_batch_skips_requests_already_accepted(
    hec: HecDouble,
) -> None:
    """After a failure in the middle of a batch, the pipeline's retry of the
    same batch sends only what was not accepted: each event indexed once."""
    sent = batch(6)
    async with opened(hec, max_request_events=2) as sink:
        hec.inject(None, None, DISCONNECT)
        with pytest.raises(SinkError):
            await sink.deliver(sent)
        report = await sink.deliver(sent)
    assert report.rejected == []
    assert gids(hec.indexed()) == numbered(*range(6))


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("token", "code"), [("not-a-known-token-xyz", 4), (DISABLED_TOKEN, 1)]
)
async def test_refused_token_raises_sink_auth_error(
    hec: HecDouble, token: str, code: int
) -> None:
    """403 (codes 1 and 4) raise SinkAuthError saying the token was refused,
    logged at ERROR, with the token in neither."""
    with capture_logs() as logs:
        async with opened(hec, token=Secret(token)) as sink:
            with pytest.raises(SinkAuthError) as caught:
                await sink.deliver(batch(1))
    message = str(caught.value)
    assert "refused the HEC token" in message
    assert f"code {code}" in message
    errors = [e for e in logs if e["event"] == "sink_credentials_refused"]
    assert [e["log_level"] for e in errors] == ["error"]
    assert token not in message
    assert token not in repr(logs)
    no_secret(message, logs)


@pytest.mark.anyio
async def test_transport_failure_is_a_sink_error_naming_the_host_only(
    hec: HecDouble,
) -> None:
    """A connection dropped without an answer raises SinkError that names
    the collector's host and not the token."""
    hec.inject(DISCONNECT)
    async with opened(hec) as sink:
        with pytest.raises(SinkError) as caught:
            await sink.deliver(batch(1))
    assert f"127.0.0.1:{hec.port}" in str(caught.value)
    no_secret(str(caught.value))


# -- health at open ----------------------------------------------------------------


@pytest.mark.anyio
async def test_open_logs_health(hec: HecDouble) -> None:
    """open() reports a healthy collector at INFO and an unhealthy one at
    WARNING, and opens either way."""
    with capture_logs() as logs:
        async with opened(hec):
            pass
        hec.healthy = False
        async with opened(hec) as sink:
            await sink.deliver(batch(1))
    health = [(e["log_level"], e["state"]) for e in logs if e["event"] == "hec_health"]
    assert health == [("info", "healthy"), ("warning", "unhealthy")]
    assert len(hec.indexed()) == 1


@pytest.mark.anyio
async def test_open_fails_when_the_collector_cannot_be_reached() -> None:
    """A collector that cannot be reached fails open() with SinkError (the
    pipeline retries open), and no client is left open."""
    with HecDouble(tokens()) as double:
        url = double.url
    sink = SplunkHecSink("hec", url=url, token=Secret(TOKEN))
    with capture_logs() as logs, pytest.raises(SinkError) as caught:
        await sink.open()
    assert "cannot reach" in str(caught.value)
    assert [e["state"] for e in logs if e["event"] == "hec_health"] == ["unreachable"]
    assert sink._connection.client is None


# -- TLS ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_hec(authority: trustme.CA) -> Iterator[HecDouble]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    with HecDouble(tokens(), tls=context) as double:
        yield double
    assert not double.errors


@pytest.mark.anyio
async def test_tls_with_ca_file(
    tls_hec: HecDouble, authority: trustme.CA, tmp_path: Path
) -> None:
    """With ca_file the collector's certificate is verified and events go
    over TLS; without it the unknown CA makes open() fail."""
    ca_file = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    async with opened(tls_hec, ca_file=ca_file) as sink:
        await sink.deliver(batch(2))
    assert gids(tls_hec.indexed()) == numbered(0, 1)
    untrusting = SplunkHecSink("hec", url=tls_hec.url, token=Secret(TOKEN))
    with pytest.raises(SinkError, match="cannot reach"):
        await untrusting.open()


@pytest.mark.anyio
async def test_tls_verify_false_warns(tls_hec: HecDouble) -> None:
    """tls_verify = false connects whatever the certificate and logs a
    WARNING."""
    with capture_logs() as logs:
        async with opened(tls_hec, tls_verify=False) as sink:
            await sink.deliver(batch(1))
    assert len(tls_hec.indexed()) == 1
    levels = [e["log_level"] for e in logs if e["event"] == "sink_tls_verify_disabled"]
    assert levels == ["warning"]


@pytest.mark.anyio
async def test_unreadable_ca_file_fails_open(tmp_path: Path) -> None:
    """A ca_file that cannot be loaded fails open() with a SinkError naming it."""
    sink = SplunkHecSink(
        "hec",
        url="https://127.0.0.1:9",
        token=Secret(TOKEN),
        ca_file=tmp_path / "missing.pem",
    )
    with pytest.raises(SinkError, match=r"missing\.pem"):
        await sink.open()


# -- configuration -------------------------------------------------------------------


def test_config_defaults_and_durations(monkeypatch: pytest.MonkeyPatch) -> None:
    """The section reads the token from env:, durations in minutes, and has
    the documented defaults."""
    monkeypatch.setenv("HEC_TOKEN_FOR_TEST", TOKEN)
    config = SplunkHecSinkConfig.model_validate(
        {
            "type": "splunk_hec",
            "name": "splunk",
            "url": "https://splunk.example:8088",
            "token": "env:HEC_TOKEN_FOR_TEST",
            "acknowledgements": True,
            "ack_timeout": "5m",
            "fields": {"env": "prod", "teams": ["sec", "it"]},
        }
    )
    assert config.token.reveal() == TOKEN
    assert config.ack_timeout == 300.0
    assert config.ack_poll_interval == 1.0
    assert config.sourcetype == "asana:audit"
    assert config.compression == "gzip"
    assert config.tls_verify is True
    assert config.max_request_bytes == 1_000_000
    assert SplunkHecSink.from_config(config).acknowledgements is True
    no_secret(repr(config))


@pytest.mark.parametrize(
    "change",
    [
        {"url": "ftp://splunk"},
        {"fields": {"count": 3}},
        {"fields": {"nested": {"a": "b"}}},
        {"compression": "zstd"},
        {"ack_timeout": "0s"},
        {"max_request_events": 0},
        {"unknown": 1},
    ],
)
def test_config_rejects_bad_values(change: dict[str, Any]) -> None:
    """Wrong URLs, indexed fields that are not strings or lists of strings,
    unknown compressions, zero timeouts and unknown keys are refused."""
    document = {
        "type": "splunk_hec",
        "name": "s",
        "url": "https://s:8088",
        "token": TOKEN,
        **change,
    }
    with pytest.raises(ValidationError):
        SplunkHecSinkConfig.model_validate(document)


# -- end to end ----------------------------------------------------------------------


@pytest.fixture
def simulator() -> Iterator[AuditLogSimulator]:
    settings = SimulatorSettings(backlog=450, backlog_span=600, seed=3)
    with AuditLogSimulator(settings) as running:
        yield running


@pytest.mark.anyio
async def test_daemon_delivers_every_simulated_event_once_with_acks(
    simulator: AuditLogSimulator, hec_ack: HecDouble, tmp_path: Path
) -> None:
    """The real daemon reads the simulated audit log and the sink delivers
    every event to the collector exactly once, acknowledged, although the
    collector is busy, throttling and dropping connections for a while."""
    hec_ack.inject(
        HecDouble.busy(), HecDouble.throttled("0"), DISCONNECT, HecDouble.busy()
    )
    sink = SplunkHecSink(
        "splunk", url=hec_ack.url, **ack_options(max_request_events=40)
    )
    await forward_once(simulator, sink, tmp_path)
    expected = [event["gid"] for event in simulator.events()]
    assert len(expected) == 450
    assert sorted(gids(hec_ack.indexed())) == sorted(expected)
    assert hec_ack.faults_left == 0
    assert hec_ack.pending_acks() == 0
