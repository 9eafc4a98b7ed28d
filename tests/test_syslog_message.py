"""RFC 5424 and RFC 3164 messages, truncation, framing and severities, read
back by a small RFC 5424 parser written here from the RFC's grammar."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forwarder.formats.severity import INFORMATIONAL, NOTICE, WARNING, Severity, rate
from forwarder.formats.syslog_message import (
    BOM,
    MIN_MESSAGE_BYTES,
    SD_ID,
    SD_VALUE_MAX_BYTES,
    MessageFormat,
    frame,
    header_token,
    parse_facility,
    sd_value,
)
from tests.fake_api import make_event


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


NOW = datetime(2026, 12, 1, 10, 20, 30, tzinfo=UTC)
PRINTUSASCII = re.compile(r"^[!-~]+$")


def rfc5424(max_bytes: int = 65536, **overrides: Any) -> MessageFormat:
    settings = {
        "syntax": "rfc5424",
        "facility": 16,
        "hostname": "relay.example",
        "app_name": "asana-audit",
        "max_bytes": max_bytes,
    }
    return MessageFormat(**{**settings, **overrides})


# -- a parser for RFC 5424, from its ABNF ----------------------------------------


@dataclass
class Parsed:
    pri: int
    timestamp: str
    hostname: str
    app_name: str
    procid: str
    msgid: str
    sd: list[tuple[str, list[tuple[str, str]]]]
    msg: bytes


HEADER = re.compile(rb"^<(\d{1,3})>1 (\S+) (\S+) (\S+) (\S+) (\S+) ")


def parse_rfc5424(data: bytes) -> Parsed:
    match = HEADER.match(data)
    assert match is not None, data[:120]
    pri, timestamp, hostname, app_name, procid, msgid = (
        part.decode("ascii") for part in match.groups()
    )
    rest = data[match.end() :].decode("utf-8")
    sd, rest = parse_structured_data(rest)
    assert rest == "" or rest.startswith(" "), rest[:40]
    return Parsed(
        int(pri), timestamp, hostname, app_name, procid, msgid, sd, rest[1:].encode()
    )


def parse_structured_data(
    text: str,
) -> tuple[list[tuple[str, list[tuple[str, str]]]], str]:
    if text.startswith("-"):
        return [], text[1:]
    elements = []
    position = 0
    while position < len(text) and text[position] == "[":
        sd_id, position = _name(text, position + 1)
        params = []
        while text[position] == " ":
            name, position = _name(text, position + 1)
            assert text[position : position + 2] == '="', text[position:]
            value, position = _quoted(text, position + 2)
            params.append((name, value))
        assert text[position] == "]", text[position:]
        elements.append((sd_id, params))
        position += 1
    assert elements, "no structured data"
    return elements, text[position:]


def _name(text: str, start: int) -> tuple[str, int]:
    end = start
    while text[end] not in ' =]"':
        end += 1
    name = text[start:end]
    assert 1 <= len(name) <= 32, name
    assert PRINTUSASCII.match(name), name
    return name, end


def _quoted(text: str, start: int) -> tuple[str, int]:
    value = []
    position = start
    while text[position] != '"':
        if text[position] == "\\" and text[position + 1] in '"\\]':
            value.append(text[position + 1])
            position += 2
            continue
        # RFC 5424: a ']' must be escaped inside a value.
        assert text[position] != "]", text[start:position]
        value.append(text[position])
        position += 1
    return "".join(value), position + 1


def sd_map(parsed: Parsed) -> dict[str, str]:
    assert [sd_id for sd_id, _ in parsed.sd] == [SD_ID]
    return dict(parsed.sd[0][1])


def expected_sd_value(text: str) -> str:
    """What an SD value should read back as: control characters replaced,
    capped on a character boundary."""
    clean = "".join("\ufffd" if unicodedata.category(c) == "Cc" else c for c in text)
    while len(clean.encode()) > SD_VALUE_MAX_BYTES:
        clean = clean[:-1]
    return clean


# -- RFC 5424 ------------------------------------------------------------------


def test_rfc5424_header_and_structured_data() -> None:
    """Every header field comes from the event and the sink's settings, and
    the SD element carries the indexable fields."""
    event = make_event(7, event_type="user_login_failed")
    payload = b'{"hello":"w\xc3\xb6rld"}'
    message = rfc5424().build(event, payload)
    parsed = parse_rfc5424(message.data)

    assert parsed.pri == 16 * 8 + Severity.WARNING
    assert parsed.timestamp == event["created_at"]
    assert (parsed.hostname, parsed.app_name) == ("relay.example", "asana-audit")
    assert (parsed.procid, parsed.msgid) == ("-", "user_login_failed")
    assert sd_map(parsed) == {
        "gid": event["gid"],
        "event_type": "user_login_failed",
        "event_category": "deletion",
        "actor_type": "user",
        "actor_gid": "42",
        "actor_email": "a@x.io",
        "resource_type": "task",
        "resource_gid": event["resource"]["gid"],
        "client_ip": "192.0.2.1",
    }
    assert parsed.msg == BOM + payload
    assert not message.truncated


def test_missing_or_bad_created_at_falls_back_to_now() -> None:
    """An event without a usable time is stamped with the current time."""
    for created_at in (None, "yesterday", 12):
        event = {"gid": "1", "created_at": created_at}
        parsed = parse_rfc5424(rfc5424().build(event, b"{}", now=NOW).data)
        assert parsed.timestamp == "2026-12-01T10:20:30.000Z"


def test_header_fields_are_sanitized_and_capped() -> None:
    """Spaces and non-ASCII in header fields are replaced, and each field
    keeps to its RFC length: HOSTNAME 255, APP-NAME 48, MSGID 32."""
    form = rfc5424(hostname="h ö" * 200, app_name="a p" * 40)
    event = {"event_type": "ünusual type " * 10}
    parsed = parse_rfc5424(form.build(event, b"x").data)

    assert len(parsed.hostname) == 255
    assert parsed.hostname.startswith("h__h__")
    assert len(parsed.app_name) == 48
    assert len(parsed.msgid) == 32
    assert parsed.msgid.startswith("_nusual_type_")


def test_sd_escaping_of_quote_backslash_and_bracket() -> None:
    """'"', '\\' and ']' in values are escaped and read back as they were."""
    tricky = 'a"b\\c]d\\"e'
    event = {"gid": tricky, "actor": {"email": "]]"}, "event_type": "x"}
    data = rfc5424().build(event, b"").data
    assert b'gid="a\\"b\\\\c\\]d\\\\\\"e"' in data
    assert sd_map(parse_rfc5424(data))["gid"] == tricky
    assert sd_map(parse_rfc5424(data))["actor_email"] == "]]"


def test_oversized_message_is_truncated_marked_and_valid() -> None:
    """A message over the limit is cut to the limit on a character boundary,
    and its SD element says it was truncated and how big the payload was."""
    payload = ("é" * 3000).encode()
    message = rfc5424(max_bytes=2048).build(make_event(1), payload)
    parsed = parse_rfc5424(message.data)

    assert message.truncated
    assert len(message.data) <= 2048
    assert len(message.data) >= 2046
    params = sd_map(parsed)
    assert params["truncated"] == "true"
    assert params["original_size"] == str(len(payload))
    assert params["gid"] == make_event(1)["gid"]
    assert parsed.msg.startswith(BOM)
    assert payload.startswith(parsed.msg[3:])
    parsed.msg.decode("utf-8")


def test_truncation_never_leaves_a_lone_backslash() -> None:
    """A cut that would end between '\\' and the character it escapes drops
    the backslash too, so CEF's '\\=' is never split."""
    form = rfc5424(max_bytes=MIN_MESSAGE_BYTES)
    prefix = len(form.build({}, b"").data)
    for shift in range(4):
        payload = b"a" * (MIN_MESSAGE_BYTES - prefix - 60 + shift) + b"\\=" * 200
        message = form.build({}, payload)
        kept = parse_rfc5424(message.data).msg[3:]
        assert message.truncated
        trailing = len(kept) - len(kept.rstrip(b"\\"))
        assert trailing % 2 == 0


