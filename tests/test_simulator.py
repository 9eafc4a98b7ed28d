"""Tests of the audit log API simulator, spoken to over real loopback HTTP."""

from __future__ import annotations

import base64
import copy
import ipaddress
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema.exceptions import ValidationError
from openapi_schema_validator import OAS30Validator, oas30_format_checker, validate

from forwarder.simulator import (
    AuditLogSimulator,
    Fault,
    SimulatorSettings,
    load_event_types,
)
from forwarder.timestamps import format_timestamp, parse_timestamp

ROOT = Path(__file__).resolve().parents[1]
SPEC = Path(__file__).parent / "data" / "asana-audit-log-openapi.yaml"
WORKSPACE = SimulatorSettings().workspace_gid
TOKEN = "simulated-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ENDPOINT = "audit_log_events"
CREATED_AT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
EVENT_KEYS = (
    "gid",
    "created_at",
    "event_type",
    "event_category",
    "actor",
    "resource",
    "details",
    "context",
)

Serve = Callable[..., tuple[AuditLogSimulator, httpx.Client]]


# --------------------------------------------------------------------------
# Helpers


class Schemas:
    """Asana's published schemas for a page and an error, plus a strict variant.

    The published schemas allow any extra key and require none, so a typo in
    a field name would pass them; the strict variant closes the objects the
    simulator fully controls and requires every documented event field.
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        operation = spec["paths"]["/workspaces/{workspace_gid}/audit_log_events"]
        responses = operation["get"]["responses"]
        # YAML reads the unquoted status code as an integer.
        ok = responses.get(200) or responses["200"]
        page = ok["content"]["application/json"]["schema"]
        components = spec["components"]
        self.page = {**page, "components": components}
        self.error = {
            "$ref": "#/components/schemas/ErrorResponse",
            "components": components,
        }
        self.strict_page = {
            **page,
            "required": ["data", "next_page"],
            "additionalProperties": False,
            "components": _strict(components),
        }

    def check_page(self, body: Any) -> None:
        _validate(body, self.page)
        _validate(body, self.strict_page)

    def check_error(self, body: Any) -> None:
        _validate(body, self.error)
        assert body["errors"][0]["message"]
        assert body["errors"][0]["help"]


def _strict(components: dict[str, Any]) -> dict[str, Any]:
    strict = copy.deepcopy(components)
    schemas = strict["schemas"]
    for name in (
        "AuditLogEvent",
        "AuditLogEventActor",
        "AuditLogEventResource",
        "AuditLogEventContext",
        "NextPage",
    ):
        schemas[name]["additionalProperties"] = False
    schemas["AuditLogEvent"]["required"] = list(EVENT_KEYS)
    schemas["AuditLogEventActor"]["required"] = ["actor_type"]
    schemas["AuditLogEventResource"]["required"] = ["resource_type", "gid"]
    schemas["AuditLogEventContext"]["required"] = ["context_type"]
    schemas["NextPage"]["required"] = ["offset", "path", "uri"]
    return strict


def _validate(instance: Any, schema: dict[str, Any]) -> None:
    validate(instance, schema, cls=OAS30Validator, format_checker=oas30_format_checker)


def open_client(simulator: AuditLogSimulator, **headers: str) -> httpx.Client:
    """A client whose relative URLs are under the simulated workspace."""
    base = f"{simulator.base_url}/workspaces/{simulator.settings.workspace_gid}/"
    # Plain HTTP on loopback: verify=False spares loading the CA bundle (40 ms).
    return httpx.Client(
        base_url=base, headers=headers or AUTH, timeout=10.0, verify=False
    )


def get(client: httpx.Client, **params: Any) -> httpx.Response:
    return client.get(ENDPOINT, params=params)


def pages(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    """Every page from a fresh request up to the first empty (caught-up) one."""
    bodies: list[dict[str, Any]] = []
    while len(bodies) < 5000:  # a guard, so that a bug fails instead of hanging
        response = get(client, **params)
        assert response.status_code == 200, response.text
        body = response.json()
        bodies.append(body)
        if not body["data"] or body["next_page"] is None:
            return bodies
        params["offset"] = body["next_page"]["offset"]
    raise AssertionError("the simulator never caught up")


def drain(client: httpx.Client, **params: Any) -> list[Any]:
    """All events a reader gets from a fresh request until it is caught up."""
    return [event for body in pages(client, **params) for event in body["data"]]


def gids(events: list[Any]) -> list[str]:
    return [event["gid"] for event in events]


def error_message(response: httpx.Response) -> str:
    return str(response.json()["errors"][0]["message"])


def without_time(events: list[Any]) -> list[Any]:
    return [{k: v for k, v in e.items() if k != "created_at"} for e in events]


@pytest.fixture(scope="module")
def schemas() -> Schemas:
    return Schemas(yaml.safe_load(SPEC.read_text(encoding="utf-8")))


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Starts simulators with a client each; stops them all after the test."""
    with ExitStack() as stack:

        def start(**options: Any) -> tuple[AuditLogSimulator, httpx.Client]:
            simulator = AuditLogSimulator(SimulatorSettings(**options))
            stack.enter_context(simulator)
            return simulator, stack.enter_context(open_client(simulator))

        yield start


