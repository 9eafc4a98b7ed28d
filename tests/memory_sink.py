"""A sink that keeps what it is given, and fails on request, for pipeline tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import orjson

from forwarder.errors import SinkError
from forwarder.sinks.base import Batch, DeliveryReport


class MemorySink:
    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self.batches: list[list[dict[str, Any]]] = []
        self.failures = 0
        self.reject: Callable[[dict[str, Any]], str | None] = lambda _: None
        self.on_deliver: Callable[[], None] = lambda: None
        self.closed = False
        self.attempts = 0
        self._changed = anyio.Event()

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Wait until ``condition`` holds, checked after every delivery attempt."""
        while not condition():
            await self._changed.wait()

    def _attempted(self) -> None:
        self.attempts += 1
        self._changed.set()
        self._changed = anyio.Event()

    @property
    def documents(self) -> list[dict[str, Any]]:
        return [document for batch in self.batches for document in batch]

    @property
    def gids(self) -> list[str]:
        return [document["event"]["gid"] for document in self.documents]

    async def open(self) -> None:
        return None

    async def deliver(self, batch: Batch) -> DeliveryReport:
        self.on_deliver()
        if self.failures > 0:
            self.failures -= 1
            self._attempted()
            raise SinkError("receiver unavailable")
        rejected = []
        accepted = []
        for index, (event, payload) in enumerate(
            zip(batch.events, batch.payloads, strict=True)
        ):
            reason = self.reject(event)
            if reason is None:
                accepted.append(orjson.loads(payload))
            else:
                rejected.append((index, reason))
        self.batches.append(accepted)
        self._attempted()
        return DeliveryReport(rejected=rejected)

    async def aclose(self) -> None:
        self.closed = True
