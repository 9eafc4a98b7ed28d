"""The CEF and LEEF formats, read back by small parsers written here from
the formats' rules: CEF's header and extension escapes, LEEF's declared
delimiter."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forwarder import __version__
from forwarder.formats import EventContext, cef, leef
from tests.fake_api import make_event

CONTEXT = EventContext(workspace_gid="1111", received_at="2026-12-01T00:00:00.000Z")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- parsers -------------------------------------------------------------------


def parse_cef(text: str) -> tuple[list[str], dict[str, str]]:
    """(the seven header fields, the extension) with escapes undone."""
    assert "\n" not in text
    assert "\r" not in text
    header: list[str] = []
    current: list[str] = []
    position = 0
    while len(header) < 7:
        char = text[position]
        if char == "\\":
            assert text[position + 1] in "\\|", text[position : position + 2]
            current.append(text[position + 1])
            position += 2
        elif char == "|":
            header.append("".join(current))
            current = []
            position += 1
        else:
            current.append(char)
            position += 1
    return header, parse_extension(text[position:])


def parse_extension(text: str) -> dict[str, str]:
    """key=value pairs separated by spaces. Values escape '=' and '\\', so an
    unescaped '=' always ends a key: the word before it."""
    pairs: dict[str, str] = {}
    key: str | None = None
    buffer: list[str] = []
    position = 0
    unescape = {"\\": "\\", "=": "=", "n": "\n", "r": "\r"}
    while position < len(text):
        char = text[position]
        if char == "\\":
            following = text[position + 1]
            assert following in unescape, text[position : position + 2]
            buffer.append(unescape[following])
            position += 2
            continue
        if char == "=":
            so_far = "".join(buffer)
            if key is None:
                next_key = so_far
            else:
                value, _, next_key = so_far.rpartition(" ")
                assert key not in pairs
                pairs[key] = value
            assert next_key.isascii()
            assert next_key.isalnum(), next_key
            key, buffer = next_key, []
        else:
            buffer.append(char)
        position += 1
    if key is not None:
        pairs[key] = "".join(buffer)
    return pairs


def parse_leef(text: str) -> tuple[list[str], dict[str, str]]:
    """(the six header fields, the attributes) split on the declared delimiter."""
    assert "\n" not in text
    assert "\r" not in text
    parts = text.split("|", 6)
    assert len(parts) == 7, text
    header, body = parts[:6], parts[6]
    delimiter = header[5]
    assert len(delimiter) == 1
    attributes: dict[str, str] = {}
    for attribute in body.split(delimiter) if body else []:
        key, equals, value = attribute.partition("=")
        assert equals, attribute
        assert key.isascii()
        assert key.isalnum(), key
        assert key not in attributes
        attributes[key] = value
    return header, attributes


# -- examples ------------------------------------------------------------------


def login_event() -> dict[str, Any]:
    event = make_event(3, event_type="user_login_failed")
    event.update(
        event_category="logins",
        actor={"actor_type": "user", "gid": "42", "name": "Ada", "email": "a@x.io"},
        resource={"resource_type": "user", "gid": "42", "email": "a@x.io"},
        context={
            "context_type": "web",
            "client_ip_address": "2001:db8::1",
            "user_agent": "Mozilla/5.0 (a=b|c)",
            "api_authentication_method": "password",
        },
        details={"reason": "wrong\npassword"},
    )
    return event


def test_cef_header_and_extension() -> None:
    """The header names vendor, product, version, type, name and severity;
    the extension maps the event's fields to the documented keys."""
    event = login_event()
    header, extension = parse_cef(cef.render(event, CONTEXT).decode())

    assert header == [
        "CEF:0",
        "Asana",
        "Audit Log",
        __version__,
        "user_login_failed",
        "user login failed",
        "7",
    ]
    assert extension == {
        "rt": "1793491203000",
        "externalId": event["gid"],
        "cat": "logins",
        "act": "user_login_failed",
        "suser": "a@x.io",
        "suid": "42",
        "duser": "a@x.io",
        "duid": "42",
        "src": "2001:db8::1",
        "requestClientApplication": "Mozilla/5.0 (a=b|c)",
        "deviceExternalId": "1111",
        "cs1Label": "authMethod",
        "cs1": "password",
        "cs2Label": "actorType",
        "cs2": "user",
        "cs3Label": "resourceType",
        "cs3": "user",
        "cs5Label": "resourceGid",
        "cs5": "42",
        "cs6Label": "details",
        "cs6": '{"reason":"wrong\\npassword"}',
        "flexString1Label": "contextType",
        "flexString1": "web",
    }