# --------------------------------------------------------------------------
# The shape of pages and events


def test_pages_validate_against_asana_openapi_schema(
    serve: Serve, schemas: Schemas
) -> None:
    """Full pages, a short page, the caught-up page and a null next_page all
    validate against Asana's published schema (and the strict variant)."""
    _, client = serve(backlog=250)
    bodies = pages(client, limit=100)
    assert [len(body["data"]) for body in bodies] == [100, 100, 50, 0]
    for body in bodies:
        schemas.check_page(body)
    nothing = get(client, event_type="no_such_event").json()
    assert nothing == {"data": [], "next_page": None}
    schemas.check_page(nothing)


def test_strict_schema_rejects_a_malformed_event(schemas: Schemas) -> None:
    """The schema check is not vacuous: a wrong or misspelt field fails it."""
    good = {"data": [], "next_page": None}
    schemas.check_page(good)
    with pytest.raises(ValidationError):
        schemas.check_page({"data": [{"gid": 1}], "next_page": None})
    with pytest.raises(ValidationError):
        schemas.check_page({"data": [], "next_page": {"ofset": "x"}})


def test_generated_events_look_real(serve: Serve) -> None:
    """Events have 16-digit unique gids, millisecond UTC times, documented
    types with their category and resource type, and consistent actors and
    contexts, from a mix of IPv4 and IPv6 addresses."""
    _, client = serve(backlog=3000)
    events = drain(client)
    types = {t.name: t for t in load_event_types()}
    assert len(set(gids(events))) == len(events) == 3000
    for event in events:
        assert tuple(event) == EVENT_KEYS
        assert re.fullmatch(r"\d{16}", event["gid"])
        assert CREATED_AT.fullmatch(event["created_at"])
        event_type = types[event["event_type"]]
        assert event["event_category"] == event_type.section.replace(" ", "_")
        assert event["resource"]["resource_type"] == event_type.resource_type
        _check_actor_resource_details(event)
        _check_context(event["context"])
    contexts = {event["context"]["context_type"] for event in events}
    assert {"web", "desktop", "mobile", "api", "asana"} <= contexts
    addresses = [
        ipaddress.ip_address(event["context"]["client_ip_address"])
        for event in events
        if "client_ip_address" in event["context"]
    ]
    assert {address.version for address in addresses} == {4, 6}
    assert any(event["details"] for event in events)
    assert len({event["event_type"] for event in events}) > 50


def _check_actor_resource_details(event: dict[str, Any]) -> None:
    actor, resource, details = event["actor"], event["resource"], event["details"]
    if actor["actor_type"] == "user":
        assert set(actor) == {"actor_type", "gid", "name", "email"}
        assert "@" in actor["email"]
    else:
        assert set(actor) == {"actor_type"}
    if resource["resource_type"] == "user":
        assert "@" in resource["email"]
    if event["event_type"] == "user_login_succeeded":
        assert actor["gid"] == resource["gid"]  # one logs oneself in
    if details:
        assert details["old_value"] != details["new_value"]


def _check_context(context: dict[str, Any]) -> None:
    if context["context_type"] == "api":
        assert context["api_authentication_method"]
        oauth = context["api_authentication_method"] == "oauth"
        assert ("oauth_app_name" in context) == oauth
    else:
        assert "api_authentication_method" not in context
        assert "oauth_app_name" not in context


