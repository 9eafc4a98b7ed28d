"""Malformed API replies through the real PageReader and SinkRunner.

The project's rule: a reply that is not a valid page is retried and counted;
an entry of a page that is not an event is set aside in the dead-letter file
and counted; events around bad ones are delivered; nothing crashes the loop.
Each test builds a runner like the pipeline tests do, over a scripted
``httpx.MockTransport`` API, with the reader's retry sleeps recorded instead
of slept.
"""

from __future__ import annotations

import gzip
import random
import tempfile
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from forwarder.checkpoint import FileCheckpointStore
from forwarder.deadletter import DeadLetterFile
from forwarder.filters import EventTypeFilter
from forwarder.formats import RENDERERS
from forwarder.health import Health
from forwarder.metrics import Metrics
from forwarder.pipeline import RunnerOptions, SinkRunner, StreamSettings
from forwarder.ratelimit import RequestBudget
from forwarder.retry import Backoff
from forwarder.secrets import Secret
from forwarder.sinks.base import Batch, DeliveryReport
from forwarder.source import AuditLogClient, PageReader
from tests.fake_api import FakeAuditLog, make_event

pytestmark = pytest.mark.anyio

PAGE_SIZE = 20
PROXY_PAGE = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- the scripted API ----------------------------------------------------------------


@dataclass
class ScriptedApi(FakeAuditLog):
    """The fake audit log, whose reply at a position can be replaced (once
    per queued reply), and whose every reply carries an X-Request-Id."""

    replies_at: dict[int, list[httpx.Response]] = field(default_factory=dict)

    def handle(self, request: httpx.Request) -> httpx.Response:
        number = len(self.requests)
        position = self._position(request.url.params)
        queued = self.replies_at.get(position) if position is not None else None
        if queued:
            self.requests.append(request)
            response = queued.pop(0)
        else:
            response = super().handle(request)
        response.headers.setdefault("X-Request-Id", f"req-{number}")
        return response

    def requested_positions(self) -> list[int | None]:
        return [self._position(r.url.params) for r in self.requests]


def page_body(entries: list[bytes], next_offset: str | None) -> bytes:
    """A page assembled from already encoded entries, for values orjson
    could not encode in a test (very deep nesting)."""
    next_page = (
        b"null"
        if next_offset is None
        else orjson.dumps({"offset": next_offset, "path": "/x", "uri": "https://x"})
    )
    return b'{"data":[' + b",".join(entries) + b'],"next_page":' + next_page + b"}"


def reply(status: int, body: bytes, **headers: str) -> httpx.Response:
    return httpx.Response(status, content=body, headers=headers)


# -- the harness -----------------------------------------------------------------------


class PayloadSink:
    """Keeps every payload it is given, whatever the format."""

    def __init__(self, name: str = "sink") -> None:
        self.name = name
        self.payloads: list[bytes] = []

    async def open(self) -> None:
        return None

    async def deliver(self, batch: Batch) -> DeliveryReport:
        self.payloads.extend(batch.payloads)
        return DeliveryReport()

    async def aclose(self) -> None:
        return None

    def events(self) -> list[Any]:
        """The API's events back from raw payloads."""
        return [orjson.loads(payload)["event"] for payload in self.payloads]

    def gids(self) -> list[Any]:
        return [event.get("gid") for event in self.events()]