def test_long_sd_values_give_way_to_the_truncation_marker() -> None:
    """When capped SD values alone would exceed the limit, the SD element
    keeps only the truncation marker."""
    event: dict[str, Any] = dict.fromkeys(
        ("gid", "event_type", "event_category"), "v" * 1000
    )
    event["actor"] = {"email": "e" * 1000, "gid": "g" * 1000}
    message = rfc5424(max_bytes=MIN_MESSAGE_BYTES).build(event, b"p" * 1000)
    parsed = parse_rfc5424(message.data)
    assert len(message.data) <= MIN_MESSAGE_BYTES
    assert sd_map(parsed) == {"truncated": "true", "original_size": "1000"}


def test_a_lone_surrogate_in_an_sd_value_becomes_a_question_mark() -> None:
    """Text UTF-8 cannot encode is replaced, not a build failure."""
    data = rfc5424().build({"gid": "a\ud800b"}, b"").data
    assert sd_map(parse_rfc5424(data))["gid"] == "a?b"


def test_exactly_the_control_characters_are_replaced() -> None:
    """Every character of Unicode's category Cc, and no other, becomes U+FFFD
    in an SD value; outside SD values, header fields keep printable ASCII
    only. (Cc lies within the first 160 code points; the rest of the range
    checked shows nothing else is caught.)"""
    for point in range(0x3000):
        character = chr(point)
        if unicodedata.category(character) == "Cs":
            continue
        control = unicodedata.category(character) == "Cc"
        assert (sd_value(f"a{character}b") == "a\ufffdb") is control, hex(point)
        printable = "!" <= character <= "~"
        assert (header_token(character, 8) == character) is printable, hex(point)


