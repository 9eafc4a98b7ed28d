"""Checkpoints: how far each sink has got in the audit log, stored durably.

Each sink has its own checkpoint, so a sink that is down or slow never holds
the others back: it catches up later by re-reading the API from its own
checkpoint (the API keeps 90 days of events, which makes it the buffer).

A checkpoint holds one or more cursors. A cursor is a position in one time
slice of the log: the API offset to send next, or, when there is none (first
run, after a reset, after the API rejected an offset), the ``start_at`` time
to start from. The live stream is one open-ended cursor, the last; a backfill
split into concurrent time slices adds one bounded cursor per slice before it.

Beside the cursors, the checkpoint remembers the gids of the events delivered
within the recovery window (the newest ``created_at`` minus a margin). When an
offset is rejected, reading resumes from the start of that window and these
gids are skipped up to ``skip_until``, so recovery neither loses nor repeats
events, even when the forwarder restarts in the middle of it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Protocol

import orjson

from forwarder.errors import StateError
from forwarder.timestamps import format_timestamp, utc_now

FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class Cursor:
    """A position in one time slice [start_at, end_at) of the audit log.

    ``offset`` and ``end_at`` go to the API together (an offset is only valid
    with the query it came from). ``start_at`` is where reading resumes by time
    when the offset cannot be used: the slice's start, moved up to the newest
    event delivered from it. ``delivered_at_start`` are the gids of the events
    of that very millisecond already delivered from it (for a bounded slice),
    which reading by time from ``start_at`` (inclusive) returns again and
    must skip. ``stop_at`` is a soft end set when a slice being read was cut
    in two: its events from then on belong to the next slice.
    """

    offset: str | None = None
    start_at: str | None = None
    end_at: str | None = None
    stop_at: str | None = None
    delivered_at_start: tuple[str, ...] = ()

    @property
    def ends_at(self) -> str | None:
        """Where the slice ends, or None for the open-ended live stream."""
        if self.stop_at is not None and self.end_at is not None:
            return min(self.stop_at, self.end_at)
        return self.stop_at if self.stop_at is not None else self.end_at

    @property
    def bounded(self) -> bool:
        return self.ends_at is not None


@dataclass(frozen=True, slots=True)
class Checkpoint:
    sink: str
    cursors: tuple[Cursor, ...] = (Cursor(),)
    # Fingerprint of the server-side filters the offsets were issued for:
    # an offset is only valid with the filters it came with.
    filters: str = ""
    newest_created_at: str | None = None
    # (created_at, gid) of events delivered within the recovery window.
    recent: tuple[tuple[str, str], ...] = ()
    # Set while re-reading after a recovery by time: events up to this time
    # whose gid is in ``recent`` were delivered already and are skipped. Kept
    # in the file so that a restart in the middle of the re-reading goes on
    # skipping them.
    skip_until: str | None = None
    delivered_total: int = 0
    updated_at: str = field(default_factory=lambda: format_timestamp(utc_now()))

    @property
    def cursor(self) -> Cursor:
        """The cursor of the live stream, the last one."""
        return self.cursors[-1]

    def with_cursor(self, cursor: Cursor) -> Checkpoint:
        return replace(self, cursors=(*self.cursors[:-1], cursor))


def checkpoint_to_json(checkpoint: Checkpoint) -> bytes:
    document = {
        "version": FORMAT_VERSION,
        "sink": checkpoint.sink,
        "cursors": [
            {
                "offset": c.offset,
                "start_at": c.start_at,
                "end_at": c.end_at,
                "stop_at": c.stop_at,
                "delivered_at_start": c.delivered_at_start,
            }
            for c in checkpoint.cursors
        ],
        "filters": checkpoint.filters,
        "newest_created_at": checkpoint.newest_created_at,
        # Tuples are written as JSON arrays; no copy into lists needed.
        "recent": checkpoint.recent,
        "skip_until": checkpoint.skip_until,
        "delivered_total": checkpoint.delivered_total,
        "updated_at": checkpoint.updated_at,
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"


def _optional_str(document: dict[str, Any], key: str) -> str | None:
    value = document.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{key} must be a string or null")
    return value


def _gids(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(g, str) for g in value):
        raise ValueError("delivered_at_start must be a list of strings")
    return tuple(value)


def checkpoint_from_json(data: bytes) -> Checkpoint:
    """Decode a checkpoint file; raise ValueError saying what is wrong."""
    document = orjson.loads(data)
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    if document.get("version") != FORMAT_VERSION:
        raise ValueError(f"unknown format version {document.get('version')!r}")
    sink = document.get("sink")
    if not isinstance(sink, str):
        raise ValueError("sink must be a string")
    raw_cursors = document.get("cursors")
    if not isinstance(raw_cursors, list) or not raw_cursors:
        raise ValueError("cursors must be a non-empty list")
    cursors = []
    for raw in raw_cursors:
        if not isinstance(raw, dict):
            raise ValueError("each cursor must be an object")
        cursors.append(
            Cursor(
                offset=_optional_str(raw, "offset"),
                start_at=_optional_str(raw, "start_at"),
                end_at=_optional_str(raw, "end_at"),
                stop_at=_optional_str(raw, "stop_at"),
                delivered_at_start=_gids(raw.get("delivered_at_start", [])),
            )
        )
    if cursors[-1].bounded or any(not c.bounded for c in cursors[:-1]):
        raise ValueError("only the last cursor (the live stream) may be open-ended")
    recent = document.get("recent")
    if not isinstance(recent, list) or not all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p)
        for p in recent
    ):
        raise ValueError("recent must be a list of [created_at, gid] pairs")
    delivered_total = document.get("delivered_total")
    if not isinstance(delivered_total, int) or delivered_total < 0:
        raise ValueError("delivered_total must be a non-negative integer")
    filters = document.get("filters")
    if not isinstance(filters, str):
        raise ValueError("filters must be a string")
    return Checkpoint(
        sink=sink,
        cursors=tuple(cursors),
        filters=filters,
        newest_created_at=_optional_str(document, "newest_created_at"),
        recent=tuple((p[0], p[1]) for p in recent),
        skip_until=_optional_str(document, "skip_until"),
        delivered_total=delivered_total,
        updated_at=_optional_str(document, "updated_at") or "",
    )


class CheckpointStore(Protocol):
    """Where checkpoints live. Implementations must make ``save`` durable:
    once it returns, the checkpoint survives a crash of the process or host."""

    def load(self, sink: str) -> Checkpoint | None:
        """The sink's checkpoint, None if it has none; StateError if unreadable."""

    def save(self, checkpoint: Checkpoint) -> None:
        """Store durably; StateError if it cannot."""

    def sinks(self) -> list[str]:
        """Names of the sinks that have a checkpoint."""

    def reset(self, sink: str, checkpoint: Checkpoint) -> Path | None:
        """Replace the sink's checkpoint even if the old one is corrupt; return
        where the old file was kept aside, if there was one."""


