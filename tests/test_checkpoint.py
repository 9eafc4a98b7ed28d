"""Checkpoint files: durable, owner-only, and never silently replaced."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from forwarder.checkpoint import Checkpoint, Cursor, FileCheckpointStore
from forwarder.errors import StateError


def sample(sink: str = "splunk") -> Checkpoint:
    return Checkpoint(
        sink=sink,
        cursors=(
            Cursor(
                offset="slice",
                start_at="2026-10-01T00:00:00.000Z",
                end_at="2026-10-15T00:00:00.000Z",
                stop_at="2026-10-08T00:00:00.000Z",
                delivered_at_start=("555", "556"),
            ),
            Cursor(offset="abc", start_at="2026-11-01T00:00:00.000Z"),
        ),
        filters="f1",
        newest_created_at="2026-11-02T00:00:00.000Z",
        recent=(("2026-11-02T00:00:00.000Z", "123"),),
        delivered_total=7,
    )


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    """What is saved is what is loaded, field for field."""
    store = FileCheckpointStore(tmp_path)
    store.prepare()
    checkpoint = sample()
    store.save(checkpoint)

    assert store.load("splunk") == checkpoint
    assert store.sinks() == ["splunk"]
    assert store.load("other") is None


def test_files_are_owner_only_and_no_temporary_is_left(tmp_path: Path) -> None:
    """Checkpoint files are 0600 in a 0700 directory; the rename leaves no
    temporary file behind."""
    store = FileCheckpointStore(tmp_path / "state")
    store.prepare()
    store.save(sample())

    path = store.path_of("splunk")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["splunk.json"]


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{",
        b"[]",
        b'{"version": 99}',
        b'{"version": 1, "sink": "splunk"}',
        # Only the last cursor, the live stream, may be open-ended.
        b'{"version": 1, "sink": "splunk", "cursors": [{}, {}], "recent": []}',
        b'{"version": 1, "sink": "splunk", "recent": [], "cursors": '
        b'[{"end_at": "2026-10-15T00:00:00.000Z", "delivered_at_start": [5]}, {}]}',
        b"\x00\xff garbage",
    ],
)
def test_a_corrupt_file_stops_with_its_path(tmp_path: Path, content: bytes) -> None:
    """A corrupt checkpoint raises StateError naming the file; it is not
    replaced or deleted."""
    store = FileCheckpointStore(tmp_path)
    store.prepare()
    store.path_of("splunk").write_bytes(content)

    with pytest.raises(StateError, match=r"splunk\.json is corrupt") as caught:
        store.load("splunk")

    assert caught.value.sink == "splunk"
    assert store.path_of("splunk").read_bytes() == content


def test_a_checkpoint_of_another_sink_is_refused(tmp_path: Path) -> None:
    """A file copied under the wrong name is corrupt, not silently used."""
    store = FileCheckpointStore(tmp_path)
    store.prepare()
    store.save(sample("other"))
    store.path_of("other").rename(store.path_of("splunk"))

    with pytest.raises(StateError, match="belongs to sink 'other'"):
        store.load("splunk")


def test_reset_keeps_the_old_file_aside(tmp_path: Path) -> None:
    """state reset replaces even a corrupt file, keeping it for inspection."""
    store = FileCheckpointStore(tmp_path)
    store.prepare()
    store.path_of("splunk").write_bytes(b"{corrupt")

    kept = store.reset("splunk", Checkpoint(sink="splunk"))

    assert kept is not None
    assert kept.read_bytes() == b"{corrupt"
    loaded = store.load("splunk")
    assert loaded is not None
    assert loaded.cursor == Cursor()


def test_one_forwarder_per_state_directory(tmp_path: Path) -> None:
    """A second lock on the same directory is refused with a clear message."""
    first, second = FileCheckpointStore(tmp_path), FileCheckpointStore(tmp_path)
    first.lock()
    try:
        with pytest.raises(StateError, match="in use by another forwarder"):
            second.lock()
    finally:
        first.unlock()
    second.lock()
    second.unlock()


def test_unwritable_directory_raises_state_error(tmp_path: Path) -> None:
    """A save that cannot be written raises StateError with the path."""
    store = FileCheckpointStore(tmp_path / "missing")

    with pytest.raises(StateError, match="cannot save checkpoint file"):
        store.save(sample())
