"""A Splunk HTTP Event Collector that runs in the test process.

It answers the way Splunk documents HEC, not "200 to everything":

- ``Authorization: Splunk <token>``: missing 401 code 2, not of that form
  401 code 3, unknown token 403 code 4, disabled token 403 code 1.
- ``POST /services/collector/event`` (also ``/services/collector`` and
  ``/event/1.0``): gzip bodies; envelopes concatenated with or without
  whitespace; each envelope checked in order: a JSON object (else code 6),
  ``event`` present (12) and not blank (13), ``index`` in the token's
  allow-list (7), ``fields`` values strings or arrays of strings (15),
  ``time`` a number (6). Like Splunk, the events before the first bad one
  are indexed and the reply names the bad one (``invalid-event-number``);
  with ``event_numbers=False`` the double plays a receiver that names no
  event and keeps nothing of a refused request. An empty body is code 5;
  a body over ``max_content_length`` is 413.
- Indexer acknowledgement for tokens with ``ack=True``: the channel
  (``X-Splunk-Request-Channel`` or ``?channel=``) is then mandatory (code
  10) and must be a GUID (11); each accepted request gets an ``ackId``,
  numbered per channel from 0. ``POST /services/collector/ack`` answers
  ``{"acks": {"<id>": bool}}``: true once the double has "indexed" the
  request (after ``ack_delay`` seconds), and only once, as Splunk forgets
  an ack it reported. ``lose_acks(n)`` loses the next n acks forever
  (``None``: all). Asking a token without acks is code 14.
- ``GET /services/collector/health``: 200 code 17, or 503 code 18 while
  ``healthy`` is false.
- Faults: ``inject(HecDouble.busy(), HecDouble.throttled("2"), ...)``
  answers the next event requests so, and keeps nothing of them.

Every indexed event is recorded with its envelope fields in ``events``.
"""

from __future__ import annotations

import json
import math
import re
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tests.doubles.http_receiver import DoubleServer, Request, Response

EVENT_PATHS = frozenset(
    {
        "/services/collector",
        "/services/collector/event",
        "/services/collector/event/1.0",
    }
)
HEALTH_PATHS = frozenset(
    {"/services/collector/health", "/services/collector/health/1.0"}
)
ACK_PATH = "/services/collector/ack"
_GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_DECODER = json.JSONDecoder()


@dataclass(frozen=True, slots=True)
class HecToken:
    value: str
    # None: any index; otherwise the allow-list.
    indexes: frozenset[str] | None = None
    default_index: str = "main"
    ack: bool = False
    disabled: bool = False


@dataclass(frozen=True, slots=True)
class HecEvent:
    """One indexed event with the envelope fields it came with."""

    event: Any
    index: str
    time: float | None
    host: str | None
    source: str | None
    sourcetype: str | None
    fields: dict[str, Any]
    token: str
    channel: str | None
    request: int


@dataclass(frozen=True, slots=True)
class HecRequest:
    """One request to the event endpoint and what the double answered."""

    number: int
    headers: dict[str, str]
    raw_body: bytes
    status: int
    reply: dict[str, Any]


class _Refused(Exception):
    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


@dataclass
class _Channel:
    next_id: int = 0
    # ack id -> monotonic time from which it reads true (inf: lost).
    pending: dict[int, float] = field(default_factory=dict)


def reply(status: int, code: int, text: str, **extra: Any) -> Response:
    return Response.json(status, {"text": text, "code": code, **extra})