def test_a_limit_below_the_rfc_minimum_is_refused() -> None:
    """Below 480 bytes the header and marker may not fit; the limit is refused."""
    with pytest.raises(ValueError, match="at least 480"):
        rfc5424(max_bytes=479)


# -- RFC 3164 ------------------------------------------------------------------

RFC3164 = re.compile(
    rb"^<(\d{1,3})>([A-Z][a-z]{2}) ([ \d]\d) (\d\d:\d\d:\d\d) (\S+) ([^:\[ ]{1,32}): "
)


def test_rfc3164_message() -> None:
    """<PRI>Mmm dd hh:mm:ss HOST TAG: MSG, with the event's time in UTC and a
    space-padded day."""
    event = make_event(0, event_type="user_login_succeeded")
    event["created_at"] = "2026-01-02T03:04:05.678+01:00"
    form = MessageFormat("rfc3164", 4, "relay", "asana-audit", 1024)
    message = form.build(event, b"CEF:0|x")
    match = RFC3164.match(message.data)

    assert match is not None, message.data
    assert int(match[1]) == 4 * 8 + Severity.INFORMATIONAL
    assert match.group(2, 3, 4) == (b"Jan", b" 2", b"02:04:05")
    assert match.group(5, 6) == (b"relay", b"asana-audit")
    assert message.data[match.end() :] == b"CEF:0|x"


def test_rfc3164_tag_is_capped_and_cleaned() -> None:
    """The TAG keeps to 32 characters without ':', '[' or spaces."""
    form = MessageFormat("rfc3164", 16, "relay", "my app:[x]" * 10, 1024)
    match = RFC3164.match(form.build({}, b"m").data)
    assert match is not None
    assert len(match[6]) == 32


def test_rfc3164_truncation_appends_a_marker() -> None:
    """An oversized RFC 3164 message ends with a marker naming the size."""
    form = MessageFormat("rfc3164", 16, "relay", "asana-audit", 1024)
    payload = "ü".encode() * 1000
    message = form.build({}, payload)
    assert message.truncated
    assert len(message.data) <= 1024
    assert message.data.endswith(b" [truncated, original_size=2000]")
    message.data.decode("utf-8")


# -- framing, facilities, severities ---------------------------------------------


def split_octet_counted(stream: bytes) -> list[bytes]:
    messages = []
    while stream:
        length, _, rest = stream.partition(b" ")
        assert length.isdigit(), stream[:20]
        messages.append(rest[: int(length)])
        stream = rest[int(length) :]
    return messages


def test_framing() -> None:
    """Octet counting prefixes the length; LF framing ends the line and keeps
    a stray newline from splitting the message."""
    assert frame(b"<1>1 a\nb", "octet-counting") == b"8 <1>1 a\nb"
    assert frame(b"<1>1 a\nb", "lf") == b"<1>1 a b\n"


@pytest.mark.parametrize(
    ("value", "number"),
    [("local0", 16), ("LOCAL7", 23), ("auth", 4), ("authpriv", 10), (3, 3), ("5", 5)],
)
def test_facility_names_and_numbers(value: object, number: int) -> None:
    """Facilities are taken by name (any case) or number."""
    assert parse_facility(value) == number


@pytest.mark.parametrize("value", ["local8", 24, -1, True, "", None])
def test_bad_facilities_are_named(value: object) -> None:
    """A facility that is not one is refused with the accepted values."""
    with pytest.raises(ValueError, match="facility"):
        parse_facility(value)