def test_same_seed_gives_same_events() -> None:
    """Events are a function of the seed (created_at aside), whether from the
    backlog or appended later; another seed gives other events."""
    first = AuditLogSimulator(SimulatorSettings(backlog=200, seed=7))
    again = AuditLogSimulator(SimulatorSettings(backlog=200, seed=7))
    other = AuditLogSimulator(SimulatorSettings(backlog=200, seed=8))
    assert without_time(first.events()) == without_time(again.events())
    assert without_time(first.append_events(5)) == without_time(again.append_events(5))
    assert without_time(first.events()) == without_time(again.events())
    assert without_time(first.events()[:200]) != without_time(other.events())


def test_responses_carry_request_id_and_json_type(serve: Serve) -> None:
    """Every answer, error or not, has a fresh X-Request-Id."""
    _, client = serve(backlog=3)
    answers = [get(client), get(client, limit=0), client.get("nowhere")]
    ids = {response.headers["x-request-id"] for response in answers}
    assert len(ids) == 3
    assert all(re.fullmatch(r"[0-9a-f]{32}", value) for value in ids)
    assert all(
        r.headers["content-type"].startswith("application/json") for r in answers
    )


# --------------------------------------------------------------------------
# Paging and streaming


def test_paging_returns_every_event_once_in_created_order(serve: Serve) -> None:
    """From no offset to caught up, every event comes exactly once, oldest
    first; next_page's path and uri lead to the next page."""
    simulator, client = serve(backlog=537)
    bodies = pages(client, limit=50)
    events = [event for body in bodies for event in body["data"]]
    assert gids(events) == gids(simulator.events())
    created = [event["created_at"] for event in events]
    assert created == sorted(created)
    next_page = bodies[0]["next_page"]
    offset = next_page["offset"]
    path = f"/workspaces/{WORKSPACE}/audit_log_events?limit=50&offset={offset}"
    assert next_page["path"] == path
    assert next_page["uri"] == simulator.base_url + path
    followed = client.get(next_page["uri"]).json()
    assert followed["data"] == bodies[1]["data"]


def test_caught_up_page_keeps_next_page_and_later_brings_new_events(
    serve: Serve,
) -> None:
    """An empty page still has next_page, at the same position, and polling
    it later returns exactly the events appended since."""
    simulator, client = serve(backlog=5)
    caught_up = pages(client)[-1]
    assert caught_up["data"] == []
    offset = caught_up["next_page"]["offset"]
    again = get(client, offset=offset).json()
    assert again["data"] == []
    assert again["next_page"] is not None
    new = simulator.append_events(3)
    assert get(client, offset=again["next_page"]["offset"]).json()["data"] == new
    assert get(client, offset=offset).json()["data"] == new


def test_next_page_is_null_only_when_nothing_matches(serve: Serve) -> None:
    """next_page is null for an empty log and for filters that match nothing;
    once something matches, a fresh request gets it with a next_page."""
    simulator, client = serve()
    assert get(client).json() == {"data": [], "next_page": None}
    simulator.append_events(20)
    assert get(client, event_type="no_such_event").json()["next_page"] is None
    tomorrow = format_timestamp(datetime.now(UTC) + timedelta(days=1))
    assert get(client, start_at=tomorrow).json()["next_page"] is None
    body = get(client).json()
    assert len(body["data"]) == 20
    assert body["next_page"] is not None


def test_late_event_reaches_a_reader_continuing_from_an_offset(serve: Serve) -> None:
    """An event that arrives late (older created_at) is served to a caught-up
    reader, and events() shows it in created_at order."""
    simulator, client = serve(backlog=50)
    caught_up = pages(client)[-1]
    before = simulator.events()
    moment = parse_timestamp(before[10]["created_at"])
    [late] = simulator.append_events(1, created_at=moment)
    body = get(client, offset=caught_up["next_page"]["offset"]).json()
    assert body["data"] == [late]
    in_order = [*before[:11], late, *before[11:]]
    assert gids(simulator.events()) == gids(in_order)


def test_fresh_start_at_request_returns_every_event_since_start_at(
    serve: Serve,
) -> None:
    """A request with start_at and no offset returns every event created at or
    after start_at, late arrivals included, each once, in arrival order."""
    simulator, client = serve(backlog=200)
    everything = simulator.events()
    start = everything[100]["created_at"]
    simulator.append_events(2, created_at=parse_timestamp(everything[50]["created_at"]))
    late = simulator.append_events(
        2, created_at=parse_timestamp(everything[150]["created_at"])
    )
    received = drain(client, start_at=start, limit=30)
    expected = [e for e in simulator.events() if e["created_at"] >= start]
    assert len(received) == len(expected) == 102
    assert sorted(gids(received)) == sorted(gids(expected))
    assert received[-2:] == late


