"""The raw and normalized formats."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from forwarder.formats import EventContext, normalized, raw
from tests.fake_api import make_event

CONTEXT = EventContext(workspace_gid="1111", received_at="2026-12-01T00:00:00.000Z")

NORMALIZED_FIELDS = {
    "schema_version",
    "time",
    "event_id",
    "action",
    "category",
    "workspace_id",
    "actor_type",
    "actor_id",
    "actor_name",
    "actor_email",
    "target_type",
    "target_subtype",
    "target_id",
    "target_name",
    "target_email",
    "context_type",
    "source_ip",
    "user_agent",
    "auth_method",
    "oauth_app",
    "rule_name",
    "on_behalf_of_user_id",
    "details",
    "received_at",
}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)


def test_normalized_maps_every_documented_field() -> None:
    """A complete event fills the flat schema's fields."""
    event = make_event(1, event_type="user_login_succeeded")
    event["context"] = {
        "context_type": "api",
        "api_authentication_method": "oauth",
        "client_ip_address": "2001:db8::1",
        "user_agent": "curl/8",
        "oauth_app_name": "Zapier",
        "rule_name": "Rule 1",
        "on_behalf_of_user_id": 12345,
    }
    document = orjson.loads(normalized.render(event, CONTEXT))

    assert set(document) == NORMALIZED_FIELDS
    assert document["time"] == event["created_at"]
    assert document["event_id"] == event["gid"]
    assert document["action"] == "user_login_succeeded"
    assert document["actor_email"] == "a@x.io"
    assert document["target_id"] == event["resource"]["gid"]
    assert document["source_ip"] == "2001:db8::1"
    assert document["auth_method"] == "oauth"
    assert document["oauth_app"] == "Zapier"
    assert document["on_behalf_of_user_id"] == "12345"
    assert document["workspace_id"] == "1111"


def test_normalized_forwards_incomplete_events_with_nulls() -> None:
    """Missing or wrong-typed fields become null; nothing raises."""
    document = orjson.loads(
        normalized.render({"gid": 5, "actor": "nobody", "details": [1]}, CONTEXT)
    )
    assert document["event_id"] is None
    assert document["actor_email"] is None
    assert document["details"] == {}
    assert set(document) == NORMALIZED_FIELDS


@given(st.dictionaries(st.text(), json_values, max_size=8))
def test_raw_is_equivalent_for_any_event(event: dict[str, Any]) -> None:
    """Any JSON object, unknown fields and odd strings included, comes out of
    raw exactly as it went in, on one line."""
    rendered = raw.render(event, CONTEXT)

    assert b"\n" not in rendered
    document = orjson.loads(rendered)
    assert document["event"] == event
    assert document["workspace_gid"] == CONTEXT.workspace_gid
    assert document["received_at"] == CONTEXT.received_at
    assert list(document) == [
        "workspace_gid",
        "forwarder_version",
        "received_at",
        "event",
    ]


@given(st.dictionaries(st.text(), json_values, max_size=8))
def test_normalized_never_fails(event: dict[str, Any]) -> None:
    """normalized renders any JSON object to the fixed field set."""
    assert set(orjson.loads(normalized.render(event, CONTEXT))) == NORMALIZED_FIELDS


def test_huge_integers_survive_raw() -> None:
    """An integer beyond 64 bits falls back to the standard encoder intact."""
    assert orjson.loads(raw.render({"n": 2**70}, CONTEXT))["event"]["n"] == 2**70