class Harness:
    """One runner over an API handler, with a checkpoint store and dead-letter
    file in ``state``; the reader's sleeps are recorded, not slept."""

    def __init__(
        self,
        handler: Callable[[httpx.Request], httpx.Response],
        state: Path,
        *,
        format_name: str = "raw",
    ) -> None:
        self.handler = handler
        self.state = state
        self.format_name = format_name
        self.slept: list[float] = []
        self.clock = 1000.0
        self.metrics = Metrics(CollectorRegistry())
        self.health = Health(poll_interval=0.01)
        self.store = FileCheckpointStore(state)
        self.store.prepare()

    async def _no_sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.clock += seconds

    def runner(self, sink: PayloadSink, http: httpx.AsyncClient) -> SinkRunner:
        client = AuditLogClient(
            http,
            base_url="https://app.asana.test/api/1.0",
            workspace_gid="1111",
            token=Secret("bad-input-token"),
            page_size=PAGE_SIZE,
        )
        reader = PageReader(
            client,
            RequestBudget(1500, sleep=self._no_sleep, clock=lambda: self.clock),
            self.metrics,
            self.health,
            backoff=Backoff(1.0, 8.0),
            rng=random.Random(0),
            sleep=self._no_sleep,
        )
        return SinkRunner(
            sink,
            RunnerOptions(
                format_name=self.format_name,
                renderer=RENDERERS[self.format_name],
                event_filter=EventTypeFilter(["*"], []),
                batch_max_events=50,
                batch_max_wait=60,
                backoff=Backoff(0.001, 0.002),
            ),
            settings=StreamSettings(
                workspace_gid="1111",
                poll_interval=0.001,
                start_at=None,
                filters="f",
                recovery_margin=300.0,
                once=True,
            ),
            reader=reader,
            store=self.store,
            checkpoint=self.store.load(sink.name),
            metrics=self.metrics,
            health=self.health,
            dead_letters=DeadLetterFile(self.state, sink.name),
            rng=random.Random(1),
        )

    async def drain(self, sink: PayloadSink, *, limit: float = 10.0) -> None:
        """Run the sink's runner until it has caught up (once mode)."""
        transport = httpx.MockTransport(self.handler)
        async with httpx.AsyncClient(transport=transport) as http:
            with anyio.fail_after(limit):
                await self.runner(sink, http).run()

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    def dead_letters(self, sink: str = "sink") -> list[dict[str, Any]]:
        path = self.state / "dead-letter" / f"{sink}.jsonl"
        if not path.exists():
            return []
        return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def gids(events: list[Any]) -> list[Any]:
    return [event["gid"] for event in events]


def retry_lines(
    logs: list[MutableMapping[str, Any]],
) -> list[MutableMapping[str, Any]]:
    return [line for line in logs if line["event"] == "api_request_retry"]


# -- replies that are not a page ----------------------------------------------------

NOT_A_PAGE = {
    "not_json": reply(200, b"this is not JSON", **{"Content-Type": "text/plain"}),
    "truncated_json": reply(
        200, b'{"data": [{"gid": "1000020", "created_at": "2026-11-01T00:0'
    ),
    "top_level_array": reply(200, b'[{"gid": "1"}]'),
    "top_level_number": reply(200, b"42"),
    "top_level_string": reply(200, b'"data"'),
    "top_level_null": reply(200, b"null"),
    "data_an_object": reply(200, b'{"data": {"gid": "1"}, "next_page": null}'),
    "data_null": reply(200, b'{"data": null, "next_page": null}'),
    "data_missing": reply(200, b'{"next_page": {"offset": "p:40:0"}}'),
    "next_page_a_string": reply(200, b'{"data": [], "next_page": "p:40:0"}'),
    "next_page_without_offset": reply(
        200, b'{"data": [], "next_page": {"path": "/x", "uri": "https://x"}}'
    ),
    "next_page_offset_a_number": reply(
        200, b'{"data": [], "next_page": {"offset": 4}}'
    ),
    "next_page_a_list": reply(200, b'{"data": [], "next_page": ["p:40:0"]}'),
    "proxy_html_page_with_200": reply(200, PROXY_PAGE, **{"Content-Type": "text/html"}),
    "empty_body": reply(200, b""),
    "invalid_utf8": reply(200, b'{"data": ["\xff\xfe"], "next_page": null}'),
    "nan_literal": reply(200, b'{"data": [NaN], "next_page": {"offset": "x"}}'),
}