def test_offset_carries_its_time_window(serve: Serve) -> None:
    """A reader may continue from an offset with only end_at, or no bounds at
    all (the offset keeps them), but not with different bounds."""
    simulator, client = serve(backlog=300)
    everything = simulator.events()
    start, end = everything[100]["created_at"], everything[250]["created_at"]
    first = get(client, start_at=start, end_at=end).json()
    offset = first["next_page"]["offset"]
    second = get(client, offset=offset, end_at=end).json()
    unbounded = get(client, offset=offset).json()
    assert second["data"] == unbounded["data"]
    assert gids(first["data"] + second["data"]) == gids(everything[100:250])
    last = get(client, offset=second["next_page"]["offset"]).json()
    assert last["data"] == []
    simulator.append_events(1)  # now: after end_at, so never in this window
    assert get(client, offset=last["next_page"]["offset"]).json()["data"] == []
    for bounds in ({"start_at": end}, {"end_at": start}):
        response = get(client, offset=offset, **bounds)
        assert response.status_code == 400
        assert error_message(response).startswith("offset:")


@settings(max_examples=25, deadline=None, database=None)
@given(
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("append"), st.integers(1, 30), st.integers(0, 120)),
            st.tuples(st.just("poll"), st.integers(1, 100), st.just(0)),
        ),
        max_size=12,
    )
)
def test_continuing_from_offsets_never_skips_or_repeats(
    steps: list[tuple[str, int, int]],
) -> None:
    """Whatever mix of appends (some late) and polls with any limit, a reader
    that follows its offsets receives every event exactly once."""
    with (
        AuditLogSimulator(SimulatorSettings(backlog=40)) as simulator,
        open_client(simulator) as client,
    ):
        received: list[str] = []
        offset: str | None = None
        for action, number, minutes_late in steps:
            if action == "append":
                moment = datetime.now(UTC) - timedelta(minutes=minutes_late)
                simulator.append_events(number, created_at=moment)
                continue
            params = {"limit": number} | ({"offset": offset} if offset else {})
            body = get(client, **params).json()
            received += gids(body["data"])
            offset = body["next_page"]["offset"]
        params = {"offset": offset} if offset else {}
        received += gids(drain(client, **params))
        assert sorted(received) == sorted(gids(simulator.events()))
        assert len(set(received)) == len(received)


# --------------------------------------------------------------------------
# Filters and parameters


@pytest.mark.parametrize(
    ("name", "pick"),
    [
        ("event_type", lambda event: event["event_type"]),
        ("actor_gid", lambda event: event["actor"].get("gid")),
        ("resource_gid", lambda event: event["resource"]["gid"]),
        ("actor_type", lambda event: event["actor"]["actor_type"]),
    ],
)
def test_filters_return_exactly_the_matching_events(
    serve: Serve, name: str, pick: Callable[[dict[str, Any]], str | None]
) -> None:
    """Each server-side filter returns exactly the matching events, in order,
    and continuing pages keep filtering."""
    simulator, client = serve(backlog=2000)
    everything = simulator.events()
    value = next(v for e in everything[1000:] if (v := pick(e)) is not None)
    expected = [event for event in everything if pick(event) == value]
    assert 1 < len(expected) < len(everything)
    received = drain(client, limit=20, **{name: value})
    assert gids(received) == gids(expected)


def test_start_at_is_inclusive_and_end_at_exclusive(serve: Serve) -> None:
    """start_at includes its instant, end_at excludes its own, in any RFC 3339
    spelling, to the microsecond."""
    simulator, client = serve()
    base = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    moments = [base + timedelta(seconds=n) for n in range(4)]
    for moment in moments:
        simulator.append_events(2, created_at=moment)
    window = drain(
        client, start_at=format_timestamp(moments[1]), end_at=moments[3].isoformat()
    )
    stamps = [format_timestamp(m) for m in moments]
    assert [e["created_at"] for e in window] == [stamps[1]] * 2 + [stamps[2]] * 2
    later = moments[1] + timedelta(microseconds=1)
    window = drain(client, start_at=later.isoformat())
    assert [e["created_at"] for e in window] == [stamps[2]] * 2 + [stamps[3]] * 2