@pytest.mark.parametrize(
    ("event_type", "rating"),
    [
        ("user_login_failed", WARNING),
        ("user_two_factor_auth_disabled", WARNING),
        ("workspace_saml_settings_changed", WARNING),
        ("user_workspace_admin_role_changed", WARNING),
        ("task_deleted", NOTICE),
        ("message_permanently_deleted", NOTICE),
        ("workspace_export_started", NOTICE),
        ("workspace_guest_invite_permissions_changed", NOTICE),
        ("workspace_force_password_reset", NOTICE),
        ("user_app_authorized", NOTICE),
        ("task_undeleted", INFORMATIONAL),
        ("user_login_succeeded", INFORMATIONAL),
        ("team_created", INFORMATIONAL),
        ("something_asana_adds_next_year", INFORMATIONAL),
    ],
)
def test_severity_table(event_type: str, rating: object) -> None:
    """Failed logins and weakened authentication warn; deletions, exports and
    admin setting changes are notices; the rest, unknown types included, is
    informational."""
    assert rate(event_type) == rating


# -- properties ------------------------------------------------------------------

# SD's special characters, spaces and control characters, often, among any
# unicode.
texts = st.text(max_size=300) | st.text(
    alphabet=st.sampled_from('"\\] =\n\r\x00\x7f\x85é') | st.characters(codec="utf-8"),
    max_size=300,
)
events = st.fixed_dictionaries(
    {},
    optional={
        "gid": texts,
        "event_type": texts,
        "event_category": texts,
        "created_at": texts,
        "actor": st.fixed_dictionaries(
            {}, optional={"email": texts, "gid": texts, "actor_type": texts}
        ),
        "resource": st.fixed_dictionaries(
            {}, optional={"gid": texts, "resource_type": texts}
        ),
        "context": st.fixed_dictionaries({}, optional={"client_ip_address": texts}),
    },
)


@settings(max_examples=150, deadline=None)
@given(
    event=events,
    payload=st.text(max_size=3000).map(str.encode),
    hostname=st.text(min_size=1, max_size=300),
    app_name=st.text(min_size=1, max_size=60),
    max_bytes=st.integers(MIN_MESSAGE_BYTES, 4096),
)
def test_rfc5424_round_trip(
    event: dict[str, Any], payload: bytes, hostname: str, app_name: str, max_bytes: int
) -> None:
    """Whatever the event holds (any unicode, control characters, '"', '\\',
    ']', spaces), the message parses with intact header fields within their
    limits, SD values read back as sent, the size limit holds, and the MSG
    is the payload or, when marked truncated, a valid prefix of it."""
    form = rfc5424(max_bytes=max_bytes, hostname=hostname, app_name=app_name)
    message = form.build(event, payload, now=NOW)
    parsed = parse_rfc5424(message.data)

    assert len(message.data) <= max_bytes
    for field, limit in (("hostname", 255), ("app_name", 48), ("msgid", 32)):
        value = getattr(parsed, field)
        assert PRINTUSASCII.match(value)
        assert len(value) <= limit
    params = sd_map(parsed)
    assert parsed.msg.startswith(BOM)
    body = parsed.msg[len(BOM) :]
    if message.truncated:
        assert params["truncated"] == "true"
        assert params["original_size"] == str(len(payload))
        assert payload.startswith(body)
        assert len(body) < len(payload)
    else:
        assert body == payload
        assert "truncated" not in params
    if "gid" in params:
        assert params["gid"] == expected_sd_value(event["gid"])
    if "actor_email" in params:
        assert params["actor_email"] == expected_sd_value(event["actor"]["email"])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(events, st.text(max_size=500).map(str.encode)), max_size=8))
def test_frames_hold_exactly_one_message_each(
    items: list[tuple[dict[str, Any], bytes]],
) -> None:
    """A stream of octet-counted frames splits back into exactly the messages
    sent; LF framing gives one line per message."""
    form = rfc5424()
    messages = [form.build(event, payload).data for event, payload in items]

    stream = b"".join(frame(m, "octet-counting") for m in messages)
    assert split_octet_counted(stream) == messages

    lines = b"".join(frame(m, "lf") for m in messages).split(b"\n")
    assert lines[-1] == b""
    assert len(lines) - 1 == len(messages)
    for line in lines[:-1]:
        parse_rfc5424(line)
