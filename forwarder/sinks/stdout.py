"""``stdout``: one event per line on standard output, for pipes and demos."""

from __future__ import annotations

import sys
from typing import BinaryIO

import anyio

from forwarder.errors import SinkError
from forwarder.sinks.base import Batch, DeliveryReport


class StdoutSink:
    def __init__(self, name: str, stream: BinaryIO | None = None) -> None:
        self.name = name
        self._stream = stream

    async def open(self) -> None:
        if self._stream is None:
            self._stream = sys.stdout.buffer

    async def deliver(self, batch: Batch) -> DeliveryReport:
        data = b"\n".join(batch.payloads) + b"\n"
        try:
            # A reader that stops reading blocks the write for good; the
            # thread is abandoned on cancellation so shutdown still completes.
            await anyio.to_thread.run_sync(self._write, data, abandon_on_cancel=True)
        except OSError as error:
            raise SinkError(f"cannot write to stdout: {error.strerror}") from error
        return DeliveryReport()

    def _write(self, data: bytes) -> None:
        assert self._stream is not None, "open() was not called"
        self._stream.write(data)
        self._stream.flush()

    async def aclose(self) -> None:
        return None
