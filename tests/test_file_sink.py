"""The file sink: JSON lines, fsynced batches, rotation, torn-line repair."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from forwarder.errors import SinkError
from forwarder.sinks.base import Batch
from forwarder.sinks.file import FileSink

pytestmark = pytest.mark.anyio


def batch_of(*numbers: int, size: int = 0) -> Batch:
    payloads = [orjson.dumps({"n": n, "pad": "x" * size}) for n in numbers]
    return Batch(events=[{"n": n} for n in numbers], payloads=payloads)


def lines(path: Path) -> list[int]:
    return [orjson.loads(line)["n"] for line in path.read_bytes().splitlines()]


async def test_batches_are_appended_as_json_lines(tmp_path: Path) -> None:
    """Each payload becomes one line; batches append in order across reopen."""
    path = tmp_path / "out" / "events.jsonl"
    sink = FileSink("file", path)
    await sink.open()
    await sink.deliver(batch_of(1, 2))
    await sink.aclose()
    again = FileSink("file", path)
    await again.open()
    await again.deliver(batch_of(3))
    await again.aclose()

    assert lines(path) == [1, 2, 3]


async def test_rotation_keeps_the_configured_number_of_files(tmp_path: Path) -> None:
    """Past max_bytes the file is renamed .1, older ones shift, and only
    keep_files rotated files remain; no line is split across files."""
    path = tmp_path / "events.jsonl"
    sink = FileSink("file", path, max_bytes=2048, keep_files=2)
    await sink.open()
    for number in range(10):
        await sink.deliver(batch_of(number, size=900))
    await sink.aclose()

    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "events.jsonl",
        "events.jsonl.1",
        "events.jsonl.2",
    ]
    assert lines(path.with_name("events.jsonl.2")) + lines(
        path.with_name("events.jsonl.1")
    ) + lines(path) == [4, 5, 6, 7, 8, 9]
    assert all(p.stat().st_size <= 2048 for p in tmp_path.iterdir())


async def test_a_torn_last_line_is_removed_on_open(tmp_path: Path) -> None:
    """Half a line left by a crash is cut off before new lines are written, so
    tailers never read a broken event (the event is written again whole)."""
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"n": 1}\n{"n": 2}\n{"n": 3, "pa')
    sink = FileSink("file", path)
    await sink.open()
    await sink.deliver(batch_of(3))
    await sink.aclose()

    assert lines(path) == [1, 2, 3]


async def test_a_torn_line_longer_than_a_read_chunk(tmp_path: Path) -> None:
    """The repair finds the last newline however long the half line is."""
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"n": 1}\n' + b"x" * 200_000)
    sink = FileSink("file", path)
    await sink.open()
    await sink.aclose()

    assert path.read_bytes() == b'{"n": 1}\n'


async def test_an_unwritable_path_raises_sink_error(tmp_path: Path) -> None:
    """A path that cannot be opened is a retryable SinkError, not a crash."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    sink = FileSink("file", blocker / "events.jsonl")

    with pytest.raises(SinkError, match="cannot open"):
        await sink.open()