def test_cef_escapes() -> None:
    """'|' and '\\' are escaped in the header; '=', '\\' and newlines in the
    extension."""
    event = {"event_type": "a|b\\c", "actor": {"email": "x=y\\z\r\nw"}}
    text = cef.render(event, CONTEXT).decode()
    assert "|a\\|b\\\\c|" in text
    assert "suser=x\\=y\\\\z\\r\\nw" in text
    header, extension = parse_cef(text)
    assert header[4] == "a|b\\c"
    assert extension["suser"] == "x=y\\z\r\nw"


def test_cef_drops_a_source_that_is_not_an_address() -> None:
    """src must be an IP address; anything else is left out."""
    event = {"context": {"client_ip_address": "not an ip"}}
    assert "src" not in parse_cef(cef.render(event, CONTEXT).decode())[1]


def test_leef_header_and_attributes() -> None:
    """LEEF 2.0 declares '^' as its delimiter and carries the documented keys."""
    event = login_event()
    event["event_type"] = "user_login_succeeded"
    header, attributes = parse_leef(leef.render(event, CONTEXT).decode())

    assert header == [
        "LEEF:2.0",
        "Asana",
        "Audit Log",
        __version__,
        "user_login_succeeded",
        "^",
    ]
    assert attributes == {
        "devTime": "2026-11-01T00:00:03.000Z",
        "devTimeFormat": "yyyy-MM-dd'T'HH:mm:ss.SSSX",
        "sev": "3",
        "src": "2001:db8::1",
        "cat": "logins",
        "usrName": "a@x.io",
        "externalId": event["gid"],
        "actorGid": "42",
        "actorName": "Ada",
        "actorType": "user",
        "resourceType": "user",
        "resourceGid": "42",
        "resourceEmail": "a@x.io",
        "authMethod": "password",
        "userAgent": "Mozilla/5.0 (a=b|c)",
        "contextType": "web",
        "workspaceGid": "1111",
        "isLoginEvent": "true",
        "details": '{"reason":"wrong\\npassword"}',
    }


def test_leef_replaces_what_it_cannot_escape() -> None:
    """LEEF has no escapes: the delimiter in a value and '|' in the header
    are replaced by look-alikes, newlines by spaces."""
    event = {"event_type": "a|b", "actor": {"email": "x^y\nz"}}
    header, attributes = parse_leef(leef.render(event, CONTEXT).decode())
    assert header[4] == "a\u00a6b"
    assert attributes["usrName"] == "x\u02c6y z"


# -- properties ------------------------------------------------------------------


def test_a_lone_surrogate_becomes_a_question_mark() -> None:
    """Text UTF-8 cannot encode (a lone surrogate, which JSON's "\\ud800"
    can produce) is replaced, not a render failure."""
    event = {"event_type": "x", "actor": {"email": "a\ud800b"}}
    assert parse_cef(cef.render(event, CONTEXT).decode())[1]["suser"] == "a?b"
    assert parse_leef(leef.render(event, CONTEXT).decode())[1]["usrName"] == "a?b"