@pytest.mark.parametrize("limit", ["0", "101", "-1", "ten", "1.5"])
def test_limit_outside_1_to_100_is_rejected(
    serve: Serve, schemas: Schemas, limit: str
) -> None:
    """A limit that is not an integer from 1 to 100 is a 400 naming limit."""
    _, client = serve(backlog=3)
    response = get(client, limit=limit)
    assert response.status_code == 400
    schemas.check_error(response.json())
    assert error_message(response).startswith("limit:")


@pytest.mark.parametrize("limit", [1, 100])
def test_limit_bounds_are_accepted(serve: Serve, limit: int) -> None:
    """1 and 100 are valid limits, and the page holds at most that many."""
    _, client = serve(backlog=150)
    assert len(get(client, limit=limit).json()["data"]) == limit


def test_actor_type_is_checked(serve: Serve) -> None:
    """actor_type must be one of the documented values and cannot be combined
    with actor_gid."""
    _, client = serve(backlog=3)
    combined = get(client, actor_type="user", actor_gid="123")
    assert combined.status_code == 400
    assert error_message(combined).startswith("actor_type:")
    assert get(client, actor_type="robot").status_code == 400
    assert get(client, actor_type="external_administrator").status_code == 200


def test_unknown_parameters_are_ignored(serve: Serve) -> None:
    """An unknown query parameter changes nothing, as with Asana."""
    _, client = serve(backlog=7)
    assert gids(drain(client, opt_pretty="true")) == gids(drain(client))


def test_invalid_start_at_is_rejected(serve: Serve) -> None:
    """start_at must be a date-time."""
    _, client = serve(backlog=3)
    response = get(client, start_at="yesterday")
    assert response.status_code == 400
    assert error_message(response).startswith("start_at:")


def test_raw_items_are_served_as_they_are(serve: Serve) -> None:
    """append_raw puts any JSON value at the end of the log, served verbatim
    when no filter but time applies."""
    simulator, client = serve(backlog=3)
    event_type = simulator.events()[0]["event_type"]
    simulator.append_raw({"gid": "x", "unexpected": [1, 2]})
    simulator.append_raw("not an event")
    everything = drain(client)
    assert everything[-2:] == [{"gid": "x", "unexpected": [1, 2]}, "not an event"]
    assert simulator.events()[-2:] == everything[-2:]
    filtered = drain(client, event_type=event_type)
    assert all(isinstance(event, dict) and "event_type" in event for event in filtered)


# --------------------------------------------------------------------------
# Authentication, routes and offsets


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ],
)
def test_missing_or_wrong_token_is_401(
    serve: Serve, schemas: Schemas, headers: dict[str, str]
) -> None:
    """Only the configured Bearer token is accepted."""
    simulator, _ = serve(backlog=3)
    url = f"{simulator.base_url}/workspaces/{WORKSPACE}/{ENDPOINT}"
    response = httpx.get(url, headers=headers, verify=False)
    assert response.status_code == 401
    schemas.check_error(response.json())
    assert error_message(response) == "Not Authorized"


def test_token_none_accepts_any_request(serve: Serve) -> None:
    """With token=None the simulator accepts any token, or none."""
    simulator, _ = serve(backlog=3, token=None)
    url = f"{simulator.base_url}/workspaces/{WORKSPACE}/{ENDPOINT}"
    assert httpx.get(url, verify=False).status_code == 200
    assert (
        httpx.get(url, headers={"Authorization": "Bearer x"}, verify=False).status_code
        == 200
    )


def test_wrong_workspace_and_unknown_paths_are_404(
    serve: Serve, schemas: Schemas
) -> None:
    """Another workspace gid, another path or another method is a 404."""
    simulator, client = serve(backlog=3)
    other = client.get(f"{simulator.base_url}/workspaces/999/{ENDPOINT}")
    assert other.status_code == 404
    schemas.check_error(other.json())
    assert "999" in error_message(other)
    assert client.get("events").status_code == 404
    assert client.get(f"{simulator.base_url}/users/me").status_code == 404
    assert client.post(ENDPOINT).status_code == 404


def _garbage(simulator: AuditLogSimulator, good: str) -> str:
    return "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.bm90.aGluZw"


def _tampered(simulator: AuditLogSimulator, good: str) -> str:
    header, payload, signature = good.split(".")
    claims = orjson.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["pos"] = 0
    forged = base64.urlsafe_b64encode(orjson.dumps(claims)).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def _expired(simulator: AuditLogSimulator, good: str) -> str:
    simulator.expire_offsets()
    return good