class HecDouble(DoubleServer):
    def __init__(
        self,
        tokens: Iterable[HecToken],
        *,
        ack_delay: float = 0.0,
        max_content_length: int = 800 * 1024 * 1024,
        event_numbers: bool = True,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(tls=tls)
        self.tokens = {token.value: token for token in tokens}
        self.ack_delay = ack_delay
        self.max_content_length = max_content_length
        self.event_numbers = event_numbers
        self.healthy = True
        self.events: list[HecEvent] = []
        self.requests: list[HecRequest] = []
        self.ack_queries: list[dict[str, Any]] = []
        self._channels: dict[str, _Channel] = {}
        self._lose: float = 0

    # -- what tests use --------------------------------------------------------

    @staticmethod
    def busy() -> Response:
        return reply(503, 9, "Server is busy")

    @staticmethod
    def throttled(retry_after: str) -> Response:
        return Response.json(
            429, {"text": "Too many requests", "code": 9}, ("Retry-After", retry_after)
        )

    def lose_acks(self, count: int | None) -> None:
        """Lose the acks of the next ``count`` accepted requests (None: all)."""
        with self.lock:
            self._lose = math.inf if count is None else count

    def indexed(self) -> list[Any]:
        """The ``event`` of every indexed event, in order."""
        with self.lock:
            return [item.event for item in self.events]

    def pending_acks(self) -> int:
        with self.lock:
            return sum(len(channel.pending) for channel in self._channels.values())

    # -- routing ---------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        if request.path in HEALTH_PATHS:
            if self.healthy:
                return reply(200, 17, "HEC is healthy")
            return reply(503, 18, "HEC is unhealthy, queues are full")
        if request.path in EVENT_PATHS or request.path == ACK_PATH:
            if request.method != "POST":
                return reply(405, 400, "Method not allowed")
            token = self._authorize(request)
            if isinstance(token, Response):
                return token
            if request.path == ACK_PATH:
                return self._ack(request, token)
            return self._record(request, self._event(request, token))
        return reply(404, 404, "The requested URL was not found on this server.")

    def _authorize(self, request: Request) -> HecToken | Response:
        header = request.headers.get("authorization")
        if header is None:
            return reply(401, 2, "Token is required")
        scheme, _, value = header.partition(" ")
        if scheme != "Splunk" or not value:
            return reply(401, 3, "Invalid authorization")
        token = self.tokens.get(value.strip())
        if token is None:
            return reply(403, 4, "Invalid token")
        if token.disabled:
            return reply(403, 1, "Token disabled")
        return token

    def _channel(self, request: Request, token: HecToken) -> str | Response | None:
        channel = request.headers.get("x-splunk-request-channel")
        if channel is None:
            channel = (request.query.get("channel") or [None])[0]
        if not token.ack:
            return channel
        if channel is None:
            return reply(400, 10, "Data channel is missing")
        if not _GUID.match(channel):
            return reply(400, 11, "Invalid data channel")
        return channel

    # -- events ------------------------------------------------------------------

    def _event(self, request: Request, token: HecToken) -> Response:
        fault = self.take_fault()
        if fault is not None:
            return fault
        channel = self._channel(request, token)
        if isinstance(channel, Response):
            return channel
        try:
            body = request.body()
        except ValueError:
            return reply(400, 6, "Invalid data format")
        if len(body) > self.max_content_length:
            return Response.json(413, {"text": "Content too large"})
        if not body.strip():
            return reply(400, 5, "No data")
        text = body.decode("utf-8", "replace")
        events: list[HecEvent] = []
        position = 0
        number = len(self.requests)
        while True:
            position = _skip_space(text, position)
            if position >= len(text):
                break
            try:
                envelope, position = _DECODER.raw_decode(text, position)
                events.append(_check(envelope, token, channel, number))
            except (ValueError, _Refused) as error:
                return self._refuse(events, error)
        self.events.extend(events)
        answer: dict[str, Any] = {"text": "Success", "code": 0}
        if token.ack:
            assert channel is not None
            answer["ackId"] = self._new_ack(channel)
        return Response.json(200, answer)

    def _refuse(self, before: list[HecEvent], error: Exception) -> Response:
        code, text = (
            (error.code, error.text)
            if isinstance(error, _Refused)
            else (6, "Invalid data format")
        )
        if not self.event_numbers:
            return reply(400, code, text)
        # Splunk has indexed the events before the bad one.
        self.events.extend(before)
        return reply(400, code, text, **{"invalid-event-number": len(before)})

    def _record(self, request: Request, response: Response) -> Response:
        try:
            answer = json.loads(response.body) if response.body else {}
        except ValueError:
            answer = {}
        self.requests.append(
            HecRequest(
                len(self.requests),
                request.headers,
                request.raw_body,
                response.status,
                answer,
            )
        )
        return response

    # -- acknowledgement -----------------------------------------------------------

    def _new_ack(self, channel: str) -> int:
        state = self._channels.setdefault(channel, _Channel())
        ack_id = state.next_id
        state.next_id += 1
        ready = time.monotonic() + self.ack_delay
        if self._lose > 0:
            self._lose -= 1
            ready = math.inf
        state.pending[ack_id] = ready
        return ack_id

    def _ack(self, request: Request, token: HecToken) -> Response:
        if not token.ack:
            return reply(400, 14, "ACK is disabled")
        channel = self._channel(request, token)
        if isinstance(channel, Response):
            return channel
        assert channel is not None
        try:
            ids = json.loads(request.body())["acks"]
            if not all(isinstance(i, int) for i in ids):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return reply(400, 6, "Invalid data format")
        state = self._channels.setdefault(channel, _Channel())
        now = time.monotonic()
        answer: dict[str, bool] = {}
        for ack_id in ids:
            done = state.pending.get(ack_id, math.inf) <= now
            if done:
                del state.pending[ack_id]
            answer[str(ack_id)] = done
        self.ack_queries.append({"channel": channel, "acks": answer})
        return Response.json(200, {"acks": answer})


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


def _check(
    envelope: Any, token: HecToken, channel: str | None, request: int
) -> HecEvent:
    if not isinstance(envelope, dict):
        raise _Refused(6, "Invalid data format")
    if "event" not in envelope:
        raise _Refused(12, "Event field is required")
    event = envelope["event"]
    if event is None or (isinstance(event, str) and not event.strip()):
        raise _Refused(13, "Event field cannot be blank")
    index = envelope.get("index", token.default_index)
    if not isinstance(index, str) or (
        token.indexes is not None and index not in token.indexes
    ):
        raise _Refused(7, "Incorrect index")
    fields = envelope.get("fields", {})
    if not isinstance(fields, dict) or not all(
        isinstance(value, str)
        or (isinstance(value, list) and all(isinstance(v, str) for v in value))
        for value in fields.values()
    ):
        raise _Refused(15, "Error in handling indexed fields")
    moment = envelope.get("time")
    if moment is not None:
        try:
            moment = float(moment)
        except (TypeError, ValueError):
            raise _Refused(6, "Invalid data format") from None
    for key in ("host", "source", "sourcetype"):
        if key in envelope and not isinstance(envelope[key], str):
            raise _Refused(6, "Invalid data format")
    return HecEvent(
        event=event,
        index=index,
        time=moment,
        host=envelope.get("host"),
        source=envelope.get("source"),
        sourcetype=envelope.get("sourcetype"),
        fields=fields,
        token=token.value,
        channel=channel,
        request=request,
    )
