"""The ``sumo_logic`` sink against the Sumo Logic double over loopback HTTP."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from pydantic import ValidationError
from structlog.testing import capture_logs

from forwarder.errors import SinkAuthError, SinkError
from forwarder.secrets import Secret
from forwarder.simulator import AuditLogSimulator, SimulatorSettings
from forwarder.sinks.base import Batch
from forwarder.sinks.sumo_logic import (
    MAX_REQUEST_BYTES,
    SumoLogicSink,
    SumoLogicSinkConfig,
    fields_header,
)
from tests.doubles import SumoDouble, audit_event, batch_of, forward_once
from tests.doubles.http_receiver import DISCONNECT, Response
from tests.doubles.sumo import PREFIX

CODE = "ZaVnC4dhaV2sJ6Ij1Xw8kYAcfGq_Secret_Collector_Code=="


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def default_logging() -> None:
    """Logging is global: a test that configured it for a stream since
    closed must not break these tests' log lines."""
    structlog.reset_defaults()


@pytest.fixture
def sumo() -> Iterator[SumoDouble]:
    with SumoDouble([CODE]) as double:
        yield double
    assert not double.errors


@asynccontextmanager
async def opened(url: str, **options: Any) -> AsyncIterator[SumoLogicSink]:
    sink = SumoLogicSink("sumo", url=Secret(url), **options)
    await sink.open()
    try:
        yield sink
    finally:
        await sink.aclose()


def batch(count: int) -> Batch:
    return batch_of([audit_event(number) for number in range(count)])


def gids(messages: list[bytes]) -> list[str]:
    return [json.loads(message)["event"]["gid"] for message in messages]


def numbered(*numbers: int) -> list[str]:
    return [audit_event(number)["gid"] for number in numbers]


def no_secret(double: SumoDouble, *texts: object) -> None:
    for text in texts:
        assert CODE not in repr(text)
        assert double.source_url not in repr(text)


@pytest.mark.anyio
async def test_messages_are_newline_separated_and_gzipped_with_sumo_headers(
    sumo: SumoDouble,
) -> None:
    """Events go as one message per line, gzipped, with the category, name,
    host and fields headers."""
    sent = batch(3)
    async with opened(
        sumo.source_url,
        category="security/asana",
        source_name="asana-audit",
        host="forwarder-1",
        fields={"env": "prod", "team": "secops"},
    ) as sink:
        report = await sink.deliver(sent)
    assert report.rejected == []
    [request] = sumo.accepted
    assert request.headers["content-encoding"] == "gzip"
    assert request.raw_body[:2] == b"\x1f\x8b"
    assert gzip.decompress(request.raw_body) == b"".join(
        payload + b"\n" for payload in sent.payloads
    )
    assert request.messages == sent.payloads
    assert (request.category, request.name, request.host) == (
        "security/asana",
        "asana-audit",
        "forwarder-1",
    )
    assert request.headers["x-sumo-fields"] == "env=prod,team=secops"
    assert request.fields == {"env": "prod", "team": "secops"}


@pytest.mark.anyio
async def test_uncompressed_when_asked(sumo: SumoDouble) -> None:
    """compression = "none" sends the plain text without Content-Encoding."""
    async with opened(sumo.source_url, compression="none") as sink:
        await sink.deliver(batch(2))
    [request] = sumo.accepted
    assert "content-encoding" not in request.headers
    assert gids(request.messages) == numbered(0, 1)
    assert "x-sumo-category" not in request.headers


def test_fields_header_format() -> None:
    """A mapping becomes ``k=v,k2=v2`` in the mapping's order."""
    assert fields_header({"a": "1", "b": "two"}) == "a=1,b=two"
    assert fields_header({}) == ""


def big_event(number: int, size: int) -> dict[str, Any]:
    return audit_event(number, details={"blob": "x" * size})


@pytest.mark.anyio
async def test_requests_never_exceed_one_megabyte(sumo: SumoDouble) -> None:
    """Events adding up to several MB go in requests of at most 1 MB
    uncompressed (the double refuses any over); all arrive once, in order."""
    sent = batch_of([big_event(n, 230_000) for n in range(12)])
    async with opened(sumo.source_url) as sink:
        report = await sink.deliver(sent)
    assert report.rejected == []
    assert sumo.refused == []
    assert len(sumo.accepted) >= 3
    assert all(request.size <= MAX_REQUEST_BYTES for request in sumo.accepted)
    assert gids(sumo.messages()) == numbered(*range(12))