@pytest.mark.parametrize("name", sorted(NOT_A_PAGE))
async def test_a_reply_that_is_not_a_page_is_retried_and_counted(
    tmp_path: Path, name: str
) -> None:
    """A 200 reply that is not a valid page, in the middle of a backlog, is
    retried at the same offset and counted as malformed; the retry is logged
    with the reply's request id; every event is delivered once, in order."""
    api = ScriptedApi()
    api.add(45)
    api.replies_at[PAGE_SIZE] = [NOT_A_PAGE[name]]
    harness = Harness(api.handle, tmp_path)
    sink = PayloadSink()
    with capture_logs() as logs:
        await harness.drain(sink)

    assert sink.gids() == gids(api.events)
    assert api.requested_positions()[:3] == [0, PAGE_SIZE, PAGE_SIZE]
    assert harness.sample("asana_forwarder_api_malformed_pages_total") == 1
    assert harness.sample("asana_forwarder_api_retries_total") == 1
    (retry,) = retry_lines(logs)
    assert retry["status"] == 200
    assert retry["request_id"] == "req-1"
    assert retry["error"].startswith("malformed page")
    assert harness.dead_letters() == []


@pytest.mark.parametrize(
    ("status", "body"),
    [(502, PROXY_PAGE), (502, b""), (503, b"Service Unavailable"), (504, PROXY_PAGE)],
)
async def test_a_proxy_error_page_is_retried_as_a_server_error(
    tmp_path: Path, status: int, body: bytes
) -> None:
    """A proxy's HTML error page with a 5xx status is a server error, not a
    malformed page: retried, counted under 5xx, logged with the request id and
    a short description instead of the HTML."""
    api = ScriptedApi()
    api.add(25)
    api.replies_at[PAGE_SIZE] = [
        reply(status, body, **{"Content-Type": "text/html", "X-Request-Id": "proxy-7"})
    ]
    harness = Harness(api.handle, tmp_path)
    sink = PayloadSink()
    with capture_logs() as logs:
        await harness.drain(sink)

    assert sink.gids() == gids(api.events)
    assert harness.sample("asana_forwarder_api_malformed_pages_total") == 0
    assert harness.sample("asana_forwarder_api_requests_total", status="5xx") == 1
    (retry,) = retry_lines(logs)
    assert retry["request_id"] == "proxy-7"
    assert retry["error"] == f"HTTP {status} without an error body"


@pytest.mark.parametrize(
    "retry_after", ["9" * 400, "31536000000", "Fri, 31 Dec 9999 23:59:59 GMT"]
)
async def test_an_absurd_retry_after_does_not_stop_reading_for_good(
    tmp_path: Path, retry_after: str
) -> None:
    """A 429 whose Retry-After is centuries (or beyond a float) is honoured
    only up to a bound: the forwarder waits at most a day, then reads on."""
    api = ScriptedApi()
    api.add(3)
    api.replies_at[0] = [
        reply(
            429,
            b'{"errors": [{"message": "slow down"}]}',
            **{"Retry-After": retry_after},
        )
    ]
    harness = Harness(api.handle, tmp_path)
    sink = PayloadSink()
    with capture_logs():
        await harness.drain(sink)

    assert sink.gids() == gids(api.events)
    assert max(harness.slept) <= 86_400


async def test_a_gzip_reply_is_decoded(tmp_path: Path) -> None:
    """A page sent gzip-encoded, as a proxy may, is read like a plain one."""
    api = ScriptedApi()
    api.add(3)
    body = page_body([orjson.dumps(e) for e in api.events], "p:3:0")
    api.replies_at[0] = [
        reply(200, gzip.compress(body), **{"Content-Encoding": "gzip"})
    ]
    harness = Harness(api.handle, tmp_path)
    sink = PayloadSink()
    await harness.drain(sink)

    assert sink.gids() == gids(api.events)


