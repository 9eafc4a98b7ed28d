"""The dead-letter file: events set aside instead of dropped.

An event that cannot be delivered (not a JSON object, refused for good by a
receiver) is appended here with the reason, so nothing disappears silently.
One JSON line per event, fsynced, under ``<state>/dead-letter/<sink>.jsonl``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from forwarder.formats.jsonbytes import dumps
from forwarder.timestamps import format_timestamp, utc_now


class DeadLetterFile:
    def __init__(self, directory: Path, sink: str) -> None:
        self.path = directory / "dead-letter" / f"{sink}.jsonl"
        self.sink = sink

    def _line(self, now: str, event: Any, reason: str) -> bytes:
        entry = {"dead_lettered_at": now, "sink": self.sink, "reason": reason}
        try:
            return dumps({**entry, "event": event}) + b"\n"
        except (TypeError, ValueError):
            gid = event.get("gid") if isinstance(event, dict) else None
            entry["reason"] = f"{reason}; the event itself cannot be encoded"
            return (
                dumps(
                    {
                        **entry,
                        "event": None,
                        "gid": gid if isinstance(gid, str) else None,
                    }
                )
                + b"\n"
            )

    def write(self, items: list[tuple[Any, str]]) -> None:
        """Append (event, reason) pairs durably."""
        if not items:
            return
        now = format_timestamp(utc_now())
        lines = b"".join(self._line(now, e, r) for e, r in items)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(descriptor, lines)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
