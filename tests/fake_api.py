"""An in-process fake of the audit-log endpoint for httpx.MockTransport.

Small and transparent on purpose, for unit tests of the source and the
pipeline: offsets are readable ("p:<position>:<generation>"), faults are
queued, and every request is recorded. The faithful simulator, served over
real HTTP, is ``forwarder.simulator``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson

START = datetime(2026, 11, 1, tzinfo=UTC)


def make_event(number: int, *, event_type: str = "task_deleted") -> dict[str, Any]:
    created = START + timedelta(seconds=number)
    return {
        "gid": f"{1_000_000 + number}",
        "created_at": created.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "event_type": event_type,
        "event_category": "deletion",
        "actor": {"actor_type": "user", "gid": "42", "name": "Ada", "email": "a@x.io"},
        "resource": {"resource_type": "task", "gid": f"{5000 + number}", "name": "T"},
        "context": {"context_type": "web", "client_ip_address": "192.0.2.1"},
        "details": {},
    }


@dataclass
class FakeAuditLog:
    events: list[Any] = field(default_factory=list)
    faults: list[httpx.Response] = field(default_factory=list)
    requests: list[httpx.Request] = field(default_factory=list)
    generation: int = 0

    def add(self, count: int, **kwargs: Any) -> list[dict[str, Any]]:
        first = len(self.events)
        new = [make_event(first + i, **kwargs) for i in range(count)]
        self.events.extend(new)
        return new

    def expire_offsets(self) -> None:
        self.generation += 1

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.faults:
            return self.faults.pop(0)
        params = request.url.params
        limit = int(params.get("limit", "100"))
        position = self._position(params)
        if position is None:
            return _error(400, "offset: Your pagination token is invalid")
        page = self.events[position : position + limit]
        end_at = params.get("end_at")
        if end_at is not None:
            # end_at is exclusive; the log is in created_at order.
            page = [
                event
                for event in page
                if not isinstance(event, dict) or event.get("created_at", "") < end_at
            ]
        next_position = position + len(page)
        body = {
            "data": page,
            "next_page": {
                "offset": f"p:{next_position}:{self.generation}",
                "path": "/x",
                "uri": "https://x",
            },
        }
        return httpx.Response(200, content=orjson.dumps(body))

    def _position(self, params: httpx.QueryParams) -> int | None:
        offset = params.get("offset")
        if offset is not None:
            _, position, generation = offset.split(":")
            if int(generation) != self.generation:
                return None
            return int(position)
        start_at = params.get("start_at")
        if start_at is None:
            return 0
        for index, event in enumerate(self.events):
            if isinstance(event, dict) and event.get("created_at", "") >= start_at:
                return index
        return len(self.events)


def _error(status: int, message: str) -> httpx.Response:
    return httpx.Response(
        status, content=orjson.dumps({"errors": [{"message": message}]})
    )