async def test_a_body_declared_gzip_that_is_not_is_retried(tmp_path: Path) -> None:
    """A reply whose Content-Encoding says gzip but whose body is not gzip
    (a misconfigured proxy) is a malformed page: retried, counted, logged with
    its request id, and the stream goes on."""
    api = ScriptedApi()
    api.add(25)
    api.replies_at[PAGE_SIZE] = [
        httpx.Response(
            200,
            stream=httpx.ByteStream(b'{"data": [], "next_page": null}'),
            headers={"Content-Encoding": "gzip", "X-Request-Id": "gz-1"},
        )
    ]
    harness = Harness(api.handle, tmp_path)
    sink = PayloadSink()
    with capture_logs() as logs:
        await harness.drain(sink)

    assert sink.gids() == gids(api.events)
    assert harness.sample("asana_forwarder_api_malformed_pages_total") == 1
    assert retry_lines(logs)[0]["request_id"] == "gz-1"


async def test_a_page_with_events_but_no_next_page_is_not_repeated(
    tmp_path: Path,
) -> None:
    """The audit log always sends a next_page once it has events; a page with
    events and none (an API change, a proxy) must not make the runner deliver
    the same events again and again."""
    api = ScriptedApi()
    api.add(2)
    api.replies_at[0] = [
        reply(200, page_body([orjson.dumps(e) for e in api.events], None))
    ]
    harness = Harness(api.handle, tmp_path)
    sink = PayloadSink()
    with anyio.move_on_after(0.5):
        await harness.drain(sink)

    assert sink.gids() == gids(api.events)


# -- entries that are not events ------------------------------------------------------

NOT_EVENTS: list[Any] = [None, 7, 2.5, True, False, [], ["a", 1], "text", ""]


async def test_entries_that_are_not_objects_are_set_aside(tmp_path: Path) -> None:
    """Entries that are not JSON objects (null, numbers, booleans, lists,
    strings) go to the dead-letter file in order, with the reason, and are
    counted; the events around them are delivered; the checkpoint moves past
    them; the warning carries the page's request id."""
    api = ScriptedApi()
    for value in NOT_EVENTS:
        api.add(1)
        api.events.append(value)
    api.add(1)
    harness = Harness(api.handle, tmp_path)
    sink = PayloadSink()
    with capture_logs() as logs:
        await harness.drain(sink)

    good = [e for e in api.events if isinstance(e, dict)]
    assert sink.events() == good
    dead = harness.dead_letters()
    assert [d["event"] for d in dead] == NOT_EVENTS
    assert {d["reason"] for d in dead} == {"not a JSON object"}
    assert harness.sample("asana_forwarder_malformed_events_total") == len(NOT_EVENTS)
    assert harness.sample(
        "asana_forwarder_sink_events_dead_lettered_total", sink="sink"
    ) == len(NOT_EVENTS)
    warning = next(line for line in logs if line["event"] == "api_malformed_events")
    assert warning["request_id"] == "req-0"
    checkpoint = harness.store.load("sink")
    assert checkpoint is not None
    assert checkpoint.cursor.offset == f"p:{len(api.events)}:0"


WRONG_SHAPES: list[dict[str, Any]] = [
    {"event_type": "no_gid", "created_at": "2026-11-01T00:00:00.000Z"},
    {"gid": 1234567890123, "event_type": "gid_a_number"},
    {"gid": None, "event_type": "gid_null"},
    {"gid": "1", "created_at": 1767225600, "event_type": "created_at_a_number"},
    {"gid": "2", "created_at": None, "actor": "Ada", "resource": ["task"]},
    {"gid": "3", "context": None, "details": "changed", "event_type": 5},
    {"gid": "4", "actor": {"gid": 42, "email": ["a@x.io"]}, "event_category": []},
    {"gid": "5", "context": {"client_ip_address": 3232235777, "user_agent": {}}},
    {"gid": "6", "details": {"old_value": {"deep": [1, {"x": None}]}, "new_value": 2}},
    {},
]