@pytest.mark.anyio
async def test_event_over_one_megabyte_is_dead_lettered(sumo: SumoDouble) -> None:
    """An event that alone is over 1 MB is set aside with a reason that says
    so; the events around it are delivered."""
    sent = batch_of([audit_event(0), big_event(1, MAX_REQUEST_BYTES), audit_event(2)])
    with capture_logs() as logs:
        async with opened(sumo.source_url) as sink:
            report = await sink.deliver(sent)
    [(index, reason)] = report.rejected
    assert index == 1
    assert "over Sumo Logic's limit" in reason
    assert gids(sumo.messages()) == numbered(0, 2)
    assert sumo.refused == []
    assert any(entry["event"] == "sink_event_refused" for entry in logs)


def http_date(seconds_ahead: int) -> str:
    moment = datetime.now(UTC) + timedelta(seconds=seconds_ahead)
    return format_datetime(moment, usegmt=True)


FAULTS: dict[str, Callable[[], Response]] = {
    "throttled, seconds": lambda: SumoDouble.throttled("3"),
    "throttled, HTTP-date": lambda: SumoDouble.throttled(http_date(20)),
    "throttled, no header": SumoDouble.throttled,
    "unavailable": SumoDouble.unavailable,
    "gateway timeout": lambda: Response.text(504, "Gateway Timeout"),
    "request timeout": lambda: Response.text(408, "Request Timeout"),
}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("name", "low", "high"),
    [
        ("throttled, seconds", 3.0, 3.0),
        ("throttled, HTTP-date", 18.0, 20.0),
        ("throttled, no header", None, None),
        ("unavailable", None, None),
        ("gateway timeout", None, None),
        ("request timeout", None, None),
    ],
)
async def test_throttled_and_unavailable_are_retried_and_resent(
    sumo: SumoDouble, name: str, low: float | None, high: float | None
) -> None:
    """429, 503, 504 and 408 raise a retryable SinkError with Retry-After
    read in both forms; Sumo dropped that data, and the retry sends it."""
    sumo.inject(FAULTS[name]())
    sent = batch(3)
    async with opened(sumo.source_url) as sink:
        with pytest.raises(SinkError) as caught:
            await sink.deliver(sent)
        assert not isinstance(caught.value, SinkAuthError)
        retry_after = caught.value.retry_after
        if low is None:
            assert retry_after is None
        else:
            assert retry_after is not None
            assert low <= retry_after <= (high or low)
        assert sumo.messages() == []
        no_secret(sumo, str(caught.value))
        await sink.deliver(sent)
    assert gids(sumo.messages()) == numbered(0, 1, 2)


@pytest.mark.anyio
async def test_retry_after_a_throttled_request_sends_only_what_was_dropped(
    sumo: SumoDouble,
) -> None:
    """When the second request of a batch is throttled, the retry of the
    batch sends only that request: every message arrives exactly once."""
    sent = batch_of([big_event(n, 300_000) for n in range(6)])
    sumo.inject(None, SumoDouble.throttled("1"))
    async with opened(sumo.source_url) as sink:
        with pytest.raises(SinkError):
            await sink.deliver(sent)
        await sink.deliver(sent)
    assert gids(sumo.messages()) == numbered(*range(6))


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("url_of", "status"),
    [
        (lambda double: f"{double.url}{PREFIX}{CODE}-deleted", 401),
        (lambda double: f"{double.url}/receiver/v2/{CODE}", 404),
    ],
)
async def test_wrong_source_url_raises_sink_auth_error_without_the_url(
    sumo: SumoDouble, url_of: Callable[[SumoDouble], str], status: int
) -> None:
    """401 and 404 (source deleted, URL mistyped) raise SinkAuthError, logged
    at ERROR; neither the URL nor its code appears in the error or the logs."""
    url = url_of(sumo)
    with capture_logs() as logs:
        async with opened(url) as sink:
            with pytest.raises(SinkAuthError) as caught:
                await sink.deliver(batch(1))
    message = str(caught.value)
    assert "refused the source URL" in message
    assert f"HTTP {status}" in message
    assert f"127.0.0.1:{sumo.port}" in message
    errors = [e for e in logs if e["event"] == "sink_credentials_refused"]
    assert [e["log_level"] for e in errors] == ["error"]
    for text in (message, repr(logs)):
        assert url not in text
        assert CODE not in text


@pytest.mark.anyio
async def test_other_client_errors_are_retried_not_dead_lettered(
    sumo: SumoDouble,
) -> None:
    """Sumo Logic takes any text, so a 400 is not about an event: it raises
    a retryable SinkError and nothing is set aside."""
    sumo.inject(Response.text(400, "Bad Request"))
    async with opened(sumo.source_url) as sink:
        with pytest.raises(SinkError) as caught:
            await sink.deliver(batch(2))
        assert not isinstance(caught.value, SinkAuthError)
        report = await sink.deliver(batch(2))
    assert report.rejected == []


