"""The syslog sink against real receivers (rsyslogd, syslog-ng): UDP, TCP
with both framings, TLS and mutual TLS, truncation, outages; and its
configuration. Assertions are on what the receiver parsed."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog
import trustme
from pydantic import ValidationError

from forwarder.errors import SinkError
from forwarder.formats import EventContext, cef, leef, raw
from forwarder.formats.syslog_message import SD_ID
from forwarder.sinks.base import Batch
from forwarder.sinks.syslog import SyslogSink, SyslogSinkConfig, Transport
from tests.fake_api import make_event
from tests.receivers import (
    Receiver,
    TlsFiles,
    free_port,
    make_tls_files,
    rsyslog_receiver,
    syslog_ng_receiver,
)

pytestmark = pytest.mark.anyio

CONTEXT = EventContext(workspace_gid="1111", received_at="2026-12-01T00:00:00.000Z")
HOSTNAME = "forwarder-test"
BOM = "\ufeff"
LOCAL0_NOTICE = 16 * 8 + 5


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def rsyslog(tmp_path: Path, tls_files: TlsFiles) -> Iterator[Receiver]:
    with rsyslog_receiver(tmp_path / "rsyslog", tls=tls_files) as receiver:
        yield receiver


@pytest.fixture
def rsyslog_mutual(tmp_path: Path, tls_files: TlsFiles) -> Iterator[Receiver]:
    with rsyslog_receiver(
        tmp_path / "rsyslog", udp=False, tcp=False, tls=tls_files, mutual_tls=True
    ) as receiver:
        yield receiver


@pytest.fixture
def syslog_ng(tmp_path: Path, tls_files: TlsFiles) -> Iterator[Receiver]:
    with syslog_ng_receiver(
        tmp_path / "syslog-ng", tls=tls_files, mutual_tls=True
    ) as receiver:
        yield receiver


def make_sink(transport: Transport, port: int, **settings: Any) -> SyslogSink:
    options: dict[str, Any] = {
        "hostname": HOSTNAME,
        "connect_timeout": 5.0,
        "write_timeout": 5.0,
        **settings,
    }
    return SyslogSink(
        "syslog", transport=transport, host="127.0.0.1", port=port, **options
    )


def client_tls(files: TlsFiles) -> dict[str, Any]:
    return {
        "ca_file": files.ca,
        "cert_file": files.client_cert,
        "key_file": files.client_key,
    }


@asynccontextmanager
async def opened(sink: SyslogSink) -> AsyncIterator[SyslogSink]:
    try:
        await sink.open()
        yield sink
    finally:
        await sink.aclose()


def raw_batch(events: list[dict[str, Any]]) -> Batch:
    return Batch(events, [raw.render(event, CONTEXT) for event in events])


def envelope(record: dict[str, Any], *, bom: bool = True) -> dict[str, Any]:
    """The raw JSON envelope inside a received message."""
    msg = record["msg"]
    if bom:
        assert msg.startswith(BOM), msg[:20]
        msg = msg[1:]
    decoded: dict[str, Any] = json.loads(msg)
    return decoded


def login_event(number: int = 1) -> dict[str, Any]:
    event = make_event(number, event_type="user_login_failed")
    event["actor"]["email"] = 'ädä"\\]@x.io'
    event["context"].update(user_agent="Mozilla/5.0 (a=b|c^d)")
    event["details"] = {"reason": "wrong\npassword", "pipe": "a|b=c\\d"}
    return event


# -- transports ----------------------------------------------------------------


async def test_udp_to_rsyslog(rsyslog: Receiver) -> None:
    """One event per datagram; rsyslog reads every RFC 5424 field: PRI from
    facility and severity, the event's time, host, app, MSGID, the SD
    element, and MSG with its BOM."""
    events = [make_event(n) for n in range(3)]
    async with opened(make_sink("udp", rsyslog.ports["udp"])) as sink:
        await sink.deliver(raw_batch(events))
    records = await rsyslog.wait_for(3)

    assert len(records) == 3
    by_gid = {r["sd_params"][SD_ID]["gid"]: r for r in records}
    for event in events:
        record = by_gid[event["gid"]]
        assert record["input"] == "imudp"
        assert record["pri"] == str(LOCAL0_NOTICE)
        assert record["timestamp"] == event["created_at"]
        assert (record["hostname"], record["app_name"]) == (HOSTNAME, "asana-audit")
        assert (record["procid"], record["msgid"]) == ("-", "task_deleted")
        assert record["sd_params"][SD_ID]["actor_email"] == "a@x.io"
        assert envelope(record)["event"] == event


async def test_tcp_octet_counting_keeps_a_newline_inside_one_message(
    rsyslog: Receiver,
) -> None:
    """With octet counting (the TCP default) a payload holding a newline is
    still one message at the receiver."""
    events = [make_event(1), make_event(2)]
    batch = Batch(events, [b"first line\nsecond line", b"next event"])
    async with opened(make_sink("tcp", rsyslog.ports["tcp"])) as sink:
        await sink.deliver(batch)
    records = await rsyslog.wait_for(2)

    assert len(records) == 2
    assert records[0]["input"] == "imtcp"
    # rsyslog writes control characters as '#ooo' on reception.
    assert records[0]["msg"] == BOM + "first line#012second line"
    assert records[1]["msg"] == BOM + "next event"


async def test_tcp_lf_framing(rsyslog: Receiver) -> None:
    """LF framing: one message per line, each parsed whole."""
    events = [make_event(n) for n in range(5)]
    sink = make_sink("tcp", rsyslog.ports["tcp"], framing="lf")
    async with opened(sink):
        await sink.deliver(raw_batch(events))
    records = await rsyslog.wait_for(5)

    assert [envelope(r)["event"] for r in records] == events


async def test_tls_to_rsyslog(rsyslog: Receiver, tls_files: TlsFiles) -> None:
    """TLS with the server verified against ca_file (gtls driver)."""
    events = [make_event(n) for n in range(3)]
    sink = make_sink("tls", rsyslog.ports["tls"], ca_file=tls_files.ca)
    async with opened(sink):
        await sink.deliver(raw_batch(events[:2]))
        await sink.deliver(raw_batch(events[2:]))
    records = await rsyslog.wait_for(3)

    assert [envelope(r)["event"] for r in records] == events


async def test_mutual_tls_with_rsyslog(
    rsyslog_mutual: Receiver, tls_files: TlsFiles
) -> None:
    """rsyslog requiring client certificates takes events from a sink with
    one, and a sink without one fails with a SinkError that says why instead
    of losing its batch into a connection the receiver drops."""
    port = rsyslog_mutual.ports["tls"]
    async with opened(make_sink("tls", port, **client_tls(tls_files))) as sink:
        await sink.deliver(raw_batch([make_event(1)]))
    records = await rsyslog_mutual.wait_for(1)
    assert envelope(records[0])["event"] == make_event(1)

    without = make_sink("tls", port, ca_file=tls_files.ca)
    with anyio.fail_after(10), pytest.raises(SinkError, match="client certificate"):
        async with opened(without):
            pass


async def test_mutual_tls_with_syslog_ng(
    syslog_ng: Receiver, tls_files: TlsFiles
) -> None:
    """syslog-ng with peer-verify(required-trusted): the client certificate
    is accepted, and its absence is a SinkError naming the alert."""
    port = syslog_ng.ports["syslog_tls"]
    async with opened(make_sink("tls", port, **client_tls(tls_files))) as sink:
        await sink.deliver(raw_batch([make_event(1)]))
    records = await syslog_ng.wait_for(1)
    assert records[0]["input"] == "syslog_tls"
    assert envelope(records[0], bom=False)["event"] == make_event(1)

    without = make_sink("tls", port, ca_file=tls_files.ca)
    with (
        anyio.fail_after(10),
        pytest.raises(
            SinkError,
            match=r"TLS handshake .*CERTIFICATE_REQUIRED; .*client certificate",
        ),
    ):
        async with opened(without):
            pass


async def test_wrong_ca_fails_loudly(rsyslog: Receiver, tmp_path: Path) -> None:
    """A server certificate from another CA fails the handshake at once with
    a SinkError naming the verification failure."""
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(other)
    sink = make_sink("tls", rsyslog.ports["tls"], ca_file=other)
    pattern = (
        r"^TLS handshake with 127\.0\.0\.1:\d+ failed: certificate verify failed: "
        r"unable to get local issuer certificate$"
    )
    with anyio.fail_after(5), pytest.raises(SinkError, match=pattern):
        async with opened(sink):
            pass


async def test_wrong_server_name_fails(rsyslog: Receiver, tls_files: TlsFiles) -> None:
    """tls_server_name is checked against the certificate."""
    sink = make_sink(
        "tls",
        rsyslog.ports["tls"],
        ca_file=tls_files.ca,
        tls_server_name="siem.example.com",
    )
    with pytest.raises(SinkError, match="certificate verify failed: Hostname"):
        async with opened(sink):
            pass


async def test_tls_verify_off_warns_and_delivers(rsyslog: Receiver) -> None:
    """tls_verify = false connects to an unknown CA, with a WARNING at open."""
    sink = make_sink("tls", rsyslog.ports["tls"], tls_verify=False)
    with structlog.testing.capture_logs() as logs:
        async with opened(sink):
            await sink.deliver(raw_batch([make_event(1)]))
    await rsyslog.wait_for(1)
    warnings = [e for e in logs if e["event"] == "syslog_tls_verification_disabled"]
    assert len(warnings) == 1
    assert warnings[0]["log_level"] == "warning"


async def test_udp_send_error_is_a_sink_error() -> None:
    """A datagram refused by the network (ICMP port unreachable) fails the
    batch instead of vanishing."""
    port = free_port(socket.SOCK_DGRAM)
    events = [make_event(n) for n in range(5)]
    async with opened(make_sink("udp", port)) as sink:
        with pytest.raises(SinkError, match=r"cannot send a datagram .* refused"):
            await sink.deliver(raw_batch(events))


async def test_refused_connection_is_a_sink_error() -> None:
    """No listener: open fails with a SinkError naming the address."""
    port = free_port()
    with pytest.raises(SinkError, match=rf"cannot connect to 127\.0\.0\.1:{port}"):
        async with opened(make_sink("tcp", port)):
            pass


async def test_receiver_going_away_and_coming_back(rsyslog: Receiver) -> None:
    """While the receiver is down deliver raises SinkError (the pipeline
    retries); once it is back the next deliver reconnects and succeeds."""
    events = [make_event(n) for n in range(3)]
    async with opened(make_sink("tcp", rsyslog.ports["tcp"])) as sink:
        await sink.deliver(raw_batch(events[:1]))
        await rsyslog.wait_for(1)
        rsyslog.stop()
        with pytest.raises(SinkError, match="cannot connect"):
            await sink.deliver(raw_batch(events[1:2]))
        rsyslog.start()
        await sink.deliver(raw_batch(events[1:]))
    records = await rsyslog.wait_for(3)

    assert [envelope(r)["event"] for r in records] == events


async def test_connection_reset_mid_batch_is_a_sink_error() -> None:
    """A receiver that resets the connection while a batch is being written
    fails the whole batch, to be sent again."""

    async def reset_after_first_bytes(stream: anyio.abc.SocketStream) -> None:
        await stream.receive()
        raw_socket = stream.extra(anyio.abc.SocketAttribute.raw_socket)
        raw_socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        await stream.aclose()

    events = [make_event(n) for n in range(300)]
    batch = Batch(events, [b"x" * 60_000] * len(events))
    async with (
        await anyio.create_tcp_listener(local_host="127.0.0.1") as listener,
        anyio.create_task_group() as group,
    ):
        group.start_soon(listener.serve, reset_after_first_bytes)
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        async with opened(make_sink("tcp", port)) as sink:
            with pytest.raises(SinkError, match="lost while sending 300 events"):
                await sink.deliver(batch)
        group.cancel_scope.cancel()


async def test_write_timeout_is_a_sink_error() -> None:
    """A receiver that stops reading cannot hold a delivery forever."""
    events = [make_event(n) for n in range(400)]
    batch = Batch(events, [b"x" * 60_000] * len(events))
    with socket.socket() as listener:
        # Never accepted, never read, with a small window: the kernel takes
        # the connection and a few buffers, then the writer must wait.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        sink = make_sink("tcp", listener.getsockname()[1], write_timeout=0.5)
        async with opened(sink):
            with pytest.raises(SinkError, match=r"timed out after 0\.5s"):
                await sink.deliver(batch)


# -- what the receivers parsed ---------------------------------------------------


async def test_sd_escaping_as_both_receivers_read_it(
    rsyslog: Receiver, syslog_ng: Receiver
) -> None:
    """'"', '\\' and ']' in SD values, escaped by the sink, are unescaped by
    rsyslog (mmpstrucdata) and syslog-ng back to the original values."""
    event = make_event(1)
    event["gid"] = 'q"b\\s]e\\'
    event["actor"]["email"] = ']"\\'
    event["resource"]["gid"] = "plain é"
    for port in (rsyslog.ports["tcp"], syslog_ng.ports["syslog_tcp"]):
        async with opened(make_sink("tcp", port)) as sink:
            await sink.deliver(raw_batch([event]))

    for receiver in (rsyslog, syslog_ng):
        (record,) = await receiver.wait_for(1)
        params = record["sd_params"][SD_ID]
        assert params["gid"] == event["gid"]
        assert params["actor_email"] == ']"\\'
        assert params["resource_gid"] == "plain é"
        assert params["event_type"] == "task_deleted"


async def test_rfc3164_to_syslog_ng_network_source(syslog_ng: Receiver) -> None:
    """BSD syslog with LF framing, read by syslog-ng's network() source: PRI,
    time (UTC), host, TAG and message."""
    events = [make_event(1), make_event(2, event_type="user_login_succeeded")]
    sink = make_sink("tcp", syslog_ng.ports["bsd_tcp"], syntax="rfc3164", framing="lf")
    async with opened(sink):
        await sink.deliver(raw_batch(events))
    records = await syslog_ng.wait_for(2)

    assert [r["input"] for r in records] == ["bsd_tcp", "bsd_tcp"]
    assert [r["pri"] for r in records] == [str(LOCAL0_NOTICE), str(16 * 8 + 6)]
    assert records[0]["timestamp"].endswith("-11-01T00:00:01.000+00:00")
    for record, event in zip(records, events, strict=True):
        assert (record["hostname"], record["app_name"]) == (HOSTNAME, "asana-audit")
        assert envelope(record, bom=False)["event"] == event


async def test_cef_and_leef_payloads_arrive_intact(
    rsyslog: Receiver, syslog_ng: Receiver
) -> None:
    """CEF and LEEF payloads, escapes and delimiters included, are what both
    receivers hand on as the message."""
    event = login_event()
    payloads = [cef.render(event, CONTEXT), leef.render(event, CONTEXT)]
    batch = Batch([event, event], payloads)
    for port in (rsyslog.ports["tcp"], syslog_ng.ports["syslog_tcp"]):
        async with opened(make_sink("tcp", port)) as sink:
            await sink.deliver(batch)

    expected = [payload.decode() for payload in payloads]
    assert [r["msg"] for r in await rsyslog.wait_for(2)] == [
        BOM + text for text in expected
    ]
    # syslog-ng drops the BOM from $MESSAGE.
    assert [r["msg"] for r in await syslog_ng.wait_for(2)] == expected
    record = syslog_ng.records()[0]
    assert record["msgid"] == "user_login_failed"
    assert record["pri"] == str(16 * 8 + 4)


# -- truncation ------------------------------------------------------------------


async def test_truncation_over_udp_is_marked_counted_and_logged(
    rsyslog: Receiver,
) -> None:
    """Events over the UDP limit (2048 bytes) arrive cut, marked in the SD
    element, valid UTF-8; each is counted and the batch logs one WARNING."""
    events = [make_event(n) for n in range(3)]
    for event in events[:2]:
        event["details"] = {"text": "ü" * 3000}
    batch = raw_batch(events)
    counted: list[None] = []
    sink = make_sink(
        "udp", rsyslog.ports["udp"], on_truncated=lambda: counted.append(None)
    )
    with structlog.testing.capture_logs() as logs:
        async with opened(sink):
            await sink.deliver(batch)
    records = await rsyslog.wait_for(3)

    by_gid = {r["sd_params"][SD_ID]["gid"]: r for r in records}
    for event, payload in zip(events[:2], batch.payloads[:2], strict=True):
        record = by_gid[event["gid"]]
        params = record["sd_params"][SD_ID]
        assert params["truncated"] == "true"
        assert params["original_size"] == str(len(payload))
        body = record["msg"].removeprefix(BOM).encode()
        assert payload.startswith(body)
        assert 1500 < len(body) < 2048
    assert "truncated" not in by_gid[events[2]["gid"]]["sd_params"][SD_ID]
    assert len(counted) == 2
    assert sink.truncated_total == 2
    warnings = [e for e in logs if e["event"] == "syslog_events_truncated"]
    assert len(warnings) == 1
    assert warnings[0]["count"] == 2
    assert warnings[0]["log_level"] == "warning"


async def test_truncation_over_tcp_at_the_default_limit(syslog_ng: Receiver) -> None:
    """Over TCP the default limit is 65536 bytes: a larger event arrives cut
    to it and marked, as syslog-ng parsed it."""
    event = make_event(1)
    event["details"] = {"text": "x" * 70_000}
    batch = raw_batch([event])
    sink = make_sink("tcp", syslog_ng.ports["syslog_tcp"])
    async with opened(sink):
        await sink.deliver(batch)
    (record,) = await syslog_ng.wait_for(1)

    params = record["sd_params"][SD_ID]
    assert params["truncated"] == "true"
    assert params["original_size"] == str(len(batch.payloads[0]))
    assert batch.payloads[0].startswith(record["msg"].encode())
    assert 65000 < len(record["msg"]) < 65536
    assert sink.truncated_total == 1


# -- configuration -------------------------------------------------------------


def config(**settings: Any) -> SyslogSinkConfig:
    return SyslogSinkConfig.model_validate(
        {"name": "siem", "type": "syslog", "address": "tcp://siem:6514", **settings}
    )


def test_config_defaults() -> None:
    """local0, RFC 5424, JSON, octet counting and 64 KiB over TCP; 2 KiB over
    UDP; 1 KiB for RFC 3164; LF for RFC 3164; the machine's hostname."""
    tcp = config()
    assert (tcp.transport, tcp.host, tcp.port) == ("tcp", "siem", 6514)
    assert (tcp.facility, tcp.syntax, tcp.payload) == (16, "rfc5424", "json")
    assert (tcp.stream_framing, tcp.message_limit) == ("octet-counting", 65536)
    assert tcp.hostname == socket.gethostname()
    assert tcp.app_name == "asana-audit"
    assert tcp.tls_verify
    assert config(address="udp://[::1]:514").message_limit == 2048
    assert config(address="udp://[::1]:514").host == "::1"
    legacy = config(syntax="rfc3164")
    assert (legacy.stream_framing, legacy.message_limit) == ("lf", 1024)
    assert config(connect_timeout="2s", write_timeout="1m").write_timeout == 60.0


