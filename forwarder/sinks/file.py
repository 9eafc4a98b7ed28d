"""``file``: JSON lines on disk, for Splunk's forwarder, Filebeat or Vector
to tail.

Each batch is appended and fsynced before it counts as delivered. When the
file would grow past ``max_bytes`` it is rotated the way log tailers expect:
``events.jsonl`` becomes ``events.jsonl.1``, older files shift up, and at most
``keep_files`` rotated files are kept.
"""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import structlog

from forwarder.errors import SinkError
from forwarder.sinks.base import Batch, DeliveryReport

log = structlog.get_logger("forwarder.sinks.file")


class FileSink:
    def __init__(
        self,
        name: str,
        path: Path,
        *,
        max_bytes: int = 100 * 1024 * 1024,
        keep_files: int = 5,
        fsync: bool = True,
    ) -> None:
        self.name = name
        self.path = path
        self.max_bytes = max_bytes
        self.keep_files = keep_files
        self.fsync = fsync
        self._descriptor: int | None = None
        self._size = 0

    async def open(self) -> None:
        try:
            await anyio.to_thread.run_sync(self._open)
        except OSError as error:
            raise SinkError(f"cannot open {self.path}: {error.strerror}") from error

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        self._descriptor = os.open(
            self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640
        )
        self._size = os.fstat(self._descriptor).st_size
        self._drop_torn_line()

    def _drop_torn_line(self) -> None:
        """A crash in the middle of a write leaves half a line at the end. That
        event was not checkpointed and will be written again, so the half line
        goes: tailers would otherwise read it as a broken event."""
        if self._size == 0:
            return
        keep = _end_of_last_line(self.path, self._size)
        if keep == self._size:
            return
        os.truncate(self.path, keep)
        log.warning(
            "file_sink_torn_line_removed",
            sink=self.name,
            path=str(self.path),
            bytes_removed=self._size - keep,
        )
        self._size = keep

    async def deliver(self, batch: Batch) -> DeliveryReport:
        data = b"".join(payload + b"\n" for payload in batch.payloads)
        try:
            await anyio.to_thread.run_sync(self._append, data)
        except OSError as error:
            raise SinkError(f"cannot write {self.path}: {error.strerror}") from error
        return DeliveryReport()

    def _append(self, data: bytes) -> None:
        if self._descriptor is None:
            self._open()
        if self._size > 0 and self._size + len(data) > self.max_bytes:
            self._rotate()
        assert self._descriptor is not None
        view = memoryview(data)
        while view:
            written = os.write(self._descriptor, view)
            view = view[written:]
        if self.fsync:
            os.fsync(self._descriptor)
        self._size += len(data)

    def _rotate(self) -> None:
        assert self._descriptor is not None
        os.close(self._descriptor)
        self._descriptor = None
        if self.keep_files == 0:
            self.path.unlink()
        else:
            oldest = self._rotated(self.keep_files)
            if oldest.exists():
                oldest.unlink()
            for number in range(self.keep_files - 1, 0, -1):
                if self._rotated(number).exists():
                    os.replace(self._rotated(number), self._rotated(number + 1))
            os.replace(self.path, self._rotated(1))
        self._open()
        log.info("file_sink_rotated", sink=self.name, path=str(self.path))

    def _rotated(self, number: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{number}")

    async def aclose(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None


def _end_of_last_line(path: Path, size: int) -> int:
    """The offset just past the file's last newline, 0 if it has none."""
    chunk_size = 65536
    with path.open("rb") as reader:
        end = size
        while end > 0:
            start = max(0, end - chunk_size)
            reader.seek(start)
            chunk = reader.read(end - start)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                return start + cut + 1
            end = start
    return 0