def _from_another_simulator(simulator: AuditLogSimulator, good: str) -> str:
    with (
        AuditLogSimulator(SimulatorSettings(backlog=10)) as other,
        open_client(other) as client,
    ):
        return str(get(client).json()["next_page"]["offset"])


@pytest.mark.parametrize(
    "spoil", [_garbage, _tampered, _expired, _from_another_simulator]
)
def test_invalid_offsets_are_400(
    serve: Serve, schemas: Schemas, spoil: Callable[[AuditLogSimulator, str], str]
) -> None:
    """Offsets that are garbage, forged, expired or from another server are
    rejected with Asana's offset error."""
    simulator, client = serve(backlog=10)
    good = get(client, limit=5).json()["next_page"]["offset"]
    response = get(client, limit=5, offset=spoil(simulator, good))
    assert response.status_code == 400
    schemas.check_error(response.json())
    assert error_message(response).startswith(
        "offset: Your pagination token has expired or is invalid"
    )


def test_offset_is_only_valid_with_its_filters(serve: Serve) -> None:
    """An offset issued for some filters is rejected with other filters, and
    accepted with the same ones (the limit may change)."""
    simulator, client = serve(backlog=100)
    event_type = simulator.events()[0]["event_type"]
    plain = get(client, limit=5).json()["next_page"]["offset"]
    filtered = get(client, event_type=event_type).json()["next_page"]["offset"]
    assert get(client, offset=plain, event_type=event_type).status_code == 400
    assert get(client, offset=filtered).status_code == 400
    assert get(client, offset=filtered, event_type=event_type).status_code == 200
    assert get(client, offset=plain, limit=7).status_code == 200


def test_offsets_expire_after_their_ttl(serve: Serve) -> None:
    """With offset_ttl=0 every offset has expired by the time it comes back."""
    _, client = serve(backlog=10, offset_ttl=0.0)
    offset = get(client, limit=5).json()["next_page"]["offset"]
    assert get(client, offset=offset).status_code == 400


# --------------------------------------------------------------------------
# Rate limits, faults and latency


def test_rate_limit_answers_429_with_retry_after(
    serve: Serve, schemas: Schemas
) -> None:
    """Over requests_per_minute a token gets 429 with Retry-After in seconds,
    and stays limited; each token has its own window."""
    simulator, client = serve(backlog=3, token=None, requests_per_minute=3)
    assert [get(client).status_code for _ in range(3)] == [200, 200, 200]
    rejected = get(client)
    assert rejected.status_code == 429
    schemas.check_error(rejected.json())
    assert 59 <= int(rejected.headers["retry-after"]) <= 60
    assert get(client).status_code == 429
    other = client.get(ENDPOINT, headers={"Authorization": "Bearer other"})
    assert other.status_code == 200
    assert simulator.requests == 6


def test_injected_faults_answer_the_next_requests_in_order(
    serve: Serve, schemas: Schemas
) -> None:
    """Queued faults answer one request each, first in first out, with
    Asana's error bodies (a phrase on 500), then service resumes."""
    simulator, client = serve(backlog=3)
    simulator.inject(
        Fault(status=503, retry_after="2"), Fault(status=500), Fault(status=429)
    )
    unavailable, failed, limited, fine = (get(client) for _ in range(4))
    assert unavailable.status_code == 503
    assert unavailable.headers["retry-after"] == "2"
    assert failed.status_code == 500
    assert failed.json()["errors"][0]["phrase"]
    assert "retry-after" not in failed.headers
    assert limited.status_code == 429
    for response in (unavailable, failed, limited):
        schemas.check_error(response.json())
    assert fine.status_code == 200
    assert len(fine.json()["data"]) == 3
    assert simulator.requests == 4


def test_requests_over_the_concurrency_limit_get_429(serve: Serve) -> None:
    """With max_concurrent_requests, a request arriving while the token
    already has that many in flight is answered 429 with Retry-After; once
    they are answered, the next request is served."""
    simulator, _ = serve(backlog=3, latency=0.5, max_concurrent_requests=1)
    statuses: list[int] = []
    retry_after: list[str | None] = []

    def request() -> None:
        with open_client(simulator) as client:
            response = get(client)
        statuses.append(response.status_code)
        retry_after.append(response.headers.get("retry-after"))

    first = threading.Thread(target=request)
    first.start()
    # The simulator's latency holds the first in flight while the second comes.
    assert simulator.wait_for_requests_in_flight(1, timeout=10)
    request()
    first.join()
    assert sorted(statuses) == [200, 429]
    assert retry_after[statuses.index(429)] == "1"
    request()
    assert statuses[-1] == 200
    assert simulator.requests == 3