@pytest.mark.parametrize("format_name", sorted(RENDERERS))
async def test_events_with_missing_or_wrong_typed_fields_are_forwarded(
    tmp_path: Path, format_name: str
) -> None:
    """An object with fields missing or of the wrong type is still an event:
    every format renders it and it is delivered, not dropped; the checkpoint
    moves past it; nothing is dead-lettered."""
    api = ScriptedApi()
    api.add(1)
    api.events.extend(WRONG_SHAPES)
    api.add(1)
    harness = Harness(api.handle, tmp_path, format_name=format_name)
    sink = PayloadSink()
    await harness.drain(sink)

    assert len(sink.payloads) == len(api.events)
    if format_name == "raw":
        assert sink.events() == api.events
    assert harness.dead_letters() == []
    checkpoint = harness.store.load("sink")
    assert checkpoint is not None
    assert checkpoint.delivered_total == len(api.events)


async def test_duplicate_gids_are_both_forwarded(tmp_path: Path) -> None:
    """Asana's gids are unique, so a repeated gid is the API's doing: the
    forwarder delivers both copies, within a page and across pages, and
    loses nothing."""
    api = ScriptedApi()
    api.add(PAGE_SIZE - 2)
    api.events.append(dict(api.events[3]))
    api.add(1)
    api.events.append(dict(api.events[PAGE_SIZE - 1]))
    api.add(5)
    harness = Harness(api.handle, tmp_path)
    sink = PayloadSink()
    await harness.drain(sink)

    assert sink.gids() == gids(api.events)
    assert sink.gids().count(api.events[3]["gid"]) == 2
    assert sink.gids()[PAGE_SIZE - 1] == sink.gids()[PAGE_SIZE]


@pytest.mark.parametrize(
    "created_at",
    [
        "not a time",
        "2026-13-45T99:00:00.000Z",
        "2026-11-01T00:00:05.000",
        "9999-12-31T23:59:59.999-01:00",
    ],
)
async def test_an_unparseable_created_at_does_not_stop_the_stream(
    tmp_path: Path, created_at: str
) -> None:
    """An event whose created_at is a string but not a usable time is
    delivered and the checkpoint moves on, as for any wrong-typed field."""
    api = ScriptedApi()
    api.add(2)
    api.events[1]["created_at"] = created_at
    api.add(2)
    harness = Harness(api.handle, tmp_path)
    sink = PayloadSink()
    await harness.drain(sink)

    assert sink.gids() == gids(api.events)
    checkpoint = harness.store.load("sink")
    assert checkpoint is not None
    assert checkpoint.delivered_total == 4
    # The newest usable time, though the unusable one may sort after it.
    assert checkpoint.newest_created_at == api.events[3]["created_at"]
    assert created_at not in {time for time, _ in checkpoint.recent}


async def test_an_unhashable_gid_while_skipping_after_recovery(
    tmp_path: Path,
) -> None:
    """After an offset recovery the runner skips delivered gids; an event
    whose gid is a list is not one of them and is delivered, not a crash."""
    api = ScriptedApi()
    api.add(3)
    harness = Harness(api.handle, tmp_path)
    await harness.drain(PayloadSink())
    odd = make_event(2)
    odd["gid"] = ["1000002"]
    api.events.append(odd)
    api.expire_offsets()
    sink = PayloadSink()
    await harness.drain(sink)

    assert sink.events() == [odd]


async def test_an_event_nested_too_deep_to_encode_is_set_aside(
    tmp_path: Path,
) -> None:
    """An event nested a thousand levels deep (which the API's decoder
    accepts) cannot be rendered; it is set aside and counted, and the events
    around it are delivered."""
    # Deeper than Python's recursion limit, shallower than orjson's 1024.
    depth = 1010
    nested = b'{"gid":"9","details":' + b"[" * depth + b"]" * depth + b"}"
    before, after = make_event(0), make_event(1)
    body = page_body([orjson.dumps(before), nested, orjson.dumps(after)], "p:3:0")
    api = ScriptedApi()
    api.replies_at[0] = [reply(200, body)]
    harness = Harness(api.handle, tmp_path)
    sink = PayloadSink()
    await harness.drain(sink)

    assert sink.events() == [before, after]
    assert (
        harness.sample("asana_forwarder_sink_events_dead_lettered_total", sink="sink")
        == 1
    )


