"""Output formats: how one audit event becomes the bytes a sink sends.

A format renders each event once per page, whichever number of sinks use
it; see ``forwarder.pipeline``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from forwarder.formats import cef, leef, normalized, ocsf, raw


@dataclass(frozen=True, slots=True)
class EventContext:
    """What a format may add around an event: where and when it came from."""

    workspace_gid: str
    received_at: str


Renderer = Callable[[dict[str, Any], EventContext], bytes]

RENDERERS: dict[str, Renderer] = {
    "raw": raw.render,
    "normalized": normalized.render,
    "ocsf": ocsf.render,
    "cef": cef.render,
    "leef": leef.render,
}