texts = st.text(max_size=80)
# Delimiters, escapes and control characters, often, among any unicode
# (without lone surrogates: the test above covers them).
nasty = st.text(
    alphabet=st.sampled_from('|\\=^ \n\r\t"]x\x00\x1b\u2028é')
    | st.characters(codec="utf-8"),
    max_size=40,
)
values = nasty | texts
events = st.fixed_dictionaries(
    {},
    optional={
        "gid": values,
        "created_at": values | st.just("2026-01-02T03:04:05.678Z"),
        "event_type": values,
        "event_category": values,
        "actor": st.fixed_dictionaries(
            {},
            optional={
                "actor_type": values,
                "gid": values,
                "name": values,
                "email": values,
            },
        ),
        "resource": st.fixed_dictionaries(
            {},
            optional={
                "resource_type": values | st.just("user"),
                "gid": values,
                "name": values,
                "email": values,
            },
        ),
        "context": st.fixed_dictionaries(
            {},
            optional={
                "client_ip_address": values | st.ip_addresses().map(str),
                "user_agent": values,
                "context_type": values,
                "api_authentication_method": values,
                "oauth_app_name": values,
            },
        ),
        "details": st.dictionaries(values, values, max_size=3),
    },
)


def _get(event: dict[str, Any], *path: str) -> str | None:
    value: Any = event
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value if isinstance(value, str) and value else None


def expected_cef(event: dict[str, Any]) -> dict[str, str]:
    actor_user = _get(event, "actor", "email") or _get(event, "actor", "name")
    expected = {
        "externalId": _get(event, "gid"),
        "cat": _get(event, "event_category"),
        "act": _get(event, "event_type"),
        "suser": actor_user,
        "suid": _get(event, "actor", "gid"),
        "requestClientApplication": _get(event, "context", "user_agent"),
        "deviceExternalId": CONTEXT.workspace_gid,
        "cs4": _get(event, "resource", "name"),
        "flexString2": _get(event, "context", "oauth_app_name"),
    }
    return {key: value for key, value in expected.items() if value}


@settings(max_examples=200, deadline=None)
@given(events)
def test_cef_round_trip(event: dict[str, Any]) -> None:
    """Any unicode, control or delimiter character in any field: the header
    keeps exactly seven fields, no raw newline appears, and every value
    reads back exactly."""
    text = cef.render(event, CONTEXT).decode("utf-8")
    header, extension = parse_cef(text)

    event_type = _get(event, "event_type") or "unknown"
    flat_type = event_type.replace("\r", " ").replace("\n", " ")
    assert header[:4] == ["CEF:0", "Asana", "Audit Log", __version__]
    assert header[4] == flat_type
    assert header[5] == flat_type.replace("_", " ")
    assert 0 <= int(header[6]) <= 10
    for key, value in expected_cef(event).items():
        assert extension[key] == value
    details = event.get("details")
    if details:
        assert json.loads(extension["cs6"]) == details
    for number in range(1, 7):
        assert (f"cs{number}" in extension) == (f"cs{number}Label" in extension)


def leef_value(text: str) -> str:
    return text.replace("^", "\u02c6").replace("\r", " ").replace("\n", " ")


@settings(max_examples=200, deadline=None)
@given(events)
def test_leef_round_trip(event: dict[str, Any]) -> None:
    """Any unicode, control or delimiter character in any field: the header
    keeps six fields and declares '^', no value holds the delimiter or a
    newline, and every value reads back with only the documented
    replacements."""
    text = leef.render(event, CONTEXT).decode("utf-8")
    header, attributes = parse_leef(text)

    event_type = _get(event, "event_type") or "unknown"
    assert header[4] == event_type.replace("|", "\u00a6").replace("\r", " ").replace(
        "\n", " "
    )
    assert header[5] == "^"
    assert 1 <= int(attributes["sev"]) <= 10
    expected = {
        "externalId": _get(event, "gid"),
        "cat": _get(event, "event_category"),
        "usrName": _get(event, "actor", "email") or _get(event, "actor", "name"),
        "actorName": _get(event, "actor", "name"),
        "resource": _get(event, "resource", "name"),
        "userAgent": _get(event, "context", "user_agent"),
    }
    for key, value in expected.items():
        if value:
            assert attributes[key] == leef_value(value)
        else:
            assert key not in attributes
    details = event.get("details")
    if details and "^" not in json.dumps(details, ensure_ascii=False):
        assert json.loads(attributes["details"]) == details