# -- property: any JSON value as the reply body --------------------------------------

_timestamps = st.integers(0, 10**9).map(
    lambda n: f"2026-{1 + n % 12:02d}-{1 + n % 28:02d}T00:00:{n % 60:02d}.000Z"
)
# What orjson encodes: the API's decoder gives nothing wider.
_integers = st.integers(-(2**63), 2**64 - 1)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    _integers,
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
json_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=8), inner, max_size=4),
    ),
    max_leaves=16,
)
# Event-shaped objects. created_at is a valid time or not a string: a string
# that is not a time is the _advanced crash pinned above.
_events = st.fixed_dictionaries(
    {"gid": st.one_of(st.text(max_size=8), _integers, st.none())},
    optional={
        "created_at": st.one_of(_timestamps, _integers, st.none()),
        "event_type": st.one_of(st.text(max_size=12), json_values),
        "actor": json_values,
        "details": json_values,
    },
)
_entries = st.lists(st.one_of(_events, _scalars, json_values), max_size=5)
_offsets = st.fixed_dictionaries({"offset": st.text(max_size=10)})
bodies = st.one_of(
    json_values,
    st.fixed_dictionaries({"data": _entries, "next_page": json_values}),
    st.fixed_dictionaries({"data": _entries, "next_page": _offsets}),
)


def _as_page(body: Any) -> tuple[list[Any], bool] | None:
    """(entries, has next offset) when ``body`` is a valid page, else None."""
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        return None
    next_page = body.get("next_page")
    if next_page is None:
        return body["data"], False
    if isinstance(next_page, dict) and isinstance(next_page.get("offset"), str):
        return body["data"], True
    return None


def _json_keys_hold_no_created_at_text(body: Any) -> bool:
    """No object that would be an event has a created_at string that is not
    a time."""
    page = _as_page(body)
    if page is None:
        return True
    return not any(
        isinstance(e, dict)
        and isinstance(e.get("created_at"), str)
        and not e["created_at"].startswith("2026-")
        for e in page[0]
    )


class BodyThenPages:
    """The first request gets ``body``; a retry of it gets two good events
    and an offset; any request with an offset gets an empty page."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.requests = 0
        self.good = [make_event(0), make_event(1)]

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        offset = request.url.params.get("offset")
        if offset is not None:
            return reply(200, page_body([], offset))
        if self.requests == 1:
            return reply(200, self.body, **{"X-Request-Id": "first"})
        return reply(200, page_body([orjson.dumps(e) for e in self.good], "end"))


async def _forward(body: Any) -> None:
    script = BodyThenPages(orjson.dumps(body))
    with tempfile.TemporaryDirectory() as directory, capture_logs():
        harness = Harness(script.handle, Path(directory))
        sink = PayloadSink()
        await harness.drain(sink, limit=5)
        page = _as_page(body)
        malformed = harness.sample("asana_forwarder_api_malformed_pages_total")
        dead = [d["event"] for d in harness.dead_letters()]
        if page is None:
            assert malformed == 1
            assert sink.events() == script.good
            assert dead == []
        else:
            assert malformed == 0
            assert sink.events() == [e for e in page[0] if isinstance(e, dict)]
            assert dead == [e for e in page[0] if not isinstance(e, dict)]


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(bodies)
def test_any_json_reply_is_retried_delivered_or_set_aside(body: Any) -> None:
    """Whatever JSON value the API answers with, the runner neither crashes
    nor loses anything: a body that is not a page is retried (and counted),
    a page's objects are delivered and its other entries dead-lettered."""
    page = _as_page(body)
    # A page with events and no offset repeats forever: pinned above.
    assume(page is None or page[1] or not page[0])
    assume(_json_keys_hold_no_created_at_text(body))
    event("not a page" if page is None else f"a page of {min(len(page[0]), 3)}")
    anyio.run(_forward, body)