def test_concurrent_requests_under_the_limit_are_served(serve: Serve) -> None:
    """Requests in flight up to max_concurrent_requests are all served."""
    simulator, _ = serve(backlog=3, latency=0.2, max_concurrent_requests=4)
    statuses: list[int] = []

    def request() -> None:
        with open_client(simulator) as client:
            statuses.append(get(client).status_code)

    threads = [threading.Thread(target=request) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 4


def test_fault_retry_after_can_be_an_http_date(serve: Serve) -> None:
    """The Retry-After value is sent exactly as given, e.g. an HTTP-date."""
    simulator, client = serve()
    when = format_datetime(datetime(2030, 1, 1, 12, tzinfo=UTC), usegmt=True)
    simulator.inject(Fault(status=429, retry_after=when))
    assert get(client).headers["retry-after"] == "Tue, 01 Jan 2030 12:00:00 GMT"


def test_fault_can_drop_the_connection(serve: Serve) -> None:
    """A dropped connection reaches the client as a transport error, on a
    kept-alive connection too; the next request is served."""
    simulator, client = serve(backlog=2)
    assert get(client).status_code == 200
    simulator.inject(Fault(drop_connection=True))
    with pytest.raises(httpx.RemoteProtocolError):
        get(client)
    assert get(client).status_code == 200


def test_fault_can_be_a_malformed_200(serve: Serve) -> None:
    """A fault can answer 200 with any body and content type, like a proxy."""
    simulator, client = serve(backlog=2)
    simulator.inject(
        Fault(status=200, body=b"<html>proxy error</html>", content_type="text/html")
    )
    response = get(client)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html"
    assert response.content == b"<html>proxy error</html>"


def test_latency_and_fault_delay_are_applied(serve: Serve) -> None:
    """latency delays every request; a fault's delay comes on top."""
    simulator, client = serve(latency=0.2)
    started = time.monotonic()
    assert get(client).status_code == 200
    assert time.monotonic() - started >= 0.2
    simulator.inject(Fault(status=504, delay=0.2))
    started = time.monotonic()
    assert get(client).status_code == 504
    assert time.monotonic() - started >= 0.4


# --------------------------------------------------------------------------
# Admin routes, backlog, live generation and the server's life cycle


def test_admin_routes_drive_the_simulator(serve: Serve) -> None:
    """/_simulator/ appends and lists events, expires offsets and queues
    faults, for tests that run the simulator in another process; admin calls
    are not API requests."""
    simulator, client = serve()
    admin = simulator.base_url.removesuffix("/api/1.0") + "/_simulator"
    with httpx.Client(base_url=admin, timeout=10.0, verify=False) as http:
        created = http.post("/events", params={"count": 3}).json()
        assert created == simulator.events()
        assert http.get("/events").json() == {"events": created}
        offset = get(client).json()["next_page"]["offset"]
        assert http.post("/expire-offsets").status_code == 200
        assert get(client, offset=offset).status_code == 400
        faults = [
            Fault(status=502, retry_after="3").to_json(),
            {"status": 200, "body": "<html>", "content_type": "text/html"},
            {"drop_connection": True},
        ]
        assert http.post("/faults", json=faults).json() == {"queued": 3}
        assert get(client).headers["retry-after"] == "3"
        assert get(client).text == "<html>"
        with pytest.raises(httpx.RemoteProtocolError):
            get(client)
        status = http.get("/status").json()
        assert status["requests"] == simulator.requests == 5
        assert status["events"] == 3
        assert http.post("/events", params={"count": "x"}).status_code == 400
        assert http.post("/faults", json=[{"bogus": 1}]).status_code == 400
        assert http.post("/faults", content=b"not json").status_code == 400
        assert http.get("/nothing").status_code == 404
    assert simulator.requests == 5


def test_backlog_of_100k_builds_fast_and_pages_correctly(serve: Serve) -> None:
    """100,000 backlog events take well under 3 s to build, are spread evenly
    over backlog_span before now, and page correctly (sampled at the start
    and over the last thousand)."""
    before = datetime.now(UTC)
    started = time.monotonic()
    _, client = serve(backlog=100_000, backlog_span=100_000.0)
    assert time.monotonic() - started < 3.0
    first = get(client).json()
    oldest = parse_timestamp(first["data"][0]["created_at"])
    assert abs(oldest - (before - timedelta(seconds=100_000))) < timedelta(seconds=30)
    seconds = [parse_timestamp(e["created_at"]) - oldest for e in first["data"]]
    assert seconds == [timedelta(seconds=n) for n in range(100)]
    tail = drain(client, start_at=format_timestamp(oldest + timedelta(seconds=99_000)))
    assert len(tail) == len(set(gids(tail))) == 1000
    assert parse_timestamp(tail[-1]["created_at"]) - oldest == timedelta(seconds=99_999)
    assert get(client, offset=first["next_page"]["offset"]).json()["data"][0][
        "created_at"
    ] == format_timestamp(oldest + timedelta(seconds=100))


def test_backlog_burst_crowds_one_day_in_the_middle_of_the_span(
    serve: Serve,
) -> None:
    """backlog_burst puts that fraction of the backlog within one day in the
    middle of backlog_span and spreads the rest evenly; the log stays in
    created_at order, so paging returns every event once, oldest first."""
    span = 30 * 86400.0
    before = datetime.now(UTC)
    simulator, client = serve(backlog=2000, backlog_span=span, backlog_burst=0.4)
    events = drain(client)
    assert len(set(gids(events))) == len(events) == 2000
    times = [parse_timestamp(event["created_at"]) for event in events]
    assert times == sorted(times)
    start = before - timedelta(seconds=span)
    middle = start + timedelta(seconds=span / 2)
    burst_day = [t for t in times if abs(t - middle) <= timedelta(hours=12)]
    # 800 in the burst, plus the even spread's share of one day out of 30.
    assert 800 <= len(burst_day) <= 800 + 1200 // 30 + 1
    first_week = [t for t in times if t < start + timedelta(days=7, seconds=30)]
    assert abs(len(first_week) - 1200 * 7 // 30) <= 2
    assert simulator.events() == events


def test_backlog_burst_must_be_a_fraction() -> None:
    """A burst outside 0..1 is refused when the simulator is made."""
    with pytest.raises(ValueError, match="backlog_burst"):
        AuditLogSimulator(SimulatorSettings(backlog=10, backlog_burst=1.5))


def test_live_generation_stops_at_max_events(serve: Serve) -> None:
    """The live generator appends events as time passes, up to max_events in
    total, and a reader following its offsets receives them all."""
    simulator, client = serve(backlog=5, events_per_second=200.0, max_events=25)
    received: list[Any] = []
    params: dict[str, str] = {}
    deadline = time.monotonic() + 10.0
    while len(received) < 25 and time.monotonic() < deadline:
        # Polling the API is how a reader waits for the stream.
        body = get(client, **params).json()
        received += body["data"]
        if body["next_page"] is not None:
            params = {"offset": body["next_page"]["offset"]}
    simulator.stop()
    assert len(received) == 25
    assert gids(received) == gids(simulator.events())


def test_stop_is_prompt_with_a_slow_generator_and_kept_alive_connections() -> None:
    """stop() wakes a generator waiting for its next event, closes kept-alive
    connections and joins its threads promptly; the port is then closed."""
    simulator = AuditLogSimulator(SimulatorSettings(events_per_second=0.001))
    simulator.start()
    with open_client(simulator) as client:
        assert get(client).status_code == 200  # a kept-alive connection
        started = time.monotonic()
        simulator.stop()
        assert time.monotonic() - started < 2.0
        assert not [t for t in threading.enumerate() if t.name.startswith("simulator")]
        with pytest.raises(httpx.TransportError):
            get(client)


def test_serve_forever_runs_until_sigterm() -> None:
    """serve_forever names its URL on stderr, serves, and exits cleanly on
    SIGTERM, as the CLI's simulate command relies on."""
    code = (
        "from forwarder.simulator import SimulatorSettings, serve_forever; "
        "serve_forever(SimulatorSettings(backlog=5), '127.0.0.1', 0)"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stderr is not None
        found = re.search(r"http://\S+", process.stderr.readline())
        assert found is not None
        url = f"{found.group(0)}/workspaces/{WORKSPACE}/{ENDPOINT}"
        assert len(httpx.get(url, headers=AUTH, verify=False).json()["data"]) == 5
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()