def test_render_format_follows_the_payload() -> None:
    """CEF and LEEF payloads are rendered as such; JSON uses the sink's format."""
    assert config(payload="cef").render_format == "cef"
    assert config(payload="leef").render_format == "leef"
    assert config(format="normalized").render_format == "normalized"
    assert config().render_format == "raw"


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"address": "tcp://siem"}, "not a syslog address"),
        ({"address": "http://siem:514"}, "unknown transport 'http'"),
        ({"address": "tcp://siem:0"}, "port 0 is out of range"),
        ({"address": "tcp://siem:70000"}, "port 70000 is out of range"),
        ({"facility": "local9"}, "unknown facility 'local9'"),
        ({"facility": 24}, "facility 24 is out of range"),
        ({"app_name": "two words"}, "app_name"),
        ({"max_message_bytes": 100}, "greater than or equal to 480"),
        ({"ca_file": "/nonexistent/ca.pem"}, "file not found"),
        ({"tls_verify": False}, "tls_verify: TLS settings, but the address is tcp://"),
        ({"address": "udp://siem:514", "framing": "lf"}, "framing only applies"),
        (
            {"address": "udp://siem:514", "max_message_bytes": 70000},
            "over udp is at most 65507",
        ),
    ],
)
def test_config_names_the_problem(settings: dict[str, Any], problem: str) -> None:
    """Each invalid setting is refused with a message naming the problem."""
    with pytest.raises(ValidationError, match=re.escape(problem)):
        config(**settings)


def test_key_file_needs_cert_file(tls_files: TlsFiles) -> None:
    """A client key without its certificate is refused."""
    with pytest.raises(ValidationError, match="key_file needs cert_file"):
        config(address="tls://siem:6514", key_file=str(tls_files.client_key))
    full = config(
        address="tls://siem:6514",
        ca_file=str(tls_files.ca),
        cert_file=str(tls_files.client_cert),
        key_file=str(tls_files.client_key),
        facility="auth",
    )
    assert (full.transport, full.facility) == ("tls", 4)


async def test_unreadable_tls_files_are_a_sink_error(tmp_path: Path) -> None:
    """A CA file that is not a certificate fails open with a SinkError."""
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    sink = make_sink("tls", 6514, ca_file=bad)
    with pytest.raises(SinkError, match="cannot load the TLS files"):
        await sink.open()