class FileCheckpointStore:
    """One JSON file per sink under ``<directory>/checkpoints``.

    Writes go to a temporary file that is fsynced, renamed over the old one,
    and followed by an fsync of the directory, so a crash leaves either the
    old or the new checkpoint, never a torn one.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.checkpoint_directory = directory / "checkpoints"
        self._lock_file: IO[bytes] | None = None

    def path_of(self, sink: str) -> Path:
        return self.checkpoint_directory / f"{sink}.json"

    def prepare(self) -> None:
        """Create the directories, owner-only, as they hold the stream position."""
        try:
            # mkdir's mode only applies to directories it creates: an existing
            # volume keeps the modes its owner gave it.
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.checkpoint_directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as error:
            raise StateError(
                f"cannot create state directory {self.checkpoint_directory}: "
                f"{error.strerror}"
            ) from error

    def lock(self) -> None:
        """Take the directory for this process alone: two forwarders writing one
        state would each redeliver or skip what the other saved."""
        self.prepare()
        path = self.directory / "lock"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        handle = os.fdopen(descriptor, "ab")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise StateError(
                f"state directory {self.directory} is in use by another forwarder "
                f"(lock file {path}); run one forwarder per state directory"
            ) from None
        self._lock_file = handle

    def unlock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def load(self, sink: str) -> Checkpoint | None:
        path = self.path_of(sink)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise StateError(
                f"cannot read checkpoint file {path}: {error.strerror}", sink=sink
            ) from error
        try:
            checkpoint = checkpoint_from_json(data)
        except (ValueError, orjson.JSONDecodeError) as error:
            raise StateError(
                f"checkpoint file {path} is corrupt: {error}", sink=sink
            ) from error
        if checkpoint.sink != sink:
            raise StateError(
                f"checkpoint file {path} is corrupt: it belongs to sink "
                f"{checkpoint.sink!r}, not {sink!r}",
                sink=sink,
            )
        return checkpoint

    def save(self, checkpoint: Checkpoint) -> None:
        path = self.path_of(checkpoint.sink)
        try:
            _write_durably(path, checkpoint_to_json(checkpoint))
        except OSError as error:
            raise StateError(
                f"cannot save checkpoint file {path}: {error.strerror}"
            ) from error

    def sinks(self) -> list[str]:
        if not self.checkpoint_directory.is_dir():
            return []
        return sorted(p.stem for p in self.checkpoint_directory.glob("*.json"))

    def reset(self, sink: str, checkpoint: Checkpoint) -> Path | None:
        self.prepare()
        path = self.path_of(sink)
        kept: Path | None = None
        if path.exists():
            stamp = utc_now().strftime("%Y%m%dT%H%M%SZ")
            kept = path.with_name(f"{path.name}.replaced-{stamp}")
            os.replace(path, kept)
        self.save(checkpoint)
        return kept


def _write_durably(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with open(descriptor, "wb", closefd=True) as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    # The rename itself is only durable once the directory entry is on disk.
    descriptor = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