@pytest.mark.anyio
async def test_transport_errors_name_the_host_only(sumo: SumoDouble) -> None:
    """A dropped connection and an unreachable receiver raise SinkError
    naming the host; the URL and its code appear nowhere."""
    sumo.inject(DISCONNECT)
    with capture_logs() as logs:
        async with opened(sumo.source_url) as sink:
            with pytest.raises(SinkError) as dropped:
                await sink.deliver(batch(1))
    with SumoDouble([CODE]) as gone:
        url = gone.source_url
    async with opened(url) as sink:
        with pytest.raises(SinkError) as refused:
            await sink.deliver(batch(1))
    assert f"127.0.0.1:{sumo.port}" in str(dropped.value)
    assert "127.0.0.1" in str(refused.value)
    no_secret(sumo, str(dropped.value), str(refused.value), logs)
    assert url not in str(refused.value)


@pytest.mark.anyio
async def test_double_decodes_deflate_and_refuses_oversized_bodies(
    sumo: SumoDouble,
) -> None:
    """The double takes deflate bodies like gzip ones, and answers 413 to a
    body over 1 MB uncompressed without keeping any of it."""
    async with httpx.AsyncClient() as client:
        small = await client.post(
            sumo.source_url,
            content=zlib.compress(b"one\ntwo\n"),
            headers={"Content-Encoding": "deflate"},
        )
        large = await client.post(sumo.source_url, content=b"x" * 1_000_001)
    assert small.status_code == 200
    assert large.status_code == 413
    assert sumo.messages() == [b"one", b"two"]
    assert sumo.refused == [(413, 1_000_001)]


# -- configuration -----------------------------------------------------------------


def test_config_reads_the_url_as_a_secret(tmp_path: Path) -> None:
    """The URL comes from file: (as Kubernetes mounts it) and never shows in
    the configuration's repr."""
    secret_file = tmp_path / "sumo-url"
    url = f"https://endpoint4.collection.sumologic.com{PREFIX}{CODE}"
    secret_file.write_text(url + "\n")
    config = SumoLogicSinkConfig.model_validate(
        {
            "type": "sumo_logic",
            "name": "sumo",
            "url": f"file:{secret_file}",
            "category": "asana/audit",
            "source_name": "asana",
            "fields": {"env": "prod"},
        }
    )
    assert config.url.reveal() == url
    assert CODE not in repr(config)
    sink = SumoLogicSink.from_config(config)
    assert sink.target == "endpoint4.collection.sumologic.com"


@pytest.mark.parametrize(
    "change",
    [
        {"url": "not a url"},
        {"fields": {"a,b": "c"}},
        {"fields": {"a": "b=c"}},
        {"fields": {"a": ""}},
        {"compression": "br"},
        {"unknown": True},
    ],
)
def test_config_rejects_bad_values(change: dict[str, Any]) -> None:
    """Unusable URLs, fields that would break the k=v,k2=v2 header and
    unknown keys are refused, and the URL is never echoed."""
    document = {
        "type": "sumo_logic",
        "name": "sumo",
        "url": f"https://collectors.example{PREFIX}{CODE}",
        **change,
    }
    with pytest.raises(ValidationError) as caught:
        SumoLogicSinkConfig.model_validate(document)
    assert CODE not in str(caught.value)


# -- end to end --------------------------------------------------------------------


@pytest.fixture
def simulator() -> Iterator[AuditLogSimulator]:
    settings = SimulatorSettings(backlog=400, backlog_span=600, seed=5)
    with AuditLogSimulator(settings) as running:
        yield running


@pytest.mark.anyio
async def test_daemon_delivers_every_simulated_event_once(
    simulator: AuditLogSimulator, sumo: SumoDouble, tmp_path: Path
) -> None:
    """The real daemon reads the simulated audit log and every event reaches
    the Sumo source exactly once, although the source throttles and is
    unavailable for a while."""
    sumo.inject(
        SumoDouble.throttled("0"),
        SumoDouble.unavailable(),
        DISCONNECT,
        SumoDouble.throttled(),
    )
    sink = SumoLogicSink("sumo", url=Secret(sumo.source_url), category="asana")
    await forward_once(simulator, sink, tmp_path)
    expected = [event["gid"] for event in simulator.events()]
    assert len(expected) == 400
    assert sorted(gids(sumo.messages())) == sorted(expected)
    assert sumo.faults_left == 0
